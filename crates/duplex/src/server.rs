//! Accepting WebSocket connections on any transport.
//!
//! Invariants: the whole opening handshake is bounded in size
//! ([`crate::Config::handshake_limits`]) and time
//! ([`crate::Config::handshake_timeout`]); a bad request is answered with the
//! matching HTTP error (400, 403, 426, 431 …) and never hangs; bytes the client
//! sent after its request are kept for the connection.

use std::sync::Arc;

use bytes::BytesMut;
use duplex_proto::connection::Connection;
use duplex_proto::deflate;
use duplex_proto::handshake::server::{
    AcceptError, RequestParser, accept_response, reject_response, write_response,
};
use http::{HeaderMap, Request, StatusCode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::Error;
use crate::config::Config;
use crate::websocket::WebSocket;

/// A validated upgrade request, as `decide` callbacks see it
/// ([`accept_with`], [`accept_incoming`]).
pub use duplex_proto::handshake::server::UpgradeRequest;

/// The application's answer to an upgrade request.
#[derive(Debug, Clone, Default)]
pub struct Accept {
    /// The subprotocol to speak, one the client offered (`Some(name.into())`).
    /// Shared: a server that speaks one protocol can hand every connection
    /// the same `Arc` instead of a copy of the name.
    pub protocol: Option<Arc<str>>,
    /// Extra response headers (for example `Set-Cookie`).
    pub headers: HeaderMap,
}

/// A refusal of an upgrade request: an HTTP status and a short reason.
#[derive(Debug, Clone)]
pub struct Reject {
    /// The status, such as 401, 403 or 429.
    pub status: StatusCode,
    /// A short plain-text reason sent as the body.
    pub reason: String,
    /// Extra response headers (for example `Retry-After`); boxed because a
    /// refusal is rare and the `Result` of a decision stays small.
    pub headers: Box<HeaderMap>,
}

impl Reject {
    /// A refusal with `status` and `reason`.
    pub fn new(status: StatusCode, reason: impl Into<String>) -> Self {
        Self {
            status,
            reason: reason.into(),
            headers: Box::default(),
        }
    }
}

/// Accepts a WebSocket connection with the default [`Config`], accepting any
/// request and no subprotocol.
pub async fn accept<S>(io: S) -> Result<WebSocket<S>, Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    accept_with(io, &Config::default(), |_| Ok(Accept::default())).await
}

/// Accepts a WebSocket connection: reads and validates the upgrade request,
/// lets `decide` accept it (choosing a subprotocol, adding headers) or refuse
/// it, negotiates compression, and writes the response.
pub async fn accept_with<S, F>(mut io: S, config: &Config, decide: F) -> Result<WebSocket<S>, Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
    F: FnOnce(&UpgradeRequest) -> Result<Accept, Reject>,
{
    // Boxed: the handshake's state is large and short-lived; a connection's
    // task should not carry its space for the connection's whole life.
    let handshake = Box::pin(async {
        let incoming = read_head(&mut io, config).await?;
        upgrade(&mut io, incoming, config, decide).await
    });
    match tokio::time::timeout(config.handshake_timeout, handshake).await {
        Ok(Ok((conn, protocol))) => Ok(WebSocket::from_parts(io, conn, config, protocol)),
        Ok(Err(error)) => Err(error),
        Err(_) => Err(Error::HandshakeTimeout),
    }
}

/// An HTTP/1.x request head read from a transport, and the bytes that came
/// after it (a body, or the first WebSocket frames).
#[derive(Debug)]
pub struct Incoming {
    /// The request line and headers.
    pub request: Request<()>,
    /// Bytes read past the end of the header block.
    pub leftover: BytesMut,
}

impl Incoming {
    /// Whether the request asks for a WebSocket upgrade (`Upgrade:
    /// websocket`); it may still be an invalid one.
    pub fn wants_upgrade(&self) -> bool {
        self.request
            .headers()
            .get_all(http::header::UPGRADE)
            .iter()
            .any(|v| {
                v.to_str().is_ok_and(|v| {
                    v.split(',')
                        .any(|p| p.trim().eq_ignore_ascii_case("websocket"))
                })
            })
    }
}

/// Reads one HTTP/1.x request head within [`Config::handshake_timeout`] and
/// the handshake size limits, for a server that answers plain HTTP and
/// WebSocket upgrades on the same port. A malformed or oversized head is
/// answered (400, 431) and returned as an error. Continue with
/// [`accept_incoming`] for an upgrade.
pub async fn read_request<S>(io: &mut S, config: &Config) -> Result<Incoming, Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match tokio::time::timeout(config.handshake_timeout, Box::pin(read_head(io, config))).await {
        Ok(result) => result,
        Err(_) => Err(Error::HandshakeTimeout),
    }
}

