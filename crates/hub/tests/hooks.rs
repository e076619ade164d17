//! Proxy hooks against a real HTTP backend written here (hyper on
//! loopback): connect (accept, refuse, user, data, channels, no JWT),
//! forwarded cookies and headers, refresh, subscribe, publish (refuse,
//! replace), rpc (round trip, error), a backend that is down or slow, the
//! concurrency bound, the metrics, and signatures: the backend checks the
//! `Duplex-Signature` of every request with the hooks' secret, as
//! `docs/hooks.md` tells a backend to (independently of the hub's code), and
//! answers one that does not verify with 401, as a real backend would.

mod common;
mod webhook_support;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::{TestClient, TestHub, json};
use duplex_hub::HubConfig;
use duplex_hub::config::{AuthConfig, NamespaceHooks};
use duplex_hub_proto::{Command, ErrorCode, JsonText, ServerMessage};
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use webhook_support::unix_now as now;

const SECRET: &str = "the hooks tests' hub secret, 32+ bytes";

/// The secret hook requests are signed with (`[hooks] secret`).
const HOOK_SECRET: &str = "the hooks tests' signing secret, 32+ bytes";

/// Checks a `Duplex-Signature` value for `body` with `secret`, as a
/// backend does, with the webhook tests' checker (written apart from the
/// hub's signing code).
fn signed_by(secret: &[u8], header: Option<&http::HeaderValue>, body: &[u8]) -> bool {
    header
        .and_then(|h| h.to_str().ok())
        .is_some_and(|header| webhook_support::check(secret, header, body, now()))
}

/// What the backend answers: a status, a JSON body, after a delay.
struct Reply {
    status: u16,
    body: Value,
    delay: Duration,
}

fn answer(body: Value) -> Reply {
    Reply {
        status: 200,
        body,
        delay: Duration::ZERO,
    }
}

/// One request the backend got.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    headers: http::HeaderMap,
    body: Value,
    /// The body's bytes, as signed.
    raw: Bytes,
}

type Handler = dyn Fn(&str, &Value) -> Reply + Send + Sync;

/// A backend on `127.0.0.1:0`: answers each request with `handler(path,
/// body)` — or with 401 when its signature does not verify with
/// [`HOOK_SECRET`] — records what it got, and counts the requests it serves
/// at once.
struct Backend {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    max_concurrent: Arc<AtomicUsize>,
}

impl Backend {
    async fn start(handler: impl Fn(&str, &Value) -> Reply + Send + Sync + 'static) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let current = Arc::new(AtomicUsize::new(0));
        let max_concurrent = Arc::new(AtomicUsize::new(0));
        let handler: Arc<Handler> = Arc::new(handler);
        let (seen2, max2) = (seen.clone(), max_concurrent.clone());
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (handler, seen, current, max) = (
                    handler.clone(),
                    seen2.clone(),
                    current.clone(),
                    max2.clone(),
                );
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |request: http::Request<hyper::body::Incoming>| {
                            let (handler, seen, current, max) =
                                (handler.clone(), seen.clone(), current.clone(), max.clone());
                            async move {
                                let now = current.fetch_add(1, Ordering::SeqCst) + 1;
                                max.fetch_max(now, Ordering::SeqCst);
                                let (parts, body) = request.into_parts();
                                let bytes = body.collect().await.unwrap().to_bytes();
                                let body: Value =
                                    serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                                let path = parts.uri.path().to_owned();
                                let signed = signed_by(
                                    HOOK_SECRET.as_bytes(),
                                    parts.headers.get("duplex-signature"),
                                    &bytes,
                                );
                                seen.lock().unwrap().push(Seen {
                                    path: path.clone(),
                                    headers: parts.headers,
                                    body: body.clone(),
                                    raw: bytes,
                                });
                                let reply = if signed {
                                    handler(&path, &body)
                                } else {
                                    Reply {
                                        status: 401,
                                        body: json!({"error": {"message": "bad signature"}}),
                                        delay: Duration::ZERO,
                                    }
                                };
                                tokio::time::sleep(reply.delay).await;
                                current.fetch_sub(1, Ordering::SeqCst);
                                let response = http::Response::builder()
                                    .status(reply.status)
                                    .header("content-type", "application/json")
                                    .body(Full::new(Bytes::from(reply.body.to_string())))
                                    .unwrap();
                                Ok::<_, Infallible>(response)
                            }
                        },
                    );
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        Self {
            addr,
            seen,
            max_concurrent,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn seen(&self, path: &str) -> Vec<Seen> {
        let seen = self.seen.lock().unwrap();
        seen.iter().filter(|s| s.path == path).cloned().collect()
    }
}

/// A URL nothing listens on.
fn down_url() -> String {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    format!("http://127.0.0.1:{port}/down")
}

/// A hub with JWT auth (anonymous clients allowed in the default
/// namespace) and the hooks `hooks` sets.
async fn hub(hooks: impl FnOnce(&mut HubConfig)) -> TestHub {
    let mut config = HubConfig {
        auth: Some(AuthConfig {
            hs256_secret: Some(SECRET.into()),
            ..AuthConfig::default()
        }),
        ..HubConfig::default()
    };
    config.default_namespace.anonymous = Some(true);
    for ns in config.namespaces.values_mut() {
        ns.anonymous = Some(true);
    }
    config.hooks.timeout = Duration::from_secs(2);
    config.hooks.secret = Some(HOOK_SECRET.into());
    hooks(&mut config);
    TestHub::start(config).await
}

fn namespace<'a>(config: &'a mut HubConfig, name: &str) -> &'a mut NamespaceHooks {
    config.hooks.namespaces.entry(name.to_owned()).or_default()
}

