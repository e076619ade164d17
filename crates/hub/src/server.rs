//! Serving a hub on a TCP port: the hub protocol on `/ws`, a plain echo on
//! `/echo` (when configured), and the HTTP endpoints (web pages, `/metrics`,
//! `/healthz`, `/readyz`), all on the same port, over TCP or TLS, in
//! HTTP/1.1 or HTTP/2 (ALPN `h2` on TLS, prior-knowledge h2c on TCP; RFC
//! 8441 extended CONNECT for the WebSockets).
//!
//! Invariants:
//! - Both HTTP versions take the same paths: a WebSocket request is
//!   admitted by [`admit`] (limits) then [`decide_counted`] (origin,
//!   subprotocol, token), whichever version it came in; every other request
//!   is answered by [`http_route`]. Each HTTP/2 stream that is a WebSocket
//!   counts as one connection for the limits and the metrics.
//! - An HTTP/2 connection is bounded like a request head (handshake
//!   timeout, header size), carries at most 100 streams at once, is closed
//!   after its idle timeout without a WebSocket or request, and on shutdown
//!   sends GOAWAY while its WebSockets get close 1001 ([`duplex::http2`]).
//! - Every request head (and a trusted proxy's PROXY header before it, see
//!   [`crate::proxy`]) is read within the handshake timeout and size
//!   limits; anything else than a known route gets a plain HTTP error (404,
//!   405), never a hang.
//! - Every WebSocket endpoint (`/ws`, `/echo`) takes the same path in:
//!   the connection limits (503 total, 429 + `Retry-After` per client
//!   address, before any other work), the origin ([`crate::origin`], 403),
//!   the subprotocol (400, `/ws` only), a handshake token (401; on `/echo`
//!   required when the hub has `[auth]`). A refusal is counted by reason in
//!   the metrics; an accepted connection in the connection metrics.
//! - The client address the limits count is the TCP peer's, unless the
//!   peer is a trusted proxy ([`crate::proxy`]).
//! - `/metrics`, `/dashboard` and the `$sys` channels are open or protected
//!   as [`crate::config::AdminConfig`] says; protected, they want the admin
//!   token (compared in constant time) or a JWT granting `$sys:stats`.
//! - `/echo` echoes under the command rate limit: a message over the rate
//!   is dropped (not echoed) and counts a strike; the limiter's close
//!   verdict closes with 1008.
//! - Plain HTTP/1.1 responses close the connection after the response; an
//!   HTTP/2 connection stays open for more requests.
//! - Shutdown: stop accepting (a `SO_REUSEPORT` listener leaves its group
//!   at once, so new connections go to the other processes on the port),
//!   `/readyz` false, close 1001 to every WebSocket with a reconnect delay
//!   spread over `drain_spread` in its reason (the drain), wait up to the
//!   grace period, then end what is left without
//!   a close handshake, as when [`Server::run`] is dropped.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use duplex::UpgradeRequest;
use duplex::http2;
use duplex::proto::handshake::server::write_response;
use duplex::server::Incoming;
use duplex::tls::TlsAcceptor;
use duplex::{Reject, WebSocket, accept_incoming, read_request};
use futures_util::{SinkExt, StreamExt};
use http::{Method, Response, StatusCode, header};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use crate::auth::{Identity, token_from_request};
use crate::console;
use crate::hub::{Hub, HubError};
use crate::limits::{RateLimiter, Ticket, Verdict};
use crate::metrics::{RejectReason, Transport, TransportGuard};
use crate::origin::OriginPolicy;
use crate::proxy::{self, Proxies};
use crate::session::{self, Handshake};
use crate::web;

mod gate;

pub(crate) use gate::{admin_allowed, admit_http, forwarded_headers, is_admin_token};
use gate::{admit, decide_counted, forwarded};

/// A hub bound to its port, ready to run.
pub struct Server {
    hub: Arc<Hub>,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    gate: Arc<Gate>,
}

