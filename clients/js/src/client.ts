/**
 * The client: one WebSocket to the hub's `/ws` (duplex.v1), kept up across
 * drops, with channels that survive them; or, where WebSockets are blocked,
 * the same protocol over plain HTTP (`http.ts`).
 *
 * Invariants:
 * - Transports are tried in the order of `transports`: an attempt that fails
 *   before its socket opens moves to the next at once; the one that opened
 *   is kept for reconnects, until an attempt with it fails before opening.
 * - Every subscription's recovery goes through the one pure machine of
 *   `subscriptions.ts`: resubscribing with `since`, replay, dedupe by offset,
 *   gaps announced (a `gap` event, never a silent loss).
 * - Reconnects wait a full-jitter backoff (`backoff.ts`); the attempt count is
 *   reset only once a connection stayed up `stableAfter` ms, so a hub that
 *   accepts and drops at once is not hammered. After the close codes the
 *   protocol calls final (1000, 1008, 1009, 4001, 4029; 4002 and 4003 — token
 *   expired, token revoked — too without `getToken`, which is asked for a
 *   fresh token otherwise) the client does not reconnect: it is `closed`.
 * - A publish carries an idempotency key drawn from `crypto.getRandomValues`
 *   and is sent again with the same key after a drop, so the hub delivers it
 *   once; publishes wait in a bounded queue while disconnected.
 * - At most one `getToken` call is in flight: a scheduled refresh, an
 *   explicit {@link Client.refreshToken} and a reconnect that needs a token
 *   share it.
 * - Request ids come from the machine's counter, for every command.
 */

import { backoffDelay } from "./backoff.js";
import { type Command, type Envelope, jsonEnvelope, ProtocolError, type ServerMessage, validChannel } from "./codec.js";
import { ClosedError, DuplexError, HubError, TokenError } from "./errors.js";
import { type FetchLike, HttpSocket, sessionUrl } from "./http.js";
import { type MachineCounters, type MachineEvent, type Position, Subscriptions } from "./subscriptions.js";

/** What the SDK needs of a WebSocket: the browser's, Node's global one, or `ws`. */
export interface WebSocketLike {
  /** `arraybuffer` is set, so binary frames arrive as ArrayBuffers. */
  binaryType: string;
  /** 0 connecting, 1 open, 2 closing, 3 closed. */
  readonly readyState: number;
  /** Sends a text or binary frame. */
  send(data: string | ArrayBuffer): void;
  /** Starts the closing handshake. */
  close(code?: number, reason?: string): void;
  /** Called once open. */
  onopen: ((event: unknown) => void) | null;
  /** Called with each frame (`data`: string or ArrayBuffer). */
  onmessage: ((event: { data: unknown }) => void) | null;
  /** Called once closed, with the code and reason. */
  onclose: ((event: { code: number; reason: string }) => void) | null;
  /** Called on a failure (a close follows). */
  onerror: ((event: unknown) => void) | null;
}

/** A WebSocket constructor, as `new WebSocket(url, protocol)`. */
export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocketLike;

/** How the client reaches the hub: a WebSocket to `/ws`, or plain HTTP (`/session`: Server-Sent Events down, POSTs up). */
export type TransportName = "websocket" | "http";

/** Returns the token to connect or refresh with (a JWT), or null for anonymous. */
export type GetToken = () => string | null | undefined | Promise<string | null | undefined>;

/** Options of {@link Client}. Times are in milliseconds. */
export interface ClientOptions {
  /** Called for a token before connecting, before the current one expires, and after the hub closed for expiry (4002). At most one call is in flight. */
  getToken?: GetToken;
  /** Called for a subscription token (a JWT for one channel, for namespaces with `subscribe = "token"`) before each subscribe of `channel` that was not given one in {@link SubscribeOptions.token}: a resubscribe after a reconnect in particular. Return null for a channel that needs none. */
  getSubscriptionToken?: (channel: string) => string | null | Promise<string | null>;
  /** The name sent in `connect` (shown in the hub's logs). Default `"duplex-client"`. */
  name?: string;
  /** The envelope spoken: `jsonEnvelope` (duplex.v1, the default) or `binaryEnvelope` (duplex.v1.bin: smaller frames; a hub that does not speak it refuses the handshake). */
  envelope?: Envelope;
  /** The WebSocket implementation. Default: `globalThis.WebSocket` (browsers; Node 22, or Node 20 with `--experimental-websocket`); pass `ws` elsewhere. */
  WebSocket?: WebSocketConstructor;
  /**
   * The transports to try, in order. An attempt that fails before the
   * connection opens (a proxy refusing the WebSocket upgrade, say) moves to
   * the next one at once; the one that opened is kept for later
   * reconnects. Default `["websocket", "http"]`.
   */
  transports?: TransportName[];
  /** The `fetch` of the `http` transport. Default `globalThis.fetch`. */
  fetch?: FetchLike;
  /** First reconnect delay's ceiling (full jitter: the delay is random below it). Default 1000. */
  backoffBase?: number;
  /** Largest reconnect delay ceiling. Default 30000. */
  backoffCap?: number;
  /** How long a connection must stay up before the backoff starts again from `backoffBase`. Default 10000. */
  stableAfter?: number;
  /** Publishes kept while disconnected (and in flight); more are refused with `queue_full`. Default 100. */
  queueLimit?: number;
  /** Application ping interval while connected. Default 20000. */
  pingInterval?: number;
  /** How long a ping may go unanswered before the connection counts as dead, with the page visible. Default 10000. */
  pongTimeout?: number;
  /** The same in the background (page hidden): the relaxed liveness budget. Default 60000. */
  backgroundPongTimeout?: number;
  /** How long opening the WebSocket and getting `connected` may take. Default 10000. */
  connectTimeout?: number;
  /** Refresh the token this long before it expires (at most half its remaining life). Default 60000. */
  refreshMargin?: number;
  /** Random numbers in [0, 1) for the backoff jitter. Default `Math.random`. */
  random?: () => number;
  /** Where `visibilitychange` is listened to and `visibilityState` read. Default `globalThis.document` when there is one. */
  document?: (EventTarget & { readonly visibilityState: string }) | null;
  /** Where `online` is listened to. Default `globalThis` when it is an EventTarget (browsers). */
  window?: EventTarget | null;
  /**
   * Attempts to open the first connection before giving up: after that many
   * failures in a row, none of which got `connected`, the client closes with
   * an `error` event (`DuplexError` `unreachable`) saying what to check. A
   * browser is not told why a WebSocket handshake failed, and a hub refusing
   * the page's origin (HTTP 403) fails every attempt alike. Once connected,
   * it reconnects without limit. Default `Infinity` (never gives up).
   */
  firstConnectAttempts?: number;
}

