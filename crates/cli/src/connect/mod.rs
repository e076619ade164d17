//! `duplex connect URL`: a command-line WebSocket client, for people and for
//! scripts.
//!
//! - **Interactive** (standard output is a terminal): each line typed is sent
//!   as a text message; received messages print as `< text`, binary ones as
//!   `< [N bytes] hex`. Ctrl-D or Ctrl-C closes with 1000 (a second Ctrl-C
//!   gives up waiting for the server's answer).
//! - **Scriptable** (standard output is not a terminal): standard input and
//!   output are streams of messages, one per line and without marks; binary
//!   messages are written in hex (or in the `--binary` encoding). When
//!   standard input ends, the client first waits (up to `--reply-wait`, 5 s)
//!   for the replies it is owed: a line that is a JSON object with an `"id"`
//!   (a hub command, a JSON-RPC call) is owed a text message that is a JSON
//!   object with the same `"id"`. Then it closes with 1000 and keeps printing
//!   what arrives until the server's close (unless `--keep-open`). Replies
//!   still owed then are counted on standard error, and the exit status is 7.
//! - `--binary hex|base64`: each input line is decoded and sent as a binary
//!   message; every received message is written in that encoding.
//! - `--echo`: every received message is sent back as it came (the shape
//!   conformance suites drive); nothing is read from standard input.
//! - `--show-frames` logs every frame both ways on standard error (direction,
//!   opcode, FIN, RSV bits, length, masked, close code and reason), and
//!   `--show-handshake` the request and response heads. Both watch a copy of
//!   the bytes through a tap on the transport ([`Tap`]), below the WebSocket
//!   and above TLS, so what they show is what went on the wire.
//!
//! Invariants: standard output carries only received messages (notes, frame
//! and handshake logs and the final close line go to standard error); the exit
//! status tells how the connection ended ([`EXIT_STATUS`]); every wait is
//! bounded (handshake timeout, close timeout, keepalive).

use std::io::{self, IsTerminal};
use std::path::PathBuf;
use std::pin::Pin;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use duplex::tls::CaCertificate;
use duplex::transport::{self, Transport};
use duplex::{ClientRequest, Config, Message, Proxy, WebSocket};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

mod tap;

use tap::Tap;

/// The exit statuses, as `--help` shows them.
const EXIT_STATUS: &str = "\
Exit status:
  0  the connection closed cleanly with 1000 (normal) or 1001 (going away)
  1  a local failure (standard input or output, a bad CA file)
  2  a usage error (bad arguments, URL or header)
  3  could not connect (DNS, TCP, TLS, proxy, handshake timeout)
  4  the server refused the WebSocket handshake (for example HTTP 401, 404)
  5  the server closed cleanly with another code (1008, 4001 ...)
  6  the connection ended abnormally (no close handshake, protocol error,
     unanswered keepalive)
  7  requests sent with an \"id\" got no reply within --reply-wait
The close code, reason and cleanliness are printed on standard error.";

/// How `duplex connect` ended: its exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Exit {
    Clean = 0,
    Local = 1,
    Usage = 2,
    Connect = 3,
    Refused = 4,
    PeerClosed = 5,
    Abnormal = 6,
    Unanswered = 7,
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        ExitCode::from(exit as u8)
    }
}

/// How binary messages are written as text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Encoding {
    /// Two hex digits per byte (input may hold spaces).
    Hex,
    /// Standard base64 with padding.
    Base64,
}

