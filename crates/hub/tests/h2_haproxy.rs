//! WebSockets over HTTP/2 (RFC 8441) through a real HAProxy, both ways:
//! clients speaking RFC 8441 to HAProxy, which passes each WebSocket to the
//! hub as an HTTP/1.1 upgrade; and HTTP/1.1 clients whose WebSockets HAProxy
//! carries to the hub as extended CONNECT streams over one HTTP/2
//! connection (`server … proto h2`). The hub's `/metrics` tells which
//! transport each WebSocket arrived on, so each test proves the hop it
//! claims (docs/deploy.md, "HTTP/2 (RFC 8441) behind a balancer").
//!
//! Needs Debian's `haproxy` (`cargo xtask setup haproxy`); a missing one
//! fails the test with that hint. Loopback only; every wait is bounded.

mod cluster_support;
mod common;

use cluster_support::Haproxy;
use common::{TestClient, TestHub, WAIT, json};
use duplex::http2::Pool;
use duplex_hub::HubConfig;
use duplex_hub_proto::ServerMessage;
use serde_json::json;
use tokio::time::timeout;

/// HAProxy in `mode http` in front of one hub at `server`, its frontend
/// bound with `bind_options` and its server line ending in `server_options`.
fn haproxy(bind_options: &str, server: std::net::SocketAddr, server_options: &str) -> Haproxy {
    Haproxy::start(&format!(
        "global\n    maxconn 1024\n\n\
         defaults\n    mode http\n    timeout connect 5s\n    timeout client 60s\n    \
         timeout server 60s\n    timeout tunnel 1h\n\n\
         frontend hub\n    bind 127.0.0.1:{{port}}{bind_options}\n    default_backend nodes\n\n\
         backend nodes\n    server a {server}{server_options}\n"
    ))
}

/// Subscribes both clients to a channel, publishes from `b`, and checks that
/// both get the publication.
async fn chat(a: &mut TestClient, b: &mut TestClient) {
    a.subscribe("chat:proxied").await;
    b.subscribe("chat:proxied").await;
    b.publish("chat:proxied", json!({"text": "through haproxy"}))
        .await;
    for client in [a, b] {
        let got = client
            .wait_for(|m| matches!(m, ServerMessage::Message(p) if p.channel == "chat:proxied"))
            .await;
        let ServerMessage::Message(publication) = got else {
            unreachable!()
        };
        assert_eq!(publication.data, json(json!({"text": "through haproxy"})));
    }
}

/// A connected hub client at `url`, over `pool`'s HTTP/2 connection when
/// one is given.
async fn client_at(url: &str, pool: Option<&Pool>) -> TestClient {
    let mut client = TestClient::open(url, |mut request| {
        request.transport.http2 = pool.cloned();
        request
    })
    .await
    .expect("open through haproxy");
    client.connect(None).await;
    client
}

/// Clients speak RFC 8441 to HAProxy (h2c with prior knowledge on its
/// frontend); HAProxy advertises `SETTINGS_ENABLE_CONNECT_PROTOCOL`, takes
/// their extended CONNECTs and passes each WebSocket to the hub as an
/// HTTP/1.1 upgrade.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_takes_rfc8441_from_clients_and_upgrades_to_the_hub() {
    timeout(WAIT * 2, async {
        let hub = TestHub::start(HubConfig::default()).await;
        let proxy = haproxy(" proto h2", hub.addr, "");
        let pool = Pool::new();
        let mut a = client_at(&proxy.url(), Some(&pool)).await;
        let mut b = client_at(&proxy.url(), Some(&pool)).await;
        assert!(
            pool.has_http2(&proxy.url()),
            "HAProxy's h2 frontend did not offer RFC 8441 WebSockets"
        );
        chat(&mut a, &mut b).await;
        assert_eq!(
            hub.websockets_by_transport(),
            (2.0, 0.0),
            "HAProxy should reach the hub over HTTP/1.1 upgrades"
        );
    })
    .await
    .expect("within the bound");
}

/// HTTP/1.1 clients reach HAProxy; HAProxy carries their WebSockets to the
/// hub as RFC 8441 streams (`proto h2`, h2c with prior knowledge, which the
/// hub detects on its one port), and the hub sees them as HTTP/2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_carries_websockets_to_the_hub_over_rfc8441() {
    timeout(WAIT * 2, async {
        let hub = TestHub::start(HubConfig::default()).await;
        let proxy = haproxy("", hub.addr, " proto h2 ws h2");
        let mut a = client_at(&proxy.url(), None).await;
        let mut b = client_at(&proxy.url(), None).await;
        chat(&mut a, &mut b).await;
        assert_eq!(
            hub.websockets_by_transport(),
            (0.0, 2.0),
            "HAProxy should reach the hub over RFC 8441 streams"
        );
    })
    .await
    .expect("within the bound");
}