/** Where the client stands. */
export type ClientState = "idle" | "connecting" | "connected" | "disconnected" | "closed";

/** The `connected` reply, and whether it follows a drop. */
export interface ConnectedInfo {
  /** This connection's id on the hub. */
  client: string;
  /** The token's user (`""` for anonymous). */
  user: string;
  /** When the token expires (seconds since the Unix epoch), if there is one. */
  expires: number | undefined;
  /** Data from the application's backend (its `connect` hook), if it gave any. */
  data: unknown;
  /** Whether this connection replaces one that dropped. */
  reconnected: boolean;
}

/** A close, and what the client does next. */
export interface DisconnectedInfo {
  /** The WebSocket close code (1006: lost without one). */
  code: number;
  /** The close reason. */
  reason: string;
  /** Whether the client will reconnect (false: it is `closed`). */
  willReconnect: boolean;
  /** In how many ms it tries again, when it will. */
  retryIn: number | undefined;
  /** The reconnect attempt that waits `retryIn` (0-based: its ceiling is min(`backoffCap`, `backoffBase` × 2^attempt)), when it will. */
  attempt: number | undefined;
}

/**
 * What a {@link Client} counted since it was made: the recovery machine's
 * counts ({@link MachineCounters}) and the connection's.
 */
export interface ClientCounters extends MachineCounters {
  /** `connected` replies received. */
  connects: number;
  /** Of which after a drop. */
  reconnects: number;
  /** Connections lost after `connected`. */
  drops: number;
  /** Publishes acknowledged by the hub. */
  published: number;
  /** Of which the hub had already (`duplicate: true`: a retry after a drop). */
  duplicatePublishes: number;
  /** Publishes sent again (same key) after the connection they were sent on dropped. */
  retried: number;
  /** Pings sent. */
  pings: number;
  /** Pongs received. */
  pongs: number;
}

/** A message of a channel, as handed to the application. */
export interface Message {
  /** The channel. */
  channel: string;
  /** Its offset in the channel's epoch. */
  offset: number;
  /** The channel's epoch the offset belongs to. */
  epoch: string;
  /** When the hub accepted it (ms since the Unix epoch). */
  time: number;
  /** Who published it. */
  from: { user: string; client: string };
  /** A JSON value, or a Uint8Array when published as bytes. */
  data: unknown;
}

/** A gap: messages of `channel` may have been missed before `offset` of `epoch`; resync from elsewhere. */
export interface GapInfo {
  /** The channel. */
  channel: string;
  /** The channel's epoch now. */
  epoch: string;
  /** Its latest offset when the gap was found. */
  offset: number;
}

/** The hub's reply to a publish. */
export interface PublishResult {
  /** The message's offset (the first one's, for a duplicate). */
  offset: number;
  /** The channel's epoch, when the hub says it (duplex.v1's `published` does not). */
  epoch: string | undefined;
  /** Whether the hub had it already (a retry after a drop). */
  duplicate: boolean;
}

/** A client present in a channel. */
export interface PresenceEntry {
  /** The connection's id. */
  client: string;
  /** Its user. */
  user: string;
}

/** The `subscribed` reply. */
export interface SubscribedInfo {
  /** The channel. */
  channel: string;
  /** Its epoch. */
  epoch: string;
  /** Its latest offset. */
  offset: number;
  /** Whether every message after the position follows (a recovery). */
  recovered: boolean;
  /** Whether this follows a reconnect or a resync. */
  resubscribed: boolean;
}

/** Options of {@link Client.subscribe}. */
export interface SubscribeOptions {
  /** Messages of history to get on a fresh subscription (and after a gap). Default 0. */
  recent?: number;
  /** Where to recover from on the first subscription (a position kept from earlier). */
  since?: Position;
  /** The subscription token for the first subscribe (a private channel); later subscribes ask {@link ClientOptions.getSubscriptionToken}. */
  token?: string;
  /** Aborting it unsubscribes. */
  signal?: AbortSignal;
  /** Messages an async iterator buffers before it fails with `overflow`. Default 10000. */
  bufferLimit?: number;
}

/** An event whose `detail` is `T`. */
export class DuplexEvent<T> extends Event {
  /** What happened. */
  readonly detail: T;

  /** An event of `type` with `detail`. */
  constructor(type: string, detail: T) {
    super(type);
    this.detail = detail;
  }
}

/** Close codes after which the client does not reconnect (docs/protocol.md): 4029 is a user over its connection limit. */
const FINAL_CODES = new Set([1000, 1008, 1009, 4001, 4029]);

/**
 * The delay a hub's drain advises in its close 1001
 * (`server shutting down; reconnect in 3217 ms`, docs/protocol.md "Drain"),
 * in milliseconds; `undefined` for any other close.
 */
export function drainDelay(code: number, reason: string): number | undefined {
  if (code !== 1001) return undefined;
  const match = /reconnect in (\d+) ms/.exec(reason);
  return match ? Number(match[1]) : undefined;
}
const TOKEN_EXPIRED = 4002;
const TOKEN_REVOKED = 4003;
const OPEN = 1;

interface Pending {
  resolve: (reply: ServerMessage) => void;
  reject: (error: Error) => void;
  publish?: QueuedPublish;
}

interface QueuedPublish {
  channel: string;
  data: unknown;
  key: string;
  seq: number;
  resolve: (result: PublishResult) => void;
  reject: (error: Error) => void;
  done: boolean;
  /** Sent on a connection (and not yet answered). */
  sentOn: WebSocketLike | null;
}

function randomHex(bytes: number): string {
  const array = new Uint8Array(bytes);
  globalThis.crypto.getRandomValues(array);
  return Array.from(array, (b) => b.toString(16).padStart(2, "0")).join("");
}

function abortReason(signal: AbortSignal): unknown {
  return signal.reason ?? new DuplexError("aborted", "aborted");
}

/**
 * A client of the hub. Events (each a {@link DuplexEvent}): `connecting`
 * ({attempt}), `connected` ({@link ConnectedInfo}), `disconnected`
 * ({@link DisconnectedInfo}), `gap` ({@link GapInfo}), `error` ({error}: a
 * {@link DuplexError}).
 */
