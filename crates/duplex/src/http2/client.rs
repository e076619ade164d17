//! The client side of WebSocket over HTTP/2: [`H2Connection`] opens many
//! WebSockets on one connection; [`Pool`] shares one per origin and falls
//! back to HTTP/1.1. The invariants are the module's (`super`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use duplex_proto::handshake::client::{ClientHandshake, ResponseError};
use h2::RecvStream;
use http::Response;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::client::{ClientRequest, client_connection};
use crate::config::Config;
use crate::error::ClientHandshakeError;
use crate::websocket::{Connection, WebSocket};
use crate::{Error, transport};

use super::{ALPN_H2, H2Stream, H2WebSocket, Http2Config};

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
