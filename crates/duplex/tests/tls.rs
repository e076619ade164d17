//! `wss://`: the client and server over rustls, with a CA made in each test.
//! Every test runs on loopback, bounded in time.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use duplex::tls::rustls::ServerConfig;
use duplex::tls::rustls::pki_types::pem;
use duplex::tls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use duplex::tls::{self, CaCertificate, TlsAcceptor};
use duplex::transport::Transport;
use duplex::{ClientRequest, CloseCode, Config, Error, Message, TlsError, WebSocket};
use futures_util::{SinkExt, StreamExt};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(10);

/// A CA and a server certificate it signed for `names`.
struct Pki {
    ca_der: Vec<u8>,
    ca_pem: String,
    cert_der: CertificateDer<'static>,
    cert_pem: String,
    key_der: Vec<u8>,
    key_pem: String,
}

/// A CA and a server certificate for `localhost` and `127.0.0.1`.
fn pki() -> Pki {
    pki_for(&["localhost", "127.0.0.1"])
}

fn pki_for(names: &[&str]) -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "duplex test CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let names: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
    let params = CertificateParams::new(names).unwrap();
    let cert = params.signed_by(&key, &ca).unwrap();
    Pki {
        ca_der: ca.der().to_vec(),
        ca_pem: ca.pem(),
        cert_der: cert.der().clone(),
        cert_pem: cert.pem(),
        key_der: key.serialize_der(),
        key_pem: key.serialize_pem(),
    }
}

impl Pki {
    fn server_config(&self) -> Arc<ServerConfig> {
        tls::server_config(
            vec![self.cert_der.clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone())),
        )
        .unwrap()
    }

    /// A client request for `url` trusting only this CA.
    fn request(&self, url: &str) -> ClientRequest {
        let mut request = ClientRequest::new(url);
        request.transport.webpki_roots = false;
        request.transport.extra_roots = vec![CaCertificate::Der(self.ca_der.clone())];
        request
    }
}

/// A wss echo server; each failed TLS or WebSocket handshake is reported on
/// the returned channel.
async fn wss_echo_server(
    config: Arc<ServerConfig>,
) -> (SocketAddr, mpsc::UnboundedReceiver<Error>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = TlsAcceptor::from(config);
    let (errors_tx, errors) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let acceptor = acceptor.clone();
            let errors = errors_tx.clone();
            tokio::spawn(async move {
                let stream = match tls::accept(&acceptor, tcp, Duration::from_secs(2)).await {
                    Ok(stream) => stream,
                    Err(error) => {
                        let _ = errors.send(error);
                        return;
                    }
                };
                match duplex::accept(stream).await {
                    Ok(mut ws) => {
                        while let Some(Ok(message)) = ws.next().await {
                            if ws.send(message).await.is_err() {
                                break;
                            }
                        }
                    }
                    Err(error) => {
                        let _ = errors.send(error);
                    }
                }
            });
        }
    });
    (addr, errors)
}

async fn connect(request: &ClientRequest) -> Result<WebSocket<Transport>, Error> {
    timeout(LIMIT, duplex::connect_with(request, &Config::client()))
        .await
        .expect("connect is bounded")
}

/// Sends a text and a binary message and expects them back, then closes.
async fn round_trip(mut ws: WebSocket<Transport>) {
    for message in [
        Message::text("over TLS"),
        Message::binary(vec![7u8; 100_000]),
    ] {
        ws.send(message.clone()).await.unwrap();
        let echoed = timeout(LIMIT, ws.next()).await.unwrap().unwrap().unwrap();
        assert_eq!(echoed, message);
    }
    ws.close(CloseCode::NORMAL, "bye").await.unwrap();
    assert!(timeout(LIMIT, ws.next()).await.unwrap().is_none());
    assert!(ws.close_info().unwrap().was_clean);
}

#[tokio::test]
async fn wss_echo_round_trip_with_a_private_ca() {
    let pki = pki();
    let (addr, _errors) = wss_echo_server(pki.server_config()).await;
    for host in ["localhost", "127.0.0.1"] {
        let ws = connect(&pki.request(&format!("wss://{host}:{}/", addr.port())))
            .await
            .unwrap();
        assert!(ws.get_ref().is_tls());
        assert_eq!(ws.get_ref().alpn_protocol(), Some(tls::ALPN_HTTP11));
        assert!(ws.get_ref().is_write_vectored());
        round_trip(ws).await;
    }
}

