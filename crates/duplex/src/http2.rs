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
//!   [`Server::pages`] (404 by default). [`is_h2c_preface`] tells an `h2c`
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
//! - The HTTP/2 handshake (preface and SETTINGS) is bounded by
//!   [`Config::handshake_timeout`]; a request's header block by
//!   [`Config::handshake_limits`] (`SETTINGS_MAX_HEADER_LIST_SIZE`).

use std::collections::HashMap;
use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use duplex_proto::handshake::client::{ClientHandshake, ResponseError};
use duplex_proto::handshake::server::{HandshakeError, reject_response};
use h2::{Reason, RecvStream, SendStream};
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::client::{ClientRequest, client_connection};
use crate::config::Config;
use crate::error::ClientHandshakeError;
use crate::server::{self, Accept, Reject, UpgradeRequest};
use crate::shutdown::Shutdown;
use crate::websocket::{Connection, WebSocket};
use crate::{Error, transport};

/// The `h2` crate this module runs on, for its error type ([`Error::Http2`]).
pub use h2;

pub use crate::tls::ALPN_H2;

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

type Decide = dyn Fn(&UpgradeRequest) -> Result<Accept, Reject> + Send + Sync;
type Pages = dyn Fn(&Request<()>) -> Response<Bytes> + Send + Sync;
type Invalid = dyn Fn(&HandshakeError) + Send + Sync;

/// An HTTP/2 server of WebSockets: settings and callbacks shared by the
/// connections it serves. Cheap to clone.
#[derive(Clone)]
pub struct Server {
    config: Arc<Config>,
    http2: Http2Config,
    decide: Arc<Decide>,
    pages: Arc<Pages>,
    invalid: Arc<Invalid>,
    shutdown: Option<Shutdown>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("config", &self.config)
            .field("http2", &self.http2)
            .field("shutdown", &self.shutdown)
            .finish_non_exhaustive()
    }
}

/// Counts a connection's open WebSockets, for its idle timeout.
#[derive(Debug, Default)]
struct Live {
    open: std::sync::atomic::AtomicUsize,
    /// Notified when the count falls to zero.
    idle: tokio::sync::Notify,
}

/// One open WebSocket of a connection: counted while it lives.
struct LiveGuard(Arc<Live>);

impl LiveGuard {
    fn new(live: &Arc<Live>) -> Self {
        live.open.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        Self(live.clone())
    }
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        if self
            .0
            .open
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel)
            == 1
        {
            self.0.idle.notify_one();
        }
    }
}

impl Server {
    /// A server with `config` that accepts every WebSocket request without a
    /// subprotocol and answers other requests 404.
    pub fn new(config: Config) -> Self {
        Self {
            config: Arc::new(config),
            http2: Http2Config::default(),
            decide: Arc::new(|_| Ok(Accept::default())),
            pages: Arc::new(|_| not_found()),
            invalid: Arc::new(|_| {}),
            shutdown: None,
        }
    }

    /// HTTP/2 settings (windows, streams per connection, idle timeout).
    #[must_use]
    pub fn http2(mut self, http2: Http2Config) -> Self {
        self.http2 = http2;
        self
    }

    /// Graceful shutdown: when `shutdown` is triggered, each connection
    /// sends GOAWAY (no new stream is accepted; a request sent after it is
    /// refused with `REFUSED_STREAM`, which a client may retry elsewhere),
    /// every WebSocket it serves closes with 1001 as over HTTP/1.1 (each gets
    /// a [`crate::ShutdownWatch`] of it), and the connection ends when the
    /// last of them has.
    #[must_use]
    pub fn shutdown(mut self, shutdown: Shutdown) -> Self {
        self.shutdown = Some(shutdown);
        self
    }

    /// Decides on each WebSocket request, as `decide` does for
    /// [`crate::accept_with`]: the same callback serves both versions
    /// ([`UpgradeRequest::is_extended_connect`] tells them apart).
    #[must_use]
    pub fn decide(
        mut self,
        decide: impl Fn(&UpgradeRequest) -> Result<Accept, Reject> + Send + Sync + 'static,
    ) -> Self {
        self.decide = Arc::new(decide);
        self
    }