async fn open(hub: &TestHub) -> TestClient {
    TestClient::open(&hub.url(), |r| r).await.expect("open")
}

fn error_of(message: &ServerMessage) -> (ErrorCode, String) {
    match message {
        ServerMessage::Error { code, message, .. } => (*code, message.clone()),
        other => panic!("expected an error, got {other:?}"),
    }
}

async fn connect_reply(client: &mut TestClient) -> ServerMessage {
    client
        .call(Command::Connect {
            token: None,
            name: Some("test".into()),
        })
        .await
}

fn rpc(method: &str, data: Value) -> Command {
    Command::Rpc {
        method: method.into(),
        data: JsonText::from_value(&data),
    }
}

fn metric(hub: &TestHub, line: &str) -> f64 {
    let text = hub.hub.metrics().render();
    text.lines()
        .find_map(|l| l.strip_prefix(line)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {line} in the metrics"))
}

#[tokio::test]
async fn connect_hook_sets_user_data_and_channels_without_a_jwt_and_gets_cookies_and_chosen_headers()
 {
    let expires = now() + 3600;
    let backend = Backend::start(move |_, body| {
        assert_eq!(body["transport"], "websocket");
        answer(json!({"result": {
            "user": "ada", "expires": expires, "data": {"plan": "pro"},
            "channels": ["news:ada"]
        }}))
    })
    .await;
    let hub = hub(|c| {
        c.hooks.connect = Some(backend.url("/connect"));
        c.hooks.forward_headers = vec!["x-request-id".into()];
    })
    .await;
    let mut client = TestClient::open(&hub.url(), |r| {
        r.header("cookie", "session=s3cr3t")
            .unwrap()
            .header("x-request-id", "req-7")
            .unwrap()
            .header("x-not-forwarded", "no")
            .unwrap()
    })
    .await
    .unwrap();
    let ServerMessage::Connected {
        user,
        expires: got,
        data,
        client: client_id,
        ..
    } = connect_reply(&mut client).await
    else {
        panic!("connected")
    };
    assert_eq!(user, "ada");
    assert_eq!(got, Some(expires));
    assert_eq!(data.unwrap().as_str(), r#"{"plan":"pro"}"#);
    // The channel the backend named is joined, announced by a push.
    let subscribed = client
        .wait_for(|m| matches!(m, ServerMessage::Subscribed { id: None, .. }))
        .await;
    let ServerMessage::Subscribed { channel, .. } = subscribed else {
        unreachable!()
    };
    assert_eq!(channel, "news:ada");
    // What the backend was told, and with which headers.
    let seen = backend.seen("/connect");
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].body["client"], client_id);
    assert_eq!(seen[0].body["name"], "test");
    assert_eq!(seen[0].body["remote"], "127.0.0.1");
    assert_eq!(seen[0].headers["cookie"], "session=s3cr3t");
    assert_eq!(seen[0].headers["x-request-id"], "req-7");
    assert!(seen[0].headers.get("x-not-forwarded").is_none());
    // Its messages arrive: published by a second hook-connected client.
    let mut bob = open(&hub).await;
    connect_reply(&mut bob).await;
    bob.publish("news:ada", json!({"n": 1})).await;
    let message = client
        .wait_for(|m| matches!(m, ServerMessage::Message(_)))
        .await;
    assert!(matches!(message, ServerMessage::Message(p) if p.channel == "news:ada"));

    // A client with a token is not sent to the hook.
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"sub": "carol", "exp": now() + 600}),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    let mut carol = open(&hub).await;
    let reply = carol.connect(Some(&token)).await;
    assert!(matches!(reply, ServerMessage::Connected { user, data: None, .. } if user == "carol"));
    assert_eq!(
        backend.seen("/connect").len(),
        2,
        "carol did not ask the hook"
    );
}

