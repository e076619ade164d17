//! Opening benchmark connections: the target URL, source addresses, and the
//! connection types the generator drives.
//!
//! Invariant: every TCP connection is opened by a [`TcpSocket`] bound to the
//! next source address (round-robin) when any were given, with
//! `TCP_NODELAY` set, as `duplex::connect` sets it.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context as _, bail};
use duplex::{ClientRequest, CloseCode, Config, Message, WebSocket};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use super::TargetArgs;
use super::raw::RawConn;

/// The protocol spoken to the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Scheme {
    /// WebSocket over plain TCP (`ws://`).
    WebSocket,
    /// Plain TCP echo (`tcp://`): no handshake, bytes come back as sent.
    RawTcp,
}

/// A resolved server to connect to, and the local addresses to connect from.
#[derive(Debug)]
pub(super) struct Target {
    /// The URL as given.
    pub(super) url: String,
    /// What to speak.
    pub(super) scheme: Scheme,
    /// The server's socket address.
    pub(super) addr: SocketAddr,
    request: ClientRequest,
    sources: Vec<IpAddr>,
    next_source: AtomicUsize,
}

impl Target {
    /// Opens `count` connections, `concurrency` handshakes at a time, logging
    /// the start on standard error.
    pub(crate) async fn open_many(
        &self,
        config: &Config,
        count: usize,
        concurrency: usize,
    ) -> anyhow::Result<Vec<Conn>> {
        use futures_util::TryStreamExt;
        eprintln!("opening {count} connections to {} …", self.url);
        futures_util::stream::iter(0..count)
            .map(|_| self.open(config))
            .buffer_unordered(concurrency)
            .try_collect()
            .await
            .context("cannot open the connections")
    }

    /// Parses and resolves `args.url`.
    pub(super) fn new(args: &TargetArgs) -> anyhow::Result<Self> {
        let url = args.url.as_str();
        let (scheme, rest) = if let Some(rest) = url.strip_prefix("ws://") {
            (Scheme::WebSocket, rest)
        } else if let Some(rest) = url.strip_prefix("tcp://") {
            (Scheme::RawTcp, rest)
        } else {
            bail!("{url}: duplex bench speaks ws:// and tcp:// URLs");
        };
        let authority = rest.split(['/', '?']).next().unwrap_or_default();
        let with_port = if authority
            .rsplit_once(':')
            .is_some_and(|(_, p)| !p.contains(']'))
        {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        };
        let addr = with_port
            .to_socket_addrs()
            .with_context(|| format!("cannot resolve {authority}"))?
            .next()
            .with_context(|| format!("{authority} has no address"))?;
        for source in &args.source_ips {
            if source.is_ipv4() != addr.is_ipv4() {
                bail!("source address {source} and server address {addr} differ in family");
            }
        }
        Ok(Self {
            url: url.to_owned(),
            scheme,
            addr,
            request: ClientRequest::new(url),
            sources: args.source_ips.clone(),
            next_source: AtomicUsize::new(0),
        })
    }

    /// Spreads `connections` over source addresses 127.0.0.1, 127.0.0.2 …
    /// so that no address opens more than `per_address` of them, when the
    /// server is on IPv4 loopback and no source address was given (every
    /// 127.0.0.0/8 address reaches it). Returns how many addresses it uses
    /// then, `None` when it changed nothing.
    pub(super) fn spread_over_loopback(
        &mut self,
        connections: usize,
        per_address: usize,
    ) -> Option<usize> {
        let loopback = matches!(self.addr, SocketAddr::V4(v4) if v4.ip().is_loopback());
        if !self.sources.is_empty() || !loopback || connections <= per_address {
            return None;
        }
        let count = connections.div_ceil(per_address.max(1)).min(254);
        self.sources = (1..=count as u8)
            .map(|last| IpAddr::from([127, 0, 0, last]))
            .collect();
        Some(count)
    }

    /// Offers the WebSocket subprotocol `protocol` in every handshake.
    pub(super) fn offer(&mut self, protocol: &str) {
        self.request = self.request.clone().protocol(protocol);
    }

