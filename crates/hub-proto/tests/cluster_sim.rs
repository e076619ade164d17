//! The cluster's ordering and gap contract, proved on the real machines in a
//! deterministic simulation: several hub nodes, each delivering through a
//! [`Fanout`] per channel, one shared store whose channels are
//! [`ChannelLog`]s (what Redis keeps), a pub/sub link per node that can drop
//! (everything in flight lost) and come back (a new generation, resubscribe,
//! catch-up read applied later, with live messages in between), node deaths,
//! history truncated or lost (new epochs), late repeats of old messages, and
//! clients driven by [`Subscriptions`] that connect to any node, lose their
//! connection, and reconnect elsewhere.
//!
//! Each schedule is drawn from a seed. Whatever happens, every client must
//! see, per channel: no message twice, none out of order, epochs moving
//! forward, a gap reported before any message that follows one it missed,
//! and in the end the channel's latest message (or its position after a
//! gap). Without history loss, truncation or a client's own buffer limits,
//! no gap at all and every message.
//!
//! `SIM_SCHEDULES=n` sets how many schedules run (10,000 by default);
//! `SIM_SEED=s` runs the one schedule a failure printed, and `SIM_TRACE=1`
//! prints every command a client sends and every message it receives.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};

use bytes::Bytes;
use duplex_hub_proto::fanout::{CatchUp, CatchUpBase, Fanout, Push, Recipient};
use duplex_hub_proto::log::{Appended, ChannelLog, HistoryLimits};
use duplex_hub_proto::{
    ClientInfo, Command, Data, ErrorCode, Event, Publication, Request, ServerMessage, Since,
    SubscribeOptions, Subscriptions, decode_server, encode_server,
};

const CHANNELS: [&str; 2] = ["a", "ns:b"];
const NODES: usize = 3;
const CLIENTS: usize = 3;

/// splitmix64: a small, seedable generator, so a schedule is its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

/// A message as it travels: which channel, which publish.
#[derive(Clone, Debug)]
struct Item {
    channel: usize,
    offset: u64,
    seq: u64,
}

/// A client connection on a node, as the node's fan-out names it.
#[derive(Debug)]
struct ConnId(u64);

impl Recipient for ConnId {
    fn id(&self) -> u64 {
        self.0
    }
}

/// What the store keeps of a channel.
struct StoreChannel {
    log: ChannelLog<Item>,
}

/// A pub/sub envelope in flight to a node: (generation, message epoch, item).
type Envelope = (u64, String, Item);

/// One node's part of a channel.
#[derive(Default)]
struct NodeChannel {
    fanout: Fanout<ConnId, Item>,
    /// The pub/sub generation it is subscribed in (0: none).
    subscribed: u64,
}

/// A subscription the node is working on, as the Redis broker does it:
/// registered as joining (what arrives is buffered), then its pub/sub
/// interest confirmed in the link's current generation, then its history
/// read (on the command link, which may have dropped and come back since)
/// and the joiner released.
struct Joining {
    conn: u64,
    id: Option<u64>,
    channel: usize,
    since: Option<Since>,
    recent: u32,
    /// The generation its interest was confirmed in, once it was.
    generation: Option<u64>,
}

/// A catch-up read made after a reconnect, applied later.
struct CatchingUp {
    channel: usize,
    generation: u64,
    base: CatchUpBase,
    read: CatchUp<Item>,
}

struct Node {
    alive: bool,
    link_up: bool,
    generation: u64,
    channels: BTreeMap<usize, NodeChannel>,
    inbox: VecDeque<Envelope>,
    joining: VecDeque<Joining>,
    catching_up: VecDeque<CatchingUp>,
}

impl Node {
    fn new() -> Self {
        Self {
            alive: true,
            link_up: true,
            generation: 1,
            channels: BTreeMap::new(),
            inbox: VecDeque::new(),
            joining: VecDeque::new(),
            catching_up: VecDeque::new(),
        }
    }

    /// Whether the store sends this node the channel's messages now.
    fn listens(&self, channel: usize) -> bool {
        self.alive
            && self.link_up
            && self
                .channels
                .get(&channel)
                .is_some_and(|c| c.subscribed == self.generation)
    }
}

