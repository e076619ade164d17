//! Admission and rate limits: the hub's side.
//!
//! - The rate rules (token buckets, the data-byte bucket, strikes, when a
//!   client is closed) are the core's, [`duplex_hub_proto::rate`]; here the
//!   hub builds its [`RatePolicy`] from `[limits]` ([`rate_policy`]) and
//!   reads the clock for it ([`now`]).
//! - [`Admission`] (module `admission`): the node-wide limits on
//!   connections in total and per client address, with an RAII [`Ticket`]
//!   per admitted connection; its invariants are in that module.
//!
//! Invariant: every [`Nanos`] the hub passes to the core comes from [`now`]
//! (one origin per process), so the times of all connections compare.

use std::sync::OnceLock;
use std::time::Instant;

pub(crate) use duplex_hub_proto::rate::{Nanos, RateLimiter, RatePolicy, Verdict, data_bytes};

use crate::config::LimitsConfig;

mod admission;

pub(crate) use self::admission::{Admission, Refused, Ticket};

/// The policy the hub's `[limits]` say (`messages_per_second`, `burst`,
/// `rate_strikes`, `publish_bytes_per_second`, `publish_bytes_burst`).
pub(crate) fn rate_policy(limits: &LimitsConfig) -> RatePolicy {
    RatePolicy::new(
        limits.messages_per_second,
        limits.burst,
        limits.rate_strikes,
    )
    .with_bytes(limits.publish_bytes_per_second, limits.publish_bytes_burst)
}

/// Now, on the clock the core's rate limits run on: nanoseconds since the
/// first call in this process (saturating after ~292 years).
pub(crate) fn now() -> Nanos {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    let origin = *ORIGIN.get_or_init(Instant::now);
    Nanos::new(i64::try_from(origin.elapsed().as_nanos()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_follows_the_configured_limits() {
        let limits = LimitsConfig::default();
        let t0 = now();
        let policy = rate_policy(&limits);
        let mut r = RateLimiter::new(t0);
        let burst = limits.burst as usize;
        assert!((0..burst).all(|_| r.check(&policy, t0) == Verdict::Allow));
        for _ in 0..limits.rate_strikes {
            assert_eq!(r.check(&policy, t0), Verdict::Reject);
        }
        assert_eq!(r.check(&policy, t0), Verdict::Close);
        // The data rate too: one burst of data passes, a little more is
        // refused. (The byte bucket keeps 1 µs of byte time as slack, its
        // documented tolerance: at 2 MiB/s a byte or two more may pass,
        // depending on where `t0` falls on its microsecond grid.)
        let mut r = RateLimiter::new(t0);
        let bytes = limits.publish_bytes_burst as usize;
        assert_eq!(r.check_data(&policy, t0, bytes), Verdict::Allow);
        assert_eq!(r.check_data(&policy, t0, 64), Verdict::Reject);
    }

    #[test]
    fn now_moves_forward() {
        let a = now();
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert!(now().get() >= a.get() + 2_000_000);
    }
}
