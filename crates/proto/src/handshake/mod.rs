//! The opening handshake (RFC 6455 §4), without I/O.
//!
//! - [`server`]: parse a client's upgrade request from bytes
//!   ([`server::RequestParser`]), validate it into a [`server::UpgradeRequest`],
//!   then build and write the `101` or the rejection.
//! - [`client`]: build the upgrade request ([`client::ClientHandshake`]), write
//!   it, then feed the server's response back to it for validation.
//! - [`accept_key`]: the `Sec-WebSocket-Accept` value both sides compute.
//!
//! ```
//! use bytes::BytesMut;
//! use duplex_proto::handshake::client::ClientHandshake;
//! use duplex_proto::handshake::server::{RequestParser, accept_response, write_response};
//!
//! // Client: the caller draws the 16 key bytes.
//! let mut client = ClientHandshake::builder("ws://example.com/chat", [7; 16])
//!     .protocols(["chat"])
//!     .build()?;
//! let mut to_server = BytesMut::new();
//! client.write_request(&mut to_server);
//!
//! // Server: bytes may arrive in any pieces.
//! let mut parser = RequestParser::new();
//! let (request, consumed) = parser.feed(&to_server)?.expect("complete");
//! assert_eq!((request.path(), consumed), ("/chat", to_server.len()));
//! let response = accept_response(&request, Some("chat"), None, &Default::default())?;
//! let mut to_client = BytesMut::new();
//! write_response(&response, &mut to_client);
//!
//! // Client: check the answer; bytes after it are the first frames.
//! let (accepted, _consumed) = client.feed(&to_client)?.expect("complete");
//! assert_eq!(accepted.protocol(), Some("chat"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Invariants
//!
//! - Nothing here panics on any input, reads a clock or draws a random
//!   number: the client's 16 key bytes come from the caller.
//! - A header block is read incrementally, in chunks of any size down to one
//!   byte, and the result does not depend on how the bytes were split. It ends
//!   at the first empty line; every line must end in CRLF (a bare LF is
//!   malformed). At most [`Limits::max_header_size`] bytes (the final CRLF
//!   CRLF included) and [`Limits::max_headers`] header lines are accepted, so
//!   memory is bounded whatever the peer sends.
//! - A parser reports how many bytes of the last input it consumed. Bytes after
//!   the header block are never consumed: they belong to the WebSocket
//!   connection.
//! - Header lists (`Connection`, `Upgrade`, `Sec-WebSocket-Protocol`,
//!   `Sec-WebSocket-Extensions`) are comma-separated; repeated header lines are
//!   one list; `Connection` and `Upgrade` tokens compare case-insensitively.
//! - What this module writes, it would itself accept: every request the client
//!   writes passes the server's validation, and every response the server
//!   builds with [`server::accept_response`] passes the client's.

mod accept;
pub mod client;
mod fields;
mod head;
#[cfg(test)]
mod peers;
pub mod server;
#[cfg(test)]
mod tests;
mod wire;

pub use accept::{GUID, accept_key};

/// Bounds on a handshake's header block, for both parsers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Most bytes in the header block, from the first byte of the request or
    /// status line through the empty line that ends it. Default 8 KiB; beyond
    /// it a server answers `431`.
    pub max_header_size: usize,
    /// Most header lines. Default 64; beyond it a server answers `431`.
    pub max_headers: usize,
}

impl Limits {
    /// Default [`Limits::max_header_size`]: 8 KiB.
    pub const DEFAULT_MAX_HEADER_SIZE: usize = 8 * 1024;
    /// Default [`Limits::max_headers`]: 64.
    pub const DEFAULT_MAX_HEADERS: usize = 64;
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_header_size: Self::DEFAULT_MAX_HEADER_SIZE,
            max_headers: Self::DEFAULT_MAX_HEADERS,
        }
    }
}
