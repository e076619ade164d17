//! A validated WebSocket upgrade request (RFC 6455 §4.2.1).
//!
//! Invariant: an [`UpgradeRequest`] exists only for a request that passed
//! every check of [`UpgradeRequest::validate`], so its accessors never fail:
//! `GET`, HTTP/1.1 or later, a path or absolute target, one valid `Host`, no
//! body, `Upgrade` listing `websocket`, `Connection` listing `upgrade`, one
//! `Sec-WebSocket-Version: 13`, one `Sec-WebSocket-Key` that is the base64 of
//! 16 bytes, at most one visible-ASCII `Origin`, distinct subprotocol tokens
//! and a well-formed extension list.
//!
//! An HTTP/2 extended `CONNECT` (RFC 8441 §4, §5) is validated by
//! [`UpgradeRequest::validate_extended_connect`] into the same type, so an
//! application decides on both alike: `CONNECT` with `:protocol` `websocket`,
//! an http(s) target with a path and an authority (the `Host` equivalent),
//! one `Sec-WebSocket-Version: 13`, and the same `Origin`, subprotocol and
//! extension rules, checked by the same code. It has no `Sec-WebSocket-Key`
//! ([`UpgradeRequest::key`] is empty) and
//! [`UpgradeRequest::is_extended_connect`] is true.

use std::collections::HashSet;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http::header::{self, HeaderValue};
use http::{HeaderMap, Method, Request, Uri, Version};

use super::error::HandshakeError;
use crate::extension::{ExtensionOffer, parse_extensions};
use crate::handshake::fields::{has_token, is_valid_host, single, token_list, trim_ows};

/// A client's request to open a WebSocket, checked against RFC 6455.
///
/// Decide on it (path, origin, subprotocol, extensions, cookies), then answer
/// with [`super::accept_response`] or a rejection.
#[derive(Debug, Clone)]
pub struct UpgradeRequest {
    request: Request<()>,
    host: String,
    key: String,
    protocols: Vec<String>,
    extensions: Vec<ExtensionOffer>,
    extended_connect: bool,
}

impl UpgradeRequest {
    /// Checks `request` and wraps it; works as well on a request parsed by
    /// another HTTP server (take its parts and drop the body).
    ///
    /// The checks run in this order and the first failure is returned:
    /// method `GET` ([`HandshakeError::MethodNotAllowed`], 405), version
    /// ([`HandshakeError::HttpVersion`]), target, `Host`, no body, `Upgrade:
    /// websocket` ([`HandshakeError::NotWebSocket`], 426), `Connection:
    /// upgrade`, `Sec-WebSocket-Version: 13`
    /// ([`HandshakeError::UnsupportedVersion`], 426), `Sec-WebSocket-Key`,
    /// `Origin`, `Sec-WebSocket-Protocol`, `Sec-WebSocket-Extensions`. The
    /// version is checked before the key, so a client of another protocol
    /// version, whose key may differ, learns that this server speaks 13.
    pub fn validate(request: Request<()>) -> Result<Self, HandshakeError> {
        if request.method() != Method::GET {
            return Err(HandshakeError::MethodNotAllowed(request.method().clone()));
        }
        if request.version() < Version::HTTP_11 {
            return Err(HandshakeError::HttpVersion(request.version()));
        }
        if !is_valid_target(request.uri()) {
            return Err(HandshakeError::InvalidTarget);
        }
        let headers = request.headers();
        let host = valid_host(headers).ok_or(HandshakeError::InvalidHost)?;
        let has_body = headers.contains_key(header::TRANSFER_ENCODING)
            || headers
                .get_all(header::CONTENT_LENGTH)
                .into_iter()
                .any(|value| trim_ows(value.as_bytes()) != b"0");
        if has_body {
            return Err(HandshakeError::UnexpectedBody);
        }
        if !has_token(headers, header::UPGRADE, "websocket") {
            return Err(HandshakeError::NotWebSocket);
        }
        if !has_token(headers, header::CONNECTION, "upgrade") {
            return Err(HandshakeError::MissingConnectionUpgrade);
        }
        match single(headers, header::SEC_WEBSOCKET_VERSION) {
            Ok(Some(version)) if trim_ows(version.as_bytes()) == b"13" => {}
            _ => return Err(HandshakeError::UnsupportedVersion),
        }
        let key = valid_key(headers).ok_or(HandshakeError::InvalidKey)?;
        let (protocols, extensions) = negotiable(headers)?;
        Ok(Self {
            request,
            host,
            key,
            protocols,
            extensions,
            extended_connect: false,
        })
    }

