//! `duplex bench connect`: the connection rate.
//!
//! C tasks each open a connection (TCP connect and the opening handshake),
//! close it (the close handshake, until the server has closed TCP), and start
//! over, until the duration is up. The latency of one connection is from the
//! `connect` call to the end of the close.
//!
//! Invariants: only connections completed inside the window count, and at
//! most `--count` of them (the window ends early when they are done; rates
//! are over the time actually measured); failures are counted and the first
//! one is reported; every task stops by itself at the end of the window (a
//! connection under way is given two more seconds).

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::bail;
use duplex::Config;
use hdrhistogram::Histogram;
use serde_json::json;
use tokio::time::Instant;

use super::net::Target;
use super::procfs::{CpuWindow, Proc};
use super::report::{self, Latency};
use super::{OutputArgs, TargetArgs};

/// How long after the window a connection under way is waited for.
const GRACE: Duration = Duration::from_secs(2);

/// Options of `duplex bench connect`.
#[derive(Debug, clap::Args)]
pub(crate) struct ConnectArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Length of the measured window, in seconds.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Connections under way at once.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Stop once this many connections have been completed (if before the
    /// end of the window).
    #[arg(long, value_name = "N")]
    count: Option<u64>,
    #[command(flatten)]
    output: OutputArgs,
}

/// What one task measured.
struct TaskResult {
    latency: Histogram<u64>,
    failures: u64,
    first_error: Option<anyhow::Error>,
}

/// Runs `duplex bench connect`.
pub(crate) async fn run(args: ConnectArgs) -> anyhow::Result<ExitCode> {
    if args.concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    if !args.duration.is_finite() || args.duration <= 0.0 {
        bail!("--duration must be positive");
    }
    if args.count == Some(0) {
        bail!("--count must be at least 1");
    }
    let limit = args.count.unwrap_or(u64::MAX);
    let target = Arc::new(Target::new(&args.target)?);
    let config = Arc::new(Config::client().without_compression());
    let server_cpu = args
        .target
        .server_pid
        .map(|pid| CpuWindow::start(Proc::Pid(pid)))
        .transpose()?;
    let client_cpu = CpuWindow::start(Proc::Current)?;
    let counter = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let window = Duration::from_secs_f64(args.duration);
    let deadline = start + window;
    let progress =
        report::Progress::start("connections", counter.clone(), start, window, args.count);
    let tasks: Vec<_> = (0..args.concurrency)
        .map(|_| {
            let (target, config, counter) = (target.clone(), config.clone(), counter.clone());
            tokio::spawn(async move {
                let mut result = TaskResult {
                    latency: report::histogram(),
                    failures: 0,
                    first_error: None,
                };
                while Instant::now() < deadline && counter.load(Ordering::Relaxed) < limit {
                    let began = Instant::now();
                    let attempt = async {
                        let conn = target.open(&config).await?;
                        conn.close().await
                    };
                    match tokio::time::timeout_at(deadline + GRACE, attempt).await {
                        Ok(Ok(())) => {
                            let now = Instant::now();
                            // Taking a number first keeps the total exact
                            // under `--count`.
                            if now <= deadline && counter.fetch_add(1, Ordering::Relaxed) < limit {
                                report::record(&mut result.latency, now - began);
                            }
                        }
                        Ok(Err(error)) => {
                            result.failures += 1;
                            result.first_error.get_or_insert(error);
                        }
                        Err(_) => break,
                    }
                }
                result
            })
        })
        .collect();
    let mut latency = report::histogram();
    let mut failures = 0;
    let mut first_error = None;
    for task in tasks {
        let result = task.await?;
        latency.add(&result.latency)?;
        failures += result.failures;
        if let Some(error) = result.first_error {
            first_error.get_or_insert(error);
        }
    }
    let measured = start.elapsed().min(window).as_secs_f64();
    let server_seconds = server_cpu.map(|w| w.elapsed()).transpose()?;
    let client_seconds = client_cpu.elapsed()?;
    progress.finish();

    let connections = latency.len();
    let rate = connections as f64 / measured;
    let summary = Latency::of(&latency);
    let per_conn = |cpu: f64| (connections > 0).then(|| cpu * 1e6 / connections as f64);
    if args.output.json {
        let value = json!({
            "bench": "connect",
            "label": args.output.label,
            "url": target.url,
            "concurrency": args.concurrency,
            "duration_s": args.duration,
            "count_limit": args.count,
            "measured_s": measured,
            "connections": connections,
            "connections_per_s": rate,
            "latency": summary.json(),
            "server_cpu_s": server_seconds,
            "server_cpu_us_per_conn": server_seconds.and_then(per_conn),
            "client_cpu_s": client_seconds,
            "client_cpu_us_per_conn": per_conn(client_seconds),
            "failures": failures,
            "first_error": first_error.as_ref().map(|e| format!("{e:#}")),
        });
        println!("{value}");
    } else {
        report::heading("connect", args.output.label.as_ref(), &target.url);
        println!(
            "  load         {} at once, {measured:.2} s",
            args.concurrency
        );
        println!(
            "  connections  {} opened and closed, {}/s",
            report::count(connections),
            report::count(rate as u64)
        );
        report::latency_table("connection", &summary);
        report::cpu_lines(server_seconds, client_seconds, connections, "connection");
        if failures > 0 {
            println!("  failures     {failures}");
        }
    }
    if let Some(error) = first_error {
        eprintln!("duplex bench: {failures} connections failed; the first: {error:#}");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
