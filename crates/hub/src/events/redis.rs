//! The registry and the event queue of a cluster, in Redis (through the
//! Redis broker's command connection: one Redis, Sentinel's primary, or a
//! Redis Cluster, where every key shares the hash tag `{P}` and so one
//! slot). The keys and scripts are in `scripts`.
//!
//! # Invariants
//!
//! - **Atomic.** Each change (connect, subscribe, unsubscribe, disconnect,
//!   a dead node's connections, the graces due) is one script, which also
//!   appends the events it decides to the stream `B:q`: an event is queued
//!   if and only if its change happened. Scripts are idempotent per change
//!   (a retried one changes nothing twice).
//! - **Bounded queue.** The stream holds at most `max_queue` events that
//!   are not yet delivered (delivered ones are deleted); an event beyond is
//!   dropped and counted (here and in `B:dropped`).
//! - **Delivery, at least once.** Every node reads the stream in one
//!   consumer group ([`GROUP`]); an event leaves it (`XACK`, `XDEL`) only
//!   after the backend's 2xx. While a node retries a batch it renews its
//!   claim on it before each attempt; events a node took and did not
//!   confirm for `claim_idle` (it died) are taken over by another
//!   (`XAUTOCLAIM`) and delivered again: a backend may see an event twice,
//!   always with the same id.
//! - **Dead nodes.** Each node heartbeats into `B:alive` every broker
//!   heartbeat; every node, each heartbeat, runs the reap script, which
//!   declares the connections of any node silent for the broker's
//!   `node_expiry` disconnected (reason `node_died`) — the script's
//!   atomicity is the lock: each connection is declared once, by one node.
//!   So a dead node's connections are declared within `node_expiry +
//!   heartbeat` of its death, then delivered; `user_offline` follows after
//!   `offline_grace` when it was the user's last connection anywhere.
//! - **A node declared dead that was not** (cut off from Redis longer than
//!   `node_expiry`) learns it at its next heartbeat and closes all its
//!   sessions (1001, so they reconnect and register again), rather than
//!   serve connections the backend was told are gone.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use duplex_hub_proto::events::{Event, EventIds, EventKind, EventSet, Rules};
use redis::Value;

use super::config::WebhooksConfig;
use super::delivery::Webhook;
use super::metrics::EventMetrics;
use super::scripts::Scripts;
use super::{Applied, Change, MAX_RETRIED_CHANGES};
use crate::broker::redis::{Conn, RedisBroker};

/// The consumer group every node delivers in.
pub(super) const GROUP: &str = "duplex-webhooks";

/// Connections one reap script declares at most (it runs again at once
/// while there are more).
const REAP_BUDGET: u64 = 500;

/// Graces ended per kind in one script.
const DUE_BUDGET: u64 = 1000;

/// How often the graces due are looked for.
const DUE_INTERVAL: Duration = Duration::from_millis(200);

/// How often an idle node looks at the queue.
const POLL: Duration = Duration::from_millis(100);

/// See the module docs.
pub(super) struct RedisStore {
    broker: Arc<RedisBroker>,
    /// `{P}:ev`.
    base: String,
    node: String,
    /// `,type,type,`: the filter as the scripts read it.
    filter: String,
    rules: Rules,
    max_queue: usize,
    ids: Mutex<EventIds>,
    scripts: Scripts,
    /// Changes that failed while Redis was away, oldest first.
    kept: Mutex<VecDeque<Change>>,
    metrics: Arc<EventMetrics>,
}

/// What a script did.
struct Reply {
    status: i64,
}

impl RedisStore {
    pub(super) fn new(
        broker: Arc<RedisBroker>,
        rules: Rules,
        node: &str,
        filter: EventSet,
        config: &WebhooksConfig,
        metrics: Arc<EventMetrics>,
    ) -> Self {
        let kinds: Vec<&str> = EventKind::ALL
            .into_iter()
            .filter(|k| filter.contains(*k))
            .map(EventKind::as_str)
            .collect();
        Self {
            base: format!("{{{}}}:ev", broker.options().prefix),
            broker,
            node: node.to_owned(),
            filter: format!(",{},", kinds.join(",")),
            rules,
            max_queue: config.max_queue,
            ids: Mutex::new(EventIds::new(super::id_prefix(node))),
            scripts: Scripts::new(),
            kept: Mutex::new(VecDeque::new()),
            metrics,
        }
    }

