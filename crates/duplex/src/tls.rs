//! TLS for `wss://`, on rustls with the `ring` provider: client configs
//! (trust roots, ALPN), server configs from PEM files, and bounded handshakes.
//!
//! A server wraps each accepted TCP stream before the WebSocket handshake:
//!
//! ```no_run
//! # async fn serve() -> Result<(), duplex::Error> {
//! use std::time::Duration;
//! use duplex::tls::{self, TlsAcceptor};
//!
//! let config = tls::server_config_from_pem("cert.pem", "key.pem")?;
//! let acceptor = TlsAcceptor::from(config);
//! let listener = tokio::net::TcpListener::bind("0.0.0.0:443").await?;
//! loop {
//!     let (tcp, _) = listener.accept().await?;
//!     let acceptor = acceptor.clone();
//!     tokio::spawn(async move {
//!         // Bounded: a peer that never finishes the TLS handshake is dropped.
//!         let Ok(tls) = tls::accept(&acceptor, tcp, Duration::from_secs(10)).await else {
//!             return;
//!         };
//!         let Ok(ws) = duplex::accept(tls).await else { return };
//!         // ... use ws ...
//! #       drop(ws);
//!     });
//! }
//! # }
//! ```
//!
//! Invariants:
//! - Every config built here offers (client) or selects (server) the ALPN
//!   protocol `http/1.1`, the only one the WebSocket handshake of RFC 6455
//!   runs on; `h2` is added only when the caller asks ([`with_h2_alpn`] for
//!   a server, [`crate::transport::Options::http2`] for a client).
//! - A client verifies the server's certificate chain and name against the
//!   roots [`crate::transport::Options`] names (the Mozilla roots of
//!   `webpki-roots` by default) unless
//!   [`danger_accept_invalid_certs`](crate::transport::Options::danger_accept_invalid_certs)
//!   is set; even then the handshake's signatures are checked, so the peer
//!   holds the key of the certificate it sent.
//! - Every handshake run by this module is bounded in time: [`accept`] by its
//!   `timeout`, the client's by [`crate::Config::handshake_timeout`] (which
//!   covers TCP connect, proxy tunnel, TLS and WebSocket handshakes together).
//! - A failure of TLS itself (bad certificate, alert, garbage) is
//!   [`Error::Tls`]; a failure of the socket under it is [`Error::Io`].
//! - The crypto provider is the process default when the application installed
//!   one, else `ring`, so enabling another provider elsewhere in the
//!   dependency graph never makes config building panic.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::Error;
use crate::error::{NativeRootsError, TlsError};
use crate::transport::Options;

pub use rustls;
pub use tokio_rustls;
pub use tokio_rustls::{TlsAcceptor, TlsConnector};

/// The ALPN protocol id of HTTP/1.1, offered and selected by every config
/// built here.
pub const ALPN_HTTP11: &[u8] = b"http/1.1";

/// The ALPN protocol name of HTTP/2, offered only when asked for
/// ([`with_h2_alpn`], [`crate::transport::Options::http2`]).
pub const ALPN_H2: &[u8] = b"h2";

/// A certificate authority to trust in addition to (or instead of) the
/// built-in roots.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CaCertificate {
    /// A PEM file holding one or more `CERTIFICATE` blocks, read when a
    /// config is built.
    PemFile(PathBuf),
    /// PEM text holding one or more `CERTIFICATE` blocks.
    Pem(Vec<u8>),
    /// One DER-encoded certificate.
    Der(Vec<u8>),
}

impl std::fmt::Debug for CaCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::PemFile(path) => f.debug_tuple("PemFile").field(path).finish(),
            Self::Pem(pem) => write!(f, "Pem({} bytes)", pem.len()),
            Self::Der(der) => write!(f, "Der({} bytes)", der.len()),
        }
    }
}

