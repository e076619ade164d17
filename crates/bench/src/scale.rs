//! `duplex bench scale`: one shard of a many-client hub run
//! (`benches/run-scale.sh` starts several, each under the open-file limit).
//!
//! A shard opens `--clients` hub clients (`duplex-hub-client`: it
//! reconnects, resubscribes, recovers, and honours a draining hub's advised
//! delay) from `--source-ips` round-robin. Client `i` (global id `--first` +
//! i) subscribes to `scale:u:<id>`, to `scale:all`, and, when its id is below
//! `--room-size`, to `scale:room` (`--no-own-channel` leaves out the first).
//! It reports how long until every client was subscribed, then, for
//! `--duration` seconds, what arrived on `scale:room` and `scale:all` (a
//! publisher stamps each message with its send time in nanoseconds since the
//! Unix epoch and the phase of the run it belongs to: `{"t": …, "p": "…"}`):
//! the latency per channel and phase, when clients were disconnected and
//! connected again (per 100 ms of the Unix clock, so that shards and the
//! script's events line up), and two kinds of loss:
//! - *silent losses*: a message whose offset skips past the previous one
//!   delivered to that client (across reconnections too) without a `gap`
//!   announced in between;
//! - *missing at the end*: each client's last offset per channel, with
//!   whether a `gap` was announced after it, so that the script can compare
//!   it with the channel's last offset over all shards: a client connected
//!   at the end, behind it, with no `gap` announced lost the tail silently
//!   (a client away at the end is counted apart: it recovers on its next
//!   connection).
//!
//! With `--publish CHANNEL` the shard is the publisher instead: one client
//! publishing stamped messages at `--rate` per second.
//!
//! Invariants: the run is bounded (`--connect-timeout` to be subscribed,
//! then `--duration`); the report is one JSON object on standard output
//! (latencies as `[microseconds, count]` buckets, so that shards merge);
//! every client holds one socket, so a shard uses about `--clients` + 20
//! files.

use std::collections::HashMap;
use std::net::IpAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
    /// The phase of the run the publishes belong to (with `--publish`):
    /// the subscribers report latency per channel and phase.
    #[arg(long, default_value = "run")]
    phase: String,
    /// Leave out each client's own channel `scale:u:<id>` (to tell its
    /// memory apart).
    #[arg(long)]
    no_own_channel: bool,
}

/// The channels whose messages are counted, in [`Mark`] order.
const COUNTED: [&str; 2] = ["scale:all", "scale:room"];

/// One client's position on the counted channels.
#[derive(Default)]
struct Mark {
    /// The last offset delivered, per channel of [`COUNTED`].
    last: [AtomicU64; 2],
    /// A `gap` was announced after it.
    gap_after: [AtomicBool; 2],
    /// Disconnected and not subscribed again (yet).
    away: AtomicBool,
}

/// What the clients of a shard saw, shared by their tasks.
struct Tally {
    started: Instant,
    marks: Box<[Mark]>,
    subscribed: AtomicU64,
    disconnects: AtomicU64,
    gaps: AtomicU64,
    silent_lost: AtomicU64,
    /// Messages received per `channel/phase`.
    received: Mutex<HashMap<String, u64>>,
    /// Latency per `channel/phase`.
    latency: Mutex<HashMap<String, Histogram<u64>>>,
    /// Disconnections per 100 ms of the Unix clock.
    disconnected_at: Mutex<HashMap<u64, u64>>,
    /// Clients connected and subscribed again after a disconnection (their
    /// first subscription confirmed), per 100 ms of the Unix clock.
    reconnected_at: Mutex<HashMap<u64, u64>>,
    /// Subscriptions confirmed again after a disconnection.
    resubscribed: AtomicU64,
    /// What ended a connection that was up (the close code and the reason
    /// with digits masked, see [`cause`]), counted once per time away.
    causes: Mutex<HashMap<String, u64>>,
    /// The highest offset seen per channel.
    highest: Mutex<HashMap<String, u64>>,
}

impl Tally {
    fn count_at(curve: &Mutex<HashMap<u64, u64>>) {
        *curve
            .lock()
            .unwrap()
            .entry(now_nanos() / 100_000_000)
            .or_default() += 1;
    }
}

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// What ended a connection, as a key for [`Tally::causes`]: the close code
/// and the reason, digits masked (`1001 reconnect after N ms`), so a few
/// keys cover a whole run.
fn cause(closed: &duplex::reconnect::Closed) -> String {
    let mut key = format!("{} ", closed.code.0);
    for c in closed.reason.chars().take(60) {
        if !c.is_ascii_digit() {
            key.push(c);
        } else if !key.ends_with('N') {
            key.push('N');
        }
    }
    key.trim_end().to_owned()
}

