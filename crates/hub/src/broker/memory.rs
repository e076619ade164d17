//! The in-memory broker of a single node.
//!
//! Each channel is one [`Channel`] behind its own lock, holding its log (a
//! [`ChannelLog`]: epoch, offsets, bounded history of already-encoded
//! frames, idempotency keys), its local subscribers and its presence. Publishing, subscribing and
//! unsubscribing a channel all happen under that lock, which is what makes
//! offsets, delivery order and subscribe-with-recovery atomic.
//!
//! Invariants (beyond the [`Broker`] ones):
//! - History holds at most the namespace's `history_size` messages and
//!   `history_bytes` bytes, none older than its `history_ttl` once the
//!   channel is next touched or swept.
//! - **Node budget.** All channels together keep at most `[limits]
//!   history_bytes` of history (each message counting its JSON frame's size,
//!   [`crate::frame::SharedMessage::weight`], plus
//!   [`HISTORY_ENTRY_OVERHEAD`]; a message also sent to `duplex.v1.bin`
//!   subscribers keeps its binary frame too, smaller than the JSON one and
//!   not counted) once a publish returns: a publish that takes
//!   the node over it drops the node's oldest kept messages, whatever their
//!   channel, until it is within it again; a subscriber recovering from
//!   before them is told of a gap. The index of each channel's oldest kept
//!   message (by the node's publish order) makes finding them
//!   `O(log channels)`: every change to a log's oldest message updates it,
//!   under the channel's lock; the index's own lock is only ever taken last.
//! - **Channel cap.** A publish never creates a channel beyond `[limits]
//!   max_channels` (it is refused; the hub's own `$` channels neither count
//!   nor are refused); a subscribe may, its channels being bounded by
//!   connections × `max_subscriptions`.
//! - A channel with no subscriber and no history left is removed by
//!   [`MemoryBroker::sweep`]; when it is next used it starts a new epoch, so
//!   an old offset is reported as a gap, never misread. A removed channel
//!   is marked so under its lock: a publish or subscribe that got it from
//!   the map just before looks it up again rather than use it.
//! - A frame is encoded once per publish and shared by every subscriber and
//!   by the history.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use duplex_hub_proto::log::{Appended, ChannelLog, HistoryLimits};
use duplex_hub_proto::{ClientInfo, Data, Publication, ServerMessage, is_hub_channel};
use tokio::time::Instant;

use super::{
    BoxFuture, Broker, BrokerError, ChannelCount, HistoryPage, HistoryQuery, Publish, Published,
    Subscribe, Subscribed, Subscriber, matches_pattern, new_epoch,
};
use crate::config::{HISTORY_ENTRY_OVERHEAD, HubConfig, NamespaceConfig};
use crate::frame::{SharedMessage, prepare};
use crate::metrics::Metrics;
use crate::outbox::PublishTime;

/// A single node's broker. See the module docs.
#[derive(Debug)]
pub(crate) struct MemoryBroker {
    config: Arc<HubConfig>,
    metrics: Arc<Metrics>,
    channels: Mutex<HashMap<Arc<str>, Arc<Mutex<Channel>>>>,
    /// Where the logs' clock starts.
    origin: Instant,
    budget: Budget,
    /// How many of `channels` are the hub's own (`$`): changed under its lock.
    own_channels: AtomicUsize,
}

/// The node's history budget (see the module docs).
#[derive(Debug)]
struct Budget {
    /// `[limits] history_bytes`.
    limit: usize,
    /// Bytes kept by every channel's log together.
    bytes: AtomicUsize,
    /// The next message's place in the node's publish order.
    next_seq: AtomicU64,
    /// Each channel that keeps messages, by its oldest one's place.
    heads: Mutex<Heads>,
}

/// The channels that keep messages, by their oldest one's place in the
/// node's publish order: the name and the channel (weakly: a removed channel
/// keeps nothing).
type Heads = BTreeMap<u64, (Arc<str>, Weak<Mutex<Channel>>)>;

