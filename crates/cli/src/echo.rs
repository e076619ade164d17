//! `duplex echo`: a WebSocket echo server.
//!
//! Every connection runs in its own task and echoes each message as it came
//! (text stays text). Replies are fed without flushing, so all replies to one
//! read leave in one write.

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::Context as _;
use duplex::{Accept, Config, WebSocket};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;

/// Options of `duplex echo` and `duplex serve`.
#[derive(Debug, clap::Args)]
pub(crate) struct EchoArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080", env = "DUPLEX_LISTEN")]
    listen: SocketAddr,
    /// Do not negotiate permessage-deflate.
    #[arg(long)]
    no_compress: bool,
    /// Largest message accepted, in bytes.
    #[arg(long, default_value_t = 16 << 20)]
    max_message_size: usize,
}

pub(crate) async fn run(args: EchoArgs) -> anyhow::Result<ExitCode> {
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let mut config = Config::default();
    config.protocol.max_message_size = args.max_message_size;
    config.protocol.max_frame_size = args.max_message_size;
    if args.no_compress {
        config.deflate = None;
    }
    tracing::info!(address = %listener.local_addr()?, "echo server listening");
    let config = std::sync::Arc::new(config);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (tcp, peer) = match accepted {
                    Ok(pair) => pair,
                    Err(error) => {
                        // Out of file descriptors and the like: wait, don't spin.
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(config.nodelay);
                let config = config.clone();
                tokio::spawn(async move {
                    match duplex::accept_with(tcp, &config, |_| Ok(Accept::default())).await {
                        Ok(ws) => echo(ws).await,
                        Err(error) => tracing::debug!(%peer, %error, "handshake failed"),
                    }
                });
            }
            _ = tokio::signal::ctrl_c() => {
                tracing::info!("shutting down");
                return Ok(ExitCode::SUCCESS);
            }
        }
    }
}

/// Echoes every message until the connection ends.
pub(crate) async fn echo<S>(mut ws: WebSocket<S>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    while let Some(item) = ws.next().await {
        match item {
            Ok(message) => {
                if ws.feed(message).await.is_err() {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    // Write out whatever is left (the close reply); the peer may be gone.
    let _ = ws.flush().await;
}
