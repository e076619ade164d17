//! The server's answer: the `101 Switching Protocols` that accepts an upgrade
//! (RFC 6455 §4.2.2), a rejection, and their bytes.
//!
//! Invariants: [`accept_response`] only builds a response the client must
//! accept: a subprotocol the client offered, extensions the client offered,
//! and no extra header that would contradict the handshake's own;
//! [`reject_response`] always closes the connection and states its body's
//! length; [`write_response`] writes exactly the response's headers and body.

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Response, StatusCode};

use super::request::UpgradeRequest;
use crate::extension::{ExtensionParseError, format_extensions, parse_extensions};
use crate::handshake::accept_key;
use crate::handshake::wire::write_response_head;

/// Why [`accept_response`] cannot build the `101`: the application asked for
/// something the handshake does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AcceptError {
    /// The chosen subprotocol is not one the client offered.
    #[error("subprotocol {0:?} was not offered by the client")]
    ProtocolNotOffered(String),
    /// The extensions header value does not follow the grammar.
    #[error(transparent)]
    InvalidExtensions(#[from] ExtensionParseError),
    /// An accepted extension the client did not offer.
    #[error("extension {0:?} was not offered by the client")]
    ExtensionNotOffered(String),
    /// An extra header this function writes itself, or one a `101` must not
    /// carry.
    #[error("header {0} may not be set by the application on a 101 response")]
    ReservedHeader(HeaderName),
}

/// Headers the handshake owns, plus those a 1xx response must not carry
/// (RFC 9110 §8.6, §6.1).
const RESERVED: [HeaderName; 7] = [
    header::UPGRADE,
    header::CONNECTION,
    header::SEC_WEBSOCKET_ACCEPT,
    header::SEC_WEBSOCKET_PROTOCOL,
    header::SEC_WEBSOCKET_EXTENSIONS,
    header::CONTENT_LENGTH,
    header::TRANSFER_ENCODING,
];

/// Builds the `101 Switching Protocols` that accepts `request`, or the `200`
/// that accepts an HTTP/2 extended `CONNECT`
/// ([`UpgradeRequest::is_extended_connect`]).
///
/// It carries, in this order, `Upgrade: websocket`, `Connection: Upgrade`,
/// `Sec-WebSocket-Accept` (these three only on the `101`: RFC 8441 §5 uses
/// none of them), `Sec-WebSocket-Protocol` when `protocol` is given,
/// `Sec-WebSocket-Extensions` when `extensions` holds at least one extension
/// (rewritten in canonical form), then `extra`.
///
/// # Errors
///
/// - `protocol` is not one of [`UpgradeRequest::protocols`];
/// - `extensions` is malformed, or names an extension the client did not
///   offer (its parameters are the caller's to check, as in RFC 7692);
/// - `extra` holds `Upgrade`, `Connection`, `Sec-WebSocket-Accept`,
///   `-Protocol`, `-Extensions`, `Content-Length` or `Transfer-Encoding`:
///   rather than silently overriding or repeating them, this is refused.
pub fn accept_response(
    request: &UpgradeRequest,
    protocol: Option<&str>,
    extensions: Option<&str>,
    extra: &HeaderMap,
) -> Result<Response<()>, AcceptError> {
    let mut headers = HeaderMap::with_capacity(5 + extra.len());
    if !request.is_extended_connect() {
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        headers.insert(
            header::SEC_WEBSOCKET_ACCEPT,
            HeaderValue::from_str(&accept_key(request.key().as_bytes()))
                .expect("base64 is a valid header value"),
        );
    }
    if let Some(protocol) = protocol {
        let offered = request
            .protocols()
            .iter()
            .any(|offered| offered == protocol);
        // Offered protocols are tokens, so a valid header value.
        match HeaderValue::from_str(protocol) {
            Ok(value) if offered => headers.insert(header::SEC_WEBSOCKET_PROTOCOL, value),
            _ => return Err(AcceptError::ProtocolNotOffered(protocol.to_owned())),
        };
    }
    if let Some(extensions) = extensions {
        let accepted = parse_extensions([extensions.as_bytes()])?;
        if let Some(unoffered) = accepted.iter().find(|accepted| {
            !request
                .extensions()
                .iter()
                .any(|offered| offered.name == accepted.name)
        }) {
            return Err(AcceptError::ExtensionNotOffered(unoffered.name.clone()));
        }
        if !accepted.is_empty() {
            // The grammar admits only visible ASCII, so this cannot fail.
            let value = HeaderValue::from_str(&format_extensions(&accepted))
                .map_err(|_| ExtensionParseError("not a valid header value"))?;
            headers.insert(header::SEC_WEBSOCKET_EXTENSIONS, value);
        }
    }
    if let Some(name) = extra.keys().find(|name| RESERVED.contains(name)) {
        return Err(AcceptError::ReservedHeader(name.clone()));
    }
    for (name, value) in extra {
        headers.append(name, value.clone());
    }
    let mut response = Response::new(());
    *response.status_mut() = if request.is_extended_connect() {
        StatusCode::OK
    } else {
        StatusCode::SWITCHING_PROTOCOLS
    };
    *response.headers_mut() = headers;
    Ok(response)
}

