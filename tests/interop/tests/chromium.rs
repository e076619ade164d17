//! Headless Chromium's own `WebSocket` → in-test Duplex echo servers.
//!
//! The test serves `tests/interop/chromium/index.html` from a tiny HTTP server
//! of its own on `127.0.0.1:0` and starts Debian's `/usr/bin/chromium` headless
//! on it with `--screenshot`. The page connects first to a Duplex server with
//! its default config (compression on: Chromium must offer
//! `permessage-deflate; client_max_window_bits` and get it), then to one with
//! compression off; on each it sends text and binary of 0 to 16 MiB, checks the
//! echoes byte for byte, lets the server ping it, closes with 4000 and a
//! reason, and POSTs what it saw to `/results`. The page's `/hold` image is
//! answered only then, so Chromium's screenshot (after the load event) shows the
//! finished table: `artifacts/interop/chromium.png`.

mod common;

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{
    Checks, ConnReport, DuplexServer, MIB, Seen, artifacts_dir, http_respond, params,
    workspace_root,
};
use duplex::{CloseCode, CloseInfo, Config};
use serde_json::Value;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::process::Command;
use tokio::sync::watch;

const CHROMIUM: &str = "/usr/bin/chromium";
/// The whole Chromium run (start, all messages, screenshot) may take this long.
const CHROMIUM_TIMEOUT: Duration = Duration::from_secs(150);
/// Sent as text and binary, compressed and not. 16 MiB is in: Chromium takes
/// a few seconds for it, most of it in the debug build of Duplex.
const SIZES: &[usize] = &[0, 125, 126, 65535, 65536, MIB, 16 * MIB];
const CLOSE_REASON: &str = "chromium says bye ✓";

/// The results the page POSTs; the held `/hold` request waits for them.
#[derive(Default)]
struct Results {
    posted: watch::Sender<Option<String>>,
}

