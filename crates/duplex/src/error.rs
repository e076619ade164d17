//! Errors of the tokio layer.
//!
//! Invariants: each variant says which side broke what, so a caller can tell a
//! protocol violation from a transport failure, a refused handshake or a
//! timeout. No error is flattened to text: every cause is kept, as a value the
//! caller can match on and as the error's [`source`](std::error::Error::source),
//! and the message names it too, so that printing only the top error says
//! enough. No message or `Debug` output holds a proxy's credentials.
//!
//! The protocol's own error types are re-exported here, so that matching on
//! an [`Error`] needs no dependency on `duplex-proto`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use http::header::{HeaderName, InvalidHeaderName, InvalidHeaderValue};

pub use duplex_proto::ProtocolError;
pub use duplex_proto::connection::SendError;
pub use duplex_proto::deflate::NegotiationError;
pub use duplex_proto::handshake::client::{RequestError, ResponseError};
pub use duplex_proto::handshake::server::{AcceptError, HandshakeError};

use crate::tls::CaCertificate;

/// An error of a WebSocket connection.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The transport failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The peer broke the protocol; a close frame with the matching code was sent.
    #[error("protocol error: {0}")]
    Protocol(#[from] ProtocolError),
    /// The call is not allowed in the connection's state (for example sending
    /// after the close frame).
    #[error("cannot send: {0}")]
    Send(#[from] SendError),
    /// The client's upgrade request was refused with an HTTP error.
    #[error("handshake refused: {0}")]
    Handshake(#[from] HandshakeError),
    /// The client could not build its request, or the server's handshake
    /// response was not acceptable.
    #[error("handshake failed: {0}")]
    ClientHandshake(#[from] ClientHandshakeError),
    /// The application's [`Accept`](crate::Accept) could not be honoured (a
    /// subprotocol or extension the client did not offer, a reserved
    /// header); the client was answered `500`.
    #[error("cannot accept the upgrade: {0}")]
    Accept(#[from] AcceptError),
    /// The server answered with a non-101 status.
    #[error("server answered {}", .0.status())]
    HttpStatus(Box<http::Response<Option<Vec<u8>>>>),
    /// The permessage-deflate answer was not acceptable.
    #[error("extension negotiation failed: {0}")]
    Negotiation(#[from] NegotiationError),
    /// The application refused the upgrade request with this status.
    #[error("upgrade refused with {0}")]
    Refused(StatusCode),
    /// The opening handshake did not finish in time.
    #[error("handshake timed out")]
    HandshakeTimeout,
    /// The peer did not answer a keepalive ping in time.
    #[error("peer did not answer a keepalive ping in time")]
    KeepaliveTimeout,
    /// The peer sent more than `limit` pings while reading nothing of what we
    /// wrote (it does not read our pongs): a close frame with 1008 was queued
    /// and the connection ended without waiting for the peer.
    #[error("peer sent more than {limit} pings without reading our answers")]
    PingFlood {
        /// [`crate::websocket::MAX_PINGS_UNREAD`].
        limit: u32,
    },
    /// The transport closed without a close handshake (close code 1006).
    #[error("connection closed without a close handshake")]
    AbnormalClosure,
    /// The URL is not a `ws://` or `wss://` URL this crate can connect to.
    #[error("invalid URL: {0}")]
    Url(#[from] UrlError),
    /// TLS configuration or handshake failure.
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
    /// A proxy refused or failed the tunnel, or its URL is not usable.
    #[error("proxy: {0}")]
    Proxy(#[from] ProxyError),
    /// The HTTP/2 connection or stream failed, or the server does not accept
    /// WebSockets over HTTP/2 ([`crate::http2`]).
    #[cfg(feature = "http2")]
    #[error("HTTP/2: {0}")]
    Http2(#[from] h2::Error),
}

/// Why the client's side of the opening handshake failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientHandshakeError {
    /// The request cannot be built from the [`ClientRequest`](crate::ClientRequest)
    /// (URL, subprotocols, origin, extra headers).
    #[error("cannot build the request: {0}")]
    Request(#[from] RequestError),
    /// The server's response does not complete the handshake.
    #[error("{0}")]
    Response(#[from] ResponseError),
    /// An extra header's name is not a valid HTTP field name.
    #[error("invalid header name {name:?}")]
    HeaderName {
        /// The name given.
        name: String,
        /// Why `http` refused it.
        #[source]
        source: InvalidHeaderName,
    },
    /// An extra header's value is not a valid HTTP field value.
    #[error("invalid value for header {name}")]
    HeaderValue {
        /// The header's name.
        name: HeaderName,
        /// Why `http` refused it.
        #[source]
        source: InvalidHeaderValue,
    },
}

/// Why a URL cannot be connected to.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UrlError {
    /// Not a URI at all.
    #[error("{url:?}: {source}")]
    Syntax {
        /// The URL given.
        url: String,
        /// Why `http` could not parse it.
        #[source]
        source: http::uri::InvalidUri,
    },
    /// The scheme is missing or not `ws` / `wss`.
    #[error("{url}: scheme must be ws or wss")]
    Scheme {
        /// The URL given.
        url: String,
    },
    /// The URL names no host.
    #[error("{url}: no host")]
    NoHost {
        /// The URL given.
        url: String,
    },
    /// The port is not a number from 0 to 65535.
    #[error("{url}: invalid port {port:?}")]
    Port {
        /// The URL given.
        url: String,
        /// The port as written.
        port: String,
    },
}

/// Why TLS could not be set up, or its handshake failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The TLS handshake failed: a bad or untrusted certificate, an alert, no
    /// common version or ALPN protocol. The message says it in words, with
    /// what to change for the common certificate mistakes.
    #[error("{}", describe_handshake(.0))]
    Handshake(#[from] rustls::Error),
    /// The peer sent bytes that are not TLS.
    #[error("{0}")]
    InvalidData(#[source] std::io::Error),
    /// The name to verify the server's certificate against is neither a DNS
    /// name nor an IP address.
    #[error("{host:?} is not a valid TLS server name")]
    ServerName {
        /// The host given.
        host: String,
        /// Why rustls refused it.
        #[source]
        source: rustls::pki_types::InvalidDnsNameError,
    },
    /// A trusted CA could not be read or parsed.
    #[error("CA {ca:?}: {source}")]
    CaPem {
        /// The CA as configured.
        ca: CaCertificate,
        /// What went wrong reading its PEM (the file's I/O error included).
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// A trusted CA holds no certificate.
    #[error("{0:?} holds no certificate")]
    EmptyCa(CaCertificate),
    /// A trusted CA's certificate cannot be used as a root.
    #[error("CA certificate {ca:?}: {source}")]
    BadCa {
        /// The CA as configured.
        ca: CaCertificate,
        /// Why rustls refused it.
        #[source]
        source: rustls::Error,
    },
    /// Neither built-in, system nor extra roots are configured.
    #[error("no trusted root certificates configured")]
    NoRoots,
    /// The system's root certificates were asked for, and none were found.
    #[error("{0}")]
    NativeRoots(#[source] Arc<NativeRootsError>),
    /// The certificate chain file could not be read or parsed.
    #[error("certificate file {}: {source}", path.display())]
    CertificateFile {
        /// The file.
        path: PathBuf,
        /// What went wrong (the file's I/O error included).
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// The certificate chain file holds no certificate.
    #[error("certificate file {} holds no certificate", path.display())]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// The private key file could not be read, parsed, or holds no key.
    #[error("key file {}: {source}", path.display())]
    KeyFile {
        /// The file.
        path: PathBuf,
        /// What went wrong (the file's I/O error included).
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// The certificate chain and the private key cannot serve together (the
    /// key does not match the leaf, or is of an unsupported type).
    #[error("certificate and key: {0}")]
    CertificateAndKey(#[source] rustls::Error),
    /// rustls refused the configuration: the crypto provider cannot serve
    /// the protocol versions.
    #[error("{0}")]
    Config(#[source] rustls::Error),
}

/// No system root certificate was found; holds why, per place looked at.
#[derive(Debug)]
pub struct NativeRootsError {
    errors: Vec<rustls_native_certs::Error>,
}

impl NativeRootsError {
    pub(crate) fn new(errors: Vec<rustls_native_certs::Error>) -> Self {
        Self { errors }
    }

    /// What went wrong in each place the system's roots were looked for
    /// (empty when every place was simply empty).
    pub fn errors(&self) -> &[rustls_native_certs::Error] {
        &self.errors
    }
}

impl std::fmt::Display for NativeRootsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("no system root certificates found")?;
        for (i, error) in self.errors.iter().enumerate() {
            f.write_str(if i == 0 { " (" } else { "; " })?;
            write!(f, "{error}")?;
        }
        if !self.errors.is_empty() {
            f.write_str(")")?;
        }
        Ok(())
    }
}

impl std::error::Error for NativeRootsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.errors
            .first()
            .map(|error| error as &(dyn std::error::Error + 'static))
    }
}

/// Why a proxy could not be used, or did not open the tunnel.
///
/// Never holds the proxy's credentials.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyError {
    /// The proxy URL's scheme is not `http` (proxies spoken to over TLS and
    /// SOCKS proxies are not supported).
    #[error("proxy scheme {0:?} is not supported; use an http:// proxy")]
    UnsupportedScheme(String),
    /// The proxy URL's `host[:port]` is not a valid authority.
    #[error("invalid proxy address {address:?}: {source}")]
    Address {
        /// The `host[:port]` given.
        address: String,
        /// Why `http` refused it.
        #[source]
        source: http::uri::InvalidUri,
    },
    /// The proxy URL's port is not a number from 0 to 65535.
    #[error("invalid port in proxy address {address:?}")]
    Port {
        /// The `host[:port]` given.
        address: String,
    },
    /// The proxy URL names no host.
    #[error("proxy URL has no host")]
    NoHost,
    /// A `%` in the proxy URL's user or password is not followed by two hex
    /// digits.
    #[error("invalid percent-encoding in proxy URL")]
    PercentEncoding,
    /// The proxy URL's user or password, once percent-decoded, is not UTF-8.
    #[error("proxy credentials are not UTF-8")]
    CredentialsNotUtf8(#[source] std::str::Utf8Error),
    /// The TCP connection to the proxy failed.
    #[error("cannot reach proxy {host}:{port}: {source}")]
    Unreachable {
        /// The proxy's host.
        host: String,
        /// The proxy's port.
        port: u16,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The tunnel was not open within [`Proxy::timeout`](crate::Proxy::timeout).
    #[error("proxy {host}:{port} did not open a tunnel within {timeout:?}")]
    Timeout {
        /// The proxy's host.
        host: String,
        /// The proxy's port.
        port: u16,
        /// The bound.
        timeout: Duration,
    },
    /// The proxy closed the connection before its answer was complete.
    #[error("proxy closed the connection before answering CONNECT")]
    Closed,
    /// The proxy's answer is malformed or larger than
    /// [`MAX_RESPONSE_HEAD`](crate::proxy::MAX_RESPONSE_HEAD) bytes or
    /// [`MAX_RESPONSE_HEADERS`](crate::proxy::MAX_RESPONSE_HEADERS) lines.
    #[error("bad answer to CONNECT: {0}")]
    Response(#[source] ResponseError),
    /// The proxy answered `407` although no credentials were given.
    #[error(
        "proxy requires authentication ({} {reason}); give credentials in the proxy URL \
         (http://user:password@host:port)",
        .status.as_u16()
    )]
    AuthenticationRequired {
        /// `407`.
        status: StatusCode,
        /// The proxy's reason phrase.
        reason: String,
    },
    /// The proxy answered `407` to the credentials given.
    #[error("proxy refused the credentials ({} {reason})", .status.as_u16())]
    CredentialsRefused {
        /// `407`.
        status: StatusCode,
        /// The proxy's reason phrase.
        reason: String,
    },
    /// The proxy answered `CONNECT` with a status other than 2xx and 407.
    #[error("proxy refused to tunnel to {target}: {} {reason}", .status.as_u16())]
    Refused {
        /// The `host:port` asked for.
        target: String,
        /// The proxy's status.
        status: StatusCode,
        /// The proxy's reason phrase.
        reason: String,
    },
}

impl ProxyError {
    /// The status the proxy answered `CONNECT` with, when it refused.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Self::AuthenticationRequired { status, .. }
            | Self::CredentialsRefused { status, .. }
            | Self::Refused { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// A failed TLS handshake in words a person can act on: the usual
/// certificate mistakes are named, with what to change; anything else is
/// rustls's own message.
fn describe_handshake(error: &rustls::Error) -> String {
    use rustls::CertificateError as Cert;
    let rustls::Error::InvalidCertificate(cert) = error else {
        return error.to_string();
    };
    match cert {
        Cert::UnknownIssuer => "the server's certificate is not signed by a CA this client \
            trusts (UnknownIssuer): add the CA that signed it (or, for a self-signed \
            certificate, the certificate itself) to the trusted roots"
            .to_owned(),
        Cert::NotValidForName | Cert::NotValidForNameContext { .. } => format!(
            "the server's certificate is not valid for the host name connected to \
             ({cert:?}): connect with a name the certificate lists (subjectAltName), \
             or issue it for this name"
        ),
        Cert::Expired | Cert::ExpiredContext { .. } => {
            format!("the server's certificate has expired ({cert:?})")
        }
        Cert::NotValidYet | Cert::NotValidYetContext { .. } => {
            format!("the server's certificate is not valid yet ({cert:?}): check both clocks")
        }
        Cert::Other(other)
            if matches!(
                other.0.downcast_ref::<webpki::Error>(),
                Some(webpki::Error::CaUsedAsEndEntity)
            ) =>
        {
            "the server's certificate is a CA certificate (basicConstraints CA:TRUE, as \
             `openssl req -x509` makes by default), which cannot serve as a server's own: \
             make one with `-addext basicConstraints=critical,CA:FALSE`, or sign a server \
             certificate with that CA and trust the CA"
                .to_owned()
        }
        Cert::Other(other) => format!("invalid peer certificate: {}", other.0),
        _ => error.to_string(),
    }
}

#[cfg(test)]
mod describe_tests {
    use std::sync::Arc;

    use rustls::{CertificateError, OtherError};

    use super::*;

    fn message(error: rustls::Error) -> String {
        Error::from(TlsError::Handshake(error)).to_string()
    }

    #[test]
    fn certificate_mistakes_are_told_in_words_with_what_to_change() {
        let ca = message(rustls::Error::InvalidCertificate(CertificateError::Other(
            OtherError(Arc::new(webpki::Error::CaUsedAsEndEntity)),
        )));
        assert_eq!(
            ca.matches("TLS").count(),
            1,
            "one TLS prefix, no debug text: {ca}"
        );
        assert!(
            ca.contains("is a CA certificate (basicConstraints CA:TRUE"),
            "{ca}"
        );
        assert!(!ca.contains("OtherError"), "{ca}");
        let unknown = message(rustls::Error::InvalidCertificate(
            CertificateError::UnknownIssuer,
        ));
        assert!(
            unknown.contains("not signed by a CA this client trusts"),
            "{unknown}"
        );
        assert!(unknown.contains("trusted roots"), "{unknown}");
        let name = message(rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName,
        ));
        assert!(name.contains("not valid for the host name"), "{name}");
    }
}
