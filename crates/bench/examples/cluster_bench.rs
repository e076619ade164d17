//! Fan-out through one hub node or a cluster of them: one publisher, N
//! subscribers spread round-robin over the nodes' URLs, every message
//! delivered to all of them.
//!
//! ```text
//! cargo run --release -p duplex-hub --example cluster_bench -- \
//!     --url ws://127.0.0.1:9701/ws --url ws://127.0.0.1:9702/ws \
//!     --subscribers 1000 --in-flight 64 --size 100 --duration 10 \
//!     --redis redis://127.0.0.1:6390
//! ```
//!
//! The publisher (on the first URL) keeps `--in-flight` messages under way,
//! a message being under way from its publish until every subscriber has
//! received it. Each payload is `{"b":[SEQ,NANOS],"p":"xx…"}` of `--size`
//! bytes; NANOS is the publisher's clock (this process), so the latency is
//! publish (just before encoding) to delivery (when the subscriber's
//! WebSocket hands it over), on one clock. Latency is reported for all
//! subscribers and for those on other nodes than the publisher's (across
//! Redis). With `--redis`, Redis's `INFO commandstats` before and after the
//! window give the commands, and `EVALSHA` calls (round trips), per publish.
//!
//! With `--channels N` (N > 1) message SEQ goes to channel `CHANNEL:(SEQ mod
//! N)` and every subscriber subscribes to all N, so that a Redis Cluster
//! spreads the publishes over its shards; `--redis` may then be given once
//! per primary, and the command counts are summed over them.
//!
//! Every wait is bounded; loopback servers only. The nodes need raised
//! limits (connections per IP, message rate): see benches/run-cluster.sh.

#![allow(missing_docs)]

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use duplex::{ClientRequest, Config, Message, WebSocket};
use duplex_hub_proto::{
    Command, Data, Encoded, Frame, JsonText, Request, SUBPROTOCOL, ServerMessage, decode_server,
    encode_command,
};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::Notify;

/// Slots of the per-message delivery counters (a power of two).
const RING: usize = 1 << 16;
/// Longest wait for setup steps and for the last messages.
const SETUP: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
struct Args {
    urls: Vec<String>,
    subscribers: usize,
    in_flight: usize,
    size: usize,
    duration: f64,
    channel: String,
    redis: Vec<String>,
    label: String,
    publishers: usize,
    channels: u64,
}

impl Args {
    /// The channel of message `seq`.
    fn channel_of(&self, seq: u64) -> String {
        if self.channels > 1 {
            format!("{}:{}", self.channel, seq % self.channels)
        } else {
            self.channel.clone()
        }
    }
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        urls: Vec::new(),
        subscribers: 1000,
        in_flight: 64,
        size: 100,
        duration: 10.0,
        channel: "bench:fanout".into(),
        redis: Vec::new(),
        label: String::new(),
        publishers: 1,
        channels: 1,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--url" => args.urls.push(value()?),
            "--subscribers" => args.subscribers = value()?.parse().map_err(|e| format!("{e}"))?,
            "--in-flight" => args.in_flight = value()?.parse().map_err(|e| format!("{e}"))?,
            "--size" => args.size = value()?.parse().map_err(|e| format!("{e}"))?,
            "--duration" => args.duration = value()?.parse().map_err(|e| format!("{e}"))?,
            "--channel" => args.channel = value()?,
            "--redis" => args.redis.push(value()?),
            "--channels" => args.channels = value()?.parse().map_err(|e| format!("{e}"))?,
            "--label" => args.label = value()?,
            "--publishers" => args.publishers = value()?.parse().map_err(|e| format!("{e}"))?,
            other => return Err(format!("unknown option {other}")),
        }
    }
    if args.urls.is_empty() {
        return Err("give at least one --url".into());
    }
    if args.in_flight == 0
        || args.in_flight >= RING / 2
        || args.subscribers == 0
        || args.publishers == 0
        || args.channels == 0
    {
        return Err("bad --in-flight or --subscribers".into());
    }
    Ok(args)
}

/// What every task shares.
struct Shared {
    origin: Instant,
    subscribers: u32,
    ring: Vec<AtomicU32>,
    /// Messages every subscriber has received.
    completed: AtomicU64,
    progress: Notify,
    /// Deliveries and acks count only while this is set.
    window: AtomicBool,
    deliveries: AtomicU64,
    acks: AtomicU64,
    errors: AtomicU64,
    /// The next sequence number to publish.
    next: AtomicU64,
    /// Publishers stop.
    done: AtomicBool,
    /// Subscribers stop.
    stop: AtomicBool,
}

