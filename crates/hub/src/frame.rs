//! Between hub-protocol messages and WebSocket messages.
//!
//! Invariant: a hub message is encoded exactly once however many
//! connections receive it ([`prepare`] makes the shared frame).

use duplex::{Message, PreparedMessage};
use duplex_hub_proto::{Encoded, Frame, ServerMessage, encode_server};

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

/// The hub-protocol view of a received WebSocket message.
pub(crate) fn frame_of(message: &Message) -> Frame<'_> {
    match message {
        Message::Text(text) => Frame::Text(text.as_str()),
        Message::Binary(bytes) => Frame::Binary(bytes),
    }
}
