//! The message parsers the `parse` benchmark compares, shared with the
//! `parse_instructions` example: duplex-proto's `Connection` and four peer
//! crates, each reading the same in-memory stream of masked frames as a
//! server and counting the text messages in it.
//!
//! Each parser is built once and reused: [`BatchParser::parse_batch`] rewinds
//! its stream and reads one batch (exactly `count` messages) from it.

use std::cell::Cell;
use std::hint::black_box;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use duplex_proto::connection::{Config, Connection, Event};
use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::runtime::Runtime;

/// The names of the parsers, in the order [`parsers`] builds them.
pub(crate) const NAMES: [&str; 5] = [
    "duplex",
    "tungstenite",
    "tokio_tungstenite",
    "tokio_websockets",
    "fastwebsockets",
];

/// An in-memory transport that replays `data` from `pos` and discards
/// writes. Clones share the position, so the benchmark can rewind a stream a
/// parser owns.
#[derive(Clone)]
pub(crate) struct Replay {
    data: Rc<[u8]>,
    pos: Rc<Cell<usize>>,
}

impl Replay {
    pub(crate) fn new(data: &[u8]) -> Self {
        Self {
            data: data.into(),
            pos: Rc::new(Cell::new(0)),
        }
    }

    pub(crate) fn rewind(&self) {
        self.pos.set(0);
    }

    /// Copies the next bytes into `dst`; returns how many (0 at the end).
    fn copy_out(&self, dst: &mut [u8]) -> usize {
        let pos = self.pos.get();
        let n = dst.len().min(self.data.len() - pos);
        dst[..n].copy_from_slice(&self.data[pos..pos + n]);
        self.pos.set(pos + n);
        n
    }
}

impl io::Read for Replay {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.copy_out(buf) {
            0 if !buf.is_empty() => Err(io::ErrorKind::WouldBlock.into()),
            n => Ok(n),
        }
    }
}

impl io::Write for Replay {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl AsyncRead for Replay {
    fn poll_read(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        // At the end this reports EOF rather than pending, so a parser that
        // reads past the batch fails loudly instead of hanging.
        let n = self.copy_out(buf.initialize_unfilled());
        buf.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Replay {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// One parser, reading one batch at a time.
pub(crate) trait BatchParser {
    /// Rewinds the stream and reads one batch; returns the messages read.
    fn parse_batch(&mut self) -> usize;
}

/// duplex-proto: `receive` the whole batch, then `poll_event` until `None`.
struct Duplex {
    conn: Connection,
    wire: Rc<[u8]>,
}

impl BatchParser for Duplex {
    fn parse_batch(&mut self) -> usize {
        self.conn.receive(black_box(&self.wire));
        let mut messages = 0;
        let mut bytes = 0;
        while let Some(event) = self.conn.poll_event().expect("valid stream") {
            if let Event::Message(message) = event {
                bytes += message.payload().len();
                messages += 1;
            }
        }
        black_box(bytes);
        messages
    }
}

/// tungstenite's sync `WebSocket::read`, `count` times.
struct Tungstenite {
    ws: tungstenite::WebSocket<Replay>,
    stream: Replay,
    count: usize,
}

impl BatchParser for Tungstenite {
    fn parse_batch(&mut self) -> usize {
        self.stream.rewind();
        let mut bytes = 0;
        for _ in 0..self.count {
            let message = self.ws.read().expect("valid stream");
            assert!(message.is_text());
            bytes += message.len();
        }
        black_box(bytes);
        self.count
    }
}

/// tokio-tungstenite's `WebSocketStream::next`, `count` times in one `block_on`.
struct TokioTungstenite {
    ws: tokio_tungstenite::WebSocketStream<Replay>,
    stream: Replay,
    count: usize,
    rt: Rc<Runtime>,
}

impl BatchParser for TokioTungstenite {
    fn parse_batch(&mut self) -> usize {
        self.stream.rewind();
        let (ws, count) = (&mut self.ws, self.count);
        self.rt.block_on(async {
            let mut bytes = 0;
            for _ in 0..count {
                let message = ws.next().await.expect("a message").expect("valid");
                assert!(message.is_text());
                bytes += message.len();
            }
            black_box(bytes);
        });
        count
    }
}

/// tokio-websockets' `WebSocketStream::next`, `count` times in one `block_on`.
struct TokioWebsockets {
    ws: tokio_websockets::WebSocketStream<Replay>,
    stream: Replay,
    count: usize,
    rt: Rc<Runtime>,
}

impl BatchParser for TokioWebsockets {
    fn parse_batch(&mut self) -> usize {
        self.stream.rewind();
        let (ws, count) = (&mut self.ws, self.count);
        self.rt.block_on(async {
            let mut bytes = 0;
            for _ in 0..count {
                let message = ws.next().await.expect("a message").expect("valid");
                assert!(message.is_text());
                bytes += message.as_payload().len();
            }
            black_box(bytes);
        });
        count
    }
}

/// fastwebsockets' `FragmentCollector::read_frame` (whole messages, UTF-8
/// checked), `count` times in one `block_on`.
struct Fastwebsockets {
    ws: fastwebsockets::FragmentCollector<Replay>,
    stream: Replay,
    count: usize,
    rt: Rc<Runtime>,
}

impl BatchParser for Fastwebsockets {
    fn parse_batch(&mut self) -> usize {
        self.stream.rewind();
        let (ws, count) = (&mut self.ws, self.count);
        self.rt.block_on(async {
            let mut bytes = 0;
            for _ in 0..count {
                let frame = ws.read_frame().await.expect("valid");
                assert_eq!(frame.opcode, fastwebsockets::OpCode::Text);
                bytes += frame.payload.len();
            }
            black_box(bytes);
        });
        count
    }
}

/// Every parser over its own copy of `wire`, which holds `count` messages,
/// named as in [`NAMES`]. The async ones share one current-thread runtime.
pub(crate) fn parsers(wire: &[u8], count: usize) -> Vec<(&'static str, Box<dyn BatchParser>)> {
    let rt = Rc::new(
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime"),
    );
    let duplex = Duplex {
        conn: Connection::server(Config::default()),
        wire: wire.into(),
    };

    let stream = Replay::new(wire);
    let tungstenite = Tungstenite {
        ws: tungstenite::WebSocket::from_raw_socket(
            stream.clone(),
            tungstenite::protocol::Role::Server,
            None,
        ),
        stream,
        count,
    };

    let stream = Replay::new(wire);
    let tokio_tungstenite = TokioTungstenite {
        ws: rt.block_on(tokio_tungstenite::WebSocketStream::from_raw_socket(
            stream.clone(),
            tungstenite::protocol::Role::Server,
            None,
        )),
        stream,
        count,
        rt: rt.clone(),
    };

    let stream = Replay::new(wire);
    let tokio_websockets = TokioWebsockets {
        ws: tokio_websockets::ServerBuilder::new().serve(stream.clone()),
        stream,
        count,
        rt: rt.clone(),
    };

    let stream = Replay::new(wire);
    let fastwebsockets = Fastwebsockets {
        ws: fastwebsockets::FragmentCollector::new(fastwebsockets::WebSocket::after_handshake(
            stream.clone(),
            fastwebsockets::Role::Server,
        )),
        stream,
        count,
        rt,
    };

    let all: Vec<Box<dyn BatchParser>> = vec![
        Box::new(duplex),
        Box::new(tungstenite),
        Box::new(tokio_tungstenite),
        Box::new(tokio_websockets),
        Box::new(fastwebsockets),
    ];
    NAMES.into_iter().zip(all).collect()
}
