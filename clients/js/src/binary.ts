/**
 * The binary envelope, `duplex.v1.bin` (docs/protocol.md, "Binary
 * envelope"): the same messages as duplex.v1 in binary frames without field
 * names. A frame is a one-byte tag naming the op (bit 7: the data is bytes,
 * not JSON), then the op's fields in a fixed order; `data` is the rest of
 * the frame. Integers are LEB128; strings are a LEB128 header (length << 1,
 * low bit: lowercase hex packed two digits per byte) and their bytes;
 * optional integers and strings add one to their header, 0 being absent.
 *
 * The layouts are the tables below, one string per op: `?f` optional
 * integer, `#f` integer, `$f` string, `*f` optional string, `!a,b` a byte of
 * flags, `@f` a `{user, client}` pair, `&f` a count then that many pairs,
 * `~f` `since` (optional epoch, then its offset when present), `%` the data,
 * `%?` JSON data that may be absent (no bytes left).
 *
 * Invariants: decoding yields the same objects as the JSON codec's
 * `decodeServer` (absent optional fields and false flags left out, JSON data
 * parsed, bytes as a Uint8Array); anything malformed is a
 * {@link ProtocolError} (`unknown_op` for an unknown tag, else
 * `bad_request`). A bundle that does not import {@link binaryEnvelope} does
 * not carry this module.
 */

import { type Command, type Envelope, isBytes, ProtocolError, type ServerMessage } from "./codec.js";

/** The WebSocket subprotocol of the binary envelope (`binaryEnvelope.subprotocol`). */
const BINARY_SUBPROTOCOL = "duplex.v1.bin";

/** Commands, tags 0x01 up, in tag order. */
const COMMANDS: [string, string][] = [
  ["connect", "?id *token *name"],
  ["refresh", "?id $token"],
  ["subscribe", "?id $channel ~since #recent *token"],
  ["unsubscribe", "?id $channel"],
  ["publish", "?id $channel *key %"],
  ["presence", "?id $channel"],
  ["signal", "?id $channel %"],
  ["ping", "?id"],
  ["rpc", "?id $method %"],
];

/** Replies and pushes, tags 0x41 up, in tag order. */
const SERVER: [string, string][] = [
  ["connected", "?id $client $user #version ?expires #ping %?"],
  ["refreshed", "?id ?expires"],
  ["subscribed", "?id $channel $epoch #offset !recovered,gap"],
  ["unsubscribed", "?id $channel *reason"],
  ["published", "?id $channel #offset !duplicate"],
  ["presence", "?id $channel &clients"],
  ["ok", "?id"],
  ["pong", "?id"],
  ["message", "$channel #offset #time @from %"],
  ["join", "$channel $user $client"],
  ["leave", "$channel $user $client"],
  ["signal", "$channel @from %"],
  ["gap", "$channel $epoch #offset"],
  ["error", "?id $code $message"],
  ["rpc", "?id %"],
];

const MAX = Number.MAX_SAFE_INTEGER;
const bad = (what: string) => new ProtocolError("bad_request", `bad binary frame: ${what}`);
const utf8 = new TextEncoder();
const fromUtf8 = new TextDecoder("utf-8", { fatal: true });
type Pair = { user: string; client: string };

/** A command as a duplex.v1.bin frame. */
export function encodeBinaryCommand(command: Command): ArrayBuffer {
  const at = COMMANDS.findIndex(([op]) => op === command.op);
  if (at < 0) throw new ProtocolError("unknown_op", `unknown op ${command.op}`);
  const binary = isBytes(command.data);
  const out: number[] = [(at + 1) | (binary ? 0x80 : 0)];
  const uint = (n: number) => {
    if (!Number.isInteger(n) || n < 0 || n > MAX + 1) throw bad(`integer ${n}`);
    for (; n >= 0x80; n = Math.floor(n / 0x80)) out.push((n % 0x80) | 0x80);
    out.push(n);
  };
  const str = (s: unknown, bias: number) => {
    if (typeof s !== "string") throw bad(`string ${String(s)}`);
    if (s.length > 1 && /^[0-9a-f]+$/.test(s)) {
      uint(s.length * 2 + 1 + bias);
      for (let i = 0; i < s.length; i += 2) out.push(parseInt(s.slice(i, i + 2).padEnd(2, "0"), 16));
    } else {
      const b = utf8.encode(s);
      uint(b.length * 2 + bias);
      out.push(...b);
    }
  };
  let data: Uint8Array | undefined;
  for (const token of (COMMANDS[at] as [string, string])[1].split(" ")) {
    const value = command[token.slice(1)];
    const absent = value === undefined || value === null;
    switch (token[0]) {
      case "?":
        uint(absent ? 0 : (value as number) + 1);
        break;
      case "#":
        uint(absent ? 0 : (value as number));
        break;
      case "$":
        str(value, 0);
        break;
      case "*":
        if (absent) uint(0);
        else str(value, 1);
        break;
      case "~": {
        const since = value as { epoch: string; offset: number } | undefined;
        if (absent || !since) uint(0);
        else {
          str(since.epoch, 1);
          uint(since.offset);
        }
        break;
      }
      default: {
        const d = command.data;
        if (isBytes(d)) data = d instanceof ArrayBuffer ? new Uint8Array(d) : new Uint8Array(d.buffer, d.byteOffset, d.byteLength);
        else data = utf8.encode(JSON.stringify(d ?? null));
      }
    }
  }
  const frame = new Uint8Array(out.length + (data?.length ?? 0));
  frame.set(out);
  if (data) frame.set(data, out.length);
  return frame.buffer;
}

