//! Lifecycle events (webhooks): what the hub tells the application's
//! backend, and the rules that decide it, without I/O.
//!
//! The hub reports `connected`, `disconnected`, `subscribed`,
//! `unsubscribed`, `channel_occupied` / `channel_vacated` and `user_online`
//! / `user_offline` ([`EventKind`]), each an [`Event`] with a unique id (for
//! the backend to drop duplicates), a time and the node that saw it. This
//! module holds the rules; the hub's drivers (`crates/hub/src/events/`)
//! keep the state in memory (one node) or in Redis (a cluster, where atomic
//! Lua scripts follow the same table) and deliver the events over HTTP.
//!
//! # Rules
//!
//! - **Occupancy with grace** ([`Occupancy`]): a user is *online* while it
//!   has a connection anywhere; a channel is *occupied* while it has a
//!   subscriber anywhere. The first one (0 → 1) emits `user_online` /
//!   `channel_occupied`; the last one leaving (1 → 0) does not emit at once
//!   but starts a grace period, and only when it ends with still none does
//!   `user_offline` / `channel_vacated` go out. A new one within the grace
//!   cancels it, and emits nothing: a page reload does not flap. A grace of
//!   0 emits at once.
//! - **Never offline while connected**: `user_offline` is emitted only for a
//!   user whose count is 0 at the end of its grace, whichever node its
//!   connections were on.
//! - **Per-user limit** ([`Registry::connect`]): with a limit `n > 0`, a
//!   user's `n + 1`-th connection anywhere is refused, and changes nothing.
//! - **A dead node** ([`Registry::declare_dead`]): every connection it had
//!   registered is disconnected as if it had closed (`disconnected` with
//!   reason [`NODE_DIED`], then the occupancy rules), exactly once, by
//!   whoever declares it. A node is dead when its last heartbeat is older
//!   than the expiry ([`is_dead`]).
//! - **Disconnect ends subscriptions silently**: a `disconnected` is not
//!   preceded by an `unsubscribed` per channel; the channels it leaves still
//!   follow the occupancy rules (`channel_vacated` after their grace).
//! - **Signature**: every request is signed by the rule of
//!   [`crate::signature`] (`Duplex-Signature: t={t},v1={hex}`), the one
//!   proxy hooks are signed by too.
//! - **Retries** ([`Backoff`]): the `n`-th retry waits a delay drawn in
//!   `[d/2, d]`, `d = min(max, min · 2ⁿ)` (exponential, "equal jitter"),
//!   never more than `max`.
//!
//! Everything here takes time (`now`, milliseconds since the Unix epoch),
//! ids and random draws from the caller.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The `reason` of a `disconnected` declared for a node that died.
pub const NODE_DIED: &str = "node_died";

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum EventKind {
    /// A client completed `connect`.
    Connected,
    /// A connected client's connection ended (or its node died).
    Disconnected,
    /// A client subscribed to a channel (itself or by the server API).
    Subscribed,
    /// A client's subscription ended while it stayed connected.
    Unsubscribed,
    /// A channel got its first subscriber in the cluster.
    ChannelOccupied,
    /// A channel has had no subscriber for its grace period.
    ChannelVacated,
    /// A user got its first connection in the cluster.
    UserOnline,
    /// A user has had no connection for its grace period.
    UserOffline,
}

impl EventKind {
    /// Every kind, in a fixed order (the metrics' and the filter's).
    pub const ALL: [EventKind; 8] = [
        Self::Connected,
        Self::Disconnected,
        Self::Subscribed,
        Self::Unsubscribed,
        Self::ChannelOccupied,
        Self::ChannelVacated,
        Self::UserOnline,
        Self::UserOffline,
    ];

    /// Its name on the wire (`type`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connected => "connected",
            Self::Disconnected => "disconnected",
            Self::Subscribed => "subscribed",
            Self::Unsubscribed => "unsubscribed",
            Self::ChannelOccupied => "channel_occupied",
            Self::ChannelVacated => "channel_vacated",
            Self::UserOnline => "user_online",
            Self::UserOffline => "user_offline",
        }
    }

    /// Its position in [`EventKind::ALL`].
    pub fn index(self) -> usize {
        Self::ALL.iter().position(|k| *k == self).unwrap_or(0)
    }

    /// The kind named `name`, if any.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// Whether it is about channels (needs the subscriptions tracked).
    pub fn is_channel_event(self) -> bool {
        matches!(
            self,
            Self::Subscribed | Self::Unsubscribed | Self::ChannelOccupied | Self::ChannelVacated
        )
    }
}

