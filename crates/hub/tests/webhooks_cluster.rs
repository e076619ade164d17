//! Lifecycle events and the per-user limit across a cluster on a real
//! Redis (started by the test on a free loopback port), with a real HTTP
//! backend (`webhook_support`) that checks every signature:
//!
//! - three nodes as processes, one killed (SIGKILL) mid-stream with clients
//!   connected and others connecting and leaving on the survivors: the
//!   survivors declare its connections disconnected and its users offline
//!   within the documented bound, a user still connected elsewhere is not
//!   declared offline, and over the whole run no event is lost
//!   (sent/received/lost/duplicates are printed);
//! - the per-user limit counted over two nodes;
//! - a page reload that lands on another node does not flap.
//!
//! Needs Debian's `redis-server` (`cargo xtask setup redis`); a missing one
//! fails the test with that hint.

mod api_support;
mod cluster_support;
mod common;
mod webhook_support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use api_support::token;
use cluster_support::{NODE_REDIS_ENV, Node, NodeProcess, Redis, fast_options};
use common::TestClient;
use duplex::CloseCode;
use duplex_hub::config::WebhooksConfig;
use duplex_hub_proto::{Command, ServerMessage};
use serde_json::Value;
use webhook_support::{Receiver, SECRET, count, deliveries, unique};

/// Not a test on its own: the body of [`NodeProcess`] children.
#[test]
fn node_process() {
    if let Ok(url) = std::env::var(NODE_REDIS_ENV) {
        cluster_support::run_node_process(&url);
    }
}

/// The grace before `user_offline` / `channel_vacated` in these tests.
const GRACE: Duration = Duration::from_millis(500);

/// The nodes' configuration as TOML (for node processes).
fn toml(url: &str) -> String {
    format!(
        r#"
shutdown_grace = 0.5
[admin]
open = true
[auth]
hs256_secret = "{auth}"
[default_namespace]
anonymous = true
[webhooks]
url = "{url}"
secret = "{SECRET}"
offline_grace = {grace}
vacated_grace = {grace}
timeout = 1
retry_min = 0.05
retry_max = 0.3
claim_idle = 2
"#,
        auth = api_support::SECRET,
        grace = GRACE.as_secs_f64(),
    )
}

async fn user_at(url: &str, name: &str) -> TestClient {
    let mut client = TestClient::open(url, |r| r).await.unwrap();
    client.connect(Some(&token(name))).await;
    client
}

async fn close(mut client: TestClient) {
    let _ = client.ws.close(CloseCode::NORMAL, "bye").await;
    let _ = client.closed().await;
}

/// Whether `events` hold a `disconnected` for every client of `clients`.
fn all_disconnected(events: &[Value], clients: &[String]) -> bool {
    clients
        .iter()
        .all(|c| count(events, "disconnected", "client", c) > 0)
}

