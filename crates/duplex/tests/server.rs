//! The tokio server and client against each other and against bad peers.
//! Every test runs on loopback, bounded in time.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use duplex::{Accept, ClientRequest, CloseCode, Config, Error, Listener, Message, WebSocket};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(10);

/// Echoes every message, feeding replies so that they batch.
async fn echo<S: AsyncRead + AsyncWrite + Unpin>(mut ws: WebSocket<S>) {
    while let Some(Ok(message)) = ws.next().await {
        if ws.feed(message).await.is_err() {
            break;
        }
    }
    let _ = ws.flush().await;
}

/// An echo server on a loopback port with `config`; returns its URL.
async fn echo_server(config: Config) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let config = Arc::new(config);
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let config = config.clone();
            tokio::spawn(async move {
                if let Ok(ws) = duplex::accept_with(tcp, &config, |_| Ok(Accept::default())).await {
                    echo(ws).await;
                }
            });
        }
    });
    url
}

/// Proves the server still serves a healthy client.
async fn assert_healthy(url: &str) {
    let mut ws = timeout(LIMIT, duplex::connect(url)).await.unwrap().unwrap();
    ws.send(Message::text("still there?")).await.unwrap();
    let reply = timeout(LIMIT, ws.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(reply, Message::text("still there?"));
    ws.close(CloseCode::NORMAL, "").await.unwrap();
}

/// Sends `request` raw and returns the whole response the server sent before closing.
async fn raw_exchange(url: &str, request: &[u8]) -> String {
    let addr = url.trim_start_matches("ws://").trim_end_matches('/');
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(request).await.unwrap();
    let mut response = Vec::new();
    timeout(LIMIT, tcp.read_to_end(&mut response))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&response).into_owned()
}

fn upgrade_request(extra: &str) -> Vec<u8> {
    format!(
        "GET /chat HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}\r\n"
    )
    .into_bytes()
}

#[tokio::test]
async fn echo_round_trip_with_and_without_compression() {
    for compress in [true, false] {
        let config = if compress {
            Config::default()
        } else {
            Config::default().without_compression()
        };
        let url = echo_server(config).await;
        let client_config = if compress {
            Config::client()
        } else {
            Config::client().without_compression()
        };
        let mut ws = duplex::connect_with(&ClientRequest::new(&url), &client_config)
            .await
            .unwrap();
        assert_eq!(ws.connection().deflate_params().is_some(), compress);
        let big = "duplex ".repeat(200_000);
        let messages = vec![
            Message::text(""),
            Message::text("hello"),
            Message::binary(vec![0u8, 1, 2, 255]),
            Message::text(big.as_str()),
            Message::binary(vec![7u8; 65_536]),
        ];
        for message in &messages {
            ws.feed(message.clone()).await.unwrap();
        }
        ws.flush().await.unwrap();
        for message in &messages {
            let reply = timeout(LIMIT, ws.next()).await.unwrap().unwrap().unwrap();
            assert_eq!(&reply, message);
        }
        ws.close(CloseCode::NORMAL, "done").await.unwrap();
        let info = ws.close_info().unwrap();
        assert_eq!((info.code, info.was_clean), (CloseCode::NORMAL, true));
    }
}

#[tokio::test]
async fn close_code_reason_and_cleanliness_are_visible_on_both_sides() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut ws = duplex::accept(tcp).await.unwrap();
        assert!(ws.next().await.is_none());
        ws.close_info().cloned().unwrap()
    });
    let mut ws = duplex::connect(&url).await.unwrap();
    ws.close(CloseCode(4000), "bye now").await.unwrap();
    let seen = timeout(LIMIT, server).await.unwrap().unwrap();
    assert_eq!(
        (seen.code, seen.reason.as_str(), seen.was_clean),
        (CloseCode(4000), "bye now", true)
    );
    let ours = ws.close_info().unwrap();
    assert_eq!((ours.code, ours.was_clean), (CloseCode(4000), true));
}

#[tokio::test]
async fn dropped_transport_is_an_abnormal_closure() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut ws = duplex::accept(tcp).await.unwrap();
        let item = ws.next().await;
        (
            matches!(item, Some(Err(Error::AbnormalClosure))),
            ws.close_info().cloned().unwrap(),
        )
    });
    let ws = duplex::connect(&url).await.unwrap();
    drop(ws);
    let (abnormal, info) = timeout(LIMIT, server).await.unwrap().unwrap();
    assert!(abnormal);
    assert_eq!((info.code, info.was_clean), (CloseCode::ABNORMAL, false));
}

