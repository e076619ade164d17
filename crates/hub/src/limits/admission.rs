//! Admission: the node-wide limits on connections in total and per client
//! address, and on new connections per second per client address, with an
//! RAII [`Ticket`] per admitted connection.
//!
//! Invariants: [`Admission`] never has more than `max_total` tickets alive,
//! nor more than `max_per_ip` for one address (IPv6 addresses count per
//! /64), under any interleaving of threads. Its per-address map holds
//! exactly the addresses with at least one live ticket: an entry is removed
//! when its last ticket drops, so the map cannot grow without bound.
//!
//! The connection rate per address follows the core's token bucket
//! (`duplex_hub_proto::rate`): an address admits `burst` new connections at
//! once and `rate` per second after that; a connection refused for any
//! reason takes no token. The map of buckets is bounded: a bucket that is
//! full again carries nothing and is dropped by a sweep, which runs when
//! the map reaches [`MAX_RATE_ENTRIES`] (at most once per refill time, so
//! sweeping cannot be made to run per connection); an address that finds
//! the map full even so is admitted untracked (the total and per-address
//! limits still hold), which takes more distinct addresses in one refill
//! time than the bound to reach.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use duplex_hub_proto::rate::{Rate, TokenBucket};

use super::Nanos;

/// Why [`Admission::try_admit`] refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Refused {
    /// The node is at its connection limit.
    #[error("the server is at its connection limit")]
    Total,
    /// The client's address is at its connection limit.
    #[error("too many connections from this address")]
    PerIp,
    /// The client's address opens connections faster than its rate.
    #[error("too many new connections from this address; slow down")]
    Rate {
        /// Whole seconds until it may connect again (at least 1).
        retry_after: u32,
    },
}

impl Refused {
    /// The HTTP status to refuse the upgrade with: 503 for [`Refused::Total`]
    /// (try another node or later), 429 for [`Refused::PerIp`].
    pub fn status(self) -> http::StatusCode {
        match self {
            Self::Total => http::StatusCode::SERVICE_UNAVAILABLE,
            Self::PerIp | Self::Rate { .. } => http::StatusCode::TOO_MANY_REQUESTS,
        }
    }

    /// A plain-English reason for the response body and logs.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Total => "the server is at its connection limit",
            Self::PerIp => "too many connections from this address",
            Self::Rate { .. } => "too many new connections from this address; slow down",
        }
    }

    /// The `Retry-After` of a 429, in seconds.
    pub fn retry_after(self) -> Option<u32> {
        match self {
            Self::Total => None,
            Self::PerIp => Some(5),
            Self::Rate { retry_after } => Some(retry_after),
        }
    }
}

/// Most addresses whose connection-rate bucket is kept at once.
pub(crate) const MAX_RATE_ENTRIES: usize = 100_000;

/// Node-wide connection limits: in total and per client address. Cheap to
/// clone (clones share the counts) and safe to use from any thread.
///
/// Addresses are counted by their key: an IPv4 address (an IPv4-mapped IPv6
/// address counts as its IPv4 address), or for IPv6 its /64 prefix, since
/// one host commonly holds a whole /64 and could otherwise step around the
/// limit.
#[derive(Debug, Clone)]
pub(crate) struct Admission {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    max_total: usize,
    max_per_ip: usize,
    /// New connections per address: none when off.
    rate: Option<Rate>,
    /// The most buckets kept ([`MAX_RATE_ENTRIES`]; tests lower it).
    max_rate_entries: usize,
    state: Mutex<State>,
    /// A copy of `state.total`, for [`Admission::current`] without the lock.
    current: AtomicUsize,
    /// Woken when the last ticket is released (see [`Admission::all_released`]).
    released: tokio::sync::Notify,
}

#[derive(Debug, Default)]
struct State {
    total: usize,
    per_ip: HashMap<IpKey, usize>,
    /// Connection-rate buckets of the addresses seen lately.
    buckets: HashMap<IpKey, TokenBucket>,
    /// No sweep of `buckets` before this.
    next_sweep: Option<Nanos>,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // No code panics while holding the lock, so the state is consistent
        // even if the lock were poisoned.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The key an address is counted under: see [`Admission`].
fn ip_key(ip: IpAddr) -> IpKey {
    match ip {
        IpAddr::V4(v4) => IpKey::V4(v4.octets()),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpKey::V4(v4.octets()),
            None => {
                let prefix = (v6.to_bits() >> 64) as u64;
                IpKey::V6(prefix.to_be_bytes())
            }
        },
    }
}

