//! What decoding a `publish` costs, for four kinds of data: a small chat
//! message, arrays of 100 and 800 small objects (more than
//! `MAX_DATA_DEPTH` brackets, so the depth scan runs in full) and 58 KB of
//! flat text. Prints the best of seven runs per kind.
//!
//! `cargo run --release -p duplex-hub-proto --example decode_cost`

use std::hint::black_box;
use std::time::Instant;

use duplex_hub_proto::{Frame, decode_command};

fn main() {
    let small = r#"{"op":"publish","id":12,"channel":"chat:lobby","data":{"text":"hello there","user":"alice","at":1795000000}}"#.to_owned();
    let objects: Vec<String> = (0..100)
        .map(|i| {
            format!(r#"{{"id":{i},"name":"item {i}","tags":["a","b"],"pos":{{"x":1.5,"y":-2}}}}"#)
        })
        .collect();
    let medium = format!(
        r#"{{"op":"publish","id":1,"channel":"a","data":[{}]}}"#,
        objects.join(",")
    );
    let objects: Vec<String> = (0..800)
        .map(|i| {
            format!(r#"{{"id":{i},"name":"item {i}","tags":["a","b"],"pos":{{"x":1.5,"y":-2}}}}"#)
        })
        .collect();
    let large = format!(
        r#"{{"op":"publish","id":1,"channel":"a","data":[{}]}}"#,
        objects.join(",")
    );
    let text: String = "lorem ipsum dolor sit amet ".repeat(2200);
    let flat = format!(r#"{{"op":"publish","id":1,"channel":"a","data":{{"text":"{text}"}}}}"#);
    for (name, frame) in [
        ("small", &small),
        ("medium", &medium),
        ("large", &large),
        ("flat-text", &flat),
    ] {
        let iters = (20_000_000 / frame.len()).max(200);
        let mut best = f64::MAX;
        for _ in 0..7 {
            let start = Instant::now();
            for _ in 0..iters {
                black_box(decode_command(Frame::Text(black_box(frame))).unwrap());
            }
            best = best.min(start.elapsed().as_secs_f64() / iters as f64);
        }
        println!(
            "{name:10} {:6} B  {:9.0} ns/decode  {:6.2} GB/s",
            frame.len(),
            best * 1e9,
            frame.len() as f64 / best / 1e9
        );
    }
}
