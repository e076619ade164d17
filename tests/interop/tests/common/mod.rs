//! What the interop tests share: the peers as child processes, the in-test
//! Duplex echo server, payloads, and the two scenarios (peer client → Duplex
//! server, Duplex client → peer server) that Python `websockets` and Node `ws`
//! both run.
//!
//! The peer scripts (`python/peer.py`, `node/peer.js`) speak one protocol,
//! described in `peer.py`'s docstring: JSON report lines on stdout, and wire
//! commands that are text messages beginning with NUL (`"\0cmd:ping:TEXT"`,
//! `"\0cmd:pings"`, `"\0cmd:close:CODE:REASON"`), answered with `"\0ack:…"`.
//! The in-test Duplex server answers `ping` and `close` the same way.
//!
//! Every wait is bounded ([`STEP_TIMEOUT`], [`PEER_TIMEOUT`]); every child is
//! killed when its handle drops. A missing peer fails the test with a message
//! saying to run `cargo xtask setup`.

#![allow(
    dead_code,
    reason = "each test binary (python, node, chromium) uses a different part"
)]

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use duplex::{
    Accept, ClientRequest, CloseCode, CloseInfo, Config, Message, MessageKind, WebSocket, http2,
};
use duplex_proto::deflate::{DeflateConfig, DeflateParams};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use sha1::{Digest, Sha1};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Prefix of a wire command (a text message).
pub(crate) const CMD: &str = "\u{0}cmd:";
/// Prefix of the answer to a wire command.
pub(crate) const ACK: &str = "\u{0}ack:";

/// One step (a message, an echo, a close) may take this long. Generous: a
/// 16 MiB compressed round trip takes about 10 s in a debug build, and 40 s on
/// a busy 2-core machine.
pub(crate) const STEP_TIMEOUT: Duration = Duration::from_secs(90);
/// A whole peer run may take this long before it is killed.
pub(crate) const PEER_TIMEOUT: Duration = Duration::from_secs(150);

/// 1 MiB.
pub(crate) const MIB: usize = 1 << 20;
/// Every size the brief names: around the 7-bit and 16-bit length encodings,
/// 1 MiB, and 16 MiB (Duplex's default message limit, inclusive).
pub(crate) const ALL_SIZES: &[usize] = &[0, 125, 126, 65535, 65536, MIB, 16 * MIB];
/// [`ALL_SIZES`] without 16 MiB.
pub(crate) const UP_TO_1_MIB: &[usize] = &[0, 125, 126, 65535, 65536, MIB];
/// Up to 64 KiB: enough to cross a window and the 16-bit length.
pub(crate) const UP_TO_64_KIB: &[usize] = &[0, 125, 126, 65535, 65536];
/// Only 16 MiB, Duplex's default message limit (with [`Case::incompressible`]:
/// a compressed frame over the limit, for a message at it).
pub(crate) const AT_THE_LIMIT: &[usize] = &[16 * MIB];

/// The workspace root (where `.tools/` and `artifacts/` live).
pub(crate) fn workspace_root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.join("../..")
        .canonicalize()
        .expect("the workspace root exists")
}

/// `artifacts/interop/` under the workspace root (git-ignored), created.
pub(crate) fn artifacts_dir() -> PathBuf {
    let dir = workspace_root().join("artifacts/interop");
    std::fs::create_dir_all(&dir).expect("cannot create artifacts/interop");
    dir
}

/// Lowercase hex SHA-1 of `data` (all peers compute the same).
pub(crate) fn sha1_hex(data: &[u8]) -> String {
    let digest = Sha1::digest(data);
    let mut out = String::with_capacity(40);
    for byte in digest {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

/// A small deterministic generator (xorshift64*), enough for test payloads.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

const WORDS: &[&str] = &[
    "duplex ",
    "héllo ",
    "wörld ",
    "€uro ",
    "日本語 ",
    "🦀 ",
    "websocket ",
    "ping ",
];

/// Valid UTF-8 of exactly `size` bytes with 2-, 3- and 4-byte characters: a
/// chunk of up to 64 KiB of random words, repeated, padded with `x`.
pub(crate) fn text_payload(size: usize, seed: u64) -> String {
    let mut rng = Rng::new(seed);
    let target = size.min(1 << 16);
    let mut chunk = String::new();
    loop {
        let word = WORDS[(rng.next() % WORDS.len() as u64) as usize];
        if chunk.len() + word.len() > target {
            break;
        }
        chunk.push_str(word);
    }
    let mut out = String::with_capacity(size);
    while !chunk.is_empty() && out.len() + chunk.len() <= size {
        out.push_str(&chunk);
    }
    while out.len() < size {
        out.push('x');
    }
    out
}

/// `size` bytes: 64 random bytes, the same 64 again, and so on (compressible
/// by any window, and not trivially); see [`noise_payload`] for the opposite.
pub(crate) fn binary_payload(size: usize, seed: u64) -> Bytes {
    let mut rng = Rng::new(seed ^ 0xB1);
    let mut out = Vec::with_capacity(size + 128);
    while out.len() < size {
        let block: Vec<u8> = (0..8).flat_map(|_| rng.next().to_le_bytes()).collect();
        out.extend_from_slice(&block);
        out.extend_from_slice(&block);
    }
    out.truncate(size);
    Bytes::from(out)
}

/// `size` random bytes (xorshift64*), which deflate cannot shrink.
pub(crate) fn noise_payload(size: usize, seed: u64) -> Bytes {
    let mut rng = Rng::new(seed ^ 0x5EED);
    let mut out = Vec::with_capacity(size + 8);
    while out.len() < size {
        out.extend_from_slice(&rng.next().to_le_bytes());
    }
    out.truncate(size);
    Bytes::from(out)
}

/// A message seen by one side: kind, length and SHA-1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Seen {
    /// `"text"` or `"binary"`.
    pub(crate) kind: String,
    /// Payload length in bytes.
    pub(crate) len: usize,
    /// Lowercase hex SHA-1 of the payload.
    pub(crate) sha1: String,
}

impl Seen {
    /// What `message` is.
    pub(crate) fn of(message: &Message) -> Self {
        Self {
            kind: kind_name(message.kind()).to_owned(),
            len: message.payload().len(),
            sha1: sha1_hex(message.payload()),
        }
    }

    /// From a peer's `message` or `echo` report line.
    pub(crate) fn from_report(line: &Value) -> Self {
        Self {
            kind: line["kind"].as_str().unwrap_or("?").to_owned(),
            len: line["len"].as_u64().unwrap_or(u64::MAX) as usize,
            sha1: line["sha1"].as_str().unwrap_or("?").to_owned(),
        }
    }
}

fn kind_name(kind: MessageKind) -> &'static str {
    match kind {
        MessageKind::Text => "text",
        MessageKind::Binary => "binary",
    }
}

