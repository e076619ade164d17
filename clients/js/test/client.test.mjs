// The Client's behaviour against a scripted hub (a fake WebSocket that the
// test answers by hand): backoff and its stability window, the close codes
// after which it does not reconnect, token refresh (two crossing refreshes,
// a refresh failing, a token for another user), the offline publish queue
// and its keys, AbortSignal, the background mode, subscriptions and their
// iterators. What needs a real hub is in e2e.test.mjs.

import assert from "node:assert/strict";
import test from "node:test";
import { setTimeout as sleep } from "node:timers/promises";

import { Client, ClosedError, DuplexError, HubError, TokenError } from "../dist/index.js";

/** A scripted hub: every socket the client opens, and what it sent. */
class FakeHub {
  constructor() {
    this.sockets = [];
    const hub = this;
    this.WebSocket = class FakeSocket {
      constructor(url, protocol) {
        this.url = url;
        this.protocol = protocol;
        this.readyState = 0;
        this.binaryType = "blob";
        this.sent = [];
        this.closedWith = null;
        this.onopen = this.onmessage = this.onclose = this.onerror = null;
        hub.sockets.push(this);
        hub.wake?.();
      }
      send(frame) {
        assert.equal(this.readyState, 1, "send on a socket that is not open");
        if (typeof frame === "string") {
          this.sent.push(JSON.parse(frame));
        } else {
          // A binary frame: u32 header length, JSON header, data.
          const length = new DataView(frame).getUint32(0);
          const header = JSON.parse(new TextDecoder().decode(new Uint8Array(frame, 4, length)));
          this.sent.push({ ...header, binary: Array.from(new Uint8Array(frame, 4 + length)) });
        }
        hub.wake?.();
      }
      close(code, reason) {
        this.closedWith = { code, reason };
        this.readyState = 3;
      }
      // ---- the hub's side ----
      open() {
        this.readyState = 1;
        this.onopen?.({});
      }
      reply(message) {
        this.onmessage?.({ data: JSON.stringify(message) });
      }
      drop(code, reason = "") {
        this.readyState = 3;
        this.onclose?.({ code, reason });
      }
    };
  }

  get last() {
    return this.sockets[this.sockets.length - 1];
  }

  /** Waits (bounded) until `check()` holds. */
  async until(check, what, ms = 3000) {
    const deadline = Date.now() + ms;
    while (!check()) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await new Promise((resolve) => {
        this.wake = resolve;
        setTimeout(resolve, 5);
      });
    }
  }

  /** Waits for the next socket, opens it and answers `connect`; returns it. */
  async accept({ user = "", expires, sockets = (this.accepted ?? 0) + 1 } = {}) {
    this.accepted = sockets;
    await this.until(() => this.sockets.length >= sockets, `socket ${sockets}`);
    const ws = this.sockets[sockets - 1];
    ws.open();
    await this.until(() => ws.sent.some((c) => c.op === "connect"), "connect");
    const connect = ws.sent.find((c) => c.op === "connect");
    const reply = { op: "connected", id: connect.id, client: `c${sockets}`, user, version: 1, ping: 25 };
    if (expires !== undefined) reply.expires = expires;
    ws.reply(reply);
    return ws;
  }
}

function client(hub, options = {}) {
  return new Client("ws://hub.test/ws", {
    WebSocket: hub.WebSocket,
    transports: ["websocket"],
    backoffBase: 20,
    backoffCap: 100,
    stableAfter: 200,
    document: null,
    window: null,
    ...options,
  });
}

const sent = (ws, op) => ws.sent.filter((c) => c.op === op);

test("connects with the subprotocol duplex.v1, names itself, and reports connecting then connected", async () => {
  const hub = new FakeHub();
  const c = client(hub, { name: "unit" });
  const events = [];
  for (const type of ["connecting", "connected", "disconnected"]) c.on(type, () => events.push(type));
  assert.equal(c.state, "idle");
  const connected = c.connect();
  const ws = await hub.accept({ user: "" });
  const info = await connected;
  assert.equal(ws.protocol, "duplex.v1");
  assert.equal(ws.binaryType, "arraybuffer");
  assert.equal(sent(ws, "connect")[0].name, "unit");
  assert.equal(info.client, "c1");
  assert.equal(info.reconnected, false);
  assert.equal(c.state, "connected");
  assert.deepEqual(events, ["connecting", "connected"]);
  c.close();
  assert.equal(c.state, "closed");
  assert.equal(ws.closedWith.code, 1000);
});

