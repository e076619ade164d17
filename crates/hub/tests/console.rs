//! The operator console's calls on the hub's own port (`/console/…`), over
//! real HTTP/1.1 and HTTP/2 on loopback, with the server API's listener
//! off: the admin login (cookie, constant-time token, clear refusals), the
//! read-only console without it, CSRF guards (POST of JSON only, the
//! origin), and the actions (publish, disconnect, a user's connections)
//! reaching real WebSocket clients.

mod common;

use bytes::Bytes;
use common::{TestClient, TestHub, WAIT, http_request};
use duplex::http2::h2;
use duplex_hub::HubConfig;
use duplex_hub::config::AuthConfig;
use duplex_hub_proto::ServerMessage;
use jsonwebtoken::{EncodingKey, Header, encode};
use serde_json::{Value, json};

const SECRET: &str = "the console tests' hub secret, 32+ bytes";
const ADMIN: &str = "console-admin-token-0123";

fn token(sub: &str) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
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

/// A hub with `[auth]` and an admin token (so its admin pages are
/// protected), anonymous clients allowed, and no `[api] listen`.
async fn protected() -> TestHub {
    let mut config = HubConfig {
        auth: Some(AuthConfig {
            hs256_secret: Some(SECRET.into()),
            ..AuthConfig::default()
        }),
        ..HubConfig::default()
    };
    config.admin.token = Some(ADMIN.into());
    config.default_namespace.anonymous = Some(true);
    assert!(config.api.listen.is_none());
    TestHub::start(config).await
}

/// `POST /console/<path>` of `params` as JSON, with `cookie` if any.
async fn post(hub: &TestHub, path: &str, params: Value, cookie: Option<&str>) -> (u16, Value) {
    let (status, _, body) = post_head(hub, path, params, cookie).await;
    (status, body)
}

async fn post_head(
    hub: &TestHub,
    path: &str,
    params: Value,
    cookie: Option<&str>,
) -> (u16, String, Value) {
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(cookie) = cookie {
        headers.push(("Cookie", cookie));
    }
    let body = serde_json::to_vec(&params).unwrap();
    http_request(
        hub.addr,
        "POST",
        &format!("/console/{path}"),
        &headers,
        &body,
    )
    .await
}

fn code_of(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("")
}

/// Logs in; the `name=value` of the session cookie.
async fn login(hub: &TestHub) -> String {
    let (status, head, body) = post_head(hub, "login", json!({"token": ADMIN}), None).await;
    assert_eq!(status, 200, "{body}");
    let set = head
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .unwrap_or_else(|| panic!("a cookie: {head}"));
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict") && set.contains("Path=/"),
        "{set}"
    );
    assert!(!set.contains("Secure"), "no TLS here: {set}");
    set.split(';').next().unwrap().to_owned()
}

#[tokio::test]
async fn without_a_login_the_console_is_read_only_and_says_why() {
    let hub = protected().await;
    let (status, body) = post(&hub, "session", json!({}), None).await;
    assert_eq!(
        (status, &body),
        (200, &json!({"admin": false, "login": true, "read": false}))
    );
    // Protected admin pages: not even the reads without a credential.
    let (status, body) = post(&hub, "api/info", json!({}), None).await;
    assert_eq!((status, code_of(&body)), (401, "unauthorized"), "{body}");
    for (call, params) in [
        ("publish", json!({"channel": "news", "data": 1})),
        ("disconnect", json!({"user": "ada"})),
        ("connections", json!({"user": "ada"})),
    ] {
        let (status, body) = post(&hub, &format!("api/{call}"), params, None).await;
        assert_eq!(
            (status, code_of(&body)),
            (401, "login_required"),
            "{call}: {body}"
        );
    }
    // A wrong token, a forged cookie.
    let (status, head, body) = post_head(&hub, "login", json!({"token": "guess"}), None).await;
    assert_eq!((status, code_of(&body)), (401, "wrong_token"), "{body}");
    assert!(!head.to_ascii_lowercase().contains("set-cookie"), "{head}");
    let forged = format!("duplex_console={}", "ab".repeat(32));
    let (status, _) = post(
        &hub,
        "api/publish",
        json!({"channel": "n", "data": 1}),
        Some(&forged),
    )
    .await;
    assert_eq!(status, 401);
    // Not a POST of JSON, another site's page, an unknown call.
    let (status, _, _) = http_request(hub.addr, "GET", "/console/api/info", &[], b"").await;
    assert_eq!(status, 405);
    let form = [("Content-Type", "application/x-www-form-urlencoded")];
    let (status, _, body) = http_request(
        hub.addr,
        "POST",
        "/console/login",
        &form,
        format!("token={ADMIN}").as_bytes(),
    )
    .await;
    assert_eq!(
        (status, code_of(&body)),
        (415, "unsupported_media_type"),
        "{body}"
    );
    let foreign = [
        ("Content-Type", "application/json"),
        ("Origin", "https://evil.example"),
    ];
    let body = serde_json::to_vec(&json!({"token": ADMIN})).unwrap();
    let (status, _, reply) =
        http_request(hub.addr, "POST", "/console/login", &foreign, &body).await;
    assert_eq!(
        (status, code_of(&reply)),
        (403, "forbidden_origin"),
        "{reply}"
    );
    let (status, body) = post(&hub, "api/history_remove", json!({"channel": "n"}), None).await;
    assert_eq!((status, code_of(&body)), (404, "unknown_call"), "{body}");
    // The page itself is served (it has the login form).
    assert_eq!(hub.get("/console").await.0, 200);
    // Twenty wrong tokens a minute are looked at; then even the right one
    // waits.
    for _ in 1..20 {
        let (status, _) = post(&hub, "login", json!({"token": "guess"}), None).await;
        assert_eq!(status, 401);
    }
    let (status, head, body) = post_head(&hub, "login", json!({"token": ADMIN}), None).await;
    assert_eq!((status, code_of(&body)), (429, "too_many_logins"), "{body}");
    assert!(
        head.to_ascii_lowercase().contains("retry-after: "),
        "{head}"
    );
}

