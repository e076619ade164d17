//! Reaching a server through an HTTP proxy with `CONNECT` (RFC 9110 §9.3.6),
//! as browsers do for `ws://` and `wss://`.
//!
//! Invariants:
//! - The proxy's answer is read by duplex-proto's bounded response-head
//!   reader ([`ResponseParser`], the one the WebSocket handshake uses), so it
//!   is bounded in size ([`MAX_RESPONSE_HEAD`] bytes, [`MAX_RESPONSE_HEADERS`]
//!   lines) and every line must end in CRLF; the whole exchange (TCP connect
//!   to the proxy, `CONNECT`, answer) is bounded in time ([`Proxy::timeout`]),
//!   and the client's handshake timeout bounds it as well.
//! - Not one byte after the proxy's response head is consumed: the head is
//!   found by peeking, so whatever the proxy relays after it stays in the
//!   socket for TLS or the WebSocket handshake.
//! - Any 2xx opens the tunnel; 407 and every other status end in
//!   [`Error::Proxy`] with a [`ProxyError`] holding the status. Credentials
//!   never appear in an error or in `Debug` output.
//! - The environment is read only by [`Proxy::from_env`], which the transport
//!   calls only when [`Options::use_env_proxy`](crate::transport::Options::use_env_proxy)
//!   is set.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use duplex_proto::handshake::Limits;
use duplex_proto::handshake::client::ResponseParser;
use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::Error;
use crate::error::ProxyError;

/// Largest proxy response head read (status line and headers).
pub const MAX_RESPONSE_HEAD: usize = 8 * 1024;

/// Most header lines accepted in the proxy's response.
pub const MAX_RESPONSE_HEADERS: usize = 64;

/// An HTTP proxy that tunnels with `CONNECT`, with optional basic
/// authentication.
#[derive(Clone, PartialEq, Eq)]
pub struct Proxy {
    host: String,
    port: u16,
    credentials: Option<(String, String)>,
    timeout: Duration,
}

impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Proxy")
            .field("host", &self.host)
            .field("port", &self.port)
            .field(
                "credentials",
                &self
                    .credentials
                    .as_ref()
                    .map(|(user, _)| (user, "<redacted>")),
            )
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Proxy {
    /// A proxy from its URL: `http://[user[:password]@]host[:port]` (port 80
    /// by default; the scheme may be left out). User and password may be
    /// percent-encoded. Proxies spoken to over TLS (`https://`) and SOCKS
    /// proxies are not supported.
    pub fn new(url: &str) -> Result<Self, Error> {
        let url = url.trim();
        let rest = match url.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
            Some((scheme, _)) => {
                return Err(ProxyError::UnsupportedScheme(scheme.to_owned()).into());
            }
            None => url,
        };
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((userinfo, hostport)) => (Some(userinfo), hostport),
            None => (None, authority),
        };
        let parsed: http::uri::Authority =
            hostport.parse().map_err(|source| ProxyError::Address {
                address: hostport.to_owned(),
                source,
            })?;
        let port = crate::transport::explicit_port(&parsed).map_err(|_| ProxyError::Port {
            address: hostport.to_owned(),
        })?;
        let host = parsed
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        if host.is_empty() {
            return Err(ProxyError::NoHost.into());
        }
        let credentials = match userinfo {
            Some(userinfo) => {
                let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
                Some((percent_decode(user)?, percent_decode(password)?))
            }
            None => None,
        };
        Ok(Self {
            host,
            port: port.unwrap_or(80),
            credentials,
            timeout: Duration::from_secs(10),
        })
    }

    /// Sends `Proxy-Authorization: Basic …` with these credentials, replacing
    /// any from the URL.
    pub fn basic_auth(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.credentials = Some((user.into(), password.into()));
        self
    }

    /// Bounds the whole tunnel setup: TCP connect to the proxy, `CONNECT` and
    /// its answer (default 10 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The proxy's host name or IP address.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The proxy's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The proxy the environment names for `target_url`: `https_proxy` (or
    /// `HTTPS_PROXY`) for `wss://`, `http_proxy` (or `HTTP_PROXY`) for
    /// `ws://`, lowercase first; `None` when it names none or when
    /// `no_proxy` (or `NO_PROXY`) matches the target (see
    /// [`no_proxy_matches`]).
    pub fn from_env(target_url: &str) -> Result<Option<Self>, Error> {
        Self::from_lookup(target_url, |name| std::env::var(name).ok())
    }

    /// [`Proxy::from_env`] with variables read by `lookup`.
    fn from_lookup(
        target_url: &str,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>, Error> {
        let (host, port, tls) = crate::transport::target(target_url)?;
        let names = if tls {
            ["https_proxy", "HTTPS_PROXY"]
        } else {
            ["http_proxy", "HTTP_PROXY"]
        };
        let get = |names: [&str; 2]| {
            names
                .into_iter()
                .find_map(|name| lookup(name).filter(|value| !value.trim().is_empty()))
        };
        let Some(url) = get(names) else {
            return Ok(None);
        };
        if let Some(no_proxy) = get(["no_proxy", "NO_PROXY"])
            && no_proxy_matches(&no_proxy, &host, port)
        {
            return Ok(None);
        }
        Self::new(&url).map(Some)
    }

    /// Opens a tunnel through the proxy to `host:port` and returns the TCP
    /// stream positioned at the first byte the target sends. Bounded by
    /// [`Proxy::timeout`].
    ///
    /// # Errors
    ///
    /// [`Error::Proxy`] when the proxy cannot be reached, answers 407 (no or
    /// wrong credentials) or any other non-2xx status, sends a malformed or
    /// oversized answer, closes, or does not answer in time.
    pub async fn connect(&self, host: &str, port: u16, nodelay: bool) -> Result<TcpStream, Error> {
        match tokio::time::timeout(self.timeout, self.tunnel(host, port, nodelay)).await {
            Ok(result) => result,
            Err(_) => Err(ProxyError::Timeout {
                host: self.host.clone(),
                port: self.port,
                timeout: self.timeout,
            }
            .into()),
        }
    }

    async fn tunnel(&self, host: &str, port: u16, nodelay: bool) -> Result<TcpStream, Error> {
        let mut tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|source| ProxyError::Unreachable {
                host: self.host.clone(),
                port: self.port,
                source,
            })?;
        tcp.set_nodelay(nodelay)?;
        tcp.write_all(self.connect_request(host, port).as_bytes())
            .await?;
        tcp.flush().await?;
        let ConnectResponse { status, reason } = read_response(&mut tcp).await?;
        match status.as_u16() {
            200..=299 => Ok(tcp),
            407 if self.credentials.is_some() => {
                Err(ProxyError::CredentialsRefused { status, reason }.into())
            }
            407 => Err(ProxyError::AuthenticationRequired { status, reason }.into()),
            _ => Err(ProxyError::Refused {
                target: authority(host, port),
                status,
                reason,
            }
            .into()),
        }
    }

    /// The `CONNECT` request for `host:port`.
    fn connect_request(&self, host: &str, port: u16) -> String {
        let target = authority(host, port);
        let mut request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
        if let Some((user, password)) = &self.credentials {
            let token = STANDARD.encode(format!("{user}:{password}"));
            request.push_str(&format!("Proxy-Authorization: Basic {token}\r\n"));
        }
        request.push_str("\r\n");
        request
    }
}

