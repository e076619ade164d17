//! Between hub-protocol messages and WebSocket messages.
//!
//! Invariant: a hub message is encoded at most once per envelope however
//! many connections receive it. [`prepare`] makes a [`SharedMessage`] message
//! whose frame for each envelope ([`Encoding`]) is made the first time a
//! connection of that envelope takes it, then shared by all of them: a
//! publish to subscribers of both envelopes is encoded twice, to
//! subscribers of one envelope once, and never per subscriber. Likewise
//! with `[limits] compression = "shared"`: each envelope's frame is
//! compressed at most once per window size, by the first connection that
//! negotiated permessage-deflate to send it, and shared by the others
//! ([`PreparedMessage`]); outbox limits and the sent-bytes metric count the
//! plain frame, which a compressed one never exceeds.

use std::sync::{Arc, OnceLock};

use duplex::{Message, PreparedMessage};
use duplex_hub_proto::{Encoded, Encoding, Frame, Publication, ServerMessage};

/// A WebSocket message carrying `encoded`.
pub(crate) fn to_message(encoded: Encoded) -> Message {
    match encoded {
        Encoded::Text(text) => Message::text(text),
        Encoded::Binary(bytes) => Message::binary(bytes),
    }
}

/// A hub message to share among connections, with its frame in each
/// envelope made on first use (see the module docs). A clone is a
/// reference count.
#[derive(Clone, Debug)]
pub(crate) struct SharedMessage(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    message: ServerMessage,
    /// The frame in each envelope, in [`Encoding::ALL`]'s order.
    frames: [OnceLock<PreparedMessage>; 2],
}

impl SharedMessage {
    /// The frame for connections of `encoding`, encoded by the first caller.
    pub(crate) fn frame(&self, encoding: Encoding) -> &PreparedMessage {
        let slot = match encoding {
            Encoding::Json => 0,
            Encoding::Binary => 1,
        };
        self.0.frames[slot].get_or_init(|| {
            let encoded = match &self.0.message {
                ServerMessage::Message(publication) => encoding.encode_publication(publication),
                message => encoding.encode_server(message),
            };
            PreparedMessage::new(&to_message(encoded))
        })
    }

    /// What the message weighs, in bytes, without encoding it: for a
    /// `message`, the size of its JSON frame when its strings need no
    /// escape (what the in-memory history and the published-bytes metric
    /// count, whichever envelopes it is sent in); for anything else, its
    /// JSON frame's size.
    pub(crate) fn weight(&self) -> usize {
        /// The JSON of a `message` without its values: `{"op":"message",
        /// "channel":"","offset":,"time":,"from":{"user":"","client":""},
        /// "data":}`.
        const MESSAGE_KEYS: usize = 86;
        let ServerMessage::Message(p) = &self.0.message else {
            return self.frame(Encoding::Json).frame().len();
        };
        let digits = |n: u64| n.checked_ilog10().unwrap_or(0) as usize + 1;
        let payload = MESSAGE_KEYS
            + p.channel.len()
            + digits(p.offset)
            + digits(p.time)
            + p.from.user.len()
            + p.from.client.len()
            + p.data.len();
        let header = match payload {
            0..=125 => 2,
            126..=65_535 => 4,
            _ => 10,
        };
        header + payload
    }

    /// The message.
    pub(crate) fn message(&self) -> &ServerMessage {
        &self.0.message
    }

    /// A stand-in whose frame is `frame` in every envelope (tests).
    #[cfg(test)]
    pub(crate) fn of_frame(frame: PreparedMessage) -> Self {
        Self(Arc::new(Inner {
            message: ServerMessage::Pong { id: None },
            frames: [frame.clone().into(), frame.into()],
        }))
    }

    /// Whether its frame in `encoding` was made (tests: encoded at most
    /// once, lazily).
    #[cfg(test)]
    pub(crate) fn is_encoded(&self, encoding: Encoding) -> bool {
        self.0.frames[usize::from(encoding == Encoding::Binary)]
            .get()
            .is_some()
    }
}

/// `message`, to share among connections; encoded when first taken.
pub(crate) fn prepare(message: ServerMessage) -> SharedMessage {
    SharedMessage(Arc::new(Inner {
        message,
        frames: [OnceLock::new(), OnceLock::new()],
    }))
}

/// The publication a prepared `message` carries (a history entry of the
/// in-memory broker), for the server API's `history`; `None` for any other
/// message.
pub(crate) fn publication_of(shared: &SharedMessage) -> Option<Publication> {
    match shared.message() {
        ServerMessage::Message(publication) => Some(publication.clone()),
        _ => None,
    }
}

/// The hub-protocol view of a received WebSocket message.
pub(crate) fn frame_of(message: &Message) -> Frame<'_> {
    match message {
        Message::Text(text) => Frame::Text(text.as_str()),
        Message::Binary(bytes) => Frame::Binary(bytes),
    }
}

#[cfg(test)]
mod tests {
    use duplex_hub_proto::{ClientInfo, Data};

    use super::*;

    #[test]
    fn a_prepared_message_reads_back_as_its_publication() {
        for data in [
            Data::json(&serde_json::json!({"text": "hi"})),
            Data::json(&serde_json::json!("x".repeat(70_000))),
            Data::Binary(vec![1u8; 300].into()),
        ] {
            let publication = Publication {
                channel: "chat:lobby".into(),
                offset: 7,
                time: 1,
                from: ClientInfo {
                    client: "c1".into(),
                    user: "ada".into(),
                },
                data,
            };
            let prepared = prepare(ServerMessage::Message(publication.clone()));
            assert_eq!(publication_of(&prepared), Some(publication));
        }
        assert_eq!(
            publication_of(&prepare(ServerMessage::Pong { id: None })),
            None
        );
    }

    #[test]
    fn each_envelope_is_encoded_once_when_first_taken() {
        let shared = prepare(ServerMessage::Gap {
            channel: "a".into(),
            epoch: "e".into(),
            offset: 3,
        });
        assert!(!shared.is_encoded(Encoding::Json) && !shared.is_encoded(Encoding::Binary));
        let clone = shared.clone();
        let binary = shared.frame(Encoding::Binary).frame().clone();
        assert!(
            !shared.is_encoded(Encoding::Json),
            "JSON not made for nobody"
        );
        // The same bytes for every taker: one encoding, shared.
        assert_eq!(
            clone.frame(Encoding::Binary).frame().as_ptr(),
            binary.as_ptr()
        );
        // A binary frame (opcode 2), its payload the binary envelope.
        assert_eq!(binary[0] & 0x0f, 2);
        assert_eq!(
            &binary[2..],
            duplex_hub_proto::binary::encode_server(shared.message())
        );
        let json = clone.frame(Encoding::Json).frame();
        assert_eq!(json[0] & 0x0f, 1);
        assert_eq!(
            &json[2..],
            br#"{"op":"gap","channel":"a","epoch":"e","offset":3}"#
        );
    }
}
