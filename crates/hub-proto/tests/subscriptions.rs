//! The client's `Subscriptions` state machine: what the shared test vectors
//! (`tests/vectors/`, run by `tests/vectors.rs` and against the browser
//! client) cannot say, as they speak wire JSON and not Rust types: whether it
//! is connected, the error of an invalid name, binary data handed back.
//! Every scenario of the recovery rule is a vector.

use duplex_hub_proto::{
    ClientInfo, Command, Data, ErrorCode, Event, JsonText, NameError, Publication, Request,
    ServerMessage, Since, Subscriptions,
};

fn subscribe(id: u64, channel: &str, since: Option<Since>, recent: u32) -> Request {
    Request::new(
        id,
        Command::Subscribe {
            channel: channel.into(),
            since,
            recent,
            token: None,
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
fn invalid_channels_are_refused() {
    let mut subs = Subscriptions::new();
    assert_eq!(subs.subscribe(""), Err(NameError::Empty));
    assert!(subs.subscribe("a b").is_err());
    assert_eq!(subs.channels().count(), 0);
}

#[test]
fn is_connected_follows_the_connection() {
    let mut subs = Subscriptions::new();
    assert!(!subs.is_connected());
    subs.subscribe("a").unwrap();
    assert_eq!(
        subs.poll_transmit(),
        None,
        "nothing is sent before a connection"
    );
    assert_eq!(subs.on_connected(), [subscribe(1, "a", None, 0)]);
    assert!(subs.is_connected());
    subs.on_disconnected();
    assert!(!subs.is_connected());
}
