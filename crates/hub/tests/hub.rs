//! The hub end to end over real sockets: channels, offsets, recovery,
//! presence, signals, idempotency, and every kind of bad input with the
//! connection's state asserted afterwards.

mod common;

use std::time::Duration;

use common::{TestClient, TestHub, WAIT, json, offset_of};
use duplex_hub::HubConfig;
use duplex_hub::config::{NamespaceConfig, Permission};
use duplex_hub_proto::{Command, Data, ErrorCode, ServerMessage, Since};
use serde_json::json;

fn error_code(message: &ServerMessage) -> ErrorCode {
    match message {
        ServerMessage::Error { code, .. } => *code,
        other => panic!("expected an error, got {other:?}"),
    }
}

/// `(recovered, gap, offset)` of a `subscribed` reply.
fn recovery_of(reply: &ServerMessage) -> (bool, bool, u64) {
    match reply {
        ServerMessage::Subscribed {
            recovered,
            gap,
            offset,
            ..
        } => (*recovered, *gap, *offset),
        other => panic!("expected subscribed, got {other:?}"),
    }
}

/// A command still works: the connection is alive and in order.
async fn assert_alive(client: &mut TestClient) {
    let reply = client.call(Command::Ping).await;
    assert!(matches!(reply, ServerMessage::Pong { .. }), "{reply:?}");
}

#[tokio::test]
async fn publish_reaches_every_subscriber_in_offset_order() {
    let hub = TestHub::start(HubConfig::default()).await;
    let mut a = hub.client().await;
    let mut b = hub.client().await;
    let mut publisher = hub.client().await;
    for client in [&mut a, &mut b] {
        let reply = client.subscribe("chat:lobby").await;
        assert!(
            matches!(reply, ServerMessage::Subscribed { offset: 0, .. }),
            "{reply:?}"
        );
    }
    for i in 0..20 {
        let reply = publisher.publish("chat:lobby", json!({ "n": i })).await;
        match reply {
            ServerMessage::Published {
                offset, duplicate, ..
            } => {
                assert_eq!(offset, i + 1);
                assert!(!duplicate);
            }
            other => panic!("{other:?}"),
        }
    }
    for client in [&mut a, &mut b] {
        for i in 0..20u64 {
            let message = client
                .wait_for(|m| matches!(m, ServerMessage::Message(_)))
                .await;
            let ServerMessage::Message(publication) = &message else {
                unreachable!()
            };
            assert_eq!(publication.offset, i + 1);
            assert_eq!(publication.from.client, publisher.client_id);
            let data = publication
                .data
                .as_json()
                .expect("json")
                .to_value()
                .unwrap();
            assert_eq!(data, json!({ "n": i }));
        }
    }
}

#[tokio::test]
async fn binary_data_stays_binary() {
    let hub = TestHub::start(HubConfig::default()).await;
    let mut sub = hub.client().await;
    sub.subscribe("files:x").await;
    let mut publisher = hub.client().await;
    let payload: Vec<u8> = (0..=255u8).collect();
    let reply = publisher
        .call(Command::Publish {
            channel: "files:x".into(),
            data: Data::Binary(payload.clone().into()),
            key: None,
        })
        .await;
    assert!(
        matches!(reply, ServerMessage::Published { offset: 1, .. }),
        "{reply:?}"
    );
    let message = sub
        .wait_for(|m| matches!(m, ServerMessage::Message(_)))
        .await;
    let ServerMessage::Message(publication) = message else {
        unreachable!()
    };
    assert_eq!(
        publication.data.as_binary().expect("binary").as_ref(),
        &payload[..]
    );
}

