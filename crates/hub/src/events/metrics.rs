//! The webhooks' metrics, rendered after the hub's own on `/metrics`.
//!
//! Invariants: every event the rules decide is counted once as emitted,
//! then (on the node that delivers it) as delivered, or as dropped when the
//! queue is full: a dropped event is never silent. Retries count each event
//! of a failed request once per failed attempt. With Redis the queue depth
//! is the cluster's (the stream's length), read by each node as it polls.

use std::fmt::Write;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use duplex_hub_proto::events::EventKind;

const KINDS: usize = EventKind::ALL.len();

/// Upper bounds of the delivery latency buckets, in milliseconds (from the
/// event to the backend's 2xx).
const BOUNDS_MS: [u64; 12] = [
    10, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000, 60_000, 300_000,
];

/// Counters of lifecycle events and their delivery.
#[derive(Debug)]
pub(crate) struct EventMetrics {
    emitted: [AtomicU64; KINDS],
    delivered: [AtomicU64; KINDS],
    retried: [AtomicU64; KINDS],
    dropped: [AtomicU64; KINDS],
    requests_ok: AtomicU64,
    requests_failed: AtomicU64,
    queue_depth: AtomicU64,
    latency: [AtomicU64; BOUNDS_MS.len() + 1],
    latency_sum_ms: AtomicU64,
    declared_dead: AtomicU64,
    taken_over: AtomicU64,
}

fn counters<const N: usize>() -> [AtomicU64; N] {
    std::array::from_fn(|_| AtomicU64::new(0))
}

impl EventMetrics {
    /// All zero.
    pub(crate) fn new() -> Self {
        Self {
            emitted: counters(),
            delivered: counters(),
            retried: counters(),
            dropped: counters(),
            requests_ok: AtomicU64::new(0),
            requests_failed: AtomicU64::new(0),
            queue_depth: AtomicU64::new(0),
            latency: counters(),
            latency_sum_ms: AtomicU64::new(0),
            declared_dead: AtomicU64::new(0),
            taken_over: AtomicU64::new(0),
        }
    }

    /// An event was decided (and queued, unless also [`Self::dropped`]).
    pub(crate) fn emitted(&self, kind: EventKind) {
        self.emitted[kind.index()].fetch_add(1, Relaxed);
    }

    /// An event was dropped: the queue was full.
    pub(crate) fn dropped(&self, kind: EventKind) {
        self.dropped[kind.index()].fetch_add(1, Relaxed);
    }

    /// An event was in a request that failed (it will be retried).
    pub(crate) fn retried(&self, kind: EventKind) {
        self.retried[kind.index()].fetch_add(1, Relaxed);
    }

    /// An event was delivered, `age` after it happened.
    pub(crate) fn delivered(&self, kind: EventKind, age: Duration) {
        self.delivered[kind.index()].fetch_add(1, Relaxed);
        let ms = u64::try_from(age.as_millis()).unwrap_or(u64::MAX);
        let bucket = BOUNDS_MS.partition_point(|&bound| bound < ms);
        self.latency[bucket].fetch_add(1, Relaxed);
        self.latency_sum_ms.fetch_add(ms, Relaxed);
    }

    /// A request ended: 2xx (`ok`) or not.
    pub(crate) fn request(&self, ok: bool) {
        let counter = if ok {
            &self.requests_ok
        } else {
            &self.requests_failed
        };
        counter.fetch_add(1, Relaxed);
    }

    /// The events waiting for delivery.
    pub(crate) fn set_queue_depth(&self, depth: u64) {
        self.queue_depth.store(depth, Relaxed);
    }

    /// This node declared a dead node's connections.
    pub(crate) fn declared_dead(&self) {
        self.declared_dead.fetch_add(1, Relaxed);
    }

    /// This node took over `count` events another node had taken and not
    /// confirmed.
    pub(crate) fn taken_over(&self, count: usize) {
        self.taken_over.fetch_add(count as u64, Relaxed);
    }