    fn kept(&self) -> std::sync::MutexGuard<'_, VecDeque<Change>> {
        self.kept.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether no change waits for Redis.
    pub(super) fn is_settled(&self) -> bool {
        self.kept().is_empty()
    }

    /// Applies `change`; when Redis is away and `keep`, keeps it for later
    /// (after the changes kept before it).
    pub(super) async fn apply(&self, change: Change, keep: bool) -> Result<(), Applied> {
        if keep && !self.kept().is_empty() {
            self.keep(change);
            return Ok(());
        }
        match self.run(&change).await {
            Ok(reply) if reply.status == 0 => Err(Applied::Refused(
                duplex_hub_proto::events::Refused::TooManyForUser {
                    limit: self.rules.max_per_user,
                },
            )),
            Ok(_) => Ok(()),
            Err(()) if keep => {
                self.keep(change);
                Ok(())
            }
            Err(()) => Err(Applied::Unavailable),
        }
    }

    fn keep(&self, change: Change) {
        let mut kept = self.kept();
        if kept.len() >= MAX_RETRIED_CHANGES {
            tracing::warn!(?change, "redis away too long: a registry change is dropped");
            self.metrics.dropped(match change {
                Change::Disconnect { .. } => EventKind::Disconnected,
                Change::Unsubscribe { .. } => EventKind::Unsubscribed,
                Change::Subscribe { .. } => EventKind::Subscribed,
                Change::Connect { .. } => EventKind::Connected,
            });
            return;
        }
        kept.push_back(change);
    }

    /// Runs the script of `change`.
    async fn run(&self, change: &Change) -> Result<Reply, ()> {
        let s = &self.scripts;
        match change {
            Change::Connect { client, user } => {
                let limit = self.rules.max_per_user.to_string();
                self.invoke(&s.connect, &[client, user, &limit]).await
            }
            Change::Subscribe { client, channel } => {
                self.invoke(&s.subscribe, &[client, channel]).await
            }
            Change::Unsubscribe {
                client,
                channel,
                reason,
            } => {
                let reason = reason.as_deref().unwrap_or("");
                self.invoke(&s.unsubscribe, &[client, channel, reason])
                    .await
            }
            Change::Disconnect { client, code } => {
                self.invoke(&s.disconnect, &[client, &code.to_string()])
                    .await
            }
        }
    }

    /// Runs `script` with the common arguments then `args`, within the
    /// broker's command timeout; counts the events it queued or dropped.
    async fn invoke(&self, script: &redis::Script, args: &[&str]) -> Result<Reply, ()> {
        let mut conn: Conn = self.broker.command_conn().map_err(|_| ())?;
        let id = self.ids.lock().unwrap_or_else(|e| e.into_inner()).next_id();
        let mut invocation = script.key(&self.base);
        invocation
            .arg(&self.node)
            .arg(id)
            .arg(&self.filter)
            .arg(self.max_queue)
            .arg(self.rules.offline_grace)
            .arg(self.rules.vacated_grace);
        for arg in args {
            invocation.arg(*arg);
        }
        let timeout = self.broker.options().command_timeout;
        let value = match tokio::time::timeout(timeout, invocation.invoke_async::<Value>(&mut conn))
            .await
        {
            Ok(Ok(value)) => value,
            Ok(Err(error)) => {
                tracing::debug!(%error, "registry script failed");
                return Err(());
            }
            Err(_) => return Err(()),
        };
        let Value::Array(parts) = value else {
            return Err(());
        };
        let status = match parts.first() {
            Some(Value::Int(n)) => *n,
            _ => return Err(()),
        };
        for (at, dropped) in [(1, false), (2, true)] {
            if let Some(Value::BulkString(types)) = parts.get(at) {
                for kind in String::from_utf8_lossy(types)
                    .split(',')
                    .filter_map(EventKind::parse)
                {
                    self.metrics.emitted(kind);
                    if dropped {
                        self.metrics.dropped(kind);
                    }
                }
            }
        }
        Ok(Reply { status })
    }

