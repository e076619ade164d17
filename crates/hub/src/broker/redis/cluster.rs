//! The Redis broker on Redis Cluster (`redis+cluster://H1:P1,H2:P2,…`,
//! `rediss+cluster://` over TLS; Redis ≥ 7): URLs, the cluster connection,
//! and its link.
//!
//! What changes from one Redis (see the parent module for the rest):
//!
//! - **Where things are.** Commands go through redis-rs's cluster
//!   connection, routed by key slot (it follows `MOVED`/`ASK`, refreshes its
//!   slot map on errors, and reconnects). A channel's keys share the `{C}`
//!   hash tag, and so does its topic, `P:m:{C}` (one Redis keeps `P:m:C`):
//!   each channel script runs on the shard that owns the channel, with
//!   `SPUBLISH` inside it, so a publish is still one `EVALSHA` round trip
//!   and sharded pub/sub order is offset order.
//! - **Lost writes.** Each shard is its own Redis process: the scripts read
//!   the `run_id` of the process they run on (`INFO server` from Lua)
//!   instead of taking the one the node read on connecting. A failover
//!   (a replica promoted, whatever it lacks) therefore starts a new epoch on
//!   the first use of each of its channels, as on one Redis.
//! - **Sharded subscriptions.** The node `SSUBSCRIBE`s each channel's topic
//!   on the shard that owns it. Whenever a subscription may have lapsed —
//!   a shard connection lost (a `Disconnection` push), a slot moved away
//!   (the shard sends `sunsubscribe`), or redis-rs re-subscribed on its own
//!   after a reconnect or a new slot map (an `ssubscribe` confirmation this
//!   node did not ask for) — the channel is (re-)subscribed, and once the
//!   confirmation is back, caught up from history exactly as after a
//!   reconnect (`Fanout::catch_up`): what the history holds is delivered in
//!   order, anything else is announced with a `gap`. Catch-ups run on the
//!   link task between pushes, so no later message overtakes them.
//! - **Node bookkeeping** crosses slots, so it leaves the channel scripts:
//!   the node records its presence entries in `P:node:N:pres` with a
//!   separate `HSET`/`HDEL` (sent together with the channel script), and
//!   the heartbeat script only names the silent nodes; the node then removes
//!   each of their entries with a small script on the channel's shard (only
//!   if still the dead node's, announcing the leave), and forgets the node.
//!   Several nodes may do it at once: each removal happens once.
//! - **The server API.** Its controls travel over sharded pub/sub too:
//!   `SPUBLISH` to `{P}:control` (a fixed hash tag, so one slot), which
//!   every node `SSUBSCRIBE`s when the link starts and subscribes again
//!   whenever that subscription may have lapsed (as for the channels, but
//!   without a catch-up: controls have no history, delivery is at most
//!   once). `SPUBLISH`'s reply counts the nodes listening on that shard,
//!   so the API's `nodes` stays right. (A classic `SUBSCRIBE` would also
//!   see a cluster-wide `PUBLISH`, but it holds a connection to one chosen
//!   node that would have to be moved by hand when that node dies, and
//!   its count covers that node's subscribers only.) The node reports
//!   `P:node:N:info` are in different slots: written one `SET` each, read
//!   one `GET` each; the API's history read passes no node key.
//! - **The link** lasts as long as the broker: the cluster connection heals
//!   itself, so shard failures show as failing commands
//!   ([`BrokerError::Unavailable`]) for the channels of that shard only, not
//!   as a node that is not ready.

use std::collections::{HashSet, VecDeque};

use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{ProtocolVersion, PushInfo, PushKind};
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};

use super::open::{read_ca, redacted};
use super::sentinel::host_port;
use super::*;

/// The default port of a Redis Cluster node.
const NODE_PORT: u16 = 6379;

/// How often lapsed subscriptions are asked for again.
const RESUBSCRIBE_EVERY: Duration = Duration::from_millis(100);

