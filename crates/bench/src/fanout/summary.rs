//! What a fan-out run measured, and how it is printed: one JSON object
//! (`--json`, every key documented by its name) or the text summary.
//!
//! Invariant: rates are `None` (shown as "-") over a window shorter than
//! [`MIN_WINDOW_S`] or cut short by the publisher's failure; per-delivery
//! figures are `None` when nothing was delivered.

use serde_json::json;

use super::super::procfs::Memory;
use super::super::report::{self, Latency};
use super::{Envelope, FanoutArgs, Fill, MIN_WINDOW_S, Protocol, PublishStats, Totals, Window};

/// The server's memory at the run's moments (with `--server-pid`).
pub(super) struct Readings {
    /// Before the subscribers connected.
    pub(super) before: Option<Memory>,
    /// At the warm-up's end.
    pub(super) warm: Option<Memory>,
    /// `--settle` seconds after the warm-up.
    pub(super) subscribed: Option<Memory>,
    /// After `--quiet` seconds with nothing published (when asked).
    pub(super) quiet: Option<Memory>,
    /// At the window's end.
    pub(super) end: Option<Memory>,
}

/// Everything a run measured, to print.
pub(super) struct Summary<'a> {
    /// The run's arguments.
    pub(super) args: &'a FanoutArgs,
    /// The URL the subscribers connected to.
    pub(super) url: &'a str,
    /// Whether the publisher published through the server API.
    pub(super) api: bool,
    /// The server API calls' latency (request to reply).
    pub(super) api_latency: Option<Latency>,
    /// What the publisher did.
    pub(super) stats: PublishStats,
    /// The subscribers' counts.
    pub(super) totals: Totals,
    /// Latency at the last subscriber of each message.
    pub(super) last: Latency,
    /// Latency of every delivery.
    pub(super) all: Latency,
    /// Messages delivered to every subscriber inside the window.
    pub(super) completed: u64,
    /// Subscribers that failed.
    pub(super) failed: usize,
    /// Subscribers aborted at the end.
    pub(super) unfinished: usize,
    /// Whether the publisher failed (the rates are then not shown).
    pub(super) publisher_failed: bool,
    /// The first error, the publisher's or a subscriber's.
    pub(super) first_error: Option<&'a str>,
    /// The window's length.
    pub(super) seconds: f64,
    /// The server's CPU time over the window.
    pub(super) server_seconds: Option<f64>,
    /// The generator's CPU time over the window.
    pub(super) client_seconds: f64,
    /// Time the server's threads waited for a core.
    pub(super) server_waited: Option<f64>,
    /// Time the generator's threads waited for a core.
    pub(super) client_waited: Option<f64>,
    /// Bytes the server sent over the window.
    pub(super) server_written: Option<u64>,
    /// The server's memory readings.
    pub(super) memory: Readings,
}