/// Completes a WebSocket handshake for a request read with
/// [`read_request`]: validates it as an upgrade (answering 400, 426 … when it
/// is not a valid one), lets `decide` accept or refuse it, and answers.
pub async fn accept_incoming<S, F>(
    mut io: S,
    incoming: Incoming,
    config: &Config,
    decide: F,
) -> Result<WebSocket<S>, Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
    F: FnOnce(&UpgradeRequest) -> Result<Accept, Reject>,
{
    let handshake = Box::pin(upgrade(&mut io, incoming, config, decide));
    match tokio::time::timeout(config.handshake_timeout, handshake).await {
        Ok(Ok((conn, protocol))) => Ok(WebSocket::from_parts(io, conn, config, protocol)),
        Ok(Err(error)) => Err(error),
        Err(_) => Err(Error::HandshakeTimeout),
    }
}

async fn read_head<S>(io: &mut S, config: &Config) -> Result<Incoming, Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut parser = RequestParser::with_limits(config.handshake_limits);
    let mut buf = BytesMut::with_capacity(1024);
    loop {
        buf.clear();
        if io.read_buf(&mut buf).await? == 0 {
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
        }
        match parser.feed_request(&buf) {
            Ok(Some((request, consumed))) => {
                let leftover = buf.split_off(consumed);
                return Ok(Incoming { request, leftover });
            }
            Ok(None) => {}
            Err(error) => {
                write_and_close(io, &error.to_response()).await;
                return Err(error.into());
            }
        }
    }
}

async fn upgrade<S, F>(
    io: &mut S,
    incoming: Incoming,
    config: &Config,
    decide: F,
) -> Result<(Connection, Option<Arc<str>>), Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
    F: FnOnce(&UpgradeRequest) -> Result<Accept, Reject>,
{
    let Incoming { request, leftover } = incoming;
    let request = match UpgradeRequest::validate(request) {
        Ok(request) => request,
        Err(error) => {
            write_and_close(io, &error.to_response()).await;
            return Err(error.into());
        }
    };
    let accept = match decide(&request) {
        Ok(accept) => accept,
        Err(reject) => {
            let mut response = reject_response(reject.status, &reject.reason);
            response.headers_mut().extend(*reject.headers);
            write_and_close(io, &response).await;
            return Err(Error::Refused(reject.status));
        }
    };
    let (response, mut conn) = match answer(&request, &accept, config) {
        Ok(answer) => answer,
        Err(error) => {
            let response = reject_response(StatusCode::INTERNAL_SERVER_ERROR, "server error");
            write_and_close(io, &response).await;
            return Err(Error::Accept(error));
        }
    };
    let mut out = BytesMut::new();
    write_response(&response, &mut out);
    io.write_all(&out).await?;
    io.flush().await?;
    conn.receive(&leftover);
    Ok((conn, accept.protocol))
}

/// The `101` for an accepted `request`, with compression negotiated by
/// `config`, and the server connection it opens. Shared by [`accept_with`]
/// and the hyper integration so both negotiate alike.
pub(crate) fn answer(
    request: &UpgradeRequest,
    accept: &Accept,
    config: &Config,
) -> Result<(http::Response<()>, Connection), AcceptError> {
    let negotiated = config.deflate.as_ref().and_then(|policy| {
        deflate::negotiate(request.extensions(), policy).map(|params| (params, policy))
    });
    let extensions = negotiated
        .as_ref()
        .map(|(params, _)| params.response_header());
    let response = accept_response(
        request,
        accept.protocol.as_deref(),
        extensions.as_deref(),
        &accept.headers,
    )?;
    let mut conn = Connection::server(crate::shared::PROTOCOL.get(config.protocol.clone()));
    if let Some((params, policy)) = negotiated {
        conn = conn.with_deflate(params, policy);
    }
    Ok((response, conn))
}

/// Writes an error response and shuts the transport down, ignoring failures:
/// the peer may already be gone.
async fn write_and_close<S, B>(io: &mut S, response: &http::Response<B>)
where
    S: AsyncWrite + Unpin,
    B: duplex_proto::handshake::server::ResponseBody,
{
    let mut out = BytesMut::new();
    write_response(response, &mut out);
    let _ = io.write_all(&out).await;
    let _ = io.shutdown().await;
}