#[tokio::test]
async fn every_hook_request_is_signed_with_the_hook_secret_and_a_wrong_secret_does_not_verify() {
    let backend = Backend::start(|path, _| match path {
        "/connect" => answer(json!({"result": {"user": "ada"}})),
        "/rpc" => answer(json!({"result": {"data": {"ok": true}}})),
        _ => answer(json!({"result": {}})),
    })
    .await;
    let hub = hub(|c| {
        c.hooks.connect = Some(backend.url("/connect"));
        let ns = &mut c.hooks.default_namespace;
        ns.subscribe = Some(backend.url("/subscribe"));
        ns.publish = Some(backend.url("/publish"));
        ns.rpc = Some(backend.url("/rpc"));
        // A client's header of that name is not what the backend checks.
        c.hooks.forward_headers = vec!["duplex-signature".into()];
    })
    .await;
    let mut client = TestClient::open(&hub.url(), |r| {
        r.header("duplex-signature", "t=1,v1=00").unwrap()
    })
    .await
    .unwrap();
    // Each one answered as the handler says: the backend verified it.
    assert!(matches!(
        connect_reply(&mut client).await,
        ServerMessage::Connected { user, .. } if user == "ada"
    ));
    let reply = client.subscribe("room").await;
    assert!(
        matches!(reply, ServerMessage::Subscribed { .. }),
        "{reply:?}"
    );
    let reply = client.publish("room", json!({"n": 1})).await;
    assert!(
        matches!(reply, ServerMessage::Published { .. }),
        "{reply:?}"
    );
    let reply = client.call(rpc("get", json!({}))).await;
    assert!(matches!(reply, ServerMessage::Rpc { .. }), "{reply:?}");
    let seen = backend.seen.lock().unwrap().clone();
    let paths: Vec<&str> = seen.iter().map(|s| s.path.as_str()).collect();
    assert_eq!(paths, ["/connect", "/subscribe", "/publish", "/rpc"]);
    for request in &seen {
        let header = request.headers.get("duplex-signature");
        assert_eq!(
            request.headers.get_all("duplex-signature").iter().count(),
            1,
            "one signature, the hub's: {:?}",
            request.headers
        );
        assert!(
            signed_by(HOOK_SECRET.as_bytes(), header, &request.raw),
            "{} verifies with the secret: {header:?}",
            request.path
        );
        assert!(
            !signed_by(b"another secret of at least 32 bytes", header, &request.raw),
            "{} does not verify with another secret",
            request.path
        );
        let mut changed = request.raw.to_vec();
        changed.push(b' ');
        assert!(
            !signed_by(HOOK_SECRET.as_bytes(), header, &changed),
            "{} does not verify for another body",
            request.path
        );
    }
}

#[tokio::test]
async fn a_refused_connect_closes_with_4001_and_the_backends_reason_and_a_disconnect_with_its_code()
{
    let backend = Backend::start(|_, body| {
        if body["name"] == "kick" {
            answer(json!({"disconnect": {"code": 4403, "reason": "banned"}}))
        } else {
            answer(json!({"error": {"message": "log in first"}}))
        }
    })
    .await;
    let hub = hub(|c| c.hooks.connect = Some(backend.url("/connect"))).await;
    let mut client = open(&hub).await;
    client
        .send(Command::Connect {
            token: None,
            name: None,
        })
        .await;
    let close = client.closed().await;
    assert_eq!(u16::from(close.code), 4001);
    assert_eq!(close.reason, "log in first");
    let mut kicked = open(&hub).await;
    kicked
        .send(Command::Connect {
            token: None,
            name: Some("kick".into()),
        })
        .await;
    let close = kicked.closed().await;
    assert_eq!(
        (u16::from(close.code), close.reason.as_str()),
        (4403, "banned")
    );
}

