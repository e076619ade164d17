//! `peer-broadcast`: the broadcast servers `duplex bench fanout --protocol
//! broadcast` compares the hub with.
//!
//! `peer-broadcast --impl IMPL --listen ADDR` runs a server that sends every
//! text or binary message any client sends to every connected client, the
//! sender included (as Node's `wss.clients.forEach(c => c.send(data))`), in
//! one of three shapes:
//!
//! - `tungstenite`: tokio-tungstenite as its `server.rs` chat example and a
//!   typical application write it: a map of connected peers, each with an
//!   unbounded channel of `Message`s; the read half of each connection clones
//!   every message into every peer's channel under the map's lock; the write
//!   half forwards its channel into the socket, feeding what is queued and
//!   flushing once the channel is empty (what `StreamExt::forward` of the
//!   example does). Each connection frames every message itself.
//! - `tungstenite-broadcast`: tokio-tungstenite fed from one
//!   `tokio::sync::broadcast` channel for all clients: the read half of each
//!   connection sends every message it reads into the channel once (no map,
//!   no per-client clone loop in the reader); the write half of each
//!   connection, a task of its own, receives from its own receiver of that
//!   channel, feeds every message already there into the sink without
//!   flushing (`recv`, then `try_recv` until empty) and flushes once per
//!   batch. The channel holds each
//!   [`Message`](tokio_tungstenite::tungstenite::Message) once; a receiver's
//!   copy is a reference-counted clone of its payload. Each connection still
//!   frames every message itself. The writer is its own task because a task
//!   that polls both halves polls the read half at every batch, and each
//!   poll of tungstenite's read half first zero-fills its free read buffer
//!   (up to 128 KiB). The channel's capacity (`--channel-capacity`, default
//!   [`BROADCAST_CAPACITY`]) bounds how far a client may fall behind the
//!   newest message: a client that falls further behind (its receiver
//!   *lagged*: the channel overwrote messages it had not read) is sent a
//!   close frame (1008, "lagged") and disconnected, rather than given a
//!   stream with a gap. The benchmark keeps at most its in-flight count (64
//!   by default) undelivered, far below the default.
//! - `duplex`: the `tungstenite` shape on the duplex library, with duplex's
//!   broadcast idiom: the message is framed once ([`duplex::PreparedMessage`])
//!   and the same bytes are queued to every connection, written by the
//!   connection's next read. Not a peer: a reference for what the hub adds on
//!   top of the library.
//! - `duplex-broadcast`: the `tungstenite-broadcast` shape on the duplex
//!   library: one `tokio::sync::broadcast` channel of prepared messages
//!   (each framed once, by the connection that read it); one task per
//!   connection, which reads, and takes every message already in the channel
//!   (`recv`, then `try_recv` until empty) into the WebSocket's write queue,
//!   written by its next read (or at once, waiting, when the queue passes the
//!   write buffer's high-water mark). duplex's read half prepares no buffer
//!   when polled, so one task serves both halves. A client that lags is
//!   closed as in `tungstenite-broadcast` (1008, "lagged").
//!
//! The binary allocates with jemalloc, with the `duplex` binary's options
//! (see `ALLOCATOR`): what a subscriber costs is then the libraries' blocks,
//! not glibc's carving of tokio's 128-byte aligned blocks (each task, each
//! socket registration) out of larger ones, which adds ~0.3 KiB per
//! connection and changes from build to build. Every implementation here
//! runs on it.
//!
//! Invariants, as for `peer-echo`: the multi-thread tokio runtime with its
//! default worker count (one under `taskset -c 0`); one task per connection
//! (two for `tungstenite-broadcast`: the reader and the writer; for
//! `duplex-broadcast`, the handshake's, then the relay's);
//! `TCP_NODELAY`; no compression; library default limits; errors end the
//! connection silently. A connection is in the map (or holds a receiver of the
//! broadcast channel) from the end of its handshake until its task ends; the
//! per-client channels are unbounded (a slow client grows its queue: the
//! benchmark bounds what is in flight), the broadcast channel is bounded as
//! said above.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use clap::{Parser, ValueEnum};
use tokio::net::TcpListener;

