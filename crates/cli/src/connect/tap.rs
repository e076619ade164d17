//! The `--show-frames` / `--show-handshake` tap: a transport wrapper
//! ([`Tap`]) that describes, on standard error, the handshake heads and the
//! frame headers of the bytes passing through it, read from a copy, so what
//! it shows is what went on the wire.
//!
//! Invariant: any split of the same bytes into reads and writes gives the
//! same lines ([`Inspector`]); the bytes themselves pass unchanged.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use duplex::proto::frame::{FrameHeader, MAX_HEADER_LEN, OpCode, RSV1, RSV2, RSV3, parse_header};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A transport wrapper that logs, on standard error, the handshake heads
/// and the frame headers of the bytes passing through it, read from a copy:
/// the bytes themselves pass unchanged.
pub(super) struct Tap<S> {
    io: S,
    sent: Inspector,
    received: Inspector,
}

impl<S> Tap<S> {
    pub(super) fn new(io: S, frames: bool, handshake: bool, started: Instant) -> Self {
        Self {
            io,
            sent: Inspector::new(">>", frames, handshake, started),
            received: Inspector::new("<<", frames, handshake, started),
        }
    }
}

/// Writes what an inspector has to say.
fn print_lines(inspector: &mut Inspector) {
    for line in inspector.lines.drain(..) {
        eprintln!("{line}");
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Tap<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.io).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = result {
            this.received.feed(&buf.filled()[before..]);
            print_lines(&mut this.received);
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tap<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.io).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = result {
            this.sent.feed(&buf[..n]);
            print_lines(&mut this.sent);
        }
        result
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(mut n)) = result {
            for buf in bufs {
                if n == 0 {
                    break;
                }
                let take = n.min(buf.len());
                this.sent.feed(&buf[..take]);
                n -= take;
            }
            print_lines(&mut this.sent);
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// The most bytes of an HTTP head the inspector keeps while looking for its
/// end; a longer head stops the inspection (the connection goes on).
const MAX_HEAD: usize = 64 * 1024;

/// Where an [`Inspector`] is in its direction's byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// In the HTTP head of the handshake.
    Head,
    /// In frames.
    Frames,
    /// Lost (an unparseable frame or an oversized head): silent from here.
    Off,
}

/// Follows one direction of a WebSocket byte stream and describes it: the
/// handshake head's lines, then one line per frame.
///
/// Invariant: any split of the same bytes into `feed` calls gives the same
/// lines.
#[derive(Debug)]
struct Inspector {
    arrow: &'static str,
    frames: bool,
    handshake: bool,
    started: Instant,
    phase: Phase,
    /// The head so far, or the frame header so far.
    pending: Vec<u8>,
    /// The frame whose payload is passing.
    frame: Option<FrameHeader>,
    /// Payload bytes of that frame still to come.
    remaining: u64,
    /// A close frame's payload, unmasked.
    close: Vec<u8>,
    /// Lines to print.
    lines: Vec<String>,
}

impl Inspector {
    fn new(arrow: &'static str, frames: bool, handshake: bool, started: Instant) -> Self {
        Self {
            arrow,
            frames,
            handshake,
            started,
            phase: Phase::Head,
            pending: Vec::new(),
            frame: None,
            remaining: 0,
            close: Vec::new(),
            lines: Vec::new(),
        }
    }

    fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            match self.phase {
                Phase::Off => return,
                Phase::Head => data = self.feed_head(data),
                Phase::Frames if self.remaining > 0 => data = self.feed_payload(data),
                Phase::Frames => data = self.feed_header(data),
            }
        }
    }

    /// Takes head bytes; returns what follows the head (if it ended).
    fn feed_head<'a>(&mut self, data: &'a [u8]) -> &'a [u8] {
        // The end may straddle the previous bytes: look from 3 back.
        let from = self.pending.len().saturating_sub(3);
        let old = self.pending.len();
        self.pending.extend_from_slice(data);
        let Some(at) = find(&self.pending[from..], b"\r\n\r\n") else {
            if self.pending.len() > MAX_HEAD {
                self.phase = Phase::Off;
                self.pending = Vec::new();
            }
            return &[];
        };
        let end = from + at + 4;
        if self.handshake {
            let head = String::from_utf8_lossy(&self.pending[..end - 4]).into_owned();
            for line in head.split("\r\n") {
                self.lines.push(format!("{} {line}", self.arrow));
            }
            self.lines.push(self.arrow.to_owned());
        }
        self.pending.clear();
        self.phase = Phase::Frames;
        &data[end - old..]
    }

    /// Takes frame header bytes; returns the rest.
    fn feed_header<'a>(&mut self, data: &'a [u8]) -> &'a [u8] {
        let old = self.pending.len();
        let take = (MAX_HEADER_LEN - old).min(data.len());
        self.pending.extend_from_slice(&data[..take]);
        match parse_header(&self.pending) {
            Ok(Some((header, len))) => {
                let used = len - old;
                self.pending.clear();
                self.remaining = header.payload_len;
                self.close.clear();
                self.frame = Some(header);
                if header.opcode != OpCode::Close {
                    self.describe(&header, None);
                }
                if self.remaining == 0 {
                    self.end_frame();
                }
                &data[used..]
            }
            Ok(None) => &data[take..],
            Err(error) => {
                if self.frames {
                    self.lines
                        .push(format!("{} unparseable frame: {error}", self.arrow));
                }
                self.phase = Phase::Off;
                &[]
            }
        }
    }

    /// Takes payload bytes of the current frame; returns the rest.
    fn feed_payload<'a>(&mut self, data: &'a [u8]) -> &'a [u8] {
        let take = usize::try_from(self.remaining)
            .unwrap_or(usize::MAX)
            .min(data.len());
        if let Some(header) = self.frame
            && header.opcode == OpCode::Close
        {
            for &byte in &data[..take] {
                let at = self.close.len();
                let key = header.mask.map_or(0, |mask| mask[at % 4]);
                self.close.push(byte ^ key);
            }
        }
        self.remaining -= take as u64;
        if self.remaining == 0 {
            self.end_frame();
        }
        &data[take..]
    }

    fn end_frame(&mut self) {
        if let Some(header) = self.frame.take()
            && header.opcode == OpCode::Close
        {
            let close = std::mem::take(&mut self.close);
            self.describe(&header, Some(&close));
        }
    }

    /// One line for a frame; `close` is a close frame's payload.
    fn describe(&mut self, header: &FrameHeader, close: Option<&[u8]>) {
        if !self.frames {
            return;
        }
        let op = match header.opcode {
            OpCode::Continuation => "continuation",
            OpCode::Text => "text",
            OpCode::Binary => "binary",
            OpCode::Close => "close",
            OpCode::Ping => "ping",
            OpCode::Pong => "pong",
        };
        let bit = |flag: u8| if header.rsv & flag != 0 { '1' } else { '0' };
        let mut line = format!(
            "{} frame op={op} fin={} rsv={}{}{} len={} masked={}",
            self.arrow,
            u8::from(header.fin),
            bit(RSV1),
            bit(RSV2),
            bit(RSV3),
            header.payload_len,
            if header.mask.is_some() { "yes" } else { "no" },
        );
        match close {
            Some([a, b, reason @ ..]) => line.push_str(&format!(
                " code={} reason={:?}",
                u16::from_be_bytes([*a, *b]),
                String::from_utf8_lossy(reason)
            )),
            Some(_) => line.push_str(" code=none"),
            None => {}
        }
        line.push_str(&format!(" t=+{:.3}s", self.started.elapsed().as_secs_f64()));
        self.lines.push(line);
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use duplex::proto::frame::encode_header;

    fn frame(opcode: OpCode, rsv: u8, mask: Option<[u8; 4]>, payload: &[u8]) -> Vec<u8> {
        let header = FrameHeader {
            fin: true,
            rsv,
            opcode,
            mask,
            payload_len: payload.len() as u64,
        };
        let mut out = Vec::new();
        encode_header(&header, &mut out);
        let key = mask.unwrap_or([0; 4]);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        out
    }

    /// A request head, then a masked text frame, a large binary frame and a
    /// masked close frame.
    fn stream() -> Vec<u8> {
        let mut bytes =
            b"GET /chat HTTP/1.1\r\nHost: example\r\nUpgrade: websocket\r\n\r\n".to_vec();
        bytes.extend(frame(OpCode::Text, RSV1, Some([1, 2, 3, 4]), b"hello"));
        bytes.extend(frame(OpCode::Binary, 0, None, &[7; 70_000]));
        let mut close = 1000u16.to_be_bytes().to_vec();
        close.extend_from_slice(b"bye");
        bytes.extend(frame(OpCode::Close, 0, Some([9, 8, 7, 6]), &close));
        bytes
    }

    fn lines_of(chunks: &[&[u8]]) -> Vec<String> {
        let mut inspector = Inspector::new(">>", true, true, Instant::now());
        for chunk in chunks {
            inspector.feed(chunk);
        }
        inspector
            .lines
            .into_iter()
            // Drop the timestamps, which differ between runs.
            .map(|line| line.split(" t=").next().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn the_inspector_describes_the_head_and_every_frame() {
        let bytes = stream();
        assert_eq!(
            lines_of(&[&bytes]),
            [
                ">> GET /chat HTTP/1.1",
                ">> Host: example",
                ">> Upgrade: websocket",
                ">>",
                ">> frame op=text fin=1 rsv=100 len=5 masked=yes",
                ">> frame op=binary fin=1 rsv=000 len=70000 masked=no",
                ">> frame op=close fin=1 rsv=000 len=5 masked=yes code=1000 reason=\"bye\"",
            ]
        );
    }

    #[test]
    fn any_split_of_the_bytes_gives_the_same_lines() {
        let bytes = stream();
        let whole = lines_of(&[&bytes]);
        let singles: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(lines_of(&singles), whole);
        for size in [2, 3, 5, 13, 4096] {
            let chunks: Vec<&[u8]> = bytes.chunks(size).collect();
            assert_eq!(lines_of(&chunks), whole, "chunks of {size}");
        }
    }

    #[test]
    fn garbage_after_the_head_silences_the_inspector() {
        let mut inspector = Inspector::new("<<", true, false, Instant::now());
        inspector.feed(b"HTTP/1.1 101 Switching Protocols\r\n\r\n\x83\x00more");
        assert_eq!(inspector.lines.len(), 1);
        assert!(inspector.lines[0].starts_with("<< unparseable frame"));
        inspector.feed(&frame(OpCode::Text, 0, None, b"x"));
        assert_eq!(inspector.lines.len(), 1);
    }
}
