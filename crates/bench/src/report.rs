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

/// A live progress display on standard error for a run bounded by a window
/// and optionally a count: on a terminal, one line redrawn four times a
/// second with a bar, the count so far, the rate over the last second and
/// the average rate; otherwise one plain line per second.
pub(super) struct Progress {
    task: tokio::task::JoinHandle<()>,
    terminal: bool,
}

impl Progress {
    /// Starts showing `counter` (of `what`) from `start`, for a run of
    /// `window` or `limit` counts, whichever comes first.
    pub(super) fn start(
        what: &'static str,
        counter: Arc<AtomicU64>,
        start: Instant,
        window: Duration,
        limit: Option<u64>,
    ) -> Self {
        let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
        let period = if terminal {
            Duration::from_millis(250)
        } else {
            Duration::from_secs(1)
        };
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(start + period, period);
            // (time, total) over the last second, for the current rate.
            let mut recent = std::collections::VecDeque::from([(start, 0u64)]);
            loop {
                let now = tick.tick().await;
                let total = counter.load(Ordering::Relaxed);
                recent.push_back((now, total));
                while recent.len() > 2 && now - recent[1].0 >= Duration::from_secs(1) {
                    recent.pop_front();
                }
                let (then, before) = recent[0];
                let line = progress_line(
                    what,
                    now - start,
                    window,
                    total,
                    limit,
                    rate(total - before, now - then),
                    rate(total, now - start),
                );
                if terminal {
                    eprint!("\r\x1b[2K{line}");
                } else {
                    eprintln!("{line}");
                }
            }
        });
        Self { task, terminal }
    }

    /// Stops the display (and clears its line on a terminal).
    pub(super) fn finish(self) {
        self.task.abort();
        if self.terminal {
            eprint!("\r\x1b[2K");
        }
    }
}

/// `count` per second over `over`.
fn rate(count: u64, over: Duration) -> u64 {
    let seconds = over.as_secs_f64();
    if seconds > 0.0 {
        (count as f64 / seconds) as u64
    } else {
        0
    }
}

/// One progress line: a bar of the fraction done (of the window, or of the
/// count limit when that is further along), then the figures.
fn progress_line(
    what: &str,
    elapsed: Duration,
    window: Duration,
    total: u64,
    limit: Option<u64>,
    now: u64,
    average: u64,
) -> String {
    const WIDTH: usize = 24;
    let by_time = elapsed.as_secs_f64() / window.as_secs_f64().max(1e-9);
    let by_count = limit.map_or(0.0, |limit| total as f64 / limit.max(1) as f64);
    let done = by_time.max(by_count).clamp(0.0, 1.0);
    let filled = (done * WIDTH as f64).round() as usize;
    let of_limit = limit.map(|l| format!("/{}", count(l))).unwrap_or_default();
    format!(
        "[{}{}] {:>5.1}/{:.1} s  {}{of_limit} {what}  {}/s now  {}/s average",
        "#".repeat(filled),
        "-".repeat(WIDTH - filled),
        elapsed.as_secs_f64(),
        window.as_secs_f64(),
        count(total),
        count(now),
        count(average),
    )
}

/// Prints a latency summary as a small table: a header row of percentiles
/// and one row for `name`, aligned under it.
pub(super) fn latency_table(name: &str, latency: &Latency) {
    if latency.count == 0 {
        println!("  {name:<12} no samples");
        return;
    }
    let cells = [
        ("p50", latency.p50),
        ("p90", latency.p90),
        ("p99", latency.p99),
        ("p99.9", latency.p999),
        ("max", latency.max),
        ("mean", latency.mean as u64),
    ];
    let header: String = cells
        .iter()
        .map(|(label, _)| format!("{label:>11}"))
        .collect();
    let row: String = cells
        .iter()
        .map(|(_, v)| format!("{:>11}", nanos(*v)))
        .collect();
    println!("  {:<12}{header}", "latency");
    println!("  {name:<12}{row}");
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

    #[test]
    fn the_progress_bar_shows_the_further_of_time_and_count() {
        let line = progress_line(
            "messages",
            Duration::from_secs(1),
            Duration::from_secs(4),
            1_500,
            None,
            1_400,
            1_500,
        );
        assert_eq!(
            line,
            "[######------------------]   1.0/4.0 s  1,500 messages  1,400/s now  1,500/s average"
        );
        let line = progress_line(
            "connections",
            Duration::from_secs(1),
            Duration::from_secs(10),
            750,
            Some(1_000),
            0,
            750,
        );
        assert!(line.starts_with("[##################------]"), "{line}");
        assert!(line.contains("750/1,000 connections"), "{line}");
        let done = progress_line(
            "x",
            Duration::from_secs(9),
            Duration::from_secs(5),
            1,
            None,
            0,
            0,
        );
        assert!(done.starts_with(&format!("[{}]", "#".repeat(24))), "{done}");
    }
}
