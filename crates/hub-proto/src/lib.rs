//! # duplex-hub-proto: the hub's protocol without I/O
//!
//! This crate implements version 1 of the Duplex hub protocol (`duplex.v1`,
//! specified in `docs/protocol.md`): the messages, their codec over WebSocket
//! text and binary frames, the hub's own rules as machines (a channel's log,
//! its fan-out to a node's subscribers, the recovery decision) and the
//! client's subscribe/recover state machine. It opens no socket, reads no
//! clock and draws no random numbers: epochs, times, client ids and request
//! ids come from the caller (or, for request ids, from a plain counter), so
//! everything here is deterministic, testable without a runtime and
//! fuzzable, and a whole cluster can be simulated in memory
//! (`tests/cluster_sim.rs`).
//!
//! Where each rule lives:
//!
//! | rule | module |
//! |---|---|
//! | messages, their fields and limits | [`message`], [`codec`], [`data`], [`channel`] |
//! | the binary envelope (`duplex.v1.bin`) and choosing an envelope | [`binary`], [`encoding`] |
//! | offsets, epochs, history bounds, idempotency keys | [`log`] |
//! | what a `subscribe` recovers or reports as a gap | [`recovery`] |
//! | skip / deliver / gap per subscriber, joiners, catch-up | [`fanout`] |
//! | a connection's phase, permissions, limits, refusals and close codes | [`session`] |
//! | command and data rates, strikes | [`rate`] |
//! | proxy hooks: request bodies, answers, failure policy | [`hooks`] |
//! | the client's resubscribe, dedup and gap reporting | [`client`] |
//! | close codes | [`close`] |
//! | lifecycle events (webhooks): online/offline with grace, occupancy, a dead node's connections, signatures, retries | [`events`] |
//!
//! ## Call discipline
//!
//! **Hub.** For every text or binary WebSocket message received:
//!
//! 0. The connection's envelope is the [`Encoding`] its subprotocol names
//!    ([`Encoding::negotiate`]); the functions below are the JSON envelope's,
//!    and [`Encoding`]'s methods of the same names pick the envelope. A
//!    publish's `message` push is encoded at most once per envelope.
//! 1. [`decode_command`] (or [`decode_binary_command`], which shares the
//!    frame's bytes instead of copying binary data). On `Err(e)`, send
//!    [`encode_server`]`(&e.to_reply())` and keep the connection: every
//!    [`DecodeError`] is recoverable and carries the command's `id` when it could
//!    be read.
//! 2. On `Ok(request)`, act on [`Request::command`]. A broker that keeps a
//!    channel's history itself drives a [`log::ChannelLog`]: `append` for a
//!    publish (offset, duplicate key), `subscribe` for what to answer and
//!    replay (with [`plan_recovery`]). A node that receives a channel's
//!    messages from elsewhere (pub/sub) drives a [`fanout::Fanout`] per
//!    channel: `join` before the history read, `release` after it,
//!    `message` / `event` / `signal` as they arrive, `catch_up` after its
//!    link comes back; it queues each push the fan-out hands it, in order.
//! 3. Encode each reply or push with [`encode_server`]. A `message` push is
//!    encoded once per publish ([`encode_publication`]) and the same bytes go to
//!    every subscriber: JSON data is written as the raw text it arrived as,
//!    never parsed into a tree or re-serialised.
//!
//! **Client.** Encode commands with [`encode_command`] and decode what the hub
//! sends with [`decode_server`] (or the same methods of the [`Encoding`] the
//! connection offered; [`Subscriptions`] deals in values, whatever the
//! envelope). To keep subscriptions across reconnections
//! without losing or repeating messages, drive a [`Subscriptions`]:
//!
//! 1. [`Subscriptions::subscribe`] / [`Subscriptions::unsubscribe`] at any time;
//! 2. after the hub's `connected` reply, send every request
//!    [`Subscriptions::on_connected`] returns;
//! 3. pass every decoded [`ServerMessage`] to [`Subscriptions::handle`] and act
//!    on the [`Event`]s it returns (messages the state machine does not own come
//!    back as [`Event::Other`]);
//! 4. after each of the calls above, send what [`Subscriptions::poll_transmit`]
//!    yields until it returns `None`;
//! 5. when the connection ends, call [`Subscriptions::on_disconnected`], then
//!    reconnect (with backoff and jitter) and go back to 2.
//!
//! Take ids for your own commands from [`Subscriptions::next_id`] so that they
//! never collide with the state machine's.
//!
//! ```
//! use duplex_hub_proto::{
//!     Command, ErrorCode, Event, Frame, Subscriptions, decode_command, decode_server,
//!     encode_command, encode_server,
//! };
//!
//! // The hub: a bad command is an error reply, and the connection goes on.
//! let error = decode_command(Frame::Text(r#"{"op":"subscribe","id":4,"channel":"a b"}"#))
//!     .unwrap_err();
//! assert_eq!((error.id, error.code), (Some(4), ErrorCode::BadRequest));
//! let reply = encode_server(&error.to_reply());
//! assert!(reply.is_text());
//!
//! // The client: subscribe, connect, feed what the hub sends.
//! let mut subs = Subscriptions::new();
//! subs.subscribe("chat:lobby").unwrap();
//! let requests = subs.on_connected();
//! let frame = encode_command(&requests[0]);
//! let request = decode_command(frame.as_frame()).unwrap();
//! assert!(matches!(request.command, Command::Subscribe { since: None, .. }));
//! let subscribed = r#"{"op":"subscribed","id":1,"channel":"chat:lobby","epoch":"k3x9","offset":44,"recovered":false}"#;
//! let events = subs.handle(decode_server(Frame::Text(subscribed)).unwrap());
//! assert_eq!(
//!     events,
//!     [Event::Subscribed { channel: "chat:lobby".into(), recovered: false }]
//! );
//! let message = r#"{"op":"message","channel":"chat:lobby","offset":45,"time":1795000001000,"from":{"user":"bob","client":"c01"},"data":{"text":"hi"}}"#;
//! let events = subs.handle(decode_server(Frame::Text(message)).unwrap());
//! let [Event::Message(publication)] = &events[..] else { panic!("{events:?}") };
//! assert_eq!(publication.data.as_json().unwrap().as_str(), r#"{"text":"hi"}"#);
//! ```
//!
//! ## Invariants
//!
//! - Decoding never panics, whatever the input: malformed input is a
//!   [`DecodeError`] naming the problem.
//! - Whatever decodes, encoded again, decodes to an equal value
//!   ([`decode_command`] ∘ [`encode_command`] and [`decode_server`] ∘
//!   [`encode_server`] are the identity on decoded values).
//! - Data published as JSON is delivered as the same JSON text; data published
//!   as bytes is delivered as the same bytes in a binary frame.
//! - [`Subscriptions`] hands the application each channel's messages at most
//!   once and in offset order, and reports a [`Event::Gap`] before the first
//!   message that follows any message it could not deliver.

