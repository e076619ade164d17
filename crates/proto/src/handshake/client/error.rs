//! Why a client cannot build its request, or refuses the server's response.
//!
//! Invariant: [`RequestError`] is about the caller's own input and is returned
//! before any byte is written; [`ResponseError`] is about the server's answer
//! and means the connection must not be used for WebSocket frames.

use http::header::HeaderName;
use http::{Response, StatusCode, Version};

use crate::extension::ExtensionParseError;

/// The request cannot be built from what the caller gave.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// The URI is not `ws://` or `wss://` with a host, nor a path with a host
    /// given separately; or it has user information or a fragment.
    #[error("invalid WebSocket URI: {0}")]
    InvalidUri(&'static str),
    /// The host given for a path-only URI is not a valid authority.
    #[error("invalid host")]
    InvalidHost,
    /// The origin is not a valid header value.
    #[error("invalid origin")]
    InvalidOrigin,
    /// A subprotocol is not a token, or is offered twice.
    #[error("subprotocol {0:?} is not a token or is repeated")]
    InvalidProtocol(String),
    /// The extensions header value does not follow the grammar.
    #[error(transparent)]
    InvalidExtensions(#[from] ExtensionParseError),
    /// An extension offer whose name or parameters are not tokens.
    #[error("extension offer {0:?} does not follow the extension grammar")]
    InvalidExtensionOffer(String),
    /// An extra header that the handshake writes itself, or that would give
    /// the request a body.
    #[error("header {0} may not be set as an extra header")]
    ReservedHeader(HeaderName),
}

/// The server's response does not complete the handshake.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ResponseError {
    /// The header block is longer than the limit.
    #[error("response header block exceeds {limit} bytes")]
    HeadersTooLarge {
        /// The configured limit in bytes.
        limit: usize,
    },
    /// More header lines than the limit.
    #[error("response has more than {limit} header lines")]
    TooManyHeaders {
        /// The configured limit.
        limit: usize,
    },
    /// Not a parseable HTTP/1.x response.
    #[error("malformed response: {0}")]
    Malformed(&'static str),
    /// The server answered something other than `101`, such as 401, 403 or a
    /// redirect.
    #[error("server answered {status} instead of 101 Switching Protocols")]
    Rejected {
        /// The response's status.
        status: StatusCode,
        /// The response's head. Its body, if any, is not read.
        response: Box<Response<()>>,
        /// How many bytes of the last input the head took; the body, if any,
        /// starts there.
        consumed: usize,
    },
    /// A `101` in a version other than HTTP/1.1.
    #[error("101 response in {0:?}")]
    HttpVersion(Version),
    /// `Upgrade` does not list `websocket`.
    #[error("Upgrade header does not list \"websocket\"")]
    MissingUpgrade,
    /// `Connection` does not list `upgrade`.
    #[error("Connection header does not list \"upgrade\"")]
    MissingConnectionUpgrade,
    /// `Sec-WebSocket-Accept` is missing, repeated or does not match the key.
    #[error("Sec-WebSocket-Accept is missing or does not match the key")]
    InvalidAccept,
    /// `Sec-WebSocket-Protocol` is not exactly one of the offered
    /// subprotocols; holds the header's text.
    #[error("server chose subprotocol {0:?}, which was not offered")]
    UnexpectedProtocol(String),
    /// `Sec-WebSocket-Extensions` does not follow the grammar.
    #[error(transparent)]
    InvalidExtensions(#[from] ExtensionParseError),
    /// The server accepted an extension that was not offered.
    #[error("server accepted extension {0:?}, which was not offered")]
    UnexpectedExtension(String),
    /// Bytes were fed after the response was already accepted or refused.
    #[error("the handshake is already over")]
    Finished,
}