/// Options of `duplex connect`.
#[derive(Debug, clap::Args)]
#[command(after_help = EXIT_STATUS)]
pub(crate) struct ConnectArgs {
    /// The server's URL, `ws://` or `wss://`.
    url: String,
    /// Echo every received message back to the server (reads no input).
    #[arg(long)]
    echo: bool,
    /// Send each input line as a binary message decoded from hex or base64,
    /// and write every received message in that encoding.
    #[arg(long, value_enum, value_name = "ENCODING", num_args = 0..=1, default_missing_value = "hex")]
    binary: Option<Encoding>,
    /// Extra request header, `Name: value` (repeatable).
    #[arg(short = 'H', long = "header", value_name = "HEADER")]
    headers: Vec<String>,
    /// Offer a subprotocol (repeatable, in order of preference).
    #[arg(long = "subprotocol", value_name = "PROTOCOL")]
    subprotocols: Vec<String>,
    /// Send `Origin: ORIGIN`.
    #[arg(long)]
    origin: Option<String>,
    /// Do not offer permessage-deflate.
    #[arg(long)]
    no_compress: bool,
    /// Send a ping every SECS seconds (and drop a peer that stays silent
    /// after one); 0 turns keepalive pings off. Default: a keepalive ping
    /// after 30 s of silence.
    #[arg(long, value_name = "SECS")]
    ping_interval: Option<f64>,
    /// Trust the CA certificates in this PEM file for wss:// (repeatable), in
    /// addition to the built-in roots.
    #[arg(long = "ca", value_name = "FILE")]
    ca: Vec<PathBuf>,
    /// Accept any server certificate for wss:// (expired, self-signed, for
    /// another name). Unsafe: for testing only.
    #[arg(long)]
    insecure: bool,
    /// Connect through this HTTP proxy (`http://[user:pass@]host:port`) with
    /// CONNECT.
    #[arg(long, value_name = "URL")]
    proxy: Option<String>,
    /// Log every frame sent and received on standard error: direction,
    /// opcode, FIN, RSV bits, length, masking, close code and reason.
    #[arg(long)]
    show_frames: bool,
    /// Print the handshake's request and response headers on standard error.
    #[arg(long)]
    show_handshake: bool,
    /// Keep the connection open when standard input ends (until the server
    /// closes or Ctrl-C).
    #[arg(long)]
    keep_open: bool,
    /// When standard input ends, wait up to SECS seconds for the replies
    /// owed to input lines that are JSON objects with an `"id"` before
    /// closing (0: do not wait).
    #[arg(long, value_name = "SECS", default_value_t = 5.0)]
    reply_wait: f64,
}

/// An error of `duplex connect` with the exit status it ends with.
struct Failure {
    exit: Exit,
    message: String,
}

impl Failure {
    fn new(exit: Exit, message: impl Into<String>) -> Self {
        Self {
            exit,
            message: message.into(),
        }
    }
}

pub(crate) async fn run(args: ConnectArgs) -> anyhow::Result<ExitCode> {
    match connect_and_run(&args).await {
        Ok(exit) => Ok(exit.into()),
        Err(failure) => {
            eprintln!("duplex: {}", failure.message);
            Ok(failure.exit.into())
        }
    }
}

async fn connect_and_run(args: &ConnectArgs) -> Result<Exit, Failure> {
    let request = build_request(args)?;
    let config = build_config(args);
    if args.insecure {
        eprintln!("duplex: --insecure: the server's certificate is not checked");
    }
    if args.show_frames || args.show_handshake {
        let started = Instant::now();
        let open = async {
            let io = open_transport(&request, &config).await?;
            let tap = Tap::new(io, args.show_frames, args.show_handshake, started);
            duplex::client_handshake(tap, &request, &config).await
        };
        let ws = match tokio::time::timeout(config.handshake_timeout, open).await {
            Ok(result) => result.map_err(connect_failure)?,
            Err(_) => return Err(connect_failure(duplex::Error::HandshakeTimeout)),
        };
        session(ws, args).await
    } else {
        let ws = duplex::connect_with(&request, &config)
            .await
            .map_err(connect_failure)?;
        session(ws, args).await
    }
}

fn build_request(args: &ConnectArgs) -> Result<ClientRequest, Failure> {
    let usage = |message: String| Failure::new(Exit::Usage, message);
    let uri: http::Uri = args
        .url
        .parse()
        .map_err(|_| usage(format!("{:?} is not a URL", args.url)))?;
    if !matches!(uri.scheme_str(), Some("ws" | "wss")) || uri.host().is_none() {
        return Err(usage(format!(
            "{:?}: expected ws://host[:port]/path or wss://…",
            args.url
        )));
    }
    let mut request = ClientRequest::new(&args.url);
    if let Some(origin) = &args.origin {
        request = request.origin(origin);
    }
    for protocol in &args.subprotocols {
        request = request.protocol(protocol);
    }
    for header in &args.headers {
        let (name, value) = header
            .split_once(':')
            .ok_or_else(|| usage(format!("header {header:?} is not `Name: value`")))?;
        request = request
            .header(name.trim(), value.trim())
            .map_err(|e| usage(e.to_string()))?;
    }
    if let Some(proxy) = &args.proxy {
        request.transport.proxy = Some(Proxy::new(proxy).map_err(|e| usage(e.to_string()))?);
    }
    for ca in &args.ca {
        request
            .transport
            .extra_roots
            .push(CaCertificate::PemFile(ca.clone()));
    }
    request.transport.danger_accept_invalid_certs = args.insecure;
    if !args.ca.is_empty() || args.insecure {
        // Load the CA files now: a bad file is a local error, not a failure
        // to connect.
        let tls = duplex::tls::client_config(&request.transport)
            .map_err(|e| Failure::new(Exit::Local, e.to_string()))?;
        request.transport.tls_config = Some(tls);
    }
    Ok(request)
}