/** Decodes a duplex.v1.bin frame from the hub (an ArrayBuffer; a string is refused). */
export function decodeBinaryServer(raw: string | ArrayBuffer): ServerMessage {
  if (typeof raw === "string") throw bad("a text frame");
  const b = new Uint8Array(raw);
  const tag = b[0] ?? 0;
  const entry = SERVER[(tag & 0x7f) - 0x41];
  if (!entry) throw new ProtocolError("unknown_op", `unknown tag 0x${tag.toString(16)}`);
  const [op, layout] = entry;
  if (tag & 0x80 && !layout.endsWith("%")) throw bad(`${op} carries no data`);
  let at = 1;
  const take = (len: number) => {
    if (len > b.length - at) throw bad("truncated");
    return b.subarray(at, (at += len));
  };
  const uint = (max = MAX) => {
    let n = 0;
    for (let shift = 0; shift < 63; shift += 7) {
      const byte = take(1)[0] as number;
      n += (byte & 0x7f) * 2 ** shift;
      if (byte < 0x80) {
        if ((byte === 0 && shift) || n > max) throw bad("integer");
        return n;
      }
    }
    throw bad("integer");
  };
  const text = (bytes: Uint8Array) => {
    try {
      return fromUtf8.decode(bytes);
    } catch {
      throw bad("UTF-8");
    }
  };
  const str = (h = uint()) => {
    const len = Math.floor(h / 2);
    if (h % 2 === 0) return text(take(len));
    const packed = take(Math.ceil(len / 2));
    if (len < 2 || (len % 2 && (packed[packed.length - 1] as number) & 0x0f)) throw bad("hex");
    let s = "";
    for (const x of packed) s += x.toString(16).padStart(2, "0");
    return s.slice(0, len);
  };
  const pair = (): Pair => ({ user: str(), client: str() });
  const m: ServerMessage = { op };
  for (const token of layout.split(" ")) {
    const field = token.slice(1);
    switch (token[0]) {
      case "?": {
        const n = uint(MAX + 1);
        if (n) m[field] = n - 1;
        break;
      }
      case "#":
        m[field] = uint();
        break;
      case "$":
        m[field] = str();
        break;
      case "*": {
        const h = uint();
        if (h) m[field] = str(h - 1);
        break;
      }
      case "!": {
        const names = field.split(",");
        const flags = take(1)[0] as number;
        if (flags >> names.length) throw bad("flags");
        names.forEach((name, i) => {
          if ((flags >> i) & 1) m[name] = true;
        });
        break;
      }
      case "@":
        m[field] = pair();
        break;
      case "&": {
        const clients: Pair[] = [];
        for (let n = uint(); n > 0; n--) clients.push(pair());
        m[field] = clients;
        break;
      }
      default: {
        if (token === "%?" && at === b.length) break;
        const rest = take(b.length - at);
        if (tag & 0x80) m.data = rest;
        else {
          try {
            m.data = JSON.parse(text(rest));
          } catch (cause) {
            if (cause instanceof ProtocolError) throw cause;
            throw bad("JSON data");
          }
        }
      }
    }
  }
  if (at !== b.length) throw bad("bytes after the last field");
  return m;
}

/** The binary envelope, for `new Client(url, { envelope: binaryEnvelope })`. */
export const binaryEnvelope: Envelope = {
  subprotocol: BINARY_SUBPROTOCOL,
  encodeCommand: encodeBinaryCommand,
  decodeServer: decodeBinaryServer,
};
