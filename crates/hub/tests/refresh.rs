//! Token refresh without races (`duplex_hub_proto::session`'s *Refresh*
//! rule): a refresh in flight while the old token expires, two refreshes
//! crossing, and a refresh with another user's token.

mod api_support;
mod common;
mod jwks_support;

use std::time::Duration;

use api_support::{api_config, now, post, sign};
use common::{TestClient, TestHub};
use duplex_hub::config::AuthConfig;
use duplex_hub::{ApiServer, HubConfig};
use duplex_hub_proto::{Command, ErrorCode, ServerMessage};
use jwks_support::{JwksServer, Signer};
use serde_json::json;

async fn refresh(client: &mut TestClient, token: String) -> ServerMessage {
    client.call(Command::Refresh { token }).await
}

fn expires(reply: &ServerMessage) -> u64 {
    match reply {
        ServerMessage::Refreshed {
            expires: Some(at), ..
        } => *at,
        other => panic!("expected refreshed, got {other:?}"),
    }
}

/// The old token expires while the hub verifies its refresh (the new
/// token's key is fetched from a JWKS that answers slowly): the refresh is
/// finished first, and the connection survives it; a refresh that fails
/// the same way closes with its own fault (4001), not with 4002.
#[tokio::test]
async fn a_refresh_in_flight_while_the_old_token_expires() {
    let (k1, k2) = (Signer::rsa("k1"), Signer::ec("k2"));
    let jwks = JwksServer::start(&[&k1]).await;
    let hub = TestHub::start(HubConfig {
        auth: Some(AuthConfig {
            jwks_url: Some(jwks.url()),
            jwks_min_refresh: Duration::from_millis(100),
            ..AuthConfig::default()
        }),
        ..HubConfig::default()
    })
    .await;
    let mut ada = TestClient::open(&hub.url(), |r| r).await.unwrap();
    let exp = now() + 2;
    ada.connect(Some(&k1.token("ada", exp))).await;
    let mut bob = TestClient::open(&hub.url(), |r| r).await.unwrap();
    bob.connect(Some(&k1.token("bob", exp))).await;

    // k2 is published, but the JWKS now takes longer to answer than the
    // old tokens have left.
    jwks.publish(&[&k1, &k2]);
    jwks.delay(Duration::from_millis(2500));
    tokio::time::sleep(Duration::from_millis(150)).await;
    let later = now() + 3600;
    let sent = now();
    let reply = refresh(&mut ada, k2.token("ada", later)).await;
    assert!(
        now() >= exp,
        "the old token expired meanwhile (sent at {sent}, exp {exp})"
    );
    assert_eq!(expires(&reply), later);
    assert!(
        matches!(ada.call(Command::Ping).await, ServerMessage::Pong { .. }),
        "the connection survives its expiry"
    );

    // Bob's refresh names a key the JWKS does not have: after the slow
    // fetch, the refresh fails, and the close says why.
    let bob_exp = now() + 2;
    let mut carol = TestClient::open(&hub.url(), |r| r).await.unwrap();
    carol.connect(Some(&k1.token("carol", bob_exp))).await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    carol
        .send(Command::Refresh {
            token: Signer::ed("k9").token("carol", later),
        })
        .await;
    let close = carol.closed().await;
    assert_eq!(
        (u16::from(close.code), close.reason.as_str()),
        (
            4001,
            "token refused: token signed with a key this hub does not know"
        )
    );
    // Bob never refreshed: 4002.
    assert_eq!(u16::from(bob.closed().await.code), 4002);
}

/// Two refreshes sent together, the later-expiring first: the second
/// reply does not shorten the connection's life. Nor does a client's
/// refresh after the server API moved the expiry later.
#[tokio::test]
async fn two_refreshes_crossing_leave_the_later_expiry() {
    let hub = TestHub::start(api_config()).await;
    let api = ApiServer::bind(hub.hub.clone()).await.unwrap();
    let api_addr = api.local_addr();
    tokio::spawn(api.run(std::future::pending()));
    let token = |exp: u64| sign(&json!({"sub": "ada", "exp": exp}));
    let mut ada = TestClient::open(&hub.url(), |r| r).await.unwrap();
    let start = now();
    ada.connect(Some(&token(start + 2))).await;
    let (long, short) = (start + 6, start + 3);
    let first = ada.send(Command::Refresh { token: token(long) }).await;
    let second = ada
        .send(Command::Refresh {
            token: token(short),
        })
        .await;
    assert_eq!(expires(&ada.reply_to(first).await), long);
    assert_eq!(
        expires(&ada.reply_to(second).await),
        long,
        "the shorter token answered last does not shorten"
    );
    // Past the shorter token's expiry, the connection is alive.
    tokio::time::sleep(Duration::from_secs(short + 1 - now())).await;
    assert!(matches!(
        ada.call(Command::Ping).await,
        ServerMessage::Pong { .. }
    ));

    // The server API moves the expiry later; a refresh with a token that
    // expires before that leaves it.
    let api_later = now() + 600;
    post(
        api_addr,
        "refresh",
        json!({"user": "ada", "expire_at": api_later}),
    )
    .await;
    let push = ada
        .wait_for(|m| matches!(m, ServerMessage::Refreshed { id: None, .. }))
        .await;
    assert_eq!(expires(&push), api_later);
    let reply = refresh(&mut ada, token(now() + 60)).await;
    assert_eq!(expires(&reply), api_later);
}

/// A refresh with another user's token is refused with `unauthorized`;
/// the connection keeps its user, its grants and its expiry.
#[tokio::test]
async fn a_refresh_for_another_user_is_refused_and_changes_nothing() {
    let hub = TestHub::start(api_config()).await;
    let mut ada = TestClient::open(&hub.url(), |r| r).await.unwrap();
    let exp = now() + 3600;
    ada.connect(Some(&sign(&json!({"sub": "ada", "exp": exp}))))
        .await;
    ada.subscribe("room").await;
    let reply = refresh(
        &mut ada,
        sign(&json!({"sub": "bob", "exp": exp + 3600, "channels": ["*"]})),
    )
    .await;
    assert!(
        matches!(
            &reply,
            ServerMessage::Error { code: ErrorCode::Unauthorized, message, .. }
                if message == "the new token is for another user"
        ),
        "{reply:?}"
    );
    // Still Ada: her publish says so.
    ada.publish("room", json!("hi")).await;
    let message = ada
        .wait_for(|m| matches!(m, ServerMessage::Message(_)))
        .await;
    assert!(
        matches!(&message, ServerMessage::Message(p) if p.from.user == "ada"),
        "{message:?}"
    );
    // Her expiry is unchanged: a refresh to a shorter token of hers
    // reports it (a refresh never shortens).
    let reply = refresh(&mut ada, sign(&json!({"sub": "ada", "exp": now() + 60}))).await;
    assert_eq!(expires(&reply), exp, "bob's later expiry was not taken");
}
