//! The broker: where publishes get their offsets, history is kept, presence
//! is tracked, and messages reach every subscriber.
//!
//! One interface, two implementations: [`memory::MemoryBroker`] for a single
//! node, and [`redis::RedisBroker`] that makes several nodes one cluster
//! through Redis. The hub's sessions speak only to [`Broker`]. The rules
//! themselves are not here but in `duplex-hub-proto`'s machines: the memory
//! broker keeps each channel in a `log::ChannelLog`, the Redis broker
//! delivers each channel through a `fanout::Fanout` (its Lua scripts keep
//! the log's rules inside Redis).
//!
//! # Invariants every broker keeps
//! - **Offsets.** Each accepted publish to a channel gets the channel's next
//!   offset (1, 2, 3 … within an epoch), and every subscriber of the channel,
//!   on every node, receives the channel's messages in offset order, each
//!   once.
//! - **Epochs.** A channel's history lives in one epoch; when the history is
//!   lost (restart of an in-memory node, Redis data loss) the channel gets a
//!   new epoch, so an offset from before is recognised as stale.
//! - **Subscribe with recovery is atomic.** [`Broker::subscribe`] decides with
//!   [`duplex_hub_proto::plan_recovery`], queues the replay in the
//!   subscriber's outbox and registers it for live messages such that no
//!   message is missed or queued twice between the replay and the live
//!   stream. Where it cannot promise that, it says `gap`.
//! - **Idempotency.** A publish whose key was already used on the channel,
//!   while that message is still in history, is not delivered again; the
//!   outcome carries the first offset and `duplicate`.
//! - **Never blocked by a reader.** Delivery pushes into outboxes, which
//!   never wait (see [`crate::outbox`]).
//! - **Presence** lists the clients subscribed to a channel; `join` and
//!   `leave` pushes go to the channel's subscribers where the namespace
//!   enables them.

pub(crate) mod memory;
pub(crate) mod redis;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use duplex_hub_proto::{ClientInfo, Data, Publication, Since};

use crate::outbox::Outbox;

/// A boxed future, so [`Broker`] can be used as a trait object.
pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A connection subscribed on this node, as the broker sees it: a shared
/// handle to its [`Member`] (a clone is a reference count, so a channel's
/// entry for it is one pointer).
#[derive(Debug, Clone)]
pub(crate) struct Subscriber(Arc<Member>);

/// What a [`Subscriber`] refers to. Kept small (96 bytes): one lives as
/// long as its connection. The client id is not stored: it is derived from
/// `id` (see [`Member::client`]).
#[derive(Debug)]
pub(crate) struct Member {
    /// Unique on this node while the connection lives: the node's 24-bit
    /// prefix in the top bits, the connection's number on the node in the
    /// low [`NUMBER_BITS`] (numbers wrap after 2⁴⁰ connections).
    pub id: u64,
    /// The user it speaks for (empty for anonymous).
    user: Box<str>,
    /// Where its messages go.
    pub outbox: Outbox,
}

/// How many low bits of [`Member::id`] number connections on a node.
pub(crate) const NUMBER_BITS: u32 = 40;

/// The [`Member::id`] of connection `number` on the node with `prefix`
/// (24 bits: the node's id, six hex digits).
pub(crate) fn member_id(prefix: u32, number: u64) -> u64 {
    (u64::from(prefix & 0xff_ffff) << NUMBER_BITS) | (number & ((1 << NUMBER_BITS) - 1))
}

/// The client id of [`Member::id`] `id`: the node's prefix as six hex
/// digits, then the connection's number in lowercase hex.
fn client_id(id: u64) -> String {
    let (prefix, number) = (id >> NUMBER_BITS, id & ((1 << NUMBER_BITS) - 1));
    format!("{prefix:06x}{number:x}")
}

/// The [`Member::id`] a client id names, if it is one (the inverse of
/// [`Member::client`]): parse a sender's id once, then compare numbers.
pub(crate) fn member_id_of(client: &str) -> Option<u64> {
    let (prefix, number) = client.split_at_checked(6)?;
    let id = member_id(
        u32::from_str_radix(prefix, 16).ok()?,
        u64::from_str_radix(number, 16).ok()?,
    );
    // Only the exact spelling (no sign, no leading zero, lowercase).
    (client_id(id) == client).then_some(id)
}

impl Member {
    /// Its client id (see [`member_id_of`] for the inverse).
    pub(crate) fn client(&self) -> String {
        client_id(self.id)
    }

    /// The user it speaks for (empty for anonymous).
    pub(crate) fn user(&self) -> &str {
        &self.user
    }

    /// Who it is, as the protocol names it.
    pub(crate) fn info(&self) -> ClientInfo {
        ClientInfo {
            client: self.client(),
            user: self.user.to_string(),
        }
    }
}

impl Subscriber {
    /// The connection with [`Member::id`] `id` (see [`member_id`]),
    /// anonymous until [`Subscriber::set_user`], with `outbox`.
    pub(crate) fn new(id: u64, outbox: Outbox) -> Self {
        Self(Arc::new(Member {
            id,
            user: Box::default(),
            outbox,
        }))
    }

