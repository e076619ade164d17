//! The client's `Subscriptions` state machine, scenario by scenario.

use duplex_hub_proto::{
    ClientInfo, Command, Data, ErrorCode, Event, JsonText, NameError, Publication, Request,
    ServerMessage, Since, SubscribeOptions, Subscriptions,
};

fn since(epoch: &str, offset: u64) -> Since {
    Since {
        epoch: epoch.into(),
        offset,
    }
}

fn subscribe(id: u64, channel: &str, since: Option<Since>, recent: u32) -> Request {
    Request::new(
        id,
        Command::Subscribe {
            channel: channel.into(),
            since,
            recent,
        },
    )
}

fn unsubscribe(id: u64, channel: &str) -> Request {
    Request::new(
        id,
        Command::Unsubscribe {
            channel: channel.into(),
        },
    )
}

fn subscribed(
    id: u64,
    channel: &str,
    epoch: &str,
    offset: u64,
    recovered: bool,
    gap: bool,
) -> ServerMessage {
    ServerMessage::Subscribed {
        id: Some(id),
        channel: channel.into(),
        epoch: epoch.into(),
        offset,
        recovered,
        gap,
    }
}

fn publication(channel: &str, offset: u64) -> Publication {
    Publication {
        channel: channel.into(),
        offset,
        time: 1000 + offset,
        from: ClientInfo {
            client: "c1".into(),
            user: "bob".into(),
        },
        data: Data::Json(JsonText::parse(&offset.to_string()).unwrap()),
    }
}

fn message(channel: &str, offset: u64) -> ServerMessage {
    ServerMessage::Message(publication(channel, offset))
}

fn delivered(channel: &str, offset: u64) -> Event {
    Event::Message(publication(channel, offset))
}

fn transmit(subs: &mut Subscriptions) -> Vec<Request> {
    std::iter::from_fn(|| subs.poll_transmit()).collect()
}

/// Subscribed to "a" in epoch "e" at offset `at`, on a connection.
fn subscribed_at(at: u64) -> Subscriptions {
    let mut subs = Subscriptions::new();
    subs.subscribe("a").unwrap();
    assert_eq!(subs.on_connected(), [subscribe(1, "a", None, 0)]);
    assert_eq!(
        subs.handle(subscribed(1, "a", "e", at, false, false)),
        [Event::Subscribed {
            channel: "a".into(),
            recovered: false
        }]
    );
    subs
}

#[test]
fn subscribes_on_connect_and_delivers_in_order() {
    let mut subs = Subscriptions::new();
    subs.subscribe_with(
        "chat:lobby",
        SubscribeOptions {
            recent: 5,
            since: None,
        },
    )
    .unwrap();
    subs.subscribe("a").unwrap();
    assert_eq!(
        subs.poll_transmit(),
        None,
        "nothing is sent before a connection"
    );
    assert!(!subs.is_connected());
    assert_eq!(
        subs.on_connected(),
        [
            subscribe(1, "a", None, 0),
            subscribe(2, "chat:lobby", None, 5)
        ]
    );
    assert!(subs.is_connected());
    assert!(!subs.is_subscribed("a"));
    assert_eq!(
        subs.handle(subscribed(1, "a", "e", 7, false, false)),
        [Event::Subscribed {
            channel: "a".into(),
            recovered: false
        }]
    );
    assert!(subs.is_subscribed("a"));
    assert_eq!(subs.position("a"), Some(&since("e", 7)));
    assert_eq!(subs.handle(message("a", 8)), [delivered("a", 8)]);
    assert_eq!(subs.handle(message("a", 9)), [delivered("a", 9)]);
    // Duplicates are dropped.
    assert_eq!(subs.handle(message("a", 9)), []);
    assert_eq!(subs.handle(message("a", 3)), []);
    assert_eq!(subs.position("a"), Some(&since("e", 9)));
    assert_eq!(transmit(&mut subs), []);
}

