//! Admission and rate limits.
//!
//! Nothing here reads a clock: callers pass a [`std::time::Instant`] (one
//! read per message at most, or the time the I/O layer already has).
//!
//! - [`TokenBucket`]: a per-connection rate limit, 8 bytes, following a
//!   [`Rate`] shared by all connections.
//! - [`RateLimiter`]: a connection's state (16 bytes) under the hub's
//!   [`RatePolicy`]: allow, refuse with `rate_limited`, or close with 1008.
//!   It keeps two buckets: commands per second, and bytes of `publish` and
//!   `signal` data per second (the second in 4 bytes, see [`RateLimiter`]).
//! - [`Admission`] (module `admission`): the node-wide limits on
//!   connections in total and per client address, with an RAII [`Ticket`]
//!   per admitted connection; its invariants are in that module.
//!
//! # Invariants
//! - A [`TokenBucket`] following a [`Rate`] of `rate` and `burst` lets through at most
//!   `burst + rate × t` takes in any interval of length `t`, and starts full.
//! - [`RateLimiter`]'s byte bucket lets through at most
//!   `bytes_burst + bytes_rate × (t + 1 µs)` bytes of data in any interval
//!   of length `t` (a command whose data would exceed it is refused whole).
//! - [`RateLimiter`]'s rule: a command over either rate is refused
//!   ([`Verdict::Reject`], answered with `rate_limited`) and counts a
//!   *strike*. When the connection's buckets have refilled completely (the
//!   client stayed under the rates for `burst / rate` seconds), its strikes
//!   are forgiven. A command over the rate after `max_strikes` strikes that
//!   were not forgiven gets [`Verdict::Close`] (close the connection with
//!   1008), and so does every command after it. So a client that keeps
//!   sending faster than the rate is closed after `max_strikes`
//!   (default [`DEFAULT_MAX_STRIKES`]) refusals, while one that bursts now and
//!   then is only slowed down.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use duplex::Stamp;
use duplex_hub_proto::{Command, Request};

use crate::config::LimitsConfig;

mod admission;

pub(crate) use self::admission::{Admission, Refused, Ticket};

#[cfg(test)]
/// Refused commands tolerated before [`RateLimiter`] closes the connection,
/// unless configured otherwise.
pub(crate) const DEFAULT_MAX_STRIKES: u32 = 10;

/// The lowest refill rate a [`TokenBucket`] keeps (per second); lower rates,
/// zero and NaN are raised to it.
const MIN_RATE: f64 = 1e-6;

/// The largest burst a [`TokenBucket`] keeps; larger ones are lowered to it.
const MAX_BURST: f64 = 1e9;

/// A refill rate and a capacity: the policy of a [`TokenBucket`], shared by
/// every bucket that follows it (one per connection).
///
/// Stored for the "generic cell rate algorithm": the interval between
/// takes and the burst.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Rate {
    /// Nanoseconds per token (whole nanoseconds are used: `as u64`).
    interval_ns: f32,
    /// The capacity, at least 1.
    burst: f32,
}

impl Rate {
    /// `rate_per_sec` tokens per second, `burst` tokens at most.
    ///
    /// `burst` is raised to 1 if lower (and capped at 10⁹); a rate that is
    /// not above 10⁻⁶ (including NaN) is raised to 10⁻⁶; an infinite rate
    /// never refuses. Rates are kept to about 7 significant digits.
    pub(crate) fn new(rate_per_sec: f64, burst: f64) -> Self {
        let rate = if rate_per_sec > MIN_RATE {
            rate_per_sec
        } else {
            MIN_RATE
        };
        let burst = if burst > 1.0 {
            burst.min(MAX_BURST)
        } else {
            1.0
        };
        Self {
            interval_ns: (1e9 / rate) as f32,
            burst: burst as f32,
        }
    }

    fn interval(&self) -> u64 {
        // Float-to-int casts saturate.
        self.interval_ns as u64
    }

    /// The most debt allowed before a take: `burst - 1` intervals.
    fn tolerance(&self, interval: u64) -> u64 {
        (f64::from(self.burst - 1.0) * interval as f64) as u64
    }
}

/// A token bucket's state, 8 bytes (it lives in every connection): `burst`
/// tokens at most, refilled at `rate` per second, one token per take, as
/// the [`Rate`] passed to each call says.
///
/// The state is the theoretical arrival time of the next take: when the
/// bucket is full again if nothing more is taken. A take is allowed when
/// the bucket's debt (how far that time is ahead of `now`) leaves room for
/// one more within the burst.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TokenBucket {
    /// When the bucket is full again if nothing more is taken.
    full_at: Stamp,
}