    /// Answers requests that are not an extended `CONNECT` (pages, health
    /// checks). Default: 404. Connection-specific headers in the response
    /// are dropped. A plain `CONNECT` (without `:protocol`: a tunnel) is
    /// not passed here: it gets 405 (`Allow: GET, HEAD`).
    #[must_use]
    pub fn pages(
        mut self,
        pages: impl Fn(&Request<()>) -> Response<Bytes> + Send + Sync + 'static,
    ) -> Self {
        self.pages = Arc::new(pages);
        self
    }

    /// Told of each invalid extended `CONNECT` (a missing or wrong
    /// `Sec-WebSocket-Version`, an unknown `:protocol` …) before its 4xx
    /// answer goes out, so a server can count and log them as it does
    /// refused HTTP/1.1 upgrades. Such a request never reaches
    /// [`Server::decide`]. Default: nothing.
    #[must_use]
    pub fn on_invalid(mut self, invalid: impl Fn(&HandshakeError) + Send + Sync + 'static) -> Self {
        self.invalid = Arc::new(invalid);
        self
    }

    /// The WebSocket settings of this server.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Serves one HTTP/2 connection on `io` (after the TLS handshake, if
    /// any) until the client or an error ends it, running `on_websocket` on
    /// a task of its own for each accepted WebSocket, with the request it
    /// was accepted for (path, query, headers, subprotocols).
    ///
    /// # Errors
    ///
    /// [`Error::HandshakeTimeout`] when the client does not complete the
    /// HTTP/2 handshake within [`Config::handshake_timeout`];
    /// [`Error::Http2`] when the connection fails (a protocol error, a reset
    /// socket). WebSockets already accepted end with it.
    pub async fn serve_connection<S, H, Fut>(&self, io: S, on_websocket: H) -> Result<(), Error>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        H: Fn(H2WebSocket, UpgradeRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let decide = self.decide.clone();
        self.serve_connection_with(
            io,
            move |request| decide(request).map(|accept| (accept, ())),
            move |ws, request, ()| on_websocket(ws, request),
        )
        .await
    }