#[tokio::test]
async fn a_dead_node_s_connections_are_declared_by_the_survivors_and_no_event_is_lost() {
    let redis = Redis::start();
    let backend = Receiver::start().await;
    // A backend that takes a while: deliveries are under way at the kill.
    backend.set_delay(Duration::from_millis(20));
    let config = toml(&backend.url());
    let mut a = NodeProcess::spawn_with(&redis.url(), &config);
    let b = NodeProcess::spawn_with(&redis.url(), &config);
    let c = NodeProcess::spawn_with(&redis.url(), &config);

    // On A: ten users, each with one connection, in room-a; and "shared",
    // also connected on B.
    let mut on_a = Vec::new();
    let mut a_clients = Vec::new();
    for i in 0..10 {
        let mut client = user_at(&a.url(), &format!("a{i}")).await;
        client.subscribe("room-a").await;
        a_clients.push(client.client_id.clone());
        on_a.push(client);
    }
    let shared_a = user_at(&a.url(), "shared").await;
    a_clients.push(shared_a.client_id.clone());
    on_a.push(shared_a);
    let shared_b = user_at(&b.url(), "shared").await;
    let mut everyone: Vec<String> = a_clients.clone();
    everyone.push(shared_b.client_id.clone());

    // Mid-stream: clients come and go on B and C while A dies.
    let churn = {
        let urls = [b.url(), c.url()];
        tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..40 {
                let url = &urls[i % 2];
                let mut client = user_at(url, &format!("churn{}", i % 7)).await;
                client.subscribe(&format!("churn-room{}", i % 3)).await;
                ids.push(client.client_id.clone());
                close(client).await;
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            ids
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Slow answers around the kill: every node, A too, is in the middle of
    // a request, holding events it has not confirmed.
    backend.set_delay(Duration::from_millis(700));
    tokio::time::sleep(Duration::from_millis(300)).await;
    a.kill();
    let killed = Instant::now();
    tokio::time::sleep(Duration::from_millis(100)).await;
    backend.set_delay(Duration::from_millis(20));
    // The sockets to A are dead; nothing more goes through them.
    drop(on_a);

    // The survivors declare A's connections, and its users offline, within
    // node_expiry + heartbeat (+ the grace for user_offline) + delivery.
    let bound = Duration::from_secs(1) + Duration::from_millis(250) + GRACE;
    backend
        .wait_until(Duration::from_secs(15), |e| {
            all_disconnected(e, &a_clients)
                && (0..10).all(|i| count(e, "user_offline", "user", &format!("a{i}")) > 0)
        })
        .await;
    let declared_in = killed.elapsed();
    let events = unique(&backend.events());
    for client in &a_clients {
        let declared = events
            .iter()
            .find(|e| e["type"] == "disconnected" && e["client"] == client.as_str())
            .unwrap();
        assert_eq!(
            (declared["reason"].as_str(), declared["code"].as_u64()),
            (Some("node_died"), Some(1006)),
            "{declared}"
        );
        let connected = events
            .iter()
            .find(|e| e["type"] == "connected" && e["client"] == client.as_str())
            .unwrap();
        assert_ne!(
            declared["node"], connected["node"],
            "a survivor declares it"
        );
    }
    assert_eq!(
        count(&events, "user_offline", "user", "shared"),
        0,
        "shared still has a connection on B"
    );
    assert_eq!(count(&events, "channel_vacated", "channel", "room-a"), 1);

    // The rest leave; every event of the run arrives.
    let churned = churn.await.unwrap();
    everyone.extend(churned.iter().cloned());
    close(shared_b).await;
    backend
        .wait_until(Duration::from_secs(20), |e| {
            all_disconnected(e, &everyone)
                && count(e, "user_offline", "user", "shared") == 1
                && (0..7).all(|i| {
                    let name = format!("churn{i}");
                    count(e, "user_offline", "user", &name)
                        == count(e, "user_online", "user", &name)
                })
        })
        .await;
    // Anything late (duplicates of events taken over from A) arrives too.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let all = backend.events();
    let (ids, same) = deliveries(&all);
    let events = unique(&all);
    let mut taken_over = 0.0;
    for survivor in [&b, &c] {
        let (status, text) = common::http_get(survivor.addr, "/metrics").await;
        assert_eq!(status, 200);
        taken_over += text
            .lines()
            .find_map(|l| l.strip_prefix("duplex_webhook_events_taken_over_total "))
            .unwrap()
            .parse::<f64>()
            .unwrap();
    }

    // What was sent: connected + disconnected per client, one user_online
    // and one user_offline per stable user, occupied + vacated per room.
    let mut expected: BTreeSet<(String, String)> = BTreeSet::new();
    for client in &everyone {
        expected.insert(("connected".into(), client.clone()));
        expected.insert(("disconnected".into(), client.clone()));
    }
    let stable: Vec<String> = (0..10)
        .map(|i| format!("a{i}"))
        .chain(["shared".to_owned()])
        .collect();
    for user in &stable {
        expected.insert(("user_online".into(), user.clone()));
        expected.insert(("user_offline".into(), user.clone()));
    }
    expected.insert(("channel_occupied".into(), "room-a".into()));
    expected.insert(("channel_vacated".into(), "room-a".into()));
    let key = |e: &Value| -> (String, String) {
        let kind = e["type"].as_str().unwrap_or("").to_owned();
        let about = ["client", "user", "channel"]
            .iter()
            .find_map(|f| {
                let relevant = match kind.as_str() {
                    "connected" | "disconnected" => *f == "client",
                    "user_online" | "user_offline" => *f == "user",
                    _ => *f == "channel",
                };
                relevant
                    .then(|| e[*f].as_str().map(str::to_owned))
                    .flatten()
            })
            .unwrap_or_default();
        (kind, about)
    };
    let received: BTreeSet<(String, String)> = events.iter().map(key).collect();
    let lost: Vec<&(String, String)> = expected.difference(&received).collect();
    let duplicates = all.len() - ids.len();
    println!(
        "node death: sent {} (tracked) / {} events in all, received {} unique, lost {}, \
         duplicates {duplicates} (same id), A's {} connections declared in {declared_in:?} \
         (bound {bound:?} + delivery), {taken_over} events A had taken taken over",
        expected.len(),
        events.len(),
        events.len(),
        lost.len(),
        a_clients.len(),
    );
    assert!(lost.is_empty(), "lost: {lost:?}");
    assert!(same, "a repeated id is the same event");
    assert!(
        taken_over > 0.0,
        "A held events at its death; the survivors took them over"
    );
    // No user flapped: one online and one offline per stable user.
    for user in &stable {
        assert_eq!(count(&events, "user_online", "user", user), 1, "{user}");
        assert_eq!(count(&events, "user_offline", "user", user), 1, "{user}");
    }
    assert!(
        declared_in < bound + Duration::from_secs(3),
        "declared after {declared_in:?}"
    );
    assert_eq!(backend.forged(), 0);
    drop((b, c));
}

/// A hub in this process on `redis` with the per-user limit `limit` and,
/// with `url`, webhooks.
async fn node(redis: &Redis, limit: u32, url: Option<&str>) -> Node {
    let mut config = api_support::api_config();
    config.limits.max_connections_per_user = limit;
    if let Some(url) = url {
        config.webhooks = WebhooksConfig {
            url: Some(url.to_owned()),
            secret: Some(SECRET.to_owned()),
            offline_grace: Duration::from_millis(1500),
            vacated_grace: Duration::from_millis(1500),
            retry_min: Duration::from_millis(50),
            retry_max: Duration::from_millis(300),
            ..WebhooksConfig::default()
        };
    }
    Node::start_with(config, &redis.url(), fast_options()).await
}

/// Sends `connect` for `name` at `url`: the reply, or the close code.
async fn try_connect(url: &str, name: &str) -> Result<TestClient, u16> {
    let mut client = TestClient::open(url, |r| r).await.unwrap();
    client
        .send(Command::Connect {
            token: Some(token(name)),
            name: None,
        })
        .await;
    let ws = &mut client.ws;
    match tokio::time::timeout(common::WAIT, futures_util::StreamExt::next(ws)).await {
        Ok(Some(Ok(_))) => Ok(client),
        _ => Err(client
            .ws
            .close_info()
            .map_or(1006, |info| u16::from(info.code))),
    }
}

#[tokio::test]
async fn the_per_user_limit_counts_connections_on_every_node() {
    let redis = Redis::start();
    let a = node(&redis, 2, None).await;
    let b = node(&redis, 2, None).await;
    let first = user_at(&a.url(), "ada").await;
    let _second = user_at(&b.url(), "ada").await;
    assert_eq!(try_connect(&a.url(), "ada").await.err(), Some(4029));
    assert_eq!(try_connect(&b.url(), "ada").await.err(), Some(4029));
    assert!(
        try_connect(&b.url(), "bob").await.is_ok(),
        "bob is not limited by ada"
    );
    close(first).await;
    let deadline = Instant::now() + common::WAIT;
    while try_connect(&b.url(), "ada").await.is_err() {
        assert!(Instant::now() < deadline, "room again after a close");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_reload_onto_another_node_within_the_grace_does_not_flap() {
    let redis = Redis::start();
    let backend = Receiver::start().await;
    let a = node(&redis, 0, Some(&backend.url())).await;
    let b = node(&redis, 0, Some(&backend.url())).await;
    let mut ada = user_at(&a.url(), "ada").await;
    ada.subscribe("room").await;
    close(ada).await;
    let mut ada = user_at(&b.url(), "ada").await;
    assert!(matches!(
        ada.subscribe("room").await,
        ServerMessage::Subscribed { .. }
    ));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let events = unique(&backend.events());
    assert_eq!(count(&events, "connected", "user", "ada"), 2, "{events:#?}");
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
    close(ada).await;
    backend
        .wait_until(common::WAIT, |e| {
            count(e, "user_offline", "user", "ada") == 1
                && count(e, "channel_vacated", "channel", "room") == 1
        })
        .await;
}
