//! Lifecycle events (webhooks) and the cluster's registry of connections
//! per user: the drivers around `duplex_hub_proto::events`.
//!
//! Sessions report what happens to them ([`Events::connect`],
//! [`Events::subscribed`], [`Events::unsubscribed`],
//! [`Events::disconnected`]); the registry decides the events by the core's
//! rules and queues them, and a delivery task POSTs them, signed, to
//! `[webhooks] url`. Two stores:
//!
//! - **Local** (the in-memory broker, one node): the core's
//!   [`Registry`](duplex_hub_proto::events::Registry) under a lock, and a
//!   bounded queue in memory. A restart loses what the queue held.
//! - **Redis** (a cluster; `redis` module): the registry in Redis, changed
//!   by atomic Lua scripts that also append the events they decide to a
//!   bounded Redis stream in the same step, so no event is lost between a
//!   change and its queueing; any node delivers from the stream (a consumer
//!   group), and a dead node's connections, and the events it had taken but
//!   not confirmed, are taken over by the survivors.
//!
//! # Invariants
//!
//! - Off unless `[webhooks] url` or `[limits] max_connections_per_user` is
//!   set: then a session's calls here return at once and cost nothing.
//! - A session is in the registry from its `connect` until it ends (or its
//!   node is declared dead); a refused `connect` (the per-user limit)
//!   changes nothing and ends the connection with 4029.
//! - Hub channels (`$…`) are not reported.
//! - With Redis, a change that fails because Redis is away is kept (at most
//!   [`MAX_RETRIED_CHANGES`]) and applied again when it is back; a `connect`
//!   that cannot be registered is refused (1011), never served unregistered.

mod config;
mod delivery;
mod local;
mod metrics;
mod redis;
mod scripts;

use std::sync::Arc;
use std::time::Duration;

use duplex_hub_proto::close;
use duplex_hub_proto::events::{Event, EventSet, Refused, Rules};
use duplex_hub_proto::session::Close;

pub use config::{MIN_WEBHOOK_SECRET_LEN, SECRET_ENV, WebhooksConfig};
pub(crate) use metrics::EventMetrics;

use crate::broker::Subscriber;
use crate::broker::redis::RedisBroker;
use crate::config::HubConfig;
use crate::hub::HubError;
use delivery::Webhook;
use local::LocalStore;
use redis::RedisStore;

/// The most registry changes kept for Redis while it is away.
pub(crate) const MAX_RETRIED_CHANGES: usize = 10_000;

/// A connection refused at `connect` for exceeding the per-user limit.
const USER_LIMIT: Close = Close {
    code: close::TOO_MANY_FOR_USER,
    reason: "too many connections for this user",
};

/// A connection refused at `connect` because the registry is unreachable.
const REGISTRY_DOWN: Close = Close {
    code: close::INTERNAL,
    reason: "the connection registry is unavailable; try again",
};

/// One registry change, as a session reports it.
#[derive(Debug, Clone)]
pub(crate) enum Change {
    /// `client` of `user` connected.
    Connect {
        /// The client id.
        client: String,
        /// The user (`""`: anonymous).
        user: String,
    },
    /// `client` subscribed to `channel`.
    Subscribe {
        /// The client id.
        client: String,
        /// The channel.
        channel: String,
    },
    /// `client`'s subscription to `channel` ended.
    Unsubscribe {
        /// The client id.
        client: String,
        /// The channel.
        channel: String,
        /// Why, when the hub ended it.
        reason: Option<String>,
    },
    /// `client`'s connection ended with `code`.
    Disconnect {
        /// The client id.
        client: String,
        /// The close code.
        code: u16,
    },
}

/// Where the registry and the queue are.
enum Store {
    /// Nothing configured: no registry, no events.
    Off,
    /// One node: in memory.
    Local(LocalStore),
    /// A cluster: in Redis.
    Redis(RedisStore),
}

/// The node's lifecycle events and registry (see the module docs).
pub(crate) struct Events {
    store: Store,
    /// The event types sent.
    filter: EventSet,
    /// Where they go; `None` with only the per-user limit configured.
    webhook: Option<Arc<Webhook>>,
    pub(crate) metrics: Arc<EventMetrics>,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events")
            .field("on", &!matches!(self.store, Store::Off))
            .finish_non_exhaustive()
    }
}

impl Events {
    /// The events of node `node` as `config` says, on `redis` when the node
    /// is a cluster member.
    pub(crate) fn new(
        config: &HubConfig,
        node: &str,
        redis: Option<Arc<RedisBroker>>,
    ) -> Result<Self, HubError> {
        let hooks = &config.webhooks;
        let metrics = Arc::new(EventMetrics::new());
        let webhook = match Webhook::new(hooks) {
            Ok(webhook) => webhook.map(Arc::new),
            Err(crate::backend::BackendError::Tls(error)) => return Err(HubError::Tls(error)),
            Err(other) => {
                return Err(
                    crate::config::ConfigError::Invalid(format!("webhooks: {other}")).into(),
                );
            }
        };
        let filter = if webhook.is_some() {
            hooks.filter()
        } else {
            EventSet::NONE
        };
        let rules = Rules {
            offline_grace: millis(hooks.offline_grace),
            vacated_grace: millis(hooks.vacated_grace),
            max_per_user: config.limits.max_connections_per_user,
            channels: filter.has_channel_events(),
        };
        let on = webhook.is_some() || rules.max_per_user > 0;
        let store = match (on, redis) {
            (false, _) => Store::Off,
            (true, None) => Store::Local(LocalStore::new(rules, node, hooks.max_queue)),
            (true, Some(redis)) => Store::Redis(RedisStore::new(
                redis,
                rules,
                node,
                filter,
                hooks,
                metrics.clone(),
            )),
        };
        Ok(Self {
            store,
            filter,
            webhook,
            metrics,
        })
    }

