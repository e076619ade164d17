//! Reading and checking the server's response (RFC 6455 §4.1, client steps
//! after sending the request).
//!
//! Invariants: [`ClientHandshake::feed`] consumes input only up to the end of
//! the header block and reports how much; its outcome does not depend on how
//! the input was split; it buffers at most [`Limits::max_header_size`] bytes;
//! it returns one outcome, after which it consumes nothing. An [`Accepted`]
//! exists only for a `101` in HTTP/1.1 with `Upgrade: websocket`,
//! `Connection: upgrade`, the matching `Sec-WebSocket-Accept`, at most one
//! offered subprotocol and only offered extensions.
//!
//! [`Limits::max_header_size`]: crate::handshake::Limits::max_header_size

use http::header::{self, HeaderValue};
use http::{HeaderMap, Response, StatusCode, Version};

use super::error::ResponseError;
use super::request::ClientHandshake;
use crate::extension::{ExtensionOffer, parse_extensions};
use crate::handshake::Limits;
use crate::handshake::fields::{has_token, list_elements, single, trim_ows};
use crate::handshake::head::{HeadError, HeadReader, describe, header_map};

/// A response that completes the handshake.
#[derive(Debug, Clone)]
pub struct Accepted {
    response: Response<()>,
    protocol: Option<String>,
    extensions: Vec<ExtensionOffer>,
}

impl Accepted {
    /// The `101` response's head.
    pub fn response(&self) -> &Response<()> {
        &self.response
    }

    /// The `101` response's head, by value.
    pub fn into_response(self) -> Response<()> {
        self.response
    }

    /// The subprotocol the server chose, one of those offered.
    pub fn protocol(&self) -> Option<&str> {
        self.protocol.as_deref()
    }

    /// The extensions the server accepted, in its order, each named in an
    /// offer. Their parameters are for the extension to check (as RFC 7692
    /// requires for `permessage-deflate`).
    pub fn extensions(&self) -> &[ExtensionOffer] {
        &self.extensions
    }
}

/// Reads one HTTP/1.x response head from bytes, in chunks of any size: the
/// bounded reader [`ClientHandshake::feed`] uses, for any response a client
/// reads before its connection carries something else (such as a proxy's
/// answer to `CONNECT`).
///
/// It checks the head's syntax and bounds only, not what the response means.
#[derive(Debug, Default)]
pub struct ResponseParser {
    limits: Limits,
    head: HeadReader,
}