#[tokio::test]
async fn subscribe_hook_refuses_with_the_backends_message_and_allows_the_rest() {
    let backend = Backend::start(|_, body| {
        if body["channel"] == "vip:lounge" {
            answer(json!({"error": {"message": "members only"}}))
        } else {
            answer(json!({"result": {}}))
        }
    })
    .await;
    let hub = hub(|c| namespace(c, "vip").subscribe = Some(backend.url("/subscribe"))).await;
    let mut client = hub.client().await;
    let (code, message) = error_of(&client.subscribe("vip:lounge").await);
    assert_eq!(
        (code, message.as_str()),
        (ErrorCode::Forbidden, "members only")
    );
    assert!(matches!(
        client.subscribe("vip:hall").await,
        ServerMessage::Subscribed { .. }
    ));
    // Another namespace has no hook: the backend is not asked.
    assert!(matches!(
        client.subscribe("chat:x").await,
        ServerMessage::Subscribed { .. }
    ));
    let seen = backend.seen("/subscribe");
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].body["channel"], "vip:hall");
    assert_eq!(seen[1].body["client"], client.client_id);
}

#[tokio::test]
async fn publish_hook_refuses_and_replaces_data() {
    let backend = Backend::start(|_, body| match body["data"]["text"].as_str() {
        Some(text) if text.contains("spam") => answer(json!({"error": {"message": "no spam"}})),
        Some(text) if text.contains("darn") => {
            answer(json!({"result": {"data": {"text": "****"}}}))
        }
        _ => answer(json!({"result": {}})),
    })
    .await;
    let hub = hub(|c| namespace(c, "chat").publish = Some(backend.url("/publish"))).await;
    let mut reader = hub.client().await;
    reader.subscribe("chat:room").await;
    let mut writer = hub.client().await;
    let (code, message) = error_of(
        &writer
            .publish("chat:room", json!({"text": "buy spam"}))
            .await,
    );
    assert_eq!((code, message.as_str()), (ErrorCode::Forbidden, "no spam"));
    assert!(matches!(
        writer
            .publish("chat:room", json!({"text": "oh darn"}))
            .await,
        ServerMessage::Published { offset: 1, .. }
    ));
    assert!(matches!(
        writer.publish("chat:room", json!({"text": "hello"})).await,
        ServerMessage::Published { offset: 2, .. }
    ));
    let texts: Vec<String> = [reader.recv().await, reader.recv().await]
        .iter()
        .map(|m| match m {
            ServerMessage::Message(p) => p.data.as_json().unwrap().as_str().to_owned(),
            other => panic!("a message, got {other:?}"),
        })
        .collect();
    assert_eq!(texts, [r#"{"text":"****"}"#, r#"{"text":"hello"}"#]);
    // Signals pass the publish hook too.
    let seen_before = backend.seen("/publish").len();
    let id = writer
        .send(Command::Signal {
            channel: "chat:room".into(),
            data: json(json!({"text": "spam signal"})),
        })
        .await;
    let (code, _) = error_of(&writer.reply_to(id).await);
    assert_eq!(code, ErrorCode::Forbidden);
    assert_eq!(backend.seen("/publish").len(), seen_before + 1);
}

#[tokio::test]
async fn rpc_round_trips_and_the_backends_error_is_an_rpc_error() {
    let backend = Backend::start(|_, body| {
        if body["data"]["order"] == 42 {
            answer(json!({"result": {"data": {"status": "shipped", "for": body["client"]}}}))
        } else {
            answer(json!({"error": {"message": "no such order"}}))
        }
    })
    .await;
    let hub = hub(|c| namespace(c, "orders").rpc = Some(backend.url("/rpc"))).await;
    let mut client = hub.client().await;
    let reply = client.call(rpc("orders:get", json!({"order": 42}))).await;
    let ServerMessage::Rpc { data, .. } = reply else {
        panic!("an rpc reply, got {reply:?}")
    };
    assert_eq!(
        data.to_value().unwrap(),
        json!({"status": "shipped", "for": client.client_id})
    );
    let (code, message) = error_of(&client.call(rpc("orders:get", json!({"order": 7}))).await);
    assert_eq!(
        (code, message.as_str()),
        (ErrorCode::RpcError, "no such order")
    );
    let (code, message) = error_of(&client.call(rpc("billing:get", json!(null))).await);
    assert_eq!(code, ErrorCode::BadRequest);
    assert!(message.contains("billing"), "{message}");
    let seen = backend.seen("/rpc");
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].body["method"], "orders:get");
    assert_eq!(
        metric(
            &hub,
            "duplex_hook_requests_total{hook=\"rpc\",outcome=\"accept\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(
            &hub,
            "duplex_hook_requests_total{hook=\"rpc\",outcome=\"refuse\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(&hub, "duplex_hook_duration_seconds_count{hook=\"rpc\"}"),
        2.0
    );
}

#[tokio::test]
async fn a_backend_that_is_down_gets_clear_errors_and_the_hub_serves_everyone_else() {
    let down = down_url();
    let hub = hub(|c| {
        c.hooks.connect = Some(down.clone());
        namespace(c, "orders").rpc = Some(down.clone());
        namespace(c, "vip").subscribe = Some(down.clone());
        namespace(c, "open").subscribe = Some(down.clone());
        namespace(c, "open").fail_open = true;
    })
    .await;
    // connect without a token: closed with 1013, try again later.
    let mut anonymous = open(&hub).await;
    anonymous
        .send(Command::Connect {
            token: None,
            name: None,
        })
        .await;
    let close = anonymous.closed().await;
    assert_eq!(u16::from(close.code), 1013);
    assert!(
        close.reason.contains("cannot be reached"),
        "{}",
        close.reason
    );
    // A client with a token is served; its hooked commands fail clearly.
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"sub": "ada", "exp": now() + 600}),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    let mut ada = open(&hub).await;
    ada.connect(Some(&token)).await;
    let (code, _) = error_of(&ada.call(rpc("orders:get", json!({}))).await);
    assert_eq!(code, ErrorCode::BackendUnavailable);
    let (code, message) = error_of(&ada.subscribe("vip:x").await);
    assert_eq!(code, ErrorCode::BackendUnavailable);
    assert!(message.contains("cannot be reached"), "{message}");
    // Fail-open: the namespace's own rules decide.
    assert!(matches!(
        ada.subscribe("open:x").await,
        ServerMessage::Subscribed { .. }
    ));
    // Everything without a hook works as ever.
    ada.subscribe("chat:y").await;
    assert!(matches!(
        ada.publish("chat:y", json!(1)).await,
        ServerMessage::Published { .. }
    ));
    assert!(matches!(ada.recv().await, ServerMessage::Message(_)));
    assert!(
        metric(
            &hub,
            "duplex_hook_failures_total{hook=\"subscribe\",kind=\"unreachable\"}"
        ) >= 2.0
    );
    assert_eq!(
        metric(
            &hub,
            "duplex_hook_failures_total{hook=\"connect\",kind=\"unreachable\"}"
        ),
        1.0
    );
}

