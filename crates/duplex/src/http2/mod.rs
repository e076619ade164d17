//! WebSocket over HTTP/2 (RFC 8441), server and client, on the `h2` crate
//! (feature `http2`, on by default).
//!
//! An HTTP/2 stream opened by an extended `CONNECT` with `:protocol`
//! `websocket` becomes an [`H2Stream`], an `AsyncRead + AsyncWrite` byte
//! stream, and the same [`WebSocket`] runs over it as over TCP: every frame
//! and message limit, timer, keepalive, write-buffer bound and close rule
//! applies per stream, unchanged.
//!
//! - Server: [`Server::serve_connection`] serves one HTTP/2 connection
//!   (prior-knowledge `h2c`, or TLS after ALPN `h2`): it advertises
//!   `SETTINGS_ENABLE_CONNECT_PROTOCOL`, validates each extended `CONNECT`
//!   with [`UpgradeRequest::validate_extended_connect`], lets the same
//!   `decide` callback as [`crate::accept_with`] accept or refuse it,
//!   negotiates subprotocol and permessage-deflate with the same code
//!   ([`crate::server`]'s `answer`), and hands each WebSocket to a callback
//!   on a task of its own. Other requests are answered by
//!   [`Server::pages`] (404 by default), or, under the path prefix given to
//!   [`Server::requests`], by an async handler with the request's body. [`is_h2c_preface`] tells an `h2c`
//!   connection from an HTTP/1.1 one on the same port.
//! - Client: [`H2Connection`] opens several WebSockets on one HTTP/2
//!   connection; [`Pool`], set as [`crate::transport::Options::http2`], makes
//!   [`crate::connect_with`] reuse one connection per origin and fall back to
//!   HTTP/1.1 when the server does not speak HTTP/2 or does not advertise the
//!   setting.
//!
//! Invariants:
//! - RFC 8441's rules: the WebSocket is accepted with `200`, not `101`, and
//!   without `Sec-WebSocket-Key`/`-Accept`, `Upgrade` or `Connection`; frames
//!   are masked exactly as over HTTP/1.1 (the client masks, the server does
//!   not); the end of the stream (`END_STREAM`) is the end of the TCP
//!   connection of RFC 6455 (a WebSocket ends with 1006 when it comes before
//!   the close handshake), and `RST_STREAM` is an abrupt close: the reading
//!   side gets an [`Error::Io`] of kind `ConnectionReset` and close code 1006.
//! - Backpressure is HTTP/2 flow control: received bytes are given back to
//!   the peer's window only as the WebSocket reads them, so a WebSocket that
//!   is not read stops its peer after [`Http2Config::stream_window`] bytes;
//!   a write waits for window (`poll_capacity`) and the `h2` send buffer is
//!   bounded by [`Http2Config::max_send_buffer`] per stream, so
//!   `poll_ready`'s high-water mark applies as over TCP.
//! - Error responses carry no connection-specific header (`Connection`,
//!   `Upgrade`), which HTTP/2 forbids.
//! - A server connection holds at most [`Http2Config::max_concurrent_streams`]
//!   streams, ends (GOAWAY) after [`Http2Config::idle_timeout`] with no
//!   WebSocket open and no request, and, with [`Server::shutdown`], sends
//!   GOAWAY on shutdown while its WebSockets close with 1001; it then ends
//!   when the last of them has. A plain `CONNECT` (a tunnel) gets 405.
//! - A body read for [`Server::requests`] is bounded: at most its
//!   `max_body` bytes (else 413, nothing more read) within
//!   [`Config::handshake_timeout`] (else 408); its bytes are given back to
//!   the peer's window as they are read.
//! - The HTTP/2 handshake (preface and SETTINGS) is bounded by
//!   [`Config::handshake_timeout`]; a request's header block by
//!   [`Config::handshake_limits`] (`SETTINGS_MAX_HEADER_LIST_SIZE`).

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use h2::{Reason, RecvStream, SendStream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::websocket::WebSocket;

/// The `h2` crate this module runs on, for its error type ([`Error::Http2`]).
pub use h2;

pub use crate::tls::ALPN_H2;

mod client;
mod server;

pub(crate) use client::connect_pooled;
pub use client::{H2Connection, Pool};
pub use server::{Answer, Server, is_h2c_preface};

/// The first bytes of every HTTP/2 connection (RFC 9113 §3.4).
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Settings of HTTP/2 connections, server and client.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Http2Config {
    /// Most streams (WebSockets and page requests) open at once on one
    /// connection (default 100, RFC 9113's recommended minimum); a server
    /// advertises it as `SETTINGS_MAX_CONCURRENT_STREAMS` and resets a
    /// stream past it with `REFUSED_STREAM`.
    pub max_concurrent_streams: u32,
    /// Bytes a peer may send on one stream before this side reads them
    /// (default 256 KiB): the receive buffer of one WebSocket.
    pub stream_window: u32,
    /// Bytes a peer may send on the whole connection before this side reads
    /// them (default 16 MiB): the receive buffer of all its WebSockets.
    pub connection_window: u32,
    /// Bytes `h2` buffers per stream for sending before a write waits
    /// (default 256 KiB).
    pub max_send_buffer: usize,
    /// How long a server keeps a connection that has no WebSocket open and
    /// sends no request (default 60 s); then it sends GOAWAY and closes it.
    /// Not used by clients.
    pub idle_timeout: std::time::Duration,
}

impl Default for Http2Config {
    fn default() -> Self {
        Self {
            max_concurrent_streams: 100,
            stream_window: 256 * 1024,
            connection_window: 16 * 1024 * 1024,
            max_send_buffer: 256 * 1024,
            idle_timeout: std::time::Duration::from_secs(60),
        }
    }
}

/// One HTTP/2 stream as a byte stream: what a [`WebSocket`] runs on.
///
/// Reading gives back flow-control window as bytes are read; the end of the
/// peer's side is end of file; a reset is an `io::Error` of kind
/// `ConnectionReset`. Writing waits for window; shutting down sends
/// `END_STREAM`. Dropping a stream is a TCP close: `END_STREAM` if not sent
/// yet, behind what is queued; then, unless the peer has ended its side,
/// what it still sends is read and discarded until it does, for at most
/// [`LINGER`], after which the stream is reset.
#[derive(Debug)]
pub struct H2Stream {
    send: SendStream<Bytes>,
    /// `None` once handed to the lingering task of `Drop`.
    recv: Option<RecvStream>,
    /// Received bytes not read yet; their window is not released yet.
    pending: Bytes,
    read_done: bool,
    write_done: bool,
}

impl H2Stream {
    fn new(send: SendStream<Bytes>, recv: RecvStream) -> Self {
        Self {
            send,
            recv: Some(recv),
            pending: Bytes::new(),
            read_done: false,
            write_done: false,
        }
    }

    /// The stream's HTTP/2 identifier.
    pub fn stream_id(&self) -> u32 {
        self.send.stream_id().as_u32()
    }

    /// Resets the stream with `reason` (RST_STREAM): the peer's WebSocket
    /// ends at once with close code 1006.
    pub fn reset(&mut self, reason: Reason) {
        self.send.send_reset(reason);
        self.write_done = true;
        self.read_done = true;
    }
}

/// How long a dropped [`H2Stream`] waits for the peer to end its side before
/// resetting the stream: what `h2` still has queued for it (a close frame)
/// goes out meanwhile, as a TCP close delivers what the socket holds.
pub const LINGER: std::time::Duration = std::time::Duration::from_secs(5);

impl Drop for H2Stream {
    fn drop(&mut self) {
        if !self.write_done {
            self.write_done = true;
            self.send.reserve_capacity(0);
            if self.send.send_data(Bytes::new(), true).is_err() {
                return;
            }
        }
        if self.read_done {
            return;
        }
        // Dropping every handle of an open client stream would reset it
        // at once and discard the queued bytes: keep the receiving half until
        // the peer ends its side, or LINGER.
        let (Some(mut recv), Ok(runtime)) =
            (self.recv.take(), tokio::runtime::Handle::try_current())
        else {
            return;
        };
        runtime.spawn(async move {
            let _ = tokio::time::timeout(LINGER, async {
                while let Some(Ok(data)) = recv.data().await {
                    let _ = recv.flow_control().release_capacity(data.len());
                }
            })
            .await;
        });
    }
}

/// An `h2` error as an I/O error: a reset is `ConnectionReset`.
fn io_error(error: h2::Error) -> io::Error {
    if error.is_reset() || error.is_go_away() {
        io::Error::new(io::ErrorKind::ConnectionReset, error)
    } else if error.is_io() {
        error
            .into_io()
            .unwrap_or_else(|| io::Error::other("h2 I/O"))
    } else {
        io::Error::other(error)
    }
}

impl AsyncRead for H2Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        while this.pending.is_empty() {
            if this.read_done {
                return Poll::Ready(Ok(()));
            }
            let Some(recv) = this.recv.as_mut() else {
                return Poll::Ready(Ok(()));
            };
            match ready!(recv.poll_data(cx)) {
                Some(Ok(data)) => this.pending = data,
                Some(Err(error)) => {
                    this.read_done = true;
                    return Poll::Ready(Err(io_error(error)));
                }
                None => {
                    this.read_done = true;
                    return Poll::Ready(Ok(()));
                }
            }
        }
        let n = this.pending.len().min(buf.remaining());
        buf.put_slice(&this.pending[..n]);
        this.pending.advance(n);
        // The bytes are ours now: the peer may send as many more.
        if let Some(recv) = this.recv.as_mut() {
            let _ = recv.flow_control().release_capacity(n);
        }
        Poll::Ready(Ok(()))
    }
}

