//! Counts the instructions each parser of the `parse` benchmark spends per
//! message, under valgrind's callgrind: a repeatable signal where wall-clock
//! time is noisy (a shared 2-core machine).
//!
//! `cargo run --release -p duplex-benches --example parse_instructions`
//! runs itself under `valgrind --tool=callgrind` for every parser and payload
//! of the `parse` benchmark, once reading 1 batch and once 1 + N batches, and
//! prints a Markdown table of (difference ÷ N ÷ messages per batch), the
//! steady-state instructions per message, with set-up (input generation,
//! runtime, first-batch buffer growth) cancelled out. Needs `valgrind` on the
//! `PATH`. With arguments `run NAME PAYLOAD BATCHES` it parses that many
//! batches with one parser and exits (what it runs under valgrind).

#[path = "../benches/common/mod.rs"]
mod common;

use std::process::Command;

use duplex_benches::{PARSE_CASES, frames_for, masked_text_frames};

/// Batches measured on top of the first one.
const EXTRA_BATCHES: usize = 10;

fn run(name: &str, payload_len: usize, batches: usize) {
    let total = PARSE_CASES
        .iter()
        .find(|(p, _)| *p == payload_len)
        .map(|(_, t)| *t)
        .expect("a payload length of the parse benchmark");
    let count = frames_for(payload_len, total);
    let wire = masked_text_frames(payload_len, count, payload_len as u64);
    let (_, mut parser) = common::parsers(&wire, count)
        .into_iter()
        .find(|(n, _)| *n == name)
        .expect("a parser name");
    for _ in 0..batches {
        assert_eq!(parser.parse_batch(), count);
    }
}

/// Instructions callgrind counted for one run of this program.
fn instructions(name: &str, payload_len: usize, batches: usize) -> u64 {
    let exe = std::env::current_exe().expect("own path");
    let output = Command::new("valgrind")
        .args(["--tool=callgrind", "--callgrind-out-file=/dev/null"])
        .arg(exe)
        .args(["run", name, &payload_len.to_string(), &batches.to_string()])
        .output()
        .expect("valgrind runs");
    assert!(output.status.success(), "{name}/{payload_len} failed");
    let stderr = String::from_utf8_lossy(&output.stderr);
    stderr
        .lines()
        .find_map(|line| line.split("Collected :").nth(1))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no instruction count in: {stderr}"))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [cmd, name, payload, batches] = args.as_slice()
        && cmd == "run"
    {
        run(
            name,
            payload.parse().expect("payload"),
            batches.parse().expect("batches"),
        );
        return;
    }
    print!("| payload |");
    for name in common::NAMES {
        print!(" {name} |");
    }
    for name in &common::NAMES[1..] {
        print!(" {name} ÷ duplex |");
    }
    println!();
    println!("|---{}|", "|---:".repeat(2 * common::NAMES.len() - 1));
    for (payload_len, total) in PARSE_CASES {
        let count = frames_for(payload_len, total);
        let per_message: Vec<f64> = common::NAMES
            .iter()
            .map(|name| {
                let one = instructions(name, payload_len, 1);
                let many = instructions(name, payload_len, 1 + EXTRA_BATCHES);
                many.saturating_sub(one) as f64 / (EXTRA_BATCHES * count) as f64
            })
            .collect();
        print!("| {payload_len} B |");
        for n in &per_message {
            print!(" {n:.0} |");
        }
        for n in &per_message[1..] {
            print!(" {:.2}x |", n / per_message[0]);
        }
        println!();
    }
    println!(
        "\ninstructions per message (fewer is better); peer ÷ duplex > 1 means duplex needs fewer"
    );
}
