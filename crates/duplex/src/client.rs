//! Connecting to WebSocket servers.
//!
//! Invariants: the handshake is bounded in size and time like the server's;
//! the server's answer is checked in full (status, `Sec-WebSocket-Accept`,
//! subprotocol and extensions offered) before any frame is read; bytes the
//! server sent after its response are kept for the connection; every frame is
//! masked with a fresh key from the thread's cryptographic RNG.

use std::sync::Arc;

use bytes::BytesMut;
use duplex_proto::connection::Connection;
use duplex_proto::deflate::{self, DeflateConfig};
use duplex_proto::handshake::client::{Accepted, ClientHandshake, ResponseError};
use http::{HeaderMap, HeaderName, HeaderValue};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::Error;
use crate::config::Config;
use crate::error::ClientHandshakeError;
use crate::transport::{self, Transport};
use crate::websocket::WebSocket;

/// What a client asks for: the URL and the handshake's optional parts.
#[derive(Debug, Clone)]
pub struct ClientRequest {
    url: String,
    origin: Option<String>,
    protocols: Vec<String>,
    headers: HeaderMap,
    /// How to reach the server: directly, through a proxy, with which TLS roots.
    pub transport: transport::Options,
}

impl ClientRequest {
    /// A request for `url` (`ws://` or `wss://`).
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            origin: None,
            protocols: Vec::new(),
            headers: HeaderMap::new(),
            transport: transport::Options::default(),
        }
    }

    /// The URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Sends `Origin: origin`.
    pub fn origin(mut self, origin: impl Into<String>) -> Self {
        self.origin = Some(origin.into());
        self
    }

    /// Offers a subprotocol (call again for more, in order of preference).
    pub fn protocol(mut self, protocol: impl Into<String>) -> Self {
        self.protocols.push(protocol.into());
        self
    }

    /// Adds a header (for example `Authorization` or `Cookie`).
    pub fn header(mut self, name: &str, value: &str) -> Result<Self, Error> {
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|source| {
            ClientHandshakeError::HeaderName {
                name: name.to_owned(),
                source,
            }
        })?;
        let value =
            HeaderValue::from_str(value).map_err(|source| ClientHandshakeError::HeaderValue {
                name: name.clone(),
                source,
            })?;
        self.headers.append(name, value);
        Ok(self)
    }

    /// Builds the handshake with a fresh key.
    pub(crate) fn handshake(
        &self,
        deflate: Option<&DeflateConfig>,
    ) -> Result<ClientHandshake, Error> {
        let key: [u8; 16] = rand::random();
        let mut builder = ClientHandshake::builder(&self.url, key)
            .protocols(self.protocols.iter().cloned())
            .headers(self.headers.clone());
        if let Some(origin) = &self.origin {
            builder = builder.origin(origin);
        }
        if let Some(policy) = deflate {
            builder = builder.extensions([deflate::client_offer(policy)]);
        }
        Ok(builder.build().map_err(ClientHandshakeError::Request)?)
    }
}

/// Connects to `url` with the default client [`Config`] (compression offered).
pub async fn connect(url: &str) -> Result<WebSocket<Transport>, Error> {
    connect_with(&ClientRequest::new(url), &Config::client()).await
}

/// Connects as `request` says, with `config`.
pub async fn connect_with(
    request: &ClientRequest,
    config: &Config,
) -> Result<WebSocket<Transport>, Error> {
    let work = async {
        #[cfg(feature = "http2")]
        if let Some(pool) = &request.transport.http2 {
            return crate::http2::connect_pooled(pool, request, config).await;
        }
        connect_http1(request, config).await
    };
    match tokio::time::timeout(config.handshake_timeout, work).await {
        Ok(result) => result,
        Err(_) => Err(Error::HandshakeTimeout),
    }
}

/// Opens a transport offering only HTTP/1.1 and runs the RFC 6455
/// handshake on it. Not bounded by itself.
pub(crate) async fn connect_http1(
    request: &ClientRequest,
    config: &Config,
) -> Result<WebSocket<Transport>, Error> {
    let io = transport::open(request.url(), &request.transport, config.nodelay).await?;
    if let Some(tcp) = io.tcp_stream() {
        config.apply_socket_options(tcp)?;
    }
    client_handshake_inner(io, request, config).await
}

/// Runs the client handshake over a transport that is already open (for
/// example a test pipe, or a stream from another library).
pub async fn client_handshake<S>(
    io: S,
    request: &ClientRequest,
    config: &Config,
) -> Result<WebSocket<S>, Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match tokio::time::timeout(
        config.handshake_timeout,
        client_handshake_inner(io, request, config),
    )
    .await
    {
        Ok(result) => result,
        Err(_) => Err(Error::HandshakeTimeout),
    }
}

