//! The recovery contract end to end: a client driven by `Subscriptions`, a
//! small model hub that answers `subscribe` with `plan_recovery` over a bounded
//! per-channel history, and every frame going through the real codec. Random
//! runs of publishes, partial deliveries, dropped connections (everything in
//! flight lost), reconnections, hub restarts (new epoch, history lost), history
//! truncation, history lost under a live connection, lost and repeated pushes
//! (a repeated message of an older epoch goes out after a `gap` push with its
//! epoch, as the hub guarantees: see `Conn::told`) and `gap` pushes must leave
//! the client
//! with, per channel:
//!
//! - no message twice, none out of order, epochs only moving forward;
//! - every message it did not get between two it got covered by a `Gap` event
//!   delivered in between;
//! - in the end, the hub's latest message (or, after a gap, its position);
//!
//! and, when the hub never loses history, no gap at all and every message.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};

use bytes::Bytes;
use duplex_hub_proto::{
    ClientInfo, Command, Data, Encoded, Event, HistoryBounds, JsonText, Publication, Request,
    ServerMessage, SubscribeOptions, Subscriptions, decode_command, decode_server, encode_command,
    encode_publication, encode_server, plan_recovery,
};
use proptest::prelude::*;

const CHANNELS: [&str; 2] = ["a", "ns:b"];

#[derive(Clone, Debug)]
enum Op {
    /// Publish to a channel (JSON or binary data).
    Publish(usize, bool),
    /// Deliver up to n frames from the hub to the client.
    Deliver(usize),
    /// Let the hub handle up to n frames from the client.
    Process(usize),
    /// The connection drops: all in flight is lost.
    Drop,
    /// A new connection (if none).
    Connect,
    /// The hub restarts: new epochs, history lost, connection dropped.
    Restart,
    /// The hub keeps only the newest n messages of a channel.
    Truncate(usize, usize),
    /// A channel's history is lost under a live connection (Redis lost its
    /// data): new epoch, and a `gap` push to its subscribers.
    EpochReset(usize),
    /// A live message push in flight to the client is lost (a broker hiccup
    /// the hub did not notice). Replayed messages travel with the
    /// `subscribed` reply and are lost only with the connection.
    Lose(prop::sample::Index),
    /// A message push in flight is sent again, later.
    Repeat(prop::sample::Index),
    /// The hub says messages of a channel may have been lost.
    GapPush(usize),
}

fn op(lossy: bool) -> BoxedStrategy<Op> {
    let channel = 0..CHANNELS.len();
    let common = prop_oneof![
        8 => (channel.clone(), any::<bool>()).prop_map(|(c, b)| Op::Publish(c, b)),
        4 => (1..6usize).prop_map(Op::Deliver),
        3 => (1..4usize).prop_map(Op::Process),
        1 => Just(Op::Drop),
        2 => Just(Op::Connect),
        1 => any::<prop::sample::Index>().prop_map(Op::Lose),
        1 => any::<prop::sample::Index>().prop_map(Op::Repeat),
        1 => channel.clone().prop_map(Op::GapPush),
    ];
    if lossy {
        prop_oneof![
            12 => common,
            1 => Just(Op::Restart),
            1 => (channel.clone(), 0..4usize).prop_map(|(c, n)| Op::Truncate(c, n)),
            1 => channel.prop_map(Op::EpochReset),
        ]
        .boxed()
    } else {
        common.boxed()
    }
}

struct HubChannel {
    epoch: String,
    last: u64,
    history: VecDeque<Publication>,
}

/// The model hub, one client connection, and the record of everything.
struct World {
    capacity: usize,
    epochs: u64,
    channels: BTreeMap<String, HubChannel>,
    /// seq → (epoch number, offset) of every message ever published.
    published: HashMap<u64, (u64, u64)>,
    seq: u64,
    /// The connection, when up: the hub's subscriptions and both directions
    /// of frames in flight.
    conn: Option<Conn>,
    client: Subscriptions,
    /// What the application saw: (channel, Some(seq) for a message, None for a gap).
    log: Vec<(String, Option<u64>)>,
}

#[derive(Default)]
struct Conn {
    subscribed: BTreeSet<String>,
    /// Frames to the client, each with whether it is a live message push.
    to_client: VecDeque<(Encoded, bool)>,
    to_hub: VecDeque<Encoded>,
    /// Per channel, the epoch the hub last told the client (in `subscribed`,
    /// a `gap` push or a message). As the hub does, a message of another
    /// epoch goes out after a `gap` push with its epoch: publications carry
    /// no epoch, so without it an old message sent again could not be told
    /// from a new one at the same offset.
    told: HashMap<String, String>,
}

