//! `peer-echo`: the echo servers `duplex bench` compares duplex with.
//!
//! `peer-echo --impl IMPL --listen ADDR` runs one of:
//!
//! - `raw`: plain TCP that writes back every byte it reads (no WebSocket at
//!   all): the ceiling. Drive it with `duplex bench … --url tcp://ADDR`.
//! - `tungstenite`: tokio-tungstenite, as its `echo-server` example:
//!   `accept_async`, `split`, and `forward` of the text and binary messages.
//! - `fastwebsockets`: fastwebsockets, as its `echo_server` example: a hyper
//!   HTTP/1 upgrade, a `FragmentCollector`, `read_frame` / `write_frame`.
//! - `tokio-websockets`: tokio-websockets, as its `echo_server` example:
//!   `ServerBuilder::accept`, then `next` / `send` of text and binary messages.
//! - `duplex`: duplex, as `duplex echo`: `accept_with`, then each message
//!   `feed`-ed back (written out by the next read).
//!
//! Invariants, the same for every implementation so that only the library
//! differs: the multi-thread tokio runtime with its default number of workers
//! (one per core the process may run on, so one under `taskset -c 0`); one
//! task per connection, spawned plainly (no `unconstrained`); `TCP_NODELAY` on
//! every accepted socket (duplex's default); no compression; library default
//! limits; errors end the connection silently (a benchmark's clients drop
//! connections by the thousand).

use std::net::SocketAddr;

use clap::{Parser, ValueEnum};
use tokio::net::{TcpListener, TcpStream};

/// Echo servers of peer WebSocket libraries, for `duplex bench`.
#[derive(Debug, Parser)]
#[command(name = "peer-echo", version, about)]
struct Args {
    /// The implementation to run.
    #[arg(long = "impl", value_enum)]
    implementation: Impl,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9000")]
    listen: SocketAddr,
}

/// The echo server implementations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Impl {
    /// Plain TCP, every byte written back as read.
    Raw,
    /// tokio-tungstenite.
    Tungstenite,
    /// fastwebsockets.
    Fastwebsockets,
    /// tokio-websockets.
    TokioWebsockets,
    /// duplex.
    Duplex,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let listener = TcpListener::bind(args.listen).await?;
    eprintln!(
        "peer-echo: {:?} listening on {}",
        args.implementation,
        listener.local_addr()?
    );
    let duplex_config = std::sync::Arc::new(duplex::Config::default().without_compression());
    loop {
        let (tcp, _) = match listener.accept().await {
            Ok(pair) => pair,
            Err(_) => {
                // Out of file descriptors and the like: wait, don't spin.
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        match args.implementation {
            Impl::Raw => tokio::spawn(raw_echo::serve(tcp)),
            Impl::Tungstenite => tokio::spawn(tungstenite_echo::serve(tcp)),
            Impl::Fastwebsockets => tokio::spawn(fastwebsockets_echo::serve(tcp)),
            Impl::TokioWebsockets => tokio::spawn(tokio_websockets_echo::serve(tcp)),
            Impl::Duplex => tokio::spawn(duplex_echo::serve(tcp, duplex_config.clone())),
        };
    }
}

/// Plain TCP echo: the ceiling.
mod raw_echo {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::TcpStream;

    /// Reads into one buffer and writes every byte back.
    pub(super) async fn serve(mut tcp: TcpStream) {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if tcp.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

/// tokio-tungstenite, as its `echo-server` example.
mod tungstenite_echo {
    use futures_util::{StreamExt, TryStreamExt, future};

    use super::TcpStream;

    /// Accepts the handshake and forwards text and binary messages back.
    pub(super) async fn serve(tcp: TcpStream) {
        let Ok(ws) = tokio_tungstenite::accept_async(tcp).await else {
            return;
        };
        let (write, read) = ws.split();
        let _ = read
            .try_filter(|msg| future::ready(msg.is_text() || msg.is_binary()))
            .forward(write)
            .await;
    }
}

/// fastwebsockets, as its `echo_server` example.
mod fastwebsockets_echo {
    use fastwebsockets::{FragmentCollector, OpCode, WebSocketError, upgrade};
    use http_body_util::Empty;
    use hyper::body::{Bytes, Incoming};
    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    use hyper::{Request, Response};

    use super::TcpStream;

    /// Echoes frames after the upgrade.
    async fn handle_client(fut: upgrade::UpgradeFut) -> Result<(), WebSocketError> {
        let mut ws = FragmentCollector::new(fut.await?);
        loop {
            let frame = ws.read_frame().await?;
            match frame.opcode {
                OpCode::Close => break,
                OpCode::Text | OpCode::Binary => ws.write_frame(frame).await?,
                _ => {}
            }
        }
        Ok(())
    }

    /// Answers the upgrade request and spawns the echo.
    async fn server_upgrade(
        mut req: Request<Incoming>,
    ) -> Result<Response<Empty<Bytes>>, WebSocketError> {
        let (response, fut) = upgrade::upgrade(&mut req)?;
        tokio::spawn(async move {
            let _ = handle_client(fut).await;
        });
        Ok(response)
    }

    /// Serves HTTP/1 with upgrades on `tcp`.
    pub(super) async fn serve(tcp: TcpStream) {
        let io = hyper_util::rt::TokioIo::new(tcp);
        let _ = http1::Builder::new()
            .serve_connection(io, service_fn(server_upgrade))
            .with_upgrades()
            .await;
    }
}

/// tokio-websockets, as its `echo_server` example.
mod tokio_websockets_echo {
    use futures_util::{SinkExt, StreamExt};
    use tokio_websockets::ServerBuilder;

    use super::TcpStream;

    /// Accepts the handshake and sends every text and binary message back.
    pub(super) async fn serve(tcp: TcpStream) {
        let Ok((_request, mut server)) = ServerBuilder::new().accept(tcp).await else {
            return;
        };
        while let Some(Ok(item)) = server.next().await {
            if (item.is_text() || item.is_binary()) && server.send(item).await.is_err() {
                return;
            }
        }
    }
}

/// duplex, as `duplex echo`.
mod duplex_echo {
    use std::sync::Arc;

    use duplex::{Accept, Config};
    use futures_util::{SinkExt, StreamExt};

    use super::TcpStream;

    /// Accepts the handshake and feeds every message back; the next read
    /// writes all replies at once.
    pub(super) async fn serve(tcp: TcpStream, config: Arc<Config>) {
        let Ok(mut ws) = duplex::accept_with(tcp, &config, |_| Ok(Accept::default())).await else {
            return;
        };
        while let Some(Ok(message)) = ws.next().await {
            if ws.feed(message).await.is_err() {
                break;
            }
        }
        let _ = ws.flush().await;
    }
}
