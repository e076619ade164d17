//! A channel's log where it is kept: offsets, the epoch, the bounded
//! history and idempotency keys.
//!
//! [`ChannelLog`] is what a broker that owns a channel's history (the
//! in-memory broker; Redis keeps the same rules in its scripts) does with a
//! publish and a subscribe: give the next offset, refuse a reused key, keep
//! the message within the history's bounds, and answer a subscription with
//! [`plan_recovery`] and the messages it replays. It does no I/O and reads
//! no clock: the driver passes `now` (milliseconds on a monotonic clock of
//! its choosing) and the epoch, and keeps frames (`F`) it can share.
//!
//! # Invariants
//!
//! - Offsets are given out in order, 1, 2, 3 … within an epoch, one per
//!   accepted publish; a duplicate gets none.
//! - History holds a contiguous run of the latest offsets: never more than
//!   [`HistoryLimits::size`] entries or [`HistoryLimits::bytes`] bytes, and,
//!   from the next call that passes `now`, none older than
//!   [`HistoryLimits::ttl_ms`]. Oldest entries go first (also when the
//!   driver drops them with [`ChannelLog::pop_oldest`], to keep a bound
//!   across channels), so a subscriber recovering from before what is kept
//!   is told of a gap.
//! - An idempotency key is remembered exactly as long as its message is in
//!   history.
//! - **Lost writes are never papered over.** A store can lose what it had
//!   acknowledged (Redis restarted from an older snapshot, a failover to a
//!   lagging replica) and come back in the same epoch with a lower offset.
//!   Whoever saw the channel further (a node: [`crate::fanout::Fanout::check`])
//!   vouches for that position with its next publish or read; a log
//!   [`behind`] it starts a new epoch ([`ChannelLog::restart_if_behind`])
//!   rather than hand out the same offsets again for other messages.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use crate::fanout::CatchUp;
use crate::message::Since;
use crate::recovery::{HistoryBounds, RecoveryPlan, plan_recovery};

/// How much history a channel keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HistoryLimits {
    /// Messages kept at most (0: none).
    pub size: usize,
    /// Bytes of messages kept at most (as the driver counts them).
    pub bytes: usize,
    /// How long a message is kept, in milliseconds.
    pub ttl_ms: u64,
}

/// Whether a channel found at `last` of `epoch` went back on `check`, a
/// position someone saw it reach (see [`crate::fanout::Fanout::check`]):
/// the same epoch, and behind. Then the store lost acknowledged writes, and
/// the offsets after `last` would name other messages than those already
/// delivered: the epoch must change. Another epoch, or no check, is no
/// regression (nothing known to compare with).
pub fn behind(check: Option<(&str, u64)>, epoch: &str, last: u64) -> bool {
    check.is_some_and(|(seen, at)| seen == epoch && last < at)
}

/// Where a history read (the server API's `history`) starts, given what is
/// kept (`bounds`): whether `since` is a gap (another epoch, ahead of the
/// channel, or, reading forward, messages after it no longer kept), and
/// the offset to read after (before, with `reverse`), `None` to read from
/// the oldest (the newest with `reverse`). A gap reads as if there were no
/// `since`. Both brokers follow it ([`ChannelLog::history`], and the Redis
/// broker over what its read script returns).
pub fn history_start(
    since: Option<&Since>,
    bounds: HistoryBounds<'_>,
    reverse: bool,
) -> (bool, Option<u64>) {
    let usable = since.filter(|s| s.epoch == bounds.epoch && s.offset <= bounds.last);
    let gap = since.is_some()
        && usable.is_none_or(|s| !reverse && s.offset.saturating_add(1) < bounds.first);
    (gap, if gap { None } else { usable.map(|s| s.offset) })
}

/// Whether `offset` is read by a history read from `start` (see
/// [`history_start`]).
pub fn history_reads(start: Option<u64>, reverse: bool, offset: u64) -> bool {
    match (start, reverse) {
        (None, _) => true,
        (Some(s), false) => offset > s,
        (Some(s), true) => offset < s,
    }
}

