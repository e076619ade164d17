//! The byte stream under a client connection: plain TCP for `ws://`.
//!
//! Invariant: [`open`] returns a connected stream to the URL's host and port
//! (default 80 for `ws://`), with `TCP_NODELAY` as configured.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::Error;

/// How to reach a server.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct Options {}

/// A connected client transport.
#[derive(Debug)]
#[non_exhaustive]
pub enum Transport {
    /// Plain TCP (`ws://`).
    Plain(TcpStream),
}

/// The host, port and TLS flag of a `ws://` or `wss://` URL.
pub(crate) fn target(url: &str) -> Result<(String, u16, bool), Error> {
    let uri: http::Uri = url.parse().map_err(|_| Error::Url(url.to_owned()))?;
    let tls = match uri.scheme_str() {
        Some("ws") => false,
        Some("wss") => true,
        _ => return Err(Error::Url(format!("{url}: scheme must be ws or wss"))),
    };
    let host = uri
        .host()
        .ok_or_else(|| Error::Url(format!("{url}: no host")))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    Ok((host, port, tls))
}

/// Opens the transport for `url`.
pub(crate) async fn open(url: &str, _options: &Options, nodelay: bool) -> Result<Transport, Error> {
    let (host, port, tls) = target(url)?;
    if tls {
        return Err(Error::Tls("wss:// is not supported yet".into()));
    }
    let tcp = TcpStream::connect((host.as_str(), port)).await?;
    tcp.set_nodelay(nodelay)?;
    Ok(Transport::Plain(tcp))
}

impl AsyncRead for Transport {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Transport {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}
