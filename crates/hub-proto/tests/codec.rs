//! Codec properties: every command and hub message round-trips through its
//! frame, strings with any characters survive the hand-written JSON, data
//! passes through verbatim, and no input makes a decoder panic.

use duplex_hub_proto::{
    ClientInfo, Command, Data, Encoded, ErrorCode, Frame, Publication, Request, ServerMessage,
    Since, decode_command, decode_server, encode_command, encode_publication, encode_server,
};
use proptest::prelude::*;
use serde_json::{Value, json};

mod strategies;

use strategies::*;

// ---- helpers ---------------------------------------------------------------

/// The JSON object of a text frame, or of a binary frame's header, parsed by
/// serde_json (an independent check of the hand-written writer).
fn parse_json(encoded: &Encoded) -> Value {
    let header = match encoded {
        Encoded::Text(text) => text.as_bytes(),
        Encoded::Binary(frame) => {
            let len = u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
            &frame[4..4 + len]
        }
    };
    serde_json::from_slice(header).expect("the encoders write valid JSON")
}

fn binary_data(encoded: &Encoded) -> Option<&[u8]> {
    match encoded {
        Encoded::Text(_) => None,
        Encoded::Binary(frame) => {
            let len = u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
            Some(&frame[4 + len..])
        }
    }
}

// ---- properties --------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn commands_round_trip(request in request()) {
        let encoded = encode_command(&request);
        let binary = matches!(
            &request.command,
            Command::Publish { data: Data::Binary(_), .. } | Command::Signal { data: Data::Binary(_), .. }
        );
        prop_assert_eq!(encoded.is_text(), !binary);
        let decoded = decode_command(encoded.as_frame());
        prop_assert_eq!(decoded, Ok(request.clone()));

        // serde_json reads the same object.
        let value = parse_json(&encoded);
        prop_assert_eq!(value["op"].as_str(), Some(request.command.op()));
        prop_assert_eq!(value["id"].as_u64(), request.id);
        prop_assert!(value.get("data").is_none() || !binary);
        match &request.command {
            Command::Connect { token, name } => {
                prop_assert_eq!(value["token"].as_str(), token.as_deref());
                prop_assert_eq!(value["name"].as_str(), name.as_deref());
            }
            Command::Refresh { token } => prop_assert_eq!(value["token"].as_str(), Some(&**token)),
            Command::Subscribe { since: Some(since), .. } => {
                prop_assert_eq!(&value["since"], &json!({"epoch": since.epoch, "offset": since.offset}));
            }
            Command::Publish { key, data, .. } => {
                prop_assert_eq!(value["key"].as_str(), key.as_deref());
                if let Data::Json(json) = data {
                    prop_assert_eq!(&value["data"], &json.to_value().unwrap());
                }
            }
            _ => {}
        }
    }

    #[test]
    fn server_messages_round_trip(message in server_message()) {
        let encoded = encode_server(&message);
        let binary = matches!(
            &message,
            ServerMessage::Message(Publication { data: Data::Binary(_), .. })
                | ServerMessage::Signal { data: Data::Binary(_), .. }
        );
        prop_assert_eq!(encoded.is_text(), !binary);
        prop_assert_eq!(decode_server(encoded.as_frame()), Ok(message.clone()));
        let value = parse_json(&encoded);
        prop_assert_eq!(value["op"].as_str(), Some(message.op()));
        prop_assert_eq!(value["id"].as_u64(), message.id());
    }

    #[test]
    fn message_push_fields_read_back_with_serde_json(publication in publication()) {
        let encoded = encode_publication(&publication);
        prop_assert_eq!(&encoded, &encode_server(&ServerMessage::Message(publication.clone())));
        let value = parse_json(&encoded);
        prop_assert_eq!(value["channel"].as_str(), Some(&*publication.channel));
        prop_assert_eq!(value["offset"].as_u64(), Some(publication.offset));
        prop_assert_eq!(value["time"].as_u64(), Some(publication.time));
        prop_assert_eq!(value["from"]["user"].as_str(), Some(&*publication.from.user));
        prop_assert_eq!(value["from"]["client"].as_str(), Some(&*publication.from.client));
        match &publication.data {
            Data::Json(json) => {
                prop_assert_eq!(&value["data"], &json.to_value().unwrap());
                // Verbatim: the data's text appears as is, at the end.
                let Encoded::Text(text) = &encoded else { panic!() };
                let tail = format!(",\"data\":{}}}", json.as_str());
                prop_assert!(text.ends_with(&tail));
            }
            Data::Binary(bytes) => {
                prop_assert!(value.get("data").is_none());
                prop_assert_eq!(binary_data(&encoded), Some(&bytes[..]));
            }
        }
    }

    #[test]
    fn strings_survive_json(s in any_text()) {
        let message = ServerMessage::Error { id: None, code: ErrorCode::Internal, message: s.clone() };
        let encoded = encode_server(&message);
        let value = parse_json(&encoded);
        prop_assert_eq!(value["message"].as_str(), Some(&*s));
        prop_assert_eq!(decode_server(encoded.as_frame()), Ok(message));
    }

    #[test]
    fn decoders_never_panic_on_text(text in any::<String>()) {
        check_decoders(Frame::Text(&text));
    }

    #[test]
    fn decoders_never_panic_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        check_decoders(Frame::Binary(&bytes));
    }

    #[test]
    fn decoders_never_panic_on_damaged_frames(
        request in request(),
        message in server_message(),
        cut in any::<prop::sample::Index>(),
        flip in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        for encoded in [encode_command(&request), encode_server(&message)] {
            let bytes = encoded.as_bytes();
            if bytes.is_empty() {
                continue;
            }
            let cut_at = cut.index(bytes.len());
            let mut flipped = bytes.to_vec();
            flipped[flip.index(bytes.len())] = byte;
            for damaged in [&bytes[..cut_at], &flipped[..]] {
                check_decoders(Frame::Binary(damaged));
                if let Ok(text) = std::str::from_utf8(damaged) {
                    check_decoders(Frame::Text(text));
                }
            }
        }
    }
}