impl CaCertificate {
    /// The DER certificates this names.
    fn load(&self) -> Result<Vec<CertificateDer<'static>>, Error> {
        let certs = match self {
            Self::PemFile(path) => CertificateDer::pem_file_iter(path)
                .and_then(Iterator::collect::<Result<Vec<_>, _>>)
                .map_err(|source| self.pem_error(source))?,
            Self::Pem(pem) => CertificateDer::pem_slice_iter(pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|source| self.pem_error(source))?,
            Self::Der(der) => vec![CertificateDer::from(der.clone())],
        };
        if certs.is_empty() {
            return Err(TlsError::EmptyCa(self.clone()).into());
        }
        Ok(certs)
    }

    fn pem_error(&self, source: rustls::pki_types::pem::Error) -> Error {
        TlsError::CaPem {
            ca: self.clone(),
            source,
        }
        .into()
    }
}

/// The crypto provider: the process default if one is installed, else `ring`.
fn provider() -> Arc<CryptoProvider> {
    CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()))
}

/// The default client config (webpki roots only), built once so that
/// connections share its TLS session-resumption cache.
static DEFAULT_CLIENT: OnceLock<Arc<ClientConfig>> = OnceLock::new();

/// The operating system's roots, loaded once per process.
static NATIVE_ROOTS: OnceLock<Result<Vec<CertificateDer<'static>>, Arc<NativeRootsError>>> =
    OnceLock::new();

fn native_roots() -> Result<&'static [CertificateDer<'static>], Error> {
    let loaded = NATIVE_ROOTS.get_or_init(|| {
        let result = rustls_native_certs::load_native_certs();
        if result.certs.is_empty() {
            Err(Arc::new(NativeRootsError::new(result.errors)))
        } else {
            Ok(result.certs)
        }
    });
    loaded
        .as_deref()
        .map_err(|e| TlsError::NativeRoots(e.clone()).into())
}

/// The client config for `options`: [`Options::tls_config`] when set, else
/// one built from the root settings, with ALPN `http/1.1`.
///
/// The config for default options is built once per process and shared, so
/// its session-resumption cache serves every connection. A caller that opens
/// many connections with other options should build the config once with
/// this function and set it as [`Options::tls_config`].
pub fn client_config(options: &Options) -> Result<Arc<ClientConfig>, Error> {
    if let Some(config) = &options.tls_config {
        return Ok(config.clone());
    }
    let is_default = options.webpki_roots
        && !options.native_roots
        && options.extra_roots.is_empty()
        && !options.danger_accept_invalid_certs;
    if is_default {
        if let Some(config) = DEFAULT_CLIENT.get() {
            return Ok(config.clone());
        }
        let config = build_client_config(options)?;
        return Ok(DEFAULT_CLIENT.get_or_init(|| config).clone());
    }
    build_client_config(options)
}

fn build_client_config(options: &Options) -> Result<Arc<ClientConfig>, Error> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?;
    let mut config = if options.danger_accept_invalid_certs {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCert(provider)))
            .with_no_client_auth()
    } else {
        let mut roots = RootCertStore::empty();
        if options.webpki_roots {
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        }
        if options.native_roots {
            // Some system stores hold certificates webpki cannot parse; skip those.
            roots.add_parsable_certificates(native_roots()?.iter().cloned());
        }
        for ca in &options.extra_roots {
            for cert in ca.load()? {
                roots.add(cert).map_err(|source| TlsError::BadCa {
                    ca: ca.clone(),
                    source,
                })?;
            }
        }
        if roots.is_empty() {
            return Err(TlsError::NoRoots.into());
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    config.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
    Ok(Arc::new(config))
}

/// Runs the client side of a TLS handshake over `io` (a TCP stream, a proxy
/// tunnel …), verifying the certificate for `host` (a DNS name or an IP
/// address). Not bounded in time by itself: wrap it in a timeout, as
/// [`crate::connect_with`] does.
pub async fn connect<S>(
    io: S,
    host: &str,
    config: Arc<ClientConfig>,
) -> Result<tokio_rustls::client::TlsStream<S>, Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let name = ServerName::try_from(host.to_owned()).map_err(|source| TlsError::ServerName {
        host: host.to_owned(),
        source,
    })?;
    TlsConnector::from(config)
        .connect(name, io)
        .await
        .map_err(handshake_error)
}

