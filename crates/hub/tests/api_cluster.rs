//! The server API on one node of a cluster (a real Redis started by the
//! test on a free loopback port) acts on connections of another node:
//! publish, server-side subscribe, disconnect.
//!
//! Needs Debian's `redis-server` (`cargo xtask setup redis`); a missing
//! one fails the test with that hint.

mod api_support;
mod cluster_support;
mod common;

use api_support::{api_config, post, token};
use cluster_support::{Node, Redis, fast_options};
use common::TestClient;
use duplex_hub::ApiServer;
use duplex_hub_proto::ServerMessage;
use serde_json::json;

#[tokio::test]
async fn the_api_on_one_node_reaches_connections_on_another() {
    let redis = Redis::start();
    let a = Node::start_with(api_config(), &redis.url(), fast_options()).await;
    let b = Node::start_with(api_config(), &redis.url(), fast_options()).await;
    let api = ApiServer::bind(a.hub.clone()).await.unwrap();
    let api_addr = api.local_addr();
    tokio::spawn(api.run(std::future::pending()));

    let mut ada = TestClient::open(&b.url(), |r| r).await.unwrap();
    ada.connect(Some(&token("ada"))).await;
    let mut watcher = TestClient::open(&b.url(), |r| r).await.unwrap();
    watcher.connect(None).await;
    watcher.subscribe("news").await;

    // A publish through A's API reaches B's subscriber.
    let reply = post(
        api_addr,
        "publish",
        json!({"channel": "news", "data": "hi"}),
    )
    .await;
    assert_eq!(
        (reply["offset"].as_u64(), reply["scope"].as_str()),
        (Some(1), Some("cluster"))
    );
    let message = watcher
        .wait_for(|m| matches!(m, ServerMessage::Message(_)))
        .await;
    assert!(matches!(message, ServerMessage::Message(p) if p.offset == 1));

    // A server-side subscribe on A reaches Ada's connection on B.
    let reply = post(
        api_addr,
        "subscribe",
        json!({"user": "ada", "channel": "room"}),
    )
    .await;
    assert_eq!(reply["nodes"], 2, "both nodes listen: {reply}");
    let push = ada
        .wait_for(|m| matches!(m, ServerMessage::Subscribed { .. }))
        .await;
    assert!(
        matches!(&push, ServerMessage::Subscribed { id: None, channel, .. } if channel == "room"),
        "{push:?}"
    );
    post(api_addr, "publish", json!({"channel": "room", "data": 1})).await;
    let message = ada
        .wait_for(|m| matches!(m, ServerMessage::Message(_)))
        .await;
    assert!(matches!(message, ServerMessage::Message(p) if p.channel == "room"));

    // History through Redis: read, then removed (offsets go on, and
    // recovering from before the removal is a gap).
    for n in 2..=4 {
        post(api_addr, "publish", json!({"channel": "news", "data": n})).await;
    }
    let page = post(
        api_addr,
        "history",
        json!({"channel": "news", "limit": 2, "reverse": true}),
    )
    .await;
    let offsets: Vec<u64> = page["publications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offsets, [4, 3]);
    assert_eq!(page["publications"][0]["data"], 4);
    let epoch = page["epoch"].as_str().unwrap().to_owned();
    let page = post(
        api_addr,
        "history",
        json!({"channel": "news", "since": {"epoch": epoch, "offset": 2}}),
    )
    .await;
    assert_eq!(
        (
            page["publications"].as_array().unwrap().len(),
            page["gap"].as_bool()
        ),
        (2, Some(false))
    );
    post(api_addr, "history_remove", json!({"channel": "news"})).await;
    let page = post(api_addr, "history", json!({"channel": "news"})).await;
    assert_eq!(
        (
            page["publications"].as_array().unwrap().len(),
            page["offset"].as_u64()
        ),
        (0, Some(4))
    );
    let mut late = TestClient::open(&b.url(), |r| r).await.unwrap();
    late.connect(None).await;
    let reply = late.subscribe_since("news", &epoch, 1).await;
    assert!(
        matches!(reply, ServerMessage::Subscribed { gap: true, .. }),
        "{reply:?}"
    );
    let next = post(api_addr, "publish", json!({"channel": "news", "data": 5})).await;
    assert_eq!(next["offset"], 5);

    // `info` and `channels` see both nodes (their reports are at most one
    // heartbeat old: wait for one).
    tokio::time::sleep(fast_options().heartbeat * 2).await;
    let info = post(api_addr, "info", json!({})).await;
    let mut ids: Vec<&str> = info["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids.len(), 2, "{info}");
    let connections: u64 = info["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["connections"].as_u64().unwrap())
        .sum();
    assert_eq!(
        connections, 3,
        "ada, the watcher and the late one, all on B: {info}"
    );
    let mut c = TestClient::open(&a.url(), |r| r).await.unwrap();
    c.connect(None).await;
    c.subscribe("news").await;
    tokio::time::sleep(fast_options().heartbeat * 2).await;
    let channels = post(api_addr, "channels", json!({"pattern": "n*"})).await;
    assert_eq!(
        channels["channels"],
        json!([{"channel": "news", "subscribers": 3}]),
        "{channels}"
    );

    // `connections` on A finds Ada's connections on both nodes, live.
    let mut ada_on_a = TestClient::open(&a.url(), |r| r).await.unwrap();
    ada_on_a.connect(Some(&token("ada"))).await;
    let found = post(api_addr, "connections", json!({"user": "ada"})).await;
    let mut pairs: Vec<(String, String)> = found["connections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["client"].as_str().unwrap().to_owned(),
                c["node"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    pairs.sort();
    let mut expected = vec![
        (ada.client_id.clone(), ada.client_id[..6].to_owned()),
        (
            ada_on_a.client_id.clone(),
            ada_on_a.client_id[..6].to_owned(),
        ),
    ];
    expected.sort();
    assert_eq!(pairs, expected, "{found}");
    assert_ne!(expected[0].1, expected[1].1, "two nodes");
    assert_eq!(
        (&found["nodes"], &found["unanswered"]),
        (&json!(2), &json!(0)),
        "{found}"
    );

    // A disconnect on A closes Ada's connection on B with its code.
    post(
        api_addr,
        "disconnect",
        json!({"user": "ada", "code": 4321, "reason": "bye"}),
    )
    .await;
    let close = ada.closed().await;
    assert_eq!(
        (u16::from(close.code), close.reason.as_str()),
        (4321, "bye")
    );
}