test("no reconnect after the final close codes 1000, 1008, 1009, 4001, 4029, nor 4002 without getToken", async () => {
  for (const code of [1000, 1008, 1009, 4001, 4029, 4002]) {
    const hub = new FakeHub();
    const c = client(hub);
    const errors = [];
    const closes = [];
    c.on("error", (d) => errors.push(d.error));
    c.on("disconnected", (d) => closes.push(d));
    const connected = c.connect();
    const ws = await hub.accept();
    await connected;
    const queued = c.publish("a", 1);
    ws.drop(code, "because");
    assert.equal(c.state, "closed", `after ${code}`);
    assert.deepEqual(closes, [{ code, reason: "because", willReconnect: false, retryIn: undefined, attempt: undefined }]);
    assert.ok(errors[0] instanceof ClosedError && errors[0].closeCode === code && errors[0].reason === "because");
    await assert.rejects(queued, (e) => e instanceof ClosedError && e.closeCode === code);
    await sleep(150);
    assert.equal(hub.sockets.length, 1, `reconnected after ${code}`);
  }
});

test("a subscription the backend made (a subscribed push without id) gets a Subscription, announced by a subscription event", async () => {
  const hub = new FakeHub();
  const c = client(hub);
  const announced = [];
  c.on("subscription", (d) => announced.push(d));
  const connected = c.connect();
  const ws = await hub.accept();
  await connected;
  ws.reply({ op: "subscribed", channel: "room", epoch: "e1", offset: 4, recovered: false });
  assert.equal(announced.length, 1);
  assert.equal(announced[0].channel, "room");
  const got = [];
  announced[0].subscription.addEventListener("message", (e) => got.push(e.detail.offset));
  ws.reply({ op: "message", channel: "room", offset: 5, time: 1, from: { user: "bob", client: "c1" }, data: { n: 5 } });
  assert.deepEqual(got, [5]);
  c.close();
});

test("a hub's drain close sets the reconnect wait, capped by the backoff's ceiling", async () => {
  const hub = new FakeHub();
  const waits = [];
  const c = client(hub, { backoffBase: 10, backoffCap: 400, random: () => 0.999, stableAfter: 60000 });
  c.on("disconnected", (d) => waits.push(d.retryIn));
  const connected = c.connect();
  await hub.accept();
  await connected;
  hub.last.drop(1001, "server shutting down; reconnect in 250 ms");
  const dropped = Date.now();
  await hub.accept({ sockets: 2 });
  assert.ok(Date.now() - dropped >= 240, `came back after ${Date.now() - dropped} ms`);
  hub.last.drop(1001, "server shutting down; reconnect in 9000 ms");
  await hub.accept({ sockets: 3 });
  // Another code with the same words is no drain: the backoff decides.
  hub.last.drop(1011, "reconnect in 300 ms");
  await hub.accept({ sockets: 4 });
  assert.deepEqual(waits, [250, 400, 40]);
  c.close();
});

test("reconnects after 1001, 1006, 1011 and 4008, with full-jitter delays below the doubling ceiling", async () => {
  const hub = new FakeHub();
  const draws = [];
  const c = client(hub, { backoffBase: 10, backoffCap: 40, random: () => 0.999, stableAfter: 60000 });
  c.on("disconnected", (d) => draws.push(d.retryIn));
  const connected = c.connect();
  await hub.accept();
  await connected;
  let n = 1;
  for (const code of [1001, 1006, 1011, 4008]) {
    hub.last.drop(code);
    assert.equal(c.state, "disconnected");
    n += 1;
    await hub.accept({ sockets: n });
  }
  // Ceilings 10, 20, 40, 40 (capped): the attempt count is never reset,
  // since no connection stayed up for stableAfter.
  assert.deepEqual(draws, [10, 20, 40, 40]);
  c.close();
});

