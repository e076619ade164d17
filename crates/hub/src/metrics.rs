//! The hub's metrics, exposed in the Prometheus text format (version 0.0.4)
//! by [`Metrics::render`], and as plain numbers by [`Metrics::snapshot`] for
//! the live dashboard.
//!
//! # Invariants
//! - Every update is a few relaxed atomic operations: no lock, no
//!   allocation, no clock read. It is cheap enough to call per message.
//! - The set of series is fixed: every label value is known in advance
//!   ([`RejectReason`], the close codes in [`KNOWN_CLOSE_CODES`] plus
//!   `"other"`, the protocol's error codes plus `"other"`), so no input can
//!   make the output grow. Every series is rendered, zeros included.
//! - Counters only go up. Gauges (`duplex_connections`,
//!   `duplex_connections_parked`, `duplex_subscriptions`, `duplex_channels`, `duplex_history_bytes`) are signed: a negative value
//!   means a caller's bookkeeping bug, and is shown rather than hidden.
//! - Histogram buckets are rendered cumulative, ending with `+Inf`, and
//!   `_count` is the `+Inf` bucket, even while other threads update them
//!   (reads are not one atomic snapshot: `_sum` may be a little ahead or
//!   behind the buckets).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use duplex_hub_proto::ErrorCode;

use crate::limits::Refused;

/// Upper bounds (`le`) of the finite delivery-latency histogram buckets, in
/// nanoseconds: 50 µs to 10 s in 1–2.5–5 steps. A last bucket, `+Inf`,
/// follows them.
pub(crate) const LATENCY_BOUNDS_NS: [u64; 17] = [
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// Number of latency buckets, `+Inf` included.
pub(crate) const BUCKETS: usize = LATENCY_BOUNDS_NS.len() + 1;

/// The largest finite bound, in seconds: the estimate of any quantile that
/// falls in the `+Inf` bucket.
const LARGEST_BOUND_SECS: f64 = LATENCY_BOUNDS_NS[BUCKETS - 2] as f64 / 1e9;

/// Close codes counted under their own label; any other code counts as
/// `"other"`.
pub(crate) const KNOWN_CLOSE_CODES: [u16; 15] = [
    1000, 1001, 1002, 1003, 1006, 1007, 1008, 1009, 1011, 1013, 4001, 4002, 4003, 4008, 4029,
];

const CLOSE_SLOTS: usize = KNOWN_CLOSE_CODES.len() + 1;
const ERROR_SLOTS: usize = ErrorCode::ALL.len() + 1;

/// Why a connection was refused before it became a hub connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectReason {
    /// The `Origin` is not allowed (403).
    Origin,
    /// The token in the handshake was refused (401).
    Auth,
    /// The node is at its connection limit (503).
    TotalLimit,
    /// The client's address is at its connection limit (429).
    IpLimit,
    /// The upgrade request was invalid or timed out.
    Handshake,
    /// The client offered subprotocols but not one the hub speaks (400).
    Subprotocol,
    /// The client's address opens connections faster than
    /// `connection_rate_per_ip` (429).
    IpRate,
}

impl RejectReason {
    /// Every reason, in label order.
    pub const ALL: [Self; 7] = [
        Self::Origin,
        Self::Auth,
        Self::TotalLimit,
        Self::IpLimit,
        Self::Handshake,
        Self::Subprotocol,
        Self::IpRate,
    ];

    /// The `reason` label value, such as `"ip_limit"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Origin => "origin",
            Self::Auth => "auth",
            Self::TotalLimit => "total_limit",
            Self::IpLimit => "ip_limit",
            Self::Handshake => "handshake",
            Self::Subprotocol => "subprotocol",
            Self::IpRate => "ip_rate",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl From<Refused> for RejectReason {
    fn from(refused: Refused) -> Self {
        match refused {
            Refused::Total => Self::TotalLimit,
            Refused::PerIp => Self::IpLimit,
            Refused::Rate { .. } => Self::IpRate,
        }
    }
}

/// A histogram of durations with fixed buckets ([`LATENCY_BOUNDS_NS`] and
/// `+Inf`).
#[derive(Debug)]
pub(crate) struct Histogram {
    /// Per-bucket (not cumulative) counts; the last is `+Inf`.
    counts: [AtomicU64; BUCKETS],
    /// Sum of the observations, in nanoseconds (wraps after 584 years).
    sum_ns: AtomicU64,
}

impl Histogram {
    pub(crate) fn new() -> Self {
        Self {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_ns: AtomicU64::new(0),
        }
    }

    pub(crate) fn observe(&self, value: Duration) {
        let ns = u64::try_from(value.as_nanos()).unwrap_or(u64::MAX);
        // The first bucket whose bound is >= ns (`le` is inclusive), or
        // `+Inf` (index 17) past the last bound.
        let bucket = LATENCY_BOUNDS_NS.partition_point(|&bound| bound < ns);
        self.counts[bucket].fetch_add(1, Relaxed);
        self.sum_ns.fetch_add(ns, Relaxed);
    }

    pub(crate) fn counts(&self) -> [u64; BUCKETS] {
        std::array::from_fn(|i| self.counts[i].load(Relaxed))
    }