    /// Opens a TCP connection from the next source address.
    pub(super) async fn tcp(&self) -> std::io::Result<TcpStream> {
        let socket = match self.addr {
            SocketAddr::V4(_) => TcpSocket::new_v4()?,
            SocketAddr::V6(_) => TcpSocket::new_v6()?,
        };
        if !self.sources.is_empty() {
            let i = self.next_source.fetch_add(1, Ordering::Relaxed) % self.sources.len();
            socket.bind(SocketAddr::new(self.sources[i], 0))?;
        }
        let stream = socket.connect(self.addr).await?;
        stream.set_nodelay(true)?;
        Ok(stream)
    }

    /// Opens a connection as the scheme says: TCP plus the duplex client's
    /// opening handshake, or plain TCP.
    pub(super) async fn open(&self, config: &Config) -> anyhow::Result<Conn> {
        let tcp = self.tcp().await?;
        Ok(match self.scheme {
            Scheme::WebSocket => Conn::Ws(Box::new(
                duplex::client_handshake(tcp, &self.request, config).await?,
            )),
            Scheme::RawTcp => Conn::Raw(Box::new(RawConn::new(tcp))),
        })
    }
}

/// An open benchmark connection.
#[derive(Debug)]
pub(super) enum Conn {
    /// A duplex WebSocket client.
    Ws(Box<WebSocket<TcpStream>>),
    /// A plain TCP echo connection.
    Raw(Box<RawConn>),
}

impl Conn {
    /// Queues `message` without writing it (the next read writes it).
    pub(super) async fn feed(&mut self, message: Message) -> anyhow::Result<()> {
        match self {
            Self::Ws(ws) => ws.feed(message).await?,
            Self::Raw(raw) => raw.feed(message)?,
        }
        Ok(())
    }

    /// Writes out everything queued.
    pub(super) async fn flush(&mut self) -> anyhow::Result<()> {
        match self {
            Self::Ws(ws) => WebSocket::flush(ws).await?,
            Self::Raw(raw) => raw.flush().await?,
        }
        Ok(())
    }

    /// The next message; `None` when the server closed.
    pub(super) async fn next(&mut self) -> anyhow::Result<Option<Message>> {
        match self {
            Self::Ws(ws) => Ok(ws.next().await.transpose()?),
            Self::Raw(raw) => raw.next().await,
        }
    }

    /// Closes cleanly: the close handshake for a WebSocket (waiting for the
    /// server to close TCP, as RFC 6455 wants), or a half-close and wait for
    /// the server's end of stream for plain TCP.
    pub(super) async fn close(self) -> anyhow::Result<()> {
        match self {
            Self::Ws(mut ws) => WebSocket::close(&mut ws, CloseCode::NORMAL, "").await?,
            Self::Raw(raw) => {
                let mut tcp = raw.into_inner();
                tcp.shutdown().await?;
                let mut sink = [0u8; 4096];
                while tcp.read(&mut sink).await? > 0 {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(url: &str, sources: &[&str]) -> Target {
        Target::new(&TargetArgs {
            url: url.to_owned(),
            source_ips: sources.iter().map(|s| s.parse().unwrap()).collect(),
            server_pid: None,
        })
        .unwrap()
    }

    #[test]
    fn connections_past_the_per_address_share_spread_over_loopback() {
        let mut hub = target("ws://127.0.0.1:8080/ws", &[]);
        assert_eq!(hub.spread_over_loopback(500, 500), None);
        assert_eq!(hub.spread_over_loopback(1_001, 500), Some(3));
        let expected: Vec<IpAddr> = (1..=3).map(|n| IpAddr::from([127, 0, 0, n])).collect();
        assert_eq!(hub.sources, expected);
        // Chosen addresses, or a server off loopback: left alone.
        let mut chosen = target("ws://127.0.0.1:8080/ws", &["127.0.0.9"]);
        assert_eq!(chosen.spread_over_loopback(10_000, 500), None);
        let mut v6 = target("ws://[::1]:8080/ws", &[]);
        assert_eq!(v6.spread_over_loopback(10_000, 500), None);
    }
}