#[tokio::test]
async fn the_admin_logs_in_and_acts_through_the_server_api() {
    let hub = protected().await;
    let cookie = login(&hub).await;
    let mut ada = TestClient::open(&hub.url(), |r| r).await.unwrap();
    ada.connect(Some(&token("ada"))).await;
    let mut watcher = hub.client().await;
    watcher.subscribe("news").await;

    let (status, body) = post(&hub, "session", json!({}), Some(&cookie)).await;
    assert_eq!(
        (status, &body["admin"], &body["read"]),
        (200, &json!(true), &json!(true))
    );
    // Reads.
    let (status, info) = post(&hub, "api/info", json!({}), Some(&cookie)).await;
    assert_eq!(
        (status, info["nodes"][0]["connections"].as_u64()),
        (200, Some(2)),
        "{info}"
    );
    let (_, channels) = post(
        &hub,
        "api/channels",
        json!({"pattern": "n*"}),
        Some(&cookie),
    )
    .await;
    assert_eq!(
        channels["channels"],
        json!([{"channel": "news", "subscribers": 1}])
    );
    // A user's connections.
    let (status, found) = post(
        &hub,
        "api/connections",
        json!({"user": "ada"}),
        Some(&cookie),
    )
    .await;
    assert_eq!(status, 200, "{found}");
    assert_eq!(found["connections"][0]["client"], ada.client_id.as_str());
    // Publish: the subscriber gets it; bad parameters are the API's errors.
    let (status, reply) = post(
        &hub,
        "api/publish",
        json!({"channel": "news", "data": {"text": "hi"}}),
        Some(&cookie),
    )
    .await;
    assert_eq!(
        (status, reply["offset"].as_u64()),
        (200, Some(1)),
        "{reply}"
    );
    let message = watcher
        .wait_for(|m| matches!(m, ServerMessage::Message(_)))
        .await;
    assert!(matches!(message, ServerMessage::Message(p) if p.channel == "news"));
    let (status, reply) = post(
        &hub,
        "api/publish",
        json!({"channel": "$sys:stats", "data": 1}),
        Some(&cookie),
    )
    .await;
    assert_eq!(
        (status, code_of(&reply)),
        (422, "invalid_params"),
        "{reply}"
    );
    // Disconnect with a code and reason.
    let (status, reply) = post(
        &hub,
        "api/disconnect",
        json!({"user": "ada", "code": 4111, "reason": "from the console"}),
        Some(&cookie),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    let close = ada.closed().await;
    assert_eq!(
        (u16::from(close.code), close.reason.as_str()),
        (4111, "from the console")
    );
    // The console page's WebSocket (`?console=1`) with the cookie reads
    // `$sys:stats`; another page's (the chat's) is not made the admin.
    let stats = |query: &'static str| {
        let cookie = cookie.clone();
        let url = format!("{}{query}", hub.url());
        async move {
            let mut client = TestClient::open(&url, |r| r.header("Cookie", &cookie).unwrap())
                .await
                .unwrap();
            let connected = client.connect(None).await;
            let user = match connected {
                ServerMessage::Connected { user, .. } => user,
                other => panic!("{other:?}"),
            };
            (user, client.subscribe("$sys:stats").await)
        }
    };
    let (user, reply) = stats("?console=1").await;
    assert_eq!(user, "$admin");
    assert!(
        matches!(reply, ServerMessage::Subscribed { .. }),
        "{reply:?}"
    );
    let (user, reply) = stats("").await;
    assert_eq!(user, "");
    assert!(matches!(reply, ServerMessage::Error { .. }), "{reply:?}");
    // The cookie opens the protected dashboard too; logout ends it.
    let (status, _, _) =
        http_request(hub.addr, "GET", "/dashboard", &[("Cookie", &cookie)], b"").await;
    assert_eq!(status, 200);
    let (status, head, _) = post_head(&hub, "logout", json!({}), Some(&cookie)).await;
    assert!(status == 200 && head.contains("Max-Age=0"), "{head}");
    let (status, body) = post(
        &hub,
        "api/publish",
        json!({"channel": "news", "data": 2}),
        Some(&cookie),
    )
    .await;
    assert_eq!((status, code_of(&body)), (401, "login_required"));
    // The admin token as a bearer works without a session (curl).
    let bearer = format!("Bearer {ADMIN}");
    let headers = [
        ("Content-Type", "application/json"),
        ("Authorization", bearer.as_str()),
    ];
    let (status, _, _) = http_request(
        hub.addr,
        "POST",
        "/console/api/connections",
        &headers,
        br#"{"user":"ada"}"#,
    )
    .await;
    assert_eq!(status, 200);
}