/// A client's connection to a node: frames in flight both ways.
struct Conn {
    node: usize,
    id: u64,
    to_client: VecDeque<ServerMessage>,
    to_node: VecDeque<Request>,
    /// The channels the node has it subscribed to (or joining).
    subscribed: BTreeSet<usize>,
    /// Per channel, where the fan-out's pushes stand: (epoch number, offset).
    told: HashMap<usize, (u64, u64)>,
}

struct Client {
    subs: Subscriptions,
    conn: Option<Conn>,
    /// What the application saw: (channel, Some(seq) or None for a gap).
    log: Vec<(usize, Option<u64>)>,
}

/// How often a schedule reached the paths that matter (to check that the
/// schedules do reach them).
#[derive(Default, Debug, Clone, Copy)]
struct Seen {
    recoveries: u64,
    gap_pushes: u64,
    gaps: u64,
    catch_up_frames: u64,
    epoch_changes: u64,
    joiners_across_reconnects: u64,
    lost_envelopes: u64,
}

struct World {
    rng: Rng,
    seen: Seen,
    store: Vec<StoreChannel>,
    limits: HistoryLimits,
    epochs: u64,
    nodes: Vec<Node>,
    clients: Vec<Client>,
    next_conn: u64,
    seq: u64,
    /// seq → (epoch number, offset).
    published: HashMap<u64, (u64, u64)>,
    /// Whether messages may be lost for good: history bounded, truncated or
    /// lost.
    lossy: bool,
}

fn epoch_number(epoch: &str) -> u64 {
    epoch[1..].parse().expect("epochs are e<n>")
}

fn publication(item: &Item) -> Publication {
    Publication {
        channel: CHANNELS[item.channel].into(),
        offset: item.offset,
        time: item.seq,
        from: ClientInfo {
            client: "p".into(),
            user: String::new(),
        },
        data: Data::Binary(Bytes::copy_from_slice(&item.seq.to_be_bytes())),
    }
}

fn seq_of(publication: &Publication) -> u64 {
    let bytes = publication.data.as_binary().expect("binary data");
    u64::from_be_bytes(bytes[..].try_into().expect("8 bytes"))
}

fn channel_index(name: &str) -> usize {
    CHANNELS.iter().position(|&c| c == name).expect("known")
}

/// Queues a fan-out's push to the connection it names, checking the
/// fan-out's own promise on the way: a message follows the last one it
/// pushed (or the position the subscriber was released at) by one offset
/// in the same epoch, or comes after a gap push naming where it follows.
fn push_to(
    conns: &mut HashMap<u64, &mut Conn>,
    published: &HashMap<u64, (u64, u64)>,
    channel: usize,
    to: &ConnId,
    push: Push<'_, Item>,
) {
    let Some(conn) = conns.get_mut(&to.0) else {
        panic!("a push to connection {} that the node does not hold", to.0)
    };
    let told = conn
        .told
        .get_mut(&channel)
        .expect("pushes only after a release");
    conn.to_client.push_back(match push {
        Push::Frame(item) => {
            let (epoch, offset) = published[&item.seq];
            assert_eq!(
                (epoch, offset),
                (told.0, told.1 + 1),
                "the fan-out pushed offset {offset} of epoch {epoch} after {told:?} without a gap"
            );
            *told = (epoch, offset);
            ServerMessage::Message(publication(item))
        }
        Push::Gap { epoch, offset } => {
            *told = (epoch_number(epoch), offset);
            ServerMessage::Gap {
                channel: CHANNELS[channel].into(),
                epoch: epoch.into(),
                offset,
            }
        }
    });
}

