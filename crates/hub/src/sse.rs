//! The hub over plain HTTP, for clients whose network breaks WebSockets:
//! a hub session whose pushes stream down as Server-Sent Events and whose
//! commands go up as `POST`s (`/session`), and a read-only stream of
//! channels for the simplest consumers (`/sse`, see [`plain`]).
//!
//! **Shape.** An HTTP session runs the *unchanged* hub session
//! (`crate::session`) over an in-memory WebSocket: a `tokio::io::duplex`
//! pipe with the hub's server `WebSocket` on one end (the hub's config,
//! heartbeats and shutdown drain) and a client `WebSocket` on the other,
//! which the session's link ([`link`]) drives: posted commands go in as
//! text (or binary) messages, and every message out becomes one numbered
//! event of the stream. So the protocol, the session rules, the limits
//! (rate, sizes, outbox: 4008), auth (the stream request's token, or the
//! first `connect`) and the close codes are the WebSocket's by
//! construction; the session's close arrives as a final `close` event. The
//! cost is memory: per HTTP session, a link task, the pipe's buffers (up
//! to 64 KiB each way while busy, none idle beyond the pipe's state) and a
//! second `WebSocket`, besides the replay window (bounded by
//! [`crate::config::HttpConfig::replay_bytes`]); see `docs/benchmarks.md`.
//!
//! **Routing.** A session's id is its node's prefix and 128 random bits:
//! it is the session's secret (only its client learns it, in the stream's
//! first event). A `POST` may land on any node: the node holding the
//! session takes it at once; any other node hands it to every node over the
//! server API's control topic (Redis), where the holder's [`Links`] takes
//! it. So no sticky sessions are needed behind a round-robin balancer. A
//! client keeps one `POST` in flight, so its commands reach the session in
//! the order sent: with Redis every post travels over the topic, even to
//! the node that holds the session, so that one that landed elsewhere is
//! not overtaken by the next one landing at home. (Controls are delivered
//! at most once: a post lost while a node's link to Redis is down is
//! noticed by the client as an unanswered command, and its ping times out.)
//!
//! Invariants:
//! - Every buffer is bounded: a `POST` body by `[http] max_post_bytes`
//!   (413), the commands waiting for a session by `[limits]
//!   max_outbound_bytes` (beyond it the session ends with 1008), the replay
//!   window by `[http] replay_bytes` (see `duplex_hub_proto::sse`), the
//!   links by the connection limits (a session holds its admission).
//! - A stream answers `200` with `text/event-stream`, no `Content-Length`
//!   (chunked, or until close for HTTP/1.0), `Cache-Control: no-cache`,
//!   `X-Accel-Buffering: no`, and a comment every `[http] ping_interval`.
//! - One stream per session: a resumed stream replaces the previous one.
//!   A session without a stream ends after `[http] resume_timeout`.
//! - `DELETE /session?session=ID` ends a session at once (on the node
//!   that holds it; elsewhere 404): a client that closes says so.
//! - These endpoints are served over HTTP/1.1 (one TCP connection each);
//!   over HTTP/2 they answer 505.

mod link;
pub(crate) mod plain;
mod wire;

use std::net::SocketAddr;
use std::sync::Arc;

use base64::Engine;
use duplex::server::Incoming;
use duplex::{Message, WebSocket};
use http::{Method, StatusCode};
use tokio::io::{AsyncRead, AsyncWrite, DuplexStream};

use crate::control::{Post, PostOp};
use crate::hub::Hub;
use crate::metrics::{Transport, TransportGuard};
use crate::server::{Gate, admit_http, plain as plain_text, respond};
use crate::session::{self, Handshake};

use link::LinkShared;
pub(crate) use link::Links;

/// The path of a hub session over HTTP: `GET` streams it, `POST` sends.
pub(crate) const SESSION_PATH: &str = "/session";
/// The path of the read-only stream of channels.
pub(crate) const SSE_PATH: &str = "/sse";

/// The size of each direction of the in-memory pipe under a session.
const PIPE_BYTES: usize = 64 << 10;

