//! A TCP listener that runs a handler per WebSocket connection and shuts down
//! gracefully.
//!
//! Invariants: each connection runs in its own task, its handshake bounded by
//! the config's timeout; accept errors (such as running out of file
//! descriptors) pause accepting briefly instead of spinning; on shutdown the
//! listener stops accepting, every connection is sent close 1001, the
//! listener waits up to a grace period for their close handshakes, and then
//! drops whatever is left.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use duplex_proto::handshake::server::UpgradeRequest;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use crate::config::Config;
use crate::server::{Accept, Reject, accept_with};
use crate::shutdown::Shutdown;
use crate::websocket::WebSocket;

/// Serves WebSocket connections accepted from a [`TcpListener`].
#[derive(Debug)]
pub struct Listener {
    tcp: TcpListener,
    config: Arc<Config>,
    shutdown: Shutdown,
    grace: Duration,
}

impl Listener {
    /// Serves connections from `tcp` with `config`. The grace period for
    /// closing connections at shutdown defaults to the config's close timeout.
    pub fn new(tcp: TcpListener, config: Config) -> Self {
        let grace = config.close_timeout;
        Self {
            tcp,
            config: Arc::new(config),
            shutdown: Shutdown::new(),
            grace,
        }
    }

    /// Sets how long shutdown waits for connections to finish closing.
    pub fn grace_period(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// The local address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }

    /// A handle that shuts the listener's connections down when triggered
    /// (the listener also triggers it itself when `until` completes).
    pub fn shutdown_handle(&self) -> Shutdown {
        self.shutdown.clone()
    }

    /// Accepts connections until `until` completes, deciding on each upgrade
    /// request with `decide` and running `handler` on each WebSocket; then
    /// shuts down gracefully. Returns the number of connections still open
    /// when the grace period ran out (dropped).
    pub async fn run<D, H, Fut>(
        self,
        decide: D,
        handler: H,
        until: impl Future<Output = ()>,
    ) -> usize
    where
        D: Fn(&UpgradeRequest, SocketAddr) -> Result<Accept, Reject> + Send + Sync + 'static,
        H: Fn(WebSocket<TcpStream>, SocketAddr) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let decide = Arc::new(decide);
        let handler = Arc::new(handler);
        let mut tasks = JoinSet::new();
        tokio::pin!(until);
        loop {
            tokio::select! {
                () = &mut until => break,
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                accepted = self.tcp.accept() => {
                    let (tcp, peer) = match accepted {
                        Ok(pair) => pair,
                        Err(error) => {
                            tracing::warn!(%error, "accept failed; pausing");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    if let Err(error) = self.config.apply_socket_options(&tcp) {
                        tracing::debug!(%peer, %error, "socket options");
                    }
                    let (config, decide, handler, watch) =
                        (self.config.clone(), decide.clone(), handler.clone(), self.shutdown.watch());
                    tasks.spawn(async move {
                        match accept_with(tcp, &config, |request| decide(request, peer)).await {
                            Ok(mut ws) => {
                                ws.set_shutdown(watch);
                                handler(ws, peer).await;
                            }
                            Err(error) => tracing::debug!(%peer, %error, "handshake failed"),
                        }
                    });
                }
            }
        }
        drop(self.tcp);
        self.shutdown.trigger();
        let deadline = tokio::time::sleep(self.grace);
        tokio::pin!(deadline);
        while !tasks.is_empty() {
            tokio::select! {
                () = &mut deadline => break,
                _ = tasks.join_next() => {}
            }
        }
        let left = tasks.len();
        tasks.abort_all();
        left
    }
}