impl TokenBucket {
    /// A full bucket.
    pub(crate) fn new(now: Instant) -> Self {
        Self {
            full_at: Stamp::from(now),
        }
    }

    fn debt(&self, now: Stamp) -> u64 {
        u64::try_from(self.full_at.saturating_duration_since(now).as_nanos()).unwrap_or(u64::MAX)
    }

    /// Takes a token if there is one at `now`.
    pub(crate) fn try_take(&mut self, rate: &Rate, now: Instant) -> bool {
        let now = Stamp::from(now);
        let interval = rate.interval();
        if self.debt(now) > rate.tolerance(interval) {
            return false;
        }
        let full_at = self
            .full_at
            .max(now)
            .saturating_add(Duration::from_nanos(interval));
        if full_at == Stamp::NEVER {
            // Beyond what a stamp holds (~292 years of debt): refuse.
            return false;
        }
        self.full_at = full_at;
        true
    }

    #[cfg(test)]
    /// Tokens available at `now`, fractional (between 0 and `burst`).
    pub(crate) fn available(&self, rate: &Rate, now: Instant) -> f64 {
        let interval = rate.interval();
        let burst = f64::from(rate.burst);
        if interval == 0 {
            return burst;
        }
        let debt = self.debt(Stamp::from(now)) as f64 / interval as f64;
        (burst - debt).clamp(0.0, burst)
    }

    /// Whether the bucket is full at `now`: nothing taken that has not been
    /// refilled.
    pub(crate) fn is_full(&self, now: Instant) -> bool {
        self.full_at <= Stamp::from(now)
    }
}

/// What to do with a command, as [`RateLimiter::check`] decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Within the rate: handle it.
    Allow,
    /// Over the rate: do not handle it, answer `rate_limited`.
    Reject,
    /// Over the rate again after too many refusals: close with 1008.
    Close,
}

/// The hub's command-rate policy, one for every connection: the [`Rate`] of
/// commands, the [`Rate`] of data bytes, and how many refusals close the
/// connection. See the module docs for the rule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct RatePolicy {
    rate: Rate,
    /// Tokens are bytes of `publish` and `signal` data.
    bytes: Rate,
    max_strikes: u32,
}

impl RatePolicy {
    /// `rate_per_sec` commands per second with bursts of `burst` (see
    /// [`Rate::new`]), closing after `max_strikes` refusals not forgiven;
    /// data bytes are not limited (see [`RatePolicy::with_bytes`]).
    pub(crate) fn new(rate_per_sec: f64, burst: f64, max_strikes: u32) -> Self {
        Self {
            rate: Rate::new(rate_per_sec, burst),
            bytes: Rate::new(f64::INFINITY, MAX_BURST),
            max_strikes,
        }
    }

    /// This policy with `bytes_per_sec` bytes of data per second and bursts
    /// of `burst` bytes (see [`Rate::new`]). A burst should be at least the
    /// largest message, or that message never passes.
    pub(crate) fn with_bytes(self, bytes_per_sec: f64, burst: f64) -> Self {
        Self {
            bytes: Rate::new(bytes_per_sec, burst),
            ..self
        }
    }

    /// The policy the hub's `[limits]` say (`messages_per_second`, `burst`,
    /// `rate_strikes`, `publish_bytes_per_second`, `publish_bytes_burst`).
    pub(crate) fn from_config(limits: &LimitsConfig) -> Self {
        Self::new(
            limits.messages_per_second,
            limits.burst,
            limits.rate_strikes,
        )
        .with_bytes(limits.publish_bytes_per_second, limits.publish_bytes_burst)
    }
}

/// The bytes of data a command carries, as the byte rate counts them: the
/// `data` of a `publish` or a `signal`, 0 for anything else (a command that
/// did not decode included).
pub(crate) fn data_bytes<E>(request: &Result<Request, E>) -> usize {
    match request {
        Ok(Request {
            command: Command::Publish { data, .. } | Command::Signal { data, .. },
            ..
        }) => data.len(),
        _ => 0,
    }
}

/// The unit of [`RateLimiter`]'s byte-bucket lead, in nanoseconds (1 µs):
/// an `i32` of them spans ±35 minutes.
const LEAD_UNIT_NS: i64 = 1_000;

