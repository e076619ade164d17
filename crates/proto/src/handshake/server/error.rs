//! Why a server refuses an upgrade request, and the response that says so.
//!
//! Invariants: every variant maps to one status by
//! [`HandshakeError::status`], one of 400, 403, 405, 426 or 431; and
//! [`HandshakeError::to_response`] always builds a response a client can read
//! (short text body, `Content-Length`, `Connection: close`), with `Allow: GET`
//! on 405 and `Upgrade: websocket` and `Sec-WebSocket-Version: 13` on 426.

use http::header::{self, HeaderValue};
use http::{Method, Response, StatusCode, Version};

use super::response::reject_response;
use crate::extension::ExtensionParseError;

/// An upgrade request the server refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The header block is longer than the limit (431).
    #[error("request header block exceeds {limit} bytes")]
    HeadersTooLarge {
        /// The configured limit in bytes.
        limit: usize,
    },
    /// More header lines than the limit (431).
    #[error("request has more than {limit} header lines")]
    TooManyHeaders {
        /// The configured limit.
        limit: usize,
    },
    /// Not a parseable HTTP/1.x request (400).
    #[error("malformed request: {0}")]
    Malformed(&'static str),
    /// The method is not `GET` (405, with `Allow: GET`).
    #[error("method {0} is not allowed; use GET")]
    MethodNotAllowed(Method),
    /// HTTP/1.0 or older (400).
    #[error("{0:?} is not supported; use HTTP/1.1")]
    HttpVersion(Version),
    /// The request target is neither a path nor an absolute http(s) or ws(s)
    /// URI (400).
    #[error("request target must be a path or an absolute URI")]
    InvalidTarget,
    /// `Host` is missing, repeated or not a valid authority (400).
    #[error("missing or invalid Host header")]
    InvalidHost,
    /// The request announces a body with `Content-Length` or
    /// `Transfer-Encoding` (400): its bytes would be read as frames.
    #[error("an upgrade request must not have a body")]
    UnexpectedBody,
    /// `Upgrade` does not list `websocket`: a plain HTTP request, or an
    /// upgrade to another protocol (426).
    #[error("this resource requires a WebSocket upgrade")]
    NotWebSocket,
    /// An HTTP/2 extended `CONNECT` whose `:protocol` is missing or not
    /// `websocket` (400); holds the `:protocol` sent.
    #[error("extended CONNECT :protocol must be \"websocket\", not {0:?}")]
    ExtendedConnectProtocol(Option<String>),
    /// `Upgrade: websocket` without `Connection: upgrade` (400).
    #[error("Connection header does not list \"upgrade\"")]
    MissingConnectionUpgrade,
    /// `Sec-WebSocket-Version` is missing, repeated or not `13` (426, with
    /// `Sec-WebSocket-Version: 13`).
    #[error("unsupported WebSocket version; this server speaks version 13")]
    UnsupportedVersion,
    /// `Sec-WebSocket-Key` is missing, repeated, or not the base64 of 16 bytes
    /// (400).
    #[error("Sec-WebSocket-Key must be the base64 encoding of 16 bytes")]
    InvalidKey,
    /// `Sec-WebSocket-Protocol` holds an element that is not a token, or
    /// repeats one (400).
    #[error("Sec-WebSocket-Protocol must be a list of distinct tokens")]
    InvalidProtocols,
    /// `Sec-WebSocket-Extensions` does not follow the grammar (400).
    #[error(transparent)]
    InvalidExtensions(#[from] ExtensionParseError),
    /// `Origin` is repeated or not visible ASCII (400).
    #[error("invalid Origin header")]
    InvalidOrigin,
    /// The application refuses this client, for example its origin or
    /// credentials (403). Never produced by this crate; the text is sent as
    /// the response body.
    #[error("{0}")]
    Forbidden(String),
}

impl HandshakeError {
    /// The HTTP status that answers this error.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::HeadersTooLarge { .. } | Self::TooManyHeaders { .. } => {
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
            }
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::NotWebSocket | Self::UnsupportedVersion => StatusCode::UPGRADE_REQUIRED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::Malformed(_)
            | Self::HttpVersion(_)
            | Self::InvalidTarget
            | Self::InvalidHost
            | Self::UnexpectedBody
            | Self::MissingConnectionUpgrade
            | Self::ExtendedConnectProtocol(_)
            | Self::InvalidKey
            | Self::InvalidProtocols
            | Self::InvalidExtensions(_)
            | Self::InvalidOrigin => StatusCode::BAD_REQUEST,
        }
    }

    /// The rejection to send: [`reject_response`] with [`HandshakeError::status`]
    /// and this error's message, plus the headers its status requires.
    ///
    /// A 426 carries `Upgrade: websocket`, `Connection: upgrade, close` and
    /// `Sec-WebSocket-Version: 13` (RFC 9110 §15.5.22, RFC 6455 §4.4); a 405
    /// carries `Allow: GET` (RFC 9110 §15.5.6).
    pub fn to_response(&self) -> Response<String> {
        let mut response = reject_response(self.status(), &self.to_string());
        let headers = response.headers_mut();
        match self.status() {
            StatusCode::UPGRADE_REQUIRED => {
                headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
                headers.insert(
                    header::CONNECTION,
                    HeaderValue::from_static("upgrade, close"),
                );
                headers.insert(
                    header::SEC_WEBSOCKET_VERSION,
                    HeaderValue::from_static("13"),
                );
            }
            StatusCode::METHOD_NOT_ALLOWED => {
                headers.insert(header::ALLOW, HeaderValue::from_static("GET"));
            }
            _ => {}
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header<'a>(response: &'a Response<String>, name: &str) -> Option<&'a str> {
        response
            .headers()
            .get(name)
            .map(|value| value.to_str().unwrap())
    }

    #[test]
    fn statuses() {
        let cases = [
            (HandshakeError::HeadersTooLarge { limit: 1 }, 431),
            (HandshakeError::TooManyHeaders { limit: 1 }, 431),
            (HandshakeError::Malformed("x"), 400),
            (HandshakeError::MethodNotAllowed(Method::POST), 405),
            (HandshakeError::HttpVersion(Version::HTTP_10), 400),
            (HandshakeError::InvalidTarget, 400),
            (HandshakeError::InvalidHost, 400),
            (HandshakeError::UnexpectedBody, 400),
            (HandshakeError::NotWebSocket, 426),
            (HandshakeError::MissingConnectionUpgrade, 400),
            (HandshakeError::ExtendedConnectProtocol(None), 400),
            (HandshakeError::UnsupportedVersion, 426),
            (HandshakeError::InvalidKey, 400),
            (HandshakeError::InvalidProtocols, 400),
            (
                HandshakeError::InvalidExtensions(ExtensionParseError("x")),
                400,
            ),
            (HandshakeError::InvalidOrigin, 400),
            (HandshakeError::Forbidden("no".into()), 403),
        ];
        for (error, status) in cases {
            assert_eq!(error.status().as_u16(), status, "{error:?}");
            assert_eq!(error.to_response().status().as_u16(), status, "{error:?}");
        }
    }

    #[test]
    fn upgrade_required_response() {
        let response = HandshakeError::UnsupportedVersion.to_response();
        assert_eq!(response.status(), StatusCode::UPGRADE_REQUIRED);
        assert_eq!(header(&response, "sec-websocket-version"), Some("13"));
        assert_eq!(header(&response, "upgrade"), Some("websocket"));
        assert_eq!(header(&response, "connection"), Some("upgrade, close"));
        assert_eq!(
            response.body(),
            "unsupported WebSocket version; this server speaks version 13"
        );
        let response = HandshakeError::NotWebSocket.to_response();
        assert_eq!(header(&response, "sec-websocket-version"), Some("13"));
        assert_eq!(header(&response, "upgrade"), Some("websocket"));
    }

    #[test]
    fn method_not_allowed_response() {
        let response = HandshakeError::MethodNotAllowed(Method::POST).to_response();
        assert_eq!(header(&response, "allow"), Some("GET"));
        assert_eq!(response.body(), "method POST is not allowed; use GET");
    }

    #[test]
    fn other_responses_close() {
        let response = HandshakeError::InvalidKey.to_response();
        assert_eq!(header(&response, "connection"), Some("close"));
        assert_eq!(header(&response, "upgrade"), None);
        assert_eq!(header(&response, "sec-websocket-version"), None);
        assert_eq!(
            response.body(),
            "Sec-WebSocket-Key must be the base64 encoding of 16 bytes"
        );
    }
}
