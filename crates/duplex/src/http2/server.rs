//! The server side of WebSocket over HTTP/2: [`Server`] serves one HTTP/2
//! connection's extended `CONNECT`s as WebSockets and its other requests as
//! pages; [`is_h2c_preface`] tells an `h2c` connection from HTTP/1.1 on one
//! port. The invariants are the module's (`super`).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use duplex_proto::handshake::server::{HandshakeError, reject_response};
use h2::RecvStream;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::Error;
use crate::config::Config;
use crate::server::{self, Accept, Reject, UpgradeRequest};
use crate::shutdown::Shutdown;
use crate::websocket::WebSocket;

use super::{H2Stream, H2WebSocket, Http2Config, PREFACE};

type Decide = dyn Fn(&UpgradeRequest) -> Result<Accept, Reject> + Send + Sync;
type Pages = dyn Fn(&Request<()>) -> Response<Bytes> + Send + Sync;

/// What a [`Server::requests`] handler returns: the response, later.
pub type Answer = Pin<Box<dyn Future<Output = Response<Bytes>> + Send>>;

/// The requests under a path prefix that an async handler answers.
struct Requests {
    prefix: String,
    max_body: usize,
    handler: Box<dyn Fn(Request<Bytes>) -> Answer + Send + Sync>,
}
type Invalid = dyn Fn(&HandshakeError) + Send + Sync;

/// An HTTP/2 server of WebSockets: settings and callbacks shared by the
/// connections it serves. Cheap to clone.
#[derive(Clone)]
pub struct Server {
    config: Arc<Config>,
    http2: Http2Config,
    decide: Arc<Decide>,
    pages: Arc<Pages>,
    requests: Option<Arc<Requests>>,
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
            requests: None,
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

    /// Answers the requests (other than an extended `CONNECT`) whose path
    /// starts with `prefix` with `handler`, on a task of its own, given the
    /// request with its body: at most `max_body` bytes, read within
    /// [`Config::handshake_timeout`] (a larger body gets 413, a slower one
    /// 408, without calling `handler`). For calls that take a body or wait
    /// on something (an API beside the pages); [`Server::pages`] answers the
    /// other paths.
    #[must_use]
    pub fn requests(
        mut self,
        prefix: impl Into<String>,
        max_body: usize,
        handler: impl Fn(Request<Bytes>) -> Answer + Send + Sync + 'static,
    ) -> Self {
        self.requests = Some(Arc::new(Requests {
            prefix: prefix.into(),
            max_body,
            handler: Box::new(handler),
        }));
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
            if let Some(requests) = &self.requests
                && head.uri().path().starts_with(requests.prefix.as_str())
            {
                let requests = requests.clone();
                let within = self.config.handshake_timeout;
                tokio::spawn(async move {
                    let response = match tokio::time::timeout(
                        within,
                        read_request_body(body, requests.max_body),
                    )
                    .await
                    {
                        Ok(Ok(bytes)) => {
                            let (parts, ()) = head.into_parts();
                            (requests.handler)(Request::from_parts(parts, bytes)).await
                        }
                        Ok(Err(status)) => {
                            reject_response(status, "the request body could not be taken")
                                .map(Bytes::from)
                        }
                        Err(_) => reject_response(
                            StatusCode::REQUEST_TIMEOUT,
                            "the request body did not arrive in time",
                        )
                        .map(Bytes::from),
                    };
                    send_whole(&mut respond, response);
                });
                return None;
            }
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

/// A request's body, at most `max` bytes (else 413), each chunk given back
/// to the peer's window as it is taken.
async fn read_request_body(mut body: RecvStream, max: usize) -> Result<Bytes, StatusCode> {
    let mut out = BytesMut::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.map_err(|_| StatusCode::BAD_REQUEST)?;
        let _ = body.flow_control().release_capacity(chunk.len());
        if out.len() + chunk.len() > max {
            return Err(StatusCode::PAYLOAD_TOO_LARGE);
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out.freeze())
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
