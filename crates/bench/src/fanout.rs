//! `duplex bench fanout`: one publisher, N subscribers, every message
//! delivered to all of them.
//!
//! Two protocols:
//!
//! - `hub` (default): the Duplex hub protocol (`duplex.v1`, docs/protocol.md;
//!   with `--encoding binary`, its binary envelope `duplex.v1.bin` for every
//!   connection, publisher and subscribers).
//!   Every subscriber sends `connect` and `subscribe` to `--channel` and waits
//!   for `subscribed`; one more connection, the publisher, sends `connect`,
//!   then `publish`es. The hub answers every publish with `published` and
//!   pushes a `message` (the payload wrapped in the hub's envelope) to every
//!   subscriber.
//! - `broadcast`: a plain broadcast server (`peer-broadcast`,
//!   benches/node/broadcast.js): no protocol at all; every text message any
//!   client sends goes to every connected client. The publisher receives its
//!   own messages too and drops them unread beyond the frame.
//!
//! Each payload is a JSON object of `--size` bytes that starts with
//! `{"fanout":[SEQ,NANOS],` (the sequence number and the send time in
//! nanoseconds since the generator started), padded with `x`. A subscriber
//! finds that marker with one substring search and parses the two numbers;
//! nothing else of the message is parsed.
//!
//! **Through the server API.** With `--api-url` (and `--api-key`, or
//! `DUPLEX_API_KEY`), the publisher publishes with `POST /api/publish` to
//! the hub's server API instead of over its WebSocket (over one h2c
//! connection, the messages in flight multiplexed; see [`crate::api`]);
//! the subscribers are the same, and the summary adds each API call's
//! latency (request to reply). Hub protocol and `--window delivered` only.
//!
//! **In flight.** By default (`--window delivered`) a message is in flight
//! from its publish until *every* subscriber has received it, and the
//! publisher keeps `--in-flight` of them under way: the same definition for
//! every server, and a load the servers can sustain. `--window acked` (hub
//! only) counts a message in flight until its `published` reply instead; the
//! hub acknowledges as soon as the message is queued for its subscribers, so
//! that mode measures how fast the hub fills queues and ends, under
//! sustained load, with slow-consumer disconnects (4008). With
//! `--publish-rate R` (formerly `--rate`) the
//! publisher instead publishes R messages per second on a fixed schedule
//! (the timestamp is the scheduled time, so a publisher that falls behind
//! shows as latency: no coordinated omission), whatever is in flight.
//!
//! **Latency.** Publish (the publisher's clock read just before encoding) to
//! delivery (the subscriber's clock read when the duplex client hands it the
//! message), in the same process and on the same monotonic clock. "Last" is
//! the latency of each message at the last subscriber to receive it (the
//! latest arrival among all N), recorded once per message that every
//! subscriber received inside the window; "all" records every delivery.
//!
//! **Server cost.** With `--server-pid`, the server's CPU time over the window
//! per delivery, the bytes it sent over the window per delivery (the
//! kernel's `bytes_sent` of every TCP connection on the server's port, see
//! `tcp_sent`: the frames as they went out, compressed when `--deflate` got
//! permessage-deflate negotiated, whatever call wrote them), and its
//! resident memory before the subscribers connect,
//! once they are all subscribed and `--settle` seconds (2 by default) have
//! passed after the warm-up with nothing published (the difference per
//! subscriber is its memory per subscribed connection; the reading at the
//! warm-up's end, with what its backlog freed still held, is kept beside
//! it), and at the end of the window. On a shared
//! machine, the time the server's and the generator's threads spent runnable
//! but waiting for a core (`/proc/PID/task/*/schedstat`) tells a starved run
//! from an idle one.
//!
//! Sequence of a run: open N subscribers (and, for the hub, wait for every
//! `subscribed`), open the publisher, publish warm-up probes (sequence 0) until
//! every subscriber has received one (so no subscriber misses the first
//! measured message), wait `--settle` and read the server's memory, measure
//! for `--duration`, then publish stop probes
//! until every subscriber has seen one after the deadline and closed.
//!
//! Invariants:
//! - The measured window starts only when every subscriber has received a
//!   probe; it lasts `--duration`, or less when `--messages` were all
//!   delivered to every subscriber first; deliveries, publishes and CPU count
//!   inside it only, and rates are over its actual length.
//! - At most [`RING`]/2 messages are ever outstanding, so the per-message
//!   bookkeeping ring never hands one slot to two live messages.
//! - Every run ends by itself: setup steps time out, the stop phase lasts at
//!   most [`STOP_GRACE`], and subscribers still running then are aborted.
//! - Loopback and other local servers only: the generator trusts its clock
//!   comparison within one process, not across machines.

