//! permessage-deflate on hub connections (`[limits] compression`): with
//! `shared`, a client that offers the extension as browsers do gets it
//! without context takeover either way, and its deliveries of messages worth
//! compressing arrive compressed (RSV1) and decode to what a client without
//! the extension receives plain; with `off` (the default) the extension is
//! declined and every frame goes plain.

mod common;

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use common::{TestHub, WAIT};
use duplex::client::ClientRequest;
use duplex::{Config, Message, WebSocket};
use duplex_hub::HubConfig;
use duplex_hub::config::Compression;
use duplex_hub_proto::{
    Command, Data, Encoded, Encoding, Frame, Publication, Request, SUBPROTOCOL, ServerMessage,
};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A transport that keeps every byte it read.
struct Tap {
    inner: TcpStream,
    read: Arc<Mutex<Vec<u8>>>,
}

impl AsyncRead for Tap {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        let new = buf.filled()[before..].to_vec();
        self.read.lock().unwrap().extend(new);
        poll
    }
}

impl AsyncWrite for Tap {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// One frame as read from the wire: RSV1, opcode, payload length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RawFrame {
    rsv1: bool,
    opcode: u8,
    len: usize,
}

/// A hub client whose received bytes are kept, to look at the frames.
struct Tapped {
    ws: WebSocket<Tap>,
    read: Arc<Mutex<Vec<u8>>>,
    next_id: u64,
}

impl Tapped {
    /// Opens a WebSocket to `hub` with `config` (whose `deflate` makes the
    /// offer), then `connect`s and subscribes to `channel`.
    async fn open(hub: &TestHub, config: &Config, channel: &str) -> Self {
        let tcp = TcpStream::connect(hub.addr).await.expect("connect");
        let read = Arc::new(Mutex::new(Vec::new()));
        let tap = Tap {
            inner: tcp,
            read: read.clone(),
        };
        let request = ClientRequest::new(hub.url()).protocol(SUBPROTOCOL);
        let ws = tokio::time::timeout(WAIT, duplex::client_handshake(tap, &request, config))
            .await
            .expect("in time")
            .expect("handshake");
        let mut client = Self {
            ws,
            read,
            next_id: 1,
        };
        client
            .call(Command::Connect {
                token: None,
                name: None,
            })
            .await;
        client
            .call(Command::Subscribe {
                channel: channel.to_owned(),
                since: None,
                recent: 0,
                token: None,
            })
            .await;
        client
    }

    /// The response's `Sec-WebSocket-Extensions`, if any.
    fn extensions(&self) -> Option<String> {
        let read = self.read.lock().unwrap();
        let end = read
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("head");
        String::from_utf8_lossy(&read[..end])
            .lines()
            .filter_map(|line| line.split_once(':'))
            .find(|(key, _)| key.eq_ignore_ascii_case("sec-websocket-extensions"))
            .map(|(_, value)| value.trim().to_owned())
    }

    /// Every frame read so far, after the response head.
    fn frames(&self) -> Vec<RawFrame> {
        let read = self.read.lock().unwrap();
        let start = read
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("head")
            + 4;
        let mut rest = &read[start..];
        let mut frames = Vec::new();
        while rest.len() >= 2 {
            assert_eq!(rest[1] & 0x80, 0, "the hub does not mask");
            let (len, head) = match rest[1] & 0x7f {
                126 => (usize::from(u16::from_be_bytes([rest[2], rest[3]])), 4),
                127 => (
                    usize::try_from(u64::from_be_bytes(rest[2..10].try_into().unwrap())).unwrap(),
                    10,
                ),
                n => (usize::from(n), 2),
            };
            if rest.len() < head + len {
                break;
            }
            frames.push(RawFrame {
                rsv1: rest[0] & 0x40 != 0,
                opcode: rest[0] & 0x0f,
                len,
            });
            rest = &rest[head + len..];
        }
        frames
    }

    async fn send(&mut self, command: Command) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let Encoded::Text(text) = Encoding::Json.encode_command(&Request {
            id: Some(id),
            command,
        }) else {
            panic!("JSON is text");
        };
        self.ws.send(Message::text(text)).await.expect("send");
        id
    }

    async fn recv(&mut self) -> ServerMessage {
        let message = tokio::time::timeout(WAIT, self.ws.next())
            .await
            .expect("in time")
            .expect("open")
            .expect("a message");
        let Message::Text(text) = &message else {
            panic!("binary from a JSON connection: {message:?}");
        };
        duplex_hub_proto::decode_server(Frame::Text(text.as_str())).expect("valid")
    }

    /// Sends `command` and waits for its reply.
    async fn call(&mut self, command: Command) -> ServerMessage {
        let id = self.send(command).await;
        loop {
            let message = self.recv().await;
            if let ServerMessage::Error { .. } = message {
                panic!("{message:?}");
            }
            if message.id() == Some(id) {
                return message;
            }
        }
    }

    /// The next publication pushed on the connection.
    async fn publication(&mut self) -> Publication {
        loop {
            if let ServerMessage::Message(publication) = self.recv().await {
                return publication;
            }
        }
    }
}

