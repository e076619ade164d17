//! A Redis that lost acknowledged writes, with real `redis-server`
//! processes: restarted from an older RDB snapshot, restarted from an AOF
//! whose tail was lost, a failover to a replica that lagged behind, and the
//! same process reloading an older snapshot (`DEBUG RELOAD NOSAVE`: same
//! `run_id`, connections kept).
//!
//! Each test publishes through a node without subscribers while subscribers
//! on two other nodes follow the channel, loses the last writes, lets the
//! publisher's node reconnect first and publish past what the subscribers
//! had, then brings the subscribers' nodes back (the hard order: their
//! catch-up read alone would find the channel ahead of them). The reload
//! test keeps every connection and publishes from a subscribers' node
//! instead (without a restart, only what a node saw can tell). It counts
//! *silent losses*: a message acknowledged to the publisher that a
//! subscriber never received, without a `gap` push (or a `subscribed` with
//! `gap: true`) between the messages before and after it. A client that
//! left before the loss and resubscribes with `since` its last offset is
//! counted the same way, and must never be told `recovered: true` while
//! missing messages. Every count must be 0.
//!
//! Needs Debian's `redis-server` (`cargo xtask setup redis`); a missing one
//! fails the test with that hint.

mod cluster_support;
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cluster_support::{Cut, Node, Redis};
use common::{TestClient, json};
use duplex_hub_proto::{Command, ErrorCode, ServerMessage};
use serde_json::json;

/// Messages before the point Redis will fall back to.
const KEPT: u64 = 20;
/// Messages after it, delivered and then lost by Redis.
const LOST: u64 = 20;
/// Messages published after the loss (more than were lost, so that the
/// channel ends up ahead of where the subscribers were).
const AFTER: u64 = 30;
/// The last message: `n` of it.
const FINAL: u64 = KEPT + LOST + AFTER + 1;

/// What a follower saw, in order: a message (its `n`) or a gap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Seen {
    Message(u64),
    Gap,
}

