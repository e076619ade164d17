//! The key comparisons of the criterion benchmarks, measured so that a busy
//! shared machine disturbs them as little as possible: this thread's CPU
//! time (`CLOCK_THREAD_CPUTIME_ID`, which does not run while the thread
//! waits for a core), every contender measured in short windows interleaved
//! round-robin so that all see the same background load (criterion runs one
//! benchmark after another, so a burst of load hits only some), and the
//! fastest window of each kept.
//!
//! `cargo run --release -p duplex-benches --example interleaved [ROUNDS]`
//! (default 25 rounds of about 5 ms per contender) prints Markdown tables:
//! masking and UTF-8 validation beside `memcpy` at 1 KiB, 16 KiB and 1 MiB,
//! and the five parsers of the `parse` benchmark at each payload.
//!
//! Other processes can still slow a window down through shared caches (the
//! two cores here may be hyperthreads of one), which is why the fastest
//! window, not the mean, is reported; the median is printed beside it.

#[path = "../benches/common/mod.rs"]
mod common;

use std::hint::black_box;

use duplex_benches::measure::thread_cpu_ns;
use duplex_benches::{
    AlignedCopy, PARSE_CASES, frames_for, masked_text_frames, mixed_text, random_bytes,
};
use duplex_proto::mask::apply_mask;
use duplex_proto::utf8::Utf8Validator;

/// CPU time per measuring window.
const WINDOW_NS: u64 = 5_000_000;

/// One contender: a closure doing one unit of work of `units` bytes or
/// messages, and the CPU nanoseconds per call of each window.
struct Contender<'a> {
    table: &'static str,
    row: String,
    column: &'static str,
    units: u64,
    work: Box<dyn FnMut() + 'a>,
    calls_per_window: u64,
    samples: Vec<f64>,
}

impl<'a> Contender<'a> {
    fn new(
        table: &'static str,
        row: String,
        column: &'static str,
        units: u64,
        work: impl FnMut() + 'a,
    ) -> Self {
        Self {
            table,
            row,
            column,
            units,
            work: Box::new(work),
            calls_per_window: 1,
            samples: Vec::new(),
        }
    }

    /// Warms up and picks how many calls fill a window.
    fn calibrate(&mut self) {
        let mut calls = 1u64;
        loop {
            let start = thread_cpu_ns();
            for _ in 0..calls {
                (self.work)();
            }
            let spent = thread_cpu_ns() - start;
            if spent >= WINDOW_NS / 4 {
                self.calls_per_window = (calls * WINDOW_NS / spent.max(1)).max(1);
                return;
            }
            calls *= 2;
        }
    }

    fn measure(&mut self) {
        let start = thread_cpu_ns();
        for _ in 0..self.calls_per_window {
            (self.work)();
        }
        let spent = thread_cpu_ns() - start;
        self.samples
            .push(spent as f64 / self.calls_per_window as f64);
    }

    /// Fastest and median nanoseconds per call.
    fn best_and_median(&self) -> (f64, f64) {
        let mut sorted = self.samples.clone();
        sorted.sort_by(f64::total_cmp);
        (sorted[0], sorted[sorted.len() / 2])
    }
}

