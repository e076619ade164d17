//! `parse`: a stream of masked single-frame text messages, as a client sends
//! them, held in memory and parsed into messages by a server, by:
//!
//! - duplex-proto's `Connection` (`receive` the whole buffer, then
//!   `poll_event` until `None`);
//! - tungstenite's `WebSocket` (sync) over an in-memory stream that yields
//!   the bytes, then `WouldBlock`;
//! - tokio-tungstenite, tokio-websockets (`ServerBuilder::serve`) and
//!   fastwebsockets (`WebSocket` + `FragmentCollector`, so messages and not
//!   frames, with UTF-8 checked like the others) over the same in-memory
//!   stream as `AsyncRead`, each driven by a current-thread tokio runtime's
//!   `block_on` once per batch.
//!
//! Every parser reads the same bytes and must see the same number of text
//! messages. Payloads of 20 B (about 64 KiB of frames per batch), 1 KiB
//! (about 256 KiB) and 16 KiB (about 1 MiB). Throughput is in messages; the
//! wire bytes of one batch are printed at start so bytes/s can be derived.
//!
//! Each parser is built once and reused across batches (the stream is
//! rewound), so the numbers are steady-state parsing, not connection set-up.
//! The parsers live in `common/`, shared with the `parse_instructions`
//! example, which counts instructions per message under callgrind.

mod common;

use criterion::measurement::Measurement;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_main};
use duplex_benches::measure::{ThreadCpuTime, wall_clock_requested};
use duplex_benches::{PARSE_CASES, frames_for, masked_text_frames};

fn bench_parse<M: Measurement>(c: &mut Criterion<M>) {
    let mut group = c.benchmark_group("parse");
    for (payload_len, total) in PARSE_CASES {
        let count = frames_for(payload_len, total);
        let wire = masked_text_frames(payload_len, count, payload_len as u64);
        eprintln!(
            "parse/{payload_len}: {count} messages, {} wire bytes per batch",
            wire.len()
        );
        group.throughput(Throughput::Elements(count as u64));
        for (name, mut parser) in common::parsers(&wire, count) {
            assert_eq!(parser.parse_batch(), count, "{name}");
            group.bench_function(BenchmarkId::new(name, payload_len), |b| {
                b.iter(|| assert_eq!(parser.parse_batch(), count));
            });
        }
    }
    group.finish();
}

/// The benchmark group, configured from the command line (what
/// `criterion_group!` would generate, written out so it carries a doc comment
/// and can pick the clock: thread CPU time unless `DUPLEX_BENCH_CLOCK=wall`).
fn benches() {
    if wall_clock_requested() {
        bench_parse(&mut Criterion::default().configure_from_args());
    } else {
        bench_parse(
            &mut Criterion::default()
                .with_measurement(ThreadCpuTime)
                .configure_from_args(),
        );
    }
}

criterion_main!(benches);