/// A frame kept in history, with its place in the node's publish order.
#[derive(Debug, Clone)]
struct Kept {
    frame: SharedMessage,
    seq: u64,
}

#[derive(Debug)]
struct Channel {
    log: ChannelLog<Kept>,
    subscribers: Vec<Subscriber>,
    /// Taken out of the map: whoever finds it so looks the name up again.
    removed: bool,
}

/// A log's oldest message's place and its bytes, before a change (see
/// [`MemoryBroker::settle`]).
#[derive(Debug, Clone, Copy)]
struct Before {
    head: Option<u64>,
    bytes: usize,
}

/// Whether looking a channel up may create it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Create {
    /// Within `max_channels` (for a publish).
    WithinCap,
    Always,
}

impl Channel {
    fn new() -> Self {
        Self {
            log: ChannelLog::new(new_epoch()),
            subscribers: Vec::new(),
            removed: false,
        }
    }

    fn before(&self) -> Before {
        Before {
            head: self.head(),
            bytes: self.log.bytes(),
        }
    }

    /// The place of the oldest message kept.
    fn head(&self) -> Option<u64> {
        self.log.oldest().map(|(_, kept)| kept.seq)
    }

    fn is_unused(&self) -> bool {
        self.subscribers.is_empty() && self.log.is_empty()
    }

    /// Pushes `frame` to every subscriber except `except`; returns how many
    /// it reached.
    fn deliver(&self, frame: &SharedMessage, published: PublishTime, except: Option<u64>) -> usize {
        let mut reached = 0;
        for sub in &self.subscribers {
            if Some(sub.id) != except && sub.outbox.push(frame, published) {
                reached += 1;
            }
        }
        reached
    }
}

impl MemoryBroker {
    /// A broker with no channels.
    pub(crate) fn new(config: Arc<HubConfig>, metrics: Arc<Metrics>) -> Self {
        let limit = config.limits.history_bytes;
        Self {
            config,
            metrics,
            channels: Mutex::new(HashMap::new()),
            origin: Instant::now(),
            budget: Budget {
                limit,
                bytes: AtomicUsize::new(0),
                next_seq: AtomicU64::new(0),
                heads: Mutex::new(BTreeMap::new()),
            },
            own_channels: AtomicUsize::new(0),
        }
    }

    #[cfg(test)]
    /// Bytes of history kept by all channels together (what `[limits]
    /// history_bytes` bounds).
    pub(crate) fn history_bytes(&self) -> usize {
        self.budget.bytes.load(Ordering::Relaxed)
    }

    /// A namespace's history bounds, as the log takes them: its own bytes
    /// per channel, never more than the node budget.
    fn history_limits(&self, ns: &NamespaceConfig) -> HistoryLimits {
        HistoryLimits {
            size: ns.history_size,
            bytes: ns.history_bytes.min(self.budget.limit),
            ttl_ms: u64::try_from(ns.history_ttl.as_millis()).unwrap_or(u64::MAX),
        }
    }

    fn heads(&self) -> MutexGuard<'_, Heads> {
        self.budget.heads.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Accounts a change to `channel`'s log (it was `before`), under the
    /// channel's lock: the node's bytes, and the index of oldest messages.
    fn settle(
        &self,
        name: &Arc<str>,
        shared: &Arc<Mutex<Channel>>,
        channel: &Channel,
        before: Before,
    ) {
        let bytes = channel.log.bytes();
        let total = if bytes >= before.bytes {
            let grown = bytes - before.bytes;
            self.budget.bytes.fetch_add(grown, Ordering::Relaxed) + grown
        } else {
            let shrunk = before.bytes - bytes;
            self.budget.bytes.fetch_sub(shrunk, Ordering::Relaxed) - shrunk
        };
        let head = channel.head();
        if head != before.head {
            let mut heads = self.heads();
            if let Some(old) = before.head {
                heads.remove(&old);
            }
            if let Some(new) = head {
                heads.insert(new, (name.clone(), Arc::downgrade(shared)));
            }
        }
        if bytes != before.bytes {
            self.metrics.set_history_bytes(total);
        }
    }

