//! The hub over HTTP/2 (RFC 8441): Duplex's own HTTP/2 client against the
//! hub, over prior-knowledge h2c and over TLS with ALPN `h2`: the hub
//! protocol on `/ws` streams, many WebSockets on one connection, the same
//! admission as HTTP/1.1 per stream (per-IP limit, origin), the pages and
//! `/metrics` on the same connection, shutdown (GOAWAY, close 1001), and
//! the metrics by transport. Loopback only; every wait is bounded.

mod common;

use std::net::SocketAddr;

use bytes::Bytes;
use common::{TestClient, TestHub, WAIT, json};
use duplex::http2::{Pool, h2};
use duplex::tls::CaCertificate;
use duplex::{CloseCode, Error};
use duplex_hub::HubConfig;
use duplex_hub::config::TlsConfig;
use duplex_hub_proto::ServerMessage;
use serde_json::json;
use tokio::time::timeout;

/// `(1.1, 2)` client connections served.
fn http_connections(hub: &TestHub) -> (f64, f64) {
    let name = "duplex_http_connections_total";
    (
        hub.metric(name, "version=\"1.1\""),
        hub.metric(name, "version=\"2\""),
    )
}

/// A hub client whose WebSockets go over `pool`'s HTTP/2 connection.
async fn client_over(url: &str, pool: &Pool) -> TestClient {
    let mut client = TestClient::open(url, |mut r| {
        r.transport.http2 = Some(pool.clone());
        r
    })
    .await
    .expect("open over HTTP/2");
    client.connect(None).await;
    client
}

/// Subscribes `a` and `b` to a channel, publishes from `b`, and checks that
/// both get the publication.
async fn chat(a: &mut TestClient, b: &mut TestClient) {
    a.subscribe("chat:h2").await;
    b.subscribe("chat:h2").await;
    b.publish("chat:h2", json!({"text": "over h2"})).await;
    for client in [a, b] {
        let got = client
            .wait_for(|m| matches!(m, ServerMessage::Message(p) if p.channel == "chat:h2"))
            .await;
        let ServerMessage::Message(publication) = got else {
            unreachable!()
        };
        assert_eq!(publication.data, json(json!({"text": "over h2"})));
    }
}

/// Connect, subscribe and publish over h2c: both clients share one HTTP/2
/// connection, and the metrics count two WebSockets over HTTP/2, none over
/// HTTP/1.1, on one connection.
#[tokio::test]
async fn hub_protocol_over_h2c() {
    timeout(WAIT, async {
        let hub = TestHub::start(HubConfig::default()).await;
        let pool = Pool::new();
        let mut a = client_over(&hub.url(), &pool).await;
        let mut b = client_over(&hub.url(), &pool).await;
        assert!(pool.has_http2(&hub.url()));
        chat(&mut a, &mut b).await;
        assert_eq!(hub.websockets_by_transport(), (0.0, 2.0));
        assert_eq!(http_connections(&hub), (0.0, 1.0));
        // Over HTTP/1.1 the split is the other way.
        let mut c = hub.client().await;
        c.subscribe("chat:h1").await;
        assert_eq!(hub.websockets_by_transport(), (1.0, 2.0));
        drop((a, b));
        for _ in 0..100 {
            if hub.websockets_by_transport() == (1.0, 0.0) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert_eq!(
            hub.websockets_by_transport(),
            (1.0, 0.0),
            "closed streams still counted"
        );
    })
    .await
    .unwrap();
}

/// A CA and a TLS hub config for 127.0.0.1, the CA's DER.
fn tls_hub_config(label: &str) -> (HubConfig, Vec<u8>) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let dir = std::env::temp_dir().join(format!("duplex-hub-h2-{label}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    let config = HubConfig {
        tls: Some(TlsConfig {
            cert: cert_path,
            key: key_path,
        }),
        ..HubConfig::default()
    };
    (config, ca.der().to_vec())
}

/// Over TLS the hub offers ALPN `h2`: the hub protocol runs on streams of
/// one TLS connection.
#[tokio::test]
async fn hub_protocol_over_tls_alpn_h2() {
    timeout(WAIT, async {
        let (config, ca) = tls_hub_config("alpn");
        let hub = TestHub::start(config).await;
        let url = format!("wss://{}/ws", hub.addr);
        let pool = Pool::new();
        let open = || {
            let (pool, ca) = (pool.clone(), ca.clone());
            TestClient::open(&url, move |mut r| {
                r.transport.webpki_roots = false;
                r.transport.extra_roots = vec![CaCertificate::Der(ca)];
                r.transport.http2 = Some(pool);
                r
            })
        };
        let mut a = open().await.unwrap();
        a.connect(None).await;
        let mut b = open().await.unwrap();
        b.connect(None).await;
        assert!(pool.has_http2(&url));
        chat(&mut a, &mut b).await;
        assert_eq!(hub.websockets_by_transport(), (0.0, 2.0));
        assert_eq!(http_connections(&hub), (0.0, 1.0));
    })
    .await
    .unwrap();
}

/// 50 WebSockets on one HTTP/2 connection all get a publication.
#[tokio::test]
async fn fifty_websockets_on_one_connection() {
    timeout(WAIT * 3, async {
        let hub = TestHub::start(HubConfig::default()).await;
        let pool = Pool::new();
        let mut clients = Vec::new();
        for _ in 0..50 {
            let mut client = client_over(&hub.url(), &pool).await;
            client.subscribe("chat:fifty").await;
            clients.push(client);
        }
        assert_eq!(hub.websockets_by_transport(), (0.0, 50.0));
        assert_eq!(http_connections(&hub), (0.0, 1.0));
        clients[0].publish("chat:fifty", json!(50)).await;
        for client in &mut clients {
            client
                .wait_for(|m| matches!(m, ServerMessage::Message(p) if p.channel == "chat:fifty"))
                .await;
        }
    })
    .await
    .unwrap();
}

/// A raw HTTP/2 client connection to the hub, its SETTINGS received.
async fn raw_h2(addr: SocketAddr) -> h2::client::SendRequest<Bytes> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (send, mut conn) = h2::client::handshake(tcp).await.unwrap();
    let mut ping = conn.ping_pong().unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    ping.ping(h2::Ping::opaque()).await.unwrap();
    send
}

