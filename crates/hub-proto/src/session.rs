//! One connection's rules: its phase, its subscriptions, what it may do with
//! a channel, and how each refusal and each end is worded.
//!
//! The hub's session driver owns the socket, the timers and the broker; it
//! keeps a [`SessionState`] (the phase and the channels subscribed) and asks
//! this module every decision about a command:
//!
//! - [`Phase::gate`]: whether a command may run in the connection's phase
//!   (nothing but `connect` before `connect`; `connect` once);
//! - [`Phase::deadline`]: how the connection ends when its phase's timer
//!   fires (no `connect` in time: 4001; token expired: 4002);
//! - [`may`]: whether a client may subscribe to, publish to or see the
//!   presence of a channel, from its namespace's [`Access`] and the grants
//!   of its token;
//! - [`check_subscribe`]: the subscription limits;
//! - [`SessionState::server_subscribe`]: what a server-side subscribe
//!   (the hub's server API) does to a connection;
//! - [`check_refresh`]: a refresh must keep the user;
//! - [`crate::subscription_token`]: private channels
//!   ([`Permission::Token`]);
//! - [`refreshed_expiry`]: a refresh never shortens the connection's life;
//! - [`scoped_key`]: whose idempotency keys a key can collide with;
//! - [`overlaps_publishes`] and [`MAX_PUBLISHES_IN_FLIGHT`]: the publish
//!   pipeline's order;
//! - [`Refusal`]: the error reply each refusal gets; [`Close`]: the close
//!   code and reason of each way a connection is ended by the hub.
//!
//! # Invariants
//!
//! - Commands take effect in the order sent, and replies go out in that
//!   order. Only a `publish` may start while earlier publishes still wait
//!   for the broker (at most [`MAX_PUBLISHES_IN_FLIGHT`] of them; past that
//!   the driver stops reading); it reaches the broker after them. Any other
//!   command first waits for every publish in flight and their replies.
//! - Every refusal is a recoverable `error` reply (the connection stays);
//!   only the ends in [`Close`] close it.
//! - Channels whose name starts with `$` are the hub's: no client may
//!   publish or signal to them, whatever its token or the namespace says.
//! - A server-side subscribe comes from the application's backend, which
//!   the hub trusts: it skips the namespace's permissions and the token's
//!   grants, but not the phase (only a connected client) nor the
//!   subscription limit, and it is idempotent (a channel already subscribed
//!   is left as it is).
//! - **Refresh.** A refresh to a token of another user is refused with an
//!   `unauthorized` error reply, and the connection keeps its user, its
//!   token and its expiry ([`check_refresh`]). An accepted refresh takes
//!   the new token's grants, and the connection's expiry becomes the later
//!   of its expiry and the new token's ([`refreshed_expiry`]): two
//!   refreshes that cross (two of a client's, or a client's after the
//!   server API moved the expiry later) leave the later expiry, never the
//!   earlier one. (The server API's own `refresh` sets the expiry the
//!   backend names, earlier too: the backend is trusted.) A refresh the driver has begun to verify when the expiry
//!   passes is finished first: the connection survives if it succeeds
//!   (the driver looks at the expiry timer only between commands).
//! - A grant in the token allows what it names; without one, the
//!   namespace's permission must be [`Permission::Any`], and an anonymous
//!   client also needs the namespace to admit anonymous clients.

mod channels;

use serde::Deserialize;

use channels::Channels;

use crate::channel::is_hub_channel;
use crate::close;
use crate::message::{Command, ErrorCode, ServerMessage};

/// Something a client may do with a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Subscribe to it (and so receive its messages).
    Subscribe,
    /// Publish to it and send signals on it.
    Publish,
    /// See who is present in it.
    Presence,
}

impl Action {
    /// The verb of a refusal: "you may not {verb} {channel}".
    fn verb(self) -> &'static str {
        match self {
            Self::Subscribe => "subscribe to",
            Self::Publish => "publish to",
            Self::Presence => "see the presence of",
        }
    }
}

