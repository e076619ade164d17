//! Lifecycle events (webhooks) on one node (the in-memory broker), POSTed
//! to a real HTTP backend written here (`webhook_support`) that checks
//! every signature itself: each event type with its fields, a forged or
//! replayed request refused by that check, retries while the backend fails
//! (no loss; duplicates only as repeats of one id), a bounded queue while
//! it is down, no offline/online flap on a page reload, and the per-user
//! connection limit.

mod api_support;
mod common;
mod webhook_support;

use std::time::Duration;

use api_support::token;
use common::{TestClient, TestHub, WAIT};
use duplex::CloseCode;
use duplex_hub::HubConfig;
use duplex_hub::config::{AuthConfig, WebhooksConfig};
use duplex_hub_proto::Command;
use webhook_support::{Mode, Receiver, SECRET, count, deliveries, unique, unix_now};

/// A hub with JWT auth (anonymous clients admitted) sending every event to
/// `url`, with graces of `grace` and quick retries.
fn config(url: &str, grace: Duration) -> HubConfig {
    let mut config = HubConfig {
        auth: Some(AuthConfig {
            hs256_secret: Some(api_support::SECRET.into()),
            ..AuthConfig::default()
        }),
        shutdown_grace: Duration::from_millis(500),
        webhooks: WebhooksConfig {
            url: Some(url.to_owned()),
            secret: Some(SECRET.to_owned()),
            offline_grace: grace,
            vacated_grace: grace,
            timeout: Duration::from_secs(2),
            retry_min: Duration::from_millis(50),
            retry_max: Duration::from_millis(200),
            claim_idle: Duration::from_secs(4),
            ..WebhooksConfig::default()
        },
        ..HubConfig::default()
    };
    config.default_namespace.anonymous = Some(true);
    config.admin.open = Some(true);
    config
}

async fn user(hub: &TestHub, name: &str) -> TestClient {
    let mut client = TestClient::open(&hub.url(), |r| r).await.unwrap();
    client.connect(Some(&token(name))).await;
    client
}

async fn close(mut client: TestClient) {
    let _ = client.ws.close(CloseCode::NORMAL, "bye").await;
    let _ = client.closed().await;
}

/// The value of a metric sample line `name` on `/metrics`.
async fn metric(hub: &TestHub, name: &str) -> f64 {
    let (status, text) = hub.get("/metrics").await;
    assert_eq!(status, 200);
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
        .parse()
        .unwrap()
}

#[tokio::test]
async fn every_event_type_reaches_the_backend_with_its_fields() {
    let backend = Receiver::start().await;
    let hub = TestHub::start(config(&backend.url(), Duration::from_millis(300))).await;
    let mut ada = user(&hub, "ada").await;
    let client = ada.client_id.clone();
    ada.subscribe("room").await;
    ada.call(Command::Unsubscribe {
        channel: "room".into(),
    })
    .await;
    ada.subscribe("room").await;
    let mut anonymous = TestClient::open(&hub.url(), |r| r).await.unwrap();
    anonymous.connect(None).await;
    let anonymous_client = anonymous.client_id.clone();
    close(anonymous).await;
    close(ada).await;
    backend
        .wait_until(WAIT, |e| count(e, "user_offline", "user", "ada") == 1)
        .await;

    let events = unique(&backend.events());
    let ada_events: Vec<&str> = events
        .iter()
        .filter(|e| e["client"] != anonymous_client.as_str())
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        ada_events,
        [
            "connected",
            "user_online",
            "subscribed",
            "channel_occupied",
            "unsubscribed",
            // Resubscribed within the grace: no channel_vacated/occupied pair.
            "subscribed",
            "disconnected",
            "channel_vacated",
            "user_offline",
        ],
        "{events:#?}"
    );
    let of = |kind: &str| {
        events
            .iter()
            .find(|e| e["type"] == kind && e["client"] != anonymous_client.as_str())
            .unwrap()
    };
    let connected = of("connected");
    assert_eq!(
        (connected["client"].as_str(), connected["user"].as_str()),
        (Some(&*client), Some("ada"))
    );
    assert_eq!(of("subscribed")["channel"], "room");
    assert_eq!(of("disconnected")["code"], 1000);
    assert_eq!(of("channel_vacated")["channel"], "room");
    assert!(of("channel_vacated").get("client").is_none());
    let node = connected["node"].as_str().unwrap();
    assert_eq!(node.len(), 6, "the node id: {node}");
    assert!(
        events
            .iter()
            .all(|e| e["node"] == node && e["time"].as_u64().is_some())
    );
    // The anonymous client: connected and disconnected, no user, no presence.
    let anon: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["client"] == anonymous_client.as_str())
        .collect();
    assert_eq!(anon.len(), 2);
    assert!(anon.iter().all(|e| e.get("user").is_none()));
    let (ids, _) = deliveries(&backend.events());
    assert_eq!(ids.len(), events.len(), "ids are unique");
    assert_eq!(backend.forged(), 0, "every request the hub sent verifies");
    assert_eq!(
        metric(
            &hub,
            "duplex_webhook_events_delivered_total{type=\"user_offline\"}"
        )
        .await,
        1.0
    );
    hub.stop().await;
}