/// What connections are counted by: an IPv4 address, or an IPv6 /64 prefix.
/// Nine bytes, alignment 1: a [`Ticket`] keeps one for its connection's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum IpKey {
    V4([u8; 4]),
    V6([u8; 8]),
}

impl Admission {
    /// Limits of `max_total` connections on the node and `max_per_ip` per
    /// client address.
    pub(crate) fn new(max_total: usize, max_per_ip: usize) -> Self {
        Self {
            shared: Arc::new(Shared {
                max_total,
                max_per_ip,
                rate: None,
                max_rate_entries: MAX_RATE_ENTRIES,
                state: Mutex::new(State::default()),
                current: AtomicUsize::new(0),
                released: tokio::sync::Notify::new(),
            }),
        }
    }

    /// These limits, and at most `rate` new connections per second per
    /// address after a burst of `burst` (a rate of 0 turns it off).
    /// Call before sharing it.
    pub(crate) fn with_rate(mut self, rate: f64, burst: f64) -> Self {
        if let Some(shared) = Arc::get_mut(&mut self.shared) {
            shared.rate = (rate > 0.0).then(|| Rate::new(rate, burst));
        }
        self
    }

    #[cfg(test)]
    fn with_max_rate_entries(mut self, max: usize) -> Self {
        if let Some(shared) = Arc::get_mut(&mut self.shared) {
            shared.max_rate_entries = max;
        }
        self
    }

    /// Admits a connection from `ip` now (see [`Admission::try_admit_at`]).
    pub(crate) fn try_admit(&self, ip: IpAddr) -> Result<Ticket, Refused> {
        self.try_admit_at(ip, super::now())
    }

    /// Admits a connection from `ip` at `now`, or says which limit refuses
    /// it. The slot is held until the [`Ticket`] drops. The total limit is
    /// checked first, the connection rate last.
    pub(crate) fn try_admit_at(&self, ip: IpAddr, now: Nanos) -> Result<Ticket, Refused> {
        let key = ip_key(ip);
        let mut state = self.shared.state();
        if state.total >= self.shared.max_total {
            return Err(Refused::Total);
        }
        let count = state.per_ip.get(&key).copied().unwrap_or(0);
        if count >= self.shared.max_per_ip {
            return Err(Refused::PerIp);
        }
        if let Some(rate) = &self.shared.rate {
            self.take_rate(&mut state, key, rate, now)?;
        }
        let count = state.per_ip.entry(key).or_insert(0);
        *count += 1;
        state.total += 1;
        self.shared.current.store(state.total, Ordering::Relaxed);
        Ok(Ticket {
            shared: self.shared.clone(),
            key,
        })
    }

    /// Takes a token of `key`'s connection-rate bucket at `now` (see the
    /// module docs for the map's bound).
    fn take_rate(
        &self,
        state: &mut State,
        key: IpKey,
        rate: &Rate,
        now: Nanos,
    ) -> Result<(), Refused> {
        if !state.buckets.contains_key(&key) && state.buckets.len() >= self.shared.max_rate_entries
        {
            if state.next_sweep.is_none_or(|at| now >= at) {
                state.buckets.retain(|_, bucket| !bucket.is_full(now));
                let refill = i64::try_from(TokenBucket::refill(rate)).unwrap_or(i64::MAX);
                state.next_sweep = Some(Nanos::new(now.get().saturating_add(refill)));
            }
            if state.buckets.len() >= self.shared.max_rate_entries {
                return Ok(());
            }
        }
        let bucket = state
            .buckets
            .entry(key)
            .or_insert_with(|| TokenBucket::new(now));
        if bucket.try_take(rate, now) {
            return Ok(());
        }
        let wait = bucket.wait(rate, now);
        let retry_after = wait.div_ceil(1_000_000_000).clamp(1, u64::from(u32::MAX));
        Err(Refused::Rate {
            retry_after: u32::try_from(retry_after).unwrap_or(u32::MAX),
        })
    }