test("the backoff starts again from the base only once a connection stayed up stableAfter", async () => {
  const hub = new FakeHub();
  const ceilings = [];
  const c = client(hub, { backoffBase: 10, backoffCap: 1000, random: () => 0.999, stableAfter: 80 });
  c.on("disconnected", (d) => ceilings.push(d.retryIn));
  c.connect();
  await hub.accept();
  hub.last.drop(1006);
  await hub.accept({ sockets: 2 });
  hub.last.drop(1006); // up for less than stableAfter: no reset
  await hub.accept({ sockets: 3 });
  await sleep(150); // stays up: reset
  hub.last.drop(1006);
  await hub.accept({ sockets: 4 });
  assert.deepEqual(ceilings, [10, 20, 10]);
  c.close();
});

test("publishes wait offline in a bounded queue and are sent again with the same random key after a drop", async () => {
  const hub = new FakeHub();
  const c = client(hub, { queueLimit: 3 });
  const p1 = c.publish("a", { n: 1 });
  const p2 = c.publish("a", { n: 2 });
  const p3 = c.publish("a", new Uint8Array([1, 2]).subarray(1));
  await assert.rejects(c.publish("a", { n: 4 }), (e) => e instanceof DuplexError && e.code === "queue_full");
  c.connect();
  let ws = await hub.accept();
  await hub.until(() => sent(ws, "publish").length === 3, "three publishes");
  const first = sent(ws, "publish");
  assert.deepEqual(first[2].binary, [2], "the bytes (a view into a larger buffer) go as a binary frame");
  assert.match(first[0].key, /^[0-9a-f]{24}-1$/);
  assert.notEqual(first[0].key, first[1].key);
  ws.reply({ op: "published", id: first[0].id, channel: "a", offset: 7 });
  assert.deepEqual(await p1, { offset: 7, epoch: undefined, duplicate: false });
  ws.drop(1006); // p2 (and p3) in flight: sent again after the reconnect
  ws = await hub.accept({ sockets: 2 });
  await hub.until(() => sent(ws, "publish").length >= 1, "the retried publish");
  const retried = sent(ws, "publish")[0];
  assert.equal(retried.key, first[1].key);
  assert.deepEqual(retried.data, { n: 2 });
  ws.reply({ op: "published", id: retried.id, channel: "a", offset: 8, duplicate: true });
  assert.deepEqual(await p2, { offset: 8, epoch: undefined, duplicate: true });
  c.close();
  await assert.rejects(p3, ClosedError);
});

test("keys differ between clients: their prefixes are 12 random bytes from crypto.getRandomValues", async () => {
  const keys = new Set();
  for (let i = 0; i < 50; i++) {
    const hub = new FakeHub();
    const c = client(hub);
    c.publish("x", 1).catch(() => {});
    c.connect();
    const ws = await hub.accept();
    await hub.until(() => sent(ws, "publish").length === 1, "publish");
    keys.add(sent(ws, "publish")[0].key);
    c.close();
  }
  assert.equal(keys.size, 50);
});

test("AbortSignal: an aborted publish leaves the queue, an aborted connect closes a client that never connected", async () => {
  const hub = new FakeHub();
  const c = client(hub);
  const controller = new AbortController();
  const p = c.publish("a", 1, { signal: controller.signal });
  assert.equal(c.queued, 1);
  controller.abort(new Error("user gave up"));
  await assert.rejects(p, /user gave up/);
  assert.equal(c.queued, 0);
  await assert.rejects(c.publish("a", 1, { signal: AbortSignal.abort() }), { name: "AbortError" });

  const connecting = new AbortController();
  const connected = c.connect({ signal: connecting.signal });
  await hub.until(() => hub.sockets.length === 1, "a socket");
  connecting.abort();
  await assert.rejects(connected, { name: "AbortError" });
  assert.equal(c.state, "closed");
});

