//! `decode_command`: what it accepts, and every way it refuses a frame (with
//! the id when readable, the code and a plain message), never panicking.

use bytes::Bytes;
use duplex_hub_proto::{
    Command, Data, DecodeError, ErrorCode, Frame, JsonText, MAX_DATA_DEPTH, MAX_INTEGER, Request,
    ServerMessage, Since, decode_binary_command, decode_command, encode_server,
};

fn ok(text: &str) -> Request {
    decode_command(Frame::Text(text)).unwrap_or_else(|e| panic!("{text}: {e}"))
}

fn err(text: &str) -> DecodeError {
    match decode_command(Frame::Text(text)) {
        Ok(request) => panic!("{text} decoded to {request:?}"),
        Err(e) => e,
    }
}

fn binary(header: &str, data: &[u8]) -> Vec<u8> {
    let mut frame = (header.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(header.as_bytes());
    frame.extend_from_slice(data);
    frame
}

fn err_bin(frame: &[u8]) -> DecodeError {
    let copied = decode_command(Frame::Binary(frame));
    let shared = decode_binary_command(&Bytes::copy_from_slice(frame));
    assert_eq!(copied, shared);
    match copied {
        Ok(request) => panic!("{frame:?} decoded to {request:?}"),
        Err(e) => e,
    }
}

#[track_caller]
fn check(e: DecodeError, id: Option<u64>, code: ErrorCode, message: &str) {
    assert_eq!(e.id, id, "{e:?}");
    assert_eq!(e.code, code, "{e:?}");
    assert!(
        e.message.contains(message),
        "{:?} does not contain {message:?}",
        e.message
    );
}

fn bad(e: DecodeError, id: Option<u64>, message: &str) {
    check(e, id, ErrorCode::BadRequest, message);
}

fn json(text: &str) -> Data {
    Data::Json(JsonText::parse(text).unwrap())
}

// ---- accepted ------------------------------------------------------------

#[test]
fn every_command_from_the_spec() {
    assert_eq!(
        ok(r#"{"op":"connect","id":1,"token":"eyJ…","name":"web-chat"}"#),
        Request {
            id: Some(1),
            command: Command::Connect {
                token: Some("eyJ…".into()),
                name: Some("web-chat".into())
            }
        }
    );
    assert_eq!(
        ok(r#"{"op":"connect"}"#),
        Request {
            id: None,
            command: Command::Connect {
                token: None,
                name: None
            }
        }
    );
    assert_eq!(
        ok(r#"{"op":"refresh","id":7,"token":"t"}"#).command,
        Command::Refresh { token: "t".into() }
    );
    assert_eq!(
        ok(r#"{"op":"subscribe","id":2,"channel":"chat:lobby","since":{"epoch":"k3x9","offset":41}}"#)
            .command,
        Command::Subscribe {
            channel: "chat:lobby".into(),
            since: Some(Since {
                epoch: "k3x9".into(),
                offset: 41
            }),
            recent: 0,
            token: None,
        }
    );
    assert_eq!(
        ok(r#"{"op":"subscribe","channel":"a","recent":10}"#).command,
        Command::Subscribe {
            channel: "a".into(),
            since: None,
            recent: 10,
            token: None,
        }
    );
    assert_eq!(
        ok(r#"{"op":"unsubscribe","id":3,"channel":"a"}"#).command,
        Command::Unsubscribe {
            channel: "a".into()
        }
    );
    assert_eq!(
        ok(r#"{"op":"publish","id":3,"channel":"chat:lobby","data":{"text":"hello"},"key":"m-5d1e"}"#)
            .command,
        Command::Publish {
            channel: "chat:lobby".into(),
            data: json(r#"{"text":"hello"}"#),
            key: Some("m-5d1e".into())
        }
    );
    assert_eq!(
        ok(r#"{"op":"presence","id":4,"channel":"chat:lobby"}"#).command,
        Command::Presence {
            channel: "chat:lobby".into()
        }
    );
    assert_eq!(
        ok(r#"{"op":"signal","channel":"chat:lobby","data":{"typing":true}}"#),
        Request {
            id: None,
            command: Command::Signal {
                channel: "chat:lobby".into(),
                data: json(r#"{"typing":true}"#)
            }
        }
    );
    assert_eq!(
        ok(r#"{"op":"ping","id":9}"#),
        Request {
            id: Some(9),
            command: Command::Ping
        }
    );
}

#[test]
fn data_is_kept_as_raw_text() {
    let text = "{\"op\":\"publish\",\"channel\":\"a\",\"data\":  {\"b\" : [1.50, 1e400, 123456789012345678901234567890, \"\\u00e9\"]}  }";
    let Command::Publish { data, .. } = ok(text).command else {
        panic!()
    };
    assert_eq!(
        data.as_json().unwrap().as_str(),
        "{\"b\" : [1.50, 1e400, 123456789012345678901234567890, \"\\u00e9\"]}"
    );
}

#[test]
fn any_json_value_is_data_even_null() {
    for value in ["null", "0", "\"s\"", "[]", "true"] {
        let Command::Publish { data, .. } = ok(&format!(
            r#"{{"op":"publish","channel":"a","data":{value}}}"#
        ))
        .command
        else {
            panic!()
        };
        assert_eq!(data, json(value));
    }
}

#[test]
fn unknown_fields_are_ignored() {
    assert_eq!(
        ok(r#"{"x":{"deep":[1,{"y":null}]},"op":"ping","id":1,"channel":5,"future":"yes"}"#),
        Request {
            id: Some(1),
            command: Command::Ping
        }
    );
}

#[test]
fn null_optional_fields_are_absent() {
    assert_eq!(
        ok(r#"{"op":"subscribe","id":null,"channel":"a","since":null,"recent":null}"#),
        Request {
            id: None,
            command: Command::Subscribe {
                channel: "a".into(),
                since: None,
                recent: 0,
                token: None,
            }
        }
    );
    assert_eq!(
        ok(r#"{"op":"publish","channel":"a","data":1,"key":null}"#).command,
        Command::Publish {
            channel: "a".into(),
            data: json("1"),
            key: None
        }
    );
}

#[test]
fn escapes_in_keys_and_strings() {
    assert_eq!(
        ok(r#"{"\u006fp":"conn\u0065ct","token":"a\"b\\c\u00e9\ud83d\ude00"}"#).command,
        Command::Connect {
            token: Some("a\"b\\c\u{e9}\u{1f600}".into()),
            name: None
        }
    );
}

#[test]
fn key_of_64_bytes_is_fine() {
    let key = "k".repeat(64);
    let Command::Publish { key: Some(got), .. } = ok(&format!(
        r#"{{"op":"publish","channel":"a","data":1,"key":"{key}"}}"#
    ))
    .command
    else {
        panic!()
    };
    assert_eq!(got, key);
}

#[test]
fn binary_publish_and_signal() {
    let frame = binary(
        r#"{"op":"publish","id":5,"channel":"a","key":"k"}"#,
        &[0, 1, 255],
    );
    let expected = Request {
        id: Some(5),
        command: Command::Publish {
            channel: "a".into(),
            data: Data::Binary(Bytes::from_static(&[0, 1, 255])),
            key: Some("k".into()),
        },
    };
    assert_eq!(decode_command(Frame::Binary(&frame)).unwrap(), expected);
    assert_eq!(
        decode_binary_command(&Bytes::from(frame)).unwrap(),
        expected
    );

    let frame = binary(r#"{"op":"signal","channel":"a"}"#, b"");
    assert_eq!(
        decode_command(Frame::Binary(&frame)).unwrap().command,
        Command::Signal {
            channel: "a".into(),
            data: Data::Binary(Bytes::new())
        }
    );
}

#[test]
fn binary_data_is_shared_not_copied() {
    let frame = Bytes::from(binary(r#"{"op":"publish","channel":"a"}"#, b"payload"));
    let Command::Publish {
        data: Data::Binary(data),
        ..
    } = decode_binary_command(&frame).unwrap().command
    else {
        panic!()
    };
    assert_eq!(&data[..], b"payload");
    assert_eq!(data.as_ptr(), frame[frame.len() - 7..].as_ptr());
}

// ---- refused: the frame ---------------------------------------------------

#[test]
fn not_json() {
    for text in [
        "",
        "   ",
        "{",
        "{\"op\":",
        "{'op':'ping'}",
        "op=ping",
        "{\"op\":\"ping\",}",
    ] {
        bad(err(text), None, "malformed JSON");
    }
}

#[test]
fn trailing_garbage() {
    bad(err(r#"{"op":"ping","id":1} x"#), None, "malformed JSON");
    bad(err(r#"{"op":"ping"}{"op":"ping"}"#), None, "malformed JSON");
}

#[test]
fn not_an_object() {
    for text in ["[]", "[{\"op\":\"ping\"}]", "\"ping\"", "1", "null", "true"] {
        bad(err(text), None, "JSON object");
    }
}

#[test]
fn invalid_json_inside_ignored_fields() {
    bad(
        err("{\"op\":\"ping\",\"x\":\"a\u{1}b\"}"),
        None,
        "malformed JSON",
    );
    bad(err(r#"{"op":"ping","x":[1,]}"#), None, "malformed JSON");
}

// ---- refused: id and op ---------------------------------------------------

#[test]
fn bad_ids_are_reported_without_id() {
    for id in [
        "\"1\"",
        "-1",
        "1.5",
        "1.0",
        "1e3",
        "true",
        "{}",
        "[1]",
        "18446744073709551616",
        "18446744073709551615",
        "9007199254740992",
    ] {
        let e = err(&format!(r#"{{"op":"ping","id":{id}}}"#));
        bad(e, None, "`id`");
    }
    assert_eq!(
        ok(r#"{"op":"ping","id":9007199254740991}"#).id,
        Some(MAX_INTEGER)
    );
}

#[test]
fn integers_beyond_2_pow_53_are_bad_requests_naming_the_field() {
    // The protocol's integers stay below 2^53 so that every JSON parser holds
    // them exactly; 2^53 itself, and u64::MAX, used to be accepted.
    for big in ["9007199254740992", "18446744073709551615"] {
        let e = err(&format!(
            r#"{{"op":"publish","id":{big},"channel":"a","data":1}}"#
        ));
        check(
            e.clone(),
            None,
            ErrorCode::BadRequest,
            "field `id` is too large",
        );
        assert!(e.message.contains("9007199254740991"), "{e:?}");
        let e = err(&format!(
            r#"{{"op":"subscribe","id":3,"channel":"a","since":{{"epoch":"e","offset":{big}}}}}"#
        ));
        bad(e, Some(3), "field `since.offset` is too large");
    }
    let edge =
        ok(r#"{"op":"subscribe","channel":"a","since":{"epoch":"e","offset":9007199254740991}}"#);
    assert!(
        matches!(
            edge.command,
            Command::Subscribe {
                since: Some(Since {
                    offset: MAX_INTEGER,
                    ..
                }),
                ..
            }
        ),
        "{edge:?}"
    );
    // The error is a reply like any other: the hub answers it and reads on.
    let e = err(r#"{"op":"ping","id":9007199254740992}"#);
    assert_eq!(
        e.to_reply(),
        ServerMessage::Error {
            id: None,
            code: ErrorCode::BadRequest,
            message: e.message.clone()
        }
    );
}

#[test]
fn missing_or_bad_op() {
    bad(err(r#"{"id":4}"#), Some(4), "missing field `op`");
    bad(err(r#"{"op":1,"id":4}"#), Some(4), "`op` must be a string");
    bad(
        err(r#"{"op":null,"id":4}"#),
        Some(4),
        "`op` must be a string",
    );
    bad(
        err(r#"{"op":"ping","op":"ping","id":4}"#),
        Some(4),
        "more than once",
    );
}

#[test]
fn unknown_ops() {
    check(
        err(r#"{"op":"launch","id":8}"#),
        Some(8),
        ErrorCode::UnknownOp,
        "unknown op \"launch\"",
    );
    // The hub's own ops are not commands.
    check(
        err(r#"{"op":"message","channel":"a"}"#),
        None,
        ErrorCode::UnknownOp,
        "message",
    );
    check(err(r#"{"op":"Ping"}"#), None, ErrorCode::UnknownOp, "Ping");
    // A long op is quoted short.
    let e = err(&format!(r#"{{"op":"{}"}}"#, "x".repeat(10_000)));
    assert_eq!(e.code, ErrorCode::UnknownOp);
    assert!(e.message.len() < 100, "{}", e.message);
}

#[test]
fn the_error_becomes_a_reply() {
    let e = err(r#"{"op":"nope","id":5}"#);
    let reply = e.to_reply();
    assert_eq!(
        reply,
        ServerMessage::Error {
            id: Some(5),
            code: ErrorCode::UnknownOp,
            message: "unknown op \"nope\"".into()
        }
    );
    assert_eq!(
        encode_server(&reply).as_bytes(),
        br#"{"op":"error","id":5,"code":"unknown_op","message":"unknown op \"nope\""}"#
    );
    assert_eq!(e.into_reply(), reply);
}

// ---- refused: fields ------------------------------------------------------

#[test]
fn missing_fields() {
    for (text, field) in [
        (r#"{"op":"refresh","id":1}"#, "token"),
        (r#"{"op":"subscribe","id":1}"#, "channel"),
        (r#"{"op":"unsubscribe","id":1}"#, "channel"),
        (r#"{"op":"publish","id":1,"data":1}"#, "channel"),
        (r#"{"op":"publish","id":1,"channel":"a"}"#, "data"),
        (r#"{"op":"presence","id":1}"#, "channel"),
        (r#"{"op":"signal","id":1,"channel":"a"}"#, "data"),
        (r#"{"op":"signal","id":1,"data":{}}"#, "channel"),
    ] {
        bad(err(text), Some(1), &format!("missing field `{field}`"));
    }
}

#[test]
fn wrong_types() {
    for (text, message) in [
        (
            r#"{"op":"connect","id":1,"token":5}"#,
            "`token` must be a string",
        ),
        (
            r#"{"op":"connect","id":1,"name":[]}"#,
            "`name` must be a string",
        ),
        (
            r#"{"op":"refresh","id":1,"token":null}"#,
            "`token` must be a string",
        ),
        (
            r#"{"op":"subscribe","id":1,"channel":7}"#,
            "`channel` must be a string",
        ),
        (
            r#"{"op":"subscribe","id":1,"channel":null}"#,
            "`channel` must be a string",
        ),
        (
            r#"{"op":"subscribe","id":1,"channel":"a","since":5}"#,
            "`since`",
        ),
        (
            r#"{"op":"subscribe","id":1,"channel":"a","since":"e:5"}"#,
            "`since`",
        ),
        (
            r#"{"op":"subscribe","id":1,"channel":"a","since":{"offset":5}}"#,
            "`since`",
        ),
        (
            r#"{"op":"subscribe","id":1,"channel":"a","since":{"epoch":"e"}}"#,
            "`since`",
        ),
        (
            r#"{"op":"subscribe","id":1,"channel":"a","since":{"epoch":1,"offset":5}}"#,
            "`since`",
        ),
        (
            r#"{"op":"subscribe","id":1,"channel":"a","since":{"epoch":"e","offset":-1}}"#,
            "`since`",
        ),
        (
            r#"{"op":"subscribe","id":1,"channel":"a","since":{"epoch":"e","offset":"5"}}"#,
            "`since`",
        ),
        (
            r#"{"op":"subscribe","id":1,"channel":"a","recent":-1}"#,
            "`recent` must be a non-negative integer",
        ),
        (
            r#"{"op":"subscribe","id":1,"channel":"a","recent":"3"}"#,
            "`recent` must be a non-negative integer",
        ),
        (
            r#"{"op":"subscribe","id":1,"channel":"a","recent":2.5}"#,
            "`recent` must be a non-negative integer",
        ),
        (
            r#"{"op":"subscribe","id":1,"channel":"a","recent":4294967296}"#,
            "`recent` is too large",
        ),
        (
            r#"{"op":"publish","id":1,"channel":"a","data":1,"key":1}"#,
            "`key` must be a string",
        ),
        (
            r#"{"op":"presence","id":1,"channel":{}}"#,
            "`channel` must be a string",
        ),
        (
            r#"{"op":"connect","id":1,"token":"\ud800"}"#,
            "`token` is not valid Unicode",
        ),
    ] {
        bad(err(text), Some(1), message);
    }
}

#[test]
fn since_extra_fields_are_ignored() {
    assert_eq!(
        ok(r#"{"op":"subscribe","channel":"a","since":{"epoch":"e","offset":5,"x":1}}"#).command,
        Command::Subscribe {
            channel: "a".into(),
            since: Some(Since {
                epoch: "e".into(),
                offset: 5
            }),
            recent: 0,
            token: None,
        }
    );
}

#[test]
fn bad_channel_names() {
    for channel in ["", "chat lobby", "caf\u{e9}", "a*", "a\\n"] {
        let text = format!(
            r#"{{"op":"subscribe","id":2,"channel":{}}}"#,
            serde_json::to_string(channel).unwrap()
        );
        bad(err(&text), Some(2), "invalid channel");
    }
    let long = "x".repeat(256);
    for op in ["subscribe", "unsubscribe", "presence"] {
        bad(
            err(&format!(r#"{{"op":"{op}","id":2,"channel":"{long}"}}"#)),
            Some(2),
            "at most 255 bytes",
        );
    }
    for op in ["publish", "signal"] {
        bad(
            err(&format!(
                r#"{{"op":"{op}","id":2,"channel":"a b","data":1}}"#
            )),
            Some(2),
            "invalid channel",
        );
    }
}

#[test]
fn key_over_64_bytes() {
    let key = "k".repeat(65);
    bad(
        err(&format!(
            r#"{{"op":"publish","id":3,"channel":"a","data":1,"key":"{key}"}}"#
        )),
        Some(3),
        "at most 64 bytes, this one is 65",
    );
    // Bytes, not characters.
    let key = "é".repeat(33);
    bad(
        err(&format!(
            r#"{{"op":"publish","id":3,"channel":"a","data":1,"key":"{key}"}}"#
        )),
        Some(3),
        "this one is 66",
    );
}

#[test]
fn duplicate_fields_that_are_read() {
    bad(
        err(r#"{"op":"subscribe","id":1,"channel":"a","channel":"b"}"#),
        Some(1),
        "field `channel` appears more than once",
    );
    bad(
        err(r#"{"op":"ping","id":1,"id":2}"#),
        None,
        "field `id` appears more than once",
    );
    // Fields an op does not read may repeat.
    assert_eq!(
        ok(r#"{"op":"ping","channel":"a","channel":"b"}"#).command,
        Command::Ping
    );
}

// ---- refused: binary frames -----------------------------------------------

#[test]
fn binary_frame_shorter_than_its_length() {
    for frame in [&b""[..], b"\0", b"\0\0\0"] {
        bad(err_bin(frame), None, "4-byte header length");
    }
}

#[test]
fn binary_header_length_beyond_the_frame() {
    let mut frame = binary(r#"{"op":"publish","channel":"a"}"#, b"");
    frame[3] += 1;
    bad(err_bin(&frame), None, "exceeds");
    bad(err_bin(&[0xff, 0xff, 0xff, 0xff, b'{']), None, "exceeds");
}

#[test]
fn binary_header_not_utf8_or_not_json() {
    bad(err_bin(&binary("\u{0}", b"")[..]), None, "malformed JSON");
    let mut frame = vec![0, 0, 0, 2, 0xc3, 0x28];
    frame.extend_from_slice(b"data");
    bad(err_bin(&frame), None, "not UTF-8");
    bad(err_bin(&binary("", b"data")), None, "malformed JSON");
    bad(err_bin(&binary("[]", b"data")), None, "JSON object");
}

#[test]
fn binary_frames_only_for_publish_and_signal() {
    for op in [
        "connect",
        "refresh",
        "subscribe",
        "unsubscribe",
        "presence",
        "ping",
    ] {
        bad(
            err_bin(&binary(
                &format!(r#"{{"op":"{op}","id":6,"channel":"a"}}"#),
                b"x",
            )),
            Some(6),
            "cannot be sent in a binary frame",
        );
    }
    check(
        err_bin(&binary(r#"{"op":"launch","id":6}"#, b"x")),
        Some(6),
        ErrorCode::UnknownOp,
        "launch",
    );
}

#[test]
fn binary_header_must_not_carry_data() {
    bad(
        err_bin(&binary(
            r#"{"op":"publish","id":6,"channel":"a","data":1}"#,
            b"x",
        )),
        Some(6),
        "must not have a `data` field",
    );
}

#[test]
fn binary_header_field_errors_carry_the_id() {
    bad(
        err_bin(&binary(r#"{"op":"publish","id":6,"channel":"a b"}"#, b"x")),
        Some(6),
        "invalid channel",
    );
    bad(
        err_bin(&binary(r#"{"op":"signal","id":6}"#, b"x")),
        Some(6),
        "missing field `channel`",
    );
}

// ---- refused: data nested too deep ------------------------------------------

/// `n` levels of arrays and objects, alternating, around `1`.
fn nested(n: usize) -> String {
    let mut open = String::new();
    let mut close = String::new();
    for level in 0..n {
        if level % 2 == 0 {
            open.push('[');
            close.insert(0, ']');
        } else {
            open.push_str(r#"{"k":"#);
            close.insert(0, '}');
        }
    }
    format!("{open}1{close}")
}

#[test]
fn data_nested_to_the_limit_is_accepted_and_one_more_refused() {
    for op in ["publish", "signal"] {
        let at_limit = nested(MAX_DATA_DEPTH);
        let text = format!(r#"{{"op":"{op}","id":5,"channel":"a","data":{at_limit}}}"#);
        match ok(&text).command {
            Command::Publish { data, .. } | Command::Signal { data, .. } => {
                assert_eq!(data, json(&at_limit));
                assert_eq!(data.as_json().unwrap().depth(), MAX_DATA_DEPTH);
            }
            other => panic!("{other:?}"),
        }
        let over = nested(MAX_DATA_DEPTH + 1);
        let e = err(&format!(
            r#"{{"op":"{op}","id":5,"channel":"a","data":{over}}}"#
        ));
        bad(e.clone(), Some(5), "field `data`");
        assert!(e.message.contains("64 levels"), "{e:?}");
    }
    // Objects alone and arrays alone count the same.
    let objects = |n| format!("{}1{}", r#"{"a":"#.repeat(n), "}".repeat(n));
    let arrays = |n| format!("{}1{}", "[".repeat(n), "]".repeat(n));
    for make in [&objects as &dyn Fn(usize) -> String, &arrays] {
        ok(&format!(
            r#"{{"op":"publish","channel":"a","data":{}}}"#,
            make(64)
        ));
        err(&format!(
            r#"{{"op":"publish","channel":"a","data":{}}}"#,
            make(65)
        ));
    }
}

#[test]
fn data_nested_1900_or_100000_levels_is_refused_without_a_crash() {
    // 1,900 levels used to be relayed to subscribers, whose parsers fail on
    // it (serde_json at 128) or overflow their stack.
    for depth in [1_900, 100_000] {
        let text = format!(
            r#"{{"op":"publish","id":8,"channel":"a","data":{}}}"#,
            nested(depth)
        );
        bad(err(&text), Some(8), "field `data` nests");
    }
}

#[test]
fn brackets_inside_strings_do_not_count_towards_the_depth() {
    let noise = vec![r#""[[[[{{{{\"[[[[\\" , "]]]]}}}}""#; 40].join(",");
    let data = format!(
        "{}[{noise}]{}",
        "[".repeat(MAX_DATA_DEPTH - 1),
        "]".repeat(MAX_DATA_DEPTH - 1)
    );
    let request = ok(&format!(
        r#"{{"op":"publish","channel":"a","data":{data}}}"#
    ));
    let Command::Publish { data: decoded, .. } = request.command else {
        panic!("{request:?}")
    };
    assert_eq!(decoded, json(&data));
}

#[test]
fn depth_applies_to_data_only() {
    // An ignored field may nest deeper (it is validated, never kept or relayed).
    let text = format!(r#"{{"op":"ping","id":2,"x":{}}}"#, nested(1_000));
    assert_eq!(ok(&text).id, Some(2));
}
