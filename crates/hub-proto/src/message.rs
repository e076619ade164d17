//! The messages of the protocol: commands (client to hub), replies and pushes
//! (hub to client), and error codes.
//!
//! These are plain values; [`crate::codec`] turns them into frames and back.
//! Channel names in decoded commands are valid ([`crate::validate_channel`]);
//! values built by hand are not checked until encoded and decoded again.

use std::fmt;
use std::str::FromStr;

use crate::data::{Data, JsonText};

/// A position in a channel's history: an offset within one epoch.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Since {
    /// The epoch (one life of the channel's history) the offset belongs to.
    pub epoch: String,
    /// The offset of the last message seen (0: none yet).
    pub offset: u64,
}

/// A command with the `id` its reply will carry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// The number the client chose; a command without one gets no reply on
    /// success (errors are still reported, without `id`).
    pub id: Option<u64>,
    /// What the client asks for.
    pub command: Command,
}

impl Request {
    /// A request with an `id`.
    pub fn new(id: u64, command: Command) -> Self {
        Self {
            id: Some(id),
            command,
        }
    }
}

/// A command from a client to the hub.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// `connect`: the first command on a connection. Answered by `connected`.
    Connect {
        /// A JWT; without one the connection is anonymous (or uses the
        /// handshake's token).
        token: Option<String>,
        /// A name for this client, for logs.
        name: Option<String>,
    },
    /// `refresh`: a new token before the current one expires. Answered by
    /// `refreshed`.
    Refresh {
        /// The new JWT.
        token: String,
    },
    /// `subscribe`: receive a channel's messages. Answered by `subscribed`.
    Subscribe {
        /// The channel.
        channel: String,
        /// Recover from this position (the last message seen).
        since: Option<Since>,
        /// How many of the latest messages to send first when not recovering
        /// (0: none).
        recent: u32,
        /// A subscription token for the channel (a JWT naming the
        /// connection's user and the channel), which namespaces with
        /// `subscribe = "token"` require.
        token: Option<String>,
    },
    /// `unsubscribe`: stop receiving a channel. Answered by `unsubscribed`.
    Unsubscribe {
        /// The channel.
        channel: String,
    },
    /// `publish`: send data to a channel's subscribers. Answered by `published`.
    Publish {
        /// The channel.
        channel: String,
        /// The data.
        data: Data,
        /// An idempotency key of up to [`crate::MAX_KEY_LEN`] bytes.
        key: Option<String>,
    },
    /// `presence`: who is subscribed to a channel. Answered by `presence`.
    Presence {
        /// The channel.
        channel: String,
    },
    /// `signal`: data for the channel's current subscribers, not kept in
    /// history. Answered by `ok`.
    Signal {
        /// The channel.
        channel: String,
        /// The data.
        data: Data,
    },
    /// `ping`: an application-level heartbeat. Answered by `pong`.
    Ping,
    /// `rpc`: a call of the application's backend through the hub (its
    /// `rpc` hook, `docs/hooks.md`). Answered by `rpc` with the backend's
    /// data, or an `error`.
    Rpc {
        /// The method: a name with the rules of a channel name; its
        /// namespace (before the first `:`) chooses the hook.
        method: String,
        /// The call's JSON data (`null` when absent).
        data: JsonText,
    },
}

impl Command {
    /// The `op` naming this command on the wire.
    pub fn op(&self) -> &'static str {
        match self {
            Self::Connect { .. } => "connect",
            Self::Refresh { .. } => "refresh",
            Self::Subscribe { .. } => "subscribe",
            Self::Unsubscribe { .. } => "unsubscribe",
            Self::Publish { .. } => "publish",
            Self::Presence { .. } => "presence",
            Self::Signal { .. } => "signal",
            Self::Ping => "ping",
            Self::Rpc { .. } => "rpc",
        }
    }

    /// The channel this command is about, if any.
    pub fn channel(&self) -> Option<&str> {
        match self {
            Self::Subscribe { channel, .. }
            | Self::Unsubscribe { channel }
            | Self::Publish { channel, .. }
            | Self::Presence { channel }
            | Self::Signal { channel, .. } => Some(channel),
            Self::Connect { .. } | Self::Refresh { .. } | Self::Ping | Self::Rpc { .. } => None,
        }
    }
}

/// Who sent a message or signal, or is present in a channel.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct ClientInfo {
    /// The connection's id, unique on the hub.
    pub client: String,
    /// The user (the token's `sub`; empty for anonymous).
    pub user: String,
}