/// Why posted commands did not reach their session.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum PostError {
    /// No such session on this node (it ended, or never was).
    #[error("no such session")]
    NotFound,
    /// A binary command that is not base64.
    #[error("a binary command that is not base64")]
    BadFrame(#[source] base64::DecodeError),
    /// The broker could not carry the post to the other nodes.
    #[error("the broker could not carry the commands")]
    Broker(#[source] crate::broker::BrokerError),
}

/// A new session id on `hub`'s node: its prefix and 128 random bits.
fn new_session_id(hub: &Hub) -> String {
    format!("{:06x}{:032x}", hub.node_prefix(), rand::random::<u128>())
}

/// Serves a request to [`SESSION_PATH`] or [`SSE_PATH`] (HTTP/1.1).
pub(crate) async fn serve<S>(
    hub: Arc<Hub>,
    gate: &Gate,
    io: S,
    incoming: Incoming,
    client: SocketAddr,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut io: wire::BoxIo = Box::new(io);
    let path = incoming.request.uri().path();
    let method = incoming.request.method().clone();
    match (path, method) {
        (SESSION_PATH, Method::GET) => {
            let query = incoming.request.uri().query();
            match wire::query_value(query, "session") {
                Some(id) => resume(&hub, io, &incoming, &id).await,
                None => open(hub, gate, io, &incoming, client).await,
            }
        }
        (SESSION_PATH, Method::POST) => post(&hub, io, incoming).await,
        (SESSION_PATH, Method::DELETE) => {
            // The client is done: the session ends now rather than after
            // the resume timeout. Its id is the authority, as for a post.
            let id = wire::query_value(incoming.request.uri().query(), "session");
            let response = match id.and_then(|id| hub.registry.links.get(&id)) {
                Some(shared) => {
                    shared.end();
                    let mut response = plain_text(StatusCode::NO_CONTENT, "");
                    response.body_mut().clear();
                    response
                }
                None => plain_text(StatusCode::NOT_FOUND, "no such session on this node"),
            };
            respond(&mut io, response).await;
        }
        (SSE_PATH, Method::GET) => plain::serve(hub, gate, io, &incoming, client).await,
        _ => {
            let allow = if path == SESSION_PATH {
                "GET, POST, DELETE"
            } else {
                "GET"
            };
            let mut response = plain_text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
            response
                .headers_mut()
                .insert(http::header::ALLOW, http::HeaderValue::from_static(allow));
            respond(&mut io, response).await;
        }
    }
}

/// The in-memory pair a session runs over: the hub's end (served by
/// `crate::session`, shut down with the hub) and the link's.
fn pipe(hub: &Hub) -> (WebSocket<DuplexStream>, WebSocket<DuplexStream>) {
    let (ours, theirs) = tokio::io::duplex(PIPE_BYTES);
    let mut server = WebSocket::from_parts(
        ours,
        duplex::proto::connection::Connection::server(hub.ws_config.protocol.clone()),
        &hub.ws_config,
        Some(hub.subprotocol.clone()),
    );
    server.set_shutdown(hub.shutdown.watch());
    // The link's end answers the session's pings and never pings itself.
    let mut config = hub.ws_config.clone();
    config.ping_interval = None;
    let client = WebSocket::from_parts(
        theirs,
        duplex::proto::connection::Connection::client(
            config.protocol.clone(),
            Box::new(rand::random::<[u8; 4]>),
        ),
        &config,
        Some(hub.subprotocol.clone()),
    );
    (server, client)
}

/// Starts the hub session over the hub's end of `pipe`, counted as an SSE
/// connection while it lives.
fn start_session(hub: &Arc<Hub>, server: WebSocket<DuplexStream>, handshake: Handshake) {
    let hub = hub.clone();
    tokio::spawn(Box::pin(async move {
        let _counted = TransportGuard::new(&hub.metrics, Transport::Sse);
        session::run(hub, server, handshake).await;
    }));
}

/// `GET /session`: admits the request as a WebSocket handshake would (the
/// limits, the origin, the token), starts a session and streams it.
async fn open(
    hub: Arc<Hub>,
    gate: &Gate,
    mut io: wire::BoxIo,
    incoming: &Incoming,
    client: SocketAddr,
) {
    let Some((ticket, identity)) = admit_http(&hub, gate, &mut io, &incoming.request, client).await
    else {
        return;
    };
    let (server, ours) = pipe(&hub);
    let forwarded = crate::server::forwarded_headers(&hub, incoming.request.headers());
    start_session(
        &hub,
        server,
        Handshake {
            identity,
            ticket,
            forwarded,
        },
    );
    let id: Arc<str> = new_session_id(&hub).into();
    let limit = hub.config.limits.max_outbound_bytes;
    let shared = Arc::new(LinkShared::new(limit));
    hub.registry.links.insert(&id, shared.clone());
    let mut out = wire::Out::new(io, &incoming.request);
    if out.start(&open_event(&hub, &id)).await.is_err() {
        // Gone already: the link waits for a resume, as after a cut.
        tokio::spawn(link::run(hub, id, shared, ours, None));
        return;
    }
    tokio::spawn(link::run(hub, id, shared, ours, Some(out)));
}

/// The `open` event a stream starts with (see `docs/protocol.md`).
fn open_event(hub: &Hub, id: &str) -> Vec<u8> {
    let http = &hub.config.http;
    let data = serde_json::json!({
        "session": id,
        "resume": http.resume_timeout.as_millis() as u64,
        "ping": http.ping_interval.as_millis() as u64,
    })
    .to_string();
    let mut event = Vec::new();
    let _ = duplex_hub_proto::sse::write_event(
        &mut event,
        None,
        Some(duplex_hub_proto::sse::EVENT_OPEN),
        &data,
    );
    event
}

/// `GET /session?session=ID` with `Last-Event-ID` (or `?last=N`): the
/// stream of a session this node holds, from the event after that one; or
/// a stream of one `close` event (4009) when it cannot be resumed here.
async fn resume(hub: &Arc<Hub>, io: wire::BoxIo, incoming: &Incoming, id: &str) {
    let request = &incoming.request;
    let seen = request
        .headers()
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| wire::query_value(request.uri().query(), "last"))
        .and_then(|text| duplex_hub_proto::sse::parse_event_id(&text))
        .unwrap_or(0);
    let mut out = wire::Out::new(io, request);
    let Some(shared) = hub.registry.links.get(id) else {
        let mut event = Vec::new();
        let data = duplex_hub_proto::sse::close_data(
            duplex_hub_proto::sse::RESUME_FAILED,
            "resume: no such session on this node",
        );
        let _ = duplex_hub_proto::sse::write_event(
            &mut event,
            None,
            Some(duplex_hub_proto::sse::EVENT_CLOSE),
            &data,
        );
        if out.start(&event).await.is_ok() {
            out.finish().await;
        }
        return;
    };
    if out.start(&open_event(hub, id)).await.is_ok() {
        shared.attach(out, seen);
    }
}