/// The two peers that run the same scripts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Peer {
    /// Python `websockets`, in `.tools/py3`.
    Python,
    /// Node `ws`, in `tests/interop/node/node_modules`.
    Node,
    /// Node `ws` over Node's own `http2` module: WebSockets over HTTP/2
    /// (RFC 8441, h2c with prior knowledge; `node/peer.js --http2`).
    NodeHttp2,
}

impl Peer {
    /// The peer's name in messages.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Peer::Python => "Python websockets",
            Peer::Node => "Node ws",
            Peer::NodeHttp2 => "Node http2 + ws",
        }
    }

    /// Whether this peer's WebSockets go over HTTP/2 (RFC 8441).
    pub(crate) fn http2(self) -> bool {
        self == Peer::NodeHttp2
    }

    /// The command that runs the peer's script, after checking the peer is
    /// installed; panics (never skips) when it is not.
    fn command(self) -> Command {
        let root = workspace_root();
        let mut command = match self {
            Peer::Python => {
                let python = root.join(".tools/py3/bin/python");
                let works = std::process::Command::new(&python)
                    .args(["-c", "import websockets"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success());
                assert!(
                    works,
                    "Python `websockets` is not installed: {} cannot `import websockets`. \
                     Run `cargo xtask setup` (or `cargo xtask setup python-websockets`) first.",
                    python.display()
                );
                let mut command = Command::new(python);
                command.arg(root.join("tests/interop/python/peer.py"));
                command
            }
            Peer::Node | Peer::NodeHttp2 => {
                let ws = root.join("tests/interop/node/node_modules/ws/package.json");
                let node = std::process::Command::new("node")
                    .arg("--version")
                    .stdout(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success());
                assert!(
                    node && ws.is_file(),
                    "Node `ws` is not installed (node on PATH: {node}; {} exists: {}). \
                     Run `cargo xtask setup` (or `cargo xtask setup node-ws`) first.",
                    ws.display(),
                    ws.is_file()
                );
                let mut command = Command::new("node");
                command.arg(root.join("tests/interop/node/peer.js"));
                command
            }
        };
        command
            .current_dir(root)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        command
    }
}

/// The `DEFLATE` options of a peer script.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct PeerDeflate {
    /// Offer or accept permessage-deflate at all.
    pub(crate) on: bool,
    /// `--server-max-window-bits N`.
    pub(crate) server_max_window_bits: Option<u8>,
    /// `--client-max-window-bits N`.
    pub(crate) client_max_window_bits: Option<u8>,
    /// `--server-no-context-takeover`.
    pub(crate) server_no_context_takeover: bool,
    /// `--client-no-context-takeover`.
    pub(crate) client_no_context_takeover: bool,
}

impl PeerDeflate {
    /// No compression.
    pub(crate) const OFF: Self = Self {
        on: false,
        server_max_window_bits: None,
        client_max_window_bits: None,
        server_no_context_takeover: false,
        client_no_context_takeover: false,
    };
    /// The library's own permessage-deflate defaults.
    pub(crate) const DEFAULT: Self = Self {
        on: true,
        ..Self::OFF
    };

    fn args(&self) -> Vec<String> {
        let mut args = vec![
            "--compression".to_owned(),
            if self.on { "deflate" } else { "off" }.to_owned(),
        ];
        if let Some(bits) = self.server_max_window_bits {
            args.extend(["--server-max-window-bits".to_owned(), bits.to_string()]);
        }
        if let Some(bits) = self.client_max_window_bits {
            args.extend(["--client-max-window-bits".to_owned(), bits.to_string()]);
        }
        if self.server_no_context_takeover {
            args.push("--server-no-context-takeover".to_owned());
        }
        if self.client_no_context_takeover {
            args.push("--client-no-context-takeover".to_owned());
        }
        args
    }
}

/// A peer script running as a child process; killed when dropped.
pub(crate) struct PeerProcess {
    peer: Peer,
    args: Vec<String>,
    child: Child,
    events: mpsc::UnboundedReceiver<Value>,
    seen: Vec<Value>,
    stderr: Arc<Mutex<String>>,
}

