//! The Redis broker: several hub nodes as one cluster.
//!
//! Every node connects to the same Redis (`redis://`, or `rediss://` over
//! TLS; or the primary that Sentinel names, `redis+sentinel://`, followed
//! across failovers by the private `sentinel` module; or a Redis Cluster,
//! `redis+cluster://`, served by the private `cluster` module, which says
//! what differs there: see [`RedisBroker::start`]). Offsets, epochs, history,
//! idempotency keys and presence live in Redis; messages, join/leave events
//! and signals travel over Redis pub/sub, one topic per channel, to the
//! nodes that have local subscribers of that channel. Each node encodes a
//! message's WebSocket frame once, when it receives it, and shares it among
//! all its local subscribers.
//!
//! # Redis key layout
//!
//! `P` is the key prefix ([`RedisOptions::prefix`], `duplex` by default),
//! `C` a channel name, `N` a node id. The `{C}` hash tag keeps a channel's
//! keys together. On one Redis the scripts also touch the node's own
//! `P:node:N:pres`; on Redis Cluster that key is written by a separate
//! command beside the script (see the `cluster` module).
//!
//! | key / topic        | type   | what                                                          |
//! |--------------------|--------|---------------------------------------------------------------|
//! | `P:{C}:meta`       | hash   | `epoch` (8 base-36 chars), `last` (the latest offset), `run` (the `run_id` of the Redis process that wrote them: see *Lost writes*), `bytes` (of `hist`'s entries); expires [`RedisOptions::meta_ttl`] (or the history TTL if longer) after the last publish or subscribe |
//! | `P:{C}:hist`       | list   | the history, oldest first, at most `history_size` entries and `history_bytes` bytes, none older than `history_ttl` (the list expires `history_ttl` after the last publish) |
//! | `P:{C}:keys`       | hash   | idempotency key → offset, for the entries still in `hist`      |
//! | `P:{C}:pres`       | hash   | client id → `"N user"`: the channel's presence, on every node  |
//! | `P:node:N:pres`    | hash   | `"client C"` → user: node `N`'s presence entries (for cleanup) |
//! | `P:nodes`          | zset   | node id → its last heartbeat (Redis time, ms)                   |
//! | `P:node:N:info`    | string | node `N`'s report for the server API's `info` and `channels` (JSON: id, version, connections, uptime, channel → local subscribers), written with each heartbeat, expiring after `node_expiry`; one key per command on Redis Cluster |
//! | `P:m:C` (pub/sub)  | topic  | the channel's envelopes: messages, joins, leaves, signals; `P:m:{C}` with sharded pub/sub on Redis Cluster (same slot as the channel's keys) |
//! | `P:revoked`        | hash   | the revocations in force (`t:<jti>` / `u:<user>` → `"<issued_before> <expire_at>"`), at most `MAX_REVOCATIONS`, expiring with the latest; `{P}:revoked` on Redis Cluster; see `revocation` |
//! | `P:control` (pub/sub) | topic | the server API's controls of connections (`crate::control`), JSON; every node listens; `{P}:control` with sharded pub/sub on Redis Cluster (one fixed slot) |
//!
//! Entries and envelopes are laid out as the private `envelope` module
//! documents; the Lua scripts that write them are in `scripts`; the node's
//! pub/sub interest (which channels it is subscribed to, batched
//! `SUBSCRIBE`s, re-subscribing after a reconnect, and the dispatch of what
//! arrives to local subscribers) is in `interest`; the link (connect, serve
//! pub/sub, heartbeat, catch up after a reconnect) is in `link`, how long
//! its waits last in `liveness`, opening the client (URLs, TLS, errors) in
//! `open`, Sentinel and Redis Cluster in `sentinel` and `cluster`, and the
//! server API's reads (node reports, history) in `server_api`
//! (`src/broker/redis/`).
//!
//! # Round-trip budget
//!
//! - **publish**: exactly one round trip, `EVALSHA` of the publish script:
//!   idempotency check, offset (`HINCRBY`), history append and trim, and
//!   `PUBLISH` of the envelope, atomically, so pub/sub order is offset order.
//!   The node loads its scripts each time it (re)connects, before it is
//!   ready (all in one round trip, waited for up to the node expiry however
//!   busy Redis is: `liveness`, *A fresh link*); should Redis lose them
//!   anyway (`SCRIPT FLUSH`), redis-rs loads the script again on
//!   `NOSCRIPT`, at the cost of a round trip.
//!   A session's publishes reach Redis in the order sent (see
//!   `crate::session`): one connection, a deep enough command queue
//!   ([`PIPELINE_BUFFER`]), scripts loaded up front.
//! - **subscribe**: one round trip for the history read (which also enters
//!   presence and publishes the join), plus a `SUBSCRIBE` round trip on the
//!   pub/sub connection when the channel is new on this node.
//! - **unsubscribe**: one round trip when presence is on (leave), plus an
//!   `UNSUBSCRIBE` when the last local subscriber of the channel left.
//! - **signal**: one `PUBLISH`; **presence**: one `HGETALL`.
//! - **control** (server API): one `PUBLISH` to `P:control` (on Redis
//!   Cluster, `SPUBLISH` to `{P}:control`); its reply says how many nodes
//!   listen. Delivery is at most once: a node whose
//!   link is down then does not get it.
//! - **per node**: one heartbeat script every [`RedisOptions::heartbeat`]
//!   plus a `PING` on the pub/sub connection, plus a `SET` of its report
//!   (`P:node:N:info`): the server API's `info` and `channels` read every
//!   live node's report (one `MGET`; on Redis Cluster one `GET` per node,
//!   the keys being in different slots), so they are at most one heartbeat
//!   old.
//!
//! # Invariants (beyond the [`Broker`] ones)
//!
//! - **Interest.** A node is subscribed (pub/sub) exactly to the channels
//!   with local subscribers: `SUBSCRIBE` before the first local subscriber
//!   reads history, `UNSUBSCRIBE` once the last one left. Changes of interest
//!   are serialised on the node, so they reach Redis in the order they were
//!   decided (the `interest` module states the rules).
//! - **Subscribe is atomic with live delivery.** A subscriber is registered
//!   as *joining* (live envelopes are buffered for it) before the
//!   `SUBSCRIBE` is confirmed, the history is read after it, the replay is
//!   queued, and then the buffer is released skipping the offsets the read
//!   already covered. Every later message reaches it through pub/sub. The
//!   rule is `duplex_hub_proto::fanout`'s (`join`, `release`).
//! - **Per-subscriber position.** Each local subscriber remembers the epoch
//!   and the last offset it was given; a message at or below it is skipped
//!   (no duplicate), a message of another epoch or beyond the next offset is
//!   preceded by a `gap` push (no silent loss): `Fanout::message`.
//! - **Redis down.** Local connections stay; `is_ready` is false; publish,
//!   subscribe, presence and signal fail with [`BrokerError::Unavailable`].
//!   The node reconnects with exponential backoff (with jitter, from
//!   [`RedisOptions::backoff_min`] to [`RedisOptions::backoff_max`]),
//!   re-subscribes its channels, and for each channel reads the history
//!   after the position of its local subscribers: what the history still
//!   holds (same epoch) is delivered in order; otherwise the subscribers get a
//!   `gap` push with the channel's current epoch and offset. Then it re-enters
//!   its presence and turns ready again. Behind Sentinel, every attempt asks
//!   the sentinels for the primary, and a `+switch-master` announcement or a
//!   `READONLY` answer ends the link as a lost connection does.
//! - **Presence of a dead node** disappears within
//!   `node_expiry + heartbeat` (20 s by default): every node heartbeats every
//!   [`RedisOptions::heartbeat`] (5 s) and, in the same script, removes the
//!   presence of nodes silent for [`RedisOptions::node_expiry`] (15 s),
//!   publishing a `leave` for each of their clients.
//! - **Hub channels are node-local.** Channels whose name starts with `$`
//!   (`$sys:stats`) are served by an in-memory broker of this node: each
//!   node's dashboard shows that node.
//! - **No offset names two messages** (see *Lost writes*).
//!
//! # Lost writes
//!
//! Redis can come back with less than it acknowledged: restarted from an
//! older RDB snapshot, from an AOF whose tail was not yet on disk
//! (`appendfsync everysec` loses up to a second), or replaced by a replica
//! that lagged (a failover). Its channels are then in the same epoch at a
//! lower offset, and the next publishes would get offsets that already
//! named other messages: subscribers would skip them as seen, and a client
//! recovering with `since` would be told `recovered: true` without them.
//! Two rules, kept by the scripts atomically with each publish and read,
//! make such a channel start a new epoch instead (so every subscriber gets a
//! `gap` push, and `since` an old position gets `gap: true`):
//!
//! - **Another Redis process.** On connecting, a node reads Redis's
//!   `run_id` (`INFO server`; the hub's Redis user needs `INFO`), which is
//!   new for every start of `redis-server` and differs between a primary
//!   and its replicas. Each script is given it, and a channel whose `meta`
//!   was written under another `run_id` starts a new epoch (empty history)
//!   at its first use. This covers a restart and a failover whatever they
//!   lost, whether or not any node saw the channel, and before anyone can
//!   publish to it. The cost: a restart or failover that lost nothing
//!   starts new epochs too (the hub cannot tell; clients resync from a
//!   `gap`). A node that sees the `run_id` change logs it once.
//! - **Behind what a node saw** (same process: `DEBUG RELOAD`, a restore of
//!   keys). Each publish and read passes the position this node saw the
//!   channel reach, `Fanout::check`; a channel in that epoch but behind it
//!   starts a new epoch (`duplex_hub_proto::log::behind`). This covers
//!   publishes and subscribes on nodes with subscribers of the channel, and
//!   every node's catch-up after a reconnect.
//!
//! What the hub promises a publisher: its acknowledgement (`offset` in the
//! channel's epoch) names its message and no other; the message is as
//! durable as Redis makes it. If Redis loses it, a subscriber that had not
//! received it is told of a gap, and none is told that a later message is
//! the next one. Limits: a same-process loss (same `run_id`) goes unseen
//! while the channel is published to only from nodes without subscribers of
//! it (their messages may reuse offsets that subscribers elsewhere skip as
//! seen, until a node with subscribers publishes, subscribes or catches
//! up); a `meta` written by a node that predates `run` adopts the first
//! `run_id` it meets. Presence is not history: after a loss, entries of
//! clients that left meanwhile may linger until their node leaves or dies.

