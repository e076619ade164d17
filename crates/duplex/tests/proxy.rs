//! The client through an HTTP `CONNECT` proxy written here (loopback only),
//! for `ws://` and `wss://`, and against proxies that refuse or misbehave.
//! Every test is bounded in time.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use duplex::error::ResponseError;
use duplex::proxy::{MAX_RESPONSE_HEAD, MAX_RESPONSE_HEADERS};
use duplex::tls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use duplex::tls::{self, CaCertificate, TlsAcceptor};
use duplex::transport::Transport;
use duplex::{ClientRequest, CloseCode, Config, Error, Message, Proxy, ProxyError, WebSocket};
use futures_util::{SinkExt, StreamExt};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(10);

/// A CONNECT proxy on loopback that requires `user:password` (basic auth)
/// when given, and records each target it tunnelled to.
struct TestProxy {
    addr: SocketAddr,
    tunnels: Arc<Mutex<Vec<String>>>,
}

impl TestProxy {
    async fn start(credentials: Option<&str>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let tunnels = Arc::new(Mutex::new(Vec::new()));
        let expected = credentials.map(|c| format!("Basic {}", STANDARD.encode(c)));
        let recorded = tunnels.clone();
        tokio::spawn(async move {
            loop {
                let (client, _) = listener.accept().await.unwrap();
                let expected = expected.clone();
                let recorded = recorded.clone();
                tokio::spawn(async move {
                    let _ = serve_proxy_connection(client, expected, recorded).await;
                });
            }
        });
        Self { addr, tunnels }
    }

    fn url(&self, userinfo: &str) -> String {
        format!("http://{userinfo}{}", self.addr)
    }

    fn tunnels(&self) -> Vec<String> {
        self.tunnels.lock().unwrap().clone()
    }
}

/// Reads a request head byte by byte (so nothing after it is taken), at most 8 KiB.
async fn read_head(tcp: &mut TcpStream) -> std::io::Result<String> {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 8192 {
            return Err(std::io::Error::other("head too long"));
        }
        head.push(tcp.read_u8().await?);
    }
    String::from_utf8(head).map_err(std::io::Error::other)
}

async fn serve_proxy_connection(
    mut client: TcpStream,
    expected_auth: Option<String>,
    tunnels: Arc<Mutex<Vec<String>>>,
) -> std::io::Result<()> {
    let head = timeout(LIMIT, read_head(&mut client)).await??;
    let mut lines = head.split("\r\n");
    let request_line: Vec<&str> = lines.next().unwrap_or_default().split(' ').collect();
    let ["CONNECT", target, "HTTP/1.1"] = request_line[..] else {
        client
            .write_all(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
            .await?;
        return Ok(());
    };
    let auth = lines.find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("proxy-authorization")
            .then(|| value.trim().to_owned())
    });
    if let Some(expected) = expected_auth
        && auth.as_deref() != Some(expected.as_str())
    {
        client
            .write_all(
                b"HTTP/1.1 407 Proxy Authentication Required\r\n\
                  Proxy-Authenticate: Basic realm=\"test\"\r\nContent-Length: 0\r\n\r\n",
            )
            .await?;
        return Ok(());
    }
    let mut upstream = match TcpStream::connect(target).await {
        Ok(upstream) => upstream,
        Err(_) => {
            client
                .write_all(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
                .await?;
            return Ok(());
        }
    };
    tunnels.lock().unwrap().push(target.to_owned());
    client
        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .await?;
    let _ = timeout(
        LIMIT,
        tokio::io::copy_bidirectional(&mut client, &mut upstream),
    )
    .await;
    Ok(())
}

/// A plain or TLS echo server on loopback; returns its address.
async fn echo_server(tls: Option<TlsAcceptor>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let tls = tls.clone();
            tokio::spawn(async move {
                match tls {
                    Some(acceptor) => {
                        if let Ok(stream) = tls::accept(&acceptor, tcp, LIMIT).await
                            && let Ok(ws) = duplex::accept(stream).await
                        {
                            echo(ws).await;
                        }
                    }
                    None => {
                        if let Ok(ws) = duplex::accept(tcp).await {
                            echo(ws).await;
                        }
                    }
                }
            });
        }
    });
    addr
}

