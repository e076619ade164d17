//! WebSocket over HTTP/2 (RFC 8441): Duplex's client against Duplex's server
//! over prior-knowledge h2c and over TLS with ALPN `h2`, the fallback to
//! HTTP/1.1, many WebSockets on one connection, backpressure through HTTP/2
//! flow control, resets, limits per stream, and each of RFC 8441's rules
//! checked with a raw HTTP/2 client. Every test runs on loopback, bounded in
//! time.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use duplex::http2::{self, Http2Config, Pool, Server, h2};
use duplex::tls::rustls::ServerConfig;
use duplex::tls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use duplex::tls::{self, CaCertificate, TlsAcceptor};
use duplex::{
    Accept, ClientRequest, CloseCode, CloseInfo, Config, Error, Message, Reject, WebSocket,
};
use futures_util::{SinkExt, StreamExt};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::timeout;

/// Bound of a test's whole run (16 MiB messages in a debug build on a busy
/// machine take a while).
const LIMIT: Duration = Duration::from_secs(240);
/// Bound of one quick step.
const STEP: Duration = Duration::from_secs(10);
const MIB: usize = 1 << 20;

/// What the test server saw of its WebSockets, in the order they ended.
#[derive(Debug)]
struct Ended {
    http2: bool,
    close: Option<CloseInfo>,
    error: Option<String>,
}

/// A server on loopback that serves WebSockets over HTTP/1.1 and HTTP/2 on
/// one port, with an echo service and a few test paths.
struct TestServer {
    addr: SocketAddr,
    /// TCP connections accepted.
    connections: Arc<AtomicUsize>,
    ended: mpsc::UnboundedReceiver<Ended>,
}

#[derive(Clone, Copy, PartialEq)]
enum Http2Mode {
    /// h2c (or ALPN h2) served by Duplex's HTTP/2 server.
    Duplex,
    /// An HTTP/2 server without SETTINGS_ENABLE_CONNECT_PROTOCOL.
    WithoutSetting,
    /// HTTP/1.1 only.
    Off,
}

async fn start(config: Config, tls: Option<Arc<ServerConfig>>, mode: Http2Mode) -> TestServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let (tx, ended) = mpsc::unbounded_channel();
    let server = Server::new(config.clone())
        .decide(|request| {
            if request.path() == "/forbidden" {
                return Err(Reject::new(http::StatusCode::FORBIDDEN, "go away"));
            }
            let protocol = request.protocols().first().map(|p| Arc::from(p.as_str()));
            Ok(Accept {
                protocol,
                ..Accept::default()
            })
        })
        .pages(|request| {
            if request.uri().path() == "/page" {
                http::Response::new(Bytes::from_static(b"a page"))
            } else {
                let mut response = http::Response::new(Bytes::new());
                *response.status_mut() = http::StatusCode::NOT_FOUND;
                response
            }
        });
    let count = connections.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            count.fetch_add(1, Ordering::SeqCst);
            let (server, config, tls, tx) =
                (server.clone(), config.clone(), tls.clone(), tx.clone());
            tokio::spawn(async move {
                match tls {
                    Some(tls) => {
                        let acceptor = TlsAcceptor::from(tls);
                        let Ok(stream) = tls::accept(&acceptor, tcp, STEP).await else {
                            return;
                        };
                        if stream.get_ref().1.alpn_protocol() == Some(http2::ALPN_H2) {
                            serve_h2(stream, mode, &server, tx).await;
                        } else {
                            serve_h1(stream, &config, tx).await;
                        }
                    }
                    None => {
                        let h2c = mode != Http2Mode::Off
                            && timeout(STEP, http2::is_h2c_preface(&tcp))
                                .await
                                .is_ok_and(|r| r.unwrap_or(false));
                        if h2c {
                            serve_h2(tcp, mode, &server, tx).await;
                        } else {
                            serve_h1(tcp, &config, tx).await;
                        }
                    }
                }
            });
        }
    });
    TestServer {
        addr,
        connections,
        ended,
    }
}

async fn serve_h1<S>(io: S, config: &Config, tx: mpsc::UnboundedSender<Ended>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let accepted = duplex::accept_with(io, config, |request| {
        let protocol = request.protocols().first().map(|p| Arc::from(p.as_str()));
        Ok(Accept {
            protocol,
            ..Accept::default()
        })
    })
    .await;
    if let Ok(ws) = accepted {
        service(ws, false, tx).await;
    }
}

async fn serve_h2<S>(io: S, mode: Http2Mode, server: &Server, tx: mpsc::UnboundedSender<Ended>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    if mode == Http2Mode::WithoutSetting {
        // A plain HTTP/2 server: it answers every request 404.
        let Ok(mut conn) = h2::server::handshake(io).await else {
            return;
        };
        while let Some(Ok((_, mut respond))) = conn.accept().await {
            let mut response = http::Response::new(());
            *response.status_mut() = http::StatusCode::NOT_FOUND;
            let _ = respond.send_response(response, true);
        }
        return;
    }
    let _ = server
        .serve_connection(io, move |ws, request| {
            assert!(request.is_extended_connect());
            let tx = tx.clone();
            async move {
                service(ws, true, tx).await;
            }
        })
        .await;
}