    /// [`Server::serve_connection`] with a decision of this connection's
    /// own instead of [`Server::decide`]'s: `decide` may carry what it
    /// learned or reserved for an accepted request (an identity, an
    /// admission ticket) to `on_websocket` as its `T`. `decide` runs on the
    /// connection's task, one request at a time, after the request was
    /// validated as an extended `CONNECT`; `T` is dropped if the response
    /// cannot be sent.
    ///
    /// # Errors
    ///
    /// As [`Server::serve_connection`].
    pub async fn serve_connection_with<S, T, D, H, Fut>(
        &self,
        io: S,
        mut decide: D,
        on_websocket: H,
    ) -> Result<(), Error>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        D: FnMut(&UpgradeRequest) -> Result<(Accept, T), Reject>,
        H: Fn(H2WebSocket, UpgradeRequest, T) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let mut builder = h2::server::Builder::new();
        builder
            .enable_connect_protocol()
            .max_concurrent_streams(self.http2.max_concurrent_streams)
            .initial_window_size(self.http2.stream_window)
            .initial_connection_window_size(self.http2.connection_window)
            .max_send_buffer_size(self.http2.max_send_buffer)
            .max_header_list_size(
                u32::try_from(self.config.handshake_limits.max_header_size).unwrap_or(u32::MAX),
            );
        let mut conn = match tokio::time::timeout(
            self.config.handshake_timeout,
            builder.handshake::<_, Bytes>(io),
        )
        .await
        {
            Ok(conn) => conn?,
            Err(_) => return Err(Error::HandshakeTimeout),
        };
        let live = Arc::new(Live::default());
        let mut going_away = false;
        let shutdown = self.shutdown.clone();
        let shutdown_triggered = async {
            match &shutdown {
                Some(shutdown) => shutdown.triggered().await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(shutdown_triggered);
        loop {
            let idle = live.open.load(std::sync::atomic::Ordering::Acquire) == 0;
            let idle_timer = tokio::time::sleep(self.http2.idle_timeout);
            tokio::select! {
                accepted = conn.accept() => {
                    let Some(accepted) = accepted else { break };
                    let (request, respond) = accepted?;
                    if let Some((ws, request, value)) = self.answer(request, respond, &mut decide) {
                        let guard = LiveGuard::new(&live);
                        let work = on_websocket(ws, request, value);
                        tokio::spawn(async move {
                            work.await;
                            drop(guard);
                        });
                    }
                }
                () = &mut shutdown_triggered, if !going_away => {
                    tracing::debug!("shutting down: GOAWAY");
                    conn.graceful_shutdown();
                    going_away = true;
                }
                () = idle_timer, if idle && !going_away => {
                    tracing::debug!("HTTP/2 connection idle: GOAWAY");
                    conn.graceful_shutdown();
                    going_away = true;
                }
                () = live.idle.notified(), if !idle => {}
            }
        }
        Ok(())
    }

    /// Answers one request: a WebSocket for an accepted extended `CONNECT`,
    /// else a response (page, refusal) and `None`.
    fn answer<T>(
        &self,
        request: Request<RecvStream>,
        mut respond: h2::server::SendResponse<Bytes>,
        decide: &mut impl FnMut(&UpgradeRequest) -> Result<(Accept, T), Reject>,
    ) -> Option<(H2WebSocket, UpgradeRequest, T)> {
        let (parts, body) = request.into_parts();
        let head = Request::from_parts(parts, ());
        let protocol = head
            .extensions()
            .get::<h2::ext::Protocol>()
            .map(|p| p.as_str().to_owned());
        if head.method() != Method::CONNECT {
            let response = (self.pages)(&head);
            send_whole(&mut respond, response);
            return None;
        }
        if protocol.is_none() {
            // A tunnel (RFC 9113 §8.5): not something this server does.
            let mut response = reject_response(
                StatusCode::METHOD_NOT_ALLOWED,
                "CONNECT without :protocol (a tunnel) is not served here",
            )
            .map(Bytes::from);
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            send_whole(&mut respond, response);
            return None;
        }
        let request = match UpgradeRequest::validate_extended_connect(head, protocol.as_deref()) {
            Ok(request) => request,
            Err(error) => {
                tracing::debug!(%error, "refused an extended CONNECT");
                (self.invalid)(&error);
                send_whole(&mut respond, refusal(&error));
                return None;
            }
        };
        let (accept, value) = match decide(&request) {
            Ok(decided) => decided,
            Err(reject) => {
                let mut response = reject_response(reject.status, &reject.reason);
                response.headers_mut().extend(*reject.headers);
                send_whole(&mut respond, response.map(Bytes::from));
                return None;
            }
        };
        let (response, conn) = match server::answer(&request, &accept, &self.config) {
            Ok(answer) => answer,
            Err(error) => {
                tracing::warn!(%error, "cannot accept an extended CONNECT");
                let response = reject_response(StatusCode::INTERNAL_SERVER_ERROR, "server error");
                send_whole(&mut respond, response.map(Bytes::from));
                return None;
            }
        };
        let send = respond.send_response(response, false).ok()?;
        let mut ws = WebSocket::from_parts(
            H2Stream::new(send, body),
            conn,
            &self.config,
            accept.protocol,
        );
        if let Some(shutdown) = &self.shutdown {
            ws.set_shutdown(shutdown.watch());
        }
        Some((ws, request, value))
    }
}

/// The default answer to a request that is not a WebSocket.
fn not_found() -> Response<Bytes> {
    reject_response(StatusCode::NOT_FOUND, "not found").map(Bytes::from)
}

/// The HTTP/2 answer to an invalid extended `CONNECT`: the HTTP/1.1
/// refusal's status, reason and headers, less those HTTP/2 forbids; a 405
/// names `CONNECT` as the method to use.
fn refusal(error: &HandshakeError) -> Response<Bytes> {
    let mut response = error.to_response().map(Bytes::from);
    if response.status() == StatusCode::METHOD_NOT_ALLOWED {
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("CONNECT"));
    }
    response
}

