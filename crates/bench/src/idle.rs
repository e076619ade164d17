//! `duplex bench idle`: memory of idle connections.
//!
//! Reads the server's resident memory (`VmRSS`), opens N connections (spread
//! over the source addresses), holds them without sending anything, reads the
//! resident memory again at the end of the hold, and reports the difference
//! per connection. The generator's own memory per connection is reported too
//! (the duplex client's idle cost).
//!
//! Invariants: the hold is bounded by `--hold` (keep it under the server's
//! keepalive interval, or the unanswered pings count too); connections are
//! dropped at the end, which the server sees as end of stream.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use duplex::Config;
use serde_json::json;
use tokio::time::Instant;

use super::net::{Conn, Target};
use super::procfs::Proc;
use super::report;
use super::{OutputArgs, TargetArgs};

/// Connections opened at once.
const OPEN_CONCURRENCY: usize = 128;

/// Options of `duplex bench idle`.
#[derive(Debug, clap::Args)]
pub(crate) struct IdleArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Connections to open and hold.
    #[arg(long, default_value_t = 10_000)]
    connections: usize,
    /// How long to hold them, in seconds, before the last memory reading.
    #[arg(long, default_value_t = 5.0)]
    hold: f64,
    #[command(flatten)]
    output: OutputArgs,
}

/// Runs `duplex bench idle`.
pub(crate) async fn run(args: IdleArgs) -> anyhow::Result<ExitCode> {
    if !args.hold.is_finite() || args.hold < 0.0 {
        bail!("--hold must not be negative");
    }
    let target = Arc::new(Target::new(&args.target)?);
    let config = Config::client().without_compression();
    let server = args.target.server_pid.map(Proc::Pid);
    let server_before = server.map(Proc::rss_bytes).transpose()?;
    let client_before = Proc::Current.rss_bytes()?;

    let start = Instant::now();
    let conns: Vec<Conn> = target
        .open_many(&config, args.connections, OPEN_CONCURRENCY)
        .await?;
    let open_seconds = start.elapsed().as_secs_f64();
    eprintln!(
        "{} connections open in {open_seconds:.2} s; holding for {} s",
        conns.len(),
        args.hold
    );
    let hold_end = Instant::now() + Duration::from_secs_f64(args.hold);
    while Instant::now() < hold_end {
        tokio::time::sleep_until(hold_end.min(Instant::now() + Duration::from_secs(1))).await;
        if let Some(rss) = server.map(Proc::rss_bytes).transpose()? {
            eprintln!("  server RSS {}", report::bytes(rss as f64));
        }
    }
    let server_after = server.map(Proc::rss_bytes).transpose()?;
    let client_after = Proc::Current.rss_bytes()?;
    let n = conns.len();
    drop(conns);

    let per_conn = |before: u64, after: u64| (after as f64 - before as f64) / n.max(1) as f64;
    let server_per_conn = server_before.zip(server_after).map(|(b, a)| per_conn(b, a));
    let client_per_conn = per_conn(client_before, client_after);
    if args.output.json {
        let value = json!({
            "bench": "idle",
            "label": args.output.label,
            "url": target.url,
            "connections": n,
            "open_s": open_seconds,
            "hold_s": args.hold,
            "server_rss_before": server_before,
            "server_rss_after": server_after,
            "server_bytes_per_conn": server_per_conn,
            "client_rss_before": client_before,
            "client_rss_after": client_after,
            "client_bytes_per_conn": client_per_conn,
        });
        println!("{value}");
    } else {
        report::heading("idle", args.output.label.as_ref(), &target.url);
        println!(
            "  connections  {} held for {} s (opened in {open_seconds:.2} s)",
            report::count(n as u64),
            args.hold
        );
        if let (Some(before), Some(after), Some(each)) =
            (server_before, server_after, server_per_conn)
        {
            println!(
                "  server RSS   {} → {}: {} per connection",
                report::bytes(before as f64),
                report::bytes(after as f64),
                report::bytes(each)
            );
        }
        println!(
            "  client RSS   {} → {}: {} per connection",
            report::bytes(client_before as f64),
            report::bytes(client_after as f64),
            report::bytes(client_per_conn)
        );
    }
    Ok(ExitCode::SUCCESS)
}
