//! The Redis broker's pub/sub interest: which channels this node is
//! subscribed to on Redis, and the dispatch of what arrives on them to the
//! channels' local subscribers.
//!
//! A node listens on one pub/sub connection (one Redis: a connection of its
//! own; Redis Cluster: the cluster connection's sharded subscriptions),
//! counted by a *generation* that grows with every new link. Each channel
//! with local subscribers has a [`Slot`] in `Shared::channels`; its
//! `subscribed` field is the generation in which Redis confirmed its
//! `SUBSCRIBE` (0: none).
//!
//! # Invariants
//!
//! - **Subscribed exactly while wanted.** A channel is subscribed on the
//!   current connection from before its first local subscriber reads history
//!   (`Shared::subscribe` awaits [`Shared::ensure_subscribed`] first) until
//!   its last local subscriber left ([`Shared::release_interest`] removes
//!   the slot and sends `UNSUBSCRIBE`, unless someone joined meanwhile). A
//!   slot's `subscribed` equals the current generation only after Redis
//!   confirmed the `SUBSCRIBE` on the current connection.
//! - **One change of interest at a time.** Every `SUBSCRIBE`/`UNSUBSCRIBE`
//!   is sent by the holder of `Shared::interest` (an async lock, held across
//!   the round trip), so changes reach Redis in the order they were decided.
//!   It is held by: the task subscribing a batch of new channels, the task
//!   unsubscribing a released channel, the link while it installs a new
//!   connection and re-subscribes every channel ([`Shared::subscribe_link`]),
//!   and the link when it drops a lost connection ([`Shared::forget_sink`]).
//!   A subscribing task waits for the lock and for its confirmation as the
//!   liveness rule says (`Shared::patiently`): while Redis keeps answering,
//!   the wait goes on.
//! - **Batched subscribes.** A task that needs its channel subscribed puts
//!   the slot in `Shared::wanted` and waits for the lock; the holder takes
//!   every slot waiting by then and subscribes them in one `SUBSCRIBE` (a
//!   burst of new channels costs a round trip per batch, not per channel).
//!   Skipped: slots no longer current in `channels` (released meanwhile) and
//!   slots already subscribed in this generation. The others' tasks find
//!   their channel subscribed once they hold the lock; had the batch failed,
//!   each subscribes its own. On Redis Cluster a sharded `SSUBSCRIBE` takes
//!   the channels of one hash slot only: one channel at a time, counted in
//!   `Shared::confirming` so that its confirmation is not taken for a
//!   re-subscription (which would call for a catch-up: see `cluster`).
//! - **A slot released while its batch is in flight** stays subscribed until
//!   the batch is confirmed: releasing needs the lock, so it waits, then
//!   finds the slot subscribed in this generation and unsubscribes it. A
//!   slot released before any holder took it is removed from `channels`
//!   unsubscribed on this connection, so the holder skips it: it is neither
//!   subscribed nor unsubscribed.
//! - **A reconnect re-subscribes** under the lock, before anything else can
//!   subscribe on the new connection: the generation grows (every slot is
//!   then unsubscribed as far as the node knows), the server API's control
//!   topic first, then every channel in `channels` at that moment (in
//!   batches of [`SUBSCRIBE_BATCH`] on one Redis, one at a time on Redis
//!   Cluster), each marked subscribed in the new generation. A channel
//!   created meanwhile waits for the lock and subscribes itself. What its
//!   subscribers missed meanwhile is then read from history by the link
//!   (`link`: the catch-up).
//! - **Dispatch.** Every pub/sub message counts as an answer from Redis
//!   (`liveness::Progress`). The control topic's go to this node's sessions
//!   (`crate::control`); a channel's go to the slot currently in `channels`
//!   (a message for a channel without one is dropped), through
//!   `duplex_hub_proto::fanout::Fanout` with the link's generation: live
//!   subscribers get it at most once, in order, a gap push before any
//!   discontinuity; joining ones have it buffered. Signals reach live
//!   subscribers only.

use super::*;

/// Channels per `SUBSCRIBE` command when resubscribing.
const SUBSCRIBE_BATCH: usize = 512;