impl World {
    /// A world whose store keeps everything unless `lossy`, where clients
    /// then start from the first message; otherwise from the `recent` latest.
    fn new(seed: u64) -> Self {
        let mut rng = Rng(seed);
        let lossy = rng.chance(50);
        let size = if lossy { 1 + rng.below(8) } else { usize::MAX };
        let recent = rng.below(4) as u32;
        let clients = (0..CLIENTS)
            .map(|_| {
                let mut subs = Subscriptions::new();
                for (i, name) in CHANNELS.iter().enumerate() {
                    let since = (!lossy).then(|| Since {
                        epoch: format!("e{}", i + 1),
                        offset: 0,
                    });
                    subs.subscribe_with(name, SubscribeOptions { recent, since })
                        .expect("valid names");
                }
                Client {
                    subs,
                    conn: None,
                    log: Vec::new(),
                }
            })
            .collect();
        Self {
            rng,
            seen: Seen::default(),
            store: CHANNELS
                .iter()
                .enumerate()
                .map(|(i, _)| StoreChannel {
                    log: ChannelLog::new(format!("e{}", i + 1)),
                })
                .collect(),
            limits: HistoryLimits {
                size,
                bytes: usize::MAX,
                ttl_ms: u64::MAX,
            },
            epochs: CHANNELS.len() as u64,
            nodes: (0..NODES).map(|_| Node::new()).collect(),
            clients,
            next_conn: 1,
            seq: 0,
            published: HashMap::new(),
            lossy,
        }
    }

    /// The connections on `node`, by id.
    fn conns_of(clients: &mut [Client], node: usize) -> HashMap<u64, &mut Conn> {
        clients
            .iter_mut()
            .filter_map(|c| c.conn.as_mut())
            .filter(|c| c.node == node)
            .map(|c| (c.id, c))
            .collect()
    }

    // ---- the store ---------------------------------------------------------

    fn publish(&mut self, channel: usize) {
        self.seq += 1;
        let seq = self.seq;
        let store = &mut self.store[channel];
        let Appended::New { frame: item, .. } = store.log.append(None, 0, &self.limits, |offset| {
            (
                Item {
                    channel,
                    offset,
                    seq,
                },
                1,
            )
        }) else {
            unreachable!("no idempotency key")
        };
        let epoch = store.log.epoch().to_owned();
        self.published
            .insert(seq, (epoch_number(&epoch), item.offset));
        for node in &mut self.nodes {
            if node.listens(channel) {
                node.inbox
                    .push_back((node.generation, epoch.clone(), item.clone()));
            }
        }
    }

    /// The store loses a channel's data: a new epoch from offset 0.
    fn lose_history(&mut self, channel: usize) {
        self.epochs += 1;
        self.store[channel].log = ChannelLog::new(format!("e{}", self.epochs));
        self.lossy = true;
        self.seen.epoch_changes += 1;
    }

    fn truncate(&mut self, channel: usize, keep: usize) {
        let limits = HistoryLimits {
            size: keep,
            ..self.limits
        };
        self.store[channel].log.prune(&limits, 0);
        self.lossy = true;
    }

    // ---- nodes -------------------------------------------------------------

    fn kill_node(&mut self, n: usize) {
        if !self.nodes[n].alive {
            return;
        }
        for client in &mut self.clients {
            if client.conn.as_ref().is_some_and(|c| c.node == n) {
                client.conn = None;
                client.subs.on_disconnected();
            }
        }
        self.nodes[n] = Node::new();
        self.nodes[n].alive = false;
    }

    fn revive_node(&mut self, n: usize) {
        if !self.nodes[n].alive {
            self.nodes[n] = Node::new();
        }
    }

    fn cut_link(&mut self, n: usize) {
        let node = &mut self.nodes[n];
        if node.alive && node.link_up {
            node.link_up = false;
            node.inbox.clear();
            node.catching_up.clear();
        }
    }

    /// The link comes back: a new generation, every channel subscribed
    /// again, and its catch-up read made now and applied later.
    fn restore_link(&mut self, n: usize) {
        if !self.nodes[n].alive || self.nodes[n].link_up {
            return;
        }
        let node = &mut self.nodes[n];
        node.link_up = true;
        node.generation += 1;
        let generation = node.generation;
        let mut reads = Vec::new();
        for (&channel, state) in &mut node.channels {
            if state.fanout.is_empty() {
                continue;
            }
            state.subscribed = generation;
            if let Some(base) = state.fanout.catch_up_base() {
                reads.push((channel, base));
            }
        }
        for (channel, base) in reads {
            let read = self.store[channel].log.read_after(base.from.as_ref());
            self.nodes[n].catching_up.push_back(CatchingUp {
                channel,
                generation,
                base,
                read,
            });
        }
    }