/// What became of a publish (see [`ChannelLog::append`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Appended<F> {
    /// A new message at `offset`: deliver `frame`.
    New {
        /// Its offset.
        offset: u64,
        /// The frame made for it.
        frame: F,
    },
    /// The key was used by the message at `offset`, still in history:
    /// nothing to deliver.
    Duplicate {
        /// The first message's offset.
        offset: u64,
    },
}

#[derive(Debug)]
struct Entry<F> {
    offset: u64,
    stored_ms: u64,
    size: usize,
    key: Option<Box<str>>,
    frame: F,
}

/// One channel's log (see the module docs).
#[derive(Debug)]
pub struct ChannelLog<F> {
    epoch: Arc<str>,
    /// The latest offset given out (0: none yet).
    last: u64,
    history: VecDeque<Entry<F>>,
    /// Bytes in `history`.
    bytes: usize,
    /// Idempotency keys of messages still in history, with their offsets.
    keys: HashMap<Box<str>, u64>,
}

impl<F: Clone> ChannelLog<F> {
    /// An empty log in `epoch` (a fresh one: see the broker's epochs).
    pub fn new(epoch: impl Into<Arc<str>>) -> Self {
        Self {
            epoch: epoch.into(),
            last: 0,
            history: VecDeque::new(),
            bytes: 0,
            keys: HashMap::new(),
        }
    }

    /// The epoch.
    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    /// The latest offset given out (0: none yet).
    pub fn last(&self) -> u64 {
        self.last
    }

    /// How many messages are kept.
    pub fn len(&self) -> usize {
        self.history.len()
    }

    /// Whether no message is kept.
    pub fn is_empty(&self) -> bool {
        self.history.is_empty()
    }