/// A message published to a channel, as delivered to subscribers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Publication {
    /// The channel.
    pub channel: String,
    /// Its offset in the channel (1, 2, 3 … within an epoch).
    pub offset: u64,
    /// When the hub accepted it, in milliseconds since the Unix epoch.
    pub time: u64,
    /// Who published it.
    pub from: ClientInfo,
    /// The data, as published.
    pub data: Data,
}

/// A reply or push from the hub to a client.
///
/// Replies carry the `id` of the command they answer (`None` when it had none).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerMessage {
    /// `connected`: the reply to `connect`.
    Connected {
        /// The command's id.
        id: Option<u64>,
        /// This connection's id, unique on the hub.
        client: String,
        /// The token's `sub` (empty for anonymous).
        user: String,
        /// The protocol version ([`crate::VERSION`]).
        version: u32,
        /// When the token runs out, in seconds since the Unix epoch (none
        /// without a token).
        expires: Option<u64>,
        /// The hub's WebSocket ping interval, in seconds.
        ping: u64,
        /// Data for the client from the application's backend (its
        /// `connect` hook), if it gave any.
        data: Option<JsonText>,
    },
    /// `refreshed`: the reply to `refresh`.
    Refreshed {
        /// The command's id.
        id: Option<u64>,
        /// When the new token runs out, in seconds since the Unix epoch.
        expires: Option<u64>,
    },
    /// `subscribed`: the reply to `subscribe`, followed by the replayed
    /// messages, then live ones.
    Subscribed {
        /// The command's id.
        id: Option<u64>,
        /// The channel.
        channel: String,
        /// The channel's epoch.
        epoch: String,
        /// The channel's latest offset when subscribing (0: no message yet).
        offset: u64,
        /// Every message after `since` follows, up to `offset`.
        recovered: bool,
        /// `since` could not be served: messages were lost.
        gap: bool,
    },
    /// `unsubscribed`: the reply to `unsubscribe`, or a push (no `id`) when
    /// the hub ends a subscription itself (a refreshed token no longer
    /// grants the channel), with its `reason`.
    Unsubscribed {
        /// The command's id.
        id: Option<u64>,
        /// The channel.
        channel: String,
        /// Why the hub ended the subscription (pushes only).
        reason: Option<String>,
    },
    /// `published`: the reply to `publish`.
    Published {
        /// The command's id.
        id: Option<u64>,
        /// The channel.
        channel: String,
        /// The message's offset (the first one's, for a duplicate).
        offset: u64,
        /// A message with the same key was already published and is still in
        /// history; this one was not delivered again.
        duplicate: bool,
    },
    /// `presence`: the reply to `presence`.
    Presence {
        /// The command's id.
        id: Option<u64>,
        /// The channel.
        channel: String,
        /// The clients subscribed to it.
        clients: Vec<ClientInfo>,
    },
    /// `ok`: the reply to `signal`.
    Ok {
        /// The command's id.
        id: Option<u64>,
    },
    /// `pong`: the reply to `ping`.
    Pong {
        /// The command's id.
        id: Option<u64>,
    },
    /// `rpc`: the reply to `rpc`, with the backend's answer.
    Rpc {
        /// The command's id.
        id: Option<u64>,
        /// The backend's JSON data (`null` when it gave none).
        data: JsonText,
    },
    /// `message` push: a publication on a subscribed channel.
    Message(Publication),
    /// `join` push: a client subscribed to the channel.
    Join {
        /// The channel.
        channel: String,
        /// The client's user.
        user: String,
        /// The client's id.
        client: String,
    },
    /// `leave` push: a client unsubscribed from the channel or disconnected.
    Leave {
        /// The channel.
        channel: String,
        /// The client's user.
        user: String,
        /// The client's id.
        client: String,
    },
    /// `signal` push: a signal from another subscriber.
    Signal {
        /// The channel.
        channel: String,
        /// Who sent it.
        from: ClientInfo,
        /// The data.
        data: Data,
    },
    /// `gap` push: messages of the channel may have been lost before this.
    Gap {
        /// The channel.
        channel: String,
        /// The channel's epoch.
        epoch: String,
        /// The channel's offset at the time.
        offset: u64,
    },
    /// `error`: a command failed; the connection stays open.
    Error {
        /// The command's id, if it had one (and it could be read).
        id: Option<u64>,
        /// What went wrong, for programs.
        code: ErrorCode,
        /// What went wrong, for people.
        message: String,
    },
}