    /// Drops the node's oldest kept messages until its history is within
    /// budget. Call it holding no channel's lock.
    fn enforce_budget(&self) {
        while self.budget.bytes.load(Ordering::Relaxed) > self.budget.limit {
            let Some((seq, (name, weak))) = self.heads().pop_first() else {
                return;
            };
            let Some(shared) = weak.upgrade() else {
                continue;
            };
            let mut channel = lock(&shared);
            if channel.head() != Some(seq) {
                // Its oldest changed meanwhile, and whoever changed it
                // indexed the new one.
                continue;
            }
            let before = Before {
                // No longer indexed.
                head: None,
                bytes: channel.log.bytes(),
            };
            channel.log.pop_oldest();
            self.metrics.history_evicted(1);
            self.settle(&name, &shared, &channel, before);
        }
    }

    /// Milliseconds since `origin`: the logs' clock.
    fn now_ms(&self, now: Instant) -> u64 {
        u64::try_from(now.duration_since(self.origin).as_millis()).unwrap_or(u64::MAX)
    }

    fn channels(&self) -> MutexGuard<'_, HashMap<Arc<str>, Arc<Mutex<Channel>>>> {
        self.channels.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The channel, if it exists.
    fn channel(&self, name: &Arc<str>) -> Option<Arc<Mutex<Channel>>> {
        self.channels().get(name).cloned()
    }

    /// The channel and its name as the map keeps it, created if need be as
    /// `create` says; `Err` when the cap refuses to create it.
    fn named_channel(
        &self,
        name: &Arc<str>,
        create: Create,
    ) -> Result<(Arc<str>, Arc<Mutex<Channel>>), BrokerError> {
        let mut channels = self.channels();
        if let Some((key, channel)) = channels.get_key_value(name) {
            return Ok((key.clone(), channel.clone()));
        }
        let max = self.config.limits.max_channels;
        let own = is_hub_channel(name);
        let clients = channels.len() - self.own_channels.load(Ordering::Relaxed);
        if create == Create::WithinCap && clients >= max && !own {
            return Err(BrokerError::TooManyChannels { max });
        }
        if own {
            self.own_channels.fetch_add(1, Ordering::Relaxed);
        }
        let channel = Arc::new(Mutex::new(Channel::new()));
        channels.insert(name.clone(), channel.clone());
        self.metrics.set_channels(channels.len());
        Ok((name.clone(), channel))
    }

    /// Removes channels that have no subscriber and no history left (after
    /// pruning by age). Call it periodically.
    pub(crate) fn sweep(&self) {
        let now = self.now_ms(Instant::now());
        let mut channels = self.channels();
        channels.retain(|name, shared| {
            let limits = self.history_limits(self.config.namespace(name));
            let mut channel = lock(shared);
            let before = channel.before();
            channel.log.prune(&limits, now);
            self.settle(name, shared, &channel, before);
            let unused = channel.is_unused();
            channel.removed = unused;
            if unused && is_hub_channel(name) {
                self.own_channels.fetch_sub(1, Ordering::Relaxed);
            }
            !unused
        });
        self.metrics.set_channels(channels.len());
    }