use std::process::ExitCode;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, bail};
use duplex::{Config, Message};
use duplex_hub_proto::{
    Command, Data, Encoding, ErrorCode, Frame, JsonText, Request, ServerMessage,
};
use futures_util::{StreamExt as _, stream};
use hdrhistogram::Histogram;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::net::{Conn, Scheme, Target};
use super::procfs::{CpuWindow, Memory, Proc};
use super::report::{self, Latency};
use super::sequence::{Arrival, Sequence};
use super::{OutputArgs, TargetArgs};

mod payloads;
mod publisher;
mod subscriber;
mod summary;

use payloads::{chat_payload, parse_stamp, payload};
use publisher::{PublishPlan, PublishStats, drain_until, publish, send_probe};
use subscriber::subscriber;
use summary::{Readings, Summary};

/// Connections opened at once while setting up.
const OPEN_CONCURRENCY: usize = 128;

/// Slots of the per-message bookkeeping ring (a power of two).
const RING: usize = 1 << 16;

/// How long every subscriber has to subscribe, and to see a warm-up probe.
const SETUP_TIMEOUT: Duration = Duration::from_secs(60);

/// Interval between warm-up and stop probes.
const PROBE_INTERVAL: Duration = Duration::from_millis(200);

/// The shortest measured window a rate is computed over, in seconds.
const MIN_WINDOW_S: f64 = 0.1;

/// Connections per source address when the generator spreads them itself
/// (see `Target::spread_over_loopback`): half the hub's default per-address
/// limit.
const PER_SOURCE: usize = 500;

/// Longest stop phase after the window.
const STOP_GRACE: Duration = Duration::from_secs(8);

/// Longest close handshake of one connection.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Histogram shards for the all-deliveries latency (subscriber `i` records
/// into shard `i % SHARDS`), so that no subscriber owns a histogram of its own.
const SHARDS: usize = 16;

/// Request ids of the hub commands this generator sends before publishing.
const CONNECT_ID: u64 = 1;
/// See [`CONNECT_ID`].
const SUBSCRIBE_ID: u64 = 2;