/// The test service: echoes messages; `close:CODE` closes with CODE;
/// `stall` stops reading; `drop` drops the WebSocket (a reset over HTTP/2).
async fn service<S>(mut ws: WebSocket<S>, http2: bool, tx: mpsc::UnboundedSender<Ended>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut error = None;
    while let Some(message) = ws.next().await {
        let message = match message {
            Ok(message) => message,
            Err(e) => {
                // Driving the stream to its end writes our close frame.
                error.get_or_insert(format!("{e:?}"));
                continue;
            }
        };
        if let Message::Text(text) = &message {
            let text = text.as_str();
            if let Some(code) = text.strip_prefix("close:") {
                let code: u16 = code.parse().unwrap();
                let _ = ws.close(CloseCode(code), "server closes").await;
                continue;
            }
            if text == "stall" {
                tokio::time::sleep(LIMIT).await;
                return;
            }
            if text == "drop" {
                let _ = tx.send(Ended {
                    http2,
                    close: None,
                    error: Some("dropped".into()),
                });
                return;
            }
        }
        if ws.send(message).await.is_err() {
            break;
        }
    }
    let _ = tx.send(Ended {
        http2,
        close: ws.close_info().cloned(),
        error,
    });
}

/// A CA and a server config for 127.0.0.1, and a client request trusting it.
struct Pki {
    ca_der: Vec<u8>,
    config: Arc<ServerConfig>,
}

fn pki() -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let config = tls::server_config(
        vec![cert.der().clone()],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    )
    .unwrap();
    Pki {
        ca_der: ca.der().to_vec(),
        config,
    }
}

impl Pki {
    fn request(&self, url: &str, pool: &Pool) -> ClientRequest {
        let mut request = ClientRequest::new(url);
        request.transport.webpki_roots = false;
        request.transport.extra_roots = vec![CaCertificate::Der(self.ca_der.clone())];
        request.transport.http2 = Some(pool.clone());
        request
    }
}

fn pooled(url: &str, pool: &Pool) -> ClientRequest {
    let mut request = ClientRequest::new(url);
    request.transport.http2 = Some(pool.clone());
    request
}

/// A text message of `size` bytes (ASCII and multi-byte characters) and a
/// binary one, both patterned so deflate has work to do.
fn payloads(size: usize) -> [Message; 2] {
    let mut text = String::with_capacity(size);
    let mut i = 0u32;
    while text.len() < size {
        let c = if i.is_multiple_of(7) && text.len() + 3 <= size {
            'é'
        } else {
            char::from(b'a' + (i % 26) as u8)
        };
        if text.len() + c.len_utf8() > size {
            text.push('x');
        } else {
            text.push(c);
        }
        i = i.wrapping_add(1);
    }
    let binary: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
    [Message::text(text), Message::binary(binary)]
}

/// Sends each size as text and binary and checks each echo.
async fn echo_matrix<S>(ws: &mut WebSocket<S>, sizes: &[usize])
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    for &size in sizes {
        for message in payloads(size) {
            ws.send(message.clone()).await.unwrap();
            let echo = ws.next().await.unwrap().unwrap();
            assert_eq!(echo.kind(), message.kind(), "size {size}");
            assert!(
                echo.payload() == message.payload(),
                "size {size}: echo differs"
            );
        }
    }
}

/// Every close code path on fresh WebSockets of `pool`: closed by the client
/// and by the server, each seen cleanly on both sides.
async fn close_cases(server: &mut TestServer, request: &ClientRequest, config: &Config) {
    for code in [1000, 1001, 1008, 1011, 3000, 4999] {
        for by_client in [true, false] {
            let mut ws = duplex::connect_with(request, config).await.unwrap();
            assert!(ws.get_ref().is_http2());
            if by_client {
                ws.close(CloseCode(code), "client closes").await.unwrap();
            } else {
                ws.send(Message::text(format!("close:{code}")))
                    .await
                    .unwrap();
                assert!(ws.next().await.is_none());
            }
            let info = ws.close_info().unwrap().clone();
            assert_eq!((info.code, info.was_clean), (CloseCode(code), true));
            let ended = timeout(STEP, server.ended.recv()).await.unwrap().unwrap();
            assert!(ended.http2);
            let theirs = ended.close.clone().unwrap();
            assert_eq!(
                (theirs.code, theirs.was_clean),
                (CloseCode(code), true),
                "{ended:?}"
            );
            // Each side reports the reason the other sent first.
            if by_client {
                assert_eq!(theirs.reason, "client closes");
            } else {
                assert_eq!(info.reason, "server closes");
            }
        }
    }
}