impl ServerMessage {
    /// The `op` naming this message on the wire.
    pub fn op(&self) -> &'static str {
        match self {
            Self::Connected { .. } => "connected",
            Self::Refreshed { .. } => "refreshed",
            Self::Subscribed { .. } => "subscribed",
            Self::Unsubscribed { .. } => "unsubscribed",
            Self::Published { .. } => "published",
            Self::Presence { .. } => "presence",
            Self::Ok { .. } => "ok",
            Self::Pong { .. } => "pong",
            Self::Rpc { .. } => "rpc",
            Self::Message(_) => "message",
            Self::Join { .. } => "join",
            Self::Leave { .. } => "leave",
            Self::Signal { .. } => "signal",
            Self::Gap { .. } => "gap",
            Self::Error { .. } => "error",
        }
    }

    /// The id of the command this replies to (`None` for pushes).
    pub fn id(&self) -> Option<u64> {
        match self {
            Self::Connected { id, .. }
            | Self::Refreshed { id, .. }
            | Self::Subscribed { id, .. }
            | Self::Unsubscribed { id, .. }
            | Self::Published { id, .. }
            | Self::Presence { id, .. }
            | Self::Ok { id }
            | Self::Pong { id }
            | Self::Rpc { id, .. }
            | Self::Error { id, .. } => *id,
            Self::Message(_)
            | Self::Join { .. }
            | Self::Leave { .. }
            | Self::Signal { .. }
            | Self::Gap { .. } => None,
        }
    }
}

/// The stable `code` of an `error` reply. Every error keeps the connection open.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// `bad_request`: not JSON, not an object, a field of the wrong type, a bad name.
    BadRequest,
    /// `unknown_op`: an `op` this version does not know.
    UnknownOp,
    /// `not_connected`: a command before `connect` completed.
    NotConnected,
    /// `already_connected`: a second `connect`.
    AlreadyConnected,
    /// `unauthorized`: the token is invalid or expired.
    Unauthorized,
    /// `forbidden`: not allowed to subscribe, publish or see presence here.
    Forbidden,
    /// `already_subscribed`: `subscribe` to a channel already subscribed.
    AlreadySubscribed,
    /// `not_subscribed`: `unsubscribe` from a channel not subscribed.
    NotSubscribed,
    /// `too_many_channels`: over the per-connection subscription limit.
    TooManyChannels,
    /// `rate_limited`: over the message rate; slow down.
    RateLimited,
    /// `unavailable`: the broker cannot serve this now.
    Unavailable,
    /// `internal`: a bug in the hub.
    Internal,
    /// `backend_unavailable`: the application's backend did not give a
    /// usable answer to a hook in time (down, slow, busy, or an answer
    /// the hub cannot read); try again later.
    BackendUnavailable,
    /// `rpc_error`: the application's backend answered an `rpc` with an
    /// error; the message is the backend's.
    RpcError,
}

impl ErrorCode {
    /// Every code, in the spec's order.
    pub const ALL: [Self; 14] = [
        Self::BadRequest,
        Self::UnknownOp,
        Self::NotConnected,
        Self::AlreadyConnected,
        Self::Unauthorized,
        Self::Forbidden,
        Self::AlreadySubscribed,
        Self::NotSubscribed,
        Self::TooManyChannels,
        Self::RateLimited,
        Self::Unavailable,
        Self::Internal,
        Self::BackendUnavailable,
        Self::RpcError,
    ];

    /// The code as sent on the wire, such as `"bad_request"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadRequest => "bad_request",
            Self::UnknownOp => "unknown_op",
            Self::NotConnected => "not_connected",
            Self::AlreadyConnected => "already_connected",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::AlreadySubscribed => "already_subscribed",
            Self::NotSubscribed => "not_subscribed",
            Self::TooManyChannels => "too_many_channels",
            Self::RateLimited => "rate_limited",
            Self::Unavailable => "unavailable",
            Self::Internal => "internal",
            Self::BackendUnavailable => "backend_unavailable",
            Self::RpcError => "rpc_error",
        }
    }

    /// The code named `code` on the wire, if this version knows it.
    pub fn from_wire(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == code)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error of parsing an unknown [`ErrorCode`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown error code")]
pub struct UnknownErrorCode;

impl FromStr for ErrorCode {
    type Err = UnknownErrorCode;

    fn from_str(code: &str) -> Result<Self, Self::Err> {
        Self::from_wire(code).ok_or(UnknownErrorCode)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_round_trip() {
        for code in ErrorCode::ALL {
            assert_eq!(code.as_str().parse::<ErrorCode>(), Ok(code));
            assert_eq!(code.to_string(), code.as_str());
        }
        assert_eq!("nope".parse::<ErrorCode>(), Err(UnknownErrorCode));
    }
}
