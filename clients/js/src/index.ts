/**
 * duplex-client: the client SDK of the Duplex hub (protocol duplex.v1,
 * `docs/protocol.md`), for browsers and Node, with no runtime dependency.
 *
 * `Client` keeps one WebSocket up (backoff with full jitter, a stability
 * window, token refresh, a background mode) and its `Subscription`s survive
 * drops through the pure recovery machine `Subscriptions`, which the shared
 * vectors of `crates/hub-proto/tests/vectors/` hold to the same contract as
 * the Rust client.
 */

export { backoffDelay } from "./backoff.js";
export {
  Client,
  type ClientCounters,
  type ClientOptions,
  type ClientState,
  type ConnectedInfo,
  type DisconnectedInfo,
  DuplexEvent,
  type GapInfo,
  type GetToken,
  type Message,
  type PresenceEntry,
  type PublishResult,
  type SubscribedInfo,
  type SubscribeOptions,
  Subscription,
  type TransportName,
  type WebSocketConstructor,
  type WebSocketLike,
} from "./client.js";
export { binaryEnvelope, decodeBinaryServer, encodeBinaryCommand } from "./binary.js";
export {
  type Bytes,
  type Command,
  decodeServer,
  encodeCommand,
  type Envelope,
  isBytes,
  jsonEnvelope,
  ProtocolError,
  type ServerMessage,
  validChannel,
} from "./codec.js";
export { type FetchLike } from "./http.js";
export { ClosedError, DuplexError, HubError, TokenError } from "./errors.js";
export { type MachineCounters, type MachineEvent, type Position, Subscriptions } from "./subscriptions.js";