/// Sends `response` with its body and ends the stream, dropping the
/// connection-specific headers HTTP/2 forbids (RFC 9113 §8.2.2).
fn send_whole(respond: &mut h2::server::SendResponse<Bytes>, response: Response<Bytes>) {
    let (mut parts, body) = response.into_parts();
    for name in [
        header::CONNECTION,
        header::UPGRADE,
        header::TRANSFER_ENCODING,
        header::HeaderName::from_static("keep-alive"),
        header::HeaderName::from_static("proxy-connection"),
    ] {
        parts.headers.remove(name);
    }
    parts.headers.remove(header::TE);
    parts.version = http::Version::HTTP_2;
    let empty = body.is_empty();
    match respond.send_response(Response::from_parts(parts, ()), empty) {
        Ok(mut send) if !empty => {
            // A short body: h2 buffers it whatever the window.
            let _ = send.send_data(body, true);
        }
        Ok(_) => {}
        Err(error) => tracing::debug!(%error, "cannot answer an HTTP/2 request"),
    }
}

/// Whether `tcp` starts with the HTTP/2 connection preface (prior-knowledge
/// `h2c`), without consuming anything: serve it with
/// [`Server::serve_connection`] if so, else as HTTP/1.1
/// ([`crate::accept_with`]). Waits for the first 24 bytes, or fewer if they
/// already differ from the preface; bound it with a timeout.
///
/// # Errors
///
/// The socket's error, or `UnexpectedEof` when it closes first.
pub async fn is_h2c_preface(tcp: &TcpStream) -> io::Result<bool> {
    let mut buf = [0; PREFACE.len()];
    loop {
        let n = tcp.peek(&mut buf).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        if buf[..n] != PREFACE[..n] {
            return Ok(false);
        }
        if n == PREFACE.len() {
            return Ok(true);
        }
        // Part of the preface: peek would return the same bytes at once, so
        // wait a little for the rest.
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
}

/// A client's HTTP/2 connection to one server, for many WebSockets. Cheap to
/// clone; the connection ends when every clone and every WebSocket on it is
/// dropped.
#[derive(Debug, Clone)]
pub struct H2Connection {
    send: h2::client::SendRequest<Bytes>,
    secure: bool,
}

impl H2Connection {
    /// Runs the HTTP/2 client handshake over `io` (TCP for `ws://`, TLS that
    /// selected ALPN `h2` for `wss://`, told by `secure`), drives the
    /// connection on a task of its own, and waits for the server's SETTINGS,
    /// within [`Config::handshake_timeout`].
    ///
    /// # Errors
    ///
    /// [`Error::Http2`] when the handshake fails (a server that does not
    /// speak HTTP/2), [`Error::HandshakeTimeout`].
    pub async fn handshake<S>(
        io: S,
        secure: bool,
        config: &Config,
        http2: &Http2Config,
    ) -> Result<Self, Error>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let work = async {
            let (send, mut conn) = h2::client::Builder::new()
                .initial_window_size(http2.stream_window)
                .initial_connection_window_size(http2.connection_window)
                .max_send_buffer_size(http2.max_send_buffer)
                .max_concurrent_streams(http2.max_concurrent_streams)
                .enable_push(false)
                .handshake::<_, Bytes>(io)
                .await?;
            let mut ping = conn.ping_pong().expect("taken once");
            tokio::spawn(async move {
                if let Err(error) = conn.await {
                    tracing::debug!(%error, "HTTP/2 connection ended");
                }
            });
            // The server's SETTINGS come before its answer to our PING.
            ping.ping(h2::Ping::opaque()).await?;
            Ok::<_, Error>(Self { send, secure })
        };
        match tokio::time::timeout(config.handshake_timeout, work).await {
            Ok(result) => result,
            Err(_) => Err(Error::HandshakeTimeout),
        }
    }

    /// Whether the server advertised `SETTINGS_ENABLE_CONNECT_PROTOCOL`, so
    /// that WebSockets can be opened on this connection.
    pub fn supports_websocket(&self) -> bool {
        self.send.is_extended_connect_protocol_enabled()
    }

    /// Opens a WebSocket on this connection as `request` says (its URL's path
    /// and query, subprotocols, origin, headers; its transport options are
    /// not used), within [`Config::handshake_timeout`].
    ///
    /// # Errors
    ///
    /// [`Error::Http2`] when the server did not advertise the setting or the
    /// connection failed; [`Error::HttpStatus`] when the server refused;
    /// [`Error::ClientHandshake`] when its answer does not complete the
    /// handshake; [`Error::HandshakeTimeout`].
    pub async fn open(
        &self,
        request: &ClientRequest,
        config: &Config,
    ) -> Result<H2WebSocket, Error> {
        match tokio::time::timeout(config.handshake_timeout, self.open_parts(request, config)).await
        {
            Ok(Ok((stream, conn, protocol))) => {
                Ok(WebSocket::from_parts(stream, conn, config, protocol))
            }
            Ok(Err(error)) => Err(error),
            Err(_) => Err(Error::HandshakeTimeout),
        }
    }

    /// The stream, protocol state and subprotocol of a new WebSocket.
    async fn open_parts(
        &self,
        request: &ClientRequest,
        config: &Config,
    ) -> Result<(H2Stream, Connection, Option<Arc<str>>), Error> {
        let mut handshake: ClientHandshake = request.handshake(config.deflate.as_ref())?;
        let mut head = handshake.extended_connect_request(self.secure);
        head.extensions_mut()
            .insert(h2::ext::Protocol::from_static("websocket"));
        let mut send = self.send.clone().ready().await?;
        let (response, stream) = send.send_request(head, false)?;
        let response = response.await?;
        let (parts, mut body) = response.into_parts();
        let accepted = match handshake.check_extended_connect(Response::from_parts(parts, ())) {
            Ok(accepted) => accepted,
            Err(ResponseError::Rejected { response, .. }) => {
                let body = read_body(&mut body, 64 * 1024).await;
                let (parts, ()) = response.into_parts();
                return Err(Error::HttpStatus(Box::new(Response::from_parts(
                    parts,
                    Some(body),
                ))));
            }
            Err(error) => return Err(ClientHandshakeError::Response(error).into()),
        };
        let (conn, protocol) = client_connection(&accepted, config)?;
        Ok((H2Stream::new(stream, body), conn, protocol))
    }
}