/// Reads one HTTP/1.1 request: (method, target, body).
async fn read_request(tcp: &mut TcpStream) -> std::io::Result<(String, String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        let n = tcp.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        if buf.len() > 64 * 1024 {
            return Err(std::io::ErrorKind::InvalidData.into());
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut request_line = head.lines().next().unwrap_or("").split(' ');
    let method = request_line.next().unwrap_or("").to_owned();
    let target = request_line.next().unwrap_or("").to_owned();
    let length = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.trim().parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < length {
        let n = tcp.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Ok((method, target, body))
}

/// Serves the page, holds `/hold`, takes the POSTed results.
async fn serve_http(mut tcp: TcpStream, results: Arc<Results>) {
    let Ok((method, target, body)) = read_request(&mut tcp).await else {
        return;
    };
    let path = target.split('?').next().unwrap_or("");
    let _ = match (method.as_str(), path) {
        ("GET", "/index.html") => {
            let page = workspace_root().join("tests/interop/chromium/index.html");
            let html = std::fs::read(&page).expect("tests/interop/chromium/index.html exists");
            http_respond(&mut tcp, "200 OK", "text/html; charset=utf-8", &html).await
        }
        ("GET", "/hold") => {
            let mut posted = results.posted.subscribe();
            let _ = tokio::time::timeout(CHROMIUM_TIMEOUT, posted.wait_for(Option::is_some)).await;
            // A 1×1 transparent GIF.
            const GIF: &[u8] = b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff\
                \x21\xf9\x04\x01\x00\x00\x00\x00\x2c\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02\x44\x01\x00\x3b";
            http_respond(&mut tcp, "200 OK", "image/gif", GIF).await
        }
        ("POST", "/results") => {
            let _ = results
                .posted
                .send(Some(String::from_utf8_lossy(&body).into_owned()));
            http_respond(&mut tcp, "204 No Content", "text/plain", b"").await
        }
        _ => http_respond(&mut tcp, "404 Not Found", "text/plain", b"not found").await,
    };
}

/// A fresh, empty profile directory, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(prefix: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let dir = std::env::temp_dir().join(format!("{prefix}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create a temporary profile directory");
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Kills Chromium's whole process group (the browser and its helpers), which
/// this test made with `process_group(0)`, so its id is Chromium's pid.
///
/// Not with `/usr/bin/kill -KILL -PGID`: procps-ng 4.0.2's `kill` reads `-PGID`
/// as its first digit (`-12345` becomes `kill(-1, SIGKILL)`: every process).
fn kill_group(pid: Option<u32>) {
    let Some(pgid) = pid.and_then(|p| libc::pid_t::try_from(p).ok()) else {
        return;
    };
    if pgid <= 1 {
        return;
    }
    // SAFETY: killpg takes no pointers; `pgid` is the process group this test
    // created for the Chromium it started (checked above not to be 0 or 1).
    unsafe {
        libc::killpg(pgid, libc::SIGKILL);
    }
}

/// Checks one page session against the Duplex server's report.
fn check_session(
    checks: &mut Checks,
    label: &str,
    session: &Value,
    report: &ConnReport,
    compressed: bool,
) {
    checks.eq(
        &format!("[{label}] page error"),
        session["error"].as_str(),
        None,
    );
    checks.eq(
        &format!("[{label}] Duplex handshake error"),
        report.handshake_error.as_deref(),
        None,
    );
    checks.eq(
        &format!("[{label}] Duplex stream errors"),
        &report.errors,
        &Vec::new(),
    );
    // Chromium always offers permessage-deflate as FACTS.md records.
    checks.eq(
        &format!("[{label}] Chromium's offer as Duplex saw it"),
        report.request_extensions.as_deref(),
        Some("permessage-deflate; client_max_window_bits"),
    );
    if compressed {
        checks.eq(
            &format!("[{label}] Duplex's negotiated parameters"),
            report.deflate,
            Some(params(false, false, Some(12), Some(12))),
        );
        checks.eq(
            &format!("[{label}] WebSocket.extensions in Chromium"),
            session["extensions"].as_str(),
            Some("permessage-deflate; server_max_window_bits=12; client_max_window_bits=12"),
        );
    } else {
        checks.eq(
            &format!("[{label}] Duplex's negotiated parameters"),
            report.deflate,
            None,
        );
        checks.eq(
            &format!("[{label}] WebSocket.extensions in Chromium"),
            session["extensions"].as_str(),
            Some(""),
        );
    }
    let echoes = session["echoes"].as_array().cloned().unwrap_or_default();
    checks.eq(
        &format!("[{label}] round trips"),
        echoes.len(),
        SIZES.len() * 2,
    );
    for echo in &echoes {
        checks.check(echo["ok"] == true, || {
            format!(
                "[{label}] Chromium's echo of {} {} bytes differed from what it sent",
                echo["kind"], echo["len"]
            )
        });
    }
    let sent: Vec<Seen> = echoes.iter().map(Seen::from_report).collect();
    checks.eq(
        &format!("[{label}] messages Duplex received (kind, len, sha1) vs Chromium sent"),
        &report.received,
        &sent,
    );
    checks.check(session["ping"] == true, || {
        format!("[{label}] the ack of Duplex's ping did not arrive")
    });
    checks.eq(
        &format!("[{label}] Duplex close_info"),
        report.close.clone(),
        Some(CloseInfo {
            code: CloseCode(4000),
            reason: CLOSE_REASON.to_owned(),
            was_clean: true,
        }),
    );
    checks.eq(
        &format!("[{label}] Chromium's close event (code, wasClean)"),
        (
            session["close"]["code"].as_u64(),
            session["close"]["wasClean"].as_bool(),
        ),
        (Some(4000), Some(true)),
    );
}

#[tokio::test]
async fn chromium_websocket_to_duplex_server() {
    assert!(
        std::path::Path::new(CHROMIUM).is_file(),
        "{CHROMIUM} is missing: run `cargo xtask setup` (or `cargo xtask setup chromium`) first"
    );
    let started = Instant::now();
    let mut compressed = DuplexServer::start(Config::default()).await;
    let mut plain = DuplexServer::start(Config::default().without_compression()).await;

    let http = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let http_addr = http.local_addr().expect("address");
    let results = Arc::new(Results::default());
    let http_task = {
        let results = results.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = http.accept().await {
                tokio::spawn(serve_http(tcp, results.clone()));
            }
        })
    };

    let sizes: Vec<String> = SIZES.iter().map(ToString::to_string).collect();
    let page = format!(
        "http://{http_addr}/index.html?ws={}&ws={}&sizes={}&code=4000&reason={}",
        compressed.url(),
        plain.url(),
        sizes.join(","),
        "chromium%20says%20bye%20%E2%9C%93",
    );
    let screenshot = artifacts_dir().join("chromium.png");
    let _ = std::fs::remove_file(&screenshot);
    let profile = TempDir::new("duplex-chromium");
    let mut chromium = Command::new(CHROMIUM);
    chromium
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--window-size=1100,1500",
        ])
        .arg(format!("--user-data-dir={}", profile.0.display()))
        .arg(format!("--screenshot={}", screenshot.display()))
        .arg(&page)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let child = chromium
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {CHROMIUM}: {e}"));
    let pid = child.id();

    let run = async {
        let mut posted = results.posted.subscribe();
        let body = posted
            .wait_for(Option::is_some)
            .await
            .expect("results channel")
            .clone()
            .unwrap_or_default();
        let output = child
            .wait_with_output()
            .await
            .expect("waiting for chromium");
        (body, output)
    };
    let (body, output) = match tokio::time::timeout(CHROMIUM_TIMEOUT, run).await {
        Ok(done) => done,
        Err(_) => {
            kill_group(pid);
            let posted = results.posted.borrow().clone();
            panic!(
                "Chromium did not finish within {CHROMIUM_TIMEOUT:?} (results posted: {})",
                posted.as_deref().unwrap_or("none")
            );
        }
    };
    kill_group(pid);
    http_task.abort();
    let elapsed = started.elapsed();

    let mut checks = Checks::new("Chromium → Duplex server");
    let report: Value = serde_json::from_str(&body).unwrap_or_else(|e| {
        panic!("the page's results are not JSON ({e}): {body}");
    });
    checks.eq("page error", report["error"].as_str(), None);
    let sessions = report["sessions"].as_array().cloned().unwrap_or_default();
    checks.eq("sessions", sessions.len(), 2);
    let compressed_report = compressed.next_report().await;
    let plain_report = plain.next_report().await;
    if let [first, second] = sessions.as_slice() {
        check_session(&mut checks, "deflate", first, &compressed_report, true);
        check_session(&mut checks, "no deflate", second, &plain_report, false);
    }
    checks.check(output.status.success(), || {
        format!("chromium exited with {}", output.status)
    });
    let shot = std::fs::metadata(&screenshot).map(|m| m.len()).unwrap_or(0);
    checks.check(shot > 0, || {
        format!("no screenshot at {}", screenshot.display())
    });

    let timings: Vec<String> = sessions
        .iter()
        .flat_map(|s| s["echoes"].as_array().cloned().unwrap_or_default())
        .map(|e| format!("{} {} B: {} ms", e["kind"], e["len"], e["ms"]))
        .collect();
    eprintln!(
        "{}\nround trips: {}\nscreenshot: {} ({shot} bytes); whole run {elapsed:.1?}",
        report["userAgent"],
        timings.join("; "),
        screenshot.display()
    );
    let context = format!(
        "results: {body:.2000}\nDuplex (deflate) saw: {compressed_report:?}\n\
         Duplex (no deflate) saw: {plain_report:?}\nchromium stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    checks.finish(&context);
}
