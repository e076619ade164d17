//! The byte stream under a client connection: plain TCP for `ws://`, TLS
//! over TCP for `wss://`, either of them directly or through an HTTP
//! `CONNECT` proxy.
//!
//! Invariants:
//! - [`Transport`] is connected to the URL's host and port (default 80 for
//!   `ws://`, 443 for `wss://`), through the proxy of [`Options::proxy`] (or
//!   of the environment, only if [`Options::use_env_proxy`]), with
//!   `TCP_NODELAY` as configured.
//! - A `wss://` transport has verified the server's certificate for the URL's
//!   host against the roots [`Options`] names (see [`crate::tls`]) unless
//!   [`Options::danger_accept_invalid_certs`] is set, and offered ALPN
//!   `http/1.1`.
//! - Vectored writes reach the socket (or rustls) as vectored writes.
//! - With [`Options::http2`] set, a `wss://` transport offers ALPN `h2,
//!   http/1.1` and a `ws://` one tries prior-knowledge `h2c` first; a
//!   WebSocket on an HTTP/2 stream has the transport [`Transport::Http2`].

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::Error;
use crate::error::UrlError;
use crate::proxy::Proxy;
use crate::tls::{self, CaCertificate};

/// How to reach a server: directly or through a proxy, and which TLS
/// certificates to trust.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Options {
    /// Tunnel through this HTTP proxy (default: none).
    pub proxy: Option<Proxy>,
    /// When [`Options::proxy`] is `None`, take the proxy from the environment
    /// with [`Proxy::from_env`] (`https_proxy`/`http_proxy`, `no_proxy`).
    /// Default off: the environment is never read unless asked for.
    pub use_env_proxy: bool,
    /// Trust the Mozilla root certificates built in through `webpki-roots`
    /// (default on).
    pub webpki_roots: bool,
    /// Trust the operating system's root certificates, loaded once per
    /// process (default off).
    pub native_roots: bool,
    /// More certificate authorities to trust, for example a private CA.
    pub extra_roots: Vec<CaCertificate>,
    /// **Unsafe**: accept any server certificate, for any name, expired or
    /// self-signed, so anyone on the path can read and change the traffic.
    /// Only for testing against a server whose certificate cannot be
    /// verified (`duplex connect --insecure`). Handshake signatures are still
    /// checked. Default off.
    pub danger_accept_invalid_certs: bool,
    /// A complete rustls client config to use instead of one built from the
    /// fields above (which are then ignored). Build it once with
    /// [`tls::client_config`] to share its session cache across connections.
    pub tls_config: Option<Arc<rustls::ClientConfig>>,
    /// Connect from this local address (any port), e.g. one of
    /// 127.0.0.1 … 127.0.0.255 to open more connections to one server
    /// than one source address has ephemeral ports. Default: the system
    /// chooses. Not used through a proxy.
    pub local_address: Option<std::net::IpAddr>,
    /// Open WebSockets over HTTP/2 (RFC 8441) when the server offers them,
    /// sharing one connection per origin through this pool, and fall back
    /// to HTTP/1.1 when it does not (see [`crate::http2::Pool`]). Default
    /// `None`: HTTP/1.1 only.
    #[cfg(feature = "http2")]
    pub http2: Option<crate::http2::Pool>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            proxy: None,
            use_env_proxy: false,
            webpki_roots: true,
            native_roots: false,
            extra_roots: Vec::new(),
            danger_accept_invalid_certs: false,
            tls_config: None,
            local_address: None,
            #[cfg(feature = "http2")]
            http2: None,
        }
    }
}

/// A connected client transport.
#[derive(Debug)]
#[non_exhaustive]
pub enum Transport {
    /// Plain TCP (`ws://`), possibly a proxy tunnel.
    Plain(TcpStream),
    /// TLS over TCP (`wss://`), possibly over a proxy tunnel.
    Tls(Box<TlsStream<TcpStream>>),
    /// One stream of an HTTP/2 connection shared with other WebSockets
    /// ([`Options::http2`]).
    #[cfg(feature = "http2")]
    Http2(Box<crate::http2::H2Stream>),
}

impl Transport {
    /// The TCP stream underneath (to the proxy, when tunnelling); `None` for
    /// an HTTP/2 stream, whose connection's task owns the socket.
    pub fn tcp_stream(&self) -> Option<&TcpStream> {
        match self {
            Self::Plain(s) => Some(s),
            Self::Tls(s) => Some(s.get_ref().0),
            #[cfg(feature = "http2")]
            Self::Http2(_) => None,
        }
    }

    /// Whether the transport is TLS (for an HTTP/2 stream: unknown, `false`).
    pub fn is_tls(&self) -> bool {
        matches!(self, Self::Tls(_))
    }

    /// Whether the transport is a stream of an HTTP/2 connection.
    pub fn is_http2(&self) -> bool {
        #[cfg(feature = "http2")]
        return matches!(self, Self::Http2(_));
        #[cfg(not(feature = "http2"))]
        false
    }

    /// The ALPN protocol the server selected, if TLS and it selected one.
    pub fn alpn_protocol(&self) -> Option<&[u8]> {
        match self {
            Self::Plain(_) => None,
            Self::Tls(s) => s.get_ref().1.alpn_protocol(),
            #[cfg(feature = "http2")]
            Self::Http2(_) => None,
        }
    }
}