/// Sends `request` (ending the stream when `end`) and waits for the
/// response head; an accepted WebSocket's stream stays open until the
/// connection ends.
async fn send(
    send: &h2::client::SendRequest<Bytes>,
    request: http::Request<()>,
    end: bool,
) -> http::Response<h2::RecvStream> {
    let mut send = send.clone().ready().await.unwrap();
    let (response, stream) = send.send_request(request, end).unwrap();
    let response = response.await.unwrap();
    tokio::spawn(async move {
        let _stream = stream;
        tokio::time::sleep(WAIT).await;
    });
    response
}

async fn body(response: http::Response<h2::RecvStream>) -> String {
    let mut body = response.into_body();
    let mut out = Vec::new();
    while let Some(Ok(data)) = body.data().await {
        let _ = body.flow_control().release_capacity(data.len());
        out.extend_from_slice(&data);
    }
    String::from_utf8(out).unwrap()
}

fn extended_connect(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> http::Request<()> {
    let mut builder = http::Request::builder()
        .method(http::Method::CONNECT)
        .uri(format!("http://{addr}{path}"))
        .version(http::Version::HTTP_2)
        .header("sec-websocket-version", "13");
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let mut request = builder.body(()).unwrap();
    request
        .extensions_mut()
        .insert(h2::ext::Protocol::from_static("websocket"));
    request
}

/// The per-IP limit counts streams: with a limit of 1, the second WebSocket
/// on the connection gets 429 with `Retry-After` on its stream, while the
/// first goes on working.
#[tokio::test]
async fn per_ip_limit_counts_streams() {
    timeout(WAIT, async {
        let mut config = HubConfig::default();
        config.limits.max_connections_per_ip = 1;
        let hub = TestHub::start(config).await;
        let pool = Pool::new();
        let mut first = client_over(&hub.url(), &pool).await;
        let second = TestClient::open(&hub.url(), |mut r| {
            r.transport.http2 = Some(pool.clone());
            r
        })
        .await;
        match second {
            Err(Error::HttpStatus(response)) => {
                assert_eq!(response.status(), 429);
                assert_eq!(response.headers()["retry-after"], "5");
            }
            Err(other) => panic!("{other:?}"),
            Ok(_) => panic!("a second stream over a limit of 1 was accepted"),
        }
        assert_eq!(
            hub.metric("duplex_connections_rejected_total", "reason=\"ip_limit\""),
            1.0
        );
        // The first still works, on the same connection.
        first.subscribe("chat:still").await;
        first.publish("chat:still", json!(1)).await;
        first
            .wait_for(|m| matches!(m, ServerMessage::Message(p) if p.channel == "chat:still"))
            .await;
        assert_eq!(http_connections(&hub), (0.0, 1.0));
    })
    .await
    .unwrap();
}

/// An origin the hub does not allow, on a stream: 403 on that stream, the
/// connection goes on; the own origin is welcome.
#[tokio::test]
async fn a_bad_origin_on_a_stream_is_403() {
    timeout(WAIT, async {
        let hub = TestHub::start(HubConfig::default()).await;
        let h2 = raw_h2(hub.addr).await;
        assert!(h2.is_extended_connect_protocol_enabled());
        let refused = send(
            &h2,
            extended_connect(hub.addr, "/ws", &[("origin", "https://evil.example")]),
            false,
        )
        .await;
        assert_eq!(refused.status(), 403);
        assert!(body(refused).await.contains("origin not allowed"));
        assert_eq!(
            hub.metric("duplex_connections_rejected_total", "reason=\"origin\""),
            1.0
        );
        let own = format!("http://{}", hub.addr);
        let accepted = send(
            &h2,
            extended_connect(hub.addr, "/ws", &[("origin", own.as_str())]),
            false,
        )
        .await;
        assert_eq!(accepted.status(), 200);
        // A path that is not a WebSocket endpoint: 404 on its stream.
        let nowhere = send(&h2, extended_connect(hub.addr, "/nowhere", &[]), false).await;
        assert_eq!(nowhere.status(), 404);
    })
    .await
    .unwrap();
}

/// The pages, `/healthz`, `/readyz` and `/metrics` over HTTP/2, answered by
/// the same routes as over HTTP/1.1, on one connection; HEAD has no body;
/// a POST gets 405.
#[tokio::test]
async fn pages_and_metrics_over_h2() {
    timeout(WAIT, async {
        let hub = TestHub::start(HubConfig::default()).await;
        let h2 = raw_h2(hub.addr).await;
        let get = |path: &str, method: http::Method| {
            http::Request::builder()
                .method(method)
                .uri(format!("http://{}{path}", hub.addr))
                .body(())
                .unwrap()
        };
        let page = send(&h2, get("/", http::Method::GET), true).await;
        assert_eq!(page.status(), 200);
        assert!(
            page.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
        let html = body(page).await;
        assert_eq!(
            html,
            common::http_get(hub.addr, "/").await.1,
            "same page as HTTP/1.1"
        );
        for (path, status) in [
            ("/healthz", 200),
            ("/readyz", 200),
            ("/nothing", 404),
            ("/ws", 426),
        ] {
            let response = send(&h2, get(path, http::Method::GET), true).await;
            assert_eq!(response.status(), status, "{path}");
            assert!(!response.headers().contains_key("connection"), "{path}");
        }
        let metrics = send(&h2, get("/metrics", http::Method::GET), true).await;
        assert_eq!(metrics.status(), 200);
        let text = body(metrics).await;
        assert!(
            text.contains("duplex_http_connections_total{version=\"2\"} 1"),
            "{text}"
        );
        let head = send(&h2, get("/healthz", http::Method::HEAD), true).await;
        assert_eq!(head.status(), 200);
        assert_eq!(head.headers()["content-length"], "3");
        assert_eq!(body(head).await, "");
        let post = send(&h2, get("/healthz", http::Method::POST), true).await;
        assert_eq!(post.status(), 405);
        assert_eq!(http_connections(&hub).1, 1.0);
    })
    .await
    .unwrap();
}

/// Shutdown with WebSockets over HTTP/2: each gets close 1001, the
/// connection GOAWAY, and the hub stops within its grace period with no
/// connection left to drop.
#[tokio::test]
async fn shutdown_closes_h2_websockets_with_1001() {
    timeout(WAIT * 3, async {
        let hub = TestHub::start(HubConfig::default()).await;
        let pool = Pool::new();
        let mut a = client_over(&hub.url(), &pool).await;
        let mut b = client_over(&hub.url(), &pool).await;
        let stopping = tokio::spawn(hub.stop());
        for client in [&mut a, &mut b] {
            let close = client.closed().await;
            assert_eq!(close.code, CloseCode::GOING_AWAY, "{close:?}");
        }
        drop((a, b));
        assert_eq!(stopping.await.unwrap(), 0, "connections left at the end");
    })
    .await
    .unwrap();
}

/// An invalid extended CONNECT (a WebSocket version the hub does not speak)
/// gets its 4xx on the stream and is counted among the handshake refusals,
/// as a bad HTTP/1.1 upgrade is.
#[tokio::test]
async fn an_invalid_extended_connect_is_counted() {
    timeout(WAIT, async {
        let hub = TestHub::start(HubConfig::default()).await;
        let refused = || hub.metric("duplex_connections_rejected_total", "reason=\"handshake\"");
        assert_eq!(refused(), 0.0);
        let h2 = raw_h2(hub.addr).await;
        let mut request = extended_connect(hub.addr, "/ws", &[]);
        request
            .headers_mut()
            .insert("sec-websocket-version", http::HeaderValue::from_static("8"));
        let response = send(&h2, request, false).await;
        assert_eq!(response.status().as_u16(), 426);
        assert_eq!(refused(), 1.0);
    })
    .await
    .unwrap();
}
