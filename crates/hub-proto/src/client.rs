//! The client's subscriptions across reconnections: resubscribe, recover,
//! deduplicate, report gaps.
//!
//! [`Subscriptions`] is a sans-I/O state machine. The application says which
//! channels it wants; the state machine produces the `subscribe` and
//! `unsubscribe` requests to send on each connection, and turns what the hub
//! sends into [`Event`]s. The call discipline is in the crate documentation.
//!
//! ## Guarantees
//!
//! For each channel, [`Event::Message`] is produced at most once per offset of
//! an epoch, in increasing offset order, and the epoch only moves to a newer
//! one. Whenever messages may have been missed, an [`Event::Gap`] comes before
//! the next [`Event::Message`] of that channel. That holds across dropped
//! connections, lost or repeated messages, hub restarts (new epochs) and
//! history truncation, because:
//!
//! - the state machine remembers, per channel, the position of the last
//!   message it delivered (`epoch`, `offset`), and resubscribes on every new
//!   connection with `since` set to it;
//! - a message at or below that offset is a duplicate and is dropped;
//! - a live message more than one past it means messages were lost on the way:
//!   the message is dropped and the channel is resubscribed (`unsubscribe`,
//!   then `subscribe` with `since`), so the hub replays what was missed if its
//!   history still has it; a `gap` push does the same, and when it names
//!   another epoch than the channel's (history lost under the subscription,
//!   or an older epoch's message sent again), drops messages until the hub's
//!   `subscribed` says which epoch they belong to. The position is kept
//!   meanwhile: epochs are opaque names, so only the hub can say whether the
//!   channel moved on (a gap) or is still where the client was (nothing
//!   lost, nothing to deliver twice);
//! - only when the hub answers `subscribed` without recovering a `since` that
//!   was sent (or says `gap`) is [`Event::Gap`] produced.
//!
//! A `subscribed` push (without `id`: the application's backend subscribed
//! this connection through the hub's server API) makes the channel wanted,
//! as if the application had subscribed with no `recent`: it is reported
//! as [`Event::Subscribed`], its messages follow, and it is resubscribed on
//! later connections. A channel already wanted takes the push as its
//! subscription (a `subscribe` of its own then in flight is answered
//! `already_subscribed`, which is not a failure); if it had a position the
//! push does not continue, [`Event::Gap`] follows.
//!
//! After a `subscribed` that did not recover, the first message may follow the
//! known position by more than one (the hub replays at most `recent` messages,
//! fewer when its history is shorter); any such skip is covered by the gap
//! reported just before, or is history from before the subscription.

use std::collections::{BTreeMap, HashMap, VecDeque};

use crate::channel::{NameError, validate_channel};
use crate::message::{Command, ErrorCode, Publication, Request, ServerMessage, Since};

/// How to subscribe to a channel.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SubscribeOptions {
    /// How many of the latest messages the hub sends first when it cannot
    /// recover (first subscription, or after a gap). 0: none.
    pub recent: u32,
    /// Where to recover from on the first subscription (for example a position
    /// saved by an earlier run, see [`Subscriptions::position`]).
    pub since: Option<Since>,
}

/// What the application learns from [`Subscriptions::handle`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The hub confirmed a subscription on this connection.
    Subscribed {
        /// The channel.
        channel: String,
        /// Every message since the last one delivered follows (no gap).
        recovered: bool,
    },
    /// A message, in order and not seen before.
    Message(Publication),
    /// Messages of the channel were lost: resync it from elsewhere. Later
    /// messages continue from the hub's current position.
    Gap {
        /// The channel.
        channel: String,
    },
    /// The hub refused a subscription. The channel stays wanted: it is tried
    /// again on the next connection, or now with [`Subscriptions::subscribe`].
    SubscribeFailed {
        /// The channel.
        channel: String,
        /// Why, for programs.
        code: ErrorCode,
        /// Why, for people.
        message: String,
    },
    /// The hub ended a subscription itself (a refreshed token no longer
    /// grants the channel). The channel stays wanted, as after
    /// [`Event::SubscribeFailed`]: it is tried again on the next connection,
    /// or now with [`Subscriptions::subscribe`].
    Unsubscribed {
        /// The channel.
        channel: String,
        /// Why, for people.
        reason: String,
    },
    /// A message that is not about the state machine's subscriptions (replies
    /// to the application's own commands, presence, signals, errors …),
    /// handed back untouched.
    Other(ServerMessage),
}

/// Where a channel's subscription stands on the current connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// No connection, or not sent yet.
    Idle,
    /// `subscribe` sent, `subscribed` not received yet.
    Subscribing,
    /// `subscribed` received.
    Subscribed,
    /// The hub answered `subscribe` with an error.
    Failed,
}