/// The host (an IPv6 address without its brackets), port (the scheme's
/// default when none is given) and TLS flag (`wss`) of a `ws://` or `wss://`
/// URL: where [`crate::connect_with`] connects to.
///
/// # Errors
///
/// [`Error::Url`] saying which part is wrong.
pub fn target(url: &str) -> Result<(String, u16, bool), Error> {
    let uri: http::Uri = url.parse().map_err(|source| UrlError::Syntax {
        url: url.to_owned(),
        source,
    })?;
    let tls = match uri.scheme_str() {
        Some("ws") => false,
        Some("wss") => true,
        _ => {
            return Err(UrlError::Scheme {
                url: url.to_owned(),
            }
            .into());
        }
    };
    let Some(authority) = uri.authority() else {
        return Err(UrlError::NoHost {
            url: url.to_owned(),
        }
        .into());
    };
    let port = explicit_port(authority).map_err(|port| UrlError::Port {
        url: url.to_owned(),
        port,
    })?;
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    if host.is_empty() {
        return Err(UrlError::NoHost {
            url: url.to_owned(),
        }
        .into());
    }
    Ok((host, port.unwrap_or(if tls { 443 } else { 80 }), tls))
}

/// The port `authority` names: `Ok(None)` when it names none (or an empty
/// one, which means the scheme's default), `Err` with the port's text when
/// that is not a number from 0 to 65535 (which `http` would silently treat
/// as no port).
pub(crate) fn explicit_port(authority: &http::uri::Authority) -> Result<Option<u16>, String> {
    let hostport = authority.as_str().rsplit('@').next().unwrap_or_default();
    match hostport.get(authority.host().len()..) {
        None | Some("" | ":") => Ok(None),
        Some(rest) => {
            let text = rest.strip_prefix(':').unwrap_or(rest);
            text.parse().map(Some).map_err(|_| text.to_owned())
        }
    }
}

/// Opens the transport for `url`. Not bounded in time by itself (a proxy
/// tunnel is, by [`Proxy::timeout`]); [`crate::connect_with`] bounds it with
/// the handshake timeout.
pub(crate) async fn open(url: &str, options: &Options, nodelay: bool) -> Result<Transport, Error> {
    open_alpn(url, options, nodelay, false).await
}

/// [`open`], offering ALPN `h2, http/1.1` for TLS when `h2` is set.
pub(crate) async fn open_alpn(
    url: &str,
    options: &Options,
    nodelay: bool,
    h2: bool,
) -> Result<Transport, Error> {
    let (host, port, tls) = target(url)?;
    let env_proxy = match (&options.proxy, options.use_env_proxy) {
        (None, true) => Proxy::from_env(url)?,
        _ => None,
    };
    let tcp = match options.proxy.as_ref().or(env_proxy.as_ref()) {
        Some(proxy) => proxy.connect(&host, port, nodelay).await?,
        None => {
            let tcp = match options.local_address {
                None => TcpStream::connect((host.as_str(), port)).await?,
                Some(local) => connect_from(local, &host, port).await?,
            };
            tcp.set_nodelay(nodelay)?;
            tcp
        }
    };
    if !tls {
        return Ok(Transport::Plain(tcp));
    }
    let stream = tls::connect_tcp(tcp, &host, options, h2).await?;
    Ok(Transport::Tls(Box::new(stream)))
}

/// A TCP connection to `host:port` from `local` (the first address of
/// `host` of the same family).
async fn connect_from(local: std::net::IpAddr, host: &str, port: u16) -> io::Result<TcpStream> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let addr = tokio::net::lookup_host((host, port))
        .await?
        .find(|addr| addr.is_ipv4() == local.is_ipv4())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::AddrNotAvailable,
                format!("{host} has no address of the family of {local}"),
            )
        })?;
    let socket = if local.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.bind(std::net::SocketAddr::new(local, 0))?;
    socket.connect(addr).await
}

impl AsyncRead for Transport {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            #[cfg(feature = "http2")]
            Self::Http2(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Transport {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            #[cfg(feature = "http2")]
            Self::Http2(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
            #[cfg(feature = "http2")]
            Self::Http2(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(s) => s.is_write_vectored(),
            Self::Tls(s) => s.is_write_vectored(),
            #[cfg(feature = "http2")]
            Self::Http2(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            #[cfg(feature = "http2")]
            Self::Http2(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            #[cfg(feature = "http2")]
            Self::Http2(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_of_good_urls() {
        assert_eq!(
            target("ws://example.com/chat").unwrap(),
            ("example.com".to_owned(), 80, false)
        );
        assert_eq!(
            target("wss://[::1]:9443/").unwrap(),
            ("::1".to_owned(), 9443, true)
        );
        assert_eq!(
            target("wss://u@h:/").unwrap(),
            ("h".to_owned(), 443, true),
            "an empty port is the scheme's default"
        );
    }

    #[test]
    fn target_says_which_part_of_a_url_is_wrong() {
        let url_error = |url| match target(url) {
            Err(Error::Url(error)) => error,
            other => panic!("{url}: {other:?}"),
        };
        assert!(matches!(
            url_error("ws://exa mple/"),
            UrlError::Syntax { .. }
        ));
        assert!(matches!(
            url_error("http://example.com/"),
            UrlError::Scheme { .. }
        ));
        assert!(matches!(url_error("/just/a/path"), UrlError::Scheme { .. }));
        // `http` reads an impossible port as none, which would connect to 80
        // or 443 instead.
        assert!(
            matches!(url_error("ws://127.0.0.1:99999/"), UrlError::Port { port, .. } if port == "99999")
        );
        assert!(matches!(
            url_error("wss://[::1]:70000/"),
            UrlError::Port { .. }
        ));
        assert_eq!(
            url_error("http://example.com/").to_string(),
            "http://example.com/: scheme must be ws or wss"
        );
    }
}