/// A connection's state under a [`RatePolicy`], 16 bytes: the command
/// [`TokenBucket`], the byte bucket, and its strikes.
///
/// The byte bucket is a token bucket too (the same "generic cell rate"
/// state: the time it is full again), kept in 4 bytes: that time on a grid
/// of 1 µs (`LEAD_UNIT_NS`), as its *lead* over the command bucket's full
/// time on the same grid. Every check moves both, and after a check the
/// command bucket's full time is never before `now`, so the lead is at most
/// the byte bucket's debt: at most its refill time (a take that would leave
/// more than an `i32` holds, 35 minutes, is refused; the configuration keeps
/// it within 30). Only a take of data rounds the time (up, to the grid):
/// that refuses a little more, 1 µs of byte time per message at most. A
/// lead below what an `i32` holds (only when the command bucket's own debt
/// exceeds 35 minutes) is kept at the lowest, which counts the byte bucket
/// emptier than it is: it refuses more, never less.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RateLimiter {
    bucket: TokenBucket,
    /// When the byte bucket is full again, minus `bucket.full_at`, in
    /// [`LEAD_UNIT_NS`].
    bytes_lead: i32,
    strikes: u32,
}

impl RateLimiter {
    /// A limiter with full buckets and no strikes.
    pub(crate) fn new(now: Instant) -> Self {
        Self {
            bucket: TokenBucket::new(now),
            bytes_lead: 0,
            strikes: 0,
        }
    }

    /// The verdict of `policy` on one command without data arriving at
    /// `now`.
    pub(crate) fn check(&mut self, policy: &RatePolicy, now: Instant) -> Verdict {
        self.check_data(policy, now, 0)
    }

    /// The verdict of `policy` on one command carrying `bytes` of data (see
    /// [`data_bytes`]) arriving at `now`: it takes a command token and
    /// `bytes` byte tokens, or is refused.
    pub(crate) fn check_data(
        &mut self,
        policy: &RatePolicy,
        now: Instant,
        bytes: usize,
    ) -> Verdict {
        if self.strikes > policy.max_strikes {
            return Verdict::Close;
        }
        let at = Stamp::from(now);
        let at_ns = signed_ns(at, reference());
        // The byte bucket's full time (on the grid of lead units), and its
        // debt at `now`.
        let full_ns = units(signed_ns(self.bucket.full_at, reference()))
            .saturating_add(i64::from(self.bytes_lead))
            .saturating_mul(LEAD_UNIT_NS);
        let debt = full_ns.saturating_sub(at_ns).max(0);
        // (Full within the grid's rounding.)
        if self.strikes > 0 && self.bucket.is_full(now) && debt <= LEAD_UNIT_NS {
            self.strikes = 0;
        }
        let bytes_debt = take_bytes(debt, &policy.bytes, bytes);
        let allowed = self.bucket.try_take(&policy.rate, now) && bytes_debt.is_some();
        let debt = match bytes_debt {
            Some(after) if allowed => after,
            _ => debt,
        };
        // The lead over the command bucket as it is now. Unchanged, the full
        // time is on the grid already: only a take rounds it (up).
        let lead = units(at_ns.saturating_add(debt))
            .saturating_sub(units(signed_ns(self.bucket.full_at, reference())));
        self.bytes_lead = i32::try_from(lead).unwrap_or(if lead > 0 { i32::MAX } else { i32::MIN });
        if allowed {
            return Verdict::Allow;
        }
        self.strikes += 1;
        if self.strikes > policy.max_strikes {
            Verdict::Close
        } else {
            Verdict::Reject
        }
    }

    #[cfg(test)]
    /// Refusals counted and not yet forgiven.
    pub(crate) fn strikes(&self) -> u32 {
        self.strikes
    }
}

/// Where the lead units' grid starts: a stamp fixed for the process.
fn reference() -> Stamp {
    static REFERENCE: std::sync::OnceLock<Stamp> = std::sync::OnceLock::new();
    *REFERENCE.get_or_init(Stamp::now)
}

/// `ns` in [`LEAD_UNIT_NS`], rounded up.
fn units(ns: i64) -> i64 {
    ns.div_euclid(LEAD_UNIT_NS) + i64::from(ns.rem_euclid(LEAD_UNIT_NS) != 0)
}

/// `a - b` in nanoseconds, saturating.
fn signed_ns(a: Stamp, b: Stamp) -> i64 {
    let ahead = a.saturating_duration_since(b).as_nanos();
    let behind = b.saturating_duration_since(a).as_nanos();
    i64::try_from(ahead as i128 - behind as i128).unwrap_or(if ahead > 0 {
        i64::MAX
    } else {
        i64::MIN
    })
}