/// What a connection is checked against before it is served, besides the
/// hub's own settings: the origins it may come from, and whom to believe
/// about the client's address; and the HTTP/2 server its HTTP/2
/// connections are served with.
#[derive(Debug)]
pub(crate) struct Gate {
    origins: Arc<OriginPolicy>,
    proxies: Proxies,
    http2: http2::Server,
}

impl Gate {
    fn new(hub: &Arc<Hub>, port: u16) -> Self {
        let pages_hub = hub.clone();
        let invalid_hub = hub.clone();
        let origins = Arc::new(OriginPolicy::new(&hub.config, port));
        let (console_hub, console_origins) = (hub.clone(), origins.clone());
        let http2 = http2::Server::new(hub.ws_config.clone())
            .http2(http2::Http2Config::default())
            .shutdown(hub.shutdown.clone())
            .pages(move |request| {
                finish(http_route(&pages_hub, request), request.method()).map(bytes::Bytes::from)
            })
            .on_invalid(move |_| invalid_hub.metrics.rejected(RejectReason::Handshake))
            .requests("/console/", console::max_body(hub), move |request| {
                Box::pin(console::handle_h2(
                    console_hub.clone(),
                    console_origins.clone(),
                    request,
                ))
            });
        Self {
            origins,
            proxies: Proxies::new(&hub.config),
            http2,
        }
    }
}

/// How long an identity from the admin token lasts (it has no `exp`).
const ADMIN_IDENTITY_SECS: u64 = 30 * 24 * 3600;