    /// The registry's periodic work, forever: kept changes, graces due,
    /// heartbeats and dead nodes (see the module docs).
    pub(super) async fn tick(&self, disconnect_all: &(impl Fn() + Send + Sync)) {
        let options = self.broker.options().clone();
        let expiry = super::millis(options.node_expiry).to_string();
        let mut due = tokio::time::interval(DUE_INTERVAL);
        due.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut beat = tokio::time::interval(options.heartbeat);
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = due.tick() => {
                    self.apply_kept().await;
                    let _ = self.invoke(&self.scripts.due, &[&DUE_BUDGET.to_string()]).await;
                }
                _ = beat.tick() => {
                    if let Ok(reply) = self.invoke(&self.scripts.heartbeat, &[]).await
                        && reply.status == 2
                    {
                        tracing::error!(
                            node = %self.node,
                            "this node was declared dead by the cluster (cut off from redis \
                             longer than node_expiry): closing its sessions so they register again"
                        );
                        disconnect_all();
                    }
                    self.reap(&expiry).await;
                }
            }
        }
    }

    /// Declares the connections of dead nodes, a budget at a time.
    async fn reap(&self, expiry: &str) {
        let budget = REAP_BUDGET.to_string();
        loop {
            let args = [expiry, budget.as_str(), GROUP];
            match self.invoke(&self.scripts.reap, &args).await {
                Ok(reply) if reply.status > 0 => {
                    self.metrics.declared_dead();
                    tracing::info!(
                        connections = reply.status,
                        "declared the connections of a dead node disconnected"
                    );
                    if reply.status < REAP_BUDGET as i64 {
                        return;
                    }
                }
                _ => return,
            }
        }
    }

    /// Applies the kept changes, in order, while Redis takes them.
    async fn apply_kept(&self) {
        loop {
            let Some(change) = self.kept().front().cloned() else {
                return;
            };
            if self.run(&change).await.is_err() {
                return;
            }
            self.kept().pop_front();
        }
    }

    /// Delivers from the cluster's queue, forever (see the module docs).
    pub(super) async fn deliver(&self, webhook: &Webhook) {
        let queue = format!("{}:q", self.base);
        let mut grouped = false;
        let mut polls = 0u32;
        loop {
            let Ok(mut conn) = self.broker.command_conn() else {
                grouped = false;
                tokio::time::sleep(POLL).await;
                continue;
            };
            // Now and then again: a Redis that restarted empty lost it.
            polls = polls.wrapping_add(1);
            if !grouped || polls.is_multiple_of(50) {
                grouped = self.create_group(&mut conn, &queue).await;
            }
            let mut batch = self.read(&mut conn, &queue, webhook.batch).await;
            if batch.is_empty() {
                batch = self.take_over(&mut conn, &queue, webhook).await;
            }
            if batch.is_empty() {
                self.update_depth(&mut conn, &queue).await;
                tokio::time::sleep(POLL).await;
                continue;
            }
            let (ids, events): (Vec<String>, Vec<Event>) = batch.into_iter().unzip();
            let mut attempt = 0;
            loop {
                match webhook.post(&events).await {
                    Ok(()) => {
                        self.metrics.request(true);
                        break;
                    }
                    Err(error) => {
                        self.metrics.request(false);
                        for event in &events {
                            self.metrics.retried(event.kind);
                        }
                        let delay = webhook.retry_delay(attempt);
                        tracing::debug!(%error, ?delay, "webhook failed; retrying");
                        attempt = attempt.saturating_add(1);
                        tokio::time::sleep(delay).await;
                        // Still ours: no other node takes them over.
                        if let Ok(mut conn) = self.broker.command_conn() {
                            let mut claim = redis::cmd("XCLAIM");
                            claim.arg(&queue).arg(GROUP).arg(&self.node).arg(0);
                            claim.arg(&ids).arg("JUSTID");
                            let _ = self.query::<Value>(&mut conn, &claim).await;
                        }
                    }
                }
            }
            let now = crate::hub::now_ms();
            for event in &events {
                let age = Duration::from_millis(now.saturating_sub(event.time));
                self.metrics.delivered(event.kind, age);
            }
            self.confirm(&queue, &ids).await;
        }
    }

    /// `XACK` and `XDEL` of delivered (or unreadable) entries, retried
    /// until Redis takes them (an entry left would be delivered again).
    async fn confirm(&self, queue: &str, ids: &[String]) {
        if ids.is_empty() {
            return;
        }
        for _ in 0..50 {
            if let Ok(mut conn) = self.broker.command_conn() {
                let mut pipe = redis::pipe();
                pipe.cmd("XACK").arg(queue).arg(GROUP).arg(ids);
                pipe.cmd("XDEL").arg(queue).arg(ids);
                let timeout = self.broker.options().command_timeout;
                if let Ok(Ok(())) =
                    tokio::time::timeout(timeout, pipe.query_async::<()>(&mut conn)).await
                {
                    return;
                }
            }
            tokio::time::sleep(POLL).await;
        }
        tracing::warn!(
            events = ids.len(),
            "delivered events could not be confirmed in redis; another node will deliver them again"
        );
    }

    async fn create_group(&self, conn: &mut Conn, queue: &str) -> bool {
        let mut create = redis::cmd("XGROUP");
        create
            .arg("CREATE")
            .arg(queue)
            .arg(GROUP)
            .arg("0")
            .arg("MKSTREAM");
        let timeout = self.broker.options().command_timeout;
        match tokio::time::timeout(timeout, create.query_async::<Value>(conn)).await {
            Ok(Ok(_)) => true,
            Ok(Err(error)) => error.code() == Some("BUSYGROUP"),
            Err(_) => false,
        }
    }

    /// New events for this node, at most `count`.
    async fn read(&self, conn: &mut Conn, queue: &str, count: usize) -> Vec<(String, Event)> {
        let mut read = redis::cmd("XREADGROUP");
        read.arg("GROUP").arg(GROUP).arg(&self.node);
        read.arg("COUNT")
            .arg(count)
            .arg("STREAMS")
            .arg(queue)
            .arg(">");
        match self.query::<Value>(conn, &read).await {
            Some(value) => self.entries(queue, &value).await,
            None => Vec::new(),
        }
    }

    /// Events another node took and did not confirm for `claim_idle`.
    async fn take_over(
        &self,
        conn: &mut Conn,
        queue: &str,
        webhook: &Webhook,
    ) -> Vec<(String, Event)> {
        let mut claim = redis::cmd("XAUTOCLAIM");
        claim.arg(queue).arg(GROUP).arg(&self.node);
        claim.arg(super::millis(webhook.claim_idle)).arg("0-0");
        claim.arg("COUNT").arg(webhook.batch);
        let Some(Value::Array(parts)) = self.query::<Value>(conn, &claim).await else {
            return Vec::new();
        };
        // Entries trimmed meanwhile: nothing to deliver, only to confirm.
        if let Some(Value::Array(deleted)) = parts.get(2) {
            let ids: Vec<String> = deleted.iter().filter_map(string).collect();
            self.confirm(queue, &ids).await;
        }
        match parts.get(1) {
            Some(entries) => {
                let taken = self.entries(queue, entries).await;
                if !taken.is_empty() {
                    self.metrics.taken_over(taken.len());
                    tracing::info!(events = taken.len(), "took over undelivered webhook events");
                }
                taken
            }
            None => Vec::new(),
        }
    }

    async fn update_depth(&self, conn: &mut Conn, queue: &str) {
        let mut len = redis::cmd("XLEN");
        len.arg(queue);
        if let Some(depth) = self.query::<u64>(conn, &len).await {
            self.metrics.set_queue_depth(depth);
        }
    }

    /// The entries of an `XREADGROUP` or `XAUTOCLAIM` reply; entries that
    /// do not parse are confirmed (dropped) with a warning.
    async fn entries(&self, queue: &str, value: &Value) -> Vec<(String, Event)> {
        let mut found = Vec::new();
        collect_entries(value, &mut found);
        let mut good = Vec::with_capacity(found.len());
        let mut bad = Vec::new();
        for (id, json) in found {
            match json.and_then(|json| serde_json::from_slice::<Event>(&json).ok()) {
                Some(event) => good.push((id, event)),
                None => bad.push(id),
            }
        }
        if !bad.is_empty() {
            tracing::warn!(
                entries = bad.len(),
                "unreadable webhook queue entries dropped"
            );
            self.confirm(queue, &bad).await;
        }
        good
    }

    async fn query<T: redis::FromRedisValue>(
        &self,
        conn: &mut Conn,
        command: &redis::Cmd,
    ) -> Option<T> {
        let timeout = self.broker.options().command_timeout;
        match tokio::time::timeout(timeout, command.query_async::<T>(conn)).await {
            Ok(Ok(value)) => Some(value),
            Ok(Err(error)) => {
                tracing::debug!(%error, "webhook queue command failed");
                None
            }
            Err(_) => None,
        }
    }
}

