//! A node's delivery of one channel to its local subscribers, when messages
//! reach the node from elsewhere (a broker's pub/sub) and may come late,
//! twice, out of order or not at all.
//!
//! [`Fanout`] is the sans-I/O rule behind "skip what you have seen, announce
//! a gap on a jump": for every local subscriber it remembers the epoch and
//! the last offset it was given, and decides for each message that arrives
//! whether that subscriber gets it, skips it, or first gets a `gap` push. A
//! subscriber that is still reading history (a *joiner*) has what arrives
//! buffered, tagged with the pub/sub generation it arrived in, and released
//! after its read, skipping what the read covered. After the node's link to
//! the broker comes back, [`Fanout::catch_up`] applies what the history says
//! was missed.
//!
//! The driver owns the subscribers (`S`, anything with an id), the frames
//! (`F`, cloned once per recipient: make it a shared handle) and the I/O: it
//! passes in what arrives and receives each push through a closure, in the
//! order it must be queued.
//!
//! # Invariants
//!
//! For each live subscriber, in the order pushed:
//! - a message at or below its position in the same epoch is never pushed
//!   (no duplicate);
//! - a message more than one past its position, or of another epoch, is
//!   preceded by a `gap` push naming the message's epoch and the offset
//!   before it (no silent loss, and no message of an epoch the subscriber
//!   was not told of);
//! - its position only moves to what it was pushed.
//!
//! A joiner misses nothing that arrived from the generation its read was
//! made in on, and gets nothing twice that its read covered; more than
//! [`MAX_BUFFERED`] buffered pushes become one gap.

use std::sync::Arc;

/// Pushes buffered per joining subscriber at most; beyond, a gap.
pub const MAX_BUFFERED: usize = 65_536;

/// A local subscriber as the fan-out sees it: something with an id unique
/// among the channel's subscribers on this node.
pub trait Recipient {
    /// Its id.
    fn id(&self) -> u64;
}

/// What a subscriber is to be sent, in order.
#[derive(Debug, PartialEq, Eq)]
pub enum Push<'a, F> {
    /// A message (or an event: join, leave, signal) frame.
    Frame(&'a F),
    /// A `gap` push: messages of the channel before `offset + 1` of `epoch`
    /// may have been lost.
    Gap {
        /// The epoch of what follows.
        epoch: &'a str,
        /// The offset before what follows.
        offset: u64,
    },
}

/// A subscriber receiving live messages, with its position.
#[derive(Debug)]
struct Live<S> {
    sub: S,
    /// The epoch of the last message it was given (or told of).
    epoch: Arc<str>,
    /// The last offset it was given in `epoch`.
    last: u64,
}

/// A subscriber between registration and the end of its history read.
#[derive(Debug)]
struct Joiner<F> {
    id: u64,
    buffer: Vec<Buffered<F>>,
    /// The buffer overflowed: what was dropped is reported as a gap.
    lost: bool,
}

/// What arrived for a joiner, with the pub/sub generation it arrived in.
#[derive(Debug)]
enum Buffered<F> {
    Message {
        generation: u64,
        epoch: Arc<str>,
        offset: u64,
        frame: F,
    },
    Event {
        generation: u64,
        frame: F,
        /// The subscriber the event is about (its own join is not sent to it).
        about: Option<u64>,
    },
    Gap {
        generation: u64,
        epoch: Arc<str>,
        offset: u64,
    },
}

impl<F> Buffered<F> {
    fn generation(&self) -> u64 {
        match self {
            Self::Message { generation, .. }
            | Self::Event { generation, .. }
            | Self::Gap { generation, .. } => *generation,
        }
    }
}

/// Whether two epochs are the same: most often the same shared string.
fn same_epoch(a: &Arc<str>, b: &Arc<str>) -> bool {
    Arc::ptr_eq(a, b) || a == b
}

impl<F> Joiner<F> {
    fn buffer(&mut self, buffered: Buffered<F>) {
        if self.buffer.len() < MAX_BUFFERED {
            self.buffer.push(buffered);
        } else {
            self.lost = true;
        }
    }
}

/// Where the node's catch-up read of a channel starts (see
/// [`Fanout::catch_up_base`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CatchUpBase {
    /// The epoch and lowest position of the live subscribers in the first
    /// live subscriber's epoch, or what the node last saw when only joiners
    /// wait; `None` when nothing is known.
    pub from: Option<(Arc<str>, u64)>,
    /// The highest such position (the read may stop short of nothing above it).
    pub high: u64,
}

