//! What bounds a cluster's Redis: the per-channel byte bound of the
//! publish script, and a Redis at its `maxmemory` refusing writes, which the
//! hub answers with `unavailable`, never silently (`docs/operations.md`,
//! "How memory is bounded").
//!
//! Needs Debian's `redis-server` (`cargo xtask setup redis`); a missing one
//! fails the test with that hint.

mod cluster_support;
mod common;

use std::time::{Duration, Instant};

use cluster_support::{Node, Redis, fast_options};
use common::TestClient;
use duplex_hub::HubConfig;
use duplex_hub::config::NamespaceConfig;
use duplex_hub_proto::{Command, Data, ErrorCode, ServerMessage};

fn publish(channel: &str, bytes: usize) -> Command {
    Command::Publish {
        channel: channel.to_owned(),
        data: Data::Binary(vec![b'x'; bytes].into()),
        key: None,
    }
}

fn config() -> HubConfig {
    HubConfig {
        shutdown_grace: Duration::from_millis(500),
        ..HubConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_in_redis_is_bounded_by_bytes_per_channel() {
    let redis = Redis::start();
    let mut config = config();
    config.namespaces.insert(
        "small".into(),
        NamespaceConfig {
            history_size: 100,
            history_bytes: 10_000,
            ..NamespaceConfig::default()
        },
    );
    let node = Node::start_with(config, &redis.url(), fast_options()).await;
    let mut c = node.client().await;
    let mut epoch = String::new();
    for i in 1..=20u64 {
        let reply = c.call(publish("small:c", 1000)).await;
        assert!(
            matches!(reply, ServerMessage::Published { offset, .. } if offset == i),
            "{reply:?}"
        );
        let entries: Vec<Vec<u8>> = redis.query(
            redis::cmd("LRANGE")
                .arg("duplex:{small:c}:hist")
                .arg(0)
                .arg(-1),
        );
        let total: usize = entries.iter().map(Vec::len).sum();
        let counted: Option<usize> =
            redis.query(redis::cmd("HGET").arg("duplex:{small:c}:meta").arg("bytes"));
        assert_eq!(counted, Some(total), "the counter is the entries' length");
        assert!(total <= 10_000, "{total}");
        if i == 1 {
            let reply = c.subscribe("small:c").await;
            let ServerMessage::Subscribed { epoch: e, .. } = reply else {
                panic!("{reply:?}")
            };
            epoch = e;
            c.call(Command::Unsubscribe {
                channel: "small:c".into(),
            })
            .await;
        }
    }
    let kept: usize = redis.query(redis::cmd("LLEN").arg("duplex:{small:c}:hist"));
    assert!(
        (5..10).contains(&kept),
        "{kept} entries of 1,000 bytes kept"
    );
    // Recovering from before what was dropped: a gap; from within: all.
    let mut late = node.client().await;
    let reply = late.subscribe_since("small:c", &epoch, 2).await;
    assert!(
        matches!(
            reply,
            ServerMessage::Subscribed {
                recovered: false,
                gap: true,
                ..
            }
        ),
        "{reply:?}"
    );
    let mut fine = node.client().await;
    let reply = fine.subscribe_since("small:c", &epoch, 18).await;
    assert!(
        matches!(
            reply,
            ServerMessage::Subscribed {
                recovered: true,
                gap: false,
                ..
            }
        ),
        "{reply:?}"
    );
    // A message larger than the bound is delivered, not kept: the history
    // empties, the counter with it.
    let reply = c.call(publish("small:c", 20_000)).await;
    assert!(
        matches!(reply, ServerMessage::Published { offset: 21, .. }),
        "{reply:?}"
    );
    let kept: usize = redis.query(redis::cmd("LLEN").arg("duplex:{small:c}:hist"));
    let counted: Option<usize> =
        redis.query(redis::cmd("HGET").arg("duplex:{small:c}:meta").arg("bytes"));
    assert_eq!((kept, counted.unwrap_or(0)), (0, 0));
    node.stop().await;
}

/// Waits for a `message` push or a `gap` push on `client`, up to `within`.
async fn next_push(client: &mut TestClient, within: Duration) -> Option<ServerMessage> {
    tokio::time::timeout(within, client.recv()).await.ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_out_of_memory_makes_publishes_unavailable_never_lost() {
    let redis = Redis::start();
    let node = Node::start_with(config(), &redis.url(), fast_options()).await;
    let mut publisher = node.client().await;
    let mut subscriber = node.client().await;
    assert!(matches!(
        subscriber.subscribe("chat:oom").await,
        ServerMessage::Subscribed { .. }
    ));
    let reply = publisher.call(publish("chat:oom", 100)).await;
    assert!(
        matches!(reply, ServerMessage::Published { offset: 1, .. }),
        "{reply:?}"
    );
    let first = next_push(&mut subscriber, Duration::from_secs(5)).await;
    assert!(
        matches!(&first, Some(ServerMessage::Message(p)) if p.offset == 1),
        "{first:?}"
    );
    // Redis full, refusing writes (the default policy, noeviction).
    let _: () = redis.query(redis::cmd("CONFIG").arg("SET").arg("maxmemory").arg(1));
    let _: () = redis.query(
        redis::cmd("CONFIG")
            .arg("SET")
            .arg("maxmemory-policy")
            .arg("noeviction"),
    );
    for _ in 0..10 {
        let reply = publisher.call(publish("chat:oom", 100)).await;
        match &reply {
            ServerMessage::Error {
                code: ErrorCode::Unavailable,
                message,
                ..
            } => eprintln!("refused: {message}"),
            other => panic!("expected unavailable, got {other:?}"),
        }
        match &reply {
            ServerMessage::Error { message, .. } => assert!(
                message.contains("OOM") || message.contains("not connected"),
                "{message}"
            ),
            other => panic!("expected unavailable, got {other:?}"),
        }
    }
    // Nothing reached the subscriber, and no offset was spent.
    let nothing = next_push(&mut subscriber, Duration::from_millis(300)).await;
    assert!(nothing.is_none(), "{nothing:?}");
    // Room again: publishes pass (once the node is ready, if it dropped its
    // link meanwhile), with the next offset, and the subscriber gets it,
    // without a gap.
    let _: () = redis.query(redis::cmd("CONFIG").arg("SET").arg("maxmemory").arg(0));
    let deadline = Instant::now() + Duration::from_secs(15);
    let offset = loop {
        let reply = publisher.call(publish("chat:oom", 100)).await;
        match reply {
            ServerMessage::Published { offset, .. } => break offset,
            ServerMessage::Error {
                code: ErrorCode::Unavailable,
                ..
            } if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => panic!("expected published, got {other:?}"),
        }
    };
    assert_eq!(offset, 2, "refused publishes took no offset");
    let next = next_push(&mut subscriber, Duration::from_secs(10)).await;
    assert!(
        matches!(&next, Some(ServerMessage::Message(p)) if p.offset == 2),
        "{next:?}"
    );
    node.stop().await;
}
