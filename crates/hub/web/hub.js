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

  /** Splits a binary frame: u32 header length, JSON header, raw data. */
  function decodeBinary(buffer) {
    const view = new DataView(buffer);
    const length = view.getUint32(0);
    const header = JSON.parse(new TextDecoder().decode(new Uint8Array(buffer, 4, length)));
    header.data = new Uint8Array(buffer, 4 + length);
    return header;
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
      this._nextId = 1;
      this._pending = new Map(); // id -> {resolve, reject, command, publish?}
      this._channels = new Map(); // channel -> state, see subscribe()
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
      for (const [channel, ch] of this._channels) this._sendSubscribe(channel, ch);
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
      for (const ch of this._channels.values()) ch.live = false;
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
      const delay = backoff(this._attempt, this.backoffBase, this.backoffCap);
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
      if (isBinary(command.data)) {
        const { data, ...header } = command;
        const bytes = data instanceof ArrayBuffer
          ? new Uint8Array(data)
          : new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
        this.ws.send(encodeBinary(header, bytes));
      } else {
        this.ws.send(JSON.stringify(command));
      }
      return true;
    }

    /** Sends `command` with a fresh id; resolves with the reply. */
    _request(command, extra = {}) {
      return new Promise((resolve, reject) => {
        const id = this._nextId++;
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
      const id = this._nextId++;
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
     * subscribe. Resolves with the first `subscribed` reply.
     */
    subscribe(channel, options = {}) {
      if (this._channels.has(channel)) return this._channels.get(channel).ready;
      const ch = {
        recent: options.recent || 0,
        epoch: null, // epoch of `last`
        last: null, // offset of the last message handed to the app
        floor: null, // after a gap with a backlog: offsets up to here were seen
        live: false, // subscribed on the current connection
        syncing: false, // a subscribe is on its way: ignore messages till its reply
      };
      ch.ready = new Promise((resolve, reject) => {
        ch.resolveReady = resolve;
        ch.rejectReady = reject;
      });
      this._channels.set(channel, ch);
      if (this.state === "open") this._sendSubscribe(channel, ch);
      return ch.ready;
    }

    /** Stops receiving `channel` (and forgets its offsets). */
    unsubscribe(channel) {
      const ch = this._channels.get(channel);
      if (!ch) return Promise.resolve();
      this._channels.delete(channel);
      if (!ch.live || this.state !== "open") return Promise.resolve();
      return this._request({ op: "unsubscribe", channel }).catch(() => {});
    }

    /** Channels subscribed (or to be, after a reconnect). */
    channels() {
      return Array.from(this._channels.keys());
    }

    /** {epoch, offset} of the last message seen on `channel`, or null. */
    position(channel) {
      const ch = this._channels.get(channel);
      return ch && ch.epoch !== null ? { epoch: ch.epoch, offset: ch.last || 0 } : null;
    }

    _sendSubscribe(channel, ch) {
      const command = { op: "subscribe", channel };
      const since = ch.epoch !== null;
      if (since) {
        command.since = { epoch: ch.epoch, offset: ch.last || 0 };
        this.counters.resubscribes += 1;
      }
      // `recent` is used by the hub only when it cannot recover from `since`.
      if (ch.recent) command.recent = ch.recent;
      ch.syncing = true;
      ch.live = false;
      this._request(command).then(
        (reply) => this._subscribed(channel, ch, reply, since),
        (error) => {
          ch.syncing = false;
          // Without a code the connection dropped: retried after reconnecting.
          if (this._channels.get(channel) !== ch || !error.code) return;
          if (error.code === "already_subscribed") return;
          this._channels.delete(channel);
          ch.rejectReady(error);
          this._emit("error", { channel, error });
        },
      );
    }

    _subscribed(channel, ch, reply, since) {
      if (this._channels.get(channel) !== ch) return;
      ch.syncing = false;
      ch.live = true;
      const unrecoverable = since && (reply.gap === true || reply.recovered === false);
      if (since && reply.recovered) this.counters.recovered += 1;
      if (ch.epoch !== reply.epoch) {
        // Another life of the history: offsets start again.
        ch.epoch = reply.epoch;
        ch.last = null;
        ch.floor = null;
      } else if (unrecoverable) {
        // Same history, but it no longer reaches back to `last`: the next
        // message may jump; those up to `last` (in `recent`) are duplicates.
        ch.floor = ch.last;
        ch.last = null;
      }
      // Without a backlog on its way the next message is offset + 1; with
      // one (`recent`), its first message sets the baseline.
      if (ch.last === null && !ch.recent) ch.last = reply.offset;
      ch.resolveReady(reply);
      this._emit("subscribed", { ...reply, resubscribed: since });
      if (unrecoverable) {
        this.counters.gaps += 1;
        this._emit("gap", { channel, recovered: false, epoch: reply.epoch, offset: reply.offset });
      }
    }

    /** Resubscribes `channel` from its last offset after a gap was seen. */
    _resync(channel, ch) {
      if (ch.syncing) return;
      ch.syncing = true;
      ch.live = false;
      if (this.state !== "open") return;
      this._request({ op: "unsubscribe", channel })
        .catch(() => {})
        .then(() => {
          if (this._channels.get(channel) === ch && this.state === "open") {
            this._sendSubscribe(channel, ch);
          }
        });
    }

    // ---- receiving -------------------------------------------------------

    _receive(raw) {
      let msg;
      try {
        msg = typeof raw === "string" ? JSON.parse(raw) : decodeBinary(raw);
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
      switch (msg.op) {
        case "message":
          this._message(msg);
          break;
        case "gap": {
          const ch = this._channels.get(msg.channel);
          if (ch && !ch.syncing) {
            this.counters.jumps += 1;
            this._resync(msg.channel, ch);
          }
          break;
        }
        case "unsubscribed":
          // The hub ended the subscription (a refreshed token no longer
          // grants the channel): it is not resumed after a reconnect.
          if (this._channels.has(msg.channel)) {
            this._channels.delete(msg.channel);
            this._emit("unsubscribed", msg);
          }
          break;
        case "join":
        case "leave":
        case "signal":
          if (this._channels.has(msg.channel)) this._emit(msg.op, msg);
          break;
        case "error":
          this._emit("error", { error: msg });
          break;
        default:
          break;
      }
    }

    _message(msg) {
      const ch = this._channels.get(msg.channel);
      if (!ch || ch.syncing) return; // the resubscribe replays it
      const seen = ch.last !== null ? ch.last : ch.floor;
      if (seen !== null && msg.offset <= seen) {
        this.counters.duplicates += 1;
        return;
      }
      if (ch.last !== null && msg.offset > ch.last + 1) {
        // Missed some: get them back from the history before going on.
        this.counters.jumps += 1;
        this._resync(msg.channel, ch);
        return;
      }
      ch.last = msg.offset;
      ch.floor = null;
      this.counters.messages += 1;
      this._emit("message", msg);
    }
  }

  /** The reconnect schedule, for pages that show it (and for tests). */
  HubClient.backoff = backoff;
  global.HubClient = HubClient;
})(window);
