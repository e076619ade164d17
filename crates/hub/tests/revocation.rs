//! Revocation through the server API: a token (`jti`) or a user's tokens
//! are refused until their expiry, and the connections using them are
//! closed with 4003, on one node and across a cluster on a real Redis
//! started by the test (Debian's `redis-server`; a missing one fails the
//! test with that hint).

mod api_support;
mod cluster_support;
mod common;

use api_support::{api_config, now, post, post_status, sign};
use cluster_support::{Node, Redis, fast_options};
use common::{TestClient, TestHub, try_connect};
use duplex_hub::ApiServer;
use duplex_hub_proto::{Command, ServerMessage};
use serde_json::json;

/// Serves the server API of `hub`; returns its address.
async fn api_of(hub: &std::sync::Arc<duplex_hub::Hub>) -> std::net::SocketAddr {
    let api = ApiServer::bind(hub.clone()).await.unwrap();
    let addr = api.local_addr();
    tokio::spawn(api.run(std::future::pending()));
    addr
}

fn ada(jti: &str, iat: u64) -> String {
    sign(&json!({"sub": "ada", "exp": now() + 3600, "jti": jti, "iat": iat}))
}

#[tokio::test]
async fn a_revoked_token_or_user_is_refused_and_its_connections_closed() {
    let hub = TestHub::start(api_config()).await;
    let api = api_of(&hub.hub).await;
    let t1 = ada("t1", now() - 10);
    let t2 = ada("t2", now() - 10);
    let mut one = TestClient::open(&hub.url(), |r| r).await.unwrap();
    one.connect(Some(&t1)).await;
    let mut two = TestClient::open(&hub.url(), |r| r).await.unwrap();
    two.connect(Some(&t2)).await;

    // Revoking t1 closes its connection with 4003, and only it.
    let reply = post(
        api,
        "revoke_token",
        json!({"jti": "t1", "expire_at": now() + 3600}),
    )
    .await;
    assert_eq!(
        (reply["scope"].as_str(), reply["nodes"].as_u64()),
        (Some("cluster"), Some(1))
    );
    let close = one.closed().await;
    assert_eq!(
        (u16::from(close.code), close.reason.as_str()),
        (4003, "token revoked")
    );
    assert!(matches!(
        two.call(Command::Ping).await,
        ServerMessage::Pong { .. }
    ));

    // t1 is refused at connect (4001, naming the revocation) and in the
    // handshake (401); t2 still connects.
    assert_eq!(
        try_connect(&hub.url(), &t1).await,
        Err((4001, "token refused: token revoked".to_owned()))
    );
    let bearer = format!("Bearer {t1}");
    let handshake =
        TestClient::open(&hub.url(), |r| r.header("authorization", &bearer).unwrap()).await;
    assert!(
        handshake.is_err_and(|e| e.to_string().contains("401")),
        "the handshake refuses a revoked token"
    );
    assert_eq!(try_connect(&hub.url(), &t2).await, Ok(()));

    // A refresh to a revoked token closes the connection like a bad token.
    let mut three = TestClient::open(&hub.url(), |r| r).await.unwrap();
    three.connect(Some(&ada("t3", now() - 10))).await;
    three.send(Command::Refresh { token: t1.clone() }).await;
    let close = three.closed().await;
    assert_eq!(
        (u16::from(close.code), close.reason.as_str()),
        (4001, "token refused: token revoked")
    );

    // Revoking the user closes the rest of Ada's connections; a token
    // issued after the revocation is accepted, one from before is not.
    post(api, "revoke_user", json!({"user": "ada"})).await;
    let close = two.closed().await;
    assert_eq!(
        (u16::from(close.code), close.reason.as_str()),
        (4003, "the user's tokens were revoked")
    );
    assert_eq!(
        try_connect(&hub.url(), &ada("t4", now())).await,
        Err((
            4001,
            "token refused: the user's tokens were revoked".to_owned()
        )),
        "issued in the same second: at or before"
    );
    let no_iat = sign(&json!({"sub": "ada", "exp": now() + 3600}));
    assert!(try_connect(&hub.url(), &no_iat).await.is_err(), "no iat");
    assert_eq!(try_connect(&hub.url(), &ada("t5", now() + 1)).await, Ok(()));
    let bob = sign(&json!({"sub": "bob", "exp": now() + 3600, "iat": now() - 10}));
    assert_eq!(try_connect(&hub.url(), &bob).await, Ok(()));

    // Withdrawn: accepted again.
    post(api, "unrevoke_user", json!({"user": "ada"})).await;
    post(api, "unrevoke_token", json!({"jti": "t1"})).await;
    assert_eq!(try_connect(&hub.url(), &t1).await, Ok(()));

    // Bad parameters change nothing.
    for (call, params) in [
        ("revoke_token", json!({"jti": "x", "expire_at": now() - 1})),
        ("revoke_token", json!({"jti": "", "expire_at": now() + 60})),
        ("revoke_token", json!({"jti": "x"})),
        ("revoke_user", json!({"user": "a".repeat(257)})),
        ("revoke_user", json!({"user": "ada", "expire_at": 1})),
    ] {
        let (status, reply) = post_status(api, call, &params).await;
        assert_eq!(status, 422, "{call} {params}: {reply}");
        assert_eq!(reply["error"]["code"], "invalid_params");
    }
    assert_eq!(try_connect(&hub.url(), &t1).await, Ok(()));
    let info = post(api, "info", json!({})).await;
    assert_eq!(info["nodes"][0]["revocations"], 0, "{info}");
}