/// Who may do an action in a namespace without a grant for the channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Permission {
    /// Any connected client (anonymous ones too, where the namespace admits
    /// them).
    Any,
    /// Only clients whose token grants the channel.
    Granted,
    /// Nobody but a grant (for publish: only the hub itself, as for
    /// `$sys:stats`).
    None,
    /// For subscribe only: a subscription token for the channel in the
    /// `subscribe` command ([`crate::subscription_token::check_subscription_token`]), or a grant.
    /// Presence needs a grant.
    Token,
}

/// A namespace's access rules, as [`may`] needs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Access {
    /// Who may subscribe (and see presence).
    pub subscribe: Permission,
    /// Who may publish and send signals.
    pub publish: Permission,
    /// Whether `presence` answers at all.
    pub presence: bool,
    /// Whether anonymous clients may use the namespace.
    pub anonymous: bool,
}

/// Why a command is refused; each is an `error` reply, and the connection
/// stays.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// A command before `connect`.
    NotConnected,
    /// A second `connect`.
    AlreadyConnected,
    /// The client may not do this with the channel.
    Forbidden {
        /// What it tried.
        action: Action,
        /// The channel.
        channel: String,
    },
    /// A `$` channel is the hub's: nobody publishes to it.
    HubChannel {
        /// The channel.
        channel: String,
    },
    /// `presence` is off in the channel's namespace.
    PresenceOff,
    /// A `subscribe` to a channel this connection is subscribed to.
    AlreadySubscribed,
    /// An `unsubscribe` from a channel this connection is not subscribed to.
    NotSubscribed,
    /// The connection's subscription limit is reached.
    TooManyChannels,
    /// A refresh with a token for another user.
    OtherUser,
    /// A subscribe without the subscription token its namespace requires
    /// ([`Permission::Token`]).
    TokenRequired {
        /// The channel.
        channel: String,
    },
    /// A subscription token that does not verify, or is for another user
    /// or channel.
    BadSubscriptionToken {
        /// The channel.
        channel: String,
        /// Why (short, for people).
        why: &'static str,
    },
    /// Over the command rate or the data rate ([`crate::rate`]).
    RateLimited,
}

impl Refusal {
    /// The error code of the reply.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::NotConnected => ErrorCode::NotConnected,
            Self::AlreadyConnected => ErrorCode::AlreadyConnected,
            Self::Forbidden { .. } | Self::HubChannel { .. } | Self::PresenceOff => {
                ErrorCode::Forbidden
            }
            Self::AlreadySubscribed => ErrorCode::AlreadySubscribed,
            Self::NotSubscribed => ErrorCode::NotSubscribed,
            Self::TooManyChannels => ErrorCode::TooManyChannels,
            Self::OtherUser | Self::BadSubscriptionToken { .. } => ErrorCode::Unauthorized,
            Self::TokenRequired { .. } => ErrorCode::Forbidden,
            Self::RateLimited => ErrorCode::RateLimited,
        }
    }

    /// The `error` reply to command `id`.
    pub fn to_reply(&self, id: Option<u64>) -> ServerMessage {
        ServerMessage::Error {
            id,
            code: self.code(),
            message: self.to_string(),
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotConnected => f.write_str("send connect first"),
            Self::AlreadyConnected => f.write_str("already connected"),
            Self::Forbidden { action, channel } => {
                write!(f, "you may not {} {channel}", action.verb())
            }
            Self::HubChannel { channel } => {
                write!(
                    f,
                    "{channel} is the hub's own channel: nobody publishes to it"
                )
            }
            Self::PresenceOff => f.write_str("presence is off in this namespace"),
            Self::AlreadySubscribed => f.write_str("already subscribed"),
            Self::NotSubscribed => f.write_str("not subscribed"),
            Self::TooManyChannels => f.write_str("too many subscriptions on this connection"),
            Self::OtherUser => f.write_str("the new token is for another user"),
            Self::TokenRequired { channel } => {
                write!(f, "subscribing to {channel} needs a subscription token")
            }
            Self::BadSubscriptionToken { channel, why } => {
                write!(f, "subscription token for {channel} refused: {why}")
            }
            Self::RateLimited => {
                f.write_str("over the rate of commands or of data bytes per second; slow down")
            }
        }
    }
}

