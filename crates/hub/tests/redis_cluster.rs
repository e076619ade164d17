//! The Redis broker on Redis Cluster, with real processes: three primaries
//! and three replicas on loopback (`redis-server --cluster-enabled yes`,
//! joined by `redis-cli --cluster create … --cluster-replicas 1`), two hub
//! nodes on `redis+cluster://N1,N2,N3`, a publisher on each node (each on a
//! channel of its own) and a subscriber of both channels on both nodes:
//!
//! - steady flow: every message delivered, in order, no gap;
//! - the primary of a channel's slot killed mid-stream (SIGKILL to its
//!   process group; the cluster promotes its replica);
//! - a channel's slot migrated to another primary mid-stream
//!   (`CLUSTER SETSLOT … IMPORTING/MIGRATING`, `MIGRATE`, `SETSLOT … NODE`).
//!
//! - the server API on Redis Cluster: a publish, a server-side subscribe
//!   and a `disconnect` through node A reach connections on node B, `info`
//!   lists both nodes, `history_remove` works, and the controls still reach
//!   B after the primary of the controls' slot (`{duplex}:control`) is
//!   killed.
//!
//! - lifecycle events (webhooks) and the per-user limit on Redis Cluster:
//!   the registry's keys share one slot (`{duplex}:ev:…`), its scripts and
//!   its stream work there as on one Redis.
//!
//! Each stream test counts, per subscriber, the messages acknowledged to the
//! publisher, delivered, and announced as lost (missed, with a `gap` push
//! between the messages before and after them); *silent losses* must be 0,
//! and the messages between two gaps arrive in publish order.
//!
//! Every process runs in a process group of its own, killed with the group
//! on drop; data goes to a temporary directory; each wait is bounded. A
//! missing `redis-server` or `redis-cli` fails the test with the fix.

mod api_support;
mod cluster_support;
mod common;
mod flow;
mod webhook_support;

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use api_support::{api_config, post, token};
use cluster_support::{Node, fast_options, find_program, free_port};
use common::TestClient;
use duplex_hub::{ApiServer, HubConfig};
use duplex_hub_proto::{Command as HubCommand, ServerMessage};
use flow::{Seen, count, follow, publish_all};
use serde_json::json;

/// Messages each publisher sends before the trouble (or in all, steady).
const BEFORE: u64 = 60;
/// Messages each publisher sends once the cluster is whole again.
const AFTER: u64 = 60;

/// A `redis-server` in cluster mode that the test started, in a process
/// group of its own (killed with the group, SIGKILL, on [`Group::kill`] and
/// on drop), with a directory of its own (removed on drop).
struct Group {
    child: Option<Child>,
    dir: PathBuf,
    port: u16,
}

fn program(name: &str) -> PathBuf {
    find_program(name).unwrap_or_else(|| {
        panic!(
            "{name} is missing: the Redis Cluster tests need Debian's redis-server and \
             redis-tools (`cargo xtask setup redis`, or `apt-get install redis-server`)"
        )
    })
}

impl Group {
    /// Starts a cluster-enabled `redis-server`; waits (at most 15 s) until
    /// it answers `PING`. A server that exits at once (its port, or its
    /// cluster bus port 10000 above, taken meanwhile by another test) is
    /// started again on another port, up to three times.
    fn start(name: &str) -> Self {
        for _ in 0..3 {
            if let Some(group) = Self::try_start(name) {
                return group;
            }
        }
        panic!("redis-server {name} exited at start three times (ports taken?)");
    }

