//! `duplex echo`: a WebSocket echo server, over TCP or TLS.
//!
//! Every connection runs in its own task and echoes each message as it came
//! (text stays text, binary stays binary). Replies are fed without flushing,
//! so all replies to one read leave in one write. Ctrl-C stops accepting and
//! closes every connection with 1001 within the close timeout.
//!
//! Invariants (memory per idle connection, measured by `duplex bench idle`):
//! a plain connection's task holds its `WebSocket` and the echo loop, nothing
//! else: the handshake runs in a box freed once it is done, the TLS path is
//! boxed whole, and live connections are counted (8 bytes in the task)
//! instead of kept in a `JoinSet` (an allocation per connection). A test
//! bounds the task's size.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use anyhow::Context as _;
use duplex::tls::TlsAcceptor;
use duplex::{Accept, Config, Shutdown, WebSocket};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

/// Options of `duplex echo` and `duplex serve`.
#[derive(Debug, clap::Args)]
pub(crate) struct EchoArgs {
    /// Address to listen on: HOST:PORT, a name such as localhost:8080, or
    /// :PORT for every interface.
    #[arg(
        long,
        default_value = "127.0.0.1:8080",
        env = "DUPLEX_LISTEN",
        value_parser = crate::listen::parse_listen
    )]
    listen: SocketAddr,
    /// Do not negotiate permessage-deflate.
    #[arg(long)]
    no_compress: bool,
    /// Largest message accepted, in bytes.
    #[arg(long, default_value_t = 16 << 20)]
    max_message_size: usize,
    /// PEM certificate chain: serve wss:// (needs --tls-key).
    /// Park a plain connection quiet this long (no message either way): its
    /// task and socket registration are given back until it has something
    /// to do. 0 never parks.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    park_after: Duration,
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
    config.park_after = Some(args.park_after).filter(|after| !after.is_zero());
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(TlsAcceptor::from(duplex::tls::server_config_from_pem(
            cert, key,
        )?)),
        _ => None,
    };
    let scheme = if tls.is_some() { "wss" } else { "ws" };
    tracing::info!(address = %listener.local_addr()?, scheme, "echo server listening");
    let config = Arc::new(config);
    let shutdown = Shutdown::new();
    let live = Arc::new(Live::default());
    // The accept loop runs as a task of its own, on a worker thread, so that a
    // new connection's task starts where it was accepted (no hand-off to
    // another thread) and its allocations share that thread's arena.
    let accepting = tokio::spawn(accept_loop(
        listener,
        config.clone(),
        tls,
        shutdown.clone(),
        live.clone(),
    ));
    let _ = tokio::signal::ctrl_c().await;
    accepting.abort();
    let _ = accepting.await;
    tracing::info!(connections = live.count(), "shutting down");
    shutdown.trigger();
    let _ = tokio::time::timeout(config.close_timeout, live.all_ended()).await;
    Ok(ExitCode::SUCCESS)
}

/// Accepts connections and spawns a task for each, until aborted (which
/// closes the listener).
async fn accept_loop(
    listener: TcpListener,
    config: Arc<Config>,
    tls: Option<TlsAcceptor>,
    shutdown: Shutdown,
    live: Arc<Live>,
) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(pair) => pair,
            Err(error) => {
                // Out of file descriptors and the like: wait, don't spin.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = config.apply_socket_options(&tcp);
        let (config, watch, guard) = (config.clone(), shutdown.watch(), live.enter());
        match &tls {
            None => spawn_plain(tcp, peer, config, watch, guard),
            Some(acceptor) => {
                let serve = serve_tls(acceptor.clone(), tcp, peer, config, watch);
                // Boxed: plain connections' tasks do not carry the space of a
                // TLS stream.
                let serve = Box::pin(serve);
                tokio::spawn(async move {
                    serve.await;
                    drop(guard);
                });
            }
        }
    }
}

/// Counts the connection tasks still running, so that shutdown can wait for
/// them: 8 bytes in each task, where a `JoinSet` allocates an entry per task.
#[derive(Debug, Default)]
struct Live {
    count: AtomicUsize,
    ended: Notify,
}

/// One running connection task; dropped when the task ends.
#[derive(Debug)]
struct LiveGuard(Arc<Live>);

impl Live {
    fn enter(self: &Arc<Self>) -> LiveGuard {
        self.count.fetch_add(1, Ordering::Relaxed);
        LiveGuard(self.clone())
    }

    fn count(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// Waits until no connection task is left.
    async fn all_ended(&self) {
        loop {
            let ended = self.ended.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            if self.count() == 0 {
                return;
            }
            ended.await;
        }
    }
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.ended.notify_waiters();
        }
    }
}

/// Spawns the task of a plain (ws://) connection.
fn spawn_plain(
    tcp: TcpStream,
    peer: SocketAddr,
    config: Arc<Config>,
    watch: duplex::ShutdownWatch,
    guard: LiveGuard,
) {
    tokio::spawn(plain_task(tcp, peer, config, watch, guard));
}

/// The task of a plain connection: the handshake (boxed, freed once done),
/// then the echo loop and a last flush.
fn plain_task(
    tcp: TcpStream,
    peer: SocketAddr,
    config: Arc<Config>,
    watch: duplex::ShutdownWatch,
    guard: LiveGuard,
) -> PlainTask {
    PlainTask {
        state: Plain::Handshake(Box::pin(accept_plain(tcp, peer, config, watch))),
        live: Some(guard),
    }
}

