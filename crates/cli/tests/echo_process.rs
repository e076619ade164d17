//! `duplex echo` as a separate process: the open-file limit (20,000 per
//! process here) makes 10,000 client sockets and 10,000 server sockets too
//! many for one process, so the server runs as the real binary.

mod common;

use common::TestCert;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use duplex::{CloseCode, Message};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// A running `duplex echo`, killed on drop.
struct EchoProcess {
    child: Child,
    addr: String,
}

impl Drop for EchoProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `duplex echo` on a free loopback port and waits until it listens.
fn start_echo() -> EchoProcess {
    start_echo_with(&[])
}

/// Starts `duplex echo` with extra arguments.
fn start_echo_with(extra: &[&str]) -> EchoProcess {
    let mut child = Command::new(env!("CARGO_BIN_EXE_duplex"))
        .args(["echo", "--listen", "127.0.0.1:0"])
        .args(extra)
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .expect("start duplex echo");
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let addr = loop {
        let line = lines.next().expect("duplex echo exited early").unwrap();
        if let Some(rest) = line.split("address=").nth(1) {
            break rest.split_whitespace().next().unwrap().to_owned();
        }
    };
    // Keep draining stderr so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    EchoProcess { child, addr }
}

async fn assert_echoes(addr: &str) {
    let mut ws = timeout(
        Duration::from_secs(10),
        duplex::connect(&format!("ws://{addr}/")),
    )
    .await
    .expect("connect in time")
    .expect("connect");
    ws.send(Message::text("ping?")).await.unwrap();
    let reply = timeout(Duration::from_secs(10), ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(reply, Message::text("ping?"));
    ws.close(CloseCode::NORMAL, "").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_connections_opened_and_dropped_at_once() {
    let mut server = start_echo();
    assert_echoes(&server.addr).await;
    let mut sockets = Vec::with_capacity(10_000);
    let started = std::time::Instant::now();
    for batch in 0..20 {
        let connects = (0..500).map(|_| TcpStream::connect(server.addr.clone()));
        let opened = timeout(
            Duration::from_secs(60),
            futures_util::future::join_all(connects),
        )
        .await
        .unwrap_or_else(|_| panic!("batch {batch} did not connect in time"));
        for socket in opened {
            sockets.push(socket.expect("connect"));
        }
    }
    assert_eq!(sockets.len(), 10_000);
    drop(sockets);
    assert!(started.elapsed() < Duration::from_secs(120));
    // The server is alive and serving.
    assert_echoes(&server.addr).await;
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "duplex echo exited"
    );
}

#[test]
fn connect_echo_mode_exits_zero_on_a_normal_close() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let server = runtime.spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut ws = duplex::accept(tcp).await.unwrap();
        ws.send(Message::text("one")).await.unwrap();
        ws.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
        let first = ws.next().await.unwrap().unwrap();
        let second = ws.next().await.unwrap().unwrap();
        ws.close(CloseCode::NORMAL, "done").await.unwrap();
        (first, second)
    });
    let output = Command::new(env!("CARGO_BIN_EXE_duplex"))
        .args(["connect", &url, "--echo"])
        .stdin(Stdio::null())
        .output()
        .expect("run duplex connect");
    let (first, second) = runtime.block_on(server).unwrap();
    assert_eq!(first, Message::text("one"));
    assert_eq!(second, Message::binary(vec![1u8, 2, 3]));
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stderr).contains("code 1000"));
}

#[tokio::test]
async fn echo_serves_wss_with_a_pem_certificate() {
    let cert = TestCert::new("echo-tls");
    let server = start_echo_with(&cert.flags());
    let port = server.addr.rsplit(':').next().unwrap();
    let mut request = duplex::ClientRequest::new(format!("wss://localhost:{port}/"));
    request.transport.extra_roots = vec![cert.root()];
    let mut ws = timeout(
        Duration::from_secs(10),
        duplex::connect_with(&request, &duplex::Config::client()),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(ws.get_ref().is_tls());
    ws.send(Message::binary(vec![9u8; 100_000])).await.unwrap();
    let reply = timeout(Duration::from_secs(10), ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(reply, Message::binary(vec![9u8; 100_000]));
    ws.close(CloseCode::NORMAL, "").await.unwrap();
    // A plain ws:// client gets no WebSocket from a wss:// port.
    assert!(
        duplex::connect(&format!("ws://{}/", server.addr))
            .await
            .is_err()
    );
}