    /// Bytes of the messages kept.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// What is kept, as [`plan_recovery`] needs it.
    pub fn bounds(&self) -> HistoryBounds<'_> {
        HistoryBounds {
            epoch: &self.epoch,
            first: self.history.front().map_or(self.last + 1, |e| e.offset),
            last: self.last,
        }
    }

    /// If this log is [`behind`] `check`, starts it anew in epoch `fresh`
    /// (offset 0, empty history, no keys) and returns `true`: what comes
    /// next is announced as a gap, never passed off as what was seen.
    pub fn restart_if_behind(
        &mut self,
        check: Option<(&str, u64)>,
        fresh: impl Into<Arc<str>>,
    ) -> bool {
        if !behind(check, &self.epoch, self.last) {
            return false;
        }
        *self = Self::new(fresh);
        true
    }

    /// Drops what is beyond `limits` at `now_ms`, oldest first.
    pub fn prune(&mut self, limits: &HistoryLimits, now_ms: u64) {
        while let Some(front) = self.history.front() {
            let expired = now_ms.saturating_sub(front.stored_ms) > limits.ttl_ms;
            if !expired && self.history.len() <= limits.size && self.bytes <= limits.bytes {
                break;
            }
            self.pop_oldest();
        }
    }

    /// The oldest message kept: its offset and frame.
    pub fn oldest(&self) -> Option<(u64, &F)> {
        self.history.front().map(|e| (e.offset, &e.frame))
    }

    /// When the oldest message kept was stored (the `now_ms` it was
    /// appended at).
    pub fn oldest_time(&self) -> Option<u64> {
        self.history.front().map(|e| e.stored_ms)
    }

    /// Drops the oldest message kept (and its idempotency key), as a bound
    /// the driver keeps across channels asks; returns its size, `None` when
    /// nothing is kept. A subscriber recovering from before it is then told
    /// of a gap, as for any other bound.
    pub fn pop_oldest(&mut self) -> Option<usize> {
        let gone = self.history.pop_front()?;
        self.bytes -= gone.size;
        if let Some(key) = gone.key {
            self.keys.remove(&key);
        }
        Some(gone.size)
    }

    /// A publish with idempotency `key` (if any) at `now_ms`: a duplicate if
    /// the key is still remembered, else the next offset, for which `make`
    /// builds the frame and says its size in bytes; the frame is kept in
    /// history within `limits`.
    pub fn append(
        &mut self,
        key: Option<&str>,
        now_ms: u64,
        limits: &HistoryLimits,
        make: impl FnOnce(u64) -> (F, usize),
    ) -> Appended<F> {
        self.prune(limits, now_ms);
        if let Some(key) = key
            && let Some(&offset) = self.keys.get(key)
        {
            return Appended::Duplicate { offset };
        }
        self.last += 1;
        let offset = self.last;
        let (frame, size) = make(offset);
        if limits.size > 0 && size <= limits.bytes {
            let key: Option<Box<str>> = key.map(Into::into);
            if let Some(key) = &key {
                self.keys.insert(key.clone(), offset);
            }
            self.bytes += size;
            self.history.push_back(Entry {
                offset,
                stored_ms: now_ms,
                size,
                key,
                frame: frame.clone(),
            });
            self.prune(limits, now_ms);
        } else {
            // Too big to keep at all: what was kept before no longer leads
            // up to the latest offset, so it goes too.
            while !self.history.is_empty() {
                self.pop_oldest();
            }
        }
        Appended::New { offset, frame }
    }

    /// A subscription with `since` and `recent` at `now_ms`: the reply's plan,
    /// and the frames to send after `subscribed`, in order.
    pub fn subscribe<'a>(
        &'a mut self,
        since: Option<&Since>,
        recent: u32,
        now_ms: u64,
        limits: &HistoryLimits,
    ) -> (RecoveryPlan, impl Iterator<Item = &'a F> + use<'a, F>) {
        self.prune(limits, now_ms);
        let plan = plan_recovery(since, recent, self.bounds());
        let range = plan.replay.clone();
        let replay = self
            .history
            .iter()
            .filter(move |e| range.as_ref().is_some_and(|r| r.contains(&e.offset)))
            .map(|e| &e.frame);
        (plan, replay)
    }

    /// Drops every kept message and its idempotency key; the epoch and the
    /// offsets go on (the server API's `history_remove`). Returns the bytes
    /// dropped. A subscriber recovering from before the removal is then
    /// told of a gap ([`plan_recovery`] finds its position no longer
    /// kept), one at the latest offset recovers with nothing to replay, and
    /// live subscribers see nothing change.
    pub fn clear(&mut self) -> usize {
        self.history.clear();
        self.keys.clear();
        std::mem::take(&mut self.bytes)
    }

    /// A read of the history (the server API's `history`), pruned at
    /// `now_ms` first: up to `limit` kept messages after `since` (oldest
    /// first), or, with `reverse`, before it (newest first); without
    /// `since`, from the oldest (newest with `reverse`). The flag is a gap:
    /// `since` is of another epoch, or ahead of the channel, or (forward)
    /// messages after it are no longer kept; the messages are then read as
    /// if there were no `since`.
    pub fn history(
        &mut self,
        since: Option<&Since>,
        limit: usize,
        reverse: bool,
        now_ms: u64,
        limits: &HistoryLimits,
    ) -> (bool, Vec<(u64, &F)>) {
        self.prune(limits, now_ms);
        let (gap, start) = history_start(since, self.bounds(), reverse);
        let entries = self.history.iter().map(|e| (e.offset, &e.frame));
        let reads = |(offset, _): &(u64, &F)| history_reads(start, reverse, *offset);
        let read: Vec<(u64, &F)> = if reverse {
            entries.rev().filter(reads).take(limit).collect()
        } else {
            entries.filter(reads).take(limit).collect()
        };
        (gap, read)
    }

    /// What a node that lost its link needs to catch up from `from` (the
    /// epoch and offset its subscribers reached, see
    /// [`crate::fanout::Fanout::catch_up_base`]): every message kept after
    /// it when the history continues from there, else every message kept.
    pub fn read_after(&self, from: Option<&(Arc<str>, u64)>) -> CatchUp<F> {
        let bounds = self.bounds();
        let start = match from {
            Some((epoch, offset))
                if **epoch == *self.epoch && offset.saturating_add(1) >= bounds.first =>
            {
                offset.saturating_add(1)
            }
            _ => bounds.first,
        };
        CatchUp {
            epoch: self.epoch.to_string(),
            first: bounds.first,
            last: self.last,
            frames: self
                .history
                .iter()
                .filter(|e| e.offset >= start)
                .map(|e| (e.offset, e.frame.clone()))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: HistoryLimits = HistoryLimits {
        size: 3,
        bytes: 1000,
        ttl_ms: 10_000,
    };

    fn publish(log: &mut ChannelLog<u64>, key: Option<&str>, now: u64) -> Appended<u64> {
        log.append(key, now, &LIMITS, |offset| (offset * 10, 100))
    }

    fn offsets(read: &[(u64, &u64)]) -> Vec<u64> {
        read.iter().map(|(offset, _)| *offset).collect()
    }

    #[test]
    fn history_reads_forward_backward_and_reports_gaps() {
        let mut log = ChannelLog::new("e1");
        for _ in 0..5 {
            publish(&mut log, None, 0);
        }
        // Kept: 3, 4, 5 (size 3).
        let since = |epoch: &str, offset| Since {
            epoch: epoch.into(),
            offset,
        };
        let (gap, read) = log.history(None, 10, false, 0, &LIMITS);
        assert_eq!((gap, offsets(&read)), (false, vec![3, 4, 5]));
        let (gap, read) = log.history(None, 2, true, 0, &LIMITS);
        assert_eq!((gap, offsets(&read)), (false, vec![5, 4]));
        let (gap, read) = log.history(Some(&since("e1", 3)), 10, false, 0, &LIMITS);
        assert_eq!((gap, offsets(&read)), (false, vec![4, 5]));
        let (gap, read) = log.history(Some(&since("e1", 5)), 10, true, 0, &LIMITS);
        assert_eq!((gap, offsets(&read)), (false, vec![4, 3]));
        // Messages after 1 are no longer all kept; another epoch; ahead.
        for since in [since("e1", 1), since("e0", 3), since("e1", 6)] {
            let (gap, read) = log.history(Some(&since), 10, false, 0, &LIMITS);
            assert_eq!((gap, offsets(&read)), (true, vec![3, 4, 5]), "{since:?}");
        }
    }

    #[test]
    fn a_cleared_history_goes_on_and_recovering_from_before_it_is_a_gap() {
        let mut log = ChannelLog::new("e1");
        publish(&mut log, Some("k"), 0);
        publish(&mut log, None, 0);
        assert_eq!(log.clear(), 200);
        assert!(log.is_empty());
        assert_eq!((log.epoch(), log.last(), log.bytes()), ("e1", 2, 0));
        // From before the removal: a gap; from the latest offset: recovered.
        let at = |offset| Since {
            epoch: "e1".into(),
            offset,
        };
        let (plan, _) = log.subscribe(Some(&at(1)), 0, 0, &LIMITS);
        assert!(plan.gap && !plan.recovered);
        let (plan, _) = log.subscribe(Some(&at(2)), 0, 0, &LIMITS);
        assert!(plan.recovered && !plan.gap);
        // Offsets go on; the key was forgotten with its message.
        assert_eq!(
            publish(&mut log, Some("k"), 0),
            Appended::New {
                offset: 3,
                frame: 30
            }
        );
    }

    fn since(epoch: &str, offset: u64) -> Since {
        Since {
            epoch: epoch.into(),
            offset,
        }
    }

    fn replay(log: &mut ChannelLog<u64>, since: Option<&Since>, recent: u32) -> (bool, Vec<u64>) {
        let (plan, frames) = log.subscribe(since, recent, 0, &LIMITS);
        let frames = frames.copied().collect();
        (plan.recovered, frames)
    }

    #[test]
    fn offsets_follow_one_another_and_history_keeps_the_latest() {
        let mut log = ChannelLog::new("e");
        for offset in 1..=5 {
            assert_eq!(
                publish(&mut log, None, 0),
                Appended::New {
                    offset,
                    frame: offset * 10
                }
            );
        }
        assert_eq!((log.last(), log.len(), log.bytes()), (5, 3, 300));
        let bounds = log.bounds();
        assert_eq!((bounds.epoch, bounds.first, bounds.last), ("e", 3, 5));
        // Recovering from 2 (3 still kept): exactly 3..=5.
        assert_eq!(
            replay(&mut log, Some(&since("e", 2)), 0),
            (true, vec![30, 40, 50])
        );
        // From 1: 2 is gone, a gap, then `recent`.
        assert_eq!(
            replay(&mut log, Some(&since("e", 1)), 2),
            (false, vec![40, 50])
        );
        // Another epoch: a gap.
        assert_eq!(replay(&mut log, Some(&since("x", 5)), 0), (false, vec![]));
    }

    #[test]
    fn a_log_behind_what_was_seen_starts_a_new_epoch() {
        let mut log = ChannelLog::new("e");
        publish(&mut log, Some("k"), 0);
        for _ in 2..=10 {
            publish(&mut log, None, 0);
        }
        // Seen at 9 of "e": the log (at 9) is not behind, nor past it.
        assert!(!behind(Some(("e", 9)), "e", 9));
        assert!(!log.restart_if_behind(Some(("e", 9)), "f"));
        assert!(!log.restart_if_behind(Some(("e", 3)), "f"));
        // Another epoch, or nothing seen: nothing to compare with.
        assert!(!log.restart_if_behind(Some(("d", 50)), "f"));
        assert!(!log.restart_if_behind(None, "f"));
        assert_eq!((log.epoch(), log.last()), ("e", 10));
        // Someone saw 12 of "e": the log lost writes. A new epoch, empty,
        // so that offset 11 never names a second message.
        assert!(log.restart_if_behind(Some(("e", 12)), "f"));
        assert_eq!((log.epoch(), log.last(), log.len()), ("f", 0, 0));
        assert_eq!(
            publish(&mut log, Some("k"), 0),
            Appended::New {
                offset: 1,
                frame: 10
            }
        );
        assert_eq!(replay(&mut log, Some(&since("e", 12)), 0), (false, vec![]));
    }

    #[test]
    fn a_reused_key_is_a_duplicate_while_its_message_is_kept() {
        let mut log = ChannelLog::new("e");
        assert!(matches!(
            publish(&mut log, Some("k"), 0),
            Appended::New { offset: 1, .. }
        ));
        assert_eq!(
            publish(&mut log, Some("k"), 0),
            Appended::Duplicate { offset: 1 }
        );
        publish(&mut log, None, 0);
        publish(&mut log, None, 0);
        publish(&mut log, None, 0);
        // Offset 1 fell out of history: the key is forgotten with it.
        assert!(matches!(
            publish(&mut log, Some("k"), 0),
            Appended::New { offset: 5, .. }
        ));
    }

    #[test]
    fn history_goes_by_age_and_by_bytes() {
        let mut log = ChannelLog::new("e");
        publish(&mut log, Some("old"), 0);
        publish(&mut log, None, 5_000);
        log.prune(&LIMITS, 10_001);
        assert_eq!(log.bounds().first, 2);
        assert!(matches!(
            publish(&mut log, Some("old"), 10_001),
            Appended::New { .. }
        ));
        log.prune(&LIMITS, 100_000);
        assert!(log.is_empty());
        assert_eq!(log.bounds().first, log.last() + 1);
        // Bytes: 400 + 400 fit in 1000, a third pushes the first out.
        let mut log = ChannelLog::new("e");
        for _ in 0..3 {
            log.append(None, 0, &LIMITS, |o| (o, 400));
        }
        assert_eq!((log.len(), log.bytes(), log.bounds().first), (2, 800, 2));
        // A message larger than the budget is not kept, and what was kept
        // no longer leads to the latest offset.
        log.append(None, 0, &LIMITS, |o| (o, 1001));
        assert!(log.is_empty());
        assert_eq!(log.bytes(), 0);
        assert_eq!(replay(&mut log, Some(&since("e", 3)), 0), (false, vec![]));
        assert_eq!(replay(&mut log, Some(&since("e", 4)), 0), (true, vec![]));
    }

    #[test]
    fn a_catch_up_read_continues_from_the_base_or_gives_all_that_is_kept() {
        let mut log = ChannelLog::new("e");
        for _ in 0..5 {
            publish(&mut log, None, 0);
        }
        let offsets = |read: CatchUp<u64>| {
            (
                read.epoch,
                read.first,
                read.last,
                read.frames.iter().map(|f| f.0).collect::<Vec<_>>(),
            )
        };
        let e: Arc<str> = "e".into();
        assert_eq!(
            offsets(log.read_after(Some(&(e.clone(), 3)))),
            ("e".into(), 3, 5, vec![4, 5])
        );
        assert_eq!(
            offsets(log.read_after(Some(&(e.clone(), 5)))),
            ("e".into(), 3, 5, vec![])
        );
        // 2 is gone: cannot continue from 1.
        assert_eq!(
            offsets(log.read_after(Some(&(e, 1)))),
            ("e".into(), 3, 5, vec![3, 4, 5])
        );
        assert_eq!(
            offsets(log.read_after(Some(&("x".into(), 4)))),
            ("e".into(), 3, 5, vec![3, 4, 5])
        );
        assert_eq!(
            offsets(log.read_after(None)),
            ("e".into(), 3, 5, vec![3, 4, 5])
        );
    }

    #[test]
    fn popping_the_oldest_frees_its_bytes_and_key_and_makes_a_gap() {
        let mut log = ChannelLog::new("e");
        assert_eq!((log.oldest(), log.oldest_time()), (None, None));
        assert_eq!(log.pop_oldest(), None);
        log.append(Some("a"), 7, &LIMITS, |o| (o * 10, 100));
        log.append(None, 9, &LIMITS, |o| (o * 10, 250));
        assert_eq!((log.oldest(), log.oldest_time()), (Some((1, &10)), Some(7)));
        assert_eq!(log.pop_oldest(), Some(100));
        assert_eq!((log.len(), log.bytes(), log.bounds().first), (1, 250, 2));
        assert_eq!((log.oldest(), log.oldest_time()), (Some((2, &20)), Some(9)));
        // Its key is forgotten with it.
        assert!(matches!(
            log.append(Some("a"), 9, &LIMITS, |o| (o, 1)),
            Appended::New { offset: 3, .. }
        ));
        // Recovering from before what was dropped: a gap; from after: all.
        assert_eq!(replay(&mut log, Some(&since("e", 0)), 0), (false, vec![]));
        assert_eq!(
            replay(&mut log, Some(&since("e", 1)), 0),
            (true, vec![20, 3])
        );
        assert_eq!(log.pop_oldest(), Some(250));
        assert_eq!(log.pop_oldest(), Some(1));
        assert_eq!(
            (log.pop_oldest(), log.bytes(), log.bounds().first),
            (None, 0, 4)
        );
    }

    #[test]
    fn no_history_keeps_nothing_but_offsets() {
        let mut log = ChannelLog::new("e");
        let none = HistoryLimits { size: 0, ..LIMITS };
        log.append(Some("k"), 0, &none, |o| (o, 1));
        assert!(matches!(
            log.append(Some("k"), 0, &none, |o| (o, 1)),
            Appended::New { offset: 2, .. }
        ));
        assert!(log.is_empty());
    }
}
