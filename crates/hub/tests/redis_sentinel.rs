//! The Redis broker behind Sentinel, with real processes: one primary, one
//! replica and three sentinels on loopback (`redis-server --sentinel`), two
//! hub nodes on `redis+sentinel://S1,S2,S3/NAME`, a publisher on each node
//! (each on a channel of its own) and a subscriber of both channels on both
//! nodes, while the primary fails:
//!
//! - killed mid-stream (SIGKILL to its process group; Sentinel promotes the
//!   replica after `down-after-milliseconds`);
//! - failed over by Sentinel while it lives (`SENTINEL FAILOVER`: the old
//!   primary turns replica with the nodes' connections open, so the nodes
//!   must leave it on `+switch-master` or `READONLY`).
//!
//! Each test counts, per subscriber, the messages acknowledged to the
//! publisher, delivered, and announced as lost (missed, with a `gap` push
//! between the messages before and after them); *silent losses* (missed
//! without a gap) must be 0, and the messages between two gaps arrive in
//! publish order. A failover changes Redis's `run_id`, so every subscriber
//! must also have been told of a gap (the new primary may lack writes the
//! old one acknowledged).
//!
//! Every process runs in a process group of its own, killed with the group
//! on drop; data goes to a temporary directory; each wait is bounded. A
//! missing `redis-server` fails the test with the fix.

mod cluster_support;
mod common;
mod flow;

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cluster_support::{LogCapture, Node, fast_options, find_program, free_port};
use duplex_hub::HubConfig;
use duplex_hub_proto::ServerMessage;
use flow::{Seen, count, follow, publish_all};

/// The name the sentinels monitor the primary under.
const NAME: &str = "duplexprimary";
/// Messages each publisher sends before the primary fails.
const BEFORE: u64 = 60;
/// Messages each publisher sends once the sentinels name the new primary.
const AFTER: u64 = 60;

/// A process the test started, in a process group of its own (killed with
/// the group, SIGKILL, on [`Group::kill`] and on drop), with a directory of
/// its own (removed on drop).
struct Group {
    child: Option<Child>,
    dir: PathBuf,
    port: u16,
}