test("subscribe: events and async iteration, dedupe by offset, a jump resubscribes with since, an abort unsubscribes", async () => {
  const hub = new FakeHub();
  const c = client(hub);
  c.connect();
  const ws = await hub.accept();
  const controller = new AbortController();
  const sub = c.subscribe("chat:a", { recent: 2, signal: controller.signal });
  assert.throws(() => c.subscribe("chat:a"), (e) => e.code === "already_subscribed");
  assert.throws(() => c.subscribe("bad name"), (e) => e.code === "bad_request");
  await hub.until(() => sent(ws, "subscribe").length === 1, "subscribe");
  const s = sent(ws, "subscribe")[0];
  assert.deepEqual({ ...s, id: 0 }, { op: "subscribe", id: 0, channel: "chat:a", recent: 2 });
  const iterator = sub[Symbol.asyncIterator]();
  ws.reply({ op: "subscribed", id: s.id, channel: "chat:a", epoch: "e1", offset: 10 });
  const ready = await sub.ready;
  assert.equal(ready.epoch, "e1");
  const message = (offset) => ({ op: "message", channel: "chat:a", offset, time: 1, from: { user: "u", client: "c" }, data: { offset } });
  for (const offset of [9, 10, 10, 11]) ws.reply(message(offset));
  const got = [];
  for (let i = 0; i < 3; i++) got.push((await iterator.next()).value);
  assert.deepEqual(got.map((m) => [m.offset, m.epoch]), [[9, "e1"], [10, "e1"], [11, "e1"]]);
  assert.equal(c.counters.duplicates, 1);
  const gaps = [];
  sub.on("gap", (g) => gaps.push(g));
  ws.reply(message(14)); // 12 and 13 lost on the way
  await hub.until(() => sent(ws, "subscribe").length === 2, "the resubscribe");
  assert.deepEqual(sent(ws, "subscribe")[1].since, { epoch: "e1", offset: 11 });
  assert.deepEqual(gaps, []);
  controller.abort();
  await hub.until(() => sent(ws, "unsubscribe").length === 2, "the unsubscribe");
  assert.deepEqual(await iterator.next(), { value: undefined, done: true });
  assert.deepEqual(c.channels(), []);
  c.close();
});

test("a gap: true reply is announced on the subscription and the client, never silent", async () => {
  const hub = new FakeHub();
  const c = client(hub);
  c.connect();
  let ws = await hub.accept();
  const sub = c.subscribe("a", { since: { epoch: "old", offset: 5 } });
  await hub.until(() => sent(ws, "subscribe").length === 1, "subscribe");
  const gaps = [];
  c.on("gap", (g) => gaps.push(["client", g]));
  sub.on("gap", (g) => gaps.push(["sub", g]));
  ws.reply({ op: "subscribed", id: sent(ws, "subscribe")[0].id, channel: "a", epoch: "new", offset: 3, gap: true });
  assert.deepEqual(gaps, [
    ["sub", { channel: "a", epoch: "new", offset: 3 }],
    ["client", { channel: "a", epoch: "new", offset: 3 }],
  ]);
  c.close();
});

test("a refused subscribe rejects ready and emits error with the hub's code; it is tried again on the next connection", async () => {
  const hub = new FakeHub();
  const c = client(hub);
  const errors = [];
  c.on("error", (d) => errors.push(d.error));
  c.connect();
  let ws = await hub.accept();
  const sub = c.subscribe("vip:x");
  await hub.until(() => sent(ws, "subscribe").length === 1, "subscribe");
  ws.reply({ op: "error", id: sent(ws, "subscribe")[0].id, code: "forbidden", message: "no" });
  await assert.rejects(sub.ready, (e) => e instanceof HubError && e.code === "forbidden" && e.channel === "vip:x");
  assert.equal(errors[0].code, "forbidden");
  ws.drop(1006);
  ws = await hub.accept({ sockets: 2 });
  await hub.until(() => sent(ws, "subscribe").length === 1, "the subscribe again");
  c.close();
});

