//! `deflate`: messages per second of realistic chat JSON (100-300 bytes)
//! sent by a server [`Connection`] with permessage-deflate (every message
//! compressed, level 6) and received by a client [`Connection`], for windows
//! of 15 and 10 bits, with and without context takeover, beside the same
//! messages without the extension (`round_trip/*`); and the server's sending
//! side alone, compressing and framing (`send_only/*`).
//!
//! The pair persists across batches, so with context takeover the measured
//! state is the steady one (windows full of earlier messages). Compression
//! ratios are printed by `cargo run --release -p duplex-benches --example
//! deflate_ratio`, since criterion measures only time.
//!
//! [`Connection`]: duplex_proto::connection::Connection

use std::hint::black_box;

use bytes::Buf;
use criterion::measurement::Measurement;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_main};
use duplex_benches::measure::{ThreadCpuTime, wall_clock_requested};
use duplex_benches::{DeflateCase, chat_messages, send_through};
use duplex_proto::connection::{Config, Connection};

/// Messages per measured batch.
const BATCH: usize = 256;

fn bench_deflate<M: Measurement>(c: &mut Criterion<M>) {
    let messages = chat_messages(BATCH, 42);
    let mut group = c.benchmark_group("deflate");
    group.throughput(Throughput::Elements(BATCH as u64));
    // A batch takes milliseconds: 20 samples keep a run of this group short.
    group.sample_size(20);

    let mut server = Connection::server(Config::default());
    let mut client = Connection::client(Config::default(), Box::new(|| [1, 2, 3, 4]));
    group.bench_function(BenchmarkId::new("round_trip", "uncompressed"), |b| {
        b.iter(|| {
            let (wire, received) = send_through(&mut server, &mut client, black_box(&messages));
            assert_eq!(received, BATCH);
            black_box(wire);
        });
    });

    for case in DeflateCase::ALL {
        let (mut server, mut client) = case.pair();
        group.bench_function(BenchmarkId::new("round_trip", case.label()), |b| {
            b.iter(|| {
                let (wire, received) = send_through(&mut server, &mut client, black_box(&messages));
                assert_eq!(received, BATCH);
                black_box(wire);
            });
        });
    }

    // Compression alone: what a server pays per connection and message when
    // it cannot share one compressed frame among subscribers.
    for case in DeflateCase::ALL {
        let (mut server, _client) = case.pair();
        group.bench_function(BenchmarkId::new("send_only", case.label()), |b| {
            b.iter(|| {
                let mut wire = 0;
                for message in black_box(&messages) {
                    server.send_text(message).expect("send");
                    let out = server.transmit();
                    wire += out.remaining();
                    out.advance(out.remaining());
                }
                black_box(wire);
            });
        });
    }
    group.finish();
}

/// The benchmark group, configured from the command line (what
/// `criterion_group!` would generate, written out so it carries a doc comment
/// and can pick the clock: thread CPU time unless `DUPLEX_BENCH_CLOCK=wall`).
fn benches() {
    if wall_clock_requested() {
        bench_deflate(&mut Criterion::default().configure_from_args());
    } else {
        bench_deflate(
            &mut Criterion::default()
                .with_measurement(ThreadCpuTime)
                .configure_from_args(),
        );
    }
}

criterion_main!(benches);
