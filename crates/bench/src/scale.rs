//! `duplex bench scale`: one shard of a many-client hub run
//! (`benches/run-scale.sh` starts several, each under the open-file limit).
//!
//! A shard opens `--clients` hub clients (`duplex-hub-client`: it
//! reconnects, resubscribes, recovers, and honours a draining hub's advised
//! delay) from `--source-ips` round-robin. Client `i` (global id `--first` +
//! i) subscribes to `scale:u:<id>`, to `scale:all`, and, when its id is below
//! `--room-size`, to `scale:room`. It reports how long until every client was
//! subscribed, then, for `--duration` seconds, what arrived on `scale:room`
//! and `scale:all` (a publisher stamps each message with its send time in
//! nanoseconds since the Unix epoch: `{"t": …}`): the latency per channel,
//! disconnections, when the clients were subscribed again (per 100 ms), and
//! *silent losses*: a message whose offset skips past the previous one
//! without a `gap` announced in between. With `--publish CHANNEL` the shard
//! is the publisher instead: one client publishing stamped messages at
//! `--rate` per second.
//!
//! Invariants: the run is bounded (`--connect-timeout` to be subscribed,
//! then `--duration`); the report is one JSON object on standard output
//! (latencies as `[microseconds, count]` buckets, so that shards merge);
//! every client holds one socket, so a shard uses about `--clients` + 20
//! files.

use std::collections::HashMap;
use std::net::IpAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use duplex::reconnect;
use duplex_hub_client::{Client, Event, Options};
use duplex_hub_proto::Data;
use hdrhistogram::Histogram;

/// Options of `duplex bench scale`.
#[derive(Debug, clap::Args)]
pub(crate) struct ScaleArgs {
    /// The hub: `ws://HOST:PORT/ws`.
    #[arg(long)]
    url: String,
    /// Local addresses to connect from, round-robin.
    #[arg(long, value_delimiter = ',')]
    source_ips: Vec<IpAddr>,
    /// Clients in this shard.
    #[arg(long, default_value_t = 1000)]
    clients: usize,
    /// The global id of this shard's first client.
    #[arg(long, default_value_t = 0)]
    first: usize,
    /// Clients with a global id below this subscribe to `scale:room`.
    #[arg(long, default_value_t = 10_000)]
    room_size: usize,
    /// Connections opened at once (the rest wait their turn).
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    /// Seconds to wait for every client to be subscribed.
    #[arg(long, default_value_t = 300.0)]
    connect_timeout: f64,
    /// Seconds to stay connected and count what arrives, once subscribed.
    #[arg(long, default_value_t = 30.0)]
    duration: f64,
    /// Be the publisher: publish stamped messages to this channel.
    #[arg(long)]
    publish: Option<String>,
    /// Publishes per second (with `--publish`).
    #[arg(long, default_value_t = 1.0)]
    rate: f64,
}

