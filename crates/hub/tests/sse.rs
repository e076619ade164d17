//! The hub over plain HTTP: a session streamed as Server-Sent Events with
//! its commands as POSTs (`/session`), and the read-only `/sse` endpoint,
//! against a real hub; `curl -N` on `/sse`; and two nodes on one real
//! Redis behind a real HAProxy balancing round robin, where a POST lands on
//! either node and still reaches its session.

mod cluster_support;
mod common;
mod sse_support;

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use cluster_support::{Haproxy, Node, Redis};
use common::{TestHub, WAIT};
use duplex_hub::HubConfig;
use duplex_hub::config::NamespaceConfig;
use duplex_hub_proto::ServerMessage;
use duplex_hub_proto::session::Permission;
use serde_json::json;
use sse_support::{HttpSession, command, get_stream, post};
use tokio::io::{AsyncBufReadExt, BufReader};

fn config() -> HubConfig {
    HubConfig {
        shutdown_grace: Duration::from_millis(500),
        ..HubConfig::default()
    }
}

/// Opens a session at `addr` and completes `connect`.
async fn connected(addr: SocketAddr) -> HttpSession {
    let mut session = HttpSession::open(addr, &[]).await;
    let status = session
        .post(&[command(json!({"op": "connect", "id": 1, "name": "test"}))])
        .await;
    assert_eq!(status, 204);
    let reply = session.recv().await;
    assert!(
        matches!(reply, ServerMessage::Connected { id: Some(1), .. }),
        "{reply:?}"
    );
    session
}

async fn metric(hub: &TestHub, line_start: &str) -> String {
    let (_, body) = hub.get("/metrics").await;
    body.lines()
        .find(|l| l.starts_with(line_start))
        .unwrap_or_else(|| panic!("no {line_start} in /metrics"))
        .to_owned()
}

#[tokio::test]
async fn a_session_over_sse_and_posts_chats_with_a_websocket_client() {
    let hub = TestHub::start(config()).await;
    let mut http = HttpSession::open(hub.addr, &[]).await;
    {
        let stream = http.stream.as_ref().unwrap();
        let head = &stream.head;
        assert_eq!(
            head.header("content-type"),
            Some("text/event-stream; charset=utf-8")
        );
        assert_eq!(head.header("x-accel-buffering"), Some("no"));
        assert!(head.header("cache-control").unwrap().contains("no-cache"));
        assert_eq!(head.header("content-length"), None);
        assert_eq!(head.header("transfer-encoding"), Some("chunked"));
    }
    // Several commands in one POST, answered in order on the stream.
    let status = http
        .post(&[
            command(json!({"op": "connect", "id": 1})),
            command(json!({"op": "subscribe", "id": 2, "channel": "chat:a"})),
        ])
        .await;
    assert_eq!(status, 204);
    assert!(matches!(
        http.recv().await,
        ServerMessage::Connected { id: Some(1), .. }
    ));
    assert!(matches!(
        http.recv().await,
        ServerMessage::Subscribed { id: Some(2), .. }
    ));
    assert_eq!(
        metric(&hub, "duplex_connections_by_transport{transport=\"sse\"}").await,
        "duplex_connections_by_transport{transport=\"sse\"} 1"
    );

    let mut ws = hub.client().await;
    ws.subscribe("chat:a").await;
    ws.publish("chat:a", json!("from websocket")).await;
    let message = http
        .wait_for(|m| matches!(m, ServerMessage::Message(_)))
        .await;
    let ServerMessage::Message(publication) = message else {
        unreachable!()
    };
    assert_eq!(publication.data, common::json(json!("from websocket")));

    http.post(&[command(
        json!({"op": "publish", "id": 3, "channel": "chat:a", "data": "from sse"}),
    )])
    .await;
    let reply = http
        .wait_for(|m| matches!(m, ServerMessage::Published { .. }))
        .await;
    assert!(
        matches!(
            reply,
            ServerMessage::Published {
                id: Some(3),
                offset: 2,
                ..
            }
        ),
        "{reply:?}"
    );
    let seen = ws
        .wait_for(|m| matches!(m, ServerMessage::Message(p) if p.offset == 2))
        .await;
    let ServerMessage::Message(publication) = seen else {
        unreachable!()
    };
    assert_eq!(publication.data, common::json(json!("from sse")));

    // A session nobody knows, and no session named.
    assert_eq!(
        post(hub.addr, "0000000000", b"{\"op\":\"ping\"}", "text/plain")
            .await
            .0,
        404
    );
    let (status, _) = common::http_get(hub.addr, "/session?session=x").await;
    assert_eq!(
        status, 200,
        "a resume of an unknown session is a stream with a close event"
    );
}