test("token refresh: two crossing refreshes call getToken once and send one refresh", async () => {
  const hub = new FakeHub();
  let calls = 0;
  let release;
  const c = client(hub, {
    getToken: () => {
      calls += 1;
      if (calls === 1) return "t1";
      return new Promise((resolve) => {
        release = () => resolve(`t${calls}`);
      });
    },
  });
  c.connect();
  const ws = await hub.accept({ user: "alice", expires: Math.floor(Date.now() / 1000) + 3600 });
  assert.equal(sent(ws, "connect")[0].token, "t1");
  const a = c.refreshToken();
  const b = c.refreshToken();
  assert.equal(a, b, "the second refresh is the one in flight");
  await hub.until(() => release !== undefined, "getToken");
  release();
  await hub.until(() => sent(ws, "refresh").length === 1, "refresh");
  assert.equal(calls, 2);
  ws.reply({ op: "refreshed", id: sent(ws, "refresh")[0].id, expires: Math.floor(Date.now() / 1000) + 7200 });
  await Promise.all([a, b]);
  assert.equal(sent(ws, "refresh").length, 1);
  assert.equal(sent(ws, "refresh")[0].token, "t2");
  c.close();
});

test("token refresh: a reconnect while a refresh waits for getToken shares that call", async () => {
  const hub = new FakeHub();
  let calls = 0;
  let release;
  const c = client(hub, {
    getToken: () => {
      calls += 1;
      if (calls === 1) return "t1";
      return new Promise((resolve) => {
        release = () => resolve(`t${calls}`);
      });
    },
  });
  c.connect();
  const ws = await hub.accept({ user: "alice", expires: Math.floor(Date.now() / 1000) + 3600 });
  const refresh = c.refreshToken();
  await hub.until(() => release !== undefined, "getToken");
  ws.drop(4002, "token expired"); // the reconnect needs a token: the same call
  await sleep(150);
  assert.equal(hub.sockets.length, 1, "no socket before the token");
  release();
  const ws2 = await hub.accept({ sockets: 2 });
  await refresh;
  assert.equal(calls, 2);
  assert.equal(sent(ws2, "connect")[0].token, "t2");
  assert.equal(sent(ws, "refresh").length, 0);
  c.close();
});

test("token refresh: getToken failing emits a TokenError and is retried with backoff", async () => {
  const hub = new FakeHub();
  let calls = 0;
  const c = client(hub, {
    refreshMargin: 60000,
    getToken: () => {
      calls += 1;
      if (calls === 1) return "t1";
      if (calls === 2) throw new Error("auth server down");
      return "t3";
    },
  });
  const errors = [];
  c.on("error", (d) => errors.push(d.error));
  c.connect();
  // Expires in 2 s: the refresh is due at once (half the remaining life is under the margin).
  const ws = await hub.accept({ user: "alice", expires: Math.floor(Date.now() / 1000) + 2 });
  await hub.until(() => errors.length === 1, "the error", 3000);
  assert.ok(errors[0] instanceof TokenError);
  assert.match(errors[0].cause.message, /auth server down/);
  await hub.until(() => sent(ws, "refresh").length === 1, "the retried refresh", 3000);
  assert.equal(sent(ws, "refresh")[0].token, "t3");
  c.close();
});

test("token refresh: a token for another user is refused by the hub and surfaced as an error", async () => {
  const hub = new FakeHub();
  const c = client(hub, { getToken: () => "token-of-someone" });
  const errors = [];
  c.on("error", (d) => errors.push(d.error));
  c.connect();
  const ws = await hub.accept({ user: "alice", expires: Math.floor(Date.now() / 1000) + 3600 });
  const refresh = c.refreshToken();
  await hub.until(() => sent(ws, "refresh").length === 1, "refresh");
  ws.reply({ op: "error", id: sent(ws, "refresh")[0].id, code: "unauthorized", message: "the new token is for another user" });
  await assert.rejects(refresh, (e) => e instanceof HubError && e.code === "unauthorized");
  await hub.until(() => errors.length === 1, "the error event");
  assert.equal(errors[0].code, "unauthorized");
  assert.equal(c.state, "connected", "the old token stays: the connection too");
  c.close();
});

test("4002 with getToken reconnects with a fresh token; 4001 does not reconnect", async () => {
  const hub = new FakeHub();
  let n = 0;
  const c = client(hub, { getToken: () => `t${++n}` });
  c.connect();
  const ws = await hub.accept({ user: "alice", expires: Math.floor(Date.now() / 1000) + 3600 });
  ws.drop(4002, "token expired");
  assert.equal(c.state, "disconnected");
  const ws2 = await hub.accept({ sockets: 2, user: "alice" });
  assert.equal(sent(ws2, "connect")[0].token, "t2");
  ws2.drop(4001, "unauthorized");
  assert.equal(c.state, "closed");
});