    fn publish_now(&self, publish: Publish) -> Result<Published, BrokerError> {
        let limits = self.history_limits(self.config.namespace(&publish.channel));
        let published = loop {
            let (name, shared) = self.named_channel(&publish.channel, Create::WithinCap)?;
            let mut channel = lock(&shared);
            if channel.removed {
                continue;
            }
            let before = channel.before();
            let now = Instant::now();
            let Publish {
                data,
                from,
                key,
                time,
                ..
            } = publish;
            let seq = self.budget.next_seq.fetch_add(1, Ordering::Relaxed);
            let appended =
                channel
                    .log
                    .append(key.as_deref(), self.now_ms(now), &limits, |offset| {
                        let frame = prepare(ServerMessage::Message(Publication {
                            channel: name.to_string(),
                            offset,
                            time,
                            from,
                            data,
                        }));
                        let size = frame.weight() + HISTORY_ENTRY_OVERHEAD;
                        (Kept { frame, seq }, size)
                    });
            self.settle(&name, &shared, &channel, before);
            break match appended {
                Appended::Duplicate { offset } => Published {
                    epoch: channel.log.epoch().to_owned(),
                    offset,
                    duplicate: true,
                },
                Appended::New { offset, frame } => {
                    let reached = channel.deliver(&frame.frame, PublishTime::at(now), None);
                    // The hub's own channels (`$sys:stats`, which the
                    // dashboard shows) are not the clients' publishes.
                    if !is_hub_channel(&name) {
                        self.metrics.published(reached, frame.frame.weight());
                    }
                    Published {
                        epoch: channel.log.epoch().to_owned(),
                        offset,
                        duplicate: false,
                    }
                }
            };
        };
        self.enforce_budget();
        Ok(published)
    }

    fn subscribe_now(&self, subscribe: Subscribe) -> Subscribed {
        let ns = self.config.namespace(&subscribe.channel);
        loop {
            let (name, shared) = self
                .named_channel(&subscribe.channel, Create::Always)
                .expect("always created");
            let mut channel = lock(&shared);
            if channel.removed {
                continue;
            }
            let now = Instant::now();
            let sub = subscribe.subscriber;
            let before = channel.before();
            let (plan, replay) = channel.log.subscribe(
                subscribe.since.as_ref(),
                subscribe.recent,
                self.now_ms(now),
                &self.history_limits(ns),
            );
            let replayed = PublishTime::at(now);
            for kept in replay {
                sub.outbox.push(&kept.frame, replayed);
            }
            self.settle(&name, &shared, &channel, before);
            if ns.presence && ns.join_leave {
                let join = prepare(ServerMessage::Join {
                    channel: subscribe.channel.to_string(),
                    user: sub.user().to_owned(),
                    client: sub.client(),
                });
                channel.deliver(&join, PublishTime::at(now), None);
            }
            channel.subscribers.push(sub);
            return Subscribed {
                name,
                epoch: channel.log.epoch().to_owned(),
                offset: channel.log.last(),
                recovered: plan.recovered,
                gap: plan.gap,
            };
        }
    }

    fn unsubscribe_now(&self, name: &str, sub: &Subscriber) {
        let ns = self.config.namespace(name);
        let name: Arc<str> = name.into();
        let Some(channel) = self.channel(&name) else {
            return;
        };
        let mut channel = lock(&channel);
        let before = channel.subscribers.len();
        channel.subscribers.retain(|s| s.id != sub.id);
        if channel.subscribers.len() != before && ns.presence && ns.join_leave {
            let leave = prepare(ServerMessage::Leave {
                channel: name.to_string(),
                user: sub.user().to_owned(),
                client: sub.client(),
            });
            channel.deliver(&leave, PublishTime::now(), None);
        }
        if channel.subscribers.is_empty() && channel.subscribers.capacity() > 4 {
            channel.subscribers = Vec::new();
        }
    }

