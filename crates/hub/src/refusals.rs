//! Logging refused and cut-off connections at `info` without letting a
//! flood flood the log.
//!
//! Invariants:
//! - At most one line per client address (an IPv4 address, an IPv6 /64, as
//!   the connection limits count them) per [`INTERVAL`]; the lines in
//!   between are dropped and counted, and the next line says how many.
//! - The memory it holds is bounded: at most [`MAX_ADDRESSES`] addresses are
//!   remembered; when that many logged within the interval, further
//!   addresses are not logged until the oldest expire.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One line per address per this interval.
pub(crate) const INTERVAL: Duration = Duration::from_secs(10);

/// The most addresses remembered at once.
pub(crate) const MAX_ADDRESSES: usize = 4096;

/// Which addresses logged lately, and how many lines each had dropped.
#[derive(Debug, Default)]
pub(crate) struct RefusalLog {
    seen: Mutex<HashMap<IpAddr, (Instant, u64)>>,
}

impl RefusalLog {
    /// Whether a line about `address` may be logged now: `Some(dropped)`,
    /// the lines about it dropped since its last one, or `None` to drop
    /// this one.
    pub(crate) fn admit(&self, address: IpAddr) -> Option<u64> {
        self.admit_at(address, Instant::now())
    }

    fn admit_at(&self, address: IpAddr, now: Instant) -> Option<u64> {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, dropped)) = seen.get_mut(&address) {
            if now.duration_since(*at) < INTERVAL {
                *dropped += 1;
                return None;
            }
            let before = *dropped;
            *at = now;
            *dropped = 0;
            return Some(before);
        }
        if seen.len() >= MAX_ADDRESSES {
            seen.retain(|_, (at, _)| now.duration_since(*at) < INTERVAL);
            if seen.len() >= MAX_ADDRESSES {
                return None;
            }
        }
        seen.insert(address, (now, 0));
        Some(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_address_per_interval_and_the_dropped_are_counted() {
        let log = RefusalLog::default();
        let start = Instant::now();
        let a: IpAddr = [127, 0, 0, 1].into();
        let b: IpAddr = [127, 0, 0, 2].into();
        assert_eq!(log.admit_at(a, start), Some(0));
        assert_eq!(log.admit_at(a, start + Duration::from_secs(1)), None);
        assert_eq!(log.admit_at(a, start + Duration::from_secs(2)), None);
        assert_eq!(log.admit_at(b, start + Duration::from_secs(2)), Some(0));
        assert_eq!(log.admit_at(a, start + INTERVAL), Some(2));
        assert_eq!(log.admit_at(a, start + INTERVAL), None);
    }

    #[test]
    fn memory_is_bounded_by_the_addresses_it_remembers() {
        let log = RefusalLog::default();
        let start = Instant::now();
        for n in 0..MAX_ADDRESSES as u32 {
            assert_eq!(log.admit_at(IpAddr::from(n.to_be_bytes()), start), Some(0));
        }
        let one_more: IpAddr = [255, 255, 255, 255].into();
        assert_eq!(log.admit_at(one_more, start), None);
        assert_eq!(log.admit_at(one_more, start + INTERVAL), Some(0));
        assert!(log.seen.lock().unwrap().len() <= MAX_ADDRESSES);
    }
}
