//! Proptest strategies for the protocol's values, shared by the codec
//! property tests of both envelopes (`codec.rs`, `binary.rs`).

#![allow(dead_code)]

use bytes::Bytes;
use duplex_hub_proto::{
    ClientInfo, Command, Data, ErrorCode, JsonText, MAX_INTEGER, Publication, Request,
    ServerMessage, Since,
};
use proptest::prelude::*;
use serde_json::Value;

/// Any string, with a bias towards the characters JSON must escape and
/// towards lowercase hex (which the binary envelope packs).
pub(crate) fn any_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[0-9a-f]{0,13}",
        "[\"\\\\/\u{0}-\u{1f}\u{7f}a-z é\u{2028}😀\u{ffff}]{0,24}",
    ]
}

/// An integer of the protocol: ids, offsets, times (at most 2^53 - 1).
pub(crate) fn integer() -> impl Strategy<Value = u64> {
    prop_oneof![
        0..=MAX_INTEGER,
        Just(MAX_INTEGER),
        (MAX_INTEGER - 1000)..=MAX_INTEGER
    ]
}

pub(crate) fn channel() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_.:@/=-]{1,40}"
}

pub(crate) fn key() -> impl Strategy<Value = String> {
    any_text().prop_map(|mut s| {
        while s.len() > 64 {
            s.pop();
        }
        s
    })
}

pub(crate) fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        any_text().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((any_text(), inner), 0..6)
                .prop_map(|fields| Value::Object(fields.into_iter().collect())),
        ]
    })
}

/// JSON text as a client might write it: compact or pretty.
pub(crate) fn json_text() -> impl Strategy<Value = JsonText> {
    (json_value(), any::<bool>()).prop_map(|(value, pretty)| {
        if pretty {
            JsonText::parse(&serde_json::to_string_pretty(&value).unwrap()).unwrap()
        } else {
            JsonText::from_value(&value)
        }
    })
}

pub(crate) fn data() -> impl Strategy<Value = Data> {
    prop_oneof![
        json_text().prop_map(Data::Json),
        prop::collection::vec(any::<u8>(), 0..64).prop_map(|b| Data::Binary(Bytes::from(b))),
    ]
}

pub(crate) fn since() -> impl Strategy<Value = Since> {
    (any_text(), integer()).prop_map(|(epoch, offset)| Since { epoch, offset })
}

pub(crate) fn command() -> impl Strategy<Value = Command> {
    prop_oneof![
        (prop::option::of(any_text()), prop::option::of(any_text()))
            .prop_map(|(token, name)| Command::Connect { token, name }),
        any_text().prop_map(|token| Command::Refresh { token }),
        (
            channel(),
            prop::option::of(since()),
            any::<u32>(),
            prop::option::of(any_text())
        )
            .prop_map(|(channel, since, recent, token)| Command::Subscribe {
                channel,
                since,
                recent,
                token
            }),
        channel().prop_map(|channel| Command::Unsubscribe { channel }),
        (channel(), data(), prop::option::of(key()))
            .prop_map(|(channel, data, key)| Command::Publish { channel, data, key }),
        channel().prop_map(|channel| Command::Presence { channel }),
        (channel(), data()).prop_map(|(channel, data)| Command::Signal { channel, data }),
        Just(Command::Ping),
        (channel(), json_text()).prop_map(|(method, data)| Command::Rpc { method, data }),
    ]
}

pub(crate) fn request() -> impl Strategy<Value = Request> {
    (prop::option::of(integer()), command()).prop_map(|(id, command)| Request { id, command })
}

pub(crate) fn client_info() -> impl Strategy<Value = ClientInfo> {
    (any_text(), any_text()).prop_map(|(client, user)| ClientInfo { client, user })
}

pub(crate) fn publication() -> impl Strategy<Value = Publication> {
    (any_text(), integer(), integer(), client_info(), data()).prop_map(
        |(channel, offset, time, from, data)| Publication {
            channel,
            offset,
            time,
            from,
            data,
        },
    )
}

pub(crate) fn server_message() -> impl Strategy<Value = ServerMessage> {
    let id = || prop::option::of(integer());
    prop_oneof![
        (
            id(),
            any_text(),
            any_text(),
            any::<u32>(),
            prop::option::of(integer()),
            integer(),
            // `null` is no data: the hub never sends `"data": null` here.
            prop::option::of(json_text().prop_filter("not null", |data| data.as_str() != "null"))
        )
            .prop_map(|(id, client, user, version, expires, ping, data)| {
                ServerMessage::Connected {
                    id,
                    client,
                    user,
                    version,
                    expires,
                    ping,
                    data,
                }
            }),
        (id(), prop::option::of(integer()))
            .prop_map(|(id, expires)| ServerMessage::Refreshed { id, expires }),
        (
            id(),
            any_text(),
            any_text(),
            integer(),
            any::<bool>(),
            any::<bool>()
        )
            .prop_map(|(id, channel, epoch, offset, recovered, gap)| {
                ServerMessage::Subscribed {
                    id,
                    channel,
                    epoch,
                    offset,
                    recovered,
                    gap,
                }
            }),
        (id(), any_text(), proptest::option::of(any_text())).prop_map(|(id, channel, reason)| {
            ServerMessage::Unsubscribed {
                id,
                channel,
                reason,
            }
        }),
        (id(), any_text(), integer(), any::<bool>()).prop_map(
            |(id, channel, offset, duplicate)| ServerMessage::Published {
                id,
                channel,
                offset,
                duplicate,
            }
        ),
        (id(), any_text(), prop::collection::vec(client_info(), 0..4)).prop_map(
            |(id, channel, clients)| ServerMessage::Presence {
                id,
                channel,
                clients,
            }
        ),
        id().prop_map(|id| ServerMessage::Ok { id }),
        id().prop_map(|id| ServerMessage::Pong { id }),
        (id(), json_text()).prop_map(|(id, data)| ServerMessage::Rpc { id, data }),
        publication().prop_map(ServerMessage::Message),
        (any_text(), any_text(), any_text()).prop_map(|(channel, user, client)| {
            ServerMessage::Join {
                channel,
                user,
                client,
            }
        }),
        (any_text(), any_text(), any_text()).prop_map(|(channel, user, client)| {
            ServerMessage::Leave {
                channel,
                user,
                client,
            }
        }),
        (any_text(), client_info(), data()).prop_map(|(channel, from, data)| {
            ServerMessage::Signal {
                channel,
                from,
                data,
            }
        }),
        (any_text(), any_text(), integer()).prop_map(|(channel, epoch, offset)| {
            ServerMessage::Gap {
                channel,
                epoch,
                offset,
            }
        }),
        (
            id(),
            prop::sample::select(ErrorCode::ALL.to_vec()),
            any_text()
        )
            .prop_map(|(id, code, message)| ServerMessage::Error { id, code, message }),
    ]
}