/// The user name of a connection that presented the admin token.
const ADMIN_USER: &str = "$admin";

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("listener", &self.listener)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Binds `hub`'s configured listen address (and loads its TLS files).
    /// With [`crate::HubConfig::reuse_port`], the socket has `SO_REUSEPORT`
    /// (several processes may listen on the port) and a backlog of 4096
    /// (capped by `net.core.somaxconn`).
    pub async fn bind(hub: Arc<Hub>) -> Result<Self, HubError> {
        let addr = hub.config.listen;
        let listener = if hub.config.reuse_port {
            bind_reuse_port(addr)
        } else {
            TcpListener::bind(addr).await
        }
        .map_err(|error| HubError::Bind { addr, error })?;
        Self::from_listener(hub, listener)
    }

    /// Serves `hub` on an already bound listener (tests bind `127.0.0.1:0`).
    pub fn from_listener(hub: Arc<Hub>, listener: TcpListener) -> Result<Self, HubError> {
        let tls = match &hub.config.tls {
            None => None,
            // ALPN `h2` before `http/1.1`: a client that offers both gets
            // HTTP/2 (pages and WebSockets on one connection).
            Some(tls) => Some(TlsAcceptor::from(duplex::tls::with_h2_alpn(
                &*duplex::tls::server_config_from_pem(&tls.cert, &tls.key)
                    .map_err(HubError::Tls)?,
            ))),
        };
        let port = listener
            .local_addr()
            .map_or(hub.config.listen.port(), |a| a.port());
        let gate = Arc::new(Gate::new(&hub, port));
        Ok(Self {
            hub,
            listener,
            tls,
            gate,
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| self.hub.config.listen)
    }

    /// The hub it serves.
    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// Serves until `until` completes, then shuts down gracefully (see the
    /// module docs). Returns how many connections were still open when the
    /// grace period ran out.
    pub async fn run(self, until: impl Future<Output = ()>) -> usize {
        let Self {
            hub,
            listener,
            tls,
            gate,
        } = self;
        let scheme = if tls.is_some() { "wss" } else { "ws" };
        tracing::info!(address = %listener.local_addr().map_or(hub.config.listen, |a| a), scheme, "hub listening");
        let housekeeping = tokio::spawn(hub.clone().housekeeping());
        let events = {
            let registry = hub.registry.clone();
            tokio::spawn(hub.events.clone().run(move || {
                registry.disconnect_all(1001, "declared dead by the cluster: reconnect");
            }))
        };
        // The tasks that read requests (and serve plain HTTP and `/echo`)
        // are in `tasks`; hub sessions run in tasks of their own, counted
        // by their admission tickets (see `serve_connection`), and end when
        // this future is dropped.
        let mut tasks = JoinSet::new();
        let _abort = AbortOnDrop(hub.clone());
        tokio::pin!(until);
        loop {
            tokio::select! {
                () = &mut until => break,
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                accepted = listener.accept() => {
                    let (tcp, peer) = match accepted {
                        Ok(pair) => pair,
                        Err(error) => {
                            // Out of file descriptors and the like: wait, don't spin.
                            tracing::warn!(%error, "accept failed; pausing");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let _ = hub.ws_config.apply_socket_options(&tcp);
                    let (hub, tls, gate) = (hub.clone(), tls.clone(), gate.clone());
                    // Boxed: tokio moves a task's future whole at each of
                    // its steps (spawn, start, end); a box moves as a pointer.
                    tasks.spawn(Box::pin(serve_accepted(hub, gate, tls, tcp, peer)));
                }
            }
        }
        drop(listener);
        let sessions = &hub.admission;
        // What ended connections and what was refused since start (before
        // the drain's own 1001s): after a storm, the record of why clients
        // left this node, from the node itself.
        let breakdown = hub.metrics.breakdown();
        tracing::info!(
            sessions = sessions.current(),
            other = tasks.len(),
            closes = %breakdown["closes"],
            refused = %breakdown["rejected"],
            "shutting down"
        );
        let delays = hub.begin_shutdown();
        tracing::info!(
            clients = delays.len(),
            spread = ?hub.config.drain_spread,
            "draining: each client told when to reconnect, spread over the window"
        );
        let deadline = tokio::time::Instant::now() + hub.config.shutdown_grace;
        let drained = async {
            while tasks.join_next().await.is_some() {}
            sessions.all_released().await;
        };
        let _ = tokio::time::timeout_at(deadline, drained).await;
        housekeeping.abort();
        // The sessions' last events are handed on (within the grace).
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        hub.events.settle(left).await;
        events.abort();
        let left = tasks.len() + sessions.current();
        hub.abort_sessions();
        tasks.abort_all();
        left
    }
}

/// The listen backlog of a `SO_REUSEPORT` listener: room for a reconnection
/// storm (the kernel caps it at `net.core.somaxconn`).
const REUSE_PORT_BACKLOG: u32 = 4096;

/// A listener on `addr` with `SO_REUSEADDR` and `SO_REUSEPORT`.
#[cfg(unix)]
fn bind_reuse_port(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    socket.bind(addr)?;
    socket.listen(REUSE_PORT_BACKLOG)
}

/// `SO_REUSEPORT` is a Unix socket option.
#[cfg(not(unix))]
fn bind_reuse_port(_addr: SocketAddr) -> std::io::Result<TcpListener> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "reuse_port needs a Unix system",
    ))
}

/// The peer a connection speaks for: the client a trusted proxy's PROXY
/// header names (read within the handshake timeout), or the TCP peer.
/// `None` when a trusted proxy's header is missing or bad: the connection
/// is dropped.
async fn proxied_peer(
    hub: &Hub,
    gate: &Gate,
    tcp: &mut TcpStream,
    peer: SocketAddr,
) -> Option<SocketAddr> {
    if !gate.proxies.expects_proxy_header(peer.ip()) {
        return Some(peer);
    }
    let read = tokio::time::timeout(
        hub.ws_config.handshake_timeout,
        proxy::read_header(tcp, peer),
    )
    .await;
    match read {
        Ok(Ok(client)) => Some(client),
        Ok(Err(error)) => {
            hub.metrics.rejected(RejectReason::Handshake);
            tracing::debug!(%peer, %error, "refused a connection from a trusted proxy");
            None
        }
        Err(_) => {
            hub.metrics.rejected(RejectReason::Handshake);
            tracing::debug!(%peer, "no PROXY header within the handshake timeout");
            None
        }
    }
}