#[tokio::test]
async fn split_halves_work_from_two_tasks() {
    let url = echo_server(Config::default()).await;
    let ws = duplex::connect(&url).await.unwrap();
    let (mut writer, mut reader) = ws.split();
    let sender = tokio::spawn(async move {
        for i in 0..100 {
            writer.send(Message::text(format!("m{i}"))).await.unwrap();
        }
        writer
    });
    for i in 0..100 {
        let reply = timeout(LIMIT, reader.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(reply, Message::text(format!("m{i}")));
    }
    let mut writer = sender.await.unwrap();
    writer.close().await.unwrap();
}

/// Counts write calls on the wrapped transport.
struct CountingWrites<S> {
    inner: S,
    writes: Arc<AtomicUsize>,
}

impl<S: AsyncRead + Unpin> AsyncRead for CountingWrites<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for CountingWrites<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.writes.fetch_add(1, Ordering::Relaxed);
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.writes.fetch_add(1, Ordering::Relaxed);
        std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        true
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[tokio::test]
async fn replies_to_one_read_leave_in_one_write() {
    let (client_io, server_io) = tokio::io::duplex(1 << 20);
    let writes = Arc::new(AtomicUsize::new(0));
    let counted = CountingWrites {
        inner: server_io,
        writes: writes.clone(),
    };
    let server = tokio::spawn(async move {
        let ws = duplex::accept_with(counted, &Config::default().without_compression(), |_| {
            Ok(Accept::default())
        })
        .await
        .unwrap();
        echo(ws).await;
    });
    let mut client = duplex::client_handshake(
        client_io,
        &ClientRequest::new("ws://test/"),
        &Config::client().without_compression(),
    )
    .await
    .unwrap();
    let handshake_writes = writes.load(Ordering::Relaxed);
    for i in 0..200 {
        client
            .feed(Message::text(format!("{i:020}")))
            .await
            .unwrap();
    }
    client.flush().await.unwrap(); // 200 frames in one write
    for i in 0..200 {
        let reply = timeout(LIMIT, client.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(reply, Message::text(format!("{i:020}")));
    }
    let echo_writes = writes.load(Ordering::Relaxed) - handshake_writes;
    assert!(echo_writes <= 3, "200 replies took {echo_writes} writes");
    client.close(CloseCode::NORMAL, "").await.unwrap();
    timeout(LIMIT, server).await.unwrap().unwrap();
}

#[tokio::test]
async fn slowloris_handshake_is_dropped_while_others_are_served() {
    let config = Config {
        handshake_timeout: Duration::from_millis(300),
        ..Config::default()
    };
    let url = echo_server(config).await;
    let addr = url.trim_start_matches("ws://").trim_end_matches('/');
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    assert_healthy(&url).await;
    let mut rest = Vec::new();
    let started = tokio::time::Instant::now();
    timeout(LIMIT, slow.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn oversized_header_block_gets_431() {
    let url = echo_server(Config::default()).await;
    let huge = format!("X-Filler: {}\r\n", "a".repeat(10_000));
    let response = raw_exchange(
        &url,
        &upgrade_request(&format!("Sec-WebSocket-Version: 13\r\n{huge}")),
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 431"), "{response}");
    assert_healthy(&url).await;
}

#[tokio::test]
async fn plain_get_gets_426() {
    let url = echo_server(Config::default()).await;
    let response = raw_exchange(&url, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(response.starts_with("HTTP/1.1 426"), "{response}");
    assert_healthy(&url).await;
}

#[tokio::test]
async fn wrong_version_gets_426_with_supported_version() {
    let url = echo_server(Config::default()).await;
    let response = raw_exchange(&url, &upgrade_request("Sec-WebSocket-Version: 8\r\n")).await;
    assert!(response.starts_with("HTTP/1.1 426"), "{response}");
    assert!(
        response
            .to_ascii_lowercase()
            .contains("sec-websocket-version: 13"),
        "{response}"
    );
    assert_healthy(&url).await;
}

#[tokio::test]
async fn random_bytes_get_400() {
    let url = echo_server(Config::default()).await;
    let mut noise = vec![0u8; 4096];
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for byte in &mut noise {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *byte = x as u8;
    }
    noise.extend_from_slice(b"\r\n\r\n");
    let response = raw_exchange(&url, &noise).await;
    assert!(response.starts_with("HTTP/1.1 400"), "{response}");
    assert_healthy(&url).await;
}

#[tokio::test]
async fn reset_in_the_middle_of_a_frame_does_not_disturb_others() {
    let url = echo_server(Config::default()).await;
    let addr = url.trim_start_matches("ws://").trim_end_matches('/');
    let tcp = TcpStream::connect(addr).await.unwrap();
    let mut ws = duplex::client_handshake(tcp, &ClientRequest::new(&url), &Config::client())
        .await
        .unwrap();
    ws.ping(b"x").unwrap();
    ws.flush().await.unwrap();
    // Half a frame, then a reset (linger 0 sends RST on close).
    let tcp = TcpStream::connect(addr).await.unwrap();
    let mut raw = tcp;
    raw.write_all(&upgrade_request("Sec-WebSocket-Version: 13\r\n"))
        .await
        .unwrap();
    let mut buf = [0u8; 512];
    let _ = timeout(LIMIT, raw.read(&mut buf)).await.unwrap().unwrap();
    raw.write_all(&[0x82, 0xFE, 0x10, 0x00, 1, 2, 3, 4, 9, 9, 9])
        .await
        .unwrap();
    // Zero linger does not block on drop; it makes the close a reset.
    #[allow(deprecated)]
    raw.set_linger(Some(Duration::ZERO)).unwrap();
    drop(raw);
    assert_healthy(&url).await;
    ws.close(CloseCode::NORMAL, "").await.unwrap();
}

/// A client that completes the handshake and then never reads nor answers.
async fn silent_client(url: &str) -> TcpStream {
    let addr = url.trim_start_matches("ws://").trim_end_matches('/');
    upgrade_raw(TcpStream::connect(addr).await.unwrap()).await
}

/// As [`silent_client`], with a 64 KiB receive buffer: what it has not read
/// stays on the server's side.
async fn small_client(url: &str) -> TcpStream {
    let addr = url.trim_start_matches("ws://").trim_end_matches('/');
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(64 << 10).unwrap();
    upgrade_raw(socket.connect(addr.parse().unwrap()).await.unwrap()).await
}

/// Sends an upgrade request on `tcp` and reads the response's head.
async fn upgrade_raw(mut tcp: TcpStream) -> TcpStream {
    tcp.write_all(&upgrade_request("Sec-WebSocket-Version: 13\r\n"))
        .await
        .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        tcp.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    tcp
}

#[tokio::test]
async fn half_open_peer_is_dropped_by_the_keepalive() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let config = Config {
        ping_interval: Some(Duration::from_millis(200)),
        pong_timeout: Duration::from_millis(200),
        ..Config::default()
    };
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut ws = duplex::accept_with(tcp, &config, |_| Ok(Accept::default()))
            .await
            .unwrap();
        let started = tokio::time::Instant::now();
        let item = ws.next().await;
        (
            matches!(item, Some(Err(Error::KeepaliveTimeout))),
            started.elapsed(),
        )
    });
    let _client = silent_client(&url).await; // never answers the ping
    let (timed_out, elapsed) = timeout(LIMIT, server).await.unwrap().unwrap();
    assert!(timed_out);
    assert!(
        elapsed >= Duration::from_millis(400) && elapsed < Duration::from_secs(2),
        "{elapsed:?}"
    );
}

#[tokio::test]
async fn peer_that_never_reads_is_bounded_then_dropped() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let config = Config {
        write_buffer_high_water: 64 * 1024,
        ping_interval: Some(Duration::from_millis(300)),
        pong_timeout: Duration::from_millis(300),
        ..Config::default().without_compression()
    };
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut ws = duplex::accept_with(tcp, &config, |_| Ok(Accept::default()))
            .await
            .unwrap();
        let chunk = Message::binary(vec![0u8; 16 * 1024]);
        let mut max_buffered = 0;
        loop {
            match ws.feed(chunk.clone()).await {
                Ok(()) => max_buffered = max_buffered.max(ws.buffered_amount()),
                Err(error) => return (error, max_buffered),
            }
        }
    });
    let _client = silent_client(&url).await;
    let (error, max_buffered) = timeout(LIMIT, server).await.unwrap().unwrap();
    assert!(matches!(error, Error::KeepaliveTimeout), "{error:?}");
    assert!(
        max_buffered <= 64 * 1024 + 16 * 1024 + 64,
        "buffer grew to {max_buffered}"
    );
}