    /// Appends the Prometheus text.
    pub(crate) fn render(&self, w: &mut String) {
        for (name, help, values) in [
            (
                "duplex_webhook_events_emitted_total",
                "Lifecycle events decided on this node, by type.",
                &self.emitted,
            ),
            (
                "duplex_webhook_events_delivered_total",
                "Lifecycle events this node delivered (2xx), by type.",
                &self.delivered,
            ),
            (
                "duplex_webhook_events_retried_total",
                "Lifecycle events in a request that failed and is retried, by type.",
                &self.retried,
            ),
            (
                "duplex_webhook_events_dropped_total",
                "Lifecycle events dropped because the queue was full, by type.",
                &self.dropped,
            ),
        ] {
            header(w, name, "counter", help);
            for kind in EventKind::ALL {
                let value = values[kind.index()].load(Relaxed);
                let _ = writeln!(w, "{name}{{type=\"{}\"}} {value}", kind.as_str());
            }
        }
        header(
            w,
            "duplex_webhook_requests_total",
            "counter",
            "Webhook requests by outcome: ok (2xx) or failed (retried).",
        );
        let _ = writeln!(
            w,
            "duplex_webhook_requests_total{{outcome=\"ok\"}} {}",
            self.requests_ok.load(Relaxed)
        );
        let _ = writeln!(
            w,
            "duplex_webhook_requests_total{{outcome=\"failed\"}} {}",
            self.requests_failed.load(Relaxed)
        );
        header(
            w,
            "duplex_webhook_queue_depth",
            "gauge",
            "Lifecycle events waiting for delivery (with Redis: the cluster's queue).",
        );
        let _ = writeln!(
            w,
            "duplex_webhook_queue_depth {}",
            self.queue_depth.load(Relaxed)
        );
        header(
            w,
            "duplex_webhook_dead_nodes_declared_total",
            "counter",
            "Dead nodes whose connections this node declared disconnected.",
        );
        let _ = writeln!(
            w,
            "duplex_webhook_dead_nodes_declared_total {}",
            self.declared_dead.load(Relaxed)
        );
        header(
            w,
            "duplex_webhook_events_taken_over_total",
            "counter",
            "Events another node had taken and not confirmed (it died) that this node took over.",
        );
        let _ = writeln!(
            w,
            "duplex_webhook_events_taken_over_total {}",
            self.taken_over.load(Relaxed)
        );
        let name = "duplex_webhook_delivery_latency_seconds";
        header(
            w,
            name,
            "histogram",
            "From an event to the backend's 2xx for it, in seconds.",
        );
        let mut cumulative = 0;
        for (i, count) in self.latency.iter().enumerate() {
            cumulative += count.load(Relaxed);
            match BOUNDS_MS.get(i) {
                Some(ms) => {
                    let le = *ms as f64 / 1000.0;
                    let _ = writeln!(w, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
                }
                None => {
                    let _ = writeln!(w, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
                }
            }
        }
        let sum = self.latency_sum_ms.load(Relaxed) as f64 / 1000.0;
        let _ = writeln!(w, "{name}_sum {sum}");
        let _ = writeln!(w, "{name}_count {cumulative}");
    }
}

fn header(w: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(w, "# HELP {name} {help}");
    let _ = writeln!(w, "# TYPE {name} {kind}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_is_rendered_and_latency_is_cumulative() {
        let m = EventMetrics::new();
        m.emitted(EventKind::UserOffline);
        m.dropped(EventKind::Connected);
        m.delivered(EventKind::UserOffline, Duration::from_millis(40));
        m.delivered(EventKind::UserOffline, Duration::from_secs(400));
        m.set_queue_depth(7);
        let mut text = String::new();
        m.render(&mut text);
        for line in [
            "duplex_webhook_events_emitted_total{type=\"user_offline\"} 1",
            "duplex_webhook_events_dropped_total{type=\"connected\"} 1",
            "duplex_webhook_events_delivered_total{type=\"user_offline\"} 2",
            "duplex_webhook_queue_depth 7",
            "duplex_webhook_delivery_latency_seconds_bucket{le=\"0.05\"} 1",
            "duplex_webhook_delivery_latency_seconds_bucket{le=\"300\"} 1",
            "duplex_webhook_delivery_latency_seconds_bucket{le=\"+Inf\"} 2",
            "duplex_webhook_delivery_latency_seconds_count 2",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
        }
        assert_eq!(
            text.lines()
                .filter(|l| l.starts_with("duplex_webhook_events_retried_total{"))
                .count(),
            8
        );
    }
}