impl H2Stream {
    /// Waits for send window, then sends as much of `bufs` as it allows.
    fn poll_send(&mut self, cx: &mut Context<'_>, bufs: &[IoSlice<'_>]) -> Poll<io::Result<usize>> {
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        if total == 0 {
            return Poll::Ready(Ok(0));
        }
        if self.write_done {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        self.send.reserve_capacity(total);
        let mut capacity = self.send.capacity();
        while capacity == 0 {
            match ready!(self.send.poll_capacity(cx)) {
                Some(Ok(n)) => capacity = n,
                Some(Err(error)) => return Poll::Ready(Err(io_error(error))),
                None => return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
            }
        }
        let n = capacity.min(total);
        let mut data = BytesMut::with_capacity(n);
        for b in bufs {
            let take = (n - data.len()).min(b.len());
            data.extend_from_slice(&b[..take]);
            if data.len() == n {
                break;
            }
        }
        self.send
            .send_data(data.freeze(), false)
            .map_err(io_error)?;
        Poll::Ready(Ok(n))
    }
}

impl AsyncWrite for H2Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_send(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_send(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // The connection's task writes what `send_data` buffered.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.write_done {
            this.write_done = true;
            this.send.reserve_capacity(0);
            this.send.send_data(Bytes::new(), true).map_err(io_error)?;
        }
        Poll::Ready(Ok(()))
    }
}

/// A WebSocket over HTTP/2.
pub type H2WebSocket = WebSocket<H2Stream>;