/// Broadcast servers of peer WebSocket libraries, for `duplex bench fanout`.
#[derive(Debug, Parser)]
#[command(name = "peer-broadcast", version, about)]
struct Args {
    /// The implementation to run.
    #[arg(long = "impl", value_enum)]
    implementation: Impl,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9000")]
    listen: SocketAddr,
    /// `tungstenite-broadcast` and `duplex-broadcast` only: the broadcast
    /// channel's capacity, in messages; a client that falls further behind
    /// is disconnected.
    #[arg(long, default_value_t = BROADCAST_CAPACITY)]
    channel_capacity: usize,
}

/// The default capacity of the broadcast channel (`tungstenite-broadcast`,
/// `duplex-broadcast`): 256 times the benchmark's default in-flight count
/// (64), so that no subscriber lags in a delivery-gated run, and room for a
/// publisher that reads its own copies late (the generator's publisher reads
/// them between publishes). The slots are allocated once, ~70 B each (~1.1
/// MiB), before any client connects.
const BROADCAST_CAPACITY: usize = 16_384;

/// The broadcast server implementations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Impl {
    /// tokio-tungstenite, one unbounded channel per client.
    Tungstenite,
    /// tokio-tungstenite, one `tokio::sync::broadcast` channel for all
    /// clients.
    TungsteniteBroadcast,
    /// duplex, one prepared frame shared by every client, one unbounded
    /// channel per client.
    Duplex,
    /// duplex, one prepared frame shared by every client, one
    /// `tokio::sync::broadcast` channel for all clients.
    DuplexBroadcast,
}

/// Every allocation of the binary: jemalloc, as the `duplex` binary's.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, the `duplex` binary's (`crates/cli/src/allocator.rs`):
/// unused pages go back to the system within about a second.
// SAFETY: the symbol is a pointer to a NUL-terminated string that lives for
// the whole program, which is what jemalloc reads from it; nothing else in
// the program defines `_rjem_malloc_conf`.
#[unsafe(export_name = "_rjem_malloc_conf")]
#[used]
static ALLOCATOR_OPTIONS: &[u8; 60] =
    b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

/// The connected clients: each one's id and the sending side of its queue.
type Peers<T> = Arc<Mutex<HashMap<u64, tokio::sync::mpsc::UnboundedSender<T>>>>;

/// Locks the peer map, whether or not a panicking holder poisoned it (every
/// update is a single insert or remove).
fn lock<T>(
    peers: &Peers<T>,
) -> MutexGuard<'_, HashMap<u64, tokio::sync::mpsc::UnboundedSender<T>>> {
    peers.lock().unwrap_or_else(|e| e.into_inner())
}

/// Accepts connections for ever, one task per connection, each registered in
/// the implementation's peer map.
#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let listener = TcpListener::bind(args.listen).await?;
    eprintln!(
        "peer-broadcast: {:?} listening on {}",
        args.implementation,
        listener.local_addr()?
    );
    let tungstenite_peers: Peers<tokio_tungstenite::tungstenite::Message> = Peers::default();
    let duplex_peers: Peers<duplex::PreparedMessage> = Peers::default();
    anyhow::ensure!(
        args.channel_capacity > 0,
        "--channel-capacity must be at least 1"
    );
    // Only the channel of the implementation run holds its slots (the other
    // one slot), so that no server's memory counts another's.
    let capacity = |used: bool| if used { args.channel_capacity } else { 1 };
    let (channel, _) = tokio::sync::broadcast::channel(capacity(
        args.implementation == Impl::TungsteniteBroadcast,
    ));
    let (prepared_channel, _) =
        tokio::sync::broadcast::channel(capacity(args.implementation == Impl::DuplexBroadcast));
    let duplex_config = Arc::new(duplex::Config::default().without_compression());
    let mut next_id = 0u64;
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
        next_id += 1;
        match args.implementation {
            Impl::Tungstenite => tokio::spawn(tungstenite_broadcast::serve(
                tcp,
                next_id,
                tungstenite_peers.clone(),
            )),
            Impl::TungsteniteBroadcast => {
                tokio::spawn(tungstenite_channel::serve(tcp, channel.clone()))
            }
            Impl::Duplex => tokio::spawn(duplex_broadcast::serve(
                tcp,
                next_id,
                duplex_peers.clone(),
                duplex_config.clone(),
            )),
            Impl::DuplexBroadcast => tokio::spawn(duplex_channel::serve(
                tcp,
                prepared_channel.clone(),
                duplex_config.clone(),
            )),
        };
    }
}

