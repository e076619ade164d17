//! A client that sends `connect` and `publish` and closes at once (in one
//! write, as `printf … | duplex connect` did at the end of its input) on a
//! Redis-backed hub: the session must finish the publish it read before it
//! ends, so every such publish reaches the channel's history.
//!
//! Needs Debian's `redis-server` (`cargo xtask setup redis`); a missing one
//! fails the test with that hint.

mod cluster_support;
mod common;

use std::time::Duration;

use cluster_support::{Node, Redis};
use common::{TestClient, json};
use duplex::{CloseCode, Message};
use duplex_hub_proto::{Command, Encoded, Request, encode_command};
use futures_util::{SinkExt, StreamExt};

/// How many clients connect, publish and close.
const CLIENTS: u64 = 25;

fn text(id: u64, command: Command) -> Message {
    match encode_command(&Request {
        id: Some(id),
        command,
    }) {
        Encoded::Text(text) => Message::text(text),
        Encoded::Binary(bytes) => Message::binary(bytes),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_sent_just_before_close_reaches_redis() {
    let redis = Redis::start();
    let node = Node::start(&redis.url()).await;
    for n in 1..=CLIENTS {
        let mut client = TestClient::open(&node.url(), |r| r).await.expect("open");
        let ws = &mut client.ws;
        // Queued without a flush: the close writes all three frames at once.
        ws.feed(text(
            1,
            Command::Connect {
                token: None,
                name: None,
            },
        ))
        .await
        .expect("feed connect");
        ws.feed(text(
            2,
            Command::Publish {
                channel: "close:c".into(),
                data: json(serde_json::json!({ "n": n })),
                key: None,
            },
        ))
        .await
        .expect("feed publish");
        tokio::time::timeout(Duration::from_secs(5), async {
            let _ = ws.close(CloseCode::NORMAL, "").await;
            while ws.next().await.is_some() {}
        })
        .await
        .expect("the hub ends the connection within 5 s");
    }
    // Every publish the hub read is in the channel's history (the session
    // finishes it before its connection task ends, so by now it is there).
    let mut found = 0;
    for _ in 0..50 {
        found = redis.query::<usize>(redis::cmd("LLEN").arg("duplex:{close:c}:hist"));
        if found as u64 == CLIENTS {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        found as u64,
        CLIENTS,
        "publishes sent just before a close that never reached Redis: {}",
        CLIENTS - found as u64
    );
    node.stop().await;
}