/// Why a `redis+cluster://` URL cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterUrlError {
    /// No `HOST:PORT`.
    #[error(
        "redis URL {0}: name at least one node of the cluster, as in \
         redis+cluster://10.0.0.1:6379,10.0.0.2:6379"
    )]
    NoNode(String),
    /// A node address that is not `HOST[:PORT]`.
    #[error("redis URL {url}: `{address}` is not a node address (HOST:PORT, or [IPv6]:PORT)")]
    BadAddress {
        /// The URL, without its password.
        url: String,
        /// The address as written.
        address: String,
    },
    /// A path or query: Redis Cluster has one database.
    #[error(
        "redis URL {0}: a cluster URL has no database or options (Redis Cluster has one \
         database); write redis+cluster://H1:P1,H2:P2"
    )]
    Extra(String),
}

/// A parsed `redis+cluster://` or `rediss+cluster://` URL.
#[derive(Clone, PartialEq, Eq)]
pub(super) struct ClusterUrl {
    /// TLS to every node.
    tls: bool,
    /// `user:password` or `:password`, as written (percent-encoded).
    userinfo: Option<String>,
    /// The seed nodes, `HOST:PORT`.
    nodes: Vec<String>,
}

impl fmt::Debug for ClusterUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterUrl")
            .field("tls", &self.tls)
            .field("nodes", &self.nodes)
            .finish_non_exhaustive()
    }
}

use std::fmt;

impl ClusterUrl {
    /// Parses `url` if its scheme is `redis+cluster` or `rediss+cluster`
    /// (any case); `Ok(None)` for other schemes.
    pub(super) fn parse(url: &str) -> Result<Option<Self>, ClusterUrlError> {
        let Some((scheme, rest)) = url.split_once("://") else {
            return Ok(None);
        };
        let tls = if scheme.eq_ignore_ascii_case("redis+cluster") {
            false
        } else if scheme.eq_ignore_ascii_case("rediss+cluster") {
            true
        } else {
            return Ok(None);
        };
        let shown = redacted(url);
        let (authority, extra) = match rest.find(['/', '?']) {
            Some(at) => rest.split_at(at),
            None => (rest, ""),
        };
        if !extra.is_empty() && extra != "/" {
            return Err(ClusterUrlError::Extra(shown));
        }
        let (userinfo, hosts) = match authority.rsplit_once('@') {
            Some((userinfo, hosts)) => (Some(userinfo.to_owned()), hosts),
            None => (None, authority),
        };
        let mut nodes = Vec::new();
        for address in hosts.split(',').filter(|a| !a.is_empty()) {
            nodes.push(host_port(address, NODE_PORT).ok_or_else(|| {
                ClusterUrlError::BadAddress {
                    url: shown.clone(),
                    address: address.to_owned(),
                }
            })?);
        }
        if nodes.is_empty() {
            return Err(ClusterUrlError::NoNode(shown));
        }
        Ok(Some(Self {
            tls,
            userinfo,
            nodes,
        }))
    }

    /// The URL of node `address`, with this URL's credentials.
    fn node_url(&self, address: &str) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        let userinfo = self
            .userinfo
            .as_ref()
            .map_or_else(String::new, |u| format!("{u}@"));
        format!("{scheme}://{userinfo}{address}")
    }
}

/// Sharded subscriptions that may have lapsed, asked for again every
/// [`RESUBSCRIBE_EVERY`].
#[derive(Default)]
struct Lapsed {
    /// Channels: subscribed again, then caught up when confirmed.
    channels: HashSet<Arc<str>>,
    /// The server API's controls' topic, `{P}:control`.
    control: bool,
}

impl Lapsed {
    fn is_empty(&self) -> bool {
        self.channels.is_empty() && !self.control
    }
}

/// The seed nodes of a cluster, and the CA to verify them with (TLS).
pub(super) struct Nodes {
    url: ClusterUrl,
    ca: Option<Vec<u8>>,
}

/// A connected cluster: the connection, and the pushes of every shard
/// (sharded messages, subscription confirmations, disconnections).
pub(super) struct ClusterConnected {
    conn: ClusterConnection,
    pushes: UnboundedReceiver<PushInfo>,
}