    /// The sum of the observations, in seconds.
    pub(crate) fn sum_secs(&self) -> f64 {
        self.sum_ns.load(Relaxed) as f64 / 1e9
    }
}

/// The hub's counters, gauges and histogram. Share it with an `Arc`; see the
/// module docs for the invariants.
#[derive(Debug)]
pub struct Metrics {
    connections: AtomicI64,
    /// Hub connections parked (no task, see `duplex::park`).
    parked: AtomicI64,
    accepted: AtomicU64,
    rejected: [AtomicU64; RejectReason::ALL.len()],
    messages_in: AtomicU64,
    bytes_in: AtomicU64,
    messages_out: AtomicU64,
    bytes_out: AtomicU64,
    publishes: AtomicU64,
    published_bytes: AtomicU64,
    deliveries: AtomicU64,
    subscriptions: AtomicI64,
    channels: AtomicI64,
    history_bytes: AtomicI64,
    history_evicted: AtomicU64,
    latency: Histogram,
    close_codes: [AtomicU64; CLOSE_SLOTS],
    errors: [AtomicU64; ERROR_SLOTS],
    slow_consumers: AtomicU64,
    rate_limited: AtomicU64,
    /// Open WebSockets by [`Transport`] (`duplex_connections_by_transport`).
    by_transport: [AtomicI64; 3],
    /// Client connections served by HTTP version, by [`Transport`]
    /// (`duplex_http_connections_total`).
    http_connections: [AtomicU64; 2],
    /// The proxy hooks' (`duplex_hook_*`).
    pub(crate) hooks: crate::hooks::HookMetrics,
}

/// How a WebSocket (or the TCP/TLS connection under it) reached the hub:
/// the `transport` label of `duplex_connections_by_transport`, the
/// `version` label of `duplex_http_connections_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Transport {
    /// An HTTP/1.1 upgrade: one TCP (or TLS) connection per WebSocket.
    Http1,
    /// An extended CONNECT stream (RFC 8441) of an HTTP/2 connection, which
    /// may carry many WebSockets and page requests.
    Http2,
    /// A hub session over plain HTTP: its stream of Server-Sent Events
    /// (`GET /session`) and its commands as `POST`s, or a read-only `/sse`
    /// stream.
    Sse,
}

impl Transport {
    /// Every transport, in rendering order.
    pub const ALL: [Transport; 3] = [Transport::Http1, Transport::Http2, Transport::Sse];

    /// The HTTP versions of `duplex_http_connections_total`.
    const VERSIONS: [Transport; 2] = [Transport::Http1, Transport::Http2];

