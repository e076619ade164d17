//! The client's address behind a proxy: per-IP limits count the client, not
//! the proxy, behind real HAProxy (PROXY protocol v1 and v2, the
//! configuration of docs/deploy.md) and real nginx (`X-Forwarded-For`, the
//! configuration of docs/deploy.md), and nothing an untrusted peer sends
//! changes the address it counts under.
//!
//! Needs Debian's `haproxy` and `nginx` (`cargo xtask setup haproxy
//! nginx`); a missing one fails the test with that hint. Clients come from
//! distinct loopback addresses (127.0.0.2, 127.0.0.3 …), which Linux
//! routes to the loopback interface.

mod cluster_support;
mod common;
mod sse_support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cluster_support::{Haproxy, deploy_doc_haproxy, find_program, free_port, wait_listening};
use common::{TestHub, WAIT};
use duplex_hub::HubConfig;
use duplex_hub::config::{ClientAddress, parse_net};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// A hub that believes `mode` from 127.0.0.1 only, and allows `per_ip`
/// connections per client address.
async fn hub_behind_proxy(mode: ClientAddress, per_ip: usize) -> TestHub {
    let mut config = HubConfig {
        trusted_proxies: vec![parse_net("127.0.0.1").unwrap()],
        client_address: Some(mode),
        ..HubConfig::default()
    };
    config.limits.max_connections_per_ip = per_ip;
    TestHub::start(config).await
}

/// A TCP connection to `to` from the loopback address `from`.
async fn connect_from(from: [u8; 4], to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::from((from, 0)))
        .expect("bind a loopback source address");
    tokio::time::timeout(WAIT, socket.connect(to))
        .await
        .expect("connect in time")
        .expect("connect")
}

/// Sends `prefix` then a `/ws` upgrade (with `extra` header lines) on
/// `tcp`; returns the status (0 if the connection ended without one) and
/// keeps the connection open on 101.
async fn upgrade_on(tcp: &mut TcpStream, prefix: &[u8], extra: &str) -> u16 {
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: hub.example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    );
    let mut bytes = prefix.to_vec();
    bytes.extend_from_slice(request.as_bytes());
    if tcp.write_all(&bytes).await.is_err() {
        return 0;
    }
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match tokio::time::timeout(WAIT, tcp.read(&mut buf))
            .await
            .expect("an answer in time")
        {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&head);
    text.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Opens a hub connection from `from` through the proxy at `proxy`.
async fn open_from(from: [u8; 4], proxy: SocketAddr, extra: &str) -> (u16, TcpStream) {
    let mut tcp = connect_from(from, proxy).await;
    let status = upgrade_on(&mut tcp, b"", extra).await;
    (status, tcp)
}

/// Two clients behind one proxy, a limit of 2 per client: the first client
/// fills its own share (its third connection gets 429, even when it claims
/// another address in `X-Forwarded-For`) and the second still gets in.
async fn each_client_has_its_own_share(proxy: SocketAddr, what: &str) {
    let spoof = "X-Forwarded-For: 203.0.113.77\r\n";
    let mut held = Vec::new();
    for _ in 0..2 {
        let (status, tcp) = open_from([127, 0, 0, 2], proxy, "").await;
        assert_eq!(status, 101, "{what}: the first client's connections");
        held.push(tcp);
    }
    let (status, _) = open_from([127, 0, 0, 2], proxy, spoof).await;
    assert_eq!(status, 429, "{what}: the first client over its share");
    for _ in 0..2 {
        let (status, tcp) = open_from([127, 0, 0, 3], proxy, "").await;
        assert_eq!(status, 101, "{what}: another client behind the same proxy");
        held.push(tcp);
    }
}