impl Summary<'_> {
    /// Prints the summary: JSON with `--json`, text otherwise.
    pub(super) fn print(self) {
        let Summary {
            args,
            url,
            api,
            api_latency,
            stats,
            totals,
            last,
            all,
            completed,
            failed,
            unfinished,
            publisher_failed,
            first_error,
            seconds,
            server_seconds,
            client_seconds,
            server_waited,
            client_waited,
            server_written,
            memory,
        } = self;
        let n = args.subscribers;
        // No rate over a window too short to measure, or cut short by the
        // publisher's failure (a publish refused at once): `None`, shown as "-".
        let per_second = |count: u64| {
            (seconds >= MIN_WINDOW_S && !publisher_failed).then(|| count as f64 / seconds)
        };
        let shown_rate = |count: u64| {
            per_second(count).map_or_else(|| "-".to_owned(), |r| report::count(r as u64))
        };
        let deliveries = totals.deliveries;
        let per_delivery = |cpu: f64| (deliveries > 0).then(|| cpu * 1e6 / deliveries as f64);
        let wire = (deliveries > 0).then(|| totals.bytes as f64 / deliveries as f64);
        let written_per_delivery =
            server_written.and_then(|b| (deliveries > 0).then(|| b as f64 / deliveries as f64));
        // Per subscriber: the anonymous memory's growth (see `procfs`), and the
        // whole resident's beside it.
        let growth = |after: Option<Memory>| {
            memory
                .before
                .zip(after)
                .map(|(before, after)| before.growth_per(after, n))
        };
        let (subscribed, quiet) = (growth(memory.subscribed), growth(memory.quiet));
        let per_subscriber = subscribed.map(|growth| growth.anonymous);
        let rss_per_subscriber = subscribed.map(|growth| growth.resident);
        let per_quiet_subscriber = quiet.map(|growth| growth.anonymous);
        let rss_per_quiet_subscriber = quiet.map(|growth| growth.resident);
        let protocol = match (args.protocol, args.encoding) {
            (Protocol::Hub, Envelope::Json) => "hub",
            (Protocol::Hub, Envelope::Binary) => "hub, duplex.v1.bin",
            (Protocol::Broadcast, _) => "broadcast",
        };
        let window_name = match (args.rate, args.window) {
            (Some(_), _) => "paced",
            (None, Window::Delivered) => "delivered",
            (None, Window::Acked) => "acked",
        };
        if args.output.json {
            let value = json!({
                "bench": "fanout",
                "label": args.output.label,
                "url": url,
                "protocol": match args.protocol {
                    Protocol::Hub => "hub",
                    Protocol::Broadcast => "broadcast",
                },
                "encoding": match args.encoding {
                    Envelope::Json => "json",
                    Envelope::Binary => "binary",
                },
                "channel": args.channel,
                "subscribers": n,
                "in_flight": args.in_flight,
                "window": window_name,
                "rate": args.rate,
                "size": args.size,
                "duration_s": args.duration,
                "messages_limit": args.messages,
                "measured_s": seconds,
                "publishes": stats.sent,
                "publishes_per_s": per_second(stats.sent),
                "acks": stats.acked,
                "paced_stalls": stats.stalls,
                "publisher_max_lag_us": args.rate.map(|_| stats.max_lag_ns as f64 / 1e3),
                "completed": completed,
                "completed_per_s": per_second(completed),
                "deliveries": deliveries,
                "deliveries_per_s": per_second(deliveries),
                "delivered_bytes_avg": wire,
                "payload": match args.payload {
                    Fill::Pad => "pad",
                    Fill::Chat => "chat",
                },
                "deflate_offered": args.deflate,
                "server_written_bytes": server_written,
                "server_written_bytes_per_delivery": written_per_delivery,
                "lost": totals.lost,
                "reordered": totals.reordered,
                "duplicates": totals.duplicates,
                "latency_last": last.json(),
                "latency_all": all.json(),
                "server_cpu_s": server_seconds,
                "server_cpu_us_per_delivery": server_seconds.and_then(per_delivery),
                "client_cpu_s": client_seconds,
                "client_cpu_us_per_delivery": per_delivery(client_seconds),
                "server_runqueue_wait_s": server_waited,
                "client_runqueue_wait_s": client_waited,
                "server_rss_before": memory.before.map(|m| m.resident),
                "server_rss_subscribed": memory.subscribed.map(|m| m.resident),
                "server_rss_end": memory.end.map(|m| m.resident),
                "server_anon_before": memory.before.map(|m| m.anonymous),
                "server_anon_subscribed": memory.subscribed.map(|m| m.anonymous),
                "settle_s": args.settle,
                "server_anon_warm": memory.warm.map(|m| m.anonymous),
                "server_bytes_per_subscriber_warm": growth(memory.warm).map(|g| g.anonymous),
                "server_bytes_per_subscriber": per_subscriber,
                "server_rss_bytes_per_subscriber": rss_per_subscriber,
                "quiet_s": args.quiet,
                "server_rss_quiet": memory.quiet.map(|m| m.resident),
                "server_anon_quiet": memory.quiet.map(|m| m.anonymous),
                "server_bytes_per_quiet_subscriber": per_quiet_subscriber,
                "server_rss_bytes_per_quiet_subscriber": rss_per_quiet_subscriber,
                "failed_subscribers": failed,
                "unfinished_subscribers": unfinished,
                "first_error": first_error,
            });
            let mut value = value;
            value["publisher"] = if api { "api" } else { "websocket" }.into();
            value["api_latency"] = api_latency
                .as_ref()
                .map_or(serde_json::Value::Null, Latency::json);
            println!("{value}");
        } else {
            report::heading("fanout", args.output.label.as_ref(), url);
            let pacing = match args.rate {
                Some(rate) => format!(
                    "paced at {rate} publishes/s (at worst {} behind)",
                    report::nanos(stats.max_lag_ns)
                ),
                None => format!("{} in flight ({window_name})", args.in_flight),
            };
            println!(
                "  load         {} subscribers ({protocol}), 1 publisher{}, {pacing}, {} payloads, {seconds:.2} s",
                report::count(n as u64),
                if api { " (server API)" } else { "" },
                report::bytes(args.size as f64),
            );
            println!(
                "  publishes    {} ({}/s), {} delivered to every subscriber",
                report::count(stats.sent),
                shown_rate(stats.sent),
                report::count(completed)
            );
            println!(
                "  deliveries   {} ({}/s), {} per message as received",
                report::count(deliveries),
                shown_rate(deliveries),
                wire.map_or_else(|| "-".to_owned(), report::bytes)
            );
            if let Some(written) = written_per_delivery {
                println!(
                    "  server sent {} per delivery (TCP bytes_sent on its port: frames as sent, compressed or not)",
                    report::bytes(written)
                );
            }
            if let Some(api_latency) = &api_latency {
                println!(
                    "  API calls    {} (publish, request to reply)",
                    api_latency.line()
                );
            }
            println!("  latency last {}", last.line());
            println!("  latency all  {}", all.line());
            report::cpu_lines(server_seconds, client_seconds, deliveries, "delivery");
            let seconds_or_dash =
                |s: Option<f64>| s.map_or_else(|| "-".to_owned(), |s| format!("{s:.2} s"));
            println!(
                "  CPU waited   server {}, client {} (runnable, but other processes had the core)",
                seconds_or_dash(server_waited),
                seconds_or_dash(client_waited)
            );
            if let (Some(before), Some(subscribed), Some(end), Some(each), Some(each_rss)) = (
                memory.before,
                memory.subscribed,
                memory.end,
                per_subscriber,
                rss_per_subscriber,
            ) {
                println!(
                    "  server       {} → {} anonymous subscribed, {} s after the warm-up ({} per \
                     subscriber; RSS {} → {}, {} per subscriber), RSS {} at the end",
                    report::bytes(before.anonymous as f64),
                    report::bytes(subscribed.anonymous as f64),
                    args.settle,
                    report::bytes(each),
                    report::bytes(before.resident as f64),
                    report::bytes(subscribed.resident as f64),
                    report::bytes(each_rss),
                    report::bytes(end.resident as f64)
                );
            }
            if let (Some(quiet), Some(each), Some(each_rss)) =
                (memory.quiet, per_quiet_subscriber, rss_per_quiet_subscriber)
            {
                println!(
                    "  server       {} anonymous after {} s quiet ({} per subscriber; RSS {}, {} \
                     per subscriber)",
                    report::bytes(quiet.anonymous as f64),
                    args.quiet,
                    report::bytes(each),
                    report::bytes(quiet.resident as f64),
                    report::bytes(each_rss)
                );
            }
            if totals.lost > 0 || totals.reordered > 0 || totals.duplicates > 0 || stats.stalls > 0
            {
                println!(
                    "  anomalies    {} lost, {} out of order, {} duplicates, {} paced stalls",
                    totals.lost, totals.reordered, totals.duplicates, stats.stalls
                );
            }
            if failed > 0 || unfinished > 0 {
                println!("  failed       {failed} subscribers; {unfinished} aborted at the end");
            }
        }
    }
}