/// The message matrix over h2c: sizes 0 B to 16 MiB, text and binary, whole
/// and fragmented (either side), compression on and off, every close path;
/// all on one HTTP/2 connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_matrix_over_h2c() {
    timeout(LIMIT, async {
        for compress in [true, false] {
            for fragment in [None, Some(4096)] {
                let mut server_config = Config::default();
                let mut client_config = Config::client();
                if !compress {
                    server_config = server_config.without_compression();
                    client_config = client_config.without_compression();
                }
                if let Some(size) = fragment {
                    server_config.protocol.max_send_frame_size = size;
                    client_config.protocol.max_send_frame_size = size;
                }
                let mut server = start(server_config, None, Http2Mode::Duplex).await;
                let pool = Pool::new();
                let request = pooled(&format!("ws://{}/echo", server.addr), &pool);
                let mut ws = duplex::connect_with(&request, &client_config)
                    .await
                    .unwrap();
                assert!(ws.get_ref().is_http2(), "over HTTP/2");
                let negotiated = ws.connection().deflate_params().is_some();
                assert_eq!(negotiated, compress);
                let sizes: &[usize] = if fragment.is_none() {
                    &[0, 1, 125, 126, 65535, 65536, MIB, 16 * MIB]
                } else {
                    &[0, 125, 65536, MIB]
                };
                echo_matrix(&mut ws, sizes).await;
                ws.close(CloseCode::NORMAL, "").await.unwrap();
                assert_eq!(
                    server.ended.recv().await.unwrap().close.unwrap().code,
                    CloseCode::NORMAL
                );
                close_cases(&mut server, &request, &client_config).await;
                assert_eq!(
                    server.connections.load(Ordering::SeqCst),
                    1,
                    "one connection"
                );
            }
        }
    })
    .await
    .unwrap();
}

/// The same over TLS, the server choosing `h2` by ALPN.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_matrix_over_tls_alpn_h2() {
    timeout(LIMIT, async {
        let pki = pki();
        for compress in [true, false] {
            let (server_config, client_config) = if compress {
                (Config::default(), Config::client())
            } else {
                (
                    Config::default().without_compression(),
                    Config::client().without_compression(),
                )
            };
            let tls_config = tls::with_h2_alpn(&pki.config);
            let mut server = start(server_config, Some(tls_config), Http2Mode::Duplex).await;
            let pool = Pool::new();
            let url = format!("wss://127.0.0.1:{}/echo", server.addr.port());
            let request = pki.request(&url, &pool);
            let mut ws = duplex::connect_with(&request, &client_config)
                .await
                .unwrap();
            assert!(ws.get_ref().is_http2(), "over HTTP/2");
            assert_eq!(ws.connection().deflate_params().is_some(), compress);
            echo_matrix(&mut ws, &[0, 125, 126, 65536, MIB, 16 * MIB]).await;
            ws.close(CloseCode::NORMAL, "").await.unwrap();
            assert_eq!(
                server.ended.recv().await.unwrap().close.unwrap().code,
                CloseCode::NORMAL
            );
            close_cases(&mut server, &request, &client_config).await;
            assert_eq!(server.connections.load(Ordering::SeqCst), 1);
        }
    })
    .await
    .unwrap();
}

/// Subprotocols are negotiated over HTTP/2 as over HTTP/1.1.
#[tokio::test]
async fn subprotocol_over_h2() {
    timeout(STEP, async {
        let server = start(Config::default(), None, Http2Mode::Duplex).await;
        let pool = Pool::new();
        let request = pooled(&format!("ws://{}/", server.addr), &pool)
            .protocol("v2.chat")
            .protocol("v1.chat");
        let ws = duplex::connect_with(&request, &Config::client())
            .await
            .unwrap();
        assert!(ws.get_ref().is_http2());
        assert_eq!(ws.protocol(), Some("v2.chat"));
    })
    .await
    .unwrap();
}

/// A server without SETTINGS_ENABLE_CONNECT_PROTOCOL, or without HTTP/2 at
/// all: the client falls back to HTTP/1.1 on a new connection, and the pool
/// remembers it.
#[tokio::test]
async fn falls_back_to_http1() {
    timeout(STEP * 3, async {
        for mode in [Http2Mode::WithoutSetting, Http2Mode::Off] {
            let mut server = start(Config::default(), None, mode).await;
            let pool = Pool::new();
            let url = format!("ws://{}/", server.addr);
            let request = pooled(&url, &pool);
            let mut ws = duplex::connect_with(&request, &Config::client())
                .await
                .unwrap();
            assert!(!ws.get_ref().is_http2());
            assert!(pool.is_http1_only(&url));
            echo_matrix(&mut ws, &[125]).await;
            ws.close(CloseCode::NORMAL, "").await.unwrap();
            let ended = server.ended.recv().await.unwrap();
            assert!(!ended.http2);
            assert_eq!(
                server.connections.load(Ordering::SeqCst),
                2,
                "h2 try, then HTTP/1.1"
            );
            // Known now: straight to HTTP/1.1.
            let ws = duplex::connect_with(&request, &Config::client())
                .await
                .unwrap();
            assert!(!ws.get_ref().is_http2());
            assert_eq!(server.connections.load(Ordering::SeqCst), 3);
        }
    })
    .await
    .unwrap();
}

