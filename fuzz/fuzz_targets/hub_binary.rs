//! The binary envelope's decoders (`duplex.v1.bin`) on arbitrary bytes never
//! panic, whatever they decode, encoded again, decodes to the same value
//! (and encodes to the same bytes), and sharing the frame's bytes decodes
//! like copying them.
//!
//! Input layout: the whole input is one WebSocket binary message, decoded
//! by the hub's decoder (`binary::decode_command`, also
//! `decode_command_shared`) and the client's (`binary::decode_server`).
#![no_main]

use bytes::Bytes;
use duplex_hub_proto::binary::{
    decode_command, decode_command_shared, decode_server, encode_command, encode_server,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = decode_command(data) {
        let encoded = encode_command(&request);
        let again = decode_command(&encoded)
            .unwrap_or_else(|e| panic!("{request:?} encoded to {encoded:?}, which fails: {e}"));
        assert_eq!(again, request, "command round trip");
        assert_eq!(encode_command(&again), encoded, "command re-encoding");
    }
    assert_eq!(
        decode_command(data),
        decode_command_shared(&Bytes::copy_from_slice(data)),
        "copied and shared decoding differ"
    );
    if let Ok(message) = decode_server(data) {
        let encoded = encode_server(&message);
        let again = decode_server(&encoded)
            .unwrap_or_else(|e| panic!("{message:?} encoded to {encoded:?}, which fails: {e}"));
        assert_eq!(again, message, "server message round trip");
        assert_eq!(encode_server(&again), encoded, "server message re-encoding");
    }
});