export class Client extends EventTarget {
  /** The hub's WebSocket URL (`ws://host:port/ws`). */
  readonly url: string;
  private readonly opts: Required<Omit<ClientOptions, "getToken" | "getSubscriptionToken" | "WebSocket" | "document" | "window" | "envelope" | "transports" | "fetch">>;
  private readonly envelope: Envelope;
  private readonly stats = { connects: 0, reconnects: 0, drops: 0, published: 0, duplicatePublishes: 0, retried: 0, pings: 0, pongs: 0 };
  private failedOpens = 0;
  private readonly getToken: GetToken | undefined;
  private readonly getSubscriptionToken: ClientOptions["getSubscriptionToken"];
  /** Subscription tokens given to {@link subscribe}, each for its channel's next subscribe. */
  private readonly givenTokens = new Map<string, string>();
  private readonly WS: WebSocketConstructor | undefined;
  private readonly fetchImpl: FetchLike | undefined;
  private readonly transports: TransportName[];
  private transportIndex = 0;
  /** The current socket's transport, and whether it opened. */
  private current: { name: TransportName; opened: boolean } | null = null;
  private readonly doc: (EventTarget & { readonly visibilityState: string }) | null;
  private readonly win: EventTarget | null;
  private readonly machine = new Subscriptions();
  private readonly subs = new Map<string, Subscription>();
  private readonly pending = new Map<number, Pending>();
  private queue: QueuedPublish[] = [];
  private readonly keyPrefix = randomHex(12);
  private keySeq = 0;
  private stateValue: ClientState = "idle";
  private ws: WebSocketLike | null = null;
  private attempt = 0;
  private everConnected = false;
  private info: ConnectedInfo | null = null;
  private token: string | null = null;
  private tokenStale = true;
  private expiresMs: number | null = null;
  private tokenFetch: Promise<string | null> | null = null;
  private refreshing: Promise<void> | null = null;
  private refreshAttempt = 0;
  private background = false;
  private retryTimer: ReturnType<typeof setTimeout> | undefined;
  private openTimer: ReturnType<typeof setTimeout> | undefined;
  private stableTimer: ReturnType<typeof setTimeout> | undefined;
  private pingTimer: ReturnType<typeof setInterval> | undefined;
  private pongTimer: ReturnType<typeof setTimeout> | undefined;
  private refreshTimer: ReturnType<typeof setTimeout> | undefined;
  private readonly waiters = new Set<{ resolve: (info: ConnectedInfo) => void; reject: (error: Error) => void }>();
  private readonly onVisibility = () => this.visibilityChanged();
  private readonly onOnline = () => this.retryNow();

  /** A client of the hub at `url` (`ws://…/ws` or `wss://…/ws`); nothing happens until {@link connect}. */
  constructor(url: string, options: ClientOptions = {}) {
    super();
    this.url = url;
    this.getToken = options.getToken;
    this.getSubscriptionToken = options.getSubscriptionToken;
    const WS = options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    const fetchImpl = options.fetch ?? (globalThis as { fetch?: FetchLike }).fetch?.bind(globalThis);
    this.transports = (options.transports ?? ["websocket", "http"]).filter((t) => (t === "websocket" ? WS : fetchImpl));
    if (this.transports.length === 0) {
      throw new DuplexError(
        "no_websocket",
        "no WebSocket implementation: pass one as options.WebSocket (e.g. `ws`), or run Node 22+ (Node 20: --experimental-websocket)",
      );
    }
    this.WS = WS;
    this.envelope = options.envelope ?? jsonEnvelope;
    this.fetchImpl = fetchImpl;
    this.opts = {
      name: options.name ?? "duplex-client",
      backoffBase: options.backoffBase ?? 1000,
      backoffCap: options.backoffCap ?? 30000,
      stableAfter: options.stableAfter ?? 10000,
      queueLimit: options.queueLimit ?? 100,
      pingInterval: options.pingInterval ?? 20000,
      pongTimeout: options.pongTimeout ?? 10000,
      backgroundPongTimeout: options.backgroundPongTimeout ?? 60000,
      connectTimeout: options.connectTimeout ?? 10000,
      refreshMargin: options.refreshMargin ?? 60000,
      random: options.random ?? Math.random,
      firstConnectAttempts: options.firstConnectAttempts ?? Infinity,
    };
    const g = globalThis as { document?: EventTarget & { visibilityState: string } };
    this.doc = options.document !== undefined ? options.document : (g.document ?? null);
    const w = globalThis as unknown as Partial<EventTarget>;
    this.win = options.window !== undefined ? options.window : typeof w.addEventListener === "function" ? (globalThis as unknown as EventTarget) : null;
  }

  // ---- state and events ---------------------------------------------------

  /** `idle` (before connect), `connecting`, `connected`, `disconnected` (waiting to reconnect) or `closed`. */
  get state(): ClientState {
    return this.stateValue;
  }

  /** The envelope of the current connection: the chosen one over WebSocket; JSON over the HTTP transport, which carries text events only. */
  private get wire(): Envelope {
    return this.current?.name === "http" ? jsonEnvelope : this.envelope;
  }

  /** The transport of the current connection (or of the attempt under way); null while there is none. */
  get transport(): TransportName | null {
    return this.ws && this.current ? this.current.name : null;
  }

  /** The current connection's `connected` reply, while connected. */
  get connection(): ConnectedInfo | null {
    return this.stateValue === "connected" ? this.info : null;
  }

  /** Publishes waiting for a connection or for their reply. */
  get queued(): number {
    return this.queue.length + [...this.pending.values()].filter((p) => p.publish).length;
  }

  /** What was counted: the recovery machine's counts (duplicates dropped, jumps, gaps, recoveries, resubscribes) and the connection's ({@link ClientCounters}). A copy. */
  get counters(): Readonly<ClientCounters> {
    return { ...this.machine.counters, ...this.stats };
  }

  /** The last position delivered on `channel` ({epoch, offset}), to resume from later with `since`. */
  position(channel: string): Position | null {
    return this.machine.position(channel);
  }

  /** Calls `listener(detail)` on each event of `type`; returns a function that stops it. */
  on<T = unknown>(type: string, listener: (detail: T) => void): () => void {
    const wrapped = (event: Event) => listener((event as DuplexEvent<T>).detail);
    this.addEventListener(type, wrapped);
    return () => this.removeEventListener(type, wrapped);
  }

  private emit<T>(type: string, detail: T): void {
    this.dispatchEvent(new DuplexEvent(type, detail));
  }

  private fail(error: DuplexError): void {
    this.emit("error", { error });
  }

  // ---- the connection -----------------------------------------------------