/// A TLS server that does not offer `h2`: the client speaks HTTP/1.1 on the
/// same connection.
#[tokio::test]
async fn tls_without_h2_alpn_is_http1() {
    timeout(STEP, async {
        let pki = pki();
        let server = start(
            Config::default(),
            Some(pki.config.clone()),
            Http2Mode::Duplex,
        )
        .await;
        let pool = Pool::new();
        let url = format!("wss://127.0.0.1:{}/", server.addr.port());
        let mut ws = duplex::connect_with(&pki.request(&url, &pool), &Config::client())
            .await
            .unwrap();
        assert!(!ws.get_ref().is_http2());
        assert_eq!(ws.get_ref().alpn_protocol(), Some(tls::ALPN_HTTP11));
        echo_matrix(&mut ws, &[125]).await;
        assert_eq!(server.connections.load(Ordering::SeqCst), 1);
    })
    .await
    .unwrap();
}

/// 100 WebSockets on one HTTP/2 connection, all talking at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_websockets_share_one_connection() {
    timeout(STEP * 3, async {
        let server = start(Config::default(), None, Http2Mode::Duplex).await;
        let pool = Pool::new();
        let request = pooled(&format!("ws://{}/", server.addr), &pool);
        let mut sockets = Vec::new();
        for _ in 0..100 {
            let ws = duplex::connect_with(&request, &Config::client())
                .await
                .unwrap();
            assert!(ws.get_ref().is_http2());
            sockets.push(ws);
        }
        let tasks: Vec<_> = sockets
            .into_iter()
            .enumerate()
            .map(|(i, mut ws)| {
                tokio::spawn(async move {
                    for round in 0..10 {
                        let text = format!("socket {i} round {round}");
                        ws.send(Message::text(text.clone())).await.unwrap();
                        let echo = ws.next().await.unwrap().unwrap();
                        assert_eq!(echo, Message::text(text));
                    }
                    ws.close(CloseCode::NORMAL, "").await.unwrap();
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(server.connections.load(Ordering::SeqCst), 1);
    })
    .await
    .unwrap();
}

/// A server WebSocket that stops reading: HTTP/2 flow control stops the
/// client's writes, whose buffered amount stays bounded, while another
/// WebSocket on the same connection still works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_stops_bounds_the_writer() {
    timeout(STEP * 3, async {
        let server = start(
            Config::default().without_compression(),
            None,
            Http2Mode::Duplex,
        )
        .await;
        let pool = Pool::new();
        let request = pooled(&format!("ws://{}/", server.addr), &pool);
        let mut config = Config::client().without_compression();
        config.write_buffer_high_water = 256 * 1024;
        let mut ws = duplex::connect_with(&request, &config).await.unwrap();
        ws.send(Message::text("stall")).await.unwrap();
        let chunk = Message::binary(vec![7u8; 64 * 1024]);
        let mut sent = 0usize;
        let blocked = loop {
            match timeout(Duration::from_millis(500), ws.send(chunk.clone())).await {
                Ok(result) => {
                    result.unwrap();
                    sent += 64 * 1024;
                    assert!(sent < 64 * MIB, "the writer was never stopped");
                }
                Err(_) => break ws.buffered_amount(),
            }
        };
        assert!(
            blocked <= config.write_buffer_high_water + 64 * 1024 + 16,
            "buffered {blocked}"
        );
        // Stream window (256 KiB) + h2 send buffer (256 KiB) + our high water
        // + slack: nowhere near unbounded.
        assert!(
            sent <= 2 * MIB,
            "sent {sent} bytes to a reader that stopped"
        );
        // The connection is not blocked for the others.
        let mut other = duplex::connect_with(&request, &config).await.unwrap();
        echo_matrix(&mut other, &[125, 65536]).await;
        assert_eq!(server.connections.load(Ordering::SeqCst), 1);
    })
    .await
    .unwrap();
}

/// The server drops a WebSocket without a close handshake: over HTTP/2
/// that ends the stream, as a TCP close would, and the client's WebSocket
/// ends with 1006, while the connection serves others.
#[tokio::test]
async fn dropping_a_websocket_is_a_tcp_close() {
    timeout(STEP, async {
        let server = start(Config::default(), None, Http2Mode::Duplex).await;
        let pool = Pool::new();
        let request = pooled(&format!("ws://{}/", server.addr), &pool);
        let mut ws = duplex::connect_with(&request, &Config::client())
            .await
            .unwrap();
        ws.send(Message::text("drop")).await.unwrap();
        let next = ws.next().await;
        assert!(
            matches!(next, Some(Err(Error::AbnormalClosure))),
            "{next:?}"
        );
        let info = ws.close_info().unwrap();
        assert_eq!((info.code, info.was_clean), (CloseCode::ABNORMAL, false));
        let mut other = duplex::connect_with(&request, &Config::client())
            .await
            .unwrap();
        echo_matrix(&mut other, &[10]).await;
    })
    .await
    .unwrap();
}

/// RST_STREAM from the client is an abrupt close of the server's WebSocket:
/// a `ConnectionReset` error and 1006.
#[tokio::test]
async fn client_reset_is_an_abrupt_close() {
    timeout(STEP, async {
        let mut server = start(Config::default(), None, Http2Mode::Duplex).await;
        let send = raw_h2(server.addr).await;
        let request = connect_request(
            server.addr,
            "/",
            Some("websocket"),
            &[("sec-websocket-version", "13")],
        );
        let (_response, mut stream) = send_raw(&send, request).await;
        stream.send_reset(h2::Reason::CANCEL);
        let ended = server.ended.recv().await.unwrap();
        let close = ended.close.unwrap();
        assert_eq!((close.code, close.was_clean), (CloseCode::ABNORMAL, false));
        let error = ended.error.unwrap();
        assert!(error.contains("ConnectionReset"), "{error}");
    })
    .await
    .unwrap();
}

/// RST_STREAM from the server is an abrupt close of the client's WebSocket.
#[tokio::test]
async fn server_reset_is_an_abrupt_close() {
    timeout(STEP, async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut conn = h2::server::Builder::new()
                .enable_connect_protocol()
                .handshake::<_, Bytes>(tcp)
                .await
                .unwrap();
            let (_request, mut respond) = conn.accept().await.unwrap().unwrap();
            let mut stream = respond
                .send_response(http::Response::new(()), false)
                .unwrap();
            // Serve the connection while the client notices.
            tokio::spawn(async move { while conn.accept().await.is_some() {} });
            tokio::time::sleep(Duration::from_millis(50)).await;
            stream.send_reset(h2::Reason::INTERNAL_ERROR);
            tokio::time::sleep(STEP).await;
        });
        let tcp = TcpStream::connect(addr).await.unwrap();
        let conn =
            http2::H2Connection::handshake(tcp, false, &Config::client(), &Http2Config::default())
                .await
                .unwrap();
        let mut ws = conn
            .open(
                &ClientRequest::new(format!("ws://{addr}/")),
                &Config::client(),
            )
            .await
            .unwrap();
        match ws.next().await {
            Some(Err(Error::Io(error))) => {
                assert_eq!(
                    error.kind(),
                    std::io::ErrorKind::ConnectionReset,
                    "{error:?}"
                );
            }
            other => panic!("expected a reset, got {other:?}"),
        }
        let info = ws.close_info().unwrap();
        assert_eq!((info.code, info.was_clean), (CloseCode::ABNORMAL, false));
    })
    .await
    .unwrap();
}