/// tokio-tungstenite, as its `server.rs` example with a broadcast to all.
mod tungstenite_broadcast {
    use futures_util::{SinkExt, StreamExt};
    use tokio::net::TcpStream;
    use tokio_tungstenite::tungstenite::Message;

    use super::{Peers, lock};

    /// Accepts the handshake, joins the map, and runs the read half
    /// (broadcast) and the write half (forward its queue) until either ends.
    pub(super) async fn serve(tcp: TcpStream, id: u64, peers: Peers<Message>) {
        let Ok(ws) = tokio_tungstenite::accept_async(tcp).await else {
            return;
        };
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        lock(&peers).insert(id, tx);
        let (mut write, mut read) = ws.split();
        let broadcast_incoming = async {
            while let Some(Ok(message)) = read.next().await {
                if message.is_text() || message.is_binary() {
                    for peer in lock(&peers).values() {
                        let _ = peer.send(message.clone());
                    }
                }
            }
        };
        let receive_from_others = async {
            while let Some(message) = rx.recv().await {
                if write.feed(message).await.is_err() {
                    return;
                }
                while let Ok(message) = rx.try_recv() {
                    if write.feed(message).await.is_err() {
                        return;
                    }
                }
                if write.flush().await.is_err() {
                    return;
                }
            }
        };
        tokio::select! {
            () = broadcast_incoming => {}
            () = receive_from_others => {}
        }
        lock(&peers).remove(&id);
    }
}

/// tokio-tungstenite fed from one `tokio::sync::broadcast` channel.
mod tungstenite_channel {
    use std::time::Duration;

    use futures_util::stream::SplitSink;
    use futures_util::{SinkExt, StreamExt};
    use tokio::net::TcpStream;
    use tokio::sync::broadcast::error::{RecvError, TryRecvError};
    use tokio::sync::broadcast::{Receiver, Sender};
    use tokio_tungstenite::WebSocketStream;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

    /// How long a lagged client's close frame may take to go out.
    const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

    /// The write half of a connection.
    type Sink = SplitSink<WebSocketStream<TcpStream>, Message>;

    /// Accepts the handshake, subscribes to the channel, spawns the write
    /// half as its own task (so that a batch to write does not poll the
    /// read half, whose every poll prepares tungstenite's read buffer) and
    /// runs the read half (send into the channel) here, until either ends.
    pub(super) async fn serve(tcp: TcpStream, channel: Sender<Message>) {
        let Ok(ws) = tokio_tungstenite::accept_async(tcp).await else {
            return;
        };
        let rx = channel.subscribe();
        let (write, mut read) = ws.split();
        let mut writer = tokio::spawn(write_all(rx, write));
        let broadcast_incoming = async {
            while let Some(Ok(message)) = read.next().await {
                if message.is_text() || message.is_binary() {
                    // Err only when no receiver is left: nobody to send to.
                    let _ = channel.send(message);
                }
            }
        };
        tokio::select! {
            () = broadcast_incoming => writer.abort(),
            _ = &mut writer => {}
        }
    }

