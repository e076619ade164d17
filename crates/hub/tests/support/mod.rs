//! Test support for the hub's browser tests: a headless Chromium driver
//! ([`browser`], DevTools), a headless Firefox driver ([`firefox`],
//! WebDriver BiDi), a [`WebPage`] trait so one test body drives either,
//! the axe-core audit, a TCP relay whose connections a test can cut ([`Relay`]),
//! and paths.
#![allow(dead_code)]

pub(crate) mod browser;
pub(crate) mod firefox;

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

/// `tests/interop/node/node_modules/axe-core/axe.min.js`, the accessibility
/// engine the page audits inject; installed by `cargo xtask setup node-ws`
/// (pinned in `tests/interop/node/package.json`). Missing is a failure.
pub(crate) fn axe_source() -> String {
    let path = workspace_root().join("tests/interop/node/node_modules/axe-core/axe.min.js");
    std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read {} ({e}): install it with `cargo xtask setup node-ws`",
            path.display()
        )
    })
}

/// What the browser tests need of a page, whichever browser drives it, so
/// one test body runs in Chromium (DevTools) and Firefox (WebDriver BiDi).
pub(crate) trait WebPage {
    /// Evaluates `js` (awaiting a promise it returns) to JSON.
    fn eval(
        &self,
        js: &str,
    ) -> impl std::future::Future<Output = Result<serde_json::Value, String>>;
    /// Sets the viewport size in CSS pixels (`mobile`: a phone, where the
    /// browser can emulate one).
    fn viewport(
        &self,
        width: u32,
        height: u32,
        mobile: bool,
    ) -> impl std::future::Future<Output = Result<(), String>>;
    /// Saves a PNG of the viewport to `path`.
    fn save_screenshot(
        &self,
        path: &std::path::Path,
    ) -> impl std::future::Future<Output = Result<(), String>>;
    /// Presses and releases `key` as a keyboard does.
    fn key(&self, key: browser::Key) -> impl std::future::Future<Output = Result<(), String>>;
    /// Types `text` into the focused element with the keyboard.
    fn type_keys(&self, text: &str) -> impl std::future::Future<Output = Result<(), String>>;
}

impl WebPage for browser::Page {
    async fn eval(&self, js: &str) -> Result<serde_json::Value, String> {
        browser::Page::eval(self, js)
            .await
            .map_err(|e| e.to_string())
    }

    async fn viewport(&self, width: u32, height: u32, mobile: bool) -> Result<(), String> {
        self.set_viewport(width, height, mobile)
            .await
            .map_err(|e| e.to_string())
    }

    async fn save_screenshot(&self, path: &std::path::Path) -> Result<(), String> {
        self.screenshot(path).await.map_err(|e| e.to_string())
    }

    async fn key(&self, key: browser::Key) -> Result<(), String> {
        self.press(key).await.map_err(|e| e.to_string())
    }

    async fn type_keys(&self, text: &str) -> Result<(), String> {
        self.type_text(text).await.map_err(|e| e.to_string())
    }
}

/// Evaluates `predicate` on `page` every 100 ms until it is truthy (in the
/// JavaScript sense) and returns its value, or an error after `timeout`.
pub(crate) async fn wait_on<P: WebPage>(
    page: &P,
    predicate: &str,
    timeout: Duration,
) -> Result<serde_json::Value, String> {
    let deadline = std::time::Instant::now() + timeout;
    let mut last = String::from("no evaluation finished");
    loop {
        let remaining = deadline.saturating_duration_since(std::time::Instant::now());
        match tokio::time::timeout(
            remaining.max(Duration::from_millis(1)),
            page.eval(predicate),
        )
        .await
        {
            Ok(Ok(value)) => {
                let truthy = match &value {
                    serde_json::Value::Null => false,
                    serde_json::Value::Bool(b) => *b,
                    serde_json::Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
                    serde_json::Value::String(s) => !s.is_empty(),
                    _ => true,
                };
                if truthy {
                    return Ok(value);
                }
                last = format!("value {value}");
            }
            Ok(Err(e)) => last = e,
            Err(_) => {}
        }
        if std::time::Instant::now() >= deadline {
            return Err(format!(
                "timed out after {timeout:?} waiting for `{predicate}` (last: {last})"
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Injects axe-core into `page` (once) and runs it on the whole document;
/// returns one line per violation (rule, impact, help, the nodes' targets),
/// empty when there is none.
pub(crate) async fn axe_violations<P: WebPage>(page: &P, axe: &str) -> Result<Vec<String>, String> {
    if page.eval("typeof window.axe === 'object'").await? != serde_json::Value::Bool(true) {
        // Evaluated as a script: axe.min.js defines `window.axe`.
        page.eval(&format!("{axe}\n;true")).await?;
    }
    let found = page
        .eval(
            "axe.run(document, { resultTypes: ['violations'] }).then(r => r.violations.map(v => \
               `${v.id} (${v.impact}): ${v.help} at ${v.nodes.map(n => n.target.join(' ')).join(', ')}`))",
        )
        .await?;
    Ok(found
        .as_array()
        .map(|lines| {
            lines
                .iter()
                .map(|l| l.as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default())
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