    /// Checks an HTTP/2 extended `CONNECT` (RFC 8441) whose `:protocol`
    /// pseudo-header is `protocol` (`None` when absent) and wraps it.
    ///
    /// The checks run in this order and the first failure is returned:
    /// method `CONNECT` ([`HandshakeError::MethodNotAllowed`]), `:protocol`
    /// `websocket` ([`HandshakeError::ExtendedConnectProtocol`], 400), a
    /// target with an http(s) scheme, a path and an authority
    /// ([`HandshakeError::InvalidTarget`]), `Sec-WebSocket-Version: 13`
    /// ([`HandshakeError::UnsupportedVersion`]), then `Origin`,
    /// `Sec-WebSocket-Protocol` and `Sec-WebSocket-Extensions` as
    /// [`UpgradeRequest::validate`] checks them. `Upgrade`, `Connection` and
    /// `Sec-WebSocket-Key` are not used (RFC 8441 §5) and not checked.
    pub fn validate_extended_connect(
        request: Request<()>,
        protocol: Option<&str>,
    ) -> Result<Self, HandshakeError> {
        if request.method() != Method::CONNECT {
            return Err(HandshakeError::MethodNotAllowed(request.method().clone()));
        }
        if !protocol.is_some_and(|p| p.eq_ignore_ascii_case("websocket")) {
            return Err(HandshakeError::ExtendedConnectProtocol(
                protocol.map(str::to_owned),
            ));
        }
        let uri = request.uri();
        let scheme_ok = uri
            .scheme_str()
            .is_some_and(|s| s.eq_ignore_ascii_case("http") || s.eq_ignore_ascii_case("https"));
        let host = uri
            .authority()
            .map(http::uri::Authority::as_str)
            .filter(|a| !a.contains('@') && is_valid_host(a))
            .filter(|_| scheme_ok && uri.path().starts_with('/'))
            .map(str::to_owned)
            .ok_or(HandshakeError::InvalidTarget)?;
        let headers = request.headers();
        match single(headers, header::SEC_WEBSOCKET_VERSION) {
            Ok(Some(version)) if trim_ows(version.as_bytes()) == b"13" => {}
            _ => return Err(HandshakeError::UnsupportedVersion),
        }
        let (protocols, extensions) = negotiable(headers)?;
        Ok(Self {
            request,
            host,
            key: String::new(),
            protocols,
            extensions,
            extended_connect: true,
        })
    }

    /// Whether this is an HTTP/2 extended `CONNECT` (RFC 8441), accepted
    /// with `200` rather than `101`.
    pub fn is_extended_connect(&self) -> bool {
        self.extended_connect
    }

    /// The request as parsed.
    pub fn request(&self) -> &Request<()> {
        &self.request
    }

    /// The request as parsed, by value.
    pub fn into_request(self) -> Request<()> {
        self.request
    }

    /// The request target.
    pub fn uri(&self) -> &Uri {
        self.request.uri()
    }

    /// The target's path, such as `/chat`.
    pub fn path(&self) -> &str {
        self.request.uri().path()
    }

    /// The target's query, without the `?`, if there is one.
    pub fn query(&self) -> Option<&str> {
        self.request.uri().query()
    }

    /// All header fields, repeated lines included.
    pub fn headers(&self) -> &HeaderMap {
        self.request.headers()
    }

    /// The `Host` header: a host and an optional port.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The `Origin` header, sent by browsers; check it against the origins you
    /// serve, and refuse with [`HandshakeError::Forbidden`].
    pub fn origin(&self) -> Option<&str> {
        let origin = self.request.headers().get(header::ORIGIN)?;
        origin.to_str().ok()
    }

    /// The `Sec-WebSocket-Key` value, as sent (24 characters of base64);
    /// empty for an extended `CONNECT`, which has no key (RFC 8441 §5).
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The subprotocols the client offers, in its order of preference, over
    /// all `Sec-WebSocket-Protocol` lines.
    pub fn protocols(&self) -> &[String] {
        &self.protocols
    }

