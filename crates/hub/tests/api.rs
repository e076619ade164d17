//! The server API over real HTTP on loopback: keys, every call, every
//! error class, batches, and what WebSocket clients of the same hub see.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{TestClient, TestHub, WAIT, http_request};
use duplex_hub::config::AuthConfig;
use duplex_hub::{ApiServer, Hub, HubConfig, Server};
use duplex_hub_proto::ServerMessage;
use jsonwebtoken::{EncodingKey, Header, encode};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SECRET: &str = "the server API tests' hub secret";
const KEY: &str = "api-key-one-0123456789";
const KEY2: &str = "api-key-two-0123456789";

fn token(sub: &str) -> String {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    encode(
        &Header::default(),
        &json!({"sub": sub, "exp": exp}),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

/// A hub (anonymous clients allowed, tokens verified) with its API.
struct ApiHub {
    ws: TestHub,
    api: SocketAddr,
}

async fn start() -> ApiHub {
    start_until(std::future::pending()).await
}

/// [`start`], its API stopping when `until` completes.
async fn start_until(until: impl std::future::Future<Output = ()> + Send + 'static) -> ApiHub {
    let mut config = HubConfig {
        auth: Some(AuthConfig {
            hs256_secret: Some(SECRET.into()),
            ..AuthConfig::default()
        }),
        ..HubConfig::default()
    };
    config.default_namespace.anonymous = Some(true);
    config.api.listen = Some("127.0.0.1:0".parse().unwrap());
    config.api.keys = vec![KEY.into(), KEY2.into()];
    config.api.max_body = 4096;
    let hub = Hub::new(config).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = Server::from_listener(hub.clone(), listener).unwrap();
    let addr = server.local_addr();
    let api = ApiServer::bind(hub.clone()).await.unwrap();
    let api_addr = api.local_addr();
    tokio::spawn(api.run(until));
    let ws = TestHub::adopt(hub, addr, server);
    ApiHub { ws, api: api_addr }
}

impl ApiHub {
    /// `POST /api/<call>` with the first key.
    async fn call(&self, call: &str, params: Value) -> (u16, Value) {
        let body = serde_json::to_vec(&params).unwrap();
        let auth = format!("apikey {KEY}");
        let headers = [
            ("Authorization", auth.as_str()),
            ("Content-Type", "application/json"),
        ];
        let (status, _, body) =
            http_request(self.api, "POST", &format!("/api/{call}"), &headers, &body).await;
        (status, body)
    }

    /// A call that must succeed; its reply.
    async fn ok(&self, call: &str, params: Value) -> Value {
        let (status, body) = self.call(call, params).await;
        assert_eq!(status, 200, "{call}: {body}");
        body
    }

    async fn user(&self, user: &str) -> TestClient {
        let mut client = TestClient::open(&self.ws.url(), |r| r).await.unwrap();
        client.connect(Some(&token(user))).await;
        client
    }
}

fn code_of(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("")
}

#[tokio::test]
async fn no_key_or_a_wrong_one_is_401_and_both_rotated_keys_work() {
    let hub = start().await;
    let body = br#"{"channel":"a","data":1}"#;
    for auth in [
        None,
        Some("apikey wrong-key-0123456789"),
        Some(&*format!("Bearer {KEY}")),
        Some("apikey "),
    ] {
        let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", *a)).collect();
        let (status, head, reply) =
            http_request(hub.api, "POST", "/api/publish", &headers, body).await;
        assert_eq!(status, 401, "{auth:?}");
        assert_eq!(code_of(&reply), "unauthorized");
        assert!(
            head.to_ascii_lowercase()
                .contains("www-authenticate: apikey"),
            "{head}"
        );
    }
    // Even the document and unknown paths want a key.
    let (status, _, _) = http_request(hub.api, "GET", "/api/openapi.json", &[], b"").await;
    assert_eq!(status, 401);
    let (status, _, _) = http_request(hub.api, "GET", "/nope", &[], b"").await;
    assert_eq!(status, 401);
    for key in [KEY, KEY2] {
        let auth = format!("apikey {key}");
        let (status, _, reply) = http_request(
            hub.api,
            "POST",
            "/api/publish",
            &[("Authorization", &auth)],
            body,
        )
        .await;
        assert_eq!(status, 200, "{reply}");
    }
    let auth = format!("APIKEY {KEY}");
    let (status, _, doc) = http_request(
        hub.api,
        "GET",
        "/api/openapi.json",
        &[("Authorization", &auth)],
        b"",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(doc["openapi"], "3.1.0");
}

#[tokio::test]
async fn publish_reaches_subscribers_and_a_reused_key_returns_the_same_offset() {
    let hub = start().await;
    let mut sub = hub.ws.client().await;
    sub.subscribe("news").await;
    let first = hub
        .ok(
            "publish",
            json!({"channel": "news", "data": {"n": 1}, "key": "k1"}),
        )
        .await;
    assert_eq!(
        (first["offset"].as_u64(), first["duplicate"].as_bool()),
        (Some(1), Some(false))
    );
    assert_eq!(first["scope"], "cluster");
    assert_eq!(first["epoch"].as_str().unwrap().len(), 8);
    let again = hub
        .ok(
            "publish",
            json!({"channel": "news", "data": {"n": 1}, "key": "k1"}),
        )
        .await;
    assert_eq!(
        (again["offset"].as_u64(), again["duplicate"].as_bool()),
        (Some(1), Some(true))
    );
    assert_eq!(again["epoch"], first["epoch"]);
    let bytes = hub
        .ok("publish", json!({"channel": "news", "b64data": "AAEC"}))
        .await;
    assert_eq!(bytes["offset"], 2);
    match sub
        .wait_for(|m| matches!(m, ServerMessage::Message(_)))
        .await
    {
        ServerMessage::Message(p) => {
            assert_eq!(
                (p.offset, p.data.as_json().unwrap().as_str()),
                (1, r#"{"n":1}"#)
            );
        }
        _ => unreachable!(),
    }
    match sub
        .wait_for(|m| matches!(m, ServerMessage::Message(_)))
        .await
    {
        ServerMessage::Message(p) => {
            assert_eq!(
                (p.offset, p.data.as_binary().map(|b| b.to_vec())),
                (2, Some(vec![0, 1, 2]))
            );
        }
        _ => unreachable!(),
    }
    // A client's key is another scope than the backend's.
    let client = sub
        .call(duplex_hub_proto::Command::Publish {
            channel: "news".into(),
            data: common::json(json!(3)),
            key: Some("k1".into()),
        })
        .await;
    assert!(
        matches!(
            client,
            ServerMessage::Published {
                offset: 3,
                duplicate: false,
                ..
            }
        ),
        "{client:?}"
    );
}

#[tokio::test]
async fn broadcast_publishes_one_payload_to_each_channel() {
    let hub = start().await;
    let mut sub = hub.ws.client().await;
    sub.subscribe("b").await;
    hub.ok("publish", json!({"channel": "a", "data": 0})).await;
    let reply = hub
        .ok("broadcast", json!({"channels": ["a", "b"], "data": "hi"}))
        .await;
    let offsets: Vec<(String, u64)> = reply["replies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["channel"].as_str().unwrap().to_owned(),
                r["offset"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(offsets, [("a".to_owned(), 2), ("b".to_owned(), 1)]);
    assert!(
        matches!(sub.wait_for(|m| matches!(m, ServerMessage::Message(_))).await, ServerMessage::Message(p) if p.channel == "b")
    );
    // One bad channel: nothing is published.
    let (status, body) = hub
        .call(
            "broadcast",
            json!({"channels": ["a", "no spaces"], "data": 1}),
        )
        .await;
    assert_eq!((status, code_of(&body)), (422, "invalid_params"));
    assert_eq!(
        hub.ok("history", json!({"channel": "a"})).await["offset"],
        2
    );
}

#[tokio::test]
async fn a_server_side_subscribe_and_unsubscribe_reach_every_connection_of_the_user() {
    let hub = start().await;
    let (mut ada1, mut ada2, mut bob) = (
        hub.user("ada").await,
        hub.user("ada").await,
        hub.user("bob").await,
    );
    let reply = hub
        .ok("subscribe", json!({"user": "ada", "channel": "room"}))
        .await;
    assert_eq!(
        (reply["scope"].as_str(), reply["nodes"].as_u64()),
        (Some("cluster"), Some(1))
    );
    for ada in [&mut ada1, &mut ada2] {
        let push = ada
            .wait_for(|m| matches!(m, ServerMessage::Subscribed { .. }))
            .await;
        assert!(
            matches!(&push, ServerMessage::Subscribed { id: None, channel, offset: 0, .. } if channel == "room"),
            "{push:?}"
        );
    }
    hub.ok("publish", json!({"channel": "room", "data": "x"}))
        .await;
    for ada in [&mut ada1, &mut ada2] {
        assert!(
            matches!(ada.wait_for(|m| matches!(m, ServerMessage::Message(_))).await, ServerMessage::Message(p) if p.offset == 1)
        );
    }
    // The session knows it: the client's own subscribe is `already_subscribed`.
    let again = ada1.subscribe("room").await;
    assert!(
        matches!(
            again,
            ServerMessage::Error {
                code: duplex_hub_proto::ErrorCode::AlreadySubscribed,
                ..
            }
        ),
        "{again:?}"
    );
    // One client only.
    hub.ok(
        "unsubscribe",
        json!({"user": "ada", "client": ada2.client_id, "channel": "room"}),
    )
    .await;
    let push = ada2
        .wait_for(|m| matches!(m, ServerMessage::Unsubscribed { .. }))
        .await;
    assert!(matches!(
        push,
        ServerMessage::Unsubscribed {
            id: None,
            reason: Some(_),
            ..
        }
    ));
    let presence = hub.ok("presence", json!({"channel": "room"})).await;
    let clients: Vec<&str> = presence["clients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["client"].as_str().unwrap())
        .collect();
    assert_eq!(clients, [ada1.client_id.as_str()]);
    let stats = hub.ok("presence_stats", json!({"channel": "room"})).await;
    assert_eq!(
        (stats["clients"].as_u64(), stats["users"].as_u64()),
        (Some(1), Some(1))
    );
    // Bob saw none of it.
    let ping = bob.call(duplex_hub_proto::Command::Ping).await;
    assert!(matches!(ping, ServerMessage::Pong { .. }));
    assert!(!bob.pending_has(|m| matches!(
        m,
        ServerMessage::Subscribed { .. } | ServerMessage::Message(_)
    )));
}

#[tokio::test]
async fn disconnect_closes_with_the_code_and_reason_and_refresh_moves_the_expiry() {
    let hub = start().await;
    let (mut ada, mut bob) = (hub.user("ada").await, hub.user("bob").await);
    let expires = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 7200;
    hub.ok("refresh", json!({"user": "bob", "expire_at": expires}))
        .await;
    let push = bob
        .wait_for(|m| matches!(m, ServerMessage::Refreshed { .. }))
        .await;
    assert_eq!(
        push,
        ServerMessage::Refreshed {
            id: None,
            expires: Some(expires)
        }
    );
    let (status, body) = hub
        .call("disconnect", json!({"user": "ada", "code": 1000}))
        .await;
    assert_eq!((status, code_of(&body)), (422, "invalid_params"), "{body}");
    hub.ok(
        "disconnect",
        json!({"user": "ada", "code": 4100, "reason": "kicked"}),
    )
    .await;
    let close = ada.closed().await;
    assert_eq!(
        (u16::from(close.code), close.reason.as_str()),
        (4100, "kicked")
    );
    // A refresh to the past ends the session as an expired token.
    hub.ok("refresh", json!({"client": bob.client_id, "expire_at": 1}))
        .await;
    assert_eq!(u16::from(bob.closed().await.code), 4002);
}

/// `connections` lists exactly the user's connections on the node, with
/// their client ids and when they connected, and refuses a missing user.
#[tokio::test]
async fn connections_lists_a_users_connections() {
    let hub = start().await;
    let (ada1, ada2, _bob) = (
        hub.user("ada").await,
        hub.user("ada").await,
        hub.user("bob").await,
    );
    let reply = hub.ok("connections", json!({"user": "ada"})).await;
    let mut clients: Vec<&str> = reply["connections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["client"].as_str().unwrap())
        .collect();
    clients.sort_unstable();
    let mut expected = [ada1.client_id.as_str(), ada2.client_id.as_str()];
    expected.sort_unstable();
    assert_eq!(clients, expected, "{reply}");
    let first = &reply["connections"][0];
    assert_eq!(first["user"], "ada");
    assert!(
        first["since"].as_u64().unwrap() > 1_700_000_000_000,
        "{first}"
    );
    assert_eq!(first["node"].as_str().unwrap().len(), 6, "{first}");
    assert_eq!(
        (&reply["nodes"], &reply["unanswered"], &reply["truncated"]),
        (&json!(1), &json!(0), &json!(false))
    );
    let none = hub.ok("connections", json!({"user": "carol"})).await;
    assert_eq!(none["connections"], json!([]));
    // Gone from the list once closed.
    drop(ada1);
    let mut left = 2;
    for _ in 0..100 {
        let reply = hub.ok("connections", json!({"user": "ada"})).await;
        left = reply["connections"].as_array().unwrap().len();
        if left == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(left, 1);
    for bad in [
        json!({}),
        json!({"user": ""}),
        json!({"user": "x".repeat(257)}),
    ] {
        let (status, body) = hub.call("connections", bad).await;
        assert_eq!((status, code_of(&body)), (422, "invalid_params"), "{body}");
    }
}

#[tokio::test]
async fn history_reads_and_removing_it_makes_recovery_a_gap() {
    let hub = start().await;
    for n in 1..=5 {
        hub.ok("publish", json!({"channel": "h", "data": n})).await;
    }
    let all = hub.ok("history", json!({"channel": "h"})).await;
    let offsets = |page: &Value| -> Vec<u64> {
        page["publications"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["offset"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(offsets(&all), [1, 2, 3, 4, 5]);
    assert_eq!(all["publications"][0]["data"], 1);
    let epoch = all["epoch"].as_str().unwrap().to_owned();
    let page = hub
        .ok(
            "history",
            json!({"channel": "h", "since": {"epoch": epoch, "offset": 2}, "limit": 2}),
        )
        .await;
    assert_eq!(
        (offsets(&page), page["gap"].as_bool()),
        (vec![3, 4], Some(false))
    );
    let page = hub
        .ok(
            "history",
            json!({"channel": "h", "reverse": true, "limit": 2}),
        )
        .await;
    assert_eq!(offsets(&page), [5, 4]);
    let page = hub
        .ok(
            "history",
            json!({"channel": "h", "since": {"epoch": "other", "offset": 2}}),
        )
        .await;
    assert_eq!(page["gap"], true);
    hub.ok("history_remove", json!({"channel": "h"})).await;
    let page = hub.ok("history", json!({"channel": "h"})).await;
    assert_eq!((offsets(&page), page["offset"].as_u64()), (vec![], Some(5)));
    // A client recovering from before the removal is told of a gap.
    let mut client = hub.ws.client().await;
    let reply = client.subscribe_since("h", &epoch, 2).await;
    assert!(
        matches!(
            reply,
            ServerMessage::Subscribed {
                gap: true,
                recovered: false,
                ..
            }
        ),
        "{reply:?}"
    );
    let next = hub.ok("publish", json!({"channel": "h", "data": 6})).await;
    assert_eq!(next["offset"], 6, "offsets go on");
}

#[tokio::test]
async fn channels_and_info_describe_the_node() {
    let hub = start().await;
    let mut a = hub.ws.client().await;
    let mut b = hub.ws.client().await;
    a.subscribe("room:one").await;
    b.subscribe("room:one").await;
    b.subscribe("news").await;
    let reply = hub.ok("channels", json!({"pattern": "room:*"})).await;
    assert_eq!(
        reply["channels"],
        json!([{"channel": "room:one", "subscribers": 2}])
    );
    let all = hub.ok("channels", json!({})).await;
    assert_eq!(all["channels"].as_array().unwrap().len(), 2);
    let info = hub.ok("info", json!({})).await;
    assert_eq!(info["nodes"][0]["connections"], 2);
    assert_eq!(info["nodes"][0]["version"], env!("CARGO_PKG_VERSION"));
    let (status, _, info) = http_request(
        hub.api,
        "POST",
        "/api/info",
        &[("Authorization", &format!("apikey {KEY}"))],
        b"",
    )
    .await;
    assert_eq!(
        (status, info["scope"].as_str()),
        (200, Some("cluster")),
        "an empty body is {{}}"
    );
}

#[tokio::test]
async fn a_batch_runs_in_order_and_answers_each_in_its_place() {
    let hub = start().await;
    let reply = hub
        .ok(
            "batch",
            json!({"commands": [
                {"method": "publish", "params": {"channel": "q", "data": 1}},
                {"method": "nope"},
                {"method": "publish", "params": {"channel": "q", "data": 2}},
                {"method": "publish", "params": {"channel": "q"}},
                {"method": "history", "params": {"channel": "q"}},
            ]}),
        )
        .await;
    let replies = reply["replies"].as_array().unwrap();
    assert_eq!(replies.len(), 5);
    assert_eq!(replies[0]["result"]["offset"], 1);
    assert_eq!(code_of(&replies[1]), "unknown_call");
    assert_eq!(replies[2]["result"]["offset"], 2);
    assert_eq!(code_of(&replies[3]), "invalid_params");
    assert_eq!(
        replies[4]["result"]["publications"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

/// A request and the error it gets: method, path, headers, body, status,
/// code.
type Case<'a> = (
    &'a str,
    &'a str,
    Vec<(&'a str, &'a str)>,
    Vec<u8>,
    u16,
    &'a str,
);

#[tokio::test]
async fn each_error_class_has_its_status_and_code() {
    let hub = start().await;
    let auth = format!("apikey {KEY}");
    let auth = ("Authorization", auth.as_str());
    let json_type = ("Content-Type", "application/json");
    let cases: Vec<Case<'_>> = vec![
        (
            "POST",
            "/api/publish",
            vec![auth, json_type],
            b"{not json".to_vec(),
            400,
            "bad_request",
        ),
        (
            "POST",
            "/api/frobnicate",
            vec![auth],
            b"{}".to_vec(),
            404,
            "unknown_call",
        ),
        (
            "POST",
            "/elsewhere",
            vec![auth],
            b"{}".to_vec(),
            404,
            "unknown_call",
        ),
        (
            "GET",
            "/api/publish",
            vec![auth],
            Vec::new(),
            405,
            "method_not_allowed",
        ),
        (
            "POST",
            "/api/openapi.json",
            vec![auth],
            Vec::new(),
            405,
            "method_not_allowed",
        ),
        (
            "POST",
            "/api/publish",
            vec![auth],
            vec![b' '; 5000],
            413,
            "too_large",
        ),
        (
            "POST",
            "/api/publish",
            vec![auth, ("Content-Type", "text/plain")],
            b"{}".to_vec(),
            415,
            "unsupported_media_type",
        ),
        (
            "POST",
            "/api/publish",
            vec![auth],
            br#"{"channel": 7, "data": 1}"#.to_vec(),
            422,
            "invalid_params",
        ),
        (
            "POST",
            "/api/publish",
            vec![auth],
            br#"{"channel": "a", "data": 1, "extra": 1}"#.to_vec(),
            422,
            "invalid_params",
        ),
        (
            "POST",
            "/api/publish",
            vec![auth],
            br#"{"channel": "$sys:stats", "data": 1}"#.to_vec(),
            422,
            "invalid_params",
        ),
        (
            "POST",
            "/api/publish",
            vec![auth],
            format!(
                r#"{{"channel": "a", "data": 1, "key": "{}"}}"#,
                "k".repeat(65)
            )
            .into_bytes(),
            422,
            "invalid_params",
        ),
        (
            "POST",
            "/api/history",
            vec![auth],
            br#"{"channel": "a", "limit": 5000}"#.to_vec(),
            422,
            "invalid_params",
        ),
        (
            "POST",
            "/api/subscribe",
            vec![auth],
            br#"{"channel": "a"}"#.to_vec(),
            422,
            "invalid_params",
        ),
        (
            "POST",
            "/api/batch",
            vec![auth],
            br#"[1]"#.to_vec(),
            422,
            "invalid_params",
        ),
    ];
    for (method, path, headers, body, status, code) in cases {
        let (got, head, reply) = http_request(hub.api, method, path, &headers, &body).await;
        assert_eq!(
            (got, code_of(&reply)),
            (status, code),
            "{method} {path}: {reply}"
        );
        assert!(!reply["error"]["message"].as_str().unwrap().is_empty());
        if status == 405 {
            assert!(head.to_ascii_lowercase().contains("allow: "), "{head}");
        }
    }
    // A deep `data` is refused like a client's.
    let deep = format!(
        r#"{{"channel": "a", "data": {}{}}}"#,
        "[".repeat(65),
        "]".repeat(65)
    );
    let (got, _, reply) =
        http_request(hub.api, "POST", "/api/publish", &[auth], deep.as_bytes()).await;
    assert_eq!((got, code_of(&reply)), (422, "invalid_params"), "{reply}");
}

#[tokio::test]
async fn an_api_without_keys_or_with_a_short_one_does_not_start() {
    let mut config = HubConfig::default();
    config.api.listen = Some("127.0.0.1:0".parse().unwrap());
    let error = Hub::new(config.clone()).unwrap_err().to_string();
    assert!(error.contains("at least one key"), "{error}");
    config.api.keys = vec!["short".into()];
    let error = Hub::new(config).unwrap_err().to_string();
    assert!(error.contains("at least 16"), "{error}");
    let off = Hub::new(HubConfig::default()).unwrap();
    assert!(ApiServer::bind(off).await.is_err(), "off unless configured");
    let _ = Duration::ZERO;
}

/// A request in progress when the API is told to stop is finished and
/// answered (within the shutdown grace), not cut; new connections are no
/// longer accepted.
#[tokio::test]
async fn shutdown_finishes_requests_in_progress() {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let hub = start_until(async move {
        let _ = stopped.await;
    })
    .await;
    let body = br#"{"channel": "news", "data": {"text": "in flight"}}"#;
    let mut tcp = tokio::net::TcpStream::connect(hub.api).await.unwrap();
    let head = format!(
        "POST /api/publish HTTP/1.1\r\nHost: {}\r\nAuthorization: apikey {KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        hub.api,
        body.len()
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    tcp.write_all(&body[..10]).await.unwrap();
    // Let the server read the head and start on the body, then stop it.
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.send(()).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    tcp.write_all(&body[10..]).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(WAIT, tcp.read_to_end(&mut response))
        .await
        .expect("answered in time")
        .expect("read the answer");
    let text = String::from_utf8_lossy(&response);
    assert!(
        text.starts_with("HTTP/1.1 200"),
        "the request in progress was not answered: {text:?}"
    );
    assert!(text.contains("\"offset\""), "{text}");
    // The listener is closed: a new connection is refused.
    let refused = tokio::time::timeout(WAIT, tokio::net::TcpStream::connect(hub.api)).await;
    assert!(
        matches!(refused, Ok(Err(_))),
        "a new API connection was accepted after shutdown"
    );
}