/// The byte bucket's debt (ns, ≥ 0) after taking `bytes` tokens from a
/// bucket `debt` ns in debt, under `rate`; `None` if the bucket has not
/// that many, or if the debt would not fit a [`RateLimiter`]'s lead.
fn take_bytes(debt: i64, rate: &Rate, bytes: usize) -> Option<i64> {
    if bytes == 0 {
        return Some(debt);
    }
    let interval = f64::from(rate.interval_ns);
    // One lead unit more: what rounding the lead up may have added, so a
    // burst taken in pieces fits as it does whole.
    let capacity = f64::from(rate.burst) * interval + LEAD_UNIT_NS as f64;
    let after = debt as f64 + bytes as f64 * interval;
    // The lead is at most the debt: it must fit its `i32` units.
    let fits = after <= (f64::from(i32::MAX) - 1.0) * LEAD_UNIT_NS as f64;
    (after <= capacity && fits).then_some(after.ceil() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn rate_state_is_small() {
        // One of each lives in every connection; the policy is shared.
        assert_eq!(size_of::<TokenBucket>(), 8);
        assert_eq!(size_of::<RateLimiter>(), 16);
    }

    #[test]
    fn bucket_starts_full_then_refills_at_rate() {
        let t0 = Instant::now();
        let rate = Rate::new(4.0, 10.0);
        let mut b = TokenBucket::new(t0);
        assert!(b.is_full(t0));
        assert_eq!(b.available(&rate, t0), 10.0);
        for i in 0..10 {
            assert!(b.try_take(&rate, t0), "take {i}");
        }
        assert!(!b.try_take(&rate, t0));
        assert!(!b.is_full(t0));
        assert_eq!(b.available(&rate, t0), 0.0);
        // 4 per second: one every 250 ms.
        assert!(!b.try_take(&rate, t0 + ms(249)));
        assert!(b.try_take(&rate, t0 + ms(250)));
        assert!(!b.try_take(&rate, t0 + ms(250)));
        assert!(b.try_take(&rate, t0 + ms(1000)));
        assert!(b.try_take(&rate, t0 + ms(1000)));
        assert!(b.try_take(&rate, t0 + ms(1000)));
        assert!(!b.try_take(&rate, t0 + ms(1000)));
        // Long idle: full again, never more than burst.
        let later = t0 + Duration::from_secs(3600);
        assert!(b.is_full(later));
        assert_eq!(b.available(&rate, later), 10.0);
        let taken = (0..100).filter(|_| b.try_take(&rate, later)).count();
        assert_eq!(taken, 10);
    }

    #[test]
    fn bucket_never_exceeds_burst_plus_rate_times_t() {
        // Steady requests every 1 ms for 10 s against 100/s, burst 200.
        let t0 = Instant::now();
        let rate = Rate::new(100.0, 200.0);
        let mut b = TokenBucket::new(t0);
        let mut allowed = 0;
        for i in 0..10_000u64 {
            if b.try_take(&rate, t0 + ms(i)) {
                allowed += 1;
            }
        }
        // 200 + 100/s × 9.999 s, give or take one interval.
        assert!((1198..=1201).contains(&allowed), "{allowed}");
    }

    #[test]
    fn bucket_fractional_and_odd_settings() {
        let t0 = Instant::now();
        let rate = Rate::new(3.0, 1.0);
        let mut b = TokenBucket::new(t0);
        assert!(b.try_take(&rate, t0));
        assert!(!b.try_take(&rate, t0 + ms(333)));
        assert!(b.try_take(&rate, t0 + ms(334)));

        let rate_never = Rate::new(0.0, 2.0);
        let mut never = TokenBucket::new(t0);
        assert!(never.try_take(&rate_never, t0));
        assert!(never.try_take(&rate_never, t0));
        assert!(!never.try_take(&rate_never, t0 + Duration::from_secs(86_400)));
        let rate_nan = Rate::new(f64::NAN, f64::NAN);
        let mut nan = TokenBucket::new(t0);
        assert!(nan.try_take(&rate_nan, t0));
        assert!(!nan.try_take(&rate_nan, t0 + ms(10)));

        let rate_unlimited = Rate::new(f64::INFINITY, 1.0);
        let mut unlimited = TokenBucket::new(t0);
        assert!((0..1000).all(|_| unlimited.try_take(&rate_unlimited, t0)));

        // An earlier `now` than one already seen is handled conservatively.
        let rate = Rate::new(1.0, 1.0);
        let mut b = TokenBucket::new(t0 + ms(1000));
        assert!(!b.try_take(&rate, t0));
        assert!(b.try_take(&rate, t0 + ms(1000)));
    }

    #[test]
    fn rate_limiter_rejects_then_closes() {
        let t0 = Instant::now();
        let policy = RatePolicy::new(1.0, 2.0, 3);
        let mut r = RateLimiter::new(t0);
        assert_eq!(r.check(&policy, t0), Verdict::Allow);
        assert_eq!(r.check(&policy, t0), Verdict::Allow);
        for strike in 1..=3 {
            assert_eq!(r.check(&policy, t0), Verdict::Reject, "strike {strike}");
            assert_eq!(r.strikes(), strike);
        }
        assert_eq!(r.check(&policy, t0), Verdict::Close);
        // Once closing, always closing, even if the bucket refilled.
        assert_eq!(
            r.check(&policy, t0 + Duration::from_secs(60)),
            Verdict::Close
        );
    }

    #[test]
    fn rate_limiter_closes_a_client_that_keeps_sending_too_fast() {
        // Twice the rate: half the commands get through, which never lets the
        // bucket refill, so strikes add up.
        let t0 = Instant::now();
        let policy = RatePolicy::new(10.0, 5.0, DEFAULT_MAX_STRIKES);
        let mut r = RateLimiter::new(t0);
        let mut verdicts = Vec::new();
        for i in 0..1000u64 {
            let v = r.check(&policy, t0 + ms(i * 50));
            verdicts.push(v);
            if v == Verdict::Close {
                break;
            }
        }
        assert_eq!(verdicts.last(), Some(&Verdict::Close));
        let rejects = verdicts.iter().filter(|v| **v == Verdict::Reject).count();
        assert_eq!(rejects, DEFAULT_MAX_STRIKES as usize);
    }

    #[test]
    fn rate_limiter_forgives_after_a_full_refill() {
        let t0 = Instant::now();
        let policy = RatePolicy::new(10.0, 5.0, 2);
        let mut r = RateLimiter::new(t0);
        for round in 0..10u64 {
            // A burst of 7: 5 allowed, 2 refused (strikes 1 and 2).
            let t = t0 + Duration::from_secs(round);
            let v: Vec<_> = (0..7).map(|_| r.check(&policy, t)).collect();
            assert_eq!(v.iter().filter(|v| **v == Verdict::Allow).count(), 5);
            assert_eq!(v.iter().filter(|v| **v == Verdict::Reject).count(), 2);
            // Quiet for 1 s ≥ 5 / 10 per s: the next command finds the bucket
            // full and the strikes forgiven.
        }
        let policy = RatePolicy::new(10.0, 5.0, 0);
        let mut r = RateLimiter::new(t0);
        for _ in 0..5 {
            assert_eq!(r.check(&policy, t0), Verdict::Allow);
        }
        assert_eq!(
            r.check(&policy, t0),
            Verdict::Close,
            "max_strikes 0: no second chance"
        );
    }

    #[test]
    fn the_byte_bucket_limits_data_beside_commands() {
        let t0 = Instant::now();
        // Commands hardly limited; 1,000 bytes per second, bursts of 4,000.
        let policy = RatePolicy::new(1e6, 1e6, 3).with_bytes(1000.0, 4000.0);
        let mut r = RateLimiter::new(t0);
        assert_eq!(r.check_data(&policy, t0, 3000), Verdict::Allow);
        assert_eq!(r.check_data(&policy, t0, 1000), Verdict::Allow);
        assert_eq!(r.check_data(&policy, t0, 1), Verdict::Reject);
        // A command without data still passes.
        assert_eq!(r.check(&policy, t0), Verdict::Allow);
        assert_eq!(r.strikes(), 1);
        // Half a second refills 500 bytes, not 501.
        assert_eq!(r.check_data(&policy, t0 + ms(500), 501), Verdict::Reject);
        assert_eq!(r.check_data(&policy, t0 + ms(500), 500), Verdict::Allow);
        assert_eq!(r.check_data(&policy, t0 + ms(500), 1), Verdict::Reject);
        assert_eq!(r.strikes(), 3);
        // The same strikes rule as the command rate: the next refusal closes.
        assert_eq!(r.check_data(&policy, t0 + ms(500), 1), Verdict::Close);
        // Strikes are forgiven only when both buckets are full again.
        let mut r = RateLimiter::new(t0);
        assert_eq!(r.check_data(&policy, t0, 4000), Verdict::Allow);
        assert_eq!(r.check_data(&policy, t0, 1), Verdict::Reject);
        assert_eq!(r.check_data(&policy, t0 + ms(3999), 0), Verdict::Allow);
        assert_eq!(r.strikes(), 1, "the byte bucket is not full yet");
        assert_eq!(r.check_data(&policy, t0 + ms(4000), 4000), Verdict::Allow);
        assert_eq!(r.strikes(), 0);
        // A command refused for its rate takes no bytes.
        let policy = RatePolicy::new(1.0, 1.0, 10).with_bytes(1000.0, 1000.0);
        let mut r = RateLimiter::new(t0);
        assert_eq!(r.check_data(&policy, t0, 10), Verdict::Allow);
        assert_eq!(r.check_data(&policy, t0, 990), Verdict::Reject);
        assert_eq!(r.check_data(&policy, t0 + ms(1000), 1000), Verdict::Allow);
    }

    #[test]
    fn data_never_exceeds_burst_plus_rate_times_t() {
        // 1 MiB/s, bursts of 4 MiB, against publishes of 1 to 64 KiB every
        // millisecond (far above the rate) for 10 s, and after idle spells.
        let t0 = Instant::now();
        let (rate, burst) = (f64::from(1u32 << 20), f64::from(4u32 << 20));
        let policy = RatePolicy::new(1e6, 1e6, u32::MAX - 1).with_bytes(rate, burst);
        let mut r = RateLimiter::new(t0);
        let mut allowed = 0usize;
        let mut size = 12_345usize;
        for i in 0..10_000u64 {
            size = (size * 7_919 + 13) % (64 << 10) + 1;
            if r.check_data(&policy, t0 + ms(i), size) == Verdict::Allow {
                allowed += size;
            }
        }
        let most = burst + rate * (9.999 + 1e-6);
        assert!(allowed as f64 <= most, "{allowed} > {most}");
        // Less only by what the last refused message left unused.
        assert!(allowed as f64 >= most - f64::from(64u32 << 10), "{allowed}");
        // A long idle spell (longer than any lead holds) fills it again.
        let later = t0 + Duration::from_secs(86_400);
        assert_eq!(r.check_data(&policy, later, 4 << 20), Verdict::Allow);
        // (1 µs at 1 MiB/s is 1 byte: rounding's allowance.)
        assert_eq!(r.check_data(&policy, later, 2), Verdict::Reject);
    }

    #[test]
    fn data_bytes_counts_publish_and_signal_data_only() {
        use duplex_hub_proto::Data;
        let request = |command| Ok::<_, ()>(Request { id: None, command });
        let data = Data::Binary(bytes::Bytes::from_static(b"12345"));
        let publish = Command::Publish {
            channel: "c".into(),
            data: data.clone(),
            key: None,
        };
        let signal = Command::Signal {
            channel: "c".into(),
            data,
        };
        assert_eq!(data_bytes(&request(publish)), 5);
        assert_eq!(data_bytes(&request(signal)), 5);
        assert_eq!(data_bytes(&request(Command::Ping)), 0);
        assert_eq!(data_bytes(&Err::<Request, _>(())), 0);
    }

    #[test]
    fn rate_policy_from_config() {
        let limits = LimitsConfig::default();
        let t0 = Instant::now();
        let policy = RatePolicy::from_config(&limits);
        let mut r = RateLimiter::new(t0);
        let burst = limits.burst as usize;
        assert!((0..burst).all(|_| r.check(&policy, t0) == Verdict::Allow));
        for _ in 0..limits.rate_strikes {
            assert_eq!(r.check(&policy, t0), Verdict::Reject);
        }
        assert_eq!(r.check(&policy, t0), Verdict::Close);
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_v4_as_v4() {
        let a = Admission::new(100, 2);
        let x: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let y: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let z: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        let _t = (a.try_admit(x).unwrap(), a.try_admit(y).unwrap());
        assert_eq!(a.try_admit(x).unwrap_err(), Refused::PerIp, "same /64");
        let _u = a.try_admit(z).unwrap();
        let v4: IpAddr = "203.0.113.7".parse().unwrap();
        let mapped: IpAddr = "::ffff:203.0.113.7".parse().unwrap();
        let _v = (a.try_admit(v4).unwrap(), a.try_admit(mapped).unwrap());
        assert_eq!(a.try_admit(v4).unwrap_err(), Refused::PerIp);
        assert_eq!(a.current_for(mapped), 2);
    }
}