fn string(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
        Value::SimpleString(text) => Some(text.clone()),
        _ => None,
    }
}

/// Finds stream entries (`[id, [field, value, …]]`) anywhere in a reply
/// (RESP2 arrays or RESP3 maps): the id and the `e` field, if present.
fn collect_entries(value: &Value, out: &mut Vec<(String, Option<Vec<u8>>)>) {
    match value {
        Value::Array(items) => {
            if let [id, fields] = &items[..]
                && let Some(id) = string(id)
                && id.contains('-')
                && matches!(fields, Value::Array(_) | Value::Map(_) | Value::Nil)
                && !matches!(fields, Value::Array(f) if f.first().is_some_and(|x| matches!(x, Value::Array(_))))
            {
                out.push((id, field_e(fields)));
                return;
            }
            for item in items {
                collect_entries(item, out);
            }
        }
        Value::Map(pairs) => {
            for (_, item) in pairs {
                collect_entries(item, out);
            }
        }
        _ => {}
    }
}

fn field_e(fields: &Value) -> Option<Vec<u8>> {
    match fields {
        Value::Array(items) => items.chunks(2).find_map(|pair| match pair {
            [Value::BulkString(name), Value::BulkString(value)] if name == b"e" => {
                Some(value.clone())
            }
            _ => None,
        }),
        Value::Map(pairs) => pairs.iter().find_map(|pair| match pair {
            (Value::BulkString(name), Value::BulkString(value)) if name == b"e" => {
                Some(value.clone())
            }
            _ => None,
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(text: &str) -> Value {
        Value::BulkString(text.as_bytes().to_vec())
    }

    #[test]
    fn stream_entries_are_found_in_resp2_and_resp3_replies() {
        let entry = |id: &str, json: &str| {
            Value::Array(vec![bulk(id), Value::Array(vec![bulk("e"), bulk(json)])])
        };
        // XREADGROUP, RESP2: [[stream, [entries]]].
        let resp2 = Value::Array(vec![Value::Array(vec![
            bulk("{duplex}:ev:q"),
            Value::Array(vec![entry("1-0", "{}"), entry("1-1", "[]")]),
        ])]);
        let mut found = Vec::new();
        collect_entries(&resp2, &mut found);
        assert_eq!(
            found,
            [
                ("1-0".to_owned(), Some(b"{}".to_vec())),
                ("1-1".to_owned(), Some(b"[]".to_vec()))
            ]
        );
        // RESP3: {stream: [entries]}; XAUTOCLAIM: [cursor, [entries], [deleted]].
        let resp3 = Value::Map(vec![(bulk("q"), Value::Array(vec![entry("2-0", "{}")]))]);
        let mut found = Vec::new();
        collect_entries(&resp3, &mut found);
        assert_eq!(found.len(), 1);
        let claimed = Value::Array(vec![entry("3-0", "{}"), entry("3-1", "{}")]);
        let mut found = Vec::new();
        collect_entries(&claimed, &mut found);
        assert_eq!(found.len(), 2);
        // A deleted entry's fields are nil.
        let mut found = Vec::new();
        collect_entries(
            &Value::Array(vec![Value::Array(vec![bulk("4-0"), Value::Nil])]),
            &mut found,
        );
        assert_eq!(found, [("4-0".to_owned(), None)]);
    }
}