/// A set of [`EventKind`]s (the configured filter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventSet(u8);

impl EventSet {
    /// Every kind.
    pub const ALL: Self = Self(0xff);
    /// No kind.
    pub const NONE: Self = Self(0);

    /// The set of these kinds.
    pub fn of(kinds: impl IntoIterator<Item = EventKind>) -> Self {
        Self(kinds.into_iter().fold(0, |bits, k| bits | 1 << k.index()))
    }

    /// Whether `kind` is in it.
    pub fn contains(self, kind: EventKind) -> bool {
        self.0 & (1 << kind.index()) != 0
    }

    /// Whether any channel event is in it.
    pub fn has_channel_events(self) -> bool {
        EventKind::ALL
            .into_iter()
            .any(|k| k.is_channel_event() && self.contains(k))
    }
}

/// One event as the backend receives it (JSON; absent fields are left out).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Unique: a backend drops an event whose id it has seen.
    pub id: String,
    /// What happened.
    #[serde(rename = "type")]
    pub kind: EventKind,
    /// When, in milliseconds since the Unix epoch.
    pub time: u64,
    /// The node that saw it (or, for a dead node's connections, the node
    /// that declared them).
    pub node: String,
    /// The client id, for client events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    /// The user (absent for anonymous clients).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The channel, for channel events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// A `disconnected`'s close code (1006: no close frame).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<u16>,
    /// Why, where the hub knows ([`NODE_DIED`], an unsubscribe's reason).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// An event the rules decided, before the driver stamps it with an id, a
/// time and a node ([`Emit::stamp`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Emit {
    /// What happened.
    pub kind: EventKind,
    /// The client, for client events.
    pub client: Option<String>,
    /// The user, if not anonymous.
    pub user: Option<String>,
    /// The channel, for channel events.
    pub channel: Option<String>,
    /// A `disconnected`'s close code.
    pub code: Option<u16>,
    /// Why, where known.
    pub reason: Option<String>,
}

impl Emit {
    fn new(kind: EventKind) -> Self {
        Self {
            kind,
            client: None,
            user: None,
            channel: None,
            code: None,
            reason: None,
        }
    }

    fn user(kind: EventKind, user: &str) -> Self {
        Self {
            user: Some(user.to_owned()),
            ..Self::new(kind)
        }
    }

    fn channel(kind: EventKind, channel: &str) -> Self {
        Self {
            channel: Some(channel.to_owned()),
            ..Self::new(kind)
        }
    }

    fn client(kind: EventKind, client: &str, user: &str) -> Self {
        Self {
            client: Some(client.to_owned()),
            user: (!user.is_empty()).then(|| user.to_owned()),
            ..Self::new(kind)
        }
    }

    /// The event, with its id, time and node.
    pub fn stamp(self, id: String, time: u64, node: &str) -> Event {
        Event {
            id,
            kind: self.kind,
            time,
            node: node.to_owned(),
            client: self.client,
            user: self.user,
            channel: self.channel,
            code: self.code,
            reason: self.reason,
        }
    }
}

/// Unique event ids: a prefix unique to the process (the driver draws it)
/// and a counter.
#[derive(Debug, Clone)]
pub struct EventIds {
    prefix: String,
    next: u64,
}

impl EventIds {
    /// Ids `{prefix}-1`, `{prefix}-2` …
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
            next: 1,
        }
    }

    /// The next id.
    pub fn next_id(&mut self) -> String {
        let id = format!("{}-{}", self.prefix, self.next);
        self.next += 1;
        id
    }
}

/// What one key's occupancy did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// 0 → 1: emit `user_online` / `channel_occupied`.
    Arrived,
    /// 0 → 1 within the grace: nothing is emitted (no flap).
    Resumed,
    /// The count moved, and stayed above 0 or became 0 within a grace:
    /// nothing to emit now.
    Quiet,
    /// 1 → 0 with no grace: emit `user_offline` / `channel_vacated` now.
    Left,
}