pub(crate) async fn client_handshake_inner<S>(
    mut io: S,
    request: &ClientRequest,
    config: &Config,
) -> Result<WebSocket<S>, Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut handshake = request.handshake(config.deflate.as_ref())?;
    let mut out = BytesMut::new();
    handshake.write_request(&mut out);
    io.write_all(&out).await?;
    io.flush().await?;
    let mut buf = BytesMut::with_capacity(1024);
    let (accepted, leftover) = loop {
        buf.clear();
        if io.read_buf(&mut buf).await? == 0 {
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
        }
        match handshake.feed(&buf) {
            Ok(Some((accepted, consumed))) => break (accepted, buf.split_off(consumed)),
            Ok(None) => {}
            Err(ResponseError::Rejected {
                response, consumed, ..
            }) => {
                let (parts, ()) = response.into_parts();
                let body = (consumed < buf.len()).then(|| buf[consumed..].to_vec());
                return Err(Error::HttpStatus(Box::new(http::Response::from_parts(
                    parts, body,
                ))));
            }
            Err(error) => return Err(ClientHandshakeError::Response(error).into()),
        }
    };
    let (mut conn, protocol) = client_connection(&accepted, config)?;
    conn.receive(&leftover);
    Ok(WebSocket::from_parts(io, conn, config, protocol))
}

/// The client connection an accepted handshake opens, whatever the HTTP
/// version: compression as the server answered our offer, and the
/// subprotocol it chose.
pub(crate) fn client_connection(
    accepted: &Accepted,
    config: &Config,
) -> Result<(Connection, Option<Arc<str>>), Error> {
    let mut conn = Connection::client(
        crate::shared::PROTOCOL.get(config.protocol.clone()),
        Box::new(rand::random::<[u8; 4]>),
    );
    if let Some(policy) = &config.deflate {
        let answer = accepted
            .extensions()
            .iter()
            .find(|offer| offer.name == deflate::EXTENSION_NAME);
        if let Some(answer) = answer {
            let params = deflate::client_accept(answer, policy)?;
            conn = conn.with_deflate(params, policy);
        }
    }
    Ok((conn, accepted.protocol().map(Arc::from)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{ClientHandshakeError, RequestError, ResponseError};

    #[test]
    fn a_bad_extra_header_says_which() {
        let error = ClientRequest::new("ws://h/")
            .header("bad name", "x")
            .unwrap_err();
        assert!(
            matches!(&error, Error::ClientHandshake(ClientHandshakeError::HeaderName { name, .. }) if name == "bad name"),
            "{error:?}"
        );
        let error = ClientRequest::new("ws://h/")
            .header("x-ok", "line\nbreak")
            .unwrap_err();
        assert!(
            matches!(&error, Error::ClientHandshake(ClientHandshakeError::HeaderValue { name, .. }) if name == "x-ok"),
            "{error:?}"
        );
        assert_eq!(
            error.to_string(),
            "handshake failed: invalid value for header x-ok"
        );
        let error = ClientRequest::new("ws://h/")
            .header("Sec-WebSocket-Key", "x")
            .unwrap()
            .handshake(None)
            .unwrap_err();
        assert!(
            matches!(
                &error,
                Error::ClientHandshake(ClientHandshakeError::Request(
                    RequestError::ReservedHeader(_)
                ))
            ),
            "{error:?}"
        );
    }

    #[tokio::test]
    async fn a_bad_server_answer_keeps_the_protocol_error() {
        let (client, mut server) = tokio::io::duplex(4096);
        let answer = tokio::spawn(async move {
            let mut request = [0; 1024];
            let _ = server.read(&mut request).await;
            server
                .write_all(
                    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                      Connection: Upgrade\r\nSec-WebSocket-Accept: wrong\r\n\r\n",
                )
                .await
                .unwrap();
            server
        });
        let error = client_handshake(client, &ClientRequest::new("ws://h/"), &Config::client())
            .await
            .unwrap_err();
        assert!(
            matches!(
                &error,
                Error::ClientHandshake(ClientHandshakeError::Response(
                    ResponseError::InvalidAccept
                ))
            ),
            "{error:?}"
        );
        let source = std::error::Error::source(&error).and_then(std::error::Error::source);
        assert!(
            source.is_some_and(|s| s.is::<ResponseError>()),
            "{source:?}"
        );
        drop(answer.await.unwrap());
    }
}