    /// One attempt of [`Group::start`]: `None` when the server exited.
    fn try_start(name: &str) -> Option<Self> {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!(
            "duplex-rcluster-{name}-{}-{port}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let port_text = port.to_string();
        let child = Command::new(program("redis-server"))
            .args(["--port", &port_text, "--bind", "127.0.0.1"])
            .args(["--protected-mode", "no", "--save", "", "--appendonly", "no"])
            .args(["--cluster-enabled", "yes", "--cluster-node-timeout", "1000"])
            .args(["--cluster-config-file", "nodes.conf"])
            .args(["--repl-diskless-sync-delay", "0"])
            .arg("--dir")
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("start redis-server");
        let mut group = Self {
            child: Some(child),
            dir,
            port,
        };
        let mut exited = false;
        wait_until(
            &format!("redis-server {name} answers PING"),
            Duration::from_secs(15),
            || {
                exited = group
                    .child
                    .as_mut()
                    .is_some_and(|child| matches!(child.try_wait(), Ok(Some(_))));
                exited
                    || group
                        .try_query::<String>(&redis::cmd("PING"))
                        .is_ok_and(|p| p == "PONG")
            },
        );
        (!exited).then_some(group)
    }

    fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn alive(&self) -> bool {
        self.child.is_some()
    }

    fn try_query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> redis::RedisResult<T> {
        let client = redis::Client::open(format!("redis://{}", self.address()))?;
        let mut conn = client.get_connection_with_timeout(Duration::from_secs(2))?;
        cmd.query(&mut conn)
    }

    fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> T {
        self.try_query(cmd).expect("redis command")
    }

    fn id(&self) -> String {
        self.query(redis::cmd("CLUSTER").arg("MYID"))
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

/// A live primary as `CLUSTER NODES` shows it: id, port, slot ranges.
type Primary = (String, u16, Vec<(u16, u16)>);

/// Three primaries with a replica each.
struct Setup {
    nodes: Vec<Group>,
}

impl Setup {
    fn start() -> Self {
        let nodes: Vec<Group> = (0..6).map(|i| Group::start(&format!("n{i}"))).collect();
        let mut create = Command::new(program("redis-cli"));
        create.args(["--cluster", "create"]);
        for node in &nodes {
            create.arg(node.address());
        }
        let output = create
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("run redis-cli --cluster create");
        assert!(
            output.status.success(),
            "redis-cli --cluster create: {}",
            String::from_utf8_lossy(&output.stdout)
        );
        let setup = Self { nodes };
        setup.wait_whole("the cluster forms");
        setup
    }

    /// Waits until every live node says the cluster is ok and knows three
    /// primaries with a live replica each.
    fn wait_whole(&self, what: &str) {
        wait_until(what, Duration::from_secs(30), || {
            self.nodes.iter().filter(|n| n.alive()).all(|node| {
                let ok = node
                    .try_query::<String>(redis::cmd("CLUSTER").arg("INFO"))
                    .is_ok_and(|info| info.contains("cluster_state:ok"));
                ok && self.primaries_of(node).len() == 3
            })
        });
    }

    /// `CLUSTER NODES` as `node` sees it: (id, port, flags, slots) of the
    /// live primaries.
    fn primaries_of(&self, node: &Group) -> Vec<Primary> {
        let Ok(text) = node.try_query::<String>(redis::cmd("CLUSTER").arg("NODES")) else {
            return Vec::new();
        };
        text.lines()
            .filter_map(|line| {
                let fields: Vec<&str> = line.split(' ').collect();
                let flags = fields.get(2)?;
                if !flags.contains("master") || flags.contains("fail") {
                    return None;
                }
                let port = fields[1].split(['@', ':']).nth(1)?.parse().ok()?;
                let slots = fields[8..]
                    .iter()
                    .filter_map(|range| {
                        let (a, b) = range.split_once('-').unwrap_or((range, range));
                        Some((a.parse().ok()?, b.parse().ok()?))
                    })
                    .collect();
                Some((fields[0].to_owned(), port, slots))
            })
            .collect()
    }

    fn any(&self) -> &Group {
        self.nodes.iter().find(|n| n.alive()).expect("a live node")
    }

    /// The index of the process whose port is `port`.
    fn at(&self, port: u16) -> usize {
        self.nodes
            .iter()
            .position(|n| n.port == port)
            .expect("a node of the test")
    }

    /// The slot of `channel`'s keys.
    fn slot_of(&self, channel: &str) -> u16 {
        self.any().query(
            redis::cmd("CLUSTER")
                .arg("KEYSLOT")
                .arg(format!("duplex:{{{channel}}}:meta")),
        )
    }

    /// The port of the primary serving `slot`, as a live node sees it.
    fn owner(&self, slot: u16) -> Option<u16> {
        self.primaries_of(self.any())
            .into_iter()
            .find(|(_, _, slots)| slots.iter().any(|&(a, b)| a <= slot && slot <= b))
            .map(|(_, port, _)| port)
    }

    fn url(&self) -> String {
        let addresses: Vec<String> = self.nodes[..3].iter().map(Group::address).collect();
        format!("redis+cluster://{}", addresses.join(","))
    }

    /// Moves `slot` from its primary to another one, keys included.
    fn migrate(&self, slot: u16) {
        let source = &self.nodes[self.at(self.owner(slot).expect("an owner"))];
        let target_port = self
            .primaries_of(source)
            .into_iter()
            .map(|(_, port, _)| port)
            .find(|&port| port != source.port)
            .expect("another primary");
        let target = &self.nodes[self.at(target_port)];
        let (source_id, target_id) = (source.id(), target.id());
        let setslot = |node: &Group, how: &str, id: &str| {
            let reply: String = node.query(
                redis::cmd("CLUSTER")
                    .arg("SETSLOT")
                    .arg(slot)
                    .arg(how)
                    .arg(id),
            );
            assert_eq!(reply, "OK");
        };
        setslot(target, "IMPORTING", &source_id);
        setslot(source, "MIGRATING", &target_id);
        loop {
            let keys: Vec<String> = source.query(
                redis::cmd("CLUSTER")
                    .arg("GETKEYSINSLOT")
                    .arg(slot)
                    .arg(100),
            );
            if keys.is_empty() {
                break;
            }
            let reply: String = source.query(
                redis::cmd("MIGRATE")
                    .arg("127.0.0.1")
                    .arg(target.port)
                    .arg("")
                    .arg(0)
                    .arg(5000)
                    .arg("KEYS")
                    .arg(&keys),
            );
            assert!(reply == "OK" || reply == "NOKEY", "{reply}");
        }
        setslot(target, "NODE", &target_id);
        setslot(source, "NODE", &target_id);
        for node in self.nodes.iter().filter(|n| n.alive()) {
            let _ = node.try_query::<String>(
                redis::cmd("CLUSTER")
                    .arg("SETSLOT")
                    .arg(slot)
                    .arg("NODE")
                    .arg(&target_id),
            );
        }
        eprintln!(
            "slot {slot} moved from :{} to :{}",
            source.port, target.port
        );
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

/// What happens mid-stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Trouble {
    /// Nothing: every message must arrive, without a gap.
    None,
    /// SIGKILL to the primary of the first channel's slot.
    KillPrimary,
    /// The first channel's slot moves to another primary.
    MigrateSlot,
}

async fn run(prefix: &str, trouble: Trouble) {
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
    let last = Arc::new(AtomicU64::new(if trouble == Trouble::None {
        BEFORE + AFTER
    } else {
        u64::MAX
    }));

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
                channel.clone(),
                follow(client, channel.clone(), last.clone()),
            ));
        }
    }
    // Presence spans the nodes.
    let mut probe = a.client().await;
    let reply = probe
        .call(HubCommand::Presence {
            channel: channels[0].clone(),
        })
        .await;
    match reply {
        ServerMessage::Presence { clients, .. } => {
            assert_eq!(clients.len(), 2, "{clients:?}");
        }
        other => panic!("presence: {other:?}"),
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

    if trouble != Trouble::None {
        let deadline = Instant::now() + Duration::from_secs(30);
        while progress.iter().any(|p| p.load(Ordering::SeqCst) < BEFORE) {
            assert!(
                Instant::now() < deadline,
                "publishers did not reach {BEFORE}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let slot = setup.slot_of(&channels[0]);
        let owner = setup.owner(slot).expect("the slot's primary");
        setup = tokio::task::spawn_blocking(move || {
            match trouble {
                Trouble::KillPrimary => {
                    let at = setup.at(owner);
                    setup.nodes[at].kill();
                    eprintln!("killed the primary :{owner} of slot {slot}");
                    wait_until("a replica is promoted", Duration::from_secs(30), || {
                        setup.owner(slot).is_some_and(|p| p != owner)
                    });
                    setup.wait_whole("the cluster is whole again");
                }
                Trouble::MigrateSlot => setup.migrate(slot),
                Trouble::None => {}
            }
            setup
        })
        .await
        .expect("trouble");
        let at: Vec<u64> = progress.iter().map(|p| p.load(Ordering::SeqCst)).collect();
        eprintln!("{prefix}: {trouble:?} done at n = {at:?}");
        let total = at.iter().max().copied().unwrap_or(0) + AFTER;
        last.store(total, Ordering::SeqCst);
    }
    let total = last.load(Ordering::SeqCst);

    let mut published = 0;
    for publisher in publishers {
        published += publisher.await.expect("publisher");
    }
    assert_eq!(published, 2 * total, "every publish acknowledged at last");

    let mut silent = 0;
    for (who, channel, follower) in followers {
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
        match trouble {
            Trouble::None => assert_eq!(
                (counts.delivered as u64, counts.gaps),
                (total, 0),
                "{who}: steady flow"
            ),
            Trouble::KillPrimary if channel == channels[0] => assert!(
                counts.gaps >= 1,
                "{who}: a promoted replica starts new epochs, so a gap is due: {seen:?}"
            ),
            _ => {}
        }
        silent += counts.silent.len();
    }
    assert_eq!(silent, 0, "messages silently lost");
    a.stop().await;
    b.stop().await;
    drop(setup);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_flow_across_two_nodes_through_redis_cluster_in_order() {
    run("rcluster-steady", Trouble::None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_primary_is_replaced_by_its_replica_without_silent_loss() {
    run("rcluster-kill", Trouble::KillPrimary).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_migrated_mid_stream_loses_nothing_silently() {
    run("rcluster-migrate", Trouble::MigrateSlot).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_on_redis_cluster_reaches_other_nodes_across_a_killed_primary() {
    let setup = tokio::task::spawn_blocking(Setup::start)
        .await
        .expect("setup");
    let url = setup.url();
    let a = Node::start_with(api_config(), &url, fast_options()).await;
    let b = Node::start_with(api_config(), &url, fast_options()).await;
    let api = ApiServer::bind(a.hub.clone()).await.unwrap();
    let api_addr = api.local_addr();
    tokio::spawn(api.run(std::future::pending()));

    let mut ada = TestClient::open(&b.url(), |r| r).await.unwrap();
    ada.connect(Some(&token("ada"))).await;
    let mut watcher = b.client().await;
    watcher.subscribe("news").await;

    // A publish through A's API reaches B's subscriber.
    let reply = post(
        api_addr,
        "publish",
        json!({"channel": "news", "data": "hi"}),
    )
    .await;
    assert_eq!(
        (reply["offset"].as_u64(), reply["scope"].as_str()),
        (Some(1), Some("cluster")),
        "{reply}"
    );
    let message = watcher
        .wait_for(|m| matches!(m, ServerMessage::Message(_)))
        .await;
    assert!(matches!(message, ServerMessage::Message(p) if p.offset == 1));

    // A server-side subscribe through A reaches Ada on B; both nodes
    // listen to the controls' sharded topic.
    let reply = post(
        api_addr,
        "subscribe",
        json!({"user": "ada", "channel": "room"}),
    )
    .await;
    assert_eq!(reply["nodes"], 2, "both nodes listen: {reply}");
    let push = ada
        .wait_for(|m| matches!(m, ServerMessage::Subscribed { .. }))
        .await;
    assert!(
        matches!(&push, ServerMessage::Subscribed { id: None, channel, .. } if channel == "room"),
        "{push:?}"
    );

    // `history_remove` through the cluster connection (the channel's keys
    // share its slot).
    for n in 2..=3 {
        post(api_addr, "publish", json!({"channel": "news", "data": n})).await;
    }
    post(api_addr, "history_remove", json!({"channel": "news"})).await;
    let page = post(api_addr, "history", json!({"channel": "news"})).await;
    assert_eq!(
        (
            page["publications"].as_array().unwrap().len(),
            page["offset"].as_u64()
        ),
        (0, Some(3)),
        "{page}"
    );

    // `info` lists both nodes (their reports are in different slots).
    tokio::time::sleep(fast_options().heartbeat * 2).await;
    let info = post(api_addr, "info", json!({})).await;
    let nodes = info["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 2, "{info}");
    let connections: u64 = nodes
        .iter()
        .map(|n| n["connections"].as_u64().unwrap())
        .sum();
    assert_eq!(connections, 2, "ada and the watcher, on B: {info}");

    // The primary of the controls' slot dies; its replica takes over.
    let setup = tokio::task::spawn_blocking(move || {
        let mut setup = setup;
        let slot: u16 = setup
            .any()
            .query(redis::cmd("CLUSTER").arg("KEYSLOT").arg("{duplex}:control"));
        let owner = setup.owner(slot).expect("the controls' primary");
        let at = setup.at(owner);
        setup.nodes[at].kill();
        eprintln!("killed the primary :{owner} of the controls' slot {slot}");
        wait_until("a replica is promoted", Duration::from_secs(30), || {
            setup.owner(slot).is_some_and(|p| p != owner)
        });
        setup
    })
    .await
    .expect("failover");

    // Both nodes listen again (controls are at most once: ask until both
    // answer, bounded).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let reply = post(
            api_addr,
            "subscribe",
            json!({"user": "ada", "channel": "room2"}),
        )
        .await;
        if reply["nodes"] == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the nodes did not listen to the controls again: {reply}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // `connections` through A finds Ada on B: asked and answered over the
    // sharded control topic.
    let found = post(api_addr, "connections", json!({"user": "ada"})).await;
    assert_eq!(
        (&found["connections"][0]["client"], &found["nodes"]),
        (&json!(ada.client_id), &json!(2)),
        "{found}"
    );
    assert_eq!(found["connections"].as_array().unwrap().len(), 1, "{found}");

    // A disconnect through A closes Ada's connection on B with its code.
    let reply = post(
        api_addr,
        "disconnect",
        json!({"user": "ada", "code": 4321, "reason": "bye"}),
    )
    .await;
    assert_eq!(reply["nodes"], 2, "{reply}");
    let close = ada.closed().await;
    assert_eq!(
        (u16::from(close.code), close.reason.as_str()),
        (4321, "bye")
    );
    a.stop().await;
    b.stop().await;
    drop(setup);
}

#[tokio::test]
async fn webhooks_and_the_per_user_limit_work_on_redis_cluster() {
    use webhook_support::{Receiver, count, unique};
    let setup = tokio::task::spawn_blocking(Setup::start)
        .await
        .expect("setup");
    let url = setup.url();
    let backend = Receiver::start().await;
    let config = || {
        let mut config = api_config();
        config.limits.max_connections_per_user = 1;
        config.webhooks = duplex_hub::config::WebhooksConfig {
            url: Some(backend.url()),
            secret: Some(webhook_support::SECRET.into()),
            offline_grace: Duration::from_millis(300),
            vacated_grace: Duration::from_millis(300),
            retry_min: Duration::from_millis(50),
            retry_max: Duration::from_millis(300),
            ..Default::default()
        };
        config
    };
    let a = Node::start_with(config(), &url, fast_options()).await;
    let b = Node::start_with(config(), &url, fast_options()).await;
    let mut ada = TestClient::open(&a.url(), |r| r).await.unwrap();
    ada.connect(Some(&token("ada"))).await;
    ada.subscribe("room").await;
    // The limit (1) counts Ada's connection on A at B.
    let mut again = TestClient::open(&b.url(), |r| r).await.unwrap();
    again
        .send(HubCommand::Connect {
            token: Some(token("ada")),
            name: None,
        })
        .await;
    assert_eq!(u16::from(again.closed().await.code), 4029);
    let _ = ada.ws.close(duplex::CloseCode::NORMAL, "bye").await;
    let _ = ada.closed().await;
    backend
        .wait_until(Duration::from_secs(10), |e| {
            count(e, "user_offline", "user", "ada") == 1
                && count(e, "channel_vacated", "channel", "room") == 1
        })
        .await;
    // (Both nodes deliver from the one stream: compared as a set.)
    let mut kinds: Vec<String> = unique(&backend.events())
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_owned())
        .collect();
    kinds.sort();
    assert_eq!(
        kinds,
        [
            "channel_occupied",
            "channel_vacated",
            "connected",
            "disconnected",
            "subscribed",
            "user_offline",
            "user_online"
        ]
    );
    assert_eq!(backend.forged(), 0);
}
