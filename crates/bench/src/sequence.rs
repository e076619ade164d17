//! One subscriber's view of a numbered stream (1, 2, 3 …): which numbers
//! arrived in order, which are missing, which came late, which came twice.
//!
//! Publishes sent through the server API travel on separate HTTP/2 streams
//! and may reach the hub in another order than they were sent, so a number
//! can arrive after a higher one. Counting every skipped number as lost
//! would then report loss where there is none; this tracker remembers the
//! numbers still missing in a window of [`WINDOW`] below the highest seen,
//! so a late arrival fills its gap (counted late, not lost).
//!
//! Invariants: `lost` counts numbers skipped and not (yet) filled; a number
//! that falls out of the window while missing stays lost even if it comes
//! later (counted `late_beyond`); a number that is neither missing nor new
//! is a duplicate. Memory is constant (one `u128`).

/// How far below the highest number seen a late arrival still fills its gap.
pub(crate) const WINDOW: u64 = 128;

/// What one arrival was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Arrival {
    /// The next number, or a higher one after `skipped` missing ones.
    Ahead {
        /// Numbers skipped (missing for now).
        skipped: u64,
    },
    /// A missing number, arriving late: its gap is filled.
    Late,
    /// A number missing for longer than the window: it stays counted lost.
    LateBeyond,
    /// A number already received.
    Duplicate,
}

/// The tracker (see the module docs).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sequence {
    /// The next number expected in order.
    expected: u64,
    /// Bit `i` set: number `expected - 1 - i` is missing.
    missing: u128,
}

impl Sequence {
    /// A stream whose first number is `first`.
    pub(crate) fn starting_at(first: u64) -> Self {
        Self {
            expected: first,
            missing: 0,
        }
    }

    /// Records the arrival of `seq`.
    pub(crate) fn see(&mut self, seq: u64) -> Arrival {
        if seq >= self.expected {
            let skipped = seq - self.expected;
            let shift = skipped + 1;
            self.missing = if shift >= WINDOW {
                0
            } else {
                self.missing << shift
            };
            // The skipped numbers sit at bits 1..=skipped now.
            let marked = skipped.min(WINDOW - 1);
            if marked > 0 {
                let ones = if marked >= 127 {
                    u128::MAX >> 1
                } else {
                    (1u128 << marked) - 1
                };
                self.missing |= ones << 1;
            }
            self.expected = seq + 1;
            return Arrival::Ahead { skipped };
        }
        let back = self.expected - 1 - seq;
        if back >= WINDOW {
            return Arrival::LateBeyond;
        }
        let bit = 1u128 << back;
        if self.missing & bit != 0 {
            self.missing &= !bit;
            Arrival::Late
        } else {
            Arrival::Duplicate
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_skips_nothing() {
        let mut s = Sequence::starting_at(1);
        for seq in 1..=300 {
            assert_eq!(s.see(seq), Arrival::Ahead { skipped: 0 });
        }
    }

    #[test]
    fn a_late_number_fills_its_gap_once() {
        let mut s = Sequence::starting_at(1);
        assert_eq!(s.see(1), Arrival::Ahead { skipped: 0 });
        assert_eq!(s.see(4), Arrival::Ahead { skipped: 2 });
        assert_eq!(s.see(3), Arrival::Late);
        assert_eq!(s.see(2), Arrival::Late);
        assert_eq!(s.see(2), Arrival::Duplicate);
        assert_eq!(s.see(4), Arrival::Duplicate);
        assert_eq!(s.see(1), Arrival::Duplicate);
    }

    #[test]
    fn the_window_bounds_what_can_still_be_filled() {
        let mut s = Sequence::starting_at(1);
        assert_eq!(s.see(1), Arrival::Ahead { skipped: 0 });
        assert_eq!(s.see(3), Arrival::Ahead { skipped: 1 });
        // 200 more in order push 2 out of the window.
        for seq in 4..204 {
            assert_eq!(s.see(seq), Arrival::Ahead { skipped: 0 });
        }
        assert_eq!(s.see(2), Arrival::LateBeyond);
        // A gap wider than the window: the ones inside it can be filled.
        assert_eq!(s.see(504), Arrival::Ahead { skipped: 300 });
        assert_eq!(s.see(503), Arrival::Late);
        assert_eq!(s.see(377), Arrival::Late);
        assert_eq!(s.see(376), Arrival::LateBeyond);
        assert_eq!(s.see(300), Arrival::LateBeyond);
    }

    #[test]
    fn shuffled_streams_lose_nothing() {
        // Every number once, each moved up to 20 places: nothing lost.
        let mut order: Vec<u64> = (1..=1000).collect();
        for (i, chunk) in order.chunks_mut(20).enumerate() {
            if i % 2 == 0 {
                chunk.reverse();
            } else {
                chunk.rotate_left(7);
            }
        }
        let mut s = Sequence::starting_at(1);
        let (mut lost, mut late) = (0, 0);
        for seq in order {
            match s.see(seq) {
                Arrival::Ahead { skipped } => lost += skipped,
                Arrival::Late => {
                    lost -= 1;
                    late += 1;
                }
                other => panic!("{seq}: {other:?}"),
            }
        }
        assert_eq!(lost, 0);
        assert!(late > 0);
    }
}
