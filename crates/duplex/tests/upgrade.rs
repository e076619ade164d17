//! WebSocket upgrades inside a real hyper 1.x server on loopback, with the
//! duplex client and a raw client. Needs the `hyper` feature. Every test is
//! bounded in time.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use duplex::upgrade::{Rejection, UpgradeRequest, upgrade_response};
use duplex::{Accept, ClientRequest, CloseCode, Config, Error, Message, Reject, WebSocket};
use futures_util::{SinkExt, StreamExt};
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(10);

async fn echo<S: AsyncRead + AsyncWrite + Unpin>(mut ws: WebSocket<S>) {
    while let Some(Ok(message)) = ws.next().await {
        if ws.send(message).await.is_err() {
            break;
        }
    }
}

/// The service: `/plain` is ordinary HTTP, `/forbidden` refuses the
/// upgrade, anything else upgrades (choosing `chat` when offered) and echoes.
/// Each rejection's error goes to `errors`.
async fn handle(
    mut req: Request<Incoming>,
    config: Arc<Config>,
    errors: mpsc::UnboundedSender<Error>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.uri().path() == "/plain" {
        return Ok(Response::new(Full::from("plain HTTP")));
    }
    let decide = |request: &UpgradeRequest| {
        if request.path() == "/forbidden" {
            return Err(Reject::new(StatusCode::FORBIDDEN, "not here"));
        }
        let mut accept = Accept {
            protocol: request
                .protocols()
                .iter()
                .find(|p| *p == "chat")
                .map(|p| p.as_str().into()),
            ..Accept::default()
        };
        accept
            .headers
            .insert("x-served-by", HeaderValue::from_static("hyper"));
        Ok(accept)
    };
    match upgrade_response(&mut req, &config, decide) {
        Ok((response, upgrading)) => {
            tokio::spawn(async move {
                match upgrading.await {
                    Ok(ws) => echo(ws).await,
                    Err(error) => {
                        let _ = errors.send(error);
                    }
                }
            });
            Ok(response)
        }
        Err(Rejection { response, error }) => {
            let _ = errors.send(error);
            Ok(response)
        }
    }
}

async fn hyper_server(config: Config) -> (SocketAddr, mpsc::UnboundedReceiver<Error>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = Arc::new(config);
    let (errors_tx, errors) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let config = config.clone();
            let errors = errors_tx.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| handle(req, config.clone(), errors.clone()));
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
    (addr, errors)
}

fn url(addr: SocketAddr, path: &str) -> String {
    format!("ws://{addr}{path}")
}

#[tokio::test]
async fn duplex_client_round_trip_through_hyper_upgrade() {
    let (addr, _errors) = hyper_server(Config::default()).await;
    let request = ClientRequest::new(url(addr, "/chat"))
        .protocol("other")
        .protocol("chat");
    let mut ws = timeout(LIMIT, duplex::connect_with(&request, &Config::client()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ws.protocol(), Some("chat"));
    // Compression negotiated as `accept_with` negotiates it.
    assert!(ws.connection().deflate_params().is_some());
    let big = "compressible ".repeat(10_000);
    for message in [
        Message::text("hello hyper"),
        Message::text(big.as_str()),
        Message::binary(vec![1u8, 2, 3]),
    ] {
        ws.send(message.clone()).await.unwrap();
        let echoed = timeout(LIMIT, ws.next()).await.unwrap().unwrap().unwrap();
        assert_eq!(echoed, message);
    }
    ws.close(CloseCode::NORMAL, "done").await.unwrap();
    assert!(timeout(LIMIT, ws.next()).await.unwrap().is_none());
    assert!(ws.close_info().unwrap().was_clean);

    // Without compression on the server, none is negotiated.
    let (addr, _errors) = hyper_server(Config::default().without_compression()).await;
    let ws = timeout(LIMIT, duplex::connect(&url(addr, "/")))
        .await
        .unwrap()
        .unwrap();
    assert!(ws.connection().deflate_params().is_none());
    assert_eq!(ws.protocol(), None);
}

/// Reads until the end of a response head; returns it and what followed.
async fn read_response_head(tcp: &mut TcpStream) -> (String, Vec<u8>) {
    let mut buf = Vec::new();
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(end + 4);
            return (String::from_utf8(buf).unwrap(), rest);
        }
        let mut chunk = [0; 1024];
        let n = timeout(LIMIT, tcp.read(&mut chunk)).await.unwrap().unwrap();
        assert!(n > 0, "connection closed before the response head ended");
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[tokio::test]
async fn frames_sent_with_the_request_are_kept() {
    let (addr, _errors) = hyper_server(Config::default()).await;
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let mut bytes = format!(
        "GET /echo HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .into_bytes();
    // A masked text frame "hello" in the same write as the request.
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    bytes.extend_from_slice(&[0x81, 0x85]);
    bytes.extend_from_slice(&mask);
    bytes.extend(b"hello".iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
    tcp.write_all(&bytes).await.unwrap();

    let (head, mut rest) = read_response_head(&mut tcp).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let lower = head.to_ascii_lowercase();
    assert!(
        lower.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
        "{head}"
    );
    assert!(lower.contains("x-served-by: hyper"), "{head}");
    assert!(!lower.contains("content-length"), "{head}");
    while rest.len() < 7 {
        let mut chunk = [0; 64];
        let n = timeout(LIMIT, tcp.read(&mut chunk)).await.unwrap().unwrap();
        assert!(n > 0, "closed before the echo");
        rest.extend_from_slice(&chunk[..n]);
    }
    assert_eq!(&rest[..7], b"\x81\x05hello");
}

#[tokio::test]
async fn refused_and_invalid_upgrades_get_http_errors() {
    let (addr, mut errors) = hyper_server(Config::default()).await;

    // The application refuses.
    let error = timeout(LIMIT, duplex::connect(&url(addr, "/forbidden")))
        .await
        .unwrap()
        .unwrap_err();
    match error {
        Error::HttpStatus(response) => {
            assert_eq!(response.status(), StatusCode::FORBIDDEN);
        }
        other => panic!("expected 403, got {other}"),
    }
    let seen = timeout(LIMIT, errors.recv()).await.unwrap().unwrap();
    assert!(
        matches!(seen, Error::Refused(StatusCode::FORBIDDEN)),
        "{seen}"
    );

    // A plain GET to an upgrade-only path: 426 with the headers RFC 6455 asks for.
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(format!("GET /ws HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let (head, _) = read_response_head(&mut tcp).await;
    assert!(head.starts_with("HTTP/1.1 426"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("sec-websocket-version: 13"),
        "{head}"
    );
    let seen = timeout(LIMIT, errors.recv()).await.unwrap().unwrap();
    assert!(matches!(seen, Error::Handshake(_)), "{seen}");

    // A POST: 405.
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(
        format!("POST /ws HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let (head, _) = read_response_head(&mut tcp).await;
    assert!(head.starts_with("HTTP/1.1 405"), "{head}");

    // The same hyper server still serves plain HTTP and upgrades.
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(format!("GET /plain HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let (head, _) = read_response_head(&mut tcp).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let mut ws = timeout(LIMIT, duplex::connect(&url(addr, "/again")))
        .await
        .unwrap()
        .unwrap();
    ws.send(Message::text("still upgrading")).await.unwrap();
    let echoed = timeout(LIMIT, ws.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(echoed, Message::text("still upgrading"));
}
