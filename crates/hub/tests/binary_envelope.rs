//! The binary envelope (`duplex.v1.bin`) end to end: negotiated by
//! subprotocol in the client's order, every reply and push of a binary
//! connection in binary frames, JSON and binary subscribers of one channel
//! each getting the same message in their own envelope, bad frames answered
//! like bad JSON, and a delivered 100-byte message costing at most 130 bytes
//! on the wire.

mod common;

use common::{TestClient, TestHub, WAIT};
use duplex::client::ClientRequest;
use duplex::{Config, Message};
use duplex_hub::HubConfig;
use duplex_hub_proto::{
    Command, Data, Encoding, ErrorCode, Publication, SUBPROTOCOL, SUBPROTOCOL_BINARY,
    ServerMessage, binary,
};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;

/// The subprotocol the hub answers to an offer of `protocols`.
async fn answered(hub: &TestHub, protocols: &[&str]) -> Result<Option<String>, duplex::Error> {
    let request = protocols
        .iter()
        .fold(ClientRequest::new(hub.url()), |r, p| r.protocol(*p));
    let ws = tokio::time::timeout(WAIT, duplex::connect_with(&request, &Config::client()))
        .await
        .expect("in time")?;
    Ok(ws.protocol().map(str::to_owned))
}

#[tokio::test]
async fn the_hub_answers_the_first_envelope_of_the_clients_offer() {
    let hub = TestHub::start(HubConfig::default()).await;
    for (offer, answer) in [
        (&[SUBPROTOCOL_BINARY][..], SUBPROTOCOL_BINARY),
        (&[SUBPROTOCOL][..], SUBPROTOCOL),
        (
            &["chat", SUBPROTOCOL_BINARY, SUBPROTOCOL][..],
            SUBPROTOCOL_BINARY,
        ),
        (&[SUBPROTOCOL, SUBPROTOCOL_BINARY][..], SUBPROTOCOL),
    ] {
        let got = answered(&hub, offer).await.expect("accepted");
        assert_eq!(got.as_deref(), Some(answer), "{offer:?}");
    }
    let refused = answered(&hub, &["duplex.v1.zip"])
        .await
        .expect_err("refused");
    assert!(refused.to_string().contains("400"), "{refused}");
}

/// The next raw WebSocket message of `client`.
async fn raw(client: &mut TestClient) -> Message {
    tokio::time::timeout(WAIT, client.ws.next())
        .await
        .expect("in time")
        .expect("open")
        .expect("a message")
}

#[tokio::test]
async fn subscribers_of_both_envelopes_get_the_same_message_in_their_own() {
    let hub = TestHub::start(HubConfig::default()).await;
    let mut bin = hub.client_in(Encoding::Binary).await;
    let mut text = hub.client().await;
    assert_eq!(
        (bin.encoding, text.encoding),
        (Encoding::Binary, Encoding::Json)
    );
    for client in [&mut bin, &mut text] {
        let reply = client.subscribe("chat:lobby").await;
        assert!(
            matches!(reply, ServerMessage::Subscribed { .. }),
            "{reply:?}"
        );
    }
    // A binary publisher: JSON data, then bytes.
    let mut publisher = hub.client_in(Encoding::Binary).await;
    let reply = publisher.publish("chat:lobby", json!({"text": "hi"})).await;
    assert!(
        matches!(reply, ServerMessage::Published { offset: 1, .. }),
        "{reply:?}"
    );
    let bytes = Data::Binary(vec![0u8, 1, 255].into());
    let reply = publisher
        .call(Command::Publish {
            channel: "chat:lobby".into(),
            data: bytes.clone(),
            key: None,
        })
        .await;
    assert!(
        matches!(reply, ServerMessage::Published { offset: 2, .. }),
        "{reply:?}"
    );
    let mut got = Vec::new();
    for client in [&mut bin, &mut text] {
        let mut messages = Vec::new();
        while messages.len() < 2 {
            let message = raw(client).await;
            let frame = match &message {
                Message::Text(t) => duplex_hub_proto::Frame::Text(t.as_str()),
                Message::Binary(b) => duplex_hub_proto::Frame::Binary(b),
            };
            // A binary connection gets binary frames only; JSON data goes to
            // a JSON connection as text.
            match client.encoding {
                Encoding::Binary => assert!(matches!(message, Message::Binary(_))),
                Encoding::Json => {}
            }
            // (`join` pushes of the others come too.)
            match client.encoding.decode_server(frame).expect("valid") {
                ServerMessage::Join { .. } => {}
                message => messages.push(message),
            }
        }
        got.push(messages);
    }
    assert_eq!(got[0], got[1], "the same messages in both envelopes");
    let ServerMessage::Message(Publication { data, from, .. }) = &got[0][1] else {
        panic!("{:?}", got[0]);
    };
    assert_eq!(
        (data, from.client.as_str()),
        (&bytes, publisher.client_id.as_str())
    );
}

