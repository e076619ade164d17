//! The hub: the state shared by every connection of one node.
//!
//! Invariants: the hub is built from a validated [`HubConfig`] and never
//! changes it afterwards; client ids are unique on the node and, with a
//! random node prefix, across a cluster. The broker is chosen once, from
//! [`HubConfig::redis`]: the in-memory broker without it, the Redis broker
//! (a member of a cluster) with it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use duplex::Shutdown;
use duplex_hub_proto::{ClientInfo, Data, JsonText};

use crate::auth::Verifier;
use crate::broker::memory::MemoryBroker;
use crate::broker::redis::{RedisBroker, RedisOptions};
use crate::broker::{Broker, BrokerError, Publish};
use crate::config::{HubConfig, NamespaceConfig, Permission, STATS_CHANNEL, SYS_NAMESPACE};
use crate::control::{Control, NodeMessage, Post, Registry, Unrevoke};
use crate::limits::{Admission, RatePolicy};
use crate::metrics::Metrics;
use duplex_hub_proto::revocation::{Full, Revocation};

/// Why a hub could not be built from its configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HubError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// A key for token verification could not be read or used.
    #[error("auth: {0}")]
    Auth(#[from] crate::auth::KeyError),
    /// TLS files could not be loaded (a [`duplex::Error::Tls`], which says
    /// which file and why).
    #[error("{0}")]
    Tls(#[source] duplex::Error),
    /// The Redis broker could not be set up (a malformed URL, an unusable
    /// CA file, no runtime …).
    #[error(transparent)]
    Redis(#[from] crate::broker::redis::RedisSetupError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {error}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        error: std::io::Error,
    },
}

/// One node's shared state. Build it with [`Hub::new`], serve it with
/// [`crate::Server`].
#[derive(Debug)]
pub struct Hub {
    pub(crate) config: Arc<HubConfig>,
    pub(crate) broker: Arc<dyn Broker>,
    memory: Option<Arc<MemoryBroker>>,
    redis: Option<Arc<RedisBroker>>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) verifier: Option<Verifier>,
    pub(crate) admission: Admission,
    /// Refused and cut-off connections logged at most once per address
    /// per interval.
    pub(crate) refusals: crate::refusals::RefusalLog,
    /// The command-rate policy every session follows (`[limits]`).
    pub(crate) rate_policy: RatePolicy,
    pub(crate) ws_config: duplex::Config,
    /// [`duplex_hub_proto::SUBPROTOCOL`], shared by every connection's `WebSocket`.
    pub(crate) subprotocol: Arc<str>,
    /// [`duplex_hub_proto::SUBPROTOCOL_BINARY`], likewise.
    pub(crate) subprotocol_binary: Arc<str>,
    /// This node's live sessions, which the server API's controls reach.
    pub(crate) registry: Arc<Registry>,
    /// Lifecycle events (webhooks) and the cluster's connections per user.
    pub(crate) events: Arc<crate::events::Events>,
    /// The proxy hooks (`[hooks]`), when any is configured.
    pub(crate) hooks: Option<Arc<crate::hooks::Hooks>>,
    /// The operator console's logged-in sessions (`crate::console`).
    pub(crate) console: crate::console::Logins,
    /// When the hub was built (`info`'s uptime).
    pub(crate) started: std::time::Instant,
    /// This node's 24-bit id: the prefix of its client ids.
    node_prefix: u32,
    next_id: AtomicU64,
    pub(crate) shutdown: Shutdown,
    stopping: AtomicBool,
    /// Set when the server is dropped or its grace period ran out: sessions
    /// end at once, without a close handshake.
    aborted: AtomicBool,
}

impl std::fmt::Debug for dyn Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Broker")
    }
}

impl Hub {
    /// A hub on the broker its configuration names: in memory, or, with
    /// [`HubConfig::redis`], a member of a cluster through Redis with the
    /// default [`RedisOptions`] (it connects in the background: see
    /// [`Hub::connect`] to wait for it). The Redis broker needs a tokio
    /// runtime.
    pub fn new(config: HubConfig) -> Result<Arc<Self>, HubError> {
        Self::build(config, RedisOptions::default())
    }