#[test]
fn recent_messages_may_start_anywhere() {
    let mut subs = Subscriptions::new();
    subs.subscribe_with(
        "a",
        SubscribeOptions {
            recent: 10,
            since: None,
        },
    )
    .unwrap();
    subs.on_connected();
    // The channel is at 20 but keeps only 17..=20: the replay starts at 17.
    subs.handle(subscribed(1, "a", "e", 20, false, false));
    assert_eq!(subs.position("a"), Some(&since("e", 10)));
    assert_eq!(subs.handle(message("a", 17)), [delivered("a", 17)]);
    assert_eq!(subs.handle(message("a", 18)), [delivered("a", 18)]);
    assert_eq!(subs.handle(message("a", 19)), [delivered("a", 19)]);
    assert_eq!(subs.handle(message("a", 20)), [delivered("a", 20)]);
    // Live from here on: a jump is a loss.
    assert_eq!(subs.handle(message("a", 22)), []);
    assert_eq!(
        transmit(&mut subs),
        [
            unsubscribe(2, "a"),
            subscribe(3, "a", Some(since("e", 20)), 10)
        ]
    );
}

#[test]
fn an_empty_replay_goes_straight_to_live() {
    let mut subs = Subscriptions::new();
    subs.subscribe_with(
        "a",
        SubscribeOptions {
            recent: 10,
            since: None,
        },
    )
    .unwrap();
    subs.on_connected();
    // Nothing kept: the first message is live offset 21.
    subs.handle(subscribed(1, "a", "e", 20, false, false));
    assert_eq!(subs.handle(message("a", 21)), [delivered("a", 21)]);
    // But 23 right after it is a jump.
    assert_eq!(subs.handle(message("a", 23)), []);
    assert_eq!(transmit(&mut subs).len(), 2);
}

#[test]
fn reconnect_recovers_from_the_last_offset() {
    let mut subs = subscribed_at(7);
    subs.handle(message("a", 8));
    subs.on_disconnected();
    assert!(!subs.is_connected());
    assert!(!subs.is_subscribed("a"));
    // Leftovers of the dead connection are dropped.
    assert_eq!(subs.handle(message("a", 9)), []);
    assert_eq!(
        subs.on_connected(),
        [subscribe(2, "a", Some(since("e", 8)), 0)]
    );
    assert_eq!(
        subs.handle(subscribed(2, "a", "e", 11, true, false)),
        [Event::Subscribed {
            channel: "a".into(),
            recovered: true
        }]
    );
    for offset in 9..=12 {
        assert_eq!(subs.handle(message("a", offset)), [delivered("a", offset)]);
    }
}

#[test]
fn a_gap_on_resubscribe_is_reported_before_what_follows() {
    let mut subs = subscribed_at(7);
    subs.on_disconnected();
    assert_eq!(
        subs.on_connected(),
        [subscribe(2, "a", Some(since("e", 7)), 0)]
    );
    // The hub restarted: new epoch.
    assert_eq!(
        subs.handle(subscribed(2, "a", "f", 3, false, true)),
        [
            Event::Subscribed {
                channel: "a".into(),
                recovered: false
            },
            Event::Gap {
                channel: "a".into()
            }
        ]
    );
    assert_eq!(subs.position("a"), Some(&since("f", 3)));
    assert_eq!(subs.handle(message("a", 4)), [delivered("a", 4)]);
}

#[test]
fn a_gap_in_the_same_epoch_never_repeats_what_was_delivered() {
    let mut subs = Subscriptions::new();
    subs.subscribe_with(
        "a",
        SubscribeOptions {
            recent: 100,
            since: Some(since("e", 50)),
        },
    )
    .unwrap();
    assert_eq!(
        subs.on_connected(),
        [subscribe(1, "a", Some(since("e", 50)), 100)]
    );
    // History too short for 50, but the recent replay covers 41..=60.
    subs.handle(subscribed(1, "a", "e", 60, false, true));
    assert_eq!(subs.position("a"), Some(&since("e", 50)));
    for offset in 41..=50 {
        assert_eq!(subs.handle(message("a", offset)), []);
    }
    assert_eq!(subs.handle(message("a", 51)), [delivered("a", 51)]);
}

#[test]
fn an_offset_jump_resubscribes_and_recovers() {
    let mut subs = subscribed_at(7);
    assert_eq!(subs.handle(message("a", 8)), [delivered("a", 8)]);
    // 9 and 10 were lost.
    assert_eq!(subs.handle(message("a", 11)), []);
    assert_eq!(
        transmit(&mut subs),
        [
            unsubscribe(2, "a"),
            subscribe(3, "a", Some(since("e", 8)), 0)
        ]
    );
    // Live messages still in flight before the hub unsubscribes: 12 is a jump
    // again, but a resubscription is already under way.
    assert_eq!(subs.handle(message("a", 12)), []);
    assert_eq!(transmit(&mut subs), []);
    assert_eq!(
        subs.handle(ServerMessage::Unsubscribed {
            id: Some(2),
            channel: "a".into(),
            reason: None,
        }),
        []
    );
    assert_eq!(
        subs.handle(subscribed(3, "a", "e", 12, true, false)),
        [Event::Subscribed {
            channel: "a".into(),
            recovered: true
        }]
    );
    for offset in 9..=13 {
        assert_eq!(subs.handle(message("a", offset)), [delivered("a", offset)]);
    }
}