  /**
   * Starts connecting (and reconnecting after drops, until {@link close}).
   * Resolves with the `connected` reply (at once when connected); rejects
   * when the client closes first (a final close code, {@link close}) or
   * `signal` aborts, which also closes the client if it never connected.
   */
  connect(options: { signal?: AbortSignal } = {}): Promise<ConnectedInfo> {
    const { signal } = options;
    if (signal?.aborted) return Promise.reject(abortReason(signal));
    if (this.stateValue === "connected" && this.info) return Promise.resolve(this.info);
    const promise = this.whenConnected(signal, () => {
      if (!this.everConnected) this.close();
    });
    if (this.stateValue === "idle" || this.stateValue === "closed") {
      this.stateValue = "disconnected";
      this.attempt = 0;
      this.doc?.addEventListener("visibilitychange", this.onVisibility);
      this.win?.addEventListener("online", this.onOnline);
      this.background = this.doc?.visibilityState === "hidden";
      void this.open();
    }
    return promise;
  }

  /** Resolves at the next `connected` (now, when connected); rejects when the client closes or `signal` aborts. */
  private whenConnected(signal?: AbortSignal, onAbort?: () => void): Promise<ConnectedInfo> {
    if (this.stateValue === "connected" && this.info) return Promise.resolve(this.info);
    if (this.stateValue === "closed") return Promise.reject(new ClosedError(1000, "the client is closed"));
    return new Promise((resolve, reject) => {
      const waiter = {
        resolve: (info: ConnectedInfo) => {
          signal?.removeEventListener("abort", abort);
          resolve(info);
        },
        reject: (error: Error) => {
          signal?.removeEventListener("abort", abort);
          reject(error);
        },
      };
      const abort = () => {
        this.waiters.delete(waiter);
        reject(abortReason(signal as AbortSignal));
        onAbort?.();
      };
      signal?.addEventListener("abort", abort, { once: true });
      this.waiters.add(waiter);
    });
  }

  /** One connection attempt: a token if one is needed, the socket, `connect`. */
  private async open(): Promise<void> {
    this.retryTimer = undefined;
    this.stateValue = "connecting";
    this.emit("connecting", { attempt: this.attempt });
    let token: string | null = null;
    if (this.getToken) {
      try {
        token = this.needsToken() ? await this.fetchToken() : this.token;
      } catch (error) {
        if (this.stateValue !== "connecting") return;
        this.fail(error as DuplexError);
        this.dropped(1006, "no token", null);
        return;
      }
      if (this.stateValue !== "connecting") return; // closed meanwhile
    }
    let ws: WebSocketLike;
    const name = this.transports[this.transportIndex % this.transports.length];
    const current = { name, opened: false };
    try {
      ws =
        name === "http"
          ? new HttpSocket(sessionUrl(this.url), this.fetchImpl as FetchLike)
          : new (this.WS as WebSocketConstructor)(this.url, this.envelope.subprotocol);
      this.current = current;
    } catch (cause) {
      this.fail(new DuplexError("closed", `cannot open ${this.url}`, { cause }));
      this.dropped(1006, String(cause), null);
      return;
    }
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    this.openTimer = setTimeout(() => this.abandon(ws, "connect timeout"), this.opts.connectTimeout);
    ws.onopen = () => {
      current.opened = true;
      const command: Command = { op: "connect", name: this.opts.name };
      if (token) command.token = token;
      // The reply is taken synchronously, not through a promise: what the
      // hub sends right after `connected` (a backend's server-side
      // subscriptions, docs/hooks.md) may arrive in the same read, and a
      // WebSocket that dispatches both messages in one task (Node's `ws`)
      // would hand it over before a promise's callback ran.
      const id = this.machine.nextId();
      command.id = id;
      this.pending.set(id, {
        resolve: (reply) => this.connected(ws, reply),
        reject: (error: Error) => {
          if (error instanceof HubError) this.fail(error);
        },
      });
      if (!this.send(command, ws)) this.pending.delete(id);
    };
    ws.onmessage = (event) => {
      if (this.ws === ws) this.receive(event.data);
    };
    ws.onclose = (event) => {
      if (this.ws === ws) this.dropped(event.code, event.reason ?? "", ws);
    };
    // Once open, onclose follows an error with the code. Before, some
    // WebSockets (Node 20's) report a refused handshake with an error alone.
    ws.onerror = () => {
      if (!current.opened) this.abandon(ws, "the connection failed");
    };
  }

  private needsToken(): boolean {
    if (this.tokenStale || this.token === null) return true;
    return this.expiresMs !== null && this.expiresMs - Date.now() < this.refreshDelayMargin();
  }

  private refreshDelayMargin(): number {
    return Math.min(this.opts.refreshMargin, 1000);
  }

  /** One `getToken` call at a time: every caller shares the one in flight. */
  private fetchToken(): Promise<string | null> {
    if (this.tokenFetch) return this.tokenFetch;
    const getToken = this.getToken as GetToken;
    const fetch = (async () => {
      let token: unknown;
      try {
        token = await getToken();
      } catch (cause) {
        throw new TokenError("getToken failed", cause);
      }
      if (token !== null && token !== undefined && typeof token !== "string") {
        throw new TokenError(`getToken returned a ${typeof token}, not a string`, token);
      }
      this.token = token ?? null;
      this.tokenStale = false;
      return this.token;
    })();
    this.tokenFetch = fetch;
    const clear = () => {
      if (this.tokenFetch === fetch) this.tokenFetch = null;
    };
    fetch.then(clear, clear);
    return fetch;
  }

  private connected(ws: WebSocketLike, reply: ServerMessage): void {
    if (this.ws !== ws) return;
    clearTimeout(this.openTimer);
    const reconnected = this.everConnected;
    this.everConnected = true;
    this.stats.connects += 1;
    if (reconnected) this.stats.reconnects += 1;
    this.info = {
      client: String(reply.client),
      user: String(reply.user ?? ""),
      expires: typeof reply.expires === "number" ? reply.expires : undefined,
      data: reply.data ?? undefined,
      reconnected,
    };
    this.stateValue = "connected";
    clearTimeout(this.stableTimer);
    this.stableTimer = setTimeout(() => {
      this.attempt = 0;
    }, this.opts.stableAfter);
    this.setExpiry(this.info.expires);
    this.emit("connected", { ...this.info });
    for (const waiter of this.waiters) waiter.resolve({ ...this.info });
    this.waiters.clear();
    for (const command of this.machine.onConnected()) this.sendFromMachine(command);
    const queued = this.queue;
    this.queue = [];
    for (const item of queued) this.sendPublish(item);
    clearInterval(this.pingTimer);
    this.pingTimer = setInterval(() => this.ping(), this.opts.pingInterval);
  }