fn build_config(args: &ConnectArgs) -> Config {
    let mut config = Config::client();
    if args.no_compress {
        config.deflate = None;
    }
    if let Some(secs) = args.ping_interval {
        config.ping_interval = ping_period(secs);
    }
    config
}

/// `--ping-interval SECS` as a period; `None` for 0 (or nonsense).
fn ping_period(secs: f64) -> Option<Duration> {
    (secs.is_finite() && secs > 0.0).then(|| Duration::from_secs_f64(secs.min(86_400.0)))
}

/// The exit status and message of a failed connection attempt.
fn connect_failure(error: duplex::Error) -> Failure {
    match error {
        duplex::Error::HttpStatus(response) => {
            let mut message = format!("the server refused the handshake: {}", response.status());
            if let Some(body) = response.body().as_deref().filter(|b| !b.is_empty()) {
                message.push_str(&format!(": {}", String::from_utf8_lossy(body).trim()));
            }
            Failure::new(Exit::Refused, message)
        }
        error @ (duplex::Error::ClientHandshake(_) | duplex::Error::Negotiation(_)) => {
            Failure::new(Exit::Refused, error.to_string())
        }
        error @ duplex::Error::Url(_) => Failure::new(Exit::Usage, error.to_string()),
        error @ duplex::Error::Tls(duplex::TlsError::Handshake(
            duplex::tls::rustls::Error::InvalidCertificate(
                duplex::tls::rustls::CertificateError::UnknownIssuer,
            ),
        )) => Failure::new(
            Exit::Connect,
            format!(
                "cannot connect: {error}: pass --ca FILE with that CA's PEM certificate, \
                 or --insecure to skip the check while testing"
            ),
        ),
        error => Failure::new(Exit::Connect, format!("cannot connect: {error}")),
    }
}

/// Opens the TCP (or TLS, or proxied) stream for `request`, as
/// [`duplex::connect_with`] does, so that a [`Tap`] can sit on it.
async fn open_transport(
    request: &ClientRequest,
    config: &Config,
) -> Result<Transport, duplex::Error> {
    let (host, port, tls) = transport::target(request.url())?;
    let options: &transport::Options = &request.transport;
    let tcp = match &options.proxy {
        Some(proxy) => proxy.connect(&host, port, config.nodelay).await?,
        None => TcpStream::connect((host.as_str(), port)).await?,
    };
    config.apply_socket_options(&tcp)?;
    if !tls {
        return Ok(Transport::Plain(tcp));
    }
    let tls_config = duplex::tls::client_config(options)?;
    let stream = duplex::tls::connect(tcp, &host, tls_config).await?;
    Ok(Transport::Tls(Box::new(stream)))
}

/// Runs an open connection until it ends; returns the exit status.
async fn session<S>(mut ws: WebSocket<S>, args: &ConnectArgs) -> Result<Exit, Failure>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if args.echo {
        echo(&mut ws).await;
        return Ok(report_close(&ws));
    }
    let unanswered = converse(&mut ws, args).await?;
    let exit = report_close(&ws);
    if unanswered > 0 {
        eprintln!(
            "duplex: {unanswered} request(s) sent with an \"id\" got no reply within \
             --reply-wait {} s",
            args.reply_wait
        );
        if exit == Exit::Clean {
            return Ok(Exit::Unanswered);
        }
    }
    Ok(exit)
}

/// `--echo`: sends every message back as it came.
async fn echo<S>(ws: &mut WebSocket<S>)
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
            Err(error) => {
                eprintln!("duplex: {error}");
                break;
            }
        }
    }
    let _ = ws.flush().await;
}

