//! Peers that ping faster than they read. Every test runs on loopback,
//! bounded in time.

use std::future::poll_fn;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Poll;
use std::time::Duration;

use duplex::websocket::MAX_PINGS_UNREAD;
use duplex::{Accept, CloseCode, Config, WebSocket};
use duplex_proto::connection::PONG_BURST;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(20);

/// The masking key of every frame the raw clients send.
const KEY: [u8; 4] = [0x12, 0x34, 0x56, 0x78];

/// A masked frame as a client sends it (payload under 126 bytes).
fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 126);
    let mut frame = vec![0x80 | opcode, 0x80 | payload.len() as u8];
    frame.extend_from_slice(&KEY);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ KEY[i % 4]));
    frame
}

/// Accepts one connection with a 64 KiB send buffer on our side, so that
/// what the peer does not read stays in the `WebSocket`.
async fn accept_small(listener: &TcpListener, config: &Config) -> WebSocket<TcpStream> {
    let (tcp, _) = listener.accept().await.unwrap();
    socket2::SockRef::from(&tcp)
        .set_send_buffer_size(64 << 10)
        .unwrap();
    duplex::accept_with(tcp, config, |_| Ok(Accept::default()))
        .await
        .unwrap()
}

/// A raw client with a small receive buffer (4 KiB asked): what it does not
/// read stays on the server's side. Returns it after the handshake.
async fn raw_client(addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4 << 10).unwrap();
    let mut tcp = socket.connect(addr).await.unwrap();
    tcp.write_all(
        b"GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        tcp.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "{head:?}");
    tcp
}

/// Reads one unmasked frame from a server: opcode and payload.
async fn read_frame(tcp: &mut TcpStream) -> (u8, Vec<u8>) {
    let mut head = [0u8; 2];
    tcp.read_exact(&mut head).await.unwrap();
    let len = match head[1] & 0x7F {
        126 => u64::from(tcp.read_u16().await.unwrap()),
        127 => tcp.read_u64().await.unwrap(),
        n => u64::from(n),
    };
    let mut payload = vec![0u8; len as usize];
    tcp.read_exact(&mut payload).await.unwrap();
    (head[0] & 0x0F, payload)
}

/// A loopback listener and its address.
async fn listen() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

#[tokio::test]
async fn a_ping_flood_from_a_peer_that_does_not_read_is_bounded_then_closed_with_1008() {
    let (listener, addr) = listen().await;
    let max_buffered = Arc::new(AtomicUsize::new(0));
    let max = max_buffered.clone();
    let server = tokio::spawn(async move {
        let mut ws = accept_small(&listener, &Config::default()).await;
        // Poll the stream, noting what is queued after every poll; give up
        // once the queue is far past any bound.
        let item = poll_fn(|cx| {
            let item = ws.poll_next_unpin(cx);
            let buffered = ws.buffered_amount();
            max.fetch_max(buffered, Ordering::Relaxed);
            if buffered > 8 << 20 {
                return Poll::Ready(None);
            }
            item
        })
        .await;
        (
            item.map(|r| r.map_err(|e| e.to_string())),
            ws.close_info().cloned(),
        )
    });
    let mut client = raw_client(addr).await;
    // 200,000 pings of 125 bytes (26 MB), never reading a byte.
    let pings = 200_000;
    let writer = tokio::spawn(async move {
        let mut batch = Vec::new();
        for i in 0..1000 {
            batch.extend(client_frame(0x9, format!("{i:0>125}").as_bytes()));
        }
        for _ in 0..pings / 1000 {
            if client.write_all(&batch).await.is_err() {
                break;
            }
        }
        client
    });
    let (item, info) = timeout(LIMIT, server).await.unwrap().unwrap();
    let max_buffered = max_buffered.load(Ordering::Relaxed);
    eprintln!("most queued for the flooding peer: {max_buffered} bytes");
    // What input alone may make the server queue: the automatic pongs of a
    // burst plus one (2 + 125 bytes each) and the close frame.
    let bound = (PONG_BURST + 1) * 127 + 64;
    assert!(
        max_buffered <= bound,
        "the server queued up to {max_buffered} bytes for a peer that does not read (bound {bound})"
    );
    let flood = format!("peer sent more than {MAX_PINGS_UNREAD} pings without reading our answers");
    assert_eq!(item, Some(Err(flood)));
    let info = info.expect("ended");
    assert_eq!(info.code, CloseCode::POLICY_VIOLATION);
    assert!(!info.was_clean);
    writer.abort();
}

#[tokio::test]
async fn a_peer_that_reads_gets_its_pongs_and_is_not_cut_off() {
    let (listener, addr) = listen().await;
    let server = tokio::spawn(async move {
        let mut ws = accept_small(&listener, &Config::default()).await;
        // Echo until the client closes.
        while let Some(Ok(message)) = ws.next().await {
            ws.send(message).await.unwrap();
        }
        ws.close_info().cloned()
    });
    let mut client = raw_client(addr).await;
    // Ten pings at once (Autobahn|Testsuite 2.10): ten pongs, in order.
    let mut burst = Vec::new();
    for i in 0..10 {
        burst.extend(client_frame(0x9, format!("payload-{i}").as_bytes()));
    }
    client.write_all(&burst).await.unwrap();
    for i in 0..10 {
        let frame = timeout(LIMIT, read_frame(&mut client)).await.unwrap();
        assert_eq!(frame, (0xA, format!("payload-{i}").into_bytes()));
    }
    // Far more pings than the flood limit, from a peer that reads: the
    // latest is answered, every pong answers a ping, in order, and the
    // connection stays open.
    let (mut read, mut write) = client.into_split();
    let count = 4 * MAX_PINGS_UNREAD as usize;
    let sender = tokio::spawn(async move {
        let mut pings = Vec::new();
        for i in 0..count {
            pings.extend(client_frame(0x9, format!("{i}").as_bytes()));
        }
        pings.extend(client_frame(0x1, b"after the pings"));
        write.write_all(&pings).await.unwrap();
        write
    });
    let mut pongs = Vec::new();
    loop {
        let mut head = [0u8; 2];
        timeout(LIMIT, read.read_exact(&mut head))
            .await
            .unwrap()
            .unwrap();
        let mut payload = vec![0u8; usize::from(head[1] & 0x7F)];
        read.read_exact(&mut payload).await.unwrap();
        match head[0] & 0x0F {
            0xA => pongs.push(
                String::from_utf8(payload)
                    .unwrap()
                    .parse::<usize>()
                    .unwrap(),
            ),
            0x1 => {
                assert_eq!(payload, b"after the pings");
                break;
            }
            other => panic!("unexpected opcode {other:#x}"),
        }
    }
    assert!(pongs.windows(2).all(|w| w[0] < w[1]), "pongs in order");
    assert_eq!(
        pongs.last(),
        Some(&(count - 1)),
        "the latest ping is answered"
    );
    let mut write = sender.await.unwrap();
    write
        .write_all(&client_frame(0x8, &1000u16.to_be_bytes()))
        .await
        .unwrap();
    let info = timeout(LIMIT, server)
        .await
        .unwrap()
        .unwrap()
        .expect("ended");
    assert_eq!((info.code, info.was_clean), (CloseCode::NORMAL, true));
}
