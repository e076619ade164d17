//! What bounds a node's memory against clients within every per-connection
//! limit: the bytes-per-second limit on data, the node's history budget and
//! its cap on channels (`docs/operations.md`, "How memory is bounded").

mod common;

use std::time::Duration;

use common::TestHub;
use duplex_hub::HubConfig;
use duplex_hub_proto::{Command, Data, ErrorCode, ServerMessage};

fn binary(bytes: usize) -> Data {
    Data::Binary(vec![b'x'; bytes].into())
}

fn publish(channel: &str, bytes: usize) -> Command {
    Command::Publish {
        channel: channel.to_owned(),
        data: binary(bytes),
        key: None,
    }
}

/// A sample of the hub's `/metrics`.
async fn metric(hub: &TestHub, name: &str) -> f64 {
    let (status, text) = hub.get("/metrics").await;
    assert_eq!(status, 200);
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
        .parse()
        .expect("a number")
}

/// This process's resident set (`VmRSS`), in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("procfs");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

#[tokio::test]
async fn data_over_the_byte_rate_gets_rate_limited_then_1008() {
    let mut config = HubConfig::default();
    // Commands are not what is limited here; 8 KiB of data per second is.
    config.limits.messages_per_second = 1000.0;
    config.limits.burst = 1000.0;
    config.limits.max_message_size = 16 << 10;
    config.limits.publish_bytes_per_second = 8192.0;
    config.limits.publish_bytes_burst = 16384.0;
    config.limits.rate_strikes = 3;
    let hub = TestHub::start(config).await;
    let mut c = hub.client().await;
    // 16 KiB of burst: two publishes of 8,000 bytes pass, a signal of 8,000
    // is over, and so are the rest.
    for _ in 0..2 {
        let reply = c.call(publish("chat:a", 8000)).await;
        assert!(
            matches!(reply, ServerMessage::Published { .. }),
            "{reply:?}"
        );
    }
    let reply = c
        .call(Command::Signal {
            channel: "chat:a".into(),
            data: binary(8000),
        })
        .await;
    assert!(
        matches!(
            reply,
            ServerMessage::Error {
                code: ErrorCode::RateLimited,
                ..
            }
        ),
        "{reply:?}"
    );
    // A command without data still passes meanwhile.
    assert!(matches!(
        c.call(Command::Ping).await,
        ServerMessage::Pong { .. }
    ));
    for _ in 0..2 {
        let reply = c.call(publish("chat:a", 8000)).await;
        assert!(
            matches!(
                reply,
                ServerMessage::Error {
                    code: ErrorCode::RateLimited,
                    ..
                }
            ),
            "{reply:?}"
        );
    }
    // The fourth refusal closes, as for the command rate.
    c.send(publish("chat:a", 8000)).await;
    let info = c.closed().await;
    assert_eq!(u16::from(info.code), 1008);
    assert!(metric(&hub, "duplex_rate_limited_total").await >= 4.0);
}

#[tokio::test]
async fn a_publish_beyond_the_channel_cap_is_refused_and_others_still_work() {
    let mut config = HubConfig::default();
    config.limits.max_channels = 3;
    let hub = TestHub::start(config).await;
    let mut c = hub.client().await;
    for channel in ["a", "b", "c"] {
        let reply = c.call(publish(channel, 10)).await;
        assert!(
            matches!(reply, ServerMessage::Published { .. }),
            "{reply:?}"
        );
    }
    let reply = c.call(publish("d", 10)).await;
    match &reply {
        ServerMessage::Error {
            code: ErrorCode::Unavailable,
            message,
            ..
        } => assert!(message.contains("max_channels"), "{message}"),
        other => panic!("expected unavailable, got {other:?}"),
    }
    // Existing channels take publishes; a subscriber may still join a new
    // channel, and then publishes to it pass.
    assert!(matches!(
        c.call(publish("a", 10)).await,
        ServerMessage::Published { offset: 2, .. }
    ));
    assert!(matches!(
        c.subscribe("d").await,
        ServerMessage::Subscribed { .. }
    ));
    assert!(matches!(
        c.call(publish("d", 10)).await,
        ServerMessage::Published { offset: 1, .. }
    ));
}

/// The load: five anonymous connections publishing 3,500 messages
/// of 60 KB in all, each to a channel of its own, against a node with a
/// 16 MiB history budget (and rates raised, so that only the budget stands
/// in the way). The node's history stays within the budget, the oldest go
/// first, and the node keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_connections_flooding_distinct_channels_stay_within_the_history_budget() {
    const BUDGET: usize = 16 << 20;
    const CONNECTIONS: usize = 5;
    const EACH: usize = 700;
    const SIZE: usize = 60_000;
    let mut config = HubConfig::default();
    config.limits.history_bytes = BUDGET;
    config.limits.messages_per_second = 1e6;
    config.limits.burst = 1e6;
    config.limits.publish_bytes_per_second = 1e9;
    config.limits.publish_bytes_burst = 1e9;
    let hub = TestHub::start(config).await;
    let before = rss_kib();
    let mut early = hub.client().await;
    let first = early.call(publish("flood:0:0", SIZE)).await;
    assert!(
        matches!(first, ServerMessage::Published { .. }),
        "{first:?}"
    );
    let epoch = match early.subscribe("flood:0:0").await {
        ServerMessage::Subscribed { epoch, .. } => epoch,
        other => panic!("{other:?}"),
    };
    early
        .call(Command::Unsubscribe {
            channel: "flood:0:0".into(),
        })
        .await;
    let floods: Vec<_> = (0..CONNECTIONS)
        .map(|n| {
            let url = hub.url();
            tokio::spawn(async move {
                let mut c = common::TestClient::open(&url, |r| r).await.expect("open");
                c.connect(None).await;
                for i in 0..EACH {
                    let reply = c.call(publish(&format!("flood:{n}:{i}"), SIZE)).await;
                    assert!(
                        matches!(reply, ServerMessage::Published { .. }),
                        "{reply:?}"
                    );
                }
            })
        })
        .collect();
    for flood in floods {
        tokio::time::timeout(Duration::from_secs(120), flood)
            .await
            .expect("the flood ends in time")
            .expect("every publish accepted");
    }
    let kept = metric(&hub, "duplex_history_bytes").await;
    let after = rss_kib();
    eprintln!(
        "published {} MB; history kept {:.1} MiB (budget {} MiB); evicted {}; \
         RSS {before} KiB -> {after} KiB (+{} MiB)",
        CONNECTIONS * EACH * SIZE / 1_000_000,
        kept / f64::from(1 << 20),
        BUDGET >> 20,
        metric(&hub, "duplex_history_evicted_total").await,
        after.saturating_sub(before) / 1024,
    );
    assert!(kept > 0.0 && kept <= BUDGET as f64, "{kept}");
    assert!(metric(&hub, "duplex_history_evicted_total").await > 0.0);
    // The first message went long ago: recovering from before it is a gap.
    let reply = early.subscribe_since("flood:0:0", &epoch, 0).await;
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
    // Most of what was published is not held: 210 MB went through, less
    // than half of it may stay resident.
    assert!(
        after.saturating_sub(before) < 100 << 10,
        "RSS grew by {} MiB",
        after.saturating_sub(before) / 1024
    );
    // Still serving.
    assert!(matches!(
        early.call(Command::Ping).await,
        ServerMessage::Pong { .. }
    ));
}
