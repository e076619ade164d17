//! `duplex serve` as the real process: it serves the hub and its pages on
//! one port, refuses a bad configuration with a clear message, and on
//! SIGTERM closes its clients with 1001 and exits 0.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use duplex::Message;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(10);

/// A running `duplex serve`, killed on drop if still running.
struct ServeProcess {
    child: Child,
    addr: String,
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_serve(extra: &[&str]) -> ServeProcess {
    let mut child = Command::new(env!("CARGO_BIN_EXE_duplex"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(extra)
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .expect("start duplex serve");
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let addr = loop {
        let line = lines.next().expect("duplex serve exited early").unwrap();
        if line.contains("hub listening")
            && let Some(rest) = line.split("address=").nth(1)
        {
            break rest.split_whitespace().next().unwrap().to_owned();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    ServeProcess { child, addr }
}

async fn get(addr: &str, path: &str) -> String {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut response = String::new();
    timeout(WAIT, tcp.read_to_string(&mut response))
        .await
        .expect("answer in time")
        .unwrap();
    response
}

async fn next_text(ws: &mut duplex::WebSocket<duplex::transport::Transport>) -> String {
    match timeout(WAIT, ws.next()).await.expect("in time") {
        Some(Ok(Message::Text(text))) => text.as_str().to_owned(),
        other => panic!("expected a text message, got {other:?}"),
    }
}

#[tokio::test]
async fn serve_runs_the_hub_and_stops_cleanly_on_sigterm() {
    let mut server = start_serve(&[]);
    let addr = server.addr.clone();
    assert!(get(&addr, "/readyz").await.starts_with("HTTP/1.1 200"));
    let page = get(&addr, "/").await;
    assert!(
        page.starts_with("HTTP/1.1 200") && page.contains("text/html"),
        "{page}"
    );

    let request =
        duplex::client::ClientRequest::new(format!("ws://{addr}/ws")).protocol("duplex.v1");
    let mut ws = duplex::connect_with(&request, &duplex::Config::client())
        .await
        .expect("connect");
    assert_eq!(ws.protocol(), Some("duplex.v1"));
    ws.send(Message::text(r#"{"op":"connect","id":1}"#))
        .await
        .unwrap();
    assert!(next_text(&mut ws).await.contains(r#""op":"connected""#));
    ws.send(Message::text(
        r#"{"op":"subscribe","id":2,"channel":"chat:lobby"}"#,
    ))
    .await
    .unwrap();
    assert!(next_text(&mut ws).await.contains(r#""op":"subscribed""#));

    // SIGTERM: the client is told 1001, the process exits 0.
    let pid = server.child.id() as libc::pid_t;
    // SAFETY: sending a signal to the child this test started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let end = timeout(WAIT, async { while let Some(Ok(_)) = ws.next().await {} }).await;
    assert!(end.is_ok(), "the hub closes its clients");
    let info = ws.close_info().cloned().expect("closed");
    assert_eq!(u16::from(info.code), 1001);
    let status = (0..100)
        .find_map(|_| {
            std::thread::sleep(Duration::from_millis(100));
            server.child.try_wait().unwrap()
        })
        .expect("exits within 10 s");
    assert!(status.success(), "{status}");
}

#[test]
fn a_bad_config_file_is_refused_with_a_clear_message() {
    let dir = std::env::temp_dir().join(format!("duplex-serve-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("hub.toml");
    let mut file = std::fs::File::create(&path).unwrap();
    writeln!(file, "[limits]\nmax_conections = 5").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_duplex"))
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&path)
        .output()
        .expect("run duplex serve");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("max_conections"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}
