//! A connection's command and data rates, and the strikes rule that closes
//! a client that keeps breaking them.
//!
//! Nothing here reads a clock: the driver passes `now` as a [`Nanos`], a
//! point on its monotonic clock (one read per command at most, or the time
//! its I/O layer already has).
//!
//! - [`TokenBucket`]: a rate limit's per-connection state, 8 bytes,
//!   following a [`Rate`] shared by all connections.
//! - [`RateLimiter`]: a connection's state (16 bytes) under the hub's
//!   [`RatePolicy`]: allow, refuse with `rate_limited`, or close
//!   ([`Verdict::close`]: 1008). It keeps two buckets: commands per second,
//!   and bytes of `publish` and `signal` data per second (the second in
//!   4 bytes, see [`RateLimiter`]).
//!
//! # Invariants
//! - A [`TokenBucket`] following a [`Rate`] of `rate` and `burst` lets
//!   through at most `burst + rate × t` takes in any interval of length `t`,
//!   and starts full.
//! - [`RateLimiter`]'s byte bucket lets through at most
//!   `bytes_burst + bytes_rate × (t + 1 µs)` bytes of data in any interval
//!   of length `t` (a command whose data would exceed it is refused whole).
//! - [`RateLimiter`]'s rule: a command over either rate is refused
//!   ([`Verdict::Reject`], answered with `rate_limited`) and counts a
//!   *strike*. When the connection's buckets have refilled completely (the
//!   client stayed under the rates for `burst / rate` seconds), its strikes
//!   are forgiven. A command over the rate after `max_strikes` strikes that
//!   were not forgiven gets [`Verdict::Close`] (close the connection with
//!   [`Close::RATE_LIMIT`], 1008), and so does every command after it. So a
//!   client that keeps sending faster than the rate is closed after
//!   `max_strikes` refusals, while one that bursts now and then is only
//!   slowed down.
//! - Times may go backwards (a driver's clocks, a paused test clock): an
//!   earlier `now` than one already seen is treated as that earlier time,
//!   which refuses more, never less.

use crate::message::{Command, Request};
use crate::session::{Close, Refusal};

/// The lowest refill rate a [`TokenBucket`] keeps (per second); lower rates,
/// zero and NaN are raised to it.
const MIN_RATE: f64 = 1e-6;

/// The largest burst a [`TokenBucket`] keeps; larger ones are lowered to it.
const MAX_BURST: f64 = 1e9;

/// A point on the driver's monotonic clock: signed nanoseconds from an
/// origin the driver picks (one per process, so that every connection's
/// times compare), 8 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Nanos(i64);

impl Nanos {
    /// Later than any time a driver passes: a "never" for a full time that
    /// does not fit.
    pub const NEVER: Self = Self(i64::MAX);

    /// `nanos` nanoseconds from the driver's origin (negative: before it).
    pub const fn new(nanos: i64) -> Self {
        Self(nanos)
    }

    /// Nanoseconds from the driver's origin.
    pub const fn get(self) -> i64 {
        self.0
    }

    /// `nanos` later, saturating at [`Nanos::NEVER`].
    fn saturating_add(self, nanos: u64) -> Self {
        Self(
            self.0
                .saturating_add(i64::try_from(nanos).unwrap_or(i64::MAX)),
        )
    }

    /// How far `self` is ahead of `earlier`, 0 if it is not.
    fn ahead_of(self, earlier: Self) -> u64 {
        u64::try_from(i128::from(self.0) - i128::from(earlier.0)).unwrap_or(0)
    }
}

