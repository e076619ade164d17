//! Settings of a WebSocket endpoint on tokio: protocol limits, compression,
//! buffers and timers.
//!
//! Invariant: [`Config::default`] is safe on the open internet: bounded
//! handshake size and time, bounded write buffer, a keepalive that frees a
//! half-open connection within `ping_interval + pong_timeout`.

use std::time::Duration;

use duplex_proto::connection;

/// The protocol layer's settings ([`Config::protocol`]): frame and message
/// limits, UTF-8 checking, receive behaviour.
pub use duplex_proto::connection::Config as ProtocolConfig;
pub use duplex_proto::deflate::DeflateConfig;
/// Header block limits of the opening handshake ([`Config::handshake_limits`]).
pub use duplex_proto::handshake::Limits as HandshakeLimits;

use self::HandshakeLimits as Limits;

/// Settings shared by [`crate::accept_with`] and [`crate::connect_with`].
#[derive(Debug, Clone)]
pub struct Config {
    /// Frame and message limits and receive behaviour of the protocol layer.
    pub protocol: connection::Config,
    /// permessage-deflate policy, or `None` to neither offer nor accept it.
    /// Default: on, with [`DeflateConfig::default`] (servers) or
    /// [`DeflateConfig::client`] (clients, see [`Config::client`]).
    pub deflate: Option<DeflateConfig>,
    /// Header block limits of the opening handshake (default 8 KiB).
    pub handshake_limits: Limits,
    /// Time allowed for the whole opening handshake (default 10 s); a slow
    /// or silent peer is dropped after it.
    pub handshake_timeout: Duration,
    /// Queued outgoing bytes at which `poll_ready` waits for the peer to read
    /// (default 1 MiB): the backpressure a slow peer exerts. Kept between 1
    /// and 4 GiB − 1.
    pub write_buffer_high_water: usize,
    /// Send a ping after this long without hearing from the peer (default
    /// 30 s), `None` for no keepalive.
    pub ping_interval: Option<Duration>,
    /// After a keepalive ping, how long to wait for any frame from the peer
    /// before the connection is dropped as dead (default 10 s).
    pub pong_timeout: Duration,
    /// Close the connection (1001) after this long without a data message
    /// either way. Default `None`.
    pub idle_timeout: Option<Duration>,
    /// After sending our close frame, how long to wait for the peer's before
    /// dropping the connection (default 5 s).
    pub close_timeout: Duration,
    /// Set `TCP_NODELAY` on TCP sockets this crate opens or accepts (default on).
    pub nodelay: bool,
    /// `SO_SNDBUF` for TCP sockets, `None` for the system default. A server
    /// holding many idle connections saves kernel memory with small buffers.
    pub send_buffer_size: Option<usize>,
    /// `SO_RCVBUF` for TCP sockets, `None` for the system default.
    pub recv_buffer_size: Option<usize>,
    /// After this long with no data message either way, a connection at rest
    /// may be parked: its task and socket registration given back until the
    /// peer sends, a timer fires or the application wakes it (see
    /// [`crate::park`]). Default `None`: a connection's task is never told to
    /// park ([`crate::WebSocket::park_due`] stays false).
    pub park_after: Option<Duration>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            protocol: connection::Config::default(),
            deflate: Some(DeflateConfig::default()),
            handshake_limits: Limits::default(),
            handshake_timeout: Duration::from_secs(10),
            write_buffer_high_water: 1 << 20,
            ping_interval: Some(Duration::from_secs(30)),
            pong_timeout: Duration::from_secs(10),
            idle_timeout: None,
            close_timeout: Duration::from_secs(5),
            nodelay: true,
            send_buffer_size: None,
            recv_buffer_size: None,
            park_after: None,
        }
    }
}

impl Config {
    /// Defaults for a client: compression offered as a browser offers it.
    pub fn client() -> Self {
        Self {
            deflate: Some(DeflateConfig::client()),
            ..Self::default()
        }
    }

    /// Applies the socket options of this config (`TCP_NODELAY`, buffer
    /// sizes) to a connected TCP socket.
    pub fn apply_socket_options(&self, tcp: &tokio::net::TcpStream) -> std::io::Result<()> {
        tcp.set_nodelay(self.nodelay)?;
        let socket = socket2::SockRef::from(tcp);
        if let Some(size) = self.send_buffer_size {
            socket.set_send_buffer_size(size)?;
        }
        if let Some(size) = self.recv_buffer_size {
            socket.set_recv_buffer_size(size)?;
        }
        Ok(())
    }

    /// The same settings without compression.
    pub fn without_compression(mut self) -> Self {
        self.deflate = None;
        self
    }
}