    /// A cluster member through the Redis at [`HubConfig::redis`] (which
    /// must be set), with these options.
    pub fn with_redis_options(
        config: HubConfig,
        options: RedisOptions,
    ) -> Result<Arc<Self>, HubError> {
        if config.redis.is_none() {
            return Err(crate::broker::redis::RedisSetupError::NoUrl.into());
        }
        Self::build(config, options)
    }

    /// [`Hub::new`], then, with Redis, waits up to 5 s for the first
    /// connection. A node that cannot reach Redis yet still starts: it
    /// answers `/readyz` with 503 and keeps trying.
    pub async fn connect(config: HubConfig) -> Result<Arc<Self>, HubError> {
        let hub = Self::new(config)?;
        if hub.redis.is_some() && !hub.wait_ready(Duration::from_secs(5)).await {
            tracing::warn!("redis is not reachable yet; not ready until it is");
        }
        Ok(hub)
    }

    /// Waits until the broker is ready, at most `within`; returns whether
    /// it is.
    pub async fn wait_ready(&self, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if self.broker.is_ready() {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Leaves the cluster (Redis broker): removes this node's presence and
    /// registration and stops its link to Redis. Call it after the server
    /// stopped; nothing with the in-memory broker.
    pub async fn leave_cluster(&self) {
        if let Some(redis) = &self.redis {
            redis.leave().await;
        }
    }

    fn build(mut config: HubConfig, redis_options: RedisOptions) -> Result<Arc<Self>, HubError> {
        config.validate()?;
        // The hub's statistics: open to anyone only when the admin pages are
        // (see `AdminConfig`); otherwise to a grant (a JWT's, or the admin
        // token's, see `server`).
        let open = config.admin_open();
        config
            .namespaces
            .entry(SYS_NAMESPACE.to_owned())
            .or_insert_with(|| NamespaceConfig {
                history_size: 120,
                presence: false,
                join_leave: false,
                publish: Permission::None,
                subscribe: if open {
                    Permission::Any
                } else {
                    Permission::Granted
                },
                anonymous: Some(open),
                ..NamespaceConfig::default()
            });
        let verifier = match &config.auth {
            None => None,
            Some(auth) => Some(Verifier::from_config(auth)?),
        };
        let config = Arc::new(config);
        let metrics = Arc::new(Metrics::new());
        let hooks = crate::hooks::Hooks::new(&config.hooks, metrics.clone())?;
        let mut ws_config = duplex::Config::default();
        ws_config.protocol.max_message_size = config.limits.max_message_size;
        ws_config.protocol.max_frame_size = config.limits.max_message_size;
        ws_config.ping_interval = Some(config.heartbeat.ping_interval);
        ws_config.pong_timeout = config.heartbeat.pong_timeout;
        ws_config.park_after = Some(config.heartbeat.park_after).filter(|after| !after.is_zero());
        ws_config.write_buffer_high_water = 256 << 10;
        ws_config.close_timeout = Duration::from_secs(5);
        ws_config.send_buffer_size = config.limits.socket_send_buffer;
        ws_config.recv_buffer_size = config.limits.socket_recv_buffer;
        // `[limits] compression`: off declines permessage-deflate (no
        // compression state on any connection); shared accepts it without
        // context takeover, so each delivery's compressed frame is made once
        // and shared (`duplex::PreparedMessage`). Replies to a client's own
        // commands go through its connection's compressor, which then keeps
        // nothing between messages either.
        ws_config.deflate = match config.limits.compression {
            crate::config::Compression::Off => None,
            crate::config::Compression::Shared => Some(duplex::config::DeflateConfig::shared()),
        };
        let node_prefix = {
            use rand::Rng;
            rand::rng().random_range(0..0x100_0000u32)
        };
        let node = format!("{node_prefix:06x}");
        let registry = Arc::new(Registry::default());
        let (broker, memory, redis): (Arc<dyn Broker>, _, _) = match &config.redis {
            None => {
                let memory = Arc::new(MemoryBroker::new(config.clone(), metrics.clone()));
                (memory.clone(), Some(memory), None)
            }
            Some(url) => {
                let redis = RedisBroker::start(
                    url,
                    config.clone(),
                    metrics.clone(),
                    node.clone(),
                    redis_options,
                    registry.clone(),
                )?;
                (redis.clone(), None, Some(redis))
            }
        };
        let events = Arc::new(crate::events::Events::new(&config, &node, redis.clone())?);
        Ok(Arc::new(Self {
            events,
            admission: Admission::new(
                config.limits.max_connections,
                config.limits.max_connections_per_ip,
            )
            .with_rate(
                config.limits.connection_rate_per_ip,
                config.limits.connection_burst_per_ip,
            ),
            rate_policy: crate::limits::rate_policy(&config.limits),
            refusals: crate::refusals::RefusalLog::default(),
            broker,
            memory,
            redis,
            config,
            metrics,
            verifier,
            ws_config,
            subprotocol: duplex_hub_proto::SUBPROTOCOL.into(),
            subprotocol_binary: duplex_hub_proto::SUBPROTOCOL_BINARY.into(),
            node_prefix,
            registry,
            hooks,
            console: crate::console::Logins::default(),
            started: std::time::Instant::now(),
            next_id: AtomicU64::new(1),
            shutdown: Shutdown::new(),
            stopping: AtomicBool::new(false),
            aborted: AtomicBool::new(false),
        }))
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &HubConfig {
        &self.config
    }

    /// Its metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Whether it can serve: the broker is ready and it is not shutting down.
    pub fn is_ready(&self) -> bool {
        self.broker.is_ready() && !self.stopping.load(Ordering::Relaxed)
    }

    /// Starts shutting down: `/readyz` turns false and every connection is
    /// sent close 1001, whose reason advises a delay before reconnecting,
    /// spread uniformly over [`HubConfig::drain_spread`] (the drain; see
    /// [`duplex::shutdown`]). Returns the delays handed out.
    pub fn begin_shutdown(&self) -> Vec<std::time::Duration> {
        self.stopping.store(true, Ordering::Relaxed);
        self.shutdown.trigger_spread(self.config.drain_spread)
    }

    /// Ends every session at once, without a close handshake (the server
    /// was dropped, or its grace period ran out). Sessions see it at their
    /// next wake-up: at once if shutdown had not begun (the trigger wakes
    /// them), else within their close timeout.
    pub(crate) fn abort_sessions(&self) {
        self.aborted.store(true, Ordering::Release);
        let _ = self.begin_shutdown();
    }

    /// Whether [`Hub::abort_sessions`] was called.
    pub(crate) fn sessions_aborted(&self) -> bool {
        self.aborted.load(Ordering::Acquire)
    }

    /// This node's id (six hex digits, the prefix of its client ids).
    pub(crate) fn node_id(&self) -> String {
        format!("{:06x}", self.node_prefix)
    }

    /// Every node's report for the server API's `info`: with Redis, each
    /// live node's (at most one heartbeat old); else this node's.
    pub(crate) async fn nodes(&self) -> Result<Vec<serde_json::Value>, BrokerError> {
        if let Some(redis) = &self.redis {
            return redis.nodes().await;
        }
        Ok(vec![serde_json::json!({
            "id": self.node_id(),
            "version": env!("CARGO_PKG_VERSION"),
            "protocol": duplex_hub_proto::VERSION,
            "connections": self.admission.current(),
            "sessions": self.registry.len(),
            "revocations": self.registry.revocations(),
            "uptime": self.started.elapsed().as_secs(),
        })])
    }

    /// `user`'s connections on every node for the server API's
    /// `connections`: each answering node's list, by node id, and how many
    /// nodes were asked (this one with the in-memory broker; with Redis,
    /// those the question reached: a node that did not answer within the
    /// command timeout is missing from the list).
    pub(crate) async fn connections(
        &self,
        user: &str,
    ) -> Result<(Vec<(String, crate::control::Listed)>, usize), BrokerError> {
        match &self.redis {
            Some(redis) => redis.connections(user).await,
            None => Ok((vec![(self.node_id(), self.registry.connections(user))], 1)),
        }
    }

    /// Hands a server API control to the sessions it targets on every node
    /// (see [`crate::control`]); returns how many nodes it reached (this
    /// one with the in-memory broker; those listening on Redis with it).
    pub(crate) async fn control(&self, control: &Control) -> Result<usize, BrokerError> {
        match &self.redis {
            Some(redis) => redis.control(&NodeMessage::Control(control.clone())).await,
            None => {
                self.registry.apply(control);
                Ok(1)
            }
        }
    }

    /// Revokes a token or a user's tokens on every node until its expiry
    /// (with Redis, kept there first, so a node that reconnects later
    /// loads it); returns how many nodes it reached, or `Ok(Err)` when the
    /// revocations in force are as many as a node keeps.
    pub(crate) async fn revoke(
        &self,
        revocation: Revocation,
    ) -> Result<Result<usize, Full>, BrokerError> {
        let now = now_secs();
        match &self.redis {
            Some(redis) => {
                if let Err(full) = redis.store_revocation(&revocation, now).await? {
                    return Ok(Err(full));
                }
                redis
                    .control(&NodeMessage::Control(Control::Revoke { revocation }))
                    .await
                    .map(Ok)
            }
            None => Ok(self.registry.revoke(revocation, now).map(|_| 1)),
        }
    }

    /// Withdraws a revocation on every node; returns how many it reached.
    pub(crate) async fn unrevoke(&self, which: Unrevoke) -> Result<usize, BrokerError> {
        match &self.redis {
            Some(redis) => {
                redis.remove_revocation(&which).await?;
                redis
                    .control(&NodeMessage::Control(Control::Unrevoke { which }))
                    .await
            }
            None => {
                self.registry.unrevoke(&which);
                Ok(1)
            }
        }
    }

    /// Hands commands posted for an HTTP session to the node that holds it
    /// (see [`crate::sse`]): with Redis, every node over the control topic,
    /// where the one holding it takes them (even when that is this node:
    /// posts that landed on different nodes then reach the session in the
    /// order Redis took them, which is the order the client sent them, one
    /// at a time); without, this node's links.
    pub(crate) async fn post(&self, post: Post) -> Result<(), crate::sse::PostError> {
        match &self.redis {
            Some(redis) => redis
                .control(&NodeMessage::Post(post))
                .await
                .map(drop)
                .map_err(crate::sse::PostError::Broker),
            None => self.registry.links.deliver(post),
        }
    }

    /// This node's 24-bit id.
    pub(crate) fn node_prefix(&self) -> u32 {
        self.node_prefix
    }

    /// A new connection's [`crate::broker::Member::id`], which its client
    /// id is made of.
    pub(crate) fn next_client(&self) -> u64 {
        let number = self.next_id.fetch_add(1, Ordering::Relaxed);
        crate::broker::member_id(self.node_prefix, number)
    }

    /// Runs the hub's own periodic work until shutdown: the statistics
    /// published to [`STATS_CHANNEL`] every second, and sweeping channels
    /// that are no longer used.
    pub(crate) async fn housekeeping(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut ticks = 0u64;
        let mut window = crate::metrics::LatencyWindow::new(crate::metrics::LATENCY_WINDOW);
        loop {
            tick.tick().await;
            if self.shutdown.is_triggered() {
                return;
            }
            ticks += 1;
            self.publish_stats(&mut window).await;
            if ticks.is_multiple_of(10) {
                if let Some(memory) = &self.memory {
                    memory.sweep();
                }
                if let Some(redis) = &self.redis {
                    redis.sweep();
                }
            }
        }
    }

    /// Publishes the counters since start and the delivery latencies of
    /// the last [`crate::metrics::LATENCY_WINDOW`] seconds.
    async fn publish_stats(&self, window: &mut crate::metrics::LatencyWindow) {
        let snapshot = self.metrics.snapshot();
        let recent = window.push(snapshot.clone());
        let mut value = serde_json::json!({
            "time": now_ms(),
            "connections": snapshot.connections,
            "messages_in": snapshot.messages_in,
            "messages_out": snapshot.messages_out,
            "publishes": snapshot.publishes,
            "latency_window": crate::metrics::LATENCY_WINDOW,
            "latency_count": recent.latency_count,
            "latency_p50": recent.latency_p50,
            "latency_p90": recent.latency_p90,
            "latency_p99": recent.latency_p99,
        });
        if let (Some(value), serde_json::Value::Object(breakdown)) =
            (value.as_object_mut(), self.metrics.breakdown())
        {
            value.extend(breakdown);
        }
        let publish = Publish {
            channel: STATS_CHANNEL.into(),
            data: Data::Json(JsonText::from_value(&value)),
            from: ClientInfo {
                client: String::new(),
                user: String::new(),
            },
            key: None,
            time: now_ms(),
        };
        if let Err(error) = self.broker.publish(publish).await {
            tracing::debug!(%error, "stats not published");
        }
    }
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Seconds since the Unix epoch.
pub(crate) fn now_secs() -> u64 {
    now_ms() / 1000
}