    /// The write half: every message already in the channel is fed without
    /// flushing (`recv`, then `try_recv` until empty), then one flush per
    /// batch. A receiver that lagged gets a close frame (1008, "lagged").
    async fn write_all(mut rx: Receiver<Message>, mut write: Sink) {
        let lagged = loop {
            let first = match rx.recv().await {
                Ok(message) => message,
                Err(RecvError::Lagged(_)) => break true,
                Err(RecvError::Closed) => break false,
            };
            if write.feed(first).await.is_err() {
                break false;
            }
            let lagged = loop {
                match rx.try_recv() {
                    Ok(message) => {
                        if write.feed(message).await.is_err() {
                            return;
                        }
                    }
                    Err(TryRecvError::Empty) => break false,
                    Err(TryRecvError::Lagged(_)) => break true,
                    Err(TryRecvError::Closed) => return,
                }
            };
            if lagged {
                break true;
            }
            if write.flush().await.is_err() {
                break false;
            }
        };
        drop(rx);
        if lagged {
            let close = Message::Close(Some(CloseFrame {
                code: CloseCode::Policy,
                reason: "lagged".into(),
            }));
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, write.send(close)).await;
        }
    }
}

/// duplex, framing each message once for every client.
mod duplex_broadcast {
    use std::sync::Arc;

    use duplex::{Accept, Config, PreparedMessage};
    use futures_util::StreamExt;
    use tokio::net::TcpStream;

    use super::{Peers, lock};

    /// Accepts the handshake, joins the map, and serves: every message read
    /// is prepared once and queued to every peer; queued frames are written
    /// by the next read (one vectored write for all of them).
    pub(super) async fn serve(
        tcp: TcpStream,
        id: u64,
        peers: Peers<PreparedMessage>,
        config: Arc<Config>,
    ) {
        let Ok(mut ws) = duplex::accept_with(tcp, &config, |_| Ok(Accept::default())).await else {
            return;
        };
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<PreparedMessage>();
        lock(&peers).insert(id, tx);
        loop {
            tokio::select! {
                message = ws.next() => {
                    let Some(Ok(message)) = message else { break };
                    let prepared = PreparedMessage::new(&message);
                    for peer in lock(&peers).values() {
                        let _ = peer.send(prepared.clone());
                    }
                }
                Some(prepared) = rx.recv() => {
                    if ws.send_prepared(&prepared).is_err() {
                        break;
                    }
                    while let Ok(prepared) = rx.try_recv() {
                        if ws.send_prepared(&prepared).is_err() {
                            break;
                        }
                    }
                }
            }
        }
        lock(&peers).remove(&id);
    }
}

/// duplex fed from one `tokio::sync::broadcast` channel of prepared messages.
mod duplex_channel {
    use std::sync::Arc;
    use std::time::Duration;

    use std::future::{Future, poll_fn};
    use std::pin::pin;
    use std::task::Poll;

    use duplex::{Accept, CloseCode, Config, PreparedMessage, WebSocket};
    use futures_util::StreamExt;
    use tokio::net::TcpStream;
    use tokio::sync::broadcast::error::{RecvError, TryRecvError};
    use tokio::sync::broadcast::{Receiver, Sender};

    /// How long a lagged client's close may take.
    const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

    /// What woke a relay: a read, or the channel.
    enum Step {
        Read(Option<Result<duplex::Message, duplex::Error>>),
        Received(Result<PreparedMessage, RecvError>),
    }

    /// What a relay does after [`take`].
    enum Flow {
        /// Wait for the next step.
        Next,
        /// Messages were queued: flush if the queue is past its mark.
        Queued,
        /// The connection ends (`lagged`: closed with 1008 first).
        End { lagged: bool },
    }

    /// Acts on `step`: a message read goes into the channel; a message
    /// received is queued, with every one already in the channel. (A plain
    /// function: what it holds is not kept in the relay's future.)
    fn take(
        ws: &mut WebSocket<TcpStream>,
        rx: &mut Receiver<PreparedMessage>,
        channel: &Sender<PreparedMessage>,
        step: Step,
    ) -> Flow {
        match step {
            Step::Read(Some(Ok(message))) => {
                // Err only when no receiver is left: nobody to send to.
                let _ = channel.send(PreparedMessage::new(&message));
                return Flow::Next;
            }
            Step::Read(_) => return Flow::End { lagged: false },
            Step::Received(Ok(prepared)) => {
                if ws.send_prepared(&prepared).is_err() {
                    return Flow::End { lagged: false };
                }
            }
            Step::Received(Err(RecvError::Lagged(_))) => return Flow::End { lagged: true },
            Step::Received(Err(RecvError::Closed)) => return Flow::End { lagged: false },
        }
        loop {
            match rx.try_recv() {
                Ok(prepared) => {
                    if ws.send_prepared(&prepared).is_err() {
                        return Flow::End { lagged: false };
                    }
                }
                Err(TryRecvError::Empty) => return Flow::Queued,
                Err(TryRecvError::Lagged(_)) => return Flow::End { lagged: true },
                Err(TryRecvError::Closed) => return Flow::End { lagged: false },
            }
        }
    }

