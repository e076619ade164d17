//! Latency histograms, live progress, and the shapes results are printed in.
//!
//! Invariant: latencies are recorded in nanoseconds with three significant
//! digits (HDR histogram), from 1 ns to 60 s; longer ones are clamped to 60 s.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tokio::time::Instant;

/// Longest latency recorded exactly.
const MAX_NANOS: u64 = 60_000_000_000;

/// A latency histogram in nanoseconds.
pub(super) fn histogram() -> Histogram<u64> {
    // The bounds are constants that satisfy the constructor's conditions.
    Histogram::new_with_bounds(1, MAX_NANOS, 3).unwrap_or_else(|_| unreachable!())
}

/// Records `latency` in `hist`.
pub(super) fn record(hist: &mut Histogram<u64>, latency: Duration) {
    let nanos = u64::try_from(latency.as_nanos())
        .unwrap_or(MAX_NANOS)
        .clamp(1, MAX_NANOS);
    hist.saturating_record(nanos);
}

/// The percentiles reported for a latency histogram.
#[derive(Debug, Clone, Copy)]
pub(super) struct Latency {
    count: u64,
    mean: f64,
    p50: u64,
    p90: u64,
    p99: u64,
    p999: u64,
    max: u64,
}

impl Latency {
    /// Summarises `hist`.
    pub(super) fn of(hist: &Histogram<u64>) -> Self {
        Self {
            count: hist.len(),
            mean: hist.mean(),
            p50: hist.value_at_quantile(0.5),
            p90: hist.value_at_quantile(0.9),
            p99: hist.value_at_quantile(0.99),
            p999: hist.value_at_quantile(0.999),
            max: hist.max(),
        }
    }

    /// As JSON, in microseconds.
    pub(super) fn json(&self) -> Value {
        let us = |nanos: u64| nanos as f64 / 1e3;
        json!({
            "count": self.count,
            "mean_us": self.mean / 1e3,
            "p50_us": us(self.p50),
            "p90_us": us(self.p90),
            "p99_us": us(self.p99),
            "p99_9_us": us(self.p999),
            "max_us": us(self.max),
        })
    }

    /// One line: `p50 … p90 … p99 … p99.9 … max …`.
    pub(super) fn line(&self) -> String {
        if self.count == 0 {
            return "no samples".to_owned();
        }
        format!(
            "p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
            nanos(self.p50),
            nanos(self.p90),
            nanos(self.p99),
            nanos(self.p999),
            nanos(self.max)
        )
    }
}

/// A duration in nanoseconds, in the unit that reads best.
pub(super) fn nanos(n: u64) -> String {
    match n {
        0..1_000 => format!("{n} ns"),
        1_000..1_000_000 => format!("{:.1} µs", n as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.2} ms", n as f64 / 1e6),
        _ => format!("{:.2} s", n as f64 / 1e9),
    }
}

/// An integer with thousands separators.
pub(super) fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A byte count in the binary unit that reads best.
pub(super) fn bytes(n: f64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = n;
    let mut unit = 0;
    while value.abs() >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{value:.0} B")
    } else {
        format!("{value:.2} {}", UNITS[unit])
    }
}

/// Prints `what` so far and its rate to standard error once a second, until
/// aborted.
pub(super) fn spawn_progress(
    what: &'static str,
    counter: Arc<AtomicU64>,
    start: Instant,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick =
            tokio::time::interval_at(start + Duration::from_secs(1), Duration::from_secs(1));
        let mut last = 0;
        let mut last_at = start;
        loop {
            let now = tick.tick().await;
            let total = counter.load(Ordering::Relaxed);
            let rate = (total - last) as f64 / (now - last_at).as_secs_f64();
            let average = total as f64 / (now - start).as_secs_f64();
            eprintln!(
                "[{:>5.1}s] {} {what}, {}/s now, {}/s on average",
                (now - start).as_secs_f64(),
                count(total),
                count(rate as u64),
                count(average as u64)
            );
            (last, last_at) = (total, now);
        }
    })
}

/// Prints the heading of a human-readable report: the mode, the optional
/// label and the target URL.
pub(crate) fn heading(mode: &str, label: Option<&String>, url: &str) {
    let label = label.map(|l| format!(" [{l}]")).unwrap_or_default();
    println!("duplex bench {mode}{label}: {url}");
}

/// Prints the server's (when measured) and the client's CPU time, in total
/// and per `unit` (`count` units were done).
pub(crate) fn cpu_lines(server: Option<f64>, client: f64, count: u64, unit: &str) {
    let per = |seconds: f64| {
        if count == 0 {
            "-".to_owned()
        } else {
            format!("{:.3} µs", seconds * 1e6 / count as f64)
        }
    };
    if let Some(cpu) = server {
        println!("  server CPU   {cpu:.2} s, {} per {unit}", per(cpu));
    }
    println!("  client CPU   {client:.2} s, {} per {unit}", per(client));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_get_thousands_separators() {
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(1_000), "1,000");
        assert_eq!(count(1_234_567), "1,234,567");
    }

    #[test]
    fn latencies_are_percentiles_of_the_recorded_values() {
        let mut hist = histogram();
        for us in 1..=1000 {
            record(&mut hist, Duration::from_micros(us));
        }
        let latency = Latency::of(&hist);
        assert_eq!(latency.count, 1000);
        let p50 = latency.p50 as f64 / 1e3;
        assert!((499.0..=501.0).contains(&p50), "p50 {p50}");
        assert!(latency.max >= 999_000);
        assert_eq!(nanos(1_500), "1.5 µs");
        assert_eq!(bytes(1536.0), "1.50 KiB");
    }
}
