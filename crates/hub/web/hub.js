// hub.js: a small browser client for the Duplex hub protocol (duplex.v1).
//
// const hub = new HubClient({ name: "web-chat" });
// hub.on("message", (m) => ...);            // also: state, connected, join, leave,
// hub.subscribe("chat:lobby", { recent: 50 }); //   signal, gap, subscribed, error
// await hub.publish("chat:lobby", { text: "hi" });
//
// What it takes care of: reconnecting with exponential backoff and full jitter
// (1 s base, doubling, 30 s cap, reset once `connected` arrives; never after
// close codes 1000, 1008, 1009, 4001, 4002); resubscribing every channel
// after a reconnect with `since` = the last message seen, so the hub replays
// what was missed; dropping duplicates by offset; noticing gaps (`gap: true`,
// a `gap` push, an offset jump) and resyncing; publishes that wait in a
// bounded queue while disconnected and carry an idempotency key, so one
// retried after a drop is delivered once; an application ping every 20 s.
//
// The recovery rule lives in `Subscriptions`, a pure state machine (no
// browser API) that follows the Rust client's `duplex_hub_proto::Subscriptions`
// step for step; `HubClient` only moves its requests and events between the
// socket and the page. Both are held to the shared test vectors of
// `crates/hub-proto/tests/vectors/` (run against this file by `run.mjs` there,
// under Node, which loads it through `module.exports`). A channel the hub
// refuses or revokes stays wanted: it is tried again on the next connection,
// or at once by calling `subscribe` again.
"use strict";

