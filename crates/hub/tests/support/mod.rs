//! Test support for the hub's browser tests: a headless Chromium driver
//! ([`browser`]), a TCP relay whose connections a test can cut ([`Relay`]),
//! and paths.
#![allow(dead_code)]

pub(crate) mod browser;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// The workspace root (two levels above this crate).
pub(crate) fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the workspace root exists")
}

/// `artifacts/web/` under the workspace root, created if missing.
pub(crate) fn artifacts_dir() -> PathBuf {
    let dir = workspace_root().join("artifacts/web");
    std::fs::create_dir_all(&dir).expect("create artifacts/web");
    dir
}

/// A TCP relay on `127.0.0.1:0` in front of a server, so a test can fail
/// a client's network the way real networks fail: [`Relay::cut`] drops every
/// relayed connection at once (a TCP reset to the client, no WebSocket close
/// frame: the browser sees 1006) and refuses new ones until
/// [`Relay::restore`]; [`Relay::hold_replies`] stops passing the server's
/// bytes to clients (they wait in the relay) while the clients' bytes still
/// reach the server, as when a reply is lost with the link. Loopback only;
/// its tasks end when it is dropped.
#[derive(Debug)]
pub(crate) struct Relay {
    addr: SocketAddr,
    cut: watch::Sender<u64>,
    held: watch::Sender<bool>,
    refusing: Arc<AtomicBool>,
    open: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    /// Starts relaying connections to `target`.
    pub(crate) async fn start(target: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (cut, cuts) = watch::channel(0u64);
        let (held, holds) = watch::channel(false);
        let refusing = Arc::new(AtomicBool::new(false));
        let open = Arc::new(AtomicUsize::new(0));
        let task = {
            let (refusing, open) = (refusing.clone(), open.clone());
            tokio::spawn(async move {
                let mut connections = tokio::task::JoinSet::new();
                loop {
                    let accepted = tokio::select! {
                        accepted = listener.accept() => accepted,
                        Some(_) = connections.join_next(), if !connections.is_empty() => continue,
                    };
                    let Ok((client, _)) = accepted else {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    };
                    if refusing.load(Ordering::SeqCst) {
                        let _ = client.set_zero_linger();
                        drop(client);
                        continue;
                    }
                    let mut cuts = cuts.clone();
                    cuts.mark_unchanged();
                    connections.spawn(relay(client, target, cuts, holds.clone(), open.clone()));
                }
            })
        };
        Ok(Self {
            addr,
            cut,
            held,
            refusing,
            open,
            task,
        })
    }

    /// The address to connect to instead of the server's.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Drops every relayed connection and refuses new ones.
    pub(crate) fn cut(&self) {
        self.refusing.store(true, Ordering::SeqCst);
        self.cut.send_modify(|n| *n += 1);
    }

    /// Relays new connections again.
    pub(crate) fn restore(&self) {
        self.refusing.store(false, Ordering::SeqCst);
    }

    /// Holds (`true`) or passes on (`false`) what the server sends to
    /// clients.
    pub(crate) fn hold_replies(&self, hold: bool) {
        self.held.send_replace(hold);
    }

    /// Connections being relayed now.
    pub(crate) fn open_connections(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Relays one connection until both sides are done or it is cut.
async fn relay(
    mut client: TcpStream,
    target: SocketAddr,
    mut cuts: watch::Receiver<u64>,
    holds: watch::Receiver<bool>,
    open: Arc<AtomicUsize>,
) {
    let Ok(Ok(mut server)) =
        tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(target)).await
    else {
        return;
    };
    open.fetch_add(1, Ordering::SeqCst);
    let was_cut = {
        let (mut client_in, mut client_out) = client.split();
        let (mut server_in, mut server_out) = server.split();
        let both = async {
            tokio::join!(
                pump(&mut client_in, &mut server_out, None),
                pump(&mut server_in, &mut client_out, Some(holds)),
            )
        };
        // Biased: a cut wins over bytes released at the same moment.
        tokio::select! {
            biased;
            _ = cuts.changed() => true,
            _ = both => false,
        }
    };
    if was_cut {
        // A reset rather than a FIN: as abrupt as a lost link.
        let _ = client.set_zero_linger();
        let _ = server.set_zero_linger();
    }
    open.fetch_sub(1, Ordering::SeqCst);
}

/// Copies `from` to `to` until end of stream (then half-closes `to`);
/// while `held` says so, what was read waits before being written.
async fn pump<R, W>(from: &mut R, to: &mut W, mut held: Option<watch::Receiver<bool>>)
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some(held) = &mut held
            && held.wait_for(|hold| !*hold).await.is_err()
        {
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
    let _ = to.shutdown().await;
}