impl PeerProcess {
    /// Starts `peer`'s script with `args`.
    pub(crate) fn spawn(peer: Peer, mut args: Vec<String>) -> Self {
        if peer.http2() {
            args.push("--http2".to_owned());
        }
        let mut child = peer
            .command()
            .args(&args)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start the {} peer: {e}", peer.name()));
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr_pipe = child.stderr.take().expect("stderr is piped");
        let (tx, events) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let value = serde_json::from_str(&line)
                    .unwrap_or_else(|_| serde_json::json!({"event": "raw", "line": line}));
                if tx.send(value).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        tokio::spawn(async move {
            let mut pipe = stderr_pipe;
            let mut buf = vec![0; 8192];
            while let Ok(n) = pipe.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                let mut text = sink.lock().expect("stderr lock");
                // Bounded: a runaway peer must not fill memory.
                if text.len() < 64 * 1024 {
                    text.push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            }
        });
        Self {
            peer,
            args,
            child,
            events,
            seen: Vec::new(),
            stderr,
        }
    }

    /// Everything the peer said so far, for failure messages.
    pub(crate) fn transcript(&self) -> String {
        let mut out = format!(
            "{} peer, args {:?}\nreports:\n",
            self.peer.name(),
            self.args
        );
        for line in &self.seen {
            let mut text = line.to_string();
            if text.len() > 300 {
                text.truncate(300);
                text.push('…');
            }
            let _ = writeln!(out, "  {text}");
        }
        let stderr = self.stderr.lock().expect("stderr lock");
        if !stderr.is_empty() {
            let _ = write!(out, "stderr:\n{stderr}");
        }
        out
    }

    /// The next report named `event` (skipping and keeping others), within
    /// [`STEP_TIMEOUT`]; panics with the transcript otherwise.
    pub(crate) async fn expect(&mut self, event: &str) -> Value {
        let deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(line)) => {
                    self.seen.push(line.clone());
                    if line["event"] == event {
                        return line;
                    }
                }
                Ok(None) => panic!(
                    "the {} peer ended before reporting `{event}`\n{}",
                    self.peer.name(),
                    self.transcript()
                ),
                Err(_) => panic!(
                    "the {} peer did not report `{event}` within {STEP_TIMEOUT:?}\n{}",
                    self.peer.name(),
                    self.transcript()
                ),
            }
        }
    }

    /// Waits (up to [`PEER_TIMEOUT`]) for the peer to exit, collecting all its
    /// reports; kills it on timeout and panics.
    pub(crate) async fn wait(&mut self) -> ExitStatus {
        let status = match tokio::time::timeout(PEER_TIMEOUT, self.child.wait()).await {
            Ok(status) => status.expect("waiting for the peer"),
            Err(_) => {
                let _ = self.child.start_kill();
                self.drain().await;
                panic!(
                    "the {} peer did not finish within {PEER_TIMEOUT:?}; killed\n{}",
                    self.peer.name(),
                    self.transcript()
                );
            }
        };
        self.drain().await;
        status
    }

    /// Collects the reports still in the pipe (after exit or kill).
    async fn drain(&mut self) {
        while let Ok(Some(line)) =
            tokio::time::timeout(Duration::from_secs(5), self.events.recv()).await
        {
            self.seen.push(line);
        }
    }

    /// The reports named `event` seen so far.
    pub(crate) fn seen(&self, event: &str) -> Vec<&Value> {
        self.seen.iter().filter(|l| l["event"] == event).collect()
    }

    /// Kills the peer now.
    pub(crate) async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }
}

/// What the in-test Duplex server saw on one connection, sent when it ends.
#[derive(Debug, Clone, Default)]
pub(crate) struct ConnReport {
    /// The client's `Sec-WebSocket-Extensions` offer, as received.
    pub(crate) request_extensions: Option<String>,
    /// The negotiated permessage-deflate parameters, if any.
    pub(crate) deflate: Option<DeflateParams>,
    /// Every data message received (commands excluded), in order.
    pub(crate) received: Vec<Seen>,
    /// How the connection ended.
    pub(crate) close: Option<CloseInfo>,
    /// Errors the stream, the sink or a command returned.
    pub(crate) errors: Vec<String>,
    /// The handshake failed.
    pub(crate) handshake_error: Option<String>,
    /// The WebSocket came as an extended CONNECT over HTTP/2 (RFC 8441).
    pub(crate) http2: bool,
}

/// A Duplex echo server on `127.0.0.1:0`, run by the test itself with
/// `duplex::accept_with`, or with [`http2::Server`] when a connection opens
/// with the HTTP/2 preface (h2c with prior knowledge); stops when dropped.
pub(crate) struct DuplexServer {
    /// Where it listens.
    pub(crate) addr: SocketAddr,
    reports: mpsc::UnboundedReceiver<ConnReport>,
    task: JoinHandle<()>,
}