/// How the hub ends a connection: the close code and reason it sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Close {
    /// The close code.
    pub code: u16,
    /// The reason (short, for people).
    pub reason: &'static str,
}

impl Close {
    /// A token that does not verify (4001), when its fault is not known.
    pub const BAD_TOKEN: Self = Self {
        code: close::UNAUTHORIZED,
        reason: "invalid or expired token",
    };

    /// A token that does not verify (4001), with `fault` as the reason (what
    /// the HTTP 401 for the same token says; at most 123 bytes, a close
    /// frame's limit, or it is cut at a character boundary).
    pub fn bad_token(fault: &'static str) -> Self {
        let mut end = fault.len().min(123);
        while !fault.is_char_boundary(end) {
            end -= 1;
        }
        Self {
            code: close::UNAUTHORIZED,
            reason: &fault[..end],
        }
    }
    /// A token sent to a hub that has no auth configured (4001).
    pub const NO_AUTH: Self = Self {
        code: close::UNAUTHORIZED,
        reason: "this hub does not take tokens",
    };
    /// No `connect` within the connect timeout (4001).
    pub const NO_CONNECT: Self = Self {
        code: close::UNAUTHORIZED,
        reason: "no connect in time",
    };
    /// The token expired without a refresh (4002).
    pub const TOKEN_EXPIRED: Self = Self {
        code: close::TOKEN_EXPIRED,
        reason: "token expired",
    };
    /// The outbox overflowed: the client does not read fast enough (4008).
    pub const SLOW_CONSUMER: Self = Self {
        code: close::SLOW_CONSUMER,
        reason: "slow consumer",
    };
    /// The application's backend revoked the connection's token (4003).
    pub const REVOKED_TOKEN: Self = Self {
        code: close::REVOKED,
        reason: "token revoked",
    };
    /// The application's backend revoked every token of the connection's
    /// user issued until now (4003).
    pub const REVOKED_USER: Self = Self {
        code: close::REVOKED,
        reason: "the user's tokens were revoked",
    };
    /// The command rate limit was broken again and again (1008).
    pub const RATE_LIMIT: Self = Self {
        code: close::POLICY,
        reason: "rate limit exceeded",
    };
}

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Phase {
    /// Before `connect`: its timer is the connect timeout.
    #[default]
    Connecting,
    /// After `connect`: its timer, if any, is the token's expiry.
    Connected,
}

impl Phase {
    /// Whether `command` may run now.
    pub fn gate(self, command: &Command) -> Result<(), Refusal> {
        let connect = matches!(command, Command::Connect { .. });
        match (self, connect) {
            (Self::Connecting, true) | (Self::Connected, false) => Ok(()),
            (Self::Connecting, false) => Err(Refusal::NotConnected),
            (Self::Connected, true) => Err(Refusal::AlreadyConnected),
        }
    }

    /// How the connection ends when this phase's timer fires.
    pub fn deadline(self) -> Close {
        match self {
            Self::Connecting => Close::NO_CONNECT,
            Self::Connected => Close::TOKEN_EXPIRED,
        }
    }
}

/// A connection's state as the rules see it: its [`Phase`] and the
/// channels it is subscribed to.
///
/// Invariants: nothing but `connect` runs before `connect`, and `connect`
/// runs once; a channel is in the list at most once, and the list never
/// holds more than the limit passed to [`SessionState::check_subscribe`]
/// (the driver adds a channel only after that check, and only once the
/// broker confirmed it).
#[derive(Debug, Default)]
pub struct SessionState<N> {
    phase: Phase,
    channels: Channels<N>,
}

impl<N: AsRef<str>> SessionState<N> {
    /// A connection that has not sent `connect`.
    pub fn new() -> Self {
        Self {
            phase: Phase::Connecting,
            channels: Channels::default(),
        }
    }

    /// Where it is in its life.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Whether `command` may run now (see [`Phase::gate`]).
    pub fn gate(&self, command: &Command) -> Result<(), Refusal> {
        self.phase.gate(command)
    }

    /// `connect` succeeded.
    pub fn connected(&mut self) {
        self.phase = Phase::Connected;
    }

    /// How the connection ends when its phase's timer fires.
    pub fn deadline(&self) -> Close {
        self.phase.deadline()
    }