#[tokio::test]
async fn a_slow_backend_times_out_within_the_bound_and_garbage_is_never_an_accept() {
    let backend = Backend::start(|path, _| match path {
        "/slow" => Reply {
            status: 200,
            body: json!({"result": {}}),
            delay: Duration::from_secs(5),
        },
        "/status" => Reply {
            status: 500,
            body: json!({"result": {}}),
            delay: Duration::ZERO,
        },
        _ => answer(json!({"neither": true})),
    })
    .await;
    let hub = hub(|c| {
        c.hooks.timeout = Duration::from_millis(300);
        namespace(c, "slow").rpc = Some(backend.url("/slow"));
        namespace(c, "bad").publish = Some(backend.url("/garbage"));
        namespace(c, "err").subscribe = Some(backend.url("/status"));
    })
    .await;
    let mut client = hub.client().await;
    let started = std::time::Instant::now();
    let (code, message) = error_of(&client.call(rpc("slow:op", json!(1))).await);
    let took = started.elapsed();
    assert_eq!(code, ErrorCode::BackendUnavailable);
    assert!(message.contains("in time"), "{message}");
    assert!(
        took < Duration::from_secs(3),
        "answered after {took:?}, not within the timeout's bound"
    );
    let (code, _) = error_of(&client.publish("bad:x", json!(1)).await);
    assert_eq!(code, ErrorCode::BackendUnavailable);
    let (code, _) = error_of(&client.subscribe("err:x").await);
    assert_eq!(code, ErrorCode::BackendUnavailable);
    for (hook, kind) in [
        ("rpc", "timeout"),
        ("publish", "bad_answer"),
        ("subscribe", "status"),
    ] {
        let line = format!("duplex_hook_failures_total{{hook=\"{hook}\",kind=\"{kind}\"}}");
        assert_eq!(metric(&hub, &line), 1.0, "{line}");
    }
    // The client is still served.
    assert!(matches!(
        client.call(Command::Ping).await,
        ServerMessage::Pong { .. }
    ));
}