#[tokio::test]
async fn graceful_shutdown_closes_every_connection_with_1001() {
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let listener = Listener::new(tcp, Config::default()).grace_period(Duration::from_secs(5));
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server =
        tokio::spawn(
            listener.run(|_, _| Ok(Accept::default()), |ws, _| echo(ws), async move {
                let _ = stopped.await;
            }),
        );
    let mut clients = Vec::new();
    for _ in 0..5 {
        let mut ws = duplex::connect(&url).await.unwrap();
        ws.send(Message::text("hi")).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("hi"));
        clients.push(ws);
    }
    stop.send(()).unwrap();
    for mut ws in clients {
        assert!(timeout(LIMIT, ws.next()).await.unwrap().is_none());
        let info = ws.close_info().unwrap();
        assert_eq!((info.code, info.was_clean), (CloseCode::GOING_AWAY, true));
    }
    let left = timeout(LIMIT, server).await.unwrap().unwrap();
    assert_eq!(left, 0, "every connection closed within the grace period");
    assert!(
        TcpStream::connect(url.trim_start_matches("ws://").trim_end_matches('/'))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn rejected_upgrade_reports_the_status_to_the_client() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let result = duplex::accept_with(tcp, &Config::default(), |request| {
            if request.origin() == Some("https://good.example") {
                Ok(Accept::default())
            } else {
                Err(duplex::Reject::new(
                    http::StatusCode::FORBIDDEN,
                    "origin not allowed",
                ))
            }
        })
        .await;
        assert!(matches!(
            result,
            Err(Error::Refused(http::StatusCode::FORBIDDEN))
        ));
    });
    let request = ClientRequest::new(&url).origin("https://evil.example");
    match duplex::connect_with(&request, &Config::client()).await {
        Err(Error::HttpStatus(response)) => {
            assert_eq!(response.status(), http::StatusCode::FORBIDDEN);
        }
        other => panic!("expected 403, got {other:?}"),
    }
}