/// The pub/sub connection's sink, and which connection it is (held
/// across every change of interest: see the module doc).
#[derive(Default)]
pub(super) struct Interest {
    /// Counts pub/sub connections: a channel subscribed on an older one is
    /// not subscribed now.
    generation: u64,
    /// The current link's pub/sub connection; none while the link is down.
    sink: Option<Sink>,
}

/// The pub/sub side of a link: a connection of its own (one Redis), or the
/// cluster connection's sharded subscriptions (Redis Cluster).
#[derive(Clone)]
pub(super) enum Sink {
    Single(PubSubSink),
    Cluster(redis::cluster_async::ClusterConnection),
}

impl Sink {
    /// `SUBSCRIBE` (one Redis) or `SSUBSCRIBE` (Redis Cluster) `topic`,
    /// confirmed.
    async fn subscribe(&mut self, topic: &str) -> Result<(), RedisError> {
        match self {
            Self::Single(sink) => sink.subscribe(topic).await,
            Self::Cluster(conn) => conn.ssubscribe(topic).await,
        }
    }

    /// `UNSUBSCRIBE` or `SUNSUBSCRIBE` `topic`.
    async fn unsubscribe(&mut self, topic: &str) -> Result<(), RedisError> {
        match self {
            Self::Single(sink) => sink.unsubscribe(topic).await,
            Self::Cluster(conn) => conn.sunsubscribe(topic).await,
        }
    }
}

impl Shared {
    /// Makes sure this node's pub/sub connection is subscribed to the
    /// slot's topic (confirmed by Redis); returns the connection generation.
    pub(super) async fn ensure_subscribed(&self, slot: &Arc<Slot>) -> Result<u64, BrokerError> {
        let current = self.generation.load(Ordering::SeqCst);
        if current != 0 && lock(&slot.state).subscribed == current {
            return Ok(current);
        }
        if !self.sharded() {
            lock(&self.wanted).push(slot.clone());
        }
        // Other channels' SUBSCRIBEs go first, one at a time (each holder
        // takes every channel waiting by then, on one Redis): wait while
        // they are confirmed.
        let interest = self
            .patiently(self.interest.lock())
            .await
            .map_err(|_| unavailable("redis pub/sub is busy"))?;
        let generation = interest.generation;
        if lock(&slot.state).subscribed == generation && generation != 0 {
            return Ok(generation);
        }
        let mut sink = interest
            .sink
            .clone()
            .ok_or_else(|| unavailable("redis is not connected"))?;
        // This channel and, on one Redis, every other one waiting and not
        // yet subscribed on this connection (a sharded SUBSCRIBE takes the
        // channels of one slot only: one at a time there).
        // A channel released meanwhile (no subscriber left) is not.
        let waiting = std::mem::take(&mut *lock(&self.wanted));
        let mut batch: Vec<Arc<Slot>> = {
            let channels = self.channels();
            waiting
                .into_iter()
                .filter(|other| {
                    !Arc::ptr_eq(other, slot)
                        && channels
                            .get(&other.name)
                            .is_some_and(|current| Arc::ptr_eq(current, other))
                        && lock(&other.state).subscribed != generation
                })
                .collect()
        };
        batch.push(slot.clone());
        if self.sharded() {
            *lock(&self.confirming)
                .entry(slot.topic.clone())
                .or_default() += 1;
        }
        let topics: Vec<&str> = batch.iter().map(|slot| slot.topic.as_str()).collect();
        let confirmed = if let Sink::Single(pubsub) = &mut sink {
            self.patiently(pubsub.subscribe(&topics)).await
        } else {
            self.patiently(sink.subscribe(&slot.topic)).await
        };
        match confirmed {
            Ok(Ok(())) => self.progress.answered(),
            Ok(Err(error)) => return Err(self.failed(&error)),
            Err(_) => {
                self.suspect.notify_one();
                return Err(unavailable("redis did not confirm SUBSCRIBE in time"));
            }
        }
        // The others' tasks find their channel subscribed once they hold
        // `interest`; had this failed, each would subscribe its own.
        for subscribed in &batch {
            lock(&subscribed.state).subscribed = generation;
        }
        drop(interest);
        Ok(generation)
    }

