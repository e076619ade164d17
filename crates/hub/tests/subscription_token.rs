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

/// The API test config with a private namespace, `vip`: subscribing there
/// takes a subscription token.
fn vip_config() -> duplex_hub::HubConfig {
    let mut config = api_config();
    config.namespaces.insert(
        "vip".into(),
        NamespaceConfig {
            subscribe: Permission::Token,
            ..NamespaceConfig::default()
        },
    );
    config
}

fn refused(reply: &ServerMessage) -> (ErrorCode, String) {
    match reply {
        ServerMessage::Error { code, message, .. } => (*code, message.clone()),
        other => panic!("expected an error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_private_channel_takes_a_subscription_token_for_its_user_and_channel() {
    let config = vip_config();
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

/// Fast reconnection for the Rust client tests below.
fn client_options(encoding: duplex_hub_proto::Encoding, user: &str) -> duplex_hub_client::Options {
    use duplex::reconnect::{self, Backoff};
    let reconnect = reconnect::Options::default()
        .backoff(Backoff {
            initial: std::time::Duration::from_millis(50),
            max: std::time::Duration::from_millis(300),
            factor: 2.0,
        })
        .stable_after(std::time::Duration::ZERO);
    duplex_hub_client::Options::default()
        .encoding(encoding)
        .reconnect(reconnect)
        .token(sign(&json!({"sub": user, "exp": now() + 3600})))
}

/// The next event of `client` that `pred` picks, within the tests' wait.
async fn next_matching(
    client: &mut duplex_hub_client::Client,
    pred: impl Fn(&duplex_hub_client::Event) -> bool,
) -> duplex_hub_client::Event {
    tokio::time::timeout(common::WAIT, async {
        loop {
            let event = client.next_event().await.expect("the client goes on");
            if pred(&event) {
                return event;
            }
        }
    })
    .await
    .expect("the event in time")
}

fn subscribed_to(event: &duplex_hub_client::Event) -> Option<&str> {
    match event {
        duplex_hub_client::Event::Subscribed { channel, .. } => Some(channel),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_client_sends_a_given_token_and_fetches_fresh_ones_to_resubscribe() {
    use duplex_hub_client::{Client, Event};
    use duplex_hub_proto::Encoding;
    use std::sync::{Arc, Mutex};
    for encoding in [Encoding::Json, Encoding::Binary] {
        let config = vip_config();
        let hub = TestHub::start(config.clone()).await;
        let addr = hub.addr;
        let for_channel =
            |channel: &str| sign(&json!({"sub": "ada", "channel": channel, "exp": now() + 3600}));
        // The source of fresh tokens records what it was asked for.
        let asked = Arc::new(Mutex::new(Vec::<String>::new()));
        let log = asked.clone();
        let options = client_options(encoding, "ada").subscription_token(move |channel| {
            log.lock().unwrap().push(channel.to_owned());
            let token = for_channel(channel);
            async move { Some(token) }
        });
        let mut ada = Client::connect(&hub.url(), options);
        ada.subscribe_with_token("vip:lounge", Default::default(), for_channel("vip:lounge"))
            .unwrap();
        let event = next_matching(&mut ada, |e| subscribed_to(e).is_some()).await;
        assert_eq!(subscribed_to(&event), Some("vip:lounge"), "{encoding:?}");
        assert!(asked.lock().unwrap().is_empty(), "the given token was sent");
        // Not given one: the source is asked.
        ada.subscribe("vip:bar").unwrap();
        let event = next_matching(&mut ada, |e| subscribed_to(e).is_some()).await;
        assert_eq!(subscribed_to(&event), Some("vip:bar"));
        assert_eq!(*asked.lock().unwrap(), ["vip:bar"]);

        // The hub restarts: the client resubscribes both, each with a fresh
        // token.
        hub.stop().await;
        let deadline = std::time::Instant::now() + common::WAIT;
        while std::net::TcpListener::bind(addr).is_err() {
            assert!(std::time::Instant::now() < deadline, "port free again");
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        let hub = TestHub::start_on(addr, config).await;
        let mut again = Vec::new();
        while again.len() < 2 {
            let event = next_matching(&mut ada, |e| {
                subscribed_to(e).is_some() || matches!(e, Event::SubscribeFailed { .. })
            })
            .await;
            let channel = subscribed_to(&event)
                .unwrap_or_else(|| panic!("resubscribed: {event:?}"))
                .to_owned();
            again.push(channel);
        }
        again.sort();
        assert_eq!(again, ["vip:bar", "vip:lounge"]);
        let mut asked_now = asked.lock().unwrap().clone();
        asked_now.sort();
        assert_eq!(
            asked_now,
            ["vip:bar", "vip:bar", "vip:lounge"],
            "{encoding:?}"
        );
        ada.close();

        // Without a source: the given token is sent; no token, refused.
        let mut bob = Client::connect(&hub.url(), client_options(encoding, "bob"));
        let bobs = sign(&json!({"sub": "bob", "channel": "vip:lounge", "exp": now() + 3600}));
        bob.subscribe_with_token("vip:lounge", Default::default(), bobs)
            .unwrap();
        bob.subscribe("vip:bar").unwrap();
        let mut outcomes = Vec::new();
        while outcomes.len() < 2 {
            let event = next_matching(&mut bob, |e| {
                subscribed_to(e).is_some() || matches!(e, Event::SubscribeFailed { .. })
            })
            .await;
            outcomes.push(match event {
                Event::Subscribed { channel, .. } => format!("{channel}: subscribed"),
                Event::SubscribeFailed { channel, code, .. } => format!("{channel}: {code:?}"),
                _ => unreachable!(),
            });
        }
        outcomes.sort();
        assert_eq!(outcomes, ["vip:bar: Forbidden", "vip:lounge: subscribed"]);
        bob.close();
        hub.stop().await;
    }
}