impl DuplexServer {
    /// Starts the server with `config`.
    pub(crate) async fn start(config: Config) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local address");
        let (tx, reports) = mpsc::unbounded_channel();
        let config = Arc::new(config);
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    // Out of file descriptors and the like: wait, don't spin.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let _ = tcp.set_nodelay(true);
                tokio::spawn(serve_tcp(tcp, config.clone(), tx.clone()));
            }
        });
        Self {
            addr,
            reports,
            task,
        }
    }

    /// `ws://127.0.0.1:PORT/`.
    pub(crate) fn url(&self) -> String {
        format!("ws://{}/", self.addr)
    }

    /// The report of the next connection to end, within [`STEP_TIMEOUT`].
    pub(crate) async fn next_report(&mut self) -> ConnReport {
        tokio::time::timeout(STEP_TIMEOUT, self.reports.recv())
            .await
            .unwrap_or_else(|_| {
                panic!("no connection to the Duplex server ended within {STEP_TIMEOUT:?}")
            })
            .expect("the Duplex server runs")
    }
}

impl Drop for DuplexServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The client's `Sec-WebSocket-Extensions` offer, its lines joined.
fn extensions_offer(request: &duplex::UpgradeRequest) -> Option<String> {
    request
        .headers()
        .get_all(http_header::SEC_WEBSOCKET_EXTENSIONS)
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .reduce(|a, b| format!("{a}, {b}"))
}

/// One TCP connection of [`DuplexServer`]: an HTTP/1.1 upgrade, or an
/// HTTP/2 connection whose extended CONNECTs are each served as one.
async fn serve_tcp(
    tcp: TcpStream,
    config: Arc<Config>,
    reports: mpsc::UnboundedSender<ConnReport>,
) {
    if http2::is_h2c_preface(&tcp).await.unwrap_or(false) {
        let server = http2::Server::new((*config).clone());
        let failed = reports.clone();
        let served = server
            .serve_connection(tcp, move |ws, request| {
                let report = ConnReport {
                    request_extensions: extensions_offer(&request),
                    http2: true,
                    ..ConnReport::default()
                };
                echo(ws, report, reports.clone())
            })
            .await;
        if let Err(error) = served {
            let _ = failed.send(ConnReport {
                handshake_error: Some(format!("HTTP/2 connection: {error}")),
                http2: true,
                ..ConnReport::default()
            });
        }
        return;
    }
    let mut report = ConnReport::default();
    let mut offer = None;
    let accepted = duplex::accept_with(tcp, &config, |request| {
        offer = extensions_offer(request);
        Ok(Accept::default())
    })
    .await;
    report.request_extensions = offer;
    match accepted {
        Ok(ws) => echo(ws, report, reports).await,
        Err(error) => {
            report.handshake_error = Some(error.to_string());
            let _ = reports.send(report);
        }
    }
}

/// Echoes on an accepted WebSocket with `feed` (replies leave with the next
/// read's flush, as in `duplex echo`), answers wire commands, and sends the
/// report when the connection ends.
async fn echo<S>(
    mut ws: WebSocket<S>,
    mut report: ConnReport,
    reports: mpsc::UnboundedSender<ConnReport>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    report.deflate = ws.connection().deflate_params().copied();
    while let Some(item) = ws.next().await {
        let message = match item {
            Ok(message) => message,
            Err(error) => {
                report.errors.push(format!("receive: {error}"));
                break;
            }
        };
        if let Message::Text(text) = &message
            && let Some(command) = text.strip_prefix(CMD)
        {
            if let Err(error) = server_command(&mut ws, command).await {
                report.errors.push(format!("command {command:?}: {error}"));
                break;
            }
            continue;
        }
        report.received.push(Seen::of(&message));
        if let Err(error) = ws.feed(message).await {
            report.errors.push(format!("echo: {error}"));
            break;
        }
    }
    // Write out whatever is left (the close reply); the peer may be gone.
    let _ = ws.flush().await;
    report.close = ws.close_info().cloned();
    let _ = reports.send(report);
}

/// `ping:TEXT` (ping, then acknowledge) and `close:CODE:REASON`.
async fn server_command<S>(ws: &mut WebSocket<S>, command: &str) -> Result<(), duplex::Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (name, arg) = command.split_once(':').unwrap_or((command, ""));
    match name {
        "ping" => {
            ws.ping(arg.as_bytes())?;
            ws.feed(Message::text(format!("{ACK}ping:{arg}"))).await
        }
        "close" => {
            let (code, reason) = arg.split_once(':').unwrap_or((arg, ""));
            let code = code.parse().unwrap_or(1008);
            ws.close(CloseCode(code), reason).await
        }
        _ => {
            ws.feed(Message::text(format!("{ACK}unknown:{command}")))
                .await
        }
    }
}

/// Header names not re-exported by duplex.
mod http_header {
    pub(crate) const SEC_WEBSOCKET_EXTENSIONS: &str = "sec-websocket-extensions";
}

/// Who closes, with which code and reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Closing {
    /// Duplex sends the first close frame.
    ByDuplex(u16, &'static str),
    /// The peer sends the first close frame.
    ByPeer(u16, &'static str),
}

impl Closing {
    fn code_reason(self) -> (u16, &'static str) {
        match self {
            Closing::ByDuplex(code, reason) | Closing::ByPeer(code, reason) => (code, reason),
        }
    }
}

/// Who sends data messages in fragments, and how long each is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Fragments {
    /// The peer script's `--fragment N`.
    pub(crate) peer: Option<usize>,
    /// Duplex's `max_send_frame_size`.
    pub(crate) duplex: Option<usize>,
}

impl Fragments {
    /// Every message in one frame.
    pub(crate) const NONE: Self = Self {
        peer: None,
        duplex: None,
    };
}