/// What the clients of a shard saw, shared by their tasks.
struct Tally {
    started: Instant,
    subscribed: AtomicU64,
    disconnects: AtomicU64,
    gaps: AtomicU64,
    silent_lost: AtomicU64,
    received: Mutex<HashMap<String, u64>>,
    latency: Mutex<HashMap<String, Histogram<u64>>>,
    /// Subscriptions confirmed again after a disconnection, per 100 ms
    /// since the start.
    resubscribed: Mutex<Vec<u64>>,
    /// The highest offset seen per channel, and each client's last.
    highest: Mutex<HashMap<String, u64>>,
}

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Runs one shard.
pub(crate) async fn run(args: ScaleArgs) -> anyhow::Result<ExitCode> {
    if let Some(channel) = args.publish.clone() {
        return publish(&args, &channel).await;
    }
    let tally = Arc::new(Tally {
        started: Instant::now(),
        subscribed: AtomicU64::new(0),
        disconnects: AtomicU64::new(0),
        gaps: AtomicU64::new(0),
        silent_lost: AtomicU64::new(0),
        received: Mutex::new(HashMap::new()),
        latency: Mutex::new(HashMap::new()),
        resubscribed: Mutex::new(Vec::new()),
        highest: Mutex::new(HashMap::new()),
    });
    let gate = Arc::new(tokio::sync::Semaphore::new(args.concurrency.max(1)));
    let deadline = tokio::time::Instant::now() + Duration::from_secs_f64(args.connect_timeout);
    let mut handles = Vec::with_capacity(args.clients);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..args.clients {
        let id = args.first + i;
        let Ok(permit) = tokio::time::timeout_at(deadline, gate.clone().acquire_owned()).await
        else {
            eprintln!(
                "scale shard {}: only {i} clients started in time",
                args.first
            );
            break;
        };
        let mut request = duplex::ClientRequest::new(args.url.clone());
        if !args.source_ips.is_empty() {
            request.transport.local_address = Some(args.source_ips[i % args.source_ips.len()]);
        }
        let client = Client::connect_with(request, client_options());
        spawn_client(&mut tasks, &mut handles, client, id, &args, &tally, permit?);
    }
    let wanted = (0..args.clients)
        .map(|i| {
            if args.first + i < args.room_size {
                3
            } else {
                2
            }
        })
        .sum::<u64>();
    while tally.subscribed.load(Ordering::Acquire) < wanted
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let connect_secs = tally.started.elapsed().as_secs_f64();
    let subscribed = tally.subscribed.load(Ordering::Acquire);
    eprintln!(
        "scale shard {}: {subscribed}/{wanted} subscriptions in {connect_secs:.2} s",
        args.first
    );
    let rss_connected = crate::procfs::Proc::Current.rss_bytes().unwrap_or(0);
    tokio::time::sleep(Duration::from_secs_f64(args.duration)).await;
    for handle in &handles {
        handle.close();
    }
    let report = report(
        &tally,
        connect_secs,
        subscribed,
        wanted,
        rss_connected,
        args.clients,
    );
    println!("{report}");
    tasks.abort_all();
    Ok(ExitCode::SUCCESS)
}

/// Reconnection as a crowd should: the default backoff (full jitter from
/// 1 s), no keepalive pings from the clients (the hub pings), no
/// compression.
fn client_options() -> Options {
    let mut options = Options::default().reconnect(reconnect::Options::default());
    options.config = duplex::Config::client().without_compression();
    options.config.ping_interval = None;
    options
}

fn spawn_client(
    tasks: &mut tokio::task::JoinSet<()>,
    handles: &mut Vec<duplex_hub_client::Handle>,
    mut client: Client,
    id: usize,
    args: &ScaleArgs,
    tally: &Arc<Tally>,
    permit: tokio::sync::OwnedSemaphorePermit,
) {
    let _ = client.subscribe(&format!("scale:u:{id}"));
    let _ = client.subscribe("scale:all");
    if id < args.room_size {
        let _ = client.subscribe("scale:room");
    }
    handles.push(client.handle());
    let tally = tally.clone();
    tasks.spawn(async move {
        let mut permit = Some(permit);
        let mut last: HashMap<String, u64> = HashMap::new();
        let mut excused: Vec<String> = Vec::new();
        let mut reconnecting = false;
        while let Some(event) = client.next_event().await {
            match event {
                Event::Subscribed { channel, .. } => {
                    if !channel.starts_with("scale:u:") {
                        // Offsets before this subscription are not ours.
                        last.remove(&channel);
                    }
                    if reconnecting {
                        let slot = (tally.started.elapsed().as_millis() / 100) as usize;
                        let mut curve = tally.resubscribed.lock().unwrap();
                        if curve.len() <= slot {
                            curve.resize(slot + 1, 0);
                        }
                        curve[slot] += 1;
                    } else {
                        tally.subscribed.fetch_add(1, Ordering::AcqRel);
                    }
                    // Connected and subscribed: let the next one connect.
                    permit.take();
                }
                Event::Disconnected(_) => {
                    reconnecting = true;
                    tally.disconnects.fetch_add(1, Ordering::Relaxed);
                }
                Event::Gap { channel } => {
                    tally.gaps.fetch_add(1, Ordering::Relaxed);
                    excused.push(channel);
                }
                Event::Message(publication) => {
                    let arrived = now_nanos();
                    let channel = publication.channel.clone();
                    if let Some(previous) = last.get(&channel) {
                        let skipped = publication.offset.saturating_sub(previous + 1);
                        if skipped > 0 && !excused.contains(&channel) {
                            tally.silent_lost.fetch_add(skipped, Ordering::Relaxed);
                        }
                    }
                    excused.retain(|c| c != &channel);
                    last.insert(channel.clone(), publication.offset);
                    let sent = stamp_of(&publication.data);
                    let mut latency = tally.latency.lock().unwrap();
                    let histogram = latency
                        .entry(channel.clone())
                        .or_insert_with(|| Histogram::new(3).expect("histogram"));
                    if let Some(sent) = sent {
                        let _ = histogram.record(arrived.saturating_sub(sent) / 1000);
                    }
                    drop(latency);
                    *tally
                        .received
                        .lock()
                        .unwrap()
                        .entry(channel.clone())
                        .or_default() += 1;
                    let mut highest = tally.highest.lock().unwrap();
                    let top = highest.entry(channel).or_default();
                    *top = (*top).max(publication.offset);
                }
                _ => {}
            }
        }
    });
}