/// Counts per key (users, or channels) with the grace rule of the module
/// docs. Bounded by the keys with a count above 0 plus those in grace (each
/// for at most the grace).
#[derive(Debug, Clone, Default)]
pub struct Occupancy {
    counts: HashMap<String, u32>,
    /// Keys at 0 waiting for their grace to end: key → when it ends.
    pending: HashMap<String, u64>,
    /// The same, by when it ends.
    due: BTreeMap<(u64, String), ()>,
}

impl Occupancy {
    /// How many `key` has.
    pub fn count(&self, key: &str) -> u32 {
        self.counts.get(key).copied().unwrap_or(0)
    }

    /// One more for `key`.
    pub fn up(&mut self, key: &str) -> Change {
        let count = self.counts.entry(key.to_owned()).or_insert(0);
        *count += 1;
        if *count > 1 {
            return Change::Quiet;
        }
        match self.pending.remove(key) {
            Some(at) => {
                self.due.remove(&(at, key.to_owned()));
                Change::Resumed
            }
            None => Change::Arrived,
        }
    }

    /// One fewer for `key` at `now` (ms), with `grace` (ms). A key at 0
    /// already stays at 0 ([`Change::Quiet`]).
    pub fn down(&mut self, key: &str, now: u64, grace: u64) -> Change {
        let Some(count) = self.counts.get_mut(key) else {
            return Change::Quiet;
        };
        *count -= 1;
        if *count > 0 {
            return Change::Quiet;
        }
        self.counts.remove(key);
        if grace == 0 {
            return Change::Left;
        }
        let at = now.saturating_add(grace);
        self.pending.insert(key.to_owned(), at);
        self.due.insert((at, key.to_owned()), ());
        Change::Quiet
    }

    /// The keys whose grace ended by `now` with still nothing: emit
    /// `user_offline` / `channel_vacated` for each, once.
    pub fn due(&mut self, now: u64) -> Vec<String> {
        let mut gone = Vec::new();
        while let Some(entry) = self.due.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let (_, key) = entry.remove_entry().0;
            self.pending.remove(&key);
            gone.push(key);
        }
        gone
    }

    /// When the next grace ends, if any.
    pub fn next_due(&self) -> Option<u64> {
        self.due.keys().next().map(|(at, _)| *at)
    }
}

/// Why [`Registry::connect`] refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refused {
    /// The user already has `limit` connections in the cluster.
    #[error("this user already has {limit} connections (the most allowed)")]
    TooManyForUser {
        /// The limit.
        limit: u32,
    },
}

/// Settings of a [`Registry`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    /// Grace before `user_offline`, ms.
    pub offline_grace: u64,
    /// Grace before `channel_vacated`, ms.
    pub vacated_grace: u64,
    /// Connections per user in the cluster; 0: no limit.
    pub max_per_user: u32,
    /// Whether subscriptions are tracked (channel events wanted).
    pub channels: bool,
}

#[derive(Debug, Clone)]
struct Connection {
    node: String,
    user: String,
    channels: BTreeSet<String>,
}

/// The cluster's connections, users and channels, as the rules see them:
/// the in-memory registry of one node, and the model the Redis scripts
/// follow. Each call returns what to emit, in order.
#[derive(Debug, Clone)]
pub struct Registry {
    rules: Rules,
    connections: HashMap<String, Connection>,
    users: Occupancy,
    channels: Occupancy,
}

impl Registry {
    /// An empty registry.
    pub fn new(rules: Rules) -> Self {
        Self {
            rules,
            connections: HashMap::new(),
            users: Occupancy::default(),
            channels: Occupancy::default(),
        }
    }

    /// How many connections `user` has.
    pub fn connections_of(&self, user: &str) -> u32 {
        self.users.count(user)
    }

    /// How many connections are registered.
    pub fn len(&self) -> usize {
        self.connections.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.connections.is_empty()
    }

    /// `client` of `user` (`""`: anonymous) connected on `node`. Refused
    /// (and nothing changes) when the user is at its limit.
    pub fn connect(&mut self, client: &str, user: &str, node: &str) -> Result<Vec<Emit>, Refused> {
        let limit = self.rules.max_per_user;
        if !user.is_empty() && limit > 0 && self.users.count(user) >= limit {
            return Err(Refused::TooManyForUser { limit });
        }
        if self.connections.contains_key(client) {
            return Ok(Vec::new());
        }
        self.connections.insert(
            client.to_owned(),
            Connection {
                node: node.to_owned(),
                user: user.to_owned(),
                channels: BTreeSet::new(),
            },
        );
        let mut out = vec![Emit::client(EventKind::Connected, client, user)];
        if !user.is_empty() && self.users.up(user) == Change::Arrived {
            out.push(Emit::user(EventKind::UserOnline, user));
        }
        Ok(out)
    }