/// One connection's settings and what must come of them.
#[derive(Debug, Clone)]
pub(crate) struct Case {
    /// Names the case in failure messages.
    pub(crate) name: String,
    /// The peer's permessage-deflate options.
    pub(crate) peer: PeerDeflate,
    /// Duplex's permessage-deflate policy (`None`: off).
    pub(crate) duplex: Option<DeflateConfig>,
    /// Message sizes; each is sent as text and as binary.
    pub(crate) sizes: &'static [usize],
    /// How the connection ends.
    pub(crate) closing: Closing,
    /// Fragmented sending on either side.
    pub(crate) fragments: Fragments,
    /// The parameters Duplex must end up with (`None`: no compression).
    pub(crate) negotiated: Option<DeflateParams>,
    /// The `Sec-WebSocket-Extensions` response, as the peer saw it.
    pub(crate) response_header: Option<String>,
    /// Binary messages are random throughout ([`noise_payload`]; the peer's
    /// `--incompressible`), so that deflate makes them larger.
    pub(crate) incompressible: bool,
}

/// Collects the failed checks of one case, then panics with all of them.
pub(crate) struct Checks {
    what: String,
    failures: Vec<String>,
}

impl Checks {
    /// Checks of `what`.
    pub(crate) fn new(what: impl Into<String>) -> Self {
        Self {
            what: what.into(),
            failures: Vec::new(),
        }
    }

    /// Records a failure unless `ok`.
    pub(crate) fn check(&mut self, ok: bool, failure: impl FnOnce() -> String) {
        if !ok {
            self.failures.push(failure());
        }
    }

    /// Records a failure unless `left == right`.
    pub(crate) fn eq<T: PartialEq + std::fmt::Debug>(&mut self, what: &str, left: T, right: T) {
        if left != right {
            self.failures
                .push(format!("{what}: got {left:?}, expected {right:?}"));
        }
    }

    /// Whether nothing failed.
    pub(crate) fn passed(&self) -> bool {
        self.failures.is_empty()
    }

    /// Panics with every failure and `context` if any check failed.
    pub(crate) fn finish(self, context: &str) {
        if !self.failures.is_empty() {
            let mut text = format!("{}: {} check(s) failed:\n", self.what, self.failures.len());
            for failure in &self.failures {
                let _ = writeln!(text, "  - {failure}");
            }
            panic!("{text}\n{context}");
        }
    }
}

/// Checks the frame counts a peer reported for the messages Duplex sent
/// (Python reports them; Node does not): one frame each unless Duplex
/// fragments, and then several for the 1 MiB message.
fn check_frames(checks: &mut Checks, name: &str, reports: &[&Value], fragment: Option<usize>) {
    for line in reports {
        let Some(frames) = line["frames"].as_u64() else {
            continue;
        };
        let len = line["len"].as_u64().unwrap_or(0);
        match fragment {
            None => checks.check(frames == 1, || {
                format!(
                    "[{name}] Duplex sent {} of {len} bytes in {frames} frames",
                    line["kind"]
                )
            }),
            Some(_) if len >= MIB as u64 => checks.check(frames > 1, || {
                format!(
                    "[{name}] Duplex should have fragmented {} of {len} bytes; 1 frame",
                    line["kind"]
                )
            }),
            Some(_) => {}
        }
    }
}