/// The publisher's stamp, `{"t": NANOS}`.
fn stamp_of(data: &Data) -> Option<u64> {
    data.as_json()?.to_value().ok()?.get("t")?.as_u64()
}

fn report(
    tally: &Tally,
    connect_secs: f64,
    subscribed: u64,
    wanted: u64,
    rss: u64,
    clients: usize,
) -> serde_json::Value {
    let latency = tally.latency.lock().unwrap();
    let channels: serde_json::Map<String, serde_json::Value> = latency
        .iter()
        .map(|(channel, h)| {
            let buckets: Vec<[u64; 2]> = h
                .iter_recorded()
                .map(|v| [v.value_iterated_to(), v.count_at_value()])
                .collect();
            (
                channel.clone(),
                serde_json::json!({
                    "received": tally.received.lock().unwrap().get(channel).copied().unwrap_or(0),
                    "p50_ms": h.value_at_quantile(0.5) as f64 / 1000.0,
                    "p99_ms": h.value_at_quantile(0.99) as f64 / 1000.0,
                    "max_ms": h.max() as f64 / 1000.0,
                    "buckets_us": buckets,
                }),
            )
        })
        .collect();
    serde_json::json!({
        "clients": clients,
        "subscriptions": subscribed,
        "subscriptions_wanted": wanted,
        "connect_secs": connect_secs,
        "rss_bytes": rss,
        "disconnects": tally.disconnects.load(Ordering::Relaxed),
        "gaps": tally.gaps.load(Ordering::Relaxed),
        "silent_lost": tally.silent_lost.load(Ordering::Relaxed),
        "resubscribed_per_100ms": *tally.resubscribed.lock().unwrap(),
        "channels": channels,
    })
}

/// The publisher: stamped messages to `channel` at `--rate` per second for
/// `--duration` seconds; reports acks and failures.
async fn publish(args: &ScaleArgs, channel: &str) -> anyhow::Result<ExitCode> {
    let mut options = client_options();
    options.reconnect = reconnect::Options::default().backoff(reconnect::Backoff {
        initial: Duration::from_millis(100),
        max: Duration::from_secs(1),
        factor: 2.0,
    });
    let mut client = Client::connect(&args.url, options);
    let handle = client.handle();
    tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(event) = client.next_event().await {
            if matches!(event, Event::Connected { .. }) {
                return;
            }
        }
    })
    .await
    .context("the publisher did not connect within 30 s")?;
    // Keep reading the publisher's own events.
    tokio::spawn(async move { while client.next_event().await.is_some() {} });
    let acked = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let every = Duration::from_secs_f64(1.0 / args.rate.max(0.001));
    let end = Instant::now() + Duration::from_secs_f64(args.duration);
    let mut tick = tokio::time::interval(every);
    let mut sent = 0u64;
    let mut acks = tokio::task::JoinSet::new();
    while Instant::now() < end {
        tick.tick().await;
        let data = Data::json(&serde_json::json!({ "t": now_nanos() }));
        let publish = handle.publish(channel, data);
        let (acked, failed) = (acked.clone(), failed.clone());
        acks.spawn(async move {
            match tokio::time::timeout(Duration::from_secs(30), publish).await {
                Ok(Ok(_)) => acked.fetch_add(1, Ordering::Relaxed),
                _ => failed.fetch_add(1, Ordering::Relaxed),
            };
        });
        sent += 1;
    }
    while acks.join_next().await.is_some() {}
    println!(
        "{}",
        serde_json::json!({
            "channel": channel,
            "published": sent,
            "acked": acked.load(Ordering::Relaxed),
            "failed": failed.load(Ordering::Relaxed),
        })
    );
    handle.close();
    Ok(ExitCode::SUCCESS)
}