(function (global) {
  const NO_RECONNECT = new Set([1000, 1008, 1009, 4001, 4002]);

  /** Milliseconds before reconnect attempt `n` (0-based): full jitter. */
  function backoff(n, base, cap) {
    const ceiling = Math.min(cap, base * Math.pow(2, Math.min(n, 20)));
    return Math.random() * ceiling;
  }

  /** A short random string for publish keys. */
  function randomId() {
    const bytes = new Uint8Array(6);
    global.crypto.getRandomValues(bytes);
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  /** The ops the hub sends; another is `unknown_op`. */
  const SERVER_OPS = new Set([
    "connected", "refreshed", "subscribed", "unsubscribed", "published", "presence",
    "message", "join", "leave", "signal", "gap", "pong", "error",
  ]);

  /** A frame the client cannot read: `code` is bad_request or unknown_op. */
  function frameError(code, message) {
    const error = new Error(message);
    error.code = code;
    return error;
  }

  /** Checks a decoded frame's object and op (`binary`: it came in a binary frame). */
  function checkServer(msg, binary) {
    if (msg === null || typeof msg !== "object" || Array.isArray(msg)) {
      throw frameError("bad_request", "a frame holds one JSON object");
    }
    if (typeof msg.op !== "string") throw frameError("bad_request", "field `op` is missing");
    if (!SERVER_OPS.has(msg.op)) throw frameError("unknown_op", `unknown op ${msg.op}`);
    if (binary && msg.op !== "message" && msg.op !== "signal") {
      throw frameError("bad_request", `op ${msg.op} does not travel as binary`);
    }
    return msg;
  }

  /** Splits a binary frame: u32 header length, JSON header, raw data. */
  function decodeBinary(buffer) {
    if (buffer.byteLength < 4) {
      throw frameError("bad_request", "a binary frame starts with a 4-byte header length");
    }
    const length = new DataView(buffer).getUint32(0);
    if (length > buffer.byteLength - 4) {
      throw frameError("bad_request", "the binary frame's header length exceeds the frame");
    }
    let header;
    try {
      const text = new TextDecoder("utf-8", { fatal: true }).decode(new Uint8Array(buffer, 4, length));
      header = JSON.parse(text);
    } catch (error) {
      throw frameError("bad_request", `the binary frame's header is not JSON: ${error.message}`);
    }
    checkServer(header, true);
    if ("data" in header) throw frameError("bad_request", "a binary frame's header has no `data`");
    header.data = new Uint8Array(buffer, 4 + length);
    return header;
  }

  /**
   * Decodes a frame from the hub (a string, or an ArrayBuffer for a binary
   * frame; its data becomes a Uint8Array). Throws an Error with `code`
   * (bad_request, unknown_op) for what is not a hub message.
   */
  function decodeServer(raw) {
    if (typeof raw !== "string") return decodeBinary(raw);
    let msg;
    try {
      msg = JSON.parse(raw);
    } catch (error) {
      throw frameError("bad_request", `not JSON: ${error.message}`);
    }
    return checkServer(msg, false);
  }

  /** A command as a frame: JSON text, or a binary frame when its data is bytes. */
  function encodeCommand(command) {
    if (!isBinary(command.data)) return JSON.stringify(command);
    const { data, ...header } = command;
    const bytes = data instanceof ArrayBuffer
      ? new Uint8Array(data)
      : new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    return encodeBinary(header, bytes);
  }

  /** Whether `name` is a channel name: 1 to 255 of A-Z a-z 0-9 _ - . : @ / =, after one optional `$`. */
  function validChannel(name) {
    return typeof name === "string" && name.length <= 255 && /^\$?[A-Za-z0-9_.:@\/=-]+$/.test(name);
  }

  /**
   * The subscriptions across reconnections: resubscribe, recover, deduplicate,
   * report gaps. A pure state machine, the port of the Rust client's
   * `duplex_hub_proto::Subscriptions` (see its module docs for the
   * guarantees): per channel, each offset of an epoch is delivered at most
   * once and in order, and a `gap` event comes before the next message
   * whenever messages may have been missed.
   *
   * The caller says which channels it wants (`subscribe`, `unsubscribe`),
   * reports the connection (`onConnected`, which returns the subscribes to
   * send, `onDisconnected`), sends what `takeTransmit` returns after every
   * call, and feeds every decoded hub message to `handle`, which returns
   * events: {type: "subscribed", channel, recovered, resubscribed, reply},
   * {type: "message", message}, {type: "gap", channel, epoch, offset},
   * {type: "subscribe_failed", channel, code, message},
   * {type: "unsubscribed", channel, reason}, {type: "other", message} (what
   * is not about the wanted channels' subscriptions, untouched). Messages of
   * channels not wanted are dropped. Request ids come from `nextId`, which
   * the caller uses for its own commands too.
   */
  class Subscriptions {
    /** `counters`: an object whose duplicates, jumps, gaps, recovered and resubscribes it counts. */
    constructor(counters = {}) {
      this.counters = counters;
      this._channels = new Map(); // name -> {recent, phase, position, replayUntil, pending, sentSince, held}
      this._connected = false;
      this._nextId = 1;
      this._inFlight = new Map(); // id -> "subscribe" | "unsubscribe"
      this._transmit = [];
    }

    _count(name) {
      this.counters[name] = (this.counters[name] || 0) + 1;
    }

    /** A fresh request id (1, 2, 3 …), for this machine's requests and the caller's. */
    nextId() {
      return this._nextId++;
    }

    isConnected() {
      return this._connected;
    }

    /**
     * Wants `channel` (options: recent, since {epoch, offset}). Queues the
     * subscribe when connected and not subscribed or subscribing; again on a
     * wanted channel updates `recent` and retries a refused one. Throws on an
     * invalid name.
     */
    subscribe(channel, options = {}) {
      if (!validChannel(channel)) {
        throw frameError("bad_request", `invalid channel name ${JSON.stringify(channel)}`);
      }
      let ch = this._channels.get(channel);
      if (!ch) {
        const since = options.since ? { epoch: options.since.epoch, offset: options.since.offset } : null;
        ch = { recent: 0, phase: "idle", position: since, replayUntil: null, pending: null, sentSince: null, held: false };
        this._channels.set(channel, ch);
      }
      ch.recent = options.recent || 0;
      if (this._connected && (ch.phase === "idle" || ch.phase === "failed")) this._sendSubscribe(channel);
    }

    /** No longer wants `channel` (its position is forgotten); returns whether it was wanted. */
    unsubscribe(channel) {
      const ch = this._channels.get(channel);
      if (!ch) return false;
      this._channels.delete(channel);
      if (this._connected && (ch.phase === "subscribing" || ch.phase === "subscribed")) {
        this._sendUnsubscribe(channel);
      }
      return true;
    }

    /** The wanted channels, in name order. */
    channels() {
      return Array.from(this._channels.keys()).sort();
    }

    /** Whether the hub confirmed `channel` on this connection. */
    isSubscribed(channel) {
      const ch = this._channels.get(channel);
      return ch !== undefined && ch.phase === "subscribed";
    }

    /** {epoch, offset} of the last message delivered on `channel` (or where the hub said it was), or null. */
    position(channel) {
      const ch = this._channels.get(channel);
      return ch && ch.position ? { epoch: ch.position.epoch, offset: ch.position.offset } : null;
    }

    /** A connection is up: returns the subscribes to send, in channel name order. */
    onConnected() {
      this.onDisconnected();
      this._connected = true;
      for (const name of this.channels()) this._sendSubscribe(name);
      return this.takeTransmit();
    }

    /** The connection is gone: positions are kept for the next one. */
    onDisconnected() {
      this._connected = false;
      this._inFlight.clear();
      this._transmit = [];
      for (const ch of this._channels.values()) {
        ch.phase = "idle";
        ch.pending = null;
        ch.sentSince = null;
        ch.replayUntil = null;
        ch.held = false;
      }
    }

    /** The requests to send, in order (and forgets them). */
    takeTransmit() {
      const out = this._transmit;
      this._transmit = [];
      return out;
    }

    /** Takes in one decoded hub message; returns the events, in order. */
    handle(msg) {
      const events = [];
      if (!this._connected) {
        // Leftovers of a connection already reported gone.
        if (msg.op !== "message" && msg.op !== "gap") events.push({ type: "other", message: msg });
        return events;
      }
      const id = msg.id === undefined || msg.id === null ? null : msg.id;
      const ours = id !== null && this._inFlight.has(id);
      switch (msg.op) {
        case "message":
          this._onMessage(msg, events);
          return events;
        case "gap":
          this._onGap(msg.channel, msg.epoch);
          return events;
        case "subscribed":
          if (!ours) break;
          this._inFlight.delete(id);
          this._onSubscribed(id, msg, events);
          return events;
        case "unsubscribed":
          if (ours) {
            this._inFlight.delete(id);
            return events;
          }
          if (id === null && this.isSubscribed(msg.channel)) {
            const ch = this._channels.get(msg.channel);
            ch.phase = "failed";
            ch.replayUntil = null;
            ch.held = false;
            events.push({ type: "unsubscribed", channel: msg.channel, reason: msg.reason || "" });
            return events;
          }
          break;
        case "error":
          if (!ours) break;
          if (this._inFlight.get(id) === "subscribe") {
            for (const [channel, ch] of this._channels) {
              if (ch.pending !== id) continue;
              ch.phase = "failed";
              ch.pending = null;
              ch.sentSince = null;
              events.push({ type: "subscribe_failed", channel, code: msg.code, message: msg.message });
              break;
            }
          }
          this._inFlight.delete(id);
          return events;
        default:
          break;
      }
      events.push({ type: "other", message: msg });
      return events;
    }

    _sendSubscribe(channel) {
      const id = this.nextId();
      const ch = this._channels.get(channel);
      if (!ch) return;
      ch.phase = "subscribing";
      ch.pending = id;
      ch.sentSince = ch.position ? { ...ch.position } : null;
      ch.replayUntil = null;
      this._inFlight.set(id, "subscribe");
      const command = { op: "subscribe", id, channel };
      if (ch.position) {
        command.since = { epoch: ch.position.epoch, offset: ch.position.offset };
        this._count("resubscribes");
      }
      // `recent` is used by the hub only when it cannot recover from `since`.
      if (ch.recent) command.recent = ch.recent;
      this._transmit.push(command);
    }

    _sendUnsubscribe(channel) {
      const id = this.nextId();
      this._inFlight.set(id, "unsubscribe");
      this._transmit.push({ op: "unsubscribe", id, channel });
    }

    /** Unsubscribes and subscribes again from the position: the hub replays what was missed. */
    _resubscribe(channel) {
      this._sendUnsubscribe(channel);
      this._sendSubscribe(channel);
    }

    _onSubscribed(id, msg, events) {
      const { channel, epoch } = msg;
      const last = msg.offset;
      const gap = msg.gap === true;
      const recovered = msg.recovered === true && !gap;
      const ch = this._channels.get(channel);
      // Not wanted any more, or the answer to a subscription replaced since.
      if (!ch || ch.pending !== id) return;
      ch.pending = null;
      ch.phase = "subscribed";
      ch.held = false;
      const resubscribed = ch.sentSince !== null;
      ch.sentSince = null;
      // Where the channel stands in the hub's current epoch, if known.
      const p = ch.position;
      const sameEpoch = p && p.epoch === epoch && p.offset <= last ? p.offset : null;
      if (recovered && sameEpoch !== null) {
        // The hub replays everything after `since`; what arrived since it was
        // sent is deduplicated against the position.
        ch.replayUntil = null;
        this._count("recovered");
        events.push({ type: "subscribed", channel, recovered: true, resubscribed, reply: msg });
        return;
      }
      const lost = gap || resubscribed;
      // The hub replays the last `recent` messages it keeps, at most.
      const base = Math.max(0, last - ch.recent);
      const offset = sameEpoch === null ? base : Math.max(sameEpoch, base);
      ch.replayUntil = offset < last ? last : null;
      ch.position = { epoch, offset };
      events.push({ type: "subscribed", channel, recovered: false, resubscribed, reply: msg });
      if (lost) {
        this._count("gaps");
        events.push({ type: "gap", channel, epoch, offset: last });
      }
    }

    _onGap(channel, epoch) {
      const ch = this._channels.get(channel);
      if (!ch || (ch.phase !== "subscribing" && ch.phase !== "subscribed")) return;
      if (ch.position && ch.position.epoch !== epoch) {
        // The offsets that follow may be another epoch's: take nothing until
        // the hub's `subscribed` says where the channel stands. The position
        // stays, so that a channel still in our epoch repeats nothing.
        ch.held = true;
        ch.replayUntil = null;
      }
      if (ch.phase === "subscribed") {
        this._count("jumps");
        this._resubscribe(channel);
      }
      // Else the subscribe in flight answers for the loss.
    }

    _onMessage(msg, events) {
      const ch = this._channels.get(msg.channel);
      if (!ch || ch.phase === "idle" || ch.phase === "failed" || ch.held) return;
      const position = ch.position;
      if (!position) return; // No epoch known yet: the subscribed in flight will tell.
      const offset = msg.offset;
      if (offset <= position.offset) {
        this._count("duplicates");
        return;
      }
      const inReplay = ch.replayUntil !== null && offset <= ch.replayUntil + 1;
      if (offset === position.offset + 1 || inReplay) {
        position.offset = offset;
        // The replay is contiguous: only its first message may skip.
        ch.replayUntil = null;
        events.push({ type: "message", message: msg });
      } else if (ch.phase === "subscribed") {
        // Messages were lost on the way: ask the hub for them again.
        this._count("jumps");
        this._resubscribe(msg.channel);
      }
      // Else a subscribe is in flight, and its replay covers the jump.
    }
  }

  /** Builds a binary frame of `command` (without data) and `bytes`. */
  function encodeBinary(command, bytes) {
    const header = new TextEncoder().encode(JSON.stringify(command));
    const out = new Uint8Array(4 + header.length + bytes.length);
    new DataView(out.buffer).setUint32(0, header.length);
    out.set(header, 4);
    out.set(bytes, 4 + header.length);
    return out.buffer;
  }

  function isBinary(data) {
    return data instanceof ArrayBuffer || ArrayBuffer.isView(data);
  }

  class HubClient {
    /**
     * options: url (default ws(s)://<host>/ws), token (default ?token= of the
     * page), name (sent in `connect`), queueLimit (100), pingInterval (20000
     * ms), pongTimeout (10000 ms), backoffBase (1000 ms), backoffCap (30000
     * ms), autoConnect (true).
     */
    constructor(options = {}) {
      const scheme = location.protocol === "https:" ? "wss:" : "ws:";
      this.url = options.url || `${scheme}//${location.host}/ws`;
      this.token = options.token !== undefined
        ? options.token
        : new URLSearchParams(location.search).get("token");
      this.name = options.name || "web";
      this.queueLimit = options.queueLimit || 100;
      this.pingInterval = options.pingInterval || 20000;
      this.pongTimeout = options.pongTimeout || 10000;
      this.backoffBase = options.backoffBase || 1000;
      this.backoffCap = options.backoffCap || 30000;

      /** connecting | open | reconnecting | closed */
      this.state = "closed";
      /** When the next attempt starts (ms since epoch), while reconnecting. */
      this.retryAt = null;
      /** The last close: {code, reason, wasClean}. */
      this.lastClose = null;
      /** This connection's id and user, from `connected`. */
      this.clientId = null;
      this.user = null;
      this.ws = null;
      /** The last reconnect delays chosen: [{attempt, delay (ms)}]. */
      this.delays = [];
      this.counters = {
        connects: 0, // `connected` replies received
        reconnects: 0, // of which after a drop
        drops: 0, // connections lost
        messages: 0, // messages handed to the app
        duplicates: 0, // messages dropped as already seen
        jumps: 0, // offset jumps noticed
        gaps: 0, // gaps that could not be recovered
        recovered: 0, // resubscriptions answered with recovered: true
        resubscribes: 0, // subscribes sent with `since`
        published: 0, // publishes acknowledged
        duplicatePublishes: 0, // acknowledged with duplicate: true
        retried: 0, // publishes sent again after a drop
        queued: 0, // publishes currently waiting for a connection
        rejected: 0, // publishes refused because the queue was full
        pings: 0,
        pongs: 0,
      };

      this._handlers = {};
      // The recovery rule, and the request ids of every command.
      this._subs = new Subscriptions(this.counters);
      this._pending = new Map(); // id -> {resolve, reject, command, publish?}
      this._ready = new Map(); // channel -> {promise, resolve, reject, settled}
      this._queue = []; // publishes waiting for a connection
      this._keyPrefix = randomId();
      this._keySeq = 0;
      this._attempt = 0;
      this._timer = null;
      this._pingTimer = null;
      this._pongTimer = null;
      this._openTimer = null;
      this._everConnected = false;
      this._stopped = false;
      this._waiting = false; // a reconnect timer is pending

      global.addEventListener("online", () => {
        if (this._waiting) this._retryNow();
      });
      if (options.autoConnect !== false) this.connect();
    }

    // ---- events ----------------------------------------------------------

    /** Calls `fn(detail)` on each event of `type`; returns an unsubscriber. */
    on(type, fn) {
      (this._handlers[type] = this._handlers[type] || []).push(fn);
      return () => {
        this._handlers[type] = this._handlers[type].filter((f) => f !== fn);
      };
    }

    _emit(type, detail) {
      for (const fn of this._handlers[type] || []) {
        try {
          fn(detail);
        } catch (error) {
          console.error(`hub: ${type} handler failed`, error);
        }
      }
    }

    _setState(state, force = false) {
      if (this.state === state && !force) return;
      this.state = state;
      this._emit("state", { state, retryAt: this.retryAt, close: this.lastClose });
    }

    // ---- the connection --------------------------------------------------

    /** Opens the connection (again, after close()). */
    connect() {
      this._stopped = false;
      clearTimeout(this._timer);
      this._open();
    }

    _open() {
      this._waiting = false;
      this.retryAt = null;
      if (this.ws) this._detach(this.ws);
      this._setState(this._everConnected ? "reconnecting" : "connecting", true);
      let ws;
      try {
        ws = new WebSocket(this.url, "duplex.v1");
      } catch (error) {
        this._dropped({ code: 1006, reason: String(error), wasClean: false });
        return;
      }
      ws.binaryType = "arraybuffer";
      this.ws = ws;
      // A handshake that hangs counts as a failed attempt.
      this._openTimer = setTimeout(() => this._abandon(ws, "open timeout"), 10000);
      ws.onopen = () => {
        clearTimeout(this._openTimer);
        const connect = { op: "connect", name: this.name };
        if (this.token) connect.token = this.token;
        this._request(connect).then(
          (reply) => this._connected(reply),
          (error) => {
            if (error.code) console.warn("hub: connect refused", error);
          },
        );
      };
      ws.onmessage = (event) => this._receive(event.data);
      ws.onclose = (event) => {
        if (this.ws !== ws) return;
        this._dropped({ code: event.code, reason: event.reason, wasClean: event.wasClean });
      };
      ws.onerror = () => {}; // onclose follows with the code
    }

    /** Stops listening to `ws` and closes it. */
    _detach(ws, reason = "") {
      ws.onopen = ws.onmessage = ws.onclose = null;
      try {
        ws.close(4000, reason);
      } catch (_) {
        /* already closing */
      }
      if (this.ws === ws) this.ws = null;
    }

    /** Gives up on `ws` at once (dead peer): it counts as a drop. */
    _abandon(ws, reason) {
      if (this.ws !== ws) return;
      this._detach(ws, reason);
      this._dropped({ code: 1006, reason, wasClean: false });
    }

    _connected(reply) {
      const again = this._everConnected;
      this._everConnected = true;
      this._attempt = 0;
      this.clientId = reply.client;
      this.user = reply.user;
      this.counters.connects += 1;
      if (again) this.counters.reconnects += 1;
      this._setState("open");
      this._emit("connected", { ...reply, reconnected: again });
      for (const command of this._subs.onConnected()) this._send(command);
      const queued = this._queue;
      this._queue = [];
      this.counters.queued = 0;
      for (const item of queued) this._sendPublish(item);
      clearInterval(this._pingTimer);
      this._pingTimer = setInterval(() => this.ping(), this.pingInterval);
    }

    _dropped(close) {
      const wasOpen = this.state === "open";
      this.ws = null;
      this.lastClose = close;
      clearTimeout(this._openTimer);
      clearInterval(this._pingTimer);
      clearTimeout(this._pongTimer);
      if (wasOpen) this.counters.drops += 1;
      // Publishes in flight go back to the front of the queue: they are sent
      // again with the same key, so the hub delivers each one once.
      const retry = [];
      for (const [id, pending] of this._pending) {
        if (pending.publish) {
          retry.push(pending.publish);
        } else {
          pending.reject(new Error("disconnected"));
        }
        this._pending.delete(id);
      }
      retry.sort((a, b) => a.seq - b.seq);
      this.counters.retried += retry.length;
      this._queue = retry.concat(this._queue);
      this.counters.queued = this._queue.length;
      this._subs.onDisconnected();
      // A refused handshake (403 for this page's origin, 401, 429 …) looks
      // like any failed open: WebSocket tells no status. Five in a row before
      // ever getting in is likely one: stop, and say what to check.
      this._failedOpens = this._everConnected ? 0 : (this._failedOpens || 0) + 1;
      if (this._failedOpens >= 5) {
        this._failedOpens = 0;
        this._stopped = true;
        this._emit("error", {
          error: {
            code: "unreachable",
            message:
              `${this.url}: 5 attempts failed before the connection opened. If the hub ` +
              `runs, it likely refuses this page (HTTP 403: its operator sets --public-url ` +
              `to this page's URL or --allow-origin ${global.location.origin}); its log says why.`,
          },
        });
      }
      if (this._stopped || NO_RECONNECT.has(close.code)) {
        this._stopped = true;
        this.retryAt = null;
        this._rejectQueue(new Error(`closed (${close.code})`));
        this._setState("closed");
        return;
      }
      // A draining hub (1001, "… reconnect in N ms") already spread its
      // clients' delays: take its word after a good connection.
      const advised = close.code === 1001 && /reconnect in (\d+) ms/.exec(close.reason || "");
      const delay =
        advised && this._attempt === 0
          ? Math.min(Number(advised[1]), this.backoffCap)
          : backoff(this._attempt, this.backoffBase, this.backoffCap);
      this.delays.push({ attempt: this._attempt, delay: Math.round(delay) });
      if (this.delays.length > 20) this.delays.shift();
      this._attempt += 1;
      this.retryAt = Date.now() + delay;
      this._waiting = true;
      this._timer = setTimeout(() => this._open(), delay);
      this._setState("reconnecting", true); // retryAt moved
    }

    /** While waiting to reconnect: tries now instead. */
    retryNow() {
      if (this._waiting) this._retryNow();
    }

    _retryNow() {
      clearTimeout(this._timer);
      this._open();
    }

    _rejectQueue(error) {
      for (const item of this._queue) item.reject(error);
      this._queue = [];
      this.counters.queued = 0;
    }

    /** Closes for good (code 1000): no reconnect; queued publishes fail. */
    close() {
      this._stopped = true;
      clearTimeout(this._timer);
      this._waiting = false;
      const ws = this.ws;
      if (ws) {
        ws.onclose = ws.onmessage = ws.onopen = null;
        ws.close(1000, "bye");
        this.ws = null;
      }
      this._dropped({ code: 1000, reason: "closed by the page", wasClean: true });
    }

    /** Test hook: drops the connection as a network failure would. */
    drop() {
      if (this.ws) this._abandon(this.ws, "dropped by the page");
    }

    // ---- sending ---------------------------------------------------------

    _send(command) {
      if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
      this.ws.send(encodeCommand(command));
      return true;
    }

    /** Sends `command` with a fresh id; resolves with the reply. */
    _request(command, extra = {}) {
      return new Promise((resolve, reject) => {
        const id = this._subs.nextId();
        command.id = id;
        this._pending.set(id, { resolve, reject, command, ...extra });
        if (!this._send(command)) {
          this._pending.delete(id);
          reject(new Error("not connected"));
        }
      });
    }

    /** Sends a command now (connected) and resolves with the hub's reply. */
    request(command) {
      if (this.state !== "open") return Promise.reject(new Error("not connected"));
      return this._request({ ...command });
    }

    /** App-level heartbeat: without a pong within `pongTimeout` the link is dead. */
    ping() {
      if (this.state !== "open") return;
      const ws = this.ws;
      this.counters.pings += 1;
      clearTimeout(this._pongTimer);
      this._pongTimer = setTimeout(() => this._abandon(ws, "no pong"), this.pongTimeout);
      this._request({ op: "ping" }).then(
        () => {
          clearTimeout(this._pongTimer);
          this.counters.pongs += 1;
        },
        () => {},
      );
    }

    /**
     * Publishes `data` (JSON value, or bytes) to `channel`. Resolves with
     * {offset, duplicate} once the hub has it; while disconnected the publish
     * waits in a queue (rejected when the queue is full).
     */
    publish(channel, data) {
      return new Promise((resolve, reject) => {
        const seq = ++this._keySeq;
        const item = { channel, data, key: `${this._keyPrefix}-${seq}`, seq, resolve, reject };
        if (this.state === "open") {
          this._sendPublish(item);
        } else if (this._stopped) {
          reject(new Error("closed"));
        } else if (this._queue.length >= this.queueLimit) {
          this.counters.rejected += 1;
          reject(new Error("offline and the send queue is full"));
        } else {
          this._queue.push(item);
          this.counters.queued = this._queue.length;
        }
      });
    }

    _sendPublish(item) {
      const command = { op: "publish", channel: item.channel, data: item.data, key: item.key };
      const id = this._subs.nextId();
      command.id = id;
      this._pending.set(id, {
        command,
        publish: item,
        resolve: (reply) => {
          this.counters.published += 1;
          if (reply.duplicate) this.counters.duplicatePublishes += 1;
          item.resolve({ offset: reply.offset, duplicate: !!reply.duplicate });
        },
        reject: item.reject,
      });
      if (!this._send(command)) {
        this._pending.delete(id);
        this._queue.push(item);
        this.counters.queued = this._queue.length;
      }
    }

    /** Sends an ephemeral signal (typing…); dropped while disconnected. */
    signal(channel, data) {
      if (this.state !== "open") return false;
      return this._send({ op: "signal", channel, data });
    }

    /** Sends a new token before the current one expires; resolves with `refreshed`. */
    refresh(token) {
      this.token = token;
      return this.request({ op: "refresh", token });
    }

    /** Who is in `channel`: resolves with [{client, user}]. */
    presence(channel) {
      return this.request({ op: "presence", channel }).then((reply) => reply.clients || []);
    }

    // ---- channels --------------------------------------------------------

    /**
     * Subscribes to `channel`, now and after every reconnect (then with
     * `since`). options.recent: messages of history to get on the first
     * subscribe (and after a gap); options.since: {epoch, offset} to recover
     * from on the first subscribe. Resolves with the first `subscribed`
     * reply; rejects when the hub refuses it (the channel stays wanted and is
     * tried again on the next connection, or by calling subscribe again) or
     * the name is invalid.
     */
    subscribe(channel, options = {}) {
      try {
        this._subs.subscribe(channel, options);
      } catch (error) {
        return Promise.reject(error);
      }
      let ready = this._ready.get(channel);
      if (!ready || ready.settled) {
        ready = { settled: false };
        ready.promise = new Promise((resolve, reject) => {
          ready.resolve = resolve;
          ready.reject = reject;
        });
        ready.promise.catch(() => {}); // a page that does not wait is not an unhandled rejection
        this._ready.set(channel, ready);
      }
      this._flush();
      return ready.promise;
    }

    /** Stops receiving `channel` (and forgets its offsets). */
    unsubscribe(channel) {
      this._ready.delete(channel);
      this._subs.unsubscribe(channel);
      this._flush();
      return Promise.resolve();
    }

    /** Channels subscribed (or to be, after a reconnect), in name order. */
    channels() {
      return this._subs.channels();
    }

    /** {epoch, offset} of the last message seen on `channel`, or null. */
    position(channel) {
      return this._subs.position(channel);
    }

    /** Sends what the subscriptions want sent (dropped while disconnected: resent on connect). */
    _flush() {
      for (const command of this._subs.takeTransmit()) this._send(command);
    }

    _settle(channel, ok, value) {
      const ready = this._ready.get(channel);
      if (!ready || ready.settled) return;
      ready.settled = true;
      if (ok) ready.resolve(value);
      else ready.reject(value);
    }

    /** Hands one event of the subscriptions to the page. */
    _event(event) {
      switch (event.type) {
        case "subscribed":
          this._settle(event.channel, true, event.reply);
          this._emit("subscribed", { ...event.reply, resubscribed: event.resubscribed });
          break;
        case "message":
          this.counters.messages += 1;
          this._emit("message", event.message);
          break;
        case "gap":
          this._emit("gap", { channel: event.channel, recovered: false, epoch: event.epoch, offset: event.offset });
          break;
        case "subscribe_failed": {
          const error = new Error(event.message || event.code);
          error.code = event.code;
          this._settle(event.channel, false, error);
          this._emit("error", { channel: event.channel, error });
          break;
        }
        case "unsubscribed":
          // The hub ended the subscription (a refreshed token no longer
          // grants the channel); it is tried again on the next connection.
          this._emit("unsubscribed", { op: "unsubscribed", channel: event.channel, reason: event.reason });
          break;
        case "other":
          this._other(event.message);
          break;
        default:
          break;
      }
    }

    /** A hub message that is not about the subscriptions' state. */
    _other(msg) {
      switch (msg.op) {
        case "join":
        case "leave":
        case "signal":
          if (this._subs.channels().includes(msg.channel)) this._emit(msg.op, msg);
          break;
        case "error":
          this._emit("error", { error: msg });
          break;
        default:
          break;
      }
    }

    // ---- receiving -------------------------------------------------------

    _receive(raw) {
      let msg;
      try {
        msg = decodeServer(raw);
      } catch (error) {
        console.warn("hub: bad frame", error);
        return;
      }
      if (msg.id !== undefined && this._pending.has(msg.id)) {
        const pending = this._pending.get(msg.id);
        this._pending.delete(msg.id);
        if (msg.op === "error") {
          const error = new Error(msg.message || msg.code);
          error.code = msg.code;
          if (pending.publish) pending.publish.reject(error);
          else pending.reject(error);
        } else {
          pending.resolve(msg);
        }
        return;
      }
      for (const event of this._subs.handle(msg)) this._event(event);
      this._flush();
    }
  }

  /** The reconnect schedule, for pages that show it (and for tests). */
  HubClient.backoff = backoff;
  global.HubClient = HubClient;
  /** The client's decision code, for tests and other pages (no browser API needed). */
  const protocol = { Subscriptions, decodeServer, encodeCommand, validChannel };
  global.HubProtocol = protocol;
  if (typeof module === "object" && module && module.exports) {
    module.exports = { HubClient, ...protocol };
  }
})(typeof window !== "undefined" ? window : globalThis);