#[tokio::test]
async fn subprotocol_is_chosen_by_the_server() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let ws = duplex::accept_with(tcp, &Config::default(), |request| {
            let chosen = request
                .protocols()
                .iter()
                .find(|p| *p == "duplex.v1")
                .map(|p| p.as_str().into());
            Ok(Accept {
                protocol: chosen,
                ..Accept::default()
            })
        })
        .await
        .unwrap();
        echo(ws).await;
    });
    let request = ClientRequest::new(&url)
        .protocol("other")
        .protocol("duplex.v1");
    let ws = duplex::connect_with(&request, &Config::client())
        .await
        .unwrap();
    assert_eq!(ws.protocol(), Some("duplex.v1"));
}

fn fast_keepalive() -> Config {
    Config {
        ping_interval: Some(Duration::from_millis(200)),
        pong_timeout: Duration::from_millis(200),
        ..Config::default().without_compression()
    }
}

/// A peer that sends nothing but answers every keepalive ping at once stays
/// connected for many intervals. (The pong deadline once asked whether the
/// peer was heard in the last pong timeout, not since the ping: the timer
/// fires up to 1/16 of its span late, so a prompt pong looked stale and the
/// peer was dropped with 1006 after one interval.)
#[tokio::test]
async fn an_idle_peer_that_answers_pings_stays_connected() {
    let url = echo_server(fast_keepalive()).await;
    let mut client = duplex::connect(&url).await.unwrap();
    // The client reads (and so answers pings) in its own task.
    let reader = tokio::spawn(async move {
        let next = client.next().await.map(|m| m.is_ok());
        (next, client.close_info().cloned())
    });
    // Ten ping intervals.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !reader.is_finished(),
        "dropped: {:?}",
        reader.await.unwrap()
    );
}

#[tokio::test]
async fn a_large_frame_trickling_in_keeps_the_peer_alive() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut ws = duplex::accept_with(tcp, &fast_keepalive(), |_| Ok(Accept::default()))
            .await
            .unwrap();
        ws.next().await
    });
    let mut client = silent_client(&url).await;
    // One 64 KiB binary frame (masked with a zero key), sent over 1.5 s:
    // far longer than ping interval + pong timeout, but bytes keep coming.
    let len: u64 = 64 * 1024;
    let mut frame = vec![0x82, 0xFF];
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(&[0, 0, 0, 0]);
    client.write_all(&frame).await.unwrap();
    for _ in 0..30 {
        client
            .write_all(&vec![5u8; (len / 30) as usize])
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    client
        .write_all(&vec![5u8; (len % 30) as usize])
        .await
        .unwrap();
    let item = timeout(LIMIT, server).await.unwrap().unwrap();
    match item {
        Some(Ok(Message::Binary(bytes))) => assert_eq!(bytes.len() as u64, len),
        other => panic!("expected the message, got {other:?}"),
    }
}

