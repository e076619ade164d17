//! Server-side controls of connections: what the server API asks of a user's
//! (or one client's) connections wherever they are in the cluster, and the
//! node's registry of its live sessions that applies them.
//!
//! A [`Control`] names its [`Target`] (a user, a client, or a client of a
//! user) and what to do: disconnect with a close code and reason, subscribe
//! to or unsubscribe from a channel, or move the session's expiry. The hub
//! hands it to every node (the in-memory broker: this node; the Redis
//! broker: one pub/sub topic every node listens on, see
//! `broker::redis`), and each node gives it to its [`Registry`], which
//! queues it for every matching session and nudges that session's outbox.
//! The session applies it in its own task, between two commands, as it
//! would a command of its client (see `session`).
//!
//! # Invariants
//!
//! - A session is in the registry from its `connect` until it ends, under
//!   its member id and, unless anonymous, its user; nothing else is.
//! - A control reaches only the sessions its target names: every session of
//!   the user, or the one client (of that user, when both are given). A
//!   target names at least one of them.
//! - Controls reach one session in the order the registry got them, and
//!   none is applied twice; a session that ends drops what it had not taken.
//! - A session holds at most [`MAX_PENDING`] controls it has not taken; a
//!   control beyond that is not queued for it (and not counted as reaching
//!   it), so a backend that floods a session which is not taking them
//!   cannot grow the node's memory.
//! - A disconnect's close code is in the application range 4000–4999
//!   ([`Control::validate`]); the others are the protocol's and the hub's.
//! - The same topic carries the commands a client `POST`ed for its HTTP
//!   session ([`Post`], see `crate::sse`) to whichever node holds it: a
//!   [`NodeMessage`] is a control or a post, and the registry hands a post
//!   to the node's [`crate::sse::Links`], which bound what waits.

use std::collections::HashMap;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::broker::{Subscriber, member_id_of};

/// The connections a [`Control`] is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Target {
    /// Every connection of this user (empty or absent: any user, with
    /// `client`).
    #[serde(default)]
    pub user: String,
    /// Only this connection (its client id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
}

/// What to do to the connections a target names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(crate) enum Control {
    /// Close them with `code` (4000–4999) and `reason`.
    Disconnect {
        /// Whose connections.
        #[serde(flatten)]
        target: Target,
        /// The close code.
        code: u16,
        /// The close reason (at most 123 bytes, as a close frame allows).
        reason: String,
    },
    /// Subscribe them to `channel`, as if they had asked (a `subscribed`
    /// push tells them).
    Subscribe {
        /// Whose connections.
        #[serde(flatten)]
        target: Target,
        /// The channel.
        channel: String,
    },
    /// End their subscription to `channel` (an `unsubscribed` push tells
    /// them).
    Unsubscribe {
        /// Whose connections.
        #[serde(flatten)]
        target: Target,
        /// The channel.
        channel: String,
    },
    /// Move their expiry to `expires` (seconds since the Unix epoch); a
    /// `refreshed` push tells them.
    Refresh {
        /// Whose connections.
        #[serde(flatten)]
        target: Target,
        /// The new expiry.
        expires: u64,
    },
}

/// What travels between nodes on the control topic: a server API control,
/// or commands posted for an HTTP session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub(crate) enum NodeMessage {
    /// A server API control.
    Control(Control),
    /// Commands for an HTTP session.
    Post(Post),
}

/// Commands a client posted for its HTTP session (`POST /session`), on
/// their way to the node that holds it: `{"op":"post","session":ID,
/// "frames":[…]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Post {
    /// Always [`PostOp::Post`]: tells a post from a control on the topic.
    pub op: PostOp,
    /// The session's id (its secret: only its client knows it).
    pub session: String,
    /// The commands, in order: JSON texts, or, with `binary`, one binary
    /// command in standard base64.
    pub frames: Vec<String>,
    /// Whether `frames` holds one binary command.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub binary: bool,
}

/// The `op` of a [`Post`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum PostOp {
    /// The only value.
    Post,
}

/// The most controls a session holds before it takes them.
pub(crate) const MAX_PENDING: usize = 256;

/// The longest close reason a close frame carries (125 bytes of payload,
/// two of them the code).
pub(crate) const MAX_REASON: usize = 123;