/// Options of `duplex bench fanout`.
#[derive(Debug, clap::Args)]
pub(crate) struct FanoutArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Subscriber connections.
    #[arg(long, default_value_t = 1_000)]
    subscribers: usize,
    /// Messages the publisher keeps in flight (see `--window`); ignored with
    /// `--rate`.
    #[arg(long, default_value_t = 64)]
    in_flight: usize,
    /// Payload size in bytes (the JSON the publisher sends; the hub wraps it
    /// in its envelope).
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// What fills the payload after its stamp: `pad` (one string of `x`,
    /// which deflate shrinks to almost nothing) or `chat` (a chat thread of
    /// English words by a few users, the text deflate meets in practice).
    #[arg(long, value_enum, default_value_t = Fill::Pad)]
    payload: Fill,
    /// Offer permessage-deflate on every connection as browsers do
    /// (`permessage-deflate; client_max_window_bits`), and decompress what
    /// arrives compressed. Off by default: no offer.
    #[arg(long)]
    deflate: bool,
    /// Length of the measured window, in seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// After the warm-up, wait this long with nothing published before
    /// reading the server's memory per subscriber
    /// (`server_anon_subscribed`): the warm-up's backlog (frames queued while
    /// thousands of subscribers caught up) is freed by then, and an
    /// allocator that keeps freed pages for a while (the `duplex` binary's
    /// jemalloc gives them back after about a second) has given them back,
    /// so the reading is what the connections hold. The reading at the end
    /// of the warm-up itself is `server_anon_warm`. 0: read at once.
    #[arg(long, default_value_t = 2.0)]
    settle: f64,
    /// After the warm-up, hold every subscriber this long with nothing
    /// published, then read the server's memory again (`server_anon_quiet`):
    /// what a subscribed client costs once it is quiet (a hub parks quiet
    /// connections after `[heartbeat] park_after`). 0: no quiet spell.
    #[arg(long, default_value_t = 0.0)]
    quiet: f64,
    /// Publish at most this many messages, and end the window early once
    /// every subscriber has received all of them (rates are over the time
    /// actually measured).
    #[arg(long)]
    messages: Option<u64>,
    /// The server's protocol.
    #[arg(long, value_enum, default_value_t = Protocol::Hub)]
    protocol: Protocol,
    /// The hub protocol's envelope: `json` (`duplex.v1`) or `binary`
    /// (`duplex.v1.bin`, offered by every connection). Hub only.
    #[arg(long, value_enum, default_value_t = Envelope::Json)]
    encoding: Envelope,
    /// The hub channel to subscribe and publish to. Turn `join_leave` off in
    /// its namespace on the hub: with it on, N subscribers joining cost N²/2
    /// `join` pushes before the first publish (and `leave`s at the end) where
    /// the broker sends them.
    #[arg(long, default_value = "bench:fanout")]
    channel: String,
    /// Publish this many messages per second on a fixed schedule instead of
    /// keeping `--in-flight` in flight (`--rate` is an old name of it; the
    /// hub's `duplex serve --rate` is the per-connection command limit the
    /// publisher must stay under).
    #[arg(long = "publish-rate", alias = "rate", value_name = "PER_SECOND")]
    rate: Option<f64>,
    /// When a message stops being in flight.
    #[arg(long, value_enum, default_value_t = Window::Delivered)]
    window: Window,
    /// Publish through the hub's server API at this URL (http://HOST:PORT)
    /// rather than over the publisher's WebSocket.
    #[arg(long, value_name = "URL")]
    api_url: Option<String>,
    /// The server API key for --api-url.
    #[arg(long, env = "DUPLEX_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    #[command(flatten)]
    output: OutputArgs,
}

/// What the server speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Protocol {
    /// The Duplex hub protocol: connect, subscribe, publish.
    Hub,
    /// Every text message from a client goes to every client.
    Broadcast,
}

/// The hub protocol's envelope (`--encoding`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Envelope {
    /// JSON text frames, `duplex.v1`.
    Json,
    /// The binary envelope, `duplex.v1.bin`.
    Binary,
}

impl Envelope {
    fn encoding(self) -> Encoding {
        match self {
            Self::Json => Encoding::Json,
            Self::Binary => Encoding::Binary,
        }
    }
}

/// What fills a payload (`--payload`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Fill {
    /// `"pad":"xxx…"`.
    Pad,
    /// A chat thread: `"room":"general","msgs":[{"user":…,"text":…},…]`.
    Chat,
}

/// When a published message stops counting as in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Window {
    /// When every subscriber has received it.
    Delivered,
    /// When the hub has acknowledged it (`published`); hub only.
    Acked,
}

/// Bookkeeping of one outstanding message: which message owns the slot, how
/// many subscribers received it, and the latest arrival.
#[derive(Debug, Default)]
struct Slot {
    /// The sequence number of the message using this slot (0: none).
    seq: AtomicU64,
    /// Subscribers that received it inside the window.
    received: AtomicU32,
    /// Latest arrival, in nanoseconds since [`Shared::origin`].
    latest: AtomicU64,
}