/// Runs one shard.
pub(crate) async fn run(args: ScaleArgs) -> anyhow::Result<ExitCode> {
    if let Some(channel) = args.publish.clone() {
        return publish(&args, &channel).await;
    }
    let tally = Arc::new(Tally {
        started: Instant::now(),
        marks: (0..args.clients).map(|_| Mark::default()).collect(),
        subscribed: AtomicU64::new(0),
        disconnects: AtomicU64::new(0),
        gaps: AtomicU64::new(0),
        silent_lost: AtomicU64::new(0),
        received: Mutex::new(HashMap::new()),
        latency: Mutex::new(HashMap::new()),
        disconnected_at: Mutex::new(HashMap::new()),
        reconnected_at: Mutex::new(HashMap::new()),
        resubscribed: AtomicU64::new(0),
        causes: Mutex::new(HashMap::new()),
        highest: Mutex::new(HashMap::new()),
    });
    let gate = Arc::new(tokio::sync::Semaphore::new(args.concurrency.max(1)));
    let deadline = tokio::time::Instant::now() + Duration::from_secs_f64(args.connect_timeout);
    let mut handles = Vec::with_capacity(args.clients);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..args.clients {
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
        spawn_client(&mut tasks, &mut handles, client, i, &args, &tally, permit?);
    }
    let own = u64::from(!args.no_own_channel);
    let wanted = (0..args.clients)
        .map(|i| own + 1 + u64::from(args.first + i < args.room_size))
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
    // The report first: closing marks every client away.
    let report = report(
        &tally,
        &args,
        connect_secs,
        subscribed,
        wanted,
        rss_connected,
        handles.len(),
    );
    for handle in &handles {
        handle.close();
    }
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
    index: usize,
    args: &ScaleArgs,
    tally: &Arc<Tally>,
    permit: tokio::sync::OwnedSemaphorePermit,
) {
    let id = args.first + index;
    if !args.no_own_channel {
        let _ = client.subscribe(&format!("scale:u:{id}"));
    }
    let _ = client.subscribe("scale:all");
    if id < args.room_size {
        let _ = client.subscribe("scale:room");
    }
    handles.push(client.handle());
    let tally = tally.clone();
    tasks.spawn(async move {
        let mark = &tally.marks[index];
        let mut permit = Some(permit);
        let mut reconnecting = false;
        let mut back = true;
        while let Some(event) = client.next_event().await {
            match event {
                Event::Subscribed { .. } => {
                    mark.away.store(false, Ordering::Relaxed);
                    if reconnecting {
                        tally.resubscribed.fetch_add(1, Ordering::Relaxed);
                        if !back {
                            back = true;
                            Tally::count_at(&tally.reconnected_at);
                        }
                    } else {
                        tally.subscribed.fetch_add(1, Ordering::AcqRel);
                    }
                    // Connected and subscribed: let the next one connect.
                    permit.take();
                }
                Event::Disconnected(closed) => {
                    mark.away.store(true, Ordering::Relaxed);
                    reconnecting = true;
                    if back {
                        back = false;
                        Tally::count_at(&tally.disconnected_at);
                        *tally
                            .causes
                            .lock()
                            .unwrap()
                            .entry(cause(&closed))
                            .or_default() += 1;
                    }
                    tally.disconnects.fetch_add(1, Ordering::Relaxed);
                }
                Event::Gap { channel } => {
                    tally.gaps.fetch_add(1, Ordering::Relaxed);
                    if let Some(c) = COUNTED.iter().position(|name| *name == channel) {
                        mark.gap_after[c].store(true, Ordering::Relaxed);
                    }
                }
                Event::Message(publication) => {
                    let arrived = now_nanos();
                    let channel = publication.channel.as_str();
                    if let Some(c) = COUNTED.iter().position(|name| *name == channel) {
                        // The client reports each offset once and in order
                        // (across reconnections: it resubscribes from the
                        // last one); a skip is a loss unless a gap came first.
                        let previous = mark.last[c].swap(publication.offset, Ordering::Relaxed);
                        let gap = mark.gap_after[c].swap(false, Ordering::Relaxed);
                        let skipped = publication.offset.saturating_sub(previous + 1);
                        if skipped > 0 && !gap {
                            tally.silent_lost.fetch_add(skipped, Ordering::Relaxed);
                        }
                    }
                    let (sent, phase) = stamp_of(&publication.data);
                    let key = format!("{channel}/{phase}");
                    if let Some(sent) = sent {
                        let mut latency = tally.latency.lock().unwrap();
                        let histogram = latency
                            .entry(key.clone())
                            .or_insert_with(|| Histogram::new(3).expect("histogram"));
                        let _ = histogram.record(arrived.saturating_sub(sent) / 1000);
                    }
                    *tally.received.lock().unwrap().entry(key).or_default() += 1;
                    let mut highest = tally.highest.lock().unwrap();
                    let top = highest.entry(publication.channel).or_default();
                    *top = (*top).max(publication.offset);
                }
                _ => {}
            }
        }
    });
}