/// Lines in, messages out; messages in, lines out. Returns how many
/// replies were still owed when the client closed.
async fn converse<S>(ws: &mut WebSocket<S>, args: &ConnectArgs) -> Result<usize, Failure>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let local = |e: io::Error| Failure::new(Exit::Local, e.to_string());
    let interactive = io::stdout().is_terminal();
    if interactive {
        let protocol = ws
            .protocol()
            .map(|p| format!(" (subprotocol {p})"))
            .unwrap_or_default();
        eprintln!(
            "connected to {}{protocol}; each line is sent as a message; Ctrl-D or Ctrl-C closes",
            args.url
        );
    }
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut stdout = tokio::io::stdout();
    let mut stdin_open = true;
    let mut closing = false;
    let period = args.ping_interval.and_then(ping_period);
    let mut pings = period.map(|p| tokio::time::interval_at(tokio::time::Instant::now() + p, p));
    let mut ctrl_c = Box::pin(tokio::signal::ctrl_c());
    let mut owed = Owed::default();
    let mut unanswered = 0;
    // Set when standard input ended and owed replies are awaited.
    let mut reply_deadline: Option<Pin<Box<tokio::time::Sleep>>> = None;
    loop {
        if reply_deadline.is_some() && owed.is_empty() && !closing {
            reply_deadline = None;
            closing = true;
            let _ = SinkExt::close(&mut *ws).await;
        }
        tokio::select! {
            line = lines.next_line(), if stdin_open && !closing => match line {
                Ok(Some(line)) => match parse_input(&line, args.binary) {
                    Ok(message) => {
                        owed.sent(&message);
                        if let Err(error) = ws.send(message).await {
                            eprintln!("duplex: cannot send: {error}");
                        }
                    }
                    Err(error) => eprintln!("duplex: not sent: {error}"),
                },
                Ok(None) => {
                    stdin_open = false;
                    if !args.keep_open {
                        // Waits for the owed replies (bounded), then sends
                        // close 1000 (above); what arrives until the
                        // server's answer is still printed.
                        let wait = ping_period(args.reply_wait).unwrap_or_default();
                        reply_deadline = Some(Box::pin(tokio::time::sleep(wait)));
                    }
                }
                Err(error) => {
                    eprintln!("duplex: standard input: {error}");
                    stdin_open = false;
                }
            },
            _ = tick(&mut pings), if !closing => {
                if let Err(error) = ws.ping(b"") {
                    eprintln!("duplex: cannot ping: {error}");
                }
            }
            () = async { reply_deadline.as_mut().expect("guarded").await },
                if reply_deadline.is_some() && !closing => {
                reply_deadline = None;
                unanswered = owed.len();
                closing = true;
                let _ = SinkExt::close(&mut *ws).await;
            }
            _ = &mut ctrl_c => {
                if closing {
                    eprintln!("duplex: not waiting for the server's close any longer");
                    break;
                }
                closing = true;
                ctrl_c = Box::pin(tokio::signal::ctrl_c());
                let _ = SinkExt::close(ws).await;
            }
            item = ws.next() => match item {
                Some(Ok(message)) => {
                    owed.received(&message);
                    let line = render(&message, interactive, args.binary);
                    stdout.write_all(line.as_bytes()).await.map_err(local)?;
                    stdout.flush().await.map_err(local)?;
                }
                // The stream ends right after (or tells more first).
                Some(Err(error)) => eprintln!("duplex: {error}"),
                None => break,
            },
        }
    }
    if reply_deadline.is_some() {
        // The server closed first.
        unanswered = owed.len();
    }
    Ok(unanswered)
}

/// The ids of the requests sent (JSON objects with an `"id"`) that no
/// received message (a JSON object with the same `"id"`) answered yet.
#[derive(Debug, Default)]
struct Owed(std::collections::HashSet<String>);

impl Owed {
    /// The `"id"` of a text message that is a JSON object with one.
    fn id_of(message: &Message) -> Option<String> {
        let Message::Text(text) = message else {
            return None;
        };
        let value: serde_json::Value = serde_json::from_str(text.as_str()).ok()?;
        let id = value.as_object()?.get("id")?;
        (!id.is_null()).then(|| id.to_string())
    }

    fn sent(&mut self, message: &Message) {
        if let Some(id) = Self::id_of(message) {
            self.0.insert(id);
        }
    }