#[tokio::test]
async fn reconnect_with_last_offset_recovers_exactly_the_missed_messages() {
    let hub = TestHub::start(HubConfig::default()).await;
    let mut publisher = hub.client().await;
    let mut reader = hub.client().await;
    let ServerMessage::Subscribed { epoch, .. } = reader.subscribe("chat:r").await else {
        panic!("subscribed")
    };
    for i in 0..3 {
        publisher.publish("chat:r", json!(i)).await;
    }
    let mut last = 0;
    for _ in 0..3 {
        last = offset_of(
            &reader
                .wait_for(|m| matches!(m, ServerMessage::Message(_)))
                .await,
        );
    }
    assert_eq!(last, 3);
    drop(reader);
    for i in 3..10 {
        publisher.publish("chat:r", json!(i)).await;
    }
    // Offsets 4 to 10 were missed.
    let mut reader = hub.client().await;
    let reply = reader.subscribe_since("chat:r", &epoch, last).await;
    match reply {
        ServerMessage::Subscribed {
            recovered,
            gap,
            offset,
            ..
        } => {
            assert!(recovered && !gap);
            assert_eq!(offset, 10);
        }
        other => panic!("{other:?}"),
    }
    let mut seen = Vec::new();
    for _ in 4..=10 {
        seen.push(offset_of(
            &reader
                .wait_for(|m| matches!(m, ServerMessage::Message(_)))
                .await,
        ));
    }
    assert_eq!(seen, (4..=10).collect::<Vec<_>>());
    // Then live, with no duplicate.
    publisher.publish("chat:r", json!("live")).await;
    let next = reader
        .wait_for(|m| matches!(m, ServerMessage::Message(_)))
        .await;
    assert_eq!(offset_of(&next), 11);
}

#[tokio::test]
async fn recovery_beyond_history_or_with_another_epoch_is_a_gap() {
    let mut config = HubConfig::default();
    config.namespaces.insert(
        "short".into(),
        NamespaceConfig {
            history_size: 3,
            ..NamespaceConfig::default()
        },
    );
    let hub = TestHub::start(config).await;
    let mut publisher = hub.client().await;
    let mut reader = hub.client().await;
    let ServerMessage::Subscribed { epoch, .. } = reader.subscribe("short:x").await else {
        panic!()
    };
    for i in 0..10 {
        publisher.publish("short:x", json!(i)).await;
    }
    // Offset 2 is long gone: only 8, 9, 10 are kept.
    let mut late = hub.client().await;
    let reply = late
        .call(Command::Subscribe {
            channel: "short:x".into(),
            since: Some(Since {
                epoch: epoch.clone(),
                offset: 2,
            }),
            recent: 2,
            token: None,
        })
        .await;
    assert!(
        matches!(
            reply,
            ServerMessage::Subscribed {
                recovered: false,
                gap: true,
                offset: 10,
                ..
            }
        ),
        "{reply:?}"
    );
    // `recent: 2` still delivers the last two.
    let first = late
        .wait_for(|m| matches!(m, ServerMessage::Message(_)))
        .await;
    let second = late
        .wait_for(|m| matches!(m, ServerMessage::Message(_)))
        .await;
    assert_eq!((offset_of(&first), offset_of(&second)), (9, 10));
    // Another epoch (a lost history) is a gap too.
    let mut stale = hub.client().await;
    let reply = stale.subscribe_since("short:x", "another", 9).await;
    assert!(
        matches!(reply, ServerMessage::Subscribed { gap: true, .. }),
        "{reply:?}"
    );
}