/// `host:port`, with an IPv6 address in brackets.
fn authority(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// The proxy's answer to `CONNECT`: its status, and the reason phrase of its
/// status line as sent (which `http` does not keep).
struct ConnectResponse {
    status: StatusCode,
    reason: String,
}

/// Reads the proxy's response head, up to and including the empty line, and
/// not one byte more: each chunk is peeked, fed to the bounded
/// [`ResponseParser`], and only the bytes it took are consumed.
async fn read_response(tcp: &mut TcpStream) -> Result<ConnectResponse, Error> {
    let mut parser = ResponseParser::with_limits(limits());
    // The status line, kept for its reason phrase; the parser bounds it.
    let mut status_line = Vec::new();
    let mut chunk = [0; 1024];
    loop {
        let n = tcp.peek(&mut chunk).await?;
        if n == 0 {
            return Err(ProxyError::Closed.into());
        }
        let parsed = parser.feed(&chunk[..n]).map_err(ProxyError::Response)?;
        let take = parsed.as_ref().map_or(n, |(_, consumed)| *consumed);
        if !status_line.contains(&b'\n') {
            status_line.extend_from_slice(&chunk[..take]);
        }
        // These bytes are already in the socket's buffer: this does not wait.
        tcp.read_exact(&mut chunk[..take]).await?;
        if let Some((response, _)) = parsed {
            return Ok(ConnectResponse {
                status: response.status(),
                reason: reason_phrase(&status_line),
            });
        }
    }
}

/// The reason phrase of the status line that starts `head`
/// (`HTTP/1.1 407 Proxy Authentication Required`), as text.
fn reason_phrase(head: &[u8]) -> String {
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let reason = line.splitn(3, |&b| b == b' ').nth(2).unwrap_or_default();
    String::from_utf8_lossy(reason).into_owned()
}

/// The bounds of the proxy's answer.
fn limits() -> Limits {
    let mut limits = Limits::default();
    limits.max_header_size = MAX_RESPONSE_HEAD;
    limits.max_headers = MAX_RESPONSE_HEADERS;
    limits
}

/// Decodes `%XX` escapes of a URL's userinfo. Stricter than
/// `percent-encoding` alone: a `%` not followed by two hex digits is an
/// error rather than kept as it is, and so is a result that is not UTF-8.
fn percent_decode(s: &str) -> Result<String, Error> {
    let bytes = s.as_bytes();
    let escapes_valid = bytes.iter().enumerate().all(|(i, &b)| {
        b != b'%'
            || bytes
                .get(i + 1..i + 3)
                .is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit))
    });
    if !escapes_valid {
        return Err(ProxyError::PercentEncoding.into());
    }
    let decoded = percent_encoding::percent_decode(bytes).collect::<Vec<u8>>();
    match String::from_utf8(decoded) {
        Ok(text) => Ok(text),
        // `Utf8Error` holds positions only: no credential bytes in the error.
        Err(error) => Err(ProxyError::CredentialsNotUtf8(error.utf8_error()).into()),
    }
}

/// Whether a `no_proxy` list exempts `host:port` from the proxy.
///
/// The list is separated by commas (and/or whitespace); matching ignores
/// ASCII case and a trailing dot. An entry is:
/// - `*`: every host;
/// - a domain, with or without a leading `.` or `*.`: that name and every
///   name below it (`example.com` matches `example.com` and `a.example.com`,
///   not `badexample.com`);
/// - an IP address (IPv6 with or without brackets): that address;
/// - an IP network in CIDR form (`10.0.0.0/8`, `fd00::/8`): addresses in it;
/// - any of these followed by `:port` (IPv6 in brackets): only that port.
///
/// Loopback is not exempt unless listed.
pub fn no_proxy_matches(no_proxy: &str, host: &str, port: u16) -> bool {
    let host = normalize(host.trim_start_matches('[').trim_end_matches(']'));
    let host_ip: Option<IpAddr> = host.parse().ok();
    no_proxy
        .split(|c: char| c == ',' || c.is_ascii_whitespace())
        .filter(|entry| !entry.is_empty())
        .any(|entry| entry_matches(entry, &host, host_ip, port))
}

