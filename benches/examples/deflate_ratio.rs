//! Prints, as a Markdown table, the bytes on the wire for a stream of chat
//! JSON messages sent through duplex-proto's permessage-deflate, beside the
//! same messages uncompressed, for windows of 15 and 10 bits (and 12, the
//! server default) with and without context takeover. Criterion measures
//! time only; this is the size side of the `deflate` benchmark.
//!
//! Run with `cargo run --release -p duplex-benches --example deflate_ratio`
//! (an optional argument sets the number of messages, default 10,000).

use duplex_benches::{DeflateCase, chat_messages, send_through};
use duplex_proto::connection::{Config, Connection};

fn main() {
    let count: usize = std::env::args()
        .nth(1)
        .map(|arg| arg.parse().expect("a message count"))
        .unwrap_or(10_000);
    let messages = chat_messages(count, 42);
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