/// Whatever decodes re-encodes to a frame that decodes the same.
fn check_decoders(frame: Frame<'_>) {
    if let Ok(request) = decode_command(frame) {
        assert_eq!(
            decode_command(encode_command(&request).as_frame()),
            Ok(request)
        );
    }
    if let Ok(message) = decode_server(frame) {
        assert_eq!(
            decode_server(encode_server(&message).as_frame()),
            Ok(message)
        );
    }
}

// ---- examples from the spec ---------------------------------------------------

#[test]
fn hub_messages_from_the_spec() {
    let examples = [
        r#"{"op":"connected","id":1,"client":"c7f3a9e01","user":"alice","version":1,"expires":1795000000,"ping":25}"#,
        r#"{"op":"refreshed","id":7,"expires":1795003600}"#,
        r#"{"op":"subscribed","id":2,"channel":"chat:lobby","epoch":"k3x9","offset":44,"recovered":true}"#,
        r#"{"op":"message","channel":"chat:lobby","offset":42,"time":1795000001000,"from":{"user":"bob","client":"c01"},"data":{"text":"hi"}}"#,
        r#"{"op":"published","id":3,"channel":"chat:lobby","offset":45}"#,
        r#"{"op":"presence","id":4,"channel":"chat:lobby","clients":[{"user":"alice","client":"c7f3a9e01"}]}"#,
        r#"{"op":"pong","id":9}"#,
        r#"{"op":"error","id":5,"code":"forbidden","message":"you may not publish to news:*"}"#,
        r#"{"op":"connected","id":1,"client":"c7","user":"ada","version":1,"ping":25,"data":{"plan":"pro"}}"#,
        r#"{"op":"rpc","id":6,"data":{"total":3}}"#,
        r#"{"op":"error","id":6,"code":"rpc_error","message":"no such order"}"#,
        r#"{"op":"error","id":6,"code":"backend_unavailable","message":"the backend did not answer"}"#,
    ];
    for text in examples {
        let message = decode_server(Frame::Text(text)).unwrap_or_else(|e| panic!("{text}: {e}"));
        // Our encoder writes these very bytes back.
        assert_eq!(encode_server(&message), Encoded::Text(text.to_owned()));
    }
    // Field order does not matter, nor do absent flags.
    assert_eq!(
        decode_server(Frame::Text(
            r#"{"op":"presence","id":4,"channel":"c","clients":[{"client":"c7","user":"alice"}]}"#
        )),
        Ok(ServerMessage::Presence {
            id: Some(4),
            channel: "c".into(),
            clients: vec![ClientInfo {
                client: "c7".into(),
                user: "alice".into()
            }]
        })
    );
    assert_eq!(
        decode_server(Frame::Text(
            r#"{"op":"subscribed","channel":"c","epoch":"e","offset":0}"#
        )),
        Ok(ServerMessage::Subscribed {
            id: None,
            channel: "c".into(),
            epoch: "e".into(),
            offset: 0,
            recovered: false,
            gap: false
        })
    );
}