    fn received(&mut self, message: &Message) {
        if let Some(id) = Self::id_of(message) {
            self.0.remove(&id);
        }
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn len(&self) -> usize {
        self.0.len()
    }
}

/// The next tick of the ping timer, or never without one.
async fn tick(pings: &mut Option<tokio::time::Interval>) {
    match pings {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// One input line as a message: text, or binary decoded from `binary`.
fn parse_input(line: &str, binary: Option<Encoding>) -> Result<Message, String> {
    match binary {
        None => Ok(Message::text(line.to_owned())),
        Some(Encoding::Hex) => decode_hex(line).map(Message::binary),
        Some(Encoding::Base64) => BASE64
            .decode(line.trim())
            .map(Message::binary)
            .map_err(|e| format!("invalid base64: {e}")),
    }
}

fn decode_hex(line: &str) -> Result<Vec<u8>, String> {
    let digits: Vec<u8> = line.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    if !digits.len().is_multiple_of(2) {
        return Err("invalid hex: an odd number of digits".into());
    }
    digits
        .chunks(2)
        .map(|pair| {
            let text = std::str::from_utf8(pair).map_err(|_| "invalid hex".to_owned())?;
            u8::from_str_radix(text, 16).map_err(|_| format!("invalid hex: {text:?}"))
        })
        .collect()
}

fn encode_hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut hex = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        let _ = write!(hex, "{byte:02x}");
    }
    hex
}

fn encode(bytes: &[u8], encoding: Encoding) -> String {
    match encoding {
        Encoding::Hex => encode_hex(bytes),
        Encoding::Base64 => BASE64.encode(bytes),
    }
}

/// A received message as the line to write (with its newline).
fn render(message: &Message, interactive: bool, binary: Option<Encoding>) -> String {
    match (message, interactive, binary) {
        (Message::Text(text), true, _) => format!("< {}\n", text.as_str()),
        (Message::Binary(bytes), true, encoding) => format!(
            "< [{} bytes] {}\n",
            bytes.len(),
            encode(bytes, encoding.unwrap_or(Encoding::Hex))
        ),
        (message, false, Some(encoding)) => format!("{}\n", encode(message.payload(), encoding)),
        (Message::Text(text), false, None) => format!("{}\n", text.as_str()),
        (Message::Binary(bytes), false, None) => format!("{}\n", encode_hex(bytes)),
    }
}

/// Prints how the connection ended and returns the exit status.
fn report_close<S>(ws: &WebSocket<S>) -> Exit {
    let Some(info) = ws.close_info() else {
        eprintln!("closed without a close handshake");
        return Exit::Abnormal;
    };
    eprintln!(
        "closed: code {} reason {:?} clean {}",
        info.code, info.reason, info.was_clean
    );
    match (info.was_clean, info.code.0) {
        (true, 1000 | 1001) => Exit::Clean,
        (true, _) => Exit::PeerClosed,
        (false, _) => Exit::Abnormal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_and_base64_both_ways() {
        assert_eq!(decode_hex("68 65 6c6C6f").unwrap(), b"hello");
        assert!(decode_hex("abc").is_err());
        assert!(decode_hex("zz").is_err());
        assert_eq!(encode_hex(b"\x00\xffA"), "00ff41");
        assert_eq!(
            parse_input("aGk=", Some(Encoding::Base64)).unwrap(),
            Message::binary(&b"hi"[..])
        );
        assert!(parse_input("a", Some(Encoding::Base64)).is_err());
        assert_eq!(parse_input("68 69", None).unwrap(), Message::text("68 69"));
    }

    #[test]
    fn received_messages_render_with_marks_only_in_a_terminal() {
        let text = Message::text("hi there");
        let binary = Message::binary(&b"\x01\x02"[..]);
        assert_eq!(render(&text, true, None), "< hi there\n");
        assert_eq!(render(&binary, true, None), "< [2 bytes] 0102\n");
        assert_eq!(
            render(&binary, true, Some(Encoding::Base64)),
            "< [2 bytes] AQI=\n"
        );
        assert_eq!(render(&text, false, None), "hi there\n");
        assert_eq!(render(&binary, false, None), "0102\n");
        assert_eq!(
            render(&text, false, Some(Encoding::Hex)),
            "6869207468657265\n"
        );
        assert_eq!(render(&binary, false, Some(Encoding::Base64)), "AQI=\n");
    }
}