    /// Sets the user it speaks for (at `connect`). Only a subscriber no
    /// channel holds yet can change; `false` otherwise.
    pub(crate) fn set_user(&mut self, user: String) -> bool {
        match Arc::get_mut(&mut self.0) {
            Some(member) => {
                member.user = user.into_boxed_str();
                true
            }
            None => false,
        }
    }
}

impl duplex_hub_proto::fanout::Recipient for Subscriber {
    fn id(&self) -> u64 {
        self.0.id
    }
}

impl std::ops::Deref for Subscriber {
    type Target = Member;

    fn deref(&self) -> &Member {
        &self.0
    }
}

/// A publish, as the session hands it to the broker.
#[derive(Debug, Clone)]
pub(crate) struct Publish {
    /// The channel.
    pub channel: Arc<str>,
    /// The payload.
    pub data: Data,
    /// Who publishes.
    pub from: ClientInfo,
    /// The idempotency key, if any, already scoped to its publisher's user
    /// (`duplex_hub_proto::session::scoped_key`).
    pub key: Option<String>,
    /// The hub's clock when it accepted the publish, in ms since the Unix epoch.
    pub time: u64,
}

/// What became of a publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Published {
    /// The channel's epoch the offset belongs to.
    pub epoch: String,
    /// The message's offset in its channel.
    pub offset: u64,
    /// Whether the key had been used: the message was not delivered again.
    pub duplicate: bool,
}

/// A subscription request.
#[derive(Debug, Clone)]
pub(crate) struct Subscribe {
    /// The channel.
    pub channel: Arc<str>,
    /// The subscribing connection.
    pub subscriber: Subscriber,
    /// Recover from here, if given.
    pub since: Option<Since>,
    /// How many recent messages to replay when not recovering.
    pub recent: u32,
}

/// The answer to a subscription, for the `subscribed` reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Subscribed {
    /// The channel's name, as the broker keeps it: a subscriber that keeps
    /// this rather than its own copy costs no allocation for the name.
    pub name: Arc<str>,
    /// The channel's epoch.
    pub epoch: String,
    /// The channel's latest offset when the subscription took effect.
    pub offset: u64,
    /// Whether `since` was honoured: exactly the missed messages follow.
    pub recovered: bool,
    /// Whether messages may have been missed that will not follow.
    pub gap: bool,
}

/// A broker failure. Sessions report it to the client as `unavailable` and
/// keep the connection.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum BrokerError {
    /// This broker does not offer the call (yet).
    #[error("{0} is not offered by this broker")]
    Unsupported(&'static str),
    /// The backing store cannot be reached now (not connected, busy, or
    /// no answer in time), or answered what the broker cannot read.
    #[error("broker unavailable: {0}")]
    Unavailable(&'static str),
    /// The backing store answered the command with an error.
    #[error("broker unavailable: redis: {0}")]
    Redis(#[source] Arc<::redis::RedisError>),
    /// A publish would create a channel beyond the node's `[limits]
    /// max_channels`.
    #[error(
        "this node keeps as many channels as it may ({max}, limits.max_channels): \
         publish to an existing channel, or try again later"
    )]
    TooManyChannels {
        /// The cap.
        max: usize,
    },
}

/// A read of a channel's history (the server API's `history`).
#[derive(Debug, Clone, Default)]
pub(crate) struct HistoryQuery {
    /// Only messages after this position (before it with `reverse`); a
    /// position the history cannot continue from is a gap.
    pub since: Option<Since>,
    /// At most this many messages.
    pub limit: usize,
    /// Newest first.
    pub reverse: bool,
}

/// What a history read found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HistoryPage {
    /// The channel's epoch.
    pub epoch: String,
    /// The channel's latest offset.
    pub offset: u64,
    /// Whether `since` could not be continued from (another epoch, or
    /// messages after it are no longer kept).
    pub gap: bool,
    /// The messages, in the order asked.
    pub publications: Vec<Publication>,
}

/// A channel with subscribers, as the server API's `channels` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ChannelCount {
    /// The channel.
    pub channel: String,
    /// Its subscribers (connections).
    pub subscribers: usize,
}

/// A fresh epoch for a channel whose history starts over: 8 random base-36
/// characters (both brokers name epochs this way).
pub(crate) fn new_epoch() -> String {
    use rand::Rng;
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut rng = rand::rng();
    (0..8)
        .map(|_| DIGITS[rng.random_range(0..DIGITS.len())] as char)
        .collect()
}