#[tokio::test]
async fn a_cut_stream_resumes_from_last_event_id_without_loss() {
    let hub = TestHub::start(config()).await;
    let mut http = connected(hub.addr).await;
    http.post(&[command(
        json!({"op": "subscribe", "id": 2, "channel": "chat:r"}),
    )])
    .await;
    assert!(matches!(
        http.recv().await,
        ServerMessage::Subscribed { .. }
    ));
    let mut ws = hub.client().await;
    ws.publish("chat:r", json!(1)).await;
    assert!(matches!(http.recv().await, ServerMessage::Message(p) if p.offset == 1));

    // An intermediary cuts the stream; meanwhile messages and a reply.
    http.cut();
    for n in 2..=6 {
        ws.publish("chat:r", json!(n)).await;
    }
    http.post(&[command(json!({"op": "ping", "id": 9}))]).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    http.resume_at(hub.addr).await;
    let mut offsets = Vec::new();
    while offsets.len() < 5 {
        match http.recv().await {
            ServerMessage::Message(p) => offsets.push(p.offset),
            ServerMessage::Pong { id: Some(9) } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    // `recv` checks that event ids go on one by one: nothing lost or repeated.
    assert_eq!(offsets, [2, 3, 4, 5, 6]);

    // A resume from before what the window keeps is refused (4009); so is
    // one of an unknown session.
    let path = format!("/session?session={}", http.id);
    let mut stream = get_stream(hub.addr, &path, &[("Last-Event-ID", "999")])
        .await
        .unwrap();
    assert_eq!(stream.next().await.unwrap().event.as_deref(), Some("open"));
    let close = stream.next().await.unwrap();
    assert_eq!(close.event.as_deref(), Some("close"));
    assert!(close.data.contains("4009"), "{close:?}");
    let mut stream = get_stream(hub.addr, "/session?session=00000011", &[])
        .await
        .unwrap();
    let close = stream.next().await.unwrap();
    assert!(close.data.contains("4009"), "{close:?}");
}

#[tokio::test]
async fn a_session_whose_stream_does_not_come_back_ends() {
    let mut config = config();
    config.http.resume_timeout = Duration::from_millis(300);
    let hub = TestHub::start(config).await;
    let mut http = connected(hub.addr).await;
    http.cut();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(http.post(&[command(json!({"op": "ping"}))]).await, 404);
    assert_eq!(
        metric(&hub, "duplex_connections_by_transport{transport=\"sse\"}").await,
        "duplex_connections_by_transport{transport=\"sse\"} 0"
    );
}

#[tokio::test]
async fn close_codes_and_reasons_arrive_as_the_final_event() {
    let mut config = config();
    config.limits.connect_timeout = Duration::from_millis(300);
    config.limits.max_message_size = 1024;
    let hub = TestHub::start(config).await;

    // No connect in time: 4001, as on a WebSocket.
    let mut idle = HttpSession::open(hub.addr, &[]).await;
    let (code, reason) = idle.recv_or_close().await.unwrap_err();
    assert_eq!(code, 4001, "{reason}");
    assert!(
        idle.stream.as_mut().unwrap().next().await.is_none(),
        "the stream ends"
    );

    // A command over the message size limit: 1009.
    let mut big = connected(hub.addr).await;
    let data = "x".repeat(2000);
    big.post(&[command(
        json!({"op": "publish", "channel": "a", "data": data}),
    )])
    .await;
    let (code, _) = big.recv_or_close().await.unwrap_err();
    assert_eq!(code, 1009);

    // A body over `max_post_bytes`: 413, and the session is untouched.
    let mut small = connected(hub.addr).await;
    let body = vec![b' '; (1 << 20) + 1];
    assert_eq!(post(hub.addr, &small.id, &body, "text/plain").await.0, 413);
    small.post(&[command(json!({"op": "ping", "id": 5}))]).await;
    assert!(matches!(
        small.recv().await,
        ServerMessage::Pong { id: Some(5) }
    ));
    // A malformed command: an error reply; the session stays.
    small.post(&["{nope".to_owned()]).await;
    assert!(matches!(small.recv().await, ServerMessage::Error { .. }));
}

#[tokio::test]
async fn an_idle_stream_gets_comment_pings() {
    let mut config = config();
    config.http.ping_interval = Duration::from_millis(100);
    let hub = TestHub::start(config).await;
    let mut http = connected(hub.addr).await;
    let stream = http.stream.as_mut().unwrap();
    assert!(
        stream
            .next_within(Duration::from_millis(550))
            .await
            .is_none()
    );
    assert!(stream.comments >= 3, "{} pings", stream.comments);
}

#[tokio::test]
async fn the_session_takes_the_streams_token_and_the_origin_rule() {
    let hub = TestHub::start(config()).await;
    // A token on a hub without tokens: refused like a WebSocket handshake.
    let refused = get_stream(hub.addr, "/session", &[("Authorization", "Bearer x.y.z")]).await;
    assert_eq!(refused.err().map(|e| e.0), Some(401));
    let refused = get_stream(hub.addr, "/session", &[("Origin", "https://evil.example")]).await;
    assert_eq!(refused.err().map(|e| e.0), Some(403));
    let refused = get_stream(
        hub.addr,
        "/sse?channel=a",
        &[("Origin", "https://evil.example")],
    )
    .await;
    assert_eq!(refused.err().map(|e| e.0), Some(403));
    assert!(
        metric(&hub, "duplex_connections_rejected_total{reason=\"origin\"}")
            .await
            .ends_with(" 2")
    );
}

/// `curl -N` on `/sse` for two channels, until it has seen `want` lines
/// starting with `data:`; returns every line it printed.
async fn curl_lines(url: &str, headers: &[&str], want: usize) -> Vec<String> {
    let mut curl = tokio::process::Command::new("curl");
    curl.args(["-N", "-s", "--max-time", "10"]);
    for header in headers {
        curl.args(["-H", header]);
    }
    let mut child = curl
        .arg(url)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .process_group(0)
        .spawn()
        .expect("curl is installed");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut out = Vec::new();
    let mut data = 0;
    while data < want {
        let line = tokio::time::timeout(WAIT, lines.next_line())
            .await
            .expect("curl prints in time")
            .expect("read")
            .expect("curl goes on");
        if line.starts_with("data:") {
            data += 1;
        }
        out.push(line);
    }
    let _ = child.start_kill();
    let _ = child.wait().await;
    out
}

#[tokio::test]
async fn curl_reads_channels_from_the_plain_sse_endpoint_and_resumes() {
    let hub = TestHub::start(config()).await;
    let mut ws = hub.client().await;
    ws.publish("chat:x", json!("before")).await;
    let url = format!("http://{}/sse?channel=chat:x&channel=chat:y", hub.addr);
    let reader = tokio::spawn({
        let url = url.clone();
        async move { curl_lines(&url, &[], 2).await }
    });
    // Wait until curl's session is subscribed to both channels.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let line = metric(&hub, "duplex_subscriptions ").await;
        if line.ends_with(" 2") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "curl subscribed: {line}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    ws.publish("chat:y", json!("y1")).await;
    ws.publish("chat:x", json!("x2")).await;
    let lines = reader.await.unwrap();
    let data: Vec<&String> = lines.iter().filter(|l| l.starts_with("data:")).collect();
    assert!(
        data[0].contains("\"y1\"") && data[1].contains("\"x2\""),
        "{lines:?}"
    );
    let ids: Vec<&String> = lines.iter().filter(|l| l.starts_with("id:")).collect();
    let last = ids
        .last()
        .unwrap()
        .trim_start_matches("id:")
        .trim()
        .to_owned();
    // Both channels' epochs and offsets: chat:x at 2, chat:y at 1.
    assert!(last.contains(":2,") && last.ends_with(":1"), "{last}");

    // Missed while away, then recovered from Last-Event-ID.
    ws.publish("chat:x", json!("x3")).await;
    ws.publish("chat:y", json!("y2")).await;
    let header = format!("Last-Event-ID: {last}");
    let lines = curl_lines(&url, &[&header], 2).await;
    let data: Vec<&String> = lines.iter().filter(|l| l.starts_with("data:")).collect();
    assert!(
        data[0].contains("\"x3\"") && data[1].contains("\"y2\""),
        "{lines:?}"
    );
}

#[tokio::test]
async fn the_plain_sse_endpoint_obeys_subscribe_permissions() {
    let mut config = config();
    config.namespaces.insert(
        "private".to_owned(),
        NamespaceConfig {
            subscribe: Permission::Granted,
            ..NamespaceConfig::default()
        },
    );
    let hub = TestHub::start(config).await;
    let refused = get_stream(hub.addr, "/sse?channel=chat:ok&channel=private:x", &[]).await;
    let (status, body) = refused.err().expect("refused");
    assert_eq!(status, 403, "{body}");
    let refused = get_stream(hub.addr, "/sse?channel=bad%20name", &[]).await;
    assert_eq!(refused.err().map(|e| e.0), Some(400));
    let refused = get_stream(hub.addr, "/sse", &[]).await;
    assert_eq!(refused.err().map(|e| e.0), Some(400));
    // Nothing is left running.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(metric(&hub, "duplex_connections ").await.ends_with(" 0"));
}

/// Two nodes on one Redis behind HAProxy, `balance roundrobin`, no
/// stickiness: the session's stream stays on the node it opened on, and
/// its POSTs alternate between the nodes; every command still reaches it,
/// in order, and it chats with a WebSocket client of the other node.
#[tokio::test]
async fn posts_reach_their_session_through_a_round_robin_balancer() {
    let redis = Redis::start();
    let a = Node::start(&redis.url()).await;
    let b = Node::start(&redis.url()).await;
    let haproxy = Haproxy::start(&format!(
        "global\n    maxconn 256\n\
         defaults\n    mode http\n    timeout connect 5s\n    timeout client 60s\n    timeout server 60s\n\
         frontend hub\n    bind 127.0.0.1:{{port}}\n    default_backend nodes\n\
         backend nodes\n    balance roundrobin\n    server a {}\n    server b {}\n",
        a.addr, b.addr
    ));
    let mut http = HttpSession::open(haproxy.addr, &[]).await;
    // The stream opened on one node: the one counting an SSE connection.
    let sse_on =
        |body: String| body.contains("duplex_connections_by_transport{transport=\"sse\"} 1");
    let on_a = sse_on(a.get("/metrics").await.1);
    let on_b = sse_on(b.get("/metrics").await.1);
    assert!(on_a != on_b, "one node holds the session");
    let other = if on_a { &b } else { &a };
    http.post(&[command(json!({"op": "connect", "id": 1}))])
        .await;
    assert!(matches!(http.recv().await, ServerMessage::Connected { .. }));
    http.post(&[command(
        json!({"op": "subscribe", "id": 2, "channel": "room:rr"}),
    )])
    .await;
    assert!(matches!(
        http.recv().await,
        ServerMessage::Subscribed { .. }
    ));
    let mut ws = other.client().await;
    ws.subscribe("room:rr").await;

    // Each POST through the balancer: half of them land on the other node.
    for n in 0..20u64 {
        let status = http
            .post(&[command(
                json!({"op": "publish", "id": 100 + n, "channel": "room:rr", "data": n}),
            )])
            .await;
        assert_eq!(status, 204);
    }
    let mut acks = Vec::new();
    let mut messages = Vec::new();
    while acks.len() < 20 || messages.len() < 20 {
        match http.recv().await {
            ServerMessage::Published { id: Some(id), .. } => acks.push(id - 100),
            ServerMessage::Message(p) => messages.push(p.offset),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(acks, (0..20).collect::<Vec<_>>(), "every command, in order");
    assert_eq!(messages, (1..=20).collect::<Vec<_>>());
    for offset in 1..=20 {
        ws.wait_for(|m| matches!(m, ServerMessage::Message(p) if p.offset == offset))
            .await;
    }
    // The other node did forward: POSTs straight to it reach the session.
    assert_eq!(
        http.post_to(other.addr, &[command(json!({"op": "ping", "id": 7}))])
            .await,
        204
    );
    assert!(matches!(
        http.recv().await,
        ServerMessage::Pong { id: Some(7) }
    ));

    // A stream resumed through the balancer: on its node it goes on; on
    // the other the client is told to start afresh (4009).
    http.cut();
    ws.publish("room:rr", json!("while cut")).await;
    let mut resumed = false;
    for _ in 0..4 {
        http.resume_at(haproxy.addr).await;
        let first = http.stream.as_mut().unwrap().next().await.unwrap();
        if first.event.as_deref() == Some("open") {
            resumed = true;
            break;
        }
        assert!(first.data.contains("4009"), "{first:?}");
    }
    assert!(resumed, "round robin reaches the session's node");
    let message = http
        .wait_for(|m| matches!(m, ServerMessage::Message(_)))
        .await;
    assert!(matches!(message, ServerMessage::Message(p) if p.offset == 21));
    drop(haproxy);
}

#[tokio::test]
async fn a_client_ends_its_session_with_delete() {
    let hub = TestHub::start(config()).await;
    let http = connected(hub.addr).await;
    let request = format!(
        "DELETE /session?session={} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        http.id
    );
    let response = sse_support::raw_request(hub.addr, request.as_bytes()).await;
    assert!(response.starts_with("HTTP/1.1 204"), "{response}");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(http.post(&[command(json!({"op": "ping"}))]).await, 404);
    assert!(
        metric(&hub, "duplex_close_codes_total{code=\"1000\"}")
            .await
            .ends_with(" 1")
    );
}
