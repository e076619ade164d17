//! The message limit (16 MiB by default) over real sockets, in both roles,
//! with and without permessage-deflate: a message of exactly the limit
//! arrives, one byte more closes with 1009. Incompressible data grows when
//! deflated, so the compressed frame of a message at the limit is larger
//! than the limit: it must pass all the same. Every test runs on loopback,
//! bounded in time.

use std::time::Duration;

use duplex::{Accept, ClientRequest, CloseCode, Config, Error, Message, WebSocket};
use duplex_proto::ProtocolError;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(120);

/// The default message limit.
const MAX: usize = 16 << 20;

/// `len` bytes deflate cannot shrink (xorshift64).
fn noise(len: usize) -> Message {
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    Message::binary(out)
}

/// What the receiving side saw: the message, or the error's close code.
#[derive(Debug, PartialEq)]
enum Received {
    Message(Message),
    Failed(CloseCode),
}

/// Receives one message; on a protocol error, drives the stream to its end
/// (which writes our close frame) and reports the error's code.
async fn receive<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocket<S>) -> Received {
    match ws.next().await {
        Some(Ok(message)) => Received::Message(message),
        Some(Err(Error::Protocol(error))) => {
            assert!(
                matches!(
                    error,
                    ProtocolError::MessageTooLarge { limit: MAX }
                        | ProtocolError::FrameTooLarge { limit: MAX, .. }
                ),
                "{error:?}"
            );
            while ws.next().await.is_some() {}
            Received::Failed(error.close_code())
        }
        other => panic!("expected a message or a protocol error, got {other:?}"),
    }
}

/// Sends `len` bytes of noise from one end to the other over loopback, the
/// server sending when `server_sends`; both ends with the default limits,
/// compression negotiated (with context takeover, so that the sender sends
/// the compressed form even when larger) or not. Returns what the receiver
/// saw and the close code the sender saw.
async fn transfer(server_sends: bool, compressed: bool, len: usize) -> (Received, CloseCode) {
    let (server_config, client_config) = if compressed {
        (Config::default(), Config::client())
    } else {
        (
            Config::default().without_compression(),
            Config::client().without_compression(),
        )
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut ws = duplex::accept_with(tcp, &server_config, |_| Ok(Accept::default()))
            .await
            .unwrap();
        assert_eq!(ws.connection().deflate_params().is_some(), compressed);
        if server_sends {
            // An uncompressed frame over the limit is refused at its header:
            // the client closes while we still send, and the send may fail.
            let _ = ws.send(noise(len)).await;
            // The client closes either way; read until it has.
            while ws.next().await.is_some() {}
            (None, ws.close_info().map(|info| info.code))
        } else {
            let received = receive(&mut ws).await;
            if matches!(received, Received::Message(_)) {
                ws.close(CloseCode::NORMAL, "").await.unwrap();
            }
            (Some(received), None)
        }
    });
    let mut ws = duplex::connect_with(&ClientRequest::new(&url), &client_config)
        .await
        .unwrap();
    assert_eq!(ws.connection().deflate_params().is_some(), compressed);
    let (received, sender_saw) = if server_sends {
        let received = receive(&mut ws).await;
        if matches!(received, Received::Message(_)) {
            ws.close(CloseCode::NORMAL, "").await.unwrap();
        }
        drop(ws);
        let (_, code) = server.await.unwrap();
        (received, code)
    } else {
        let _ = ws.send(noise(len)).await;
        while ws.next().await.is_some() {}
        let (received, _) = server.await.unwrap();
        (received.unwrap(), ws.close_info().map(|info| info.code))
    };
    (received, sender_saw.expect("the connection ended"))
}

/// At the limit: the message arrives whole; one byte over: 1009 (on both
/// ends when compressed: the receiver inflates the frame as it arrives and
/// fails at its end, so the sender has sent it all and reads the close; an
/// uncompressed frame over the limit is refused at its header, while the
/// sender may still be writing it).
async fn limit_is_exact(server_sends: bool, compressed: bool) {
    let (received, code) = timeout(LIMIT, transfer(server_sends, compressed, MAX))
        .await
        .unwrap();
    assert_eq!(received, Received::Message(noise(MAX)), "at the limit");
    assert_eq!(code, CloseCode::NORMAL);
    let (received, code) = timeout(LIMIT, transfer(server_sends, compressed, MAX + 1))
        .await
        .unwrap();
    assert_eq!(received, Received::Failed(CloseCode::MESSAGE_TOO_BIG));
    if compressed {
        assert_eq!(code, CloseCode::MESSAGE_TOO_BIG, "the sender is told 1009");
    }
}

#[tokio::test]
async fn server_receives_a_compressed_message_of_exactly_the_limit() {
    limit_is_exact(false, true).await;
}

#[tokio::test]
async fn client_receives_a_compressed_message_of_exactly_the_limit() {
    limit_is_exact(true, true).await;
}

#[tokio::test]
async fn server_receives_an_uncompressed_message_of_exactly_the_limit() {
    limit_is_exact(false, false).await;
}

#[tokio::test]
async fn client_receives_an_uncompressed_message_of_exactly_the_limit() {
    limit_is_exact(true, false).await;
}