/// Serves one accepted TCP connection: its PROXY header if a trusted proxy
/// sent it, then TLS or plain HTTP. The future every connection starts
/// with: the TLS path (most of 12 KiB: the TLS stream's state and the
/// handshake over it) and HTTP/2 are boxed, so a plain connection carries
/// only its own path (see `an_accepted_connection_starts_small`).
async fn serve_accepted(
    hub: Arc<Hub>,
    gate: Arc<Gate>,
    tls: Option<TlsAcceptor>,
    mut tcp: TcpStream,
    peer: SocketAddr,
) {
    let Some(peer) = proxied_peer(&hub, &gate, &mut tcp, peer).await else {
        return;
    };
    match tls {
        Some(acceptor) => Box::pin(serve_tls(hub, gate, acceptor, tcp, peer)).await,
        None => serve_plain(hub, gate, tcp, peer).await,
    }
}

async fn serve_tls(
    hub: Arc<Hub>,
    gate: Arc<Gate>,
    acceptor: TlsAcceptor,
    tcp: TcpStream,
    peer: SocketAddr,
) {
    match duplex::tls::accept(&acceptor, tcp, hub.ws_config.handshake_timeout).await {
        Ok(stream) if stream.get_ref().1.alpn_protocol() == Some(http2::ALPN_H2) => {
            serve_h2(hub, gate, stream, peer).await;
        }
        Ok(stream) => serve_connection(hub, gate, stream, peer).await,
        Err(error) => {
            hub.metrics.rejected(RejectReason::Handshake);
            tracing::debug!(%peer, %error, "TLS handshake failed");
        }
    }
}

/// A plain TCP connection: HTTP/2 with prior knowledge (`h2c`) when it
/// starts with the HTTP/2 preface (looked at within the handshake timeout,
/// nothing consumed), else HTTP/1.1.
async fn serve_plain(hub: Arc<Hub>, gate: Arc<Gate>, tcp: TcpStream, peer: SocketAddr) {
    match tokio::time::timeout(hub.ws_config.handshake_timeout, http2::is_h2c_preface(&tcp)).await {
        // Boxed, as TLS: the HTTP/1.1 path is the one to keep small.
        Ok(Ok(true)) => Box::pin(serve_h2(hub, gate, tcp, peer)).await,
        Ok(Ok(false)) => serve_connection(hub, gate, tcp, peer).await,
        Ok(Err(error)) => {
            hub.metrics.rejected(RejectReason::Handshake);
            tracing::debug!(%peer, %error, "connection closed before a request");
        }
        Err(_) => {
            hub.metrics.rejected(RejectReason::Handshake);
            tracing::debug!(%peer, "no request within the handshake timeout");
        }
    }
}

/// What an accepted WebSocket request carries to its service: which
/// endpoint, the token's identity, and its admission.
struct Admitted {
    endpoint: Endpoint,
    identity: Option<Identity>,
    ticket: Ticket,
    /// The upgrade request's headers the proxy hooks forward.
    forwarded: http::HeaderMap,
}