  /** Gives up on `ws` at once (a dead peer): it counts as a drop. */
  private abandon(ws: WebSocketLike, reason: string): void {
    if (this.ws !== ws) return;
    this.dropped(1006, reason, ws);
  }

  private detach(ws: WebSocketLike, code: number, reason: string): void {
    ws.onopen = ws.onmessage = ws.onclose = null;
    ws.onerror = () => {};
    try {
      ws.close(code, reason);
    } catch {
      /* already closing */
    }
  }

  /** The connection is gone (or an attempt failed): reconnect or close for good. */
  private dropped(code: number, reason: string, ws: WebSocketLike | null): void {
    if (ws) this.detach(ws, 4000, reason.slice(0, 100));
    if (ws && this.ws !== ws) return;
    // An attempt that never opened tries the next transport, at once while
    // there is one it has not tried since the last that worked.
    let fallback = false;
    if (ws && this.current && !this.current.opened && this.transports.length > 1) {
      this.transportIndex = (this.transportIndex + 1) % this.transports.length;
      fallback = this.transportIndex !== 0;
    }
    const wasConnected = this.info !== null;
    if (wasConnected) this.stats.drops += 1;
    this.ws = null;
    clearTimeout(this.openTimer);
    clearTimeout(this.stableTimer);
    clearInterval(this.pingTimer);
    clearTimeout(this.pongTimer);
    this.pongTimer = undefined; // the next connection pings afresh
    clearTimeout(this.refreshTimer);
    this.info = null;
    // Publishes in flight go back to the front of the queue: they are sent
    // again with the same key, so the hub delivers each one once.
    const retry: QueuedPublish[] = [];
    const closed = new ClosedError(code, reason);
    for (const [id, pending] of this.pending) {
      this.pending.delete(id);
      if (pending.publish) {
        if (!pending.publish.done) retry.push(pending.publish);
      } else {
        pending.reject(closed);
      }
    }
    retry.sort((a, b) => a.seq - b.seq);
    this.stats.retried += retry.length;
    for (const item of retry) item.sentOn = null;
    this.queue = retry.concat(this.queue);
    this.machine.onDisconnected();
    const stale = code === TOKEN_EXPIRED || code === TOKEN_REVOKED;
    if (stale) this.tokenStale = true;
    const final = FINAL_CODES.has(code) || (stale && !this.getToken);
    // A refused handshake (403 for the page's origin, 401, 429 …) looks like
    // any failed open: a WebSocket tells no status. Failing every time before
    // ever getting in is likely one: stop, and say what to check.
    this.failedOpens = this.everConnected ? 0 : this.failedOpens + 1;
    const unreachable = !final && this.stateValue !== "closed" && this.failedOpens >= this.opts.firstConnectAttempts;
    if (final || unreachable || this.stateValue === "closed") {
      this.shutdown(closed);
      this.emit("disconnected", { code, reason, willReconnect: false, retryIn: undefined, attempt: undefined });
      if (final) this.fail(closed);
      if (unreachable) this.fail(new DuplexError("unreachable", this.unreachableMessage(), { cause: closed }));
      return;
    }
    const attempt = this.attempt;
    // A hub that shuts down says when to come back (its drain spreads its
    // clients over a window): wait that long, capped by the backoff's ceiling.
    const advised = drainDelay(code, reason);
    const delay = fallback
      ? 0
      : advised !== undefined
        ? Math.min(advised, this.opts.backoffCap)
        : Math.round(backoffDelay(attempt, this.opts.backoffBase, this.opts.backoffCap, this.opts.random));
    this.attempt += 1;
    this.stateValue = "disconnected";
    this.retryTimer = setTimeout(() => void this.open(), delay);
    this.emit("disconnected", { code, reason, willReconnect: true, retryIn: delay, attempt });
  }

  private unreachableMessage(): string {
    const origin = (globalThis as { location?: { origin?: string } }).location?.origin;
    const page = origin ? `this page's URL or --allow-origin ${origin}` : "the page's URL or --allow-origin <its origin>";
    return (
      `${this.url}: ${this.failedOpens} attempts failed before the connection opened (firstConnectAttempts). ` +
      `If the hub runs, it likely refuses this page (HTTP 403: its operator sets --public-url to ${page}); its log says why.`
    );
  }

  /** Everything stops: timers, listeners, waiting publishes and requests, iterators. */
  private shutdown(error: ClosedError): void {
    this.stateValue = "closed";
    clearTimeout(this.retryTimer);
    clearTimeout(this.refreshTimer);
    this.retryTimer = undefined;
    this.doc?.removeEventListener("visibilitychange", this.onVisibility);
    this.win?.removeEventListener("online", this.onOnline);
    for (const item of this.queue) {
      item.done = true;
      item.reject(error);
    }
    this.queue = [];
    for (const waiter of this.waiters) waiter.reject(error);
    this.waiters.clear();
    for (const sub of this.subs.values()) sub.end(error);
  }

  /** While waiting to reconnect: tries now (the page came back, the network is online). */
  retryNow(): void {
    if (this.stateValue !== "disconnected" || this.retryTimer === undefined) return;
    clearTimeout(this.retryTimer);
    void this.open();
  }

  /** Closes for good (code 1000): no reconnect; waiting publishes and requests fail with `closed`. */
  close(): void {
    if (this.stateValue === "closed" || this.stateValue === "idle") {
      this.stateValue = "closed";
      return;
    }
    const ws = this.ws;
    this.stateValue = "closed";
    if (ws) {
      this.detach(ws, 1000, "closed by the client");
      this.ws = null;
      this.dropped(1000, "closed by the client", null);
    } else {
      this.dropped(1000, "closed by the client", null);
    }
  }

  // ---- liveness and background mode ---------------------------------------

  /**
   * Checks the connection now (as the periodic ping does): sends a ping, and
   * if no pong comes within `timeout` ms (default: `pongTimeout`, or
   * `backgroundPongTimeout` while the page is hidden) the connection counts as
   * dead and the client reconnects. A ping already waiting for its pong is
   * replaced. Does nothing unless connected.
   */
  ping(timeout?: number): void {
    const ws = this.ws;
    if (this.stateValue !== "connected" || !ws) return;
    if (this.pongTimer !== undefined) {
      if (timeout === undefined) return; // one ping at a time
      clearTimeout(this.pongTimer);
    }
    const budget = timeout ?? (this.background ? this.opts.backgroundPongTimeout : this.opts.pongTimeout);
    const timer = setTimeout(() => {
      if (this.pongTimer === timer) this.pongTimer = undefined;
      this.abandon(ws, "no pong");
    }, budget);
    this.pongTimer = timer;
    this.stats.pings += 1;
    this.request({ op: "ping" }, ws).then(
      () => {
        this.stats.pongs += 1;
        if (this.pongTimer === timer) {
          clearTimeout(timer);
          this.pongTimer = undefined;
        }
      },
      () => {},
    );
  }