    /// The extensions the client offers, in its order of preference, over all
    /// `Sec-WebSocket-Extensions` lines.
    pub fn extensions(&self) -> &[ExtensionOffer] {
        &self.extensions
    }

    /// The `name=value` pairs of all `Cookie` headers, in order (RFC 6265
    /// §5.4). Pairs without `=` or in non-ASCII lines are skipped; values are
    /// returned as sent, quotes included.
    pub fn cookies(&self) -> impl Iterator<Item = (&str, &str)> {
        self.request
            .headers()
            .get_all(header::COOKIE)
            .into_iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|line| line.split(';'))
            .filter_map(|pair| {
                let (name, value) = pair.split_once('=')?;
                let name = name.trim_matches([' ', '\t']);
                (!name.is_empty()).then_some((name, value.trim_matches([' ', '\t'])))
            })
    }

    /// The value of the first cookie called `name`.
    pub fn cookie(&self, name: &str) -> Option<&str> {
        self.cookies()
            .find(|&(cookie, _)| cookie == name)
            .map(|(_, value)| value)
    }
}

/// The `Origin`, subprotocol and extension checks both HTTP versions share:
/// the offered subprotocols and extensions.
fn negotiable(headers: &HeaderMap) -> Result<(Vec<String>, Vec<ExtensionOffer>), HandshakeError> {
    match single(headers, header::ORIGIN) {
        Ok(None) => {}
        Ok(Some(origin)) if origin.to_str().is_ok() => {}
        _ => return Err(HandshakeError::InvalidOrigin),
    }
    let protocols = token_list(headers, header::SEC_WEBSOCKET_PROTOCOL)
        .filter(|protocols| {
            let mut seen = HashSet::with_capacity(protocols.len());
            protocols.iter().all(|protocol| seen.insert(protocol))
        })
        .ok_or(HandshakeError::InvalidProtocols)?;
    let extensions = parse_extensions(
        headers
            .get_all(header::SEC_WEBSOCKET_EXTENSIONS)
            .into_iter()
            .map(HeaderValue::as_bytes),
    )?;
    Ok((protocols, extensions))
}

/// A path (origin form), or an absolute http, https, ws or wss URI with a host.
fn is_valid_target(uri: &Uri) -> bool {
    match uri.scheme_str() {
        None => uri.authority().is_none() && uri.path().starts_with('/'),
        Some(scheme) => {
            ["http", "https", "ws", "wss"]
                .iter()
                .any(|known| scheme.eq_ignore_ascii_case(known))
                && uri.host().is_some_and(|host| !host.is_empty())
        }
    }
}

/// The one `Host` value, if valid.
fn valid_host(headers: &HeaderMap) -> Option<String> {
    let host = single(headers, header::HOST).ok()??.to_str().ok()?;
    is_valid_host(host).then(|| host.to_owned())
}

