// End to end, from Node, against a real `duplex serve` on loopback: the
// binary is $DUPLEX_BIN (set by crates/cli/tests/js_sdk.rs), else the
// workspace's target/debug/duplex; neither being there fails, it never skips.
// Node 20's WebSocket (--experimental-websocket, as `npm test` runs it) is
// the transport. Covers: connect, subscribe, publish, receive; a network cut
// (a TCP relay the test cuts) with no message lost or repeated; a hub
// restart on the same port (the in-memory history is lost: a gap is
// announced); a token expiring mid-session (HS256 tokens signed here with
// node:crypto), a refresh failing, and a token for another user.

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createHmac } from "node:crypto";
import { existsSync } from "node:fs";
import { createServer, connect as tcpConnect } from "node:net";
import { dirname, join } from "node:path";
import { createInterface } from "node:readline";
import test from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";

import { binaryEnvelope, Client, HubError, jsonEnvelope, TokenError } from "../dist/index.js";

const here = dirname(fileURLToPath(import.meta.url));
const BIN = process.env.DUPLEX_BIN || join(here, "../../../target/debug/duplex");
const SECRET = "a-test-secret-of-at-least-32-bytes!!";

if (!existsSync(BIN)) {
  throw new Error(`no duplex binary at ${BIN}: build it (cargo build -p duplex-cli) or set DUPLEX_BIN`);
}

/** Starts `duplex serve` on `listen`; resolves with {address, stop()} once it listens. */
async function serve(listen = "127.0.0.1:0", extra = []) {
  const child = spawn(BIN, ["serve", "--listen", listen, ...extra], {
    env: { ...process.env, RUST_LOG: "info", DUPLEX_LOG_FORMAT: "human" },
    stdio: ["ignore", "ignore", "pipe"],
  });
  const lines = createInterface({ input: child.stderr });
  const address = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("duplex serve did not listen within 20 s")), 20000);
    child.once("exit", (code) => reject(new Error(`duplex serve exited (${code})`)));
    lines.on("line", (line) => {
      const match = /hub listening.*address=(\S+)/.exec(line.replace(/\x1b\[[0-9;]*m/g, ""));
      if (match) {
        clearTimeout(timer);
        resolve(match[1]);
      }
    });
  });
  return {
    address,
    stop: () =>
      new Promise((resolve) => {
        if (child.exitCode !== null) return resolve();
        child.once("exit", resolve);
        child.kill("SIGKILL");
      }),
  };
}