  private visibilityChanged(): void {
    const hidden = this.doc?.visibilityState === "hidden";
    this.background = hidden;
    if (hidden) return;
    if (this.stateValue === "disconnected") {
      this.retryNow();
    } else if (this.stateValue === "connected") {
      // Timers slept with the page: check the connection now, on the normal budget.
      clearTimeout(this.pongTimer);
      this.pongTimer = undefined;
      this.ping();
    }
  }

  /** Whether liveness is judged on the relaxed budget (the page is hidden). */
  get inBackground(): boolean {
    return this.background;
  }

  // ---- tokens -------------------------------------------------------------

  private setExpiry(expires: number | undefined): void {
    clearTimeout(this.refreshTimer);
    this.expiresMs = expires === undefined ? null : expires * 1000;
    if (this.expiresMs === null || !this.getToken) return;
    const left = this.expiresMs - Date.now();
    const delay = Math.max(0, left - Math.min(this.opts.refreshMargin, left / 2));
    this.refreshTimer = setTimeout(() => void this.refreshToken().catch(() => {}), delay);
  }

  /**
   * Gets a new token from `getToken` and sends it to the hub (`refresh`).
   * Called by itself before the token expires; calling it while a refresh is
   * in flight returns that one. On failure an `error` event is emitted and
   * it is tried again with backoff until the token expires (then the hub
   * closes with 4002 and the client reconnects with a fresh token).
   */
  refreshToken(): Promise<void> {
    if (this.refreshing) return this.refreshing;
    if (!this.getToken) return Promise.reject(new DuplexError("token", "no getToken option to refresh with"));
    const run = (async () => {
      const ws = this.ws;
      this.tokenStale = true;
      const token = await this.fetchToken();
      if (this.stateValue !== "connected" || this.ws !== ws || !ws) return; // the next connection uses it
      if (token === null) throw new TokenError("getToken returned no token to refresh with", null);
      const reply = await this.request({ op: "refresh", token }, ws);
        this.refreshAttempt = 0;
      this.setExpiry(typeof reply.expires === "number" ? reply.expires : undefined);
    })();
    this.refreshing = run;
    run.then(
      () => {
        this.refreshing = null;
      },
      (error: Error) => {
        this.refreshing = null;
        if (this.stateValue === "closed") return;
        this.fail(error instanceof DuplexError ? error : new TokenError("refresh failed", error));
        this.scheduleRefreshRetry();
      },
    );
    return run;
  }

  private scheduleRefreshRetry(): void {
    if (this.stateValue !== "connected") return;
    clearTimeout(this.refreshTimer);
    const delay = backoffDelay(this.refreshAttempt++, this.opts.backoffBase, this.opts.backoffCap, this.opts.random);
    if (this.expiresMs !== null && Date.now() + delay > this.expiresMs) return; // the hub closes with 4002 first
    this.refreshTimer = setTimeout(() => void this.refreshToken().catch(() => {}), delay);
  }

  // ---- sending ------------------------------------------------------------

  /**
   * Sends a command of the recovery machine; a `subscribe` carries a
   * subscription token: the one given to {@link subscribe} (once), else
   * what `getSubscriptionToken` answers (sent on the same socket, or not at
   * all: a new connection resubscribes anyway). Without one the hub refuses
   * a private channel, and the subscription reports it.
   */
  private sendFromMachine(command: Command): void {
    const channel = command.channel;
    if (command.op !== "subscribe" || typeof channel !== "string") {
      this.send(command);
      return;
    }
    const given = this.givenTokens.get(channel);
    if (given !== undefined) {
      this.givenTokens.delete(channel);
      command.token = given;
      this.send(command);
      return;
    }
    const get = this.getSubscriptionToken;
    if (!get) {
      this.send(command);
      return;
    }
    const ws = this.ws;
    Promise.resolve()
      .then(() => get(channel))
      .then(
        (token) => {
          if (token) command.token = token;
          this.send(command, ws);
        },
        () => this.send(command, ws),
      );
  }

  private send(command: Command, ws: WebSocketLike | null = this.ws): boolean {
    if (!ws || ws !== this.ws || ws.readyState !== OPEN) return false;
    ws.send(this.wire.encodeCommand(command));
    return true;
  }

  /** Sends `command` with a fresh id on `ws`; resolves with the reply, rejects with a HubError or ClosedError. */
  private request(command: Command, ws: WebSocketLike | null = this.ws): Promise<ServerMessage> {
    return new Promise((resolve, reject) => {
      const id = this.machine.nextId();
      command.id = id;
      this.pending.set(id, { resolve, reject });
      if (!this.send(command, ws)) {
        this.pending.delete(id);
        reject(new ClosedError(1006, "not connected"));
      }
    });
  }

  /**
   * Publishes `data` (a JSON value, or bytes) to `channel`. Resolves once the
   * hub acknowledged it. While disconnected it waits in the queue (refused
   * with `queue_full` beyond `queueLimit`); after a drop it is sent again with
   * the same idempotency key, so it is delivered once. `signal` aborting
   * takes it out of the queue; one already sent may still be delivered.
   */
  publish(channel: string, data: unknown, options: { signal?: AbortSignal } = {}): Promise<PublishResult> {
    const { signal } = options;
    if (signal?.aborted) return Promise.reject(abortReason(signal));
    if (this.stateValue === "closed") return Promise.reject(new ClosedError(1000, "the client is closed"));
    if (this.queued >= this.opts.queueLimit) {
      return Promise.reject(new DuplexError("queue_full", `${this.opts.queueLimit} publishes are waiting already (queueLimit)`));
    }
    return new Promise((resolve, reject) => {
      const abort = () => {
        if (item.done) return;
        item.done = true;
        this.queue = this.queue.filter((q) => q !== item);
        reject(abortReason(signal as AbortSignal));
      };
      const item: QueuedPublish = {
        channel,
        data,
        key: `${this.keyPrefix}-${++this.keySeq}`,
        seq: this.keySeq,
        done: false,
        sentOn: null,
        resolve: (result) => {
          signal?.removeEventListener("abort", abort);
          resolve(result);
        },
        reject: (error) => {
          signal?.removeEventListener("abort", abort);
          reject(error);
        },
      };
      signal?.addEventListener("abort", abort, { once: true });
      if (this.stateValue === "connected") this.sendPublish(item);
      else this.queue.push(item);
    });
  }