#[tokio::test]
async fn server_config_from_pem_files_and_ca_pem_file() {
    let pki = pki();
    let dir = temp_dir("pem");
    let (cert, key, ca) = (
        dir.join("cert.pem"),
        dir.join("key.pem"),
        dir.join("ca.pem"),
    );
    std::fs::write(&cert, &pki.cert_pem).unwrap();
    std::fs::write(&key, &pki.key_pem).unwrap();
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    let config = tls::server_config_from_pem(&cert, &key).unwrap();
    assert_eq!(config.alpn_protocols, vec![tls::ALPN_HTTP11.to_vec()]);
    let (addr, _errors) = wss_echo_server(config).await;
    let mut request = ClientRequest::new(format!("wss://localhost:{}/", addr.port()));
    request.transport.extra_roots = vec![CaCertificate::PemFile(ca.clone())];
    round_trip(connect(&request).await.unwrap()).await;
    // The same CA as PEM text.
    request.transport.extra_roots = vec![CaCertificate::Pem(pki.ca_pem.clone().into_bytes())];
    round_trip(connect(&request).await.unwrap()).await;

    let missing = tls::server_config_from_pem(dir.join("missing.pem"), &key).unwrap_err();
    assert!(
        matches!(
            &missing,
            Error::Tls(TlsError::CertificateFile { path, source: pem::Error::Io(io) })
                if path.ends_with("missing.pem") && io.kind() == std::io::ErrorKind::NotFound
        ),
        "{missing:?}"
    );
    assert!(missing.to_string().contains("missing.pem"), "{missing}");
    // A key that does not match the certificate.
    let other_key = dir.join("other.pem");
    std::fs::write(&other_key, KeyPair::generate().unwrap().serialize_pem()).unwrap();
    assert!(matches!(
        tls::server_config_from_pem(&cert, &other_key),
        Err(Error::Tls(TlsError::CertificateAndKey(_)))
    ));
    let no_key = tls::server_config_from_pem(&cert, &cert).unwrap_err();
    assert!(
        matches!(&no_key, Error::Tls(TlsError::KeyFile { .. })),
        "{no_key:?}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn client_refuses_an_untrusted_certificate() {
    let pki = pki();
    let (addr, mut errors) = wss_echo_server(pki.server_config()).await;
    let url = format!("wss://localhost:{}/", addr.port());

    // Default roots (Mozilla's) do not include the test CA.
    let error = connect(&ClientRequest::new(&url)).await.unwrap_err();
    assert!(
        matches!(
            &error,
            Error::Tls(TlsError::Handshake(tls::rustls::Error::InvalidCertificate(
                _
            )))
        ),
        "{error:?}"
    );
    assert!(error.to_string().contains("certificate"), "{error}");
    // The cause is the rustls error, for code that walks the chain.
    let cause = std::error::Error::source(&error).and_then(std::error::Error::source);
    assert!(
        cause.is_some_and(|cause| cause.is::<tls::rustls::Error>()),
        "{cause:?}"
    );
    // Trusting another CA does not help.
    let stranger = pki_for(&["localhost"]);
    let error = connect(&stranger.request(&url)).await.unwrap_err();
    assert!(
        matches!(
            error,
            Error::Tls(TlsError::Handshake(tls::rustls::Error::InvalidCertificate(
                _
            )))
        ),
        "{error}"
    );
    // The right CA, the wrong name.
    let localhost_only = pki_for(&["localhost"]);
    let (other, _other_errors) = wss_echo_server(localhost_only.server_config()).await;
    let wrong_name = localhost_only.request(&format!("wss://127.0.0.1:{}/", other.port()));
    let error = connect(&wrong_name).await.unwrap_err();
    assert!(
        matches!(
            &error,
            Error::Tls(TlsError::Handshake(tls::rustls::Error::InvalidCertificate(
                _
            )))
        ),
        "{error:?}"
    );
    assert!(error.to_string().contains("certificate"), "{error}");
    // The server saw the client's alerts as TLS failures.
    let seen = timeout(LIMIT, errors.recv()).await.unwrap().unwrap();
    assert!(
        matches!(
            seen,
            Error::Tls(TlsError::Handshake(tls::rustls::Error::AlertReceived(_)))
        ),
        "{seen:?}"
    );

    // Explicitly insecure: any certificate is accepted.
    let mut insecure = ClientRequest::new(&url);
    insecure.transport.danger_accept_invalid_certs = true;
    round_trip(connect(&insecure).await.unwrap()).await;
}

#[tokio::test]
async fn tls_garbage_does_not_stop_the_server() {
    let pki = pki();
    let (addr, mut errors) = wss_echo_server(pki.server_config()).await;
    for round in 0u8..3 {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        let mut garbage: Vec<u8> = (0..4096u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8 ^ round)
            .collect();
        if round == 1 {
            // A well-formed handshake record header over a garbage body.
            garbage[..5].copy_from_slice(&[0x16, 0x03, 0x01, 0x00, 0x40]);
        }
        let _ = tcp.write_all(&garbage).await;
        // The server answers with an alert or just closes; either way it ends
        // this connection.
        let mut sink = Vec::new();
        let _ = timeout(LIMIT, tcp.read_to_end(&mut sink))
            .await
            .expect("server closes a garbage connection");
        let seen = timeout(LIMIT, errors.recv()).await.unwrap().unwrap();
        assert!(
            matches!(
                seen,
                Error::Tls(TlsError::Handshake(_) | TlsError::InvalidData(_))
            ),
            "{seen:?}"
        );
    }
    // A plain-text WebSocket handshake on the TLS port is garbage too.
    let error = connect(&ClientRequest::new(format!(
        "ws://127.0.0.1:{}/",
        addr.port()
    )))
    .await
    .unwrap_err();
    assert!(!matches!(error, Error::HandshakeTimeout), "{error}");
    // A healthy client is still served.
    let ws = connect(&pki.request(&format!("wss://localhost:{}/", addr.port())))
        .await
        .unwrap();
    round_trip(ws).await;
}

#[tokio::test]
async fn tls_accept_is_bounded_in_time() {
    let pki = pki();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // A client that connects and never says a word.
    let _silent = TcpStream::connect(addr).await.unwrap();
    let (tcp, _) = listener.accept().await.unwrap();
    let acceptor = TlsAcceptor::from(pki.server_config());
    let started = tokio::time::Instant::now();
    let result = tls::accept(&acceptor, tcp, Duration::from_millis(200)).await;
    assert!(matches!(result, Err(Error::HandshakeTimeout)), "{result:?}");
    assert!(started.elapsed() < LIMIT);
}

#[tokio::test]
async fn client_tls_handshake_is_bounded_by_the_handshake_timeout() {
    // A "server" that accepts TCP and never answers the ClientHello.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hold = tokio::spawn(async move {
        let (_tcp, _) = listener.accept().await.unwrap();
        tokio::time::sleep(LIMIT).await;
    });
    let config = Config {
        handshake_timeout: Duration::from_millis(300),
        ..Config::client()
    };
    let request = ClientRequest::new(format!("wss://localhost:{}/", addr.port()));
    let result = timeout(LIMIT, duplex::connect_with(&request, &config))
        .await
        .unwrap();
    assert!(matches!(result, Err(Error::HandshakeTimeout)), "{result:?}");
    hold.abort();
}