fn sizes_arg(sizes: &[usize]) -> String {
    sizes
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// The peer's client connects to an in-test Duplex server and runs its
/// scenario; every failed check goes into `checks`.
pub(crate) async fn peer_client_to_duplex_server(peer: Peer, case: &Case, checks: &mut Checks) {
    let started = Instant::now();
    let mut config = Config {
        deflate: case.duplex.clone(),
        ..Config::default()
    };
    if let Some(size) = case.fragments.duplex {
        config.protocol.max_send_frame_size = size;
    }
    let mut server = DuplexServer::start(config).await;
    let mut args = vec!["client".to_owned(), server.url()];
    args.extend(case.peer.args());
    if let Some(size) = case.fragments.peer {
        args.extend(["--fragment".to_owned(), size.to_string()]);
    }
    args.extend(["--sizes".to_owned(), sizes_arg(case.sizes)]);
    if case.incompressible {
        args.push("--incompressible".to_owned());
    }
    match case.closing {
        Closing::ByPeer(code, reason) => {
            args.extend(["--close".into(), format!("{code}:{reason}")])
        }
        Closing::ByDuplex(code, reason) => {
            args.extend(["--ask-close".into(), format!("{code}:{reason}")]);
        }
    }
    let mut process = PeerProcess::spawn(peer, args);
    let status = process.wait().await;
    let report = server.next_report().await;
    let name = &case.name;

    checks.check(status.success(), || {
        format!("[{name}] the {} client exited with {status}", peer.name())
    });
    let done = process.seen("done");
    checks.check(done.len() == 1 && done[0]["ok"] == true, || {
        format!("[{name}] the {} client did not report done/ok", peer.name())
    });
    for error in process.seen("error") {
        checks.check(false, || format!("[{name}] the peer reported {error}"));
    }
    checks.eq(
        &format!("[{name}] Duplex handshake error"),
        report.handshake_error.as_deref(),
        None,
    );
    checks.eq(
        &format!("[{name}] the WebSocket came over HTTP/2 (RFC 8441)"),
        report.http2,
        peer.http2(),
    );
    checks.eq(
        &format!("[{name}] Duplex stream errors"),
        &report.errors,
        &Vec::new(),
    );

    // Compression: what was offered, answered and agreed on both sides.
    let open = process.seen("open");
    let open = open.first().copied().cloned().unwrap_or(Value::Null);
    checks.eq(
        &format!("[{name}] the offer Duplex saw vs the offer the peer sent"),
        report.request_extensions.as_deref(),
        open["request_extensions"].as_str(),
    );
    checks.eq(
        &format!("[{name}] the response the peer saw"),
        open["response_extensions"].as_str(),
        case.response_header.as_deref(),
    );
    checks.eq(
        &format!("[{name}] Duplex's negotiated deflate parameters"),
        report.deflate,
        case.negotiated,
    );

    // Content: every echo byte-exact at the peer, and Duplex received exactly
    // what the peer sent.
    let echoes = process.seen("echo");
    checks.eq(
        &format!("[{name}] number of round trips"),
        echoes.len(),
        case.sizes.len() * 2,
    );
    for echo in &echoes {
        checks.check(echo["ok"] == true, || {
            format!(
                "[{name}] the peer's echo of {} {} bytes differed from what it sent",
                echo["kind"], echo["len"]
            )
        });
    }
    check_frames(checks, name, &echoes, case.fragments.duplex);
    let sent: Vec<Seen> = echoes.iter().map(|e| Seen::from_report(e)).collect();
    checks.eq(
        &format!("[{name}] messages Duplex received (kind, len, sha1) vs the peer sent"),
        &report.received,
        &sent,
    );

    // Pings both ways.
    let pongs = process.seen("pong");
    checks.check(pongs.len() == 1, || {
        format!("[{name}] the peer's ping was not answered by Duplex")
    });
    let pings: Vec<&str> = process
        .seen("ping")
        .iter()
        .filter_map(|p| p["payload"].as_str())
        .collect();
    checks.check(pings.contains(&"ping from the server"), || {
        format!("[{name}] Duplex's ping did not reach the peer (it saw {pings:?})")
    });

    // Close, as each side saw it.
    let closed = process.seen("closed");
    let closed = closed.first().copied().cloned().unwrap_or(Value::Null);
    let (code, reason) = case.closing.code_reason();
    let info = report.close.clone();
    match case.closing {
        Closing::ByPeer(..) => {
            checks.eq(
                &format!("[{name}] Duplex close_info"),
                info,
                Some(CloseInfo {
                    code: CloseCode(code),
                    reason: reason.to_owned(),
                    was_clean: true,
                }),
            );
            checks.eq(
                &format!("[{name}] close code the peer got back"),
                closed["code"].as_u64(),
                Some(u64::from(code)),
            );
        }
        Closing::ByDuplex(..) => {
            checks.eq(
                &format!("[{name}] close the peer received"),
                (closed["code"].as_u64(), closed["reason"].as_str()),
                (Some(u64::from(code)), Some(reason)),
            );
            checks.eq(
                &format!("[{name}] Duplex close_info (code, clean)"),
                info.map(|i| (i.code, i.was_clean)),
                Some((CloseCode(code), true)),
            );
        }
    }
    if !checks.passed() {
        eprintln!(
            "[{name}] {} client → Duplex server: FAILED after {:.1?}\nDuplex saw: {report:?}\n{}",
            peer.name(),
            started.elapsed(),
            process.transcript()
        );
    } else {
        eprintln!(
            "[{name}] {} client → Duplex server: ok in {:.1?}",
            peer.name(),
            started.elapsed()
        );
    }
}

/// What a Duplex client saw of one connection.
#[derive(Debug)]
pub(crate) struct ClientOutcome {
    /// The negotiated permessage-deflate parameters.
    pub(crate) deflate: Option<DeflateParams>,
    /// Every data message sent, in order.
    pub(crate) sent: Vec<Seen>,
    /// How the connection ended.
    pub(crate) close: Option<CloseInfo>,
    /// The ping payloads the peer reported receiving.
    pub(crate) peer_pings: Vec<String>,
}

/// Next message, bounded by [`STEP_TIMEOUT`].
async fn next_message<S>(ws: &mut WebSocket<S>) -> Result<Message, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    match tokio::time::timeout(STEP_TIMEOUT, ws.next()).await {
        Ok(Some(Ok(message))) => Ok(message),
        Ok(Some(Err(error))) => Err(format!("receive failed: {error}")),
        Ok(None) => Err(format!("the stream ended; close {:?}", ws.close_info())),
        Err(_) => Err(format!("no message within {STEP_TIMEOUT:?}")),
    }
}

/// Expects the text message `expected`.
async fn expect_text<S>(ws: &mut WebSocket<S>, expected: &str) -> Result<String, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    match next_message(ws).await? {
        Message::Text(text) if text.starts_with(expected) => Ok(text.to_string()),
        other => Err(format!("expected {expected:?}, got {:?}", Seen::of(&other))),
    }
}

