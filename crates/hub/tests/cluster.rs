//! Several hub nodes as one cluster through a real Redis (started by the
//! test on a free loopback port, without persistence): chat, presence and
//! join/leave across nodes, a node killed with SIGKILL, Redis restarted in
//! the middle of traffic, a node cut off from Redis, Redis over TLS
//! (`rediss://`, with a CA made by the test, and without it), and HAProxy
//! in front (round robin, `balance source`, and the cookie stickiness of
//! docs/deploy.md).
//!
//! Needs Debian's `redis-server` and `haproxy` (`cargo xtask setup redis
//! haproxy`); a missing one fails the test with that hint.

mod cluster_support;
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cluster_support::{
    Cut, Haproxy, LogCapture, NODE_REDIS_ENV, Node, NodeProcess, Pki, Recorded, Redis, Stream,
    client_at, deploy_doc_haproxy, fast_options,
};
use common::{TestClient, json, offset_of};
use duplex_hub::HubConfig;
use duplex_hub_proto::{Command, ErrorCode, ServerMessage, Since};
use serde_json::json;
use tokio::sync::Mutex;

/// Not a test on its own: the body of [`NodeProcess`] children (the test
/// binary runs itself with this test selected and the Redis URL in the
/// environment). Without that variable it does nothing.
#[test]
fn node_process() {
    if let Ok(url) = std::env::var(NODE_REDIS_ENV) {
        cluster_support::run_node_process(&url);
    }
}

fn subscribed_epoch(reply: &ServerMessage) -> String {
    match reply {
        ServerMessage::Subscribed { epoch, .. } => epoch.clone(),
        other => panic!("expected subscribed, got {other:?}"),
    }
}

fn published_offset(reply: &ServerMessage) -> u64 {
    match reply {
        ServerMessage::Published { offset, .. } => *offset,
        other => panic!("expected published, got {other:?}"),
    }
}

fn is_message(message: &ServerMessage) -> bool {
    matches!(message, ServerMessage::Message(_))
}

async fn presence_clients(client: &mut TestClient, channel: &str) -> Vec<String> {
    let reply = client
        .call(Command::Presence {
            channel: channel.to_owned(),
        })
        .await;
    match reply {
        ServerMessage::Presence { clients, .. } => {
            let mut ids: Vec<String> = clients.into_iter().map(|c| c.client).collect();
            ids.sort();
            ids
        }
        other => panic!("expected presence, got {other:?}"),
    }
}

/// Polls `path` on `addr` until it answers `status`, at most `within`.
async fn wait_status(
    addr: std::net::SocketAddr,
    path: &str,
    status: u16,
    within: Duration,
) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if common::http_get(addr, path).await.0 == status {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    false
}

