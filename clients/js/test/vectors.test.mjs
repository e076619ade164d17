// The shared test vectors of the hub protocol (crates/hub-proto/tests/vectors/,
// format in its README.md) against this SDK's recovery machine
// (`Subscriptions`, src/subscriptions.ts) and codec (`decodeServer`,
// `encodeCommand`), as built in dist/. The SDK is the only JavaScript client
// (the hub's web pages use it), so this is the only JavaScript runner; it is
// strict: an unknown file, kind, role,
// key or step fails; every case is one test of its own, and the last test
// checks that the cases run are every case of the files. Codec cases of role
// `hub` (the hub's decoder and encoder), and binary cases of commands the
// hub refuses, are counted and not run: their test checks only that they are
// the hub's. Binary cases with a message are run one way: commands encoded,
// hub frames decoded (`binaryEnvelope`).

import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, join } from "node:path";
import test from "node:test";
import { fileURLToPath } from "node:url";

import * as sdk from "../dist/index.js";

const here = dirname(fileURLToPath(import.meta.url));
const VECTORS = join(here, "../../../crates/hub-proto/tests/vectors");
const COMPANIONS = ["README.md"];

// ---- comparing --------------------------------------------------------------

function isObject(v) {
  return v !== null && typeof v === "object" && !Array.isArray(v);
}

/** Drops fields set to null or false, and recent: 0, outside `data`. */
function normalise(value) {
  if (Array.isArray(value)) return value.map(normalise);
  if (!isObject(value)) return value;
  const out = {};
  for (const [k, v] of Object.entries(value)) {
    if (v === null || v === false || v === undefined) continue;
    if (k === "recent" && v === 0) continue;
    out[k] = k === "data" ? v : normalise(v);
  }
  return out;
}

function equal(a, b) {
  if (Array.isArray(a) || Array.isArray(b)) {
    return Array.isArray(a) && Array.isArray(b) && a.length === b.length && a.every((x, i) => equal(x, b[i]));
  }
  if (isObject(a) || isObject(b)) {
    if (!isObject(a) || !isObject(b)) return false;
    const ka = Object.keys(a);
    return ka.length === Object.keys(b).length && ka.every((k) => k in b && equal(a[k], b[k]));
  }
  return a === b;
}

function onlyKeys(object, allowed) {
  if (!isObject(object)) throw new Error(`not an object: ${JSON.stringify(object)}`);
  for (const k of Object.keys(object)) {
    if (!allowed.includes(k)) throw new Error(`unknown key ${JSON.stringify(k)} in ${JSON.stringify(object)}`);
  }
}

const isPlaceholder = (v) => typeof v === "string" && v.startsWith("$");

/** Id placeholders ("id": "$name") of one case. */
class Ids {
  constructor() {
    this.bound = new Map();
  }

  bind(name, id) {
    if (this.bound.has(name)) {
      if (this.bound.get(name) !== id) throw new Error(`id ${name} is ${this.bound.get(name)}, got ${id}`);
      return;
    }
    for (const [other, value] of this.bound) {
      if (value === id) throw new Error(`id ${id} is ${other} already, not ${name}`);
    }
    this.bound.set(name, id);
  }

  substitute(value) {
    if (Array.isArray(value)) return value.map((v) => this.substitute(v));
    if (!isObject(value)) return value;
    const out = {};
    for (const [k, v] of Object.entries(value)) {
      if (k === "id" && isPlaceholder(v)) {
        if (!this.bound.has(v)) throw new Error(`id ${v} is not bound yet`);
        out[k] = this.bound.get(v);
      } else {
        out[k] = k === "data" ? v : this.substitute(v);
      }
    }
    return out;
  }

  matches(expected, actual, subset) {
    const e = normalise(expected);
    const a = normalise(actual);
    try {
      this.compare(e, a, subset, "");
    } catch (error) {
      throw new Error(`${error.message}\n  expected ${JSON.stringify(e)}\n  got      ${JSON.stringify(a)}`);
    }
  }