#[tokio::test]
async fn a_slow_but_steady_reader_is_not_dropped_while_our_backlog_drains() {
    // Ping after 200 ms of silence; the ping then waits behind about two
    // seconds of backlog, twice the pong timeout.
    let slow_pong = Config {
        pong_timeout: Duration::from_secs(1),
        ..fast_keepalive()
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut ws = duplex::accept_with(tcp, &slow_pong, |_| Ok(Accept::default()))
            .await
            .unwrap();
        ws.send(Message::binary(vec![1u8; 16 << 20])).await
    });
    let mut client = silent_client(&url).await;
    // Read 16 MiB at about 7 MiB/s: the send takes well over a second, and the
    // keepalive ping sits behind it; the reader never answers pings.
    let mut total = 0usize;
    let mut buf = vec![0u8; 64 * 1024];
    while total < 16 << 20 {
        let n = timeout(LIMIT, client.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        if n == 0 {
            let sent = timeout(LIMIT, server).await.unwrap().unwrap();
            panic!("server closed early after {total} bytes: {sent:?}");
        }
        total += n;
        tokio::time::sleep(Duration::from_millis(8)).await;
    }
    let sent = timeout(LIMIT, server).await.unwrap().unwrap();
    assert!(sent.is_ok(), "{sent:?}");
}

/// A server config whose only timer is the close timeout (300 ms).
fn quick_close() -> Config {
    Config {
        ping_interval: None,
        close_timeout: Duration::from_millis(300),
        ..Config::default().without_compression()
    }
}

/// Far more than the small socket buffers below hold, so that a peer that
/// does not read leaves most of it queued on our side.
const BACKLOG: usize = 8 << 20;

/// Accepts one connection with small socket buffers on our side (64 KiB to
/// send), so that a backlog stays in the `WebSocket` on any host.
async fn accept_small(listener: TcpListener, config: &Config) -> WebSocket<TcpStream> {
    let (tcp, _) = listener.accept().await.unwrap();
    socket2::SockRef::from(&tcp)
        .set_send_buffer_size(64 << 10)
        .unwrap();
    duplex::accept_with(tcp, config, |_| Ok(Accept::default()))
        .await
        .unwrap()
}

/// A server on loopback that accepts one connection ([`accept_small`],
/// [`quick_close`]), queues `len` bytes of `fill` as one binary message and
/// hands the socket to `then`. Returns the URL and the server's task.
async fn backlogged_server<T, F>(
    len: usize,
    fill: u8,
    then: impl FnOnce(WebSocket<TcpStream>) -> F + Send + 'static,
) -> (String, tokio::task::JoinHandle<T>)
where
    F: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        let mut ws = accept_small(listener, &quick_close()).await;
        ws.feed(Message::binary(vec![fill; len])).await.unwrap();
        then(ws).await
    });
    (url, server)
}

/// A close that gave up on a peer that does not read took the close
/// timeout (300 ms), not much more.
fn assert_gave_up_after_the_close_timeout(took: Duration) {
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(2),
        "close took {took:?} for a close timeout of 300 ms"
    );
}

#[tokio::test]
async fn close_gives_up_within_the_close_timeout_on_a_peer_that_does_not_read() {
    let (url, server) = backlogged_server(BACKLOG, 0, |mut ws| async move {
        let started = tokio::time::Instant::now();
        let closed = ws.close(CloseCode::GOING_AWAY, "bye").await;
        (closed, started.elapsed(), ws.close_info().cloned())
    })
    .await;
    let client = silent_client(&url).await;
    let (closed, took, info) = timeout(LIMIT, server).await.unwrap().unwrap();
    assert!(matches!(closed, Err(Error::AbnormalClosure)), "{closed:?}");
    assert_gave_up_after_the_close_timeout(took);
    let info = info.expect("ended");
    assert_eq!(info.code, CloseCode::ABNORMAL);
    assert!(!info.was_clean);
    drop(client);
}