test("background mode: hidden relaxes the pong budget; visible or online reconnects at once", async () => {
  const hub = new FakeHub();
  const doc = Object.assign(new EventTarget(), { visibilityState: "visible" });
  const win = new EventTarget();
  const c = client(hub, {
    document: doc,
    window: win,
    pingInterval: 30,
    pongTimeout: 40,
    backgroundPongTimeout: 5000,
    backoffBase: 60000,
    backoffCap: 60000,
    random: () => 0.5,
  });
  c.connect();
  let ws = await hub.accept();
  doc.visibilityState = "hidden";
  doc.dispatchEvent(new Event("visibilitychange"));
  assert.equal(c.inBackground, true);
  await sleep(200); // pings unanswered, well past pongTimeout: still up on the relaxed budget
  assert.ok(sent(ws, "ping").length >= 1);
  assert.equal(c.state, "connected");
  doc.visibilityState = "visible";
  doc.dispatchEvent(new Event("visibilitychange")); // checks at once, on the normal budget
  await hub.until(() => c.state === "disconnected", "the drop for no pong", 1000);
  // The backoff is 30 s; becoming visible again reconnects at once.
  doc.visibilityState = "hidden";
  doc.dispatchEvent(new Event("visibilitychange"));
  doc.visibilityState = "visible";
  doc.dispatchEvent(new Event("visibilitychange"));
  ws = await hub.accept({ sockets: 2 });
  // And `online` does the same.
  ws.drop(1006);
  assert.equal(c.state, "disconnected");
  win.dispatchEvent(new Event("online"));
  await hub.accept({ sockets: 3 });
  c.close();
});

test("a drop while a ping waits for its pong does not stop the pings of the next connection", async () => {
  const hub = new FakeHub();
  const c = client(hub, { pingInterval: 30, pongTimeout: 60, random: () => 0 });
  try {
    c.connect();
    let ws = await hub.accept();
    await hub.until(() => sent(ws, "ping").length >= 1, "a ping");
    ws.drop(1006); // the ping is never answered
    ws = await hub.accept({ sockets: 2 });
    // The new connection is pinged, and found dead when it does not answer:
    // the client gives it up and opens a third.
    await hub.until(() => sent(ws, "ping").length >= 1, "a ping on the new connection");
    await hub.until(() => hub.sockets.length >= 3, "a new attempt after no pong");
    assert.equal(ws.closedWith?.code, 4000, "the silent connection was closed by the client");
  } finally {
    c.close();
  }
});

test("ping(timeout) checks the link now on the given budget; counters count connections, pings and publishes", async () => {
  const hub = new FakeHub();
  const c = client(hub, { random: () => 0.5 });
  const drops = [];
  c.on("disconnected", (d) => drops.push(d));
  c.connect();
  let ws = await hub.accept();
  const published = c.publish("a", 1);
  ws.drop(1006); // in flight: retried with its key
  assert.deepEqual(drops, [{ code: 1006, reason: "", willReconnect: true, retryIn: 10, attempt: 0 }]);
  ws = await hub.accept({ sockets: 2 });
  await hub.until(() => sent(ws, "publish").length === 1, "the retried publish");
  const publish = sent(ws, "publish")[0];
  ws.reply({ op: "published", id: publish.id, offset: 1, duplicate: true });
  assert.deepEqual(await published, { offset: 1, epoch: undefined, duplicate: true });
  c.ping(30);
  await hub.until(() => sent(ws, "ping").length === 1, "the ping");
  ws.reply({ op: "pong", id: sent(ws, "ping")[0].id });
  c.ping(30); // unanswered: dropped after 30 ms, not pongTimeout (10 s)
  await hub.until(() => hub.sockets.length >= 3, "a new attempt after no pong", 3000);
  const counters = c.counters;
  assert.deepEqual(
    { connects: counters.connects, reconnects: counters.reconnects, drops: counters.drops, retried: counters.retried },
    { connects: 2, reconnects: 1, drops: 2, retried: 1 },
  );
  assert.deepEqual(
    { published: counters.published, duplicatePublishes: counters.duplicatePublishes, pings: counters.pings, pongs: counters.pongs },
    { published: 1, duplicatePublishes: 1, pings: 2, pongs: 1 },
  );
  assert.equal(counters.duplicates, 0);
  c.close();
});