/// The message limit applies per stream: one WebSocket that sends too much
/// is closed with 1009, the next on the same connection works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_limit_per_stream() {
    timeout(STEP * 3, async {
        let mut config = Config::default().without_compression();
        config.protocol.max_message_size = 64 * 1024;
        config.protocol.max_frame_size = 64 * 1024;
        let mut server = start(config, None, Http2Mode::Duplex).await;
        let pool = Pool::new();
        let request = pooled(&format!("ws://{}/", server.addr), &pool);
        let client_config = Config::client().without_compression();
        let mut ws = duplex::connect_with(&request, &client_config)
            .await
            .unwrap();
        ws.send(Message::binary(vec![0u8; 64 * 1024 + 1]))
            .await
            .unwrap();
        let next = ws.next().await;
        assert!(next.is_none(), "{next:?}");
        assert_eq!(ws.close_info().unwrap().code, CloseCode::MESSAGE_TOO_BIG);
        let ended = server.ended.recv().await.unwrap();
        assert_eq!(ended.close.unwrap().code, CloseCode::MESSAGE_TOO_BIG);
        let mut other = duplex::connect_with(&request, &client_config)
            .await
            .unwrap();
        echo_matrix(&mut other, &[64 * 1024]).await;
        assert_eq!(server.connections.load(Ordering::SeqCst), 1);
    })
    .await
    .unwrap();
}

/// A refusal by the application reaches the client with its status and body.
#[tokio::test]
async fn refusal_reaches_the_client() {
    timeout(STEP, async {
        let server = start(Config::default(), None, Http2Mode::Duplex).await;
        let pool = Pool::new();
        let request = pooled(&format!("ws://{}/forbidden", server.addr), &pool);
        match duplex::connect_with(&request, &Config::client()).await {
            Err(Error::HttpStatus(response)) => {
                assert_eq!(response.status(), http::StatusCode::FORBIDDEN);
                assert_eq!(response.body().as_deref(), Some(&b"go away"[..]));
            }
            other => panic!("expected 403, got {other:?}"),
        }
        assert!(pool.has_http2(&format!("ws://{}/", server.addr)));
    })
    .await
    .unwrap();
}

/// A raw HTTP/2 client connection to `addr`, its SETTINGS received.
async fn raw_h2(addr: SocketAddr) -> h2::client::SendRequest<Bytes> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (send, mut conn) = h2::client::handshake(tcp).await.unwrap();
    let mut ping = conn.ping_pong().unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    ping.ping(h2::Ping::opaque()).await.unwrap();
    send
}

/// An extended CONNECT for `path` with `:protocol` and extra headers.
fn connect_request(
    addr: SocketAddr,
    path: &str,
    protocol: Option<&'static str>,
    headers: &[(&'static str, &'static str)],
) -> http::Request<()> {
    let mut request = http::Request::builder()
        .method(http::Method::CONNECT)
        .uri(format!("http://{addr}{path}"))
        .version(http::Version::HTTP_2);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let mut request = request.body(()).unwrap();
    if let Some(protocol) = protocol {
        request
            .extensions_mut()
            .insert(h2::ext::Protocol::from_static(protocol));
    }
    request
}

