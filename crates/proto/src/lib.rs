//! # duplex-proto: the WebSocket protocol without I/O
//!
//! This crate implements RFC 6455 (WebSocket) and RFC 7692 (permessage-deflate)
//! as plain state machines. It opens no socket, reads no clock and draws no
//! random numbers: bytes and calls go in, events and bytes come out, and the
//! caller supplies masking keys and handshake nonces. That makes every behaviour
//! deterministic, testable without a runtime, fuzzable, and usable from any
//! runtime.
//!
//! ## Call discipline
//!
//! 1. **Handshake.** A server feeds request bytes to
//!    [`handshake::server::RequestParser`] until it yields a request, decides,
//!    and writes the response it builds. A client writes the request from
//!    [`handshake::client::ClientHandshake`] and feeds the response bytes back to
//!    it. Bytes after the header block belong to the connection.
//! 2. **Connection.** Build a [`connection::Connection`] for the role with
//!    [`connection::Connection::server`] or
//!    [`connection::Connection::client`], then add the negotiated extensions
//!    ([`connection::Connection::with_deflate`]). A client's masking keys
//!    come from the source it is built with: `client` takes a
//!    [`connection::MaskSource`], a closure the connection keeps for its
//!    lifetime and calls for every frame it queues (control frames, automatic
//!    pongs and close replies included). It must return a fresh, unpredictable
//!    key each time (RFC 6455 §5.3); there is no other way to pass keys in.
//!    Then, in any order:
//!    - put received bytes in with [`connection::Connection::receive`] (or read
//!      straight into [`connection::Connection::read_buf`]), then call
//!      [`connection::Connection::poll_event`] until it returns `Ok(None)`;
//!    - queue messages with `send_*` (a client masks each frame with a key
//!      from its mask source as it is queued; a server does not mask);
//!    - write out what [`connection::Connection::transmit`] holds and
//!      [`bytes::Buf::advance`] it by what was written.
//! 3. **End.** After a protocol error, write out the pending bytes (they end
//!    with the close frame) and close the transport. After
//!    [`connection::State::Closed`], close the transport (a server closes
//!    first, RFC 6455 §7.1.1).
//!
//! Every limit (frame size, message size, fragment count, header size) has a
//! default safe on the open internet and ends the connection with the RFC's
//! close code when exceeded. Nothing in this crate panics on any input.

#![forbid(unsafe_code)]

pub mod close;
pub mod connection;
pub mod deflate;
pub mod error;
pub mod extension;
pub mod frame;
pub mod handshake;
pub mod mask;
pub mod message;
pub mod utf8;

pub use close::{CloseCode, CloseFrame};
pub use error::ProtocolError;

/// Which end of the connection this is. Clients mask their frames; servers don't.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The end that sent the opening handshake request.
    Client,
    /// The end that accepted it.
    Server,
}