/// Why a control cannot be sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum ControlError {
    /// Neither a user nor a client is named.
    #[error("name a `user`, a `client`, or both")]
    NoTarget,
    /// The close code is outside 4000–4999.
    #[error("`code` must be in 4000..=4999 (the application's close codes), not {0}")]
    Code(u16),
    /// The close reason is longer than a close frame carries.
    #[error("`reason` is {0} bytes; a close frame carries at most 123")]
    Reason(usize),
    /// The channel name is invalid.
    #[error("`channel`: {0}")]
    Channel(#[source] duplex_hub_proto::NameError),
}

impl Control {
    /// Whose connections it is for.
    pub(crate) fn target(&self) -> &Target {
        match self {
            Self::Disconnect { target, .. }
            | Self::Subscribe { target, .. }
            | Self::Unsubscribe { target, .. }
            | Self::Refresh { target, .. } => target,
        }
    }

    /// Checks what a node would otherwise refuse later, where nobody can be
    /// told: a target, a close code in 4000–4999 and a reason a close
    /// frame carries, a valid channel name.
    pub(crate) fn validate(&self) -> Result<(), ControlError> {
        let target = self.target();
        if target.user.is_empty() && target.client.is_none() {
            return Err(ControlError::NoTarget);
        }
        match self {
            Self::Disconnect { code, reason, .. } => {
                if !(4000..=4999).contains(code) {
                    return Err(ControlError::Code(*code));
                }
                if reason.len() > MAX_REASON {
                    return Err(ControlError::Reason(reason.len()));
                }
            }
            Self::Subscribe { channel, .. } | Self::Unsubscribe { channel, .. } => {
                duplex_hub_proto::validate_channel(channel).map_err(ControlError::Channel)?;
            }
            Self::Refresh { .. } => {}
        }
        Ok(())
    }
}

/// The node's live sessions, by member id and by user (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct Registry {
    inner: Mutex<Inner>,
    /// The node's HTTP sessions, which posts reach.
    pub(crate) links: crate::sse::Links,
}

#[derive(Debug, Default)]
struct Inner {
    sessions: HashMap<u64, Entry>,
    users: HashMap<Box<str>, Vec<u64>>,
}

#[derive(Debug)]
struct Entry {
    me: Subscriber,
    /// Controls not taken yet, oldest first.
    pending: Vec<Control>,
}

impl Registry {
    /// Adds a session that completed `connect`.
    pub(crate) fn register(&self, me: &Subscriber) {
        let mut inner = self.lock();
        inner.sessions.insert(
            me.id,
            Entry {
                me: me.clone(),
                pending: Vec::new(),
            },
        );
        if !me.user().is_empty() {
            inner.users.entry(me.user().into()).or_default().push(me.id);
        }
    }

    /// Removes a session that ends (with what it had not taken).
    pub(crate) fn remove(&self, me: &Subscriber) {
        let mut inner = self.lock();
        if inner.sessions.remove(&me.id).is_none() {
            return;
        }
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
    pub(crate) fn apply(&self, control: &Control) -> usize {
        let target = control.target();
        let mut inner = self.lock();
        let ids: Vec<u64> = match &target.client {
            Some(client) => member_id_of(client)
                .filter(|id| {
                    inner.sessions.get(id).is_some_and(|entry| {
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
        for id in &ids {
            if let Some(entry) = inner.sessions.get_mut(id) {
                if entry.pending.len() >= MAX_PENDING {
                    continue;
                }
                entry.pending.push(control.clone());
                entry.me.outbox.nudge();
                reached += 1;
            }
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
        self.lock()
            .sessions
            .get_mut(&id)
            .map(|entry| std::mem::take(&mut entry.pending))
            .unwrap_or_default()
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

#[cfg(test)]
mod tests {
    use super::*;
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
        registry.register(&a);
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
            registry.register(s);
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
    fn controls_are_checked_before_they_travel() {
        assert_eq!(kick("", None).validate(), Err(ControlError::NoTarget));
        for code in [1000, 3999, 5000] {
            let control = Control::Disconnect {
                target: Target {
                    user: "ada".into(),
                    client: None,
                },
                code,
                reason: String::new(),
            };
            assert_eq!(control.validate(), Err(ControlError::Code(code)));
        }
        let long = Control::Disconnect {
            target: Target {
                user: "ada".into(),
                client: None,
            },
            code: 4000,
            reason: "x".repeat(124),
        };
        assert_eq!(long.validate(), Err(ControlError::Reason(124)));
        let bad = Control::Subscribe {
            target: Target {
                user: "ada".into(),
                client: None,
            },
            channel: "no spaces".into(),
        };
        assert!(matches!(bad.validate(), Err(ControlError::Channel(_))));
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
