//! # duplex: WebSocket client and server on tokio
//!
//! Puts the sans-I/O protocol of [`duplex_proto`] on sockets. A [`WebSocket`]
//! is a `Stream<Item = Result<Message, Error>>` and a `Sink<Message>` over any
//! `AsyncRead + AsyncWrite + Unpin` transport (plain TCP, TLS, a test pipe);
//! split it with `futures_util::StreamExt::split` to give the reading and the
//! writing half to two tasks.
//!
//! - Server: [`accept`], [`accept_with`] (decide on each request).
//! - Client: [`connect`], [`connect_with`]; [`ReconnectingWebSocket`]
//!   reconnects by itself with backoff and jitter.
//! - HTTP/2 (RFC 8441, feature `http2`, on by default): [`http2::Server`]
//!   serves WebSockets on HTTP/2 connections, [`http2::H2Connection`] and
//!   [`http2::Pool`] open them; the same [`WebSocket`] runs on each stream.
//!
//! The types of [`duplex_proto`] that this crate's API takes or returns are
//! re-exported where they are used ([`UpgradeRequest`], [`error`]'s causes,
//! [`config::DeflateConfig`], [`websocket::Connection`] …), and the whole
//! crate as [`proto`], so that a user of `duplex` needs no direct dependency
//! on `duplex-proto`.
//!
//! Invariants: every wait is bounded by a configurable timeout (handshake,
//! keepalive pong, close), every buffer by a configurable size, and every
//! protocol violation ends the connection with the RFC's close code.

pub mod client;
pub mod config;
pub mod error;
#[cfg(feature = "http2")]
pub mod http2;
pub mod listener;
pub mod park;
pub mod proxy;
pub mod reconnect;
pub mod server;
mod shared;
pub mod shutdown;
mod stamp;
pub mod tls;
pub mod transport;
#[cfg(feature = "hyper")]
pub mod upgrade;
pub mod websocket;

/// The sans-I/O protocol this crate runs on (`duplex-proto`), for the types
/// reached through this crate's API: the [`Connection`](proto::connection::Connection)'s
/// events and states, frame and handshake details.
pub use duplex_proto as proto;

pub use client::{ClientRequest, client_handshake, connect, connect_with};
pub use config::Config;
pub use duplex_proto::close::{CloseCode, CloseFrame};
pub use duplex_proto::connection::PreparedMessage;
pub use duplex_proto::message::{Message, MessageKind, Utf8Bytes};
pub use error::{ClientHandshakeError, Error, ProxyError, TlsError, UrlError};
pub use listener::Listener;
pub use proxy::Proxy;
pub use reconnect::{ReadyState, ReconnectingWebSocket};
pub use server::{
    Accept, Incoming, Reject, UpgradeRequest, accept, accept_incoming, accept_with, read_request,
};
pub use shutdown::{Shutdown, ShutdownWatch};
pub use websocket::{CloseInfo, WebSocket};