/// Counters a subscriber keeps to itself and adds to the totals when done.
#[derive(Debug, Default, Clone, Copy)]
struct Totals {
    /// Deliveries inside the window.
    deliveries: u64,
    /// Their payload bytes, as received (the hub's envelope included).
    bytes: u64,
    /// Sequence numbers skipped and never received (see [`Sequence`]).
    lost: u64,
    /// Sequence numbers received late (after a higher one), filling their
    /// gap: out of order, not lost.
    reordered: u64,
    /// Sequence numbers received twice.
    duplicates: u64,
}

impl Totals {
    /// Adds `other` to these.
    fn add(&mut self, other: &Self) {
        self.deliveries += other.deliveries;
        self.bytes += other.bytes;
        self.lost += other.lost;
        self.reordered += other.reordered;
        self.duplicates += other.duplicates;
    }
}

/// A subscriber's counters, added to [`Shared::totals`] when dropped: when
/// the task ends, and also when it is aborted at the end of the stop phase
/// (dropping the task's future drops this), so no delivery goes uncounted.
#[derive(Debug)]
struct Tally<'a> {
    /// The counters so far.
    totals: Totals,
    /// Where they go.
    shared: &'a Shared,
}

impl Drop for Tally<'_> {
    /// Adds the counters to the shared totals.
    fn drop(&mut self) {
        lock(&self.shared.totals).add(&self.totals);
    }
}

/// State shared by the publisher, the subscribers and the run.
#[derive(Debug)]
struct Shared {
    /// The zero of every timestamp.
    origin: std::time::Instant,
    /// How many subscribers there are.
    subscribers: u32,
    /// The end of the window, in nanoseconds since `origin` (`u64::MAX`
    /// until the window starts).
    deadline_ns: AtomicU64,
    /// Per-message bookkeeping, indexed by sequence number modulo [`RING`].
    slots: Box<[Slot]>,
    /// Messages every subscriber received inside the window.
    completed: AtomicU64,
    /// Woken when a message completes (the publisher waits on it).
    completion: Notify,
    /// Deliveries so far (for the progress line).
    deliveries: Arc<AtomicU64>,
    /// Subscribers that finished their setup (hub: `subscribed`).
    subscribed: AtomicUsize,
    /// Subscribers that received a probe.
    ready: AtomicUsize,
    /// Subscriber tasks that ended, by success or failure.
    finished: AtomicUsize,
    /// Subscribers that failed.
    failed: AtomicUsize,
    /// The first subscriber failure.
    first_error: Mutex<Option<String>>,
    /// Latency of every delivery, sharded.
    all: Box<[Mutex<Histogram<u64>>]>,
    /// Latency at the last subscriber, once per completed message.
    last: Mutex<Histogram<u64>>,
    /// The subscribers' counters, added as they finish.
    totals: Mutex<Totals>,
}

impl Shared {
    /// Nanoseconds since `origin`.
    fn now_ns(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// The slot of message `seq`.
    fn slot(&self, seq: u64) -> &Slot {
        &self.slots[(seq as usize) & (RING - 1)]
    }

    /// Records a subscriber's failure.
    fn fail(&self, error: &anyhow::Error) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        let mut first = lock(&self.first_error);
        first.get_or_insert_with(|| format!("{error:#}"));
    }
}