    /// `client` subscribed to `channel`.
    pub fn subscribe(&mut self, client: &str, channel: &str) -> Vec<Emit> {
        let Some(connection) = self.connections.get_mut(client) else {
            return Vec::new();
        };
        if !self.rules.channels || !connection.channels.insert(channel.to_owned()) {
            return Vec::new();
        }
        let mut subscribed = Emit::client(EventKind::Subscribed, client, &connection.user);
        subscribed.channel = Some(channel.to_owned());
        let mut out = vec![subscribed];
        if self.channels.up(channel) == Change::Arrived {
            out.push(Emit::channel(EventKind::ChannelOccupied, channel));
        }
        out
    }

    /// `client`'s subscription to `channel` ended at `now`, for `reason`.
    pub fn unsubscribe(
        &mut self,
        client: &str,
        channel: &str,
        reason: Option<&str>,
        now: u64,
    ) -> Vec<Emit> {
        let Some(connection) = self.connections.get_mut(client) else {
            return Vec::new();
        };
        if !connection.channels.remove(channel) {
            return Vec::new();
        }
        let mut unsubscribed = Emit::client(EventKind::Unsubscribed, client, &connection.user);
        unsubscribed.channel = Some(channel.to_owned());
        unsubscribed.reason = reason.map(str::to_owned);
        let mut out = vec![unsubscribed];
        if self.channels.down(channel, now, self.rules.vacated_grace) == Change::Left {
            out.push(Emit::channel(EventKind::ChannelVacated, channel));
        }
        out
    }

    /// `client`'s connection ended at `now` with close `code`.
    pub fn disconnect(
        &mut self,
        client: &str,
        code: u16,
        reason: Option<&str>,
        now: u64,
    ) -> Vec<Emit> {
        let Some(connection) = self.connections.remove(client) else {
            return Vec::new();
        };
        let mut disconnected = Emit::client(EventKind::Disconnected, client, &connection.user);
        disconnected.code = Some(code);
        disconnected.reason = reason.map(str::to_owned);
        let mut out = vec![disconnected];
        for channel in &connection.channels {
            if self.channels.down(channel, now, self.rules.vacated_grace) == Change::Left {
                out.push(Emit::channel(EventKind::ChannelVacated, channel));
            }
        }
        let user = &connection.user;
        if !user.is_empty() && self.users.down(user, now, self.rules.offline_grace) == Change::Left
        {
            out.push(Emit::user(EventKind::UserOffline, user));
        }
        out
    }

    /// Every connection of `node`, which died, disconnected at `now`
    /// (close code 1006, reason [`NODE_DIED`]).
    pub fn declare_dead(&mut self, node: &str, now: u64) -> Vec<Emit> {
        let mut clients: Vec<String> = self
            .connections
            .iter()
            .filter(|(_, c)| c.node == node)
            .map(|(client, _)| client.clone())
            .collect();
        clients.sort();
        clients
            .iter()
            .flat_map(|client| self.disconnect(client, 1006, Some(NODE_DIED), now))
            .collect()
    }

    /// The graces that ended by `now`: `channel_vacated` and `user_offline`.
    pub fn due(&mut self, now: u64) -> Vec<Emit> {
        let channels = self.channels.due(now).into_iter();
        let vacated = channels.map(|c| Emit::channel(EventKind::ChannelVacated, &c));
        let users = self.users.due(now).into_iter();
        let offline = users.map(|u| Emit::user(EventKind::UserOffline, &u));
        vacated.chain(offline).collect()
    }