/// The publisher's stamp and phase, `{"t": NANOS, "p": PHASE}`.
fn stamp_of(data: &Data) -> (Option<u64>, String) {
    let value = data.as_json().and_then(|json| json.to_value().ok());
    let field = |name| value.as_ref().and_then(|v| v.get(name));
    (
        field("t").and_then(serde_json::Value::as_u64),
        field("p")
            .and_then(serde_json::Value::as_str)
            .unwrap_or("run")
            .to_owned(),
    )
}

fn report(
    tally: &Tally,
    args: &ScaleArgs,
    connect_secs: f64,
    subscribed: u64,
    wanted: u64,
    rss: u64,
    clients: usize,
) -> serde_json::Value {
    let latency = tally.latency.lock().unwrap();
    let phases: serde_json::Map<String, serde_json::Value> = latency
        .iter()
        .map(|(key, h)| {
            let buckets: Vec<[u64; 2]> = h
                .iter_recorded()
                .map(|v| [v.value_iterated_to(), v.count_at_value()])
                .collect();
            (
                key.clone(),
                serde_json::json!({
                    "received": tally.received.lock().unwrap().get(key).copied().unwrap_or(0),
                    "p50_ms": h.value_at_quantile(0.5) as f64 / 1000.0,
                    "p99_ms": h.value_at_quantile(0.99) as f64 / 1000.0,
                    "max_ms": h.max() as f64 / 1000.0,
                    "buckets_us": buckets,
                }),
            )
        })
        .collect();
    // Per counted channel: how many clients ended connected at each offset
    // with no gap announced after it, how many were told of a gap last, and
    // how many were away (disconnected, not back yet: they would recover on
    // their next connection).
    let (first, room_size) = (args.first, args.room_size);
    let highest = tally.highest.lock().unwrap();
    let ends: serde_json::Map<String, serde_json::Value> = COUNTED
        .iter()
        .enumerate()
        .map(|(c, channel)| {
            let mut at: HashMap<u64, u64> = HashMap::new();
            let mut gap_last = 0u64;
            let mut away = 0u64;
            for (index, mark) in tally.marks.iter().take(clients).enumerate() {
                if c == 1 && first + index >= room_size {
                    continue;
                }
                if mark.away.load(Ordering::Relaxed) {
                    away += 1;
                } else if mark.gap_after[c].load(Ordering::Relaxed) {
                    gap_last += 1;
                } else {
                    *at.entry(mark.last[c].load(Ordering::Relaxed)).or_default() += 1;
                }
            }
            let mut at: Vec<[u64; 2]> = at.into_iter().map(|(o, n)| [o, n]).collect();
            at.sort_unstable();
            (
                (*channel).to_owned(),
                serde_json::json!({
                    "highest": highest.get(*channel).copied().unwrap_or(0),
                    "clients_at_offset": at,
                    "gap_last": gap_last,
                    "away": away,
                }),
            )
        })
        .collect();
    let curve = |curve: &Mutex<HashMap<u64, u64>>| {
        let mut points: Vec<[u64; 2]> = curve
            .lock()
            .unwrap()
            .iter()
            .map(|(t, n)| [*t, *n])
            .collect();
        points.sort_unstable();
        points
    };
    serde_json::json!({
        "clients": clients,
        "room_clients": (first..first + clients).filter(|id| *id < room_size).count(),
        "subscriptions": subscribed,
        "subscriptions_wanted": wanted,
        "connect_secs": connect_secs,
        "rss_bytes": rss,
        "disconnects": tally.disconnects.load(Ordering::Relaxed),
        "gaps": tally.gaps.load(Ordering::Relaxed),
        "silent_lost": tally.silent_lost.load(Ordering::Relaxed),
        "resubscribed": tally.resubscribed.load(Ordering::Relaxed),
        "disconnected_per_100ms": curve(&tally.disconnected_at),
        "reconnected_per_100ms": curve(&tally.reconnected_at),
        "disconnect_causes": *tally.causes.lock().unwrap(),
        "phases": phases,
        "ends": ends,
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
    let last_offset = Arc::new(AtomicU64::new(0));
    let every = Duration::from_secs_f64(1.0 / args.rate.max(0.001));
    let end = Instant::now() + Duration::from_secs_f64(args.duration);
    let mut tick = tokio::time::interval(every);
    let mut sent = 0u64;
    let mut acks = tokio::task::JoinSet::new();
    while Instant::now() < end {
        tick.tick().await;
        let data = Data::json(&serde_json::json!({ "t": now_nanos(), "p": args.phase }));
        let publish = handle.publish(channel, data);
        let (acked, failed, last_offset) = (acked.clone(), failed.clone(), last_offset.clone());
        acks.spawn(async move {
            match tokio::time::timeout(Duration::from_secs(30), publish).await {
                Ok(Ok(ack)) => {
                    last_offset.fetch_max(ack.offset, Ordering::Relaxed);
                    acked.fetch_add(1, Ordering::Relaxed)
                }
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
            "last_offset": last_offset.load(Ordering::Relaxed),
        })
    );
    handle.close();
    Ok(ExitCode::SUCCESS)
}
