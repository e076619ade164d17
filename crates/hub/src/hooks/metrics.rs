//! The proxy hooks' metrics, rendered with the hub's (`/metrics`):
//!
//! - `duplex_hook_requests_total{hook, outcome}`: answers read, by what
//!   the backend decided (`accept`, `refuse`, `disconnect`);
//! - `duplex_hook_failures_total{hook, kind}`: requests without a usable
//!   answer, by [`Failure`] kind (`busy`, `timeout`, `unreachable`,
//!   `too_large`, `status`, `bad_answer`);
//! - `duplex_hook_duration_seconds{hook}`: a histogram of the time from
//!   sending a request to its answer (or its failure), waiting for a slot
//!   not included;
//! - `duplex_hook_in_flight{hook}` and `duplex_hook_waiting{hook}`: gauges
//!   of the requests being sent and of those waiting for a slot (the
//!   queue's depth).
//!
//! Invariants: as the hub's other metrics (see [`crate::metrics`]), every
//! update is a few relaxed atomic operations, every label value is known in
//! advance ([`Hook::ALL`], [`Failure::ALL`], three outcomes), and every
//! series is rendered, zeros included.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use duplex_hub_proto::hooks::{Failure, Hook};

use crate::metrics::{BUCKETS, Histogram, LATENCY_BOUNDS_NS, header};

const HOOKS: usize = Hook::ALL.len();
const KINDS: usize = Failure::ALL.len();

/// What the backend decided, for `duplex_hook_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Accept,
    Refuse,
    Disconnect,
}

impl Outcome {
    const ALL: [Self; 3] = [Self::Accept, Self::Refuse, Self::Disconnect];

    fn as_str(self) -> &'static str {
        match self {
            Self::Accept => "accept",
            Self::Refuse => "refuse",
            Self::Disconnect => "disconnect",
        }
    }
}

/// The counters, gauges and histograms of every hook.
#[derive(Debug)]
pub(crate) struct HookMetrics {
    outcomes: [[AtomicU64; 3]; HOOKS],
    failures: [[AtomicU64; KINDS]; HOOKS],
    duration: [Histogram; HOOKS],
    in_flight: [AtomicI64; HOOKS],
    waiting: [AtomicI64; HOOKS],
}

impl Default for HookMetrics {
    fn default() -> Self {
        Self {
            outcomes: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))),
            failures: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))),
            duration: std::array::from_fn(|_| Histogram::new()),
            in_flight: std::array::from_fn(|_| AtomicI64::new(0)),
            waiting: std::array::from_fn(|_| AtomicI64::new(0)),
        }
    }
}

impl HookMetrics {
    /// The backend answered `hook` and decided `outcome`.
    pub(crate) fn answered(&self, hook: Hook, outcome: Outcome) {
        self.outcomes[hook.index()][outcome as usize].fetch_add(1, Relaxed);
    }

    /// `hook` got no usable answer.
    pub(crate) fn failed(&self, hook: Hook, failure: Failure) {
        self.failures[hook.index()][failure.index()].fetch_add(1, Relaxed);
    }

    /// A request of `hook` took `elapsed` (sent to answered or failed).
    pub(crate) fn took(&self, hook: Hook, elapsed: Duration) {
        self.duration[hook.index()].observe(elapsed);
    }

    /// A request of `hook` starts (`1`) or stops (`-1`) waiting for a slot.
    pub(crate) fn waiting(&self, hook: Hook, delta: i64) {
        self.waiting[hook.index()].fetch_add(delta, Relaxed);
    }

    /// A request of `hook` is sent (`1`) or done (`-1`).
    pub(crate) fn in_flight(&self, hook: Hook, delta: i64) {
        self.in_flight[hook.index()].fetch_add(delta, Relaxed);
    }

