//! `utf8`: `duplex_proto::utf8::Utf8Validator` (`feed` of the whole payload,
//! then `finish`) on valid mixed text (mostly ASCII, ~5% multi-byte) beside
//! `memcpy` of the same bytes, `std::str::from_utf8`, and
//! `simdutf8::basic::from_utf8` (the one-shot validator the streaming one is
//! built on, so the gap between the two is the streaming overhead), at 20 B,
//! 1 KiB, 16 KiB and 1 MiB.

use std::hint::black_box;

use criterion::measurement::Measurement;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_main};
use duplex_benches::measure::{ThreadCpuTime, wall_clock_requested};
use duplex_benches::{AlignedCopy, PAYLOAD_SIZES, mixed_text};
use duplex_proto::utf8::Utf8Validator;

fn bench_utf8<M: Measurement>(c: &mut Criterion<M>) {
    let mut group = c.benchmark_group("utf8");
    for size in PAYLOAD_SIZES {
        let text = mixed_text(size, size as u64).into_bytes();
        let mut memcpy = AlignedCopy::new(&text);
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(BenchmarkId::new("duplex_validator", size), |b| {
            let mut validator = Utf8Validator::new();
            b.iter(|| {
                validator.feed(black_box(&text)).expect("valid");
                validator.finish().expect("valid");
            });
        });
        group.bench_function(BenchmarkId::new("std_from_utf8", size), |b| {
            b.iter(|| std::str::from_utf8(black_box(&text)).is_ok());
        });
        group.bench_function(BenchmarkId::new("simdutf8_basic", size), |b| {
            b.iter(|| simdutf8::basic::from_utf8(black_box(&text)).is_ok());
        });
        group.bench_function(BenchmarkId::new("memcpy", size), |b| {
            b.iter(|| black_box(&mut memcpy).copy());
        });
    }
    group.finish();
}

/// The benchmark group, configured from the command line (what
/// `criterion_group!` would generate, written out so it carries a doc comment
/// and can pick the clock: thread CPU time unless `DUPLEX_BENCH_CLOCK=wall`).
fn benches() {
    if wall_clock_requested() {
        bench_utf8(&mut Criterion::default().configure_from_args());
    } else {
        bench_utf8(
            &mut Criterion::default()
                .with_measurement(ThreadCpuTime)
                .configure_from_args(),
        );
    }
}

criterion_main!(benches);
