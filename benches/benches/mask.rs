//! `mask`: in-place payload masking (`duplex_proto::mask::apply_mask`) beside
//! `memcpy` of the same bytes (`copy_from_slice` into a preallocated buffer),
//! two plain XOR loops (byte-indexed, and over 4-byte chunks), and
//! fastwebsockets' public `unmask`, at 20 B, 1 KiB, 16 KiB and 1 MiB.
//!
//! tungstenite's and tokio-websockets' masking functions are private, so they
//! are not measured here (their cost shows in the `parse` benchmark).

use std::hint::black_box;

use criterion::measurement::Measurement;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_main};
use duplex_benches::measure::{ThreadCpuTime, wall_clock_requested};
use duplex_benches::{AlignedCopy, PAYLOAD_SIZES, random_bytes};
use duplex_proto::mask::apply_mask;

/// The byte-at-a-time reference, `data[i] ^= key[i % 4]`: what masking is
/// without any tricks (rustc 1.95 does not vectorise this form).
#[inline(never)]
fn xor_bytewise(data: &mut [u8], key: [u8; 4]) {
    for (i, byte) in data.iter_mut().enumerate() {
        *byte ^= key[i & 3];
    }
}

/// A plain loop over 4-byte chunks, each byte XORed with its key byte: no
/// word tricks either, but in a form the compiler vectorises.
#[inline(never)]
fn xor_chunks4(data: &mut [u8], key: [u8; 4]) {
    let mut chunks = data.chunks_exact_mut(4);
    for chunk in &mut chunks {
        for (byte, k) in chunk.iter_mut().zip(key) {
            *byte ^= k;
        }
    }
    for (byte, k) in chunks.into_remainder().iter_mut().zip(key) {
        *byte ^= k;
    }
}

fn bench_mask<M: Measurement>(c: &mut Criterion<M>) {
    let key = [0x37, 0xfa, 0x21, 0x3d];
    let mut group = c.benchmark_group("mask");
    for size in PAYLOAD_SIZES {
        let src = random_bytes(size, size as u64);
        let mut data = src.clone();
        let mut memcpy = AlignedCopy::new(&src);
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(BenchmarkId::new("duplex_apply_mask", size), |b| {
            b.iter(|| apply_mask(black_box(&mut data), black_box(key), 0));
        });
        group.bench_function(BenchmarkId::new("memcpy", size), |b| {
            b.iter(|| black_box(&mut memcpy).copy());
        });
        group.bench_function(BenchmarkId::new("xor_bytewise", size), |b| {
            b.iter(|| xor_bytewise(black_box(&mut data), black_box(key)));
        });
        group.bench_function(BenchmarkId::new("xor_chunks4", size), |b| {
            b.iter(|| xor_chunks4(black_box(&mut data), black_box(key)));
        });
        group.bench_function(BenchmarkId::new("fastwebsockets_unmask", size), |b| {
            b.iter(|| fastwebsockets::unmask(black_box(&mut data), black_box(key)));
        });
    }
    group.finish();
}

/// The benchmark group, configured from the command line (what
/// `criterion_group!` would generate, written out so it carries a doc comment
/// and can pick the clock: thread CPU time unless `DUPLEX_BENCH_CLOCK=wall`).
fn benches() {
    if wall_clock_requested() {
        bench_mask(&mut Criterion::default().configure_from_args());
    } else {
        bench_mask(
            &mut Criterion::default()
                .with_measurement(ThreadCpuTime)
                .configure_from_args(),
        );
    }
}

criterion_main!(benches);
