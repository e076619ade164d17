//! Several hub nodes as one cluster through a real Redis (started by the
//! test on a free loopback port, without persistence): chat, presence and
//! join/leave across nodes, a node killed with SIGKILL, Redis restarted in
//! the middle of traffic, a node cut off from Redis, and HAProxy in front.
//!
//! Needs Debian's `redis-server` and `haproxy` (`cargo xtask setup redis
//! haproxy`); a missing one fails the test with that hint.

mod cluster_support;
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cluster_support::{
    Cut, Haproxy, NODE_REDIS_ENV, Node, NodeProcess, Redis, Stream, client_at, fast_options,
};
use common::{TestClient, json, offset_of};
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
    let reply = carol
        .call(Command::Subscribe {
            channel: channel.to_owned(),
            since: Some(Since {
                epoch: epoch.clone(),
                offset: 40,
            }),
            recent: 0,
        })
        .await;
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
    let topics: Vec<String> = redis.query(redis::cmd("PUBSUB").arg("CHANNELS").arg("*"));
    assert_eq!(topics, vec!["duplex:m:chat:lobby".to_owned()], "{topics:?}");
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
            })
            .await,
    );
    let stats_b = subscribed_epoch(
        &bob.call(Command::Subscribe {
            channel: "$sys:stats".into(),
            since: None,
            recent: 1,
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
    let reply = back
        .call(Command::Subscribe {
            channel: channel.to_owned(),
            since: Some(Since {
                epoch: epoch.clone(),
                offset: 10,
            }),
            recent: 0,
        })
        .await;
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