/// A Duplex client runs the scenario against `url`: messages of `sizes` each
/// as text and binary checked byte for byte, the peer pings, Duplex pings,
/// then the close. Returns what it saw, or what went wrong.
pub(crate) async fn run_duplex_client(
    url: &str,
    config: &Config,
    sizes: &[usize],
    incompressible: bool,
    closing: Closing,
    http2: bool,
) -> Result<ClientOutcome, String> {
    let mut request = ClientRequest::new(url);
    let pool = http2.then(http2::Pool::new);
    request.transport.http2 = pool.clone();
    let mut ws = duplex::connect_with(&request, config)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    if let Some(pool) = &pool
        && !pool.has_http2(url)
    {
        return Err("the WebSocket did not go over HTTP/2".to_owned());
    }
    let deflate = ws.connection().deflate_params().copied();
    let mut sent = Vec::new();
    let mut last_received = Instant::now();
    for (i, &size) in sizes.iter().enumerate() {
        for message in [
            Message::text(text_payload(size, i as u64)),
            Message::binary(if incompressible {
                noise_payload(size, i as u64)
            } else {
                binary_payload(size, i as u64)
            }),
        ] {
            let what = format!("{} of {size} bytes", kind_name(message.kind()));
            let t0 = Instant::now();
            sent.push(Seen::of(&message));
            // feed (which compresses) and flush apart, to tell where time goes.
            let fed = Instant::now();
            let feed = tokio::time::timeout(STEP_TIMEOUT, ws.feed(message.clone())).await;
            let feed_took = fed.elapsed();
            let flushed = Instant::now();
            let result = match feed {
                Ok(Ok(())) => tokio::time::timeout(STEP_TIMEOUT, SinkExt::flush(&mut ws)).await,
                other => other,
            };
            let timing = || {
                format!(
                    "feed (compression) took {feed_took:.1?}, flush {:.1?}; the last message \
                     from the peer came {:.1?} before the feed",
                    flushed.elapsed(),
                    fed.duration_since(last_received)
                )
            };
            match result {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(format!("sending {what}: {e} ({})", timing())),
                Err(_) => return Err(format!("sending {what} timed out ({})", timing())),
            }
            let echo = next_message(&mut ws)
                .await
                .map_err(|e| format!("echo of {what}: {e}"))?;
            last_received = Instant::now();
            if echo != message {
                return Err(format!(
                    "echo of {what} differs: sent {:?}, got {:?}; first differing byte at {:?}",
                    Seen::of(&message),
                    Seen::of(&echo),
                    message
                        .payload()
                        .iter()
                        .zip(echo.payload().iter())
                        .position(|(a, b)| a != b)
                ));
            }
            if t0.elapsed() > Duration::from_secs(2) {
                eprintln!(
                    "  round trip of {what}: {:.1?} (feed {feed_took:.1?})",
                    t0.elapsed()
                );
            }
        }
    }

    // The peer pings; Duplex answers; the peer acknowledges the pong.
    ws.send(Message::text(format!("{CMD}ping:ping from the peer")))
        .await
        .map_err(|e| format!("send ping command: {e}"))?;
    expect_text(&mut ws, &format!("{ACK}ping:ping from the peer"))
        .await
        .map_err(|e| format!("the peer's ping: {e}"))?;

    // Duplex pings; the peer reports the pings it received.
    ws.ping(b"ping from duplex")
        .map_err(|e| format!("ping: {e}"))?;
    ws.send(Message::text(format!("{CMD}pings")))
        .await
        .map_err(|e| format!("send pings command: {e}"))?;
    let pings = expect_text(&mut ws, &format!("{ACK}pings:"))
        .await
        .map_err(|e| format!("asking for pings: {e}"))?;
    let peer_pings: Vec<String> =
        serde_json::from_str(&pings[format!("{ACK}pings:").len()..]).unwrap_or_default();

    match closing {
        Closing::ByDuplex(code, reason) => {
            tokio::time::timeout(STEP_TIMEOUT, ws.close(CloseCode(code), reason))
                .await
                .map_err(|_| "close timed out".to_owned())?
                .map_err(|e| format!("close: {e}"))?;
        }
        Closing::ByPeer(code, reason) => {
            ws.send(Message::text(format!("{CMD}close:{code}:{reason}")))
                .await
                .map_err(|e| format!("send close command: {e}"))?;
            // The stream must end (after the close handshake) with nothing before.
            match tokio::time::timeout(STEP_TIMEOUT, ws.next()).await {
                Ok(None) => {}
                Ok(Some(Ok(message))) => {
                    return Err(format!(
                        "message after asking the peer to close: {:?}",
                        Seen::of(&message)
                    ));
                }
                Ok(Some(Err(error))) => return Err(format!("while closing: {error}")),
                Err(_) => return Err("the peer's close did not come".to_owned()),
            }
        }
    }
    Ok(ClientOutcome {
        deflate,
        sent,
        close: ws.close_info().cloned(),
        peer_pings,
    })
}

