//! Errors of the tokio layer.
//!
//! Invariant: each variant says which side broke what, so a caller can tell a
//! protocol violation from a transport failure, a refused handshake or a timeout.

use duplex_proto::ProtocolError;
use duplex_proto::connection::SendError;
use duplex_proto::deflate::NegotiationError;
use duplex_proto::handshake::server::HandshakeError;

/// An error of a WebSocket connection.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The transport failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The peer broke the protocol; a close frame with the matching code was sent.
    #[error("protocol error: {0}")]
    Protocol(#[from] ProtocolError),
    /// The call is not allowed in the connection's state (for example sending
    /// after the close frame).
    #[error("cannot send: {0}")]
    Send(#[from] SendError),
    /// The client's upgrade request was refused with an HTTP error.
    #[error("handshake refused: {0}")]
    Handshake(#[from] HandshakeError),
    /// The server's handshake response was not acceptable.
    #[error("handshake failed: {0}")]
    ClientHandshake(String),
    /// The server answered with a non-101 status.
    #[error("server answered {}", .0.status())]
    HttpStatus(Box<http::Response<Option<Vec<u8>>>>),
    /// The permessage-deflate answer was not acceptable.
    #[error("extension negotiation failed: {0}")]
    Negotiation(#[from] NegotiationError),
    /// The application refused the upgrade request with this status.
    #[error("upgrade refused with {0}")]
    Refused(http::StatusCode),
    /// The opening handshake did not finish in time.
    #[error("handshake timed out")]
    HandshakeTimeout,
    /// The peer did not answer a keepalive ping in time.
    #[error("peer did not answer a keepalive ping in time")]
    KeepaliveTimeout,
    /// The peer sent more than `limit` pings while reading nothing of what we
    /// wrote (it does not read our pongs): a close frame with 1008 was queued
    /// and the connection ended without waiting for the peer.
    #[error("peer sent more than {limit} pings without reading our answers")]
    PingFlood {
        /// [`crate::websocket::MAX_PINGS_UNREAD`].
        limit: u32,
    },
    /// The transport closed without a close handshake (close code 1006).
    #[error("connection closed without a close handshake")]
    AbnormalClosure,
    /// The URL is not a `ws://` or `wss://` URL this crate can connect to.
    #[error("invalid URL: {0}")]
    Url(String),
    /// TLS configuration or handshake failure.
    #[error("TLS: {0}")]
    Tls(String),
    /// A proxy refused or failed the tunnel.
    #[error("proxy: {0}")]
    Proxy(String),
}