/// The one `Sec-WebSocket-Key` value, if it is the base64 of 16 bytes.
fn valid_key(headers: &HeaderMap) -> Option<String> {
    let key = trim_ows(single(headers, header::SEC_WEBSOCKET_KEY).ok()??.as_bytes());
    let decoded = STANDARD.decode(key).ok()?;
    let valid = key.len() == 24 && decoded.len() == 16;
    // Base64 is ASCII.
    valid.then(|| String::from_utf8_lossy(key).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handshake::peers::{CHROMIUM, FIREFOX, NODE, PYTHON};
    use crate::handshake::server::RequestParser;

    /// A minimal valid request with `extra` header lines inserted.
    fn with(extra: &str) -> String {
        format!(
            "GET /chat HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: AAECAwQFBgcICQoLDA0ODw==\r\n\
             Sec-WebSocket-Version: 13\r\n{extra}\r\n"
        )
    }

    /// A request built from `lines` (each without CRLF).
    fn lines(lines: &[&str]) -> String {
        let mut text = lines.join("\r\n");
        text.push_str("\r\n\r\n");
        text
    }

    fn parse(text: &str) -> Result<UpgradeRequest, HandshakeError> {
        let (request, consumed) = RequestParser::new()
            .feed(text.as_bytes())?
            .expect("a complete header block");
        assert_eq!(consumed, text.len());
        Ok(request)
    }

    fn deflate(params: &[&str]) -> ExtensionOffer {
        params
            .iter()
            .fold(ExtensionOffer::new("permessage-deflate"), |offer, p| {
                offer.param(*p, None)
            })
    }

    #[test]
    fn chromium() {
        let request = parse(CHROMIUM).unwrap();
        assert_eq!(request.path(), "/chat");
        assert_eq!(request.query(), Some("room=1"));
        assert_eq!(request.host(), "localhost:8080");
        assert_eq!(request.origin(), Some("http://localhost:8080"));
        assert_eq!(request.key(), "dGhlIHNhbXBsZSBub25jZQ==");
        assert_eq!(request.protocols(), &[] as &[String]);
        assert_eq!(request.extensions(), [deflate(&["client_max_window_bits"])]);
        assert_eq!(request.headers().len(), 13);
        assert_eq!(request.request().version(), Version::HTTP_11);
        assert_eq!(
            request.cookies().collect::<Vec<_>>(),
            [("session", "abc123"), ("theme", "dark")]
        );
        assert_eq!(request.cookie("theme"), Some("dark"));
        assert_eq!(request.cookie("missing"), None);
    }

    #[test]
    fn firefox_keep_alive_upgrade() {
        let request = parse(FIREFOX).unwrap();
        assert_eq!(request.path(), "/chat");
        assert_eq!(request.query(), None);
        assert_eq!(request.protocols(), ["chat", "superchat"]);
        assert_eq!(request.extensions(), [deflate(&[])]);
    }

    #[test]
    fn python_websockets() {
        let request = parse(PYTHON).unwrap();
        assert_eq!(request.path(), "/");
        assert_eq!(request.host(), "localhost:8765");
        assert_eq!(request.origin(), None);
        assert_eq!(request.extensions(), [deflate(&["client_max_window_bits"])]);
    }

    #[test]
    fn node_ws() {
        let request = parse(NODE).unwrap();
        assert_eq!(request.path(), "/socket");
        assert_eq!(request.host(), "127.0.0.1:9001");
        assert_eq!(request.key(), "AAECAwQFBgcICQoLDA0ODw==");
        assert_eq!(request.extensions(), [deflate(&["client_max_window_bits"])]);
    }

    #[test]
    fn autobahn_three_offers_in_one_line() {
        let request = parse(&with(
            "Sec-WebSocket-Extensions: permessage-deflate; client_no_context_takeover; \
             client_max_window_bits, permessage-deflate; client_no_context_takeover, \
             permessage-deflate\r\n",
        ))
        .unwrap();
        assert_eq!(
            request.extensions(),
            [
                deflate(&["client_no_context_takeover", "client_max_window_bits"]),
                deflate(&["client_no_context_takeover"]),
                deflate(&[]),
            ]
        );
    }

    #[test]
    fn repeated_protocol_and_extension_lines_are_combined() {
        let request = parse(&with(
            "Sec-WebSocket-Protocol: v2.chat\r\nSec-WebSocket-Extensions: x-a; p=1\r\n\
             Sec-WebSocket-Protocol: v1.chat , json\r\nSec-WebSocket-Extensions: x-b\r\n",
        ))
        .unwrap();
        assert_eq!(request.protocols(), ["v2.chat", "v1.chat", "json"]);
        assert_eq!(
            request.extensions(),
            [
                ExtensionOffer::new("x-a").param("p", Some("1".into())),
                ExtensionOffer::new("x-b"),
            ]
        );
    }

    #[test]
    fn header_names_and_tokens_are_case_insensitive() {
        let request = parse(&lines(&[
            "GET /chat HTTP/1.1",
            "HOST: example.com",
            "upgrade: WebSocket",
            "CONNECTION: UPGRADE",
            "sec-websocket-key: AAECAwQFBgcICQoLDA0ODw==",
            "SEC-WEBSOCKET-VERSION: 13",
        ]))
        .unwrap();
        assert_eq!(request.host(), "example.com");
    }

    #[test]
    fn absolute_target() {
        let request = parse(&lines(&[
            "GET ws://example.com/chat?x=1 HTTP/1.1",
            "Host: example.com",
            "Upgrade: websocket",
            "Connection: Upgrade",
            "Sec-WebSocket-Key: AAECAwQFBgcICQoLDA0ODw==",
            "Sec-WebSocket-Version: 13",
        ]))
        .unwrap();
        assert_eq!(request.path(), "/chat");
        assert_eq!(request.query(), Some("x=1"));
    }

    #[test]
    fn zero_content_length_is_no_body() {
        assert!(parse(&with("Content-Length: 0\r\n")).is_ok());
    }

    #[test]
    fn other_methods_get_405() {
        let text = CHROMIUM.replacen("GET", "POST", 1);
        assert_eq!(
            parse(&text).unwrap_err(),
            HandshakeError::MethodNotAllowed(Method::POST)
        );
        // Methods are case-sensitive.
        let text = CHROMIUM.replacen("GET", "get", 1);
        assert_eq!(parse(&text).unwrap_err().status().as_u16(), 405);
    }

    #[test]
    fn http_1_0_is_refused() {
        let text = CHROMIUM.replacen("HTTP/1.1", "HTTP/1.0", 1);
        assert_eq!(
            parse(&text).unwrap_err(),
            HandshakeError::HttpVersion(Version::HTTP_10)
        );
    }

    #[test]
    fn invalid_targets() {
        for target in ["*", "example.com:80", "ftp://example.com/"] {
            let text = CHROMIUM.replacen("/chat?room=1", target, 1);
            assert_eq!(
                parse(&text).unwrap_err(),
                HandshakeError::InvalidTarget,
                "{target}"
            );
        }
    }

    #[test]
    fn host_is_required_once_and_valid() {
        let missing = CHROMIUM.replacen("Host: localhost:8080\r\n", "", 1);
        assert_eq!(parse(&missing).unwrap_err(), HandshakeError::InvalidHost);
        let twice = with("Host: example.com\r\n");
        assert_eq!(parse(&twice).unwrap_err(), HandshakeError::InvalidHost);
        for host in ["", "user@example.com", "exa mple.com", "example.com:port"] {
            let text = CHROMIUM.replacen("localhost:8080\r\n", &format!("{host}\r\n"), 1);
            assert_eq!(
                parse(&text).unwrap_err(),
                HandshakeError::InvalidHost,
                "{host}"
            );
        }
    }

    #[test]
    fn body_is_refused() {
        for line in ["Content-Length: 5\r\n", "Transfer-Encoding: chunked\r\n"] {
            assert_eq!(
                parse(&with(line)).unwrap_err(),
                HandshakeError::UnexpectedBody
            );
        }
    }

    #[test]
    fn plain_get_gets_426() {
        let text = lines(&["GET / HTTP/1.1", "Host: example.com", "Accept: text/html"]);
        let error = parse(&text).unwrap_err();
        assert_eq!(error, HandshakeError::NotWebSocket);
        assert_eq!(error.status().as_u16(), 426);
        let text = CHROMIUM.replacen("Upgrade: websocket", "Upgrade: h2c", 1);
        assert_eq!(parse(&text).unwrap_err(), HandshakeError::NotWebSocket);
    }

    #[test]
    fn connection_must_list_upgrade() {
        for connection in ["keep-alive", "upgrader", ""] {
            let text = CHROMIUM.replacen(
                "Connection: Upgrade",
                &format!("Connection: {connection}"),
                1,
            );
            assert_eq!(
                parse(&text).unwrap_err(),
                HandshakeError::MissingConnectionUpgrade
            );
        }
        let text = CHROMIUM.replacen(
            "Connection: Upgrade",
            "Connection: close\r\nConnection: Upgrade",
            1,
        );
        assert!(parse(&text).is_ok());
    }

    #[test]
    fn version_must_be_13() {
        for version in ["8", "13, 8", "", "13\r\nSec-WebSocket-Version: 13"] {
            let text = CHROMIUM.replacen(
                "Sec-WebSocket-Version: 13",
                &format!("Sec-WebSocket-Version: {version}"),
                1,
            );
            let error = parse(&text).unwrap_err();
            assert_eq!(error, HandshakeError::UnsupportedVersion, "{version}");
            assert_eq!(error.to_response().headers()["sec-websocket-version"], "13");
        }
        let missing = CHROMIUM.replacen("Sec-WebSocket-Version: 13\r\n", "", 1);
        assert_eq!(
            parse(&missing).unwrap_err(),
            HandshakeError::UnsupportedVersion
        );
    }

    #[test]
    fn version_is_checked_before_key() {
        // A hybi-00 style client: no Sec-WebSocket-Key, another version.
        let text = lines(&[
            "GET / HTTP/1.1",
            "Host: example.com",
            "Upgrade: websocket",
            "Connection: Upgrade",
            "Sec-WebSocket-Version: 8",
        ]);
        assert_eq!(
            parse(&text).unwrap_err(),
            HandshakeError::UnsupportedVersion
        );
    }

    #[test]
    fn key_must_be_base64_of_16_bytes() {
        for key in [
            "",
            "dGhlIHNhbXBsZSBub25jZQ",     // unpadded
            "dGhlIHNhbXBsZSBub25jZR==",   // non-canonical trailing bits
            "dGhlIHNhbXBsZSBub25jZQ==AA", // 17+ bytes
            "AAECAwQFBgcICQoLDA0O",       // 15 bytes
            "AAECAwQFBgcICQoLDA0ODxA=",   // 17 bytes
            "!!ECAwQFBgcICQoLDA0ODw==",
        ] {
            let text = CHROMIUM.replacen("dGhlIHNhbXBsZSBub25jZQ==", key, 1);
            assert_eq!(
                parse(&text).unwrap_err(),
                HandshakeError::InvalidKey,
                "{key}"
            );
        }
        let missing = CHROMIUM.replacen("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", "", 1);
        assert_eq!(parse(&missing).unwrap_err(), HandshakeError::InvalidKey);
        let twice = with("Sec-WebSocket-Key: AAECAwQFBgcICQoLDA0ODw==\r\n");
        assert_eq!(parse(&twice).unwrap_err(), HandshakeError::InvalidKey);
    }

    #[test]
    fn origin_at_most_once() {
        let twice = with("Origin: https://a.example\r\nOrigin: https://b.example\r\n");
        assert_eq!(parse(&twice).unwrap_err(), HandshakeError::InvalidOrigin);
        let non_ascii = with("Origin: https://\u{e9}.example\r\n");
        assert_eq!(
            parse(&non_ascii).unwrap_err(),
            HandshakeError::InvalidOrigin
        );
    }

    #[test]
    fn protocols_must_be_distinct_tokens() {
        for value in ["chat, a b", "chat, chat", "\"chat\"", "chat/1.0"] {
            let text = with(&format!("Sec-WebSocket-Protocol: {value}\r\n"));
            assert_eq!(
                parse(&text).unwrap_err(),
                HandshakeError::InvalidProtocols,
                "{value}"
            );
        }
        let text = with("Sec-WebSocket-Protocol: chat\r\nSec-WebSocket-Protocol: chat\r\n");
        assert_eq!(parse(&text).unwrap_err(), HandshakeError::InvalidProtocols);
        // Empty elements are skipped.
        let request = parse(&with("Sec-WebSocket-Protocol: , chat,\r\n")).unwrap();
        assert_eq!(request.protocols(), ["chat"]);
    }

    #[test]
    fn malformed_extensions_get_400() {
        let error = parse(&with(
            "Sec-WebSocket-Extensions: permessage-deflate; =1\r\n",
        ))
        .unwrap_err();
        assert!(matches!(error, HandshakeError::InvalidExtensions(_)));
        assert_eq!(error.status().as_u16(), 400);
    }

    #[test]
    fn validate_a_request_from_elsewhere() {
        let request = Request::get("/chat")
            .header("host", "example.com")
            .header("upgrade", "websocket")
            .header("connection", "upgrade")
            .header("sec-websocket-key", " AAECAwQFBgcICQoLDA0ODw== ")
            .header("sec-websocket-version", "13")
            .body(())
            .unwrap();
        let request = UpgradeRequest::validate(request).unwrap();
        assert_eq!(request.key(), "AAECAwQFBgcICQoLDA0ODw==");
        assert_eq!(request.into_request().uri(), "/chat");
        let request = Request::get("/chat")
            .version(Version::HTTP_2)
            .header("host", "example.com")
            .body(())
            .unwrap();
        assert_eq!(
            UpgradeRequest::validate(request).unwrap_err(),
            HandshakeError::NotWebSocket
        );
    }

    #[test]
    fn cookies_skip_malformed_pairs() {
        let request = parse(&with("Cookie: a=1; junk; =2; b = 3 \r\nCookie: a=4\r\n")).unwrap();
        assert_eq!(
            request.cookies().collect::<Vec<_>>(),
            [("a", "1"), ("b", "3"), ("a", "4")]
        );
        assert_eq!(request.cookie("a"), Some("1"));
    }
}