/// Serves one HTTP/2 connection (h2c, or TLS with ALPN `h2`) until the
/// client, its idle timeout or shutdown ends it: each extended CONNECT on
/// `/ws` or `/echo` is admitted by [`admit`] and [`decide_counted`], as an
/// HTTP/1.1 upgrade is, and counted as one connection; every other request
/// is answered by [`http_route`]. On shutdown the connection sends GOAWAY and
/// its WebSockets close with 1001 ([`http2::Server::shutdown`]).
async fn serve_h2<S>(hub: Arc<Hub>, gate: Arc<Gate>, io: S, peer: SocketAddr)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    hub.metrics.http_connection(Transport::Http2);
    let decide = |request: &UpgradeRequest| {
        let client = SocketAddr::new(
            gate.proxies.client_of(peer.ip(), request.headers()),
            peer.port(),
        );
        let endpoint = match request.path() {
            "/ws" => Endpoint::Hub,
            "/echo" if hub.config.echo => Endpoint::Echo,
            _ => {
                return Err(Reject::new(
                    StatusCode::NOT_FOUND,
                    "no WebSocket here; try /ws",
                ));
            }
        };
        let ticket = admit(&hub, client)?;
        let (accept, identity) = decide_counted(&hub, &gate, endpoint, request, client)?;
        Ok((
            accept,
            Admitted {
                endpoint,
                identity,
                ticket,
                forwarded: forwarded(&hub, request),
            },
        ))
    };
    let served = gate
        .http2
        .serve_connection_with(io, decide, |ws, _request, admitted| {
            hub.metrics.accepted();
            serve_websocket(hub.clone(), ws, admitted, Transport::Http2)
        })
        .await;
    if let Err(error) = served {
        tracing::debug!(%peer, %error, "HTTP/2 connection ended");
    }
}

/// Runs an accepted WebSocket's service (a hub session, or `/echo`),
/// counted by transport while it lives.
async fn serve_websocket<S>(
    hub: Arc<Hub>,
    ws: WebSocket<S>,
    admitted: Admitted,
    transport: Transport,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let _counted = TransportGuard::new(&hub.metrics, transport);
    let Admitted {
        endpoint,
        identity,
        ticket,
        forwarded,
    } = admitted;
    match endpoint {
        Endpoint::Hub => {
            let handshake = Handshake {
                identity,
                ticket,
                forwarded,
            };
            session::run(hub, ws, handshake).await;
        }
        Endpoint::Echo => echo_loop(hub, ws, ticket).await,
    }
}

/// Ends the hub's sessions when [`Server::run`] ends or is dropped: they run
/// in tasks of their own, which no `JoinSet` holds (that would cost an entry
/// per connection for its whole life).
struct AbortOnDrop(Arc<Hub>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort_sessions();
    }
}

/// Reads one request and routes it; a hub session goes on in a task of its
/// own.
///
/// A task's future keeps the space of its largest state (and of its
/// arguments) for its whole life, so the hub session, which lives for
/// hours, does not run in this task: this one (reading the request, the
/// handshake, plain HTTP answers) ends once it has started the session.
async fn serve_connection<S>(hub: Arc<Hub>, gate: Arc<Gate>, io: S, peer: SocketAddr)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    hub.metrics.http_connection(Transport::Http1);
    if let Some((ws, handshake)) = route(&hub, &gate, io, peer).await {
        // Boxed: the task's cell then holds a pointer, not a future
        // rounded up to tokio's 128-byte cell alignment. Nothing else goes
        // with the session's own future (not even a transport count: HTTP/1.1
        // WebSockets are counted as the open connections that are not
        // HTTP/2's), so an idle session costs its WebSocket and its session.
        tokio::spawn(Box::pin(session::run(hub, ws, handshake)));
    }
}