mod cluster;
mod envelope;
mod interest;
mod link;
mod liveness;
mod open;
mod revocation;
mod scripts;
mod sentinel;
mod server_api;

pub use self::cluster::ClusterUrlError;
use self::link::run_link;
pub use self::open::RedisSetupError;
use self::open::{connect_error, open_client};
pub use self::sentinel::SentinelUrlError;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use duplex::tls::rustls::crypto::CryptoProvider;
use duplex::tls::rustls::pki_types::CertificateDer;
use duplex::tls::rustls::pki_types::pem::PemObject;
use duplex_hub_proto::fanout::{CatchUp, Fanout, Push};
use duplex_hub_proto::is_hub_channel;
use duplex_hub_proto::log::{history_reads, history_start};
use duplex_hub_proto::{
    ClientInfo, Data, HistoryBounds, Publication, ServerMessage, plan_recovery,
};
use futures_util::StreamExt;
use redis::aio::{MultiplexedConnection, PubSubSink, PubSubStream};
use redis::{
    AsyncConnectionConfig, ConnectionAddr, IntoConnectionInfo, RedisError, TlsCertificates, Value,
};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use self::cluster::{ClusterUrl, Nodes};
use self::envelope::{Entry, Envelope, decode_body, encode_body, parse_entry, parse_envelope};
use self::interest::{Interest, Sink};
use self::scripts::Scripts;
use self::sentinel::{SentinelUrl, Sentinels};
use super::memory::MemoryBroker;
use super::{
    BoxFuture, Broker, BrokerError, ChannelCount, HistoryPage, HistoryQuery, Publish, Published,
    Subscribe, Subscribed, Subscriber, matches_pattern, member_id_of, new_epoch,
};
use crate::config::HubConfig;
use crate::control::{Listed, Lookup, NodeMessage, Registry};
use crate::frame::{SharedMessage, prepare};
use crate::metrics::Metrics;
use crate::outbox::PublishTime;

/// Tuning of the Redis broker. The defaults suit production; tests shorten
/// the heartbeat to see a dead node leave quickly.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// Prefix of every key and topic (default `duplex`). Clusters sharing
    /// one Redis need different prefixes.
    pub prefix: String,
    /// How often a node proves it is alive (default 5 s).
    pub heartbeat: Duration,
    /// How long a silent node stays in presence (default 15 s); a dead
    /// node's clients leave presence within `node_expiry + heartbeat`.
    pub node_expiry: Duration,
    /// Longest wait for one Redis command or connection (default 2 s).
    pub command_timeout: Duration,
    /// First wait before reconnecting (default 100 ms); doubles per failure.
    pub backoff_min: Duration,
    /// Longest wait between reconnection attempts (default 5 s).
    pub backoff_max: Duration,
    /// How long a channel's epoch and offset outlive its last publish or
    /// subscribe (default 24 h; at least the namespace's history TTL).
    pub meta_ttl: Duration,
}

