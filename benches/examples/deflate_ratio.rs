//! Prints, as a Markdown table, the bytes on the wire for a stream of chat
//! JSON messages sent through duplex-proto's permessage-deflate, beside the
//! same messages uncompressed, for windows of 15 and 10 bits (and 12, the
//! server default) with and without context takeover. Criterion measures
//! time only; this is the size side of the `deflate` benchmark.
//!
//! Run with `cargo run --release -p duplex-benches --example deflate_ratio`
//! (an optional argument sets the number of messages, default 10,000).
//!
//! `--dump PATH` also writes the generated messages to `PATH`, one JSON
//! message per line, so that another implementation can compress the same
//! stream (`benches/deflate_ratio_websockets.py` does, with Python
//! `websockets`).

use std::io::Write;

use duplex_benches::{DeflateCase, chat_messages, send_through};
use duplex_proto::connection::{Config, Connection};

/// Writes `messages` to `path`, one per line (they contain no newlines).
fn dump(path: &str, messages: &[String]) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    for message in messages {
        assert!(!message.contains('\n'), "a message with a newline");
        out.write_all(message.as_bytes())?;
        out.write_all(b"\n")?;
    }
    out.flush()
}

fn main() {
    let mut count: usize = 10_000;
    let mut dump_path = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--dump" {
            dump_path = Some(args.next().expect("--dump takes a path"));
        } else if let Some(path) = arg.strip_prefix("--dump=") {
            dump_path = Some(path.to_owned());
        } else {
            count = arg.parse().expect("a message count");
        }
    }
    let messages = chat_messages(count, 42);
    if let Some(path) = &dump_path {
        dump(path, &messages).unwrap_or_else(|e| panic!("writing {path}: {e}"));
        eprintln!("wrote {count} messages to {path}");
    }
    let payload: usize = messages.iter().map(String::len).sum();
    let shortest = messages.iter().map(String::len).min().unwrap_or(0);
    let longest = messages.iter().map(String::len).max().unwrap_or(0);

    let mut server = Connection::server(Config::default());
    let mut client = Connection::client(Config::default(), Box::new(|| [1, 2, 3, 4]));
    let (plain_wire, received) = send_through(&mut server, &mut client, &messages);
    assert_eq!(received, count);

    println!(
        "{count} chat JSON messages, {payload} payload bytes ({:.0} bytes/message average, \
         {shortest} to {longest}), every message compressed (threshold 0, level 6)\n",
        payload as f64 / count as f64
    );
    println!("| setup | wire bytes | bytes/message | payload ÷ wire | uncompressed wire ÷ wire |");
    println!("|---|---:|---:|---:|---:|");
    println!(
        "| no deflate | {plain_wire} | {:.1} | {:.2}x | 1.00x |",
        plain_wire as f64 / count as f64,
        payload as f64 / plain_wire as f64,
    );
    // The four benchmarked setups, then 12-bit windows (`DeflateConfig`'s
    // default for a server) for reference.
    let extra = [true, false].map(|context_takeover| DeflateCase {
        window_bits: 12,
        context_takeover,
    });
    for case in DeflateCase::ALL.into_iter().chain(extra) {
        let (mut server, mut client) = case.pair();
        let (wire, received) = send_through(&mut server, &mut client, &messages);
        assert_eq!(received, count, "{}", case.label());
        println!(
            "| {} | {wire} | {:.1} | {:.2}x | {:.2}x |",
            case.label(),
            wire as f64 / count as f64,
            payload as f64 / wire as f64,
            plain_wire as f64 / wire as f64,
        );
    }
}