#[tokio::test]
async fn haproxy_with_the_proxy_protocol_counts_clients_not_the_proxy() {
    let hub = hub_behind_proxy(ClientAddress::ProxyProtocol, 2).await;
    for version in ["send-proxy-v2", "send-proxy"] {
        // docs/deploy.md's backend, both servers on the one hub.
        let config = deploy_doc_haproxy("send-proxy-v2", hub.addr, hub.addr)
            .replace("send-proxy-v2", version);
        let haproxy = Haproxy::start(&config);
        each_client_has_its_own_share(haproxy.addr, version).await;
        drop(haproxy);
        // Every connection is released before the next round.
        let deadline = Instant::now() + WAIT;
        // (Read in-process: the test's own connections come from 127.0.0.1,
        // a trusted proxy here, which must send a PROXY header.)
        while hub.hub.metrics().snapshot().connections != 0 {
            assert!(Instant::now() < deadline, "connections not released");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test]
async fn nginx_with_x_forwarded_for_counts_clients_not_the_proxy() {
    let hub = hub_behind_proxy(ClientAddress::XForwardedFor, 2).await;
    let nginx = Nginx::start(&deploy_doc_nginx(hub.addr));
    each_client_has_its_own_share(nginx.addr, "nginx").await;
}

/// docs/deploy.md's nginx configuration passes the HTTP transports
/// unbuffered: a session's stream (its events as they happen, its comment
/// pings) and its POSTs go through nginx, and so does `/sse`.
#[tokio::test]
async fn nginx_streams_a_session_over_sse_unbuffered() {
    let mut config = HubConfig::default();
    config.http.ping_interval = Duration::from_millis(200);
    let hub = TestHub::start(config).await;
    let nginx = Nginx::start(&deploy_doc_nginx(hub.addr));
    let mut http = sse_support::HttpSession::open(nginx.addr, &[]).await;
    let connect = sse_support::command(serde_json::json!({"op": "connect", "id": 1}));
    let subscribe =
        sse_support::command(serde_json::json!({"op": "subscribe", "id": 2, "channel": "room:n"}));
    assert_eq!(http.post(&[connect, subscribe]).await, 204);
    http.wait_for(|m| matches!(m, duplex_hub_proto::ServerMessage::Subscribed { .. }))
        .await;
    let mut ws = hub.client().await;
    for n in 1..=3 {
        ws.publish("room:n", serde_json::json!(n)).await;
        // Each one arrives on its own: nothing waits in a buffer.
        let message = tokio::time::timeout(
            Duration::from_secs(2),
            http.wait_for(|m| matches!(m, duplex_hub_proto::ServerMessage::Message(_))),
        )
        .await
        .expect("the event passes nginx at once");
        assert!(matches!(message, duplex_hub_proto::ServerMessage::Message(p) if p.offset == n));
    }
    let stream = http.stream.as_mut().unwrap();
    assert!(
        stream
            .next_within(Duration::from_millis(700))
            .await
            .is_none()
    );
    assert!(stream.comments >= 2, "pings pass: {}", stream.comments);
    let mut plain = sse_support::get_stream(nginx.addr, "/sse?channel=room:n", &[])
        .await
        .expect("/sse through nginx");
    ws.publish("room:n", serde_json::json!("plain")).await;
    let event = plain.next().await.expect("an event");
    assert!(event.data.contains("\"plain\""), "{event:?}");
}

/// Straight to the hub, no proxy: what peers outside `trusted_proxies` say
/// about addresses counts for nothing; a trusted one must send its header.
#[tokio::test]
async fn only_trusted_peers_name_the_client() {
    // 127.0.0.1 trusted (PROXY protocol), a limit of 1 per client.
    let hub = hub_behind_proxy(ClientAddress::ProxyProtocol, 1).await;
    let v1 = |source: &str| format!("PROXY TCP4 {source} 127.0.0.1 40000 8080\r\n");
    let mut held = Vec::new();
    for source in ["198.51.100.1", "198.51.100.2"] {
        let mut tcp = connect_from([127, 0, 0, 1], hub.addr).await;
        assert_eq!(upgrade_on(&mut tcp, v1(source).as_bytes(), "").await, 101);
        held.push(tcp);
    }
    let mut again = connect_from([127, 0, 0, 1], hub.addr).await;
    let status = upgrade_on(&mut again, v1("198.51.100.1").as_bytes(), "").await;
    assert_eq!(status, 429, "the named client is at its limit");
    // A v2 header (LOCAL: the proxy's own check) leaves the proxy's address.
    let mut local = connect_from([127, 0, 0, 1], hub.addr).await;
    let mut v2 = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    v2.extend_from_slice(&[0x20, 0x00, 0x00, 0x00]);
    assert_eq!(upgrade_on(&mut local, &v2, "").await, 101);
    held.push(local);
    // A trusted peer without the header is dropped without an answer.
    let mut bare = connect_from([127, 0, 0, 1], hub.addr).await;
    assert_eq!(upgrade_on(&mut bare, b"", "").await, 0);
    // An untrusted peer's PROXY header is not read: a bad request.
    for prefix in [v1("203.0.113.5").into_bytes(), v2.clone()] {
        let mut untrusted = connect_from([127, 0, 0, 2], hub.addr).await;
        let status = upgrade_on(&mut untrusted, &prefix, "").await;
        assert_eq!(status, 400, "{:?}", String::from_utf8_lossy(&prefix));
    }
    // Nor its X-Forwarded-For, on a hub that reads that header.
    let hub = hub_behind_proxy(ClientAddress::XForwardedFor, 1).await;
    let (status, _first) =
        open_from([127, 0, 0, 2], hub.addr, "X-Forwarded-For: 1.1.1.1\r\n").await;
    assert_eq!(status, 101);
    let (status, _) = open_from([127, 0, 0, 2], hub.addr, "X-Forwarded-For: 2.2.2.2\r\n").await;
    assert_eq!(
        status, 429,
        "an untrusted peer counts under its own address"
    );
    // From the trusted address, the header is believed.
    let (status, _a) = open_from([127, 0, 0, 1], hub.addr, "X-Forwarded-For: 1.1.1.1\r\n").await;
    assert_eq!(status, 101);
    let (status, _b) = open_from([127, 0, 0, 1], hub.addr, "X-Forwarded-For: 2.2.2.2\r\n").await;
    assert_eq!(status, 101);
    let (status, _) = open_from([127, 0, 0, 1], hub.addr, "X-Forwarded-For: 2.2.2.2\r\n").await;
    assert_eq!(status, 429);
}

/// docs/deploy.md's nginx block for one node at `node`, listening on
/// `{port}`; panics if the doc no longer has what this replaces.
fn deploy_doc_nginx(node: SocketAddr) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/deploy.md");
    let doc = std::fs::read_to_string(&path).expect("read docs/deploy.md");
    let block = doc
        .split("```")
        .skip(1)
        .step_by(2)
        .find(|block| block.contains("proxy_set_header X-Forwarded-For"))
        .expect("docs/deploy.md has an nginx configuration");
    let mut config = block.to_owned();
    for (from, to) in [
        ("listen 8080;", "listen 127.0.0.1:{port};".to_owned()),
        ("server 10.0.0.11:8080;", format!("server {node};")),
        ("server 10.0.0.12:8080;", String::new()),
    ] {
        assert!(
            config.contains(from),
            "docs/deploy.md's nginx configuration no longer has {from:?}:\n{config}"
        );
        config = config.replace(from, &to);
    }
    config
}

/// nginx in the foreground with an `http` block the test gives, in a
/// process group of its own, ended through it when dropped.
struct Nginx {
    addr: SocketAddr,
    child: Option<Child>,
    dir: PathBuf,
}

impl Nginx {
    /// Starts nginx with `http` (in which `{port}` is a free loopback port)
    /// in its `http` block; panics with the fix if nginx is missing.
    fn start(http: &str) -> Self {
        use std::os::unix::process::CommandExt;
        let Some(program) = find_program("nginx") else {
            panic!(
                "nginx is missing: this test needs Debian's nginx \
                 (`cargo xtask setup nginx`, or `apt-get install nginx`)"
            );
        };
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("duplex-nginx-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let d = dir.display();
        let config = format!(
            "daemon off;\nmaster_process on;\nworker_processes 1;\npid {d}/nginx.pid;\n\
             error_log {d}/error.log warn;\nevents {{ worker_connections 256; }}\n\
             http {{\n access_log off;\n client_body_temp_path {d}/body;\n\
             proxy_temp_path {d}/proxy;\n fastcgi_temp_path {d}/fastcgi;\n\
             uwsgi_temp_path {d}/uwsgi;\n scgi_temp_path {d}/scgi;\n{}\n}}\n",
            http.replace("{port}", &port.to_string())
        );
        let file = dir.join("nginx.conf");
        std::fs::write(&file, config).expect("write config");
        let child = Command::new(&program)
            .arg("-p")
            .arg(&dir)
            .arg("-e")
            .arg(dir.join("error.log"))
            .arg("-c")
            .arg(&file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("start nginx");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut nginx = Self {
            addr,
            child: Some(child),
            dir,
        };
        if !wait_listening(addr, Duration::from_secs(15)) {
            let log = std::fs::read_to_string(nginx.dir.join("error.log")).unwrap_or_default();
            nginx.stop();
            panic!("nginx did not listen on {addr}: {log}");
        }
        nginx
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Ok(pgid) = libc::pid_t::try_from(child.id())
                && pgid > 1
            {
                // SAFETY: killpg() takes no pointers; `pgid` is the process
                // group this child leads (spawned with `process_group(0)`)
                // and that we have not reaped, so it names nothing else.
                unsafe {
                    libc::killpg(pgid, libc::SIGTERM);
                }
                let deadline = Instant::now() + Duration::from_secs(5);
                let mut exited = false;
                while !exited && Instant::now() < deadline {
                    exited = matches!(child.try_wait(), Ok(Some(_)));
                    std::thread::sleep(Duration::from_millis(25));
                }
                if !exited {
                    // SAFETY: as above; the master is still there (not
                    // reaped), so the group is still its own.
                    unsafe {
                        libc::killpg(pgid, libc::SIGKILL);
                    }
                }
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.stop();
    }
}
