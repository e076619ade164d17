//! Properties of the binary envelope (`duplex.v1.bin`): every command and
//! hub message round-trips through its frame, what the encoder wrote
//! decodes and re-encodes to the same bytes, the envelope says the same
//! as JSON (both decode to one value), it is never larger than JSON for a
//! `message` push, and no bytes make a decoder panic.

use bytes::Bytes;
use duplex_hub_proto::binary::{
    decode_command, decode_command_shared, decode_server, encode_command, encode_publication,
    encode_server,
};
use duplex_hub_proto::{Encoding, Frame};
use proptest::prelude::*;

mod strategies;

use strategies::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn commands_round_trip(request in request()) {
        let bytes = encode_command(&request);
        prop_assert_eq!(decode_command(&bytes), Ok(request.clone()));
        prop_assert_eq!(decode_command_shared(&Bytes::from(bytes.clone())), Ok(request.clone()));
        prop_assert_eq!(encode_command(&decode_command(&bytes).unwrap()), bytes);
        // The JSON envelope carries the same command.
        let json = Encoding::Json.encode_command(&request);
        prop_assert_eq!(Encoding::Json.decode_command(json.as_frame()), Ok(request));
    }

    #[test]
    fn server_messages_round_trip(message in server_message()) {
        let bytes = encode_server(&message);
        prop_assert_eq!(decode_server(&bytes), Ok(message.clone()));
        prop_assert_eq!(encode_server(&decode_server(&bytes).unwrap()), bytes);
    }

    #[test]
    fn a_message_push_is_smaller_than_its_json(publication in publication()) {
        let binary = encode_publication(&publication);
        let json = Encoding::Json.encode_publication(&publication);
        prop_assert!(binary.len() < json.len(), "{} ≥ {}", binary.len(), json.len());
    }

    #[test]
    fn decoders_never_panic_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        check(&bytes);
    }

    #[test]
    fn decoders_never_panic_on_damaged_frames(
        message in server_message(),
        request in request(),
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
        cut in any::<prop::sample::Index>(),
    ) {
        for mut frame in [encode_server(&message), encode_command(&request)] {
            let i = at.index(frame.len());
            frame[i] = byte;
            check(&frame);
            let cut = cut.index(frame.len() + 1);
            check(&frame[..cut]);
        }
    }
}

/// Both decoders on `bytes`: no panic, and what decodes re-encodes to bytes
/// that decode to the same value.
fn check(bytes: &[u8]) {
    if let Ok(request) = decode_command(bytes) {
        assert_eq!(decode_command(&encode_command(&request)), Ok(request));
    }
    if let Ok(message) = decode_server(bytes) {
        assert_eq!(decode_server(&encode_server(&message)), Ok(message));
    }
    let _ = Encoding::Binary.decode_server(Frame::Binary(bytes));
}
