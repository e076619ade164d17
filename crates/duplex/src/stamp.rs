//! [`Stamp`]: an instant in 8 bytes, for state kept per connection.
//!
//! An [`Instant`] takes 16 bytes (seconds and nanoseconds). A server that
//! keeps several per connection (when bytes last arrived, when a timer is
//! due, when a rate limit's bucket is full again) pays for that on every
//! connection. A `Stamp` keeps the same instant in one signed 64-bit count.
//!
//! Invariants:
//! - A stamp is the signed number of nanoseconds from one origin per process
//!   (the instant the first stamp was made), so converting is exact: an
//!   instant within ±292 years of the origin comes back unchanged from
//!   [`Stamp::to_instant`], and stamps order and subtract as their instants
//!   do. Instants further away saturate.
//! - Instants before the origin are fine (negative stamps): a paused tokio
//!   clock, for one, may have started before it.
//! - Nothing here reads a clock but [`Stamp::now`].

use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// An instant as nanoseconds from a per-process origin. See the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Stamp(i64);

/// The origin of every stamp of this process.
fn origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

/// Nanoseconds in `duration`, saturated to `i64::MAX`.
fn nanos(duration: Duration) -> i64 {
    i64::try_from(duration.as_nanos()).unwrap_or(i64::MAX)
}

impl Stamp {
    /// Later than any instant a stamp is made from: a "never" for fields
    /// that would otherwise need an `Option` (8 more bytes).
    pub const NEVER: Self = Self(i64::MAX);

    /// The current time of the standard clock.
    pub fn now() -> Self {
        Self::from(Instant::now())
    }

    /// The instant this stamp was made from (for a stamp the platform's
    /// clock cannot represent, such as [`Stamp::NEVER`] on some, the origin).
    pub fn to_instant(self) -> Instant {
        let origin = origin();
        let offset = Duration::from_nanos(self.0.unsigned_abs());
        let instant = if self.0 >= 0 {
            origin.checked_add(offset)
        } else {
            origin.checked_sub(offset)
        };
        instant.unwrap_or(origin)
    }

    /// `duration` later, saturating at [`Stamp::NEVER`].
    pub fn saturating_add(self, duration: Duration) -> Self {
        // A duration's nanoseconds fit in 95 bits.
        let sum = i128::from(self.0) + duration.as_nanos() as i128;
        Self(i64::try_from(sum).unwrap_or(i64::MAX))
    }

    /// How long after `earlier` this is; zero if it is not after it.
    pub fn saturating_duration_since(self, earlier: Self) -> Duration {
        let difference = i128::from(self.0) - i128::from(earlier.0);
        u64::try_from(difference).map_or(Duration::ZERO, Duration::from_nanos)
    }
}

impl From<Instant> for Stamp {
    fn from(instant: Instant) -> Self {
        let origin = origin();
        match instant.checked_duration_since(origin) {
            Some(after) => Self(nanos(after)),
            None => Self(nanos(origin.duration_since(instant)).saturating_neg()),
        }
    }
}

impl From<tokio::time::Instant> for Stamp {
    fn from(instant: tokio::time::Instant) -> Self {
        Self::from(instant.into_std())
    }
}

impl From<Stamp> for tokio::time::Instant {
    fn from(stamp: Stamp) -> Self {
        Self::from_std(stamp.to_instant())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_before_and_after_the_origin_come_back_unchanged() {
        let origin = origin();
        for offset in [
            Duration::ZERO,
            Duration::from_nanos(1),
            Duration::from_millis(1_500),
            Duration::from_secs(86_400 * 400),
        ] {
            let later = origin + offset;
            assert_eq!(Stamp::from(later).to_instant(), later);
            if let Some(earlier) = origin.checked_sub(offset) {
                assert_eq!(Stamp::from(earlier).to_instant(), earlier);
            }
        }
    }

    #[test]
    fn stamps_order_and_subtract_as_their_instants() {
        let a = Instant::now();
        let b = a + Duration::from_nanos(1_234_567_891);
        let (sa, sb) = (Stamp::from(a), Stamp::from(b));
        assert!(sa < sb);
        assert_eq!(
            sb.saturating_duration_since(sa),
            Duration::from_nanos(1_234_567_891)
        );
        assert_eq!(sa.saturating_duration_since(sb), Duration::ZERO);
        assert_eq!(sa.saturating_add(Duration::from_nanos(1_234_567_891)), sb);
    }

    #[test]
    fn far_instants_and_durations_saturate() {
        let now = Stamp::now();
        assert_eq!(now.saturating_add(Duration::MAX), Stamp::NEVER);
        assert_eq!(
            Stamp(-5).saturating_add(Duration::from_nanos(i64::MAX as u64)),
            Stamp(i64::MAX - 5)
        );
        assert_eq!(
            Stamp(-5).saturating_add(Duration::from_nanos(i64::MAX as u64 + 10)),
            Stamp::NEVER
        );
        assert!(Stamp::NEVER > now);
        assert_eq!(
            Stamp::NEVER.saturating_duration_since(Stamp(i64::MIN)),
            Duration::from_nanos(u64::MAX)
        );
    }

    #[test]
    fn tokio_instants_convert_both_ways() {
        let instant = tokio::time::Instant::now() + Duration::from_millis(7);
        let stamp = Stamp::from(instant);
        assert_eq!(tokio::time::Instant::from(stamp), instant);
    }

    #[test]
    fn a_stamp_is_half_an_instant() {
        assert_eq!(std::mem::size_of::<Stamp>(), 8);
        assert_eq!(std::mem::size_of::<Instant>(), 16);
    }
}
