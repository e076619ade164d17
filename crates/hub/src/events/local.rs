//! The registry and the event queue of a single node (the in-memory
//! broker): the core's `Registry` under a lock, and a bounded queue in
//! memory that one task delivers from.
//!
//! Invariants: the queue holds at most `max_queue` events, counting those
//! of the request in flight (they leave it only once the backend answered
//! 2xx); an event beyond it is refused ([`LocalStore::push`] returns
//! false) and the caller counts it as dropped. Events leave in the order
//! they were queued; a batch that fails is retried whole, after the
//! core's backoff, until it is delivered. A restart loses the queue.

use std::collections::VecDeque;
use std::sync::Mutex;

use duplex_hub_proto::events::{Emit, Event, EventIds, Refused, Registry, Rules};
use tokio::sync::Notify;

use super::Change;
use super::delivery::Webhook;
use super::metrics::EventMetrics;

/// See the module docs.
pub(super) struct LocalStore {
    inner: Mutex<Inner>,
    /// Wakes the delivery task when the queue gets an event.
    wake: Notify,
    max_queue: usize,
}

struct Inner {
    registry: Registry,
    ids: EventIds,
    node: String,
    queue: VecDeque<Event>,
    /// Events at the front of the queue in a request now.
    in_flight: usize,
}

impl LocalStore {
    /// An empty registry and queue for node `node`.
    pub(super) fn new(rules: Rules, node: &str, max_queue: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                registry: Registry::new(rules),
                ids: EventIds::new(super::id_prefix(node)),
                node: node.to_owned(),
                queue: VecDeque::new(),
                in_flight: 0,
            }),
            wake: Notify::new(),
            max_queue,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Each update is one step: a poisoned lock is still consistent.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies `change` at `now`: the events it decides, stamped.
    pub(super) fn apply(&self, change: &Change, now: u64) -> Result<Vec<Event>, Refused> {
        let mut inner = self.lock();
        let node = inner.node.clone();
        let registry = &mut inner.registry;
        let emits = match change {
            Change::Connect { client, user } => registry.connect(client, user, &node)?,
            Change::Subscribe { client, channel } => registry.subscribe(client, channel),
            Change::Unsubscribe {
                client,
                channel,
                reason,
            } => registry.unsubscribe(client, channel, reason.as_deref(), now),
            Change::Disconnect { client, code } => registry.disconnect(client, *code, None, now),
        };
        Ok(inner.stamp(emits, now))
    }

    /// The graces that ended by `now`.
    pub(super) fn due(&self, now: u64) -> Vec<Event> {
        let mut inner = self.lock();
        let emits = inner.registry.due(now);
        inner.stamp(emits, now)
    }

    /// Queues `event`; false when the queue is full (it is dropped).
    pub(super) fn push(&self, event: Event) -> bool {
        let mut inner = self.lock();
        if inner.queue.len() >= self.max_queue {
            return false;
        }
        inner.queue.push_back(event);
        drop(inner);
        self.wake.notify_one();
        true
    }

    /// Events waiting, with those in flight.
    pub(super) fn depth(&self) -> usize {
        self.lock().queue.len()
    }

    /// Whether nothing waits and nothing is in flight.
    pub(super) fn is_idle(&self) -> bool {
        let inner = self.lock();
        inner.queue.is_empty() && inner.in_flight == 0
    }

    /// Delivers the queue, in order, forever (see the module docs).
    pub(super) async fn deliver(&self, webhook: &Webhook, metrics: &EventMetrics) {
        loop {
            let batch: Vec<Event> = {
                let mut inner = self.lock();
                let n = inner.queue.len().min(webhook.batch);
                inner.in_flight = n;
                inner.queue.iter().take(n).cloned().collect()
            };
            if batch.is_empty() {
                self.wake.notified().await;
                continue;
            }
            let mut attempt = 0;
            loop {
                match webhook.post(&batch).await {
                    Ok(()) => {
                        metrics.request(true);
                        break;
                    }
                    Err(error) => {
                        metrics.request(false);
                        for event in &batch {
                            metrics.retried(event.kind);
                        }
                        let delay = webhook.retry_delay(attempt);
                        tracing::debug!(%error, ?delay, events = batch.len(), "webhook failed; retrying");
                        attempt = attempt.saturating_add(1);
                        tokio::time::sleep(delay).await;
                    }
                }
            }
            let now = crate::hub::now_ms();
            for event in &batch {
                let age = std::time::Duration::from_millis(now.saturating_sub(event.time));
                metrics.delivered(event.kind, age);
            }
            let mut inner = self.lock();
            let n = inner.in_flight;
            inner.queue.drain(..n);
            inner.in_flight = 0;
            metrics.set_queue_depth(inner.queue.len() as u64);
        }
    }
}

impl Inner {
    fn stamp(&mut self, emits: Vec<Emit>, now: u64) -> Vec<Event> {
        emits
            .into_iter()
            .map(|emit| emit.stamp(self.ids.next_id(), now, &self.node))
            .collect()
    }
}
