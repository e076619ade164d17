//! Unit tests of the binary envelope: the tag tables, the byte layout of
//! the worked example (docs/protocol.md), its size on the wire against
//! JSON's, and what is refused. Round trips over arbitrary messages and
//! arbitrary bytes are properties in `tests/binary.rs`.

use super::*;
use crate::codec;

/// The bytes of a server-to-client (unmasked) WebSocket frame header for a
/// payload of `len` bytes: 2, plus 2 from 126 bytes, plus 8 from 64 KiB.
fn ws_header(len: usize) -> usize {
    match len {
        0..=125 => 2,
        126..=65_535 => 4,
        _ => 10,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The docs' worked example: a 100-byte JSON message on `chat:lobby`, from
/// an anonymous client whose id the hub gave (hex).
fn worked_example() -> Publication {
    let text = format!("{{\"text\":\"{}\"}}", "x".repeat(89));
    assert_eq!(text.len(), 100);
    Publication {
        channel: "chat:lobby".into(),
        offset: 45,
        time: 1_795_000_001_000,
        from: ClientInfo {
            user: String::new(),
            client: "7c2e4a1f3".into(),
        },
        data: Data::Json(JsonText::parse(&text).unwrap()),
    }
}

#[test]
fn every_op_has_one_tag_in_its_range() {
    let mut seen = std::collections::HashSet::new();
    for (tag, _) in COMMAND_TAGS {
        assert!((0x01..0x40).contains(&tag) && seen.insert(tag));
    }
    for (tag, _) in SERVER_TAGS {
        assert!((0x40..0x80).contains(&tag) && seen.insert(tag));
    }
    let ops: Vec<_> = COMMAND_TAGS.iter().map(|(_, op)| *op).collect();
    for op in [
        "connect",
        "refresh",
        "subscribe",
        "unsubscribe",
        "publish",
        "presence",
        "signal",
        "ping",
        "rpc",
    ] {
        assert!(ops.contains(&op), "{op}");
    }
    assert_eq!(SERVER_TAGS.len(), 15);
}

#[test]
fn the_worked_example_byte_by_byte() {
    let message = worked_example();
    let bytes = encode_publication(&message);
    let data = message.data.as_json().unwrap().as_str().as_bytes();
    let (head, rest) = bytes.split_at(bytes.len() - 100);
    assert_eq!(rest, data);
    assert_eq!(
        hex(head),
        concat!(
            "49",                   // tag: message, JSON data
            "14",                   // channel: header 20 = 10 bytes << 1, UTF-8
            "636861743a6c6f626279", // "chat:lobby"
            "2d",                   // offset 45
            "e8c3d9f29e34",         // time 1795000001000
            "00",                   // user "" (anonymous)
            "137c2e4a1f30",         // client: 9 hex digits packed, header 19
        )
    );
    assert_eq!(
        decode_server(&bytes),
        Ok(ServerMessage::Message(message.clone()))
    );
    // On the wire, frame header included: 130 bytes against JSON's 224.
    let json = codec::encode_publication(&message);
    let wire = |len: usize| ws_header(len) + len;
    assert_eq!((wire(bytes.len()), wire(json.len())), (130, 224));
}

#[test]
fn binary_data_sets_the_tag_bit_and_is_the_rest_of_the_frame() {
    let mut message = worked_example();
    message.data = Data::Binary(Bytes::from(vec![0xffu8; 100]));
    let bytes = encode_publication(&message);
    assert_eq!(bytes[0], 0x49 | BINARY_DATA);
    assert_eq!(&bytes[bytes.len() - 100..], &[0xff; 100]);
    assert_eq!(decode_server(&bytes), Ok(ServerMessage::Message(message)));
    // A command's binary data, shared with the frame rather than copied.
    let publish = Request::new(
        9,
        Command::Publish {
            channel: "a".into(),
            data: Data::Binary(Bytes::from_static(b"\x00\x01")),
            key: Some("k".into()),
        },
    );
    let frame = Bytes::from(encode_command(&publish));
    assert_eq!(hex(&frame), "850a0261036b0001".replace(' ', ""));
    let decoded = decode_command_shared(&frame).unwrap();
    assert_eq!(decoded, publish);
    let Command::Publish { data, .. } = decoded.command else {
        unreachable!()
    };
    assert_eq!(
        data.as_binary().unwrap().as_ptr(),
        frame[frame.len() - 2..].as_ptr()
    );
}

#[test]
fn strings_pack_as_hex_only_when_they_are_lowercase_hex() {
    let encode = |s: &str| {
        let mut w = Writer(Vec::new());
        w.str(s);
        hex(&w.0)
    };
    assert_eq!(encode(""), "00");
    assert_eq!(encode("a"), "0261");
    assert_eq!(encode("ab"), "05ab");
    assert_eq!(encode("abc"), "07abc0");
    assert_eq!(encode("aB"), "046142");
    assert_eq!(encode("0f0"), "070f00");
    for s in ["", "a", "ab", "abc", "0f0", "dead beef", "00", "é"] {
        let ping = Request::new(
            1,
            Command::Connect {
                token: Some(s.into()),
                name: None,
            },
        );
        assert_eq!(decode_command(&encode_command(&ping)), Ok(ping));
    }
}

/// The error a frame given in hex decodes to, as (id, code, message).
fn refused(frame_hex: &str, server: bool) -> (Option<u64>, ErrorCode, String) {
    let frame_hex = frame_hex.replace(' ', "");
    let bytes: Vec<u8> = (0..frame_hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&frame_hex[i..i + 2], 16).unwrap())
        .collect();
    let error = if server {
        decode_server(&bytes).unwrap_err()
    } else {
        decode_command(&bytes).unwrap_err()
    };
    (error.id, error.code, error.message)
}

#[test]
fn bad_frames_are_refused_with_the_id_once_read() {
    use ErrorCode::{BadRequest, UnknownOp};
    let cases: [(&str, Option<u64>, ErrorCode, &str); 14] = [
        ("", None, BadRequest, "empty frame"),
        ("3f08", Some(7), UnknownOp, "unknown tag 0x3f"),
        ("4108", Some(7), UnknownOp, "unknown tag 0x41"),
        ("0808ff", Some(7), BadRequest, "1 bytes after"),
        ("8808", Some(7), BadRequest, "carries no data"),
        ("0880", None, BadRequest, "ends inside field `id`"),
        ("088000", None, BadRequest, "not a minimal varint"),
        ("0880808080808080808001", None, BadRequest, "too large"),
        ("0881808080808080808001", None, BadRequest, "too large"),
        (
            "040804c3",
            Some(7),
            BadRequest,
            "ends inside field `channel`",
        ),
        ("040802c3", Some(7), BadRequest, "not valid UTF-8"),
        ("04080461 20", Some(7), BadRequest, "invalid channel"),
        ("0408 03ab", Some(7), BadRequest, "badly packed hex"),
        ("0508026100 7b", Some(7), BadRequest, "not one JSON value"),
    ];
    for (frame, id, code, says) in cases {
        let (got_id, got_code, message) = refused(frame, false);
        assert_eq!((got_id, got_code), (id, code), "{frame}: {message}");
        assert!(message.contains(says), "{frame}: {message}");
    }
    // The id is a protocol integer: 2^53 is too large.
    let (_, code, message) = refused("0881808080808080808010", false);
    assert_eq!(code, BadRequest, "{message}");
    // A key over 64 bytes, an unknown error code, a flag bit unnamed.
    let long_key = format!("0508026183 01{}7b7d", "61".repeat(65));
    let (_, _, message) = refused(&long_key, false);
    assert!(message.contains("at most 64 bytes"), "{message}");
    assert!(
        refused("4e0006 6e6f7065 00", true)
            .2
            .contains("unknown error code")
    );
    assert!(refused("45000261 01 02", true).2.contains("unknown bits"));
    // JSON data deeper than the limit.
    let deep = format!("07000261{}", "5b".repeat(65) + &"5d".repeat(65));
    assert!(refused(&deep, false).2.contains("levels deep"));
}

#[test]
fn a_presence_count_beyond_the_frame_allocates_nothing_large() {
    // 2^53 - 1 entries announced, none there.
    let (_, code, message) = refused("46000261ffffffffffffff0f", true);
    assert_eq!(code, ErrorCode::BadRequest);
    assert!(message.contains("ends inside field `user`"), "{message}");
}