impl Group {
    /// Starts `redis-server` with `args` (after a config file, if any) in
    /// `dir`; waits (at most 15 s) until it answers `PING`.
    fn redis(name: &str, config: Option<&str>, args: &[&str]) -> Self {
        let Some(program) = find_program("redis-server") else {
            panic!(
                "redis-server is missing: the sentinel tests need Debian's redis-server \
                 (`cargo xtask setup redis`, or `apt-get install redis-server`)"
            );
        };
        let port = free_port();
        let dir = std::env::temp_dir().join(format!(
            "duplex-sentinel-{name}-{}-{port}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mut command = Command::new(program);
        if let Some(config) = config {
            let file = dir.join("sentinel.conf");
            std::fs::write(&file, config.replace("PORT", &port.to_string())).expect("config");
            command.arg(&file).arg("--sentinel");
        }
        let port_text = port.to_string();
        command
            .args(["--port", &port_text, "--bind", "127.0.0.1"])
            .args(["--protected-mode", "no"])
            .arg("--dir")
            .arg(&dir)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        let child = command.spawn().expect("start redis-server");
        let group = Self {
            child: Some(child),
            dir,
            port,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            let pong = group
                .try_query::<String>(&redis::cmd("PING"))
                .is_ok_and(|p| p == "PONG");
            if pong {
                return group;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server {name} on port {port} did not answer PING");
    }

    fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn try_query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> redis::RedisResult<T> {
        let client = redis::Client::open(format!("redis://{}", self.address()))?;
        let mut conn = client.get_connection_with_timeout(Duration::from_secs(2))?;
        cmd.query(&mut conn)
    }

    fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> T {
        self.try_query(cmd).expect("redis command")
    }

    /// SIGKILL to its process group, and reaps it.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let group = rustix::process::Pid::from_child(&child);
            let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
            let _ = child.wait();
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A primary, a replica and three sentinels, ready to fail over.
struct Setup {
    primary: Group,
    replica: Group,
    sentinels: Vec<Group>,
}

impl Setup {
    fn start() -> Self {
        let primary = Group::redis("primary", None, &["--repl-diskless-sync-delay", "0"]);
        let primary_port = primary.port.to_string();
        let replica = Group::redis(
            "replica",
            None,
            &[
                "--repl-diskless-sync-delay",
                "0",
                "--replicaof",
                "127.0.0.1",
                &primary_port,
            ],
        );
        wait_until("the replica syncs", Duration::from_secs(15), || {
            info_field(&replica, "replication", "master_link_status").as_deref() == Some("up")
        });
        let config = format!(
            "port PORT\n\
             sentinel monitor {NAME} 127.0.0.1 {primary_port} 2\n\
             sentinel down-after-milliseconds {NAME} 500\n\
             sentinel failover-timeout {NAME} 3000\n\
             sentinel parallel-syncs {NAME} 1\n"
        );
        let sentinels: Vec<Group> = (0..3)
            .map(|i| Group::redis(&format!("sentinel{i}"), Some(&config), &[]))
            .collect();
        // Each sentinel must know the replica and the two other sentinels
        // (they meet through the primary every 2 s) before it can fail over.
        for sentinel in &sentinels {
            wait_until(
                "the sentinels know the replica and each other",
                Duration::from_secs(20),
                || {
                    let replicas = sentinel
                        .try_query::<Vec<redis::Value>>(
                            redis::cmd("SENTINEL").arg("replicas").arg(NAME),
                        )
                        .map_or(0, |r| r.len());
                    let others = sentinel
                        .try_query::<Vec<redis::Value>>(
                            redis::cmd("SENTINEL").arg("sentinels").arg(NAME),
                        )
                        .map_or(0, |r| r.len());
                    replicas == 1 && others == 2
                },
            );
        }
        Self {
            primary,
            replica,
            sentinels,
        }
    }

    fn url(&self) -> String {
        let addresses: Vec<String> = self.sentinels.iter().map(Group::address).collect();
        format!("redis+sentinel://{}/{NAME}", addresses.join(","))
    }

    /// The primary's port as the first sentinel that answers names it.
    fn named_primary(&self) -> Option<u16> {
        self.sentinels.iter().find_map(|sentinel| {
            let reply: Vec<String> = sentinel
                .try_query(
                    redis::cmd("SENTINEL")
                        .arg("get-master-addr-by-name")
                        .arg(NAME),
                )
                .ok()?;
            reply.get(1)?.parse().ok()
        })
    }
}

/// Waits until `done` holds, at most `within`; panics naming `what`.
fn wait_until(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One `INFO` field of `redis`, if it answers.
fn info_field(redis: &Group, section: &str, field: &str) -> Option<String> {
    let info: String = redis.try_query(redis::cmd("INFO").arg(section)).ok()?;
    info.lines()
        .find_map(|line| line.strip_prefix(&format!("{field}:")))
        .map(|v| v.trim().to_owned())
}

/// How the primary fails.
#[derive(Clone, Copy, Debug)]
enum Failure {
    /// SIGKILL to its process group.
    Kill,
    /// `SENTINEL FAILOVER`: the primary lives on as a replica.
    Failover,
}

async fn run(prefix: &str, failure: Failure) {
    let mut setup = tokio::task::spawn_blocking(Setup::start)
        .await
        .expect("setup");
    let url = setup.url();
    let config = || HubConfig {
        shutdown_grace: Duration::from_millis(500),
        ..HubConfig::default()
    };
    let a = Node::start_with(config(), &url, fast_options()).await;
    let b = Node::start_with(config(), &url, fast_options()).await;
    let channels = [format!("{prefix}:a"), format!("{prefix}:b")];
    // The last message of each channel, once known.
    let last = Arc::new(AtomicU64::new(u64::MAX));

    let mut followers = Vec::new();
    for node in [&a, &b] {
        for channel in &channels {
            let mut client = node.client().await;
            let reply = client.subscribe(channel).await;
            assert!(
                matches!(reply, ServerMessage::Subscribed { .. }),
                "{reply:?}"
            );
            followers.push((
                format!("{channel} on {}", node.addr),
                follow(client, channel.clone(), last.clone()),
            ));
        }
    }
    let progress = [Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0))];
    let mut publishers = Vec::new();
    for ((node, channel), progress) in [&a, &b].into_iter().zip(&channels).zip(&progress) {
        let client = node.client().await;
        publishers.push(publish_all(
            client,
            channel.clone(),
            progress.clone(),
            last.clone(),
        ));
    }

    // Mid-stream: fail the primary.
    let deadline = Instant::now() + Duration::from_secs(30);
    while progress.iter().any(|p| p.load(Ordering::SeqCst) < BEFORE) {
        assert!(
            Instant::now() < deadline,
            "publishers did not reach {BEFORE}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let replica_port = setup.replica.port;
    match failure {
        Failure::Kill => setup.primary.kill(),
        Failure::Failover => {
            let sentinel = &setup.sentinels[0];
            let reply: String = sentinel.query(redis::cmd("SENTINEL").arg("FAILOVER").arg(NAME));
            assert_eq!(reply, "OK");
        }
    }
    let at: Vec<u64> = progress.iter().map(|p| p.load(Ordering::SeqCst)).collect();
    eprintln!("{prefix}: {failure:?} of the primary at n = {at:?}");
    // Go on publishing until the sentinels name the replica, then AFTER more.
    let (setup, named) = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut named = setup.named_primary();
        while named != Some(replica_port) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
            named = setup.named_primary();
        }
        (setup, named)
    })
    .await
    .expect("ask the sentinels");
    assert_eq!(
        named,
        Some(replica_port),
        "the sentinels promoted the replica"
    );
    let total = progress
        .iter()
        .map(|p| p.load(Ordering::SeqCst))
        .max()
        .unwrap_or(0)
        + AFTER;
    last.store(total, Ordering::SeqCst);

    let mut published = 0;
    for publisher in publishers {
        published += publisher.await.expect("publisher");
    }
    assert_eq!(published, 2 * total, "every publish acknowledged at last");

    // The last publishes went to the new primary, not to the old one.
    let run = info_field(&setup.replica, "server", "run_id").expect("the new primary's run_id");
    for channel in &channels {
        let meta: (Option<String>, Option<u64>) = setup.replica.query(
            redis::cmd("HMGET")
                .arg(format!("duplex:{{{channel}}}:meta"))
                .arg("run")
                .arg("last"),
        );
        assert_eq!(
            meta.0.as_deref(),
            Some(&*run),
            "{channel} written on the new primary"
        );
        assert!(meta.1.is_some_and(|last| last > 0), "{channel}: {meta:?}");
    }

    let mut silent = 0;
    for (who, follower) in followers {
        let seen = follower.await.expect("follower");
        let counts = count(&seen, total);
        eprintln!(
            "{prefix}: subscriber of {who}: published {total}, delivered {}, announced as \
             lost {}, silently lost {:?}, gaps {}, out of order {:?}",
            counts.delivered, counts.announced, counts.silent, counts.gaps, counts.out_of_order
        );
        assert_eq!(
            seen.last(),
            Some(&Seen::Message(total)),
            "{who} got the last message"
        );
        assert!(counts.out_of_order.is_empty(), "{who}: {counts:?}");
        assert!(
            counts.gaps >= 1,
            "{who}: a failover starts new epochs, so a gap is due: {seen:?}"
        );
        silent += counts.silent.len();
    }
    assert_eq!(silent, 0, "messages silently lost");
    a.stop().await;
    b.stop().await;
    drop(setup);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_primary_is_replaced_through_sentinel_without_silent_loss() {
    run("sentinel-kill", Failure::Kill).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_failover_with_connections_open_loses_nothing_silently() {
    run("sentinel-failover", Failure::Failover).await;
}

/// A stand-in for a sentinel on loopback: names `127.0.0.1:PORT` (the
/// port `target` holds) as the primary, and counts how often it is asked.
async fn fake_sentinel(target: Arc<AtomicU16>, asked: Arc<AtomicUsize>) -> u16 {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let (target, asked) = (target.clone(), asked.clone());
            tokio::spawn(async move {
                let (read, mut write) = socket.into_split();
                let mut lines = BufReader::new(read).lines();
                // Commands come as RESP arrays of bulk strings.
                while let Ok(Some(head)) = lines.next_line().await {
                    let Some(count) = head.strip_prefix('*').and_then(|n| n.parse::<usize>().ok())
                    else {
                        continue;
                    };
                    let mut args = Vec::new();
                    for _ in 0..count {
                        let (Ok(Some(_)), Ok(Some(arg))) =
                            (lines.next_line().await, lines.next_line().await)
                        else {
                            return;
                        };
                        args.push(arg.to_ascii_uppercase());
                    }
                    let reply = match args.first().map(String::as_str) {
                        Some("SENTINEL") => {
                            asked.fetch_add(1, Ordering::SeqCst);
                            let port = target.load(Ordering::SeqCst).to_string();
                            format!("*2\r\n$9\r\n127.0.0.1\r\n${}\r\n{port}\r\n", port.len())
                        }
                        Some("SUBSCRIBE") => {
                            "*3\r\n$9\r\nsubscribe\r\n$14\r\n+switch-master\r\n:1\r\n".to_owned()
                        }
                        Some("PING") => "+PONG\r\n".to_owned(),
                        _ => "+OK\r\n".to_owned(),
                    };
                    if write.write_all(reply.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

/// Current-thread runtime: the hub's tasks log on the test's thread, where
/// [`LogCapture`] listens.
#[tokio::test]
async fn a_replica_named_by_a_sentinel_is_not_served_and_the_sentinel_is_asked_again() {
    let logs = LogCapture::default();
    let _logging = tracing::subscriber::set_default(logs.clone());
    let primary = Group::redis("role-primary", None, &["--repl-diskless-sync-delay", "0"]);
    let primary_port = primary.port.to_string();
    let replica = Group::redis(
        "role-replica",
        None,
        &["--replicaof", "127.0.0.1", &primary_port],
    );
    let target = Arc::new(AtomicU16::new(replica.port));
    let asked = Arc::new(AtomicUsize::new(0));
    let sentinel = fake_sentinel(target.clone(), asked.clone()).await;
    let url = format!("redis+sentinel://127.0.0.1:{sentinel}/{NAME}");
    let node = Node::launch(HubConfig::default(), &url, fast_options())
        .await
        .expect("the node starts");
    assert!(
        !node.hub.wait_ready(Duration::from_secs(2)).await,
        "ready on a replica"
    );
    assert_eq!(node.get("/readyz").await.0, 503);
    let lines = logs.lines();
    assert!(
        lines
            .iter()
            .any(|line| line.starts_with("WARN")
                && line.contains("is a replica now; asking them again")),
        "no clear warning in {lines:#?}"
    );
    let before = asked.load(Ordering::SeqCst);
    assert!(
        before >= 2,
        "the sentinel is asked on every attempt: {before}"
    );
    // The sentinel names the primary: the node gets there on its own.
    target.store(primary.port, Ordering::SeqCst);
    assert!(
        node.hub.wait_ready(Duration::from_secs(10)).await,
        "ready on the primary"
    );
    node.stop().await;
    drop(replica);
}