    /// The node handles one envelope from its pub/sub link.
    fn node_dispatch(&mut self, n: usize) -> bool {
        let Some((generation, epoch, item)) = self.nodes[n].inbox.pop_front() else {
            return false;
        };
        let mut conns = Self::conns_of(&mut self.clients, n);
        let published = &self.published;
        if let Some(state) = self.nodes[n].channels.get_mut(&item.channel) {
            state
                .fanout
                .message(generation, &epoch, item.offset, &item, |to, push| {
                    push_to(&mut conns, published, item.channel, to, push)
                });
        }
        true
    }

    /// The node applies one catch-up read.
    fn node_catch_up(&mut self, n: usize) -> bool {
        let Some(c) = self.nodes[n].catching_up.pop_front() else {
            return false;
        };
        self.seen.catch_up_frames += c.read.frames.len() as u64;
        let mut conns = Self::conns_of(&mut self.clients, n);
        let published = &self.published;
        if let Some(state) = self.nodes[n].channels.get_mut(&c.channel) {
            state
                .fanout
                .catch_up(c.generation, c.base.from.as_ref(), &c.read, |to, push| {
                    push_to(&mut conns, published, c.channel, to, push)
                });
        }
        true
    }

    /// A pub/sub envelope in flight to the node is lost (a hiccup the link
    /// did not notice).
    fn lose(&mut self, n: usize) {
        let inbox = &mut self.nodes[n].inbox;
        if !inbox.is_empty() {
            let i = self.rng.below(inbox.len());
            inbox.remove(i);
            self.seen.lost_envelopes += 1;
        }
    }

    /// A pub/sub envelope the node already handled comes again, late.
    fn repeat(&mut self, n: usize, channel: usize) {
        let node = &self.nodes[n];
        if !node.listens(channel) {
            return;
        }
        let log = &self.store[channel].log;
        if log.last() == 0 {
            return;
        }
        let offset = 1 + self.rng.next() % log.last();
        let seq = self
            .published
            .iter()
            .find(|&(_, &(e, o))| e == epoch_number(log.epoch()) && o == offset)
            .map(|(&seq, _)| seq);
        if let Some(seq) = seq {
            let epoch = log.epoch().to_owned();
            let generation = node.generation;
            self.nodes[n].inbox.push_back((
                generation,
                epoch,
                Item {
                    channel,
                    offset,
                    seq,
                },
            ));
        }
    }

    /// The node handles one command of client `c`.
    fn node_command(&mut self, c: usize) -> bool {
        let Some(conn) = &mut self.clients[c].conn else {
            return false;
        };
        let Some(Request { id, command }) = conn.to_node.pop_front() else {
            return false;
        };
        if std::env::var_os("SIM_TRACE").is_some() {
            eprintln!("client {c} -> node {}: {id:?} {command:?}", conn.node);
        }
        let (n, conn_id) = (conn.node, conn.id);
        match command {
            Command::Subscribe {
                channel,
                since,
                recent,
                token: None,
            } => {
                let channel = channel_index(&channel);
                assert!(conn.subscribed.insert(channel), "subscribed twice");
                let node = &mut self.nodes[n];
                if !node.link_up {
                    conn.subscribed.remove(&channel);
                    conn.to_client.push_back(ServerMessage::Error {
                        id,
                        code: ErrorCode::Unavailable,
                        message: "redis is not connected".into(),
                    });
                    return true;
                }
                let state = node.channels.entry(channel).or_default();
                state.fanout.join(conn_id);
                node.joining.push_back(Joining {
                    conn: conn_id,
                    id,
                    channel,
                    since,
                    recent,
                    generation: None,
                });
            }
            Command::Unsubscribe { channel } => {
                let channel = channel_index(&channel);
                assert!(conn.subscribed.remove(&channel), "not subscribed");
                conn.told.remove(&channel);
                if let Some(state) = self.nodes[n].channels.get_mut(&channel) {
                    state.fanout.leave(conn_id);
                }
                self.nodes[n]
                    .joining
                    .retain(|j| j.conn != conn_id || j.channel != channel);
                conn.to_client.push_back(ServerMessage::Unsubscribed {
                    id,
                    channel: CHANNELS[channel].into(),
                    reason: None,
                });
            }
            other => panic!("unexpected command {other:?}"),
        }
        true
    }

