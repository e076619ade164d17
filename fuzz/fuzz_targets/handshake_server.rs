//! The server's `RequestParser` fed arbitrary bytes never panics, gives the
//! same outcome however the input is split, and an accepted request always
//! yields a 101 response that serializes.
//!
//! Input layout: byte 0 = chunk size (0 means whole); the rest is the request.
#![no_main]

use bytes::BytesMut;
use duplex_proto::handshake::server::{RequestParser, accept_response, write_response};
use libfuzzer_sys::fuzz_target;

/// Feeds `input` in chunks of `chunk` bytes; returns the outcome and the bytes consumed.
fn run(input: &[u8], chunk: usize) -> (String, Option<usize>) {
    let mut parser = RequestParser::new();
    let mut offset = 0;
    for piece in input.chunks(chunk.max(1)) {
        match parser.feed(piece) {
            Ok(None) => offset += piece.len(),
            Ok(Some((request, consumed))) => {
                assert!(consumed <= piece.len());
                let response = accept_response(&request, None, None, &http::HeaderMap::new())
                    .expect("an accepted request can be answered");
                let mut out = BytesMut::new();
                write_response(&response, &mut out);
                assert!(out.starts_with(b"HTTP/1.1 101"));
                return (format!("{:?}", request.request()), Some(offset + consumed));
            }
            Err(error) => {
                let _ = error.to_response();
                return (format!("error {}", error.status()), None);
            }
        }
    }
    ("incomplete".into(), None)
}

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, input)) = data.split_first() else {
        return;
    };
    let whole = run(input, input.len());
    let split = run(input, usize::from(chunk));
    assert_eq!(whole, split, "outcome depends on how the input is split");
});
