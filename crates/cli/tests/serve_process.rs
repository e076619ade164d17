//! `duplex serve` as the real process: it serves the hub and its pages on
//! one port (plain or TLS), refuses a bad configuration with a clear
//! message, logs as humans or as JSON read, explains itself in `--help`, and
//! on SIGTERM or Ctrl-C (SIGINT) closes its clients with 1001, stops
//! accepting and exits 0.

mod common;

use common::{ServeProcess, TestCert, start_serve, start_serve_with_env};
use std::io::Write;
use std::process::Command;
use std::time::Duration;

use duplex::Message;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(10);

/// Connects to the hub at `url` and subscribes to `chat:lobby`.
async fn subscribed_client(
    request: &duplex::ClientRequest,
) -> duplex::WebSocket<duplex::transport::Transport> {
    let mut ws = timeout(
        WAIT,
        duplex::connect_with(request, &duplex::Config::client()),
    )
    .await
    .expect("connect in time")
    .expect("connect");
    assert_eq!(ws.protocol(), Some("duplex.v1"));
    ws.send(Message::text(r#"{"op":"connect","id":1}"#))
        .await
        .unwrap();
    assert!(next_text(&mut ws).await.contains(r#""op":"connected""#));
    ws.send(Message::text(
        r#"{"op":"subscribe","id":2,"channel":"chat:lobby"}"#,
    ))
    .await
    .unwrap();
    assert!(next_text(&mut ws).await.contains(r#""op":"subscribed""#));
    ws
}

/// Sends `signal` to the server: its client is told 1001, nothing new is
/// accepted (`request` gets no WebSocket), and the process exits 0.
async fn stops_cleanly_on(
    mut server: ServeProcess,
    mut ws: duplex::WebSocket<duplex::transport::Transport>,
    signal: libc::c_int,
    request: &duplex::ClientRequest,
) {
    let pid = server.child.id() as libc::pid_t;
    // SAFETY: sending a signal to the child this test started.
    assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
    let end = timeout(WAIT, async { while let Some(Ok(_)) = ws.next().await {} }).await;
    assert!(end.is_ok(), "the hub closes its clients");
    let info = ws.close_info().cloned().expect("closed");
    assert_eq!(u16::from(info.code), 1001);
    // It no longer accepts: a new client gets no WebSocket.
    let late = timeout(
        WAIT,
        duplex::connect_with(request, &duplex::Config::client()),
    )
    .await
    .expect("refused in time");
    assert!(late.is_err(), "a connection was accepted while stopping");
    let status = (0..100)
        .find_map(|_| {
            std::thread::sleep(Duration::from_millis(100));
            server.child.try_wait().unwrap()
        })
        .expect("exits within 10 s");
    assert!(status.success(), "{status}");
}

async fn get(addr: &str, path: &str) -> String {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut response = String::new();
    timeout(WAIT, tcp.read_to_string(&mut response))
        .await
        .expect("answer in time")
        .unwrap();
    response
}

async fn next_text(ws: &mut duplex::WebSocket<duplex::transport::Transport>) -> String {
    match timeout(WAIT, ws.next()).await.expect("in time") {
        Some(Ok(Message::Text(text))) => text.as_str().to_owned(),
        other => panic!("expected a text message, got {other:?}"),
    }
}

#[tokio::test]
async fn serve_runs_the_hub_and_stops_cleanly_on_sigterm() {
    let server = start_serve(&[]);
    let addr = server.addr.clone();
    assert!(get(&addr, "/readyz").await.starts_with("HTTP/1.1 200"));
    let page = get(&addr, "/").await;
    assert!(
        page.starts_with("HTTP/1.1 200") && page.contains("text/html"),
        "{page}"
    );
    let request =
        duplex::client::ClientRequest::new(format!("ws://{addr}/ws")).protocol("duplex.v1");
    let ws = subscribed_client(&request).await;
    stops_cleanly_on(server, ws, libc::SIGTERM, &request).await;
}

#[tokio::test]
async fn ctrl_c_stops_it_as_sigterm_does() {
    let server = start_serve(&[]);
    let request = duplex::client::ClientRequest::new(format!("ws://{}/ws", server.addr))
        .protocol("duplex.v1");
    let ws = subscribed_client(&request).await;
    stops_cleanly_on(server, ws, libc::SIGINT, &request).await;
}

#[tokio::test]
async fn json_logs_are_one_object_per_line() {
    let server = start_serve(&["--log-format", "json"]);
    assert!(!server.log_head.is_empty());
    for line in &server.log_head {
        let event: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            event.get("level").is_some() && event.get("fields").is_some(),
            "{line}"
        );
    }
    assert!(
        get(&server.addr, "/healthz")
            .await
            .starts_with("HTTP/1.1 200")
    );
}

/// Connects, trying again while the hub answers 503 (a connection just
/// closed still holds its slot until its session has ended).
async fn connect_when_a_slot_frees(
    request: &duplex::ClientRequest,
) -> Result<duplex::WebSocket<duplex::transport::Transport>, duplex::Error> {
    let started = std::time::Instant::now();
    loop {
        let result = timeout(
            WAIT,
            duplex::connect_with(request, &duplex::Config::client()),
        )
        .await
        .expect("an answer in time");
        match &result {
            Err(duplex::Error::HttpStatus(response))
                if response.status().as_u16() == 503 && started.elapsed() < WAIT =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            _ => return result,
        }
    }
}

#[tokio::test]
async fn the_environment_sets_what_the_flags_set() {
    let server = start_serve_with_env(
        &[],
        &[
            ("DUPLEX_MAX_CONNECTIONS", "1"),
            ("DUPLEX_ALLOW_ORIGIN", "https://a.example,https://b.example"),
        ],
    );
    let request = duplex::client::ClientRequest::new(format!("ws://{}/ws", server.addr))
        .protocol("duplex.v1");
    let first = subscribed_client(&request).await;
    // DUPLEX_MAX_CONNECTIONS=1: the second connection is refused with 503.
    let refused = timeout(
        WAIT,
        duplex::connect_with(&request, &duplex::Config::client()),
    )
    .await
    .expect("refused in time");
    match refused {
        Err(duplex::Error::HttpStatus(response)) => assert_eq!(response.status().as_u16(), 503),
        other => panic!("expected a 503, got {other:?}"),
    }
    drop(first);
    // Both origins of the list are allowed, another is not (403).
    for (origin, allowed) in [
        ("https://a.example", true),
        ("https://b.example", true),
        ("https://c.example", false),
    ] {
        let request = duplex::client::ClientRequest::new(format!("ws://{}/ws", server.addr))
            .protocol("duplex.v1")
            .origin(origin);
        let result = connect_when_a_slot_frees(&request).await;
        match result {
            Ok(_) => assert!(allowed, "{origin} was let in"),
            Err(duplex::Error::HttpStatus(response)) => {
                assert!(!allowed, "{origin} was refused");
                assert_eq!(response.status().as_u16(), 403);
            }
            Err(other) => panic!("{origin}: {other}"),
        }
    }
}

#[test]
fn help_names_every_flag_and_endpoint() {
    let output = Command::new(env!("CARGO_BIN_EXE_duplex"))
        .args(["serve", "--help"])
        .output()
        .expect("run duplex serve --help");
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for expected in [
        "--config",
        "--listen",
        "127.0.0.1:8080",
        "--allow-origin",
        "--tls-cert",
        "--tls-key",
        "--jwt-secret",
        "--allow-short-secret",
        "--jwt-rs256-key",
        "--jwt-es256-key",
        "--max-connections",
        "--max-connections-per-ip",
        "--rate",
        "--max-message-size",
        "--ping-interval",
        "--pong-timeout",
        "--redis",
        "--log-format",
        "--public-url",
        "--echo",
        "--admin-token",
        "--admin-open",
        "--trusted-proxy",
        "--client-address",
        "DUPLEX_CONFIG",
        "/ws",
        "/echo",
        "/dashboard",
        "/metrics",
        "/healthz",
        "/readyz",
        "/session",
        "/sse?channel=",
    ] {
        assert!(
            help.contains(expected),
            "`{expected}` missing from:\n{help}"
        );
    }
}

#[tokio::test]
async fn serve_speaks_wss_with_a_pem_certificate() {
    let cert = TestCert::new("serve-tls");
    let server = start_serve(&cert.flags());
    let port = server.addr.rsplit(':').next().unwrap();
    let mut request =
        duplex::ClientRequest::new(format!("wss://localhost:{port}/ws")).protocol("duplex.v1");
    request.transport.extra_roots = vec![cert.root()];
    let mut ws = subscribed_client(&request).await;
    assert!(ws.get_ref().is_tls());
    // A publish comes back to its subscriber over TLS.
    ws.send(Message::text(
        r#"{"op":"publish","id":3,"channel":"chat:lobby","data":{"text":"over tls"}}"#,
    ))
    .await
    .unwrap();
    let mut seen = String::new();
    for _ in 0..2 {
        seen.push_str(&next_text(&mut ws).await);
    }
    assert!(
        seen.contains(r#""op":"published""#) && seen.contains("over tls"),
        "{seen}"
    );
    // A plain ws:// client gets no WebSocket from a TLS port.
    let plain = duplex::client::ClientRequest::new(format!("ws://{}/ws", server.addr))
        .protocol("duplex.v1");
    let refused = timeout(
        WAIT,
        duplex::connect_with(&plain, &duplex::Config::client()),
    )
    .await
    .expect("refused in time");
    assert!(refused.is_err());
    stops_cleanly_on(server, ws, libc::SIGTERM, &request).await;
}

#[test]
fn a_bad_config_file_is_refused_with_a_clear_message() {
    let dir = std::env::temp_dir().join(format!("duplex-serve-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("hub.toml");
    let mut file = std::fs::File::create(&path).unwrap();
    writeln!(file, "[limits]\nmax_conections = 5").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_duplex"))
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&path)
        .output()
        .expect("run duplex serve");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("max_conections"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Opens `ws://ADDR/ws` and sends `connect` with `token`.
async fn connect_with_token(
    addr: &str,
    token: &str,
) -> duplex::WebSocket<duplex::transport::Transport> {
    let request =
        duplex::client::ClientRequest::new(format!("ws://{addr}/ws")).protocol("duplex.v1");
    let mut ws = timeout(
        WAIT,
        duplex::connect_with(&request, &duplex::Config::client()),
    )
    .await
    .expect("connect in time")
    .expect("connect");
    let connect = serde_json::json!({"op": "connect", "id": 1, "token": token});
    ws.send(Message::text(connect.to_string())).await.unwrap();
    ws
}

#[tokio::test]
async fn a_token_from_duplex_token_is_accepted_until_it_expires() {
    const SECRET: &str = "a-process-test-secret-of-32-byte";
    let server = start_serve(&["--jwt-secret", SECRET]);
    let signed = Command::new(env!("CARGO_BIN_EXE_duplex"))
        .args(["token", "--jwt-secret", SECRET, "--sub", "alice"])
        .args(["--channels", "chat:*", "--ttl", "2s"])
        .output()
        .expect("run duplex token");
    assert!(signed.status.success(), "{signed:?}");
    let issued = std::time::Instant::now();
    let token = String::from_utf8(signed.stdout).unwrap().trim().to_owned();
    assert_eq!(token.split('.').count(), 3, "{token}");

    let mut ws = connect_with_token(&server.addr, &token).await;
    let connected = next_text(&mut ws).await;
    assert!(
        connected.contains(r#""op":"connected""#) && connected.contains(r#""user":"alice""#),
        "{connected}"
    );
    ws.send(Message::text(
        r#"{"op":"subscribe","id":2,"channel":"chat:lobby"}"#,
    ))
    .await
    .unwrap();
    assert!(next_text(&mut ws).await.contains(r#""op":"subscribed""#));
    ws.send(Message::text(
        r#"{"op":"subscribe","id":3,"channel":"$sys:stats"}"#,
    ))
    .await
    .unwrap();
    let refused = next_text(&mut ws).await;
    assert!(refused.contains(r#""code":"forbidden""#), "{refused}");

    // Expired, it is refused, and the close says why.
    tokio::time::sleep(Duration::from_secs(3).saturating_sub(issued.elapsed())).await;
    let mut late = connect_with_token(&server.addr, &token).await;
    let end = timeout(WAIT, async { while let Some(Ok(_)) = late.next().await {} }).await;
    assert!(end.is_ok(), "the hub closes in time");
    let info = late.close_info().cloned().expect("closed");
    assert_eq!(u16::from(info.code), 4001, "{info:?}");
    assert_eq!(info.reason, "token refused: token expired");
}

/// A hub-protocol WebSocket to `addr` from the source address `source`
/// (127.0.0.x: the hub's log is per address), with `origin` if given.
async fn open_from(
    source: [u8; 4],
    addr: &str,
    origin: Option<&str>,
) -> Result<duplex::WebSocket<tokio::net::TcpStream>, duplex::Error> {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .bind(std::net::SocketAddr::from((source, 0)))
        .unwrap();
    let tcp = socket.connect(addr.parse().unwrap()).await.unwrap();
    let mut request =
        duplex::client::ClientRequest::new(format!("ws://{addr}/ws")).protocol("duplex.v1");
    if let Some(origin) = origin {
        request = request.origin(origin);
    }
    duplex::client_handshake(tcp, &request, &duplex::Config::client()).await
}

#[tokio::test]
async fn the_startup_banner_and_refused_connections_are_logged_at_info() {
    let server = start_serve(&[
        "--jwt-secret",
        "a-process-test-secret-of-32-byte",
        "--max-message-size",
        "1000",
    ]);
    let addr = server.addr.clone();
    for (label, value) in [
        ("web chat", format!("http://{addr}/")),
        ("dashboard", format!("http://{addr}/dashboard")),
        ("metrics", format!("http://{addr}/metrics")),
        ("broker", "in memory".to_owned()),
        ("auth", "JWT HS256".to_owned()),
        ("origins", "loopback pages".to_owned()),
    ] {
        server.wait_log(|line| line.contains(label) && line.contains(&value));
    }

    // A page on another site, retrying: one line, naming the origin, the
    // peer and what to set.
    for _ in 0..3 {
        let refused = open_from([127, 0, 0, 2], &addr, Some("http://evil.example")).await;
        assert!(refused.is_err(), "a foreign origin was accepted");
    }
    // A bad token in `connect`: 4001, with the reason.
    let mut ws = open_from([127, 0, 0, 3], &addr, None).await.unwrap();
    ws.send(Message::text(
        r#"{"op":"connect","id":1,"token":"not.a.jwt"}"#,
    ))
    .await
    .unwrap();
    let _ = timeout(WAIT, async { while let Some(Ok(_)) = ws.next().await {} }).await;
    // An oversized message: 1009.
    let mut ws = open_from([127, 0, 0, 4], &addr, None).await.unwrap();
    ws.send(Message::text("x".repeat(2000))).await.unwrap();
    let _ = timeout(WAIT, async { while let Some(Ok(_)) = ws.next().await {} }).await;

    let origin = server.wait_log(|line| line.contains("origin not allowed"));
    assert!(
        origin[0].contains("127.0.0.2")
            && origin[0].contains("http://evil.example")
            && origin[0].contains("--public-url"),
        "{origin:?}"
    );
    let token = server.wait_log(|line| line.contains("127.0.0.3"));
    assert!(
        token[0].contains("INFO")
            && token[0].contains("code=4001")
            && token[0].contains("malformed token"),
        "{token:?}"
    );
    let oversized = server.wait_log(|line| line.contains("127.0.0.4"));
    assert!(
        oversized[0].contains("INFO") && oversized[0].contains("code=1009"),
        "{oversized:?}"
    );
    // The retries of the refused page were not logged again.
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        server
            .wait_log(|line| line.contains("origin not allowed"))
            .len(),
        1
    );
}