    /// The node takes one subscription a step further: confirms its pub/sub
    /// interest, or reads the history, answers, replays and releases it.
    fn node_join(&mut self, n: usize) -> bool {
        let Some(mut j) = self.nodes[n].joining.pop_front() else {
            return false;
        };
        let mut conns = Self::conns_of(&mut self.clients, n);
        let Some(conn) = conns.get_mut(&j.conn) else {
            unreachable!("a joining connection is held")
        };
        let node = &mut self.nodes[n];
        let state = node.channels.get_mut(&j.channel).expect("joined");
        if !node.link_up {
            // SUBSCRIBE or the read failed with the link: an error, and the
            // joiner goes.
            state.fanout.leave(j.conn);
            conn.subscribed.remove(&j.channel);
            conn.to_client.push_back(ServerMessage::Error {
                id: j.id,
                code: ErrorCode::Unavailable,
                message: "redis is not connected".into(),
            });
            return true;
        }
        let Some(generation) = j.generation else {
            state.subscribed = node.generation;
            j.generation = Some(node.generation);
            node.joining.push_back(j);
            return true;
        };
        if generation != node.generation {
            self.seen.joiners_across_reconnects += 1;
        }
        let log = &mut self.store[j.channel].log;
        let (plan, replay) = log.subscribe(j.since.as_ref(), j.recent, 0, &self.limits);
        let replay: Vec<Item> = replay.cloned().collect();
        let (epoch, last) = (log.epoch().to_owned(), log.last());
        conn.to_client.push_back(ServerMessage::Subscribed {
            id: j.id,
            channel: CHANNELS[j.channel].into(),
            epoch: epoch.clone(),
            offset: last,
            recovered: plan.recovered,
            gap: plan.gap,
        });
        for item in &replay {
            conn.to_client
                .push_back(ServerMessage::Message(publication(item)));
        }
        conn.told.insert(j.channel, (epoch_number(&epoch), last));
        let channel = j.channel;
        let published = &self.published;
        state
            .fanout
            .release(ConnId(j.conn), generation, &epoch, last, |to, push| {
                push_to(&mut conns, published, channel, to, push)
            });
        true
    }

    // ---- clients -----------------------------------------------------------

    fn connect(&mut self, c: usize, n: usize) {
        if self.clients[c].conn.is_some() || !self.nodes[n].alive {
            return;
        }
        let id = self.next_conn;
        self.next_conn += 1;
        let client = &mut self.clients[c];
        let to_node = client.subs.on_connected().into();
        client.conn = Some(Conn {
            node: n,
            id,
            to_client: VecDeque::new(),
            to_node,
            subscribed: BTreeSet::new(),
            told: HashMap::new(),
        });
        self.flush(c);
    }

    fn disconnect(&mut self, c: usize) {
        let Some(conn) = self.clients[c].conn.take() else {
            return;
        };
        let node = &mut self.nodes[conn.node];
        for channel in conn.subscribed {
            if let Some(state) = node.channels.get_mut(&channel) {
                state.fanout.leave(conn.id);
            }
        }
        node.joining.retain(|j| j.conn != conn.id);
        self.clients[c].subs.on_disconnected();
    }

    fn flush(&mut self, c: usize) {
        let client = &mut self.clients[c];
        while let Some(request) = client.subs.poll_transmit() {
            client
                .conn
                .as_mut()
                .expect("requests only while connected")
                .to_node
                .push_back(request);
        }
    }