    /// When the next grace ends, if any.
    pub fn next_due(&self) -> Option<u64> {
        match (self.users.next_due(), self.channels.next_due()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// Whether a node whose last heartbeat was at `last` (ms) is dead at `now`
/// with `expiry` (ms).
pub fn is_dead(last: u64, now: u64, expiry: u64) -> bool {
    now.saturating_sub(last) > expiry
}

/// The header carrying the ids of the events in the body, comma-separated.
pub const EVENT_ID_HEADER: &str = "Duplex-Event-Id";

/// The retry schedule (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The first delay's upper bound.
    pub min: Duration,
    /// The largest delay.
    pub max: Duration,
}

impl Backoff {
    /// The delay before retry `attempt` (0 for the first retry), with
    /// `jitter` a random draw in `[0, 1)`.
    pub fn delay(&self, attempt: u32, jitter: f64) -> Duration {
        let factor = 2u32.saturating_pow(attempt.min(30));
        let full = self.min.saturating_mul(factor).min(self.max);
        let jitter = jitter.clamp(0.0, 1.0);
        full / 2 + full.mul_f64(jitter / 2.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(offline_grace: u64, max_per_user: u32) -> Rules {
        Rules {
            offline_grace,
            vacated_grace: offline_grace,
            max_per_user,
            channels: true,
        }
    }

    fn kinds(emits: &[Emit]) -> Vec<EventKind> {
        emits.iter().map(|e| e.kind).collect()
    }

    use EventKind::*;

    #[test]
    fn first_connection_is_online_and_last_is_offline_after_the_grace() {
        let mut r = Registry::new(rules(1000, 0));
        assert_eq!(
            kinds(&r.connect("c1", "ada", "n1").unwrap()),
            [Connected, UserOnline]
        );
        assert_eq!(kinds(&r.connect("c2", "ada", "n2").unwrap()), [Connected]);
        assert_eq!(kinds(&r.disconnect("c1", 1000, None, 10)), [Disconnected]);
        assert!(r.due(5000).is_empty(), "ada still has c2");
        assert_eq!(kinds(&r.disconnect("c2", 1000, None, 20)), [Disconnected]);
        assert!(r.due(1019).is_empty(), "within the grace");
        assert_eq!(r.next_due(), Some(1020));
        let offline = r.due(1020);
        assert_eq!(kinds(&offline), [UserOffline]);
        assert_eq!(offline[0].user.as_deref(), Some("ada"));
        assert!(r.due(9999).is_empty(), "once");
    }

    #[test]
    fn a_reconnect_within_the_grace_does_not_flap() {
        let mut r = Registry::new(rules(1000, 0));
        r.connect("c1", "ada", "n1").unwrap();
        r.subscribe("c1", "room");
        r.disconnect("c1", 1001, None, 0);
        // The page reloads: a new connection, the same channel.
        assert_eq!(kinds(&r.connect("c2", "ada", "n1").unwrap()), [Connected]);
        assert_eq!(kinds(&r.subscribe("c2", "room")), [Subscribed]);
        assert!(r.due(5000).is_empty(), "neither offline nor vacated");
        assert_eq!(r.next_due(), None);
    }

    #[test]
    fn no_grace_emits_at_once_and_anonymous_clients_have_no_presence() {
        let mut r = Registry::new(rules(0, 0));
        assert_eq!(kinds(&r.connect("c1", "", "n1").unwrap()), [Connected]);
        assert_eq!(kinds(&r.disconnect("c1", 1000, None, 0)), [Disconnected]);
        r.connect("c2", "bob", "n1").unwrap();
        assert_eq!(
            kinds(&r.subscribe("c2", "room")),
            [Subscribed, ChannelOccupied]
        );
        assert_eq!(
            kinds(&r.disconnect("c2", 1000, None, 0)),
            [Disconnected, ChannelVacated, UserOffline]
        );
    }

    #[test]
    fn channels_are_occupied_once_and_vacated_after_their_grace() {
        let mut r = Registry::new(rules(500, 0));
        r.connect("a", "ada", "n1").unwrap();
        r.connect("b", "bob", "n2").unwrap();
        assert_eq!(kinds(&r.subscribe("a", "x")), [Subscribed, ChannelOccupied]);
        assert_eq!(kinds(&r.subscribe("b", "x")), [Subscribed]);
        assert!(r.subscribe("b", "x").is_empty(), "already subscribed");
        let out = r.unsubscribe("a", "x", Some("bye"), 0);
        assert_eq!(kinds(&out), [Unsubscribed]);
        assert_eq!(out[0].reason.as_deref(), Some("bye"));
        assert!(
            r.unsubscribe("a", "x", None, 0).is_empty(),
            "not subscribed"
        );
        r.unsubscribe("b", "x", None, 100);
        assert!(r.due(599).is_empty());
        let out = r.due(600);
        assert_eq!(kinds(&out), [ChannelVacated]);
        assert_eq!(out[0].channel.as_deref(), Some("x"));
    }

    #[test]
    fn without_channel_tracking_subscriptions_emit_nothing() {
        let mut r = Registry::new(Rules {
            channels: false,
            ..rules(0, 0)
        });
        r.connect("a", "ada", "n1").unwrap();
        assert!(r.subscribe("a", "x").is_empty());
        assert_eq!(
            kinds(&r.disconnect("a", 1000, None, 0)),
            [Disconnected, UserOffline]
        );
    }

    #[test]
    fn the_per_user_limit_counts_every_node_and_refuses_without_change() {
        let mut r = Registry::new(rules(0, 2));
        r.connect("a1", "ada", "n1").unwrap();
        r.connect("a2", "ada", "n2").unwrap();
        assert_eq!(
            r.connect("a3", "ada", "n1"),
            Err(Refused::TooManyForUser { limit: 2 })
        );
        assert_eq!(r.connections_of("ada"), 2);
        assert_eq!(r.len(), 2);
        // Anonymous clients and other users are not limited by ada's.
        r.connect("b1", "bob", "n1").unwrap();
        r.connect("x1", "", "n1").unwrap();
        r.disconnect("a1", 1000, None, 0);
        assert!(r.connect("a3", "ada", "n1").is_ok(), "room again");
    }

    #[test]
    fn a_dead_node_s_connections_are_declared_and_users_elsewhere_stay_online() {
        let mut r = Registry::new(rules(0, 0));
        r.connect("a1", "ada", "n1").unwrap();
        r.connect("a2", "ada", "n2").unwrap();
        r.connect("b1", "bob", "n1").unwrap();
        r.subscribe("b1", "room");
        let out = r.declare_dead("n1", 50);
        assert_eq!(
            kinds(&out),
            [Disconnected, Disconnected, ChannelVacated, UserOffline]
        );
        assert!(
            out.iter()
                .all(|e| e.kind != UserOffline || e.user.as_deref() == Some("bob"))
        );
        assert_eq!(out[0].reason.as_deref(), Some(NODE_DIED));
        assert_eq!(out[0].code, Some(1006));
        assert!(r.declare_dead("n1", 60).is_empty(), "exactly once");
        assert_eq!(r.connections_of("ada"), 1);
        assert!(is_dead(1000, 2001, 1000));
        assert!(!is_dead(1000, 2000, 1000));
        assert!(!is_dead(3000, 2000, 1000), "a heartbeat from the future");
    }

    #[test]
    fn event_json_names_its_fields_and_leaves_out_absent_ones() {
        let mut emit = Emit::client(Disconnected, "c1", "ada");
        emit.code = Some(1001);
        let event = emit.stamp("e-1".into(), 1_700_000_000_000, "0abcde");
        let json = serde_json::to_string(&event).unwrap();
        assert_eq!(
            json,
            r#"{"id":"e-1","type":"disconnected","time":1700000000000,"node":"0abcde","client":"c1","user":"ada","code":1001}"#
        );
        assert_eq!(serde_json::from_str::<Event>(&json).unwrap(), event);
        let mut ids = EventIds::new("n1x");
        assert_eq!(
            (ids.next_id(), ids.next_id()),
            ("n1x-1".into(), "n1x-2".into())
        );
        for kind in EventKind::ALL {
            assert_eq!(EventKind::parse(kind.as_str()), Some(kind));
        }
        let set = EventSet::of([UserOnline, UserOffline]);
        assert!(set.contains(UserOnline) && !set.contains(Connected));
        assert!(!set.has_channel_events());
        assert!(EventSet::of([ChannelVacated]).has_channel_events());
    }

    #[test]
    fn backoff_doubles_with_jitter_and_stays_bounded() {
        let b = Backoff {
            min: Duration::from_millis(100),
            max: Duration::from_secs(10),
        };
        assert_eq!(b.delay(0, 0.0), Duration::from_millis(50));
        assert_eq!(b.delay(0, 1.0), Duration::from_millis(100));
        assert_eq!(b.delay(3, 1.0), Duration::from_millis(800));
        assert_eq!(b.delay(3, 0.5), Duration::from_millis(600));
        for attempt in [7, 8, 30, 1000, u32::MAX] {
            let d = b.delay(attempt, 0.999);
            assert!(
                d <= Duration::from_secs(10) && d >= Duration::from_secs(5),
                "{d:?}"
            );
        }
    }
}