    fn on(&self) -> bool {
        !matches!(self.store, Store::Off)
    }

    /// Registers a connection that completed `connect`; `Err` is the close
    /// that ends it (over the per-user limit, or no registry).
    pub(crate) async fn connect(&self, me: &Subscriber) -> Result<(), Close> {
        if !self.on() {
            return Ok(());
        }
        let change = Change::Connect {
            client: me.client(),
            user: me.user().to_owned(),
        };
        match self.apply(change, false).await {
            Ok(()) => Ok(()),
            Err(Applied::Refused(refused)) => {
                tracing::debug!(%refused, client = %me.client(), "connection refused");
                Err(USER_LIMIT)
            }
            Err(Applied::Unavailable) => Err(REGISTRY_DOWN),
        }
    }

    /// `me` subscribed to `channel`.
    pub(crate) async fn subscribed(&self, me: &Subscriber, channel: &str) {
        if self.tracks_channels() && !duplex_hub_proto::is_hub_channel(channel) {
            let change = Change::Subscribe {
                client: me.client(),
                channel: channel.to_owned(),
            };
            let _ = self.apply(change, true).await;
        }
    }

    /// `me`'s subscription to `channel` ended while it stays connected.
    pub(crate) async fn unsubscribed(&self, me: &Subscriber, channel: &str, reason: Option<&str>) {
        if self.tracks_channels() && !duplex_hub_proto::is_hub_channel(channel) {
            let change = Change::Unsubscribe {
                client: me.client(),
                channel: channel.to_owned(),
                reason: reason.map(str::to_owned),
            };
            let _ = self.apply(change, true).await;
        }
    }

    /// `me`'s connection (which completed `connect`) ended with `code`.
    pub(crate) async fn disconnected(&self, me: &Subscriber, code: u16) {
        if self.on() {
            let change = Change::Disconnect {
                client: me.client(),
                code,
            };
            let _ = self.apply(change, true).await;
        }
    }

    fn tracks_channels(&self) -> bool {
        self.on() && self.filter.has_channel_events()
    }

    /// Applies a change; with Redis away, keeps it for later when `keep`.
    async fn apply(&self, change: Change, keep: bool) -> Result<(), Applied> {
        match &self.store {
            Store::Off => Ok(()),
            Store::Local(local) => {
                let events = local.apply(&change, crate::hub::now_ms())?;
                self.queued(local, events);
                Ok(())
            }
            Store::Redis(redis) => redis.apply(change, keep).await,
        }
    }

    /// Counts and queues events the local registry decided.
    fn queued(&self, local: &LocalStore, events: Vec<Event>) {
        for event in events {
            if !self.filter.contains(event.kind) {
                continue;
            }
            self.metrics.emitted(event.kind);
            if !local.push(event.clone()) {
                self.metrics.dropped(event.kind);
                tracing::warn!(kind = event.kind.as_str(), id = %event.id, "webhook queue full: event dropped");
            }
        }
        self.metrics.set_queue_depth(local.depth() as u64);
    }

    /// Runs the registry's periodic work (graces, heartbeats, dead nodes)
    /// and the delivery, until the task is aborted (after [`Events::settle`]
    /// at shutdown); `disconnect_all` ends every session of the node
    /// (called if the cluster declared it dead).
    pub(crate) async fn run(self: Arc<Self>, disconnect_all: impl Fn() + Send + Sync + 'static) {
        {
            match &self.store {
                Store::Off => std::future::pending().await,
                Store::Local(local) => {
                    let ticks = async {
                        let mut tick = tokio::time::interval(Duration::from_millis(100));
                        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                        loop {
                            tick.tick().await;
                            let due = local.due(crate::hub::now_ms());
                            self.queued(local, due);
                        }
                    };
                    let deliver = async {
                        match &self.webhook {
                            Some(webhook) => local.deliver(webhook, &self.metrics).await,
                            None => std::future::pending().await,
                        }
                    };
                    tokio::join!(ticks, deliver);
                }
                Store::Redis(redis) => {
                    let deliver = async {
                        match &self.webhook {
                            Some(webhook) => redis.deliver(webhook).await,
                            None => std::future::pending().await,
                        }
                    };
                    tokio::join!(redis.tick(&disconnect_all), deliver);
                }
            }
        }
    }

    /// Waits, at most `within`, until what the node holds is handed on (at
    /// shutdown, after the sessions ended, before [`Events::run`]'s task is
    /// aborted): locally, until the queue is delivered; with Redis, until
    /// the changes kept while it was away are applied (the queue itself
    /// stays in Redis for the other nodes, or the next start).
    pub(crate) async fn settle(&self, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let done = match &self.store {
                Store::Off => true,
                Store::Local(local) => self.webhook.is_none() || local.is_idle(),
                Store::Redis(redis) => redis.is_settled(),
            };
            if done || tokio::time::Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Why a change was not applied.
#[derive(Debug)]
pub(crate) enum Applied {
    /// The rules refused it.
    Refused(Refused),
    /// Redis is away.
    Unavailable,
}

impl From<Refused> for Applied {
    fn from(refused: Refused) -> Self {
        Self::Refused(refused)
    }
}

/// Milliseconds, at least 0.
pub(crate) fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// A prefix for this process's event ids: the node and 32 random bits.
pub(crate) fn id_prefix(node: &str) -> String {
    use rand::Rng;
    format!("{node}{:08x}", rand::rng().random::<u32>())
}