#[test]
fn commands_encode_as_in_the_spec() {
    let cases = [
        (
            Request::new(
                2,
                Command::Subscribe {
                    channel: "chat:lobby".into(),
                    since: Some(Since {
                        epoch: "k3x9".into(),
                        offset: 41,
                    }),
                    recent: 0,
                    token: None,
                },
            ),
            r#"{"op":"subscribe","id":2,"channel":"chat:lobby","since":{"epoch":"k3x9","offset":41}}"#,
        ),
        (
            Request::new(
                3,
                Command::Publish {
                    channel: "chat:lobby".into(),
                    data: Data::json(&json!({"text": "hello"})),
                    key: Some("m-5d1e".into()),
                },
            ),
            r#"{"op":"publish","id":3,"channel":"chat:lobby","key":"m-5d1e","data":{"text":"hello"}}"#,
        ),
        (
            Request {
                id: None,
                command: Command::Signal {
                    channel: "chat:lobby".into(),
                    data: Data::json(&json!({"typing": true})),
                },
            },
            r#"{"op":"signal","channel":"chat:lobby","data":{"typing":true}}"#,
        ),
        (Request::new(9, Command::Ping), r#"{"op":"ping","id":9}"#),
    ];
    for (request, text) in cases {
        assert_eq!(encode_command(&request), Encoded::Text(text.to_owned()));
    }
}

#[test]
fn binary_layout() {
    let encoded = encode_command(&Request::new(
        1,
        Command::Publish {
            channel: "a".into(),
            data: Data::from(vec![9, 8, 7]),
            key: None,
        },
    ));
    let header = br#"{"op":"publish","id":1,"channel":"a"}"#;
    let mut expected = (header.len() as u32).to_be_bytes().to_vec();
    expected.extend_from_slice(header);
    expected.extend_from_slice(&[9, 8, 7]);
    assert_eq!(encoded, Encoded::Binary(expected));

    // The hub side.
    let frame = encode_server(&ServerMessage::Signal {
        channel: "a".into(),
        from: ClientInfo {
            client: "c".into(),
            user: "u".into(),
        },
        data: Data::from(Vec::new()),
    });
    let header = br#"{"op":"signal","channel":"a","from":{"user":"u","client":"c"}}"#;
    let mut expected = (header.len() as u32).to_be_bytes().to_vec();
    expected.extend_from_slice(header);
    assert_eq!(frame, Encoded::Binary(expected));
}

#[test]
fn decode_server_refusals() {
    let cases: &[(&[u8], bool, &str)] = &[
        (br#"{"op":"subscribe","channel":"a"}"#, true, "unknown op"),
        (br#"{"op":"error","id":1,"code":"teapot","message":"m"}"#, false, "unknown error code"),
        (br#"{"op":"message","channel":"a","offset":1,"time":2,"from":{"user":"u"},"data":1}"#, false, "`from`"),
        (br#"{"op":"message","channel":"a","offset":1,"time":2,"from":{"user":"u","client":"c"}}"#, false, "missing field `data`"),
        (br#"{"op":"subscribed","channel":"a","epoch":"e","offset":1,"gap":"yes"}"#, false, "`gap` must be a boolean"),
        (br#"{"op":"presence","channel":"a","clients":{}}"#, false, "`clients`"),
        (br#"{"op":"connected","client":"c","user":"u","version":4294967296,"ping":1}"#, false, "`version` is too large"),
        (br#"{"op":"connected","client":"c","user":"u","version":1,"ping":1,"expires":9007199254740992}"#, false, "`expires` is too large"),
        (br#"{"op":"published","channel":"a","offset":9007199254740992}"#, false, "`offset` is too large"),
        (br#"{"op":"message","channel":"a","offset":1,"time":18446744073709551615,"from":{"user":"u","client":"c"},"data":1}"#, false, "`time` is too large"),
        (br#"{"op":"gap","channel":"a","epoch":"e","offset":9007199254740992}"#, false, "`offset` is too large"),
        (br#"{"op":"pong","id":9007199254740992}"#, false, "`id` is too large"),
    ];
    for &(text, unknown, message) in cases {
        let e = decode_server(Frame::Text(std::str::from_utf8(text).unwrap())).unwrap_err();
        assert_eq!(
            e.code,
            if unknown {
                ErrorCode::UnknownOp
            } else {
                ErrorCode::BadRequest
            },
            "{e}"
        );
        assert!(e.message.contains(message), "{e}");
    }
    let header = br#"{"op":"pong","id":1}"#;
    let mut frame = (header.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(header);
    let e = decode_server(Frame::Binary(&frame)).unwrap_err();
    assert_eq!(e.id, Some(1));
    assert!(
        e.message.contains("cannot be sent in a binary frame"),
        "{e}"
    );
}