/// The `n` a message carries.
fn n_of(message: &ServerMessage) -> Option<u64> {
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

/// Reads `client`'s pushes on `channel` until the message `FINAL` (at most
/// 20 s), publishing the highest `n` received in `progress`.
fn follow(
    mut client: TestClient,
    channel: &'static str,
    mut seen: Vec<Seen>,
    progress: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<Vec<Seen>> {
    tokio::spawn(async move {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            let Ok(message) = tokio::time::timeout(Duration::from_secs(1), client.recv()).await
            else {
                continue;
            };
            match &message {
                ServerMessage::Gap { channel: c, .. } if c == channel => seen.push(Seen::Gap),
                ServerMessage::Message(p) if p.channel == channel => {
                    let n = n_of(&message).expect("a message of this test");
                    seen.push(Seen::Message(n));
                    progress.fetch_max(n, Ordering::SeqCst);
                    if n == FINAL {
                        break;
                    }
                }
                _ => {}
            }
        }
        seen
    })
}

/// The messages of `expected` that `seen` misses without a gap between the
/// messages received before and after it.
fn silent_losses(seen: &[Seen], expected: impl IntoIterator<Item = u64>) -> Vec<u64> {
    let got = |n: u64| seen.contains(&Seen::Message(n));
    let mut silent = Vec::new();
    for n in expected {
        if got(n) {
            continue;
        }
        // The span from the last message received before `n` to the first
        // after it (or the end).
        let start = seen
            .iter()
            .rposition(|s| matches!(s, Seen::Message(m) if *m < n))
            .map_or(0, |at| at + 1);
        let end = seen
            .iter()
            .position(|s| matches!(s, Seen::Message(m) if *m > n))
            .unwrap_or(seen.len());
        let announced = start <= end && seen[start..end].contains(&Seen::Gap);
        if !announced {
            silent.push(n);
        }
    }
    silent
}

/// Publishes `{"n": n}` for each `n` of `range`, retrying `unavailable`
/// (with the same idempotency key) for at most 10 s each.
async fn publish_range(
    client: &mut TestClient,
    channel: &str,
    range: std::ops::RangeInclusive<u64>,
) {
    for n in range {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let reply = client
                .call(Command::Publish {
                    channel: channel.to_owned(),
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
                other => panic!("publish {n}: {other:?}"),
            }
        }
    }
}

/// Waits until `progress` reaches `n` (at most 10 s).
async fn wait_progress(progress: &AtomicU64, n: u64, who: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while progress.load(Ordering::SeqCst) < n {
        assert!(Instant::now() < deadline, "{who} did not reach message {n}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until the node's `/readyz` answers `status` (at most 10 s).
async fn wait_ready(node: &Node, status: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while node.get("/readyz").await.0 != status {
        assert!(
            Instant::now() < deadline,
            "/readyz of {} did not turn {status}",
            node.addr
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// One `INFO` field of `redis`.
fn info_field(redis: &Redis, section: &str, field: &str) -> String {
    let info: String = redis.query(redis::cmd("INFO").arg(section));
    info.lines()
        .find_map(|line| line.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("INFO {section} has no {field}"))
        .trim()
        .to_owned()
}

/// How Redis loses its last writes.
trait Loss {
    /// The Redis the nodes talk to, started.
    fn primary(&self) -> Redis;
    /// Called after the first `KEPT` messages: remember this point.
    async fn checkpoint(&mut self, primary: &Redis);
    /// Lose everything after the checkpoint; the nodes' links to Redis are
    /// `links` (retarget them on a failover).
    async fn lose(&mut self, primary: &mut Redis, links: &[&Cut]);
}

/// Publisher on a node of its own, subscribers on two others; returns the
/// silent losses counted: (subscribers on A and B, the resubscriber).
///
/// With `cut_subscribers`, the subscribers' nodes lose Redis before the
/// loss and come back only after the publisher's node published past them.
/// `publisher_on_a` publishes from the first subscribers' node instead.
async fn run(
    channel: &'static str,
    loss: &mut impl Loss,
    cut_subscribers: bool,
    publisher_on_a: bool,
) -> (usize, usize) {
    let mut primary = loss.primary();
    let (pa, pb, pc) = (
        Cut::start(primary.addr()).await,
        Cut::start(primary.addr()).await,
        Cut::start(primary.addr()).await,
    );
    let a = Node::start(&pa.redis_url()).await;
    let b = Node::start(&pb.redis_url()).await;
    let c = Node::start(&pc.redis_url()).await;

    let (progress_a, progress_b) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut followers = Vec::new();
    for (node, progress) in [(&a, &progress_a), (&b, &progress_b)] {
        let mut client = node.client().await;
        let reply = client.subscribe(channel).await;
        assert!(
            matches!(reply, ServerMessage::Subscribed { .. }),
            "{reply:?}"
        );
        followers.push(follow(client, channel, Vec::new(), progress.clone()));
    }
    // The client that will leave before the loss and come back with `since`.
    let mut leaver = a.client().await;
    let leaver_epoch = match leaver.subscribe(channel).await {
        ServerMessage::Subscribed { epoch, .. } => epoch,
        other => panic!("{other:?}"),
    };
    let mut publisher = if publisher_on_a {
        a.client().await
    } else {
        c.client().await
    };

    publish_range(&mut publisher, channel, 1..=KEPT).await;
    loss.checkpoint(&primary).await;
    publish_range(&mut publisher, channel, KEPT + 1..=KEPT + LOST).await;
    wait_progress(&progress_a, KEPT + LOST, "the subscriber on A").await;
    wait_progress(&progress_b, KEPT + LOST, "the subscriber on B").await;
    let mut leaver_at = 0;
    while leaver_at < KEPT + LOST {
        let message = leaver.wait_for(|m| n_of(m).is_some()).await;
        match &message {
            ServerMessage::Message(p) => {
                assert_eq!(p.offset, leaver_at + 1, "in order before the loss");
                leaver_at = p.offset;
            }
            other => panic!("{other:?}"),
        }
    }
    drop(leaver);

    if cut_subscribers {
        pa.cut();
        pb.cut();
        wait_ready(&a, 503).await;
        wait_ready(&b, 503).await;
    }
    loss.lose(&mut primary, &[&pa, &pb, &pc]).await;
    publish_range(&mut publisher, channel, KEPT + LOST + 1..=FINAL - 1).await;
    if cut_subscribers {
        pa.restore();
        pb.restore();
        wait_ready(&a, 200).await;
        wait_ready(&b, 200).await;
    }

    // Back with `since` its last position, on the other node.
    let mut back = b.client().await;
    let reply = back
        .subscribe_since(channel, &leaver_epoch, leaver_at)
        .await;
    let (recovered, gap) = match &reply {
        ServerMessage::Subscribed { recovered, gap, .. } => (*recovered, *gap),
        other => panic!("{other:?}"),
    };
    let back_start = if gap { vec![Seen::Gap] } else { Vec::new() };
    let back_progress = Arc::new(AtomicU64::new(0));
    let back = follow(back, channel, back_start, back_progress.clone());

    publish_range(&mut publisher, channel, FINAL..=FINAL).await;

    let mut silent_subscribers = 0;
    for (name, follower) in ["A", "B"].into_iter().zip(followers) {
        let seen = follower.await.expect("follower");
        assert_eq!(seen.last(), Some(&Seen::Message(FINAL)), "{name}: {seen:?}");
        let silent = silent_losses(&seen, 1..=FINAL);
        eprintln!(
            "{channel}: subscriber on {name}: {} silently lost {silent:?}; gaps {}",
            silent.len(),
            seen.iter().filter(|s| **s == Seen::Gap).count()
        );
        silent_subscribers += silent.len();
    }
    let seen = back.await.expect("resubscriber");
    let silent = silent_losses(&seen, leaver_at + 1..=FINAL);
    eprintln!(
        "{channel}: resubscriber (recovered: {recovered}, gap: {gap}): {} silently lost {silent:?}",
        silent.len()
    );
    let missing = (leaver_at + 1..=FINAL).any(|n| !seen.contains(&Seen::Message(n)));
    assert!(
        !(recovered && missing),
        "told recovered: true while missing messages: {seen:?}"
    );

    for node in [a, b, c] {
        node.stop().await;
    }
    (silent_subscribers, silent.len())
}

/// Restart from an older RDB snapshot: `SAVE`, publish more, SIGKILL, put
/// the older dump back, start again on the same port.
struct Snapshot {
    saved: Option<Vec<u8>>,
}

impl Loss for Snapshot {
    fn primary(&self) -> Redis {
        Redis::start_with("rdb", &[])
    }

    async fn checkpoint(&mut self, primary: &Redis) {
        let () = primary.query(&redis::cmd("SAVE"));
        self.saved = Some(std::fs::read(primary.dir().join("dump.rdb")).expect("the dump"));
    }

    async fn lose(&mut self, primary: &mut Redis, _: &[&Cut]) {
        primary.kill();
        let saved = self.saved.take().expect("a checkpoint");
        std::fs::write(primary.dir().join("dump.rdb"), saved).expect("put the old dump back");
        primary.restart();
    }
}

/// Restart from an AOF whose tail is lost (fsync'd on every write, then
/// truncated back to the checkpoint plus a torn piece of the next write,
/// which `aof-load-truncated` drops).
struct AofTail {
    at: u64,
}

impl AofTail {
    fn file(primary: &Redis) -> std::path::PathBuf {
        primary
            .dir()
            .join("appendonlydir")
            .join("appendonly.aof.1.incr.aof")
    }
}

impl Loss for AofTail {
    fn primary(&self) -> Redis {
        Redis::start_with(
            "aof",
            &[
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--auto-aof-rewrite-percentage",
                "0",
                "--aof-load-truncated",
                "yes",
            ],
        )
    }

    async fn checkpoint(&mut self, primary: &Redis) {
        self.at = std::fs::metadata(Self::file(primary))
            .expect("the AOF")
            .len();
    }

    async fn lose(&mut self, primary: &mut Redis, _: &[&Cut]) {
        primary.kill();
        let file = Self::file(primary);
        let len = std::fs::metadata(&file).expect("the AOF").len();
        assert!(len > self.at + 100, "the lost writes were in the AOF");
        let aof = std::fs::OpenOptions::new()
            .write(true)
            .open(&file)
            .expect("open the AOF");
        aof.set_len(self.at + 9).expect("truncate the AOF");
        drop(aof);
        primary.restart();
    }
}

/// Failover to a replica that lagged: the replica's link to the primary is
/// cut at the checkpoint, the primary dies after more writes, the replica
/// is promoted (`REPLICAOF NO ONE`) and the nodes' address now leads to it.
struct Failover {
    link: Option<Cut>,
    replica: Option<Redis>,
}

impl Loss for Failover {
    fn primary(&self) -> Redis {
        // Sync a replica at once (the default waits 5 s for more of them).
        Redis::start_with("primary", &["--repl-diskless-sync-delay", "0"])
    }

    async fn checkpoint(&mut self, primary: &Redis) {
        let link = Cut::start(primary.addr()).await;
        let port = link.addr.port().to_string();
        let replica = Redis::start_with("replica", &["--replicaof", "127.0.0.1", &port]);
        let deadline = Instant::now() + Duration::from_secs(10);
        let target: u64 = info_field(primary, "replication", "master_repl_offset")
            .parse()
            .expect("an offset");
        loop {
            let synced = info_field(&replica, "replication", "master_link_status") == "up"
                && info_field(&replica, "replication", "slave_repl_offset")
                    .parse::<u64>()
                    .is_ok_and(|at| at >= target);
            if synced {
                break;
            }
            assert!(Instant::now() < deadline, "the replica did not sync");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        link.cut();
        self.link = Some(link);
        self.replica = Some(replica);
    }

    async fn lose(&mut self, primary: &mut Redis, links: &[&Cut]) {
        let replica = self.replica.as_ref().expect("a checkpoint");
        let () = replica.query(redis::cmd("REPLICAOF").arg("NO").arg("ONE"));
        // New connections lead to the replica; those to the primary end
        // with it (links that were cut stay cut).
        for link in links {
            link.retarget(replica.addr());
        }
        primary.kill();
    }
}

/// The same process reloads an older snapshot (`DEBUG RELOAD NOSAVE`):
/// same `run_id`, and the nodes' connections stay.
struct Reload;

impl Loss for Reload {
    fn primary(&self) -> Redis {
        Redis::start_with("reload", &["--enable-debug-command", "local"])
    }

    async fn checkpoint(&mut self, primary: &Redis) {
        let () = primary.query(&redis::cmd("SAVE"));
    }

    async fn lose(&mut self, primary: &mut Redis, _: &[&Cut]) {
        let () = primary.query(redis::cmd("DEBUG").arg("RELOAD").arg("NOSAVE"));
    }
}

fn assert_no_silent_loss(what: &str, (subscribers, resubscriber): (usize, usize)) {
    assert_eq!(
        (subscribers, resubscriber),
        (0, 0),
        "{what}: messages silently lost (subscribers on A and B, the resubscriber)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_from_an_older_snapshot_loses_nothing_silently() {
    let counts = run("loss:rdb", &mut Snapshot { saved: None }, true, false).await;
    assert_no_silent_loss("restart from an older RDB", counts);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_from_an_aof_missing_its_tail_loses_nothing_silently() {
    let counts = run("loss:aof", &mut AofTail { at: 0 }, true, false).await;
    assert_no_silent_loss("restart from a truncated AOF", counts);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_to_a_lagging_replica_loses_nothing_silently() {
    let mut loss = Failover {
        link: None,
        replica: None,
    };
    let counts = run("loss:failover", &mut loss, true, false).await;
    assert_no_silent_loss("failover to a lagging replica", counts);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_of_an_older_snapshot_is_caught_by_the_publishing_node() {
    // Nobody reconnects: only what the publishing node saw can tell.
    let counts = run("loss:reload", &mut Reload, false, true).await;
    assert_no_silent_loss("the same process reloading an older snapshot", counts);
}