#[tokio::test]
async fn restarted_hub_has_new_epochs_and_reports_the_gap() {
    let hub = TestHub::start(HubConfig::default()).await;
    let addr = hub.addr;
    let mut client = hub.client().await;
    let ServerMessage::Subscribed { epoch, .. } = client.subscribe("chat:e").await else {
        panic!()
    };
    client.publish("chat:e", json!(1)).await;
    drop(client);
    assert_eq!(hub.stop().await, 0);
    let hub = TestHub::start_on(addr, HubConfig::default()).await;
    let mut client = hub.client().await;
    let reply = client.subscribe_since("chat:e", &epoch, 1).await;
    match reply {
        ServerMessage::Subscribed {
            epoch: new,
            gap,
            recovered,
            ..
        } => {
            assert_ne!(new, epoch);
            assert!(gap && !recovered);
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn presence_join_leave_and_signals() {
    let hub = TestHub::start(HubConfig::default()).await;
    let mut a = hub.client().await;
    a.subscribe("chat:room1").await;
    let mut b = hub.client().await;
    b.subscribe("chat:room1").await;
    let join = a
        .wait_for(|m| matches!(m, ServerMessage::Join { .. }))
        .await;
    assert!(matches!(&join, ServerMessage::Join { client, .. } if *client == b.client_id));
    let reply = a
        .call(Command::Presence {
            channel: "chat:room1".into(),
        })
        .await;
    let ServerMessage::Presence { clients, .. } = reply else {
        panic!("{reply:?}")
    };
    let mut ids: Vec<_> = clients.iter().map(|c| c.client.clone()).collect();
    ids.sort();
    let mut expected = vec![a.client_id.clone(), b.client_id.clone()];
    expected.sort();
    assert_eq!(ids, expected);
    // A signal reaches the others, not the sender, and has no offset.
    let reply = b
        .call(Command::Signal {
            channel: "chat:room1".into(),
            data: json(json!({ "typing": true })),
        })
        .await;
    assert!(matches!(reply, ServerMessage::Ok { .. }), "{reply:?}");
    let signal = a
        .wait_for(|m| matches!(m, ServerMessage::Signal { .. }))
        .await;
    assert!(matches!(&signal, ServerMessage::Signal { from, .. } if from.client == b.client_id));
    assert_alive(&mut b).await;
    assert!(
        !b.pending_has(|m| matches!(m, ServerMessage::Signal { .. })),
        "the sender does not get its own signal"
    );
    // Leaving (by disconnecting) is announced.
    let b_id = b.client_id.clone();
    drop(b);
    let leave = a
        .wait_for(|m| matches!(m, ServerMessage::Leave { .. }))
        .await;
    assert!(matches!(&leave, ServerMessage::Leave { client, .. } if *client == b_id));
    // Signals are not history: a publish after them gets offset 1.
    let reply = a.publish("chat:room1", json!("first")).await;
    assert!(
        matches!(reply, ServerMessage::Published { offset: 1, .. }),
        "{reply:?}"
    );
}

#[tokio::test]
async fn presence_and_join_leave_follow_their_namespace() {
    let mut config = HubConfig::default();
    config.namespaces.insert(
        "quiet".into(),
        NamespaceConfig {
            presence: false,
            join_leave: true,
            ..NamespaceConfig::default()
        },
    );
    config.namespaces.insert(
        "listed".into(),
        NamespaceConfig {
            presence: true,
            join_leave: false,
            ..NamespaceConfig::default()
        },
    );
    let hub = TestHub::start(config).await;
    let mut a = hub.client().await;
    let mut b = hub.client().await;
    for channel in ["quiet:x", "listed:x"] {
        a.subscribe(channel).await;
        b.subscribe(channel).await;
    }
    // Presence off: `presence` is refused, and nobody hears of joins.
    let reply = a
        .call(Command::Presence {
            channel: "quiet:x".into(),
        })
        .await;
    assert_eq!(error_code(&reply), ErrorCode::Forbidden, "{reply:?}");
    // Presence on, join/leave off: the list answers, no pushes.
    let reply = a
        .call(Command::Presence {
            channel: "listed:x".into(),
        })
        .await;
    let ServerMessage::Presence { clients, .. } = reply else {
        panic!("{reply:?}")
    };
    assert_eq!(clients.len(), 2);
    drop(b);
    // Let a leave happen, then make sure nothing was pushed for it.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_alive(&mut a).await;
    assert!(
        !a.pending_has(|m| matches!(m, ServerMessage::Join { .. } | ServerMessage::Leave { .. })),
        "join/leave pushes where they are off"
    );
    let reply = a
        .call(Command::Presence {
            channel: "listed:x".into(),
        })
        .await;
    assert!(
        matches!(&reply, ServerMessage::Presence { clients, .. } if clients.len() == 1),
        "{reply:?}"
    );
}

#[tokio::test]
async fn history_older_than_its_namespace_allows_is_a_gap() {
    let mut config = HubConfig::default();
    config.namespaces.insert(
        "brief".into(),
        NamespaceConfig {
            history_ttl: Duration::from_secs(2),
            ..NamespaceConfig::default()
        },
    );
    let hub = TestHub::start(config).await;
    let mut publisher = hub.client().await;
    let ServerMessage::Subscribed { epoch, .. } = publisher.subscribe("brief:x").await else {
        panic!()
    };
    publisher.publish("brief:x", json!(1)).await;
    publisher.publish("brief:x", json!(2)).await;
    // Within the age: recovered.
    let mut early = hub.client().await;
    let reply = early.subscribe_since("brief:x", &epoch, 0).await;
    assert_eq!(recovery_of(&reply), (true, false, 2), "{reply:?}");
    // Past it: 1 and 2 are gone, and a client that saw only 1 is told.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    publisher.publish("brief:x", json!(3)).await;
    let mut late = hub.client().await;
    let reply = late.subscribe_since("brief:x", &epoch, 1).await;
    assert_eq!(recovery_of(&reply), (false, true, 3), "{reply:?}");
    // One that saw 2 misses nothing that expired: it gets 3.
    let mut current = hub.client().await;
    let reply = current.subscribe_since("brief:x", &epoch, 2).await;
    assert_eq!(recovery_of(&reply), (true, false, 3), "{reply:?}");
    let message = current
        .wait_for(|m| matches!(m, ServerMessage::Message(_)))
        .await;
    assert_eq!(offset_of(&message), 3);
}

#[tokio::test]
async fn a_publish_retried_with_its_key_is_delivered_once() {
    let hub = TestHub::start(HubConfig::default()).await;
    let mut sub = hub.client().await;
    sub.subscribe("orders:1").await;
    let mut publisher = hub.client().await;
    let publish = |key: &str| Command::Publish {
        channel: "orders:1".into(),
        data: json(json!({ "buy": 1 })),
        key: Some(key.into()),
    };
    let first = publisher.call(publish("k-1")).await;
    let again = publisher.call(publish("k-1")).await;
    assert!(matches!(
        first,
        ServerMessage::Published {
            offset: 1,
            duplicate: false,
            ..
        }
    ));
    assert!(matches!(
        again,
        ServerMessage::Published {
            offset: 1,
            duplicate: true,
            ..
        }
    ));
    let other = publisher.call(publish("k-2")).await;
    assert!(matches!(other, ServerMessage::Published { offset: 2, .. }));
    let one = sub
        .wait_for(|m| matches!(m, ServerMessage::Message(_)))
        .await;
    let two = sub
        .wait_for(|m| matches!(m, ServerMessage::Message(_)))
        .await;
    assert_eq!((offset_of(&one), offset_of(&two)), (1, 2));
}

#[tokio::test]
async fn out_of_range_ids_and_too_deep_data_are_refused_and_the_connection_stays() {
    let hub = TestHub::start(HubConfig::default()).await;
    let mut subscriber = TestClient::open(&hub.url(), |r| r).await.unwrap();
    subscriber.connect(None).await;
    subscriber.subscribe("room:deep").await;
    let mut c = TestClient::open(&hub.url(), |r| r).await.unwrap();
    c.connect(None).await;
    // An id of 2^53: refused, without the id it could not carry.
    c.send_raw(r#"{"op":"ping","id":9007199254740992}"#).await;
    match c.recv().await {
        ServerMessage::Error { id, code, message } => {
            assert_eq!((id, code), (None, ErrorCode::BadRequest));
            assert!(message.contains("`id`"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    // Data 65 and 1,900 levels deep: refused with the command's id, and
    // never relayed.
    for (id, depth) in [(80, 65), (81, 1_900)] {
        let data = format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
        c.send_raw(&format!(
            r#"{{"op":"publish","id":{id},"channel":"room:deep","data":{data}}}"#
        ))
        .await;
        match c.reply_to(id).await {
            ServerMessage::Error { code, message, .. } => {
                assert_eq!(code, ErrorCode::BadRequest);
                assert!(message.contains("`data`"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }
    // 64 levels pass, and are the first thing the subscriber gets.
    let data = format!("{}1{}", "[".repeat(64), "]".repeat(64));
    c.send_raw(&format!(
        r#"{{"op":"publish","id":82,"channel":"room:deep","data":{data}}}"#
    ))
    .await;
    assert!(matches!(
        c.reply_to(82).await,
        ServerMessage::Published { .. }
    ));
    match subscriber.recv().await {
        ServerMessage::Message(publication) => {
            assert_eq!(publication.data.as_json().unwrap().as_str(), data);
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn recoverable_errors_keep_the_connection() {
    let mut config = HubConfig::default();
    config.namespaces.insert(
        "news".into(),
        NamespaceConfig {
            publish: Permission::None,
            ..NamespaceConfig::default()
        },
    );
    let hub = TestHub::start(config).await;
    let mut c = TestClient::open(&hub.url(), |r| r).await.unwrap();
    // Before connect.
    let reply = c.call(Command::Ping).await;
    assert_eq!(error_code(&reply), ErrorCode::NotConnected);
    c.connect(None).await;
    // Unknown op, malformed JSON, wrong types: errors with the id when known.
    c.send_raw(r#"{"op":"dance","id":77}"#).await;
    let reply = c.reply_to(77).await;
    assert_eq!(error_code(&reply), ErrorCode::UnknownOp);
    c.send_raw("{not json").await;
    let reply = c.recv().await;
    assert_eq!(error_code(&reply), ErrorCode::BadRequest);
    c.send_raw(r#"{"op":"subscribe","id":78,"channel":42}"#)
        .await;
    assert_eq!(error_code(&c.reply_to(78).await), ErrorCode::BadRequest);
    c.send_raw(r#"{"op":"subscribe","id":79,"channel":"bad name!"}"#)
        .await;
    assert_eq!(error_code(&c.reply_to(79).await), ErrorCode::BadRequest);
    c.send_raw(r#"[1,2,3]"#).await;
    assert_eq!(error_code(&c.recv().await), ErrorCode::BadRequest);
    // A second connect.
    let reply = c
        .call(Command::Connect {
            token: None,
            name: None,
        })
        .await;
    assert_eq!(error_code(&reply), ErrorCode::AlreadyConnected);
    // Publishing without permission, in the hub's own namespace too.
    let reply = c.publish("news:today", json!("x")).await;
    assert_eq!(error_code(&reply), ErrorCode::Forbidden);
    // Every `$` channel is the hub's, whatever its namespace says.
    for channel in ["$sys:stats", "$stats", "$admin:x"] {
        let reply = c.publish(channel, json!("x")).await;
        assert_eq!(error_code(&reply), ErrorCode::Forbidden, "{channel}");
    }
    // Subscribing twice, unsubscribing from a channel not subscribed.
    c.subscribe("news:today").await;
    assert_eq!(
        error_code(&c.subscribe("news:today").await),
        ErrorCode::AlreadySubscribed
    );
    let reply = c
        .call(Command::Unsubscribe {
            channel: "news:other".into(),
        })
        .await;
    assert_eq!(error_code(&reply), ErrorCode::NotSubscribed);
    let reply = c
        .call(Command::Unsubscribe {
            channel: "news:today".into(),
        })
        .await;
    assert!(
        matches!(reply, ServerMessage::Unsubscribed { .. }),
        "{reply:?}"
    );
    assert_alive(&mut c).await;
    let (status, metrics) = hub.get("/metrics").await;
    assert_eq!(status, 200);
    assert!(metrics.contains("duplex_errors_total"), "{metrics}");
}

#[tokio::test]
async fn subscription_limit_is_an_error_not_a_close() {
    let mut config = HubConfig::default();
    config.limits.max_subscriptions = 3;
    let hub = TestHub::start(config).await;
    let mut c = hub.client().await;
    for i in 0..3 {
        assert!(matches!(
            c.subscribe(&format!("s:{i}")).await,
            ServerMessage::Subscribed { .. }
        ));
    }
    assert_eq!(
        error_code(&c.subscribe("s:3").await),
        ErrorCode::TooManyChannels
    );
    assert_alive(&mut c).await;
}

#[tokio::test]
async fn oversized_message_closes_with_1009() {
    let mut config = HubConfig::default();
    config.limits.max_message_size = 1024;
    let hub = TestHub::start(config).await;
    let mut c = hub.client().await;
    c.send(Command::Publish {
        channel: "chat:x".into(),
        data: json(json!("x".repeat(2000))),
        key: None,
    })
    .await;
    let info = c.closed().await;
    assert_eq!(u16::from(info.code), 1009);
    // The hub still serves others.
    let mut other = hub.client().await;
    assert_alive(&mut other).await;
}

#[tokio::test]
async fn flood_past_the_rate_limit_gets_errors_then_1008() {
    let mut config = HubConfig::default();
    config.limits.messages_per_second = 5.0;
    config.limits.burst = 5.0;
    config.limits.rate_strikes = 3;
    let hub = TestHub::start(config).await;
    let mut c = hub.client().await;
    let mut limited = 0;
    for _ in 0..40 {
        c.send(Command::Ping).await;
    }
    let info = loop {
        match tokio::time::timeout(WAIT, futures_util::StreamExt::next(&mut c.ws))
            .await
            .expect("in time")
        {
            Some(Ok(message)) => {
                if message.payload().windows(12).any(|w| w == b"rate_limited") {
                    limited += 1;
                }
            }
            Some(Err(_)) | None => break c.ws.close_info().cloned().expect("closed"),
        }
    };
    assert!(limited >= 1, "rate_limited errors come first");
    assert_eq!(u16::from(info.code), 1008);
    let (_, metrics) = hub.get("/metrics").await;
    assert!(metrics.contains("duplex_rate_limited_total"), "{metrics}");
}

#[tokio::test]
async fn a_reader_that_never_reads_is_dropped_and_never_slows_publishers() {
    let mut config = HubConfig::default();
    config.limits.max_outbound_bytes = 256 << 10;
    config.limits.socket_send_buffer = Some(16 << 10);
    config.limits.messages_per_second = 1e6;
    config.limits.burst = 1e6;
    let hub = TestHub::start(config).await;
    // The slow reader: small socket buffers, and it never reads.
    let mut small = duplex::Config::client();
    small.recv_buffer_size = Some(8 << 10);
    let mut slow = TestClient::open_with(&hub.url(), |r| r, &small)
        .await
        .unwrap();
    slow.connect(None).await;
    slow.subscribe("firehose:1").await;
    let mut healthy = hub.client().await;
    healthy.subscribe("firehose:1").await;
    let mut publisher = hub.client().await;
    let chunk = "x".repeat(8 << 10);
    let started = std::time::Instant::now();
    for i in 0..400 {
        let id = publisher
            .send(Command::Publish {
                channel: "firehose:1".into(),
                data: json(json!({ "i": i, "pad": chunk })),
                key: None,
            })
            .await;
        let reply = publisher.reply_to(id).await;
        assert!(
            matches!(reply, ServerMessage::Published { .. }),
            "{reply:?}"
        );
        // The healthy subscriber keeps up.
        let message = healthy
            .wait_for(|m| matches!(m, ServerMessage::Message(_)))
            .await;
        assert_eq!(offset_of(&message), i + 1);
    }
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "publisher not slowed"
    );
    // The slow one was closed with 4008 (its close frame waits behind what it
    // never read, so look at the hub's side).
    let (_, metrics) = hub.get("/metrics").await;
    let slow_line = metrics
        .lines()
        .find(|l| l.starts_with("duplex_slow_consumers_total"))
        .expect("slow consumer metric");
    assert!(!slow_line.ends_with(" 0"), "{slow_line}");
    // It left the channel as soon as it was cut off.
    let reply = healthy
        .call(Command::Presence {
            channel: "firehose:1".into(),
        })
        .await;
    assert!(
        matches!(&reply, ServerMessage::Presence { clients, .. }
            if clients.len() == 1 && clients[0].client == healthy.client_id),
        "{reply:?}"
    );
    // The close is counted once its handshake is over: here, when the close
    // timeout (5 s) gives up on a peer that does not read.
    let waiting = std::time::Instant::now();
    loop {
        let (_, metrics) = hub.get("/metrics").await;
        if metrics.contains(r#"duplex_close_codes_total{code="4008"} 1"#) {
            break;
        }
        assert!(
            waiting.elapsed() < WAIT,
            "the slow reader is closed with 4008: {metrics}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(slow);
}

#[tokio::test]
async fn shutdown_closes_clients_with_1001() {
    let hub = TestHub::start(HubConfig::default()).await;
    let mut c = hub.client().await;
    c.subscribe("chat:bye").await;
    let stopping = tokio::spawn(hub.stop());
    let info = c.closed().await;
    assert_eq!(u16::from(info.code), 1001);
    assert!(info.was_clean);
    assert_eq!(
        tokio::time::timeout(WAIT, stopping).await.unwrap().unwrap(),
        0
    );
}

/// Sessions run in tasks of their own: dropping the server (its task
/// aborted) still ends every one of them at once, without a close frame,
/// and they leave their channels.
#[tokio::test]
async fn dropping_the_server_ends_its_sessions_without_a_close_frame() {
    let hub = TestHub::start(HubConfig::default()).await;
    let inner = hub.hub.clone();
    let mut c = hub.client().await;
    c.subscribe("chat:dropped").await;
    assert_eq!(inner.metrics().snapshot().connections, 1);
    drop(hub);
    let info = c.closed().await;
    assert_eq!(u16::from(info.code), 1006, "{info:?}");
    assert!(!info.was_clean);
    let deadline = std::time::Instant::now() + WAIT;
    while inner.metrics().snapshot().connections > 0 {
        assert!(std::time::Instant::now() < deadline, "the session lives on");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn http_endpoints_answer() {
    let hub = TestHub::start(HubConfig::default()).await;
    assert_eq!(hub.get("/healthz").await.0, 200);
    assert_eq!(hub.get("/readyz").await.0, 200);
    let (status, page) = hub.get("/").await;
    assert_eq!(status, 200);
    assert!(page.contains("<html") || page.contains("<!doctype") || page.contains("<!DOCTYPE"));
    assert_eq!(hub.get("/dashboard").await.0, 200);
    let (status, sdk) = hub.get("/assets/duplex-client.js").await;
    assert_eq!(status, 200);
    assert!(sdk.contains("duplex-client"), "the SDK's browser build");
    assert_eq!(hub.get("/assets/hub.js").await.0, 404, "hub.js is retired");
    assert_eq!(hub.get("/nope").await.0, 404);
    assert_eq!(hub.get("/ws").await.0, 426);
    let (status, metrics) = hub.get("/metrics").await;
    assert_eq!(status, 200);
    for name in [
        "duplex_connections",
        "duplex_connections_accepted_total",
        "duplex_connections_rejected_total",
        "duplex_messages_in_total",
        "duplex_messages_out_total",
        "duplex_bytes_in_total",
        "duplex_bytes_out_total",
        "duplex_delivery_latency_seconds_bucket",
        "duplex_close_codes_total",
    ] {
        assert!(metrics.contains(name), "{name} missing from /metrics");
    }
}

#[tokio::test]
async fn the_echo_endpoint_echoes() {
    let hub = TestHub::start(HubConfig {
        echo: true,
        ..HubConfig::default()
    })
    .await;
    let mut ws = duplex::connect(&format!("ws://{}/echo", hub.addr))
        .await
        .unwrap();
    use futures_util::{SinkExt, StreamExt};
    ws.send(duplex::Message::text("hello")).await.unwrap();
    let back = tokio::time::timeout(WAIT, ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(back, duplex::Message::text("hello"));
}

#[tokio::test]
async fn a_half_open_client_is_freed_within_ping_interval_plus_pong_timeout() {
    let mut config = HubConfig::default();
    config.heartbeat.ping_interval = Duration::from_millis(500);
    config.heartbeat.pong_timeout = Duration::from_millis(500);
    let hub = TestHub::start(config).await;
    // A client that completes the handshake and then goes silent: it never
    // reads again, as a peer behind a dead link.
    let mut silent = hub.client().await;
    silent.subscribe("chat:quiet").await;
    // The hub last heard from it before this.
    let started = std::time::Instant::now();
    let gauge = |metrics: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with("duplex_connections "))
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .expect("connections gauge")
    };
    assert_eq!(gauge(&hub.get("/metrics").await.1), 1);
    // Keep the client's socket open but unread by holding it here.
    let held = &mut silent;
    loop {
        if gauge(&hub.get("/metrics").await.1) == 0 {
            break;
        }
        // Interval + deadline is 1 s; the timers fire up to 1/16 of a span
        // late, and the rest is slack for a busy machine.
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "the hub still holds the silent client"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let freed = started.elapsed();
    assert!(
        freed >= Duration::from_millis(900),
        "freed too early: {freed:?}"
    );
    let _ = held;
}

/// The hub's own statistics, published to `$sys:stats` every second for the
/// dashboard, are not counted as the clients' publishes: a dashboard
/// watching `duplex_publishes_total` sees only what clients published.
#[tokio::test]
async fn the_hubs_own_stats_are_not_counted_as_publishes() {
    let hub = TestHub::start(HubConfig::default()).await;
    let mut dashboard = hub.client().await;
    dashboard.subscribe("$sys:stats").await;
    // Two stats publishes reach the subscriber.
    for _ in 0..2 {
        dashboard
            .wait_for(|m| matches!(m, ServerMessage::Message(p) if p.channel == "$sys:stats"))
            .await;
    }
    let publishes = |metrics: &str| -> f64 {
        metrics
            .lines()
            .find_map(|line| line.strip_prefix("duplex_publishes_total "))
            .expect("duplex_publishes_total")
            .parse()
            .expect("a number")
    };
    let (_, metrics) = hub.get("/metrics").await;
    assert_eq!(publishes(&metrics), 0.0, "{metrics}");
    let mut client = hub.client().await;
    let reply = client.publish("news:x", json!("hi")).await;
    assert!(
        matches!(reply, ServerMessage::Published { .. }),
        "{reply:?}"
    );
    let (_, metrics) = hub.get("/metrics").await;
    assert_eq!(publishes(&metrics), 1.0, "{metrics}");
}