impl Conn {
    fn push(&mut self, frame: Encoded) {
        self.to_client.push_back((frame, false));
    }

    /// Pushes a message of `epoch` (a `gap` push first if the client was
    /// last told another epoch for its channel).
    fn push_message(&mut self, publication: &Publication, epoch: &str, live: bool) {
        if self
            .told
            .get(&publication.channel)
            .is_some_and(|told| told != epoch)
        {
            self.push(encode_server(&ServerMessage::Gap {
                channel: publication.channel.clone(),
                epoch: epoch.to_owned(),
                offset: publication.offset - 1,
            }));
        }
        self.told
            .insert(publication.channel.clone(), epoch.to_owned());
        self.to_client
            .push_back((encode_publication(publication), live));
    }
}

/// The publish sequence number a publication carries in its data.
fn seq_of(publication: &Publication) -> u64 {
    match &publication.data {
        Data::Binary(bytes) => u64::from_be_bytes(bytes[..].try_into().unwrap()),
        Data::Json(json) => json.to_value().unwrap()["seq"].as_u64().unwrap(),
    }
}

fn epoch_number(epoch: &str) -> u64 {
    epoch[1..].parse().unwrap()
}

impl World {
    fn new(capacity: usize, recent: u32) -> Self {
        let mut client = Subscriptions::new();
        for name in CHANNELS {
            client
                .subscribe_with(
                    name,
                    SubscribeOptions {
                        recent,
                        since: None,
                    },
                )
                .unwrap();
        }
        Self {
            capacity,
            epochs: 1,
            channels: CHANNELS
                .iter()
                .map(|&name| {
                    (
                        name.to_owned(),
                        HubChannel {
                            epoch: "e1".into(),
                            last: 0,
                            history: VecDeque::new(),
                        },
                    )
                })
                .collect(),
            published: HashMap::new(),
            seq: 0,
            conn: None,
            client,
            log: Vec::new(),
        }
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Publish(c, binary) => self.publish(CHANNELS[c], binary),
            Op::Deliver(n) => {
                for _ in 0..n {
                    self.deliver_one();
                }
            }
            Op::Process(n) => {
                for _ in 0..n {
                    self.process_one();
                }
            }
            Op::Drop => self.drop_connection(),
            Op::Connect => self.connect(),
            Op::Restart => {
                self.drop_connection();
                self.epochs += 1;
                for ch in self.channels.values_mut() {
                    ch.epoch = format!("e{}", self.epochs);
                    ch.last = 0;
                    ch.history.clear();
                }
            }
            Op::Truncate(c, keep) => {
                let history = &mut self.channels.get_mut(CHANNELS[c]).unwrap().history;
                while history.len() > keep {
                    history.pop_front();
                }
            }
            Op::Lose(index) => {
                if let Some(i) = self.pick_message(index, true) {
                    self.conn.as_mut().unwrap().to_client.remove(i);
                }
            }
            Op::Repeat(index) => {
                if let Some(i) = self.pick_message(index, false) {
                    let conn = self.conn.as_mut().unwrap();
                    let Ok(ServerMessage::Message(publication)) =
                        decode_server(conn.to_client[i].0.as_frame())
                    else {
                        unreachable!("picked a message")
                    };
                    let epoch = format!("e{}", self.published[&seq_of(&publication)].0);
                    conn.push_message(&publication, &epoch, false);
                }
            }
            Op::EpochReset(c) => {
                let name = CHANNELS[c];
                self.epochs += 1;
                let ch = self.channels.get_mut(name).unwrap();
                ch.epoch = format!("e{}", self.epochs);
                ch.last = 0;
                ch.history.clear();
                self.apply(&Op::GapPush(c));
            }
            Op::GapPush(c) => {
                let name = CHANNELS[c];
                let ch = &self.channels[name];
                let push = ServerMessage::Gap {
                    channel: name.into(),
                    epoch: ch.epoch.clone(),
                    offset: ch.last,
                };
                if let Some(conn) = &mut self.conn
                    && conn.subscribed.contains(name)
                {
                    conn.told.insert(name.to_owned(), ch.epoch.clone());
                    conn.push(encode_server(&push));
                }
            }
        }
    }

    /// A `message` push (a live one, if `live`) among the frames in flight to
    /// the client.
    fn pick_message(&self, index: prop::sample::Index, live: bool) -> Option<usize> {
        let conn = self.conn.as_ref()?;
        let messages: Vec<usize> = (0..conn.to_client.len())
            .filter(|&i| {
                let (frame, is_live) = &conn.to_client[i];
                (*is_live || !live)
                    && matches!(
                        decode_server(frame.as_frame()),
                        Ok(ServerMessage::Message(_))
                    )
            })
            .collect();
        (!messages.is_empty()).then(|| messages[index.index(messages.len())])
    }

    fn publish(&mut self, name: &str, binary: bool) {
        self.seq += 1;
        let seq = self.seq;
        let ch = self.channels.get_mut(name).unwrap();
        ch.last += 1;
        let publication = Publication {
            channel: name.into(),
            offset: ch.last,
            time: 1_795_000_000_000 + seq,
            from: ClientInfo {
                client: "c0".into(),
                user: "pub".into(),
            },
            data: if binary {
                Data::Binary(Bytes::copy_from_slice(&seq.to_be_bytes()))
            } else {
                Data::Json(JsonText::from_value(&serde_json::json!({ "seq": seq })))
            },
        };
        self.published
            .insert(seq, (epoch_number(&ch.epoch), ch.last));
        if let Some(conn) = &mut self.conn
            && conn.subscribed.contains(name)
        {
            conn.push_message(&publication, &ch.epoch, true);
        }
        ch.history.push_back(publication);
        while ch.history.len() > self.capacity {
            ch.history.pop_front();
        }
    }

    fn drop_connection(&mut self) {
        if self.conn.take().is_some() {
            self.client.on_disconnected();
        }
    }

    fn connect(&mut self) {
        if self.conn.is_some() {
            return;
        }
        let mut conn = Conn::default();
        for request in self.client.on_connected() {
            conn.to_hub.push_back(encode_command(&request));
        }
        self.conn = Some(conn);
        self.flush_client();
    }

    fn flush_client(&mut self) {
        while let Some(request) = self.client.poll_transmit() {
            self.conn
                .as_mut()
                .expect("requests only while connected")
                .to_hub
                .push_back(encode_command(&request));
        }
    }

    fn deliver_one(&mut self) {
        let Some((frame, _)) = self.conn.as_mut().and_then(|c| c.to_client.pop_front()) else {
            return;
        };
        let message = decode_server(frame.as_frame()).expect("the hub's frames decode");
        for event in self.client.handle(message) {
            match event {
                Event::Message(publication) => {
                    let seq = seq_of(&publication);
                    assert_eq!(self.published[&seq].1, publication.offset);
                    self.log.push((publication.channel, Some(seq)));
                }
                Event::Gap { channel } => self.log.push((channel, None)),
                Event::Subscribed { .. } => {}
                other => panic!("unexpected event {other:?}"),
            }
        }
        self.flush_client();
    }

    fn process_one(&mut self) {
        let Some(frame) = self.conn.as_mut().and_then(|c| c.to_hub.pop_front()) else {
            return;
        };
        let Request { id, command } =
            decode_command(frame.as_frame()).expect("the client's frames decode");
        let conn = self.conn.as_mut().unwrap();
        match command {
            Command::Subscribe {
                channel,
                since,
                recent,
            } => {
                assert!(
                    conn.subscribed.insert(channel.clone()),
                    "subscribe to {channel} already subscribed"
                );
                let ch = &self.channels[&channel];
                let first = ch.history.front().map_or(ch.last + 1, |p| p.offset);
                let plan = plan_recovery(
                    since.as_ref(),
                    recent,
                    HistoryBounds {
                        epoch: &ch.epoch,
                        first,
                        last: ch.last,
                    },
                );
                conn.told.insert(channel.clone(), ch.epoch.clone());
                conn.push(encode_server(&ServerMessage::Subscribed {
                    id,
                    channel: channel.clone(),
                    epoch: ch.epoch.clone(),
                    offset: ch.last,
                    recovered: plan.recovered,
                    gap: plan.gap,
                }));
                for offset in plan.replay.into_iter().flatten() {
                    let publication = &ch.history[(offset - first) as usize];
                    assert_eq!(publication.offset, offset);
                    conn.push(encode_publication(publication));
                }
            }
            Command::Unsubscribe { channel } => {
                assert!(
                    conn.subscribed.remove(&channel),
                    "unsubscribe from {channel} not subscribed"
                );
                conn.push(encode_server(&ServerMessage::Unsubscribed { id, channel }));
            }
            other => panic!("unexpected command {other:?}"),
        }
    }

    /// Reconnects if needed and runs until nothing is in flight.
    fn settle(&mut self) {
        self.connect();
        for _ in 0..10_000 {
            let conn = self.conn.as_ref().unwrap();
            if !conn.to_hub.is_empty() {
                self.process_one();
            } else if !conn.to_client.is_empty() {
                self.deliver_one();
            } else {
                return;
            }
        }
        panic!("did not settle");
    }

    /// The end of a run: settle, then one more message per channel (which
    /// reveals a loss at the very end), and settle again.
    fn finish(&mut self) {
        self.settle();
        for name in CHANNELS {
            self.publish(name, false);
        }
        self.settle();
    }

    /// The per-channel contract over everything the application saw.
    fn check_contract(&self) {
        for name in CHANNELS {
            let mut last: Option<(u64, u64)> = None;
            let mut gap_since_last = false;
            let mut seen = HashSet::new();
            for (channel, event) in &self.log {
                if channel != name {
                    continue;
                }
                let Some(seq) = event else {
                    gap_since_last = true;
                    continue;
                };
                assert!(seen.insert(*seq), "{name}: seq {seq} delivered twice");
                let (epoch, offset) = self.published[seq];
                if let Some((last_epoch, last_offset)) = last {
                    if epoch == last_epoch {
                        assert!(
                            offset > last_offset,
                            "{name}: offset {offset} after {last_offset}"
                        );
                        assert!(
                            offset == last_offset + 1 || gap_since_last,
                            "{name}: {}..{offset} of epoch {epoch} missed without a gap",
                            last_offset + 1
                        );
                    } else {
                        assert!(epoch > last_epoch, "{name}: back to epoch {epoch}");
                        assert!(
                            gap_since_last,
                            "{name}: epoch {last_epoch} to {epoch} without a gap"
                        );
                    }
                }
                last = Some((epoch, offset));
                gap_since_last = false;
            }
            // Up to date in the end: the last message if nothing was lost
            // after it (after a loss, the hub need not replay anything).
            let ch = &self.channels[name];
            if !gap_since_last {
                assert_eq!(
                    last,
                    Some((epoch_number(&ch.epoch), ch.last)),
                    "{name}: not up to date"
                );
            }
            let position = self.client.position(name).unwrap();
            assert_eq!(
                (position.epoch.as_str(), position.offset),
                (ch.epoch.as_str(), ch.last)
            );
            assert!(self.client.is_subscribed(name));
        }
    }

    fn gaps(&self, name: &str) -> usize {
        self.log
            .iter()
            .filter(|(channel, e)| channel == name && e.is_none())
            .count()
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    /// With restarts and truncation, messages can be lost, but never silently.
    #[test]
    fn losses_are_always_reported(
        capacity in 1..8usize,
        recent in 0..4u32,
        ops in prop::collection::vec(op(true), 0..150),
    ) {
        let mut world = World::new(capacity, recent);
        for op in &ops {
            world.apply(op);
        }
        world.finish();
        world.check_contract();
    }

    /// While the hub keeps its whole history, every message arrives, in
    /// order, once, whatever happens to the connection.
    #[test]
    fn nothing_is_lost_while_history_lasts(
        ops in prop::collection::vec(op(false), 0..150),
    ) {
        let mut world = World::new(usize::MAX, u32::MAX);
        for op in &ops {
            world.apply(op);
        }
        world.finish();
        world.check_contract();
        for name in CHANNELS {
            prop_assert_eq!(world.gaps(name), 0);
            let offsets: Vec<u64> = world
                .log
                .iter()
                .filter(|(channel, _)| channel == name)
                .map(|(_, seq)| world.published[&seq.unwrap()].1)
                .collect();
            let all: Vec<u64> = (1..=world.channels[name].last).collect();
            prop_assert_eq!(offsets, all);
        }
    }
}

/// A run that exercises every kind of event at least once, as a smoke check of
/// the model itself.
#[test]
fn the_model_sees_recoveries_and_gaps() {
    let mut world = World::new(3, 0);
    world.connect();
    world.settle();
    for _ in 0..3 {
        world.publish("a", false);
    }
    world.settle();
    world.drop_connection();
    world.publish("a", true);
    world.publish("a", false);
    world.settle(); // Recovered: 4 and 5.
    assert_eq!(world.gaps("a"), 0);
    world.drop_connection();
    for _ in 0..5 {
        world.publish("a", false);
    }
    world.settle(); // 6..=10 published, 8..=10 kept: a gap.
    assert_eq!(world.gaps("a"), 1);
    assert_eq!(world.gaps("ns:b"), 0);
    world.apply(&Op::Restart);
    world.publish("a", false);
    world.finish();
    world.check_contract();
    // A new epoch is a gap for every channel: the client cannot know that
    // nothing was published to "ns:b" in the lost history.
    assert_eq!(world.gaps("a"), 2);
    assert_eq!(world.gaps("ns:b"), 1);
}