#[tokio::test]
async fn a_forged_tampered_or_replayed_request_is_refused_by_the_backend_check() {
    let backend = Receiver::start().await;
    let hub = TestHub::start(config(&backend.url(), Duration::ZERO)).await;
    close(user(&hub, "ada").await).await;
    backend
        .wait_until(WAIT, |e| count(e, "user_offline", "user", "ada") == 1)
        .await;
    let (signature, body) = backend.raw().remove(0);
    let now = unix_now();
    let check = |secret: &str, header: &str, body: &[u8]| {
        webhook_support::check(secret.as_bytes(), header, body, now)
    };
    assert!(
        check(SECRET, &signature, &body),
        "the hub's own request verifies"
    );
    let mut tampered = body.to_vec();
    tampered.extend_from_slice(b" ");
    assert!(!check(SECRET, &signature, &tampered), "a changed body");
    assert!(!check(
        "another secret of enough length!",
        &signature,
        &body
    ));
    // A replay: the same request signed long ago.
    let old = now - 3600;
    let replayed = duplex_hub_proto::signature::signature_header(SECRET.as_bytes(), old, &body);
    assert!(!check(SECRET, &replayed, &body), "outside the tolerance");
    // The hub's core check agrees.
    assert!(
        duplex_hub_proto::signature::verify(SECRET.as_bytes(), &signature, &body, now, 300).is_ok()
    );

    // A forgery over HTTP is refused (401) and records nothing.
    let before = backend.events().len();
    let forged_body =
        br#"{"events":[{"id":"x","type":"user_offline","time":1,"node":"n","user":"bob"}]}"#;
    let forged_sig =
        duplex_hub_proto::signature::signature_header(b"a guessed secret", now, forged_body);
    let status = post_raw(&backend, &forged_sig, forged_body).await;
    assert_eq!(status, 401);
    assert_eq!(backend.forged(), 1);
    assert_eq!(backend.events().len(), before);
    hub.stop().await;
}

/// POSTs `body` with `signature` to the backend; its status.
async fn post_raw(backend: &Receiver, signature: &str, body: &[u8]) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(backend.addr).await.unwrap();
    let head = format!(
        "POST /hooks HTTP/1.1\r\nHost: x\r\nConnection: close\r\nDuplex-Signature: {signature}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    tcp.write_all(body).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(WAIT, tcp.read_to_end(&mut response))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&response)[9..12].parse().unwrap()
}