    /// Accepts the handshake, then relays (see [`relay`]) in a task of its
    /// own: the handshake's future is larger than the relay's, and a task
    /// keeps its future's largest size for its whole life.
    pub(super) async fn serve(
        tcp: TcpStream,
        channel: Sender<PreparedMessage>,
        config: Arc<Config>,
    ) {
        let Ok(ws) = duplex::accept_with(tcp, &config, |_| Ok(Accept::default())).await else {
            return;
        };
        drop(config);
        drop(tokio::spawn(relay(ws, channel)));
    }

    /// Serves both halves in one task: every message read is prepared once
    /// and sent into the channel; every message in the channel is queued to
    /// the WebSocket (a batch at a time) and written by its next read.
    ///
    /// Its future is kept small, as a task keeps it for the connection's
    /// whole life (with tokio's 104 bytes around it, within a 384-byte
    /// block): an `async move` block and not an `async fn`, as the compiler
    /// keeps an `async fn`'s arguments twice in its future (as given and as
    /// moved into the body); no `select!`, which keeps both branches' futures
    /// and its state; and what is done between waits in plain functions.
    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn's future holds its arguments twice"
    )]
    pub(super) fn relay(
        mut ws: WebSocket<TcpStream>,
        channel: Sender<PreparedMessage>,
    ) -> impl Future<Output = ()> + Send {
        async move {
            let mut rx = channel.subscribe();
            let lagged = loop {
                // Reads first, then the channel: one future for the channel
                // (its waiter) and none for the read, where `select!` keeps
                // both and its own state (72 bytes beside the WebSocket).
                let step = {
                    let mut received = pin!(rx.recv());
                    poll_fn(|cx| match ws.poll_next_unpin(cx) {
                        Poll::Ready(message) => Poll::Ready(Step::Read(message)),
                        Poll::Pending => received.as_mut().poll(cx).map(Step::Received),
                    })
                    .await
                };
                match take(&mut ws, &mut rx, &channel, step) {
                    Flow::Next => continue,
                    Flow::Queued => {}
                    Flow::End { lagged } => break lagged,
                }
                // A client that reads slower than the channel fills: wait for
                // it here (it lags, and is closed) rather than queue without
                // bound.
                if ws.buffered_amount() > ws.high_water() && ws.flush().await.is_err() {
                    break false;
                }
            };
            drop(rx);
            if lagged {
                // Boxed, as the handshake: a timer is large.
                let close = ws.close(CloseCode::POLICY_VIOLATION, "lagged");
                let _ = Box::pin(tokio::time::timeout(CLOSE_TIMEOUT, close)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use duplex::{Accept, Config};
    use tokio::net::TcpListener;

    /// tokio's task header and trailer around a future, in bytes (its
    /// version 1.54 without `tokio_unstable`): a task's block is the future
    /// plus these, rounded up to 128 bytes.
    const TASK_OVERHEAD: usize = 104;

    #[tokio::test]
    async fn a_relay_task_fits_a_384_byte_block() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("ws://{}/", listener.local_addr().expect("address"));
        let client = tokio::spawn(async move { duplex::connect(&url).await });
        let (tcp, _) = listener.accept().await.expect("accept");
        let ws = duplex::accept_with(tcp, &Config::default(), |_| Ok(Accept::default()))
            .await
            .expect("handshake");
        let (channel, _) = tokio::sync::broadcast::channel(1);
        let size = std::mem::size_of_val(&super::duplex_channel::relay(ws, channel));
        assert!(
            size + TASK_OVERHEAD <= 384,
            "a relay's future: {size} bytes"
        );
        assert!(client.await.expect("client task").is_ok());
    }
}