    /// Client `c` takes one message from its connection.
    fn deliver(&mut self, c: usize) -> bool {
        let client = &mut self.clients[c];
        let Some(message) = client.conn.as_mut().and_then(|c| c.to_client.pop_front()) else {
            return false;
        };
        if std::env::var_os("SIM_TRACE").is_some() {
            eprintln!("client {c} <- {message:?}");
        }
        // Through the real codec, as on the wire.
        let message = decode_server(encode_server(&message).as_frame()).expect("decodes");
        match &message {
            ServerMessage::Subscribed {
                recovered: true, ..
            } => self.seen.recoveries += 1,
            ServerMessage::Gap { .. } => self.seen.gap_pushes += 1,
            _ => {}
        }
        for event in client.subs.handle(message) {
            match event {
                Event::Message(publication) => {
                    let seq = seq_of(&publication);
                    assert_eq!(
                        self.published[&seq].1, publication.offset,
                        "offset of {seq}"
                    );
                    client
                        .log
                        .push((channel_index(&publication.channel), Some(seq)));
                }
                Event::Gap { channel } => {
                    self.seen.gaps += 1;
                    client.log.push((channel_index(&channel), None))
                }
                Event::Subscribed { .. } => {}
                Event::SubscribeFailed { channel, .. } => {
                    // The application tries again.
                    client
                        .subs
                        .subscribe_with(
                            &channel,
                            SubscribeOptions {
                                recent: 0,
                                since: None,
                            },
                        )
                        .expect("valid");
                }
                Event::Unsubscribed { channel, .. } => {
                    panic!("{channel}: the hub revokes nothing here")
                }
                Event::Other(other) => {
                    assert!(
                        matches!(other, ServerMessage::Unsubscribed { .. }),
                        "unexpected {other:?}"
                    );
                }
            }
        }
        self.flush(c);
        true
    }

    // ---- schedules ---------------------------------------------------------

    /// One random step.
    fn step(&mut self, lossy: bool) {
        let r = self.rng.below(100);
        let c = self.rng.below(CLIENTS);
        let n = self.rng.below(NODES);
        let ch = self.rng.below(CHANNELS.len());
        match r {
            0..=19 => self.publish(ch),
            20..=39 => {
                for _ in 0..1 + self.rng.below(4) {
                    self.deliver(c);
                }
            }
            40..=51 => {
                self.node_command(c);
            }
            52..=59 => {
                self.node_join(n);
            }
            60..=71 => {
                for _ in 0..1 + self.rng.below(4) {
                    self.node_dispatch(n);
                }
            }
            72..=75 => {
                self.node_catch_up(n);
            }
            76..=81 => self.connect(c, n),
            82..=83 => self.disconnect(c),
            84..=86 => self.cut_link(n),
            87..=90 => self.restore_link(n),
            91..=92 => self.kill_node(n),
            93..=94 => self.revive_node(n),
            95 => self.repeat(n, ch),
            98 => self.lose(n),
            96 if lossy => self.lose_history(ch),
            97 if lossy => {
                let keep = self.rng.below(3);
                self.truncate(ch, keep)
            }
            _ => {}
        }
    }

    /// Every node and link up, every client connected, everything in
    /// flight handled.
    fn settle(&mut self) {
        for n in 0..NODES {
            self.revive_node(n);
            self.restore_link(n);
        }
        for c in 0..CLIENTS {
            if self.clients[c].conn.is_none() {
                self.connect(c, c % NODES);
            }
        }
        for _ in 0..100_000 {
            let mut busy = false;
            for n in 0..NODES {
                busy |= self.node_catch_up(n);
                busy |= self.node_dispatch(n);
                busy |= self.node_join(n);
            }
            for c in 0..CLIENTS {
                busy |= self.node_command(c);
                busy |= self.deliver(c);
            }
            if !busy {
                return;
            }
        }
        panic!("did not settle");
    }

    fn finish(&mut self) {
        self.settle();
        for ch in 0..CHANNELS.len() {
            self.publish(ch);
        }
        self.settle();
    }