async fn send_raw(
    send: &h2::client::SendRequest<Bytes>,
    request: http::Request<()>,
) -> (http::Response<h2::RecvStream>, h2::SendStream<Bytes>) {
    let mut send = send.clone().ready().await.unwrap();
    let (response, stream) = send.send_request(request, false).unwrap();
    (response.await.unwrap(), stream)
}

/// RFC 8441 §3, §5: the server advertises the setting; the WebSocket is
/// accepted with 200 and none of Sec-WebSocket-Accept, Upgrade or
/// Connection; no Sec-WebSocket-Key is needed.
#[tokio::test]
async fn rfc8441_setting_200_and_no_key_or_accept() {
    timeout(STEP, async {
        let server = start(Config::default(), None, Http2Mode::Duplex).await;
        let send = raw_h2(server.addr).await;
        assert!(send.is_extended_connect_protocol_enabled());
        let request = connect_request(
            server.addr,
            "/",
            Some("websocket"),
            &[("sec-websocket-version", "13")],
        );
        let (response, _stream) = send_raw(&send, request).await;
        assert_eq!(response.status(), http::StatusCode::OK);
        for name in ["sec-websocket-accept", "upgrade", "connection"] {
            assert!(!response.headers().contains_key(name), "{name}");
        }
    })
    .await
    .unwrap();
}

/// RFC 8441 §5: masking is unchanged. The server's frames are unmasked; an
/// unmasked client frame is a protocol error (close 1002).
#[tokio::test]
async fn rfc8441_masking_is_unchanged() {
    timeout(STEP, async {
        let mut server = start(
            Config::default().without_compression(),
            None,
            Http2Mode::Duplex,
        )
        .await;
        let send = raw_h2(server.addr).await;
        let request = connect_request(
            server.addr,
            "/",
            Some("websocket"),
            &[("sec-websocket-version", "13")],
        );
        let (response, mut stream) = send_raw(&send, request).await;
        let mut body = response.into_body();
        // A masked text frame "Hi" (mask 01 02 03 04) is echoed unmasked.
        stream
            .send_data(
                Bytes::from_static(b"\x81\x82\x01\x02\x03\x04\x49\x6b"),
                false,
            )
            .unwrap();
        let mut got = BytesMut::new();
        while got.len() < 4 {
            let data = body.data().await.unwrap().unwrap();
            let _ = body.flow_control().release_capacity(data.len());
            got.extend_from_slice(&data);
        }
        assert_eq!(&got[..4], b"\x81\x02Hi", "unmasked echo");
        // An unmasked frame from the client: close 1002.
        stream
            .send_data(Bytes::from_static(b"\x81\x02Hi"), false)
            .unwrap();
        let mut got = BytesMut::new();
        while got.len() < 4 {
            match body.data().await {
                Some(Ok(data)) => {
                    let _ = body.flow_control().release_capacity(data.len());
                    got.extend_from_slice(&data);
                }
                other => panic!("stream ended before the close frame: {other:?}"),
            }
        }
        assert_eq!(got[0], 0x88, "a close frame");
        assert_eq!(got[1] & 0x80, 0, "unmasked");
        assert_eq!(u16::from_be_bytes([got[2], got[3]]), 1002);
        let ended = server.ended.recv().await.unwrap();
        assert_eq!(ended.close.unwrap().code, CloseCode::PROTOCOL_ERROR);
    })
    .await
    .unwrap();
}

/// RFC 8441 §5: the end of the stream is the end of the TCP connection: a
/// client that ends its stream without a close frame ends the server's
/// WebSocket with 1006.
#[tokio::test]
async fn rfc8441_end_stream_is_tcp_close() {
    timeout(STEP, async {
        let mut server = start(Config::default(), None, Http2Mode::Duplex).await;
        let send = raw_h2(server.addr).await;
        let request = connect_request(
            server.addr,
            "/",
            Some("websocket"),
            &[("sec-websocket-version", "13")],
        );
        let (_response, mut stream) = send_raw(&send, request).await;
        stream.send_data(Bytes::new(), true).unwrap();
        let ended = server.ended.recv().await.unwrap();
        let close = ended.close.unwrap();
        assert_eq!((close.code, close.was_clean), (CloseCode::ABNORMAL, false));
        assert!(ended.error.unwrap().contains("AbnormalClosure"));
    })
    .await
    .unwrap();
}