impl Nodes {
    /// Checks that every node's URL opens (with `ca` for TLS).
    pub(super) fn new(url: ClusterUrl, ca: Option<&Path>) -> Result<Self, RedisSetupError> {
        for address in &url.nodes {
            open_client(&url.node_url(address), ca)?;
        }
        Ok(Self {
            url,
            ca: ca.map(read_ca).transpose()?,
        })
    }

    /// Connects to the cluster (any seed node that answers tells the rest),
    /// RESP3, every shard's pushes to the returned receiver.
    pub(super) async fn connect(&self, options: &RedisOptions) -> Result<ClusterConnected, String> {
        let (sender, pushes) = unbounded_channel();
        let urls: Vec<String> = self
            .url
            .nodes
            .iter()
            .map(|a| self.url.node_url(a))
            .collect();
        let mut builder = ClusterClientBuilder::new(urls)
            .use_protocol(ProtocolVersion::RESP3)
            .push_sender(sender)
            .connection_timeout(options.command_timeout)
            // Replies are waited for while Redis keeps answering
            // (`Shared::patiently`), up to the node expiry.
            .response_timeout(options.node_expiry.max(options.command_timeout));
        if self.url.tls {
            builder = builder.certs(TlsCertificates {
                client_tls: None,
                root_cert: self.ca.clone(),
            });
        }
        let client = builder
            .build()
            .map_err(|e| format!("redis cluster {:?}: {e}", self.url))?;
        let conn = tokio::time::timeout(options.command_timeout * 2, client.get_async_connection())
            .await
            .map_err(|_| "connecting to the redis cluster timed out".to_owned())?
            .map_err(|e| connect_error(&e))?;
        Ok(ClusterConnected { conn, pushes })
    }
}

impl Shared {
    /// Serves the cluster connection until the broker stops (see the
    /// module docs).
    pub(super) async fn serve_cluster(
        &self,
        connected: ClusterConnected,
        stop: &mut watch::Receiver<bool>,
    ) -> LinkEnd {
        let ClusterConnected {
            conn: cluster,
            mut pushes,
        } = connected;
        let mut conn = Conn::Cluster(cluster.clone());
        if let Err(why) = super::link::load_scripts(&self.scripts, &conn, &self.options).await {
            return LinkEnd::Lost(format!("loading scripts: {why}"));
        }
        // Each script reads its own shard's run_id.
        let run: Arc<str> = Arc::from("");
        *self.conn.write().unwrap_or_else(|e| e.into_inner()) = Some((conn.clone(), run.clone()));
        if let Err(why) = self.heartbeat(&mut conn, false).await {
            return LinkEnd::Lost(why);
        }
        let generation = match self.subscribe_link(Sink::Cluster(cluster.clone())).await {
            Ok(generation) => generation,
            Err(why) => return LinkEnd::Lost(why),
        };
        if let Err(why) = self.catch_up(&conn, &run, generation).await {
            return LinkEnd::Lost(format!("catching up: {why}"));
        }
        if let Err(why) = self.enter_all(&conn).await {
            return LinkEnd::Lost(format!("re-entering presence: {why}"));
        }
        // After the control topic: a revocation sent meanwhile comes on it.
        if let Err(why) = self.load_revocations(&mut conn.clone()).await {
            return LinkEnd::Lost(why);
        }
        self.ready.store(true, Ordering::SeqCst);
        self.flush_leaves().await;
        tracing::info!(node = %self.node, "connected to the redis cluster; node ready");
        let mut tick = tokio::time::interval(self.options.heartbeat);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.reset();
        let mut retry = tokio::time::interval(RESUBSCRIBE_EVERY);
        retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Channels whose subscription may have lapsed: subscribed again,
        // then caught up when the confirmation comes.
        let mut lapsed = Lapsed::default();
        // Pushes taken off the queue early (see `drain`), handled first.
        let mut deferred: VecDeque<PushInfo> = VecDeque::new();
        loop {
            if let Some(push) = deferred.pop_front() {
                self.on_push(
                    &conn,
                    generation,
                    push,
                    &mut pushes,
                    &mut deferred,
                    &mut lapsed,
                )
                .await;
                continue;
            }
            tokio::select! {
                push = pushes.recv() => match push {
                    Some(push) => {
                        self.on_push(&conn, generation, push, &mut pushes, &mut deferred, &mut lapsed)
                            .await;
                    }
                    None => return LinkEnd::Lost("the cluster connection closed".into()),
                },
                _ = tick.tick() => {
                    match self.heartbeat(&mut conn, false).await {
                        Ok(true) => {
                            tracing::warn!("the cluster took this node for dead; re-entering presence");
                            if let Err(why) = self.enter_all(&conn).await {
                                tracing::warn!(%why, "re-entering presence failed; retried at the next heartbeat");
                            }
                        }
                        Ok(false) => {}
                        Err(why) => tracing::warn!(%why, "heartbeat failed; retried at the next one"),
                    }
                    if !lock(&self.pending_leaves).is_empty() {
                        self.flush_leaves().await;
                    }
                }
                _ = retry.tick(), if !lapsed.is_empty() => {
                    self.resubscribe(&cluster, &mut lapsed).await;
                }
                changed = stop.changed() => {
                    let _ = changed;
                    self.ready.store(false, Ordering::SeqCst);
                    if let Err(why) = self.heartbeat(&mut conn, true).await {
                        tracing::warn!(%why, "could not leave the cluster cleanly");
                    }
                    return LinkEnd::Stopped;
                }
            }
        }
    }