type Ws = WebSocket<duplex::transport::Transport>;

async fn open(url: &str) -> Result<Ws, String> {
    let config = Config::client().without_compression();
    let request = ClientRequest::new(url).protocol(SUBPROTOCOL);
    duplex::connect_with(&request, &config)
        .await
        .map_err(|e| format!("{url}: {e}"))
}

async fn send(ws: &mut Ws, id: u64, command: Command) -> Result<(), String> {
    let message = match encode_command(&Request {
        id: Some(id),
        command,
    }) {
        Encoded::Text(text) => Message::text(text),
        Encoded::Binary(bytes) => Message::binary(bytes),
    };
    ws.send(message).await.map_err(|e| e.to_string())
}

/// Reads until the reply with `id`.
async fn reply(ws: &mut Ws, id: u64) -> Result<ServerMessage, String> {
    loop {
        let message = tokio::time::timeout(SETUP, ws.next())
            .await
            .map_err(|_| "no reply in time".to_owned())?
            .ok_or("connection closed")?
            .map_err(|e| e.to_string())?;
        let frame = match &message {
            Message::Text(text) => Frame::Text(text.as_str()),
            Message::Binary(bytes) => Frame::Binary(bytes),
        };
        let decoded = decode_server(frame).map_err(|e| e.message.clone())?;
        if decoded.id() == Some(id) {
            return Ok(decoded);
        }
    }
}

/// A client that has sent `connect` (with request `id`) and got its reply.
async fn connected(url: &str, id: u64) -> Result<Ws, String> {
    let mut ws = open(url).await?;
    send(
        &mut ws,
        id,
        Command::Connect {
            token: None,
            name: None,
        },
    )
    .await?;
    reply(&mut ws, id).await?;
    Ok(ws)
}

/// A connected client, subscribed to every channel of the run.
async fn subscriber(url: &str, args: &Args) -> Result<Ws, String> {
    let mut ws = connected(url, 1).await?;
    for seq in 0..args.channels {
        let id = 2 + seq;
        send(
            &mut ws,
            id,
            Command::Subscribe {
                channel: args.channel_of(seq),
                since: None,
                recent: 0,
                token: None,
            },
        )
        .await?;
        match reply(&mut ws, id).await? {
            ServerMessage::Subscribed { .. } => {}
            other => return Err(format!("subscribe: {other:?}")),
        }
    }
    Ok(ws)
}

/// `"b":[SEQ,NANOS,NODE]` in a message push.
fn stamp(text: &str) -> Option<(u64, u64, usize)> {
    let at = text.find("\"b\":[")? + 5;
    let end = at + text[at..].find(']')?;
    let mut numbers = text[at..end].split(',');
    Some((
        numbers.next()?.parse().ok()?,
        numbers.next()?.parse().ok()?,
        numbers.next()?.parse().ok()?,
    ))
}

/// Reads one subscriber's pushes; returns its latencies (µs) in the window
/// of messages published on its own node and on others.
async fn read_pushes(mut ws: Ws, node: usize, shared: Arc<Shared>) -> (Vec<u32>, Vec<u32>) {
    let (mut local, mut remote) = (Vec::new(), Vec::new());
    let mut deliveries = 0u64;
    while !shared.stop.load(Ordering::Relaxed) {
        let Ok(Some(Ok(message))) =
            tokio::time::timeout(Duration::from_millis(200), ws.next()).await
        else {
            continue;
        };
        let Message::Text(text) = &message else {
            continue;
        };
        let Some((seq, sent, from)) = stamp(text.as_str()) else {
            continue;
        };
        let now = shared.origin.elapsed().as_nanos() as u64;
        if shared.window.load(Ordering::Relaxed) {
            deliveries += 1;
            let micros = u32::try_from(now.saturating_sub(sent) / 1000).unwrap_or(u32::MAX);
            if from == node {
                local.push(micros);
            } else {
                remote.push(micros);
            }
        }
        let slot = &shared.ring[seq as usize % RING];
        if slot.fetch_add(1, Ordering::AcqRel) + 1 == shared.subscribers {
            slot.store(0, Ordering::Release);
            shared.completed.fetch_add(1, Ordering::AcqRel);
            shared.progress.notify_one();
        }
    }
    shared.deliveries.fetch_add(deliveries, Ordering::Relaxed);
    let _ = tokio::time::timeout(
        Duration::from_secs(1),
        ws.close(duplex::CloseCode::NORMAL, ""),
    )
    .await;
    (local, remote)
}