test("firstConnectAttempts: a hub never reached closes the client with one unreachable error saying what to check", async () => {
  const hub = new FakeHub();
  const c = client(hub, { firstConnectAttempts: 3, backoffBase: 5, backoffCap: 5 });
  const errors = [];
  const waits = [];
  c.on("error", (d) => errors.push(d.error));
  c.on("disconnected", (d) => d.willReconnect && waits.push(d.attempt));
  const connected = c.connect();
  for (let n = 1; n <= 3; n++) {
    await hub.until(() => hub.sockets.length >= n, `attempt ${n}`);
    hub.sockets[n - 1].drop(1006); // refused before it opened
  }
  await assert.rejects(connected, ClosedError);
  assert.equal(c.state, "closed");
  assert.deepEqual(waits, [0, 1]);
  assert.equal(errors.length, 1);
  assert.ok(errors[0] instanceof DuplexError && errors[0].code === "unreachable", String(errors[0]));
  assert.match(errors[0].message, /3 attempts failed.*--public-url.*--allow-origin/);
  await sleep(50);
  assert.equal(hub.sockets.length, 3, "no more attempts");
  // Once connected, failures do not count: it reconnects without limit.
  const hub2 = new FakeHub();
  const d = client(hub2, { firstConnectAttempts: 1, backoffBase: 5, backoffCap: 5 });
  d.connect();
  await hub2.accept();
  for (let n = 2; n <= 4; n++) {
    hub2.last.drop(1006);
    await hub2.until(() => hub2.sockets.length >= n, `reconnect ${n}`);
  }
  hub2.last.drop(1006);
  assert.equal(d.state, "disconnected");
  d.close();
});

test("a frame the hub would never send is an error event, and the connection stays", async () => {
  const hub = new FakeHub();
  const c = client(hub);
  const errors = [];
  c.on("error", (d) => errors.push(d.error));
  c.connect();
  const ws = await hub.accept();
  ws.onmessage({ data: '{"op":"teleport"}' });
  assert.equal(errors[0].code, "unknown_op");
  assert.equal(c.state, "connected");
  c.close();
});

test("without a WebSocket implementation the constructor says what to pass", () => {
  const saved = globalThis.WebSocket;
  try {
    delete globalThis.WebSocket;
    assert.throws(() => new Client("ws://x/ws", { transports: ["websocket"] }), (e) => e.code === "no_websocket" && /options.WebSocket/.test(e.message));
    // With the http transport allowed (the default), it is the one used.
    const c = new Client("ws://x/ws", { document: null, window: null });
    assert.equal(c.transport, null);
    c.close();
  } finally {
    if (saved) globalThis.WebSocket = saved;
  }
});

test("rpc: the backend's data on the same connection, its errors as HubErrors, a bad method refused before sending", async () => {
  const hub = new FakeHub();
  const c = client(hub);
  const connected = c.connect();
  const ws = hub.last ?? null;
  const accepted = await hub.accept({ user: "ada" });
  await connected;
  assert.ok(ws === null || ws === accepted);
  // The backend's connect hook may give the client data in `connected`.
  assert.equal(c.connection.data, undefined);

  const answered = c.rpc("orders:get", { order: 42 });
  await hub.until(() => sent(accepted, "rpc").length === 1, "the rpc");
  const call = sent(accepted, "rpc")[0];
  assert.deepEqual({ method: call.method, data: call.data }, { method: "orders:get", data: { order: 42 } });
  accepted.reply({ op: "rpc", id: call.id, data: { status: "shipped" } });
  assert.deepEqual(await answered, { status: "shipped" });

  const refused = c.rpc("orders:get", { order: 7 });
  await hub.until(() => sent(accepted, "rpc").length === 2, "the second rpc");
  const second = sent(accepted, "rpc")[1];
  accepted.reply({ op: "error", id: second.id, code: "rpc_error", message: "no such order" });
  await assert.rejects(refused, (e) => e instanceof HubError && e.code === "rpc_error" && e.message === "no such order");

  const nulled = c.rpc("ping");
  await hub.until(() => sent(accepted, "rpc").length === 3, "the third rpc");
  const third = sent(accepted, "rpc")[2];
  assert.equal(third.data, null);
  accepted.reply({ op: "rpc", id: third.id });
  assert.equal(await nulled, null);

  await assert.rejects(c.rpc("a b", 1), (e) => e instanceof DuplexError && e.code === "bad_request");
  assert.equal(sent(accepted, "rpc").length, 3, "a bad method is not sent");

  const dropped = c.rpc("slow:op", 1);
  await hub.until(() => sent(accepted, "rpc").length === 4, "the fourth rpc");
  accepted.drop(1006);
  await assert.rejects(dropped, (e) => e instanceof ClosedError);
  c.close();
});