/// `POST /session?session=ID` (or `X-Duplex-Session: ID`): one or more
/// commands, one JSON text per line (`text/plain` or
/// `application/x-ndjson`), or one binary command
/// (`application/octet-stream`). Answered `204` once they are on their way
/// to the session (whose stream carries the replies), `404` when the
/// session is unknown, `400`/`411`/`413` for a bad body.
async fn post(hub: &Arc<Hub>, mut io: wire::BoxIo, incoming: Incoming) {
    let request = &incoming.request;
    let session = request
        .headers()
        .get("x-duplex-session")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| wire::query_value(request.uri().query(), "session"));
    let Some(session) = session else {
        let response = plain_text(StatusCode::BAD_REQUEST, "name the session: ?session=ID");
        return respond(&mut io, response).await;
    };
    let binary = request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/octet-stream"));
    let limit = hub.config.http.max_post_bytes;
    let body =
        match wire::read_body(&mut io, incoming, limit, hub.ws_config.handshake_timeout).await {
            Ok(body) => body,
            Err(response) => return respond(&mut io, *response).await,
        };
    let frames = if binary {
        vec![base64::engine::general_purpose::STANDARD.encode(&body)]
    } else {
        let Ok(text) = String::from_utf8(body) else {
            let response = plain_text(StatusCode::BAD_REQUEST, "commands must be UTF-8 text");
            return respond(&mut io, response).await;
        };
        text.lines()
            .map(str::trim)
            .filter(|line| !line.is_empty())
            .map(str::to_owned)
            .collect()
    };
    let post = Post {
        op: PostOp::Post,
        session,
        frames,
        binary,
    };
    let response = match hub.post(post).await {
        Ok(()) => {
            let mut response = plain_text(StatusCode::NO_CONTENT, "");
            response.body_mut().clear();
            response
        }
        Err(PostError::NotFound) => plain_text(StatusCode::NOT_FOUND, "no such session"),
        Err(error @ PostError::BadFrame(_)) => {
            plain_text(StatusCode::BAD_REQUEST, &error.to_string())
        }
        Err(error @ PostError::Broker(_)) => {
            plain_text(StatusCode::SERVICE_UNAVAILABLE, &error.to_string())
        }
    };
    respond(&mut io, response).await;
}

/// The messages of a post, decoded.
fn messages_of(post: Post) -> Result<Vec<Message>, PostError> {
    if post.binary {
        post.frames
            .iter()
            .map(|frame| {
                base64::engine::general_purpose::STANDARD
                    .decode(frame)
                    .map(Message::binary)
                    .map_err(PostError::BadFrame)
            })
            .collect()
    } else {
        Ok(post.frames.into_iter().map(Message::text).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_name_their_node() {
        let hub = crate::Hub::new(crate::HubConfig::default()).unwrap();
        let id = new_session_id(&hub);
        assert_eq!(id.len(), 38);
        assert!(id.starts_with(&format!("{:06x}", hub.node_prefix())));
        assert_ne!(id, new_session_id(&hub));
    }
}
