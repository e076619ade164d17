//! The hub protocol's decoders on arbitrary bytes never panic, and whatever
//! they decode, encoded again, decodes to the same value (and encodes to the
//! same bytes).
//!
//! Input layout: the whole input is one WebSocket message, tried as a binary
//! frame and, when it is valid UTF-8, as a text frame, by both the hub's
//! decoder (`decode_command`, also `decode_binary_command`) and the client's
//! (`decode_server`).
#![no_main]

use bytes::Bytes;
use duplex_hub_proto::{
    Frame, decode_binary_command, decode_command, decode_server, encode_command, encode_server,
};
use libfuzzer_sys::fuzz_target;

fn check(frame: Frame<'_>) {
    if let Ok(request) = decode_command(frame) {
        let encoded = encode_command(&request);
        let again = decode_command(encoded.as_frame())
            .unwrap_or_else(|e| panic!("{request:?} encoded to {encoded:?}, which fails: {e}"));
        assert_eq!(again, request, "command round trip");
        assert_eq!(encode_command(&again), encoded, "command re-encoding");
    }
    if let Ok(message) = decode_server(frame) {
        let encoded = encode_server(&message);
        let again = decode_server(encoded.as_frame())
            .unwrap_or_else(|e| panic!("{message:?} encoded to {encoded:?}, which fails: {e}"));
        assert_eq!(again, message, "server message round trip");
        assert_eq!(encode_server(&again), encoded, "server message re-encoding");
    }
}

fuzz_target!(|data: &[u8]| {
    check(Frame::Binary(data));
    assert_eq!(
        decode_command(Frame::Binary(data)),
        decode_binary_command(&Bytes::copy_from_slice(data)),
        "copied and shared binary decoding differ"
    );
    if let Ok(text) = std::str::from_utf8(data) {
        check(Frame::Text(text));
    }
});
