//! Building and writing the client's upgrade request (RFC 6455 §4.1).
//!
//! Invariants: a [`ClientHandshake`] holds a request that a server following
//! RFC 6455 accepts: `GET` in HTTP/1.1 with a path target, `Host` from the URI
//! (port only when not the scheme's default), the WebSocket headers exactly
//! once, subprotocols that are distinct tokens, extension offers that follow
//! the grammar, and extra headers that cannot contradict any of these.

use std::collections::HashSet;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::BytesMut;
use http::header::{self, HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{HeaderMap, Method, Request, Uri, Version};

use super::error::RequestError;
use super::response::ResponseParser;
use crate::extension::{ExtensionOffer, format_extensions, is_token, parse_extensions};
use crate::handshake::fields::is_valid_host;
use crate::handshake::wire::write_request_head;
use crate::handshake::{Limits, accept_key};

/// Headers the handshake writes itself, plus those that would give the request
/// a body. Extra headers with these names are refused.
const RESERVED: [HeaderName; 11] = [
    header::HOST,
    header::UPGRADE,
    header::CONNECTION,
    header::ORIGIN,
    header::SEC_WEBSOCKET_KEY,
    header::SEC_WEBSOCKET_VERSION,
    header::SEC_WEBSOCKET_PROTOCOL,
    header::SEC_WEBSOCKET_EXTENSIONS,
    header::SEC_WEBSOCKET_ACCEPT,
    header::CONTENT_LENGTH,
    header::TRANSFER_ENCODING,
];

/// The client's side of one opening handshake: the request to write, then the
/// check of the server's response ([`ClientHandshake::feed`]).
#[derive(Debug)]
pub struct ClientHandshake {
    pub(super) request: Request<()>,
    /// The `Sec-WebSocket-Accept` value the server must send.
    pub(super) accept: String,
    pub(super) protocols: Vec<String>,
    pub(super) extensions: Vec<ExtensionOffer>,
    pub(super) head: ResponseParser,
    pub(super) finished: bool,
}

impl ClientHandshake {
    /// Starts a handshake for `uri` with the caller's 16 random key bytes.
    ///
    /// `uri` is `ws://host[:port][/path][?query]`, `wss://…`, or a path such
    /// as `/chat?room=1` together with [`ClientHandshakeBuilder::host`]. Draw
    /// `key` from a cryptographically secure source, anew for every
    /// connection (RFC 6455 §4.1).
    pub fn builder(uri: &str, key: [u8; 16]) -> ClientHandshakeBuilder {
        ClientHandshakeBuilder {
            uri: uri.to_owned(),
            host: None,
            key,
            origin: None,
            protocols: Vec::new(),
            extensions: Vec::new(),
            headers: HeaderMap::new(),
            limits: Limits::default(),
            error: None,
        }
    }

    /// The request to send.
    pub fn request(&self) -> &Request<()> {
        &self.request
    }

    /// The `Sec-WebSocket-Key` value sent.
    pub fn key(&self) -> &str {
        self.request
            .headers()
            .get(header::SEC_WEBSOCKET_KEY)
            .and_then(|key| key.to_str().ok())
            .unwrap_or_default()
    }

    /// The same request as an HTTP/2 extended `CONNECT` (RFC 8441 §4, §5):
    /// method `CONNECT`, the target as an absolute `https://` (`secure`) or
    /// `http://` URI whose authority is the `Host` value, and the headers
    /// without `Host`, `Upgrade`, `Connection` and `Sec-WebSocket-Key`, which
    /// HTTP/2 does not use. The caller adds the `:protocol` pseudo-header
    /// (`websocket`) the way its HTTP/2 library takes it, and checks the
    /// answer with [`ClientHandshake::check_extended_connect`].
    pub fn extended_connect_request(&self, secure: bool) -> Request<()> {
        let headers = self.request.headers();
        let authority = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default();
        let path = self
            .request
            .uri()
            .path_and_query()
            .map_or("/", PathAndQuery::as_str);
        let scheme = if secure { "https" } else { "http" };
        // The Host value and the target were checked when the request was built.
        let uri = Uri::builder()
            .scheme(scheme)
            .authority(authority)
            .path_and_query(path)
            .build()
            .unwrap_or_default();
        let mut out = HeaderMap::with_capacity(headers.len());
        for (name, value) in headers {
            if ![
                header::HOST,
                header::UPGRADE,
                header::CONNECTION,
                header::SEC_WEBSOCKET_KEY,
            ]
            .contains(name)
            {
                out.append(name, value.clone());
            }
        }
        let mut request = Request::new(());
        *request.method_mut() = Method::CONNECT;
        *request.uri_mut() = uri;
        *request.version_mut() = Version::HTTP_2;
        *request.headers_mut() = out;
        request
    }

    /// Appends the request's bytes to `dst`.
    pub fn write_request(&self, dst: &mut BytesMut) {
        write_request_head(&self.request, dst);
    }
}

/// Options of a [`ClientHandshake`]; made by [`ClientHandshake::builder`].
///
/// Each option is checked by [`ClientHandshakeBuilder::build`], which returns
/// the first problem found.
#[derive(Debug)]
pub struct ClientHandshakeBuilder {
    uri: String,
    host: Option<String>,
    key: [u8; 16],
    origin: Option<String>,
    protocols: Vec<String>,
    extensions: Vec<ExtensionOffer>,
    headers: HeaderMap,
    limits: Limits,
    error: Option<RequestError>,
}

impl ClientHandshakeBuilder {
    /// The `Host` for a path-only URI, such as `example.com` or
    /// `example.com:8080`. With a `ws://` or `wss://` URI, `Host` comes from
    /// the URI and giving one here is an error: this crate does no I/O, so
    /// the URI is free to name the host the server expects.
    pub fn host(mut self, host: &str) -> Self {
        self.host = Some(host.to_owned());
        self
    }

    /// Sends `Origin: origin`, as a browser does.
    pub fn origin(mut self, origin: &str) -> Self {
        self.origin = Some(origin.to_owned());
        self
    }

    /// Offers subprotocols, appended in order of preference.
    pub fn protocols<I, S>(mut self, protocols: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.protocols.extend(protocols.into_iter().map(Into::into));
        self
    }

    /// Offers extensions, appended in order of preference.
    pub fn extensions(mut self, offers: impl IntoIterator<Item = ExtensionOffer>) -> Self {
        self.extensions.extend(offers);
        self
    }

    /// Offers the extensions of a `Sec-WebSocket-Extensions` value, such as
    /// `permessage-deflate; client_max_window_bits`, appended in order.
    pub fn extensions_header(mut self, value: &str) -> Self {
        match parse_extensions([value.as_bytes()]) {
            Ok(offers) => self.extensions.extend(offers),
            Err(error) => {
                self.error.get_or_insert(error.into());
            }
        }
        self
    }

    /// Extra headers, written after the handshake's own, in the map's order.
    ///
    /// They may not name `Host`, `Upgrade`, `Connection`, `Origin`,
    /// `Sec-WebSocket-Key`, `-Version`, `-Protocol`, `-Extensions`,
    /// `-Accept`, `Content-Length` or `Transfer-Encoding`: rather than
    /// silently replacing or repeating a header the handshake writes, `build`
    /// returns [`RequestError::ReservedHeader`]. Use the builder's own options
    /// for those.
    pub fn headers(mut self, headers: HeaderMap) -> Self {
        for (name, value) in &headers {
            self.headers.append(name, value.clone());
        }
        self
    }

    /// Limits on the response's header block.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Checks every option and builds the handshake.
    pub fn build(self) -> Result<ClientHandshake, RequestError> {
        if let Some(error) = self.error {
            return Err(error);
        }
        let (host, target) = host_and_target(&self.uri, self.host.as_deref())?;
        let mut seen = HashSet::with_capacity(self.protocols.len());
        for protocol in &self.protocols {
            if !is_token(protocol) || !seen.insert(protocol) {
                return Err(RequestError::InvalidProtocol(protocol.clone()));
            }
        }
        for offer in &self.extensions {
            let text = offer.to_string();
            if parse_extensions([text.as_bytes()]).ok().as_deref()
                != Some(std::slice::from_ref(offer))
            {
                return Err(RequestError::InvalidExtensionOffer(text));
            }
        }
        if let Some(name) = self.headers.keys().find(|name| RESERVED.contains(name)) {
            return Err(RequestError::ReservedHeader(name.clone()));
        }

        let key = STANDARD.encode(self.key);
        let mut headers = HeaderMap::with_capacity(8 + self.headers.len());
        let host = HeaderValue::from_str(&host).map_err(|_| RequestError::InvalidHost)?;
        headers.insert(header::HOST, host);
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        headers.insert(
            header::SEC_WEBSOCKET_KEY,
            HeaderValue::from_str(&key).expect("base64 is a valid header value"),
        );
        headers.insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        if let Some(origin) = &self.origin {
            let origin = HeaderValue::from_str(origin).map_err(|_| RequestError::InvalidOrigin)?;
            headers.insert(header::ORIGIN, origin);
        }
        if !self.protocols.is_empty() {
            // Tokens joined by ", " are a valid header value.
            let value = HeaderValue::from_str(&self.protocols.join(", "))
                .map_err(|_| RequestError::InvalidProtocol(self.protocols.join(", ")))?;
            headers.insert(header::SEC_WEBSOCKET_PROTOCOL, value);
        }
        if !self.extensions.is_empty() {
            let text = format_extensions(&self.extensions);
            let value = HeaderValue::from_str(&text)
                .map_err(|_| RequestError::InvalidExtensionOffer(text))?;
            headers.insert(header::SEC_WEBSOCKET_EXTENSIONS, value);
        }
        for (name, value) in &self.headers {
            headers.append(name, value.clone());
        }

        let mut request = Request::new(());
        *request.method_mut() = Method::GET;
        *request.uri_mut() = Uri::from(target);
        *request.version_mut() = Version::HTTP_11;
        *request.headers_mut() = headers;
        Ok(ClientHandshake {
            request,
            accept: accept_key(key.as_bytes()),
            protocols: self.protocols,
            extensions: self.extensions,
            head: ResponseParser::with_limits(self.limits),
            finished: false,
        })
    }
}

/// The `Host` value and the origin-form target for `uri`.
fn host_and_target(uri: &str, host: Option<&str>) -> Result<(String, PathAndQuery), RequestError> {
    if uri.contains('#') {
        return Err(RequestError::InvalidUri(
            "fragments are not allowed (RFC 6455 §3)",
        ));
    }
    let uri: Uri = uri
        .parse()
        .map_err(|_| RequestError::InvalidUri("not a URI"))?;
    let path = match uri.path() {
        "" => "/",
        path => path,
    };
    let target = match uri.query() {
        Some(query) => format!("{path}?{query}"),
        None => path.to_owned(),
    };
    let target = PathAndQuery::try_from(target)
        .map_err(|_| RequestError::InvalidUri("invalid path or query"))?;
    let host = match (uri.scheme_str(), uri.authority(), host) {
        (Some(scheme), Some(authority), None) => {
            let default_port = if scheme.eq_ignore_ascii_case("ws") {
                80
            } else if scheme.eq_ignore_ascii_case("wss") {
                443
            } else {
                return Err(RequestError::InvalidUri("scheme must be ws or wss"));
            };
            if authority.as_str().contains('@') {
                return Err(RequestError::InvalidUri("user information is not allowed"));
            }
            if !is_valid_host(authority.as_str()) {
                return Err(RequestError::InvalidUri("invalid host or port"));
            }
            match authority.port_u16() {
                Some(port) if port != default_port => format!("{}:{port}", authority.host()),
                _ => authority.host().to_owned(),
            }
        }
        (Some(_), _, Some(_)) => {
            return Err(RequestError::InvalidUri(
                "host given both in the URI and apart",
            ));
        }
        (None, None, Some(host)) if uri.path().starts_with('/') => {
            if !is_valid_host(host) {
                return Err(RequestError::InvalidHost);
            }
            host.to_owned()
        }
        (None, None, None) => return Err(RequestError::InvalidUri("a path needs a host")),
        _ => return Err(RequestError::InvalidUri("must be ws://, wss:// or a path")),
    };
    Ok((host, target))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 16] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];

    fn written(handshake: &ClientHandshake) -> String {
        let mut dst = BytesMut::new();
        handshake.write_request(&mut dst);
        String::from_utf8(dst.to_vec()).unwrap()
    }

    fn host_of(uri: &str) -> String {
        let handshake = ClientHandshake::builder(uri, KEY).build().unwrap();
        handshake.request().headers()["host"]
            .to_str()
            .unwrap()
            .to_owned()
    }

    #[test]
    fn minimal_request() {
        let handshake = ClientHandshake::builder("ws://example.com/chat", KEY)
            .build()
            .unwrap();
        assert_eq!(handshake.key(), "AAECAwQFBgcICQoLDA0ODw==");
        assert_eq!(
            written(&handshake),
            "GET /chat HTTP/1.1\r\n\
             Host: example.com\r\n\
             Upgrade: websocket\r\n\
             Connection: Upgrade\r\n\
             Sec-WebSocket-Key: AAECAwQFBgcICQoLDA0ODw==\r\n\
             Sec-WebSocket-Version: 13\r\n\
             \r\n"
        );
    }

    #[test]
    fn full_request() {
        let mut extra = HeaderMap::new();
        extra.insert("authorization", HeaderValue::from_static("Bearer t"));
        extra.append("x-trace", HeaderValue::from_static("1"));
        let handshake = ClientHandshake::builder("wss://example.com:8443/chat?room=1", KEY)
            .origin("https://example.com")
            .protocols(["v2.chat", "v1.chat"])
            .extensions_header("permessage-deflate; client_max_window_bits")
            .extensions([ExtensionOffer::new("x-test").param("a", Some("1".into()))])
            .headers(extra)
            .build()
            .unwrap();
        assert_eq!(
            written(&handshake),
            "GET /chat?room=1 HTTP/1.1\r\n\
             Host: example.com:8443\r\n\
             Upgrade: websocket\r\n\
             Connection: Upgrade\r\n\
             Sec-WebSocket-Key: AAECAwQFBgcICQoLDA0ODw==\r\n\
             Sec-WebSocket-Version: 13\r\n\
             Origin: https://example.com\r\n\
             Sec-WebSocket-Protocol: v2.chat, v1.chat\r\n\
             Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits, x-test; a=1\r\n\
             authorization: Bearer t\r\n\
             x-trace: 1\r\n\
             \r\n"
        );
        assert_eq!(handshake.request().uri(), "/chat?room=1");
    }

    #[test]
    fn host_has_a_port_only_when_not_the_default() {
        assert_eq!(host_of("ws://example.com"), "example.com");
        assert_eq!(host_of("ws://example.com:80/"), "example.com");
        assert_eq!(host_of("ws://example.com:443/"), "example.com:443");
        assert_eq!(host_of("wss://example.com:443/"), "example.com");
        assert_eq!(host_of("wss://example.com:80/"), "example.com:80");
        assert_eq!(host_of("WSS://Example.com:8443/"), "Example.com:8443");
        assert_eq!(host_of("ws://[::1]:9000/"), "[::1]:9000");
        assert_eq!(host_of("ws://127.0.0.1:80/"), "127.0.0.1");
    }

    #[test]
    fn target_is_the_path_and_query() {
        for (uri, line) in [
            ("ws://example.com", "GET / HTTP/1.1\r\n"),
            ("ws://example.com?x=1", "GET /?x=1 HTTP/1.1\r\n"),
            ("ws://example.com/a/b?x=1&y", "GET /a/b?x=1&y HTTP/1.1\r\n"),
        ] {
            let handshake = ClientHandshake::builder(uri, KEY).build().unwrap();
            assert!(written(&handshake).starts_with(line), "{uri}");
        }
    }

    #[test]
    fn path_with_a_host() {
        let handshake = ClientHandshake::builder("/chat?x=1", KEY)
            .host("localhost:9001")
            .build()
            .unwrap();
        let text = written(&handshake);
        assert!(text.starts_with("GET /chat?x=1 HTTP/1.1\r\nHost: localhost:9001\r\n"));
    }

    #[test]
    fn invalid_uris() {
        for (uri, host, error) in [
            (
                "ws://example.com/#frag",
                None,
                "fragments are not allowed (RFC 6455 §3)",
            ),
            ("http://example.com/", None, "scheme must be ws or wss"),
            (
                "ws://user:pw@example.com/",
                None,
                "user information is not allowed",
            ),
            ("ws://example.com:port/", None, "invalid host or port"),
            ("/chat", None, "a path needs a host"),
            (
                "ws://example.com/",
                Some("other.example"),
                "host given both in the URI and apart",
            ),
            ("example.com:80", None, "must be ws://, wss:// or a path"),
            (
                "example.com:80",
                Some("example.com"),
                "must be ws://, wss:// or a path",
            ),
            ("*", Some("example.com"), "must be ws://, wss:// or a path"),
            ("ws://exa mple.com/", None, "not a URI"),
            ("", None, "not a URI"),
        ] {
            let mut builder = ClientHandshake::builder(uri, KEY);
            if let Some(host) = host {
                builder = builder.host(host);
            }
            assert_eq!(
                builder.build().unwrap_err(),
                RequestError::InvalidUri(error),
                "{uri}"
            );
        }
    }

    #[test]
    fn invalid_host_for_a_path() {
        for host in ["", "user@example.com", "example.com:99999", "a b"] {
            assert_eq!(
                ClientHandshake::builder("/", KEY)
                    .host(host)
                    .build()
                    .unwrap_err(),
                RequestError::InvalidHost,
                "{host}"
            );
        }
    }

    #[test]
    fn protocols_must_be_distinct_tokens() {
        for protocols in [&["chat", "chat"][..], &["a b"], &[""], &["chat\r\nx: y"]] {
            let error = ClientHandshake::builder("ws://h/", KEY)
                .protocols(protocols.iter().copied())
                .build()
                .unwrap_err();
            assert!(
                matches!(error, RequestError::InvalidProtocol(_)),
                "{protocols:?}"
            );
        }
    }

    #[test]
    fn extension_offers_must_follow_the_grammar() {
        let error = ClientHandshake::builder("ws://h/", KEY)
            .extensions([ExtensionOffer::new("bad name")])
            .build()
            .unwrap_err();
        assert_eq!(
            error,
            RequestError::InvalidExtensionOffer("bad name".into())
        );
        let error = ClientHandshake::builder("ws://h/", KEY)
            .extensions([ExtensionOffer::new("x").param("p", Some("a\r\nb".into()))])
            .build()
            .unwrap_err();
        assert_eq!(
            error,
            RequestError::InvalidExtensionOffer("x; p=a\r\nb".into())
        );
        let error = ClientHandshake::builder("ws://h/", KEY)
            .extensions_header("permessage-deflate;")
            .build()
            .unwrap_err();
        assert!(matches!(error, RequestError::InvalidExtensions(_)));
    }

    #[test]
    fn invalid_origin() {
        assert_eq!(
            ClientHandshake::builder("ws://h/", KEY)
                .origin("https://h\r\nx: y")
                .build()
                .unwrap_err(),
            RequestError::InvalidOrigin
        );
    }

    #[test]
    fn extra_headers_may_not_override_the_handshake() {
        for name in RESERVED {
            let mut extra = HeaderMap::new();
            extra.insert(name.clone(), HeaderValue::from_static("x"));
            assert_eq!(
                ClientHandshake::builder("ws://h/", KEY)
                    .headers(extra)
                    .build()
                    .unwrap_err(),
                RequestError::ReservedHeader(name)
            );
        }
    }
}
