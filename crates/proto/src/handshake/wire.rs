//! Writing an HTTP/1.1 request or response head.
//!
//! Invariants: the output is always a well-formed HTTP/1.1 head ending in CRLF
//! CRLF, because `http`'s types cannot hold a CR or LF in a name, value or
//! target; header lines are written in the map's order (names in order of
//! first insertion, each name's values together); names the handshake uses
//! are written in their usual capitalization, others as `http` stores them
//! (lower case).

use bytes::{BufMut, BytesMut};
use http::header::{self, HeaderName};
use http::{HeaderMap, Request, Response};

/// The usual capitalization of `name`, which is case-insensitive on the wire.
fn display_name(name: &HeaderName) -> &str {
    let known = [
        (header::HOST, "Host"),
        (header::UPGRADE, "Upgrade"),
        (header::CONNECTION, "Connection"),
        (header::ORIGIN, "Origin"),
        (header::SEC_WEBSOCKET_KEY, "Sec-WebSocket-Key"),
        (header::SEC_WEBSOCKET_ACCEPT, "Sec-WebSocket-Accept"),
        (header::SEC_WEBSOCKET_VERSION, "Sec-WebSocket-Version"),
        (header::SEC_WEBSOCKET_PROTOCOL, "Sec-WebSocket-Protocol"),
        (header::SEC_WEBSOCKET_EXTENSIONS, "Sec-WebSocket-Extensions"),
        (header::CONTENT_TYPE, "Content-Type"),
        (header::CONTENT_LENGTH, "Content-Length"),
        (header::ALLOW, "Allow"),
    ];
    known
        .iter()
        .find(|(known, _)| known == name)
        .map_or(name.as_str(), |&(_, display)| display)
}

fn write_headers(headers: &HeaderMap, dst: &mut BytesMut) {
    for (name, value) in headers {
        dst.put_slice(display_name(name).as_bytes());
        dst.put_slice(b": ");
        dst.put_slice(value.as_bytes());
        dst.put_slice(b"\r\n");
    }
    dst.put_slice(b"\r\n");
}

/// Appends `request`'s request line and headers to `dst` as HTTP/1.1.
///
/// The target is the URI's path and query (origin form), `/` when empty.
pub(crate) fn write_request_head<B>(request: &Request<B>, dst: &mut BytesMut) {
    let uri = request.uri();
    let path = match uri.path() {
        "" => "/",
        path => path,
    };
    dst.put_slice(request.method().as_str().as_bytes());
    dst.put_u8(b' ');
    dst.put_slice(path.as_bytes());
    if let Some(query) = uri.query() {
        dst.put_u8(b'?');
        dst.put_slice(query.as_bytes());
    }
    dst.put_slice(b" HTTP/1.1\r\n");
    write_headers(request.headers(), dst);
}

/// Appends `response`'s status line and headers to `dst` as HTTP/1.1.
pub(crate) fn write_response_head<B>(response: &Response<B>, dst: &mut BytesMut) {
    let status = response.status();
    dst.put_slice(b"HTTP/1.1 ");
    dst.put_slice(status.as_str().as_bytes());
    dst.put_u8(b' ');
    dst.put_slice(status.canonical_reason().unwrap_or("").as_bytes());
    dst.put_slice(b"\r\n");
    write_headers(response.headers(), dst);
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderValue, StatusCode};

    #[test]
    fn request_head() {
        let request = Request::get("http://example.com?x=1")
            .header("sec-websocket-key", "k")
            .header("x-trace", "a")
            .header("x-trace", "b")
            .body(())
            .unwrap();
        let mut dst = BytesMut::new();
        write_request_head(&request, &mut dst);
        assert_eq!(
            &dst[..],
            b"GET /?x=1 HTTP/1.1\r\nSec-WebSocket-Key: k\r\nx-trace: a\r\nx-trace: b\r\n\r\n"
        );
    }

    #[test]
    fn response_head_with_unknown_reason() {
        let mut response = Response::new(());
        *response.status_mut() = StatusCode::from_u16(599).unwrap();
        response
            .headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        let mut dst = BytesMut::new();
        write_response_head(&response, &mut dst);
        assert_eq!(&dst[..], b"HTTP/1.1 599 \r\nContent-Length: 0\r\n\r\n");
    }
}
