//! The hub protocol's decoders hold the protocol's bounds for any input:
//! nothing panics, every integer decoded (ids, offsets, times, `expires`,
//! `since.offset`) is at most 2^53 − 1, and all JSON data decoded nests at
//! most `MAX_DATA_DEPTH` deep, by two independent measures that must agree:
//! serde_json's parser (which also proves the data parses within its own
//! recursion limit, when serde_json parses it at all) and `JsonText::depth`'s
//! byte scan (the decoder itself uses another scan).
//!
//! Input layout: when the input starts with `{`, it is one WebSocket
//! message, tried as text (when UTF-8) and as binary by `decode_command`
//! and `decode_server`; otherwise it is the `data` of a `publish` command
//! and of a `message` push, in text frames, so that mutations go to the
//! depth scan directly.
#![no_main]

use duplex_hub_proto::{
    Command, Data, Frame, MAX_DATA_DEPTH, MAX_INTEGER, Publication, ServerMessage, decode_command,
    decode_server,
};
use libfuzzer_sys::fuzz_target;
use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::fmt;

fn check_integer(what: &str, n: u64) {
    assert!(n <= MAX_INTEGER, "{what} {n} decoded, above 2^53 - 1");
}

/// The nesting depth of a JSON value, as serde_json's parser sees it
/// (duplicate keys included, which a `serde_json::Value` would drop). It
/// recurses, but within serde_json's recursion limit (128).
struct Depth(usize);

impl<'de> Deserialize<'de> for Depth {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DepthVisitor;
        impl<'de> Visitor<'de> for DepthVisitor {
            type Value = Depth;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_bool<E>(self, _: bool) -> Result<Depth, E> {
                Ok(Depth(0))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Depth, E> {
                Ok(Depth(0))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Depth, E> {
                Ok(Depth(0))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Depth, E> {
                Ok(Depth(0))
            }
            fn visit_str<E>(self, _: &str) -> Result<Depth, E> {
                Ok(Depth(0))
            }
            fn visit_unit<E>(self) -> Result<Depth, E> {
                Ok(Depth(0))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Depth, A::Error> {
                let mut deepest = 0;
                while let Some(Depth(d)) = seq.next_element()? {
                    deepest = deepest.max(d);
                }
                Ok(Depth(deepest + 1))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Depth, A::Error> {
                let mut deepest = 0;
                while map.next_key::<IgnoredAny>()?.is_some() {
                    deepest = deepest.max(map.next_value::<Depth>()?.0);
                }
                Ok(Depth(deepest + 1))
            }
        }
        deserializer.deserialize_any(DepthVisitor)
    }
}

fn check_data(data: &Data) {
    let Some(json) = data.as_json() else { return };
    let scanned = json.depth();
    assert!(
        scanned <= MAX_DATA_DEPTH,
        "data of depth {scanned} decoded: {json:?}"
    );
    match serde_json::from_str::<Depth>(json.as_str()) {
        Ok(Depth(parsed)) => assert_eq!(parsed, scanned, "{json:?}"),
        // Its parser refuses some text its validation passes (numbers beyond
        // f64, lone surrogates in `\u` escapes); what matters here is that
        // depth is never the reason.
        Err(e) => assert!(
            !e.to_string().contains("recursion limit"),
            "decoded data too deep for serde_json: {e}: {json:?}"
        ),
    }
}

fn check_command(frame: Frame<'_>) {
    let Ok(request) = decode_command(frame) else {
        return;
    };
    if let Some(id) = request.id {
        check_integer("id", id);
    }
    match &request.command {
        Command::Subscribe {
            since: Some(since), ..
        } => {
            check_integer("since.offset", since.offset);
        }
        Command::Publish { data, .. } | Command::Signal { data, .. } => check_data(data),
        _ => {}
    }
}

fn check_server(frame: Frame<'_>) {
    let Ok(message) = decode_server(frame) else {
        return;
    };
    if let Some(id) = message.id() {
        check_integer("id", id);
    }
    match &message {
        ServerMessage::Connected { expires, ping, .. } => {
            check_integer("ping", *ping);
            if let Some(expires) = expires {
                check_integer("expires", *expires);
            }
        }
        ServerMessage::Refreshed {
            expires: Some(expires),
            ..
        } => check_integer("expires", *expires),
        ServerMessage::Subscribed { offset, .. }
        | ServerMessage::Published { offset, .. }
        | ServerMessage::Gap { offset, .. } => check_integer("offset", *offset),
        ServerMessage::Message(Publication {
            offset, time, data, ..
        }) => {
            check_integer("offset", *offset);
            check_integer("time", *time);
            check_data(data);
        }
        ServerMessage::Signal { data, .. } => check_data(data),
        _ => {}
    }
}

fuzz_target!(|input: &[u8]| {
    if input.first() == Some(&b'{') {
        check_command(Frame::Binary(input));
        check_server(Frame::Binary(input));
        if let Ok(text) = std::str::from_utf8(input) {
            check_command(Frame::Text(text));
            check_server(Frame::Text(text));
        }
        return;
    }
    let Ok(data) = std::str::from_utf8(input) else {
        return;
    };
    let publish = format!(r#"{{"op":"publish","id":1,"channel":"a","data":{data}}}"#);
    check_command(Frame::Text(&publish));
    let message = format!(
        r#"{{"op":"message","channel":"a","offset":1,"time":2,"from":{{"user":"u","client":"c"}},"data":{data}}}"#
    );
    check_server(Frame::Text(&message));
});