/// A rejection: `status` with `reason` as a `text/plain` body, `Content-Length`
/// and `Connection: close`. Close the connection once it is written.
pub fn reject_response(status: StatusCode, reason: &str) -> Response<String> {
    let mut response = Response::new(reason.to_owned());
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(reason.len()));
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// A response body [`write_response`] can write.
pub trait ResponseBody {
    /// The body's bytes.
    fn as_bytes(&self) -> &[u8];
}

impl ResponseBody for () {
    fn as_bytes(&self) -> &[u8] {
        &[]
    }
}

impl ResponseBody for String {
    fn as_bytes(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl ResponseBody for &str {
    fn as_bytes(&self) -> &[u8] {
        str::as_bytes(self)
    }
}

impl ResponseBody for Vec<u8> {
    fn as_bytes(&self) -> &[u8] {
        self
    }
}

impl ResponseBody for Bytes {
    fn as_bytes(&self) -> &[u8] {
        self
    }
}

/// Appends `response` to `dst` as HTTP/1.1: status line, headers in the map's
/// order, empty line, body.
///
/// The version is always written as `HTTP/1.1`; no header is added, so a body
/// needs its `Content-Length` set (as [`reject_response`] does).
pub fn write_response<B: ResponseBody>(response: &Response<B>, dst: &mut BytesMut) {
    write_response_head(response, dst);
    dst.put_slice(response.body().as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handshake::server::RequestParser;

    fn request(extra: &str) -> UpgradeRequest {
        let text = format!(
            "GET /chat HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\n{extra}\r\n"
        );
        RequestParser::new()
            .feed(text.as_bytes())
            .unwrap()
            .unwrap()
            .0
    }

    fn written<B: ResponseBody>(response: &Response<B>) -> String {
        String::from_utf8(written_bytes(response).to_vec()).unwrap()
    }

    #[test]
    fn rfc_6455_accept() {
        let response = accept_response(&request(""), None, None, &HeaderMap::new()).unwrap();
        assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
        assert_eq!(
            written(&response),
            "HTTP/1.1 101 Switching Protocols\r\n\
             Upgrade: websocket\r\n\
             Connection: Upgrade\r\n\
             Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\
             \r\n"
        );
    }

    #[test]
    fn accept_with_protocol_extensions_and_extra_headers() {
        let request = request(
            "Sec-WebSocket-Protocol: chat, superchat\r\n\
             Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n",
        );
        let mut extra = HeaderMap::new();
        extra.insert("set-cookie", HeaderValue::from_static("session=1"));
        extra.insert("server", HeaderValue::from_static("duplex"));
        let response = accept_response(
            &request,
            Some("superchat"),
            Some("permessage-deflate;server_max_window_bits=12 ;client_max_window_bits=12"),
            &extra,
        )
        .unwrap();
        assert_eq!(
            written(&response),
            "HTTP/1.1 101 Switching Protocols\r\n\
             Upgrade: websocket\r\n\
             Connection: Upgrade\r\n\
             Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\
             Sec-WebSocket-Protocol: superchat\r\n\
             Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=12; \
             client_max_window_bits=12\r\n\
             set-cookie: session=1\r\n\
             server: duplex\r\n\
             \r\n"
        );
    }

    #[test]
    fn empty_extensions_value_writes_no_header() {
        let request = request("Sec-WebSocket-Extensions: permessage-deflate\r\n");
        let response = accept_response(&request, None, Some(""), &HeaderMap::new()).unwrap();
        assert!(
            !response
                .headers()
                .contains_key(header::SEC_WEBSOCKET_EXTENSIONS)
        );
    }

    #[test]
    fn protocol_must_have_been_offered() {
        let offered = request("Sec-WebSocket-Protocol: chat\r\n");
        for protocol in ["superchat", "Chat", "", "chat\r\nx: y"] {
            assert_eq!(
                accept_response(&offered, Some(protocol), None, &HeaderMap::new()).unwrap_err(),
                AcceptError::ProtocolNotOffered(protocol.into())
            );
        }
        assert_eq!(
            accept_response(&request(""), Some("chat"), None, &HeaderMap::new()).unwrap_err(),
            AcceptError::ProtocolNotOffered("chat".into())
        );
    }

    #[test]
    fn extensions_must_have_been_offered_and_well_formed() {
        let request = request("Sec-WebSocket-Extensions: permessage-deflate\r\n");
        assert_eq!(
            accept_response(
                &request,
                None,
                Some("x-webkit-deflate-frame"),
                &HeaderMap::new()
            )
            .unwrap_err(),
            AcceptError::ExtensionNotOffered("x-webkit-deflate-frame".into())
        );
        assert_eq!(
            accept_response(
                &request,
                None,
                Some("permessage-deflate;"),
                &HeaderMap::new()
            )
            .unwrap_err(),
            AcceptError::InvalidExtensions(ExtensionParseError("expected a token"))
        );
    }

    #[test]
    fn extra_headers_may_not_override_the_handshake() {
        for name in RESERVED {
            let mut extra = HeaderMap::new();
            extra.insert(name.clone(), HeaderValue::from_static("x"));
            assert_eq!(
                accept_response(&request(""), None, None, &extra).unwrap_err(),
                AcceptError::ReservedHeader(name)
            );
        }
    }

    #[test]
    fn reject() {
        let response = reject_response(StatusCode::FORBIDDEN, "origin not allowed");
        assert_eq!(
            written(&response),
            "HTTP/1.1 403 Forbidden\r\n\
             Content-Type: text/plain; charset=utf-8\r\n\
             Content-Length: 18\r\n\
             Connection: close\r\n\
             \r\n\
             origin not allowed"
        );
    }

    #[test]
    fn upgrade_required_bytes() {
        use crate::handshake::server::HandshakeError;
        assert_eq!(
            written(&HandshakeError::NotWebSocket.to_response()),
            "HTTP/1.1 426 Upgrade Required\r\n\
             Content-Type: text/plain; charset=utf-8\r\n\
             Content-Length: 42\r\n\
             Connection: upgrade, close\r\n\
             Upgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\n\
             \r\n\
             this resource requires a WebSocket upgrade"
        );
    }

    #[test]
    fn other_bodies() {
        let mut response = Response::new(Bytes::from_static(b"\x00\xff"));
        *response.status_mut() = StatusCode::BAD_REQUEST;
        assert_eq!(
            &written_bytes(&response)[..],
            b"HTTP/1.1 400 Bad Request\r\n\r\n\x00\xff"
        );
        assert_eq!(
            &written_bytes(&Response::new(vec![1u8]))[..],
            b"HTTP/1.1 200 OK\r\n\r\n\x01"
        );
        assert_eq!(
            &written_bytes(&Response::new("hi"))[..],
            b"HTTP/1.1 200 OK\r\n\r\nhi"
        );
    }

    fn written_bytes<B: ResponseBody>(response: &Response<B>) -> BytesMut {
        let mut dst = BytesMut::new();
        write_response(response, &mut dst);
        dst
    }
}
