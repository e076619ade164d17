//! `duplex bench echo`: pipelined echo load.
//!
//! Each of N connections sends K messages, then one more for each reply, so K
//! stay in flight; `--connections 1 --in-flight 1` is ping-pong. Replies are
//! matched to their sends in order (an echo server answers in order) and the
//! round trip goes into an HDR histogram. New messages are `feed`-ed without a
//! flush: the read that follows writes all of them at once, as an echo server
//! should write its replies.
//!
//! Invariants: sending starts when every connection is open; the window is
//! `--duration`, or shorter when `--messages` replies have been counted
//! first (rates are over the time actually measured); a reply counts if it
//! arrives inside the window; a reply of the wrong size or kind fails the
//! run; a server that stops answering is given up on two seconds after the
//! window.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::bail;
use bytes::Bytes;
use duplex::{Config, Message, Utf8Bytes};
use futures_util::{StreamExt, stream};
use hdrhistogram::Histogram;
use serde_json::json;
use tokio::time::Instant;

use super::net::{Conn, Target};
use super::procfs::{CpuWindow, Proc};
use super::report::{self, Latency};
use super::{OutputArgs, TargetArgs};

/// Connections opened at once while setting up.
const OPEN_CONCURRENCY: usize = 64;

/// How long after the window a silent server is waited for.
const GRACE: Duration = Duration::from_secs(2);

/// Options of `duplex bench echo`.
#[derive(Debug, clap::Args)]
pub(crate) struct EchoArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Connections to open.
    #[arg(long, default_value_t = 100)]
    connections: usize,
    /// Messages each connection keeps in flight.
    #[arg(long, default_value_t = 16)]
    in_flight: usize,
    /// Payload size in bytes.
    #[arg(long, default_value_t = 20)]
    size: usize,
    /// Length of the measured window, in seconds.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Stop once this many replies have been counted (if before the end of
    /// the window).
    #[arg(long, value_name = "N")]
    messages: Option<u64>,
    /// Send binary messages (default: text).
    #[arg(long)]
    binary: bool,
    /// Offer permessage-deflate (default: no compression).
    #[arg(long)]
    compress: bool,
    #[command(flatten)]
    output: OutputArgs,
}

/// What one connection measured.
struct ConnResult {
    conn: Option<Conn>,
    latency: Histogram<u64>,
    error: Option<anyhow::Error>,
}