/// What the history held after a [`CatchUpBase`], for [`Fanout::catch_up`].
#[derive(Debug)]
pub struct CatchUp<F> {
    /// The channel's current epoch.
    pub epoch: String,
    /// The oldest offset kept (`last + 1` when none).
    pub first: u64,
    /// The channel's latest offset.
    pub last: u64,
    /// The messages read, in increasing offset order.
    pub frames: Vec<(u64, F)>,
}

/// One channel's local subscribers and their positions (see the module
/// docs).
#[derive(Debug)]
pub struct Fanout<S, F> {
    live: Vec<Live<S>>,
    joining: Vec<Joiner<F>>,
    /// The epoch and offset of the last message that arrived.
    seen: Option<(Arc<str>, u64)>,
    /// The highest offset that arrived in the epoch that arrived last.
    high: Option<(Arc<str>, u64)>,
}

impl<S, F> Default for Fanout<S, F> {
    fn default() -> Self {
        Self {
            live: Vec::new(),
            joining: Vec::new(),
            seen: None,
            high: None,
        }
    }
}

impl<S: Recipient, F: Clone> Fanout<S, F> {
    /// No subscriber.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether no subscriber is live or joining.
    pub fn is_empty(&self) -> bool {
        self.live.is_empty() && self.joining.is_empty()
    }

    /// The live subscribers.
    pub fn live(&self) -> impl Iterator<Item = &S> {
        self.live.iter().map(|l| &l.sub)
    }

    /// How many subscribers are joining.
    pub fn joining(&self) -> usize {
        self.joining.len()
    }

    /// The epoch and offset of the last message that arrived, if any.
    pub fn seen(&self) -> Option<(&str, u64)> {
        self.seen.as_ref().map(|(e, o)| (&**e, *o))
    }

    /// The position this node can vouch the channel reached: the highest
    /// offset that arrived (in a message, a subscriber's history read or a
    /// catch-up read) in the epoch that arrived last. The channel's store
    /// can never legitimately be found behind it in that epoch: if it is,
    /// it lost acknowledged writes (see [`crate::log::behind`]).
    pub fn check(&self) -> Option<(&str, u64)> {
        self.high.as_ref().map(|(e, o)| (&**e, *o))
    }

    /// Takes note that the channel reached `offset` of `epoch`.
    fn observe(&mut self, epoch: &Arc<str>, offset: u64) {
        match &mut self.high {
            Some((high, at)) if same_epoch(high, epoch) => *at = (*at).max(offset),
            _ => self.high = Some((epoch.clone(), offset)),
        }
    }

    /// The epoch as a shared string, reusing the one last seen.
    fn intern(&self, epoch: &str) -> Arc<str> {
        match &self.seen {
            Some((seen, _)) if &**seen == epoch => seen.clone(),
            _ => epoch.into(),
        }
    }

    /// Registers subscriber `id` as joining: what arrives from now on is
    /// buffered for it until [`Fanout::release`].
    pub fn join(&mut self, id: u64) {
        self.joining.push(Joiner {
            id,
            buffer: Vec::new(),
            lost: false,
        });
    }

    /// Removes subscriber `id`, live or joining; returns whether it was live.
    pub fn leave(&mut self, id: u64) -> bool {
        let before = self.live.len();
        self.live.retain(|l| l.sub.id() != id);
        self.joining.retain(|j| j.id != id);
        if self.live.is_empty() && self.live.capacity() > 4 {
            self.live = Vec::new();
        }
        self.live.len() != before
    }