/// One wanted channel.
#[derive(Debug)]
struct Channel {
    recent: u32,
    phase: Phase,
    /// The position of the last message delivered (or where the hub said the
    /// channel was, when nothing followed).
    position: Option<Since>,
    /// While `Some(last)`: after a subscription that did not recover, the hub
    /// replays recent messages up to `last`, and the first message (of the
    /// replay, or live when the replay is empty) may skip ahead up to
    /// `last + 1`.
    replay_until: Option<u64>,
    /// The id of the `subscribe` in flight.
    pending: Option<u64>,
    /// The `since` that `subscribe` carried.
    sent_since: Option<Since>,
    /// A `gap` push named another epoch than the position's: the messages
    /// that follow cannot be placed until the hub's `subscribed` says which
    /// epoch is current, so they are dropped until then.
    held: bool,
}

/// What a request in flight was.
#[derive(Debug)]
enum Sent {
    Subscribe,
    Unsubscribe,
}

/// The client's subscription state machine (see the [module docs](self)).
#[derive(Debug)]
pub struct Subscriptions {
    channels: BTreeMap<String, Channel>,
    connected: bool,
    next_id: u64,
    /// Requests of this state machine in flight on this connection.
    in_flight: HashMap<u64, Sent>,
    transmit: VecDeque<Request>,
}

impl Default for Subscriptions {
    fn default() -> Self {
        Self::new()
    }
}

impl Subscriptions {
    /// No channel, not connected.
    pub fn new() -> Self {
        Self {
            channels: BTreeMap::new(),
            connected: false,
            next_id: 1,
            in_flight: HashMap::new(),
            transmit: VecDeque::new(),
        }
    }

    /// A fresh request id (1, 2, 3 …). Use it for the application's own
    /// commands too, so that replies are never mistaken for one another.
    pub fn next_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Whether [`Subscriptions::on_connected`] was called since the last
    /// [`Subscriptions::on_disconnected`].
    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// Wants `channel`, receiving no recent messages on the first subscription.
    pub fn subscribe(&mut self, channel: &str) -> Result<(), NameError> {
        self.subscribe_with(channel, SubscribeOptions::default())
    }

    /// Wants `channel`. When connected, the `subscribe` request is queued for
    /// [`Subscriptions::poll_transmit`]. Subscribing to a channel already wanted
    /// updates `recent`, keeps the position, and retries if the hub refused it.
    pub fn subscribe_with(
        &mut self,
        channel: &str,
        options: SubscribeOptions,
    ) -> Result<(), NameError> {
        validate_channel(channel)?;
        let ch = self
            .channels
            .entry(channel.to_owned())
            .or_insert_with(|| Channel {
                recent: options.recent,
                phase: Phase::Idle,
                position: options.since,
                replay_until: None,
                pending: None,
                sent_since: None,
                held: false,
            });
        ch.recent = options.recent;
        if self.connected && matches!(ch.phase, Phase::Idle | Phase::Failed) {
            self.send_subscribe(channel.to_owned());
        }
        Ok(())
    }

    /// No longer wants `channel`; its position is forgotten. When connected and
    /// subscribed (or subscribing), the `unsubscribe` request is queued.
    /// Returns whether the channel was wanted.
    pub fn unsubscribe(&mut self, channel: &str) -> bool {
        let Some(ch) = self.channels.remove(channel) else {
            return false;
        };
        if self.connected && matches!(ch.phase, Phase::Subscribing | Phase::Subscribed) {
            self.send_unsubscribe(channel.to_owned());
        }
        true
    }

    /// The channels wanted, in name order.
    pub fn channels(&self) -> impl Iterator<Item = &str> {
        self.channels.keys().map(String::as_str)
    }

    /// Whether the hub confirmed `channel`'s subscription on this connection.
    pub fn is_subscribed(&self, channel: &str) -> bool {
        self.channels
            .get(channel)
            .is_some_and(|ch| ch.phase == Phase::Subscribed)
    }

    /// The position of the last message delivered on `channel` (or where the
    /// hub said the channel was, when nothing followed): what the next
    /// subscription recovers from.
    pub fn position(&self, channel: &str) -> Option<&Since> {
        self.channels.get(channel)?.position.as_ref()
    }

    /// A connection is up (the hub sent `connected`): returns the `subscribe`
    /// requests to send, one per wanted channel, with `since` for those that
    /// have a position. Requests of a previous connection are forgotten.
    pub fn on_connected(&mut self) -> Vec<Request> {
        self.on_disconnected();
        self.connected = true;
        let names: Vec<String> = self.channels.keys().cloned().collect();
        for name in names {
            self.send_subscribe(name);
        }
        self.transmit.drain(..).collect()
    }

