//! Tests of [`super::WebSocket`]'s write path: how a queue goes out.

use super::*;

/// A transport that takes every byte at once and records how each write
/// was made; it never has anything to read.
#[derive(Default)]
struct Recorder {
    written: Vec<u8>,
    plain: usize,
    vectored: usize,
}

impl AsyncRead for Recorder {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        _: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Poll::Pending
    }
}

impl AsyncWrite for Recorder {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.plain += 1;
        self.written.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.vectored += 1;
        let mut n = 0;
        for buf in bufs {
            self.written.extend_from_slice(buf);
            n += buf.len();
        }
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

fn server() -> WebSocket<Recorder> {
    let config = Config::default();
    let conn = Connection::server(config.protocol.clone());
    WebSocket::from_parts(Recorder::default(), conn, &config, None)
}

#[tokio::test]
async fn a_queue_of_one_chunk_goes_out_in_a_plain_write() {
    let mut ws = server();
    // Two small frames share the tail: one chunk.
    ws.send_prepared(&PreparedMessage::new(&Message::text("a")))
        .unwrap();
    ws.send_prepared(&PreparedMessage::new(&Message::text("b")))
        .unwrap();
    ws.flush().await.unwrap();
    assert_eq!((ws.io.plain, ws.io.vectored), (1, 0));
    assert_eq!(ws.io.written, b"\x81\x01a\x81\x01b");
}

#[tokio::test]
async fn a_queue_of_several_chunks_goes_out_in_one_vectored_write() {
    let mut ws = server();
    // Prepared frames of 4 KiB or more are queued without a copy.
    let large = "x".repeat(4096);
    // A small frame in the tail, then a large one queued by reference.
    ws.send_prepared(&PreparedMessage::new(&Message::text("a")))
        .unwrap();
    ws.send_prepared(&PreparedMessage::new(&Message::text(large.clone())))
        .unwrap();
    ws.flush().await.unwrap();
    assert_eq!((ws.io.plain, ws.io.vectored), (0, 1));
    let written = &ws.io.written;
    assert_eq!(&written[..3], b"\x81\x01a");
    assert_eq!(&written[3..7], &[0x81, 126, 0x10, 0x00]);
    assert_eq!(written.len(), 7 + large.len());
}