/// The next push within `within`, if any.
async fn next_within(client: &mut TestClient, within: Duration) -> Option<ServerMessage> {
    tokio::time::timeout(within, client.recv()).await.ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_on_two_nodes_chat_as_on_one() {
    let redis = Redis::start();
    let a = Node::start(&redis.url()).await;
    let b = Node::start(&redis.url()).await;
    let channel = "chat:lobby";
    let mut alice = a.client().await;
    let mut bob = b.client().await;
    let epoch = subscribed_epoch(&alice.subscribe(channel).await);
    assert_eq!(
        subscribed_epoch(&bob.subscribe(channel).await),
        epoch,
        "one epoch in Redis"
    );

    // Bob's join reaches Alice on the other node; both see both.
    let join = alice
        .wait_for(|m| matches!(m, ServerMessage::Join { .. }))
        .await;
    assert!(
        matches!(&join, ServerMessage::Join { client, .. } if *client == bob.client_id),
        "{join:?}"
    );
    let mut both = vec![alice.client_id.clone(), bob.client_id.clone()];
    both.sort();
    assert_eq!(presence_clients(&mut alice, channel).await, both);
    assert_eq!(presence_clients(&mut bob, channel).await, both);

    // A publish on A reaches B's subscriber once, in order (and A's too).
    for i in 1..=50u64 {
        let reply = alice.publish(channel, json!({ "n": i })).await;
        assert_eq!(published_offset(&reply), i);
    }
    for client in [&mut bob, &mut alice] {
        for i in 1..=50u64 {
            let message = client.wait_for(is_message).await;
            assert_eq!(offset_of(&message), i);
        }
    }
    let reply = bob.publish(channel, json!({ "from": "bob" })).await;
    assert_eq!(published_offset(&reply), 51);
    assert_eq!(offset_of(&alice.wait_for(is_message).await), 51);
    assert_eq!(offset_of(&bob.wait_for(is_message).await), 51);
    // Nothing twice.
    assert!(
        next_within(&mut alice, Duration::from_millis(200))
            .await
            .is_none()
    );
    assert!(
        next_within(&mut bob, Duration::from_millis(200))
            .await
            .is_none()
    );

    // Signals cross nodes, not back to the sender, not into history.
    let reply = bob
        .call(Command::Signal {
            channel: channel.to_owned(),
            data: json(json!({ "typing": true })),
        })
        .await;
    assert!(matches!(reply, ServerMessage::Ok { .. }), "{reply:?}");
    let signal = alice
        .wait_for(|m| matches!(m, ServerMessage::Signal { .. }))
        .await;
    assert!(
        matches!(&signal, ServerMessage::Signal { from, .. } if from.client == bob.client_id),
        "{signal:?}"
    );
    assert!(!bob.pending_has(|m| matches!(m, ServerMessage::Signal { .. })));

    // An idempotency key holds across nodes.
    let first = alice
        .call(Command::Publish {
            channel: channel.to_owned(),
            data: json(json!("once")),
            key: Some("k-1".into()),
        })
        .await;
    let again = bob
        .call(Command::Publish {
            channel: channel.to_owned(),
            data: json(json!("once")),
            key: Some("k-1".into()),
        })
        .await;
    assert!(
        matches!(
            first,
            ServerMessage::Published {
                offset: 52,
                duplicate: false,
                ..
            }
        ),
        "{first:?}"
    );
    assert!(
        matches!(
            again,
            ServerMessage::Published {
                offset: 52,
                duplicate: true,
                ..
            }
        ),
        "{again:?}"
    );
    assert_eq!(offset_of(&alice.wait_for(is_message).await), 52);

    // A client that was on A recovers on B from A's position.
    let mut carol = b.client().await;
    let reply = carol.subscribe_since(channel, &epoch, 40).await;
    assert!(
        matches!(
            &reply,
            ServerMessage::Subscribed {
                offset: 52,
                recovered: true,
                gap: false,
                ..
            }
        ),
        "{reply:?}"
    );
    for i in 41..=52u64 {
        assert_eq!(offset_of(&carol.wait_for(is_message).await), i);
    }

    // Interest: each node subscribes to a channel's topic only while it has
    // local subscribers, and to nothing nobody reads.
    let numsub = |redis: &Redis| -> i64 {
        let reply: Vec<redis::Value> = redis.query(
            redis::cmd("PUBSUB")
                .arg("NUMSUB")
                .arg("duplex:m:chat:lobby"),
        );
        match reply.get(1) {
            Some(redis::Value::Int(n)) => *n,
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(numsub(&redis), 2, "both nodes listen to chat:lobby");
    let reply = alice.publish("chat:nobody-reads", json!(1)).await;
    assert_eq!(published_offset(&reply), 1);
    let topics: Vec<String> = redis.query(redis::cmd("PUBSUB").arg("CHANNELS").arg("duplex:m:*"));
    assert_eq!(topics, vec!["duplex:m:chat:lobby".to_owned()], "{topics:?}");
    // Besides channels, every node always listens to the server API's
    // controls (crate::control).
    let topics: Vec<String> = redis.query(redis::cmd("PUBSUB").arg("CHANNELS").arg("*"));
    assert_eq!(topics.len(), 2, "{topics:?}");
    assert!(topics.contains(&"duplex:control".to_owned()), "{topics:?}");
    for client in [&mut bob, &mut carol] {
        let reply = client
            .call(Command::Unsubscribe {
                channel: channel.to_owned(),
            })
            .await;
        assert!(
            matches!(reply, ServerMessage::Unsubscribed { .. }),
            "{reply:?}"
        );
    }
    assert_eq!(numsub(&redis), 1, "B unsubscribed with its last subscriber");
    // Bob's leave reached Alice; presence is Alice alone.
    let leave = alice
        .wait_for(|m| matches!(m, ServerMessage::Leave { client, .. } if *client == bob.client_id))
        .await;
    assert!(matches!(leave, ServerMessage::Leave { .. }));
    assert_eq!(
        presence_clients(&mut alice, channel).await,
        vec![alice.client_id.clone()]
    );

    // The hub's own channels are per node: each dashboard shows its node.
    let stats_a = subscribed_epoch(
        &alice
            .call(Command::Subscribe {
                channel: "$sys:stats".into(),
                since: None,
                recent: 1,
                token: None,
            })
            .await,
    );
    let stats_b = subscribed_epoch(
        &bob.call(Command::Subscribe {
            channel: "$sys:stats".into(),
            since: None,
            recent: 1,
            token: None,
        })
        .await,
    );
    assert_ne!(stats_a, stats_b, "each node keeps its own $sys:stats");
    let stats = alice
        .wait_for(|m| matches!(m, ServerMessage::Message(p) if p.channel == "$sys:stats"))
        .await;
    assert!(matches!(stats, ServerMessage::Message(_)));
    let topics: Vec<String> = redis.query(redis::cmd("PUBSUB").arg("CHANNELS").arg("*"));
    assert!(!topics.iter().any(|t| t.contains("$sys")), "{topics:?}");

    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_nodes_clients_recover_on_another_and_leave_presence() {
    let redis = Redis::start();
    let mut a = NodeProcess::spawn(&redis.url());
    let b = Node::start(&redis.url()).await;
    let channel = "chat:room";
    let mut watcher = b.client().await;
    watcher.subscribe(channel).await;
    let mut victim = client_at(&a.url()).await;
    let epoch = subscribed_epoch(&victim.subscribe(channel).await);
    let victim_id = victim.client_id.clone();
    watcher
        .wait_for(|m| matches!(m, ServerMessage::Join { client, .. } if *client == victim_id))
        .await;
    let mut publisher = b.client().await;
    for i in 1..=10u64 {
        assert_eq!(
            published_offset(&publisher.publish(channel, json!(i)).await),
            i
        );
    }
    for i in 1..=10u64 {
        assert_eq!(offset_of(&victim.wait_for(is_message).await), i);
    }

    // Node A dies: no close frames, no goodbye to Redis.
    a.kill();
    let killed = Instant::now();
    drop(victim);
    for i in 11..=20u64 {
        assert_eq!(
            published_offset(&publisher.publish(channel, json!(i)).await),
            i
        );
    }

    // Its client comes back on B and recovers exactly what it missed.
    let mut back = b.client().await;
    let reply = back.subscribe_since(channel, &epoch, 10).await;
    assert!(
        matches!(
            &reply,
            ServerMessage::Subscribed {
                offset: 20,
                recovered: true,
                gap: false,
                ..
            }
        ),
        "{reply:?}"
    );
    for i in 11..=20u64 {
        assert_eq!(offset_of(&back.wait_for(is_message).await), i);
    }
    assert_eq!(
        published_offset(&publisher.publish(channel, json!(21)).await),
        21
    );
    assert_eq!(offset_of(&back.wait_for(is_message).await), 21);

    // A's client leaves B's presence within node_expiry + heartbeat.
    let options = fast_options();
    let bound = options.node_expiry + options.heartbeat;
    watcher
        .wait_for(|m| matches!(m, ServerMessage::Leave { client, .. } if *client == victim_id))
        .await;
    let took = killed.elapsed();
    assert!(
        took <= bound + Duration::from_secs(2),
        "the dead node's client left presence after {took:?} (bound {bound:?})"
    );
    let present = presence_clients(&mut watcher, channel).await;
    assert!(!present.contains(&victim_id), "{present:?}");
    assert!(present.contains(&back.client_id), "{present:?}");
    b.stop().await;
}

/// A subscriber read in the background into a [`Stream`] until it sees a
/// message whose data is `{"final":true}`.
fn follow(
    mut client: TestClient,
    channel: &'static str,
    stream: Stream,
) -> tokio::task::JoinHandle<Stream> {
    tokio::spawn(async move {
        let mut stream = stream;
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            let Some(message) = next_within(&mut client, Duration::from_secs(1)).await else {
                continue;
            };
            stream.push(channel, &message);
            if let ServerMessage::Message(publication) = &message
                && publication
                    .data
                    .as_json()
                    .is_some_and(|j| j.as_str() == r#"{"final":true}"#)
            {
                break;
            }
        }
        stream
    })
}

/// What the publisher saw: (offset, acknowledged at).
type Acks = Arc<Mutex<Vec<(u64, Instant)>>>;

/// Publishes every 4 ms until `stop`, retrying `unavailable` with the same
/// key; returns how many `unavailable` errors it got.
fn publish_until(
    mut client: TestClient,
    channel: &'static str,
    acks: Acks,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(TestClient, usize)> {
    tokio::spawn(async move {
        let mut unavailable = 0;
        let mut n = 0u64;
        while !stop.load(Ordering::SeqCst) && n < 5_000 {
            let reply = client
                .call(Command::Publish {
                    channel: channel.to_owned(),
                    data: json(json!({ "n": n })),
                    key: Some(format!("p-{n}")),
                })
                .await;
            match reply {
                ServerMessage::Published { offset, .. } => {
                    acks.lock().await.push((offset, Instant::now()));
                    n += 1;
                    tokio::time::sleep(Duration::from_millis(4)).await;
                }
                ServerMessage::Error {
                    code: ErrorCode::Unavailable,
                    ..
                } => {
                    unavailable += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                other => panic!("publish: {other:?}"),
            }
        }
        (client, unavailable)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_mid_traffic_streams_are_complete_or_marked() {
    let mut redis = Redis::start();
    let a = Node::start(&redis.url()).await;
    let b = Node::start(&redis.url()).await;
    let channel = "chat:busy";
    let mut followers = Vec::new();
    for node in [&a, &b] {
        let mut client = node.client().await;
        let stream = Stream::from_subscribed(&client.subscribe(channel).await);
        followers.push(follow(client, channel, stream));
    }
    let acks: Acks = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = publish_until(a.client().await, channel, acks.clone(), stop.clone());
    tokio::time::sleep(Duration::from_millis(600)).await;

    // Redis dies (data lost): both nodes turn not ready, keep their clients.
    redis.kill();
    for node in [&a, &b] {
        assert!(
            wait_status(node.addr, "/readyz", 503, Duration::from_secs(5)).await,
            "/readyz turns 503 without Redis"
        );
        assert_eq!(node.get("/healthz").await.0, 200, "still serving");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    redis.restart();
    let restarted = Instant::now();
    for node in [&a, &b] {
        assert!(
            wait_status(node.addr, "/readyz", 200, Duration::from_secs(10)).await,
            "/readyz back to 200 once Redis is back"
        );
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    stop.store(true, Ordering::SeqCst);
    let (mut publisher, unavailable) = publisher.await.expect("publisher");
    assert!(
        unavailable > 0,
        "publishes failed as unavailable while Redis was down"
    );
    let last = published_offset(&publisher.publish(channel, json!({ "final": true })).await);
    for follower in followers {
        let stream = follower.await.expect("follower");
        assert!(stream.violations.is_empty(), "{:?}", stream.violations);
        assert!(
            !stream.gaps.is_empty(),
            "Redis lost the channel's epoch: the subscriber was told"
        );
        let (epoch, at) = stream.position.clone().expect("a position");
        assert_eq!(at, last, "the stream reached the final message");
        // Everything acknowledged after the restart arrived, in order.
        let got = stream.offsets_in(&epoch);
        for (offset, acked) in acks.lock().await.iter() {
            if *acked > restarted {
                assert!(
                    got.contains(offset),
                    "offset {offset} of the new epoch missing"
                );
            }
        }
    }
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_from_redis_catches_up_from_history() {
    let redis = Redis::start();
    let cut = Cut::start(redis.addr()).await;
    let a = Node::start(&cut.redis_url()).await;
    let b = Node::start(&redis.url()).await;
    let channel = "chat:cut";
    let mut reader = a.client().await;
    let mut stream = Stream::from_subscribed(&reader.subscribe(channel).await);
    let mut writer = b.client().await;
    for i in 1..=10u64 {
        assert_eq!(
            published_offset(&writer.publish(channel, json!(i)).await),
            i
        );
    }
    for _ in 1..=10 {
        let message = reader.wait_for(is_message).await;
        stream.push(channel, &message);
    }

    // A loses Redis; B does not and keeps publishing.
    cut.cut();
    assert!(wait_status(a.addr, "/readyz", 503, Duration::from_secs(5)).await);
    assert_eq!(b.get("/readyz").await.0, 200);
    for i in 11..=30u64 {
        assert_eq!(
            published_offset(&writer.publish(channel, json!(i)).await),
            i
        );
    }
    // A's clients keep their connection and are told `unavailable`.
    let reply = reader.publish(channel, json!("from a")).await;
    assert!(
        matches!(
            reply,
            ServerMessage::Error {
                code: ErrorCode::Unavailable,
                ..
            }
        ),
        "{reply:?}"
    );
    let reply = reader.subscribe("chat:other").await;
    assert!(
        matches!(
            reply,
            ServerMessage::Error {
                code: ErrorCode::Unavailable,
                ..
            }
        ),
        "{reply:?}"
    );
    assert!(matches!(
        reader.call(Command::Ping).await,
        ServerMessage::Pong { .. }
    ));

    cut.restore();
    assert!(wait_status(a.addr, "/readyz", 200, Duration::from_secs(10)).await);
    for i in 31..=35u64 {
        assert_eq!(
            published_offset(&writer.publish(channel, json!(i)).await),
            i
        );
    }
    while stream.position.as_ref().is_none_or(|(_, at)| *at < 35) {
        let message = next_within(&mut reader, Duration::from_secs(5))
            .await
            .expect("the missed messages arrive");
        stream.push(channel, &message);
    }
    assert!(stream.violations.is_empty(), "{:?}", stream.violations);
    assert!(
        stream.gaps.is_empty(),
        "history covered the outage: {:?}",
        stream.gaps
    );
    let offsets: Vec<u64> = stream.messages.iter().map(|(_, o)| *o).collect();
    assert_eq!(offsets, (1..=35).collect::<Vec<_>>());
    a.stop().await;
    b.stop().await;
}

/// The HAProxy configuration of docs/deploy.md, for two nodes.
fn haproxy_config(balance: &str, a: std::net::SocketAddr, b: std::net::SocketAddr) -> String {
    format!(
        "global
    maxconn 4096

defaults
    mode http
    option http-server-close
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout tunnel 1h
    timeout client-fin 5s

frontend hub
    bind 127.0.0.1:{{port}}
    default_backend nodes

backend nodes
    {balance}
    option httpchk
    http-check send meth GET uri /readyz
    http-check expect status 200
    default-server check inter 500ms fall 2 rise 1
    server a {a}
    server b {b}
"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_in_front_of_two_nodes_with_and_without_stickiness() {
    let redis = Redis::start();
    let a = Node::start(&redis.url()).await;
    let b = Node::start(&redis.url()).await;
    let node_of = |client: &TestClient| client.client_id[..6].to_owned();
    let node_a = node_of(&a.client().await);
    let node_b = node_of(&b.client().await);
    for (balance, sticky) in [("balance roundrobin", false), ("balance source", true)] {
        let haproxy = Haproxy::start(&haproxy_config(balance, a.addr, b.addr));
        let channel = if sticky { "chat:sticky" } else { "chat:spread" };
        let mut clients = Vec::new();
        for _ in 0..6 {
            let mut client = client_at(&haproxy.url()).await;
            client.subscribe(channel).await;
            clients.push(client);
        }
        let nodes: std::collections::BTreeSet<String> = clients.iter().map(node_of).collect();
        if sticky {
            assert_eq!(nodes.len(), 1, "one source address, one node: {nodes:?}");
        } else {
            assert!(
                nodes.contains(&node_a) && nodes.contains(&node_b),
                "round robin spreads over both nodes: {nodes:?}"
            );
        }
        // Through the balancer, every client receives every message once.
        for i in 1..=5u64 {
            assert_eq!(
                published_offset(&clients[0].publish(channel, json!(i)).await),
                i
            );
        }
        for client in &mut clients {
            for i in 1..=5u64 {
                assert_eq!(offset_of(&client.wait_for(is_message).await), i);
            }
        }
        // A client reconnecting through the balancer (to whichever node)
        // recovers what it missed.
        let gone = clients.pop().expect("a client");
        let epoch = {
            let mut probe = client_at(&haproxy.url()).await;
            subscribed_epoch(&probe.subscribe(channel).await)
        };
        drop(gone);
        for i in 6..=8u64 {
            assert_eq!(
                published_offset(&clients[0].publish(channel, json!(i)).await),
                i
            );
        }
        let mut back = client_at(&haproxy.url()).await;
        let reply = back
            .call(Command::Subscribe {
                channel: channel.to_owned(),
                since: Some(Since { epoch, offset: 5 }),
                recent: 0,
                token: None,
            })
            .await;
        assert!(
            matches!(
                &reply,
                ServerMessage::Subscribed {
                    recovered: true,
                    gap: false,
                    offset: 8,
                    ..
                }
            ),
            "{reply:?}"
        );
        for i in 6..=8u64 {
            assert_eq!(offset_of(&back.wait_for(is_message).await), i);
        }
    }
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_in_redis_is_bounded_by_size_and_age_and_keys_leave_with_it() {
    use duplex_hub::HubConfig;
    use duplex_hub::config::NamespaceConfig;
    let redis = Redis::start();
    let mut config = HubConfig {
        shutdown_grace: Duration::from_millis(500),
        ..HubConfig::default()
    };
    config.namespaces.insert(
        "small".into(),
        NamespaceConfig {
            history_size: 3,
            history_ttl: Duration::from_millis(1500),
            ..NamespaceConfig::default()
        },
    );
    let a = Node::start_with(config.clone(), &redis.url(), fast_options()).await;
    let b = Node::start_with(config, &redis.url(), fast_options()).await;
    let channel = "small:c";
    let mut on_a = a.client().await;
    let mut on_b = b.client().await;
    let publish = |key: &str| Command::Publish {
        channel: channel.to_owned(),
        data: json(json!(key)),
        key: Some(key.to_owned()),
    };
    for i in 1..=5u64 {
        let reply = on_a.call(publish(&format!("k{i}"))).await;
        assert_eq!(published_offset(&reply), i);
    }
    let kept: i64 = redis.query(redis::cmd("LLEN").arg("duplex:{small:c}:hist"));
    assert_eq!(kept, 3, "history_size bounds the list");
    // k1 left the history with its message: a new publish; k5 is kept.
    let reply = on_b.call(publish("k1")).await;
    assert!(
        matches!(
            reply,
            ServerMessage::Published {
                offset: 6,
                duplicate: false,
                ..
            }
        ),
        "{reply:?}"
    );
    let reply = on_b.call(publish("k5")).await;
    assert!(
        matches!(
            reply,
            ServerMessage::Published {
                offset: 5,
                duplicate: true,
                ..
            }
        ),
        "{reply:?}"
    );
    let keys: i64 = redis.query(redis::cmd("HLEN").arg("duplex:{small:c}:keys"));
    assert_eq!(keys, 3, "keys of the kept entries only");
    let subscribe = |offset: u64, epoch: &str| Command::Subscribe {
        channel: channel.to_owned(),
        since: Some(Since {
            epoch: epoch.to_owned(),
            offset,
        }),
        recent: 0,
        token: None,
    };
    let epoch = subscribed_epoch(&on_a.subscribe(channel).await);
    let mut probe = b.client().await;
    let reply = probe.call(subscribe(2, &epoch)).await;
    assert!(
        matches!(
            reply,
            ServerMessage::Subscribed {
                recovered: false,
                gap: true,
                offset: 6,
                ..
            }
        ),
        "offset 3 is gone: {reply:?}"
    );
    let mut probe = b.client().await;
    let reply = probe.call(subscribe(3, &epoch)).await;
    assert!(
        matches!(
            reply,
            ServerMessage::Subscribed {
                recovered: true,
                offset: 6,
                ..
            }
        ),
        "{reply:?}"
    );
    for i in 4..=6u64 {
        assert_eq!(offset_of(&probe.wait_for(is_message).await), i);
    }
    // After history_ttl, nothing is kept but the epoch and offset stay.
    tokio::time::sleep(Duration::from_millis(1800)).await;
    let mut probe = b.client().await;
    let reply = probe.call(subscribe(6, &epoch)).await;
    assert!(
        matches!(&reply, ServerMessage::Subscribed { recovered: true, offset: 6, epoch: e, .. } if *e == epoch),
        "{reply:?}"
    );
    let mut probe = b.client().await;
    let reply = probe.call(subscribe(5, &epoch)).await;
    assert!(
        matches!(reply, ServerMessage::Subscribed { gap: true, .. }),
        "offset 6 expired: {reply:?}"
    );
    let reply = on_a.call(publish("k1")).await;
    assert_eq!(published_offset(&reply), 7, "expired keys are free again");
    a.stop().await;
    b.stop().await;
}

/// A node configuration for the TLS tests: `redis_ca` as given.
fn tls_config(redis_ca: Option<&std::path::Path>) -> HubConfig {
    HubConfig {
        shutdown_grace: Duration::from_millis(500),
        redis_ca: redis_ca.map(ToOwned::to_owned),
        ..HubConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_on_a_tls_redis_trusting_its_ca_chat_as_one() {
    let redis = Redis::start_tls();
    assert!(
        redis.url().starts_with("rediss://127.0.0.1:"),
        "{}",
        redis.url()
    );
    // That Redis speaks TLS only: a plain client gets no answer from it.
    let plain = redis::Client::open(redis.url().replacen("rediss://", "redis://", 1)).expect("url");
    let answer = plain
        .get_connection_with_timeout(Duration::from_secs(2))
        .and_then(|mut conn| {
            conn.set_read_timeout(Some(Duration::from_secs(2)))?;
            redis::cmd("PING").query::<String>(&mut conn)
        });
    assert!(answer.is_err(), "plain PING answered: {answer:?}");

    let config = tls_config(Some(redis.ca()));
    let a = Node::start_with(config.clone(), &redis.url(), fast_options()).await;
    let b = Node::start_with(config, &redis.url(), fast_options()).await;
    let channel = "chat:tls";
    let mut alice = a.client().await;
    let mut bob = b.client().await;
    assert_ne!(alice.client_id[..6], bob.client_id[..6], "two nodes");
    let epoch = subscribed_epoch(&alice.subscribe(channel).await);
    assert_eq!(subscribed_epoch(&bob.subscribe(channel).await), epoch);
    let join = alice
        .wait_for(|m| matches!(m, ServerMessage::Join { .. }))
        .await;
    assert!(
        matches!(&join, ServerMessage::Join { client, .. } if *client == bob.client_id),
        "{join:?}"
    );
    for i in 1..=20u64 {
        assert_eq!(published_offset(&alice.publish(channel, json!(i)).await), i);
    }
    for client in [&mut bob, &mut alice] {
        for i in 1..=20u64 {
            assert_eq!(offset_of(&client.wait_for(is_message).await), i);
        }
    }
    assert_eq!(
        published_offset(&bob.publish(channel, json!("from b")).await),
        21
    );
    for client in [&mut alice, &mut bob] {
        assert_eq!(offset_of(&client.wait_for(is_message).await), 21);
        let more = next_within(client, Duration::from_millis(200)).await;
        assert!(
            more.as_ref().is_none_or(|m| !is_message(m)),
            "twice: {more:?}"
        );
    }
    // What the nodes wrote is in that Redis.
    let kept: i64 = redis.query(redis::cmd("LLEN").arg("duplex:{chat:tls}:hist"));
    assert_eq!(kept, 21);
    let nodes: i64 = redis.query(redis::cmd("ZCARD").arg("duplex:nodes"));
    assert_eq!(nodes, 2, "both nodes registered");
    for node in [&a, &b] {
        assert_eq!(node.get("/readyz").await.0, 200);
    }
    a.stop().await;
    b.stop().await;
}

/// Current-thread runtime: the hub's tasks log on the test's thread, where
/// [`LogCapture`] listens.
#[tokio::test]
async fn a_node_that_cannot_verify_a_tls_redis_is_not_ready_and_says_why() {
    let logs = LogCapture::default();
    let _logging = tracing::subscriber::set_default(logs.clone());
    let redis = Redis::start_tls();
    let other = Pki::new("other");
    // Without redis_ca (the system's roots) and with another authority's CA:
    // the node serves, is not ready, and logs the certificate failure.
    for (case, ca) in [
        ("no redis_ca", None),
        ("another CA", Some(other.ca.as_path())),
    ] {
        let logged = logs.lines().len();
        let node = Node::launch(tls_config(ca), &redis.url(), fast_options())
            .await
            .expect("the node starts");
        assert!(
            !node.hub.wait_ready(Duration::from_secs(2)).await,
            "{case}: ready on an unverified Redis"
        );
        assert_eq!(node.get("/readyz").await.0, 503, "{case}");
        assert_eq!(node.get("/healthz").await.0, 200, "{case}: still serving");
        let mut client = node.client().await;
        let reply = client.subscribe("chat:x").await;
        assert!(
            matches!(
                reply,
                ServerMessage::Error {
                    code: ErrorCode::Unavailable,
                    ..
                }
            ),
            "{case}: {reply:?}"
        );
        let lines = logs.lines()[logged..].to_vec();
        assert!(
            lines.iter().any(|line| line.starts_with("WARN")
                && line.contains("cannot reach redis")
                && line.contains("TLS to redis failed")
                && line.contains("UnknownIssuer")
                && line.contains("redis_ca")),
            "{case}: no clear warning in {lines:#?}"
        );
        drop(client);
        node.stop().await;
    }
    let nodes: i64 = redis.query(redis::cmd("ZCARD").arg("duplex:nodes"));
    assert_eq!(nodes, 0, "no node got in");

    // A CA file that cannot be used stops the node from starting, and the
    // error names the file.
    let not_pem = other.dir().join("not-a-ca.pem");
    std::fs::write(&not_pem, "this is not a certificate\n").expect("write");
    let missing = other.dir().join("missing.pem");
    let key_only = redis.pki().key.clone();
    for (path, why) in [
        (&not_pem, "no PEM certificate"),
        (&missing, "No such file"),
        (&key_only, "no PEM certificate"),
    ] {
        let error = match Node::launch(tls_config(Some(path)), &redis.url(), fast_options()).await {
            Ok(node) => {
                node.stop().await;
                panic!("a node started with redis_ca = {}", path.display());
            }
            Err(error) => error.to_string(),
        };
        assert!(
            error.contains(&path.display().to_string()) && error.contains(why),
            "{error}"
        );
    }
    // redis_ca with a plain redis:// URL is a configuration error.
    let plain = redis.url().replacen("rediss://", "redis://", 1);
    let error = match Node::launch(tls_config(Some(redis.ca())), &plain, fast_options()).await {
        Ok(node) => {
            node.stop().await;
            panic!("a node started with redis_ca and a redis:// URL");
        }
        Err(error) => error.to_string(),
    };
    assert!(error.contains("rediss://"), "{error}");
}

/// A connection through HAProxy at `url` (with `cookie` as its `Cookie`
/// header, if any): the node's part of the client id from `connected`, and
/// the `Set-Cookie` headers of the 101 response.
async fn open_recorded(
    addr: std::net::SocketAddr,
    url: &str,
    cookie: Option<&str>,
) -> (String, Vec<String>) {
    use duplex::{ClientRequest, Config, Message};
    use duplex_hub_proto::{Encoded, Frame, Request, SUBPROTOCOL, decode_server, encode_command};
    use futures_util::{SinkExt, StreamExt};
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut request = ClientRequest::new(url).protocol(SUBPROTOCOL);
    if let Some(cookie) = cookie {
        request = request.header("Cookie", cookie).expect("a header");
    }
    let mut ws = duplex::client_handshake(Recorded::new(tcp), &request, &Config::client())
        .await
        .expect("handshake through haproxy");
    let head = ws.get_ref().response_head().expect("a response head");
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let set_cookie = ws.get_ref().response_headers("set-cookie");
    let connect = Request {
        id: Some(1),
        command: Command::Connect {
            token: None,
            name: None,
        },
    };
    let Encoded::Text(text) = encode_command(&connect) else {
        panic!("connect is text");
    };
    ws.send(Message::text(text)).await.expect("send connect");
    let client = loop {
        let message = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a reply in time")
            .expect("a message")
            .expect("a message, not an error");
        let frame = match &message {
            Message::Text(text) => Frame::Text(text.as_str()),
            Message::Binary(bytes) => Frame::Binary(bytes),
        };
        if let ServerMessage::Connected { client, .. } = decode_server(frame).expect("valid") {
            break client;
        }
    };
    (client[..6].to_owned(), set_cookie)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_cookie_on_the_upgrade_response_keeps_a_client_on_its_node() {
    let redis = Redis::start();
    // Node a reaches Redis through a link the test can cut (to make it
    // not ready at the end).
    let cut = Cut::start(redis.addr()).await;
    let a = Node::start(&cut.redis_url()).await;
    let b = Node::start(&redis.url()).await;
    let node_of = |client: &TestClient| client.client_id[..6].to_owned();
    let node_a = node_of(&a.client().await);
    let node_b = node_of(&b.client().await);
    assert_ne!(node_a, node_b);
    // docs/deploy.md's cookie configuration, as written there.
    let config = deploy_doc_haproxy(
        "cookie DUPLEXNODE insert indirect nocache httponly",
        a.addr,
        b.addr,
    );
    assert!(
        config.contains("server a") && config.contains("cookie a"),
        "{config}"
    );
    let haproxy = Haproxy::start(&config);

    // Without the cookie, connections spread over both nodes.
    let mut spread = std::collections::BTreeSet::new();
    for _ in 0..6 {
        spread.insert(node_of(&client_at(&haproxy.url()).await));
    }
    assert_eq!(
        spread,
        [node_a.clone(), node_b.clone()].into(),
        "round robin without the cookie"
    );

    // A first connection gets the cookie naming its node on the 101.
    let (first, set_cookie) = open_recorded(haproxy.addr, &haproxy.url(), None).await;
    assert_eq!(set_cookie.len(), 1, "one Set-Cookie: {set_cookie:?}");
    let cookie = set_cookie[0]
        .split(';')
        .next()
        .expect("a pair")
        .trim()
        .to_owned();
    let attributes = set_cookie[0].to_ascii_lowercase();
    assert!(attributes.contains("httponly"), "{set_cookie:?}");
    assert!(
        attributes.contains("path=/"),
        "sent back on /ws: {set_cookie:?}"
    );
    let named = match cookie.as_str() {
        "DUPLEXNODE=a" => &node_a,
        "DUPLEXNODE=b" => &node_b,
        other => panic!("unexpected cookie {other:?}"),
    };
    assert_eq!(
        &first, named,
        "the cookie names the node the client reached"
    );

    // Reconnecting with it lands on the same node, every time, and is not
    // given the cookie again.
    for _ in 0..6 {
        let client = client_at_with_cookie(&haproxy.url(), &cookie).await;
        assert_eq!(
            node_of(&client),
            first,
            "{cookie} keeps the client on its node"
        );
    }
    let (again, set_cookie) = open_recorded(haproxy.addr, &haproxy.url(), Some(&cookie)).await;
    assert_eq!(again, first);
    assert!(
        set_cookie.is_empty(),
        "a valid cookie is not set again: {set_cookie:?}"
    );
    // The other node's cookie pins to the other node.
    let (other_cookie, other_node) = if first == node_a {
        ("DUPLEXNODE=b", &node_b)
    } else {
        ("DUPLEXNODE=a", &node_a)
    };
    for _ in 0..3 {
        let client = client_at_with_cookie(&haproxy.url(), other_cookie).await;
        assert_eq!(&node_of(&client), other_node, "{other_cookie}");
    }

    // Node a loses Redis (/readyz 503): once HAProxy's check marks it down,
    // a client with a's cookie reaches b and is given b's cookie.
    cut.cut();
    assert!(wait_status(a.addr, "/readyz", 503, Duration::from_secs(5)).await);
    let deadline = Instant::now() + Duration::from_secs(20);
    let (moved, set_cookie) = loop {
        let (node, set_cookie) =
            open_recorded(haproxy.addr, &haproxy.url(), Some("DUPLEXNODE=a")).await;
        if node == node_b || Instant::now() > deadline {
            break (node, set_cookie);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(moved, node_b, "a down node's cookie is not followed");
    assert_eq!(set_cookie.len(), 1, "{set_cookie:?}");
    assert!(
        set_cookie[0].starts_with("DUPLEXNODE=b;"),
        "the cookie now names b: {set_cookie:?}"
    );
    drop(haproxy);
    a.stop().await;
    b.stop().await;
}

/// A connected client of the hub at `url` sending `cookie`.
async fn client_at_with_cookie(url: &str, cookie: &str) -> TestClient {
    let mut client = TestClient::open(url, |r| r.header("Cookie", cookie).expect("a header"))
        .await
        .expect("open");
    client.connect(None).await;
    client
}

/// A client that publishes without waiting for acks has its publishes in
/// flight to Redis together (the session pipelines them): the acks still
/// come back in the order sent, with consecutive offsets; a command sent
/// after them is answered after them; and a subscriber on the other node
/// receives every message once, in that order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_publishes_keep_their_order() {
    let redis = Redis::start();
    let a = Node::start(&redis.url()).await;
    let b = Node::start(&redis.url()).await;
    let channel = "chat:pipelined";
    let mut reader = b.client().await;
    reader.subscribe(channel).await;
    let mut writer = a.client().await;
    // Over twice the session's window of publishes in flight, under the
    // default burst of the rate limit.
    let total = 150u64;
    let mut ids = Vec::new();
    for n in 1..=total {
        let publish = Command::Publish {
            channel: channel.to_owned(),
            data: json(json!({ "n": n })),
            key: None,
        };
        ids.push(writer.send(publish).await);
    }
    let ping = writer.send(Command::Ping).await;
    for (n, id) in (1..=total).zip(&ids) {
        match writer.recv().await {
            ServerMessage::Published {
                id: Some(got),
                offset,
                ..
            } => assert_eq!((got, offset), (*id, n), "ack {n} out of order"),
            other => panic!("expected the ack of publish {n}, got {other:?}"),
        }
    }
    assert!(
        matches!(writer.recv().await, ServerMessage::Pong { id: Some(got) } if got == ping),
        "the ping is answered after every publish before it"
    );
    for n in 1..=total {
        let message = reader.wait_for(is_message).await;
        let ServerMessage::Message(publication) = &message else {
            unreachable!()
        };
        assert_eq!(publication.offset, n);
        assert_eq!(publication.data, json(json!({ "n": n })));
    }
    assert!(
        next_within(&mut reader, Duration::from_millis(200))
            .await
            .is_none(),
        "nothing twice"
    );
}