test("connected carries the backend's data from its connect hook", async () => {
  const hub = new FakeHub();
  const c = client(hub);
  const connected = c.connect();
  await hub.until(() => hub.sockets.length === 1, "a socket");
  const ws = hub.sockets[0];
  ws.open();
  await hub.until(() => ws.sent.some((m) => m.op === "connect"), "connect");
  const connect = ws.sent.find((m) => m.op === "connect");
  ws.reply({ op: "connected", id: connect.id, client: "c1", user: "ada", version: 1, ping: 25, data: { plan: "pro" } });
  const info = await connected;
  assert.deepEqual(info.data, { plan: "pro" });
  c.close();
});

test("a server-side subscribed push in the same read as connected (a connect hook's channels) is not lost", async () => {
  const hub = new FakeHub();
  const c = client(hub);
  const announced = [];
  c.on("subscription", (d) => announced.push(d.channel));
  const connected = c.connect();
  await hub.until(() => hub.sockets.length === 1, "a socket");
  const ws = hub.sockets[0];
  ws.open();
  await hub.until(() => ws.sent.some((m) => m.op === "connect"), "connect");
  const connect = ws.sent.find((m) => m.op === "connect");
  // Both in one task, as Node's ws dispatches the frames of one read.
  ws.reply({ op: "connected", id: connect.id, client: "c1", user: "ada", version: 1, ping: 25 });
  ws.reply({ op: "subscribed", channel: "news:ada", epoch: "e", offset: 0, recovered: false });
  await connected;
  assert.deepEqual(announced, ["news:ada"]);
  c.close();
});

test("subscription tokens: the one given to subscribe first, then getSubscriptionToken on resubscribe", async () => {
  const hub = new FakeHub();
  const asked = [];
  const c = client(hub, {
    getSubscriptionToken: async (channel) => {
      asked.push(channel);
      return channel.startsWith("vip:") ? `fresh-${channel}` : null;
    },
  });
  c.connect();
  const ws = await hub.accept({ user: "alice" });
  c.subscribe("vip:a", { token: "given" });
  c.subscribe("news");
  await hub.until(() => sent(ws, "subscribe").length === 2, "two subscribes");
  const first = sent(ws, "subscribe");
  assert.equal(first.find((s) => s.channel === "vip:a").token, "given");
  assert.equal(first.find((s) => s.channel === "news").token, undefined, "a public channel: none");
  assert.deepEqual(asked, ["news"], "the given token is used without asking");
  for (const s of first) ws.reply({ op: "subscribed", id: s.id, channel: s.channel, epoch: "e", offset: 0 });
  ws.drop(1006);
  const ws2 = await hub.accept({ user: "alice" });
  await hub.until(() => sent(ws2, "subscribe").length === 2, "resubscribes");
  const again = sent(ws2, "subscribe");
  assert.equal(again.find((s) => s.channel === "vip:a").token, "fresh-vip:a", "a fresh token after the reconnect");
  assert.equal(again.find((s) => s.channel === "news").token, undefined);
  assert.deepEqual(asked.sort(), ["news", "news", "vip:a"]);
  c.close();
});
