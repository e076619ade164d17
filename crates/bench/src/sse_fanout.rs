//! `duplex bench sse-fanout`: fan-out to N subscribers over the hub's HTTP
//! transport (`GET /session`, Server-Sent Events) beside N subscribers on
//! WebSockets, all connected to one hub in the same run.
//!
//! Sequence: the hub's anonymous resident memory (see `procfs`); N WebSocket subscribers `connect`
//! and `subscribe` to `CHANNEL:ws` (memory again); N HTTP sessions open
//! their stream and `POST` `connect` and `subscribe` to `CHANNEL:sse`
//! (memory again): each difference over N is the memory per subscribed
//! client of that transport. Then one WebSocket publisher publishes
//! `--publish-rate` messages per second of `--size` bytes for `--duration`
//! to `CHANNEL:ws`, then as long to `CHANNEL:sse`: in each window, the
//! deliveries per second that subscribers counted and the hub's CPU time
//! per delivery (with `--server-pid`). Both kinds of subscriber stay
//! connected throughout, so each window runs beside the other transport's
//! idle clients.
//!
//! Invariants: every step is bounded in time (setup 60 s, each window its
//! duration plus 2 s to drain); a subscriber counts a delivery per
//! `"op":"message"` it reads (a substring search over the bytes, carried
//! across reads), nothing is parsed; loopback servers only.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context as _, bail};
use duplex::{ClientRequest, Config, Message};
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::procfs::{CpuWindow, Proc};

/// How long all subscribers together have to subscribe.
const SETUP_TIMEOUT: Duration = Duration::from_secs(60);

/// Subscribers opened at once.
const OPEN_CONCURRENCY: usize = 64;

/// What a subscriber counts.
const MARKER: &[u8] = b"\"op\":\"message\"";

/// Options of `duplex bench sse-fanout`.
#[derive(Debug, clap::Args)]
pub(crate) struct SseFanoutArgs {
    /// The hub: `http://HOST:PORT` (its `/ws` and `/session`).
    #[arg(long)]
    url: String,
    /// Subscribers per transport.
    #[arg(long, default_value_t = 1000)]
    subscribers: usize,
    /// Messages published per second in each window.
    #[arg(long, default_value_t = 100)]
    publish_rate: u32,
    /// Seconds of each window.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Payload bytes (a JSON string of that many `x`).
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// The channel prefix: `PREFIX:ws` and `PREFIX:sse`.
    #[arg(long, default_value = "bench")]
    channel: String,
    /// The hub's process id: its memory and CPU time.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Open the SSE subscribers first (the first transport opened also
    /// pays the hub's warm-up in its memory figure: run both orders).
    #[arg(long)]
    sse_first: bool,
}

