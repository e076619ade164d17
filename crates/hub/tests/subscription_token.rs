//! Private channels: a namespace with `subscribe = "token"` takes a
//! subscription token per channel in the `subscribe` command (a JWT whose
//! `sub` is the connection's user and whose `channel` claim is the channel),
//! or a grant of the channel in the connection's token.

mod api_support;
mod common;

use api_support::{api_config, now, sign};
use common::{TestClient, TestHub};
use duplex_hub::config::{NamespaceConfig, Permission};
use duplex_hub_proto::{Command, ErrorCode, ServerMessage};
use serde_json::json;

async fn subscribe(client: &mut TestClient, channel: &str, token: Option<String>) -> ServerMessage {
    client
        .call(Command::Subscribe {
            channel: channel.to_owned(),
            since: None,
            recent: 0,
            token,
        })
        .await
}

fn refused(reply: &ServerMessage) -> (ErrorCode, String) {
    match reply {
        ServerMessage::Error { code, message, .. } => (*code, message.clone()),
        other => panic!("expected an error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_private_channel_takes_a_subscription_token_for_its_user_and_channel() {
    let mut config = api_config();
    config.namespaces.insert(
        "vip".into(),
        NamespaceConfig {
            subscribe: Permission::Token,
            ..NamespaceConfig::default()
        },
    );
    let hub = TestHub::start(config).await;
    let exp = now() + 3600;
    let mut ada = TestClient::open(&hub.url(), |r| r).await.unwrap();
    ada.connect(Some(&sign(&json!({"sub": "ada", "exp": exp}))))
        .await;
    let for_channel = |sub: &str, channel: &str, exp: u64| {
        sign(&json!({"sub": sub, "channel": channel, "exp": exp}))
    };

    let reply = subscribe(&mut ada, "vip:lounge", None).await;
    assert_eq!(
        refused(&reply),
        (
            ErrorCode::Forbidden,
            "subscribing to vip:lounge needs a subscription token".to_owned()
        )
    );
    for (token, why) in [
        (
            for_channel("bob", "vip:lounge", exp),
            "the token is for another user",
        ),
        (
            for_channel("ada", "vip:other", exp),
            "the token is for another channel",
        ),
        (
            sign(&json!({"sub": "ada", "exp": exp})),
            "the token is for another channel",
        ),
        (
            for_channel("ada", "vip:lounge", now() - 1),
            "token refused: token expired",
        ),
        ("not.a.jwt".to_owned(), "token refused: malformed token"),
    ] {
        let reply = subscribe(&mut ada, "vip:lounge", Some(token)).await;
        assert_eq!(
            refused(&reply),
            (
                ErrorCode::Unauthorized,
                format!("subscription token for vip:lounge refused: {why}")
            )
        );
    }
    // The connection stayed through every refusal; the right token works.
    let reply = subscribe(
        &mut ada,
        "vip:lounge",
        Some(for_channel("ada", "vip:lounge", exp)),
    )
    .await;
    assert!(
        matches!(reply, ServerMessage::Subscribed { .. }),
        "{reply:?}"
    );

    // A refresh of the connection's token keeps the subscription.
    let reply = ada
        .call(Command::Refresh {
            token: sign(&json!({"sub": "ada", "exp": exp + 60})),
        })
        .await;
    assert!(
        matches!(reply, ServerMessage::Refreshed { .. }),
        "{reply:?}"
    );
    ada.publish("vip:lounge", json!("still here")).await;
    let message = ada
        .wait_for(|m| {
            matches!(
                m,
                ServerMessage::Message(_) | ServerMessage::Unsubscribed { .. }
            )
        })
        .await;
    assert!(
        matches!(&message, ServerMessage::Message(p) if p.channel == "vip:lounge"),
        "{message:?}"
    );

    // A grant of the channel in the connection's token is enough.
    let mut bob = TestClient::open(&hub.url(), |r| r).await.unwrap();
    bob.connect(Some(&sign(
        &json!({"sub": "bob", "exp": exp, "subscribe": ["vip:*"]}),
    )))
    .await;
    assert!(matches!(
        subscribe(&mut bob, "vip:lounge", None).await,
        ServerMessage::Subscribed { .. }
    ));
}

#[test]
fn a_token_permission_is_for_subscribe_and_needs_auth() {
    let mut config = api_config();
    config.namespaces.insert(
        "vip".into(),
        NamespaceConfig {
            publish: Permission::Token,
            ..NamespaceConfig::default()
        },
    );
    assert!(config.validate().is_err(), "publish = token");
    let mut config = duplex_hub::HubConfig::default();
    config.default_namespace.subscribe = Permission::Token;
    assert!(config.validate().is_err(), "no [auth]");
}