    /// The slot's last subscriber left: forget the channel and unsubscribe
    /// (unless someone joined meanwhile).
    pub(super) async fn release_interest(&self, slot: &Arc<Slot>) {
        let interest = self.interest.lock().await;
        let subscribed = {
            let mut channels = self.channels();
            let mut state = lock(&slot.state);
            let current = channels
                .get(&slot.name)
                .is_some_and(|s| Arc::ptr_eq(s, slot));
            if !state.fanout.is_empty() || !current {
                return;
            }
            channels.remove(&slot.name);
            std::mem::take(&mut state.subscribed)
        };
        self.update_channel_gauge();
        if subscribed == interest.generation
            && let Some(mut sink) = interest.sink.clone()
        {
            let unsubscribe = sink.unsubscribe(&slot.topic);
            match self.patiently(unsubscribe).await {
                Ok(Ok(())) => self.progress.answered(),
                Ok(Err(_)) | Err(_) => self.suspect.notify_one(),
            }
        }
    }

    /// A new link's pub/sub: under the lock, a new generation, `sink` as
    /// the pub/sub connection, the server API's control topic subscribed,
    /// and then every channel with local subscribers (see the module doc);
    /// returns the new generation. An error ends the link (its reason).
    pub(super) async fn subscribe_link(&self, sink: Sink) -> Result<u64, String> {
        let mut interest = self.interest.lock().await;
        interest.generation += 1;
        let generation = interest.generation;
        interest.sink = Some(sink.clone());
        self.generation.store(generation, Ordering::SeqCst);
        match sink {
            Sink::Single(mut sink) => {
                let slots: Vec<Arc<Slot>> = self.channels().values().cloned().collect();
                // The server API's controls, for this node's sessions.
                match self
                    .patiently(sink.subscribe(self.control_topic.as_str()))
                    .await
                {
                    Ok(Ok(())) => self.progress.answered(),
                    Ok(Err(error)) => return Err(format!("SUBSCRIBE: {error}")),
                    Err(_) => return Err("SUBSCRIBE timed out".into()),
                }
                for batch in slots.chunks(SUBSCRIBE_BATCH) {
                    let topics: Vec<&str> = batch.iter().map(|s| s.topic.as_str()).collect();
                    match self.patiently(sink.subscribe(&topics)).await {
                        Ok(Ok(())) => self.progress.answered(),
                        Ok(Err(error)) => return Err(format!("SUBSCRIBE: {error}")),
                        Err(_) => return Err("SUBSCRIBE timed out".into()),
                    }
                    for slot in batch {
                        lock(&slot.state).subscribed = generation;
                    }
                }
            }
            Sink::Cluster(cluster) => {
                // The server API's controls, for this node's sessions: a
                // sharded topic in one fixed slot, followed like the channels.
                let mut sink = cluster.clone();
                match tokio::time::timeout(
                    self.options.command_timeout,
                    sink.ssubscribe(&self.control_topic),
                )
                .await
                {
                    Ok(Ok(())) => {}
                    Ok(Err(error)) => return Err(format!("SSUBSCRIBE: {error}")),
                    Err(_) => return Err("SSUBSCRIBE timed out".into()),
                }
                let slots: Vec<Arc<Slot>> = self.channels().values().cloned().collect();
                for slot in slots {
                    let mut sink = cluster.clone();
                    *lock(&self.confirming)
                        .entry(slot.topic.clone())
                        .or_default() += 1;
                    match tokio::time::timeout(
                        self.options.command_timeout,
                        sink.ssubscribe(&slot.topic),
                    )
                    .await
                    {
                        Ok(Ok(())) => lock(&slot.state).subscribed = generation,
                        Ok(Err(error)) => return Err(format!("SSUBSCRIBE: {error}")),
                        Err(_) => return Err("SSUBSCRIBE timed out".into()),
                    }
                }
            }
        }
        Ok(generation)
    }

