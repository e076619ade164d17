//! The node's registry of its live sessions: where controls reach them,
//! where the server API lists them, and the node's copy of the revocations
//! in force. Its invariants are the parent module's ("Invariants",
//! "Revocations"): a session is in it from its `connect` until it ends; a
//! control reaches exactly the sessions its target names, in order, at
//! most [`MAX_PENDING`] waiting per session; a revocation and a session's
//! token are checked under one lock.

use std::collections::HashMap;
use std::hash::BuildHasher as _;
use std::sync::Mutex;

use duplex_hub_proto::revocation::{Full, Revocation, Revocations, Revoked, TokenFacts};
use duplex_hub_proto::session::Close;
use hashbrown::hash_table;

use super::{Connection, Control, Listed, MAX_LISTED, MAX_PENDING, NodeMessage, Target, Unrevoke};
use crate::auth::Identity;
use crate::broker::{Subscriber, member_id_of};

/// The node's live sessions, by member id and by user (see the parent
/// module's docs).
#[derive(Debug, Default)]
pub(crate) struct Registry {
    inner: Mutex<Inner>,
    /// The node's HTTP sessions, which posts reach.
    pub(crate) links: crate::sse::Links,
}

#[derive(Debug, Default)]
struct Inner {
    sessions: Sessions,
    /// Controls not taken yet, oldest first, by member id: only for the
    /// sessions that have any (most never do).
    pending: HashMap<u64, Vec<Control>>,
    users: HashMap<Box<str>, Vec<u64>>,
    /// The revocations in force, as this node knows them.
    revocations: Revocations,
}

/// A session in the registry: 24 bytes in a table with spare room, its key
/// (the member id) read from `me`.
#[derive(Debug)]
struct Entry {
    me: Subscriber,
    /// When it connected (milliseconds since the Unix epoch).
    since: u64,
    /// The session's token, if it has one (boxed: most entries have none,
    /// or keep it for hours without a look).
    token: Option<Box<Token>>,
}

/// The registry's sessions by member id: a hash table of [`Entry`]s keyed
/// by the id each holds (a map would store it again beside it).
#[derive(Debug, Default)]
struct Sessions {
    table: hash_table::HashTable<Entry>,
    hasher: std::hash::RandomState,
}

impl Sessions {
    fn hash(&self, id: u64) -> u64 {
        self.hasher.hash_one(id)
    }

    /// Adds `entry`, replacing the one with its id if any.
    fn insert(&mut self, entry: Entry) {
        let hasher = &self.hasher;
        let id = entry.me.id;
        let held = |held: &Entry| hasher.hash_one(held.me.id);
        match self
            .table
            .entry(hasher.hash_one(id), |e| e.me.id == id, held)
        {
            hash_table::Entry::Occupied(mut held) => *held.get_mut() = entry,
            hash_table::Entry::Vacant(vacant) => {
                vacant.insert(entry);
            }
        }
    }

    fn get(&self, id: u64) -> Option<&Entry> {
        self.table.find(self.hash(id), |entry| entry.me.id == id)
    }

    fn get_mut(&mut self, id: u64) -> Option<&mut Entry> {
        let hash = self.hash(id);
        self.table.find_mut(hash, |entry| entry.me.id == id)
    }

    fn remove(&mut self, id: u64) -> Option<Entry> {
        let hash = self.hash(id);
        let entry = self
            .table
            .find_entry(hash, |entry| entry.me.id == id)
            .ok()?;
        Some(entry.remove().0)
    }

    fn ids(&self) -> Vec<u64> {
        self.table.iter().map(|entry| entry.me.id).collect()
    }

    fn iter(&self) -> impl Iterator<Item = &Entry> {
        self.table.iter()
    }

    fn len(&self) -> usize {
        self.table.len()
    }
}

/// What the revocation rule looks at in a session's token, besides its
/// user.
#[derive(Debug)]
struct Token {
    jti: Option<Box<str>>,
    issued: Option<u64>,
}

impl Token {
    fn of(identity: &Identity) -> Self {
        Self {
            jti: identity.jti.clone(),
            issued: identity.issued,
        }
    }
}