#[test]
fn in_order_messages_during_a_resubscription_are_delivered_once() {
    let mut subs = subscribed_at(7);
    subs.handle(ServerMessage::Gap {
        channel: "a".into(),
        epoch: "e".into(),
        offset: 7,
    });
    assert_eq!(
        transmit(&mut subs),
        [
            unsubscribe(2, "a"),
            subscribe(3, "a", Some(since("e", 7)), 0)
        ]
    );
    // The old subscription's 8 arrives before the hub handles the unsubscribe.
    assert_eq!(subs.handle(message("a", 8)), [delivered("a", 8)]);
    subs.handle(ServerMessage::Unsubscribed {
        id: Some(2),
        channel: "a".into(),
        reason: None,
    });
    subs.handle(subscribed(3, "a", "e", 9, true, false));
    // The replay repeats 8, then 9.
    assert_eq!(subs.handle(message("a", 8)), []);
    assert_eq!(subs.handle(message("a", 9)), [delivered("a", 9)]);
}

#[test]
fn a_refused_subscription_is_reported_and_retried_on_request() {
    let mut subs = Subscriptions::new();
    subs.subscribe("a").unwrap();
    subs.on_connected();
    assert_eq!(
        subs.handle(ServerMessage::Error {
            id: Some(1),
            code: ErrorCode::Forbidden,
            message: "no".into()
        }),
        [Event::SubscribeFailed {
            channel: "a".into(),
            code: ErrorCode::Forbidden,
            message: "no".into()
        }]
    );
    assert!(!subs.is_subscribed("a"));
    assert_eq!(subs.handle(message("a", 1)), []);
    subs.subscribe("a").unwrap();
    assert_eq!(transmit(&mut subs), [subscribe(2, "a", None, 0)]);
    // And on the next connection anyway.
    subs.on_disconnected();
    assert_eq!(subs.on_connected(), [subscribe(3, "a", None, 0)]);
}

#[test]
fn subscribe_and_unsubscribe_while_connected() {
    let mut subs = subscribed_at(0);
    subs.subscribe("b").unwrap();
    // Subscribing again to a wanted channel sends nothing.
    subs.subscribe("a").unwrap();
    assert_eq!(transmit(&mut subs), [subscribe(2, "b", None, 0)]);
    assert!(subs.unsubscribe("a"));
    assert!(!subs.unsubscribe("a"));
    assert_eq!(transmit(&mut subs), [unsubscribe(3, "a")]);
    assert_eq!(subs.channels().collect::<Vec<_>>(), ["b"]);
    // In-flight messages of the old subscription are dropped, and the reply is
    // the state machine's own.
    assert_eq!(subs.handle(message("a", 1)), []);
    assert_eq!(
        subs.handle(ServerMessage::Unsubscribed {
            id: Some(3),
            channel: "a".into(),
            reason: None,
        }),
        []
    );
    assert_eq!(subs.position("a"), None);
}

#[test]
fn resubscribing_after_unsubscribe_ignores_the_old_subscription() {
    let mut subs = subscribed_at(5);
    subs.unsubscribe("a");
    subs.subscribe("a").unwrap();
    assert_eq!(
        transmit(&mut subs),
        [unsubscribe(2, "a"), subscribe(3, "a", None, 0)]
    );
    // Old messages before the new `subscribed` are dropped: no epoch known yet.
    assert_eq!(subs.handle(message("a", 6)), []);
    subs.handle(subscribed(3, "a", "e", 6, false, false));
    assert_eq!(subs.handle(message("a", 7)), [delivered("a", 7)]);
}

