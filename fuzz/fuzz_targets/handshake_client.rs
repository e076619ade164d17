//! The client's response check fed arbitrary bytes never panics and gives the
//! same outcome however the input is split.
//!
//! Input layout: byte 0 = chunk size (0 means whole); the rest is the response.
#![no_main]

use duplex_proto::extension::ExtensionOffer;
use duplex_proto::handshake::client::ClientHandshake;
use libfuzzer_sys::fuzz_target;

fn run(input: &[u8], chunk: usize) -> String {
    let mut handshake = ClientHandshake::builder("ws://example.com/chat", *b"0123456789abcdef")
        .protocols(["chat", "superchat"])
        .extensions([
            ExtensionOffer::new("permessage-deflate").param("client_max_window_bits", None)
        ])
        .build()
        .expect("valid request");
    for piece in input.chunks(chunk.max(1)) {
        match handshake.feed(piece) {
            Ok(None) => {}
            Ok(Some((accepted, consumed))) => {
                assert!(consumed <= piece.len());
                return format!("{:?} {:?}", accepted.protocol(), accepted.extensions());
            }
            Err(error) => return format!("error {error}"),
        }
    }
    "incomplete".into()
}

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, input)) = data.split_first() else {
        return;
    };
    assert_eq!(run(input, input.len()), run(input, usize::from(chunk)));
});