#[tokio::test]
async fn answering_a_close_gives_up_within_the_close_timeout_on_a_peer_that_does_not_read() {
    let (url, server) = backlogged_server(BACKLOG, 0, |mut ws| async move {
        // Read until the stream ends: the peer's close arrives, and our
        // answer waits behind the backlog the peer never reads.
        let mut items = Vec::new();
        while let Some(item) = ws.next().await {
            items.push(item.map_err(|e| e.to_string()));
        }
        (items, ws.close_info().cloned())
    })
    .await;
    let mut client = silent_client(&url).await;
    // A masked close frame, code 1000, and then nothing is read.
    client
        .write_all(&[0x88, 0x82, 0, 0, 0, 0, 0x03, 0xE8])
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    let (items, info) = timeout(LIMIT, server).await.unwrap().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the stream ended after {:?}",
        started.elapsed()
    );
    assert_eq!(
        items,
        vec![Err(Error::AbnormalClosure.to_string())],
        "the answer was never written"
    );
    assert_eq!(info.expect("ended").code, CloseCode::NORMAL);
    drop(client);
}

#[tokio::test]
async fn sink_close_gives_up_within_the_close_timeout_on_a_peer_that_does_not_read() {
    let (url, server) = backlogged_server(BACKLOG, 0, |mut ws| async move {
        let started = tokio::time::Instant::now();
        let closed = SinkExt::close(&mut ws).await;
        (closed, started.elapsed())
    })
    .await;
    let client = silent_client(&url).await;
    let (closed, took) = timeout(LIMIT, server).await.unwrap().unwrap();
    assert!(matches!(closed, Err(Error::AbnormalClosure)), "{closed:?}");
    assert_gave_up_after_the_close_timeout(took);
    drop(client);
}

#[tokio::test]
async fn a_slow_reader_gets_everything_before_our_close_however_long_it_takes() {
    const PAYLOAD: usize = 4 << 20;
    let (url, server) = backlogged_server(PAYLOAD, 7, |mut ws| async move {
        let started = tokio::time::Instant::now();
        let closed = ws.close(CloseCode::NORMAL, "done").await;
        (closed, started.elapsed(), ws.close_info().cloned())
    })
    .await;
    let mut client = small_client(&url).await;
    // The binary frame (2 + 8 bytes of header), then our close frame (2 +
    // 2 + "done"), read at about 4 MiB/s: about a second, three close
    // timeouts.
    let expected = 10 + PAYLOAD + 8;
    let mut received = Vec::with_capacity(expected);
    let mut buf = vec![0u8; 32 * 1024];
    while received.len() < expected {
        let n = timeout(LIMIT, client.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "cut off after {} bytes", received.len());
        received.extend_from_slice(&buf[..n]);
        tokio::time::sleep(Duration::from_millis(8)).await;
    }
    assert_eq!(received.len(), expected);
    assert!(received[10..10 + PAYLOAD].iter().all(|b| *b == 7));
    assert_eq!(
        &received[10 + PAYLOAD..],
        &[0x88, 6, 0x03, 0xE8, b'd', b'o', b'n', b'e']
    );
    // Our answer, masked with a zero key: the handshake completes.
    client
        .write_all(&[0x88, 0x82, 0, 0, 0, 0, 0x03, 0xE8])
        .await
        .unwrap();
    let (closed, took, info) = timeout(LIMIT, server).await.unwrap().unwrap();
    assert!(closed.is_ok(), "{closed:?}");
    assert!(
        took > Duration::from_millis(300),
        "{took:?}: the test proves nothing"
    );
    let info = info.expect("ended");
    assert!(info.was_clean && info.code == CloseCode::NORMAL, "{info:?}");
}

#[tokio::test]
async fn compressed_traffic_continues_after_idle_release() {
    let quick = Config {
        ping_interval: Some(Duration::from_millis(100)),
        pong_timeout: Duration::from_secs(2),
        ..Config::default()
    };
    let url = echo_server(quick.clone()).await;
    let client_config = Config {
        deflate: Config::client().deflate,
        ..quick
    };
    let mut ws = duplex::connect_with(&ClientRequest::new(&url), &client_config)
        .await
        .unwrap();
    assert!(ws.connection().deflate_params().is_some());
    let text = r#"{"channel":"chat:lobby","user":"alice","text":"hello hello hello"}"#;
    for round in 0..3 {
        for i in 0..20 {
            ws.send(Message::text(format!("{text} {round} {i}")))
                .await
                .unwrap();
            let reply = timeout(LIMIT, ws.next()).await.unwrap().unwrap().unwrap();
            assert_eq!(reply, Message::text(format!("{text} {round} {i}")));
        }
        // Quiet for several ping intervals: both ends release their
        // compression states and must carry on from the kept windows.
        let quiet = tokio::time::Instant::now();
        while quiet.elapsed() < Duration::from_millis(350) {
            let _ = timeout(Duration::from_millis(50), ws.next()).await;
        }
    }
    ws.close(CloseCode::NORMAL, "").await.unwrap();
}