#[test]
fn other_messages_come_back_untouched() {
    let mut subs = subscribed_at(0);
    let id = subs.next_id();
    assert_eq!(id, 2, "ids come from the same counter as subscriptions'");
    for other in [
        ServerMessage::Pong { id: Some(id) },
        ServerMessage::Published {
            id: Some(id),
            channel: "a".into(),
            offset: 1,
            duplicate: false,
        },
        ServerMessage::Error {
            id: Some(id),
            code: ErrorCode::RateLimited,
            message: "slow down".into(),
        },
        ServerMessage::Error {
            id: None,
            code: ErrorCode::BadRequest,
            message: "?".into(),
        },
        ServerMessage::Signal {
            channel: "a".into(),
            from: ClientInfo {
                client: "c".into(),
                user: "u".into(),
            },
            data: Data::from(vec![1]),
        },
        ServerMessage::Join {
            channel: "a".into(),
            user: "u".into(),
            client: "c".into(),
        },
        // A reply to a subscribe the application sent itself.
        subscribed(id, "zz", "e", 0, false, false),
    ] {
        assert_eq!(subs.handle(other.clone()), [Event::Other(other)]);
    }
    // Messages for channels not wanted are dropped.
    assert_eq!(subs.handle(message("zz", 1)), []);
}

#[test]
fn stale_replies_are_ignored() {
    let mut subs = Subscriptions::new();
    subs.subscribe("a").unwrap();
    subs.on_connected();
    subs.on_disconnected();
    assert_eq!(subs.on_connected(), [subscribe(2, "a", None, 0)]);
    // The first connection's reply, somehow: not ours any more.
    let stale = subscribed(1, "a", "e", 0, false, false);
    assert_eq!(subs.handle(stale.clone()), [Event::Other(stale)]);
    assert!(!subs.is_subscribed("a"));
}

#[test]
fn invalid_channels_are_refused() {
    let mut subs = Subscriptions::new();
    assert_eq!(subs.subscribe(""), Err(NameError::Empty));
    assert!(subs.subscribe("a b").is_err());
    assert_eq!(subs.channels().count(), 0);
}

#[test]
fn on_connected_twice_starts_over() {
    let mut subs = subscribed_at(3);
    subs.handle(message("a", 4));
    assert_eq!(
        subs.on_connected(),
        [subscribe(2, "a", Some(since("e", 4)), 0)]
    );
}

#[test]
fn a_gap_push_with_a_new_epoch_holds_messages_until_the_hub_says_where_the_channel_stands() {
    let mut subs = subscribed_at(7);
    assert_eq!(
        subs.handle(ServerMessage::Gap {
            channel: "a".into(),
            epoch: "f".into(),
            offset: 0,
        }),
        []
    );
    // The position stays: only the hub knows whether "f" is newer than "e".
    assert_eq!(subs.position("a"), Some(&since("e", 7)));
    assert_eq!(
        transmit(&mut subs),
        [
            unsubscribe(2, "a"),
            subscribe(3, "a", Some(since("e", 7)), 0)
        ]
    );
    // Offset 1 of the new epoch must not pass for 8 of the old one: nothing is
    // taken until the hub says where the channel stands.
    assert_eq!(subs.handle(message("a", 1)), []);
    assert_eq!(subs.handle(message("a", 8)), []);
    subs.handle(ServerMessage::Unsubscribed {
        id: Some(2),
        channel: "a".into(),
        reason: None,
    });
    // The hub moved on: the gap is reported with the subscription.
    assert_eq!(
        subs.handle(subscribed(3, "a", "f", 1, false, true)),
        [
            Event::Subscribed {
                channel: "a".into(),
                recovered: false
            },
            Event::Gap {
                channel: "a".into()
            }
        ]
    );
    assert_eq!(subs.position("a"), Some(&since("f", 1)));
    assert_eq!(subs.handle(message("a", 2)), [delivered("a", 2)]);
}