impl Default for RedisOptions {
    fn default() -> Self {
        Self {
            prefix: "duplex".to_owned(),
            heartbeat: Duration::from_secs(5),
            node_expiry: Duration::from_secs(15),
            command_timeout: Duration::from_secs(2),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            meta_ttl: Duration::from_secs(24 * 3600),
        }
    }
}

/// A cluster node's broker. See the module docs.
pub(crate) struct RedisBroker {
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    link: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for RedisBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBroker")
            .field("node", &self.shared.node)
            .field("ready", &self.shared.ready.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// What the broker's methods and its link task share.
struct Shared {
    config: Arc<HubConfig>,
    metrics: Arc<Metrics>,
    options: RedisOptions,
    /// This node's id in Redis (also the prefix of its client ids).
    node: String,
    /// `P:m:`, the prefix of channel topics.
    topic_prefix: String,
    /// Where Redis is: one address, or the primary the sentinels name.
    target: Target,
    /// `P:control`, the topic of the server API's controls (`{P}:control`,
    /// sharded, on Redis Cluster).
    control_topic: String,
    /// This node's sessions, which the controls apply to.
    registry: Arc<Registry>,
    /// When the broker started (the report's uptime).
    started: std::time::Instant,
    scripts: Scripts,
    /// `$` channels: this node only.
    local: MemoryBroker,
    /// Connected, resubscribed and caught up.
    ready: AtomicBool,
    /// The command connection while connected, and the `run_id` of the
    /// Redis process it reaches (empty on Redis Cluster: the scripts read
    /// the `run_id` of the shard they run on).
    conn: RwLock<Option<(Conn, Arc<str>)>>,
    /// The `run_id` of the Redis process last connected to (to tell an
    /// operator it changed).
    last_run: Mutex<Option<Arc<str>>>,
    /// Changes of pub/sub interest, one at a time (see `interest`).
    interest: tokio::sync::Mutex<Interest>,
    /// Channels waiting for `interest` to be subscribed: on one Redis, the
    /// holder subscribes every one of them in one `SUBSCRIBE` (a burst of
    /// new channels costs a round trip per batch, not per channel).
    wanted: Mutex<Vec<Arc<Slot>>>,
    /// A copy of `interest.generation`, for the fast path.
    generation: AtomicU64,
    /// Channels with local subscribers (live or joining).
    channels: Mutex<HashMap<Arc<str>, Arc<Slot>>>,
    /// Presence removals that failed while Redis was away; retried.
    pending_leaves: Mutex<Vec<PendingLeave>>,
    /// A command failed in a way that suggests the connection is gone.
    suspect: Notify,
    /// Answers from Redis (script replies, pub/sub messages): a wait on a
    /// busy link goes on while they come ([`liveness`]).
    progress: liveness::Progress,
    /// Behind Sentinel: a command met a replica (`READONLY`), so the link
    /// ends and the primary is asked for again.
    demoted: Notify,
    /// On Redis Cluster: topics whose `SSUBSCRIBE` this node sent for a new
    /// channel and whose confirmation has not come back yet (no catch-up
    /// needed when it does; any other confirmation means a re-subscription,
    /// after which the channel is caught up).
    confirming: Mutex<HashMap<String, usize>>,
    /// The server API's `connections` questions this node waits on, by id
    /// (at most `server_api::MAX_LOOKUPS`): where the nodes' answers go.
    lookups: Mutex<HashMap<u64, tokio::sync::mpsc::Sender<(String, Listed)>>>,
}

/// The command connection: to one Redis, or to a Redis Cluster (commands
/// routed by key slot, following `MOVED`/`ASK` and failovers).
#[derive(Clone)]
pub(crate) enum Conn {
    /// One Redis (direct or behind Sentinel).
    Single(MultiplexedConnection),
    /// Redis Cluster (RESP3; sharded pub/sub pushes go to the link).
    Cluster(redis::cluster_async::ClusterConnection),
}

impl redis::aio::ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> redis::RedisFuture<'a, Value> {
        match self {
            Self::Single(conn) => conn.req_packed_command(cmd),
            Self::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            Self::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(conn) => conn.get_db(),
            Self::Cluster(conn) => conn.get_db(),
        }
    }
}

/// Where the node finds Redis.
enum Target {
    /// One address (`redis://`, `rediss://`).
    Direct(redis::Client),
    /// The primary the sentinels name (`redis+sentinel://`,
    /// `rediss+sentinel://`), asked again on every connect.
    Sentinel(Sentinels),
    /// A Redis Cluster (`redis+cluster://`, `rediss+cluster://`): the seed
    /// nodes of the URL, and the cluster's slot map learnt from them.
    Cluster(Nodes),
}

/// One channel with local subscribers.
struct Slot {
    name: Arc<str>,
    topic: String,
    state: Mutex<SlotState>,
}

#[derive(Default)]
struct SlotState {
    /// The local subscribers and their positions: who gets what, in which
    /// order, and where a gap goes (the rule lives in `Fanout`).
    fanout: Fanout<Subscriber, Delivery>,
    /// The pub/sub generation the channel is subscribed in (0: none).
    subscribed: u64,
}

/// A frame on its way to the channel's local subscribers, with when it was
/// published (for the delivery latency).
#[derive(Clone)]
struct Delivery {
    frame: SharedMessage,
    published: PublishTime,
}

/// Queues a fan-out's pushes into subscribers' outboxes, encoding a gap
/// frame once for every subscriber that gets the same one.
struct Pusher<'a> {
    channel: &'a str,
    now: PublishTime,
    gap: Option<(Arc<str>, u64, SharedMessage)>,
    /// How many message frames an outbox took.
    reached: usize,
}

impl<'a> Pusher<'a> {
    fn new(channel: &'a str) -> Self {
        Self {
            channel,
            now: PublishTime::now(),
            gap: None,
            reached: 0,
        }
    }

    fn push(&mut self, sub: &Subscriber, push: Push<'_, Delivery>) {
        match push {
            Push::Frame(delivery) => {
                if sub.outbox.push(&delivery.frame, delivery.published) {
                    self.reached += 1;
                }
            }
            Push::Gap { epoch, offset } => {
                let frame = match &self.gap {
                    Some((e, o, frame)) if &**e == epoch && *o == offset => frame.clone(),
                    _ => {
                        let frame = gap_frame(self.channel, epoch, offset);
                        self.gap = Some((epoch.into(), offset, frame.clone()));
                        frame
                    }
                };
                sub.outbox.push(&frame, self.now);
            }
        }
    }
}