#![forbid(unsafe_code)]

pub mod binary;
pub mod channel;
pub mod client;
pub mod close;
pub mod codec;
pub mod data;
mod depth;
pub mod encoding;
pub mod events;
pub mod fanout;
mod fields;
pub mod hooks;
mod json;
pub mod log;
pub mod message;
pub mod rate;
pub mod recovery;
pub mod revocation;
pub mod session;
pub mod signature;
pub mod sse;
pub mod subscription_token;

pub use channel::{NameError, is_hub_channel, namespace, validate_channel};
pub use client::{Event, SubscribeOptions, Subscriptions};
pub use codec::{
    DecodeError, Encoded, Frame, decode_binary_command, decode_command, decode_server,
    encode_command, encode_publication, encode_server,
};
pub use data::{Data, JsonText};
pub use encoding::{Encoding, SUBPROTOCOL_BINARY};
pub use message::{ClientInfo, Command, ErrorCode, Publication, Request, ServerMessage, Since};
pub use recovery::{HistoryBounds, RecoveryPlan, plan_recovery};

/// The WebSocket subprotocol a client offers and the hub answers with (the
/// JSON envelope; [`SUBPROTOCOL_BINARY`] names the binary one, see
/// [`Encoding`]).
pub const SUBPROTOCOL: &str = "duplex.v1";

/// The protocol version this crate implements (sent in `connected`).
pub const VERSION: u32 = 1;

/// The largest idempotency `key` of a `publish`, in bytes.
pub const MAX_KEY_LEN: usize = 64;

/// The largest integer the protocol carries, 2^53 − 1 (JavaScript's
/// `Number.MAX_SAFE_INTEGER`): every id, offset, time and count is at most
/// this, so any JSON parser holds it exactly. The decoders refuse a larger
/// one as a `bad_request` naming the field.
pub const MAX_INTEGER: u64 = (1 << 53) - 1;

/// The deepest nesting of arrays and objects accepted in JSON `data` (a
/// scalar is depth 0, `[]` and `{}` depth 1, `[[]]` depth 2). Deeper data is
/// a `bad_request`: subscribers' parsers have their own limits (serde_json
/// stops at 128, browsers overflow their stack somewhere in the thousands),
/// and the hub relays only what they can all read.
pub const MAX_DATA_DEPTH: usize = 64;