    /// Addresses whose connection-rate bucket is kept.
    #[cfg(test)]
    pub(crate) fn rate_entries(&self) -> usize {
        self.shared.state().buckets.len()
    }

    /// Connections admitted and not yet released.
    pub(crate) fn current(&self) -> usize {
        self.shared.current.load(Ordering::Relaxed)
    }

    /// Resolves once no ticket is held (at once if none is).
    pub(crate) async fn all_released(&self) {
        loop {
            // Registered before the check, so a release in between wakes it.
            let released = self.shared.released.notified();
            if self.current() == 0 {
                return;
            }
            released.await;
        }
    }

    #[cfg(test)]
    /// Connections admitted and not yet released from `ip`'s key.
    pub(crate) fn current_for(&self, ip: IpAddr) -> usize {
        let state = self.shared.state();
        state.per_ip.get(&ip_key(ip)).copied().unwrap_or(0)
    }

    /// Addresses (keys) with at least one connection: the size of the
    /// per-address map.
    #[cfg(test)]
    pub(crate) fn addresses(&self) -> usize {
        self.shared.state().per_ip.len()
    }
}

/// One admitted connection's slot in an [`Admission`]; dropping it releases
/// the slot. Keep it alive exactly as long as the connection.
#[derive(Debug)]
#[must_use = "dropping the ticket releases the connection's slot at once"]
pub(crate) struct Ticket {
    shared: Arc<Shared>,
    key: IpKey,
}

impl Ticket {
    /// The address its connection is counted under: the IPv4 address, or
    /// the IPv6 /64 prefix (the rest zero).
    pub(crate) fn address(&self) -> IpAddr {
        match self.key {
            IpKey::V4(octets) => IpAddr::from(octets),
            IpKey::V6(prefix) => IpAddr::from(std::net::Ipv6Addr::from_bits(
                u128::from(u64::from_be_bytes(prefix)) << 64,
            )),
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut state = self.shared.state();
        if let Some(count) = state.per_ip.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                state.per_ip.remove(&self.key);
            }
        }
        state.total -= 1;
        self.shared.current.store(state.total, Ordering::Relaxed);
        if state.total == 0 {
            self.shared.released.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[tokio::test]
    async fn all_released_waits_for_the_last_ticket() {
        let admission = Admission::new(10, 10);
        // None held: at once.
        admission.all_released().await;
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let (a, b) = (
            admission.try_admit(ip).unwrap(),
            admission.try_admit(ip).unwrap(),
        );
        let waiter = tokio::spawn({
            let admission = admission.clone();
            async move { admission.all_released().await }
        });
        tokio::task::yield_now().await;
        drop(a);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "one ticket is still held");
        drop(b);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("woken by the last release")
            .unwrap();
    }

    #[test]
    fn a_ticket_is_small() {
        // One lives as long as each connection.
        assert!(std::mem::size_of::<Ticket>() <= 24);
    }