/// Commands queued to the Redis connection's writer before senders wait.
/// A sender that waits for room can be overtaken by one that comes later
/// and finds room, which would reorder a session's pipelined publishes: so
/// the queue is sized for many sessions' worth of them.
const PIPELINE_BUFFER: usize = 16 * 1024;

/// Channels caught up (or presence re-entered) concurrently after a reconnect.
const RESYNC_CONCURRENCY: usize = 32;

struct PendingLeave {
    channel: Arc<str>,
    client: String,
    user: String,
}

/// What the read script answered.
struct Read {
    epoch: String,
    last: u64,
    first: u64,
    entries: Vec<Vec<u8>>,
    /// Why the channel started a new epoch, if it did ("restart",
    /// "behind").
    why: Option<Vec<u8>>,
}

/// Why a node could not learn which Redis process it reaches.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
enum RunIdError {
    /// `INFO server` was not answered within a fresh link's setup limit
    /// (the node expiry).
    #[error("INFO server timed out")]
    Timeout,
    /// Redis refused `INFO server` (or the connection failed).
    #[error(
        "INFO server failed (the hub's Redis user needs INFO, to tell a restarted \
         or failed-over Redis): {0}"
    )]
    Info(#[source] RedisError),
    /// The reply had no `run_id`.
    #[error("INFO server has no run_id")]
    Missing,
}

/// Why the link to Redis ended.
enum LinkEnd {
    Stopped,
    Lost(String),
}

impl RedisBroker {
    /// Starts a broker for `url` (`redis://HOST:PORT[/DB]`, or
    /// `rediss://HOST:PORT[/DB]` for TLS, verified against
    /// [`HubConfig::redis_ca`] if set, else the system's roots; or
    /// `redis+sentinel://[USER:PASSWORD@]H1:P1,H2:P2/NAME[?db=N]` (and
    /// `rediss+sentinel://`) for the primary the sentinels monitor as `NAME`:
    /// see the `sentinel` module; or
    /// `redis+cluster://[USER:PASSWORD@]N1:P1,N2:P2` (and `rediss+cluster://`)
    /// for a Redis Cluster ≥ 7: see the `cluster` module): it connects
    /// in the background (see [`RedisBroker::is_ready`]) and keeps
    /// reconnecting while it lives. Needs a tokio runtime; `node` is this
    /// node's id. Fails at once on a malformed URL or an unusable CA file; a
    /// Redis that cannot be reached or whose certificate fails verification
    /// leaves the node not ready, each attempt's error logged.
    pub(crate) fn start(
        url: &str,
        config: Arc<HubConfig>,
        metrics: Arc<Metrics>,
        node: String,
        options: RedisOptions,
        registry: Arc<Registry>,
    ) -> Result<Arc<Self>, RedisSetupError> {
        let target = if let Some(cluster) = ClusterUrl::parse(url)? {
            Target::Cluster(Nodes::new(cluster, config.redis_ca.as_deref())?)
        } else {
            match SentinelUrl::parse(url)? {
                Some(sentinel) => {
                    Target::Sentinel(Sentinels::new(sentinel, config.redis_ca.as_deref())?)
                }
                None => Target::Direct(open_client(url, config.redis_ca.as_deref())?),
            }
        };
        let sharded = matches!(target, Target::Cluster(_));
        let runtime =
            tokio::runtime::Handle::try_current().map_err(|_| RedisSetupError::NoRuntime)?;
        let (stop, stopped) = watch::channel(false);
        let shared = Arc::new(Shared {
            local: MemoryBroker::new(config.clone(), Arc::new(Metrics::new())),
            config,
            metrics,
            topic_prefix: format!("{}:m:", options.prefix),
            control_topic: if sharded {
                format!("{{{}}}:control", options.prefix)
            } else {
                format!("{}:control", options.prefix)
            },
            registry,
            started: std::time::Instant::now(),
            options,
            node,
            target,
            scripts: Scripts::new(sharded),
            ready: AtomicBool::new(false),
            conn: RwLock::new(None),
            last_run: Mutex::new(None),
            interest: tokio::sync::Mutex::new(Interest::default()),
            generation: AtomicU64::new(0),
            channels: Mutex::new(HashMap::new()),
            pending_leaves: Mutex::new(Vec::new()),
            suspect: Notify::new(),
            progress: liveness::Progress::default(),
            wanted: Mutex::new(Vec::new()),
            demoted: Notify::new(),
            confirming: Mutex::new(HashMap::new()),
            lookups: Mutex::new(HashMap::new()),
        });
        let link = runtime.spawn(run_link(shared.clone(), stopped));
        Ok(Arc::new(Self {
            shared,
            stop,
            link: Mutex::new(Some(link)),
        }))
    }

    /// Leaves the cluster: stops the link to Redis after removing this
    /// node's presence (each client announced with a `leave`) and its
    /// registration, within about two command timeouts. Call it after the
    /// node's connections have ended; the broker is unavailable afterwards.
    pub(crate) async fn leave(&self) {
        let _ = self.stop.send(true);
        let link = lock(&self.link).take();
        if let Some(link) = link {
            let grace = self.shared.options.command_timeout * 2;
            let _ = tokio::time::timeout(grace, link).await;
        }
        self.shared.ready.store(false, Ordering::SeqCst);
    }

    /// Sends a control to every node's sessions (`PUBLISH` to
    /// `P:control`; on Redis Cluster `SPUBLISH` to `{P}:control`, whose
    /// shard every node subscribes to); returns how many nodes listen.
    pub(crate) async fn control(&self, message: &NodeMessage) -> Result<usize, BrokerError> {
        let shared = &self.shared;
        let mut conn = shared.conn()?;
        let payload = serde_json::to_vec(message)
            .map_err(|_| unavailable("a control that does not encode as JSON"))?;
        let command = shared.publish_control(payload);
        match tokio::time::timeout(
            shared.options.command_timeout,
            command.query_async::<usize>(&mut conn),
        )
        .await
        {
            Ok(Ok(nodes)) => Ok(nodes),
            Ok(Err(error)) => Err(shared.failed(&error)),
            Err(_) => Err(unavailable("redis did not answer in time")),
        }
    }

    /// The command connection while connected and ready, for the events
    /// registry (`crate::events`), whose keys share one hash slot.
    pub(crate) fn command_conn(&self) -> Result<Conn, BrokerError> {
        self.shared.conn()
    }

    /// The options it runs with.
    pub(crate) fn options(&self) -> &RedisOptions {
        &self.shared.options
    }

    /// Forgets unused node-local (`$`) channels; call it periodically.
    pub(crate) fn sweep(&self) {
        self.shared.local.sweep();
        self.shared.update_channel_gauge();
    }
}