impl Entry {
    fn facts(&self) -> Option<TokenFacts<'_>> {
        self.token.as_ref().map(|token| TokenFacts {
            user: self.me.user(),
            jti: token.jti.as_deref(),
            issued: token.issued,
        })
    }

    /// The close of a session whose token was revoked.
    fn revoked(&self, why: Revoked) -> Control {
        let close = match why {
            Revoked::Token => Close::REVOKED_TOKEN,
            _ => Close::REVOKED_USER,
        };
        Control::Disconnect {
            target: Target {
                user: self.me.user().to_owned(),
                client: None,
            },
            code: close.code,
            reason: close.reason.to_owned(),
        }
    }
}

impl Registry {
    /// Adds a session that completed `connect`, with the identity of its
    /// token (none: anonymous), unless that token is revoked at `now`.
    pub(crate) fn register(
        &self,
        me: &Subscriber,
        identity: Option<&Identity>,
        now: u64,
    ) -> Result<(), Revoked> {
        let mut inner = self.lock();
        if let Some(identity) = identity {
            inner.revocations.check(identity.facts(), now)?;
        }
        inner.sessions.insert(Entry {
            me: me.clone(),
            since: crate::hub::now_ms(),
            token: identity.map(|identity| Box::new(Token::of(identity))),
        });
        if !me.user().is_empty() {
            inner.users.entry(me.user().into()).or_default().push(me.id);
        }
        Ok(())
    }

    /// Session `id` refreshed to the token of `identity` (same user), unless
    /// that token is revoked at `now`.
    pub(crate) fn refreshed(&self, id: u64, identity: &Identity, now: u64) -> Result<(), Revoked> {
        let mut inner = self.lock();
        inner.revocations.check(identity.facts(), now)?;
        if let Some(entry) = inner.sessions.get_mut(id) {
            entry.token = Some(Box::new(Token::of(identity)));
        }
        Ok(())
    }

    /// Whether the token of `identity` is revoked at `now` (a handshake's
    /// early answer; [`Registry::register`] decides).
    pub(crate) fn check(&self, identity: &Identity, now: u64) -> Result<(), Revoked> {
        self.lock().revocations.check(identity.facts(), now)
    }

    /// Adds `revocation` at `now` and closes the sessions of this node it
    /// revokes; how many. `Err` when the set is full.
    pub(crate) fn revoke(&self, revocation: Revocation, now: u64) -> Result<usize, Full> {
        let mut inner = self.lock();
        let user = match &revocation {
            Revocation::User { user, .. } => Some(user.clone()),
            Revocation::Token { .. } => None,
        };
        inner.revocations.insert(revocation, now)?;
        let ids: Vec<u64> = match user {
            Some(user) => inner.users.get(user.as_str()).cloned().unwrap_or_default(),
            None => inner.sessions.ids(),
        };
        Ok(inner.close_revoked(&ids, now))
    }

    /// Withdraws a revocation; whether this node held it.
    pub(crate) fn unrevoke(&self, which: &Unrevoke) -> bool {
        let mut inner = self.lock();
        match which {
            Unrevoke::Token { jti } => inner.revocations.remove_token(jti),
            Unrevoke::User { user } => inner.revocations.remove_user(user),
        }
    }

    /// Replaces this node's revocations with `entries` (the cluster's, at
    /// `now`) and closes the sessions they revoke; how many. Entries beyond
    /// the set's bound are left out, logged.
    pub(crate) fn reload(&self, entries: Vec<Revocation>, now: u64) -> usize {
        let mut inner = self.lock();
        let mut set = Revocations::default();
        let mut left_out = 0usize;
        for revocation in entries {
            if set.insert(revocation, now).is_err() {
                left_out += 1;
            }
        }
        if left_out > 0 {
            tracing::warn!(left_out, "more revocations in redis than a node keeps");
        }
        inner.revocations = set;
        let ids = inner.sessions.ids();
        inner.close_revoked(&ids, now)
    }

    /// How many revocations this node holds.
    pub(crate) fn revocations(&self) -> usize {
        self.lock().revocations.len()
    }

