//! A TCP listener that runs a handler per WebSocket connection and shuts down
//! gracefully.
//!
//! Invariants: each connection runs in its own task, its handshake bounded by
//! the config's timeout; accept errors (such as running out of file
//! descriptors) pause accepting briefly instead of spinning; on shutdown the
//! listener stops accepting, every connection is sent close 1001, the
//! listener waits up to a grace period for their close handshakes, and then
//! drops whatever is left. A connection's task keeps little beside the
//! handler's future (the handshake runs in a box freed once done; a test
//! bounds the rest to 64 bytes): an idle connection's memory is mostly what
//! the handler holds. A handler should take the `WebSocket` into an `async`
//! block or function and keep it there, not pass it on by value through
//! another `async fn` (which stores it twice).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use crate::UpgradeRequest;
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
                    tasks.spawn(connection(tcp, peer, config, decide, handler, watch));
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

/// The task of one connection: the handshake in a box (freed once done, and
/// holding the socket, config and decision until then), then the handler.
/// Only the box, the handler, the watch and the address are kept beside the
/// handler's future, where an `async` block capturing everything kept the
/// socket and the config too for the connection's whole life.
fn connection<D, H, Fut>(
    tcp: TcpStream,
    peer: SocketAddr,
    config: Arc<Config>,
    decide: Arc<D>,
    handler: Arc<H>,
    watch: crate::shutdown::ShutdownWatch,
) -> impl Future<Output = ()> + Send + 'static
where
    D: Fn(&UpgradeRequest, SocketAddr) -> Result<Accept, Reject> + Send + Sync + 'static,
    H: Fn(WebSocket<TcpStream>, SocketAddr) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let accept =
        Box::pin(async move { accept_with(tcp, &config, |request| decide(request, peer)).await });
    async move {
        // In a block of its own: `ws` is moved into the handler's future, and
        // a binding still in scope at the `await` would keep its space (256
        // bytes) in this future too.
        let serve = {
            let mut ws = match accept.await {
                Ok(ws) => ws,
                Err(error) => {
                    tracing::debug!(%peer, %error, "handshake failed");
                    return;
                }
            };
            ws.set_shutdown(watch);
            handler(ws, peer)
        };
        serve.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::{SinkExt, StreamExt};

    async fn echo(mut ws: WebSocket<TcpStream>, _: SocketAddr) {
        while let Some(Ok(message)) = ws.next().await {
            if ws.feed(message).await.is_err() {
                break;
            }
        }
        let _ = ws.flush().await;
    }

    /// The handshake's state and the socket it consumed are not kept for the
    /// connection's life: the task holds the handler's future and little else.
    #[tokio::test]
    async fn connection_task_holds_little_beside_the_handler() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap());
        let (client, accepted) = tokio::join!(client, listener.accept());
        let (tcp, peer) = accepted.unwrap();
        let handler = Arc::new(echo);
        let handler_future = handler(
            WebSocket::from_parts(
                client.unwrap(),
                duplex_proto::connection::Connection::server(
                    duplex_proto::connection::Config::default(),
                ),
                &Config::default(),
                None,
            ),
            peer,
        );
        let handler_size = std::mem::size_of_val(&handler_future);
        drop(handler_future);
        let task = connection(
            tcp,
            peer,
            Arc::new(Config::default()),
            Arc::new(|_: &UpgradeRequest, _| Ok(Accept::default())),
            handler,
            crate::Shutdown::new().watch(),
        );
        let size = std::mem::size_of_val(&task);
        eprintln!("listener connection task: {size} bytes, handler future {handler_size} bytes");
        assert!(size <= handler_size + 64, "{size} bytes");
    }
}
