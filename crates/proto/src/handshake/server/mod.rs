//! The server side of the opening handshake (RFC 6455 §4.2).
//!
//! ```text
//! bytes ─► RequestParser::feed ─► UpgradeRequest ─► accept_response ─► write_response
//!                  │                     │ (application decides)
//!                  └──── HandshakeError ─┴─► to_response ─► write_response, close
//! ```
//!
//! Choices where RFC 6455 leaves room, each with the status it answers:
//!
//! | request | status |
//! |---|---|
//! | method other than `GET` | 405, `Allow: GET` |
//! | no `Upgrade: websocket` (a plain `GET`, or another protocol) | 426, `Upgrade: websocket`, `Sec-WebSocket-Version: 13` |
//! | `Sec-WebSocket-Version` missing, repeated or not `13` | 426, `Sec-WebSocket-Version: 13` |
//! | header block over the size or line limit | 431 |
//! | any other deviation from RFC 6455 §4.2.1 | 400 |
//! | refused by the application ([`HandshakeError::Forbidden`]) | 403 |
//!
//! Invariants: a request reaches the application only as a validated
//! [`UpgradeRequest`]; every refusal is a [`HandshakeError`] whose
//! [`HandshakeError::to_response`] is ready to write; the parser never
//! consumes bytes after the header block.

mod error;
mod parser;
mod request;
mod response;

pub use error::HandshakeError;
pub use parser::RequestParser;
pub use request::UpgradeRequest;
pub use response::{AcceptError, ResponseBody, accept_response, reject_response, write_response};