    #[test]
    fn admission_limits_and_releases() {
        let a = Admission::new(3, 2);
        let ip1 = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
        let ip2 = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2));
        let t1 = a.try_admit(ip1).unwrap();
        let t2 = a.try_admit(ip1).unwrap();
        assert_eq!(a.try_admit(ip1).unwrap_err(), Refused::PerIp);
        let t3 = a.try_admit(ip2).unwrap();
        assert_eq!(a.current(), 3);
        assert_eq!(a.try_admit(ip2).unwrap_err(), Refused::Total);
        assert_eq!(a.current_for(ip1), 2);
        assert_eq!(a.addresses(), 2);
        drop(t1);
        assert_eq!(a.current(), 2);
        let t4 = a.try_admit(ip1).unwrap();
        drop((t2, t4));
        assert_eq!(a.current_for(ip1), 0);
        assert_eq!(
            a.addresses(),
            1,
            "an address with no connection is forgotten"
        );
        drop(t3);
        assert_eq!(a.current(), 0);
        assert_eq!(a.addresses(), 0);
    }

    #[test]
    fn refusals_map_to_statuses() {
        assert_eq!(Refused::Total.status(), 503);
        assert_eq!(Refused::PerIp.status(), 429);
        assert!(!Refused::Total.reason().is_empty());
        assert_eq!(Refused::PerIp.to_string(), Refused::PerIp.reason());
    }

    #[test]
    fn admission_per_ip_zero_leaves_no_entry() {
        let a = Admission::new(10, 0);
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        assert_eq!(a.try_admit(ip).unwrap_err(), Refused::PerIp);
        assert_eq!(a.addresses(), 0);
        assert_eq!(a.current(), 0);
    }

    #[test]
    fn admission_is_exact_under_concurrency() {
        use std::sync::atomic::AtomicUsize;
        const THREADS: usize = 8;
        const ROUNDS: usize = 2_000;
        let a = Admission::new(20, 5);
        let peak_total = Arc::new(AtomicUsize::new(0));
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let a = a.clone();
                let peak_total = peak_total.clone();
                std::thread::spawn(move || {
                    let mut held = Vec::new();
                    let mut admitted = 0;
                    for round in 0..ROUNDS {
                        // Four addresses shared among the threads.
                        let ip = IpAddr::V4(Ipv4Addr::new(10, 0, 0, ((t + round) % 4) as u8));
                        if let Ok(ticket) = a.try_admit(ip) {
                            admitted += 1;
                            assert!(a.current_for(ip) <= 5);
                            held.push(ticket);
                        }
                        peak_total.fetch_max(a.current(), Ordering::Relaxed);
                        if round % 3 == 0 {
                            held.clear();
                        }
                    }
                    admitted
                })
            })
            .collect();
        let admitted: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert!(admitted > 0);
        assert!(peak_total.load(Ordering::Relaxed) <= 20);
        assert_eq!(a.current(), 0);
        assert_eq!(a.addresses(), 0);
    }

    #[test]
    fn new_connections_per_address_follow_the_bucket() {
        let a = Admission::new(1000, 1000).with_rate(2.0, 3.0);
        let (x, y): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        let t0 = Nanos::new(5_000_000_000);
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(a.try_admit_at(x, t0).unwrap());
        }
        assert_eq!(
            a.try_admit_at(x, t0).unwrap_err(),
            Refused::Rate { retry_after: 1 },
            "a burst of 3, then 2 per second"
        );
        assert_eq!(Refused::Rate { retry_after: 1 }.status(), 429);
        // Another address is not affected.
        held.push(a.try_admit_at(y, t0).unwrap());
        // Half a second later, one more.
        let later = Nanos::new(t0.get() + 500_000_000);
        held.push(a.try_admit_at(x, later).unwrap());
        assert!(a.try_admit_at(x, later).is_err());
        // A refusal for the count takes no token.
        let b = Admission::new(1000, 1).with_rate(1.0, 1.0);
        let _one = b.try_admit_at(x, t0).unwrap();
        let next = Nanos::new(t0.get() + 1_000_000_000);
        assert_eq!(b.try_admit_at(x, next).unwrap_err(), Refused::PerIp);
        drop(_one);
        assert!(b.try_admit_at(x, next).is_ok(), "the token was still there");
        // Off: no bucket kept.
        let off = Admission::new(10, 10).with_rate(0.0, 5.0);
        let _t = off.try_admit_at(x, t0).unwrap();
        assert_eq!(off.rate_entries(), 0);
    }

    #[test]
    fn the_rate_buckets_are_bounded() {
        let a = Admission::new(100_000, 10)
            .with_rate(10.0, 1.0)
            .with_max_rate_entries(4);
        let t0 = Nanos::new(1_000_000_000);
        let ip = |i: u8| IpAddr::V4(Ipv4Addr::new(198, 51, 100, i));
        for i in 0..4 {
            drop(a.try_admit_at(ip(i), t0).unwrap());
        }
        assert_eq!(a.rate_entries(), 4);
        // Full map, nothing refilled yet: admitted untracked.
        drop(a.try_admit_at(ip(9), t0).unwrap());
        assert_eq!(a.rate_entries(), 4);
        // Once the buckets are full again, a sweep drops them.
        let later = Nanos::new(t0.get() + 100_000_000);
        drop(a.try_admit_at(ip(10), later).unwrap());
        assert_eq!(a.rate_entries(), 1, "swept, then the new one");
        // The address limited before is still limited while tracked.
        assert!(matches!(
            a.try_admit_at(ip(10), later),
            Err(Refused::Rate { .. })
        ));
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