/// Reads the request and serves it, except for a hub session, which it
/// returns upgraded for [`serve_connection`] to start.
async fn route<S>(
    hub: &Arc<Hub>,
    gate: &Gate,
    mut io: S,
    peer: SocketAddr,
) -> Option<(WebSocket<S>, Handshake)>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let incoming = match read_request(&mut io, &hub.ws_config).await {
        Ok(incoming) => incoming,
        Err(error) => {
            hub.metrics.rejected(RejectReason::Handshake);
            tracing::debug!(%peer, %error, "bad request");
            return None;
        }
    };
    let client = SocketAddr::new(
        gate.proxies
            .client_of(peer.ip(), incoming.request.headers()),
        peer.port(),
    );
    let path = incoming.request.uri().path().to_owned();
    match (path.as_str(), incoming.wants_upgrade()) {
        ("/ws", true) => {
            let (ws, identity, ticket, forwarded) =
                upgrade(hub, gate, Endpoint::Hub, io, incoming, client).await?;
            let handshake = Handshake {
                identity,
                ticket,
                forwarded,
            };
            return Some((ws, handshake));
        }
        // Boxed: the echo loop is long-lived, and this future is the one
        // every connection starts with, so it should not carry that space.
        ("/echo", true) if hub.config.echo => {
            Box::pin(echo_socket(hub.clone(), gate, io, incoming, client)).await;
        }
        (_, true) => {
            let response = plain(StatusCode::NOT_FOUND, "no WebSocket here; try /ws");
            respond(&mut io, response).await;
        }
        // Boxed, as the echo: rare, and this future starts every connection.
        (console, false) if console.starts_with("/console/") => {
            let response =
                Box::pin(console::serve_http1(hub, &gate.origins, &mut io, incoming)).await;
            respond(&mut io, response).await;
        }
        // Boxed, as `/echo`: a stream lives long (in a task of its own).
        (crate::sse::SESSION_PATH | crate::sse::SSE_PATH, false) if hub.config.http.enabled => {
            Box::pin(crate::sse::serve(hub.clone(), gate, io, incoming, client)).await;
        }
        (_, false) => {
            let response = http_route(hub, &incoming.request);
            respond(&mut io, finish(response, incoming.request.method())).await;
        }
    }
    None
}

/// A WebSocket endpoint of the hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    /// `/ws`, the hub protocol.
    Hub,
    /// `/echo`.
    Echo,
}

/// The handshake of a WebSocket endpoint: admission, then [`decide`];
/// `None` when refused. `client` is the address the limits count.
async fn upgrade<S>(
    hub: &Hub,
    gate: &Gate,
    endpoint: Endpoint,
    io: S,
    incoming: Incoming,
    client: SocketAddr,
) -> Option<(WebSocket<S>, Option<Identity>, Ticket, http::HeaderMap)>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let ticket = match admit(hub, client) {
        Ok(ticket) => ticket,
        Err(reject) => {
            let mut io = io;
            let mut response = plain(reject.status, &reject.reason);
            response.headers_mut().extend(*reject.headers);
            respond(&mut io, response).await;
            return None;
        }
    };
    // A token naming a JWKS key not held: the keys are fetched first (the
    // decision below cannot wait).
    if let Some(verifier) = &hub.verifier
        && let Some(token) =
            token_from_request(incoming.request.headers(), incoming.request.uri().query())
    {
        verifier.prepare(&token).await;
    }
    let mut identity = None;
    let mut headers = http::HeaderMap::new();
    let mut refused = false;
    let decided = accept_incoming(
        io,
        incoming,
        &hub.ws_config,
        |request| match decide_counted(hub, gate, endpoint, request, client) {
            Ok((accept, id)) => {
                identity = id;
                headers = forwarded(hub, request);
                Ok(accept)
            }
            Err(reject) => {
                refused = true;
                Err(reject)
            }
        },
    )
    .await;
    let mut ws = match decided {
        Ok(ws) => ws,
        Err(error) => {
            // A refusal of `decide_counted` is counted and logged there;
            // what is left is an invalid upgrade request.
            if !refused {
                hub.metrics.rejected(RejectReason::Handshake);
                tracing::debug!(peer = %client, %error, "upgrade refused");
            }
            return None;
        }
    };
    hub.metrics.accepted();
    ws.set_shutdown(hub.shutdown.watch());
    Some((ws, identity, ticket, headers))
}

/// `/echo` over HTTP/1.1: the upgrade, then [`echo_loop`].
async fn echo_socket<S>(hub: Arc<Hub>, gate: &Gate, io: S, incoming: Incoming, client: SocketAddr)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let Some((ws, _identity, ticket, _forwarded)) =
        upgrade(&hub, gate, Endpoint::Echo, io, incoming, client).await
    else {
        return;
    };
    echo_loop(hub, ws, ticket).await;
}