    /// The link is gone: no pub/sub sink until the next one subscribes.
    pub(super) async fn forget_sink(&self) {
        self.interest.lock().await.sink = None;
    }

    // ---- what arrives ----------------------------------------------------

    /// Hands one pub/sub envelope to the channel's local subscribers.
    pub(super) fn dispatch(&self, generation: u64, topic: &str, payload: &[u8]) {
        self.progress.answered();
        if topic == self.control_topic {
            match serde_json::from_slice::<NodeMessage>(payload) {
                Ok(message) => self.registry.deliver(message),
                Err(error) => match serde_json::from_slice::<Lookup>(payload) {
                    Ok(lookup) => self.lookup(lookup),
                    Err(_) => tracing::warn!(%error, "malformed control from redis dropped"),
                },
            }
            return;
        }
        let Some(name) = self.channel_of(topic) else {
            return;
        };
        let Some(slot) = self.channels().get(name).cloned() else {
            return;
        };
        let Some(envelope) = parse_envelope(payload) else {
            tracing::warn!(channel = name, "malformed envelope from redis dropped");
            return;
        };
        match envelope {
            Envelope::Message { epoch, entry } => {
                let Ok(epoch) = std::str::from_utf8(epoch) else {
                    return;
                };
                let Some(body) = decode_body(entry.body) else {
                    tracing::warn!(channel = name, "malformed message from redis dropped");
                    return;
                };
                let published = published_at(body.sent_us);
                let frame = prepare(ServerMessage::Message(Publication {
                    channel: name.to_owned(),
                    offset: entry.offset,
                    time: entry.time,
                    from: body.from,
                    data: body.data,
                }));
                self.deliver(&slot, generation, epoch, entry.offset, frame, published);
            }
            Envelope::Join { client, user } | Envelope::Leave { client, user } => {
                let ns = self.config.namespace(name);
                if !(ns.presence && ns.join_leave) {
                    return;
                }
                let (channel, user, client_id) = (name.to_owned(), user.to_owned(), client);
                let message = if matches!(envelope, Envelope::Join { .. }) {
                    ServerMessage::Join {
                        channel,
                        user,
                        client: client_id.to_owned(),
                    }
                } else {
                    ServerMessage::Leave {
                        channel,
                        user,
                        client: client_id.to_owned(),
                    }
                };
                let frame = prepare(message);
                self.deliver_event(&slot, generation, frame, client_id);
            }
            Envelope::Signal(body) => {
                let Some(body) = decode_body(body) else {
                    return;
                };
                let sender = member_id_of(&body.from.client);
                let frame = prepare(ServerMessage::Signal {
                    channel: name.to_owned(),
                    from: body.from,
                    data: body.data,
                });
                let mut pusher = Pusher::new(name);
                let delivery = Delivery {
                    frame,
                    published: pusher.now,
                };
                lock(&slot.state)
                    .fanout
                    .signal(&delivery, sender, |sub, push| pusher.push(sub, push));
            }
        }
    }

    /// Delivers a message to the live subscribers (each at most once, in
    /// order, a gap push before any discontinuity) and buffers it for the
    /// joining ones.
    fn deliver(
        &self,
        slot: &Slot,
        generation: u64,
        epoch: &str,
        offset: u64,
        frame: SharedMessage,
        published: PublishTime,
    ) {
        let bytes = frame.weight();
        let delivery = Delivery { frame, published };
        let mut pusher = Pusher::new(&slot.name);
        lock(&slot.state)
            .fanout
            .message(generation, epoch, offset, &delivery, |sub, push| {
                pusher.push(sub, push)
            });
        self.metrics.published(pusher.reached, bytes);
    }

    fn deliver_event(&self, slot: &Slot, generation: u64, frame: SharedMessage, about: &str) {
        let mut pusher = Pusher::new(&slot.name);
        let delivery = Delivery {
            frame,
            published: pusher.now,
        };
        lock(&slot.state)
            .fanout
            .event(generation, &delivery, member_id_of(about), |sub, push| {
                pusher.push(sub, push)
            });
    }
}