/// Runs `duplex bench echo`.
pub(crate) async fn run(args: EchoArgs) -> anyhow::Result<ExitCode> {
    if args.connections == 0 || args.in_flight == 0 {
        bail!("--connections and --in-flight must be at least 1");
    }
    if !args.duration.is_finite() || args.duration <= 0.0 {
        bail!("--duration must be positive");
    }
    if args.messages == Some(0) {
        bail!("--messages must be at least 1");
    }
    let target = Arc::new(Target::new(&args.target)?);
    let config = if args.compress {
        Config::client()
    } else {
        Config::client().without_compression()
    };
    let message = payload(args.size, args.binary);

    let opened = Instant::now();
    let conns: Vec<Conn> = target
        .open_many(&config, args.connections, OPEN_CONCURRENCY)
        .await?;
    eprintln!(
        "{} connections open in {:.2} s; sending for {} s",
        conns.len(),
        opened.elapsed().as_secs_f64(),
        args.duration
    );

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
        report::Progress::start("messages", counter.clone(), start, window, args.messages);
    let bounds = Bounds {
        deadline,
        limit: args.messages.unwrap_or(u64::MAX),
    };
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|conn| {
            let (message, counter) = (message.clone(), counter.clone());
            tokio::spawn(drive(conn, message, args.in_flight, bounds, counter))
        })
        .collect();
    let mut results = Vec::with_capacity(tasks.len());
    for task in tasks {
        results.push(task.await?);
    }
    let measured = start.elapsed().min(window);
    let server_seconds = server_cpu.map(|w| w.elapsed()).transpose()?;
    let client_seconds = client_cpu.elapsed()?;
    progress.finish();

    let mut latency = report::histogram();
    let mut first_error = None;
    let mut failed = 0;
    let mut open = Vec::new();
    for result in results {
        latency.add(&result.latency)?;
        if let Some(error) = result.error {
            failed += 1;
            first_error.get_or_insert(error);
        }
        open.extend(result.conn);
    }
    // Close every connection cleanly, but do not wait for ever.
    let closing = stream::iter(open)
        .map(|conn| tokio::time::timeout(GRACE, conn.close()))
        .buffer_unordered(OPEN_CONCURRENCY)
        .collect::<Vec<_>>();
    let _ = tokio::time::timeout(GRACE * 2, closing).await;

    let messages = latency.len();
    let seconds = measured.as_secs_f64();
    let rate = messages as f64 / seconds;
    let summary = Latency::of(&latency);
    let per_message = |cpu: f64| (messages > 0).then(|| cpu * 1e6 / messages as f64);
    if args.output.json {
        let value = json!({
            "bench": "echo",
            "label": args.output.label,
            "url": target.url,
            "connections": args.connections,
            "in_flight": args.in_flight,
            "size": args.size,
            "binary": args.binary,
            "compress": args.compress,
            "duration_s": args.duration,
            "messages_limit": args.messages,
            "measured_s": seconds,
            "messages": messages,
            "messages_per_s": rate,
            "mib_per_s_each_way": rate * args.size as f64 / (1 << 20) as f64,
            "latency": summary.json(),
            "server_cpu_s": server_seconds,
            "server_cpu_us_per_msg": server_seconds.and_then(per_message),
            "client_cpu_s": client_seconds,
            "client_cpu_us_per_msg": per_message(client_seconds),
            "failed_connections": failed,
            "first_error": first_error.as_ref().map(|e| format!("{e:#}")),
        });
        println!("{value}");
    } else {
        let kind = if args.binary { "binary" } else { "text" };
        report::heading("echo", args.output.label.as_ref(), &target.url);
        println!(
            "  load        {} connections × {} in flight, {} {kind} messages{}, {seconds:.2} s",
            args.connections,
            args.in_flight,
            report::bytes(args.size as f64),
            if args.compress {
                ", compression offered"
            } else {
                ""
            },
        );
        println!(
            "  messages    {} echoed, {} msg/s ({}/s each way)",
            report::count(messages),
            report::count(rate as u64),
            report::bytes(rate * args.size as f64)
        );
        report::latency_table("round trip", &summary);
        report::cpu_lines(server_seconds, client_seconds, messages, "message");
        if failed > 0 {
            println!("  failed      {failed} connections");
        }
    }
    if let Some(error) = first_error {
        eprintln!("duplex bench: {failed} connections failed; the first: {error:#}");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// The message sent over and over: `size` bytes of `x` (valid UTF-8 as text).
fn payload(size: usize, binary: bool) -> Message {
    let bytes = Bytes::from(vec![b'x'; size]);
    if binary {
        Message::Binary(bytes)
    } else {
        // ASCII is UTF-8.
        Message::Text(Utf8Bytes::try_from_bytes(bytes).unwrap_or_else(|_| unreachable!()))
    }
}

/// When the measured window ends: at `deadline`, or once `limit` replies
/// have been counted in all.
#[derive(Debug, Clone, Copy)]
struct Bounds {
    deadline: Instant,
    limit: u64,
}

/// Keeps `in_flight` messages in flight on `conn` until the window ends.
async fn drive(
    mut conn: Conn,
    message: Message,
    in_flight: usize,
    bounds: Bounds,
    counter: Arc<AtomicU64>,
) -> ConnResult {
    let mut latency = report::histogram();
    let work = pump(
        &mut conn,
        &message,
        in_flight,
        bounds,
        &counter,
        &mut latency,
    );
    let error = match tokio::time::timeout_at(bounds.deadline + GRACE, work).await {
        Ok(Ok(())) => None,
        Ok(Err(error)) => Some(error),
        Err(_) => Some(anyhow::anyhow!("the server stopped answering")),
    };
    ConnResult {
        conn: error.is_none().then_some(conn),
        latency,
        error,
    }
}

/// The send/receive loop of one connection.
async fn pump(
    conn: &mut Conn,
    message: &Message,
    in_flight: usize,
    bounds: Bounds,
    counter: &AtomicU64,
    latency: &mut Histogram<u64>,
) -> anyhow::Result<()> {
    let mut sent = std::collections::VecDeque::with_capacity(in_flight);
    let now = Instant::now();
    for _ in 0..in_flight {
        conn.feed(message.clone()).await?;
        sent.push_back(now);
    }
    conn.flush().await?;
    loop {
        let Some(reply) = conn.next().await? else {
            bail!("the server closed the connection");
        };
        // One clock read per message: the reply's arrival is the next send.
        let now = Instant::now();
        if now >= bounds.deadline || counter.load(Ordering::Relaxed) >= bounds.limit {
            return Ok(());
        }
        if reply.kind() != message.kind() || reply.payload().len() != message.payload().len() {
            bail!(
                "expected a {:?} reply of {} bytes, got {:?} of {}",
                message.kind(),
                message.payload().len(),
                reply.kind(),
                reply.payload().len()
            );
        }
        let Some(sent_at) = sent.pop_front() else {
            bail!("a reply to a message never sent");
        };
        // Taking a number first keeps the total exact under `--messages`.
        let number = counter.fetch_add(1, Ordering::Relaxed);
        if number >= bounds.limit {
            return Ok(());
        }
        report::record(latency, now - sent_at);
        if number + 1 == bounds.limit {
            return Ok(());
        }
        conn.feed(message.clone()).await?;
        sent.push_back(now);
    }
}
