//! The in-memory broker of a single node.
//!
//! Each channel is one [`Channel`] behind its own lock, holding its log (a
//! [`ChannelLog`]: epoch, offsets, bounded history of already-encoded
//! frames, idempotency keys), its local subscribers and its presence. Publishing, subscribing and
//! unsubscribing a channel all happen under that lock, which is what makes
//! offsets, delivery order and subscribe-with-recovery atomic.
//!
//! Invariants (beyond the [`Broker`] ones):
//! - History holds at most the namespace's `history_size` messages, none
//!   older than its `history_ttl` once the channel is next touched or swept.
//! - A channel with no subscriber and no history left is removed by
//!   [`MemoryBroker::sweep`]; when it is next used it starts a new epoch, so
//!   an old offset is reported as a gap, never misread.
//! - A frame is encoded once per publish and shared by every subscriber and
//!   by the history.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use duplex::PreparedMessage;
use duplex_hub_proto::log::{Appended, ChannelLog, HistoryLimits};
use duplex_hub_proto::{ClientInfo, Data, Publication, ServerMessage};
use tokio::time::Instant;

use super::{
    BoxFuture, Broker, BrokerError, Publish, Published, Subscribe, Subscribed, Subscriber,
    new_epoch,
};
use crate::config::{HubConfig, NamespaceConfig};
use crate::frame::prepare;
use crate::metrics::Metrics;

/// A single node's broker. See the module docs.
#[derive(Debug)]
pub struct MemoryBroker {
    config: Arc<HubConfig>,
    metrics: Arc<Metrics>,
    channels: Mutex<HashMap<Arc<str>, Arc<Mutex<Channel>>>>,
    /// Where the logs' clock starts.
    origin: Instant,
}

#[derive(Debug)]
struct Channel {
    log: ChannelLog<PreparedMessage>,
    subscribers: Vec<Subscriber>,
}

impl Channel {
    fn new() -> Self {
        Self {
            log: ChannelLog::new(new_epoch()),
            subscribers: Vec::new(),
        }
    }

    /// Pushes `frame` to every subscriber except `except`; returns how many
    /// it reached.
    fn deliver(&self, frame: &PreparedMessage, published: Instant, except: Option<u64>) -> usize {
        let mut reached = 0;
        for sub in &self.subscribers {
            if Some(sub.id) != except && sub.outbox.push(frame.clone(), published) {
                reached += 1;
            }
        }
        reached
    }
}

/// A namespace's history bounds, as the log takes them.
fn history_limits(ns: &NamespaceConfig) -> HistoryLimits {
    HistoryLimits {
        size: ns.history_size,
        bytes: usize::MAX,
        ttl_ms: u64::try_from(ns.history_ttl.as_millis()).unwrap_or(u64::MAX),
    }
}

impl MemoryBroker {
    /// A broker with no channels.
    pub fn new(config: Arc<HubConfig>, metrics: Arc<Metrics>) -> Self {
        Self {
            config,
            metrics,
            channels: Mutex::new(HashMap::new()),
            origin: Instant::now(),
        }
    }

    /// Milliseconds since `origin`: the logs' clock.
    fn now_ms(&self, now: Instant) -> u64 {
        u64::try_from(now.duration_since(self.origin).as_millis()).unwrap_or(u64::MAX)
    }

    fn channels(&self) -> MutexGuard<'_, HashMap<Arc<str>, Arc<Mutex<Channel>>>> {
        self.channels.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The channel, created if `create`.
    fn channel(&self, name: &Arc<str>, create: bool) -> Option<Arc<Mutex<Channel>>> {
        self.named_channel(name, create).map(|(_, channel)| channel)
    }

    /// The channel and its name as the map keeps it; see [`Self::channel`].
    fn named_channel(
        &self,
        name: &Arc<str>,
        create: bool,
    ) -> Option<(Arc<str>, Arc<Mutex<Channel>>)> {
        let mut channels = self.channels();
        if let Some((key, channel)) = channels.get_key_value(name) {
            return Some((key.clone(), channel.clone()));
        }
        if !create {
            return None;
        }
        let channel = Arc::new(Mutex::new(Channel::new()));
        channels.insert(name.clone(), channel.clone());
        self.metrics.set_channels(channels.len());
        Some((name.clone(), channel))
    }

    /// Removes channels that have no subscriber and no history left (after
    /// pruning by age). Call it periodically.
    pub fn sweep(&self) {
        let now = self.now_ms(Instant::now());
        let mut channels = self.channels();
        channels.retain(|name, channel| {
            let limits = history_limits(self.config.namespace(name));
            let mut channel = lock(channel);
            channel.log.prune(&limits, now);
            !(channel.subscribers.is_empty() && channel.log.is_empty())
        });
        self.metrics.set_channels(channels.len());
    }