/// A plain connection's task: the handshake, then the echo until the end,
/// or until it parks (see [`duplex::park`]); a parked connection keeps only
/// its live-count guard besides its WebSocket.
struct PlainTask {
    state: Plain,
    /// Taken when the connection parks.
    live: Option<LiveGuard>,
}

/// The handshake's future, boxed: large and short-lived.
type Handshake = Pin<Box<dyn Future<Output = Option<WebSocket<TcpStream>>> + Send>>;

enum Plain {
    Handshake(Handshake),
    Echo(WebSocket<TcpStream>),
    Flush(WebSocket<TcpStream>),
    Done,
}

/// A parked echo connection's own state.
struct ParkedEcho(LiveGuard);

impl duplex::park::Resume for ParkedEcho {
    fn resume(self, ws: WebSocket<TcpStream>) -> impl Future<Output = ()> + Send + 'static {
        PlainTask {
            state: Plain::Echo(ws),
            live: Some(self.0),
        }
    }
}

impl Future for PlainTask {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        loop {
            match &mut this.state {
                Plain::Handshake(handshake) => match ready!(handshake.as_mut().poll(cx)) {
                    Some(ws) => this.state = Plain::Echo(ws),
                    None => this.state = Plain::Done,
                },
                Plain::Echo(ws) => {
                    if poll_echo(ws, cx).is_pending() {
                        if !ws.park_due() {
                            return Poll::Pending;
                        }
                        let state = std::mem::replace(&mut this.state, Plain::Done);
                        if let (Plain::Echo(ws), Some(live)) = (state, this.live.take()) {
                            duplex::park::park(ws, ParkedEcho(live));
                        }
                        return Poll::Ready(());
                    }
                    if let Plain::Echo(ws) = std::mem::replace(&mut this.state, Plain::Done) {
                        this.state = Plain::Flush(ws);
                    }
                }
                Plain::Flush(ws) => {
                    let _ = ready!(ws.poll_flush_unpin(cx));
                    this.state = Plain::Done;
                }
                Plain::Done => return Poll::Ready(()),
            }
        }
    }
}

async fn accept_plain(
    tcp: TcpStream,
    peer: SocketAddr,
    config: Arc<Config>,
    watch: duplex::ShutdownWatch,
) -> Option<WebSocket<TcpStream>> {
    match duplex::accept_with(tcp, &config, |_| Ok(Accept::default())).await {
        Ok(mut ws) => {
            ws.set_shutdown(watch);
            Some(ws)
        }
        Err(error) => {
            tracing::debug!(%peer, %error, "connection failed");
            None
        }
    }
}

/// Runs the TLS handshake (bounded by the handshake timeout), then serves.
async fn serve_tls(
    acceptor: TlsAcceptor,
    tcp: TcpStream,
    peer: SocketAddr,
    config: Arc<Config>,
    watch: duplex::ShutdownWatch,
) {
    let result = async {
        let stream = duplex::tls::accept(&acceptor, tcp, config.handshake_timeout).await?;
        let mut ws = duplex::accept_with(stream, &config, |_| Ok(Accept::default())).await?;
        ws.set_shutdown(watch);
        echo(&mut ws).await;
        Ok::<_, duplex::Error>(())
    };
    if let Err(error) = result.await {
        tracing::debug!(%peer, %error, "connection failed");
    }
}

/// Echoes every message until the connection ends. Takes the socket by
/// reference: an async fn stores a by-value argument twice in its future.
pub(crate) async fn echo<S>(ws: &mut WebSocket<S>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let socket = &mut *ws;
    std::future::poll_fn(move |cx| poll_echo(socket, cx)).await;
    // Write out whatever is left (the close reply); the peer may be gone.
    let _ = SinkExt::flush(ws).await;
}

/// Feeds each received message back (without flushing: the next read
/// flushes) until the stream ends, fails, or a reply cannot be sent. Waits
/// for room to send before reading, so that no message is ever held here:
/// `feed(message).await` would keep one (40 bytes) in every task.
fn poll_echo<S>(ws: &mut WebSocket<S>, cx: &mut Context<'_>) -> Poll<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        let can_send = ready!(ws.poll_ready_unpin(cx)).is_ok();
        match ready!(ws.poll_next_unpin(cx)) {
            Some(Ok(message)) => {
                if !can_send || ws.start_send_unpin(message).is_err() {
                    return Poll::Ready(());
                }
            }
            Some(Err(_)) | None => return Poll::Ready(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The task of an idle plain connection is most of its memory: tokio
    /// stores the future inline in a task cell of a multiple of 128 bytes
    /// with ~104 bytes of its own, so 280 bytes of future make a 384-byte
    /// cell.
    #[tokio::test]
    async fn plain_connection_task_is_small() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap());
        let (client, accepted) = tokio::join!(client, listener.accept());
        let (tcp, peer) = accepted.unwrap();
        let live = Arc::new(Live::default());
        let task = plain_task(
            tcp,
            peer,
            Arc::new(Config::default()),
            Shutdown::new().watch(),
            live.enter(),
        );
        let size = std::mem::size_of_val(&task);
        eprintln!(
            "plain connection task future: {size} bytes; WebSocket<TcpStream>: {} bytes",
            std::mem::size_of::<WebSocket<TcpStream>>()
        );
        assert!(size <= 280, "{size} bytes");
        drop((task, client));
        assert_eq!(live.count(), 0);
    }
}
