//! Reading an upgrade request from bytes, in chunks of any size.
//!
//! Invariants: [`RequestParser::feed`] consumes input only up to the end of
//! the header block and reports how much; its outcome does not depend on how
//! the input was split; it buffers at most [`Limits::max_header_size`] bytes;
//! after it returns a request or an error it is reset, holding nothing.

use http::{Method, Request, Uri, Version};

use super::error::HandshakeError;
use super::request::UpgradeRequest;
use crate::handshake::Limits;
use crate::handshake::head::{HeadError, HeadReader, describe, header_map};

/// Reads one upgrade request from the bytes a client sends.
///
/// Feed it bytes with [`RequestParser::feed`] until it returns a request or an
/// error. On an error, send [`HandshakeError::to_response`] and close the
/// connection.
#[derive(Debug, Default)]
pub struct RequestParser {
    limits: Limits,
    head: HeadReader,
}

impl RequestParser {
    /// A parser with the default [`Limits`].
    pub fn new() -> Self {
        Self::default()
    }

    /// A parser with the given limits.
    pub fn with_limits(limits: Limits) -> Self {
        Self {
            limits,
            head: HeadReader::default(),
        }
    }

    /// Consumes `input` and, once the header block is complete, returns the
    /// validated request and how many bytes of this `input` it consumed.
    ///
    /// - `Ok(None)`: all of `input` was consumed; call again with more bytes.
    /// - `Ok(Some((request, n)))`: the header block ended at `input[n - 1]`;
    ///   `input[n..]` was not consumed and belongs to the WebSocket connection.
    /// - `Err(e)`: the request is refused; answer `e.to_response()`.
    ///
    /// After `Ok(Some(_))` or `Err(_)` the parser starts over on the next call.
    pub fn feed(
        &mut self,
        input: &[u8],
    ) -> Result<Option<(UpgradeRequest, usize)>, HandshakeError> {
        match self.feed_request(input)? {
            Some((request, consumed)) => Ok(Some((UpgradeRequest::validate(request)?, consumed))),
            None => Ok(None),
        }
    }

    /// Like [`RequestParser::feed`], but returns any well-formed HTTP/1.x
    /// request without checking that it asks for a WebSocket upgrade: for a
    /// server that also answers plain HTTP on the same port. Pass the request
    /// to [`UpgradeRequest::validate`] to treat it as an upgrade.
    pub fn feed_request(
        &mut self,
        input: &[u8],
    ) -> Result<Option<(Request<()>, usize)>, HandshakeError> {
        let limit = self.limits.max_header_size;
        let Some((head, consumed)) = self.head.read(input, limit).map_err(|error| match error {
            HeadError::TooLarge => HandshakeError::HeadersTooLarge { limit },
            HeadError::BareLf => HandshakeError::Malformed("line ends without CR"),
        })?
        else {
            return Ok(None);
        };
        Ok(Some((
            parse_head(&head, self.limits.max_headers)?,
            consumed,
        )))
    }
}

/// Parses a complete header block (ending in CRLF CRLF) into a request.
fn parse_head(head: &[u8], max_headers: usize) -> Result<Request<()>, HandshakeError> {
    let mut headers = vec![httparse::EMPTY_HEADER; max_headers];
    let mut parsed = httparse::Request::new(&mut headers);
    match parsed.parse(head) {
        Ok(httparse::Status::Complete(n)) if n == head.len() => {}
        Ok(_) => return Err(HandshakeError::Malformed("no request line")),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(HandshakeError::TooManyHeaders { limit: max_headers });
        }
        Err(error) => return Err(HandshakeError::Malformed(describe(error))),
    }
    // httparse fills every field of a complete request.
    let (Some(method), Some(target), Some(version)) = (parsed.method, parsed.path, parsed.version)
    else {
        return Err(HandshakeError::Malformed("incomplete request line"));
    };
    let method = Method::from_bytes(method.as_bytes())
        .map_err(|_| HandshakeError::Malformed("invalid method"))?;
    let uri: Uri = target.parse().map_err(|_| HandshakeError::InvalidTarget)?;
    let version = match version {
        0 => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let map = header_map(parsed.headers).map_err(HandshakeError::Malformed)?;
    let mut request = Request::new(());
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = version;
    *request.headers_mut() = map;
    Ok(request)
}

#[cfg(test)]
mod tests {
    use super::*;

    const REQUEST: &str = "GET /chat HTTP/1.1\r\n\
        Host: example.com\r\n\
        Upgrade: websocket\r\n\
        Connection: Upgrade\r\n\
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
        Sec-WebSocket-Version: 13\r\n\
        \r\n";

    /// A masked text frame "Hi" that a client may send right after its request.
    const FRAME: &[u8] = b"\x81\x82\x01\x02\x03\x04\x49\x6b";

    #[test]
    fn whole_request_with_a_frame_behind_it() {
        let mut input = REQUEST.as_bytes().to_vec();
        input.extend_from_slice(FRAME);
        let (request, consumed) = RequestParser::new().feed(&input).unwrap().unwrap();
        assert_eq!(consumed, REQUEST.len());
        assert_eq!(&input[consumed..], FRAME);
        assert_eq!(request.path(), "/chat");
    }