    /// Removes a session that ends (with what it had not taken).
    pub(crate) fn remove(&self, me: &Subscriber) {
        let mut inner = self.lock();
        if inner.sessions.remove(me.id).is_none() {
            return;
        }
        inner.pending.remove(&me.id);
        if let Some(ids) = inner.users.get_mut(me.user()) {
            ids.retain(|id| *id != me.id);
            if ids.is_empty() {
                inner.users.remove(me.user());
            }
        }
    }

    /// Queues `control` for every session of this node it targets and
    /// nudges them; returns how many (a session already holding
    /// [`MAX_PENDING`] controls is not one of them).
    /// A revocation is kept and closes the sessions it revokes, counted
    /// as reached; one withdrawn counts 1 if this node held it.
    pub(crate) fn apply(&self, control: &Control) -> usize {
        let target = match control {
            Control::Revoke { revocation } => {
                let now = crate::hub::now_secs();
                return match self.revoke(revocation.clone(), now) {
                    Ok(closed) => closed,
                    Err(full) => {
                        tracing::warn!(error = %full, "a revocation was not kept");
                        0
                    }
                };
            }
            Control::Unrevoke { which } => return usize::from(self.unrevoke(which)),
            _ => match control.target() {
                Some(target) => target,
                None => return 0,
            },
        };
        let mut inner = self.lock();
        let ids: Vec<u64> = match &target.client {
            Some(client) => member_id_of(client)
                .filter(|id| {
                    inner.sessions.get(*id).is_some_and(|entry| {
                        target.user.is_empty() || entry.me.user() == target.user
                    })
                })
                .into_iter()
                .collect(),
            None => inner
                .users
                .get(target.user.as_str())
                .cloned()
                .unwrap_or_default(),
        };
        let mut reached = 0;
        for id in ids {
            let Inner {
                sessions, pending, ..
            } = &mut *inner;
            let Some(entry) = sessions.get(id) else {
                continue;
            };
            let queue = pending.entry(id).or_default();
            if queue.len() >= MAX_PENDING {
                continue;
            }
            queue.push(control.clone());
            entry.me.outbox.nudge();
            reached += 1;
        }
        reached
    }

    /// Queues a disconnect with `code` and `reason` for every session of
    /// this node (the cluster declared the node dead: see
    /// `crate::events`); returns how many.
    pub(crate) fn disconnect_all(&self, code: u16, reason: &str) -> usize {
        let mut inner = self.lock();
        let Inner {
            sessions, pending, ..
        } = &mut *inner;
        let mut reached = 0;
        for entry in sessions.iter() {
            let target = Target {
                user: String::new(),
                client: Some(entry.me.client()),
            };
            pending
                .entry(entry.me.id)
                .or_default()
                .push(Control::Disconnect {
                    target,
                    code,
                    reason: reason.to_owned(),
                });
            entry.me.outbox.nudge();
            reached += 1;
        }
        reached
    }

    /// Hands what came over the control topic to its sessions.
    pub(crate) fn deliver(&self, message: NodeMessage) {
        match message {
            NodeMessage::Control(control) => {
                self.apply(&control);
            }
            NodeMessage::Post(post) => {
                if let Err(error) = self.links.deliver(post) {
                    tracing::debug!(%error, "a post from another node was not delivered");
                }
            }
        }
    }

    /// The controls waiting for session `id`, oldest first.
    pub(crate) fn take(&self, id: u64) -> Vec<Control> {
        let mut inner = self.lock();
        let taken = inner.pending.remove(&id).unwrap_or_default();
        if inner.pending.is_empty() {
            // After a burst (every session of the node told to disconnect,
            // say), the map's table goes back with its last entry.
            inner.pending.shrink_to_fit();
        }
        taken
    }