  compare(expected, actual, subset, at) {
    if (isObject(expected) && isObject(actual)) {
      if (!subset) {
        for (const k of Object.keys(actual)) if (!(k in expected)) throw new Error(`unexpected field ${at}.${k}`);
      }
      for (const [k, ev] of Object.entries(expected)) {
        if (!(k in actual)) throw new Error(`missing field ${at}.${k}`);
        const av = actual[k];
        if (k === "id" && isPlaceholder(ev) && Number.isInteger(av)) this.bind(ev, av);
        else if (k === "data") {
          if (!equal(ev, av)) throw new Error(`${at}.data differs`);
        } else this.compare(ev, av, subset, `${at}.${k}`);
      }
      return;
    }
    if (Array.isArray(expected) && Array.isArray(actual) && expected.length === actual.length) {
      expected.forEach((ev, i) => this.compare(ev, actual[i], subset, `${at}[${i}]`));
      return;
    }
    if (!equal(expected, actual)) throw new Error(`${at}: ${JSON.stringify(expected)} ≠ ${JSON.stringify(actual)}`);
  }
}

// ---- subscriptions ----------------------------------------------------------

function eventJson(event) {
  switch (event.type) {
    case "subscribed":
      return { subscribed: { channel: event.channel, recovered: event.recovered } };
    case "message":
      return { message: { channel: event.message.channel, offset: event.message.offset } };
    case "gap":
      return { gap: { channel: event.channel } };
    case "subscribe_failed":
      return { subscribe_failed: { channel: event.channel, code: event.code, message: event.message } };
    case "unsubscribed":
      return { unsubscribed: { channel: event.channel, reason: event.reason } };
    case "other":
      return { other: event.message };
    default:
      return { unknown_event: event };
  }
}

function runSubscriptions(kase) {
  onlyKeys(kase, ["name", "description", "role", "steps"]);
  if (kase.role !== undefined && kase.role !== "client") throw new Error("subscriptions cases are for clients");
  if (!Array.isArray(kase.steps)) throw new Error("no steps");
  const subs = new sdk.Subscriptions();
  const ids = new Ids();
  let sent = [];
  let events = [];
  kase.steps.forEach((step, i) => {
    try {
      runStep(step);
    } catch (error) {
      throw new Error(`step ${i + 1}: ${JSON.stringify(step)}: ${error.message}`);
    }
    sent.push(...subs.takeTransmit());
  });
  if (sent.length || events.length) {
    throw new Error(`unchecked at the end: sent ${JSON.stringify(sent)}, events ${JSON.stringify(events.map(eventJson))}`);
  }

  function runStep(step) {
    if ("do" in step) {
      switch (step.do) {
        case "subscribe": {
          onlyKeys(step, ["do", "channel", "recent", "since", "invalid"]);
          let refused = false;
          try {
            subs.subscribe(step.channel, { recent: step.recent || 0, since: step.since || null });
          } catch (_) {
            refused = true;
          }
          if (refused !== (step.invalid === true)) throw new Error(`subscribe refused: ${refused}`);
          break;
        }
        case "unsubscribe": {
          onlyKeys(step, ["do", "channel", "wanted"]);
          const wanted = subs.unsubscribe(step.channel);
          if (wanted !== (step.wanted === undefined ? true : step.wanted)) throw new Error(`unsubscribe returned ${wanted}`);
          break;
        }
        case "connected":
          onlyKeys(step, ["do"]);
          sent.push(...subs.onConnected());
          break;
        case "disconnected":
          onlyKeys(step, ["do"]);
          subs.onDisconnected();
          break;
        case "take_id":
          onlyKeys(step, ["do", "id"]);
          if (!isPlaceholder(step.id)) throw new Error("bad id");
          ids.bind(step.id, subs.nextId());
          break;
        default:
          throw new Error(`unknown action ${JSON.stringify(step.do)}`);
      }
    } else if ("receive" in step) {
      onlyKeys(step, ["receive"]);
      const msg = sdk.decodeServer(JSON.stringify(ids.substitute(step.receive)));
      events.push(...subs.handle(msg));
    } else if ("expect_sent" in step) {
      onlyKeys(step, ["expect_sent"]);
      const actual = sent.map((c) => JSON.parse(sdk.encodeCommand(c)));
      sent = [];
      ids.matches(step.expect_sent, actual, false);
    } else if ("expect_events" in step) {
      onlyKeys(step, ["expect_events"]);
      const actual = events.map(eventJson);
      events = [];
      ids.matches(step.expect_events, actual, false);
    } else if ("expect_channel" in step) {
      onlyKeys(step, ["expect_channel"]);
      const expected = { wanted: true, ...step.expect_channel };
      onlyKeys(expected, ["channel", "wanted", "subscribed", "position"]);
      const wanted = subs.channels().includes(expected.channel);
      const actual = { channel: expected.channel, wanted, subscribed: subs.isSubscribed(expected.channel) };
      if (wanted || "position" in expected) actual.position = subs.position(expected.channel);
      if (!equal(expected, actual)) throw new Error(`expected ${JSON.stringify(expected)}, got ${JSON.stringify(actual)}`);
    } else if ("expect_channels" in step) {
      onlyKeys(step, ["expect_channels"]);
      const actual = subs.channels();
      if (!equal(step.expect_channels, actual)) throw new Error(`wanted channels are ${JSON.stringify(actual)}`);
    } else {
      throw new Error("unknown step");
    }
  }
}