    /// The contract, for every client and channel.
    fn check(&self) {
        for (c, client) in self.clients.iter().enumerate() {
            for (ch, name) in CHANNELS.iter().enumerate() {
                let mut last: Option<(u64, u64)> = None;
                let mut gap_since_last = false;
                let mut seen = HashSet::new();
                let mut gaps = 0;
                for (channel, event) in &client.log {
                    if *channel != ch {
                        continue;
                    }
                    let Some(seq) = event else {
                        gap_since_last = true;
                        gaps += 1;
                        continue;
                    };
                    assert!(seen.insert(*seq), "client {c}, {name}: seq {seq} twice");
                    let (epoch, offset) = self.published[seq];
                    if let Some((last_epoch, last_offset)) = last {
                        if epoch == last_epoch {
                            assert!(
                                offset > last_offset,
                                "client {c}, {name}: offset {offset} after {last_offset}"
                            );
                            assert!(
                                offset == last_offset + 1 || gap_since_last,
                                "client {c}, {name}: {}..{offset} of epoch {epoch} missed without a gap",
                                last_offset + 1
                            );
                        } else {
                            assert!(
                                epoch > last_epoch,
                                "client {c}, {name}: back to epoch {epoch}"
                            );
                            assert!(
                                gap_since_last,
                                "client {c}, {name}: epoch {last_epoch} to {epoch} without a gap"
                            );
                        }
                    }
                    last = Some((epoch, offset));
                    gap_since_last = false;
                }
                let log = &self.store[ch].log;
                let current = (epoch_number(log.epoch()), log.last());
                if !gap_since_last {
                    assert_eq!(last, Some(current), "client {c}, {name}: not up to date");
                }
                let position = client.subs.position(name).expect("a position");
                assert_eq!(
                    (position.epoch.as_str(), position.offset),
                    (log.epoch(), log.last()),
                    "client {c}, {name}: position"
                );
                if !self.lossy {
                    // History as long as the run, and every client started
                    // from the first message: every message, no gap.
                    assert_eq!(gaps, 0, "client {c}, {name}: a gap without a loss");
                    assert_eq!(
                        seen.len() as u64,
                        log.last(),
                        "client {c}, {name}: not every message"
                    );
                }
            }
        }
    }
}

fn run(seed: u64) -> Seen {
    let mut world = World::new(seed);
    let lossy = world.limits.size != usize::MAX;
    let steps = 50 + world.rng.below(250);
    for _ in 0..steps {
        world.step(lossy);
    }
    world.finish();
    world.check();
    world.seen
}

#[test]
fn the_cluster_never_loses_a_message_silently() {
    let schedules: u64 = std::env::var("SIM_SCHEDULES")
        .ok()
        .map_or(10_000, |s| s.parse().expect("SIM_SCHEDULES is a number"));
    let seeds: Vec<u64> = match std::env::var("SIM_SEED") {
        Ok(seed) => vec![seed.parse().expect("SIM_SEED is a number")],
        Err(_) => {
            // A fresh base per run, printed, so every CI run tries new
            // schedules and any failure can be replayed.
            let base = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("after 1970")
                .as_nanos() as u64;
            (0..schedules).map(|i| base.wrapping_add(i)).collect()
        }
    };
    for seed in seeds {
        let outcome = std::panic::catch_unwind(|| {
            run(seed);
        });
        if let Err(panic) = outcome {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            panic!("schedule failed: {message}\n  replay it with SIM_SEED={seed}");
        }
    }
}

/// The schedules reach every path the contract depends on: recoveries, gap
/// pushes and reported gaps, catch-up reads with messages, new epochs,
/// joiners whose read straddles a reconnect, lost envelopes.
#[test]
fn the_schedules_reach_every_path() {
    let mut total = Seen::default();
    for seed in 0..1_000 {
        let seen = run(seed);
        total.recoveries += seen.recoveries;
        total.gap_pushes += seen.gap_pushes;
        total.gaps += seen.gaps;
        total.catch_up_frames += seen.catch_up_frames;
        total.epoch_changes += seen.epoch_changes;
        total.joiners_across_reconnects += seen.joiners_across_reconnects;
        total.lost_envelopes += seen.lost_envelopes;
    }
    eprintln!("{total:?}");
    let Seen {
        recoveries,
        gap_pushes,
        gaps,
        catch_up_frames,
        epoch_changes,
        joiners_across_reconnects,
        lost_envelopes,
    } = total;
    for (what, count) in [
        ("recoveries", recoveries),
        ("gap pushes", gap_pushes),
        ("gaps", gaps),
        ("catch-up frames", catch_up_frames),
        ("epoch changes", epoch_changes),
        ("joiners across reconnects", joiners_across_reconnects),
        ("lost envelopes", lost_envelopes),
    ] {
        assert!(count >= 20, "only {count} {what} in 1,000 schedules");
    }
}
