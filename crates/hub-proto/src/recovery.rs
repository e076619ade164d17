//! The hub's answer to `subscribe`: recover, report a gap, or send recent
//! messages.
//!
//! Every broker (in memory, Redis) describes a channel's history with
//! [`HistoryBounds`] and asks [`plan_recovery`] what to reply and what to
//! replay, so that they all keep the same contract:
//!
//! - `since` in the channel's epoch, not ahead of its latest offset, and whose
//!   next message is still kept (`since.offset + 1 >= first`): **recovered**;
//!   replay exactly `since.offset + 1 ..= last` (nothing when it is already at
//!   `last`). `recent` is ignored.
//! - `since` the history cannot serve (another epoch, older than the oldest
//!   kept, or ahead of the channel): **gap**; replay the last `recent`
//!   messages kept.
//! - no `since`: replay the last `recent` messages kept.
//!
//! The hub replies `subscribed` with `epoch`, `offset: last` and the plan's
//! flags, then sends the replay range in order, then live messages (from
//! `last + 1`), with nothing published in between lost or repeated.

use std::ops::RangeInclusive;

use crate::message::Since;

/// What a broker holds of a channel's history at the moment of subscribing.
///
/// Invariant: `1 <= first <= last + 1`; `first == last + 1` when nothing is
/// kept (and `last == 0, first == 1` for a channel with no message yet in this
/// epoch). Values outside it are treated as the nearest valid ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HistoryBounds<'a> {
    /// The channel's current epoch.
    pub epoch: &'a str,
    /// The oldest offset kept, or `last + 1` when none is kept.
    pub first: u64,
    /// The latest offset given out in this epoch (0 if none).
    pub last: u64,
}

impl HistoryBounds<'_> {
    /// The oldest offset kept (or `last + 1`), clamped into `1..=last + 1`.
    fn first(&self) -> u64 {
        self.first.clamp(1, self.last.saturating_add(1))
    }

    /// How many messages are kept.
    pub fn kept(&self) -> u64 {
        self.last.saturating_add(1) - self.first()
    }
}

/// What the hub answers to `subscribe` and what it sends after.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecoveryPlan {
    /// `recovered` in the `subscribed` reply.
    pub recovered: bool,
    /// `gap` in the `subscribed` reply.
    pub gap: bool,
    /// The offsets to send from history, in order, before live messages.
    pub replay: Option<RangeInclusive<u64>>,
}

/// Decides the reply to `subscribe` with `since` and `recent` on a channel whose
/// history is `history`.
pub fn plan_recovery(
    since: Option<&Since>,
    recent: u32,
    history: HistoryBounds<'_>,
) -> RecoveryPlan {
    let last = history.last;
    if let Some(since) = since {
        let servable = since.epoch == history.epoch
            && since.offset <= last
            && since.offset.saturating_add(1) >= history.first();
        if servable {
            return RecoveryPlan {
                recovered: true,
                gap: false,
                replay: (since.offset < last).then(|| since.offset + 1..=last),
            };
        }
    }
    let count = u64::from(recent).min(history.kept());
    RecoveryPlan {
        recovered: false,
        gap: since.is_some(),
        replay: (count > 0).then(|| last - count + 1..=last),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn since(epoch: &str, offset: u64) -> Since {
        Since {
            epoch: epoch.to_owned(),
            offset,
        }
    }

    fn bounds(first: u64, last: u64) -> HistoryBounds<'static> {
        HistoryBounds {
            epoch: "e1",
            first,
            last,
        }
    }

    fn plan(recovered: bool, gap: bool, replay: Option<RangeInclusive<u64>>) -> RecoveryPlan {
        RecoveryPlan {
            recovered,
            gap,
            replay,
        }
    }

    #[test]
    fn recovers_what_the_history_reaches() {
        // Kept: 5..=10.
        let h = bounds(5, 10);
        assert_eq!(
            plan_recovery(Some(&since("e1", 4)), 0, h),
            plan(true, false, Some(5..=10))
        );
        assert_eq!(
            plan_recovery(Some(&since("e1", 7)), 100, h),
            plan(true, false, Some(8..=10))
        );
        assert_eq!(
            plan_recovery(Some(&since("e1", 10)), 3, h),
            plan(true, false, None)
        );
    }

    #[test]
    fn gap_when_the_history_cannot_serve() {
        let h = bounds(5, 10);
        // Older than the oldest kept.
        assert_eq!(
            plan_recovery(Some(&since("e1", 3)), 0, h),
            plan(false, true, None)
        );
        // Another epoch.
        assert_eq!(
            plan_recovery(Some(&since("e0", 7)), 2, h),
            plan(false, true, Some(9..=10))
        );
        // Ahead of the channel.
        assert_eq!(
            plan_recovery(Some(&since("e1", 11)), 100, h),
            plan(false, true, Some(5..=10))
        );
    }

    #[test]
    fn without_since_recent_messages_only() {
        let h = bounds(5, 10);
        assert_eq!(plan_recovery(None, 0, h), plan(false, false, None));
        assert_eq!(plan_recovery(None, 1, h), plan(false, false, Some(10..=10)));
        assert_eq!(plan_recovery(None, 6, h), plan(false, false, Some(5..=10)));
        assert_eq!(
            plan_recovery(None, u32::MAX, h),
            plan(false, false, Some(5..=10))
        );
    }

    #[test]
    fn empty_histories() {
        // A new channel.
        let new = bounds(1, 0);
        assert_eq!(
            plan_recovery(Some(&since("e1", 0)), 5, new),
            plan(true, false, None)
        );
        assert_eq!(plan_recovery(None, 5, new), plan(false, false, None));
        assert_eq!(
            plan_recovery(Some(&since("e1", 1)), 5, new),
            plan(false, true, None)
        );
        // Everything expired after offset 10.
        let expired = bounds(11, 10);
        assert_eq!(
            plan_recovery(Some(&since("e1", 10)), 5, expired),
            plan(true, false, None)
        );
        assert_eq!(
            plan_recovery(Some(&since("e1", 9)), 5, expired),
            plan(false, true, None)
        );
        // A client that saw nothing recovers from 0 while offset 1 is kept.
        assert_eq!(
            plan_recovery(Some(&since("e1", 0)), 0, bounds(1, 3)),
            plan(true, false, Some(1..=3))
        );
        assert_eq!(
            plan_recovery(Some(&since("e1", 0)), 0, bounds(2, 3)),
            plan(false, true, None)
        );
    }

    #[test]
    fn out_of_range_bounds_do_not_panic() {
        for (first, last) in [
            (0, 0),
            (0, 5),
            (100, 5),
            (u64::MAX, u64::MAX),
            (1, u64::MAX),
        ] {
            for s in [None, Some(since("e1", 0)), Some(since("e1", u64::MAX))] {
                for recent in [0, 1, u32::MAX] {
                    let p = plan_recovery(s.as_ref(), recent, bounds(first, last));
                    if let Some(r) = p.replay {
                        assert!(r.start() <= r.end() && *r.end() == last);
                    }
                }
            }
        }
    }
}