impl ResponseParser {
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
    /// response head with how many bytes of this `input` it consumed.
    ///
    /// - `Ok(None)`: all of `input` was consumed; call again with more bytes.
    /// - `Ok(Some((response, n)))`: the head ended at `input[n - 1]`;
    ///   `input[n..]` was not consumed and belongs to what follows.
    /// - `Err(e)`: the head is too large ([`ResponseError::HeadersTooLarge`],
    ///   [`ResponseError::TooManyHeaders`]) or malformed
    ///   ([`ResponseError::Malformed`]).
    ///
    /// After `Ok(Some(_))` or `Err(_)` the parser starts over on the next call.
    pub fn feed(&mut self, input: &[u8]) -> Result<Option<(Response<()>, usize)>, ResponseError> {
        let limit = self.limits.max_header_size;
        let Some((head, consumed)) = self.head.read(input, limit).map_err(|error| match error {
            HeadError::TooLarge => ResponseError::HeadersTooLarge { limit },
            HeadError::BareLf => ResponseError::Malformed("line ends without CR"),
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

impl ClientHandshake {
    /// Consumes response bytes and, once the header block is complete, checks
    /// it and returns the outcome with how many bytes of this `input` it
    /// consumed.
    ///
    /// - `Ok(None)`: all of `input` was consumed; call again with more bytes.
    /// - `Ok(Some((accepted, n)))`: the handshake is complete; `input[n..]`
    ///   was not consumed and holds the server's first frames.
    /// - `Err(e)`: the server refused ([`ResponseError::Rejected`]) or broke
    ///   the protocol; close the connection.
    ///
    /// Once it has returned `Ok(Some(_))` or `Err(_)`, further calls return
    /// [`ResponseError::Finished`].
    pub fn feed(&mut self, input: &[u8]) -> Result<Option<(Accepted, usize)>, ResponseError> {
        if self.finished {
            return Err(ResponseError::Finished);
        }
        let parsed = self.head.feed(input);
        if !matches!(parsed, Ok(None)) {
            self.finished = true;
        }
        let (response, consumed) = match parsed? {
            None => return Ok(None),
            Some(parsed) => parsed,
        };
        if response.status() != StatusCode::SWITCHING_PROTOCOLS {
            return Err(ResponseError::Rejected {
                status: response.status(),
                response: Box::new(response),
                consumed,
            });
        }
        Ok(Some((self.check(response)?, consumed)))
    }

    /// Checks a `101` response against the request.
    fn check(&self, response: Response<()>) -> Result<Accepted, ResponseError> {
        if response.version() != Version::HTTP_11 {
            return Err(ResponseError::HttpVersion(response.version()));
        }
        let headers = response.headers();
        if !has_token(headers, header::UPGRADE, "websocket") {
            return Err(ResponseError::MissingUpgrade);
        }
        if !has_token(headers, header::CONNECTION, "upgrade") {
            return Err(ResponseError::MissingConnectionUpgrade);
        }
        match single(headers, header::SEC_WEBSOCKET_ACCEPT) {
            Ok(Some(accept)) if trim_ows(accept.as_bytes()) == self.accept.as_bytes() => {}
            _ => return Err(ResponseError::InvalidAccept),
        }
        self.negotiated(response)
    }

    /// Checks an HTTP/2 server's response to the extended `CONNECT` of
    /// [`ClientHandshake::extended_connect_request`] (RFC 8441 §5): any 2xx
    /// accepts, with at most one offered subprotocol and only offered
    /// extensions, as on HTTP/1.1; `Sec-WebSocket-Accept` is not used.
    ///
    /// # Errors
    ///
    /// [`ResponseError::Rejected`] (with `consumed` 0) for any other status;
    /// the subprotocol and extension errors of [`ClientHandshake::feed`];
    /// [`ResponseError::Finished`] when the handshake already has an outcome.
    pub fn check_extended_connect(
        &mut self,
        response: Response<()>,
    ) -> Result<Accepted, ResponseError> {
        if self.finished {
            return Err(ResponseError::Finished);
        }
        self.finished = true;
        if !response.status().is_success() {
            return Err(ResponseError::Rejected {
                status: response.status(),
                response: Box::new(response),
                consumed: 0,
            });
        }
        self.negotiated(response)
    }

    /// The subprotocol and extension checks both HTTP versions share.
    fn negotiated(&self, response: Response<()>) -> Result<Accepted, ResponseError> {
        let headers = response.headers();
        let protocol = self.chosen_protocol(headers)?;
        let extensions = parse_extensions(
            headers
                .get_all(header::SEC_WEBSOCKET_EXTENSIONS)
                .into_iter()
                .map(HeaderValue::as_bytes),
        )?;
        if let Some(unoffered) = extensions.iter().find(|accepted| {
            !self
                .extensions
                .iter()
                .any(|offered| offered.name == accepted.name)
        }) {
            return Err(ResponseError::UnexpectedExtension(unoffered.name.clone()));
        }
        Ok(Accepted {
            response,
            protocol,
            extensions,
        })
    }

    /// The one offered subprotocol `Sec-WebSocket-Protocol` names, if present.
    fn chosen_protocol(&self, headers: &HeaderMap) -> Result<Option<String>, ResponseError> {
        if !headers.contains_key(header::SEC_WEBSOCKET_PROTOCOL) {
            return Ok(None);
        }
        let mut elements = list_elements(headers, header::SEC_WEBSOCKET_PROTOCOL);
        let chosen = match (elements.next(), elements.next()) {
            (Some(one), None) => std::str::from_utf8(one)
                .ok()
                .filter(|chosen| self.protocols.iter().any(|offered| offered == chosen)),
            _ => None,
        };
        match chosen {
            Some(chosen) => Ok(Some(chosen.to_owned())),
            None => {
                let text = headers
                    .get_all(header::SEC_WEBSOCKET_PROTOCOL)
                    .into_iter()
                    .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
                    .collect::<Vec<_>>()
                    .join(", ");
                Err(ResponseError::UnexpectedProtocol(text))
            }
        }
    }
}

/// Parses a complete header block (ending in CRLF CRLF) into a response head.
fn parse_head(head: &[u8], max_headers: usize) -> Result<Response<()>, ResponseError> {
    let mut headers = vec![httparse::EMPTY_HEADER; max_headers];
    let mut parsed = httparse::Response::new(&mut headers);
    match parsed.parse(head) {
        Ok(httparse::Status::Complete(n)) if n == head.len() => {}
        Ok(_) => return Err(ResponseError::Malformed("no status line")),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(ResponseError::TooManyHeaders { limit: max_headers });
        }
        Err(error) => return Err(ResponseError::Malformed(describe(error))),
    }
    let (Some(code), Some(version)) = (parsed.code, parsed.version) else {
        return Err(ResponseError::Malformed("incomplete status line"));
    };
    let status =
        StatusCode::from_u16(code).map_err(|_| ResponseError::Malformed("invalid status code"))?;
    let version = match version {
        0 => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let map = header_map(parsed.headers).map_err(ResponseError::Malformed)?;
    let mut response = Response::new(());
    *response.status_mut() = status;
    *response.version_mut() = version;
    *response.headers_mut() = map;
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handshake::Limits;
    use crate::handshake::peers::PYTHON_RESPONSE as PYTHON;

    const KEY: [u8; 16] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];
    const ACCEPT: &str = "Bz3qJYTGdOe8gUSpLosEdiLKDrk=";

    /// An unmasked text frame "Hi" a server may send right after its response.
    const FRAME: &[u8] = b"\x81\x02Hi";

    fn handshake() -> ClientHandshake {
        ClientHandshake::builder("ws://localhost:8765/", KEY)
            .protocols(["chat", "superchat"])
            .extensions_header("permessage-deflate; client_max_window_bits")
            .build()
            .unwrap()
    }

    /// A 101 for [`handshake`] with `extra` header lines inserted.
    fn with(extra: &str) -> String {
        format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {ACCEPT}\r\n{extra}\r\n"
        )
    }

    fn feed(text: &str) -> Result<Accepted, ResponseError> {
        let (accepted, consumed) = handshake()
            .feed(text.as_bytes())?
            .expect("a complete header block");
        assert_eq!(consumed, text.len());
        Ok(accepted)
    }

    #[test]
    fn python_websockets_with_a_frame_behind_it() {
        let mut input = PYTHON.as_bytes().to_vec();
        input.extend_from_slice(FRAME);
        let (accepted, consumed) = handshake().feed(&input).unwrap().unwrap();
        assert_eq!(consumed, PYTHON.len());
        assert_eq!(&input[consumed..], FRAME);
        assert_eq!(accepted.protocol(), None);
        assert_eq!(
            accepted.extensions(),
            [ExtensionOffer::new("permessage-deflate")
                .param("server_max_window_bits", Some("12".into()))
                .param("client_max_window_bits", Some("12".into()))]
        );
        assert_eq!(
            accepted.response().status(),
            StatusCode::SWITCHING_PROTOCOLS
        );
        assert_eq!(
            accepted.into_response().headers()["server"],
            "Python/3.13 websockets/17.4"
        );
    }

    #[test]
    fn one_byte_at_a_time() {
        let mut handshake = handshake();
        let bytes = PYTHON.as_bytes();
        for byte in &bytes[..bytes.len() - 1] {
            assert!(
                handshake
                    .feed(std::slice::from_ref(byte))
                    .unwrap()
                    .is_none()
            );
        }
        let mut last = vec![bytes[bytes.len() - 1]];
        last.extend_from_slice(FRAME);
        let (_, consumed) = handshake.feed(&last).unwrap().unwrap();
        assert_eq!(consumed, 1);
    }

    #[test]
    fn rejection_carries_status_response_and_body_offset() {
        let text = "HTTP/1.1 403 Forbidden\r\nContent-Length: 18\r\nConnection: close\r\n\r\n\
                    origin not allowed";
        let error = handshake().feed(text.as_bytes()).unwrap_err();
        let ResponseError::Rejected {
            status,
            response,
            consumed,
        } = error
        else {
            panic!("{error:?}");
        };
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(response.headers()["content-length"], "18");
        assert_eq!(&text[consumed..], "origin not allowed");
        let unauthorized = "HTTP/1.0 401 Unauthorized\r\nWWW-Authenticate: Bearer\r\n\r\n";
        assert!(matches!(
            handshake().feed(unauthorized.as_bytes()),
            Err(ResponseError::Rejected {
                status: StatusCode::UNAUTHORIZED,
                ..
            })
        ));
    }

    #[test]
    fn switching_protocols_needs_http_1_1() {
        let text = with("").replacen("HTTP/1.1", "HTTP/1.0", 1);
        assert!(matches!(
            feed(&text),
            Err(ResponseError::HttpVersion(Version::HTTP_10))
        ));
    }

    #[test]
    fn upgrade_and_connection_are_token_lists() {
        let text = with("").replace("Connection: Upgrade", "Connection: keep-alive, UPGRADE");
        assert!(feed(&text).is_ok());
        let text = with("").replace("Upgrade: websocket", "Upgrade: WebSocket");
        assert!(feed(&text).is_ok());
        let text = with("").replace("Upgrade: websocket\r\n", "");
        assert!(matches!(feed(&text), Err(ResponseError::MissingUpgrade)));
        let text = with("").replace("Upgrade: websocket", "Upgrade: h2c");
        assert!(matches!(feed(&text), Err(ResponseError::MissingUpgrade)));
        let text = with("").replace("Connection: Upgrade", "Connection: close");
        assert!(matches!(
            feed(&text),
            Err(ResponseError::MissingConnectionUpgrade)
        ));
    }

    #[test]
    fn accept_must_match() {
        let wrong = with("").replace(ACCEPT, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert!(matches!(feed(&wrong), Err(ResponseError::InvalidAccept)));
        let missing = with("").replace(&format!("Sec-WebSocket-Accept: {ACCEPT}\r\n"), "");
        assert!(matches!(feed(&missing), Err(ResponseError::InvalidAccept)));
        let twice = with(&format!("Sec-WebSocket-Accept: {ACCEPT}\r\n"));
        assert!(matches!(feed(&twice), Err(ResponseError::InvalidAccept)));
    }

    #[test]
    fn protocol_must_be_one_offered() {
        let accepted = feed(&with("Sec-WebSocket-Protocol: superchat\r\n")).unwrap();
        assert_eq!(accepted.protocol(), Some("superchat"));
        for (value, text) in [
            ("Sec-WebSocket-Protocol: other\r\n", "other"),
            ("Sec-WebSocket-Protocol: Chat\r\n", "Chat"),
            (
                "Sec-WebSocket-Protocol: chat, superchat\r\n",
                "chat, superchat",
            ),
            (
                "Sec-WebSocket-Protocol: chat\r\nSec-WebSocket-Protocol: chat\r\n",
                "chat, chat",
            ),
            ("Sec-WebSocket-Protocol: \r\n", ""),
        ] {
            match feed(&with(value)) {
                Err(ResponseError::UnexpectedProtocol(got)) => assert_eq!(got, text),
                other => panic!("{value:?}: {other:?}"),
            }
        }
        let mut plain = ClientHandshake::builder("ws://localhost:8765/", KEY)
            .build()
            .unwrap();
        let text = with("Sec-WebSocket-Protocol: chat\r\n");
        assert!(matches!(
            plain.feed(text.as_bytes()),
            Err(ResponseError::UnexpectedProtocol(_))
        ));
    }

    #[test]
    fn extensions_must_have_been_offered() {
        let error = feed(&with(
            "Sec-WebSocket-Extensions: x-webkit-deflate-frame\r\n",
        ))
        .unwrap_err();
        match error {
            ResponseError::UnexpectedExtension(name) => assert_eq!(name, "x-webkit-deflate-frame"),
            other => panic!("{other:?}"),
        }
        let error = feed(&with("Sec-WebSocket-Extensions: permessage-deflate; =\r\n")).unwrap_err();
        assert!(matches!(error, ResponseError::InvalidExtensions(_)));
        let mut plain = ClientHandshake::builder("ws://localhost:8765/", KEY)
            .build()
            .unwrap();
        let text = with("Sec-WebSocket-Extensions: permessage-deflate\r\n");
        assert!(matches!(
            plain.feed(text.as_bytes()),
            Err(ResponseError::UnexpectedExtension(_))
        ));
    }

    #[test]
    fn limits() {
        let big = with(&format!("Set-Cookie: {}\r\n", "a".repeat(9000)));
        assert!(matches!(
            handshake().feed(big.as_bytes()),
            Err(ResponseError::HeadersTooLarge { limit: 8192 })
        ));
        let mut few = ClientHandshake::builder("ws://h/", KEY)
            .limits(Limits {
                max_headers: 2,
                ..Limits::default()
            })
            .build()
            .unwrap();
        assert!(matches!(
            few.feed(with("").as_bytes()),
            Err(ResponseError::TooManyHeaders { limit: 2 })
        ));
    }

    #[test]
    fn malformed_responses() {
        for (text, reason) in [
            (
                "HTTP/1.1 101 Switching Protocols\n\n",
                "line ends without CR",
            ),
            ("\r\n\r\n", "no status line"),
            ("HTTP/1.1 1O1 OK\r\n\r\n", "invalid status code"),
            ("HTTP/1.1 099 Low\r\n\r\n", "invalid status code"),
            ("SSH-2.0-OpenSSH\r\n\r\n", "invalid HTTP version"),
            (
                "HTTP/1.1 101 OK\r\nBad Name: x\r\n\r\n",
                "invalid header name",
            ),
        ] {
            match handshake().feed(text.as_bytes()) {
                Err(ResponseError::Malformed(got)) => assert_eq!(got, reason, "{text:?}"),
                other => panic!("{text:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn one_outcome_only() {
        let mut handshake = handshake();
        assert!(handshake.feed(with("").as_bytes()).unwrap().is_some());
        assert!(matches!(handshake.feed(b"x"), Err(ResponseError::Finished)));
        let mut handshake = self::handshake();
        assert!(handshake.feed(b"garbage\n").is_err());
        assert!(matches!(handshake.feed(b""), Err(ResponseError::Finished)));
    }

    #[test]
    fn response_parser_reads_any_status_in_pieces_and_keeps_the_rest() {
        let text = b"HTTP/1.1 200 Connection established\r\nVia: proxy\r\n\r\n\x16\x03";
        let head_len = text.len() - 2;
        let mut parser = ResponseParser::new();
        for byte in &text[..head_len - 1] {
            assert!(parser.feed(std::slice::from_ref(byte)).unwrap().is_none());
        }
        let (response, consumed) = parser.feed(&text[head_len - 1..]).unwrap().unwrap();
        assert_eq!(consumed, 1, "the bytes after the head are not consumed");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["via"], "proxy");
    }

    #[test]
    fn response_parser_is_bounded() {
        let mut parser = ResponseParser::with_limits(Limits {
            max_header_size: 64,
            ..Limits::default()
        });
        // A head that never ends fails at the byte past the limit, whatever
        // the chunking.
        assert!(parser.feed(&[b'a'; 64]).unwrap().is_none());
        assert!(matches!(
            parser.feed(b"a"),
            Err(ResponseError::HeadersTooLarge { limit: 64 })
        ));
        assert!(matches!(
            ResponseParser::new().feed(b"HTTP/1.1 200 OK\n\n"),
            Err(ResponseError::Malformed("line ends without CR"))
        ));
    }
}