fn size_label(n: usize) -> String {
    match n {
        n if n >= 1 << 20 => format!("{} MiB", n >> 20),
        n if n >= 1 << 10 => format!("{} KiB", n >> 10),
        n => format!("{n} B"),
    }
}

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .map(|arg| arg.parse().expect("a round count"))
        .unwrap_or(25);
    let sizes = [1 << 10, 16 << 10, 1 << 20];
    let key = [0x37, 0xfa, 0x21, 0x3d];

    // Inputs first: the contenders borrow them.
    let mut mask_inputs: Vec<(Vec<u8>, AlignedCopy)> = sizes
        .iter()
        .map(|&n| {
            let data = random_bytes(n, n as u64);
            let copy = AlignedCopy::new(&data);
            (data, copy)
        })
        .collect();
    let mut texts: Vec<(Vec<u8>, AlignedCopy)> = sizes
        .iter()
        .map(|&n| {
            let text = mixed_text(n, n as u64).into_bytes();
            let copy = AlignedCopy::new(&text);
            (text, copy)
        })
        .collect();
    let streams: Vec<(usize, usize, Vec<u8>)> = PARSE_CASES
        .iter()
        .map(|&(payload, total)| {
            let count = frames_for(payload, total);
            (
                payload,
                count,
                masked_text_frames(payload, count, payload as u64),
            )
        })
        .collect();

    let mut contenders = Vec::new();
    for (i, (data, memcpy)) in mask_inputs.iter_mut().enumerate() {
        let n = sizes[i];
        contenders.push(Contender::new(
            "mask",
            size_label(n),
            "apply_mask",
            n as u64,
            move || apply_mask(black_box(&mut data[..]), black_box(key), 0),
        ));
        contenders.push(Contender::new(
            "mask",
            size_label(n),
            "memcpy",
            n as u64,
            move || black_box(&mut *memcpy).copy(),
        ));
    }
    for (i, (text, memcpy)) in texts.iter_mut().enumerate() {
        let n = sizes[i];
        let text = &*text;
        let mut validator = Utf8Validator::new();
        contenders.push(Contender::new(
            "utf8",
            size_label(n),
            "validator",
            n as u64,
            move || {
                validator.feed(black_box(text)).expect("valid");
                validator.finish().expect("valid");
            },
        ));
        contenders.push(Contender::new(
            "utf8",
            size_label(n),
            "memcpy",
            n as u64,
            move || black_box(&mut *memcpy).copy(),
        ));
    }
    for (payload, count, wire) in &streams {
        let count = *count;
        for (name, mut parser) in common::parsers(wire, count) {
            contenders.push(Contender::new(
                "parse",
                size_label(*payload),
                name,
                count as u64,
                move || assert_eq!(parser.parse_batch(), count),
            ));
        }
    }

    for contender in &mut contenders {
        contender.calibrate();
    }
    let n = contenders.len();
    for round in 0..rounds {
        for i in 0..n {
            contenders[(i + round) % n].measure();
        }
    }

    println!(
        "{rounds} rounds of ~{} ms CPU time per contender; fastest window (median window)\n",
        WINDOW_NS / 1_000_000
    );
    let find = |table: &str, row: &str, column: &str| {
        contenders
            .iter()
            .find(|c| c.table == table && c.row == row && c.column == column)
            .expect("a contender")
    };
    for (table, subject) in [("mask", "apply_mask"), ("utf8", "validator")] {
        println!(
            "| {table} | {subject} GiB/s | memcpy GiB/s | {subject} ÷ memcpy (fastest) | (median) |"
        );
        println!("|---|---:|---:|---:|---:|");
        for &size in &sizes {
            let row = size_label(size);
            let gib = |ns: f64| size as f64 / ns / 1.073_741_824;
            let (sb, sm) = find(table, &row, subject).best_and_median();
            let (mb, mm) = find(table, &row, "memcpy").best_and_median();
            println!(
                "| {row} | {:.1} ({:.1}) | {:.1} ({:.1}) | {:.2}x | {:.2}x |",
                gib(sb),
                gib(sm),
                gib(mb),
                gib(mm),
                mb / sb,
                mm / sm
            );
        }
        println!();
    }
    print!("| parse, ns/message |");
    for name in common::NAMES {
        print!(" {name} |");
    }
    for name in &common::NAMES[1..] {
        print!(" {name} ÷ duplex |");
    }
    println!();
    println!("|---{}|", "|---:".repeat(2 * common::NAMES.len() - 1));
    for (payload, count, _) in &streams {
        let row = size_label(*payload);
        let per_message: Vec<(f64, f64)> = common::NAMES
            .iter()
            .map(|name| {
                let (best, median) = find("parse", &row, name).best_and_median();
                let units = *count as f64;
                debug_assert_eq!(find("parse", &row, name).units, *count as u64);
                (best / units, median / units)
            })
            .collect();
        print!("| {row} |");
        for (best, median) in &per_message {
            print!(" {best:.0} ({median:.0}) |");
        }
        let (duplex_best, duplex_median) = per_message[0];
        for (best, median) in &per_message[1..] {
            print!(
                " {:.2}x ({:.2}x) |",
                best / duplex_best,
                median / duplex_median
            );
        }
        println!();
    }
    println!("\nratios > 1: duplex is faster (the peer spends more CPU time per message)");
}
