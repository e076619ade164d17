//! The client side of the opening handshake (RFC 6455 §4.1).
//!
//! ```text
//! ClientHandshake::builder(uri, key) … build() ─► write_request ─► (send)
//! (receive) ─► feed ─► Accepted { response, protocol, extensions } + leftover bytes
//! ```
//!
//! Invariants: the request is checked in full before a byte is written
//! ([`RequestError`]); the response is accepted only if it completes the
//! handshake that request began ([`ResponseError`] otherwise); bytes after the
//! response's header block are never consumed: they are the server's first
//! frames.
//!
//! [`ResponseParser`] is the bounded response-head reader that
//! [`ClientHandshake::feed`] runs on, for other responses a client reads
//! first (a proxy's answer to `CONNECT`).

mod error;
mod request;
mod response;

pub use error::{RequestError, ResponseError};
pub use request::{ClientHandshake, ClientHandshakeBuilder};
pub use response::{Accepted, ResponseParser};