/// Requests that are not a valid WebSocket CONNECT get the right status,
/// without connection-specific headers; other requests go to the pages
/// callback.
#[tokio::test]
async fn rfc8441_bad_requests_get_4xx() {
    timeout(STEP, async {
        let server = start(Config::default(), None, Http2Mode::Duplex).await;
        let send = raw_h2(server.addr).await;
        let status = |response: &http::Response<h2::RecvStream>| response.status().as_u16();
        // Wrong :protocol.
        let (response, _) = send_raw(
            &send,
            connect_request(
                server.addr,
                "/",
                Some("h2c-tunnel"),
                &[("sec-websocket-version", "13")],
            ),
        )
        .await;
        assert_eq!(status(&response), 400);
        // Missing Sec-WebSocket-Version: 426 naming 13, without Upgrade.
        let (response, _) = send_raw(
            &send,
            connect_request(server.addr, "/", Some("websocket"), &[]),
        )
        .await;
        assert_eq!(status(&response), 426);
        assert_eq!(response.headers()["sec-websocket-version"], "13");
        assert!(!response.headers().contains_key("upgrade"));
        assert!(!response.headers().contains_key("connection"));
        // Version 8.
        let (response, _) = send_raw(
            &send,
            connect_request(
                server.addr,
                "/",
                Some("websocket"),
                &[("sec-websocket-version", "8")],
            ),
        )
        .await;
        assert_eq!(status(&response), 426);
        // Repeated subprotocol.
        let (response, _) = send_raw(
            &send,
            connect_request(
                server.addr,
                "/",
                Some("websocket"),
                &[
                    ("sec-websocket-version", "13"),
                    ("sec-websocket-protocol", "a, a"),
                ],
            ),
        )
        .await;
        assert_eq!(status(&response), 400);
        // Refused by the application.
        let (response, _) = send_raw(
            &send,
            connect_request(
                server.addr,
                "/forbidden",
                Some("websocket"),
                &[("sec-websocket-version", "13")],
            ),
        )
        .await;
        assert_eq!(status(&response), 403);
        // Plain requests: the pages callback.
        let get = |path: &str| {
            http::Request::builder()
                .uri(format!("http://{}{path}", server.addr))
                .body(())
                .unwrap()
        };
        let (response, _) = send_raw(&send, get("/page")).await;
        assert_eq!(status(&response), 200);
        let mut body = response.into_body();
        assert_eq!(body.data().await.unwrap().unwrap(), "a page");
        let (response, _) = send_raw(&send, get("/nothing")).await;
        assert_eq!(status(&response), 404);
        // The connection is still good.
        assert!(send.is_extended_connect_protocol_enabled());
    })
    .await
    .unwrap();
}

/// An H2Connection opens several WebSockets itself, without a pool.
#[tokio::test]
async fn h2_connection_opens_websockets() {
    timeout(STEP, async {
        let server = start(Config::default(), None, Http2Mode::Duplex).await;
        let tcp = TcpStream::connect(server.addr).await.unwrap();
        let conn =
            http2::H2Connection::handshake(tcp, false, &Config::client(), &Http2Config::default())
                .await
                .unwrap();
        assert!(conn.supports_websocket());
        let request = ClientRequest::new(format!("ws://{}/", server.addr));
        let mut a = conn.open(&request, &Config::client()).await.unwrap();
        let mut b = conn.open(&request, &Config::client()).await.unwrap();
        assert_ne!(a.get_ref().stream_id(), b.get_ref().stream_id());
        echo_matrix(&mut a, &[100]).await;
        echo_matrix(&mut b, &[100]).await;
        assert_eq!(server.connections.load(Ordering::SeqCst), 1);
    })
    .await
    .unwrap();
}

/// The h2c preface is told from an HTTP/1.1 request, also when it arrives in
/// pieces, without consuming a byte.
#[tokio::test]
async fn h2c_preface_detection() {
    timeout(STEP, async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        for (pieces, expected) in [
            (&[&http2::PREFACE[..8], &http2::PREFACE[8..]][..], true),
            (&[&b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..]][..], false),
            (&[&b"PRI * HTTP/1.1\r\n"[..]][..], false),
        ] {
            let mut client = TcpStream::connect(addr).await.unwrap();
            let (server, _) = listener.accept().await.unwrap();
            let writer = async {
                for piece in pieces {
                    tokio::io::AsyncWriteExt::write_all(&mut client, piece)
                        .await
                        .unwrap();
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            };
            let (detected, ()) = tokio::join!(http2::is_h2c_preface(&server), writer);
            assert_eq!(detected.unwrap(), expected, "{pieces:?}");
            let mut first = [0u8; 3];
            server.peek(&mut first).await.unwrap();
            assert_eq!(&first, &pieces[0][..3], "nothing consumed");
        }
    })
    .await
    .unwrap();
}

/// A server of h2c only, built from `server`, echoing on every WebSocket;
/// each connection's `serve_connection` result goes to the returned channel.
async fn start_h2c(server: Server) -> (SocketAddr, mpsc::UnboundedReceiver<Result<(), Error>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (done, ended) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (server, done) = (server.clone(), done.clone());
            tokio::spawn(async move {
                let result = server
                    .serve_connection(tcp, |mut ws, _| async move {
                        while let Some(Ok(message)) = ws.next().await {
                            if ws.send(message).await.is_err() {
                                break;
                            }
                        }
                    })
                    .await;
                let _ = done.send(result);
            });
        }
    });
    (addr, ended)
}