/// `/echo`: every message back as it came, under the command rate limit
/// and counted in the metrics like a hub connection.
async fn echo_loop<S>(hub: Arc<Hub>, mut ws: WebSocket<S>, ticket: Ticket)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    hub.metrics.connection_opened();
    let mut rate = RateLimiter::new(crate::limits::now());
    let mut code = None;
    while let Some(Ok(message)) = ws.next().await {
        let length = message.payload().len();
        hub.metrics.message_in(length);
        let verdict = rate.check(&hub.rate_policy, crate::limits::now());
        if verdict != Verdict::Allow {
            hub.metrics.rate_limited();
        }
        if let Some(close) = verdict.close() {
            let _ = ws
                .close(duplex::CloseCode::from(close.code), close.reason)
                .await;
            code = Some(close.code);
            break;
        }
        if verdict == Verdict::Reject {
            continue;
        }
        if ws.feed(message).await.is_err() {
            break;
        }
        hub.metrics.messages_out(1, length);
    }
    let code = match code {
        Some(code) => code,
        None => {
            let _ = tokio::time::timeout(hub.ws_config.close_timeout, ws.flush()).await;
            ws.close_info().map_or(1006, |info| u16::from(info.code))
        }
    };
    hub.metrics.connection_closed(code);
    drop(ticket);
}

/// The plain HTTP routes, for both HTTP versions (an HTTP/2 connection's
/// requests other than an extended CONNECT come here too).
fn http_route(hub: &Hub, request: &http::Request<()>) -> Response<Vec<u8>> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "only GET");
        response
            .headers_mut()
            .insert(header::ALLOW, http::HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    let path = request.uri().path();
    match path {
        "/healthz" => plain(StatusCode::OK, "ok"),
        "/readyz" if hub.is_ready() => plain(StatusCode::OK, "ready"),
        "/readyz" => plain(StatusCode::SERVICE_UNAVAILABLE, "not ready"),
        "/metrics" | "/dashboard" | "/dashboard.html" if !admin_allowed(hub, request) => {
            let mut response = plain(
                StatusCode::UNAUTHORIZED,
                "this page needs the admin token or a token granting $sys:stats: \
                 send Authorization: Bearer TOKEN, or open it with ?token=TOKEN \
                 (docs/security.md)",
            );
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                http::HeaderValue::from_static("Bearer realm=\"duplex admin\""),
            );
            response
        }
        "/metrics" => with_type(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            {
                let mut text = hub.metrics.render();
                hub.events.metrics.render(&mut text);
                text.into_bytes()
            },
        ),
        "/echo" if !hub.config.echo => plain(StatusCode::NOT_FOUND, "not found"),
        // Served by `crate::sse` over HTTP/1.1; here over HTTP/2.
        crate::sse::SESSION_PATH | crate::sse::SSE_PATH if hub.config.http.enabled => plain(
            StatusCode::HTTP_VERSION_NOT_SUPPORTED,
            "the HTTP transports are served over HTTP/1.1",
        ),
        "/ws" | "/echo" => {
            let mut response = plain(StatusCode::UPGRADE_REQUIRED, "this is a WebSocket endpoint");
            let headers = response.headers_mut();
            headers.insert(header::UPGRADE, http::HeaderValue::from_static("websocket"));
            headers.insert(
                header::SEC_WEBSOCKET_VERSION,
                http::HeaderValue::from_static("13"),
            );
            response
        }
        _ => match web::asset(path) {
            Some((content_type, body)) => with_type(StatusCode::OK, content_type, body.to_vec()),
            None => plain(StatusCode::NOT_FOUND, "not found"),
        },
    }
}