    /// Delivers the messages already queued (other pushes wait in
    /// `deferred`): a catch-up must start from what the node has received,
    /// not from what it has handled so far, or it would take messages still
    /// in the queue for lost ones that the history no longer holds.
    fn drain(
        &self,
        generation: u64,
        pushes: &mut UnboundedReceiver<PushInfo>,
        deferred: &mut VecDeque<PushInfo>,
    ) {
        while let Ok(push) = pushes.try_recv() {
            if push.kind == PushKind::SMessage && deferred.is_empty() {
                self.dispatch_message(generation, &push);
            } else {
                deferred.push_back(push);
            }
        }
    }

    fn dispatch_message(&self, generation: u64, push: &PushInfo) {
        self.progress.answered();
        let topic = push
            .data
            .first()
            .and_then(bytes)
            .and_then(|t| std::str::from_utf8(t).ok());
        if let (Some(topic), Some(payload)) = (topic, push.data.get(1).and_then(bytes)) {
            self.dispatch(generation, topic, payload);
        }
    }

    /// One push from a shard.
    async fn on_push(
        &self,
        conn: &Conn,
        generation: u64,
        push: PushInfo,
        pushes: &mut UnboundedReceiver<PushInfo>,
        deferred: &mut VecDeque<PushInfo>,
        lapsed: &mut Lapsed,
    ) {
        let topic = push
            .data
            .first()
            .and_then(bytes)
            .and_then(|t| std::str::from_utf8(t).ok());
        match push.kind {
            PushKind::SMessage => self.dispatch_message(generation, &push),
            PushKind::SSubscribe => {
                let Some(topic) = topic else { return };
                {
                    let mut confirming = lock(&self.confirming);
                    if let Some(count) = confirming.get_mut(topic) {
                        *count -= 1;
                        if *count == 0 {
                            confirming.remove(topic);
                        }
                        // This node's own subscription of a new channel:
                        // its subscribers read history after it.
                        return;
                    }
                }
                let Some(slot) = self.wanted(topic) else {
                    return;
                };
                // Subscribed again (by redis-rs, or by `resubscribe`):
                // whatever was published meanwhile comes from history.
                self.drain(generation, pushes, deferred);
                if let Err(error) = self.catch_up_slot(conn, &slot, generation).await {
                    tracing::debug!(channel = &*slot.name, %error, "catch-up failed; retried");
                    lapsed.channels.insert(slot.name.clone());
                }
            }
            PushKind::SUnsubscribe => {
                // The shard gave the slot away (migration, failover), or
                // this node left the channel (then it is no longer wanted).
                if topic == Some(self.control_topic.as_str()) {
                    lapsed.control = true;
                } else if let Some(slot) = topic.and_then(|t| self.wanted(t)) {
                    lapsed.channels.insert(slot.name.clone());
                }
            }
            PushKind::Disconnection => {
                // A shard connection dropped: its subscriptions lapsed.
                // Which channels were on it is the slot map's business, so
                // every channel (and the controls' topic) is subscribed
                // again, and the channels caught up.
                lapsed.channels.extend(self.channels().keys().cloned());
                lapsed.control = true;
            }
            _ => {}
        }
    }