    #[test]
    fn one_byte_at_a_time() {
        let mut parser = RequestParser::new();
        let bytes = REQUEST.as_bytes();
        for byte in &bytes[..bytes.len() - 1] {
            assert_eq!(
                parser.feed(std::slice::from_ref(byte)).unwrap().map(|_| ()),
                None
            );
        }
        let (request, consumed) = parser.feed(&bytes[bytes.len() - 1..]).unwrap().unwrap();
        assert_eq!(consumed, 1);
        assert_eq!(request.key(), "dGhlIHNhbXBsZSBub25jZQ==");
    }

    #[test]
    fn last_chunk_holds_the_end_and_a_frame() {
        let mut parser = RequestParser::new();
        let (head, tail) = REQUEST.as_bytes().split_at(REQUEST.len() - 3);
        assert!(parser.feed(head).unwrap().is_none());
        let mut last = tail.to_vec();
        last.extend_from_slice(FRAME);
        let (_, consumed) = parser.feed(&last).unwrap().unwrap();
        assert_eq!(consumed, 3);
        assert_eq!(&last[consumed..], FRAME);
    }

    #[test]
    fn oversized_header_block_gets_431() {
        let cookie = format!("Cookie: {}\r\n\r\n", "a".repeat(9000));
        let text = REQUEST.replacen("\r\n\r\n", &format!("\r\n{cookie}"), 1);
        let error = RequestParser::new().feed(text.as_bytes()).unwrap_err();
        assert_eq!(error, HandshakeError::HeadersTooLarge { limit: 8192 });
        assert_eq!(error.status().as_u16(), 431);
    }

    #[test]
    fn size_limit_is_inclusive() {
        let exact = Limits {
            max_header_size: REQUEST.len(),
            ..Limits::default()
        };
        assert!(
            RequestParser::with_limits(exact)
                .feed(REQUEST.as_bytes())
                .unwrap()
                .is_some()
        );
        let short = Limits {
            max_header_size: REQUEST.len() - 1,
            ..Limits::default()
        };
        assert_eq!(
            RequestParser::with_limits(short)
                .feed(REQUEST.as_bytes())
                .unwrap_err(),
            HandshakeError::HeadersTooLarge {
                limit: REQUEST.len() - 1
            }
        );
    }

    #[test]
    fn too_many_header_lines_get_431() {
        let limits = Limits {
            max_headers: 4,
            ..Limits::default()
        };
        let error = RequestParser::with_limits(limits)
            .feed(REQUEST.as_bytes())
            .unwrap_err();
        assert_eq!(error, HandshakeError::TooManyHeaders { limit: 4 });
        assert_eq!(error.status().as_u16(), 431);
        let limits = Limits {
            max_headers: 5,
            ..Limits::default()
        };
        assert!(
            RequestParser::with_limits(limits)
                .feed(REQUEST.as_bytes())
                .is_ok()
        );
        let many: String = (0..65).map(|i| format!("X-{i}: {i}\r\n")).collect();
        let text = REQUEST.replacen("\r\n\r\n", &format!("\r\n{many}\r\n"), 1);
        assert_eq!(
            RequestParser::new().feed(text.as_bytes()).unwrap_err(),
            HandshakeError::TooManyHeaders { limit: 64 }
        );
    }

    #[test]
    fn bare_lf_is_malformed() {
        let text = REQUEST.replace("\r\n", "\n");
        assert_eq!(
            RequestParser::new().feed(text.as_bytes()).unwrap_err(),
            HandshakeError::Malformed("line ends without CR")
        );
    }

    #[test]
    fn malformed_heads() {
        let cases: [(&[u8], &str); 5] = [
            (b"\r\n\r\n", "no request line"),
            (b"GET /chat\r\n\r\n", "invalid token in the first line"),
            (b"GET /chat HTTP/2.0\r\n\r\n", "invalid HTTP version"),
            (
                b"GET /chat HTTP/1.1\r\nBad Name: x\r\n\r\n",
                "invalid header name",
            ),
            (
                b"GET /chat HTTP/1.1\r\nX: a\x01b\r\n\r\n",
                "invalid header value",
            ),
        ];
        for (text, reason) in cases {
            assert_eq!(
                RequestParser::new().feed(text).unwrap_err(),
                HandshakeError::Malformed(reason),
                "{}",
                String::from_utf8_lossy(text)
            );
        }
    }

    #[test]
    fn one_leading_empty_line_is_ignored() {
        let text = format!("\r\n{REQUEST}");
        let (_, consumed) = RequestParser::new().feed(text.as_bytes()).unwrap().unwrap();
        assert_eq!(consumed, text.len());
    }

    #[test]
    fn starts_over_after_each_outcome() {
        let mut parser = RequestParser::new();
        assert!(parser.feed(b"GET / HTTP/1.1\n").is_err());
        let twice = REQUEST.repeat(2);
        let (_, first) = parser.feed(twice.as_bytes()).unwrap().unwrap();
        let (_, second) = parser.feed(&twice.as_bytes()[first..]).unwrap().unwrap();
        assert_eq!(first + second, twice.len());
    }
}