    /// Appends the hook families to a Prometheus text exposition.
    pub(crate) fn render(&self, w: &mut String) {
        header(
            w,
            "duplex_hook_requests_total",
            "counter",
            "Proxy hook answers read, by hook and by what the backend decided.",
        );
        for hook in Hook::ALL {
            for outcome in Outcome::ALL {
                let value = self.outcomes[hook.index()][outcome as usize].load(Relaxed);
                let _ = writeln!(
                    w,
                    "duplex_hook_requests_total{{hook=\"{}\",outcome=\"{}\"}} {value}",
                    hook.as_str(),
                    outcome.as_str()
                );
            }
        }
        header(
            w,
            "duplex_hook_failures_total",
            "counter",
            "Proxy hook requests without a usable answer, by hook and kind.",
        );
        for hook in Hook::ALL {
            for kind in Failure::ALL {
                let value = self.failures[hook.index()][kind.index()].load(Relaxed);
                let _ = writeln!(
                    w,
                    "duplex_hook_failures_total{{hook=\"{}\",kind=\"{}\"}} {value}",
                    hook.as_str(),
                    kind.as_str()
                );
            }
        }
        for (name, help, gauges) in [
            (
                "duplex_hook_in_flight",
                "Proxy hook requests being sent, by hook.",
                &self.in_flight,
            ),
            (
                "duplex_hook_waiting",
                "Proxy hook requests waiting for a free slot (max_concurrency), by hook.",
                &self.waiting,
            ),
        ] {
            header(w, name, "gauge", help);
            for hook in Hook::ALL {
                let value = gauges[hook.index()].load(Relaxed);
                let _ = writeln!(w, "{name}{{hook=\"{}\"}} {value}", hook.as_str());
            }
        }
        let name = "duplex_hook_duration_seconds";
        header(
            w,
            name,
            "histogram",
            "Time from sending a proxy hook request to its answer or failure, by hook.",
        );
        for hook in Hook::ALL {
            let histogram = &self.duration[hook.index()];
            let hook = hook.as_str();
            let mut cumulative = 0u64;
            for (i, count) in histogram.counts().iter().enumerate() {
                cumulative += count;
                if i + 1 < BUCKETS {
                    let le = LATENCY_BOUNDS_NS[i] as f64 / 1e9;
                    let _ = writeln!(
                        w,
                        "{name}_bucket{{hook=\"{hook}\",le=\"{le}\"}} {cumulative}"
                    );
                } else {
                    let _ = writeln!(
                        w,
                        "{name}_bucket{{hook=\"{hook}\",le=\"+Inf\"}} {cumulative}"
                    );
                }
            }
            let _ = writeln!(w, "{name}_sum{{hook=\"{hook}\"}} {}", histogram.sum_secs());
            let _ = writeln!(w, "{name}_count{{hook=\"{hook}\"}} {cumulative}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_series_is_rendered_and_moves() {
        let metrics = HookMetrics::default();
        let mut before = String::new();
        metrics.render(&mut before);
        assert!(before.contains("duplex_hook_failures_total{hook=\"rpc\",kind=\"timeout\"} 0"));
        assert!(before.contains("duplex_hook_duration_seconds_count{hook=\"connect\"} 0"));
        metrics.failed(Hook::Rpc, Failure::Timeout);
        metrics.answered(Hook::Publish, Outcome::Refuse);
        metrics.took(Hook::Connect, Duration::from_millis(3));
        metrics.in_flight(Hook::Subscribe, 1);
        metrics.waiting(Hook::Subscribe, 2);
        let mut after = String::new();
        metrics.render(&mut after);
        for line in [
            "duplex_hook_failures_total{hook=\"rpc\",kind=\"timeout\"} 1",
            "duplex_hook_requests_total{hook=\"publish\",outcome=\"refuse\"} 1",
            "duplex_hook_duration_seconds_bucket{hook=\"connect\",le=\"0.005\"} 1",
            "duplex_hook_duration_seconds_count{hook=\"connect\"} 1",
            "duplex_hook_in_flight{hook=\"subscribe\"} 1",
            "duplex_hook_waiting{hook=\"subscribe\"} 2",
        ] {
            assert!(after.contains(line), "{line} in\n{after}");
        }
        assert_eq!(before.lines().count(), after.lines().count());
    }
}
