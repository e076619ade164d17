//! What the Redis broker writes into Redis and reads back: history entries
//! and the envelopes published on a channel's pub/sub topic.
//!
//! The formats are byte strings that both Rust and the Lua scripts
//! ([`super::scripts`]) can cut with one pattern match. Numbers are decimal
//! ASCII; strings whose content is arbitrary carry their length first.
//!
//! ```text
//! body      = SENT_US " " CLIENT_LEN " " USER_LEN " " KIND CLIENT USER DATA
//!             (KIND: "J" JSON text, "B" bytes; SENT_US: the publishing node's
//!              wall clock in µs, for the publish-to-delivery latency)
//! entry     = OFFSET " " TIME " " KEY_LEN " " KEY body       (one history item)
//! envelope  = "m" EPOCH " " entry                            (a message)
//!           | "j" CLIENT " " USER                            (a join)
//!           | "l" CLIENT " " USER                            (a leave)
//!           | "s" body                                       (a signal)
//! ```
//!
//! Invariants: the Lua scripts build `entry` and `envelope` around the
//! `body` Rust builds, byte for byte as documented here; client ids never
//! contain a space (they are hex), epochs are base-36; user names and data
//! are length-prefixed, so any bytes may appear in them. Parsing never
//! panics: anything malformed is `None` (and is dropped with a log line by
//! the caller).

use bytes::Bytes;
use duplex_hub_proto::{ClientInfo, Data, JsonText};

/// The part of a publish or signal that Rust builds: who, what, and when
/// (for latency). See the module docs for the layout.
pub(crate) fn encode_body(sent_us: u64, from: &ClientInfo, data: &Data) -> Vec<u8> {
    let (kind, bytes): (u8, &[u8]) = match data {
        Data::Json(json) => (b'J', json.as_str().as_bytes()),
        Data::Binary(bytes) => (b'B', bytes),
    };
    let mut out = Vec::with_capacity(48 + from.client.len() + from.user.len() + bytes.len());
    out.extend_from_slice(
        format!("{sent_us} {} {} ", from.client.len(), from.user.len()).as_bytes(),
    );
    out.push(kind);
    out.extend_from_slice(from.client.as_bytes());
    out.extend_from_slice(from.user.as_bytes());
    out.extend_from_slice(bytes);
    out
}

/// A decoded `body`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Body {
    /// The publishing node's wall clock at publish, in µs since the Unix epoch.
    pub(crate) sent_us: u64,
    /// Who sent it.
    pub(crate) from: ClientInfo,
    /// The data.
    pub(crate) data: Data,
}

/// Decodes a `body`; JSON data is validated (it crossed a process boundary).
pub(crate) fn decode_body(bytes: &[u8]) -> Option<Body> {
    let (sent_us, rest) = number(bytes)?;
    let (client_len, rest) = number(rest)?;
    let (user_len, rest) = number(rest)?;
    let (&kind, rest) = rest.split_first()?;
    let client_len = usize::try_from(client_len).ok()?;
    let user_len = usize::try_from(user_len).ok()?;
    let client = rest.get(..client_len)?;
    let user = rest.get(client_len..client_len.checked_add(user_len)?)?;
    let data = &rest[client_len + user_len..];
    let data = match kind {
        b'J' => Data::Json(JsonText::parse(std::str::from_utf8(data).ok()?).ok()?),
        b'B' => Data::Binary(Bytes::copy_from_slice(data)),
        _ => return None,
    };
    Some(Body {
        sent_us,
        from: ClientInfo {
            client: String::from_utf8(client.to_vec()).ok()?,
            user: String::from_utf8(user.to_vec()).ok()?,
        },
        data,
    })
}

/// A history entry, cut but not decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Entry<'a> {
    /// The message's offset.
    pub(crate) offset: u64,
    /// The hub's time of the publish (ms since the Unix epoch).
    pub(crate) time: u64,
    /// The `body`.
    pub(crate) body: &'a [u8],
}

/// Cuts a history `entry`.
pub(crate) fn parse_entry(bytes: &[u8]) -> Option<Entry<'_>> {
    let (offset, rest) = number(bytes)?;
    let (time, rest) = number(rest)?;
    let (key_len, rest) = number(rest)?;
    let body = rest.get(usize::try_from(key_len).ok()?..)?;
    Some(Entry { offset, time, body })
}