async fn echo<S>(mut ws: WebSocket<S>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    while let Some(Ok(message)) = ws.next().await {
        if ws.send(message).await.is_err() {
            break;
        }
    }
}

async fn connect(request: &ClientRequest) -> Result<WebSocket<Transport>, Error> {
    timeout(LIMIT, duplex::connect_with(request, &Config::client()))
        .await
        .expect("connect is bounded")
}

async fn round_trip(mut ws: WebSocket<Transport>) {
    ws.send(Message::text("through the proxy")).await.unwrap();
    let echoed = timeout(LIMIT, ws.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(echoed, Message::text("through the proxy"));
    ws.close(CloseCode::NORMAL, "").await.unwrap();
    assert!(timeout(LIMIT, ws.next()).await.unwrap().is_none());
}

fn request_via(url: &str, proxy: Proxy) -> ClientRequest {
    let mut request = ClientRequest::new(url);
    request.transport.proxy = Some(proxy);
    request
}

#[tokio::test]
async fn ws_tunnels_through_proxy_with_credentials_from_url() {
    let proxy = TestProxy::start(Some("user:p@ss")).await;
    let server = echo_server(None).await;
    // The password's `@` percent-encoded in the URL.
    let via = Proxy::new(&proxy.url("user:p%40ss@")).unwrap();
    let ws = connect(&request_via(&format!("ws://{server}/"), via))
        .await
        .unwrap();
    round_trip(ws).await;
    assert_eq!(proxy.tunnels(), vec![server.to_string()]);
}

#[tokio::test]
async fn ws_tunnels_through_proxy_with_explicit_credentials() {
    let proxy = TestProxy::start(Some("aladdin:open sesame")).await;
    let server = echo_server(None).await;
    let via = Proxy::new(&proxy.url(""))
        .unwrap()
        .basic_auth("aladdin", "open sesame");
    round_trip(
        connect(&request_via(&format!("ws://{server}/"), via))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(proxy.tunnels().len(), 1);
}

#[tokio::test]
async fn wss_tunnels_through_proxy() {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let config = tls::server_config(
        vec![cert.der().clone()],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    )
    .unwrap();
    let server = echo_server(Some(TlsAcceptor::from(config))).await;
    let proxy = TestProxy::start(Some("u:p")).await;
    let mut request = request_via(
        &format!("wss://localhost:{}/", server.port()),
        Proxy::new(&proxy.url("u:p@")).unwrap(),
    );
    request.transport.extra_roots = vec![CaCertificate::Der(ca.der().to_vec())];
    let ws = connect(&request).await.unwrap();
    assert!(ws.get_ref().is_tls());
    round_trip(ws).await;
    // The proxy saw the name, not an address: it resolves it.
    assert_eq!(
        proxy.tunnels(),
        vec![format!("localhost:{}", server.port())]
    );
}

#[tokio::test]
async fn proxy_407_is_a_proxy_error() {
    let proxy = TestProxy::start(Some("user:right")).await;
    let server = echo_server(None).await;
    let url = format!("ws://{server}/");

    let wrong = Proxy::new(&proxy.url("user:wrong@")).unwrap();
    let error = connect(&request_via(&url, wrong)).await.unwrap_err();
    assert!(
        matches!(
            &error,
            Error::Proxy(ProxyError::CredentialsRefused { status, reason })
                if status.as_u16() == 407 && reason == "Proxy Authentication Required"
        ),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(
        message.contains("407") && message.contains("credentials"),
        "{message}"
    );
    assert!(
        !error.to_string().contains("wrong"),
        "password leaked: {error}"
    );

    let anonymous = Proxy::new(&proxy.url("")).unwrap();
    let error = connect(&request_via(&url, anonymous)).await.unwrap_err();
    assert!(
        matches!(
            &error,
            Error::Proxy(ProxyError::AuthenticationRequired { .. })
        ),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(
        message.contains("407") && message.contains("requires authentication"),
        "{message}"
    );
    assert!(proxy.tunnels().is_empty());
}

#[tokio::test]
async fn proxy_refusal_is_a_proxy_error() {
    let proxy = TestProxy::start(None).await;
    // A port nothing listens on: the proxy answers 502.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closed_addr = closed.local_addr().unwrap();
    drop(closed);
    let via = Proxy::new(&proxy.url("")).unwrap();
    let error = connect(&request_via(&format!("ws://{closed_addr}/"), via))
        .await
        .unwrap_err();
    assert!(
        matches!(
            &error,
            Error::Proxy(ProxyError::Refused { target, status, .. })
                if status.as_u16() == 502 && *target == closed_addr.to_string()
        ),
        "{error:?}"
    );
    assert!(error.to_string().contains("502 Bad Gateway"), "{error}");

    // No proxy at the proxy's address.
    let via = Proxy::new(&format!("http://{closed_addr}")).unwrap();
    let error = connect(&request_via("ws://127.0.0.1:1/", via))
        .await
        .unwrap_err();
    assert!(
        matches!(
            &error,
            Error::Proxy(ProxyError::Unreachable { port, source, .. })
                if *port == closed_addr.port()
                    && source.kind() == std::io::ErrorKind::ConnectionRefused
        ),
        "{error:?}"
    );
    assert!(error.to_string().contains("cannot reach"), "{error}");
}

/// A fake proxy that answers every connection by writing `chunks` (pausing
/// between them) after reading the CONNECT head, then holds the connection.
async fn scripted_proxy(chunks: Vec<Vec<u8>>) -> Proxy {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut tcp, _) = listener.accept().await.unwrap();
            let chunks = chunks.clone();
            tokio::spawn(async move {
                if read_head(&mut tcp).await.is_err() {
                    return;
                }
                for chunk in chunks {
                    if tcp.write_all(&chunk).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                let mut sink = Vec::new();
                let _ = timeout(LIMIT, tcp.read_to_end(&mut sink)).await;
            });
        }
    });
    Proxy::new(&format!("http://{addr}"))
        .unwrap()
        .timeout(Duration::from_millis(500))
}

#[tokio::test]
async fn bytes_after_the_proxy_response_are_kept() {
    // The response and the target's first bytes in one write.
    let proxy = scripted_proxy(vec![b"HTTP/1.1 200 OK\r\nVia: test\r\n\r\nhello".to_vec()]).await;
    let mut tunnel = proxy.connect("example.test", 443, true).await.unwrap();
    let mut first = [0; 5];
    timeout(LIMIT, tunnel.read_exact(&mut first))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&first, b"hello");

    // The empty line split across two writes, the target's bytes in the second.
    let proxy = scripted_proxy(vec![
        b"HTTP/1.1 200 Connection established\r\n\r".to_vec(),
        b"\nworld".to_vec(),
    ])
    .await;
    let mut tunnel = proxy.connect("example.test", 443, true).await.unwrap();
    timeout(LIMIT, tunnel.read_exact(&mut first))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&first, b"world");
}