// ---- codec ------------------------------------------------------------------

const hex = (bytes) => Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");

function unhex(text) {
  if (typeof text !== "string" || text.length % 2 || /[^0-9a-f]/i.test(text)) throw new Error(`bad hex ${text}`);
  const out = new Uint8Array(text.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(text.slice(2 * i, 2 * i + 2), 16);
  return out;
}

/** A decoded message as vector JSON: bytes data as data_hex. */
function messageJson(msg) {
  const out = { ...msg };
  if (out.data instanceof Uint8Array) {
    out.data_hex = hex(out.data);
    delete out.data;
  }
  return out;
}

function splitBinary(buffer) {
  const bytes = new Uint8Array(buffer);
  if (bytes.length < 4) throw new Error("binary frame shorter than 4 bytes");
  const length = new DataView(buffer).getUint32(0);
  if (length > bytes.length - 4) throw new Error("header length beyond the frame");
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(4, 4 + length)));
  return { header, data: bytes.subarray(4 + length) };
}

/** Runs a client codec case; returns false for a hub case (not run). */
function runCodec(kase) {
  onlyKeys(kase, ["name", "description", "role", "decode", "encode", "expect"]);
  if (kase.role !== "client" && kase.role !== "hub") throw new Error(`role ${JSON.stringify(kase.role)}`);
  if (("decode" in kase) === ("encode" in kase)) throw new Error("a codec case has decode or encode");
  if (kase.role === "hub") return false;
  const ids = new Ids();
  const expect = kase.expect;
  if ("decode" in kase) {
    onlyKeys(kase.decode, ["text", "binary_hex"]);
    onlyKeys(expect, ["message", "error"]);
    const raw = "text" in kase.decode ? kase.decode.text : unhex(kase.decode.binary_hex).buffer;
    let decoded;
    let error;
    try {
      decoded = messageJson(sdk.decodeServer(raw));
    } catch (e) {
      error = e;
    }
    if ("message" in expect) {
      if (error) throw new Error(`refused (${error.code}: ${error.message}), expected ${JSON.stringify(expect)}`);
      ids.matches(expect.message, decoded, true);
    } else {
      if (!error) throw new Error(`decoded to ${JSON.stringify(decoded)}, expected ${JSON.stringify(expect)}`);
      onlyKeys(expect.error, ["code", "id"]);
      if (error.code !== expect.error.code) throw new Error(`error ${error.code} (${error.message}), expected ${expect.error.code}`);
    }
  } else {
    onlyKeys(expect, ["text", "binary"]);
    const command = { ...kase.encode };
    if ("data_hex" in command) {
      command.data = unhex(command.data_hex);
      delete command.data_hex;
    }
    const frame = sdk.encodeCommand(command);
    if ("text" in expect) {
      if (typeof frame !== "string") throw new Error("encoded as binary, expected text");
      ids.matches(expect.text, JSON.parse(frame), false);
    } else {
      if (typeof frame === "string") throw new Error(`encoded as text ${frame}, expected binary`);
      onlyKeys(expect.binary, ["header", "data_hex"]);
      const { header, data } = splitBinary(frame);
      ids.matches(expect.binary.header, header, false);
      if (hex(data) !== expect.binary.data_hex) throw new Error(`data ${hex(data)} ≠ ${expect.binary.data_hex}`);
    }
  }
  return true;
}

// ---- binary envelope ----------------------------------------------------------

/**
 * Runs a binary-envelope case in the directions a client has: encoding a
 * command (role `command` with a message) and decoding a hub frame (role
 * `server`); returns false for what only the hub does (decoding commands).
 */