    /// A message at `offset` of `epoch` arrived in pub/sub `generation`:
    /// pushes it (after a gap where needed) to each live subscriber that has
    /// not had it, and buffers it for the joiners. Returns how many live
    /// subscribers it was pushed to.
    pub fn message(
        &mut self,
        generation: u64,
        epoch: &str,
        offset: u64,
        frame: &F,
        mut out: impl FnMut(&S, Push<'_, F>),
    ) -> usize {
        let epoch = self.intern(epoch);
        self.seen = Some((epoch.clone(), offset));
        self.observe(&epoch, offset);
        let mut pushed = 0;
        for live in &mut self.live {
            if same_epoch(&live.epoch, &epoch) {
                if offset <= live.last {
                    continue;
                }
                if offset > live.last + 1 {
                    out(
                        &live.sub,
                        Push::Gap {
                            epoch: &epoch,
                            offset: offset - 1,
                        },
                    );
                }
            } else {
                out(
                    &live.sub,
                    Push::Gap {
                        epoch: &epoch,
                        offset: offset - 1,
                    },
                );
                live.epoch = epoch.clone();
            }
            live.last = offset;
            out(&live.sub, Push::Frame(frame));
            pushed += 1;
        }
        for joiner in &mut self.joining {
            joiner.buffer(Buffered::Message {
                generation,
                epoch: epoch.clone(),
                offset,
                frame: frame.clone(),
            });
        }
        pushed
    }

    /// An event (join, leave) about subscriber `about` (if local) arrived in
    /// `generation`: pushed to every live subscriber but `about`, buffered
    /// for the joiners.
    pub fn event(
        &mut self,
        generation: u64,
        frame: &F,
        about: Option<u64>,
        mut out: impl FnMut(&S, Push<'_, F>),
    ) {
        for live in &self.live {
            if Some(live.sub.id()) != about {
                out(&live.sub, Push::Frame(frame));
            }
        }
        for joiner in &mut self.joining {
            joiner.buffer(Buffered::Event {
                generation,
                frame: frame.clone(),
                about,
            });
        }
    }

    /// An ephemeral signal from `from` (if local): pushed to every live
    /// subscriber but the sender; joiners do not get it.
    pub fn signal(&self, frame: &F, from: Option<u64>, mut out: impl FnMut(&S, Push<'_, F>)) {
        for live in &self.live {
            if Some(live.sub.id()) != from {
                out(&live.sub, Push::Frame(frame));
            }
        }
    }

    /// Joiner `sub`'s history read, made in pub/sub `generation`, found the
    /// channel at `last` of `epoch` (and its replay was queued): pushes what
    /// was buffered for it since, skipping what the read covered, and makes
    /// it live. Returns `false` (and drops `sub`) if it was not joining (it
    /// left meanwhile).
    pub fn release(
        &mut self,
        sub: S,
        generation: u64,
        epoch: &str,
        last: u64,
        mut out: impl FnMut(&S, Push<'_, F>),
    ) -> bool {
        let id = sub.id();
        let Some(at) = self.joining.iter().position(|j| j.id == id) else {
            return false;
        };
        let joiner = self.joining.swap_remove(at);
        let mut epoch = self.intern(epoch);
        self.observe(&epoch, last);
        let mut last = last;
        for buffered in joiner.buffer {
            if buffered.generation() < generation {
                // Arrived on an older pub/sub connection, before the read.
                continue;
            }
            match buffered {
                Buffered::Message {
                    epoch: e,
                    offset,
                    frame,
                    ..
                } => {
                    if same_epoch(&e, &epoch) {
                        if offset <= last {
                            continue;
                        }
                        if offset > last + 1 {
                            out(
                                &sub,
                                Push::Gap {
                                    epoch: &e,
                                    offset: offset - 1,
                                },
                            );
                        }
                    } else {
                        out(
                            &sub,
                            Push::Gap {
                                epoch: &e,
                                offset: offset - 1,
                            },
                        );
                        epoch = e;
                    }
                    out(&sub, Push::Frame(&frame));
                    last = offset;
                }
                Buffered::Event { frame, about, .. } => {
                    if about != Some(id) {
                        out(&sub, Push::Frame(&frame));
                    }
                }
                Buffered::Gap {
                    epoch: e, offset, ..
                } => {
                    if !(same_epoch(&e, &epoch) && offset <= last) {
                        out(&sub, Push::Gap { epoch: &e, offset });
                        epoch = e;
                        last = offset;
                    }
                }
            }
        }
        if joiner.lost {
            out(
                &sub,
                Push::Gap {
                    epoch: &epoch,
                    offset: last,
                },
            );
        }
        self.live.push(Live { sub, epoch, last });
        true
    }

    /// Where the catch-up read after a reconnect should start, or `None`
    /// when no subscriber waits.
    pub fn catch_up_base(&self) -> Option<CatchUpBase> {
        if let Some(first) = self.live.first() {
            let epoch = first.epoch.clone();
            let same = self.live.iter().filter(|l| same_epoch(&l.epoch, &epoch));
            let low = same.clone().map(|l| l.last).min().unwrap_or(0);
            let high = same.map(|l| l.last).max().unwrap_or(0);
            Some(CatchUpBase {
                from: Some((epoch, low)),
                high,
            })
        } else if !self.joining.is_empty() {
            Some(CatchUpBase {
                from: self.seen.clone(),
                high: self.seen.as_ref().map_or(0, |s| s.1),
            })
        } else {
            None
        }
    }

    /// Applies the history read after `base` in pub/sub `generation` (the
    /// link came back): each live subscriber gets what it missed, or a gap
    /// and what the history still holds; joiners have the same buffered.
    /// Returns how many subscribers got a gap.
    pub fn catch_up(
        &mut self,
        generation: u64,
        base: Option<&(Arc<str>, u64)>,
        read: &CatchUp<F>,
        mut out: impl FnMut(&S, Push<'_, F>),
    ) -> usize {
        let frames = &read.frames;
        // Whether the frames continue a subscriber at `last` of `epoch`
        // without a hole up to the channel's last offset.
        let continues = |epoch: &str, last: u64| {
            epoch == read.epoch
                && last <= read.last
                && last + 1 >= read.first
                && frames.iter().filter(|(offset, _)| *offset > last).count() as u64
                    == read.last - last
        };
        // Otherwise: a gap, then everything kept if that is a whole run.
        let whole = read.last < read.first
            || (frames.first().map(|f| f.0) == Some(read.first)
                && frames.len() as u64 == read.last + 1 - read.first);
        let gap_at = if whole { read.first - 1 } else { read.last };
        let epoch = self.intern(&read.epoch);
        self.observe(&epoch, read.last);
        let mut gaps = 0usize;
        for live in &mut self.live {
            let from = if continues(&live.epoch, live.last) {
                live.last
            } else {
                out(
                    &live.sub,
                    Push::Gap {
                        epoch: &epoch,
                        offset: gap_at,
                    },
                );
                gaps += 1;
                gap_at
            };
            for (offset, frame) in frames {
                if *offset > from {
                    out(&live.sub, Push::Frame(frame));
                }
            }
            live.epoch = epoch.clone();
            live.last = read.last;
        }
        let joiners_continue = base.is_some_and(|(e, last)| continues(e, *last));
        let after = match base {
            Some((_, last)) if joiners_continue => *last,
            _ => gap_at,
        };
        for joiner in &mut self.joining {
            if !joiners_continue {
                joiner.buffer(Buffered::Gap {
                    generation,
                    epoch: epoch.clone(),
                    offset: gap_at,
                });
            }
            for (offset, frame) in frames {
                if *offset > after {
                    joiner.buffer(Buffered::Message {
                        generation,
                        epoch: epoch.clone(),
                        offset: *offset,
                        frame: frame.clone(),
                    });
                }
            }
        }
        self.seen = Some((epoch, read.last));
        gaps
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    struct Sub(u64);

    impl Recipient for Sub {
        fn id(&self) -> u64 {
            self.0
        }
    }

    /// What a push looks like in these tests: (subscriber, frame or gap).
    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Got {
        Frame(u64, &'static str),
        Gap(u64, String, u64),
    }

    fn frame(sub: u64, f: &'static str) -> Got {
        Got::Frame(sub, f)
    }

    fn gap(sub: u64, epoch: &str, offset: u64) -> Got {
        Got::Gap(sub, epoch.into(), offset)
    }

    fn record(log: &mut Vec<Got>) -> impl FnMut(&Sub, Push<'_, &'static str>) + '_ {
        |sub, push| {
            log.push(match push {
                Push::Frame(f) => Got::Frame(sub.0, f),
                Push::Gap { epoch, offset } => Got::Gap(sub.0, epoch.into(), offset),
            })
        }
    }

    /// Subscribers `ids`, live at `last` of epoch "e".
    fn live_at(ids: &[u64], last: u64) -> Fanout<Sub, &'static str> {
        let mut fanout = Fanout::new();
        for &id in ids {
            fanout.join(id);
            assert!(fanout.release(Sub(id), 1, "e", last, |_, _| panic!("nothing buffered")));
        }
        fanout
    }

    #[test]
    fn in_order_messages_reach_everyone_once() {
        let mut fanout = live_at(&[1, 2], 4);
        let mut log = Vec::new();
        assert_eq!(fanout.message(1, "e", 5, &"m5", record(&mut log)), 2);
        assert_eq!(fanout.message(1, "e", 5, &"m5", record(&mut log)), 0);
        assert_eq!(fanout.message(1, "e", 3, &"m3", record(&mut log)), 0);
        assert_eq!(fanout.message(1, "e", 6, &"m6", record(&mut log)), 2);
        assert_eq!(
            log,
            [
                frame(1, "m5"),
                frame(2, "m5"),
                frame(1, "m6"),
                frame(2, "m6")
            ]
        );
        assert_eq!(fanout.seen(), Some(("e", 6)));
    }

    #[test]
    fn a_jump_or_another_epoch_comes_after_a_gap_push() {
        let mut fanout = live_at(&[1], 4);
        let mut log = Vec::new();
        fanout.message(1, "e", 7, &"m7", record(&mut log));
        fanout.message(1, "f", 1, &"f1", record(&mut log));
        // Epoch "e" again (a late message): announced again, never passing
        // for "f"'s offset 3.
        fanout.message(1, "e", 3, &"e3", record(&mut log));
        assert_eq!(
            log,
            [
                gap(1, "e", 6),
                frame(1, "m7"),
                gap(1, "f", 0),
                frame(1, "f1"),
                gap(1, "e", 2),
                frame(1, "e3"),
            ]
        );
    }

    #[test]
    fn a_joiner_gets_what_arrived_after_its_read_and_nothing_it_read() {
        let mut fanout: Fanout<Sub, &'static str> = Fanout::new();
        fanout.join(1);
        let mut log = Vec::new();
        // Arrived before its SUBSCRIBE took effect (older generation).
        fanout.message(1, "e", 3, &"old", record(&mut log));
        fanout.message(2, "e", 4, &"m4", record(&mut log));
        fanout.event(2, &"join of 1", Some(1), record(&mut log));
        fanout.event(2, &"join of 9", Some(9), record(&mut log));
        fanout.message(2, "e", 5, &"m5", record(&mut log));
        fanout.message(2, "e", 7, &"m7", record(&mut log));
        assert!(log.is_empty(), "nothing live yet");
        // The read (generation 2) saw up to 4.
        assert!(fanout.release(Sub(1), 2, "e", 4, record(&mut log)));
        assert_eq!(
            log,
            [
                frame(1, "join of 9"),
                frame(1, "m5"),
                gap(1, "e", 6),
                frame(1, "m7")
            ]
        );
        // Live now, at 7.
        log.clear();
        fanout.message(2, "e", 8, &"m8", record(&mut log));
        assert_eq!(log, [frame(1, "m8")]);
        // Released twice (it left meanwhile): nothing.
        assert!(!fanout.release(Sub(1), 2, "e", 4, record(&mut log)));
    }

    #[test]
    fn a_joiner_whose_buffer_overflowed_gets_a_gap() {
        let mut fanout: Fanout<Sub, &'static str> = Fanout::new();
        fanout.join(1);
        for offset in 1..=MAX_BUFFERED as u64 + 1 {
            fanout.message(1, "e", offset, &"m", |_, _| panic!("nobody live"));
        }
        let mut log = Vec::new();
        fanout.release(Sub(1), 1, "e", MAX_BUFFERED as u64, record(&mut log));
        assert_eq!(log, [gap(1, "e", MAX_BUFFERED as u64)]);
    }

    #[test]
    fn events_and_signals_skip_whom_they_are_about() {
        let mut fanout = live_at(&[1, 2], 0);
        let mut log = Vec::new();
        fanout.event(1, &"leave of 1", Some(1), record(&mut log));
        fanout.signal(&"from 2", Some(2), record(&mut log));
        fanout.signal(&"from elsewhere", None, record(&mut log));
        assert_eq!(
            log,
            [
                frame(2, "leave of 1"),
                frame(1, "from 2"),
                frame(1, "from elsewhere"),
                frame(2, "from elsewhere")
            ]
        );
    }

    #[test]
    fn catch_up_delivers_what_was_missed_or_a_gap_then_what_is_kept() {
        // 1 is at 4, 2 at 2; the history keeps 3..=6.
        let mut fanout = live_at(&[1], 4);
        fanout.join(2);
        fanout.release(Sub(2), 1, "e", 2, |_, _| {});
        let base = fanout.catch_up_base().unwrap();
        assert_eq!(base.from, Some(("e".into(), 2)));
        assert_eq!(base.high, 4);
        let read = CatchUp {
            epoch: "e".into(),
            first: 3,
            last: 6,
            frames: vec![(3, "m3"), (4, "m4"), (5, "m5"), (6, "m6")],
        };
        let mut log = Vec::new();
        assert_eq!(
            fanout.catch_up(2, base.from.as_ref(), &read, record(&mut log)),
            0
        );
        assert_eq!(
            log,
            [
                frame(1, "m5"),
                frame(1, "m6"),
                frame(2, "m3"),
                frame(2, "m4"),
                frame(2, "m5"),
                frame(2, "m6")
            ]
        );
        // The history lost 7 and 8 (kept from 9): a gap, then what is kept.
        let read = CatchUp {
            epoch: "e".into(),
            first: 9,
            last: 10,
            frames: vec![(9, "m9"), (10, "m10")],
        };
        log.clear();
        assert_eq!(fanout.catch_up(3, None, &read, record(&mut log)), 2);
        assert_eq!(
            log,
            [
                gap(1, "e", 8),
                frame(1, "m9"),
                frame(1, "m10"),
                gap(2, "e", 8),
                frame(2, "m9"),
                frame(2, "m10")
            ]
        );
        // A new epoch whose read has a hole: a gap at its last offset.
        let read = CatchUp {
            epoch: "f".into(),
            first: 1,
            last: 3,
            frames: vec![(2, "f2"), (3, "f3")],
        };
        log.clear();
        fanout.catch_up(4, None, &read, record(&mut log));
        assert_eq!(log, [gap(1, "f", 3), gap(2, "f", 3)]);
        log.clear();
        fanout.message(4, "f", 4, &"f4", record(&mut log));
        assert_eq!(log, [frame(1, "f4"), frame(2, "f4")]);
    }

    #[test]
    fn joiners_during_a_catch_up_get_it_buffered() {
        let mut fanout: Fanout<Sub, &'static str> = Fanout::new();
        fanout.join(1);
        fanout.message(1, "e", 2, &"m2", |_, _| {});
        let base = fanout.catch_up_base().unwrap();
        assert_eq!(base.from, Some(("e".into(), 2)));
        let read = CatchUp {
            epoch: "e".into(),
            first: 1,
            last: 4,
            frames: vec![(1, "m1"), (2, "m2"), (3, "m3"), (4, "m4")],
        };
        fanout.catch_up(2, base.from.as_ref(), &read, |_, _| panic!("nobody live"));
        let mut log = Vec::new();
        // Its own read (generation 2) saw up to 3.
        fanout.release(Sub(1), 2, "e", 3, record(&mut log));
        assert_eq!(log, [frame(1, "m4")]);
    }

    #[test]
    fn the_check_is_the_highest_offset_of_the_latest_epoch() {
        let mut fanout: Fanout<Sub, &'static str> = Fanout::new();
        assert_eq!(fanout.check(), None);
        // A read, then messages, one of them late.
        fanout.join(1);
        fanout.release(Sub(1), 1, "e", 4, |_, _| {});
        assert_eq!(fanout.check(), Some(("e", 4)));
        fanout.message(1, "e", 6, &"m6", |_, _| {});
        fanout.message(1, "e", 5, &"m5", |_, _| {});
        assert_eq!(fanout.check(), Some(("e", 6)));
        // A joiner's read that found less does not lower it.
        fanout.join(2);
        fanout.release(Sub(2), 1, "e", 3, |_, _| {});
        assert_eq!(fanout.check(), Some(("e", 6)));
        // Another epoch starts over.
        fanout.message(1, "f", 1, &"f1", |_, _| {});
        assert_eq!(fanout.check(), Some(("f", 1)));
        let read = CatchUp {
            epoch: "f".into(),
            first: 1,
            last: 9,
            frames: Vec::new(),
        };
        fanout.catch_up(2, None, &read, |_, _| {});
        assert_eq!(fanout.check(), Some(("f", 9)));
        // What a store found at the check, or past it, is no regression;
        // behind it in the same epoch is.
        let check = fanout.check();
        assert!(!crate::log::behind(check, "f", 9));
        assert!(!crate::log::behind(check, "f", 12));
        assert!(!crate::log::behind(check, "g", 0));
        assert!(crate::log::behind(check, "f", 8));
    }

    #[test]
    fn leaving_forgets_a_subscriber() {
        let mut fanout = live_at(&[1, 2], 0);
        fanout.join(3);
        assert!(fanout.leave(1));
        assert!(!fanout.leave(3));
        assert!(!fanout.leave(1));
        assert_eq!(fanout.live().map(|s| s.0).collect::<Vec<_>>(), [2]);
        assert_eq!(fanout.joining(), 0);
        assert!(fanout.leave(2));
        assert!(fanout.is_empty());
        assert_eq!(fanout.catch_up_base(), None);
    }
}