#[tokio::test]
async fn failed_deliveries_are_retried_until_none_is_lost() {
    let backend = Receiver::start().await;
    backend.set_mode(Mode::Down);
    let hub = TestHub::start(config(&backend.url(), Duration::ZERO)).await;
    let mut clients = Vec::new();
    for _ in 0..10 {
        let mut client = TestClient::open(&hub.url(), |r| r).await.unwrap();
        client.connect(None).await;
        clients.push(client.client_id.clone());
        close(client).await;
    }
    // Down: requests fail and are retried.
    let deadline = tokio::time::Instant::now() + WAIT;
    while backend.requests() < 3 {
        assert!(tokio::time::Instant::now() < deadline, "no retries");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(backend.events().is_empty());
    // Then it processes requests but fails to answer: duplicates follow.
    backend.set_mode(Mode::RecordAndFail);
    backend.wait_until(WAIT, |e| !e.is_empty()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    backend.set_mode(Mode::Accept);
    backend.wait_until(WAIT, |e| unique(e).len() == 20).await;
    // Settled: nothing more arrives.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let all = backend.events();
    let (ids, same) = deliveries(&all);
    let sent = 2 * clients.len();
    let received = ids.len();
    let duplicates = all.len() - ids.len();
    let lost = clients
        .iter()
        .flat_map(|c| ["connected", "disconnected"].map(|t| (c, t)))
        .filter(|(c, t)| count(&all, t, "client", c) == 0)
        .count();
    println!("retries: sent {sent}, received {received}, lost {lost}, duplicates {duplicates}");
    assert_eq!((received, lost), (sent, 0));
    assert!(duplicates > 0, "RecordAndFail produces repeats");
    assert!(same, "a repeated id is the same event");
    assert!(
        metric(
            &hub,
            "duplex_webhook_events_retried_total{type=\"connected\"}"
        )
        .await
            > 0.0
    );
    assert!(metric(&hub, "duplex_webhook_requests_total{outcome=\"failed\"}").await >= 3.0);
    assert_eq!(metric(&hub, "duplex_webhook_queue_depth").await, 0.0);
    hub.stop().await;
}

#[tokio::test]
async fn a_backend_that_is_down_keeps_the_queue_bounded_and_drops_are_counted() {
    let backend = Receiver::start().await;
    backend.set_mode(Mode::Down);
    let mut config = config(&backend.url(), Duration::ZERO);
    config.webhooks.max_queue = 8;
    config.webhooks.events = vec!["connected".into()];
    let hub = TestHub::start(config).await;
    let mut clients = Vec::new();
    for _ in 0..20 {
        let mut client = TestClient::open(&hub.url(), |r| r).await.unwrap();
        client.connect(None).await;
        clients.push(client);
    }
    assert_eq!(metric(&hub, "duplex_webhook_queue_depth").await, 8.0);
    assert_eq!(
        metric(
            &hub,
            "duplex_webhook_events_emitted_total{type=\"connected\"}"
        )
        .await,
        20.0
    );
    assert_eq!(
        metric(
            &hub,
            "duplex_webhook_events_dropped_total{type=\"connected\"}"
        )
        .await,
        12.0
    );
    // The filter: no other type is even counted.
    assert_eq!(
        metric(
            &hub,
            "duplex_webhook_events_emitted_total{type=\"disconnected\"}"
        )
        .await,
        0.0
    );
    backend.set_mode(Mode::Accept);
    backend.wait_until(WAIT, |e| unique(e).len() == 8).await;
    // The first eight, in order.
    let got: Vec<String> = unique(&backend.events())
        .iter()
        .map(|e| e["client"].as_str().unwrap().to_owned())
        .collect();
    let first: Vec<String> = clients
        .iter()
        .take(8)
        .map(|c| c.client_id.clone())
        .collect();
    assert_eq!(got, first);
    hub.stop().await;
}

#[tokio::test]
async fn a_page_reload_within_the_grace_does_not_flap() {
    let backend = Receiver::start().await;
    let hub = TestHub::start(config(&backend.url(), Duration::from_millis(1500))).await;
    let mut ada = user(&hub, "ada").await;
    ada.subscribe("room").await;
    close(ada).await;
    // The reload: a new connection at once, the same channel.
    let mut ada = user(&hub, "ada").await;
    ada.subscribe("room").await;
    // Past the grace: still online, still occupied, nothing went out.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let events = unique(&backend.events());
    assert_eq!(
        count(&events, "user_online", "user", "ada"),
        1,
        "{events:#?}"
    );
    assert_eq!(
        count(&events, "user_offline", "user", "ada"),
        0,
        "{events:#?}"
    );
    assert_eq!(count(&events, "channel_occupied", "channel", "room"), 1);
    assert_eq!(count(&events, "channel_vacated", "channel", "room"), 0);
    assert_eq!(count(&events, "connected", "user", "ada"), 2);
    assert_eq!(count(&events, "disconnected", "user", "ada"), 1);
    // Leaving for good: offline once, after the grace.
    close(ada).await;
    backend
        .wait_until(WAIT, |e| count(e, "user_offline", "user", "ada") == 1)
        .await;
    hub.stop().await;
}

#[tokio::test]
async fn the_per_user_limit_refuses_the_connection_beyond_it_with_4029() {
    let mut config = config("http://127.0.0.1:9/unused", Duration::ZERO);
    config.webhooks = WebhooksConfig::default();
    config.limits.max_connections_per_user = 2;
    let hub = TestHub::start(config).await;
    let first = user(&hub, "ada").await;
    let _second = user(&hub, "ada").await;
    let mut third = TestClient::open(&hub.url(), |r| r).await.unwrap();
    third
        .send(Command::Connect {
            token: Some(token("ada")),
            name: None,
        })
        .await;
    let closed = third.closed().await;
    assert_eq!(u16::from(closed.code), 4029, "{closed:?}");
    assert!(closed.reason.contains("too many connections"), "{closed:?}");
    // Others are not limited by Ada's; anonymous clients are not counted.
    let _bob = user(&hub, "bob").await;
    for _ in 0..3 {
        let mut anonymous = TestClient::open(&hub.url(), |r| r).await.unwrap();
        anonymous.connect(None).await;
    }
    // One closes: room again (once the hub has seen it end).
    close(first).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let mut again = TestClient::open(&hub.url(), |r| r).await.unwrap();
        let reply = again
            .call(Command::Connect {
                token: Some(token("ada")),
                name: None,
            })
            .await;
        if matches!(reply, duplex_hub_proto::ServerMessage::Connected { .. }) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no room after a close"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    hub.stop().await;
}
