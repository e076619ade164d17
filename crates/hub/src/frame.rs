//! Between hub-protocol messages and WebSocket messages.
//!
//! Invariant: a hub message is encoded exactly once however many
//! connections receive it ([`prepare`] makes the shared frame).

use duplex::{Message, PreparedMessage};
use duplex_hub_proto::{Encoded, Frame, Publication, ServerMessage, decode_server, encode_server};

/// A WebSocket message carrying `encoded`.
pub(crate) fn to_message(encoded: Encoded) -> Message {
    match encoded {
        Encoded::Text(text) => Message::text(text),
        Encoded::Binary(bytes) => Message::binary(bytes),
    }
}

/// `message`, encoded once as a frame to share among connections.
pub(crate) fn prepare(message: &ServerMessage) -> PreparedMessage {
    PreparedMessage::new(&to_message(encode_server(message)))
}

/// The publication a prepared `message` frame carries (a history entry of
/// the in-memory broker), read back for the server API's `history`; `None`
/// for any other frame. A prepared frame is one unmasked, uncompressed
/// data frame: a 2-byte header, then a 16- or 64-bit length when the
/// 7-bit one says 126 or 127.
pub(crate) fn publication_of(prepared: &PreparedMessage) -> Option<Publication> {
    let frame = prepared.frame();
    let (opcode, len7) = (frame.first()? & 0x0f, frame.get(1)? & 0x7f);
    let start = match len7 {
        126 => 4,
        127 => 10,
        _ => 2,
    };
    let payload = frame.get(start..)?;
    let frame = match opcode {
        1 => Frame::Text(std::str::from_utf8(payload).ok()?),
        2 => Frame::Binary(payload),
        _ => return None,
    };
    match decode_server(frame) {
        Ok(ServerMessage::Message(publication)) => Some(publication),
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
            let prepared = prepare(&ServerMessage::Message(publication.clone()));
            assert_eq!(publication_of(&prepared), Some(publication));
        }
        assert_eq!(
            publication_of(&prepare(&ServerMessage::Pong { id: None })),
            None
        );
    }
}