    /// The channel of `topic`, if this node has subscribers of it.
    fn wanted(&self, topic: &str) -> Option<Arc<Slot>> {
        let name = self.channel_of(topic)?;
        self.channels().get(name).cloned()
    }

    /// Subscribes the lapsed channels (and the controls' topic) again;
    /// those confirmed are caught up when their confirmation arrives (see
    /// `on_push`). Controls have no history: those sent while the
    /// subscription lapsed are not delivered to this node (at most once).
    async fn resubscribe(&self, cluster: &ClusterConnection, lapsed: &mut Lapsed) {
        if lapsed.control {
            let mut sink = cluster.clone();
            let subscribe = sink.ssubscribe(&self.control_topic);
            match tokio::time::timeout(self.options.command_timeout, subscribe).await {
                Ok(Ok(())) => lapsed.control = false,
                Ok(Err(error)) => tracing::debug!(%error, "SSUBSCRIBE of controls failed; retried"),
                Err(_) => tracing::debug!("SSUBSCRIBE of controls timed out; retried"),
            }
        }
        let names: Vec<Arc<str>> = lapsed.channels.iter().cloned().collect();
        for name in names {
            let Some(slot) = self.channels().get(&name).cloned() else {
                lapsed.channels.remove(&name);
                continue;
            };
            let mut sink = cluster.clone();
            let subscribe = sink.ssubscribe(&slot.topic);
            match tokio::time::timeout(self.options.command_timeout, subscribe).await {
                Ok(Ok(())) => {
                    lapsed.channels.remove(&name);
                }
                Ok(Err(error)) => {
                    tracing::debug!(channel = &*name, %error, "SSUBSCRIBE failed; retried");
                }
                Err(_) => tracing::debug!(channel = &*name, "SSUBSCRIBE timed out; retried"),
            }
        }
    }

    /// Reads what `slot`'s subscribers may have missed and delivers it (or
    /// a gap).
    async fn catch_up_slot(
        &self,
        conn: &Conn,
        slot: &Slot,
        generation: u64,
    ) -> Result<(), BrokerError> {
        let (base, check) = {
            let state = lock(&slot.state);
            let check = state.fanout.check().map(|(e, o)| (e.to_owned(), o));
            (state.fanout.catch_up_base(), check)
        };
        let Some(base) = base else {
            return Ok(());
        };
        let read = self
            .read_after(&mut conn.clone(), "", slot, base.from.as_ref(), check)
            .await?;
        self.apply_catch_up(slot, generation, base.from, read);
        Ok(())
    }

    /// Heartbeat on Redis Cluster, then the cleanup of the silent nodes it
    /// names; `Ok(true)` when this node was not registered. `leaving`:
    /// removes this node's own presence and registration instead.
    pub(super) async fn cluster_heartbeat(
        &self,
        conn: &mut Conn,
        leaving: bool,
    ) -> Result<bool, String> {
        if leaving {
            self.purge_node(conn, &self.node).await?;
            return Ok(false);
        }
        let mut invocation = self.scripts.heartbeat.prepare_invoke();
        invocation
            .key(self.nodes_key())
            .arg(&self.node)
            .arg(millis(self.options.node_expiry));
        let reply = self
            .invoke(&invocation, conn)
            .await
            .map_err(|e| e.to_string())?;
        let Some([added, dead]) = array(&reply) else {
            return Err("bad heartbeat reply".into());
        };
        let dead: Vec<String> = array(dead)
            .unwrap_or_default()
            .iter()
            .filter_map(|d| String::from_utf8(bytes(d)?.to_vec()).ok())
            .collect();
        for node in &dead {
            self.purge_node(conn, node).await?;
        }
        if !dead.is_empty() {
            tracing::info!(nodes = dead.len(), "removed the presence of silent nodes");
        }
        Ok(int(added) == Some(1))
    }