impl Drop for RedisBroker {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// The local instant of a publish stamped `sent_us` by its node's wall clock
/// (for the publish-to-delivery latency across nodes).
fn published_at(sent_us: u64) -> PublishTime {
    let now = Instant::now();
    let age = Duration::from_micros(now_us().saturating_sub(sent_us)).min(Duration::from_secs(60));
    PublishTime::at(now.checked_sub(age).unwrap_or(now))
}

/// The longest a command may wait for its reply (see
/// `Shared::response_limit`), and a fresh link for its setup: the node
/// expiry, or the command timeout if longer.
fn response_limit(options: &RedisOptions) -> Duration {
    options.node_expiry.max(options.command_timeout)
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// Whether Redis refused a write because it is a replica (directly, or
/// from inside a script).
fn is_read_only(error: &RedisError) -> bool {
    error.code() == Some("READONLY") || error.to_string().contains("READONLY")
}

fn unavailable(what: &'static str) -> BrokerError {
    BrokerError::Unavailable(what)
}

fn gap_frame(channel: &str, epoch: &str, offset: u64) -> SharedMessage {
    prepare(ServerMessage::Gap {
        channel: channel.to_owned(),
        epoch: epoch.to_owned(),
        offset,
    })
}

impl Shared {
    fn key(&self, channel: &str, what: &str) -> String {
        format!("{}:{{{channel}}}:{what}", self.options.prefix)
    }

    fn node_key(&self) -> String {
        format!("{}:node:{}:pres", self.options.prefix, self.node)
    }

    fn nodes_key(&self) -> String {
        format!("{}:nodes", self.options.prefix)
    }

    fn topic(&self, channel: &str) -> String {
        if self.sharded() {
            format!("{}{{{channel}}}", self.topic_prefix)
        } else {
            format!("{}{channel}", self.topic_prefix)
        }
    }

    /// The channel whose topic is `topic`.
    fn channel_of<'t>(&self, topic: &'t str) -> Option<&'t str> {
        let rest = topic.strip_prefix(&self.topic_prefix)?;
        if self.sharded() {
            rest.strip_prefix('{')?.strip_suffix('}')
        } else {
            Some(rest)
        }
    }

    /// Whether Redis is a Redis Cluster (sharded pub/sub, a `run_id` per
    /// shard, node bookkeeping outside the channel scripts).
    fn sharded(&self) -> bool {
        matches!(self.target, Target::Cluster(_))
    }

    fn meta_ttl(&self, history_ttl: Duration) -> u64 {
        millis(self.options.meta_ttl.max(history_ttl))
    }