    /// The `transport` label value.
    pub fn label(self) -> &'static str {
        match self {
            Transport::Http1 => "websocket_http1",
            Transport::Http2 => "websocket_http2",
            Transport::Sse => "sse",
        }
    }

    /// The `version` label value of `duplex_http_connections_total`.
    pub fn version(self) -> &'static str {
        match self {
            Transport::Http1 | Transport::Sse => "1.1",
            Transport::Http2 => "2",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// One open WebSocket counted in `duplex_connections_by_transport` while it
/// lives.
#[derive(Debug)]
pub(crate) struct TransportGuard(std::sync::Arc<Metrics>, Transport);

impl TransportGuard {
    /// Counts a WebSocket on `transport` until dropped.
    pub(crate) fn new(metrics: &std::sync::Arc<Metrics>, transport: Transport) -> Self {
        metrics.by_transport[transport.index()].fetch_add(1, Relaxed);
        Self(metrics.clone(), transport)
    }
}

impl Drop for TransportGuard {
    fn drop(&mut self) {
        self.0.by_transport[self.1.index()].fetch_sub(1, Relaxed);
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn add(counter: &AtomicU64, n: usize) {
    counter.fetch_add(n as u64, Relaxed);
}

fn gauge(value: usize) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl Metrics {
    /// All zeros.
    pub fn new() -> Self {
        Self {
            connections: AtomicI64::new(0),
            parked: AtomicI64::new(0),
            accepted: AtomicU64::new(0),
            rejected: std::array::from_fn(|_| AtomicU64::new(0)),
            messages_in: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
            messages_out: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            publishes: AtomicU64::new(0),
            published_bytes: AtomicU64::new(0),
            deliveries: AtomicU64::new(0),
            subscriptions: AtomicI64::new(0),
            channels: AtomicI64::new(0),
            history_bytes: AtomicI64::new(0),
            history_evicted: AtomicU64::new(0),
            latency: Histogram::new(),
            close_codes: std::array::from_fn(|_| AtomicU64::new(0)),
            errors: std::array::from_fn(|_| AtomicU64::new(0)),
            slow_consumers: AtomicU64::new(0),
            rate_limited: AtomicU64::new(0),
            by_transport: std::array::from_fn(|_| AtomicI64::new(0)),
            http_connections: std::array::from_fn(|_| AtomicU64::new(0)),
            hooks: crate::hooks::HookMetrics::default(),
        }
    }

    /// A WebSocket upgrade was accepted (counts
    /// `duplex_connections_accepted_total`; the gauge moves with
    /// [`Metrics::connection_opened`]).
    pub fn accepted(&self) {
        self.accepted.fetch_add(1, Relaxed);
    }

    /// A hub connection started (the `duplex_connections` gauge). Pair with
    /// [`Metrics::connection_closed`].
    pub fn connection_opened(&self) {
        self.connections.fetch_add(1, Relaxed);
    }

    /// A hub connection parked (the `duplex_connections_parked` gauge).
    pub fn connection_parked(&self) {
        self.parked.fetch_add(1, Relaxed);
    }

    /// A parked hub connection resumed.
    pub fn connection_resumed(&self) {
        self.parked.fetch_sub(1, Relaxed);
    }

    /// An open connection ended with close `code` (1006 when it ended without
    /// a close frame).
    pub fn connection_closed(&self, code: u16) {
        self.connections.fetch_sub(1, Relaxed);
        let slot = KNOWN_CLOSE_CODES
            .iter()
            .position(|&known| known == code)
            .unwrap_or(KNOWN_CLOSE_CODES.len());
        self.close_codes[slot].fetch_add(1, Relaxed);
    }

    /// A connection was refused before the upgrade completed.
    pub fn rejected(&self, reason: RejectReason) {
        self.rejected[reason.index()].fetch_add(1, Relaxed);
    }

    /// A WebSocket message of `bytes` payload bytes arrived from a client.
    pub fn message_in(&self, bytes: usize) {
        self.messages_in.fetch_add(1, Relaxed);
        add(&self.bytes_in, bytes);
    }

    /// `count` WebSocket messages of `bytes` frame bytes in all were written
    /// to a client (call it per batch written).
    pub fn messages_out(&self, count: usize, bytes: usize) {
        add(&self.messages_out, count);
        add(&self.bytes_out, bytes);
    }

    /// A publish was accepted: its frame of `frame_bytes` bytes was queued
    /// for `reached` subscribers on this node. This counts publishes and
    /// fan-out; what is actually written is counted by
    /// [`Metrics::messages_out`].
    pub fn published(&self, reached: usize, frame_bytes: usize) {
        self.publishes.fetch_add(1, Relaxed);
        add(&self.published_bytes, frame_bytes);
        add(&self.deliveries, reached);
    }

    /// A subscription was added on this node.
    pub fn subscribed(&self) {
        self.subscriptions.fetch_add(1, Relaxed);
    }

    /// `count` subscriptions were removed (one by `unsubscribe`, or all of a
    /// connection's when it ends).
    pub fn unsubscribed(&self, count: usize) {
        self.subscriptions.fetch_sub(gauge(count), Relaxed);
    }

    /// The node now has `count` channels.
    pub fn set_channels(&self, count: usize) {
        self.channels.store(gauge(count), Relaxed);
    }

    /// The in-memory broker now keeps `bytes` of history, all channels
    /// together (as `[limits] history_bytes` counts them).
    pub fn set_history_bytes(&self, bytes: usize) {
        self.history_bytes.store(gauge(bytes), Relaxed);
    }

    /// `count` kept messages were dropped to keep the node within its
    /// history budget (not those that left by a channel's own bounds).
    pub fn history_evicted(&self, count: usize) {
        add(&self.history_evicted, count);
    }

    /// A message reached a client `latency` after the hub accepted its
    /// publish.
    pub fn delivery_latency(&self, latency: Duration) {
        self.latency.observe(latency);
    }

    /// An `error` reply with `code` (a protocol error code such as
    /// `"forbidden"`) was sent; unknown codes count as `"other"`.
    pub fn error(&self, code: &str) {
        let slot = ErrorCode::ALL
            .iter()
            .position(|known| known.as_str() == code)
            .unwrap_or(ErrorCode::ALL.len());
        self.errors[slot].fetch_add(1, Relaxed);
    }

    /// A connection was found to be a slow consumer (its queue overflowed).
    pub fn slow_consumer(&self) {
        self.slow_consumers.fetch_add(1, Relaxed);
    }

    /// A command was refused for exceeding the rate limit.
    pub fn rate_limited(&self) {
        self.rate_limited.fetch_add(1, Relaxed);
    }

    /// A client connection (TCP or TLS) began to be served in HTTP
    /// `version` (`duplex_http_connections_total`).
    pub fn http_connection(&self, version: Transport) {
        if let Some(counter) = self.http_connections.get(version.index()) {
            counter.fetch_add(1, Relaxed);
        }
    }

    /// Open hub connections on `transport` (`duplex_connections_by_transport`).
    /// Only HTTP/2's and SSE's are counted as such (their tasks hold a
    /// [`TransportGuard`]); the HTTP/1.1 ones are the other open connections,
    /// so that an HTTP/1.1 session's task, which lives as long as the
    /// connection, holds no guard (16 bytes that would move its future into
    /// a larger allocation class).
    pub fn connections_by_transport(&self, transport: Transport) -> i64 {
        let http2 = self.by_transport[Transport::Http2.index()].load(Relaxed);
        let sse = self.by_transport[Transport::Sse.index()].load(Relaxed);
        match transport {
            Transport::Http2 => http2,
            Transport::Sse => sse,
            Transport::Http1 => (self.connections.load(Relaxed) - http2 - sse).max(0),
        }
    }

    /// Client connections served in HTTP `version` since start.
    pub fn http_connections(&self, version: Transport) -> u64 {
        self.http_connections
            .get(version.index())
            .map_or(0, |counter| counter.load(Relaxed))
    }

    /// Everything, in the Prometheus text exposition format 0.0.4 (serve it
    /// as `text/plain; version=0.0.4; charset=utf-8`).
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8 << 10);
        let w = &mut out;
        let load = |a: &AtomicU64| a.load(Relaxed);

        scalar(
            w,
            "duplex_connections",
            "gauge",
            "Open hub connections.",
            self.connections.load(Relaxed),
        );
        scalar(
            w,
            "duplex_connections_parked",
            "gauge",
            "Open hub connections parked: quiet, without a task or a socket registration \
             until they have something to do ([heartbeat] park_after).",
            self.parked.load(Relaxed),
        );
        header(
            w,
            "duplex_connections_by_transport",
            "gauge",
            "Open connections (hub and echo) by transport: websocket_http1 (an HTTP/1.1 \
             upgrade), websocket_http2 (an RFC 8441 stream of an HTTP/2 connection) or sse \
             (a hub session or read-only stream over plain HTTP).",
        );
        for transport in Transport::ALL {
            let _ = writeln!(
                w,
                "duplex_connections_by_transport{{transport=\"{}\"}} {}",
                transport.label(),
                self.connections_by_transport(transport)
            );
        }
        header(
            w,
            "duplex_http_connections_total",
            "counter",
            "Client TCP/TLS connections served, by HTTP version (1.1 or 2).",
        );
        for version in Transport::VERSIONS {
            let _ = writeln!(
                w,
                "duplex_http_connections_total{{version=\"{}\"}} {}",
                version.version(),
                load(&self.http_connections[version.index()])
            );
        }
        scalar(
            w,
            "duplex_connections_accepted_total",
            "counter",
            "Connections accepted.",
            load(&self.accepted),
        );
        header(
            w,
            "duplex_connections_rejected_total",
            "counter",
            "Connections refused before the upgrade, by reason.",
        );
        for reason in RejectReason::ALL {
            let value = load(&self.rejected[reason.index()]);
            let _ = writeln!(
                w,
                "duplex_connections_rejected_total{{reason=\"{}\"}} {value}",
                reason.as_str()
            );
        }
        scalar(
            w,
            "duplex_messages_in_total",
            "counter",
            "WebSocket messages received from clients.",
            load(&self.messages_in),
        );
        scalar(
            w,
            "duplex_messages_out_total",
            "counter",
            "WebSocket messages written to clients.",
            load(&self.messages_out),
        );
        scalar(
            w,
            "duplex_bytes_in_total",
            "counter",
            "Payload bytes of the messages received from clients.",
            load(&self.bytes_in),
        );
        scalar(
            w,
            "duplex_bytes_out_total",
            "counter",
            "Frame bytes of the messages written to clients.",
            load(&self.bytes_out),
        );
        scalar(
            w,
            "duplex_publishes_total",
            "counter",
            "Publishes accepted.",
            load(&self.publishes),
        );
        scalar(
            w,
            "duplex_published_bytes_total",
            "counter",
            "Frame bytes of the publishes accepted, counted once per publish.",
            load(&self.published_bytes),
        );
        scalar(
            w,
            "duplex_deliveries_total",
            "counter",
            "Messages queued for subscribers on this node (publish fan-out).",
            load(&self.deliveries),
        );
        scalar(
            w,
            "duplex_subscriptions",
            "gauge",
            "Subscriptions of the connections on this node.",
            self.subscriptions.load(Relaxed),
        );
        scalar(
            w,
            "duplex_channels",
            "gauge",
            "Channels on this node.",
            self.channels.load(Relaxed),
        );
        scalar(
            w,
            "duplex_history_bytes",
            "gauge",
            "Bytes of history the node keeps, all channels together (limits.history_bytes).",
            self.history_bytes.load(Relaxed),
        );
        scalar(
            w,
            "duplex_history_evicted_total",
            "counter",
            "Kept messages dropped, oldest first, to stay within limits.history_bytes.",
            load(&self.history_evicted),
        );

        let name = "duplex_delivery_latency_seconds";
        header(
            w,
            name,
            "histogram",
            "Time from accepting a publish to writing it to a subscriber.",
        );
        let counts = self.latency.counts();
        let mut cumulative = 0u64;
        for (i, count) in counts.iter().enumerate() {
            cumulative += count;
            if i + 1 < BUCKETS {
                let le = LATENCY_BOUNDS_NS[i] as f64 / 1e9;
                let _ = writeln!(w, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
            } else {
                let _ = writeln!(w, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
            }
        }
        let sum = self.latency.sum_ns.load(Relaxed) as f64 / 1e9;
        let _ = writeln!(w, "{name}_sum {sum}");
        let _ = writeln!(w, "{name}_count {cumulative}");

        header(
            w,
            "duplex_close_codes_total",
            "counter",
            "Connections ended, by WebSocket close code (1006: without a close frame).",
        );
        for (slot, counter) in self.close_codes.iter().enumerate() {
            let value = load(counter);
            match KNOWN_CLOSE_CODES.get(slot) {
                Some(code) => {
                    let _ = writeln!(w, "duplex_close_codes_total{{code=\"{code}\"}} {value}");
                }
                None => {
                    let _ = writeln!(w, "duplex_close_codes_total{{code=\"other\"}} {value}");
                }
            }
        }
        header(
            w,
            "duplex_errors_total",
            "counter",
            "Error replies sent, by protocol error code.",
        );
        for (slot, counter) in self.errors.iter().enumerate() {
            let code = ErrorCode::ALL.get(slot).map_or("other", |c| c.as_str());
            let _ = writeln!(
                w,
                "duplex_errors_total{{code=\"{code}\"}} {}",
                load(counter)
            );
        }
        scalar(
            w,
            "duplex_slow_consumers_total",
            "counter",
            "Connections closed as slow consumers (4008).",
            load(&self.slow_consumers),
        );
        scalar(
            w,
            "duplex_rate_limited_total",
            "counter",
            "Commands refused for exceeding the rate limit.",
            load(&self.rate_limited),
        );
        self.hooks.render(w);
        out
    }

    /// What the console breaks down, as JSON objects of the non-zero
    /// counts: open WebSockets by transport (every transport, zero
    /// included), and totals since start of close codes, error replies and
    /// refused connections (by reason). Each is bounded by the labels it
    /// has (the known codes and `other`).
    pub fn breakdown(&self) -> serde_json::Value {
        let transports: serde_json::Map<String, serde_json::Value> = Transport::ALL
            .iter()
            .map(|t| {
                (
                    t.label().to_owned(),
                    self.connections_by_transport(*t).into(),
                )
            })
            .collect();
        let nonzero = |pairs: &mut dyn Iterator<Item = (String, u64)>| {
            pairs
                .filter(|(_, n)| *n > 0)
                .map(|(k, n)| (k, serde_json::Value::from(n)))
                .collect::<serde_json::Map<_, _>>()
        };
        let closes = nonzero(&mut self.close_codes.iter().enumerate().map(|(slot, c)| {
            let code = KNOWN_CLOSE_CODES
                .get(slot)
                .map_or_else(|| "other".to_owned(), u16::to_string);
            (code, c.load(Relaxed))
        }));
        let errors = nonzero(&mut self.errors.iter().enumerate().map(|(slot, c)| {
            let code = ErrorCode::ALL.get(slot).map_or("other", |c| c.as_str());
            (code.to_owned(), c.load(Relaxed))
        }));
        let rejected = nonzero(&mut RejectReason::ALL.iter().map(|r| {
            (
                r.as_str().to_owned(),
                self.rejected[r.index()].load(Relaxed),
            )
        }));
        serde_json::json!({
            "transports": transports,
            "closes": closes,
            "errors": errors,
            "rejected": rejected,
        })
    }

    /// The main numbers, for the dashboard. Counters are totals since start:
    /// take two snapshots and use [`Snapshot::since`] for rates and recent
    /// latencies.
    pub fn snapshot(&self) -> Snapshot {
        let buckets = self.latency.counts();
        let mut snapshot = Snapshot {
            connections: self.connections.load(Relaxed).max(0) as u64,
            subscriptions: self.subscriptions.load(Relaxed).max(0) as u64,
            channels: self.channels.load(Relaxed).max(0) as u64,
            accepted: self.accepted.load(Relaxed),
            messages_in: self.messages_in.load(Relaxed),
            messages_out: self.messages_out.load(Relaxed),
            bytes_in: self.bytes_in.load(Relaxed),
            bytes_out: self.bytes_out.load(Relaxed),
            publishes: self.publishes.load(Relaxed),
            deliveries: self.deliveries.load(Relaxed),
            latency_count: 0,
            latency_p50: 0.0,
            latency_p90: 0.0,
            latency_p99: 0.0,
            buckets,
        };
        snapshot.derive_latency();
        snapshot
    }
}

pub(crate) fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn scalar(out: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    header(out, name, kind, help);
    let _ = writeln!(out, "{name} {value}");
}

/// The main numbers at one moment, as [`Metrics::snapshot`] reads them.
///
/// Gauges (`connections`, `subscriptions`, `channels`) are current values;
/// the other counts are totals since the hub started (or, from
/// [`Snapshot::since`], over an interval). Latencies are in seconds,
/// estimated from the histogram buckets as Prometheus's
/// `histogram_quantile` does (linear within a bucket; 10 s for the `+Inf`
/// bucket), and 0 when nothing was observed.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Snapshot {
    /// Open connections.
    pub connections: u64,
    /// Subscriptions.
    pub subscriptions: u64,
    /// Channels.
    pub channels: u64,
    /// Connections accepted.
    pub accepted: u64,
    /// Messages received from clients.
    pub messages_in: u64,
    /// Messages written to clients.
    pub messages_out: u64,
    /// Payload bytes received.
    pub bytes_in: u64,
    /// Frame bytes written.
    pub bytes_out: u64,
    /// Publishes accepted.
    pub publishes: u64,
    /// Messages queued for subscribers.
    pub deliveries: u64,
    /// Delivery latencies observed.
    pub latency_count: u64,
    /// Median publish-to-delivery latency, seconds.
    pub latency_p50: f64,
    /// 90th percentile latency, seconds.
    pub latency_p90: f64,
    /// 99th percentile latency, seconds.
    pub latency_p99: f64,
    #[serde(skip)]
    buckets: [u64; BUCKETS],
}

impl Snapshot {
    /// What happened between `earlier` and this snapshot: counters and the
    /// latency histogram as differences (so the latencies are those of the
    /// interval), gauges as of this snapshot.
    pub fn since(&self, earlier: &Snapshot) -> Snapshot {
        let mut delta = Snapshot {
            connections: self.connections,
            subscriptions: self.subscriptions,
            channels: self.channels,
            accepted: self.accepted.saturating_sub(earlier.accepted),
            messages_in: self.messages_in.saturating_sub(earlier.messages_in),
            messages_out: self.messages_out.saturating_sub(earlier.messages_out),
            bytes_in: self.bytes_in.saturating_sub(earlier.bytes_in),
            bytes_out: self.bytes_out.saturating_sub(earlier.bytes_out),
            publishes: self.publishes.saturating_sub(earlier.publishes),
            deliveries: self.deliveries.saturating_sub(earlier.deliveries),
            latency_count: 0,
            latency_p50: 0.0,
            latency_p90: 0.0,
            latency_p99: 0.0,
            buckets: std::array::from_fn(|i| self.buckets[i].saturating_sub(earlier.buckets[i])),
        };
        delta.derive_latency();
        delta
    }

    fn derive_latency(&mut self) {
        self.latency_count = self.buckets.iter().sum();
        self.latency_p50 = quantile(&self.buckets, 0.50);
        self.latency_p90 = quantile(&self.buckets, 0.90);
        self.latency_p99 = quantile(&self.buckets, 0.99);
    }
}

/// The `q` quantile (0..=1), in seconds, of per-bucket `counts`.
fn quantile(counts: &[u64; BUCKETS], q: f64) -> f64 {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return 0.0;
    }
    let rank = q * total as f64;
    let mut below = 0u64;
    for (i, &count) in counts.iter().enumerate() {
        if count > 0 && (below + count) as f64 >= rank {
            if i + 1 == BUCKETS {
                // +Inf: the largest finite bound is all we know.
                return LARGEST_BOUND_SECS;
            }
            let lower = if i == 0 { 0 } else { LATENCY_BOUNDS_NS[i - 1] };
            let upper = LATENCY_BOUNDS_NS[i];
            let within = ((rank - below as f64) / count as f64).clamp(0.0, 1.0);
            return (lower as f64 + (upper - lower) as f64 * within) / 1e9;
        }
        below += count;
    }
    LARGEST_BOUND_SECS
}

/// The dashboard's latency window: `$sys:stats` carries the percentiles of
/// the deliveries of the last this many seconds (one snapshot a second).
pub(crate) const LATENCY_WINDOW: usize = 10;

/// Snapshots of the last few seconds, to report latencies of a sliding
/// window rather than since start (all-time percentiles barely move once
/// the hub has run a while).
///
/// Invariant: holds at most `len` snapshots, oldest first; what
/// [`LatencyWindow::push`] returns covers what happened since the oldest
/// one (or since start until `len` snapshots were pushed).
#[derive(Debug)]
pub(crate) struct LatencyWindow {
    len: usize,
    earlier: std::collections::VecDeque<Snapshot>,
}

impl LatencyWindow {
    /// A window of `len` snapshots (at least 1).
    pub(crate) fn new(len: usize) -> Self {
        let len = len.max(1);
        Self {
            len,
            earlier: std::collections::VecDeque::with_capacity(len + 1),
        }
    }

    /// Adds `now` and returns what happened within the window: counters and
    /// latencies of the interval, gauges as of `now`.
    pub(crate) fn push(&mut self, now: Snapshot) -> Snapshot {
        let windowed = match self.earlier.front() {
            Some(oldest) => now.since(oldest),
            None => now.clone(),
        };
        self.earlier.push_back(now);
        while self.earlier.len() > self.len {
            self.earlier.pop_front();
        }
        windowed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// The console's breakdown: every transport (zero included), and only
    /// the close codes, error codes and refusal reasons that happened.
    #[test]
    fn the_breakdown_lists_transports_and_what_happened() {
        let m = std::sync::Arc::new(Metrics::new());
        let empty = m.breakdown();
        assert_eq!(
            empty,
            serde_json::json!({
                "transports": {"websocket_http1": 0, "websocket_http2": 0, "sse": 0},
                "closes": {}, "errors": {}, "rejected": {},
            })
        );
        m.connection_opened();
        m.connection_opened();
        let _h2 = TransportGuard::new(&m, Transport::Http2);
        m.connection_closed(1000);
        m.connection_opened();
        m.connection_closed(4321);
        m.error("forbidden");
        m.rejected(RejectReason::Origin);
        m.rejected(RejectReason::Origin);
        assert_eq!(
            m.breakdown(),
            serde_json::json!({
                "transports": {"websocket_http1": 0, "websocket_http2": 1, "sse": 0},
                "closes": {"1000": 1, "other": 1},
                "errors": {"forbidden": 1},
                "rejected": {"origin": 2},
            })
        );
    }

    /// One sample line: `name{labels} value`.
    #[derive(Debug)]
    struct Sample {
        name: String,
        labels: Vec<(String, String)>,
        value: f64,
    }

    /// A small parser of the text format, strict about the shapes the hub
    /// writes: HELP then TYPE then the family's samples; every sample
    /// belongs to the family just announced.
    fn parse(text: &str) -> (HashMap<String, String>, Vec<Sample>) {
        let mut types = HashMap::new();
        let mut samples = Vec::new();
        let mut current: Option<(String, String)> = None;
        let mut helped: Option<String> = None;
        assert!(text.ends_with('\n'));
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').expect("HELP name text");
                assert!(!help.is_empty());
                helped = Some(name.to_owned());
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
                assert_eq!(helped.as_deref(), Some(name), "HELP precedes TYPE");
                assert!(["counter", "gauge", "histogram"].contains(&kind), "{kind}");
                assert!(
                    types.insert(name.to_owned(), kind.to_owned()).is_none(),
                    "one TYPE per family: {name}"
                );
                current = Some((name.to_owned(), kind.to_owned()));
                continue;
            }
            assert!(!line.starts_with('#') && !line.is_empty(), "{line:?}");
            let (series, value) = line.rsplit_once(' ').expect("series value");
            let value: f64 = value.parse().expect("a number");
            let (name, labels) = match series.split_once('{') {
                None => (series.to_owned(), Vec::new()),
                Some((name, rest)) => {
                    let body = rest.strip_suffix('}').expect("closing brace");
                    let labels = body
                        .split(',')
                        .map(|pair| {
                            let (k, v) = pair.split_once('=').expect("label=value");
                            let v = v.strip_prefix('"').and_then(|v| v.strip_suffix('"'));
                            (k.to_owned(), v.expect("quoted").to_owned())
                        })
                        .collect();
                    (name.to_owned(), labels)
                }
            };
            assert!(
                name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                "{name}"
            );
            let (family, kind) = current.as_ref().expect("TYPE before samples");
            let ok = if kind == "histogram" {
                ["_bucket", "_sum", "_count"]
                    .iter()
                    .any(|s| name == format!("{family}{s}"))
            } else {
                name == *family
            };
            assert!(ok, "{name} outside its family {family}");
            samples.push(Sample {
                name,
                labels,
                value,
            });
        }
        (types, samples)
    }

    fn value(samples: &[Sample], name: &str, label: Option<(&str, &str)>) -> f64 {
        samples
            .iter()
            .find(|s| {
                s.name == name
                    && match label {
                        None => s.labels.is_empty(),
                        Some((k, v)) => s.labels.iter().any(|(a, b)| a == k && b == v),
                    }
            })
            .unwrap_or_else(|| panic!("no sample {name} {label:?}"))
            .value
    }

    #[test]
    fn render_parses_with_every_family_and_series() {
        let m = Metrics::new();
        let (types, samples) = parse(&m.render());
        for (name, kind) in [
            ("duplex_connections", "gauge"),
            ("duplex_connections_parked", "gauge"),
            ("duplex_connections_by_transport", "gauge"),
            ("duplex_http_connections_total", "counter"),
            ("duplex_connections_accepted_total", "counter"),
            ("duplex_connections_rejected_total", "counter"),
            ("duplex_messages_in_total", "counter"),
            ("duplex_messages_out_total", "counter"),
            ("duplex_bytes_in_total", "counter"),
            ("duplex_bytes_out_total", "counter"),
            ("duplex_publishes_total", "counter"),
            ("duplex_subscriptions", "gauge"),
            ("duplex_channels", "gauge"),
            ("duplex_history_bytes", "gauge"),
            ("duplex_history_evicted_total", "counter"),
            ("duplex_delivery_latency_seconds", "histogram"),
            ("duplex_close_codes_total", "counter"),
            ("duplex_errors_total", "counter"),
            ("duplex_slow_consumers_total", "counter"),
            ("duplex_rate_limited_total", "counter"),
            ("duplex_hook_requests_total", "counter"),
            ("duplex_hook_failures_total", "counter"),
            ("duplex_hook_in_flight", "gauge"),
            ("duplex_hook_waiting", "gauge"),
            ("duplex_hook_duration_seconds", "histogram"),
        ] {
            assert_eq!(types.get(name).map(String::as_str), Some(kind), "{name}");
        }
        let rejected = samples
            .iter()
            .filter(|s| s.name == "duplex_connections_rejected_total")
            .count();
        assert_eq!(rejected, RejectReason::ALL.len());
        let closes = samples
            .iter()
            .filter(|s| s.name == "duplex_close_codes_total")
            .count();
        assert_eq!(closes, KNOWN_CLOSE_CODES.len() + 1);
        let errors = samples
            .iter()
            .filter(|s| s.name == "duplex_errors_total")
            .count();
        assert_eq!(errors, 15);
        assert!(samples.iter().all(|s| s.value == 0.0));
    }

    #[test]
    fn histogram_is_cumulative_and_ends_at_count() {
        let m = Metrics::new();
        for us in [10, 50, 51, 700, 3_000, 80_000, 2_000_000, 20_000_000] {
            m.delivery_latency(Duration::from_micros(us));
        }
        let (_, samples) = parse(&m.render());
        let name = "duplex_delivery_latency_seconds";
        let buckets: Vec<(f64, f64)> = samples
            .iter()
            .filter(|s| s.name == format!("{name}_bucket"))
            .map(|s| {
                assert_eq!(s.labels.len(), 1);
                assert_eq!(s.labels[0].0, "le");
                let le = match s.labels[0].1.as_str() {
                    "+Inf" => f64::INFINITY,
                    le => le.parse().unwrap(),
                };
                (le, s.value)
            })
            .collect();
        assert_eq!(buckets.len(), BUCKETS);
        assert_eq!(buckets[0].0, 0.00005);
        assert_eq!(buckets[BUCKETS - 2].0, 10.0);
        assert!(buckets.windows(2).all(|w| w[0].0 < w[1].0), "bounds ascend");
        assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1), "cumulative");
        let (last_le, last) = buckets[BUCKETS - 1];
        assert_eq!(last_le, f64::INFINITY);
        assert_eq!(last, 8.0);
        assert_eq!(value(&samples, &format!("{name}_count"), None), 8.0);
        // `le` is inclusive: 10 µs and exactly 50 µs are in the first bucket.
        assert_eq!(buckets[0].1, 2.0);
        assert_eq!(buckets[1].1, 3.0, "51 µs in le=0.0001");
        assert_eq!(buckets[BUCKETS - 2].1, 7.0, "20 s only in +Inf");
        let sum = value(&samples, &format!("{name}_sum"), None);
        assert!((sum - 22.083_811).abs() < 1e-9, "{sum}");
    }

    #[test]
    fn counters_and_gauges_move() {
        let m = Metrics::new();
        for _ in 0..3 {
            m.accepted();
            m.connection_opened();
        }
        m.connection_closed(1000);
        m.connection_closed(4321);
        m.rejected(RejectReason::Origin);
        m.rejected(Refused::PerIp.into());
        m.rejected(Refused::Total.into());
        m.message_in(10);
        m.message_in(5);
        m.messages_out(3, 300);
        m.published(7, 120);
        m.subscribed();
        m.subscribed();
        m.unsubscribed(1);
        m.set_channels(4);
        m.set_history_bytes(1234);
        m.history_evicted(2);
        m.error("forbidden");
        m.error("no_such_code");
        m.slow_consumer();
        m.rate_limited();
        m.rate_limited();
        let (_, s) = parse(&m.render());
        assert_eq!(value(&s, "duplex_connections", None), 1.0);
        assert_eq!(value(&s, "duplex_connections_accepted_total", None), 3.0);
        let close = "duplex_close_codes_total";
        assert_eq!(value(&s, close, Some(("code", "1000"))), 1.0);
        assert_eq!(value(&s, close, Some(("code", "other"))), 1.0);
        assert_eq!(value(&s, close, Some(("code", "4008"))), 0.0);
        let rejected = "duplex_connections_rejected_total";
        assert_eq!(value(&s, rejected, Some(("reason", "origin"))), 1.0);
        assert_eq!(value(&s, rejected, Some(("reason", "ip_limit"))), 1.0);
        assert_eq!(value(&s, rejected, Some(("reason", "total_limit"))), 1.0);
        assert_eq!(value(&s, rejected, Some(("reason", "auth"))), 0.0);
        assert_eq!(value(&s, "duplex_messages_in_total", None), 2.0);
        assert_eq!(value(&s, "duplex_bytes_in_total", None), 15.0);
        assert_eq!(value(&s, "duplex_messages_out_total", None), 3.0);
        assert_eq!(value(&s, "duplex_bytes_out_total", None), 300.0);
        assert_eq!(value(&s, "duplex_publishes_total", None), 1.0);
        assert_eq!(value(&s, "duplex_published_bytes_total", None), 120.0);
        assert_eq!(value(&s, "duplex_deliveries_total", None), 7.0);
        assert_eq!(value(&s, "duplex_subscriptions", None), 1.0);
        assert_eq!(value(&s, "duplex_channels", None), 4.0);
        assert_eq!(value(&s, "duplex_history_bytes", None), 1234.0);
        assert_eq!(value(&s, "duplex_history_evicted_total", None), 2.0);
        let errors = "duplex_errors_total";
        assert_eq!(value(&s, errors, Some(("code", "forbidden"))), 1.0);
        assert_eq!(value(&s, errors, Some(("code", "other"))), 1.0);
        assert_eq!(value(&s, errors, Some(("code", "rate_limited"))), 0.0);
        assert_eq!(value(&s, "duplex_slow_consumers_total", None), 1.0);
        assert_eq!(value(&s, "duplex_rate_limited_total", None), 2.0);
    }

    #[test]
    fn every_protocol_error_code_has_its_label() {
        let m = Metrics::new();
        for code in ErrorCode::ALL {
            m.error(code.as_str());
        }
        let (_, s) = parse(&m.render());
        for code in ErrorCode::ALL {
            let label = Some(("code", code.as_str()));
            assert_eq!(value(&s, "duplex_errors_total", label), 1.0, "{code}");
        }
        assert_eq!(
            value(&s, "duplex_errors_total", Some(("code", "other"))),
            0.0
        );
        for code in KNOWN_CLOSE_CODES {
            m.connection_closed(code);
        }
        let (_, s) = parse(&m.render());
        for code in KNOWN_CLOSE_CODES {
            let label = code.to_string();
            let label = Some(("code", label.as_str()));
            assert_eq!(value(&s, "duplex_close_codes_total", label), 1.0);
        }
    }

    #[test]
    fn snapshot_numbers_and_quantiles() {
        let m = Metrics::new();
        let empty = m.snapshot();
        assert_eq!(empty.latency_count, 0);
        assert_eq!(empty.latency_p99, 0.0);
        m.connection_opened();
        m.message_in(1);
        m.messages_out(2, 2);
        m.published(1, 1);
        // 100 observations in (0.5 ms, 1 ms]: every quantile is inside.
        for _ in 0..100 {
            m.delivery_latency(Duration::from_micros(800));
        }
        let s = m.snapshot();
        assert_eq!(
            (s.connections, s.messages_in, s.messages_out, s.publishes),
            (1, 1, 2, 1)
        );
        assert_eq!(s.latency_count, 100);
        assert!((s.latency_p50 - 0.00075).abs() < 1e-12, "{}", s.latency_p50);
        assert!((s.latency_p90 - 0.00095).abs() < 1e-12, "{}", s.latency_p90);
        assert!(s.latency_p99 > 0.0005 && s.latency_p99 <= 0.001);

        // Ten slow ones: p99 lands in (1 s, 2.5 s], p50 stays fast.
        for _ in 0..10 {
            m.delivery_latency(Duration::from_millis(2000));
        }
        let t = m.snapshot();
        assert!(t.latency_p50 <= 0.001);
        assert!(
            t.latency_p99 > 1.0 && t.latency_p99 <= 2.5,
            "{}",
            t.latency_p99
        );

        // The interval's view: only the ten slow ones.
        let d = t.since(&s);
        assert_eq!(d.latency_count, 10);
        assert!(d.latency_p50 > 1.0 && d.latency_p50 <= 2.5);
        assert_eq!(d.messages_in, 0);
        assert_eq!(d.connections, 1, "gauges are current, not differences");

        // Beyond 10 s: the largest finite bound.
        let m = Metrics::new();
        m.delivery_latency(Duration::from_secs(60));
        assert_eq!(m.snapshot().latency_p50, 10.0);
    }

    #[test]
    fn the_latency_window_forgets_a_burst_after_its_length() {
        let m = Metrics::new();
        let mut window = LatencyWindow::new(3);
        for _ in 0..100 {
            m.delivery_latency(Duration::from_micros(80));
        }
        let quiet = window.push(m.snapshot());
        assert!(quiet.latency_p99 <= 0.0001, "{}", quiet.latency_p99);
        // A burst of slow deliveries moves p99 at once...
        for _ in 0..100 {
            m.delivery_latency(Duration::from_millis(40));
        }
        let burst = window.push(m.snapshot());
        assert!(burst.latency_p99 > 0.025, "{}", burst.latency_p99);
        // ...and it is gone 3 snapshots later, with only fast ones since.
        let mut last = burst.clone();
        for _ in 0..3 {
            m.delivery_latency(Duration::from_micros(80));
            last = window.push(m.snapshot());
        }
        assert!(last.latency_p99 <= 0.0001, "{}", last.latency_p99);
        assert_eq!(
            last.latency_count, 3,
            "the 3 intervals before the last snapshot"
        );
        // All-time, the burst would still dominate p99.
        assert!(m.snapshot().latency_p99 > 0.025);
    }

    #[test]
    fn snapshot_serializes_without_buckets() {
        let m = Metrics::new();
        m.connection_opened();
        let json = serde_json::to_value(m.snapshot()).unwrap();
        assert_eq!(json["connections"], 1);
        assert!(json.get("buckets").is_none());
    }

    #[test]
    fn updates_from_many_threads_add_up() {
        let m = std::sync::Arc::new(Metrics::new());
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let m = m.clone();
                std::thread::spawn(move || {
                    for i in 0..10_000u64 {
                        m.message_in(2);
                        m.delivery_latency(Duration::from_micros(i % 5000));
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        let s = m.snapshot();
        assert_eq!(s.messages_in, 40_000);
        assert_eq!(s.bytes_in, 80_000);
        assert_eq!(s.latency_count, 40_000);
    }
}
