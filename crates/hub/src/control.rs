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
//! - A [`Lookup`] (the server API's `connections`) reads the registry and
//!   changes nothing; a node lists at most [`MAX_LISTED`] connections of a
//!   user in one answer and says when it left some out.
//!
//! # Revocations
//!
//! The registry also holds the node's copy of the revocations in force
//! (`duplex_hub_proto::revocation`, bounded), and each session's token
//! (`jti`, `iat`). A [`Control::Revoke`] adds one and closes, with 4003,
//! every session of the node whose token it revokes; a
//! [`Control::Unrevoke`] withdraws one. A session is checked against the
//! set under the same lock that records its token, at `connect`
//! ([`Registry::register`]) and at each refresh ([`Registry::refreshed`]),
//! so a revocation that arrives while a session connects or refreshes is
//! never missed: either the check sees it, or the revocation sees the new
//! token. With Redis, a node that (re)connects replaces its copy with the
//! cluster's ([`Registry::reload`]), closing what it revokes, so the
//! revocations sent while it was away are not missed either.
//! - The same topic carries the commands a client `POST`ed for its HTTP
//!   session ([`Post`], see `crate::sse`) to whichever node holds it: a
//!   [`NodeMessage`] is a control or a post, and the registry hands a post
//!   to the node's [`crate::sse::Links`], which bound what waits.

use duplex_hub_proto::revocation::Revocation;
use serde::{Deserialize, Serialize};

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
    /// Revoke a token or a user's tokens (see the module docs): every node
    /// keeps it until its expiry and closes the sessions it revokes.
    Revoke {
        /// What is revoked.
        #[serde(flatten)]
        revocation: Revocation,
    },
    /// Withdraw the revocation of a token or of a user's tokens.
    Unrevoke {
        /// Which.
        #[serde(flatten)]
        which: Unrevoke,
    },
}

/// A revocation to withdraw.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum Unrevoke {
    /// The revocation of the token `jti`.
    Token {
        /// The token's id.
        jti: String,
    },
    /// The revocation of `user`'s tokens.
    User {
        /// The user.
        user: String,
    },
}

/// The longest `jti` or user a revocation names, in bytes.
pub(crate) const MAX_REVOKED_NAME: usize = 256;
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
    /// A revocation's `jti` or `user` is empty or longer than
    /// [`MAX_REVOKED_NAME`] bytes.
    #[error("`{0}` must be 1 to 256 bytes")]
    Name(&'static str),
    /// A revocation's `expire_at` is not after now, or not a time before
    /// the year 10000.
    #[error(
        "`expire_at` must be a time in the future (seconds since the Unix epoch) before the year 10000"
    )]
    ExpireAt,
}

impl Control {
    /// Whose connections it is for (a revocation names its own).
    pub(crate) fn target(&self) -> Option<&Target> {
        match self {
            Self::Disconnect { target, .. }
            | Self::Subscribe { target, .. }
            | Self::Unsubscribe { target, .. }
            | Self::Refresh { target, .. } => Some(target),
            Self::Revoke { .. } | Self::Unrevoke { .. } => None,
        }
    }

    /// Checks what a node would otherwise refuse later, where nobody can be
    /// told: a target, a close code in 4000–4999 and a reason a close
    /// frame carries, a valid channel name; a revocation's names and its
    /// expiry (after `now`).
    pub(crate) fn validate(&self, now: u64) -> Result<(), ControlError> {
        let name = |field, value: &str| {
            if value.is_empty() || value.len() > MAX_REVOKED_NAME {
                Err(ControlError::Name(field))
            } else {
                Ok(())
            }
        };
        match self {
            Self::Revoke { revocation } => {
                match revocation {
                    Revocation::Token { jti, .. } => name("jti", jti)?,
                    Revocation::User { user, .. } => name("user", user)?,
                }
                let at = revocation.expire_at();
                if at <= now || at > crate::auth::MAX_NUMERIC_DATE {
                    return Err(ControlError::ExpireAt);
                }
                return Ok(());
            }
            Self::Unrevoke { which } => {
                return match which {
                    Unrevoke::Token { jti } => name("jti", jti),
                    Unrevoke::User { user } => name("user", user),
                };
            }
            _ => {}
        }
        let Some(target) = self.target() else {
            return Err(ControlError::NoTarget);
        };
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
            Self::Refresh { .. } | Self::Revoke { .. } | Self::Unrevoke { .. } => {}
        }
        Ok(())
    }
}

mod registry;

pub(crate) use registry::Registry;

/// The most connections of one user a node lists in one answer.
pub(crate) const MAX_LISTED: usize = 1000;

/// One connection as the server API's `connections` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Connection {
    /// Its client id.
    pub client: String,
    /// Its user.
    pub user: String,
    /// When it connected (milliseconds since the Unix epoch).
    pub since: u64,
}

/// One node's connections of a user: at most [`MAX_LISTED`], oldest
/// first, and whether some were left out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Listed {
    /// The connections.
    pub connections: Vec<Connection>,
    /// Whether the node has more than it listed.
    pub truncated: bool,
}

/// A question to every node's registry, and a node's answer: they travel
/// between nodes beside the controls (the Redis broker's control topic),
/// as JSON tagged by `op`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(crate) enum Lookup {
    /// Asks every node for `user`'s connections; answered to node `from`
    /// under `id`.
    Connections {
        /// The question's id, unique on the asking node.
        id: u64,
        /// The asking node.
        from: String,
        /// Whose connections.
        user: String,
    },
    /// A node's answer to [`Lookup::Connections`].
    Listed {
        /// The question's id.
        id: u64,
        /// The asking node (only it takes the answer).
        to: String,
        /// The answering node.
        node: String,
        /// What it found.
        #[serde(flatten)]
        listed: Listed,
    },
}