/// `response` as sent for a request with `method`: with `Content-Length`,
/// and without its body for `HEAD`.
fn finish(mut response: Response<Vec<u8>>, method: &Method) -> Response<Vec<u8>> {
    let length = response.body().len();
    response
        .headers_mut()
        .insert(header::CONTENT_LENGTH, http::HeaderValue::from(length));
    if method == Method::HEAD {
        response.body_mut().clear();
    }
    response
}

pub(crate) fn plain(status: StatusCode, text: &str) -> Response<Vec<u8>> {
    let mut body = text.as_bytes().to_vec();
    body.push(b'\n');
    with_type(status, "text/plain; charset=utf-8", body)
}

fn with_type(status: StatusCode, content_type: &'static str, body: Vec<u8>) -> Response<Vec<u8>> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    headers.insert(
        header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-cache"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        http::HeaderValue::from_static("nosniff"),
    );
    response
}

/// Writes `response` (with `Content-Length` and `Connection: close`) and
/// shuts the connection down.
pub(crate) async fn respond<S>(io: &mut S, mut response: Response<Vec<u8>>)
where
    S: AsyncWrite + Unpin,
{
    let length = response.body().len();
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, http::HeaderValue::from_static("close"));
    headers
        .entry(header::CONTENT_LENGTH)
        .or_insert_with(|| http::HeaderValue::from(length));
    let mut out = BytesMut::new();
    write_response(&response, &mut out);
    let _ = io.write_all(&out).await;
    let _ = io.shutdown().await;
}

#[cfg(test)]
mod tests {
    /// The task that reads the request ends once a hub session starts: its
    /// future (the handshake's state) is short-lived, but every connection
    /// allocates it, and the TLS and HTTP/2 paths (boxed) do not count in it.
    #[tokio::test]
    async fn an_accepted_connection_starts_small() {
        let hub = crate::Hub::new(crate::HubConfig::default()).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let gate = std::sync::Arc::new(super::Gate::new(&hub, addr.port()));
        let task = super::serve_accepted(hub.clone(), gate, None, client, addr);
        let size = std::mem::size_of_val(&task);
        eprintln!("accepted connection's future: {size} bytes");
        assert!(
            size <= 3584,
            "an accepted connection's future grew to {size} bytes"
        );
    }

    /// Unreadable TLS files and auth keys end in errors that say which file
    /// and keep why (the I/O error) as their cause.
    #[tokio::test]
    async fn setup_errors_keep_their_causes() {
        use crate::HubError;
        use crate::auth::KeyError;
        use duplex::TlsError;
        use duplex::tls::rustls::pki_types::pem;

        let dir = std::env::temp_dir().join(format!("duplex-hub-setup-{}", std::process::id()));
        let mut config = crate::HubConfig::default();
        config.tls = Some(crate::config::TlsConfig {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        });
        let hub = crate::Hub::new(config).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let error = super::Server::from_listener(hub, listener).unwrap_err();
        assert!(
            matches!(
                &error,
                HubError::Tls(duplex::Error::Tls(TlsError::CertificateFile {
                    path,
                    source: pem::Error::Io(io),
                })) if path.ends_with("cert.pem") && io.kind() == std::io::ErrorKind::NotFound
            ),
            "{error:?}"
        );
        assert!(error.to_string().contains("cert.pem"), "{error}");
        assert!(std::error::Error::source(&error).is_some());

        let mut config = crate::HubConfig::default();
        config.auth = Some(crate::config::AuthConfig {
            es256_public_key: Some(dir.join("es256.pem")),
            ..crate::config::AuthConfig::default()
        });
        let error = crate::Hub::new(config).unwrap_err();
        assert!(
            matches!(
                &error,
                HubError::Auth(KeyError::Read { path, source })
                    if path.ends_with("es256.pem") && source.kind() == std::io::ErrorKind::NotFound
            ),
            "{error:?}"
        );
        assert!(
            error.to_string().starts_with("auth: cannot read "),
            "{error}"
        );
    }
}