#[tokio::test]
async fn misbehaving_proxies_fail_in_bounded_size_and_time() {
    // An endless header block.
    let endless = std::iter::once(b"HTTP/1.1 200 OK\r\n".to_vec())
        .chain((0..20).map(|_| format!("X-Pad: {}\r\n", "a".repeat(1000)).into_bytes()))
        .collect();
    let error = scripted_proxy(endless)
        .await
        .connect("example.test", 443, true)
        .await
        .unwrap_err();
    assert!(
        matches!(
            &error,
            Error::Proxy(ProxyError::Response(ResponseError::HeadersTooLarge { limit }))
                if *limit == MAX_RESPONSE_HEAD
        ),
        "{error:?}"
    );
    assert!(error.to_string().contains("exceeds"), "{error}");

    // Not HTTP.
    let error = scripted_proxy(vec![b"SSH-2.0-OpenSSH\r\n\r\n".to_vec()])
        .await
        .connect("example.test", 443, true)
        .await
        .unwrap_err();
    assert!(
        matches!(
            &error,
            Error::Proxy(ProxyError::Response(ResponseError::Malformed(_)))
        ),
        "{error:?}"
    );
    assert!(error.to_string().contains("malformed"), "{error}");

    // Silent after the CONNECT: the proxy's timeout ends it.
    let started = tokio::time::Instant::now();
    let error = scripted_proxy(Vec::new())
        .await
        .connect("example.test", 443, true)
        .await
        .unwrap_err();
    assert!(
        matches!(&error, Error::Proxy(ProxyError::Timeout { timeout, .. })
            if *timeout == Duration::from_millis(500)),
        "{error:?}"
    );
    assert!(error.to_string().contains("did not open"), "{error}");
    assert!(started.elapsed() < LIMIT);

    // Closes before answering.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.unwrap();
        let _ = read_head(&mut tcp).await;
    });
    let error = Proxy::new(&format!("http://{addr}"))
        .unwrap()
        .connect("example.test", 443, true)
        .await
        .unwrap_err();
    assert!(
        matches!(&error, Error::Proxy(ProxyError::Closed)),
        "{error:?}"
    );
}