    /// `user`'s sessions on this node, oldest first, at most
    /// [`MAX_LISTED`].
    pub(crate) fn connections(&self, user: &str) -> Listed {
        let inner = self.lock();
        let Some(ids) = inner.users.get(user) else {
            return Listed::default();
        };
        let mut connections: Vec<Connection> = ids
            .iter()
            .filter_map(|id| inner.sessions.get(*id))
            .map(|entry| Connection {
                client: entry.me.client(),
                user: user.to_owned(),
                since: entry.since,
            })
            .collect();
        drop(inner);
        connections.sort_by(|a, b| (a.since, &a.client).cmp(&(b.since, &b.client)));
        let truncated = connections.len() > MAX_LISTED;
        connections.truncate(MAX_LISTED);
        Listed {
            connections,
            truncated,
        }
    }

    /// How many sessions are registered.
    pub(crate) fn len(&self) -> usize {
        self.lock().sessions.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Every update is one step: a poisoned lock is still consistent.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Inner {
    /// Closes those of sessions `ids` whose token the revocations revoke at
    /// `now` (a disconnect queued and the session nudged, not bounded by
    /// [`MAX_PENDING`]: it ends the session); how many.
    fn close_revoked(&mut self, ids: &[u64], now: u64) -> usize {
        let mut closed = 0;
        for &id in ids {
            let Some(entry) = self.sessions.get(id) else {
                continue;
            };
            if let Some(Err(why)) = entry
                .facts()
                .map(|facts| self.revocations.check(facts, now))
            {
                self.pending.entry(id).or_default().push(entry.revoked(why));
                entry.me.outbox.nudge();
                closed += 1;
            }
        }
        closed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::{ControlError, Lookup, Post, PostOp};

    /// Every connection has an entry, in a table with up to twice the room
    /// it needs: 24 bytes a slot, where a map by member id with the pending
    /// controls and the token boxed made 40 (and inline, 80).
    #[test]
    fn a_registry_entry_stays_small() {
        let size = std::mem::size_of::<Entry>();
        assert!(size <= 24, "{size} bytes");
    }
    use crate::broker::member_id;
    use crate::outbox::Outbox;

    fn session(number: u64, user: &str) -> Subscriber {
        let mut me = Subscriber::new(member_id(0xabcdef, number), Outbox::new(1024));
        assert!(me.set_user(user.to_owned()));
        me
    }

    fn kick(user: &str, client: Option<String>) -> Control {
        Control::Disconnect {
            target: Target {
                user: user.to_owned(),
                client,
            },
            code: 4000,
            reason: "bye".to_owned(),
        }
    }

    #[test]
    fn a_session_that_takes_no_controls_holds_a_bounded_number() {
        let registry = Registry::default();
        let a = session(1, "ada");
        registry.register(&a, None, 0).unwrap();
        for _ in 0..MAX_PENDING {
            assert_eq!(registry.apply(&kick("ada", None)), 1);
        }
        assert_eq!(registry.apply(&kick("ada", None)), 0, "over the bound");
        assert_eq!(registry.take(a.id).len(), MAX_PENDING);
        assert_eq!(registry.apply(&kick("ada", None)), 1, "taken: room again");
    }

    #[test]
    fn a_control_reaches_exactly_its_targets_in_order() {
        let registry = Registry::default();
        let (a1, a2, b, anon) = (
            session(1, "ada"),
            session(2, "ada"),
            session(3, "bob"),
            session(4, ""),
        );
        for s in [&a1, &a2, &b, &anon] {
            registry.register(s, None, 0).unwrap();
        }
        assert_eq!(registry.apply(&kick("ada", None)), 2);
        assert!(a1.outbox.take_nudge() && a2.outbox.take_nudge());
        assert!(!b.outbox.take_nudge() && !anon.outbox.take_nudge());
        // One client; of another user: nobody.
        assert_eq!(registry.apply(&kick("", Some(anon.client()))), 1);
        assert_eq!(registry.apply(&kick("bob", Some(a1.client()))), 0);
        assert_eq!(registry.apply(&kick("ada", Some(a1.client()))), 1);
        assert_eq!(registry.apply(&kick("", Some("not-a-client".into()))), 0);
        assert_eq!(
            registry.take(a1.id),
            [kick("ada", None), kick("ada", Some(a1.client()))]
        );
        assert!(registry.take(a1.id).is_empty(), "taken once");
        assert_eq!(registry.take(anon.id).len(), 1);
        // Gone: reached no more.
        registry.remove(&a2);
        registry.remove(&a1);
        assert_eq!(registry.apply(&kick("ada", None)), 0);
        assert_eq!(registry.len(), 2);
    }

    #[test]
    fn a_users_connections_are_listed_bounded_and_only_theirs() {
        let registry = Registry::default();
        let (a1, a2, b) = (session(1, "ada"), session(2, "ada"), session(3, "bob"));
        for s in [&a1, &a2, &b] {
            registry.register(s, None, 0).unwrap();
        }
        let listed = registry.connections("ada");
        let mut clients: Vec<String> = listed
            .connections
            .iter()
            .map(|c| c.client.clone())
            .collect();
        clients.sort();
        let mut expected = vec![a1.client(), a2.client()];
        expected.sort();
        assert_eq!((clients, listed.truncated), (expected, false));
        assert!(
            listed
                .connections
                .iter()
                .all(|c| c.user == "ada" && c.since > 0)
        );
        assert_eq!(registry.connections("carol"), Listed::default());
        registry.remove(&a1);
        assert_eq!(registry.connections("ada").connections.len(), 1);
        // Bounded.
        let many: Vec<Subscriber> = (10..10 + MAX_LISTED as u64 + 5)
            .map(|n| session(n, "zed"))
            .collect();
        for s in &many {
            registry.register(s, None, 0).unwrap();
        }
        let listed = registry.connections("zed");
        assert_eq!(
            (listed.connections.len(), listed.truncated),
            (MAX_LISTED, true)
        );
        // Lookups travel as JSON too.
        let answer = Lookup::Listed {
            id: 7,
            to: "abc".into(),
            node: "def".into(),
            listed: registry.connections("bob"),
        };
        let json = serde_json::to_string(&answer).unwrap();
        assert!(json.starts_with(r#"{"op":"listed","id":7"#), "{json}");
        assert_eq!(serde_json::from_str::<Lookup>(&json).unwrap(), answer);
        assert!(serde_json::from_str::<Control>(&json).is_err());
    }

    #[test]
    fn controls_are_checked_before_they_travel() {
        assert_eq!(kick("", None).validate(0), Err(ControlError::NoTarget));
        for code in [1000, 3999, 5000] {
            let control = Control::Disconnect {
                target: Target {
                    user: "ada".into(),
                    client: None,
                },
                code,
                reason: String::new(),
            };
            assert_eq!(control.validate(0), Err(ControlError::Code(code)));
        }
        let long = Control::Disconnect {
            target: Target {
                user: "ada".into(),
                client: None,
            },
            code: 4000,
            reason: "x".repeat(124),
        };
        assert_eq!(long.validate(0), Err(ControlError::Reason(124)));
        let bad = Control::Subscribe {
            target: Target {
                user: "ada".into(),
                client: None,
            },
            channel: "no spaces".into(),
        };
        assert!(matches!(bad.validate(0), Err(ControlError::Channel(_))));
        // And they travel as JSON between nodes.
        let json = serde_json::to_string(&kick("ada", None)).unwrap();
        assert_eq!(
            json,
            r#"{"op":"disconnect","user":"ada","code":4000,"reason":"bye"}"#
        );
        assert_eq!(
            serde_json::from_str::<Control>(&json).unwrap(),
            kick("ada", None)
        );
        // Posts share the topic: each decodes as what it is.
        assert_eq!(
            serde_json::from_str::<NodeMessage>(&json).unwrap(),
            NodeMessage::Control(kick("ada", None))
        );
        let post = Post {
            op: PostOp::Post,
            session: "abc".into(),
            frames: vec![r#"{"op":"ping"}"#.into()],
            binary: false,
        };
        let json = serde_json::to_string(&NodeMessage::Post(post.clone())).unwrap();
        assert_eq!(
            json,
            r#"{"op":"post","session":"abc","frames":["{\"op\":\"ping\"}"]}"#
        );
        assert_eq!(
            serde_json::from_str::<NodeMessage>(&json).unwrap(),
            NodeMessage::Post(post)
        );
    }
}