    fn channels(&self) -> MutexGuard<'_, HashMap<Arc<str>, Arc<Slot>>> {
        lock(&self.channels)
    }

    fn update_channel_gauge(&self) {
        let count = self.channels().len() + self.local.local_channels();
        self.metrics.set_channels(count);
    }

    /// The command connection, if connected and ready.
    fn conn(&self) -> Result<Conn, BrokerError> {
        self.link().map(|(conn, _)| conn)
    }

    /// The command connection and the `run_id` of the Redis it reaches, if
    /// connected and ready.
    fn link(&self) -> Result<(Conn, Arc<str>), BrokerError> {
        if !self.ready.load(Ordering::SeqCst) {
            return Err(unavailable("redis is not connected"));
        }
        self.conn
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or_else(|| unavailable("redis is not connected"))
    }

    /// The position this node saw `channel` reach, if it has subscribers
    /// of it (see `Fanout::check`), as the scripts take it: epoch (or ""),
    /// offset.
    fn check_of(&self, channel: &str) -> (String, u64) {
        let slot = self.channels().get(channel).cloned();
        slot.and_then(|slot| {
            let state = lock(&slot.state);
            state.fanout.check().map(|(e, o)| (e.to_owned(), o))
        })
        .unwrap_or_default()
    }

    /// Logs a new epoch the scripts started (`why`, from their reply).
    fn log_new_epoch(&self, channel: &str, why: Option<&[u8]>, epoch: &str) {
        match why {
            Some(b"behind") => tracing::warn!(
                channel,
                epoch,
                "redis lost writes this node had seen: the channel starts a new epoch, \
                 its subscribers are told of a gap"
            ),
            Some(b"restart") => tracing::debug!(
                channel,
                epoch,
                "first use since redis restarted or failed over: the channel starts a new epoch"
            ),
            _ => {}
        }
    }

    /// Maps a failed command; a connection-level failure wakes the link,
    /// which checks the connection at once.
    fn failed(&self, error: &RedisError) -> BrokerError {
        if error.is_io_error() || error.is_connection_dropped() || error.is_timeout() {
            self.suspect.notify_one();
        }
        if matches!(self.target, Target::Sentinel(_)) && is_read_only(error) {
            self.demoted.notify_one();
        }
        BrokerError::Redis(Arc::new(error.clone()))
    }

    /// Waits for `future` as long as Redis keeps answering: at most the
    /// command timeout with no answer to anything, at most the node expiry
    /// in all ([`liveness`]).
    async fn patiently<F: std::future::Future>(
        &self,
        future: F,
    ) -> Result<F::Output, liveness::Stalled> {
        liveness::while_answering(
            &self.progress,
            self.options.command_timeout,
            self.options.node_expiry,
            future,
        )
        .await
    }

    /// The longest a command may wait for its reply: the node expiry (or
    /// the command timeout if longer); [`Shared::patiently`] ends a wait
    /// sooner when Redis falls silent.
    fn response_limit(&self) -> std::time::Duration {
        response_limit(&self.options)
    }

    /// The reply to a command, waited for while Redis keeps answering
    /// ([`Shared::patiently`]).
    async fn answer_of(
        &self,
        reply: impl std::future::Future<Output = redis::RedisResult<Value>>,
    ) -> Result<Value, BrokerError> {
        match self.patiently(reply).await {
            Ok(Ok(value)) => {
                self.progress.answered();
                Ok(value)
            }
            Ok(Err(error)) => Err(self.failed(&error)),
            Err(_) => {
                self.suspect.notify_one();
                Err(unavailable("redis did not answer in time"))
            }
        }
    }

    /// Runs `invocation` while Redis keeps answering ([`Shared::patiently`]).
    async fn invoke(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
        conn: &mut Conn,
    ) -> Result<Value, BrokerError> {
        self.answer_of(invocation.invoke_async::<Value>(conn)).await
    }

    // ---- publish ---------------------------------------------------------

    async fn publish(&self, publish: Publish) -> Result<Published, BrokerError> {
        let (mut conn, run) = self.link()?;
        let ns = self.config.namespace(&publish.channel);
        let channel = &*publish.channel;
        let body = encode_body(now_us(), &publish.from, &publish.data);
        let (check_epoch, check_offset) = self.check_of(channel);
        let mut invocation = self.scripts.publish.prepare_invoke();
        invocation
            .key(self.key(channel, "meta"))
            .key(self.key(channel, "hist"))
            .key(self.key(channel, "keys"))
            .arg(self.topic(channel))
            .arg(publish.key.as_deref().unwrap_or(""))
            .arg(publish.time)
            .arg(body)
            .arg(ns.history_size)
            .arg(millis(ns.history_ttl))
            .arg(self.meta_ttl(ns.history_ttl))
            .arg(new_epoch())
            .arg(&*run)
            .arg(check_epoch)
            .arg(check_offset)
            .arg(ns.history_bytes);
        let reply = self.invoke(&invocation, &mut conn).await?;
        let items = array(&reply).ok_or_else(|| unavailable("redis: bad publish reply"))?;
        match items {
            [epoch, offset, duplicate, why] => {
                if let Some(epoch) = bytes(epoch).and_then(|e| std::str::from_utf8(e).ok()) {
                    self.log_new_epoch(channel, bytes(why), epoch);
                }
                Ok(Published {
                    epoch: bytes(epoch)
                        .and_then(|e| std::str::from_utf8(e).ok())
                        .unwrap_or_default()
                        .to_owned(),
                    offset: int(offset).ok_or_else(|| unavailable("redis: bad offset"))?,
                    duplicate: int(duplicate) == Some(1),
                })
            }
            _ => Err(unavailable("redis: bad publish reply")),
        }
    }

    async fn signal(
        &self,
        channel: &str,
        from: &Subscriber,
        data: Data,
    ) -> Result<(), BrokerError> {
        let mut conn = self.conn()?;
        let mut payload = vec![b's'];
        payload.extend_from_slice(&encode_body(now_us(), &from.info(), &data));
        let mut command = redis::cmd(if self.sharded() {
            "SPUBLISH"
        } else {
            "PUBLISH"
        });
        command.arg(self.topic(channel)).arg(payload);
        self.answer_of(command.query_async::<Value>(&mut conn))
            .await
            .map(drop)
    }

    async fn presence(&self, channel: &str) -> Result<Vec<ClientInfo>, BrokerError> {
        let mut conn = self.conn()?;
        let mut command = redis::cmd("HGETALL");
        command.arg(self.key(channel, "pres"));
        let reply = self
            .answer_of(command.query_async::<Value>(&mut conn))
            .await?;
        let pairs: Vec<(&[u8], &[u8])> = match &reply {
            Value::Map(map) => map
                .iter()
                .filter_map(|(k, v)| Some((bytes(k)?, bytes(v)?)))
                .collect(),
            Value::Array(items) => items
                .chunks_exact(2)
                .filter_map(|kv| Some((bytes(&kv[0])?, bytes(&kv[1])?)))
                .collect(),
            _ => Vec::new(),
        };
        let mut clients: Vec<ClientInfo> = pairs
            .into_iter()
            .filter_map(|(client, value)| {
                let value = std::str::from_utf8(value).ok()?;
                let (_node, user) = value.split_once(' ')?;
                Some(ClientInfo {
                    client: String::from_utf8(client.to_vec()).ok()?,
                    user: user.to_owned(),
                })
            })
            .collect();
        clients.sort_by(|a, b| a.client.cmp(&b.client));
        Ok(clients)
    }

    // ---- subscribe -------------------------------------------------------

    async fn subscribe(self: &Arc<Self>, subscribe: Subscribe) -> Result<Subscribed, BrokerError> {
        if !self.ready.load(Ordering::SeqCst) {
            return Err(unavailable("redis is not connected"));
        }
        let Subscribe {
            channel,
            subscriber,
            since,
            recent,
        } = subscribe;
        let ns = self.config.namespace(&channel);
        let slot = self.register(&channel, &subscriber);
        let mut guard = JoinGuard {
            shared: self.clone(),
            slot: slot.clone(),
            id: subscriber.id,
            armed: true,
        };
        let generation = self.ensure_subscribed(&slot).await?;
        let (mut conn, run) = self.link()?;
        let (check_epoch, check_offset) = self.check_of(&channel);
        let mut invocation = self.scripts.read.prepare_invoke();
        let presence = ns.presence;
        invocation
            .key(self.key(&channel, "meta"))
            .key(self.key(&channel, "hist"))
            .key(self.key(&channel, "keys"))
            .key(self.key(&channel, "pres"))
            .arg(new_epoch())
            .arg(self.meta_ttl(ns.history_ttl))
            .arg(millis(ns.history_ttl))
            .arg(since.as_ref().map_or("", |s| s.epoch.as_str()))
            .arg(since.as_ref().map_or(0, |s| s.offset))
            .arg(recent)
            .arg("")
            .arg(if presence {
                subscriber.client()
            } else {
                String::new()
            })
            .arg(&self.node)
            .arg(subscriber.user())
            .arg(&*channel)
            .arg(if presence && ns.join_leave {
                self.topic(&channel)
            } else {
                String::new()
            })
            .arg(&*run)
            .arg(check_epoch)
            .arg(check_offset);
        if !self.sharded() {
            invocation.key(self.node_key());
        }
        // On Redis Cluster the node's own list of its presence entries is
        // in another slot: written beside the read, at the same time.
        let entry = [(
            subscriber.client(),
            channel.clone(),
            subscriber.user().to_owned(),
        )];
        let mut entry_conn = conn.clone();
        let (read, entry) = tokio::join!(self.invoke(&invocation, &mut conn), async {
            if presence {
                self.node_entries(&mut entry_conn, true, &entry).await
            } else {
                Ok(())
            }
        });
        let read = match read.and_then(|reply| entry.map(|()| reply)) {
            Ok(reply) => parse_read(&reply).ok_or_else(|| unavailable("redis: bad read reply")),
            Err(error) => Err(error),
        };
        let read = match read {
            Ok(read) => read,
            Err(error) => {
                if presence {
                    // The script may have run: make sure the entry goes.
                    self.pending_leave(&channel, &subscriber.info());
                }
                return Err(error);
            }
        };
        self.log_new_epoch(&channel, read.why.as_deref(), &read.epoch);
        let plan = plan_recovery(
            since.as_ref(),
            recent,
            HistoryBounds {
                epoch: &read.epoch,
                first: read.first,
                last: read.last,
            },
        );
        if let Some(range) = &plan.replay {
            let now = PublishTime::now();
            for raw in &read.entries {
                let Some(entry) = parse_entry(raw) else {
                    continue;
                };
                if range.contains(&entry.offset)
                    && let Some(frame) =
                        message_frame(&channel, entry.offset, entry.time, entry.body)
                {
                    subscriber.outbox.push(&frame, now);
                }
            }
        }
        guard.armed = false;
        self.release(&slot, subscriber, generation, &read.epoch, read.last);
        Ok(Subscribed {
            name: slot.name.clone(),
            epoch: read.epoch,
            offset: read.last,
            recovered: plan.recovered,
            gap: plan.gap,
        })
    }

    /// Registers `sub` as joining `channel` (buffering its live envelopes).
    fn register(&self, channel: &Arc<str>, sub: &Subscriber) -> Arc<Slot> {
        let (slot, created) = {
            let mut channels = self.channels();
            let mut created = false;
            let slot = channels
                .entry(channel.clone())
                .or_insert_with(|| {
                    created = true;
                    Arc::new(Slot {
                        name: channel.clone(),
                        topic: self.topic(channel),
                        state: Mutex::new(SlotState::default()),
                    })
                })
                .clone();
            lock(&slot.state).fanout.join(sub.id);
            (slot, created)
        };
        if created {
            self.update_channel_gauge();
        }
        slot
    }

    /// The joining subscriber's history read is done (`epoch`, `last`):
    /// queue what was buffered after it and make it live.
    fn release(&self, slot: &Slot, sub: Subscriber, generation: u64, epoch: &str, last: u64) {
        let mut pusher = Pusher::new(&slot.name);
        lock(&slot.state)
            .fanout
            .release(sub, generation, epoch, last, |sub, push| {
                pusher.push(sub, push)
            });
    }

    // ---- unsubscribe -----------------------------------------------------

    async fn unsubscribe(self: &Arc<Self>, channel: &str, sub: &Subscriber) {
        let Some(slot) = self.channels().get(channel).cloned() else {
            return;
        };
        let (removed, empty) = {
            let mut state = lock(&slot.state);
            let removed = state.fanout.leave(sub.id);
            (removed, state.fanout.is_empty())
        };
        let ns = self.config.namespace(channel);
        if removed && ns.presence {
            let leave = PendingLeave {
                channel: slot.name.clone(),
                client: sub.client(),
                user: sub.user().to_owned(),
            };
            if self.leave(&leave).await.is_err() {
                lock(&self.pending_leaves).push(leave);
            }
        }
        if empty {
            self.release_interest(&slot).await;
        }
    }

    /// Removes a client's presence entry, announcing its leave.
    async fn leave(&self, leave: &PendingLeave) -> Result<(), BrokerError> {
        let mut conn = self.conn()?;
        let ns = self.config.namespace(&leave.channel);
        let mut invocation = self.scripts.leave.prepare_invoke();
        invocation
            .key(self.key(&leave.channel, "pres"))
            .arg(&leave.client)
            .arg(&*leave.channel)
            .arg(if ns.join_leave {
                self.topic(&leave.channel)
            } else {
                String::new()
            })
            .arg(&leave.user);
        if !self.sharded() {
            invocation.key(self.node_key());
        }
        self.invoke(&invocation, &mut conn.clone()).await?;
        let entry = [(
            leave.client.clone(),
            leave.channel.clone(),
            leave.user.clone(),
        )];
        self.node_entries(&mut conn, false, &entry).await
    }

    /// On Redis Cluster, adds (`add`) or removes this node's own record of
    /// presence `entries` (client, channel, user), kept in `P:node:N:pres`
    /// outside the channels' slots so that the cluster can remove a dead
    /// node's presence; on one Redis the channel scripts keep it.
    async fn node_entries(
        &self,
        conn: &mut Conn,
        add: bool,
        entries: &[(String, Arc<str>, String)],
    ) -> Result<(), BrokerError> {
        if !self.sharded() || entries.is_empty() {
            return Ok(());
        }
        let mut command = redis::cmd(if add { "HSET" } else { "HDEL" });
        command.arg(self.node_key());
        for (client, channel, user) in entries {
            command.arg(format!("{client} {channel}"));
            if add {
                command.arg(user);
            }
        }
        self.answer_of(command.query_async::<Value>(conn))
            .await
            .map(drop)
    }

    fn pending_leave(&self, channel: &Arc<str>, info: &ClientInfo) {
        lock(&self.pending_leaves).push(PendingLeave {
            channel: channel.clone(),
            client: info.client.clone(),
            user: info.user.clone(),
        });
    }

    /// Retries the presence removals that failed.
    async fn flush_leaves(&self) {
        let leaves = std::mem::take(&mut *lock(&self.pending_leaves));
        let mut leaves = leaves.into_iter();
        while let Some(leave) = leaves.next() {
            if self.leave(&leave).await.is_err() {
                let mut pending = lock(&self.pending_leaves);
                pending.push(leave);
                pending.extend(leaves);
                return;
            }
        }
    }
}