/// A hub without an admin token has no login: the default open hub's
/// console reads, and nothing acts.
#[tokio::test]
async fn without_an_admin_token_there_is_no_login() {
    let hub = TestHub::start(HubConfig::default()).await;
    let (status, body) = post(&hub, "session", json!({}), None).await;
    assert_eq!(
        (status, &body),
        (200, &json!({"admin": false, "login": false, "read": true}))
    );
    let (status, body) = post(&hub, "login", json!({"token": ADMIN}), None).await;
    assert_eq!(
        (status, code_of(&body)),
        (403, "login_unavailable"),
        "{body}"
    );
    let (status, _) = post(&hub, "api/info", json!({}), None).await;
    assert_eq!(status, 200);
    let (status, body) = post(
        &hub,
        "api/publish",
        json!({"channel": "n", "data": 1}),
        None,
    )
    .await;
    assert_eq!((status, code_of(&body)), (401, "login_required"));
}

/// The console's calls take the same path over HTTP/2 (h2c here): a body
/// is read, bounded, and answered.
#[tokio::test]
async fn console_calls_over_http2() {
    let hub = protected().await;
    let tcp = tokio::net::TcpStream::connect(hub.addr).await.unwrap();
    let (send, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let call = |path: &str, body: Vec<u8>, bearer: bool| {
        let send = send.clone();
        let mut request = http::Request::builder()
            .method("POST")
            .uri(format!("http://{}{path}", hub.addr))
            .header("content-type", "application/json");
        if bearer {
            request = request.header("authorization", format!("Bearer {ADMIN}"));
        }
        let request = request.body(()).unwrap();
        async move {
            let mut send = send.ready().await.unwrap();
            let (response, mut stream) = send.send_request(request, false).unwrap();
            let _ = stream.send_data(Bytes::from(body), true);
            let response = tokio::time::timeout(WAIT, response).await.unwrap().unwrap();
            let status = response.status().as_u16();
            let mut body = response.into_body();
            let mut out = Vec::new();
            while let Some(Ok(data)) = body.data().await {
                let _ = body.flow_control().release_capacity(data.len());
                out.extend_from_slice(&data);
            }
            (
                status,
                serde_json::from_slice::<Value>(&out).unwrap_or(Value::Null),
            )
        }
    };
    let (status, body) = call("/console/api/info", b"{}".to_vec(), true).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["scope"], "cluster");
    let (status, body) = call(
        "/console/api/publish",
        br#"{"channel":"n","data":1}"#.to_vec(),
        false,
    )
    .await;
    assert_eq!((status, code_of(&body)), (401, "login_required"), "{body}");
    // Over the bound (`[api] max_body`, 1 MiB by default): 413.
    let (status, _) = call("/console/api/publish", vec![b' '; (1 << 20) + 1], true).await;
    assert_eq!(status, 413);
}