  private sendPublish(item: QueuedPublish): void {
    if (item.done) return;
    const id = this.machine.nextId();
    const command: Command = { op: "publish", id, channel: item.channel, data: item.data, key: item.key };
    this.pending.set(id, {
      publish: item,
      resolve: (reply) => {
        if (item.done) return;
        item.done = true;
        this.stats.published += 1;
        if (reply.duplicate === true) this.stats.duplicatePublishes += 1;
        item.resolve({
          offset: Number(reply.offset),
          epoch: typeof reply.epoch === "string" ? reply.epoch : undefined,
          duplicate: reply.duplicate === true,
        });
      },
      reject: (error) => {
        if (item.done) return;
        item.done = true;
        item.reject(error);
      },
    });
    item.sentOn = this.ws;
    if (!this.send(command)) {
      this.pending.delete(id);
      item.sentOn = null;
      this.queue.push(item);
    }
  }

  /** Sends an ephemeral signal ("typing…") to `channel`'s other subscribers; returns false (not sent) while disconnected. */
  signal(channel: string, data: unknown): boolean {
    if (this.stateValue !== "connected") return false;
    return this.send({ op: "signal", channel, data });
  }

  /** Who is in `channel` now (waits for the connection). */
  async presence(channel: string, options: { signal?: AbortSignal } = {}): Promise<PresenceEntry[]> {
    await this.whenConnected(options.signal);
    const reply = await this.request({ op: "presence", channel });
    return Array.isArray(reply.clients) ? (reply.clients as PresenceEntry[]) : [];
  }

  /**
   * Calls `method` of the application's backend through the hub (its `rpc`
   * hook, docs/hooks.md) with `data` (a JSON value) and resolves with the
   * backend's data. Waits for the connection; rejects with a
   * {@link HubError}: `rpc_error` (the backend's error, its message),
   * `backend_unavailable` (the backend did not answer in time; try again
   * later), `bad_request` (no backend handles the method); or a
   * {@link ClosedError} when the connection drops first (an rpc is not sent
   * again: the backend may have run it).
   */
  async rpc(method: string, data: unknown = null, options: { signal?: AbortSignal } = {}): Promise<unknown> {
    if (!validChannel(method)) {
      throw new ProtocolError("bad_request", `invalid method ${JSON.stringify(method)}: the rules of a channel name apply`);
    }
    await this.whenConnected(options.signal);
    const reply = await this.request({ op: "rpc", method, data });
    return reply.data ?? null;
  }

  // ---- channels -----------------------------------------------------------

  /**
   * Subscribes to `channel`, now and after every reconnect (then with
   * `since`, so the hub replays what was missed). Returns a
   * {@link Subscription}: an EventTarget (`subscribed`, `message`, `gap`,
   * `error`, `unsubscribed`, `join`, `leave`, `signal`) and an async
   * iterator of {@link Message}s. Throws `bad_request` on an invalid name
   * and `already_subscribed` when `channel` has a subscription already.
   */
  subscribe(channel: string, options: SubscribeOptions = {}): Subscription {
    if (this.subs.has(channel)) {
      throw new DuplexError("already_subscribed", `${channel} has a subscription already: unsubscribe it first`);
    }
    if (options.token !== undefined) this.givenTokens.set(channel, options.token);
    this.machine.subscribe(channel, { recent: options.recent ?? 0, since: options.since ?? null });
    const sub = new Subscription(this, channel, options.bufferLimit ?? 10000);
    this.subs.set(channel, sub);
    if (options.signal) {
      if (options.signal.aborted) sub.unsubscribe();
      else options.signal.addEventListener("abort", () => sub.unsubscribe(), { once: true });
    }
    this.flush();
    return sub;
  }

  /** @internal Called by {@link Subscription.unsubscribe}. */
  dropSubscription(sub: Subscription): void {
    if (this.subs.get(sub.channel) !== sub) return;
    this.subs.delete(sub.channel);
    this.machine.unsubscribe(sub.channel);
    this.flush();
  }

  /** The channels subscribed (or to be, after a reconnect), in name order. */
  channels(): string[] {
    return this.machine.channels();
  }

  private flush(): void {
    for (const command of this.machine.takeTransmit()) this.sendFromMachine(command);
  }

  // ---- receiving ----------------------------------------------------------

  private receive(raw: unknown): void {
    let msg: ServerMessage;
    try {
      msg = this.wire.decodeServer(raw as string | ArrayBuffer);
    } catch (error) {
      this.fail(error as DuplexError);
      return;
    }
    const id = typeof msg.id === "number" ? msg.id : null;
    const pending = id === null ? undefined : this.pending.get(id);
    if (pending) {
      this.pending.delete(id as number);
      if (msg.op === "error") {
        pending.reject(new HubError(String(msg.code), String(msg.message ?? ""), typeof msg.channel === "string" ? msg.channel : undefined));
      } else {
        pending.resolve(msg);
      }
      return;
    }
    for (const event of this.machine.handle(msg)) this.event(event);
    this.flush();
  }

  private event(event: MachineEvent): void {
    switch (event.type) {
      case "subscribed": {
        const r = event.reply;
        if (!this.subs.has(event.channel) && typeof r.id !== "number") {
          // The application's backend subscribed this connection (the hub's
          // server API): a Subscription of its own, announced with a
          // `subscription` event, so its messages have somewhere to go.
          const sub = new Subscription(this, event.channel, 10000);
          this.subs.set(event.channel, sub);
          this.emit("subscription", { channel: event.channel, subscription: sub });
        }
        this.subs.get(event.channel)?.subscribed({
          channel: event.channel,
          epoch: String(r.epoch),
          offset: Number(r.offset),
          recovered: event.recovered,
          resubscribed: event.resubscribed,
        });
        break;
      }
      case "message": {
        const m = event.message;
        const channel = String(m.channel);
        const position = this.machine.position(channel);
        const from = (m.from ?? {}) as { user?: string; client?: string };
        this.subs.get(channel)?.deliver({
          channel,
          offset: Number(m.offset),
          epoch: position ? position.epoch : "",
          time: Number(m.time),
          from: { user: String(from.user ?? ""), client: String(from.client ?? "") },
          data: m.data,
        });
        break;
      }
      case "gap": {
        const gap: GapInfo = { channel: event.channel, epoch: event.epoch, offset: event.offset };
        this.subs.get(event.channel)?.dispatchEvent(new DuplexEvent("gap", gap));
        this.emit("gap", gap);
        break;
      }
      case "subscribe_failed": {
        const error = new HubError(event.code, event.message, event.channel);
        this.subs.get(event.channel)?.refused(error);
        this.fail(error);
        break;
      }
      case "unsubscribed":
        this.subs.get(event.channel)?.dispatchEvent(new DuplexEvent("unsubscribed", { channel: event.channel, reason: event.reason }));
        break;
      case "other":
        this.other(event.message);
        break;
    }
  }