    /// How many channels it is subscribed to.
    pub fn subscriptions(&self) -> usize {
        self.channels.names().len()
    }

    /// Whether it is subscribed to `channel`.
    pub fn is_subscribed(&self, channel: &str) -> bool {
        self.channels.names().iter().any(|n| n.as_ref() == channel)
    }

    /// Whether it may subscribe to `channel` under a limit of `max`
    /// subscriptions (see [`check_subscribe`]).
    pub fn check_subscribe(&self, channel: &str, max: usize) -> Result<(), Refusal> {
        check_subscribe(self.is_subscribed(channel), self.subscriptions(), max)
    }

    /// What a server-side subscribe to `channel` does under a limit of
    /// `max` subscriptions: `Ok(true)` subscribe (then
    /// [`SessionState::subscribed`] once the broker confirmed it),
    /// `Ok(false)` nothing (not connected yet, or subscribed already), or
    /// the refusal (over the limit). Permissions are not asked: see the
    /// module docs.
    pub fn server_subscribe(&self, channel: &str, max: usize) -> Result<bool, Refusal> {
        if self.phase != Phase::Connected {
            return Ok(false);
        }
        match self.check_subscribe(channel, max) {
            Ok(()) => Ok(true),
            Err(Refusal::AlreadySubscribed) => Ok(false),
            Err(refusal) => Err(refusal),
        }
    }

    /// The broker confirmed the subscription to `name` (checked with
    /// [`SessionState::check_subscribe`] before).
    pub fn subscribed(&mut self, name: N) {
        debug_assert!(!self.is_subscribed(name.as_ref()), "subscribed twice");
        self.channels.add(name);
    }

    /// An `unsubscribe` from `channel`: the name to hand the broker, or the
    /// refusal.
    pub fn unsubscribe(&mut self, channel: &str) -> Result<N, Refusal> {
        self.channels.remove(channel).ok_or(Refusal::NotSubscribed)
    }

    /// After a refresh: removes and returns the subscriptions that `may`
    /// (asked whether the new token allows subscribing) refuses, each with
    /// its refusal.
    pub fn revoke(&mut self, may: impl Fn(&str) -> Result<(), Refusal>) -> Vec<(N, Refusal)> {
        let refused: Vec<(String, Refusal)> = self
            .channels
            .names()
            .iter()
            .filter_map(|n| {
                let refusal = may(n.as_ref()).err()?;
                Some((n.as_ref().to_owned(), refusal))
            })
            .collect();
        refused
            .into_iter()
            .filter_map(|(channel, refusal)| Some((self.channels.remove(&channel)?, refusal)))
            .collect()
    }

    /// The connection ends: every channel it was subscribed to, to leave.
    pub fn take_all(&mut self) -> Vec<N> {
        self.channels.take_all()
    }
}

/// Whether a client may do `action` on `channel` in a namespace with
/// `access`: `anonymous` when it has no token, `granted` when its token
/// grants the action on the channel.
pub fn may(
    action: Action,
    channel: &str,
    access: &Access,
    anonymous: bool,
    granted: bool,
) -> Result<(), Refusal> {
    if action == Action::Publish && is_hub_channel(channel) {
        return Err(Refusal::HubChannel {
            channel: channel.to_owned(),
        });
    }
    let permission = match action {
        Action::Publish => access.publish,
        Action::Subscribe | Action::Presence => access.subscribe,
    };
    let allowed = granted || (permission == Permission::Any && (access.anonymous || !anonymous));
    if !allowed {
        if action == Action::Subscribe && permission == Permission::Token {
            return Err(Refusal::TokenRequired {
                channel: channel.to_owned(),
            });
        }
        return Err(Refusal::Forbidden {
            action,
            channel: channel.to_owned(),
        });
    }
    if action == Action::Presence && !access.presence {
        return Err(Refusal::PresenceOff);
    }
    Ok(())
}

/// Whether a connection with `count` subscriptions, `subscribed` to the
/// channel already or not, may subscribe to it under a limit of `max`.
pub fn check_subscribe(subscribed: bool, count: usize, max: usize) -> Result<(), Refusal> {
    if subscribed {
        Err(Refusal::AlreadySubscribed)
    } else if count >= max {
        Err(Refusal::TooManyChannels)
    } else {
        Ok(())
    }
}