function runBinary(kase) {
  onlyKeys(kase, ["name", "description", "role", "message", "hex", "expect"]);
  if (kase.role !== "command" && kase.role !== "server") throw new Error(`role ${JSON.stringify(kase.role)}`);
  if (("message" in kase) === ("expect" in kase)) throw new Error("a binary case has a message or an expected error");
  const bytes = unhex(kase.hex);
  if (kase.role === "command") {
    if (!("message" in kase)) return false;
    const command = { ...kase.message };
    if ("data_hex" in command) {
      command.data = unhex(command.data_hex);
      delete command.data_hex;
    }
    const frame = sdk.binaryEnvelope.encodeCommand(command);
    if (typeof frame === "string" || hex(new Uint8Array(frame)) !== kase.hex) {
      throw new Error(`encoded as ${typeof frame === "string" ? frame : hex(new Uint8Array(frame))}, expected ${kase.hex}`);
    }
    return true;
  }
  let decoded;
  let error;
  try {
    decoded = messageJson(sdk.binaryEnvelope.decodeServer(bytes.buffer));
  } catch (e) {
    error = e;
  }
  if ("message" in kase) {
    if (error) throw new Error(`refused (${error.code}: ${error.message}), expected ${JSON.stringify(kase.message)}`);
    new Ids().matches(kase.message, decoded, false);
  } else {
    onlyKeys(kase.expect, ["error"]);
    onlyKeys(kase.expect.error, ["code", "id"]);
    if (!error) throw new Error(`decoded to ${JSON.stringify(decoded)}, expected ${JSON.stringify(kase.expect)}`);
    if (!(error instanceof sdk.ProtocolError) || error.code !== kase.expect.error.code) {
      throw new Error(`error ${error.code} (${error.message}), expected ${kase.expect.error.code}`);
    }
  }
  return true;
}

// ---- kind signature: what a backend checks -------------------------------

/** `Duplex-Signature`: HMAC-SHA256 of `"{t}." + body`, as a backend on Node computes it. */
function runSignature(kase) {
  onlyKeys(kase, ["name", "description", "secret", "t", "body", "header"]);
  const v1 = createHmac("sha256", kase.secret).update(`${kase.t}.`).update(kase.body, "utf8").digest("hex");
  assert.equal(`t=${kase.t},v1=${v1}`, kase.header);
}

// ---- the folder -------------------------------------------------------------

const summary = { files: 0, cases: 0, ran: 0, hub_only: 0 };
const strangers = [];
let counted = 0;
for (const name of readdirSync(VECTORS).sort()) {
  if (COMPANIONS.includes(name)) continue;
  if (!name.endsWith(".json") || !statSync(join(VECTORS, name)).isFile()) {
    strangers.push(name);
    continue;
  }
  summary.files += 1;
  const file = JSON.parse(readFileSync(join(VECTORS, name), "utf8"));
  onlyKeys(file, ["description", "kind", "cases"]);
  assert.ok(Array.isArray(file.cases) && file.cases.length > 0, `${name}: no cases`);
  const names = new Set();
  for (const kase of file.cases) {
    counted += 1;
    const duplicate = names.has(kase.name);
    names.add(kase.name);
    const hubOnly =
      (file.kind === "codec" && kase.role === "hub") || (file.kind === "binary" && kase.role === "command" && !("message" in kase));
    const title = `vector ${name}: ${kase.name}${hubOnly ? " [role hub: counted, run by the Rust runner only]" : ""}`;
    test(title, () => {
      summary.cases += 1;
      assert.ok(!duplicate, "a second case of this name");
      if (file.kind === "subscriptions") {
        runSubscriptions(kase);
        summary.ran += 1;
      } else if (file.kind === "codec") {
        if (runCodec(kase)) summary.ran += 1;
        else summary.hub_only += 1;
      } else if (file.kind === "binary") {
        if (runBinary(kase)) summary.ran += 1;
        else summary.hub_only += 1;
      } else if (file.kind === "signature") {
        runSignature(kase);
        summary.ran += 1;
      } else {
        throw new Error(`unknown kind ${JSON.stringify(file.kind)}`);
      }
    });
  }
}

test("vectors: the folder holds only vector files and every case ran", () => {
  assert.deepEqual(strangers, [], `not vector files (*.json) nor ${COMPANIONS.join(", ")}`);
  assert.ok(summary.files >= 6, `only ${summary.files} vector files`);
  assert.equal(summary.cases, counted, "a case did not run");
  assert.equal(summary.ran + summary.hub_only, summary.cases);
  assert.ok(summary.ran >= 120, `the vectors shrank: ${JSON.stringify(summary)}`);
  console.log(`VECTORS ${JSON.stringify(summary)}`);
});