#[tokio::test]
async fn concurrency_is_bounded_and_excess_waits_then_fails_as_busy() {
    let backend = Backend::start(|_, _| Reply {
        status: 200,
        body: json!({"result": {"data": "ok"}}),
        delay: Duration::from_millis(400),
    })
    .await;
    let hub = hub(|c| {
        c.hooks.max_concurrency = 2;
        c.hooks.queue_timeout = Duration::from_secs(5);
        namespace(c, "work").rpc = Some(backend.url("/rpc"));
    })
    .await;
    let mut clients = Vec::new();
    for _ in 0..6 {
        clients.push(hub.client().await);
    }
    let mut calls = tokio::task::JoinSet::new();
    for mut client in clients {
        calls.spawn(async move { client.call(rpc("work:x", json!(null))).await });
    }
    let mut answered = 0;
    while let Some(reply) = calls.join_next().await {
        assert!(matches!(reply.unwrap(), ServerMessage::Rpc { .. }));
        answered += 1;
    }
    assert_eq!(answered, 6, "the excess waited for a slot");
    assert_eq!(backend.max_concurrent.load(Ordering::SeqCst), 2);

    // With a short wait for a slot, the excess fails as busy.
    let hub = self::hub(|c| {
        c.hooks.max_concurrency = 1;
        c.hooks.queue_timeout = Duration::from_millis(100);
        namespace(c, "work").rpc = Some(backend.url("/rpc"));
    })
    .await;
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(hub.client().await);
    }
    let mut calls = tokio::task::JoinSet::new();
    for mut client in clients {
        calls.spawn(async move { client.call(rpc("work:x", json!(null))).await });
    }
    let mut codes = HashMap::new();
    while let Some(reply) = calls.join_next().await {
        let key = match reply.unwrap() {
            ServerMessage::Rpc { .. } => "ok".to_owned(),
            ServerMessage::Error { code, message, .. } => {
                assert!(message.contains("busy"), "{message}");
                code.to_string()
            }
            other => panic!("{other:?}"),
        };
        *codes.entry(key).or_insert(0) += 1;
    }
    assert_eq!(codes.get("ok"), Some(&1), "{codes:?}");
    assert_eq!(codes.get("backend_unavailable"), Some(&2), "{codes:?}");
    assert_eq!(
        metric(
            &hub,
            "duplex_hook_failures_total{hook=\"rpc\",kind=\"busy\"}"
        ),
        2.0
    );
    assert_eq!(metric(&hub, "duplex_hook_waiting{hook=\"rpc\"}"), 0.0);
    assert_eq!(metric(&hub, "duplex_hook_in_flight{hook=\"rpc\"}"), 0.0);
}