/// A pub/sub envelope, cut but not decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Envelope<'a> {
    /// A message of `epoch`.
    Message {
        /// The channel's epoch when it was published.
        epoch: &'a [u8],
        /// The history entry.
        entry: Entry<'a>,
    },
    /// A client subscribed (somewhere in the cluster).
    Join {
        /// Its id.
        client: &'a str,
        /// Its user.
        user: &'a str,
    },
    /// A client left (or its node died).
    Leave {
        /// Its id.
        client: &'a str,
        /// Its user.
        user: &'a str,
    },
    /// A signal: an undecoded `body`.
    Signal(&'a [u8]),
}

/// Cuts a pub/sub payload.
pub(crate) fn parse_envelope(bytes: &[u8]) -> Option<Envelope<'_>> {
    let (&kind, rest) = bytes.split_first()?;
    match kind {
        b'm' => {
            let space = rest.iter().position(|&b| b == b' ')?;
            let entry = parse_entry(&rest[space + 1..])?;
            Some(Envelope::Message {
                epoch: &rest[..space],
                entry,
            })
        }
        b'j' | b'l' => {
            let text = std::str::from_utf8(rest).ok()?;
            let (client, user) = text.split_once(' ')?;
            Some(if kind == b'j' {
                Envelope::Join { client, user }
            } else {
                Envelope::Leave { client, user }
            })
        }
        b's' => Some(Envelope::Signal(rest)),
        _ => None,
    }
}

/// A decimal number followed by one space, and what follows the space.
fn number(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let end = bytes.iter().position(|&b| b == b' ')?;
    if end == 0 || end > 20 {
        return None;
    }
    let mut value: u64 = 0;
    for &digit in &bytes[..end] {
        if !digit.is_ascii_digit() {
            return None;
        }
        value = value
            .checked_mul(10)?
            .checked_add(u64::from(digit - b'0'))?;
    }
    Some((value, &bytes[end + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> ClientInfo {
        ClientInfo {
            client: "0a1b2c3".into(),
            user: "alice smith".into(),
        }
    }

    #[test]
    fn bodies_round_trip_json_and_bytes() {
        for data in [
            Data::Json(JsonText::parse(r#"{"text":"hi there"}"#).unwrap()),
            Data::Binary(Bytes::from_static(b"\x00 1 2 \xff")),
            Data::Binary(Bytes::new()),
        ] {
            let body = encode_body(1_700_000_000_123_456, &alice(), &data);
            let decoded = decode_body(&body).expect("decodes");
            assert_eq!(decoded.sent_us, 1_700_000_000_123_456);
            assert_eq!(decoded.from, alice());
            assert_eq!(decoded.data, data);
        }
    }

    #[test]
    fn envelopes_as_the_scripts_build_them() {
        let body = encode_body(7, &alice(), &Data::Json(JsonText::parse("1").unwrap()));
        let key = "k 1";
        let mut entry = format!("42 1700000000000 {} {key}", key.len()).into_bytes();
        entry.extend_from_slice(&body);
        let mut message = b"mk3x9ab0 ".to_vec();
        message.extend_from_slice(&entry);
        match parse_envelope(&message) {
            Some(Envelope::Message { epoch, entry }) => {
                assert_eq!(epoch, b"k3x9ab0");
                assert_eq!((entry.offset, entry.time), (42, 1_700_000_000_000));
                assert_eq!(entry.body, &body[..]);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            parse_envelope(b"j0a1 alice smith"),
            Some(Envelope::Join {
                client: "0a1",
                user: "alice smith"
            })
        );
        assert_eq!(
            parse_envelope(b"l0a1 "),
            Some(Envelope::Leave {
                client: "0a1",
                user: ""
            })
        );
    }

    #[test]
    fn garbage_is_none_never_a_panic() {
        for bad in [
            &b""[..],
            b"m",
            b"mepoch",
            b"mepoch x 1 0 ",
            b"mepoch 1 2 99 short",
            b"x",
            b"j",
            b"jnospace",
        ] {
            assert!(parse_envelope(bad).is_none(), "{bad:?}");
        }
        for bad in [
            &b""[..],
            b"1 2 3 ",
            b"1 2 3 J",
            b"1 99 0 Jab",
            b"1 0 0 J{",
            b"1 0 0 X",
            b"99999999999999999999999 0 0 B",
        ] {
            assert!(decode_body(bad).is_none(), "{bad:?}");
        }
    }
}
