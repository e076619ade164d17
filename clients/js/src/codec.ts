/**
 * The duplex.v1 codec: hub frames to messages, commands to frames.
 *
 * Invariants: a decoded frame is one JSON object whose `op` is one the hub
 * sends; a binary frame is a u32 big-endian header length, a JSON header
 * without `data`, and the data bytes, and only `message` and `signal` travel
 * that way. Anything else is refused with a {@link ProtocolError} whose
 * `code` is `bad_request` or `unknown_op`, as `docs/protocol.md` says.
 * A command whose `data` is bytes is encoded as a binary frame; every other
 * command as JSON text.
 */

import { DuplexError } from "./errors.js";

/** Bytes, as the SDK accepts them for publish and signal data. */
export type Bytes = ArrayBuffer | ArrayBufferView;

/** A message from the hub: a reply, a push or an error, as decoded. */
export interface ServerMessage {
  /** The message's type (`connected`, `message`, `gap`, …). */
  op: string;
  /** The id of the command this replies to, if it is a reply. */
  id?: number | null;
  /** The channel, on channel messages. */
  channel?: string;
  /** Every other field, as the hub sent it. */
  [field: string]: unknown;
}

/** A command to the hub (`op`, `id` and its fields). */
export interface Command {
  /** The command's type (`connect`, `subscribe`, `publish`, …). */
  op: string;
  /** The request id, echoed by the reply. */
  id?: number;
  /** The command's fields. */
  [field: string]: unknown;
}

/** A frame the client cannot read, or a name it refuses to send. */
export class ProtocolError extends DuplexError {
  /** The protocol's error code: `bad_request` or `unknown_op`. */
  declare readonly code: "bad_request" | "unknown_op";

  /** An error of `code` saying `message` (and what caused it). */
  constructor(code: "bad_request" | "unknown_op", message: string, options?: { cause?: unknown }) {
    super(code, message, options);
    this.name = "ProtocolError";
  }
}

/** The ops the hub sends; another is `unknown_op`. */
const SERVER_OPS = new Set([
  "connected",
  "refreshed",
  "subscribed",
  "unsubscribed",
  "published",
  "presence",
  "ok",
  "message",
  "join",
  "leave",
  "signal",
  "gap",
  "pong",
  "error",
  "rpc",
]);

function check(msg: unknown, binary: boolean): ServerMessage {
  if (msg === null || typeof msg !== "object" || Array.isArray(msg)) {
    throw new ProtocolError("bad_request", "a frame holds one JSON object");
  }
  const op = (msg as { op?: unknown }).op;
  if (typeof op !== "string") throw new ProtocolError("bad_request", "field `op` is missing");
  if (!SERVER_OPS.has(op)) throw new ProtocolError("unknown_op", `unknown op ${op}`);
  if (binary && op !== "message" && op !== "signal") {
    throw new ProtocolError("bad_request", `op ${op} does not travel as binary`);
  }
  return msg as ServerMessage;
}

function decodeBinary(buffer: ArrayBuffer): ServerMessage {
  if (buffer.byteLength < 4) {
    throw new ProtocolError("bad_request", "a binary frame starts with a 4-byte header length");
  }
  const length = new DataView(buffer).getUint32(0);
  if (length > buffer.byteLength - 4) {
    throw new ProtocolError("bad_request", "the binary frame's header length exceeds the frame");
  }
  let header: unknown;
  try {
    header = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(new Uint8Array(buffer, 4, length)));
  } catch (cause) {
    throw new ProtocolError("bad_request", "the binary frame's header is not JSON", { cause });
  }
  const msg = check(header, true);
  if ("data" in msg) throw new ProtocolError("bad_request", "a binary frame's header has no `data`");
  msg.data = new Uint8Array(buffer, 4 + length);
  return msg;
}

/**
 * Decodes a frame from the hub: a string (text frame) or an ArrayBuffer
 * (binary frame, whose data becomes a Uint8Array). Throws
 * {@link ProtocolError} for what is not a hub message.
 */
export function decodeServer(raw: string | ArrayBuffer): ServerMessage {
  if (typeof raw !== "string") return decodeBinary(raw);
  let msg: unknown;
  try {
    msg = JSON.parse(raw);
  } catch (cause) {
    throw new ProtocolError("bad_request", "not JSON", { cause });
  }
  return check(msg, false);
}

/** Whether `data` is bytes (sent as a binary frame) rather than a JSON value. */
export function isBytes(data: unknown): data is Bytes {
  return data instanceof ArrayBuffer || ArrayBuffer.isView(data);
}

/** A command as a frame: JSON text, or a binary frame (ArrayBuffer) when its data is bytes. */
export function encodeCommand(command: Command): string | ArrayBuffer {
  const data = command.data;
  if (!isBytes(data)) return JSON.stringify(command);
  const { data: _data, ...rest } = command;
  const bytes = data instanceof ArrayBuffer ? new Uint8Array(data) : new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  const header = new TextEncoder().encode(JSON.stringify(rest));
  const out = new Uint8Array(4 + header.length + bytes.length);
  new DataView(out.buffer).setUint32(0, header.length);
  out.set(header, 4);
  out.set(bytes, 4 + header.length);
  return out.buffer;
}

/**
 * An envelope of the hub protocol: the WebSocket subprotocol it is offered
 * as and its codec. {@link jsonEnvelope} (duplex.v1) is the default; the
 * binary one is `binaryEnvelope` (duplex.v1.bin, in `binary.ts`).
 */
export interface Envelope {
  /** The WebSocket subprotocol offered for it. */
  readonly subprotocol: string;
  /** A command as a frame. */
  encodeCommand(command: Command): string | ArrayBuffer;
  /** A frame from the hub as a message; throws {@link ProtocolError}. */
  decodeServer(raw: string | ArrayBuffer): ServerMessage;
}

/** The JSON envelope, duplex.v1. */
export const jsonEnvelope: Envelope = { subprotocol: "duplex.v1", encodeCommand, decodeServer };

/** Whether `name` is a channel name: 1 to 255 of `A-Z a-z 0-9 _ - . : @ / =`, after one optional `$`. */
export function validChannel(name: unknown): name is string {
  return typeof name === "string" && name.length <= 255 && /^\$?[A-Za-z0-9_.:@/=-]+$/.test(name);
}
