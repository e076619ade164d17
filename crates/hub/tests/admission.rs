//! Who gets in, and who stays: tokens (in the handshake, in `connect`,
//! expiring, refreshed), grants, anonymous access, origins, and connection
//! limits, each with the connection's state asserted afterwards.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{TestClient, TestHub, WAIT, json};
use duplex_hub::HubConfig;
use duplex_hub::config::{AuthConfig, NamespaceConfig, Permission};
use duplex_hub_proto::{Command, ErrorCode, ServerMessage};
use jsonwebtoken::{EncodingKey, Header, encode};
use serde_json::json;

const SECRET: &str = "the admission tests' hub secret!";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn token(sub: &str, expires_in: i64, extra: serde_json::Value) -> String {
    token_signed(sub, expires_in, extra, SECRET)
}

fn token_signed(sub: &str, expires_in: i64, extra: serde_json::Value, secret: &str) -> String {
    let mut claims = json!({ "sub": sub, "exp": (now() as i64 + expires_in) });
    if let (Some(claims), Some(extra)) = (claims.as_object_mut(), extra.as_object()) {
        claims.extend(extra.clone());
    }
    encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn authed_config() -> HubConfig {
    let mut config = HubConfig {
        auth: Some(AuthConfig {
            hs256_secret: Some(SECRET.into()),
            ..AuthConfig::default()
        }),
        ..HubConfig::default()
    };
    // These tests read /metrics, which [auth] protects by default
    // (tests/edge.rs covers that).
    config.admin.open = Some(true);
    config.namespaces.insert(
        "public".into(),
        NamespaceConfig {
            anonymous: Some(true),
            ..NamespaceConfig::default()
        },
    );
    config.namespaces.insert(
        "vip".into(),
        NamespaceConfig {
            subscribe: Permission::Granted,
            publish: Permission::Granted,
            ..NamespaceConfig::default()
        },
    );
    config
}

fn status_of(error: &duplex::Error) -> u16 {
    match error {
        duplex::Error::HttpStatus(response) => response.status().as_u16(),
        other => panic!("expected an HTTP refusal, got {other}"),
    }
}

fn error_code(message: &ServerMessage) -> ErrorCode {
    match message {
        ServerMessage::Error { code, .. } => *code,
        other => panic!("expected an error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_token_in_the_handshake_names_the_user() {
    let hub = TestHub::start(authed_config()).await;
    let bearer = format!("Bearer {}", token("alice", 3600, json!({})));
    let mut c = TestClient::open(&hub.url(), |r| r.header("Authorization", &bearer).unwrap())
        .await
        .unwrap();
    match c.connect(None).await {
        ServerMessage::Connected { user, expires, .. } => {
            assert_eq!(user, "alice");
            assert!(expires.is_some());
        }
        other => panic!("{other:?}"),
    }
    // The query parameter works too.
    let url = format!("{}?token={}", hub.url(), token("bob", 3600, json!({})));
    let mut c = TestClient::open(&url, |r| r).await.unwrap();
    assert!(
        matches!(c.connect(None).await, ServerMessage::Connected { user, .. } if user == "bob")
    );
}

#[tokio::test]
async fn forged_or_expired_tokens_are_refused_at_the_handshake_with_401() {
    let hub = TestHub::start(authed_config()).await;
    for bad in [
        token_signed(
            "mallory",
            3600,
            json!({}),
            "a forger's secret, also 32 bytes",
        ),
        token("alice", -10, json!({})),
        "not.a.jwt".to_owned(),
    ] {
        let bearer = format!("Bearer {bad}");
        let refused = TestClient::open(&hub.url(), |r| r.header("Authorization", &bearer).unwrap())
            .await
            .err()
            .expect("refused");
        assert_eq!(status_of(&refused), 401);
    }
    let (_, metrics) = hub.get("/metrics").await;
    assert!(
        metrics.contains(r#"duplex_connections_rejected_total{reason="auth"} 3"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_bad_token_in_connect_closes_with_4001() {
    let hub = TestHub::start(authed_config()).await;
    // The close reason names the token's fault, as the HTTP 401 does.
    for (bad, reason) in [
        (
            token_signed(
                "mallory",
                3600,
                json!({}),
                "a wrong secret, though of 32 by.",
            ),
            "token refused: invalid token signature",
        ),
        (
            token("alice", -10, json!({})),
            "token refused: token expired",
        ),
        ("not.a.jwt".to_owned(), "token refused: malformed token"),
    ] {
        let mut c = TestClient::open(&hub.url(), |r| r).await.unwrap();
        c.send(Command::Connect {
            token: Some(bad.clone()),
            name: None,
        })
        .await;
        let info = c.closed().await;
        assert_eq!(u16::from(info.code), 4001, "{bad}");
        assert_eq!(info.reason, reason, "{bad}");
    }
    let (_, metrics) = hub.get("/metrics").await;
    assert!(
        metrics.contains(r#"duplex_close_codes_total{code="4001"} 3"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_token_with_an_absurd_expiry_is_refused_not_saturated() {
    // `exp: 1e300`, signed with the hub's key, was taken for "never" and
    // echoed as 2^64 - 1 in `connected`.
    let hub = TestHub::start(authed_config()).await;
    let absurd = token("alice", 0, json!({"exp": 1e300}));
    let bearer = format!("Bearer {absurd}");
    let refused = TestClient::open(&hub.url(), |r| r.header("Authorization", &bearer).unwrap())
        .await
        .err()
        .expect("refused at the handshake");
    assert_eq!(status_of(&refused), 401);
    let mut c = TestClient::open(&hub.url(), |r| r).await.unwrap();
    c.send(Command::Connect {
        token: Some(absurd),
        name: None,
    })
    .await;
    assert_eq!(u16::from(c.closed().await.code), 4001);
    // The last second of the year 9999 is still a time.
    let mut c = TestClient::open(&hub.url(), |r| r).await.unwrap();
    let latest = token("alice", 0, json!({"exp": 253_402_300_799_u64}));
    match c.connect(Some(&latest)).await {
        ServerMessage::Connected { expires, .. } => assert_eq!(expires, Some(253_402_300_799)),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn no_connect_in_time_closes_with_4001() {
    let mut config = HubConfig::default();
    config.limits.connect_timeout = Duration::from_millis(300);
    let hub = TestHub::start(config).await;
    let mut c = TestClient::open(&hub.url(), |r| r).await.unwrap();
    let info = c.closed().await;
    assert_eq!(u16::from(info.code), 4001);
}

#[tokio::test]
async fn an_expiring_token_closes_with_4002_unless_refreshed() {
    let hub = TestHub::start(authed_config()).await;
    // Expires in 2 s and is never refreshed.
    let mut lapsing = TestClient::open(&hub.url(), |r| r).await.unwrap();
    lapsing.connect(Some(&token("alice", 2, json!({})))).await;
    // Expires in 2 s but is refreshed for an hour.
    let mut kept = TestClient::open(&hub.url(), |r| r).await.unwrap();
    kept.connect(Some(&token("bob", 2, json!({})))).await;
    let reply = kept
        .call(Command::Refresh {
            token: token("bob", 3600, json!({})),
        })
        .await;
    assert!(matches!(reply, ServerMessage::Refreshed { expires: Some(e), .. } if e > now() + 3000));
    // Refreshing as someone else is refused, and the connection stays.
    let reply = kept
        .call(Command::Refresh {
            token: token("eve", 3600, json!({})),
        })
        .await;
    assert_eq!(error_code(&reply), ErrorCode::Unauthorized);
    let info = lapsing.closed().await;
    assert_eq!(u16::from(info.code), 4002);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let reply = kept.call(Command::Ping).await;
    assert!(matches!(reply, ServerMessage::Pong { .. }));
}

#[tokio::test]
async fn grants_and_anonymous_access_per_namespace() {
    let hub = TestHub::start(authed_config()).await;
    // Anonymous: only the namespace that allows it.
    let mut anon = hub.client().await;
    assert!(matches!(
        anon.subscribe("public:x").await,
        ServerMessage::Subscribed { .. }
    ));
    assert_eq!(
        error_code(&anon.subscribe("chat:x").await),
        ErrorCode::Forbidden
    );
    // Signed in without grants: ordinary namespaces, not `vip`.
    let mut plain = TestClient::open(&hub.url(), |r| r).await.unwrap();
    plain.connect(Some(&token("carol", 3600, json!({})))).await;
    assert!(matches!(
        plain.subscribe("chat:x").await,
        ServerMessage::Subscribed { .. }
    ));
    assert_eq!(
        error_code(&plain.subscribe("vip:lounge").await),
        ErrorCode::Forbidden
    );
    assert_eq!(
        error_code(&plain.publish("vip:lounge", json!("hi")).await),
        ErrorCode::Forbidden
    );
    // A grant opens it.
    let mut vip = TestClient::open(&hub.url(), |r| r).await.unwrap();
    vip.connect(Some(&token("dave", 3600, json!({ "channels": ["vip:*"] }))))
        .await;
    assert!(matches!(
        vip.subscribe("vip:lounge").await,
        ServerMessage::Subscribed { .. }
    ));
    let reply = vip
        .call(Command::Publish {
            channel: "vip:lounge".into(),
            data: json(json!("welcome")),
            key: None,
        })
        .await;
    assert!(
        matches!(reply, ServerMessage::Published { .. }),
        "{reply:?}"
    );
    // Every refusal kept its connection.
    for client in [&mut anon, &mut plain, &mut vip] {
        assert!(matches!(
            client.call(Command::Ping).await,
            ServerMessage::Pong { .. }
        ));
    }
}

/// A refresh rechecks every subscription against the new token: what it no
/// longer grants ends with an `unsubscribed` push and a reason, and its
/// messages stop; what it still grants goes on.
#[tokio::test]
async fn a_refresh_ends_the_subscriptions_its_token_no_longer_grants() {
    let hub = TestHub::start(authed_config()).await;
    let mut c = TestClient::open(&hub.url(), |r| r).await.unwrap();
    c.connect(Some(&token("ada", 3600, json!({ "channels": ["vip:*"] }))))
        .await;
    for channel in ["vip:a", "vip:b", "public:c"] {
        assert!(matches!(
            c.subscribe(channel).await,
            ServerMessage::Subscribed { .. }
        ));
    }
    let mut publisher = TestClient::open(&hub.url(), |r| r).await.unwrap();
    publisher
        .connect(Some(&token("pub", 3600, json!({ "channels": ["vip:*"] }))))
        .await;
    let reply = c
        .call(Command::Refresh {
            token: token("ada", 3600, json!({ "channels": ["vip:a"] })),
        })
        .await;
    assert!(
        matches!(reply, ServerMessage::Refreshed { .. }),
        "{reply:?}"
    );
    let push = c
        .wait_for(|m| matches!(m, ServerMessage::Unsubscribed { id: None, .. }))
        .await;
    let ServerMessage::Unsubscribed {
        channel,
        reason: Some(reason),
        ..
    } = push
    else {
        panic!("an unsubscribed push with a reason, got {push:?}")
    };
    assert_eq!(channel, "vip:b");
    assert!(reason.contains("vip:b"), "{reason}");
    // Messages of the revoked channel no longer arrive; the others do.
    for channel in ["vip:b", "vip:a", "public:c"] {
        let reply = publisher.publish(channel, json!(channel)).await;
        assert!(
            matches!(reply, ServerMessage::Published { .. }),
            "{reply:?}"
        );
    }
    for channel in ["vip:a", "public:c"] {
        c.wait_for(|m| matches!(m, ServerMessage::Message(p) if p.channel == channel))
            .await;
    }
    assert!(!c.pending_has(|m| matches!(m, ServerMessage::Message(p) if p.channel == "vip:b")));
    // It is no longer subscribed: unsubscribing is an error; subscribing
    // again is refused.
    let reply = c
        .call(Command::Unsubscribe {
            channel: "vip:b".into(),
        })
        .await;
    assert_eq!(error_code(&reply), ErrorCode::NotSubscribed);
    assert_eq!(
        error_code(&c.subscribe("vip:b").await),
        ErrorCode::Forbidden
    );
}

/// Idempotency keys are scoped per user: another user's (or an anonymous
/// client's) key never swallows a message; a user's own retry from another
/// connection is still a duplicate.
#[tokio::test]
async fn idempotency_keys_belong_to_their_user() {
    let hub = TestHub::start(authed_config()).await;
    let publish = Command::Publish {
        channel: "public:orders".into(),
        data: json(json!("buy")),
        key: Some("k-1".into()),
    };
    let outcome = |reply: &ServerMessage| match reply {
        ServerMessage::Published {
            offset, duplicate, ..
        } => (*offset, *duplicate),
        other => panic!("expected published, got {other:?}"),
    };
    let mut alice = TestClient::open(&hub.url(), |r| r).await.unwrap();
    alice.connect(Some(&token("alice", 3600, json!({})))).await;
    assert_eq!(outcome(&alice.call(publish.clone()).await), (1, false));
    let mut bob = TestClient::open(&hub.url(), |r| r).await.unwrap();
    bob.connect(Some(&token("bob", 3600, json!({})))).await;
    assert_eq!(outcome(&bob.call(publish.clone()).await), (2, false));
    let mut anon = hub.client().await;
    assert_eq!(outcome(&anon.call(publish.clone()).await), (3, false));
    // Alice again, on another connection: her first publish.
    let mut again = TestClient::open(&hub.url(), |r| r).await.unwrap();
    again.connect(Some(&token("alice", 3600, json!({})))).await;
    assert_eq!(outcome(&again.call(publish).await), (1, true));
}

#[tokio::test]
async fn a_disallowed_origin_gets_403_and_the_own_origin_is_welcome() {
    let config = HubConfig {
        allowed_origins: vec!["https://app.example".into()],
        ..HubConfig::default()
    };
    let hub = TestHub::start(config).await;
    let refused = TestClient::open(&hub.url(), |r| r.origin("https://evil.example"))
        .await
        .err()
        .expect("refused");
    assert_eq!(status_of(&refused), 403);
    let own = format!("http://{}", hub.addr);
    let mut c = TestClient::open(&hub.url(), |r| r.origin(own))
        .await
        .unwrap();
    c.connect(None).await;
    let mut c = TestClient::open(&hub.url(), |r| r.origin("https://app.example"))
        .await
        .unwrap();
    c.connect(None).await;
}

#[tokio::test]
async fn connection_limits_answer_429_per_ip_and_503_in_total() {
    let mut config = HubConfig::default();
    config.limits.max_connections_per_ip = 2;
    let hub = TestHub::start(config).await;
    let a = hub.client().await;
    let _b = hub.client().await;
    let refused = TestClient::open(&hub.url(), |r| r)
        .await
        .err()
        .expect("refused");
    assert_eq!(status_of(&refused), 429);
    // A slot frees when a connection ends.
    drop(a);
    let mut again = None;
    for _ in 0..50 {
        if let Ok(client) = TestClient::open(&hub.url(), |r| r).await {
            again = Some(client);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(again.is_some(), "the freed slot is usable");

    let mut config = HubConfig::default();
    config.limits.max_connections = 1;
    let hub = TestHub::start(config).await;
    let _only = hub.client().await;
    let refused = TestClient::open(&hub.url(), |r| r)
        .await
        .err()
        .expect("refused");
    assert_eq!(status_of(&refused), 503);
    let (_, metrics) = hub.get("/metrics").await;
    assert!(metrics.contains(r#"reason="total_limit"} 1"#), "{metrics}");
}

#[tokio::test]
async fn a_wrong_subprotocol_is_refused_with_400() {
    let hub = TestHub::start(HubConfig::default()).await;
    let request = duplex::client::ClientRequest::new(hub.url()).protocol("mqtt");
    let refused = tokio::time::timeout(
        WAIT,
        duplex::connect_with(&request, &duplex::Config::client()),
    )
    .await
    .unwrap()
    .expect_err("refused");
    assert_eq!(status_of(&refused), 400);
}