#[tokio::test]
async fn a_revocation_on_one_node_reaches_every_node_and_later_ones() {
    let redis = Redis::start();
    let a = Node::start_with(api_config(), &redis.url(), fast_options()).await;
    let b = Node::start_with(api_config(), &redis.url(), fast_options()).await;
    let api = api_of(&a.hub).await;
    let old = now() - 10;
    let t1 = ada("t1", old);
    let mut on_b = TestClient::open(&b.url(), |r| r).await.unwrap();
    on_b.connect(Some(&t1)).await;
    let mut bob_on_b = TestClient::open(&b.url(), |r| r).await.unwrap();
    let bob = sign(&json!({"sub": "bob", "exp": now() + 3600, "iat": old}));
    bob_on_b.connect(Some(&bob)).await;

    // Revoked through A: B closes its connection and refuses the token.
    let expire_at = now() + 3600;
    let reply = post(
        api,
        "revoke_token",
        json!({"jti": "t1", "expire_at": expire_at}),
    )
    .await;
    assert_eq!(reply["nodes"], 2, "{reply}");
    let close = on_b.closed().await;
    assert_eq!(
        (u16::from(close.code), close.reason.as_str()),
        (4003, "token revoked")
    );
    assert!(try_connect(&b.url(), &t1).await.is_err());

    // Kept in Redis until the latest expiry.
    let ttl: i64 = redis.query(redis::cmd("TTL").arg("duplex:revoked"));
    assert!((3500..=3600).contains(&ttl), "ttl {ttl}");

    // A user's revocation through A closes Bob's connection on B.
    post(api, "revoke_user", json!({"user": "bob"})).await;
    let close = bob_on_b.closed().await;
    assert_eq!(u16::from(close.code), 4003);

    // A node that starts later loads both.
    let c = Node::start_with(api_config(), &redis.url(), fast_options()).await;
    assert_eq!(
        try_connect(&c.url(), &t1).await,
        Err((4001, "token refused: token revoked".to_owned()))
    );
    assert!(try_connect(&c.url(), &bob).await.is_err());
    assert_eq!(try_connect(&c.url(), &ada("t2", old)).await, Ok(()));

    // Withdrawn through A: every node accepts it again, once the control
    // message reached it (the call counts the nodes it was sent to; it does
    // not wait for them to apply it).
    post(api, "unrevoke_token", json!({"jti": "t1"})).await;
    for node in [&a, &b, &c] {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match try_connect(&node.url(), &t1).await {
                Ok(()) => break,
                Err(_) if std::time::Instant::now() < deadline => {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                Err(refused) => panic!("still refused after 10 s: {refused:?}"),
            }
        }
    }
    let fields: Vec<String> = redis.query(redis::cmd("HKEYS").arg("duplex:revoked"));
    assert_eq!(fields, ["u:bob"]);
}
