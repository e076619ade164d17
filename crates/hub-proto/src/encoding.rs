//! Which envelope a connection speaks: JSON (`duplex.v1`, the default, for
//! hand-written clients) or the binary envelope of [`crate::binary`]
//! (`duplex.v1.bin`), chosen by the WebSocket subprotocol the client offers.
//!
//! Both carry the same messages of protocol version 1 (`connected` says
//! `version: 1` on either); the subprotocol name carries the envelope, so a
//! later layout of the binary envelope is a new name.
//!
//! Invariants:
//! - The hub answers with the first subprotocol of the client's offer that
//!   it speaks ([`Encoding::negotiate`]), so the client says which it
//!   prefers.
//! - On a binary connection every message is a binary frame, both ways; a
//!   text frame is a `bad_request` like malformed JSON, and the connection
//!   goes on.

use bytes::Bytes;

use crate::codec::{DecodeError, Encoded, Frame};
use crate::message::{ErrorCode, Publication, Request, ServerMessage};

/// The WebSocket subprotocol of the binary envelope.
pub const SUBPROTOCOL_BINARY: &str = "duplex.v1.bin";

/// An envelope of the hub protocol.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// JSON text frames, binary frames for binary data (`duplex.v1`).
    #[default]
    Json,
    /// The binary envelope (`duplex.v1.bin`, [`crate::binary`]).
    Binary,
}

impl Encoding {
    /// Every envelope, the default first.
    pub const ALL: [Self; 2] = [Self::Json, Self::Binary];

    /// Its WebSocket subprotocol.
    pub fn subprotocol(self) -> &'static str {
        match self {
            Self::Json => crate::SUBPROTOCOL,
            Self::Binary => SUBPROTOCOL_BINARY,
        }
    }

    /// The envelope a subprotocol names, if it is one of the hub's.
    pub fn from_subprotocol(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.subprotocol() == name)
    }

    /// The first of the client's `offered` subprotocols that names an
    /// envelope, in the client's order.
    pub fn negotiate<'a>(offered: impl IntoIterator<Item = &'a str>) -> Option<Self> {
        offered.into_iter().find_map(Self::from_subprotocol)
    }

    /// Encodes a reply or push (the hub).
    pub fn encode_server(self, message: &ServerMessage) -> Encoded {
        match self {
            Self::Json => crate::codec::encode_server(message),
            Self::Binary => Encoded::Binary(crate::binary::encode_server(message)),
        }
    }

    /// Encodes a `message` push once for every subscriber on this envelope.
    pub fn encode_publication(self, publication: &Publication) -> Encoded {
        match self {
            Self::Json => crate::codec::encode_publication(publication),
            Self::Binary => Encoded::Binary(crate::binary::encode_publication(publication)),
        }
    }

    /// Encodes a command (a client).
    pub fn encode_command(self, request: &Request) -> Encoded {
        match self {
            Self::Json => crate::codec::encode_command(request),
            Self::Binary => Encoded::Binary(crate::binary::encode_command(request)),
        }
    }

    /// Decodes a command (the hub); binary data is copied.
    pub fn decode_command(self, frame: Frame<'_>) -> Result<Request, DecodeError> {
        match (self, frame) {
            (Self::Json, frame) => crate::codec::decode_command(frame),
            (Self::Binary, Frame::Binary(bytes)) => crate::binary::decode_command(bytes),
            (Self::Binary, Frame::Text(_)) => Err(text_refused()),
        }
    }

    /// Decodes a command from a binary frame, sharing its bytes for binary
    /// data (the hub's path).
    pub fn decode_binary_command(self, frame: &Bytes) -> Result<Request, DecodeError> {
        match self {
            Self::Json => crate::codec::decode_binary_command(frame),
            Self::Binary => crate::binary::decode_command_shared(frame),
        }
    }

    /// Decodes a reply or push (a client).
    pub fn decode_server(self, frame: Frame<'_>) -> Result<ServerMessage, DecodeError> {
        match (self, frame) {
            (Self::Json, frame) => crate::codec::decode_server(frame),
            (Self::Binary, Frame::Binary(bytes)) => crate::binary::decode_server(bytes),
            (Self::Binary, Frame::Text(_)) => Err(text_refused()),
        }
    }
}

/// A text frame on a binary connection.
fn text_refused() -> DecodeError {
    DecodeError::new(
        None,
        ErrorCode::BadRequest,
        format!("a {SUBPROTOCOL_BINARY} connection carries binary frames only"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Command;

    #[test]
    fn negotiation_follows_the_clients_order() {
        assert_eq!(Encoding::negotiate([]), None);
        assert_eq!(Encoding::negotiate(["chat", "duplex.v2"]), None);
        assert_eq!(
            Encoding::negotiate(["chat", "duplex.v1.bin", "duplex.v1"]),
            Some(Encoding::Binary)
        );
        assert_eq!(
            Encoding::negotiate(["duplex.v1", "duplex.v1.bin"]),
            Some(Encoding::Json)
        );
        for encoding in Encoding::ALL {
            assert_eq!(
                Encoding::from_subprotocol(encoding.subprotocol()),
                Some(encoding)
            );
        }
    }

    #[test]
    fn each_envelope_reads_what_it_writes_and_binary_refuses_text() {
        let ping = Request::new(3, Command::Ping);
        for encoding in Encoding::ALL {
            let frame = encoding.encode_command(&ping);
            assert_eq!(encoding.decode_command(frame.as_frame()), Ok(ping.clone()));
            let shared = frame.clone().into_bytes();
            if !frame.is_text() {
                assert_eq!(encoding.decode_binary_command(&shared), Ok(ping.clone()));
            }
            let pong = ServerMessage::Pong { id: Some(3) };
            let frame = encoding.encode_server(&pong);
            assert_eq!(encoding.decode_server(frame.as_frame()), Ok(pong));
        }
        let error = Encoding::Binary
            .decode_command(Frame::Text(r#"{"op":"ping","id":1}"#))
            .unwrap_err();
        assert_eq!((error.id, error.code), (None, ErrorCode::BadRequest));
        let error = Encoding::Binary
            .decode_server(Frame::Text(r#"{"op":"pong"}"#))
            .unwrap_err();
        assert_eq!(error.code, ErrorCode::BadRequest);
    }
}
