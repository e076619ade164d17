//! `duplex bench idle`: memory of idle connections.
//!
//! Reads the server's resident memory, opens N connections (spread over the
//! source addresses), holds them without sending anything, reads the
//! resident memory again at the end of the hold, and reports the difference
//! per connection: of the anonymous memory (`RssAnon`, what connections
//! grow), and of all of it (`VmRSS`, which also counts the program's code
//! paged in meanwhile: see `procfs`). The generator's own memory per
//! connection is reported too (the duplex client's idle cost).
//!
//! The kernel's share is read the same way, before and after, machine-wide
//! ([`KernelMem`]: the socket slab caches and TCP buffer pages) and divided
//! by 2N: both ends of every connection are sockets of this machine. Other
//! work on the machine moves it; compare over many connections.
//!
//! Invariants: the hold is bounded by `--hold` (keep it under the server's
//! keepalive interval, or the unanswered pings count too); connections are
//! dropped at the end, which the server sees as end of stream. Once a
//! second during the hold, what arrived on each connection is read without
//! waiting, so a connection the server closed (the hub closes one that
//! sends no `connect` within 10 s with 4001) is reported with its close
//! code, reason and when, and is not counted as held.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use duplex::Config;
use futures_util::{FutureExt as _, StreamExt as _};
use serde_json::json;
use tokio::time::Instant;