/// See the module docs for the invariants every implementation keeps.
pub(crate) trait Broker: Send + Sync + 'static {
    /// Gives the message its offset, keeps it in history and delivers it to
    /// every subscriber of the channel.
    fn publish(&self, publish: Publish) -> BoxFuture<'_, Result<Published, BrokerError>>;

    /// Subscribes a local connection, queueing the replay the request asks for.
    fn subscribe(&self, subscribe: Subscribe) -> BoxFuture<'_, Result<Subscribed, BrokerError>>;

    /// Removes a local connection from a channel (and from its presence).
    fn unsubscribe(&self, channel: &str, subscriber: &Subscriber) -> BoxFuture<'_, ()>;

    /// The clients subscribed to a channel, on every node.
    fn presence(&self, channel: &str) -> BoxFuture<'_, Result<Vec<ClientInfo>, BrokerError>>;

    /// Delivers an ephemeral signal to the channel's subscribers except the
    /// sender: no offset, no history.
    fn signal(
        &self,
        channel: &str,
        from: &Subscriber,
        data: Data,
    ) -> BoxFuture<'_, Result<(), BrokerError>>;

    /// Reads a channel's history (see [`HistoryQuery`]).
    fn history(
        &self,
        channel: &str,
        query: HistoryQuery,
    ) -> BoxFuture<'_, Result<HistoryPage, BrokerError>> {
        let _ = (channel, query);
        Box::pin(std::future::ready(Err(BrokerError::Unsupported("history"))))
    }

    /// Deletes a channel's history. The epoch and the offsets go on, so a
    /// client that recovers from before what was removed gets a gap, and
    /// live subscribers are not disturbed.
    fn remove_history(&self, channel: &str) -> BoxFuture<'_, Result<(), BrokerError>> {
        let _ = channel;
        Box::pin(std::future::ready(Err(BrokerError::Unsupported(
            "history_remove",
        ))))
    }

    /// The channels with subscribers that `pattern` matches (`*` matches any
    /// run of characters), with their subscriber counts.
    fn channels(&self, pattern: &str) -> BoxFuture<'_, Result<Vec<ChannelCount>, BrokerError>> {
        let _ = pattern;
        Box::pin(std::future::ready(Err(BrokerError::Unsupported(
            "channels",
        ))))
    }

    /// Whether the broker can serve now (`/readyz`).
    fn is_ready(&self) -> bool;

    /// Channels with at least one local subscriber.
    fn local_channels(&self) -> usize;
}

/// Whether `name` matches `pattern`, where `*` matches any run of
/// characters (none included) and every other character itself.
pub(crate) fn matches_pattern(pattern: &str, name: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = name.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_with_stars() {
        for (pattern, name, expected) in [
            ("*", "chat:lobby", true),
            ("*", "", true),
            ("chat:*", "chat:lobby", true),
            ("chat:*", "news:lobby", false),
            ("chat:lobby", "chat:lobby", true),
            ("chat:lobby", "chat:lobby2", false),
            ("*:lobby", "chat:lobby", true),
            ("c*t:*y", "chat:lobby", true),
            ("c*t:*y", "chat:lobbx", false),
            ("a*a", "a", false),
            ("a*a", "aa", true),
            ("**", "x", true),
        ] {
            assert_eq!(matches_pattern(pattern, name), expected, "{pattern} {name}");
        }
    }

    /// Every subscriber holds one `Arc<Member>`: with its two counts, 96
    /// bytes (jemalloc's class of that size) where a `VecDeque` outbox
    /// queue made it 112.
    #[test]
    fn a_member_stays_in_the_96_byte_class() {
        let size = 2 * std::mem::size_of::<usize>() + std::mem::size_of::<Member>();
        assert!(size <= 96, "an Arc<Member> takes {size} bytes");
    }

    #[test]
    fn a_member_knows_its_client_id_without_storing_it() {
        let mut sub = Subscriber::new(member_id(0x0a1b2c, 0x3f), Outbox::new(1024));
        assert_eq!(sub.client(), "0a1b2c3f");
        assert_eq!(member_id_of("0a1b2c3f"), Some(sub.id));
        // Another node, another number, a longer or shorter id, other case,
        // a sign.
        for other in [
            "0a1b2d3f",
            "0a1b2c3e",
            "0a1b2c3f0",
            "0a1b2c3",
            "0a1b2c3F",
            "0a1b2c+3f",
            "3f",
            "",
        ] {
            assert_ne!(member_id_of(other), Some(sub.id), "{other} is not its id");
        }
        assert_eq!(sub.user(), "");
        assert!(sub.set_user("ada".to_owned()));
        assert_eq!(
            sub.info(),
            ClientInfo {
                client: "0a1b2c3f".to_owned(),
                user: "ada".to_owned()
            }
        );
        // Once shared (a channel holds it), the user stays.
        let held = sub.clone();
        assert!(!sub.set_user("bob".to_owned()));
        assert_eq!(held.user(), "ada");
        // A small prefix keeps its six digits; the largest number fits, and
        // numbers wrap rather than spill into the prefix.
        let last = Subscriber::new(member_id(0x7, (1 << NUMBER_BITS) - 1), Outbox::new(1));
        assert_eq!(last.client(), "000007ffffffffff");
        assert_eq!(member_id_of("000007ffffffffff"), Some(last.id));
        let wrapped = Subscriber::new(member_id(0x7, 1 << NUMBER_BITS), Outbox::new(1));
        assert_eq!(wrapped.client(), "0000070");
        assert_eq!(member_id(0xfff_ffff, 1) >> NUMBER_BITS, 0xff_ffff);
    }
}