fn normalize(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

fn entry_matches(entry: &str, host: &str, host_ip: Option<IpAddr>, port: u16) -> bool {
    if entry == "*" {
        return true;
    }
    let (pattern, entry_port) = split_port(entry);
    if entry_port.is_some_and(|entry_port| entry_port != port) {
        return false;
    }
    if let Some((network, bits)) = pattern.split_once('/') {
        return match (network.parse::<IpAddr>(), bits.parse::<u8>(), host_ip) {
            (Ok(network), Ok(bits), Some(ip)) => in_network(ip, network, bits),
            _ => false,
        };
    }
    if let Ok(ip) = pattern.parse::<IpAddr>() {
        return host_ip == Some(ip);
    }
    let domain = normalize(pattern.trim_start_matches("*.").trim_start_matches('.'));
    if domain.is_empty() {
        return false;
    }
    host == domain
        || host
            .strip_suffix(domain.as_str())
            .is_some_and(|rest| rest.ends_with('.'))
}

/// Splits `pattern:port`; a bare IPv6 address (more than one colon, no
/// brackets) has no port.
fn split_port(entry: &str) -> (&str, Option<u16>) {
    if let Some(rest) = entry.strip_prefix('[') {
        return match rest.split_once(']') {
            Some((ip, tail)) => (ip, tail.strip_prefix(':').and_then(|p| p.parse().ok())),
            None => (entry, None),
        };
    }
    match entry.rsplit_once(':') {
        Some((pattern, port)) if !pattern.contains(':') => match port.parse() {
            Ok(port) => (pattern, Some(port)),
            // An unparseable port can match no port.
            Err(_) => (pattern, Some(0)),
        },
        _ => (entry, None),
    }
}

/// Whether `ip` is in `network/bits`.
fn in_network(ip: IpAddr, network: IpAddr, bits: u8) -> bool {
    match (ip, network) {
        (IpAddr::V4(ip), IpAddr::V4(network)) if bits <= 32 => {
            let mask = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
            u32::from(ip) & mask == u32::from(network) & mask
        }
        (IpAddr::V6(ip), IpAddr::V6(network)) if bits <= 128 => {
            let mask = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
            u128::from(ip) & mask == u128::from(network) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_proxy_star_matches_everything() {
        assert!(no_proxy_matches("*", "example.com", 443));
        assert!(no_proxy_matches("foo, *", "10.1.2.3", 80));
        assert!(!no_proxy_matches("", "example.com", 443));
        assert!(!no_proxy_matches(" , ,", "example.com", 443));
    }

    #[test]
    fn no_proxy_domain_suffix_matches_on_label_boundary() {
        for entry in [
            "example.com",
            ".example.com",
            "*.example.com",
            "EXAMPLE.com.",
        ] {
            assert!(no_proxy_matches(entry, "example.com", 443), "{entry}");
            assert!(no_proxy_matches(entry, "a.b.Example.COM", 443), "{entry}");
            assert!(!no_proxy_matches(entry, "badexample.com", 443), "{entry}");
            assert!(!no_proxy_matches(entry, "example.com.evil", 443), "{entry}");
        }
        assert!(no_proxy_matches("example.com", "www.example.com.", 80));
        assert!(!no_proxy_matches("www.example.com", "example.com", 80));
    }

    #[test]
    fn no_proxy_list_separators() {
        let list = "localhost, internal.corp ,10.0.0.0/8\t.svc";
        assert!(no_proxy_matches(list, "localhost", 80));
        assert!(no_proxy_matches(list, "db.internal.corp", 80));
        assert!(no_proxy_matches(list, "10.200.0.1", 80));
        assert!(no_proxy_matches(list, "api.svc", 80));
        assert!(!no_proxy_matches(list, "example.com", 80));
        assert!(!no_proxy_matches(list, "11.0.0.1", 80));
    }

    #[test]
    fn no_proxy_ports() {
        assert!(no_proxy_matches("example.com:8080", "example.com", 8080));
        assert!(!no_proxy_matches("example.com:8080", "example.com", 443));
        assert!(no_proxy_matches("127.0.0.1:9000", "127.0.0.1", 9000));
        assert!(!no_proxy_matches("127.0.0.1:9000", "127.0.0.1", 9001));
        assert!(no_proxy_matches("[::1]:9000", "::1", 9000));
        assert!(!no_proxy_matches("[::1]:9000", "::1", 9001));
        assert!(!no_proxy_matches("example.com:notaport", "example.com", 80));
    }

    #[test]
    fn no_proxy_ip_addresses_and_networks() {
        assert!(no_proxy_matches("127.0.0.1", "127.0.0.1", 80));
        assert!(!no_proxy_matches("127.0.0.1", "127.0.0.2", 80));
        assert!(no_proxy_matches("::1", "[::1]", 80));
        assert!(no_proxy_matches("[::1]", "::1", 80));
        assert!(no_proxy_matches("fd00::/8", "fd12::1", 80));
        assert!(!no_proxy_matches("fd00::/8", "fe80::1", 80));
        assert!(no_proxy_matches("192.168.1.0/24", "192.168.1.77", 80));
        assert!(!no_proxy_matches("192.168.1.0/24", "192.168.2.1", 80));
        assert!(no_proxy_matches("0.0.0.0/0", "8.8.8.8", 80));
        // A network never matches a name, nor an address of the other family.
        assert!(!no_proxy_matches("10.0.0.0/8", "example.com", 80));
        assert!(!no_proxy_matches("::/0", "10.0.0.1", 80));
        assert!(!no_proxy_matches("10.0.0.0/33", "10.0.0.1", 80));
    }

    #[test]
    fn proxy_url_parsing() {
        let proxy = Proxy::new("http://user:p%40ss@proxy.local:3128/").unwrap();
        assert_eq!((proxy.host(), proxy.port()), ("proxy.local", 3128));
        assert_eq!(
            proxy.credentials,
            Some(("user".to_owned(), "p@ss".to_owned()))
        );
        assert!(!format!("{proxy:?}").contains("p@ss"));
        let proxy = Proxy::new("proxy.local").unwrap();
        assert_eq!((proxy.host(), proxy.port()), ("proxy.local", 80));
        assert_eq!(proxy.credentials, None);
        let proxy = Proxy::new("HTTP://[::1]:8080").unwrap();
        assert_eq!((proxy.host(), proxy.port()), ("::1", 8080));
        assert!(matches!(
            Proxy::new("https://proxy:443"),
            Err(Error::Proxy(ProxyError::UnsupportedScheme(scheme))) if scheme == "https"
        ));
        assert!(matches!(
            Proxy::new("socks5://proxy:1080"),
            Err(Error::Proxy(ProxyError::UnsupportedScheme(_)))
        ));
        assert!(matches!(
            Proxy::new("http://"),
            Err(Error::Proxy(
                ProxyError::Address { .. } | ProxyError::NoHost
            ))
        ));
        assert!(matches!(
            Proxy::new("http://u:%zz@h"),
            Err(Error::Proxy(ProxyError::PercentEncoding))
        ));
        assert!(matches!(
            Proxy::new("http://u:%4@h"),
            Err(Error::Proxy(ProxyError::PercentEncoding))
        ));
        let not_utf8 = Proxy::new("http://u:s%FFcret@h").unwrap_err();
        assert!(
            matches!(&not_utf8, Error::Proxy(ProxyError::CredentialsNotUtf8(_))),
            "{not_utf8}"
        );
        assert!(!format!("{not_utf8:?}").contains("cret"), "{not_utf8:?}");
    }

    #[test]
    fn proxy_url_with_an_impossible_port_is_refused() {
        // `http` reads such a port as no port; the proxy's would then be 80.
        for url in ["http://proxy:99999", "http://proxy:8o80"] {
            let error = Proxy::new(url).unwrap_err();
            assert!(
                matches!(
                    &error,
                    Error::Proxy(ProxyError::Port { .. } | ProxyError::Address { .. })
                ),
                "{url}: {error}"
            );
        }
        assert!(matches!(
            Proxy::new("http://proxy:99999"),
            Err(Error::Proxy(ProxyError::Port { address })) if address == "proxy:99999"
        ));
        assert_eq!(Proxy::new("http://proxy:/").unwrap().port(), 80);
    }

    #[test]
    fn connect_request_carries_basic_auth() {
        let proxy = Proxy::new("http://127.0.0.1:1")
            .unwrap()
            .basic_auth("aladdin", "opensesame");
        assert_eq!(
            proxy.connect_request("::1", 443),
            "CONNECT [::1]:443 HTTP/1.1\r\nHost: [::1]:443\r\n\
             Proxy-Authorization: Basic YWxhZGRpbjpvcGVuc2VzYW1l\r\n\r\n"
        );
        let proxy = Proxy::new("http://127.0.0.1:1").unwrap();
        assert_eq!(
            proxy.connect_request("example.com", 80),
            "CONNECT example.com:80 HTTP/1.1\r\nHost: example.com:80\r\n\r\n"
        );
    }

    fn env(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            vars.iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| (*value).to_owned())
        }
    }

    #[test]
    fn from_env_picks_the_variable_of_the_scheme() {
        let vars = env(&[
            ("HTTPS_PROXY", "http://secure:1"),
            ("http_proxy", "http://plain:2"),
        ]);
        let wss = Proxy::from_lookup("wss://example.com/", &vars)
            .unwrap()
            .unwrap();
        assert_eq!((wss.host(), wss.port()), ("secure", 1));
        let ws = Proxy::from_lookup("ws://example.com/", &vars)
            .unwrap()
            .unwrap();
        assert_eq!((ws.host(), ws.port()), ("plain", 2));
        let lower_first = env(&[
            ("https_proxy", "http://low:1"),
            ("HTTPS_PROXY", "http://up:2"),
        ]);
        let proxy = Proxy::from_lookup("wss://example.com/", lower_first)
            .unwrap()
            .unwrap();
        assert_eq!(proxy.host(), "low");
    }

    #[test]
    fn from_env_without_variable_or_with_empty_one_is_direct() {
        assert_eq!(
            Proxy::from_lookup("wss://example.com/", env(&[])).unwrap(),
            None
        );
        let only_http = env(&[("http_proxy", "http://plain:2"), ("HTTPS_PROXY", " ")]);
        assert_eq!(
            Proxy::from_lookup("wss://example.com/", only_http).unwrap(),
            None
        );
    }

    #[test]
    fn from_env_honours_no_proxy() {
        let vars = env(&[
            ("https_proxy", "http://proxy:3128"),
            ("NO_PROXY", "internal.corp,127.0.0.0/8"),
        ]);
        assert_eq!(
            Proxy::from_lookup("wss://api.internal.corp/", &vars).unwrap(),
            None
        );
        assert_eq!(
            Proxy::from_lookup("wss://127.0.0.1:9000/", &vars).unwrap(),
            None
        );
        assert!(
            Proxy::from_lookup("wss://example.com/", &vars)
                .unwrap()
                .is_some()
        );
        let star = env(&[("https_proxy", "http://proxy:3128"), ("no_proxy", "*")]);
        assert_eq!(
            Proxy::from_lookup("wss://example.com/", star).unwrap(),
            None
        );
    }

    #[test]
    fn from_env_reports_a_bad_proxy_url() {
        let vars = env(&[("https_proxy", "socks5://proxy:1080")]);
        assert!(matches!(
            Proxy::from_lookup("wss://example.com/", vars),
            Err(Error::Proxy(ProxyError::UnsupportedScheme(_)))
        ));
    }
}