    fn presence_now(&self, name: &str) -> Vec<ClientInfo> {
        let name: Arc<str> = name.into();
        self.channel(&name)
            .map(|channel| {
                lock(&channel)
                    .subscribers
                    .iter()
                    .map(|s| s.info())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn history_now(&self, name: &str, query: &HistoryQuery) -> HistoryPage {
        let name: Arc<str> = name.into();
        let limits = self.history_limits(self.config.namespace(&name));
        let Some(shared) = self.channel(&name) else {
            // Never used, or swept: a new epoch at its next use, so any
            // `since` is a gap.
            return HistoryPage {
                epoch: String::new(),
                offset: 0,
                gap: query.since.is_some(),
                publications: Vec::new(),
            };
        };
        let mut channel = lock(&shared);
        let before = channel.before();
        let now = self.now_ms(Instant::now());
        let (gap, read) = channel.log.history(
            query.since.as_ref(),
            query.limit,
            query.reverse,
            now,
            &limits,
        );
        let publications = read
            .into_iter()
            .filter_map(|(_, kept)| crate::frame::publication_of(&kept.frame))
            .collect();
        let page = HistoryPage {
            epoch: channel.log.epoch().to_owned(),
            offset: channel.log.last(),
            gap,
            publications,
        };
        self.settle(&name, &shared, &channel, before);
        page
    }

    fn remove_history_now(&self, name: &str) {
        let name: Arc<str> = name.into();
        let Some(shared) = self.channel(&name) else {
            return;
        };
        let mut channel = lock(&shared);
        let before = channel.before();
        channel.log.clear();
        self.settle(&name, &shared, &channel, before);
    }

    fn channels_now(&self, pattern: &str) -> Vec<ChannelCount> {
        let channels: Vec<(Arc<str>, Arc<Mutex<Channel>>)> = self
            .channels()
            .iter()
            .filter(|(name, _)| matches_pattern(pattern, name))
            .map(|(name, channel)| (name.clone(), channel.clone()))
            .collect();
        let mut counts: Vec<ChannelCount> = channels
            .into_iter()
            .filter_map(|(name, channel)| {
                let subscribers = lock(&channel).subscribers.len();
                (subscribers > 0).then(|| ChannelCount {
                    channel: name.to_string(),
                    subscribers,
                })
            })
            .collect();
        counts.sort_by(|a, b| a.channel.cmp(&b.channel));
        counts
    }

    fn signal_now(&self, name: &str, from: &Subscriber, data: Data) {
        let name: Arc<str> = name.into();
        let Some(channel) = self.channel(&name) else {
            return;
        };
        let channel = lock(&channel);
        let frame = prepare(ServerMessage::Signal {
            channel: name.to_string(),
            from: from.info(),
            data,
        });
        channel.deliver(&frame, PublishTime::now(), Some(from.id));
    }
}

fn lock(channel: &Mutex<Channel>) -> MutexGuard<'_, Channel> {
    channel.lock().unwrap_or_else(|e| e.into_inner())
}

impl Broker for MemoryBroker {
    fn publish(&self, publish: Publish) -> BoxFuture<'_, Result<Published, BrokerError>> {
        Box::pin(std::future::ready(self.publish_now(publish)))
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

    fn history(
        &self,
        channel: &str,
        query: HistoryQuery,
    ) -> BoxFuture<'_, Result<HistoryPage, BrokerError>> {
        let page = self.history_now(channel, &query);
        Box::pin(std::future::ready(Ok(page)))
    }

    fn remove_history(&self, channel: &str) -> BoxFuture<'_, Result<(), BrokerError>> {
        self.remove_history_now(channel);
        Box::pin(std::future::ready(Ok(())))
    }

