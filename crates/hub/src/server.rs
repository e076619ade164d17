//! Serving a hub on a TCP port: the hub protocol on `/ws`, a plain echo on
//! `/echo`, and the HTTP endpoints (web pages, `/metrics`, `/healthz`,
//! `/readyz`), all on the same port, over TCP or TLS.
//!
//! Invariants:
//! - Every request head is read within the handshake timeout and size
//!   limits; anything else than a known route gets a plain HTTP error (404,
//!   405), never a hang.
//! - `/ws` checks, in order: the connection limits (503 total, 429 per IP,
//!   before any other work), the origin (403), the subprotocol (400), a
//!   handshake token (401). A refusal is counted by reason in the metrics.
//! - Plain HTTP responses close the connection after the response.
//! - Shutdown: stop accepting, `/readyz` false, close 1001 to every
//!   WebSocket, wait up to the grace period, then end what is left without
//!   a close handshake, as when [`Server::run`] is dropped.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use duplex::server::Incoming;
use duplex::tls::TlsAcceptor;
use duplex::{Accept, Reject, WebSocket, accept_incoming, read_request};
use duplex_hub_proto::SUBPROTOCOL;
use duplex_proto::handshake::server::{UpgradeRequest, write_response};
use futures_util::{SinkExt, StreamExt};
use http::{Method, Response, StatusCode, header};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use crate::auth::token_from_request;
use crate::hub::{Hub, HubError, now_secs};
use crate::metrics::RejectReason;
use crate::session::{self, Handshake};
use crate::web;

/// A hub bound to its port, ready to run.
pub struct Server {
    hub: Arc<Hub>,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
}

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
    pub async fn bind(hub: Arc<Hub>) -> Result<Self, HubError> {
        let addr = hub.config.listen;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|error| HubError::Bind { addr, error })?;
        Self::from_listener(hub, listener)
    }

    /// Serves `hub` on an already bound listener (tests bind `127.0.0.1:0`).
    pub fn from_listener(hub: Arc<Hub>, listener: TcpListener) -> Result<Self, HubError> {
        let tls = match &hub.config.tls {
            None => None,
            Some(tls) => Some(TlsAcceptor::from(
                duplex::tls::server_config_from_pem(&tls.cert, &tls.key)
                    .map_err(|e| HubError::Tls(e.to_string()))?,
            )),
        };
        Ok(Self { hub, listener, tls })
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
        let Self { hub, listener, tls } = self;
        let scheme = if tls.is_some() { "wss" } else { "ws" };
        tracing::info!(address = %listener.local_addr().map_or(hub.config.listen, |a| a), scheme, "hub listening");
        let housekeeping = tokio::spawn(hub.clone().housekeeping());
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
                    let (hub, tls) = (hub.clone(), tls.clone());
                    tasks.spawn(async move {
                        match tls {
                            Some(acceptor) => serve_tls(hub, acceptor, tcp, peer).await,
                            None => serve_connection(hub, tcp, peer).await,
                        }
                    });
                }
            }
        }
        drop(listener);
        let sessions = &hub.admission;
        tracing::info!(
            sessions = sessions.current(),
            other = tasks.len(),
            "shutting down"
        );
        hub.begin_shutdown();
        let deadline = tokio::time::Instant::now() + hub.config.shutdown_grace;
        let drained = async {
            while tasks.join_next().await.is_some() {}
            sessions.all_released().await;
        };
        let _ = tokio::time::timeout_at(deadline, drained).await;
        housekeeping.abort();
        let left = tasks.len() + sessions.current();
        hub.abort_sessions();
        tasks.abort_all();
        left
    }
}

async fn serve_tls(hub: Arc<Hub>, acceptor: TlsAcceptor, tcp: TcpStream, peer: SocketAddr) {
    match duplex::tls::accept(&acceptor, tcp, hub.ws_config.handshake_timeout).await {
        Ok(stream) => serve_connection(hub, stream, peer).await,
        Err(error) => {
            hub.metrics.rejected(RejectReason::Handshake);
            tracing::debug!(%peer, %error, "TLS handshake failed");
        }
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
async fn serve_connection<S>(hub: Arc<Hub>, io: S, peer: SocketAddr)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    if let Some((ws, handshake)) = route(&hub, io, peer).await {
        // Boxed: the task's cell then holds a pointer, not a future
        // rounded up to tokio's 128-byte cell alignment.
        tokio::spawn(Box::pin(session::run(hub, ws, handshake)));
    }
}

/// Reads the request and serves it, except for a hub session, which it
/// returns upgraded for [`serve_connection`] to start.
async fn route<S>(hub: &Arc<Hub>, mut io: S, peer: SocketAddr) -> Option<(WebSocket<S>, Handshake)>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let incoming = match read_request(&mut io, &hub.ws_config).await {
        Ok(incoming) => incoming,
        Err(error) => {
            hub.metrics.rejected(RejectReason::Handshake);
            tracing::debug!(%peer, %error, "bad request");
            return None;
        }
    };
    let path = incoming.request.uri().path().to_owned();
    match (path.as_str(), incoming.wants_upgrade()) {
        ("/ws", true) => return upgrade_hub(hub, io, incoming, peer).await,
        // Boxed: the echo loop is long-lived, and this future is the one
        // every connection starts with, so it should not carry that space.
        ("/echo", true) => Box::pin(echo_socket(hub.clone(), io, incoming, peer)).await,
        (_, true) => {
            let response = plain(StatusCode::NOT_FOUND, "no WebSocket here; try /ws");
            respond(&mut io, response).await;
        }
        (_, false) => {
            let mut response = http_route(hub, &incoming);
            let length = response.body().len();
            response
                .headers_mut()
                .insert(header::CONTENT_LENGTH, http::HeaderValue::from(length));
            if incoming.request.method() == Method::HEAD {
                response.body_mut().clear();
            }
            respond(&mut io, response).await;
        }
    }
    None
}