/// Whether a refresh to a token for `new_user` may replace one for `user`.
pub fn check_refresh(user: &str, new_user: &str) -> Result<(), Refusal> {
    if user == new_user {
        Ok(())
    } else {
        Err(Refusal::OtherUser)
    }
}

/// The connection's expiry after a refresh to a token expiring at `new`,
/// when it expires at `current` (none: it had no expiry): the later of the
/// two, so a refresh answered late never shortens a connection's life (see
/// the module docs).
pub fn refreshed_expiry(current: Option<u64>, new: u64) -> u64 {
    current.map_or(new, |current| current.max(new))
}

/// The idempotency key a broker keeps for `key` published by `user` (empty
/// for anonymous clients): keys are scoped per user, so one user's key never
/// matches another's, and a signed-in user's retry from a new connection
/// still finds its first publish. Anonymous clients share one scope (they
/// are nobody in particular): their keys must be unguessable, as the Rust
/// and browser clients' are. The user's length leads, so no two (user, key)
/// pairs give the same scoped key.
pub fn scoped_key(user: &str, key: &str) -> String {
    format!("{}:{user}{key}", user.len())
}

/// How many publishes of one connection may wait for the broker at once
/// (see the module's invariants).
pub const MAX_PUBLISHES_IN_FLIGHT: usize = 64;

/// Whether `command` may start while earlier publishes of the connection
/// still wait for the broker: only a `publish` (it reaches the broker after
/// them, and its reply goes out after theirs). Anything else waits for
/// every publish in flight first, so that, say, a `history` read or an
/// `unsubscribe` sees the effect of the publishes sent before it.
pub fn overlaps_publishes(command: &Command) -> bool {
    matches!(command, Command::Publish { .. })
}