/// A TLS handshake failure: [`Error::Tls`] when TLS itself failed (rustls
/// puts its error inside the `io::Error`), else the socket's [`Error::Io`].
fn handshake_error(error: io::Error) -> Error {
    if let Some(tls) = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        return TlsError::Handshake(tls.clone()).into();
    }
    if error.kind() == io::ErrorKind::InvalidData {
        return TlsError::InvalidData(error).into();
    }
    Error::Io(error)
}

/// Opens TLS to `host` over an open TCP stream with the config of `options`,
/// offering ALPN `h2` before `http/1.1` when `h2` is set.
pub(crate) async fn connect_tcp(
    tcp: TcpStream,
    host: &str,
    options: &Options,
    h2: bool,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, Error> {
    let mut config = client_config(options)?;
    if h2 {
        // A clone shares the session cache.
        let mut with_h2 = (*config).clone();
        with_h2.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP11.to_vec()];
        config = Arc::new(with_h2);
    }
    connect(tcp, host, config).await
}

/// `config` with ALPN `h2` offered before `http/1.1`, for a server that
/// serves WebSockets over HTTP/2 ([`crate::http2::Server`]) beside
/// HTTP/1.1: after the handshake, `alpn_protocol() == Some(b"h2")` tells
/// which to serve. Only for a server that does serve HTTP/2 on `h2`.
pub fn with_h2_alpn(config: &ServerConfig) -> Arc<ServerConfig> {
    let mut config = config.clone();
    config.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP11.to_vec()];
    Arc::new(config)
}

/// A server config from a PEM certificate chain (leaf first) and a PEM
/// private key (PKCS#8, PKCS#1 or SEC1), with ALPN `http/1.1`.
pub fn server_config_from_pem(
    cert_path: impl AsRef<Path>,
    key_path: impl AsRef<Path>,
) -> Result<Arc<ServerConfig>, Error> {
    let cert_path = cert_path.as_ref();
    let key_path = key_path.as_ref();
    let chain = CertificateDer::pem_file_iter(cert_path)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|source| TlsError::CertificateFile {
            path: cert_path.to_owned(),
            source,
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert_path.to_owned(),
        }
        .into());
    }
    let key = PrivateKeyDer::from_pem_file(key_path).map_err(|source| TlsError::KeyFile {
        path: key_path.to_owned(),
        source,
    })?;
    server_config(chain, key)
}

/// A server config from a DER certificate chain (leaf first) and its private
/// key, with ALPN `http/1.1`.
pub fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<ServerConfig>, Error> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(TlsError::CertificateAndKey)?;
    config.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
    Ok(Arc::new(config))
}

/// Runs the server side of a TLS handshake on `io`, bounded by `timeout`.
///
/// Then hand the stream to [`crate::accept_with`], whose own
/// [`crate::Config::handshake_timeout`] bounds the WebSocket handshake; a
/// peer can so hold a connection for at most the sum of both.
///
/// # Errors
///
/// [`Error::HandshakeTimeout`] when the peer does not finish in time,
/// [`Error::Tls`] when the handshake fails (garbage, alert, no common
/// version or ALPN protocol), [`Error::Io`] when the socket fails.
pub async fn accept<S>(
    acceptor: &TlsAcceptor,
    io: S,
    timeout: Duration,
) -> Result<tokio_rustls::server::TlsStream<S>, Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match tokio::time::timeout(timeout, acceptor.accept(io)).await {
        Ok(result) => result.map_err(handshake_error),
        Err(_) => Err(Error::HandshakeTimeout),
    }
}

/// The verifier behind `danger_accept_invalid_certs`: any chain for any name
/// is accepted; handshake signatures are still verified.
#[derive(Debug)]
struct AcceptAnyCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