/// The `/ws` handshake: admission, then [`decide`]; `None` when refused.
async fn upgrade_hub<S>(
    hub: &Hub,
    io: S,
    incoming: Incoming,
    peer: SocketAddr,
) -> Option<(WebSocket<S>, Handshake)>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let ticket = match hub.admission.try_admit(peer.ip()) {
        Ok(ticket) => ticket,
        Err(refused) => {
            hub.metrics.rejected(RejectReason::from(refused));
            let mut io = io;
            let mut response = plain(refused.status(), refused.reason());
            if refused.status() == StatusCode::TOO_MANY_REQUESTS {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, http::HeaderValue::from_static("5"));
            }
            respond(&mut io, response).await;
            return None;
        }
    };
    let mut identity = None;
    let mut refusal = None;
    let decided = accept_incoming(io, incoming, &hub.ws_config, |request| {
        match decide(hub, request) {
            Ok((accept, id)) => {
                identity = id;
                Ok(accept)
            }
            Err((reason, reject)) => {
                refusal = Some(reason);
                Err(reject)
            }
        }
    })
    .await;
    let mut ws = match decided {
        Ok(ws) => ws,
        Err(error) => {
            hub.metrics
                .rejected(refusal.unwrap_or(RejectReason::Handshake));
            tracing::debug!(%peer, %error, "upgrade refused");
            return None;
        }
    };
    hub.metrics.accepted();
    ws.set_shutdown(hub.shutdown.watch());
    Some((ws, Handshake { identity, ticket }))
}

/// Decides on a `/ws` upgrade: origin, subprotocol, handshake token.
#[allow(clippy::result_large_err)]
fn decide(
    hub: &Hub,
    request: &UpgradeRequest,
) -> Result<(Accept, Option<crate::auth::Identity>), (RejectReason, Reject)> {
    if let Some(origin) = request.origin()
        && !origin_allowed(&hub.config.allowed_origins, origin, request.host())
    {
        return Err((
            RejectReason::Origin,
            Reject::new(StatusCode::FORBIDDEN, "origin not allowed"),
        ));
    }
    let protocol = if request.protocols().is_empty() {
        None
    } else if request.protocols().iter().any(|p| p == SUBPROTOCOL) {
        Some(hub.subprotocol.clone())
    } else {
        return Err((
            RejectReason::Subprotocol,
            Reject::new(
                StatusCode::BAD_REQUEST,
                format!("unsupported hub protocol; offer {SUBPROTOCOL}"),
            ),
        ));
    };
    let identity = match token_from_request(request.headers(), request.query()) {
        None => None,
        Some(token) => {
            let Some(verifier) = &hub.verifier else {
                return Err((
                    RejectReason::Auth,
                    Reject::new(StatusCode::UNAUTHORIZED, "this hub does not take tokens"),
                ));
            };
            match verifier.verify(&token, now_secs()) {
                Ok(identity) => Some(identity),
                Err(error) => {
                    return Err((
                        RejectReason::Auth,
                        Reject::new(StatusCode::UNAUTHORIZED, format!("token refused: {error}")),
                    ));
                }
            }
        }
    };
    Ok((
        Accept {
            protocol,
            ..Accept::default()
        },
        identity,
    ))
}

/// Whether a browser at `origin` may connect to a hub reached as `host`.
fn origin_allowed(allowed: &[String], origin: &str, host: &str) -> bool {
    if allowed
        .iter()
        .any(|a| a == "*" || a.eq_ignore_ascii_case(origin))
    {
        return true;
    }
    // The hub's own pages: the origin's authority is the Host the browser
    // connected to.
    origin
        .split_once("://")
        .is_some_and(|(_, authority)| authority.eq_ignore_ascii_case(host))
}

/// `/echo`: every message back as it came.
async fn echo_socket<S>(hub: Arc<Hub>, io: S, incoming: Incoming, peer: SocketAddr)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let Ok(ticket) = hub.admission.try_admit(peer.ip()) else {
        let mut io = io;
        respond(
            &mut io,
            plain(StatusCode::SERVICE_UNAVAILABLE, "too many connections"),
        )
        .await;
        return;
    };
    let Ok(mut ws) = accept_incoming(io, incoming, &hub.ws_config, |_| Ok(Accept::default())).await
    else {
        return;
    };
    ws.set_shutdown(hub.shutdown.watch());
    while let Some(Ok(message)) = ws.next().await {
        if ws.feed(message).await.is_err() {
            break;
        }
    }
    let _ = ws.flush().await;
    drop(ticket);
}

/// The plain HTTP routes.
fn http_route(hub: &Hub, incoming: &Incoming) -> Response<Vec<u8>> {
    let request = &incoming.request;
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
        "/metrics" => with_type(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            hub.metrics.render().into_bytes(),
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

fn plain(status: StatusCode, text: &str) -> Response<Vec<u8>> {
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
async fn respond<S>(io: &mut S, mut response: Response<Vec<u8>>)
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
    /// future (the handshake's state) is short-lived, but still bounded.
    #[tokio::test]
    async fn the_handshake_task_is_bounded() {
        let hub = crate::Hub::new(crate::HubConfig::default()).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let task = super::serve_connection(hub.clone(), client, addr);
        let size = std::mem::size_of_val(&task);
        eprintln!("handshake future: {size} bytes");
        assert!(size <= 4096, "the handshake's future grew to {size} bytes");
    }
}