/// A chat message of about 1 KiB of JSON text, the kind deflate shrinks.
fn chat_message() -> serde_json::Value {
    let text = "the build on main is green again; the flaky drain test was a timing \
                assumption, fixed by measuring from the stop. next up: the release notes";
    json!({
        "type": "message",
        "room": "engineering",
        "messages": (0..5).map(|i| json!({
            "id": format!("m-{i:04}"),
            "user": {"id": "u-1042", "name": "Ada Lovelace", "avatar": "https://example.com/a/1042.png"},
            "text": text,
            "reactions": {"thumbs_up": i, "eyes": 1},
        })).collect::<Vec<_>>(),
    })
}

/// A publication's JSON data.
fn value(publication: &Publication) -> serde_json::Value {
    match &publication.data {
        Data::Json(text) => text.to_value().expect("JSON"),
        other => panic!("not JSON: {other:?}"),
    }
}

fn hub_config(compression: Compression) -> HubConfig {
    let mut config = HubConfig::default();
    config.limits.compression = compression;
    config
}

#[tokio::test]
async fn shared_compression_sends_compressed_deliveries_to_deflate_clients() {
    let hub = TestHub::start(hub_config(Compression::Shared)).await;
    // Offers `permessage-deflate; client_max_window_bits`, as Chromium does.
    let mut deflating = Tapped::open(&hub, &Config::client(), "chat:z").await;
    let mut plain = Tapped::open(&hub, &Config::client().without_compression(), "chat:z").await;
    assert_eq!(
        deflating.extensions().as_deref(),
        Some(
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
             server_max_window_bits=12; client_max_window_bits=12"
        )
    );
    assert_eq!(plain.extensions(), None);

    let mut publisher = hub.client().await;
    let big = chat_message();
    let small = json!({"text": "hi"});
    for data in [&big, &small, &big] {
        publisher.publish("chat:z", data.clone()).await;
    }
    for data in [&big, &small, &big] {
        let got = deflating.publication().await;
        assert_eq!(got, plain.publication().await, "the same message");
        assert_eq!(value(&got), *data);
    }

    // The last three frames of each are the deliveries.
    let (compressed, uncompressed) = (deflating.frames(), plain.frames());
    let compressed = &compressed[compressed.len() - 3..];
    let uncompressed = &uncompressed[uncompressed.len() - 3..];
    assert!(uncompressed.iter().all(|f| !f.rsv1 && f.opcode == 1));
    assert!(compressed[0].rsv1 && compressed[2].rsv1, "{compressed:?}");
    assert!(
        compressed[0].len * 3 < uncompressed[0].len,
        "a third or less: {} vs {}",
        compressed[0].len,
        uncompressed[0].len
    );
    // Each compressed alone: the second copy is no smaller for following
    // the first (it differs only in its offset and time).
    assert!(
        compressed[0].len.abs_diff(compressed[2].len) <= 8,
        "each compressed alone: {compressed:?}"
    );
    // Under the 128-byte threshold: plain for both.
    assert_eq!(compressed[1], uncompressed[1]);
    drop((deflating, plain, publisher));
    hub.stop().await;
}

#[tokio::test]
async fn compression_off_declines_the_extension() {
    assert_eq!(HubConfig::default().limits.compression, Compression::Off);
    let hub = TestHub::start(HubConfig::default()).await;
    let mut deflating = Tapped::open(&hub, &Config::client(), "chat:z").await;
    assert_eq!(deflating.extensions(), None, "declined");
    let mut publisher = hub.client().await;
    publisher.publish("chat:z", chat_message()).await;
    assert_eq!(value(&deflating.publication().await), chat_message());
    assert!(deflating.frames().iter().all(|f| !f.rsv1));
    drop((deflating, publisher));
    hub.stop().await;
}

#[test]
fn the_setting_reads_from_toml() {
    for (text, expected) in [
        ("", Compression::Off),
        ("[limits]\ncompression = \"off\"", Compression::Off),
        ("[limits]\ncompression = \"shared\"", Compression::Shared),
    ] {
        let config: HubConfig = toml::from_str(text).expect(text);
        assert_eq!(config.limits.compression, expected, "{text}");
    }
    assert!(toml::from_str::<HubConfig>("[limits]\ncompression = \"yes\"").is_err());
    assert_eq!(
        "shared".parse::<Compression>().ok(),
        Some(Compression::Shared)
    );
    assert!("on".parse::<Compression>().is_err());
}