/// A refill rate and a capacity: the policy of a [`TokenBucket`], shared by
/// every bucket that follows it (one per connection).
///
/// Stored for the "generic cell rate algorithm": the interval between
/// takes and the burst.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
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
    pub fn new(rate_per_sec: f64, burst: f64) -> Self {
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
pub struct TokenBucket {
    /// When the bucket is full again if nothing more is taken.
    full_at: Nanos,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(now: Nanos) -> Self {
        Self { full_at: now }
    }

    fn debt(&self, now: Nanos) -> u64 {
        self.full_at.ahead_of(now)
    }

    /// Takes a token if there is one at `now`.
    pub fn try_take(&mut self, rate: &Rate, now: Nanos) -> bool {
        let interval = rate.interval();
        if self.debt(now) > rate.tolerance(interval) {
            return false;
        }
        let full_at = self.full_at.max(now).saturating_add(interval);
        if full_at == Nanos::NEVER {
            // Beyond what a stamp holds (~292 years of debt): refuse.
            return false;
        }
        self.full_at = full_at;
        true
    }

    /// Tokens available at `now`, fractional (between 0 and `burst`).
    pub fn available(&self, rate: &Rate, now: Nanos) -> f64 {
        let interval = rate.interval();
        let burst = f64::from(rate.burst);
        if interval == 0 {
            return burst;
        }
        let debt = self.debt(now) as f64 / interval as f64;
        (burst - debt).clamp(0.0, burst)
    }

    /// Whether the bucket is full at `now`: nothing taken that has not been
    /// refilled.
    pub fn is_full(&self, now: Nanos) -> bool {
        self.full_at <= now
    }

    /// Nanoseconds from `now` until a take succeeds (0: now), for a
    /// refusal's `Retry-After`.
    pub fn wait(&self, rate: &Rate, now: Nanos) -> u64 {
        let interval = rate.interval();
        self.debt(now).saturating_sub(rate.tolerance(interval))
    }

    /// Nanoseconds after a take until the bucket is full again at most:
    /// how long a bucket that refused nothing is worth keeping.
    pub fn refill(rate: &Rate) -> u64 {
        let interval = rate.interval();
        rate.tolerance(interval).saturating_add(interval)
    }
}

/// What to do with a command, as [`RateLimiter::check`] decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Within the rate: handle it.
    Allow,
    /// Over the rate: do not handle it, answer `rate_limited`.
    Reject,
    /// Over the rate again after too many refusals: close with
    /// [`Verdict::close`].
    Close,
}

impl Verdict {
    /// The refusal to answer the command with, if it is refused and the
    /// connection goes on: [`Refusal::RateLimited`] for [`Verdict::Reject`].
    pub fn refusal(self) -> Option<Refusal> {
        (self == Self::Reject).then_some(Refusal::RateLimited)
    }

    /// The close this verdict ends the connection with, if it does:
    /// [`Close::RATE_LIMIT`] for [`Verdict::Close`].
    pub fn close(self) -> Option<Close> {
        (self == Self::Close).then_some(Close::RATE_LIMIT)
    }
}

/// The hub's command-rate policy, one for every connection: the [`Rate`] of
/// commands, the [`Rate`] of data bytes, and how many refusals close the
/// connection. See the module docs for the rule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RatePolicy {
    rate: Rate,
    /// Tokens are bytes of `publish` and `signal` data.
    bytes: Rate,
    max_strikes: u32,
}

impl RatePolicy {
    /// `rate_per_sec` commands per second with bursts of `burst` (see
    /// [`Rate::new`]), closing after `max_strikes` refusals not forgiven;
    /// data bytes are not limited (see [`RatePolicy::with_bytes`]).
    pub fn new(rate_per_sec: f64, burst: f64, max_strikes: u32) -> Self {
        Self {
            rate: Rate::new(rate_per_sec, burst),
            bytes: Rate::new(f64::INFINITY, MAX_BURST),
            max_strikes,
        }
    }

    /// This policy with `bytes_per_sec` bytes of data per second and bursts
    /// of `burst` bytes (see [`Rate::new`]). A burst should be at least the
    /// largest message, or that message never passes.
    pub fn with_bytes(self, bytes_per_sec: f64, burst: f64) -> Self {
        Self {
            bytes: Rate::new(bytes_per_sec, burst),
            ..self
        }
    }
}

