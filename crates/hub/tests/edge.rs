//! The hub's edge: which origins may open its WebSockets (never trusting
//! `Host`), `/echo` (off by default, and when on under the same checks,
//! limits and metrics as `/ws`), and who may read `/metrics`, `/dashboard`
//! and `$sys:stats`.

mod common;

use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use common::{TestClient, TestHub, WAIT};
use duplex_hub::HubConfig;
use duplex_hub::config::{AdminConfig, AuthConfig, NamespaceConfig, Permission};
use duplex_hub_proto::{ErrorCode, ServerMessage};
use futures_util::{SinkExt, StreamExt};
use jsonwebtoken::{EncodingKey, Header, encode};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SECRET: &str = "test secret of the hub, long enough";
const ADMIN: &str = "admin token for the tests";

fn token(sub: &str, extra: serde_json::Value) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut claims = json!({ "sub": sub, "exp": now + 3600 });
    if let (Some(claims), Some(extra)) = (claims.as_object_mut(), extra.as_object()) {
        claims.extend(extra.clone());
    }
    encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

fn authed() -> HubConfig {
    HubConfig {
        auth: Some(AuthConfig {
            hs256_secret: Some(SECRET.into()),
            ..AuthConfig::default()
        }),
        ..HubConfig::default()
    }
}