#[tokio::test]
async fn bad_binary_frames_are_answered_like_bad_json_and_the_connection_goes_on() {
    let hub = TestHub::start(HubConfig::default()).await;
    let mut client = hub.client_in(Encoding::Binary).await;
    for (frame, id, code) in [
        // An unknown tag, with the id that follows every command's tag.
        (
            Message::binary(vec![0x3f, 0x08]),
            Some(7),
            ErrorCode::UnknownOp,
        ),
        // Bytes after a ping.
        (
            Message::binary(vec![0x08, 0x08, 0xff]),
            Some(7),
            ErrorCode::BadRequest,
        ),
        // An invalid channel.
        (
            Message::binary(vec![0x03, 0x0a, 0x04, b'a', b' ', 0, 0]),
            Some(9),
            ErrorCode::BadRequest,
        ),
        // JSON on a binary connection.
        (
            Message::text(r#"{"op":"ping","id":5}"#.to_owned()),
            None,
            ErrorCode::BadRequest,
        ),
    ] {
        client.ws.send(frame).await.expect("send");
        match client.recv().await {
            ServerMessage::Error {
                id: got, code: c, ..
            } => assert_eq!((got, c), (id, code)),
            other => panic!("{other:?}"),
        }
    }
    let reply = client.call(Command::Ping).await;
    assert!(matches!(reply, ServerMessage::Pong { .. }), "{reply:?}");
}

/// The bytes a server-to-client frame of `payload` bytes takes on the wire:
/// the payload, a 2-byte header, 2 more from 126 bytes, 8 more from 64 KiB.
fn on_the_wire(payload: usize) -> usize {
    payload
        + match payload {
            0..=125 => 2,
            126..=65_535 => 4,
            _ => 10,
        }
}

#[tokio::test]
async fn a_delivered_100_byte_message_costs_at_most_130_bytes_in_binary() {
    let hub = TestHub::start(HubConfig::default()).await;
    let text = format!("{{\"text\":\"{}\"}}", "x".repeat(89));
    assert_eq!(text.len(), 100);
    let mut sizes = Vec::new();
    for encoding in Encoding::ALL {
        let mut subscriber = hub.client_in(encoding).await;
        subscriber.subscribe("chat:lobby").await;
        let mut publisher = hub.client().await;
        publisher
            .publish("chat:lobby", serde_json::from_str(&text).unwrap())
            .await;
        let message = raw(&mut subscriber).await;
        let decoded = encoding
            .decode_server(match &message {
                Message::Text(t) => duplex_hub_proto::Frame::Text(t.as_str()),
                Message::Binary(b) => duplex_hub_proto::Frame::Binary(b),
            })
            .unwrap();
        let ServerMessage::Message(publication) = &decoded else {
            panic!("{decoded:?}")
        };
        assert_eq!(publication.data.len(), 100);
        if encoding == Encoding::Binary {
            assert_eq!(
                message.payload()[..],
                binary::encode_publication(publication)
            );
        }
        sizes.push(on_the_wire(message.payload().len()));
    }
    eprintln!(
        "a 100-byte message on the wire: JSON {} bytes, binary {} bytes",
        sizes[0], sizes[1]
    );
    assert!(sizes[1] <= 130, "{sizes:?}");
    assert!(sizes[0] > 200, "{sizes:?}");
}