/// Removes a joining subscriber whose subscribe did not finish (failed, or
/// its future was dropped).
struct JoinGuard {
    shared: Arc<Shared>,
    slot: Arc<Slot>,
    id: u64,
    armed: bool,
}

impl Drop for JoinGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let empty = {
            let mut state = lock(&self.slot.state);
            state.fanout.leave(self.id);
            state.fanout.is_empty()
        };
        if empty && let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let (shared, slot) = (self.shared.clone(), self.slot.clone());
            runtime.spawn(async move { shared.release_interest(&slot).await });
        }
    }
}

/// The frame of a history entry's message.
fn message_frame(channel: &str, offset: u64, time: u64, body: &[u8]) -> Option<SharedMessage> {
    let body = decode_body(body)?;
    Some(prepare(ServerMessage::Message(Publication {
        channel: channel.to_owned(),
        offset,
        time,
        from: body.from,
        data: body.data,
    })))
}

fn array(value: &Value) -> Option<&[Value]> {
    match value {
        Value::Array(items) => Some(items),
        _ => None,
    }
}

fn int(value: &Value) -> Option<u64> {
    match value {
        Value::Int(n) => Some(u64::try_from(*n).unwrap_or(0)),
        Value::BulkString(bytes) => std::str::from_utf8(bytes).ok()?.parse().ok(),
        Value::SimpleString(text) => text.parse().ok(),
        _ => None,
    }
}

fn bytes(value: &Value) -> Option<&[u8]> {
    match value {
        Value::BulkString(bytes) => Some(bytes),
        Value::SimpleString(text) => Some(text.as_bytes()),
        _ => None,
    }
}

fn parse_read(reply: &Value) -> Option<Read> {
    let (epoch, last, first, entries, why) = match array(reply)? {
        [epoch, last, first, entries] => (epoch, last, first, entries, None),
        [epoch, last, first, entries, why] => (epoch, last, first, entries, Some(why)),
        _ => return None,
    };
    Some(Read {
        why: why
            .and_then(bytes)
            .filter(|w| !w.is_empty())
            .map(<[u8]>::to_vec),
        epoch: String::from_utf8(bytes(epoch)?.to_vec()).ok()?,
        last: int(last)?,
        first: int(first)?,
        entries: array(entries)?
            .iter()
            .filter_map(|e| bytes(e).map(<[u8]>::to_vec))
            .collect(),
    })
}