#[tokio::test]
async fn client_handshake_timeout_bounds_a_slow_proxy() {
    // The proxy never answers; its own timeout is longer than the handshake's.
    let proxy = scripted_proxy(Vec::new()).await.timeout(LIMIT);
    let config = Config {
        handshake_timeout: Duration::from_millis(300),
        ..Config::client()
    };
    let request = request_via("ws://example.test/", proxy);
    let result = timeout(LIMIT, duplex::connect_with(&request, &config))
        .await
        .unwrap();
    assert!(matches!(result, Err(Error::HandshakeTimeout)), "{result:?}");
}

/// A fake proxy that, after reading the CONNECT head, starts a header line
/// and writes `byte` after it forever (until the client goes).
async fn endless_proxy(byte: u8) -> Proxy {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.unwrap();
        if read_head(&mut tcp).await.is_err() {
            return;
        }
        let _ = tcp.write_all(b"HTTP/1.1 200 OK\r\nX-Pad: ").await;
        let chunk = [byte; 512];
        while tcp.write_all(&chunk).await.is_ok() {}
    });
    Proxy::new(&format!("http://{addr}"))
        .unwrap()
        .timeout(Duration::from_secs(5))
}

#[tokio::test]
async fn a_never_ending_connect_reply_head_fails_at_the_size_bound() {
    // One header line that never ends: the reader stops at its size bound,
    // long before the proxy's timeout.
    let proxy = endless_proxy(b'a').await;
    let started = tokio::time::Instant::now();
    let error = timeout(LIMIT, proxy.connect("example.test", 443, true))
        .await
        .expect("bounded by size, not only by time")
        .unwrap_err();
    assert!(
        matches!(
            &error,
            Error::Proxy(ProxyError::Response(ResponseError::HeadersTooLarge { limit }))
                if *limit == MAX_RESPONSE_HEAD
        ),
        "{error:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        error.to_string(),
        format!(
            "proxy: bad answer to CONNECT: response header block exceeds {MAX_RESPONSE_HEAD} bytes"
        )
    );
}

#[tokio::test]
async fn connect_reply_lines_must_end_in_crlf() {
    // A head whose lines end in a bare LF is malformed at once: it is not
    // waited on until the timeout for a CRLF CRLF that never comes.
    let proxy = scripted_proxy(vec![b"HTTP/1.1 200 OK\n\nhello".to_vec()])
        .await
        .timeout(LIMIT);
    let started = tokio::time::Instant::now();
    let error = proxy.connect("example.test", 443, true).await.unwrap_err();
    assert!(
        matches!(
            &error,
            Error::Proxy(ProxyError::Response(ResponseError::Malformed(_)))
        ),
        "{error:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn connect_reply_header_lines_are_bounded() {
    let mut head = b"HTTP/1.1 200 OK\r\n".to_vec();
    for i in 0..=MAX_RESPONSE_HEADERS {
        head.extend_from_slice(format!("X-{i}: y\r\n").as_bytes());
    }
    head.extend_from_slice(b"\r\n");
    let error = scripted_proxy(vec![head])
        .await
        .connect("example.test", 443, true)
        .await
        .unwrap_err();
    assert!(
        matches!(
            &error,
            Error::Proxy(ProxyError::Response(ResponseError::TooManyHeaders { limit }))
                if *limit == MAX_RESPONSE_HEADERS
        ),
        "{error:?}"
    );
}