/// Runs the benchmark and prints its table.
pub(crate) async fn run(args: SseFanoutArgs) -> anyhow::Result<ExitCode> {
    let addr = args
        .url
        .strip_prefix("http://")
        .context("--url must be http://HOST:PORT")?
        .trim_end_matches('/')
        .to_owned();
    let server = args.server_pid.map(Proc::Pid);
    // The anonymous memory: what subscribers grow (see `procfs`).
    let rss = |p: Option<Proc>| p.and_then(|p| p.memory().ok()).map(|m| m.anonymous);
    let ws_count = Arc::new(AtomicU64::new(0));
    let sse_count = Arc::new(AtomicU64::new(0));
    let before = rss(server);
    let ws_channel = format!("{}:ws", args.channel);
    let sse_channel = format!("{}:sse", args.channel);

    let open_ws = || {
        open_all(args.subscribers, |_| {
            ws_subscriber(addr.clone(), ws_channel.clone(), ws_count.clone())
        })
    };
    let open_sse = || {
        open_all(args.subscribers, |_| {
            sse_subscriber(addr.clone(), sse_channel.clone(), sse_count.clone())
        })
    };
    let settle = || tokio::time::sleep(Duration::from_millis(500));
    // (memory before, after) of each transport's subscribers.
    let (ws_subs, sse_subs, ws_memory, sse_memory);
    if args.sse_first {
        sse_subs = open_sse().await.context("SSE subscribers")?;
        settle().await;
        let after_sse = rss(server);
        ws_subs = open_ws().await.context("WebSocket subscribers")?;
        settle().await;
        (sse_memory, ws_memory) = ((before, after_sse), (after_sse, rss(server)));
    } else {
        ws_subs = open_ws().await.context("WebSocket subscribers")?;
        settle().await;
        let after_ws = rss(server);
        sse_subs = open_sse().await.context("SSE subscribers")?;
        settle().await;
        (ws_memory, sse_memory) = ((before, after_ws), (after_ws, rss(server)));
    }

    let publisher = connect_ws(&addr).await?;
    let (mut sink, mut replies) = publisher.split();
    let drain = tokio::spawn(async move { while replies.next().await.is_some() {} });
    let mut rows = Vec::new();
    for (name, channel, count) in [
        ("websocket", &ws_channel, &ws_count),
        ("sse", &sse_channel, &sse_count),
    ] {
        let window = Duration::from_secs(args.duration);
        let cpu = server.map(CpuWindow::start).transpose()?;
        let counted = count.load(Ordering::Relaxed);
        let start = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_secs_f64(
            1.0 / f64::from(args.publish_rate.max(1)),
        ));
        let pad = "x".repeat(args.size);
        let mut published = 0u64;
        while start.elapsed() < window {
            tick.tick().await;
            let command = json!({"op": "publish", "channel": channel, "data": pad});
            sink.send(Message::text(command.to_string())).await?;
            published += 1;
        }
        // Drain: what was published in the window is delivered.
        let expected = published * args.subscribers as u64;
        let drain_until = Instant::now() + Duration::from_secs(2);
        while count.load(Ordering::Relaxed) - counted < expected && Instant::now() < drain_until {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let seconds = start.elapsed().as_secs_f64();
        let delivered = count.load(Ordering::Relaxed) - counted;
        let cpu = cpu.map(|c| c.elapsed()).transpose()?;
        rows.push((name, published, delivered, expected, seconds, cpu));
    }
    drop(sink);
    drain.abort();
    for task in ws_subs.into_iter().chain(sse_subs) {
        task.abort();
    }

    println!(
        "sse-fanout: {} subscribers per transport, {} msg/s x {} s per window, {} B",
        args.subscribers, args.publish_rate, args.duration, args.size
    );
    println!(
        "| transport | published | delivered / expected | deliveries/s | server CPU per delivery | memory per subscribed client |"
    );
    println!("|---|---|---|---|---|---|");
    let per_client = |a: Option<u64>, b: Option<u64>| match (a, b) {
        (Some(a), Some(b)) => format!(
            "{:.1} KiB",
            (b.saturating_sub(a)) as f64 / args.subscribers as f64 / 1024.0
        ),
        _ => "-".to_owned(),
    };
    for (name, published, delivered, expected, seconds, cpu) in rows {
        let (from, to) = if name == "sse" { sse_memory } else { ws_memory };
        let memory = per_client(from, to);
        let cpu = cpu.map_or("-".to_owned(), |cpu| {
            format!("{:.2} µs", cpu * 1e6 / delivered.max(1) as f64)
        });
        println!(
            "| {name} | {published} | {delivered} / {expected} | {:.0} | {cpu} | {memory} |",
            delivered as f64 / seconds
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Opens `n` subscribers with `open` (each resolves once subscribed, with
/// the task that keeps reading), `OPEN_CONCURRENCY` at a time.
async fn open_all<F, Fut>(n: usize, open: F) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<tokio::task::JoinHandle<()>>>,
{
    let opening = futures_util::stream::iter((0..n).map(open))
        .buffer_unordered(OPEN_CONCURRENCY)
        .collect::<Vec<_>>();
    let opened = tokio::time::timeout(SETUP_TIMEOUT, opening)
        .await
        .context("subscribers did not subscribe in time")?;
    opened.into_iter().collect()
}

async fn connect_ws(addr: &str) -> anyhow::Result<duplex::WebSocket<duplex::transport::Transport>> {
    let request = ClientRequest::new(format!("ws://{addr}/ws")).protocol("duplex.v1");
    let mut ws = duplex::connect_with(&request, &Config::client()).await?;
    ws.send(Message::text(r#"{"op":"connect","id":1}"#)).await?;
    Ok(ws)
}

/// A WebSocket subscriber: resolves once subscribed.
async fn ws_subscriber(
    addr: String,
    channel: String,
    count: Arc<AtomicU64>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let mut ws = connect_ws(&addr).await?;
    let subscribe = json!({"op": "subscribe", "id": 2, "channel": channel});
    ws.send(Message::text(subscribe.to_string())).await?;
    loop {
        let Some(Ok(message)) = ws.next().await else {
            bail!("the WebSocket ended before subscribed");
        };
        if memchr::memmem::find(message.payload(), b"\"op\":\"subscribed\"").is_some() {
            break;
        }
    }
    Ok(tokio::spawn(async move {
        while let Some(Ok(message)) = ws.next().await {
            if memchr::memmem::find(message.payload(), MARKER).is_some() {
                count.fetch_add(1, Ordering::Relaxed);
            }
        }
    }))
}

/// An HTTP session subscriber: its stream, one POST of `connect` and
/// `subscribe`; resolves once subscribed.
async fn sse_subscriber(
    addr: String,
    channel: String,
    count: Arc<AtomicU64>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let mut stream = TcpStream::connect(&addr).await?;
    let head =
        format!("GET /session HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n");
    stream.write_all(head.as_bytes()).await?;
    let mut seen = Vec::new();
    let mut buf = vec![0u8; 16 << 10];
    let session = loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            bail!("the stream ended before its open event");
        }
        seen.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&seen);
        if let Some(start) = text.find("\"session\":\"") {
            let rest = &text[start + 11..];
            if let Some(end) = rest.find('"') {
                break rest[..end].to_owned();
            }
        }
    };
    let body = format!(
        "{}\n{}",
        json!({"op": "connect", "id": 1}),
        json!({"op": "subscribe", "id": 2, "channel": channel})
    );
    let mut post = TcpStream::connect(&addr).await?;
    let request = format!(
        "POST /session?session={session} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    post.write_all(request.as_bytes()).await?;
    let mut answer = Vec::new();
    post.read_to_end(&mut answer).await?;
    if !answer.starts_with(b"HTTP/1.1 204") {
        bail!("POST: {}", String::from_utf8_lossy(&answer));
    }
    loop {
        if memchr::memmem::find(&seen, b"\"op\":\"subscribed\"").is_some() {
            break;
        }
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            bail!("the stream ended before subscribed");
        }
        seen.extend_from_slice(&buf[..n]);
    }
    Ok(tokio::spawn(async move {
        // The marker may straddle two reads: the tail of one is kept.
        let mut carry: Vec<u8> = Vec::new();
        loop {
            let Ok(n) = stream.read(&mut buf).await else {
                return;
            };
            if n == 0 {
                return;
            }
            carry.extend_from_slice(&buf[..n]);
            let found = memchr::memmem::find_iter(&carry, MARKER).count();
            count.fetch_add(found as u64, Ordering::Relaxed);
            let keep = (MARKER.len() - 1).min(carry.len());
            let tail = carry.split_off(carry.len() - keep);
            carry = tail;
        }
    }))
}