/// The body of a refusal, up to `limit` bytes.
async fn read_body(body: &mut RecvStream, limit: usize) -> Vec<u8> {
    let mut out = Vec::new();
    while out.len() < limit {
        match body.data().await {
            Some(Ok(data)) => {
                let _ = body.flow_control().release_capacity(data.len());
                let take = data.len().min(limit - out.len());
                out.extend_from_slice(&data[..take]);
            }
            _ => break,
        }
    }
    out
}

/// Host, port and TLS flag, as [`transport::target`] gives them.
type Origin = (String, u16, bool);

/// What a [`Pool`] knows of an origin.
#[derive(Debug, Clone)]
enum Known {
    /// An HTTP/2 connection that accepts WebSockets.
    Http2(H2Connection),
    /// The server speaks only HTTP/1.1 here, or HTTP/2 without the setting.
    Http1,
}

/// HTTP/2 connections shared by [`crate::connect_with`] calls: one per origin
/// (scheme, host, port), opened on first use, replaced when it fails; an
/// origin that does not offer WebSockets over HTTP/2 is remembered and
/// reached over HTTP/1.1 from then on (whatever made the HTTP/2 attempt
/// fail, for as long as the pool lives). Cheap to clone (one shared pool).
/// A connection stays open while the pool holds it, with or without
/// WebSockets, until the server closes it.
///
/// Set it as [`crate::transport::Options::http2`].
#[derive(Debug, Clone, Default)]
pub struct Pool {
    origins: Arc<Mutex<HashMap<Origin, Known>>>,
    http2: Http2Config,
}