use super::net::{Conn, Target};
use super::procfs::{KernelMem, Proc};
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
    let server_before = server.map(Proc::memory).transpose()?;
    let client_before = Proc::Current.memory()?;
    let kernel_before = KernelMem::read()?;

    let start = Instant::now();
    let mut conns: Vec<Conn> = target
        .open_many(&config, args.connections, OPEN_CONCURRENCY)
        .await?;
    let open_seconds = start.elapsed().as_secs_f64();
    eprintln!(
        "{} connections open in {open_seconds:.2} s; holding for {} s",
        conns.len(),
        args.hold
    );
    let held_from = Instant::now();
    let hold_end = held_from + Duration::from_secs_f64(args.hold);
    let mut closes = Closes::default();
    let mut ended = vec![false; conns.len()];
    loop {
        closes.look(&mut conns, &mut ended, held_from.elapsed().as_secs_f64());
        if Instant::now() >= hold_end {
            break;
        }
        tokio::time::sleep_until(hold_end.min(Instant::now() + Duration::from_secs(1))).await;
        if let Some(memory) = server.map(Proc::memory).transpose()? {
            eprintln!(
                "  server RSS {} ({} anonymous)",
                report::bytes(memory.resident as f64),
                report::bytes(memory.anonymous as f64)
            );
        }
    }
    let server_after = server.map(Proc::memory).transpose()?;
    let client_after = Proc::Current.memory()?;
    let kernel_after = KernelMem::read()?;
    let n = conns.len();
    let closed = closes.count();
    let held = n - closed;
    drop(conns);

    let per_conn = |before: u64, after: u64| (after as f64 - before as f64) / n.max(1) as f64;
    let server_growth = server_before
        .zip(server_after)
        .map(|(before, after)| before.growth_per(after, n));
    let server_per_conn = server_growth.map(|growth| growth.anonymous);
    let server_rss_per_conn = server_growth.map(|growth| growth.resident);
    let client_per_conn = client_before.growth_per(client_after, n).anonymous;
    // Both ends of each connection are sockets here.
    let per_socket = |before: u64, after: u64| per_conn(before, after) / 2.0;
    let kernel_slab_per_socket = kernel_before
        .slab_bytes
        .zip(kernel_after.slab_bytes)
        .map(|(b, a)| per_socket(b, a));
    let kernel_buffers_per_socket = per_socket(
        kernel_before.tcp_buffer_bytes,
        kernel_after.tcp_buffer_bytes,
    );
    if args.output.json {
        let value = json!({
            "bench": "idle",
            "label": args.output.label,
            "url": target.url,
            "connections": n,
            "open_s": open_seconds,
            "hold_s": args.hold,
            "held": held,
            "closed_by_server": closed,
            "closes": closes.json(),
            "server_rss_before": server_before.map(|m| m.resident),
            "server_rss_after": server_after.map(|m| m.resident),
            "server_anon_before": server_before.map(|m| m.anonymous),
            "server_anon_after": server_after.map(|m| m.anonymous),
            "server_bytes_per_conn": server_per_conn,
            "server_rss_bytes_per_conn": server_rss_per_conn,
            "client_rss_before": client_before.resident,
            "client_rss_after": client_after.resident,
            "client_bytes_per_conn": client_per_conn,
            "kernel_slab_bytes_per_socket": kernel_slab_per_socket,
            "kernel_tcp_buffer_bytes_per_socket": kernel_buffers_per_socket,
        });
        println!("{value}");
    } else {
        report::heading("idle", args.output.label.as_ref(), &target.url);
        println!(
            "  connections  {} held for {} s (opened in {open_seconds:.2} s)",
            report::count(held as u64),
            args.hold
        );
        for line in closes.lines() {
            println!("  closed       {line}");
        }
        if let (Some(before), Some(after), Some(each), Some(each_rss)) = (
            server_before,
            server_after,
            server_per_conn,
            server_rss_per_conn,
        ) {
            println!(
                "  server       {} → {} anonymous: {} per connection (RSS {} → {}: {})",
                report::bytes(before.anonymous as f64),
                report::bytes(after.anonymous as f64),
                report::bytes(each),
                report::bytes(before.resident as f64),
                report::bytes(after.resident as f64),
                report::bytes(each_rss)
            );
        }
        println!(
            "  client       {} → {} anonymous: {} per connection",
            report::bytes(client_before.anonymous as f64),
            report::bytes(client_after.anonymous as f64),
            report::bytes(client_per_conn)
        );
        if let Some(slab) = kernel_slab_per_socket {
            println!(
                "  kernel       {} slab (socket, inode, file, dentry, epoll entry) + {} TCP \
                 buffers per socket (both ends here: ÷ 2N)",
                report::bytes(slab),
                report::bytes(kernel_buffers_per_socket)
            );
        } else {
            println!(
                "  kernel       {} TCP buffers per socket (both ends here: ÷ 2N; \
                 /proc/slabinfo not readable)",
                report::bytes(kernel_buffers_per_socket)
            );
        }
    }
    if closed > 0 {
        eprintln!(
            "duplex bench idle: the server closed {closed} of {n} connections during the hold \
             (a hub's /ws closes connections that send no connect within connect_timeout, \
             10 s: hold less, or measure /echo with duplex serve --echo)"
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// The connections the server closed during the hold, by close code and
/// reason: how many, and when the first and last were seen (seconds into
/// the hold, to the second).
#[derive(Debug, Default)]
struct Closes(BTreeMap<(u16, String), (usize, f64, f64)>);

impl Closes {
    /// Reads, without waiting, what arrived on each connection not yet
    /// ended, and records the ones that ended now (`at`: seconds into the
    /// hold).
    fn look(&mut self, conns: &mut [Conn], ended: &mut [bool], at: f64) {
        for (conn, ended) in conns.iter_mut().zip(ended.iter_mut()) {
            let Conn::Ws(ws) = conn else {
                continue;
            };
            if *ended {
                continue;
            }
            loop {
                match ws.next().now_or_never() {
                    // A message, or a failure the stream tells before its end.
                    Some(Some(_)) => continue,
                    Some(None) => {
                        *ended = true;
                        let (code, reason) = ws.close_info().map_or_else(
                            || (1006, "no close handshake".to_owned()),
                            |info| (u16::from(info.code), info.reason.clone()),
                        );
                        let entry = self.0.entry((code, reason)).or_insert((0, at, at));
                        entry.0 += 1;
                        entry.2 = at;
                        break;
                    }
                    None => break,
                }
            }
        }
    }

    fn count(&self) -> usize {
        self.0.values().map(|(count, ..)| count).sum()
    }

    /// One line per code and reason.
    fn lines(&self) -> Vec<String> {
        self.0
            .iter()
            .map(|((code, reason), (count, first, last))| {
                format!(
                    "{} by the server with {code} {reason:?}, {first:.0}–{last:.0} s into the hold",
                    report::count(*count as u64)
                )
            })
            .collect()
    }

    fn json(&self) -> serde_json::Value {
        self.0
            .iter()
            .map(|((code, reason), (count, first, last))| {
                json!({"code": code, "reason": reason, "count": count,
                       "first_s": first, "last_s": last})
            })
            .collect()
    }
}
