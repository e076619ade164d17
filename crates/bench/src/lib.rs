//! # duplex-bench: the load generators `duplex bench` runs
//!
//! End-to-end load generators for WebSocket servers and the hub; the
//! `duplex` binary composes them as `duplex bench`, and
//! `examples/cluster_bench.rs` drives several hub nodes on one Redis.
//!
//! - `duplex bench echo`: N connections each keep K messages in flight against
//!   an echo server; messages per second and round-trip latency.
//! - `duplex bench connect`: connections per second (TCP connect, opening
//!   handshake, close handshake) and their latency.
//! - `duplex bench idle`: opens N connections, holds them, and reports the
//!   server's resident memory per connection.
//! - `duplex bench fanout`: one publisher, N subscribers (hub protocol or a
//!   plain broadcast server); deliveries per second and publish-to-delivery
//!   latency.
//! - `duplex bench scale`: one shard of many hub clients that reconnect and
//!   recover (`benches/run-scale.sh` runs several against several nodes);
//!   connect time, fan-out latency, reconnections, silent losses.
//!
//! The client side is the duplex client itself ([`duplex::client_handshake`]
//! over a [`tokio::net::TcpSocket`] bound to a chosen source address), so the
//! generator also stresses duplex. `tcp://HOST:PORT` URLs name a plain TCP echo
//! server (the ceiling): the generator then writes the very frames a WebSocket
//! client writes and decodes the echoed, still masked, frames with the same
//! protocol code (see [`raw`]), so its own cost per message stays the same.
//!
//! With `--server-pid PID` the server's CPU time (utime + stime of
//! `/proc/PID/stat`) is read before and after the measured window and reported
//! per message: on a small machine where the generator saturates its own core,
//! that figure, not messages per second, compares servers.
//!
//! Invariants: every run is bounded by its duration (plus a few seconds to
//! close); measurement starts only once every connection is open, and only
//! replies received inside the window count. Progress goes to standard error
//! once a second, the summary to standard output (`--json`: one JSON object).

// The fan-out report is one `json!` object with many fields.
#![recursion_limit = "256"]

mod api;
mod connect;
mod echo;
mod fanout;
mod idle;
mod net;
mod procfs;
mod raw;
mod report;
mod scale;
mod sequence;
mod sse_fanout;
mod tcp_sent;

use std::net::IpAddr;
use std::process::ExitCode;

/// Options of `duplex bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    command: BenchCommand,
}

#[derive(Debug, clap::Subcommand)]
enum BenchCommand {
    /// Pipelined echo: messages per second and round-trip latency.
    Echo(echo::EchoArgs),
    /// Connection rate: connect, opening handshake and close handshake.
    Connect(connect::ConnectArgs),
    /// Memory of idle connections in the server.
    Idle(idle::IdleArgs),
    /// Fan-out: one publisher, N subscribers, deliveries and their latency.
    Fanout(fanout::FanoutArgs),
    /// One shard of a many-client hub run (benches/run-scale.sh): connect
    /// time, fan-out latency, reconnections, silent losses.
    Scale(scale::ScaleArgs),
    /// Fan-out to N subscribers over the hub's HTTP transport (SSE) beside
    /// N on WebSockets: deliveries/s, server CPU per delivery, memory per
    /// client of each.
    SseFanout(sse_fanout::SseFanoutArgs),
}

/// Where to connect and from which local addresses.
#[derive(Debug, Clone, clap::Args)]
struct TargetArgs {
    /// The server: `ws://HOST:PORT/PATH`, or `tcp://HOST:PORT` for a plain
    /// TCP echo server (the ceiling; see the module docs).
    #[arg(long)]
    url: String,
    /// Local addresses to connect from, round-robin (for example
    /// `127.0.0.1,127.0.0.2`), each with its own range of ephemeral ports.
    #[arg(long, value_delimiter = ',')]
    source_ips: Vec<IpAddr>,
    /// The server's process id: report its CPU time (echo, connect) or
    /// resident memory (idle).
    #[arg(long)]
    server_pid: Option<u32>,
}

/// How to print the result.
#[derive(Debug, Clone, clap::Args)]
struct OutputArgs {
    /// Print the result as one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// A name for this run, carried into the output (for example the server
    /// implementation's name).
    #[arg(long)]
    label: Option<String>,
}

/// Runs a `duplex bench` subcommand.
pub async fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        BenchCommand::Echo(args) => echo::run(args).await,
        BenchCommand::Connect(args) => connect::run(args).await,
        BenchCommand::Idle(args) => idle::run(args).await,
        BenchCommand::Fanout(args) => fanout::run(args).await,
        BenchCommand::Scale(args) => scale::run(args).await,
        BenchCommand::SseFanout(args) => sse_fanout::run(args).await,
    }
}