/// The idempotency key a broker keeps for `key` published through the
/// server API: one scope for the application's backend, which no client's
/// [`scoped_key`] can reach (those begin with a digit), so a client can
/// neither replay nor block the backend's publishes.
pub fn api_scoped_key(key: &str) -> String {
    format!("api:{key}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A session's state lives in every connection (parked too): 24 bytes
    /// with the hub's `Arc<str>` names.
    #[test]
    fn a_session_state_stays_small() {
        let size = std::mem::size_of::<SessionState<std::sync::Arc<str>>>();
        assert!(size <= 24, "{size} bytes");
    }

    #[test]
    fn a_refresh_never_shortens_and_keeps_the_user() {
        assert_eq!(refreshed_expiry(None, 100), 100);
        assert_eq!(refreshed_expiry(Some(50), 100), 100, "later token: later");
        assert_eq!(
            refreshed_expiry(Some(200), 100),
            200,
            "an earlier token answered late does not shorten"
        );
        // Crossing refreshes end at the later expiry in either order.
        let (a, b) = (1_000, 2_000);
        assert_eq!(
            refreshed_expiry(Some(refreshed_expiry(Some(10), a)), b),
            refreshed_expiry(Some(refreshed_expiry(Some(10), b)), a)
        );
        assert_eq!(check_refresh("ada", "ada"), Ok(()));
        assert_eq!(check_refresh("ada", "bob"), Err(Refusal::OtherUser));
        assert_eq!(check_refresh("", "bob"), Err(Refusal::OtherUser));
        assert_eq!(Refusal::OtherUser.code(), ErrorCode::Unauthorized);
        assert_eq!(Close::REVOKED_TOKEN.code, 4003);
        assert_eq!(Close::REVOKED_USER.code, 4003);
    }

    #[test]
    fn a_bad_tokens_close_names_its_fault_within_a_close_frame() {
        let close = Close::bad_token("token refused: token expired");
        assert_eq!(close.code, 4001);
        assert_eq!(close.reason, "token refused: token expired");
        let long = Close::bad_token(
            "ééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééé",
        );
        assert!(long.reason.len() <= 123, "{}", long.reason.len());
        assert!(long.reason.starts_with("éé"));
    }

    #[test]
    fn only_publishes_overlap_the_publishes_in_flight() {
        let data = crate::Data::Binary(bytes::Bytes::from_static(b"x"));
        let publish = Command::Publish {
            channel: "a".into(),
            data: data.clone(),
            key: None,
        };
        assert!(overlaps_publishes(&publish));
        for other in [
            connect(),
            Command::Ping,
            Command::Signal {
                channel: "a".into(),
                data,
            },
            Command::Unsubscribe {
                channel: "a".into(),
            },
        ] {
            assert!(!overlaps_publishes(&other), "{other:?}");
        }
    }

    #[test]
    fn the_backends_keys_are_a_scope_of_their_own() {
        assert_ne!(api_scoped_key("k"), scoped_key("", "k"));
        assert_ne!(api_scoped_key("k"), scoped_key("api", "k"));
        assert!(scoped_key("api:", "k").starts_with(|c: char| c.is_ascii_digit()));
        assert!(!api_scoped_key("k").starts_with(|c: char| c.is_ascii_digit()));
    }

    #[test]
    fn a_server_side_subscribe_is_idempotent_and_bounded() {
        let mut state: SessionState<String> = SessionState::new();
        assert_eq!(state.server_subscribe("a", 2), Ok(false), "not connected");
        state.connected();
        assert_eq!(state.server_subscribe("a", 2), Ok(true));
        state.subscribed("a".to_owned());
        assert_eq!(state.server_subscribe("a", 2), Ok(false), "already");
        state.subscribed("b".to_owned());
        assert_eq!(
            state.server_subscribe("c", 2),
            Err(Refusal::TooManyChannels)
        );
    }

    const OPEN: Access = Access {
        subscribe: Permission::Any,
        publish: Permission::Any,
        presence: true,
        anonymous: true,
    };

    fn connect() -> Command {
        Command::Connect {
            token: None,
            name: None,
        }
    }

    #[test]
    fn nothing_but_one_connect_before_connect() {
        assert_eq!(
            Phase::Connecting.gate(&Command::Ping),
            Err(Refusal::NotConnected)
        );
        assert_eq!(Phase::Connecting.gate(&connect()), Ok(()));
        assert_eq!(Phase::Connected.gate(&Command::Ping), Ok(()));
        assert_eq!(
            Phase::Connected.gate(&connect()),
            Err(Refusal::AlreadyConnected)
        );
        assert_eq!(Phase::Connecting.deadline().code, 4001);
        assert_eq!(Phase::Connected.deadline().code, 4002);
    }

    #[test]
    fn the_hubs_own_channels_take_no_publish_whatever_the_grant() {
        for channel in ["$sys:stats", "$stats", "$admin:x", "$"] {
            assert_eq!(
                may(Action::Publish, channel, &OPEN, false, true),
                Err(Refusal::HubChannel {
                    channel: channel.into()
                }),
                "{channel}"
            );
            assert_eq!(may(Action::Subscribe, channel, &OPEN, false, false), Ok(()));
        }
        assert_eq!(
            may(Action::Publish, "sys:stats", &OPEN, true, false),
            Ok(())
        );
    }

    #[test]
    fn a_grant_allows_and_otherwise_the_namespace_decides() {
        let granted_only = Access {
            subscribe: Permission::Granted,
            publish: Permission::None,
            presence: true,
            anonymous: true,
        };
        let forbidden = |action| {
            Err(Refusal::Forbidden {
                action,
                channel: "news:x".into(),
            })
        };
        assert_eq!(
            may(Action::Subscribe, "news:x", &granted_only, false, false),
            forbidden(Action::Subscribe)
        );
        assert_eq!(
            may(Action::Subscribe, "news:x", &granted_only, false, true),
            Ok(())
        );
        assert_eq!(
            may(Action::Publish, "news:x", &granted_only, false, false),
            forbidden(Action::Publish)
        );
        assert_eq!(
            may(Action::Publish, "news:x", &granted_only, false, true),
            Ok(())
        );
        // Presence follows subscribe.
        assert_eq!(
            may(Action::Presence, "news:x", &granted_only, false, false),
            forbidden(Action::Presence)
        );
        // Anonymous clients need the namespace to admit them.
        let members = Access {
            anonymous: false,
            ..OPEN
        };
        assert_eq!(
            may(Action::Subscribe, "news:x", &members, true, false),
            forbidden(Action::Subscribe)
        );
        assert_eq!(
            may(Action::Subscribe, "news:x", &members, false, false),
            Ok(())
        );
        assert_eq!(
            forbidden(Action::Presence).unwrap_err().to_string(),
            "you may not see the presence of news:x"
        );
    }

    #[test]
    fn presence_off_is_refused_after_the_permission() {
        let quiet = Access {
            presence: false,
            ..OPEN
        };
        assert_eq!(
            may(Action::Presence, "a", &quiet, false, false),
            Err(Refusal::PresenceOff)
        );
        assert_eq!(may(Action::Subscribe, "a", &quiet, false, false), Ok(()));
    }

    #[test]
    fn a_session_state_keeps_its_channels_once_and_within_the_limit() {
        assert!(std::mem::size_of::<SessionState<std::sync::Arc<str>>>() <= 32);
        let mut state: SessionState<String> = SessionState::new();
        assert_eq!(state.gate(&Command::Ping), Err(Refusal::NotConnected));
        assert_eq!(state.deadline(), Close::NO_CONNECT);
        state.connected();
        assert_eq!(state.deadline(), Close::TOKEN_EXPIRED);
        for n in 0..3 {
            let channel = format!("a:{n}");
            assert_eq!(state.check_subscribe(&channel, 3), Ok(()));
            state.subscribed(channel);
        }
        assert_eq!(
            state.check_subscribe("a:0", 9),
            Err(Refusal::AlreadySubscribed)
        );
        assert_eq!(
            state.check_subscribe("a:9", 3),
            Err(Refusal::TooManyChannels)
        );
        assert_eq!(state.unsubscribe("a:1"), Ok("a:1".to_owned()));
        assert_eq!(state.unsubscribe("a:1"), Err(Refusal::NotSubscribed));
        assert_eq!(state.subscriptions(), 2);
        let revoked = state.revoke(|channel| {
            if channel == "a:2" {
                Err(Refusal::Forbidden {
                    action: Action::Subscribe,
                    channel: channel.into(),
                })
            } else {
                Ok(())
            }
        });
        assert_eq!(revoked.len(), 1);
        assert_eq!(revoked[0].0, "a:2");
        assert!(state.is_subscribed("a:0") && !state.is_subscribed("a:2"));
        assert_eq!(state.take_all(), ["a:0".to_owned()]);
        assert_eq!(state.subscriptions(), 0);
        // One channel, then none: back to no list at all.
        state.subscribed("b".to_owned());
        assert_eq!(state.unsubscribe("b"), Ok("b".to_owned()));
        assert_eq!(state.subscriptions(), 0);
    }

    #[test]
    fn keys_are_scoped_per_user_without_ambiguity() {
        assert_ne!(scoped_key("ada", "k"), scoped_key("bob", "k"));
        assert_ne!(scoped_key("ada", "k"), scoped_key("", "k"));
        // "ab" + "c" and "a" + "bc" stay apart.
        assert_ne!(scoped_key("ab", "c"), scoped_key("a", "bc"));
        assert_eq!(scoped_key("ada", "k"), scoped_key("ada", "k"));
    }

    #[test]
    fn subscription_limits_and_refresh() {
        assert_eq!(
            check_subscribe(true, 0, 10),
            Err(Refusal::AlreadySubscribed)
        );
        assert_eq!(
            check_subscribe(false, 10, 10),
            Err(Refusal::TooManyChannels)
        );
        assert_eq!(check_subscribe(false, 9, 10), Ok(()));
        assert_eq!(check_refresh("ada", "bob"), Err(Refusal::OtherUser));
        assert_eq!(check_refresh("ada", "ada"), Ok(()));
        let reply = Refusal::OtherUser.to_reply(Some(7));
        assert_eq!(
            reply,
            ServerMessage::Error {
                id: Some(7),
                code: ErrorCode::Unauthorized,
                message: "the new token is for another user".into()
            }
        );
    }
}