/// A message of an old epoch that reaches the hub late goes out after a `gap`
/// push naming that epoch. The client must not forget where it stands in the
/// current epoch: the hub recovers it from there, and what it already had is
/// not delivered again (a recovery property test found this; the cluster
/// simulation, `tests/cluster_sim.rs`, repeats old messages too).
#[test]
fn an_old_epochs_message_sent_again_delivers_nothing_twice() {
    let mut subs = subscribed_at(0);
    // The channel moved to epoch "f"; the client has "f" up to 1.
    subs.handle(ServerMessage::Gap {
        channel: "a".into(),
        epoch: "f".into(),
        offset: 0,
    });
    transmit(&mut subs);
    subs.handle(subscribed(3, "a", "f", 0, false, true));
    assert_eq!(subs.handle(message("a", 1)), [delivered("a", 1)]);
    // Now epoch "e"'s offset 3 again, announced as the protocol says.
    assert_eq!(
        subs.handle(ServerMessage::Gap {
            channel: "a".into(),
            epoch: "e".into(),
            offset: 2,
        }),
        []
    );
    assert_eq!(subs.handle(message("a", 3)), []);
    assert_eq!(
        transmit(&mut subs),
        [
            unsubscribe(4, "a"),
            subscribe(5, "a", Some(since("f", 1)), 0)
        ]
    );
    // The hub is still in "f": it recovers after 1, and 1 is not repeated.
    subs.handle(ServerMessage::Unsubscribed {
        id: Some(4),
        channel: "a".into(),
        reason: None,
    });
    assert_eq!(
        subs.handle(subscribed(5, "a", "f", 2, true, false)),
        [Event::Subscribed {
            channel: "a".into(),
            recovered: true
        }]
    );
    assert_eq!(subs.handle(message("a", 1)), []);
    assert_eq!(subs.handle(message("a", 2)), [delivered("a", 2)]);
}

/// The hub ends a subscription itself (a refresh revoked it): the channel is
/// reported, takes no more messages, and is tried again on request.
#[test]
fn a_subscription_the_hub_ends_is_reported_and_retried_on_request() {
    let mut subs = subscribed_at(3);
    assert_eq!(
        subs.handle(ServerMessage::Unsubscribed {
            id: None,
            channel: "a".into(),
            reason: Some("you may not subscribe to a".into()),
        }),
        [Event::Unsubscribed {
            channel: "a".into(),
            reason: "you may not subscribe to a".into()
        }]
    );
    assert!(!subs.is_subscribed("a"));
    assert_eq!(subs.handle(message("a", 4)), []);
    // A second push for it, or for a channel not wanted, is nobody's.
    let stray = ServerMessage::Unsubscribed {
        id: None,
        channel: "a".into(),
        reason: None,
    };
    assert_eq!(subs.handle(stray.clone()), [Event::Other(stray)]);
    subs.subscribe("a").unwrap();
    assert_eq!(
        transmit(&mut subs),
        [subscribe(2, "a", Some(since("e", 3)), 0)]
    );
}

/// A `subscribed` push (the backend subscribed this connection through the
/// server API) makes the channel wanted: its messages are delivered, and
/// it is resubscribed on the next connection.
#[test]
fn a_server_side_subscription_is_adopted_and_survives_reconnection() {
    let mut subs = Subscriptions::new();
    subs.on_connected();
    let push = ServerMessage::Subscribed {
        id: None,
        channel: "room".into(),
        epoch: "e1".into(),
        offset: 4,
        recovered: false,
        gap: false,
    };
    assert_eq!(
        subs.handle(push.clone()),
        [Event::Subscribed {
            channel: "room".into(),
            recovered: false
        }]
    );
    assert!(subs.is_subscribed("room"));
    assert_eq!(subs.handle(message("room", 5)), [delivered("room", 5)]);
    // Again: nothing new.
    assert_eq!(subs.handle(push), []);
    subs.on_disconnected();
    assert_eq!(
        subs.on_connected(),
        [subscribe(1, "room", Some(since("e1", 5)), 0)]
    );
}

/// A push for a channel whose own `subscribe` is in flight stands for it:
/// the `already_subscribed` answer is no failure.
#[test]
fn a_server_side_subscription_answers_a_subscribe_in_flight() {
    let mut subs = Subscriptions::new();
    subs.on_connected();
    subs.subscribe("room").unwrap();
    assert_eq!(transmit(&mut subs), [subscribe(1, "room", None, 0)]);
    let push = ServerMessage::Subscribed {
        id: None,
        channel: "room".into(),
        epoch: "e1".into(),
        offset: 0,
        recovered: false,
        gap: false,
    };
    assert_eq!(subs.handle(push).len(), 1);
    let refused = ServerMessage::Error {
        id: Some(1),
        code: ErrorCode::AlreadySubscribed,
        message: "already subscribed".into(),
    };
    assert_eq!(subs.handle(refused), []);
    assert!(subs.is_subscribed("room"));
    assert_eq!(subs.handle(message("room", 1)), [delivered("room", 1)]);
}
