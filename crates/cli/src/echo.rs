//! `duplex echo`: a WebSocket echo server, over TCP or TLS.
//!
//! Every connection runs in its own task and echoes each message as it came
//! (text stays text, binary stays binary). Replies are fed without flushing,
//! so all replies to one read leave in one write. Ctrl-C stops accepting and
//! closes every connection with 1001 within the close timeout.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use duplex::tls::TlsAcceptor;
use duplex::{Accept, Config, Shutdown, WebSocket};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
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
    /// PEM certificate chain: serve wss:// (needs --tls-key).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
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
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(TlsAcceptor::from(duplex::tls::server_config_from_pem(
            cert, key,
        )?)),
        _ => None,
    };
    let scheme = if tls.is_some() { "wss" } else { "ws" };
    tracing::info!(address = %listener.local_addr()?, scheme, "echo server listening");
    let config = std::sync::Arc::new(config);
    let shutdown = Shutdown::new();
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (tcp, peer) = match accepted {
                    Ok(pair) => pair,
                    Err(error) => {
                        // Out of file descriptors and the like: wait, don't spin.
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = config.apply_socket_options(&tcp);
                let (config, tls, watch) = (config.clone(), tls.clone(), shutdown.watch());
                tasks.spawn(async move {
                    // The TLS path is boxed so that plain connections' tasks
                    // do not carry the space of a TLS stream.
                    let result = match tls {
                        Some(acceptor) => Box::pin(serve_tls(acceptor, tcp, &config, watch)).await,
                        None => serve_one(tcp, &config, watch).await,
                    };
                    if let Err(error) = result {
                        tracing::debug!(%peer, %error, "connection failed");
                    }
                });
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    tracing::info!(connections = tasks.len(), "shutting down");
    drop(listener);
    shutdown.trigger();
    let _ = tokio::time::timeout(config.close_timeout, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    Ok(ExitCode::SUCCESS)
}

async fn serve_one<S>(
    io: S,
    config: &Config,
    watch: duplex::ShutdownWatch,
) -> Result<(), duplex::Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut ws = duplex::accept_with(io, config, |_| Ok(Accept::default())).await?;
    ws.set_shutdown(watch);
    echo(&mut ws).await;
    Ok(())
}

/// Runs the TLS handshake (bounded by the handshake timeout), then serves.
async fn serve_tls(
    acceptor: TlsAcceptor,
    tcp: tokio::net::TcpStream,
    config: &Config,
    watch: duplex::ShutdownWatch,
) -> Result<(), duplex::Error> {
    let stream = duplex::tls::accept(&acceptor, tcp, config.handshake_timeout).await?;
    serve_one(stream, config, watch).await
}

/// Echoes every message until the connection ends. Takes the socket by
/// reference: an async fn stores a by-value argument twice in its future.
pub(crate) async fn echo<S>(ws: &mut WebSocket<S>)
where
    S: AsyncRead + AsyncWrite + Unpin,
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