impl RedisBroker {
    /// Every live node's report, at most one heartbeat old (the server
    /// API's `info`).
    pub(crate) async fn nodes(&self) -> Result<Vec<serde_json::Value>, BrokerError> {
        let mut nodes = self.shared.reports().await?;
        nodes.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
        for node in &mut nodes {
            if let Some(node) = node.as_object_mut() {
                node.remove("channels");
            }
        }
        Ok(nodes)
    }

    /// `user`'s connections on every node that answers within the command
    /// timeout (the server API's `connections`), and how many nodes listen.
    pub(crate) async fn connections(
        &self,
        user: &str,
    ) -> Result<(Vec<(String, Listed)>, usize), BrokerError> {
        self.shared.connections(user).await
    }
}

impl Broker for RedisBroker {
    fn channels(&self, pattern: &str) -> BoxFuture<'_, Result<Vec<ChannelCount>, BrokerError>> {
        let pattern = pattern.to_owned();
        Box::pin(async move {
            let mut counts: std::collections::BTreeMap<String, usize> = Default::default();
            for report in self.shared.reports().await? {
                let Some(channels) = report["channels"].as_object() else {
                    continue;
                };
                for (name, live) in channels {
                    if matches_pattern(&pattern, name) {
                        *counts.entry(name.clone()).or_default() +=
                            live.as_u64().unwrap_or(0) as usize;
                    }
                }
            }
            Ok(counts
                .into_iter()
                .map(|(channel, subscribers)| ChannelCount {
                    channel,
                    subscribers,
                })
                .collect())
        })
    }

    fn history(
        &self,
        channel: &str,
        query: HistoryQuery,
    ) -> BoxFuture<'_, Result<HistoryPage, BrokerError>> {
        let channel = channel.to_owned();
        Box::pin(async move { self.shared.history(&channel, query).await })
    }

    fn remove_history(&self, channel: &str) -> BoxFuture<'_, Result<(), BrokerError>> {
        let channel = channel.to_owned();
        Box::pin(async move { self.shared.remove_history(&channel).await })
    }

    fn publish(&self, publish: Publish) -> BoxFuture<'_, Result<Published, BrokerError>> {
        if is_hub_channel(&publish.channel) {
            return self.shared.local.publish(publish);
        }
        Box::pin(self.shared.publish(publish))
    }

    fn subscribe(&self, subscribe: Subscribe) -> BoxFuture<'_, Result<Subscribed, BrokerError>> {
        if is_hub_channel(&subscribe.channel) {
            let subscribed = self.shared.local.subscribe(subscribe);
            self.shared.update_channel_gauge();
            return subscribed;
        }
        Box::pin(self.shared.subscribe(subscribe))
    }

    fn unsubscribe(&self, channel: &str, subscriber: &Subscriber) -> BoxFuture<'_, ()> {
        if is_hub_channel(channel) {
            return self.shared.local.unsubscribe(channel, subscriber);
        }
        let (channel, subscriber) = (channel.to_owned(), subscriber.clone());
        Box::pin(async move { self.shared.unsubscribe(&channel, &subscriber).await })
    }

    fn presence(&self, channel: &str) -> BoxFuture<'_, Result<Vec<ClientInfo>, BrokerError>> {
        if is_hub_channel(channel) {
            return self.shared.local.presence(channel);
        }
        let channel = channel.to_owned();
        Box::pin(async move { self.shared.presence(&channel).await })
    }

    fn signal(
        &self,
        channel: &str,
        from: &Subscriber,
        data: Data,
    ) -> BoxFuture<'_, Result<(), BrokerError>> {
        if is_hub_channel(channel) {
            return self.shared.local.signal(channel, from, data);
        }
        let (channel, from) = (channel.to_owned(), from.clone());
        Box::pin(async move { self.shared.signal(&channel, &from, data).await })
    }

    fn is_ready(&self) -> bool {
        self.shared.ready.load(Ordering::SeqCst)
    }

    fn local_channels(&self) -> usize {
        self.shared.channels().len() + self.shared.local.local_channels()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_are_eight_base36_characters() {
        let epoch = new_epoch();
        assert_eq!(epoch.len(), 8);
        assert!(
            epoch
                .bytes()
                .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
        );
    }

    #[test]
    fn hub_channels_stay_local() {
        assert!(is_hub_channel("$sys:stats"));
        assert!(!is_hub_channel("chat:lobby"));
        assert!(!is_hub_channel("lobby"));
    }

    #[test]
    fn read_replies_parse() {
        let reply = Value::Array(vec![
            Value::BulkString(b"k3x9ab0c".to_vec()),
            Value::Int(44),
            Value::Int(40),
            Value::Array(vec![Value::BulkString(b"44 1 0 0 0 J1".to_vec())]),
        ]);
        let read = parse_read(&reply).expect("parses");
        assert_eq!(
            (read.epoch.as_str(), read.last, read.first),
            ("k3x9ab0c", 44, 40)
        );
        assert_eq!(read.entries.len(), 1);
        assert!(read.why.is_none());
        assert!(parse_read(&Value::Nil).is_none());
        let reply = Value::Array(vec![
            Value::BulkString(b"k3x9ab0c".to_vec()),
            Value::Int(0),
            Value::Int(1),
            Value::Array(vec![]),
            Value::BulkString(b"behind".to_vec()),
        ]);
        let read = parse_read(&reply).expect("parses");
        assert_eq!(read.why.as_deref(), Some(&b"behind"[..]));
    }

    #[test]
    fn run_ids_come_from_info_server() {
        let info = "# Server\r\nredis_version:7.0.15\r\nrun_id:71c0a8b37746703891c07e2c6a585fbd1abbfd77\r\ntcp_port:6379\r\n";
        assert_eq!(
            link::parse_run_id(info).as_deref(),
            Some("71c0a8b37746703891c07e2c6a585fbd1abbfd77")
        );
        assert_eq!(link::parse_run_id("# Server\r\nrun_id:\r\n"), None);
        assert_eq!(link::parse_run_id(""), None);
    }

    #[test]
    fn latency_stamps_map_to_past_instants() {
        let at = published_at(now_us() - 5_000);
        let age = at.elapsed();
        assert!(
            age >= Duration::from_millis(5) && age < Duration::from_secs(1),
            "{age:?}"
        );
        // A clock ahead of ours is not in the future.
        assert!(published_at(now_us() + 10_000_000) <= PublishTime::now());
    }
}