/** A TCP relay to `target` ("host:port") that the test can cut. */
async function relay(target) {
  const [host, port] = [target.slice(0, target.lastIndexOf(":")), Number(target.slice(target.lastIndexOf(":") + 1))];
  const pairs = new Set();
  const server = createServer((downstream) => {
    const upstream = tcpConnect(port, host);
    const pair = [downstream, upstream];
    pairs.add(pair);
    downstream.pipe(upstream);
    upstream.pipe(downstream);
    const end = () => {
      pairs.delete(pair);
      downstream.destroy();
      upstream.destroy();
    };
    downstream.on("error", end).on("close", end);
    upstream.on("error", end).on("close", end);
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    address: `127.0.0.1:${server.address().port}`,
    /** Cuts every connection through the relay; returns how many. */
    cut() {
      const n = pairs.size;
      for (const [a, b] of pairs) {
        a.resetAndDestroy();
        b.destroy();
      }
      pairs.clear();
      return n;
    },
    close: () => new Promise((resolve) => server.close(resolve)),
  };
}

const b64 = (value) => Buffer.from(typeof value === "string" ? value : JSON.stringify(value)).toString("base64url");

/** An HS256 JWT for `sub`, valid `seconds` from now. */
function jwt(sub, seconds, secret = SECRET) {
  const body = `${b64({ alg: "HS256", typ: "JWT" })}.${b64({ sub, exp: Math.floor(Date.now() / 1000) + seconds, channels: ["chat:*"] })}`;
  return `${body}.${createHmac("sha256", secret).update(body).digest("base64url")}`;
}

async function until(check, what, ms = 15000) {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

const fast = { backoffBase: 50, backoffCap: 300, stableAfter: 1000, name: "e2e" };

/** A WebSocket class recording the subprotocol each socket got and the kinds of frame it received. */
function spyingWebSocket() {
  const seen = { protocols: [], text: 0, binary: 0 };
  class Spy extends globalThis.WebSocket {
    constructor(url, protocols) {
      super(url, protocols);
      this.addEventListener("open", () => seen.protocols.push(this.protocol));
      this.addEventListener("message", (e) => (typeof e.data === "string" ? seen.text++ : seen.binary++));
    }
  }
  return { Spy, seen };
}

// Each envelope runs the same two cases (top-level tests, which the Rust
// runner of this suite counts).
const roundTrip = (label, envelope) => async () => {
    const hub = await serve();
    const { Spy, seen } = spyingWebSocket();
    const options = { ...fast, envelope, WebSocket: Spy };
    const a = new Client(`ws://${hub.address}/ws`, options);
    const b = new Client(`ws://${hub.address}/ws`, options);
    try {
      const info = await a.connect();
      await b.connect();
      assert.equal(info.user, "");
      const sub = a.subscribe("chat:e2e", { recent: 10 });
      await sub.ready;
      const first = await b.publish("chat:e2e", { text: "hello" });
      assert.equal(first.offset, 1);
      const bytes = await b.publish("chat:e2e", new Uint8Array([0, 1, 255]));
      assert.equal(bytes.offset, 2);
      const got = [];
      for await (const message of sub) {
        got.push(message);
        if (got.length === 2) break;
      }
      assert.deepEqual(got[0].data, { text: "hello" });
      assert.deepEqual(Array.from(got[1].data), [0, 1, 255]);
      assert.equal(got[0].from.client, b.connection.client);
      assert.deepEqual(
        (await a.presence("chat:e2e")).map((p) => p.client),
        [a.connection.client],
      );
      // Each socket spoke the envelope asked for: binary frames only on duplex.v1.bin.
      assert.deepEqual(seen.protocols, [label, label]);
      if (envelope === binaryEnvelope) assert.equal(seen.text, 0);
      assert.ok(seen.binary + seen.text >= 6, JSON.stringify(seen));
    } finally {
      a.close();
      b.close();
      await hub.stop();
    }
};

const cutRecovery = (label, envelope) => async () => {
    const hub = await serve();
    const cutter = await relay(hub.address);
    const reader = new Client(`ws://${cutter.address}/ws`, { ...fast, envelope });
    const writer = new Client(`ws://${cutter.address}/ws`, { ...fast, envelope });
    let drops = 0;
    reader.on("disconnected", () => drops++);
    const gaps = [];
    reader.on("gap", (g) => gaps.push(g));
    try {
      await reader.connect();
      await writer.connect();
      const sub = reader.subscribe("chat:cut");
      await sub.ready;
      const offsets = [];
      sub.on("message", (m) => offsets.push(m.data.n));
      const N = 60;
      const acks = [];
      for (let n = 1; n <= N; n++) {
        acks.push(writer.publish("chat:cut", { n })); // queued while the writer is cut off too
        if (n % 20 === 0) {
          await sleep(30);
          assert.ok(cutter.cut() >= 1, "the cut found connections");
        }
        await sleep(5);
      }
      const results = await Promise.all(acks);
      // Each publish has one offset, even those sent again after the cut.
      assert.deepEqual(
        results.map((r) => r.offset).sort((x, y) => x - y),
        Array.from({ length: N }, (_, i) => i + 1),
      );
      await until(() => offsets.length >= N, `${N} messages (have ${offsets.length})`);
      await sleep(200);
      assert.deepEqual(offsets, Array.from({ length: N }, (_, i) => i + 1), "every message once, in order");
      assert.ok(drops >= 3, `the reader dropped ${drops} times`);
      assert.deepEqual(gaps, [], "the history covered the cuts: no gap");
      assert.ok(reader.counters.recovered >= 1);
    } finally {
      reader.close();
      writer.close();
      await cutter.close();
      await hub.stop();
    }
};

test("e2e (duplex.v1): connect, subscribe, publish and receive through a real hub", { timeout: 30000 }, roundTrip("duplex.v1", jsonEnvelope));
test("e2e (duplex.v1.bin): connect, subscribe, publish and receive through a real hub", { timeout: 30000 }, roundTrip("duplex.v1.bin", binaryEnvelope));
test("e2e (duplex.v1): a network cut mid-stream is recovered with no message lost or repeated", { timeout: 60000 }, cutRecovery("duplex.v1", jsonEnvelope));
test("e2e (duplex.v1.bin): a network cut mid-stream is recovered with no message lost or repeated", { timeout: 60000 }, cutRecovery("duplex.v1.bin", binaryEnvelope));

test("e2e: a hub restart on the same port: the client reconnects and announces the gap", { timeout: 60000 }, async () => {
  let hub = await serve();
  const address = hub.address;
  const c = new Client(`ws://${address}/ws`, fast);
  const gaps = [];
  try {
    await c.connect();
    const sub = c.subscribe("chat:restart");
    sub.on("gap", (g) => gaps.push(g));
    await sub.ready;
    const received = [];
    sub.on("message", (m) => received.push(m));
    await c.publish("chat:restart", "before");
    await until(() => received.length === 1, "the first message");
    const before = sub.position;
    await hub.stop();
    hub = await serve(address);
    await until(() => gaps.length === 1, "the gap after the restart");
    assert.equal(gaps[0].channel, "chat:restart");
    assert.notEqual(gaps[0].epoch, before.epoch, "a new epoch");
    const after = await c.publish("chat:restart", "after");
    assert.equal(after.offset, 1, "offsets start again");
    await until(() => received.length === 2, "the message after the restart");
    assert.equal(received[1].data, "after");
    assert.equal(received[1].epoch, gaps[0].epoch);
  } finally {
    c.close();
    await hub.stop();
  }
});

test("e2e: a token expiring mid-session is refreshed through getToken without a drop", { timeout: 30000 }, async () => {
  const hub = await serve("127.0.0.1:0", ["--jwt-secret", SECRET]);
  let calls = 0;
  const c = new Client(`ws://${hub.address}/ws`, {
    ...fast,
    getToken: async () => {
      calls += 1;
      return jwt("alice", 3);
    },
  });
  const drops = [];
  c.on("disconnected", (d) => drops.push(d));
  try {
    const info = await c.connect();
    assert.equal(info.user, "alice");
    const sub = c.subscribe("chat:tokens");
    await sub.ready;
    await sleep(5000); // past the first token's expiry, and the second's
    assert.deepEqual(drops, [], "no drop: the hub got a new token in time");
    assert.ok(calls >= 3, `getToken was called ${calls} times`);
    const got = [];
    sub.on("message", (m) => got.push(m.data));
    await c.publish("chat:tokens", "still here");
    await until(() => got.length === 1, "the message");
  } finally {
    c.close();
    await hub.stop();
  }
});

test("e2e: a refresh failing is an error and retried; the hub closes at expiry (4002) and the client reconnects with a fresh token", { timeout: 30000 }, async () => {
  const hub = await serve("127.0.0.1:0", ["--jwt-secret", SECRET]);
  let failing = true; // every call after the first, until the test says
  let calls = 0;
  const c = new Client(`ws://${hub.address}/ws`, {
    ...fast,
    getToken: async () => {
      calls += 1;
      if (failing && calls > 1) throw new Error("the auth service is down");
      return jwt("alice", 3);
    },
  });
  const errors = [];
  const drops = [];
  c.on("error", (d) => errors.push(d.error));
  c.on("disconnected", (d) => drops.push(d));
  try {
    await c.connect();
    const sub = c.subscribe("chat:expiry");
    await sub.ready;
    await until(() => drops.length >= 1, "the hub closing at expiry", 10000);
    assert.equal(drops[0].code, 4002);
    assert.ok(drops[0].willReconnect);
    const tokenErrors = errors.filter((e) => e instanceof TokenError);
    assert.ok(tokenErrors.length >= 2, `refresh retried: ${tokenErrors.length} token errors`);
    failing = false;
    const reconnected = await new Promise((resolve) => c.on("connected", resolve));
    assert.equal(reconnected.reconnected, true);
    assert.equal(reconnected.user, "alice");
    await until(() => c.state === "connected" && sub.position !== null, "resubscribed");
    assert.ok(calls >= 4);
  } finally {
    c.close();
    await hub.stop();
  }
});

test("e2e: a refresh with a token for another user is refused by the hub and surfaced as an error", { timeout: 30000 }, async () => {
  const hub = await serve("127.0.0.1:0", ["--jwt-secret", SECRET]);
  let user = "alice";
  const c = new Client(`ws://${hub.address}/ws`, { ...fast, getToken: () => jwt(user, 3600) });
  const errors = [];
  c.on("error", (d) => errors.push(d.error));
  try {
    await c.connect();
    user = "mallory";
    await assert.rejects(c.refreshToken(), (e) => e instanceof HubError && e.code === "unauthorized");
    await until(() => errors.length >= 1, "the error event");
    assert.equal(errors[0].code, "unauthorized");
    assert.equal(c.state, "connected");
    assert.equal(c.connection.user, "alice");
  } finally {
    c.close();
    await hub.stop();
  }
});

/** A TCP relay to `target` that refuses every WebSocket upgrade (403), as some proxies do, and passes plain HTTP on; `cut()` cuts what passes. */
async function refusingRelay(target) {
  const [host, port] = [target.slice(0, target.lastIndexOf(":")), Number(target.slice(target.lastIndexOf(":") + 1))];
  const pairs = new Set();
  let refused = 0;
  const server = createServer((downstream) => {
    downstream.once("data", (first) => {
      if (/^upgrade:\s*websocket/im.test(first.toString("latin1"))) {
        refused += 1;
        downstream.end("HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        return;
      }
      const upstream = tcpConnect(port, host);
      upstream.write(first);
      const pair = [downstream, upstream];
      pairs.add(pair);
      downstream.pipe(upstream);
      upstream.pipe(downstream);
      const end = () => {
        pairs.delete(pair);
        downstream.destroy();
        upstream.destroy();
      };
      downstream.on("error", end).on("close", end);
      upstream.on("error", end).on("close", end);
    });
    downstream.on("error", () => {});
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    address: `127.0.0.1:${server.address().port}`,
    refused: () => refused,
    cut() {
      const n = pairs.size;
      for (const [a, b] of pairs) {
        a.resetAndDestroy();
        b.destroy();
      }
      pairs.clear();
      return n;
    },
    close: () => new Promise((resolve) => server.close(resolve)),
  };
}

test("e2e: the http transport (SSE down, POSTs up) chats with a WebSocket client, JSON and bytes", { timeout: 30000 }, async () => {
  const hub = await serve();
  const http = new Client(`ws://${hub.address}/ws`, { ...fast, transports: ["http"] });
  const ws = new Client(`ws://${hub.address}/ws`, fast);
  try {
    await http.connect();
    await ws.connect();
    assert.equal(http.transport, "http");
    assert.equal(ws.transport, "websocket");
    const sub = http.subscribe("chat:http");
    const wsSub = ws.subscribe("chat:http");
    await sub.ready;
    await wsSub.ready;
    const got = [];
    sub.on("message", (m) => got.push(m.data));
    const wsGot = [];
    wsSub.on("message", (m) => wsGot.push(m.data));
    await ws.publish("chat:http", { text: "from ws" });
    await ws.publish("chat:http", new Uint8Array([1, 2, 250]));
    const ack = await http.publish("chat:http", { text: "from http" });
    assert.equal(ack.offset, 3);
    await http.publish("chat:http", new Uint8Array([9, 0, 9]));
    await until(() => got.length === 4 && wsGot.length === 4, "4 messages on each side");
    assert.deepEqual(got[0], { text: "from ws" });
    assert.deepEqual(Array.from(got[1]), [1, 2, 250]);
    assert.deepEqual(wsGot[2], { text: "from http" });
    assert.deepEqual(Array.from(wsGot[3]), [9, 0, 9]);
    assert.deepEqual(
      (await ws.presence("chat:http")).map((p) => p.client).sort(),
      [http.connection.client, ws.connection.client].sort(),
    );
    // Closing ends the hub's session at once (DELETE): it leaves presence.
    http.close();
    await until(() => true, "");
    let present = 2;
    const deadline = Date.now() + 5000;
    while (present !== 1 && Date.now() < deadline) {
      present = (await ws.presence("chat:http")).length;
      await sleep(20);
    }
    assert.equal(present, 1, "the closed http client left at once");
  } finally {
    http.close();
    ws.close();
    await hub.stop();
  }
});

test("e2e: a relay refusing the WebSocket upgrade: the client falls back to http by itself, and a cut stream loses nothing", { timeout: 60000 }, async () => {
  const hub = await serve();
  const relay = await refusingRelay(hub.address);
  const reader = new Client(`ws://${relay.address}/ws`, fast);
  const writer = new Client(`ws://${hub.address}/ws`, fast);
  const gaps = [];
  reader.on("gap", (g) => gaps.push(g));
  try {
    await reader.connect();
    await writer.connect();
    assert.equal(reader.transport, "http");
    assert.ok(relay.refused() >= 1, "the WebSocket was tried first and refused");
    const sub = reader.subscribe("chat:fallback");
    await sub.ready;
    const got = [];
    sub.on("message", (m) => got.push(m.data.n));
    const N = 60;
    for (let n = 1; n <= N; n++) {
      await writer.publish("chat:fallback", { n });
      if (n % 20 === 0) {
        await sleep(30);
        relay.cut(); // the stream (and any POST) through the relay
      }
      await sleep(5);
    }
    await until(() => got.length >= N, `${N} messages (have ${got.length})`);
    await sleep(200);
    assert.deepEqual(got, Array.from({ length: N }, (_, i) => i + 1), "every message once, in order");
    assert.deepEqual(gaps, []);
    assert.equal(reader.transport, "http", "the transport that worked is kept");
    // And the reader still publishes.
    const ack = await reader.publish("chat:fallback", { n: 0 });
    assert.equal(ack.offset, N + 1);
  } finally {
    reader.close();
    writer.close();
    await relay.close();
    await hub.stop();
  }
});
