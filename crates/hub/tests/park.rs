//! Parked sessions (`[heartbeat] park_after`): a quiet connection gives back
//! its task, and whatever has something for it brings it back: its client's
//! commands, a message published to its channel, its connect timer, the
//! shutdown. The `duplex_connections_parked` gauge shows which are parked.

mod common;

use std::time::Duration;

use common::{TestClient, TestHub, WAIT};
use duplex::{CloseCode, Config};
use duplex_hub::HubConfig;
use duplex_hub_proto::ServerMessage;
use serde_json::json;

fn config() -> HubConfig {
    let mut config = HubConfig::default();
    config.heartbeat.park_after = Duration::from_millis(200);
    config
}

fn parked(hub: &TestHub) -> i64 {
    gauge(hub, "duplex_connections_parked")
}

/// The value of the hub's gauge `name`.
fn gauge(hub: &TestHub, name: &str) -> i64 {
    let text = hub.hub.metrics().render();
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .expect("the gauge is rendered")
        .parse()
        .unwrap()
}

/// Waits until `n` connections are parked.
async fn until_parked(hub: &TestHub, n: i64) {
    let start = tokio::time::Instant::now();
    while parked(hub) != n {
        assert!(start.elapsed() < WAIT, "{} parked, not {n}", parked(hub));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn parked_sessions_wake_for_commands_and_for_their_channels_messages() {
    let hub = TestHub::start(config()).await;
    let mut reader = hub.client().await;
    reader.subscribe("chat:lobby").await;
    let mut publisher = hub.client().await;
    until_parked(&hub, 2).await;
    for i in 0..3 {
        // The publisher's command wakes it; the message wakes the reader.
        let reply = publisher.publish("chat:lobby", json!({ "n": i })).await;
        assert!(
            matches!(reply, ServerMessage::Published { .. }),
            "{reply:?}"
        );
        let message = reader
            .wait_for(|m| matches!(m, ServerMessage::Message(_)))
            .await;
        let ServerMessage::Message(publication) = &message else {
            unreachable!()
        };
        let data = publication.data.as_json().expect("json").to_value();
        assert_eq!(data.unwrap(), json!({ "n": i }));
        // Both quiet again: both parked again.
        until_parked(&hub, 2).await;
    }
}

#[tokio::test]
async fn the_connect_timer_ends_a_parked_session_that_never_connects() {
    let mut config = config();
    config.limits.connect_timeout = Duration::from_secs(1);
    let hub = TestHub::start(config).await;
    let mut client = TestClient::open(&hub.url(), |r| r).await.expect("open");
    until_parked(&hub, 1).await;
    let info = client.closed().await;
    assert_eq!(info.code, CloseCode::from(4001));
    until_parked(&hub, 0).await;
}

#[tokio::test]
async fn shutdown_closes_parked_sessions_with_1001() {
    let hub = TestHub::start(config()).await;
    let mut clients = Vec::new();
    for _ in 0..5 {
        let mut client = hub.client().await;
        client.subscribe("chat:lobby").await;
        clients.push(client);
    }
    until_parked(&hub, 5).await;
    let stopping = tokio::spawn(hub.stop());
    for client in &mut clients {
        assert_eq!(client.closed().await.code, CloseCode::GOING_AWAY);
    }
    assert_eq!(
        stopping.await.unwrap(),
        0,
        "none dropped at the grace's end"
    );
}

#[tokio::test]
async fn sessions_do_not_park_when_parking_is_off() {
    let mut config = config();
    config.heartbeat.park_after = Duration::ZERO;
    let hub = TestHub::start(config).await;
    let mut client = TestClient::open_with(&hub.url(), |r| r, &Config::client())
        .await
        .expect("open");
    client.connect(None).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(parked(&hub), 0);
}

#[test]
fn a_parked_session_whose_runtime_shuts_down_leaves_the_hub() {
    let runtime = || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap()
    };
    let (servers, clients) = (runtime(), runtime());
    let hub = servers.block_on(TestHub::start(config()));
    let client = clients.block_on(async {
        let mut client = hub.client().await;
        client.subscribe("chat:lobby").await;
        until_parked(&hub, 1).await;
        client
    });
    assert_eq!(gauge(&hub, "duplex_connections"), 1);
    assert_eq!(gauge(&hub, "duplex_subscriptions"), 1);
    // The hub's tasks and parked sessions go with their runtime; the hub
    // itself (held here) stays, and counts the session gone.
    drop(servers);
    assert_eq!(gauge(&hub, "duplex_connections_parked"), 0);
    assert_eq!(gauge(&hub, "duplex_connections"), 0);
    assert_eq!(gauge(&hub, "duplex_subscriptions"), 0);
    drop(client);
}