/// The bytes of data a command carries, as the byte rate counts them: the
/// `data` of a `publish` or a `signal`, 0 for anything else (a command that
/// did not decode included).
pub fn data_bytes<E>(request: &Result<Request, E>) -> usize {
    match request {
        Ok(Request {
            command: Command::Publish { data, .. } | Command::Signal { data, .. },
            ..
        }) => data.len(),
        Ok(Request {
            command: Command::Rpc { data, .. },
            ..
        }) => data.as_str().len(),
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
pub struct RateLimiter {
    bucket: TokenBucket,
    /// When the byte bucket is full again, minus `bucket.full_at`, in
    /// [`LEAD_UNIT_NS`].
    bytes_lead: i32,
    strikes: u32,
}

impl RateLimiter {
    /// A limiter with full buckets and no strikes.
    pub fn new(now: Nanos) -> Self {
        Self {
            bucket: TokenBucket::new(now),
            bytes_lead: 0,
            strikes: 0,
        }
    }

    /// The verdict of `policy` on one command without data arriving at
    /// `now`.
    pub fn check(&mut self, policy: &RatePolicy, now: Nanos) -> Verdict {
        self.check_data(policy, now, 0)
    }

    /// The verdict of `policy` on one command carrying `bytes` of data (see
    /// [`data_bytes`]) arriving at `now`: it takes a command token and
    /// `bytes` byte tokens, or is refused.
    pub fn check_data(&mut self, policy: &RatePolicy, now: Nanos, bytes: usize) -> Verdict {
        if self.strikes > policy.max_strikes {
            return Verdict::Close;
        }
        let at_ns = now.get();
        // The byte bucket's full time (on the grid of lead units), and its
        // debt at `now`.
        let full_ns = units(self.bucket.full_at.get())
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
        let lead =
            units(at_ns.saturating_add(debt)).saturating_sub(units(self.bucket.full_at.get()));
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

    /// Refusals counted and not yet forgiven.
    pub fn strikes(&self) -> u32 {
        self.strikes
    }
}

/// `ns` in [`LEAD_UNIT_NS`], rounded up.
fn units(ns: i64) -> i64 {
    ns.div_euclid(LEAD_UNIT_NS) + i64::from(ns.rem_euclid(LEAD_UNIT_NS) != 0)
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

    /// Refused commands tolerated before closing, in these tests.
    const DEFAULT_MAX_STRIKES: u32 = 10;

    fn ms(n: u64) -> Nanos {
        Nanos::new(i64::try_from(n).unwrap() * 1_000_000)
    }

    fn secs(n: u64) -> Nanos {
        ms(n * 1000)
    }

    /// `t0` plus `d`.
    fn at(t0: Nanos, d: Nanos) -> Nanos {
        Nanos::new(t0.get() + d.get())
    }

    #[test]
    fn a_bucket_says_how_long_until_its_next_take() {
        let rate = Rate::new(10.0, 3.0);
        let t0 = Nanos::new(1_000);
        let mut bucket = TokenBucket::new(t0);
        assert_eq!(bucket.wait(&rate, t0), 0);
        for _ in 0..3 {
            assert!(bucket.try_take(&rate, t0));
        }
        assert!(!bucket.try_take(&rate, t0));
        // One token every 100 ms: the next in 100 ms, not sooner.
        let wait = bucket.wait(&rate, t0);
        assert_eq!(wait, 100_000_000);
        let just_before = Nanos::new(t0.get() + wait as i64 - 1);
        assert!(!bucket.clone().try_take(&rate, just_before));
        assert!(
            bucket
                .clone()
                .try_take(&rate, Nanos::new(t0.get() + wait as i64))
        );
        // Full again at most `refill` after the last take.
        let full = Nanos::new(t0.get() + TokenBucket::refill(&rate) as i64);
        assert!(bucket.is_full(full));
        assert!(!bucket.is_full(Nanos::new(full.get() - 1)));
    }

    #[test]
    fn rate_state_is_small() {
        // One of each lives in every connection; the policy is shared.
        assert_eq!(size_of::<TokenBucket>(), 8);
        assert_eq!(size_of::<RateLimiter>(), 16);
    }

    #[test]
    fn bucket_starts_full_then_refills_at_rate() {
        let t0 = Nanos::new(123_456_789);
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
        assert!(!b.try_take(&rate, at(t0, ms(249))));
        assert!(b.try_take(&rate, at(t0, ms(250))));
        assert!(!b.try_take(&rate, at(t0, ms(250))));
        assert!(b.try_take(&rate, at(t0, ms(1000))));
        assert!(b.try_take(&rate, at(t0, ms(1000))));
        assert!(b.try_take(&rate, at(t0, ms(1000))));
        assert!(!b.try_take(&rate, at(t0, ms(1000))));
        // Long idle: full again, never more than burst.
        let later = at(t0, secs(3600));
        assert!(b.is_full(later));
        assert_eq!(b.available(&rate, later), 10.0);
        let taken = (0..100).filter(|_| b.try_take(&rate, later)).count();
        assert_eq!(taken, 10);
    }

    #[test]
    fn bucket_never_exceeds_burst_plus_rate_times_t() {
        // Steady requests every 1 ms for 10 s against 100/s, burst 200.
        let t0 = Nanos::new(123_456_789);
        let rate = Rate::new(100.0, 200.0);
        let mut b = TokenBucket::new(t0);
        let mut allowed = 0;
        for i in 0..10_000u64 {
            if b.try_take(&rate, at(t0, ms(i))) {
                allowed += 1;
            }
        }
        // 200 + 100/s × 9.999 s, give or take one interval.
        assert!((1198..=1201).contains(&allowed), "{allowed}");
    }

    #[test]
    fn bucket_fractional_and_odd_settings() {
        let t0 = Nanos::new(123_456_789);
        let rate = Rate::new(3.0, 1.0);
        let mut b = TokenBucket::new(t0);
        assert!(b.try_take(&rate, t0));
        assert!(!b.try_take(&rate, at(t0, ms(333))));
        assert!(b.try_take(&rate, at(t0, ms(334))));

        let rate_never = Rate::new(0.0, 2.0);
        let mut never = TokenBucket::new(t0);
        assert!(never.try_take(&rate_never, t0));
        assert!(never.try_take(&rate_never, t0));
        assert!(!never.try_take(&rate_never, at(t0, secs(86_400))));
        let rate_nan = Rate::new(f64::NAN, f64::NAN);
        let mut nan = TokenBucket::new(t0);
        assert!(nan.try_take(&rate_nan, t0));
        assert!(!nan.try_take(&rate_nan, at(t0, ms(10))));

        let rate_unlimited = Rate::new(f64::INFINITY, 1.0);
        let mut unlimited = TokenBucket::new(t0);
        assert!((0..1000).all(|_| unlimited.try_take(&rate_unlimited, t0)));

        // An earlier `now` than one already seen is handled conservatively.
        let rate = Rate::new(1.0, 1.0);
        let mut b = TokenBucket::new(at(t0, ms(1000)));
        assert!(!b.try_take(&rate, t0));
        assert!(b.try_take(&rate, at(t0, ms(1000))));
    }

    #[test]
    fn rate_limiter_rejects_then_closes() {
        let t0 = Nanos::new(123_456_789);
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
        assert_eq!(r.check(&policy, at(t0, secs(60))), Verdict::Close);
    }

    #[test]
    fn rate_limiter_closes_a_client_that_keeps_sending_too_fast() {
        // Twice the rate: half the commands get through, which never lets the
        // bucket refill, so strikes add up.
        let t0 = Nanos::new(123_456_789);
        let policy = RatePolicy::new(10.0, 5.0, DEFAULT_MAX_STRIKES);
        let mut r = RateLimiter::new(t0);
        let mut verdicts = Vec::new();
        for i in 0..1000u64 {
            let v = r.check(&policy, at(t0, ms(i * 50)));
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
        let t0 = Nanos::new(123_456_789);
        let policy = RatePolicy::new(10.0, 5.0, 2);
        let mut r = RateLimiter::new(t0);
        for round in 0..10u64 {
            // A burst of 7: 5 allowed, 2 refused (strikes 1 and 2).
            let t = at(t0, secs(round));
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
        let t0 = Nanos::new(123_456_789);
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
        assert_eq!(r.check_data(&policy, at(t0, ms(500)), 501), Verdict::Reject);
        assert_eq!(r.check_data(&policy, at(t0, ms(500)), 500), Verdict::Allow);
        assert_eq!(r.check_data(&policy, at(t0, ms(500)), 1), Verdict::Reject);
        assert_eq!(r.strikes(), 3);
        // The same strikes rule as the command rate: the next refusal closes.
        assert_eq!(r.check_data(&policy, at(t0, ms(500)), 1), Verdict::Close);
        // Strikes are forgiven only when both buckets are full again.
        let mut r = RateLimiter::new(t0);
        assert_eq!(r.check_data(&policy, t0, 4000), Verdict::Allow);
        assert_eq!(r.check_data(&policy, t0, 1), Verdict::Reject);
        assert_eq!(r.check_data(&policy, at(t0, ms(3999)), 0), Verdict::Allow);
        assert_eq!(r.strikes(), 1, "the byte bucket is not full yet");
        assert_eq!(
            r.check_data(&policy, at(t0, ms(4000)), 4000),
            Verdict::Allow
        );
        assert_eq!(r.strikes(), 0);
        // A command refused for its rate takes no bytes.
        let policy = RatePolicy::new(1.0, 1.0, 10).with_bytes(1000.0, 1000.0);
        let mut r = RateLimiter::new(t0);
        assert_eq!(r.check_data(&policy, t0, 10), Verdict::Allow);
        assert_eq!(r.check_data(&policy, t0, 990), Verdict::Reject);
        assert_eq!(
            r.check_data(&policy, at(t0, ms(1000)), 1000),
            Verdict::Allow
        );
    }

    #[test]
    fn data_never_exceeds_burst_plus_rate_times_t() {
        // 1 MiB/s, bursts of 4 MiB, against publishes of 1 to 64 KiB every
        // millisecond (far above the rate) for 10 s, and after idle spells.
        let t0 = Nanos::new(123_456_789);
        let (rate, burst) = (f64::from(1u32 << 20), f64::from(4u32 << 20));
        let policy = RatePolicy::new(1e6, 1e6, u32::MAX - 1).with_bytes(rate, burst);
        let mut r = RateLimiter::new(t0);
        let mut allowed = 0usize;
        let mut size = 12_345usize;
        for i in 0..10_000u64 {
            size = (size * 7_919 + 13) % (64 << 10) + 1;
            if r.check_data(&policy, at(t0, ms(i)), size) == Verdict::Allow {
                allowed += size;
            }
        }
        let most = burst + rate * (9.999 + 1e-6);
        assert!(allowed as f64 <= most, "{allowed} > {most}");
        // Less only by what the last refused message left unused.
        assert!(allowed as f64 >= most - f64::from(64u32 << 10), "{allowed}");
        // A long idle spell (longer than any lead holds) fills it again.
        let later = at(t0, secs(86_400));
        assert_eq!(r.check_data(&policy, later, 4 << 20), Verdict::Allow);
        // (1 µs at 1 MiB/s is 1 byte: rounding's allowance.)
        assert_eq!(r.check_data(&policy, later, 2), Verdict::Reject);
    }

    #[test]
    fn data_bytes_counts_publish_and_signal_data_only() {
        use crate::Data;
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
    fn the_close_verdict_closes_with_the_rate_limit_close() {
        assert_eq!(Verdict::Close.close(), Some(Close::RATE_LIMIT));
        assert_eq!(Verdict::Reject.close(), None);
        assert_eq!(Verdict::Allow.close(), None);
        assert_eq!(Verdict::Reject.refusal(), Some(Refusal::RateLimited));
        assert_eq!(Verdict::Close.refusal(), None);
        assert_eq!(
            Refusal::RateLimited.code(),
            crate::ErrorCode::RateLimited,
            "the reply's code"
        );
        assert_eq!(Close::RATE_LIMIT.code, crate::close::POLICY);
    }

    #[test]
    fn times_far_apart_and_before_the_origin_saturate() {
        let rate = Rate::new(1.0, 2.0);
        // Before the origin: fine.
        let t0 = Nanos::new(-5_000_000_000);
        let mut b = TokenBucket::new(t0);
        assert!(b.try_take(&rate, t0) && b.try_take(&rate, t0));
        assert!(!b.try_take(&rate, t0));
        assert!(b.try_take(&rate, Nanos::new(0)));
        // Near the end of time: a take that would pass NEVER is refused.
        let end = Nanos::new(i64::MAX - 10);
        let mut b = TokenBucket::new(end);
        assert!(!b.try_take(&rate, end));
        // The limiter at both ends of the range neither panics nor allows
        // more than the burst.
        let policy = RatePolicy::new(1.0, 2.0, 1).with_bytes(10.0, 10.0);
        for t in [Nanos::new(i64::MIN), Nanos::new(i64::MIN + 1), end] {
            let mut r = RateLimiter::new(t);
            let allowed = (0..10)
                .filter(|_| r.check_data(&policy, t, 1) == Verdict::Allow)
                .count();
            assert!(allowed <= 2, "{allowed} at {t:?}");
        }
    }
}