    fn publish_now(&self, publish: Publish) -> Published {
        let limits = history_limits(self.config.namespace(&publish.channel));
        let channel = self.channel(&publish.channel, true).expect("created");
        let mut channel = lock(&channel);
        let now = Instant::now();
        let Publish {
            channel: name,
            data,
            from,
            key,
            time,
        } = publish;
        let appended = channel
            .log
            .append(key.as_deref(), self.now_ms(now), &limits, |offset| {
                let frame = prepare(&ServerMessage::Message(Publication {
                    channel: name.to_string(),
                    offset,
                    time,
                    from,
                    data,
                }));
                let size = frame.frame().len();
                (frame, size)
            });
        match appended {
            Appended::Duplicate { offset } => Published {
                offset,
                duplicate: true,
            },
            Appended::New { offset, frame } => {
                let reached = channel.deliver(&frame, now, None);
                self.metrics.published(reached, frame.frame().len());
                Published {
                    offset,
                    duplicate: false,
                }
            }
        }
    }

    fn subscribe_now(&self, subscribe: Subscribe) -> Subscribed {
        let ns = self.config.namespace(&subscribe.channel);
        let (name, channel) = self
            .named_channel(&subscribe.channel, true)
            .expect("created");
        let mut channel = lock(&channel);
        let now = Instant::now();
        let sub = subscribe.subscriber;
        let (plan, replay) = channel.log.subscribe(
            subscribe.since.as_ref(),
            subscribe.recent,
            self.now_ms(now),
            &history_limits(ns),
        );
        for frame in replay {
            sub.outbox.push(frame.clone(), now);
        }
        if ns.presence && ns.join_leave {
            let join = prepare(&ServerMessage::Join {
                channel: subscribe.channel.to_string(),
                user: sub.user().to_owned(),
                client: sub.client(),
            });
            channel.deliver(&join, now, None);
        }
        channel.subscribers.push(sub);
        Subscribed {
            name,
            epoch: channel.log.epoch().to_owned(),
            offset: channel.log.last(),
            recovered: plan.recovered,
            gap: plan.gap,
        }
    }

    fn unsubscribe_now(&self, name: &str, sub: &Subscriber) {
        let ns = self.config.namespace(name);
        let name: Arc<str> = name.into();
        let Some(channel) = self.channel(&name, false) else {
            return;
        };
        let mut channel = lock(&channel);
        let before = channel.subscribers.len();
        channel.subscribers.retain(|s| s.id != sub.id);
        if channel.subscribers.len() != before && ns.presence && ns.join_leave {
            let leave = prepare(&ServerMessage::Leave {
                channel: name.to_string(),
                user: sub.user().to_owned(),
                client: sub.client(),
            });
            channel.deliver(&leave, Instant::now(), None);
        }
        if channel.subscribers.is_empty() && channel.subscribers.capacity() > 4 {
            channel.subscribers = Vec::new();
        }
    }

    fn presence_now(&self, name: &str) -> Vec<ClientInfo> {
        let name: Arc<str> = name.into();
        self.channel(&name, false)
            .map(|channel| {
                lock(&channel)
                    .subscribers
                    .iter()
                    .map(|s| s.info())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn signal_now(&self, name: &str, from: &Subscriber, data: Data) {
        let name: Arc<str> = name.into();
        let Some(channel) = self.channel(&name, false) else {
            return;
        };
        let channel = lock(&channel);
        let frame = prepare(&ServerMessage::Signal {
            channel: name.to_string(),
            from: from.info(),
            data,
        });
        channel.deliver(&frame, Instant::now(), Some(from.id));
    }
}

fn lock(channel: &Mutex<Channel>) -> MutexGuard<'_, Channel> {
    channel.lock().unwrap_or_else(|e| e.into_inner())
}

impl Broker for MemoryBroker {
    fn publish(&self, publish: Publish) -> BoxFuture<'_, Result<Published, BrokerError>> {
        let published = self.publish_now(publish);
        Box::pin(std::future::ready(Ok(published)))
    }

    fn subscribe(&self, subscribe: Subscribe) -> BoxFuture<'_, Result<Subscribed, BrokerError>> {
        let subscribed = self.subscribe_now(subscribe);
        Box::pin(std::future::ready(Ok(subscribed)))
    }

    fn unsubscribe(&self, channel: &str, subscriber: &Subscriber) -> BoxFuture<'_, ()> {
        self.unsubscribe_now(channel, subscriber);
        Box::pin(std::future::ready(()))
    }

    fn presence(&self, channel: &str) -> BoxFuture<'_, Result<Vec<ClientInfo>, BrokerError>> {
        let clients = self.presence_now(channel);
        Box::pin(std::future::ready(Ok(clients)))
    }

    fn signal(
        &self,
        channel: &str,
        from: &Subscriber,
        data: Data,
    ) -> BoxFuture<'_, Result<(), BrokerError>> {
        self.signal_now(channel, from, data);
        Box::pin(std::future::ready(Ok(())))
    }

    fn is_ready(&self) -> bool {
        true
    }

    fn local_channels(&self) -> usize {
        self.channels().len()
    }
}