/// Locks `mutex`, whether or not a panicking holder poisoned it (every
/// update under these locks is a single step).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs `duplex bench fanout`.
pub(crate) async fn run(args: FanoutArgs) -> anyhow::Result<ExitCode> {
    if args.subscribers == 0 || u32::try_from(args.subscribers).is_err() {
        bail!("--subscribers must be at least 1");
    }
    if args.in_flight == 0 || args.in_flight > RING / 2 {
        bail!("--in-flight must be between 1 and {}", RING / 2);
    }
    if !args.duration.is_finite() || args.duration <= 0.0 {
        bail!("--duration must be positive");
    }
    if args.messages == Some(0) {
        bail!("--messages must be at least 1");
    }
    if args.rate.is_some_and(|r| !r.is_finite() || r <= 0.0) {
        bail!("--publish-rate must be positive");
    }
    if args.window == Window::Acked && args.protocol != Protocol::Hub {
        bail!("--window acked needs --protocol hub (a broadcast server sends no acks)");
    }
    if args.api_url.is_some()
        && (args.protocol != Protocol::Hub || args.window != Window::Delivered)
    {
        bail!("--api-url needs --protocol hub and --window delivered");
    }
    let api = match &args.api_url {
        Some(url) => {
            let key = args
                .api_key
                .as_deref()
                .context("--api-url needs --api-key (or DUPLEX_API_KEY)")?;
            Some(crate::api::ApiPublisher::connect(url, key).await?)
        }
        None => None,
    };
    let (api, mut api_outcomes) = match api {
        Some((api, outcomes)) => (Some(api), Some(outcomes)),
        None => (None, None),
    };
    let mut target = Target::new(&args.target)?;
    if target.scheme != Scheme::WebSocket {
        bail!("duplex bench fanout needs a ws:// URL");
    }
    let encoding = args.encoding.encoding();
    if encoding == Encoding::Binary {
        if args.protocol != Protocol::Hub || args.api_url.is_some() {
            bail!("--encoding binary needs --protocol hub, without --api-url");
        }
        target.offer(encoding.subprotocol());
    }
    // The hub admits 1,000 connections per address by default: spread the
    // subscribers and the publisher so that the default run passes it.
    if let Some(count) = target.spread_over_loopback(args.subscribers + 1, PER_SOURCE) {
        eprintln!(
            "connecting from 127.0.0.1 to 127.0.0.{count} (at most {PER_SOURCE} connections \
             each; the hub allows 1,000 per address by default): pass --source-ips to choose"
        );
    }
    let target = Arc::new(target);
    let config = if args.deflate {
        Config::client()
    } else {
        Config::client().without_compression()
    };
    let n = args.subscribers;
    let server = args.target.server_pid.map(Proc::Pid);
    let memory_before = server.map(Proc::memory).transpose()?;

    let shared = Arc::new(Shared {
        origin: std::time::Instant::now(),
        subscribers: n as u32,
        deadline_ns: AtomicU64::new(u64::MAX),
        slots: (0..RING).map(|_| Slot::default()).collect(),
        completed: AtomicU64::new(0),
        completion: Notify::new(),
        deliveries: Arc::new(AtomicU64::new(0)),
        subscribed: AtomicUsize::new(0),
        ready: AtomicUsize::new(0),
        finished: AtomicUsize::new(0),
        failed: AtomicUsize::new(0),
        first_error: Mutex::new(None),
        all: (0..SHARDS)
            .map(|_| Mutex::new(report::histogram()))
            .collect(),
        last: Mutex::new(report::histogram()),
        totals: Mutex::new(Totals::default()),
    });

    // Subscribers: each task starts (the hub's `connect` and `subscribe`)
    // as soon as its connection is open, not after all of them: the hub closes
    // a connection that sends no `connect` within 10 s.
    let opened = Instant::now();
    eprintln!("opening {n} connections to {} …", target.url);
    let mut tasks: Vec<JoinHandle<()>> = Vec::with_capacity(n);
    let mut opening = stream::iter(0..n)
        .map(|_| target.open(&config))
        .buffer_unordered(OPEN_CONCURRENCY);
    while let Some(conn) = opening.next().await {
        let conn = conn.context("cannot open the connections")?;
        let (protocol, channel) = (args.protocol, args.channel.clone());
        let index = tasks.len();
        tasks.push(tokio::spawn(subscriber(
            conn,
            index,
            (protocol, encoding),
            channel,
            shared.clone(),
        )));
    }
    drop(opening);
    let setup_end = Instant::now() + SETUP_TIMEOUT;
    wait_for(&shared, &shared.subscribed, n, setup_end, "subscribe").await?;
    eprintln!(
        "{n} subscribers open{} in {:.2} s",
        if args.protocol == Protocol::Hub {
            " and subscribed"
        } else {
            ""
        },
        opened.elapsed().as_secs_f64()
    );

    // The publisher, then probes until every subscriber hears one.
    let mut publisher = target.open(&config).await?;
    if args.protocol == Protocol::Hub {
        hub_connect(&mut publisher, encoding)
            .await
            .context("publisher: connect")?;
    }
    let plan = Arc::new(PublishPlan {
        protocol: args.protocol,
        encoding,
        api: api.clone(),
        channel: args.channel.clone(),
        size: args.size,
        fill: args.payload,
        in_flight: args.in_flight,
        window: args.window,
        interval_ns: args.rate.map(|r| 1e9 / r),
        limit: args.messages.unwrap_or(u64::MAX),
    });
    let warm = Instant::now();
    while shared.ready.load(Ordering::Acquire) < n {
        check_failures(&shared)?;
        if Instant::now() >= setup_end {
            bail!(
                "only {} of {n} subscribers received the warm-up messages",
                shared.ready.load(Ordering::Acquire)
            );
        }
        send_probe(&mut publisher, &plan).await?;
        drain_until(&mut publisher, encoding, Instant::now() + PROBE_INTERVAL).await?;
        if let Some(outcomes) = &mut api_outcomes {
            while let Ok(outcome) = outcomes.try_recv() {
                outcome.context("publisher: a warm-up publish through the API")?;
            }
        }
    }
    if let Some(api) = &api {
        // Only the window's calls count.
        api.latency
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .reset();
    }
    let memory_warm = server.map(Proc::memory).transpose()?;
    let memory_subscribed =
        hold_then_read(&mut publisher, encoding, args.settle, &shared, server).await?;
    let memory_quiet = if args.quiet > 0.0 {
        eprintln!("holding {n} subscribers quiet for {} s", args.quiet);
        hold_then_read(&mut publisher, encoding, args.quiet, &shared, server).await?
    } else {
        None
    };
    eprintln!(
        "every subscriber receives (warm-up {:.2} s); publishing for {} s{}",
        warm.elapsed().as_secs_f64(),
        args.duration,
        args.messages
            .map(|m| format!(" or {m} messages"))
            .unwrap_or_default()
    );

    // The window.
    let server_cpu = server.map(CpuWindow::start).transpose()?;
    let sent = |_: Proc| match crate::tcp_sent::bytes_sent_from_port(target.addr.port()) {
        Ok(bytes) => Some(bytes),
        Err(error) => {
            eprintln!("the server's bytes sent are not measured: {error:#}");
            None
        }
    };
    let server_written_start = server.and_then(sent);
    let client_cpu = CpuWindow::start(Proc::Current)?;
    let server_wait_start = args
        .target
        .server_pid
        .and_then(|pid| run_queue_wait(Some(pid)));
    let client_wait_start = run_queue_wait(None);
    let start = Instant::now();
    let window = Duration::from_secs_f64(args.duration);
    let deadline = start + window;
    let start_ns = shared.now_ns();
    let deadline_ns = start_ns + u64::try_from(window.as_nanos()).unwrap_or(u64::MAX / 2);
    shared.deadline_ns.store(deadline_ns, Ordering::Release);
    let progress = report::spawn_progress("deliveries", shared.deliveries.clone(), start);
    let publishing = tokio::spawn(publish(
        publisher,
        plan.clone(),
        shared.clone(),
        start_ns,
        deadline_ns,
        deadline,
        api_outcomes,
    ));
    let (publisher, stats, publish_error) = publishing.await?;
    let api_latency = api
        .as_ref()
        .map(|api| Latency::of(&api.latency.lock().unwrap_or_else(|e| e.into_inner())));
    let measured = start.elapsed().min(window);
    let server_seconds = server_cpu.map(|w| w.elapsed()).transpose()?;
    let server_written = server_written_start
        .zip(server.and_then(sent))
        .map(|(start, end)| end.saturating_sub(start));
    let client_seconds = client_cpu.elapsed()?;
    let waited = |start: Option<f64>, pid: Option<u32>| {
        start
            .zip(run_queue_wait(pid))
            .map(|(start, end)| (end - start).max(0.0))
    };
    let server_waited = args
        .target
        .server_pid
        .and_then(|pid| waited(server_wait_start, Some(pid)));
    let client_waited = waited(client_wait_start, None);
    let memory_end = server.map(Proc::memory).transpose()?;
    progress.abort();

    // Stop: probes after the deadline tell the subscribers to close.
    let stop_end = Instant::now() + STOP_GRACE;
    if let Some(mut publisher) = publisher {
        while shared.finished.load(Ordering::Acquire) < n && Instant::now() < stop_end {
            if send_probe(&mut publisher, &plan).await.is_err()
                || drain_until(&mut publisher, encoding, Instant::now() + PROBE_INTERVAL)
                    .await
                    .is_err()
            {
                break;
            }
        }
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, publisher.close()).await;
    }
    while shared.finished.load(Ordering::Acquire) < n && Instant::now() < stop_end {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut unfinished = 0;
    for task in &tasks {
        if !task.is_finished() {
            task.abort();
            unfinished += 1;
        }
    }
    for task in tasks {
        let _ = task.await;
    }

    // Results.
    let totals = *lock(&shared.totals);
    let mut all = report::histogram();
    for shard in &shared.all {
        all.add(&*lock(shard))?;
    }
    let last = Latency::of(&lock(&shared.last));
    let all = Latency::of(&all);
    let completed = shared.completed.load(Ordering::Acquire);
    let failed = shared.failed.load(Ordering::Relaxed);
    let publisher_failed = publish_error.is_some();
    let first_error = publish_error
        .map(|e| format!("publisher: {e:#}"))
        .or_else(|| lock(&shared.first_error).clone());
    Summary {
        args: &args,
        url: &target.url,
        api: api.is_some(),
        api_latency,
        stats,
        totals,
        last,
        all,
        completed,
        failed,
        unfinished,
        publisher_failed,
        first_error: first_error.as_deref(),
        seconds: measured.as_secs_f64(),
        server_seconds,
        client_seconds,
        server_waited,
        client_waited,
        server_written,
        memory: Readings {
            before: memory_before,
            warm: memory_warm,
            subscribed: memory_subscribed,
            quiet: memory_quiet,
            end: memory_end,
        },
    }
    .print();
    if let Some(error) = first_error {
        eprintln!("duplex bench fanout: {failed} subscribers failed; the first error: {error}");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// Seconds the threads of a process (the given one, or this one) have spent
/// runnable but waiting for a CPU, summed over its current threads (the
/// second field of `/proc/PID/task/TID/schedstat`); `None` where the kernel
/// does not keep scheduler statistics.
fn run_queue_wait(pid: Option<u32>) -> Option<f64> {
    let dir = match pid {
        Some(pid) => format!("/proc/{pid}/task"),
        None => "/proc/self/task".to_owned(),
    };
    let mut nanos = 0u64;
    for task in std::fs::read_dir(dir).ok()? {
        let path = task.ok()?.path().join("schedstat");
        // A thread that ended since the listing is simply not counted.
        let Ok(stat) = std::fs::read_to_string(path) else {
            continue;
        };
        nanos += stat.split_whitespace().nth(1)?.parse::<u64>().ok()?;
    }
    Some(nanos as f64 / 1e9)
}

/// Waits until `counter` reaches `n`, failing on a subscriber failure or at
/// `until`.
async fn wait_for(
    shared: &Shared,
    counter: &AtomicUsize,
    n: usize,
    until: Instant,
    what: &str,
) -> anyhow::Result<()> {
    while counter.load(Ordering::Acquire) < n {
        check_failures(shared)?;
        if Instant::now() >= until {
            bail!(
                "only {} of {n} subscribers managed to {what} in time",
                counter.load(Ordering::Acquire)
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Publishes nothing for `seconds` (the publisher keeps reading, and so
/// answers the server's keepalive pings), then reads the server's memory.
async fn hold_then_read(
    publisher: &mut Conn,
    encoding: Encoding,
    seconds: f64,
    shared: &Shared,
    server: Option<Proc>,
) -> anyhow::Result<Option<Memory>> {
    if seconds > 0.0 {
        let until = Instant::now() + Duration::from_secs_f64(seconds);
        drain_until(publisher, encoding, until).await?;
        check_failures(shared)?;
    }
    server.map(Proc::memory).transpose()
}

/// Fails when any subscriber has failed.
fn check_failures(shared: &Shared) -> anyhow::Result<()> {
    if shared.failed.load(Ordering::Relaxed) > 0 {
        let error = lock(&shared.first_error).clone().unwrap_or_default();
        bail!(
            "{} subscribers failed; the first: {error}",
            shared.failed.load(Ordering::Relaxed)
        );
    }
    Ok(())
}

/// Sends `connect` on a hub connection and waits for `connected`.
async fn hub_connect(conn: &mut Conn, encoding: Encoding) -> anyhow::Result<()> {
    send_command(
        conn,
        encoding,
        CONNECT_ID,
        Command::Connect {
            token: None,
            name: Some("duplex-bench".to_owned()),
        },
    )
    .await?;
    conn.flush().await?;
    await_reply(conn, encoding, CONNECT_ID).await
}

/// Queues one hub command in `encoding`.
async fn send_command(
    conn: &mut Conn,
    encoding: Encoding,
    id: u64,
    command: Command,
) -> anyhow::Result<()> {
    let message = match encoding.encode_command(&Request::new(id, command)) {
        duplex_hub_proto::Encoded::Text(text) => Message::text(text),
        duplex_hub_proto::Encoded::Binary(bytes) => Message::binary(bytes),
    };
    conn.feed(message).await
}

/// The hub-protocol view of a received message.
fn frame_of(message: &Message) -> Frame<'_> {
    match message {
        Message::Text(text) => Frame::Text(text.as_str()),
        Message::Binary(bytes) => Frame::Binary(bytes),
    }
}

/// Reads hub messages until the reply with `id`; an error reply fails.
async fn await_reply(conn: &mut Conn, encoding: Encoding, id: u64) -> anyhow::Result<()> {
    loop {
        let Some(message) = conn.next().await? else {
            bail!("the hub closed the connection{}", close_reason(conn));
        };
        if encoding == Encoding::Json && !matches!(message, Message::Text(_)) {
            continue;
        }
        match encoding.decode_server(frame_of(&message))? {
            ServerMessage::Error { code, message, .. } => {
                bail!("the hub refused: {code}: {message}")
            }
            ServerMessage::Connected { id: Some(got), .. }
            | ServerMessage::Subscribed { id: Some(got), .. }
                if got == id =>
            {
                return Ok(());
            }
            _ => {}
        }
    }
}

/// ", close CODE REASON" when the server closed `conn` with a close frame.
fn close_reason(conn: &Conn) -> String {
    match conn {
        Conn::Ws(ws) => ws
            .close_info()
            .map(|info| format!(" (close {}: {})", u16::from(info.code), info.reason))
            .unwrap_or_default(),
        Conn::Raw(_) => String::new(),
    }
}
