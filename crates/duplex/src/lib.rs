//! # duplex: WebSocket client and server on tokio
//!
//! Puts [`duplex_proto`] on sockets. Being written.