/// A raw HTTP/1.1 request to `addr` with exactly these header lines (no
/// `Host` unless given): the status and the response head.
async fn raw(addr: SocketAddr, method_path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut request = format!("{method_path} HTTP/1.1\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    let mut buf = [0u8; 4096];
    // Up to the end of the head (a 101 leaves the connection open).
    while !response.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(WAIT, tcp.read(&mut buf))
            .await
            .expect("answer in time")
            .unwrap();
        if n == 0 {
            break;
        }
        response.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    (status, text)
}

/// A WebSocket upgrade of `path` with `Host: host`, `Origin: origin` and
/// `extra` headers: the status and the response head.
async fn upgrade(
    addr: SocketAddr,
    path: &str,
    host: &str,
    origin: Option<&str>,
    extra: &[(&str, &str)],
) -> (u16, String) {
    let mut headers = vec![
        ("Host", host),
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("Sec-WebSocket-Version", "13"),
    ];
    if let Some(origin) = origin {
        headers.push(("Origin", origin));
    }
    headers.extend_from_slice(extra);
    raw(addr, &format!("GET {path}"), &headers).await
}

fn with_echo(mut config: HubConfig) -> HubConfig {
    config.echo = true;
    config
}

/// DNS rebinding: a page on `evil.example`, its name pointed at the hub,
/// sends a `Host` and an `Origin` that agree. Neither is the hub's, on
/// either WebSocket endpoint; loopback origins on the hub's port and the
/// configured public URL are.
#[tokio::test]
async fn a_rebound_host_with_a_matching_origin_is_refused_on_every_endpoint() {
    let mut config = with_echo(HubConfig::default());
    config.public_urls = vec!["https://chat.example.com/".into()];
    let hub = TestHub::start(config).await;
    let port = hub.addr.port();
    let evil_host = format!("evil.example:{port}");
    let evil_origin = format!("http://evil.example:{port}");
    for path in ["/ws", "/echo"] {
        let (status, head) = upgrade(hub.addr, path, &evil_host, Some(&evil_origin), &[]).await;
        assert_eq!(status, 403, "{path}: {head}");
        let other_port = format!("http://127.0.0.1:{}", port.wrapping_add(1));
        let (status, _) = upgrade(hub.addr, path, &evil_host, Some(&other_port), &[]).await;
        assert_eq!(status, 403, "{path}: a loopback origin on another port");
        for own in [
            format!("http://127.0.0.1:{port}"),
            format!("http://localhost:{port}"),
            format!("http://[::1]:{port}"),
            "https://chat.example.com".to_owned(),
        ] {
            let (status, head) = upgrade(hub.addr, path, &evil_host, Some(&own), &[]).await;
            assert_eq!(status, 101, "{path} from {own}: {head}");
        }
        // No Origin: not a browser.
        let (status, _) = upgrade(hub.addr, path, &evil_host, None, &[]).await;
        assert_eq!(status, 101, "{path} without an origin");
    }
    let (_, metrics) = hub.get("/metrics").await;
    assert!(
        metrics.contains(r#"duplex_connections_rejected_total{reason="origin"} 4"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn echo_is_off_unless_configured() {
    let hub = TestHub::start(HubConfig::default()).await;
    let host = hub.addr.to_string();
    let (status, head) = upgrade(hub.addr, "/echo", &host, None, &[]).await;
    assert_eq!(status, 404, "{head}");
    assert_eq!(hub.get("/echo").await.0, 404);
    let hub = TestHub::start(with_echo(HubConfig::default())).await;
    let mut ws = duplex::connect(&format!("ws://{}/echo", hub.addr))
        .await
        .unwrap();
    ws.send(duplex::Message::text("hello")).await.unwrap();
    let back = tokio::time::timeout(WAIT, ws.next()).await.unwrap();
    assert_eq!(back.unwrap().unwrap(), duplex::Message::text("hello"));
    assert_eq!(hub.get("/echo").await.0, 426);
}

/// On a hub with `[auth]`, `/echo` wants a handshake token, as `/ws` takes
/// it; a bad one is refused as on `/ws`.
#[tokio::test]
async fn echo_on_an_authed_hub_needs_a_token() {
    let hub = TestHub::start(with_echo(authed())).await;
    let host = hub.addr.to_string();
    let (status, head) = upgrade(hub.addr, "/echo", &host, None, &[]).await;
    assert_eq!(status, 401, "{head}");
    let (status, _) = upgrade(
        hub.addr,
        "/echo",
        &host,
        None,
        &[("Authorization", "Bearer not.a.jwt")],
    )
    .await;
    assert_eq!(status, 401);
    let bearer = format!("Bearer {}", token("alice", json!({})));
    let (status, head) = upgrade(
        hub.addr,
        "/echo",
        &host,
        None,
        &[("Authorization", &bearer)],
    )
    .await;
    assert_eq!(status, 101, "{head}");
    let path = format!("/echo?token={}", token("bob", json!({})));
    let (status, _) = upgrade(hub.addr, &path, &host, None, &[]).await;
    assert_eq!(status, 101);
}

trait GetAuthorized {
    async fn get_authorized(&self, path: &str, bearer: &str) -> (u16, String);
}

impl GetAuthorized for TestHub {
    /// A GET with `Authorization: Bearer bearer` (none if empty); the body
    /// only on 200.
    async fn get_authorized(&self, path: &str, bearer: &str) -> (u16, String) {
        let host = self.addr.to_string();
        let auth = format!("Bearer {bearer}");
        let mut headers = vec![("Host", host.as_str())];
        if !bearer.is_empty() {
            headers.push(("Authorization", auth.as_str()));
        }
        let mut tcp = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        let mut request = format!("GET {path} HTTP/1.1\r\n");
        for (name, value) in &headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        tcp.write_all(request.as_bytes()).await.unwrap();
        let mut response = Vec::new();
        tokio::time::timeout(WAIT, tcp.read_to_end(&mut response))
            .await
            .unwrap()
            .unwrap();
        let text = String::from_utf8_lossy(&response).into_owned();
        let status: u16 = text.split(' ').nth(1).unwrap().parse().unwrap();
        let body = if status == 200 {
            text.split_once("\r\n\r\n").unwrap().1.to_owned()
        } else {
            String::new()
        };
        (status, body)
    }
}

/// `/echo` passes the per-connection rate limit: messages over it are not
/// echoed, and one that keeps going is closed with 1008, counted in the
/// metrics as a hub connection is.
#[tokio::test]
async fn echo_is_rate_limited_and_counted() {
    let mut config = with_echo(HubConfig::default());
    config.limits.messages_per_second = 5.0;
    config.limits.burst = 10.0;
    config.limits.rate_strikes = 3;
    let hub = TestHub::start(config).await;
    let mut ws = duplex::connect(&format!("ws://{}/echo", hub.addr))
        .await
        .unwrap();
    for i in 0..100 {
        if ws
            .feed(duplex::Message::text(format!("m{i}")))
            .await
            .is_err()
        {
            break;
        }
    }
    let _ = ws.flush().await;
    let mut echoed = 0;
    let ended = tokio::time::timeout(WAIT, async {
        while let Some(Ok(_)) = ws.next().await {
            echoed += 1;
        }
    })
    .await;
    assert!(ended.is_ok(), "the flood is closed in time");
    assert!(echoed <= 12, "{echoed} of 100 echoed at a burst of 10");
    assert_eq!(ws.close_info().map(|i| u16::from(i.code)), Some(1008));
    let (_, metrics) = hub.get("/metrics").await;
    for line in [
        "duplex_connections_accepted_total 1",
        r#"duplex_close_codes_total{code="1008"} 1"#,
    ] {
        assert!(metrics.contains(line), "{line} missing from {metrics}");
    }
    let counter = |name: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    assert!(counter("duplex_rate_limited_total") >= 4, "{metrics}");
    assert!(counter("duplex_messages_in_total") >= 14, "{metrics}");
}

/// Both WebSocket endpoints refuse the same way at the same limit: 429 with
/// `Retry-After` per client address, 503 in total.
#[tokio::test]
async fn echo_and_ws_refuse_alike_at_the_connection_limits() {
    let mut config = with_echo(HubConfig::default());
    config.limits.max_connections_per_ip = 1;
    let hub = TestHub::start(config).await;
    let _held = hub.client().await;
    let host = hub.addr.to_string();
    for path in ["/ws", "/echo"] {
        let (status, head) = upgrade(hub.addr, path, &host, None, &[]).await;
        assert_eq!(status, 429, "{path}: {head}");
        assert!(
            head.to_ascii_lowercase().contains("retry-after: 5"),
            "{path}: {head}"
        );
    }
    let mut config = with_echo(HubConfig::default());
    config.limits.max_connections = 1;
    let hub = TestHub::start(config).await;
    let _held = duplex::connect(&format!("ws://{}/echo", hub.addr))
        .await
        .unwrap();
    let host = hub.addr.to_string();
    for path in ["/ws", "/echo"] {
        let (status, head) = upgrade(hub.addr, path, &host, None, &[]).await;
        assert_eq!(status, 503, "{path}: {head}");
    }
    let (_, metrics) = hub.get("/metrics").await;
    assert!(metrics.contains(r#"reason="total_limit"} 2"#), "{metrics}");
}

/// On a hub with `[auth]`, `/metrics`, `/dashboard` and `$sys:stats` are
/// protected by default: the admin token or a JWT granting `$sys:stats`
/// opens them.
#[tokio::test]
async fn admin_pages_and_sys_channels_are_protected_on_an_authed_hub() {
    let mut config = authed();
    config.admin.token = Some(ADMIN.into());
    config.namespaces.insert(
        "vip".into(),
        NamespaceConfig {
            subscribe: Permission::Granted,
            ..NamespaceConfig::default()
        },
    );
    let hub = TestHub::start(config).await;
    let granted = token("ops", json!({ "subscribe": ["$sys:*"] }));
    let plain = token("alice", json!({}));
    for path in ["/metrics", "/dashboard"] {
        assert_eq!(hub.get(path).await.0, 401, "{path} without a token");
        assert_eq!(hub.get_authorized(path, &plain).await.0, 401, "{path}");
        assert_eq!(hub.get_authorized(path, "wrong").await.0, 401, "{path}");
        assert_eq!(hub.get_authorized(path, ADMIN).await.0, 200, "{path}");
        assert_eq!(hub.get_authorized(path, &granted).await.0, 200, "{path}");
        let query = format!("{path}?token={}", ADMIN.replace(' ', "+"));
        assert_eq!(hub.get(&query).await.0, 200, "{path}?token=");
    }
    let (_, metrics) = hub.get_authorized("/metrics", ADMIN).await;
    assert!(metrics.contains("duplex_connections "), "{metrics}");
    // The rest stays open.
    for path in ["/", "/healthz", "/assets/dashboard.js"] {
        assert_eq!(hub.get(path).await.0, 200, "{path}");
    }
    // `$sys:stats`: not for anonymous clients, nor for a token without the
    // grant; for the admin token in the handshake and a granting JWT.
    let mut anonymous = hub.client().await;
    let forbidden = |reply: ServerMessage| {
        matches!(
            reply,
            ServerMessage::Error {
                code: ErrorCode::Forbidden,
                ..
            }
        )
    };
    assert!(forbidden(anonymous.subscribe("$sys:stats").await));
    let mut alice = TestClient::open(&hub.url(), |r| r).await.unwrap();
    alice.connect(Some(&plain)).await;
    assert!(forbidden(alice.subscribe("$sys:stats").await));
    let mut ops = TestClient::open(&hub.url(), |r| r).await.unwrap();
    ops.connect(Some(&granted)).await;
    assert!(matches!(
        ops.subscribe("$sys:stats").await,
        ServerMessage::Subscribed { .. }
    ));
    let url = format!("{}?token={}", hub.url(), ADMIN.replace(' ', "+"));
    let mut admin = TestClient::open(&url, |r| r).await.unwrap();
    admin.connect(None).await;
    assert!(matches!(
        admin.subscribe("$sys:stats").await,
        ServerMessage::Subscribed { .. }
    ));
    // It grants `$sys` and nothing else: a `vip` namespace for grants only
    // stays closed to it.
    assert!(forbidden(admin.subscribe("vip:lounge").await));
}

/// Secure by default: `[auth]` without an admin token closes them to
/// everyone but granting JWTs; `admin.open` opens them; without `[auth]`
/// they are open, unless an admin token is set.
#[tokio::test]
async fn admin_defaults_follow_auth_and_can_be_opened() {
    let hub = TestHub::start(authed()).await;
    assert_eq!(hub.get("/metrics").await.0, 401);
    let granted = token("ops", json!({ "channels": ["$sys:stats"] }));
    assert_eq!(hub.get_authorized("/metrics", &granted).await.0, 200);
    let mut config = authed();
    config.admin = AdminConfig {
        token: None,
        open: Some(true),
    };
    let hub = TestHub::start(config).await;
    assert_eq!(hub.get("/metrics").await.0, 200);
    assert_eq!(hub.get("/dashboard").await.0, 200);
    let hub = TestHub::start(HubConfig::default()).await;
    assert_eq!(hub.get("/metrics").await.0, 200);
    let mut anonymous = hub.client().await;
    assert!(matches!(
        anonymous.subscribe("$sys:stats").await,
        ServerMessage::Subscribed { .. }
    ));
    let mut config = HubConfig::default();
    config.admin.token = Some(ADMIN.into());
    let hub = TestHub::start(config).await;
    assert_eq!(hub.get("/metrics").await.0, 401);
    assert_eq!(hub.get_authorized("/metrics", ADMIN).await.0, 200);
    // A hub without [auth] takes the admin token in the handshake too.
    let url = format!("{}?token={}", hub.url(), ADMIN.replace(' ', "+"));
    let mut admin = TestClient::open(&url, |r| r).await.unwrap();
    admin.connect(None).await;
    assert!(matches!(
        admin.subscribe("$sys:stats").await,
        ServerMessage::Subscribed { .. }
    ));
}

/// A refused origin is told what would let it in: the 403's body names the
/// settings (a page's developer sees it in the browser's network panel, the
/// operator in the hub's log at info).
#[tokio::test]
async fn a_refused_origin_is_told_what_to_configure() {
    let hub = TestHub::start(HubConfig::default()).await;
    let mut tcp = tokio::net::TcpStream::connect(hub.addr).await.unwrap();
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Origin: http://192.0.2.7:8080\r\n\r\n",
        hub.addr
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(WAIT, tcp.read_to_end(&mut response))
        .await
        .expect("the refusal ends the connection")
        .unwrap();
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 403"), "{response}");
    assert!(
        response.contains("--public-url") && response.contains("--allow-origin"),
        "{response}"
    );
}