#[tokio::test]
async fn the_refresh_hook_extends_a_hooked_session_and_a_refusal_lets_it_expire() {
    let backend = Backend::start(|path, body| match path {
        "/connect" => answer(json!({"result": {
            "user": body["name"], "expires": now() + 3
        }})),
        _ if body["user"] == "ada" => answer(json!({"result": {"expires": now() + 3600}})),
        _ => answer(json!({"error": {"message": "session over"}})),
    })
    .await;
    let hub = hub(|c| {
        c.hooks.connect = Some(backend.url("/connect"));
        c.hooks.refresh = Some(backend.url("/refresh"));
    })
    .await;
    let mut ada = open(&hub).await;
    let reply = ada
        .call(Command::Connect {
            token: None,
            name: Some("ada".into()),
        })
        .await;
    assert!(matches!(
        reply,
        ServerMessage::Connected {
            expires: Some(_),
            ..
        }
    ));
    let mut bob = open(&hub).await;
    bob.call(Command::Connect {
        token: None,
        name: Some("bob".into()),
    })
    .await;
    // Before its expiry, ada's session is extended, and she is told.
    let refreshed = ada
        .wait_for(|m| matches!(m, ServerMessage::Refreshed { id: None, .. }))
        .await;
    let ServerMessage::Refreshed {
        expires: Some(expires),
        ..
    } = refreshed
    else {
        unreachable!()
    };
    assert!(expires > now() + 3000);
    // Bob's refresh is refused: his session ends at its expiry, with 4002.
    let close = bob.closed().await;
    assert_eq!(u16::from(close.code), 4002);
    let seen = backend.seen("/refresh");
    assert!(seen.iter().any(|s| s.body["user"] == "ada"));
    assert!(seen.iter().any(|s| s.body["user"] == "bob"));
    // Ada is still served after bob's session ended.
    assert!(matches!(
        ada.call(Command::Ping).await,
        ServerMessage::Pong { .. }
    ));
    assert_eq!(
        metric(
            &hub,
            "duplex_hook_requests_total{hook=\"refresh\",outcome=\"refuse\"}"
        ),
        1.0
    );
}

#[tokio::test]
async fn the_rust_client_calls_rpc_and_gets_the_backends_data_or_its_error() {
    use duplex_hub_client::{Client, Event, Options, RpcError};
    let backend = Backend::start(|_, body| {
        if body["data"] == json!("ping") {
            answer(json!({"result": {"data": "pong"}}))
        } else {
            answer(json!({"error": {"message": "unknown"}}))
        }
    })
    .await;
    let hub = hub(|c| c.hooks.default_namespace.rpc = Some(backend.url("/rpc"))).await;
    let mut client = Client::connect(&hub.url(), Options::default());
    // Made before the connection is up: sent once it is.
    let early = client.rpc("echo", json!("ping"));
    let connected = tokio::time::timeout(common::WAIT, async {
        while let Some(event) = client.next_event().await {
            if matches!(event, Event::Connected { .. }) {
                return;
            }
        }
    });
    connected.await.expect("connected in time");
    let data = tokio::time::timeout(common::WAIT, early)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(data.as_str(), r#""pong""#);
    let refused = tokio::time::timeout(common::WAIT, client.rpc("echo", json!(1)))
        .await
        .unwrap();
    assert_eq!(
        refused,
        Err(RpcError::Refused {
            code: ErrorCode::RpcError,
            message: "unknown".into()
        })
    );
    assert!(matches!(
        client.rpc("bad name", json!(1)).await,
        Err(RpcError::InvalidMethod(_))
    ));
    client.close();
}

#[tokio::test]
async fn the_rust_client_gets_the_connect_hooks_data_in_connected_in_both_envelopes() {
    use duplex_hub_client::{Client, Event, Options};
    use duplex_hub_proto::Encoding;
    let backend = Backend::start(|_, _| {
        answer(json!({"result": {"user": "ada", "data": {"plan": "pro", "seats": [1, 2]}}}))
    })
    .await;
    let hub = hub(|c| c.hooks.connect = Some(backend.url("/connect"))).await;
    for encoding in [Encoding::Json, Encoding::Binary] {
        let mut client = Client::connect(&hub.url(), Options::default().encoding(encoding));
        let event = tokio::time::timeout(common::WAIT, async {
            loop {
                let event = client.next_event().await.expect("connected");
                if matches!(event, Event::Connected { .. }) {
                    return event;
                }
            }
        })
        .await
        .expect("connected in time");
        let Event::Connected { user, data, .. } = event else {
            unreachable!()
        };
        assert_eq!(user, "ada");
        assert_eq!(
            data.map(|d| d.as_str().to_owned()).as_deref(),
            Some(r#"{"plan":"pro","seats":[1,2]}"#),
            "{encoding:?}"
        );
        client.close();
    }
}