    /// Removes the presence entries of `node` (each announced with a leave)
    /// and its registration.
    async fn purge_node(&self, conn: &mut Conn, node: &str) -> Result<(), String> {
        let node_key = format!("{}:node:{node}:pres", self.options.prefix);
        let mut command = redis::cmd("HGETALL");
        command.arg(&node_key);
        let reply = self.query(conn, &command).await?;
        let pairs: Vec<(String, String)> = match &reply {
            Value::Map(map) => map
                .iter()
                .filter_map(|(k, v)| Some((text(k)?, text(v)?)))
                .collect(),
            Value::Array(items) => items
                .chunks_exact(2)
                .filter_map(|kv| Some((text(&kv[0])?, text(&kv[1])?)))
                .collect(),
            _ => Vec::new(),
        };
        for (entry, user) in &pairs {
            let Some((client, channel)) = entry.split_once(' ') else {
                continue;
            };
            let mut invocation = self.scripts.purge.prepare_invoke();
            invocation
                .key(self.key(channel, "pres"))
                .arg(client)
                .arg(node)
                .arg(self.topic(channel))
                .arg(user);
            self.invoke(&invocation, conn)
                .await
                .map_err(|e| e.to_string())?;
        }
        let mut del = redis::cmd("DEL");
        del.arg(&node_key);
        self.query(conn, &del).await?;
        let mut zrem = redis::cmd("ZREM");
        zrem.arg(self.nodes_key()).arg(node);
        self.query(conn, &zrem).await?;
        Ok(())
    }

    /// One command within the command timeout.
    async fn query(&self, conn: &mut Conn, command: &redis::Cmd) -> Result<Value, String> {
        match tokio::time::timeout(
            self.options.command_timeout,
            command.query_async::<Value>(conn),
        )
        .await
        {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err("redis did not answer in time".into()),
        }
    }
}

fn text(value: &Value) -> Option<String> {
    String::from_utf8(bytes(value)?.to_vec()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: &str) -> ClusterUrl {
        ClusterUrl::parse(url)
            .expect("valid")
            .expect("a cluster URL")
    }

    #[test]
    fn cluster_urls_parse() {
        let url = parse("redis+cluster://10.0.0.1:7000,10.0.0.2,[::1]:7002");
        assert!(!url.tls);
        assert_eq!(url.nodes, ["10.0.0.1:7000", "10.0.0.2:6379", "[::1]:7002"]);
        assert_eq!(url.node_url("10.0.0.1:7000"), "redis://10.0.0.1:7000");
        let url = parse("REDISS+CLUSTER://app:p%40ss@h1:1,h2:2/");
        assert!(url.tls);
        assert_eq!(url.node_url("h2:2"), "rediss://app:p%40ss@h2:2");
        assert!(!format!("{url:?}").contains("p%40ss"));
        assert_eq!(ClusterUrl::parse("redis://h:1").unwrap(), None);
        assert_eq!(ClusterUrl::parse("redis+sentinel://h:1/m").unwrap(), None);
    }

    #[test]
    fn bad_cluster_urls_are_sentences_without_the_password() {
        let cases = [
            ("redis+cluster://", "name at least one node"),
            ("redis+cluster://:pw@", "name at least one node"),
            ("redis+cluster://h:x,h:2", "`h:x` is not a node address"),
            ("redis+cluster://:pw@h:1/2", "has no database or options"),
            ("redis+cluster://h:1?db=1", "has no database or options"),
        ];
        for (url, expected) in cases {
            let error = ClusterUrl::parse(url).expect_err(url).to_string();
            assert!(error.contains(expected), "{url}: {error}");
            assert!(error.starts_with("redis URL \"redis+cluster://"), "{error}");
            assert!(!error.contains("pw"), "{error}");
        }
    }
}
