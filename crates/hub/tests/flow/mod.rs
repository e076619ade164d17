//! Publish-and-count flows for the failover tests (Sentinel, Redis Cluster):
//! a publisher of `{"n": 1..=last}` that rides out `unavailable`, a
//! follower that records what one subscriber saw, and a count that tells
//! announced losses (a gap lies around them) from silent ones.
//!
//! Every wait is bounded ([`STREAM_DEADLINE`], 30 s per publish).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use duplex_hub_proto::{Command as HubCommand, ErrorCode, ServerMessage};
use serde_json::json;

use crate::common::{TestClient, json};

/// The longest a follower reads.
pub(crate) const STREAM_DEADLINE: Duration = Duration::from_secs(60);

/// What a subscriber saw, in order: a message (its `n`) or a gap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Seen {
    /// A message, by its `n`.
    Message(u64),
    /// A gap announced.
    Gap,
}

/// The `n` a message carries.
pub(crate) fn n_of(message: &ServerMessage) -> Option<u64> {
    match message {
        ServerMessage::Message(publication) => {
            let text = publication.data.as_json()?.as_str().to_owned();
            serde_json::from_str::<serde_json::Value>(&text)
                .ok()?
                .get("n")?
                .as_u64()
        }
        _ => None,
    }
}

/// Reads `client`'s pushes on `channel` until the message `last` (set
/// once known) or the stream deadline.
pub(crate) fn follow(
    mut client: TestClient,
    channel: String,
    last: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<Vec<Seen>> {
    tokio::spawn(async move {
        let mut seen = Vec::new();
        let deadline = Instant::now() + STREAM_DEADLINE;
        while Instant::now() < deadline {
            let Ok(message) = tokio::time::timeout(Duration::from_secs(1), client.recv()).await
            else {
                continue;
            };
            match &message {
                ServerMessage::Gap { channel: c, .. } if *c == channel => seen.push(Seen::Gap),
                ServerMessage::Message(p) if p.channel == channel => {
                    let n = n_of(&message).expect("a message of this test");
                    seen.push(Seen::Message(n));
                    if n == last.load(Ordering::SeqCst) {
                        break;
                    }
                }
                _ => {}
            }
        }
        seen
    })
}

/// Publishes `{"n": 1..=last}` on `channel` (`last` is set while it runs),
/// each with an idempotency key, retrying `unavailable` for at most 30 s
/// per message; `progress` holds the last `n` acknowledged. Returns how
/// many were acknowledged.
pub(crate) fn publish_all(
    mut client: TestClient,
    channel: String,
    progress: Arc<AtomicU64>,
    last: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let mut acknowledged = 0;
        let mut n = 0;
        while n < last.load(Ordering::SeqCst) {
            n += 1;
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let reply = client
                    .call(HubCommand::Publish {
                        channel: channel.clone(),
                        data: json(json!({ "n": n })),
                        key: Some(format!("n-{n}")),
                    })
                    .await;
                match reply {
                    ServerMessage::Published { .. } => break,
                    ServerMessage::Error {
                        code: ErrorCode::Unavailable,
                        ..
                    } if Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    other => panic!("publish {n} on {channel}: {other:?}"),
                }
            }
            acknowledged += 1;
            progress.store(n, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        acknowledged
    })
}

/// One subscriber's counts.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    /// Messages received.
    pub(crate) delivered: usize,
    /// Messages missed with a gap announced around them.
    pub(crate) announced: usize,
    /// Messages missed silently.
    pub(crate) silent: Vec<u64>,
    /// Gaps announced.
    pub(crate) gaps: usize,
    /// Pairs out of order (the one before, the one after).
    pub(crate) out_of_order: Vec<(u64, u64)>,
}

/// Counts what `seen` got of `1..=total`: a message missed is announced if
/// a gap lies between the messages received before and after it, silent
/// otherwise; between two gaps, messages must come in increasing order.
pub(crate) fn count(seen: &[Seen], total: u64) -> Counts {
    let mut counts = Counts {
        gaps: seen.iter().filter(|s| **s == Seen::Gap).count(),
        ..Counts::default()
    };
    for n in 1..=total {
        if seen.contains(&Seen::Message(n)) {
            counts.delivered += 1;
            continue;
        }
        let start = seen
            .iter()
            .rposition(|s| matches!(s, Seen::Message(m) if *m < n))
            .map_or(0, |at| at + 1);
        let end = seen
            .iter()
            .position(|s| matches!(s, Seen::Message(m) if *m > n))
            .unwrap_or(seen.len());
        if start <= end && seen[start..end].contains(&Seen::Gap) {
            counts.announced += 1;
        } else {
            counts.silent.push(n);
        }
    }
    let mut last = 0;
    for s in seen {
        match *s {
            Seen::Gap => last = 0,
            Seen::Message(n) => {
                if n <= last {
                    counts.out_of_order.push((last, n));
                }
                last = n;
            }
        }
    }
    counts
}

#[test]
fn counting_tells_announced_from_silent_losses() {
    use Seen::{Gap, Message};
    let mut seen: Vec<Seen> = (1..=20).map(Message).collect();
    assert_eq!(count(&seen, 20).delivered, 20);
    seen.retain(|s| *s != Message(5));
    assert_eq!(count(&seen, 20).silent, [5]);
    seen.insert(4, Gap);
    let counts = count(&seen, 20);
    assert!(
        counts.silent.is_empty() && counts.announced == 1,
        "{counts:?}"
    );
    seen.insert(10, Message(3));
    assert_eq!(count(&seen, 20).out_of_order.len(), 1);
}