/// `INFO commandstats` as command → calls, summed over `urls`.
async fn commandstats(urls: &[String]) -> Result<HashMap<String, u64>, String> {
    let mut stats = HashMap::new();
    for url in urls {
        for (name, calls) in commandstats_of(url).await? {
            *stats.entry(name).or_default() += calls;
        }
    }
    Ok(stats)
}

async fn commandstats_of(url: &str) -> Result<HashMap<String, u64>, String> {
    let client = redis::Client::open(url).map_err(|e| e.to_string())?;
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| e.to_string())?;
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
    let mut stats = HashMap::new();
    for line in info.lines() {
        let Some(rest) = line.strip_prefix("cmdstat_") else {
            continue;
        };
        let Some((name, fields)) = rest.split_once(':') else {
            continue;
        };
        let calls = fields
            .split(',')
            .find_map(|f| f.strip_prefix("calls="))
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        stats.insert(name.to_owned(), calls);
    }
    Ok(stats)
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted[at]) / 1000.0
}

/// One publisher: takes the next sequence number when fewer than
/// `in_flight` messages are not yet everywhere, publishes it, until `done`.
async fn publish(ws: Ws, node: usize, args: Args, shared: Arc<Shared>) -> Result<(), String> {
    let (mut sink, mut replies) = ws.split();
    let acks = {
        let shared = shared.clone();
        tokio::spawn(async move {
            while let Ok(Some(Ok(message))) =
                tokio::time::timeout(Duration::from_secs(2), replies.next()).await
            {
                let Message::Text(text) = &message else {
                    continue;
                };
                if text.as_str().contains("\"op\":\"published\"") {
                    if shared.window.load(Ordering::Relaxed) {
                        shared.acks.fetch_add(1, Ordering::Relaxed);
                    }
                } else if text.as_str().contains("\"op\":\"error\"") {
                    shared.errors.fetch_add(1, Ordering::Relaxed);
                    eprintln!("publish error: {}", text.as_str());
                }
            }
        })
    };
    let pad = "x".repeat(args.size.saturating_sub(40).max(1));
    while !shared.done.load(Ordering::SeqCst) {
        let seq = shared.next.fetch_add(1, Ordering::SeqCst);
        let room = tokio::time::timeout(SETUP, async {
            loop {
                let notified = shared.progress.notified();
                if shared.completed.load(Ordering::Acquire) + args.in_flight as u64 >= seq {
                    return;
                }
                notified.await;
            }
        });
        room.await
            .map_err(|_| format!("message {seq} never reached every subscriber"))?;
        let nanos = shared.origin.elapsed().as_nanos() as u64;
        let data = JsonText::parse(&format!(r#"{{"b":[{seq},{nanos},{node}],"p":"{pad}"}}"#))
            .map_err(|e| e.to_string())?;
        let request = Request {
            id: Some(seq),
            command: Command::Publish {
                channel: args.channel_of(seq),
                data: Data::Json(data),
                key: None,
            },
        };
        let Encoded::Text(text) = encode_command(&request) else {
            unreachable!("JSON publishes are text");
        };
        sink.send(Message::text(text))
            .await
            .map_err(|e| e.to_string())?;
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), acks).await;
    let _ = sink.close().await;
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), String> {
    let args = parse_args()?;
    let shared = Arc::new(Shared {
        origin: Instant::now(),
        subscribers: u32::try_from(args.subscribers).map_err(|e| e.to_string())?,
        ring: (0..RING).map(|_| AtomicU32::new(0)).collect(),
        completed: AtomicU64::new(0),
        progress: Notify::new(),
        window: AtomicBool::new(false),
        deliveries: AtomicU64::new(0),
        acks: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        next: AtomicU64::new(1),
        done: AtomicBool::new(false),
        stop: AtomicBool::new(false),
    });

    // Subscribers, round-robin over the nodes, 64 opening at a time.
    let mut sockets: Vec<(usize, Ws)> = Vec::with_capacity(args.subscribers);
    let mut opening = futures_util::stream::iter((0..args.subscribers).map(|i| {
        let node = i % args.urls.len();
        let (url, args) = (args.urls[node].clone(), args.clone());
        async move { subscriber(&url, &args).await.map(|ws| (node, ws)) }
    }))
    .buffer_unordered(64);
    while let Some(opened) = tokio::time::timeout(SETUP, opening.next())
        .await
        .map_err(|_| "subscribers did not open in time")?
    {
        sockets.push(opened?);
    }
    drop(opening);
    let mut readers = Vec::new();
    for (node, ws) in sockets {
        readers.push(tokio::spawn(read_pushes(ws, node, shared.clone())));
    }

    // Publishers, round-robin over the nodes.
    let mut publishers = Vec::new();
    for p in 0..args.publishers {
        let node = p % args.urls.len();
        let ws = connected(&args.urls[node], 0).await?;
        publishers.push(tokio::spawn(publish(
            ws,
            node,
            args.clone(),
            shared.clone(),
        )));
    }

    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = if args.redis.is_empty() {
        None
    } else {
        Some(commandstats(&args.redis).await?)
    };
    let first = shared.next.load(Ordering::SeqCst);
    let opened = Instant::now();
    shared.window.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs_f64(args.duration)).await;
    shared.window.store(false, Ordering::SeqCst);
    let measured = opened.elapsed();
    let published_in_window = shared.next.load(Ordering::SeqCst) - first;
    let after = if args.redis.is_empty() {
        None
    } else {
        Some(commandstats(&args.redis).await?)
    };
    shared.done.store(true, Ordering::SeqCst);
    for publisher in publishers {
        publisher.await.map_err(|e| e.to_string())??;
    }
    // Let the last messages arrive, then stop every task.
    let last = shared.next.load(Ordering::SeqCst) - 1;
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let notified = shared.progress.notified();
            if shared.completed.load(Ordering::Acquire) >= last {
                return;
            }
            notified.await;
        }
    })
    .await;
    shared.stop.store(true, Ordering::SeqCst);
    let (mut local, mut remote) = (Vec::new(), Vec::new());
    for reader in readers {
        let (l, r) = reader.await.map_err(|e| e.to_string())?;
        local.extend(l);
        remote.extend(r);
    }
    let mut all: Vec<u32> = local.iter().chain(&remote).copied().collect();
    all.sort_unstable();
    remote.sort_unstable();
    local.sort_unstable();

    let secs = measured.as_secs_f64();
    let deliveries = shared.deliveries.load(Ordering::Relaxed);
    let acked = shared.acks.load(Ordering::Relaxed);
    println!(
        "{}nodes {} subscribers {} publishers {} channels {} in-flight {} size {} window {:.1}s",
        if args.label.is_empty() {
            String::new()
        } else {
            format!("[{}] ", args.label)
        },
        args.urls.len(),
        args.subscribers,
        args.publishers,
        args.channels,
        args.in_flight,
        args.size,
        secs
    );
    println!(
        "publishes/s {:.0} (acked {:.0}/s)  deliveries/s {:.0}  errors {}",
        published_in_window as f64 / secs,
        acked as f64 / secs,
        deliveries as f64 / secs,
        shared.errors.load(Ordering::Relaxed)
    );
    println!(
        "latency ms (all subscribers): p50 {:.2} p99 {:.2} p99.9 {:.2}",
        percentile(&all, 0.5),
        percentile(&all, 0.99),
        percentile(&all, 0.999)
    );
    if !remote.is_empty() {
        println!(
            "latency ms (across nodes): p50 {:.2} p99 {:.2} p99.9 {:.2}; (same node): p50 {:.2} p99 {:.2}",
            percentile(&remote, 0.5),
            percentile(&remote, 0.99),
            percentile(&remote, 0.999),
            percentile(&local, 0.5),
            percentile(&local, 0.99),
        );
    }
    if let (Some(before), Some(after)) = (before, after) {
        let delta = |name: &str| {
            after.get(name).copied().unwrap_or(0) - before.get(name).copied().unwrap_or(0)
        };
        let total: u64 = after.keys().map(|k| delta(k)).sum();
        // INFO itself and the nodes' heartbeats are in the counts (a few).
        let publishes = published_in_window.max(1) as f64;
        let mut top: Vec<(String, u64)> = after.keys().map(|k| (k.clone(), delta(k))).collect();
        top.sort_by_key(|entry| std::cmp::Reverse(entry.1));
        println!(
            "redis per publish: round trips (evalsha+eval) {:.3}, commands {:.2} ({})",
            (delta("evalsha") + delta("eval")) as f64 / publishes,
            total as f64 / publishes,
            top.iter()
                .filter(|(_, n)| *n > 0)
                .map(|(k, n)| format!("{k} {:.2}", *n as f64 / publishes))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(())
}