/// A Duplex client connects to the peer's server and runs
/// [`run_duplex_client`]; every failed check goes into `checks`.
pub(crate) async fn duplex_client_to_peer_server(peer: Peer, case: &Case, checks: &mut Checks) {
    let started = Instant::now();
    let name = &case.name;
    let mut args = vec!["server".to_owned()];
    args.extend(case.peer.args());
    if let Some(size) = case.fragments.peer {
        args.extend(["--fragment".to_owned(), size.to_string()]);
    }
    let mut process = PeerProcess::spawn(peer, args);
    let listening = process.expect("listening").await;
    let port = listening["port"]
        .as_u64()
        .expect("the peer reports its port");
    let url = format!("ws://127.0.0.1:{port}/");
    let mut config = Config {
        deflate: case.duplex.clone(),
        ..Config::client()
    };
    if let Some(size) = case.fragments.duplex {
        config.protocol.max_send_frame_size = size;
    }
    let outcome = run_duplex_client(
        &url,
        &config,
        case.sizes,
        case.incompressible,
        case.closing,
        peer.http2(),
    )
    .await;
    let closed = match &outcome {
        Ok(_) => Some(process.expect("closed").await),
        Err(_) => None,
    };
    process.kill().await;
    process.drain().await;

    match &outcome {
        Err(error) => checks.check(false, || format!("[{name}] Duplex client: {error}")),
        Ok(outcome) => {
            for error in process.seen("error") {
                checks.check(false, || format!("[{name}] the peer reported {error}"));
            }
            let open = process.seen("open");
            let open = open.first().copied().cloned().unwrap_or(Value::Null);
            checks.eq(
                &format!("[{name}] the response the peer sent"),
                open["response_extensions"].as_str(),
                case.response_header.as_deref(),
            );
            checks.eq(
                &format!("[{name}] Duplex's negotiated deflate parameters"),
                outcome.deflate,
                case.negotiated,
            );
            let messages = process.seen("message");
            check_frames(checks, name, &messages, case.fragments.duplex);
            let received: Vec<Seen> = messages.iter().map(|m| Seen::from_report(m)).collect();
            checks.eq(
                &format!("[{name}] messages the peer received (kind, len, sha1) vs Duplex sent"),
                &received,
                &outcome.sent,
            );
            checks.check(
                outcome.peer_pings.iter().any(|p| p == "ping from duplex"),
                || {
                    format!(
                        "[{name}] the peer did not see Duplex's ping (it saw {:?})",
                        outcome.peer_pings
                    )
                },
            );
            checks.check(process.seen("pong").len() == 1, || {
                format!("[{name}] the peer did not report Duplex's pong")
            });
            let closed = closed.unwrap_or(Value::Null);
            let (code, reason) = case.closing.code_reason();
            match case.closing {
                Closing::ByDuplex(..) => {
                    checks.eq(
                        &format!("[{name}] close the peer received"),
                        (closed["code"].as_u64(), closed["reason"].as_str()),
                        (Some(u64::from(code)), Some(reason)),
                    );
                    checks.eq(
                        &format!("[{name}] Duplex close_info (code, clean)"),
                        outcome.close.as_ref().map(|i| (i.code, i.was_clean)),
                        Some((CloseCode(code), true)),
                    );
                }
                Closing::ByPeer(..) => {
                    checks.eq(
                        &format!("[{name}] Duplex close_info"),
                        outcome.close.clone(),
                        Some(CloseInfo {
                            code: CloseCode(code),
                            reason: reason.to_owned(),
                            was_clean: true,
                        }),
                    );
                    checks.eq(
                        &format!("[{name}] close code the peer got back"),
                        closed["code"].as_u64(),
                        Some(u64::from(code)),
                    );
                }
            }
        }
    }
    let verdict = if checks.passed() { "ok" } else { "FAILED" };
    eprintln!(
        "[{name}] Duplex client → {} server: {verdict} in {:.1?}",
        peer.name(),
        started.elapsed()
    );
    if !checks.passed() {
        eprintln!("{}", process.transcript());
    }
}

/// Runs `f` under a hard bound of [`PEER_TIMEOUT`] plus a margin.
pub(crate) async fn bounded<F: std::future::Future<Output = ()>>(what: &str, f: F) {
    let limit = PEER_TIMEOUT + Duration::from_secs(20);
    if tokio::time::timeout(limit, f).await.is_err() {
        panic!("{what} did not finish within {limit:?}");
    }
}

/// Writes `body` as an HTTP/1.1 response and closes.
pub(crate) async fn http_respond(
    tcp: &mut TcpStream,
    status: &str,
    content_type: &str,
    body: &[u8],
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    );
    tcp.write_all(head.as_bytes()).await?;
    tcp.write_all(body).await?;
    tcp.shutdown().await
}

/// Negotiated parameters, field by field.
pub(crate) fn params(
    server_no_context_takeover: bool,
    client_no_context_takeover: bool,
    server_max_window_bits: Option<u8>,
    client_max_window_bits: Option<u8>,
) -> DeflateParams {
    DeflateParams {
        server_no_context_takeover,
        client_no_context_takeover,
        server_max_window_bits,
        client_max_window_bits,
    }
}

/// Runs `case` in one direction or the other and panics with every failure.
pub(crate) async fn run_case(peer: Peer, case: Case, duplex_is_server: bool) {
    let mut checks = Checks::new(format!("{} / {}", peer.name(), case.name));
    bounded(&case.name.clone(), async {
        if duplex_is_server {
            peer_client_to_duplex_server(peer, &case, &mut checks).await;
        } else {
            duplex_client_to_peer_server(peer, &case, &mut checks).await;
        }
    })
    .await;
    checks.finish("see the test's stderr for the peer's transcript");
}

/// Runs several cases in turn, then panics with every failure of all of them.
pub(crate) async fn run_cases(peer: Peer, cases: Vec<Case>, duplex_is_server: bool) {
    let mut checks = Checks::new(format!("{} ({} cases)", peer.name(), cases.len()));
    bounded("the cases", async {
        for case in &cases {
            if duplex_is_server {
                peer_client_to_duplex_server(peer, case, &mut checks).await;
            } else {
                duplex_client_to_peer_server(peer, case, &mut checks).await;
            }
        }
    })
    .await;
    checks.finish("see the test's stderr for the peers' transcripts");
}