  private other(msg: ServerMessage): void {
    switch (msg.op) {
      case "join":
      case "leave":
      case "signal": {
        const sub = typeof msg.channel === "string" ? this.subs.get(msg.channel) : undefined;
        sub?.dispatchEvent(new DuplexEvent(msg.op, msg));
        break;
      }
      case "error":
        this.fail(new HubError(String(msg.code), String(msg.message ?? "")));
        break;
      default:
        break;
    }
  }
}

/**
 * One channel's subscription: an EventTarget (`subscribed`
 * ({@link SubscribedInfo}), `message` ({@link Message}), `gap`
 * ({@link GapInfo}), `error` ({error}: the hub refused; it is tried again on
 * the next connection), `unsubscribed` ({channel, reason}: the hub revoked
 * it), `join`, `leave`, `signal`) and an async iterator of its
 * {@link Message}s, in offset order, each once. The first iterator starts
 * from the subscription's first message (those that arrived before it was
 * made are kept for it), later ones from the moment they are made; each
 * buffers up to `bufferLimit` messages not yet read (beyond, it fails with
 * `overflow`). Iterators end when the subscription ends.
 */
export class Subscription extends EventTarget {
  /** The channel. */
  readonly channel: string;
  /** Resolves with the first `subscribed` reply; rejects when the hub refuses the first subscribe. */
  readonly ready: Promise<SubscribedInfo>;
  private readonly client: Client;
  private readonly bufferLimit: number;
  private settle: { resolve: (info: SubscribedInfo) => void; reject: (error: Error) => void } | null = null;
  private ended: Error | null | undefined = undefined;
  private readonly iterators = new Set<{ push: (m: Message) => void; end: (error: Error | null) => void }>();
  /** Messages delivered before the first iterator was made (null once one was). */
  private early: Message[] | null = [];
  private earlyOverflow = false;

  /** @internal Made by {@link Client.subscribe}. */
  constructor(client: Client, channel: string, bufferLimit: number) {
    super();
    this.client = client;
    this.channel = channel;
    this.bufferLimit = bufferLimit;
    this.ready = new Promise((resolve, reject) => {
      this.settle = { resolve, reject };
    });
    this.ready.catch(() => {}); // not waiting on it is not an unhandled rejection
  }

  /** Whether the subscription ended ({@link unsubscribe}, or the client closed). */
  get closed(): boolean {
    return this.ended !== undefined;
  }

  /** The last position delivered, to resume from later with `since`. */
  get position(): Position | null {
    return this.client.position(this.channel);
  }

  /** Stops the subscription (the hub is told; its position is forgotten); iterators end. */
  unsubscribe(): void {
    if (this.ended !== undefined) return;
    this.client.dropSubscription(this);
    this.end(null);
  }

  /** Calls `listener(detail)` on each event of `type`; returns a function that stops it. */
  on<T = unknown>(type: string, listener: (detail: T) => void): () => void {
    const wrapped = (event: Event) => listener((event as DuplexEvent<T>).detail);
    this.addEventListener(type, wrapped);
    return () => this.removeEventListener(type, wrapped);
  }

  /** @internal */
  subscribed(info: SubscribedInfo): void {
    this.settle?.resolve(info);
    this.settle = null;
    this.dispatchEvent(new DuplexEvent("subscribed", info));
  }

  /** @internal */
  refused(error: HubError): void {
    this.settle?.reject(error);
    this.settle = null;
    this.dispatchEvent(new DuplexEvent("error", { error }));
  }

  /** @internal */
  deliver(message: Message): void {
    this.dispatchEvent(new DuplexEvent("message", message));
    if (this.early) {
      if (this.early.length < this.bufferLimit) this.early.push(message);
      else this.earlyOverflow = true;
    }
    for (const it of this.iterators) it.push(message);
  }

  /** @internal Ends the iterators: `error` null for a plain end. */
  end(error: Error | null): void {
    if (this.ended !== undefined) return;
    this.ended = error;
    this.settle?.reject(error ?? new DuplexError("closed", "unsubscribed"));
    this.settle = null;
    for (const it of this.iterators) it.end(error);
    this.iterators.clear();
  }

  /** Iterates the messages from now on, until the subscription ends. */
  [Symbol.asyncIterator](): AsyncIterableIterator<Message> {
    // The first iterator gets what arrived since subscribing, too.
    const buffer: Message[] = this.early ?? [];
    let failure: Error | null = this.earlyOverflow
      ? new DuplexError("overflow", `more than ${this.bufferLimit} messages of ${this.channel} arrived before iterating (bufferLimit)`)
      : null;
    this.early = null;
    let done = this.ended !== undefined || failure !== null;
    let wake: (() => void) | null = null;
    const handle = {
      push: (message: Message) => {
        if (buffer.length >= this.bufferLimit) {
          failure = new DuplexError("overflow", `more than ${this.bufferLimit} messages of ${this.channel} are waiting to be read (bufferLimit)`);
          done = true;
          this.iterators.delete(handle);
        } else {
          buffer.push(message);
        }
        wake?.();
      },
      end: (error: Error | null) => {
        failure = error;
        done = true;
        wake?.();
      },
    };
    if (!done) this.iterators.add(handle);
    const iterator: AsyncIterableIterator<Message> = {
      next: async (): Promise<IteratorResult<Message>> => {
        for (;;) {
          if (buffer.length) return { value: buffer.shift() as Message, done: false };
          if (done) {
            if (failure) {
              const error = failure;
              failure = null;
              throw error;
            }
            return { value: undefined, done: true };
          }
          await new Promise<void>((resolve) => {
            wake = resolve;
          });
          wake = null;
        }
      },
      return: async (): Promise<IteratorResult<Message>> => {
        done = true;
        buffer.length = 0;
        this.iterators.delete(handle);
        return { value: undefined, done: true };
      },
      [Symbol.asyncIterator]() {
        return iterator;
      },
    };
    return iterator;
  }
}