impl Pool {
    /// An empty pool with default [`Http2Config`].
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty pool whose connections use `http2`.
    pub fn with_config(http2: Http2Config) -> Self {
        Self {
            origins: Arc::default(),
            http2,
        }
    }

    fn known(&self, key: &Origin) -> Option<Known> {
        self.origins.lock().ok()?.get(key).cloned()
    }

    fn remember(&self, key: Origin, known: Option<Known>) {
        if let Ok(mut origins) = self.origins.lock() {
            match known {
                Some(known) => origins.insert(key, known),
                None => origins.remove(&key),
            };
        }
    }

    /// Whether the pool holds an HTTP/2 connection that accepts WebSockets
    /// for `url`'s origin.
    pub fn has_http2(&self, url: &str) -> bool {
        transport::target(url)
            .ok()
            .and_then(|key| self.known(&key))
            .is_some_and(|known| matches!(known, Known::Http2(_)))
    }

    /// Whether the pool has found that `url`'s origin does not offer
    /// WebSockets over HTTP/2.
    pub fn is_http1_only(&self, url: &str) -> bool {
        transport::target(url)
            .ok()
            .and_then(|key| self.known(&key))
            .is_some_and(|known| matches!(known, Known::Http1))
    }
}

/// [`crate::connect_with`] with a [`Pool`]: a WebSocket over the origin's
/// HTTP/2 connection when it has one or one can be opened, else over a new
/// HTTP/1.1 connection. Bounded by the caller.
pub(crate) async fn connect_pooled(
    pool: &Pool,
    request: &ClientRequest,
    config: &Config,
) -> Result<WebSocket<transport::Transport>, Error> {
    let key = transport::target(request.url())?;
    if let Some(known) = pool.known(&key) {
        match known {
            Known::Http1 => return crate::client::connect_http1(request, config).await,
            Known::Http2(h2) => match h2.open_parts(request, config).await {
                Ok(parts) => return Ok(into_transport(parts, config)),
                // A dead connection: forget it and open another.
                Err(Error::Http2(error)) if !error.is_remote() || error.is_go_away() => {
                    tracing::debug!(%error, "HTTP/2 connection unusable; reconnecting");
                    pool.remember(key.clone(), None);
                }
                Err(error) => return Err(error),
            },
        }
    }
    let io = transport::open_alpn(request.url(), &request.transport, config.nodelay, true).await?;
    if let Some(tcp) = io.tcp_stream() {
        config.apply_socket_options(tcp)?;
    }
    let secure = io.is_tls();
    if secure && io.alpn_protocol() != Some(ALPN_H2) {
        pool.remember(key, Some(Known::Http1));
        return crate::client::client_handshake_inner(io, request, config).await;
    }
    // TLS with ALPN h2, or prior-knowledge h2c (an HTTP/1.1 server refuses
    // the preface: fall back on a new connection).
    let budget = config.handshake_timeout / 2;
    let h2config = Config {
        handshake_timeout: budget,
        ..config.clone()
    };
    match H2Connection::handshake(io, secure, &h2config, &pool.http2).await {
        Ok(h2) if h2.supports_websocket() => {
            pool.remember(key, Some(Known::Http2(h2.clone())));
            Ok(into_transport(
                h2.open_parts(request, config).await?,
                config,
            ))
        }
        Ok(_) => {
            tracing::debug!("server does not advertise extended CONNECT; using HTTP/1.1");
            pool.remember(key, Some(Known::Http1));
            crate::client::connect_http1(request, config).await
        }
        Err(error) => {
            tracing::debug!(%error, "no HTTP/2; using HTTP/1.1");
            pool.remember(key, Some(Known::Http1));
            crate::client::connect_http1(request, config).await
        }
    }
}

/// A WebSocket over HTTP/2 as one over a client [`transport::Transport`].
fn into_transport(
    (stream, conn, protocol): (H2Stream, Connection, Option<Arc<str>>),
    config: &Config,
) -> WebSocket<transport::Transport> {
    WebSocket::from_parts(
        transport::Transport::Http2(Box::new(stream)),
        conn,
        config,
        protocol,
    )
}