/// Shutdown: the connection sends GOAWAY (no new WebSocket opens on it),
/// each open WebSocket gets close 1001, and the connection then ends.
#[tokio::test]
async fn shutdown_sends_goaway_and_closes_with_1001() {
    timeout(STEP, async {
        let shutdown = duplex::Shutdown::new();
        let (addr, mut ended) =
            start_h2c(Server::new(Config::default()).shutdown(shutdown.clone())).await;
        let tcp = TcpStream::connect(addr).await.unwrap();
        let conn =
            http2::H2Connection::handshake(tcp, false, &Config::client(), &Http2Config::default())
                .await
                .unwrap();
        let request = ClientRequest::new(format!("ws://{addr}/"));
        let mut a = conn.open(&request, &Config::client()).await.unwrap();
        let mut b = conn.open(&request, &Config::client()).await.unwrap();
        echo_matrix(&mut a, &[10]).await;
        shutdown.trigger();
        for ws in [&mut a, &mut b] {
            // The server's close 1001 arrives; the client answers it.
            while let Some(Ok(_)) = ws.next().await {}
            let close = ws.close_info().expect("a close frame").clone();
            assert_eq!(close.code, CloseCode::GOING_AWAY, "{close:?}");
        }
        // GOAWAY: no new stream is accepted on this connection.
        let refused = conn.open(&request, &Config::client()).await;
        assert!(refused.is_err(), "opened a WebSocket after GOAWAY");
        // And the connection ends once its WebSockets have.
        drop((a, b));
        ended.recv().await.unwrap().unwrap();
    })
    .await
    .unwrap();
}

/// A connection without a WebSocket open and without requests is closed
/// after the idle timeout (GOAWAY); one with a WebSocket open is not.
#[tokio::test]
async fn idle_connection_is_closed_and_a_busy_one_is_not() {
    timeout(STEP, async {
        let mut settings = Http2Config::default();
        settings.idle_timeout = Duration::from_millis(300);
        let (addr, mut ended) = start_h2c(Server::new(Config::default()).http2(settings)).await;
        // Idle: the server ends the connection by itself.
        let tcp = TcpStream::connect(addr).await.unwrap();
        let (_send, conn) = h2::client::handshake(tcp).await.unwrap();
        let started = tokio::time::Instant::now();
        let _ = timeout(Duration::from_secs(5), conn)
            .await
            .expect("the idle connection was not closed");
        assert!(started.elapsed() >= Duration::from_millis(250));
        ended.recv().await.unwrap().unwrap();
        // Busy: a WebSocket open for three idle timeouts keeps it.
        let tcp = TcpStream::connect(addr).await.unwrap();
        let conn =
            http2::H2Connection::handshake(tcp, false, &Config::client(), &Http2Config::default())
                .await
                .unwrap();
        let request = ClientRequest::new(format!("ws://{addr}/"));
        let mut ws = conn.open(&request, &Config::client()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(900)).await;
        echo_matrix(&mut ws, &[10]).await;
        assert!(
            ended.try_recv().is_err(),
            "a connection with a WebSocket was closed"
        );
        // Once it closes, the connection is idle again and ends.
        ws.close(CloseCode::NORMAL, "").await.unwrap();
        while let Some(Ok(_)) = ws.next().await {}
        drop(ws);
        ended.recv().await.unwrap().unwrap();
    })
    .await
    .unwrap();
}

/// SETTINGS_MAX_CONCURRENT_STREAMS bounds the WebSockets of one connection:
/// the server advertises it, and refuses a stream past it.
#[tokio::test]
async fn concurrent_streams_are_bounded() {
    timeout(STEP, async {
        let mut settings = Http2Config::default();
        settings.max_concurrent_streams = 2;
        let (addr, _ended) = start_h2c(Server::new(Config::default()).http2(settings)).await;
        assert_eq!(Http2Config::default().max_concurrent_streams, 100);
        let send = raw_h2(addr).await;
        assert_eq!(send.current_max_send_streams(), 2);
        let open = |send: h2::client::SendRequest<Bytes>| async move {
            send_raw(
                &send,
                connect_request(
                    addr,
                    "/",
                    Some("websocket"),
                    &[("sec-websocket-version", "13")],
                ),
            )
            .await
        };
        let (first, _a) = open(send.clone()).await;
        let (second, _b) = open(send.clone()).await;
        assert_eq!(
            (first.status().as_u16(), second.status().as_u16()),
            (200, 200)
        );
        // A client that respects the setting waits for a slot.
        let third = timeout(Duration::from_millis(500), open(send.clone())).await;
        assert!(third.is_err(), "a third stream opened past the limit");
    })
    .await
    .unwrap();
}

/// A plain CONNECT (a tunnel, no `:protocol`) gets 405 with `Allow`.
#[tokio::test]
async fn plain_connect_gets_405() {
    timeout(STEP, async {
        let server = start(Config::default(), None, Http2Mode::Duplex).await;
        let send = raw_h2(server.addr).await;
        let mut request = http::Request::builder()
            .method(http::Method::CONNECT)
            .uri(format!("{}", server.addr))
            .version(http::Version::HTTP_2)
            .body(())
            .unwrap();
        request.headers_mut().clear();
        let (response, _) = send_raw(&send, request).await;
        assert_eq!(response.status(), http::StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(response.headers()["allow"], "GET, HEAD");
    })
    .await
    .unwrap();
}