    /// The connection is gone: nothing in flight will be answered. Positions are
    /// kept for the next [`Subscriptions::on_connected`].
    pub fn on_disconnected(&mut self) {
        self.connected = false;
        self.in_flight.clear();
        self.transmit.clear();
        for ch in self.channels.values_mut() {
            ch.phase = Phase::Idle;
            ch.pending = None;
            ch.sent_since = None;
            ch.replay_until = None;
            ch.held = false;
        }
    }

    /// The next request to send, if any. Call after every other method until it
    /// returns `None`.
    pub fn poll_transmit(&mut self) -> Option<Request> {
        self.transmit.pop_front()
    }

    /// Takes in one message from the hub and returns what the application must
    /// know, in order. Messages that are not about the wanted channels'
    /// subscriptions come back as [`Event::Other`]; messages for channels not
    /// wanted (any more) are dropped.
    pub fn handle(&mut self, message: ServerMessage) -> Vec<Event> {
        let mut events = Vec::new();
        if !self.connected {
            // Leftovers of a connection already reported gone.
            if !matches!(
                message,
                ServerMessage::Message(_) | ServerMessage::Gap { .. }
            ) {
                events.push(Event::Other(message));
            }
            return events;
        }
        match message {
            ServerMessage::Message(publication) => self.on_message(publication, &mut events),
            ServerMessage::Gap { channel, epoch, .. } => self.on_gap(channel, &epoch),
            ServerMessage::Subscribed {
                id: Some(id),
                channel,
                epoch,
                offset,
                recovered,
                gap,
            } if self.in_flight.contains_key(&id) => {
                self.in_flight.remove(&id);
                self.on_subscribed(
                    id,
                    channel,
                    epoch,
                    offset,
                    recovered && !gap,
                    gap,
                    &mut events,
                );
            }
            ServerMessage::Subscribed {
                id: None,
                channel,
                epoch,
                offset,
                ..
            } => self.on_server_subscribed(channel, epoch, offset, &mut events),
            ServerMessage::Unsubscribed { id: Some(id), .. }
                if self.in_flight.contains_key(&id) =>
            {
                self.in_flight.remove(&id);
            }
            ServerMessage::Unsubscribed {
                id: None,
                channel,
                reason,
            } if self.is_subscribed(&channel) => {
                if let Some(ch) = self.channels.get_mut(&channel) {
                    ch.phase = Phase::Failed;
                    ch.replay_until = None;
                    ch.held = false;
                }
                events.push(Event::Unsubscribed {
                    channel,
                    reason: reason.unwrap_or_default(),
                });
            }
            ServerMessage::Error {
                id: Some(id),
                code,
                message,
            } if self.in_flight.contains_key(&id) => {
                if let Some(Sent::Subscribe) = self.in_flight.remove(&id)
                    && let Some((channel, ch)) = self
                        .channels
                        .iter_mut()
                        .find(|(_, ch)| ch.pending == Some(id))
                {
                    ch.phase = Phase::Failed;
                    ch.pending = None;
                    ch.sent_since = None;
                    events.push(Event::SubscribeFailed {
                        channel: channel.clone(),
                        code,
                        message,
                    });
                }
            }
            other => events.push(Event::Other(other)),
        }
        events
    }

    fn send_subscribe(&mut self, channel: String) {
        let id = self.next_id();
        let Some(ch) = self.channels.get_mut(&channel) else {
            return;
        };
        ch.phase = Phase::Subscribing;
        ch.pending = Some(id);
        ch.sent_since = ch.position.clone();
        ch.replay_until = None;
        self.in_flight.insert(id, Sent::Subscribe);
        self.transmit.push_back(Request::new(
            id,
            Command::Subscribe {
                channel,
                since: ch.position.clone(),
                recent: ch.recent,
                token: None,
            },
        ));
    }

    fn send_unsubscribe(&mut self, channel: String) {
        let id = self.next_id();
        self.in_flight.insert(id, Sent::Unsubscribe);
        self.transmit
            .push_back(Request::new(id, Command::Unsubscribe { channel }));
    }

    /// Unsubscribes and subscribes again from the current position, so that the
    /// hub replays what this connection missed.
    fn resubscribe(&mut self, channel: String) {
        self.send_unsubscribe(channel.clone());
        self.send_subscribe(channel);
    }

