//! Tokens verified against a JWKS URL: a real HTTP server in the test
//! publishes the identity provider's keys and rotates them; the hub fetches
//! them through its backend client, refreshes on an unknown `kid` at most
//! once per `jwks_min_refresh`, and refuses a key once it is gone.

mod common;
mod jwks_support;

use std::time::Duration;

use common::{TestClient, TestHub, try_connect};
use duplex_hub::HubConfig;
use duplex_hub::config::AuthConfig;
use jwks_support::{JwksServer, Signer};
use serde_json::json;

const MIN_REFRESH: Duration = Duration::from_millis(400);

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn config(jwks: &JwksServer) -> HubConfig {
    HubConfig {
        auth: Some(AuthConfig {
            jwks_url: Some(jwks.url()),
            jwks_min_refresh: MIN_REFRESH,
            ..AuthConfig::default()
        }),
        ..HubConfig::default()
    }
}

const UNKNOWN: &str = "token refused: token signed with a key this hub does not know";

#[tokio::test]
async fn keys_rotate_through_the_jwks_and_unknown_kids_cannot_hammer_it() {
    let (k1, k2, k3) = (Signer::rsa("k1"), Signer::ec("k2"), Signer::ed("k3"));
    let jwks = JwksServer::start(&[&k1]).await;
    let hub = TestHub::start(config(&jwks)).await;
    let exp = now() + 3600;

    // The first token fetches the keys.
    assert_eq!(jwks.fetches(), 0, "nothing fetched before a token needs it");
    assert_eq!(try_connect(&hub.url(), &k1.token("ada", exp)).await, Ok(()));
    assert_eq!(jwks.fetches(), 1);
    assert_eq!(try_connect(&hub.url(), &k1.token("ada", exp)).await, Ok(()));
    assert_eq!(jwks.fetches(), 1, "cached");

    // A key not published yet is refused.
    tokio::time::sleep(MIN_REFRESH).await;
    assert_eq!(
        try_connect(&hub.url(), &k2.token("ada", exp)).await,
        Err((4001, UNKNOWN.to_owned()))
    );
    assert_eq!(jwks.fetches(), 2, "an unknown kid fetched again");

    // A flood of unknown kids within the interval: at most one fetch.
    tokio::time::sleep(MIN_REFRESH).await;
    let before = jwks.fetches();
    let bogus: Vec<_> = (0..20)
        .map(|i| {
            let url = hub.url();
            let token = Signer::ec(&format!("bogus-{i}")).token("eve", exp);
            tokio::spawn(async move { try_connect(&url, &token).await })
        })
        .collect();
    for attempt in bogus {
        assert_eq!(attempt.await.unwrap(), Err((4001, UNKNOWN.to_owned())));
    }
    assert!(
        jwks.fetches() - before <= 1,
        "{} fetches for 20 unknown kids within {MIN_REFRESH:?}",
        jwks.fetches() - before
    );

    // Rotation: k2 and k3 published, k1 withdrawn. A new kid is accepted
    // after the refresh it triggers; then k1 is refused.
    jwks.publish(&[&k2, &k3]);
    tokio::time::sleep(MIN_REFRESH).await;
    assert_eq!(try_connect(&hub.url(), &k2.token("ada", exp)).await, Ok(()));
    assert_eq!(try_connect(&hub.url(), &k3.token("ada", exp)).await, Ok(()));
    assert_eq!(
        try_connect(&hub.url(), &k1.token("ada", exp)).await,
        Err((4001, UNKNOWN.to_owned())),
        "a withdrawn key is refused once the keys were fetched again"
    );

    // In the handshake too: a key published since is fetched before the
    // decision.
    let k4 = Signer::new("rsa_b.pem", jsonwebtoken::Algorithm::RS256, "k4");
    jwks.publish(&[&k2, &k3, &k4]);
    tokio::time::sleep(MIN_REFRESH).await;
    let bearer = format!("Bearer {}", k4.token("ada", exp));
    let mut client = TestClient::open(&hub.url(), |r| r.header("authorization", &bearer).unwrap())
        .await
        .expect("a handshake with the new key's token");
    client.connect(None).await;

    // A JWKS key is used only with its own algorithm: the k2 header with
    // HS256 (its public key as the secret) is refused.
    let forged = {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        header.kid = Some("k2".into());
        let secret = jsonwebtoken::EncodingKey::from_secret(k2.jwk.to_string().as_bytes());
        jsonwebtoken::encode(&header, &json!({"sub": "eve", "exp": exp}), &secret).unwrap()
    };
    assert_eq!(
        try_connect(&hub.url(), &forged).await,
        Err((
            4001,
            "token refused: token signed with an algorithm this hub does not accept".to_owned()
        ))
    );

    // A broken JWKS (not JSON) keeps the keys held.
    jwks.publish_raw("<html>oops</html>".to_owned());
    tokio::time::sleep(MIN_REFRESH).await;
    let fetches = jwks.fetches();
    assert!(
        try_connect(&hub.url(), &Signer::ed("k5").token("ada", exp))
            .await
            .is_err()
    );
    assert_eq!(jwks.fetches(), fetches + 1);
    assert_eq!(try_connect(&hub.url(), &k3.token("ada", exp)).await, Ok(()));
}

#[tokio::test]
async fn a_static_key_and_a_jwks_side_by_side() {
    let k1 = Signer::ec("k1");
    let jwks = JwksServer::start(&[&k1]).await;
    let mut config = config(&jwks);
    let secret = "a static hs256 secret of 32 bytes!";
    config.auth.as_mut().unwrap().hs256_secret = Some(secret.into());
    let hub = TestHub::start(config).await;
    let exp = now() + 3600;
    let hs = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"sub": "ada", "exp": exp}),
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap();
    assert_eq!(try_connect(&hub.url(), &hs).await, Ok(()));
    assert_eq!(jwks.fetches(), 0, "no kid: the static key, no fetch");
    assert_eq!(try_connect(&hub.url(), &k1.token("ada", exp)).await, Ok(()));
    // An RS256 token with an unknown kid meets the static HS256 key.
    assert!(
        try_connect(&hub.url(), &Signer::rsa("zz").token("ada", exp))
            .await
            .is_err()
    );
}