    fn channels(&self, pattern: &str) -> BoxFuture<'_, Result<Vec<ChannelCount>, BrokerError>> {
        let counts = self.channels_now(pattern);
        Box::pin(std::future::ready(Ok(counts)))
    }

    fn is_ready(&self) -> bool {
        true
    }

    fn local_channels(&self) -> usize {
        self.channels().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::member_id;
    use crate::outbox::Outbox;
    use duplex_hub_proto::Since;

    fn broker(limits: impl FnOnce(&mut crate::config::LimitsConfig)) -> MemoryBroker {
        let mut config = HubConfig::default();
        limits(&mut config.limits);
        MemoryBroker::new(Arc::new(config), Arc::new(Metrics::new()))
    }

    fn publish(broker: &MemoryBroker, channel: &str, bytes: usize) -> Result<u64, BrokerError> {
        broker
            .publish_now(Publish {
                channel: channel.into(),
                data: Data::Binary(vec![b'x'; bytes].into()),
                from: ClientInfo {
                    client: "c".into(),
                    user: String::new(),
                },
                key: None,
                time: 0,
            })
            .map(|published| published.offset)
    }

    fn subscribe(broker: &MemoryBroker, channel: &str, since: Option<(&str, u64)>) -> Subscribed {
        broker.subscribe_now(Subscribe {
            channel: channel.into(),
            subscriber: Subscriber::new(member_id(1, 1), Outbox::new(1 << 30)),
            since: since.map(|(epoch, offset)| Since {
                epoch: epoch.into(),
                offset,
            }),
            recent: 0,
        })
    }

    /// What one 1,000-byte publish to a one-letter channel costs the budget.
    fn cost() -> usize {
        let one = broker(|_| {});
        publish(&one, "a", 1000).unwrap();
        one.history_bytes()
    }

    #[test]
    fn the_node_keeps_its_history_within_budget_dropping_the_oldest_first() {
        let cost = cost();
        assert!(cost > 1000 + HISTORY_ENTRY_OVERHEAD, "{cost}");
        // Room for ten messages across all channels (offsets of two digits
        // cost a byte more than offset 1 did).
        let budget = 10 * (cost + 1);
        let broker = broker(|l| l.history_bytes = budget);
        let epoch_a = subscribe(&broker, "a", None).epoch;
        for round in 1..=20u64 {
            for channel in ["a", "b", "c", "d"] {
                assert_eq!(publish(&broker, channel, 1000).unwrap(), round);
                assert!(broker.history_bytes() <= budget);
            }
        }
        assert_eq!(broker.history_bytes(), budget);
        let gauge = format!("\nduplex_history_bytes {budget}\n");
        assert!(broker.metrics.render().contains(&gauge), "{gauge}");
        // The ten latest are kept, whatever their channel: rounds 19 and
        // 20 of a and b, 18 to 20 of c and d.
        let kept = |name: &str| {
            let channel = broker.channel(&name.into()).unwrap();
            let channel = lock(&channel);
            (channel.log.bounds().first, channel.log.len())
        };
        assert_eq!(kept("a"), (19, 2));
        assert_eq!(kept("b"), (19, 2));
        assert_eq!(kept("c"), (18, 3));
        assert_eq!(kept("d"), (18, 3));
        // Recovering from before what was dropped: a gap, announced.
        let late = subscribe(&broker, "a", Some((&epoch_a, 17)));
        assert!(!late.recovered && late.gap, "{late:?}");
        let fine = subscribe(&broker, "a", Some((&epoch_a, 18)));
        assert!(fine.recovered && !fine.gap, "{fine:?}");
        // One oldest message indexed per channel that keeps any.
        broker.sweep();
        assert_eq!(broker.heads().len(), 4);
    }

    #[test]
    fn a_message_larger_than_the_budget_is_delivered_but_not_kept() {
        let broker = broker(|l| l.history_bytes = 4096);
        publish(&broker, "a", 1000).unwrap();
        publish(&broker, "a", 5000).unwrap();
        assert_eq!(broker.history_bytes(), 0);
        assert!(broker.heads().is_empty());
        publish(&broker, "b", 10).unwrap();
        assert!(broker.history_bytes() > 0);
    }

    #[test]
    fn a_publish_never_creates_a_channel_beyond_the_cap() {
        let broker = broker(|l| l.max_channels = 2);
        publish(&broker, "a", 1).unwrap();
        publish(&broker, "b", 1).unwrap();
        publish(&broker, "$sys:x", 1).unwrap();
        let refused = publish(&broker, "c", 1).unwrap_err();
        assert!(
            matches!(refused, BrokerError::TooManyChannels { max: 2 }),
            "{refused:?}"
        );
        assert!(refused.to_string().contains("max_channels"), "{refused}");
        assert_eq!(broker.local_channels(), 3);
        // Existing channels still take publishes; the hub's own channels
        // and subscribes are not capped.
        assert_eq!(publish(&broker, "a", 1).unwrap(), 2);
        publish(&broker, "$sys:stats", 1).unwrap();
        subscribe(&broker, "d", None);
        assert_eq!(broker.local_channels(), 5);
        assert!(
            publish(&broker, "e", 1).is_err(),
            "d counts, $sys:stats not"
        );
        assert_eq!(publish(&broker, "d", 1).unwrap(), 1);
    }
}