    #[allow(clippy::too_many_arguments)]
    fn on_subscribed(
        &mut self,
        id: u64,
        channel: String,
        epoch: String,
        last: u64,
        recovered: bool,
        gap: bool,
        events: &mut Vec<Event>,
    ) {
        let Some(ch) = self.channels.get_mut(&channel) else {
            return;
        };
        if ch.pending != Some(id) {
            // The answer to a subscription replaced since.
            return;
        }
        ch.pending = None;
        ch.phase = Phase::Subscribed;
        ch.held = false;
        let sent_since = ch.sent_since.take();
        // Where this channel stands in the hub's current epoch, if we know.
        let same_epoch = ch
            .position
            .as_ref()
            .filter(|p| p.epoch == epoch && p.offset <= last)
            .map(|p| p.offset);
        if recovered && same_epoch.is_some() {
            // The hub replays everything after `sent_since`; what arrived since
            // it was sent is deduplicated against the position.
            ch.replay_until = None;
            events.push(Event::Subscribed {
                channel,
                recovered: true,
            });
            return;
        }
        let lost = gap || sent_since.is_some();
        // The hub replays the last `recent` messages it keeps, at most.
        let base = last.saturating_sub(u64::from(ch.recent));
        let offset = same_epoch.map_or(base, |known| known.max(base));
        ch.replay_until = (offset < last).then_some(last);
        ch.position = Some(Since { epoch, offset });
        events.push(Event::Subscribed {
            channel: channel.clone(),
            recovered: false,
        });
        if lost {
            events.push(Event::Gap { channel });
        }
    }

    /// A server-side subscription (see the module docs).
    fn on_server_subscribed(
        &mut self,
        channel: String,
        epoch: String,
        last: u64,
        events: &mut Vec<Event>,
    ) {
        if validate_channel(&channel).is_err() {
            return;
        }
        let ch = self.channels.entry(channel.clone()).or_insert(Channel {
            recent: 0,
            phase: Phase::Idle,
            position: None,
            replay_until: None,
            pending: None,
            sent_since: None,
            held: false,
        });
        if ch.phase == Phase::Subscribed {
            return;
        }
        // Our own `subscribe` in flight, if any, will be refused as
        // `already_subscribed`: no longer pending, so that is no failure.
        ch.pending = None;
        ch.sent_since = None;
        ch.phase = Phase::Subscribed;
        ch.replay_until = None;
        ch.held = false;
        let lost = ch
            .position
            .as_ref()
            .is_some_and(|p| p.epoch != epoch || p.offset < last);
        if ch.position.is_none() || lost {
            ch.position = Some(Since {
                epoch,
                offset: last,
            });
        }
        events.push(Event::Subscribed {
            channel: channel.clone(),
            recovered: false,
        });
        if lost {
            events.push(Event::Gap { channel });
        }
    }

    fn on_gap(&mut self, channel: String, epoch: &str) {
        let Some(ch) = self.channels.get_mut(&channel) else {
            return;
        };
        if !matches!(ch.phase, Phase::Subscribing | Phase::Subscribed) {
            return;
        }
        if ch.position.as_ref().is_some_and(|p| p.epoch != epoch) {
            // The offsets that follow may belong to another epoch and cannot
            // be told from ours: take nothing until the hub's `subscribed`
            // says where the channel stands. That answer reports the gap if
            // there is one; the position stays, so that a channel still in
            // our epoch (an old epoch's message was sent again) delivers
            // nothing twice.
            ch.held = true;
            ch.replay_until = None;
        }
        if ch.phase == Phase::Subscribed {
            self.resubscribe(channel);
        }
        // Else the `subscribe` in flight answers for the loss.
    }

    fn on_message(&mut self, publication: Publication, events: &mut Vec<Event>) {
        let Some(ch) = self.channels.get_mut(&publication.channel) else {
            return;
        };
        if matches!(ch.phase, Phase::Idle | Phase::Failed) || ch.held {
            return;
        }
        let Some(position) = &mut ch.position else {
            // No epoch known yet: the `subscribed` in flight will tell.
            return;
        };
        let offset = publication.offset;
        if offset <= position.offset {
            return; // Seen already.
        }
        let in_replay = ch
            .replay_until
            .is_some_and(|last| offset <= last.saturating_add(1));
        if offset == position.offset + 1 || in_replay {
            position.offset = offset;
            // The replay is contiguous: only its first message may skip.
            ch.replay_until = None;
            events.push(Event::Message(publication));
        } else if ch.phase == Phase::Subscribed {
            // Messages were lost on the way: ask the hub for them again.
            let channel = publication.channel;
            self.resubscribe(channel);
        }
        // Else a `subscribe` is in flight, and its replay covers the jump.
    }
}