#[test]
fn client_config_errors_are_tls_errors() {
    let mut options = duplex::transport::Options::default();
    options.webpki_roots = false;
    assert!(matches!(
        tls::client_config(&options),
        Err(Error::Tls(TlsError::NoRoots))
    ));
    options.extra_roots = vec![CaCertificate::Pem(b"not a certificate".to_vec())];
    assert!(matches!(
        tls::client_config(&options),
        Err(Error::Tls(TlsError::EmptyCa(CaCertificate::Pem(_))))
    ));
    options.extra_roots = vec![CaCertificate::Der(b"not DER".to_vec())];
    assert!(matches!(
        tls::client_config(&options),
        Err(Error::Tls(TlsError::BadCa { .. }))
    ));
    options.extra_roots = vec![CaCertificate::PemFile(PathBuf::from("/nonexistent/ca.pem"))];
    let error = tls::client_config(&options).unwrap_err();
    assert!(
        matches!(
            &error,
            Error::Tls(TlsError::CaPem { source: pem::Error::Io(io), .. })
                if io.kind() == std::io::ErrorKind::NotFound
        ),
        "{error:?}"
    );
    assert!(error.to_string().contains("/nonexistent/ca.pem"), "{error}");
    // Default options share one config (and so one session cache).
    let default = duplex::transport::Options::default();
    let (a, b) = (
        tls::client_config(&default).unwrap(),
        tls::client_config(&default).unwrap(),
    );
    assert!(Arc::ptr_eq(&a, &b));
    assert_eq!(a.alpn_protocols, vec![tls::ALPN_HTTP11.to_vec()]);
}

/// A fresh directory under the system's temporary directory.
fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "duplex-tls-{name}-{}-{:016x}",
        std::process::id(),
        rand::random::<u64>()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
