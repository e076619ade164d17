//! Unit tests of the connection state machine, one per rule of RFC 6455 §5-§7.
//! Each failure test asserts the exact error and the close code sent on the wire.

use bytes::{Buf, Bytes, BytesMut};
use proptest::prelude::*;

use super::*;
use crate::close::{CloseCode, CloseFrame};
use crate::frame::{OpCode, RSV1, RSV2, RSV3, encode_frame};

const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

fn server() -> Connection {
    Connection::server(Config::default())
}

fn client() -> Connection {
    let mut n = 0u32;
    Connection::client(
        Config::default(),
        Box::new(move || {
            n = n.wrapping_add(0x9e37_79b9);
            n.to_le_bytes()
        }),
    )
}

/// A frame as a client sends it (masked).
fn cframe(fin: bool, rsv: u8, opcode: OpCode, payload: &[u8]) -> Vec<u8> {
    let mut out = BytesMut::new();
    encode_frame(fin, rsv, opcode, Some(KEY), payload, &mut out);
    out.to_vec()
}

/// A frame as a server sends it (unmasked).
fn sframe(fin: bool, rsv: u8, opcode: OpCode, payload: &[u8]) -> Vec<u8> {
    let mut out = BytesMut::new();
    encode_frame(fin, rsv, opcode, None, payload, &mut out);
    out.to_vec()
}

/// Feeds `bytes` and collects events until more input is needed or an error.
fn feed(conn: &mut Connection, bytes: &[u8]) -> (Vec<Event>, Option<ProtocolError>) {
    conn.receive(bytes);
    drain_events(conn)
}

fn drain_events(conn: &mut Connection) -> (Vec<Event>, Option<ProtocolError>) {
    let mut events = Vec::new();
    loop {
        match conn.poll_event() {
            Ok(Some(event)) => events.push(event),
            Ok(None) => return (events, None),
            Err(error) => return (events, Some(error)),
        }
    }
}

fn take_output(conn: &mut Connection) -> Vec<u8> {
    let out = conn.transmit();
    out.copy_to_bytes(out.remaining()).to_vec()
}

/// Decodes what a server wrote, through a client connection.
fn server_output_as_events(server: &mut Connection) -> Vec<Event> {
    let bytes = take_output(server);
    let mut peer = client();
    let (events, error) = feed(&mut peer, &bytes);
    assert_eq!(error, None);
    events
}

/// Asserts that feeding `bytes` to a server fails with `expected`, and that the
/// server's last output is a close frame with the matching code.
fn assert_server_fails(bytes: &[u8], expected: ProtocolError) {
    let mut conn = server();
    let (_, error) = feed(&mut conn, bytes);
    assert_eq!(error.as_ref(), Some(&expected));
    assert_eq!(conn.state(), State::Closed);
    let events = server_output_as_events(&mut conn);
    match events.last() {
        Some(Event::Close(Some(frame))) => assert_eq!(frame.code, expected.close_code()),
        other => panic!("expected a close frame, got {other:?}"),
    }
    // Nothing more is processed or produced.
    let (events, error) = feed(&mut conn, &cframe(true, 0, OpCode::Text, b"late"));
    assert!(events.is_empty() && error.is_none());
    assert_eq!(conn.buffered_amount(), 0);
}

#[test]
fn single_frame_text_message() {
    let mut conn = server();
    let (events, error) = feed(&mut conn, &cframe(true, 0, OpCode::Text, b"Hello"));
    assert_eq!(error, None);
    assert_eq!(events, vec![Event::Message(Message::text("Hello"))]);
}

#[test]
fn client_receives_unmasked_hello_from_rfc() {
    let mut conn = client();
    let (events, _) = feed(&mut conn, &[0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);
    assert_eq!(events, vec![Event::Message(Message::text("Hello"))]);
    // RFC 6455 §5.7: a fragmented unmasked text message "Hel" + "lo".
    let (events, _) = feed(
        &mut conn,
        &[0x01, 0x03, 0x48, 0x65, 0x6c, 0x80, 0x02, 0x6c, 0x6f],
    );
    assert_eq!(events, vec![Event::Message(Message::text("Hello"))]);
}

#[test]
fn fragmented_message_with_ping_in_between() {
    let mut conn = server();
    let mut bytes = cframe(false, 0, OpCode::Text, "κό".as_bytes());
    bytes.extend(cframe(true, 0, OpCode::Ping, b"are you there"));
    bytes.extend(cframe(false, 0, OpCode::Continuation, "σμ".as_bytes()));
    bytes.extend(cframe(true, 0, OpCode::Continuation, "ε".as_bytes()));
    let (events, error) = feed(&mut conn, &bytes);
    assert_eq!(error, None);
    assert_eq!(
        events,
        vec![
            Event::Ping(Bytes::from_static(b"are you there")),
            Event::Message(Message::text("κόσμε")),
        ]
    );
    assert_eq!(
        server_output_as_events(&mut conn),
        vec![Event::Pong(Bytes::from_static(b"are you there"))]
    );
}

#[test]
fn code_point_split_across_fragments_is_valid() {
    let euro = "€".as_bytes(); // e2 82 ac
    let mut bytes = cframe(false, 0, OpCode::Text, &euro[..1]);
    bytes.extend(cframe(false, 0, OpCode::Continuation, &euro[1..2]));
    bytes.extend(cframe(true, 0, OpCode::Continuation, &euro[2..]));
    let (events, error) = feed(&mut server(), &bytes);
    assert_eq!(error, None);
    assert_eq!(events, vec![Event::Message(Message::text("€"))]);
}

#[test]
fn invalid_utf8_fails_in_the_first_bad_fragment() {
    // The message never ends; the error must come from the first frame alone.
    assert_server_fails(
        &cframe(false, 0, OpCode::Text, b"ok \xf4\x90"),
        ProtocolError::InvalidUtf8,
    );
}

#[test]
fn invalid_utf8_fails_before_a_single_frame_is_complete() {
    let mut bytes = cframe(
        true,
        0,
        OpCode::Text,
        b"abc\xed\xa0\x80 and much more text after it",
    );
    bytes.truncate(6 + 6); // header + "abc" + the surrogate; the rest never arrives
    assert_server_fails(&bytes, ProtocolError::InvalidUtf8);
}

#[test]
fn unfinished_code_point_at_message_end_is_invalid() {
    assert_server_fails(
        &cframe(true, 0, OpCode::Text, b"abc\xe2\x82"),
        ProtocolError::InvalidUtf8,
    );
}

#[test]
fn reserved_bits_without_extension() {
    for rsv in [RSV1, RSV2, RSV3] {
        assert_server_fails(
            &cframe(true, rsv, OpCode::Text, b"x"),
            ProtocolError::ReservedBits,
        );
    }
}

#[test]
fn reserved_opcodes() {
    for op in [3u8, 7, 0xB, 0xF] {
        let mut bytes = cframe(true, 0, OpCode::Binary, b"");
        bytes[0] = 0x80 | op;
        assert_server_fails(&bytes, ProtocolError::ReservedOpcode(op));
    }
}

#[test]
fn control_frame_rules() {
    assert_server_fails(
        &cframe(false, 0, OpCode::Ping, b""),
        ProtocolError::FragmentedControlFrame,
    );
    let mut long_ping = cframe(true, 0, OpCode::Ping, &[0; 126]);
    long_ping.truncate(8);
    assert_server_fails(&long_ping, ProtocolError::ControlFrameTooLong);
}

#[test]
fn continuation_without_start() {
    assert_server_fails(
        &cframe(true, 0, OpCode::Continuation, b"x"),
        ProtocolError::UnexpectedContinuation,
    );
}

#[test]
fn new_data_frame_inside_fragmented_message() {
    let mut bytes = cframe(false, 0, OpCode::Binary, b"a");
    bytes.extend(cframe(true, 0, OpCode::Text, b"b"));
    assert_server_fails(&bytes, ProtocolError::ExpectedContinuation);
}

#[test]
fn unmasked_client_frame() {
    assert_server_fails(
        &sframe(true, 0, OpCode::Text, b"x"),
        ProtocolError::UnmaskedClientFrame,
    );
}

#[test]
fn masked_server_frame() {
    let mut conn = client();
    let (_, error) = feed(&mut conn, &cframe(true, 0, OpCode::Text, b"x"));
    assert_eq!(error, Some(ProtocolError::MaskedServerFrame));
    assert_eq!(error.unwrap().close_code(), CloseCode::PROTOCOL_ERROR);
}

#[test]
fn frame_over_limit_fails_at_the_header() {
    let config = Config {
        max_frame_size: 1000,
        ..Config::default()
    };
    let mut conn = Connection::server(config);
    let mut bytes = cframe(true, 0, OpCode::Binary, &[0; 1001]);
    bytes.truncate(8); // only the header: the limit is checked before the payload
    let (_, error) = feed(&mut conn, &bytes);
    assert_eq!(
        error,
        Some(ProtocolError::FrameTooLarge {
            size: 1001,
            limit: 1000
        })
    );
    assert_eq!(error.unwrap().close_code(), CloseCode::MESSAGE_TOO_BIG);
}

#[test]
fn message_over_limit_across_fragments() {
    let config = Config {
        max_message_size: 10,
        ..Config::default()
    };
    let mut conn = Connection::server(config);
    let mut bytes = cframe(false, 0, OpCode::Binary, &[0; 6]);
    bytes.extend(cframe(true, 0, OpCode::Continuation, &[0; 5]));
    let (_, error) = feed(&mut conn, &bytes);
    assert_eq!(error, Some(ProtocolError::MessageTooLarge { limit: 10 }));
}

#[test]
fn too_many_fragments() {
    let config = Config {
        max_fragments: 3,
        ..Config::default()
    };
    let mut conn = Connection::server(config);
    let mut bytes = cframe(false, 0, OpCode::Binary, b"a");
    for _ in 0..3 {
        bytes.extend(cframe(false, 0, OpCode::Continuation, b"a"));
    }
    let (_, error) = feed(&mut conn, &bytes);
    assert_eq!(error, Some(ProtocolError::TooManyFragments { limit: 3 }));
}

#[test]
fn default_limits_pass_four_mib_in_64_byte_fragments() {
    let chunk = [b'x'; 64];
    let count = 65_536;
    let mut conn = server();
    let mut total = 0;
    let mut delivered = None;
    for i in 0..count {
        let opcode = if i == 0 {
            OpCode::Text
        } else {
            OpCode::Continuation
        };
        let (events, error) = feed(&mut conn, &cframe(i == count - 1, 0, opcode, &chunk));
        assert_eq!(error, None);
        total += chunk.len();
        if let Some(Event::Message(message)) = events.into_iter().next() {
            delivered = Some(message);
        }
    }
    let message = delivered.expect("message delivered");
    assert_eq!(message.payload().len(), total);
    assert_eq!(total, 4 << 20);
}

#[test]
fn close_codes_received() {
    for code in [
        1000u16, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 4999,
    ] {
        let mut conn = server();
        let (events, error) = feed(
            &mut conn,
            &cframe(true, 0, OpCode::Close, &code.to_be_bytes()),
        );
        assert_eq!(error, None, "{code}");
        assert_eq!(
            events,
            vec![Event::Close(Some(CloseFrame::new(CloseCode(code), "")))]
        );
        assert_eq!(conn.state(), State::Closed);
        // The reply echoes the code.
        assert_eq!(
            server_output_as_events(&mut conn),
            vec![Event::Close(Some(CloseFrame::new(CloseCode(code), "")))]
        );
    }
    for code in [0u16, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000] {
        assert_server_fails(
            &cframe(true, 0, OpCode::Close, &code.to_be_bytes()),
            ProtocolError::InvalidCloseCode(code),
        );
    }
}

#[test]
fn close_payload_rules() {
    assert_server_fails(
        &cframe(true, 0, OpCode::Close, &[0x03]),
        ProtocolError::ClosePayloadTooShort,
    );
    assert_server_fails(
        &cframe(true, 0, OpCode::Close, b"\x03\xe8\xce\xba\xe1\xbd"),
        ProtocolError::InvalidCloseReason,
    );
    let mut conn = server();
    let (events, _) = feed(&mut conn, &cframe(true, 0, OpCode::Close, b""));
    assert_eq!(events, vec![Event::Close(None)]);
    assert_eq!(server_output_as_events(&mut conn), vec![Event::Close(None)]);
}

#[test]
fn we_close_first_then_peer_answers() {
    let mut conn = server();
    conn.close(CloseCode(4000), "bye").unwrap();
    assert_eq!(conn.state(), State::Closing);
    assert_eq!(conn.send_text("more"), Err(SendError::Closed));
    assert_eq!(conn.send_ping(b""), Err(SendError::Closed));
    assert_eq!(conn.close(CloseCode::NORMAL, ""), Err(SendError::Closed));
    assert_eq!(
        server_output_as_events(&mut conn),
        vec![Event::Close(Some(CloseFrame::new(CloseCode(4000), "bye")))]
    );
    // Data still arrives while closing; pings get no pong after our close.
    let mut bytes = cframe(true, 0, OpCode::Text, b"late");
    bytes.extend(cframe(true, 0, OpCode::Ping, b"p"));
    bytes.extend(cframe(true, 0, OpCode::Close, &4000u16.to_be_bytes()));
    bytes.extend(cframe(true, 0, OpCode::Text, b"after close"));
    let (events, error) = feed(&mut conn, &bytes);
    assert_eq!(error, None);
    assert_eq!(
        events,
        vec![
            Event::Message(Message::text("late")),
            Event::Ping(Bytes::from_static(b"p")),
            Event::Close(Some(CloseFrame::new(CloseCode(4000), ""))),
        ]
    );
    assert_eq!(conn.state(), State::Closed);
    assert_eq!(conn.buffered_amount(), 0, "nothing after our close");
}

#[test]
fn invalid_close_codes_cannot_be_sent() {
    let mut conn = server();
    for code in [1005u16, 1006, 1015, 999, 2000] {
        assert_eq!(
            conn.close(CloseCode(code), ""),
            Err(SendError::InvalidCloseCode(code))
        );
    }
    assert_eq!(conn.state(), State::Open);
}

#[test]
fn auto_pong_can_be_turned_off() {
    let mut conn = Connection::server(Config {
        auto_pong: false,
        ..Config::default()
    });
    let (events, _) = feed(&mut conn, &cframe(true, 0, OpCode::Ping, b"x"));
    assert_eq!(events, vec![Event::Ping(Bytes::from_static(b"x"))]);
    assert_eq!(conn.buffered_amount(), 0);
    conn.send_pong(b"x").unwrap();
    assert_eq!(
        server_output_as_events(&mut conn),
        vec![Event::Pong(Bytes::from_static(b"x"))]
    );
}

/// The payloads of the pongs in `events` (a server's output decoded by a client).
fn pong_payloads(events: &[Event]) -> Vec<Bytes> {
    events
        .iter()
        .filter_map(|event| match event {
            Event::Pong(payload) => Some(payload.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_burst_of_pings_gets_a_pong_for_each() {
    // Autobahn|Testsuite 2.10: ten pings at once, ten pongs in order.
    let mut conn = server();
    let mut bytes = Vec::new();
    let payloads: Vec<Bytes> = (0..PONG_BURST)
        .map(|i| Bytes::from(format!("payload-{i}")))
        .collect();
    for payload in &payloads {
        bytes.extend(cframe(true, 0, OpCode::Ping, payload));
    }
    let (events, error) = feed(&mut conn, &bytes);
    assert_eq!((events.len(), error), (PONG_BURST, None));
    assert_eq!(pong_payloads(&server_output_as_events(&mut conn)), payloads);
}

#[test]
fn a_ping_flood_without_writes_queues_a_bounded_number_of_pongs() {
    // A peer that pings and never reads: the pongs past a burst are
    // coalesced into one that answers the latest ping (RFC 6455 §5.5.3).
    for mut conn in [server(), client()] {
        let frame = |i: u32| {
            let payload = format!("{i:0>125}");
            match conn.role() {
                crate::Role::Server => cframe(true, 0, OpCode::Ping, payload.as_bytes()),
                crate::Role::Client => sframe(true, 0, OpCode::Ping, payload.as_bytes()),
            }
        };
        let pings = 100_000u32;
        let mut bytes = Vec::new();
        for i in 0..pings {
            bytes.extend(frame(i));
        }
        let (events, error) = feed(&mut conn, &bytes);
        assert_eq!((events.len(), error), (pings as usize, None));
        // A pong frame is at most 2 + 4 + 125 bytes (header, mask, payload).
        let bound = (PONG_BURST + 1) * 131;
        assert!(
            conn.buffered_amount() <= bound,
            "{} bytes queued for {pings} pings, more than {bound}",
            conn.buffered_amount()
        );
        let out = take_output(&mut conn);
        let mut peer = match conn.role() {
            crate::Role::Server => client(),
            crate::Role::Client => server(),
        };
        let (events, error) = feed(&mut peer, &out);
        assert_eq!(error, None);
        let pongs = pong_payloads(&events);
        assert_eq!(pongs.len(), PONG_BURST + 1);
        let expected: Vec<Bytes> = (0..PONG_BURST as u32)
            .chain([pings - 1])
            .map(|i| Bytes::from(format!("{i:0>125}")))
            .collect();
        assert_eq!(pongs, expected, "the burst, then the latest ping");
    }
}

#[test]
fn pongs_are_answered_one_by_one_again_once_the_queue_is_written() {
    let mut conn = server();
    for round in 0..3 {
        let mut bytes = Vec::new();
        for i in 0..PONG_BURST + 5 {
            bytes.extend(cframe(
                true,
                0,
                OpCode::Ping,
                format!("{round}-{i}").as_bytes(),
            ));
        }
        feed(&mut conn, &bytes);
        let pongs = pong_payloads(&server_output_as_events(&mut conn));
        assert_eq!(pongs.len(), PONG_BURST + 1, "round {round}");
        assert_eq!(
            pongs.last().unwrap(),
            &Bytes::from(format!("{round}-{}", PONG_BURST + 4))
        );
    }
}

#[test]
fn a_pong_partly_written_or_followed_by_data_is_never_replaced() {
    let mut conn = server();
    let ping = |payload: &str| cframe(true, 0, OpCode::Ping, payload.as_bytes());
    for i in 0..PONG_BURST {
        feed(&mut conn, &ping(&format!("b{i}")));
    }
    // The last pong of the burst is partly written: it stays whole.
    let first = conn.buffered_amount() - 3;
    let mut written = conn.transmit().copy_to_bytes(first).to_vec();
    feed(&mut conn, &ping("after a partial write"));
    // A data message after that pong: the next pong goes after the message.
    conn.send_text("data").unwrap();
    feed(&mut conn, &ping("after data"));
    feed(&mut conn, &ping("latest"));
    written.extend(take_output(&mut conn));
    let mut peer = client();
    let (events, error) = feed(&mut peer, &written);
    assert_eq!(error, None);
    let mut expected: Vec<Event> = (0..PONG_BURST)
        .map(|i| Event::Pong(Bytes::from(format!("b{i}"))))
        .collect();
    expected.push(Event::Pong(Bytes::from_static(b"after a partial write")));
    expected.push(Event::Message(Message::text("data")));
    expected.push(Event::Pong(Bytes::from_static(b"latest")));
    assert_eq!(events, expected);
}

#[test]
fn a_coalesced_pong_still_goes_before_our_close() {
    let mut conn = server();
    for i in 0..PONG_BURST + 3 {
        feed(
            &mut conn,
            &cframe(true, 0, OpCode::Ping, format!("{i}").as_bytes()),
        );
    }
    conn.close(CloseCode::NORMAL, "").unwrap();
    feed(
        &mut conn,
        &cframe(true, 0, OpCode::Ping, b"after our close"),
    );
    let events = server_output_as_events(&mut conn);
    assert_eq!(events.len(), PONG_BURST + 2);
    assert_eq!(
        &events[PONG_BURST..],
        &[
            Event::Pong(Bytes::from(format!("{}", PONG_BURST + 2))),
            Event::Close(Some(CloseFrame::new(CloseCode::NORMAL, ""))),
        ]
    );
}

#[test]
fn unsolicited_pong_is_accepted() {
    let (events, error) = feed(&mut server(), &cframe(true, 0, OpCode::Pong, b"beat"));
    assert_eq!(
        (events, error),
        (vec![Event::Pong(Bytes::from_static(b"beat"))], None)
    );
}

#[test]
fn control_payload_limit_on_send() {
    let mut conn = server();
    assert_eq!(
        conn.send_ping(&[0; 126]),
        Err(SendError::ControlPayloadTooLong)
    );
    assert_eq!(conn.send_ping(&[0; 125]), Ok(()));
}

#[test]
fn streaming_mode_hands_out_chunks_as_they_arrive() {
    let mut conn = Connection::server(Config {
        receive_mode: ReceiveMode::Streaming,
        ..Config::default()
    });
    let payload: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let bytes = cframe(true, 0, OpCode::Binary, &payload);
    let mut received = Vec::new();
    let mut saw = Vec::new();
    for piece in bytes.chunks(4096) {
        let (events, error) = feed(&mut conn, piece);
        assert_eq!(error, None);
        for event in events {
            match event {
                Event::MessageData(data) => {
                    assert!(data.len() <= 4096);
                    received.extend_from_slice(&data);
                    saw.push("data");
                }
                Event::MessageStart(kind) => {
                    assert_eq!(kind, MessageKind::Binary);
                    saw.push("start");
                }
                Event::MessageEnd => saw.push("end"),
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    assert_eq!(received, payload);
    assert_eq!(saw.first(), Some(&"start"));
    assert_eq!(saw.last(), Some(&"end"));
    assert!(saw.len() > 20, "chunks were handed out as they arrived");
}

#[test]
fn streaming_text_still_fails_fast_and_enforces_the_message_limit() {
    let config = Config {
        receive_mode: ReceiveMode::Streaming,
        max_message_size: 8,
        ..Config::default()
    };
    let mut conn = Connection::server(config.clone());
    let (_, error) = feed(&mut conn, &cframe(false, 0, OpCode::Text, b"\xff"));
    assert_eq!(error, Some(ProtocolError::InvalidUtf8));
    let mut conn = Connection::server(config);
    let mut bytes = cframe(false, 0, OpCode::Text, b"12345");
    bytes.extend(cframe(true, 0, OpCode::Continuation, b"6789"));
    let (_, error) = feed(&mut conn, &bytes);
    assert_eq!(error, Some(ProtocolError::MessageTooLarge { limit: 8 }));
}

#[test]
fn client_masks_every_frame_with_a_fresh_key() {
    let mut conn = client();
    conn.send_text("same").unwrap();
    conn.send_text("same").unwrap();
    let out = take_output(&mut conn);
    let (first, second) = out.split_at(out.len() / 2);
    assert_eq!(first[1] & 0x80, 0x80);
    assert_ne!(first[2..6], second[2..6], "keys differ");
    let mut peer = server();
    let (events, error) = feed(&mut peer, &out);
    assert_eq!(error, None);
    assert_eq!(events, vec![Event::Message(Message::text("same")); 2]);
}

#[test]
fn sends_fragmented_when_over_max_send_frame_size() {
    let mut conn = Connection::server(Config {
        max_send_frame_size: 3,
        ..Config::default()
    });
    conn.send_text("abcdefg").unwrap();
    let out = take_output(&mut conn);
    assert_eq!(
        out,
        [
            sframe(false, 0, OpCode::Text, b"abc"),
            sframe(false, 0, OpCode::Continuation, b"def"),
            sframe(true, 0, OpCode::Continuation, b"g")
        ]
        .concat()
    );
}

#[test]
fn streamed_send_with_fragments() {
    let mut conn = server();
    conn.send_fragment(MessageKind::Binary, b"ab", false)
        .unwrap();
    assert_eq!(conn.send_text("x"), Err(SendError::MessageInProgress));
    assert_eq!(
        conn.send_fragment(MessageKind::Text, b"x", true),
        Err(SendError::MessageInProgress)
    );
    conn.send_ping(b"between").unwrap();
    conn.send_fragment(MessageKind::Binary, b"cd", true)
        .unwrap();
    assert_eq!(
        server_output_as_events(&mut conn),
        vec![
            Event::Ping(Bytes::from_static(b"between")),
            Event::Message(Message::binary(&b"abcd"[..]))
        ]
    );
}

#[test]
fn prepared_message_matches_a_normal_send() {
    let message = Message::text("broadcast");
    let prepared = PreparedMessage::new(&message);
    let mut a = server();
    let mut b = server();
    a.send(message).unwrap();
    b.send_prepared(&prepared).unwrap();
    assert_eq!(take_output(&mut a), take_output(&mut b));
    assert_eq!(
        client().send_prepared(&prepared),
        Err(SendError::PreparedFromClient)
    );
}

#[test]
fn large_payload_is_queued_without_copying() {
    let mut conn = server();
    let payload = Bytes::from(vec![1u8; 100_000]);
    conn.send(Message::Binary(payload.clone())).unwrap();
    let out = conn.transmit();
    let mut slices = [std::io::IoSlice::new(&[]); 4];
    let n = out.chunks_vectored(&mut slices);
    assert_eq!(n, 2, "header, then the shared payload");
    assert_eq!(slices[1].as_ptr(), payload.as_ptr());
}

#[test]
fn pending_frame_bytes_tells_what_the_frame_still_needs() {
    let mut conn = server();
    assert_eq!(conn.pending_frame_bytes(), 0);
    let frame = cframe(true, 0, OpCode::Binary, &[7; 100_000]);
    let (events, _) = feed(&mut conn, &frame[..14 + 1000]);
    assert!(events.is_empty());
    assert_eq!(conn.pending_frame_bytes(), 99_000);
    let (events, _) = feed(&mut conn, &frame[14 + 1000..]);
    assert_eq!(events.len(), 1);
    assert_eq!(conn.pending_frame_bytes(), 0);
}

#[test]
fn idle_connection_gives_buffers_back() {
    let mut conn = server();
    let (events, _) = feed(&mut conn, &cframe(true, 0, OpCode::Binary, &[0; 50_000]));
    drop(events);
    conn.shrink_buffers();
    assert_eq!(conn.read_buf().capacity(), 0);
}

/// Feeds `input` a byte at a time: the general path, a frame never whole.
fn feed_bytewise(conn: &mut Connection, input: &[u8]) -> (Vec<Event>, Option<ProtocolError>) {
    let mut events = Vec::new();
    for byte in input {
        let (more, error) = feed(conn, std::slice::from_ref(byte));
        events.extend(more);
        if error.is_some() {
            return (events, error);
        }
    }
    (events, None)
}

/// A frame of up to 300 payload bytes with a first byte the one-pass path
/// takes (final text or binary) or one beside it (not final, compressed,
/// control, reserved), masked or not, with any payload or a UTF-8 one, its
/// length in 7 bits or in 16 (minimal or not).
fn single_frame() -> impl Strategy<Value = Vec<u8>> {
    let first = prop::sample::select(vec![
        0x81u8, 0x82, 0x81, 0x82, 0x01, 0x80, 0x89, 0xC1, 0x91, 0x83,
    ]);
    let payload = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..300),
        "\\PC{0,80}".prop_map(String::into_bytes),
    ];
    (
        first,
        any::<bool>(),
        any::<[u8; 4]>(),
        payload,
        any::<bool>(),
    )
        .prop_map(|(first, masked, key, mut payload, wide)| {
            let mask_bit = u8::from(masked) << 7;
            let mut frame = vec![first];
            match u16::try_from(payload.len()) {
                Ok(len) if len > 125 || wide => {
                    frame.push(mask_bit | 126);
                    frame.extend_from_slice(&len.to_be_bytes());
                }
                _ => frame.push(mask_bit | payload.len() as u8),
            }
            if masked {
                frame.extend_from_slice(&key);
                crate::mask::apply_mask(&mut payload, key, 0);
            }
            frame.extend(payload);
            frame
        })
}

fn any_message() -> impl Strategy<Value = Message> {
    prop_oneof![
        "\\PC{0,300}".prop_map(Message::text),
        proptest::collection::vec(any::<u8>(), 0..2000).prop_map(Message::binary),
    ]
}

proptest! {
    #[test]
    fn round_trip_client_to_server(messages in proptest::collection::vec(any_message(), 1..8),
                                   frame_size in 1usize..600, chunk in 1usize..700) {
        let mut sender = Connection::client(
            Config { max_send_frame_size: frame_size, ..Config::default() },
            Box::new(|| [1, 2, 3, 4]),
        );
        for message in &messages {
            sender.send(message.clone()).unwrap();
        }
        let bytes = take_output(&mut sender);
        let mut receiver = server();
        let mut got = Vec::new();
        for piece in bytes.chunks(chunk) {
            let (events, error) = feed(&mut receiver, piece);
            prop_assert_eq!(error, None);
            got.extend(events);
        }
        let expected: Vec<Event> = messages.into_iter().map(Event::Message).collect();
        prop_assert_eq!(got, expected);
    }

    #[test]
    fn round_trip_server_to_client(messages in proptest::collection::vec(any_message(), 1..8),
                                   frame_size in 1usize..600) {
        let mut sender = Connection::server(Config { max_send_frame_size: frame_size, ..Config::default() });
        for message in &messages {
            sender.send(message.clone()).unwrap();
        }
        let events = server_output_as_events(&mut sender);
        let expected: Vec<Event> = messages.into_iter().map(Event::Message).collect();
        prop_assert_eq!(events, expected);
    }

    #[test]
    fn single_frames_whole_equal_single_frames_bytewise(
        frames in proptest::collection::vec(single_frame(), 1..6),
        as_client in any::<bool>(),
        limit in prop::sample::select(vec![0usize, 1, 20, 125, 200, 1 << 20]),
    ) {
        let input = frames.concat();
        let config = Config { max_frame_size: limit, max_message_size: limit.max(4), ..Config::default() };
        let make = || if as_client {
            Connection::client(config.clone(), Box::new(|| [1, 2, 3, 4]))
        } else {
            Connection::server(config.clone())
        };
        let (mut whole, mut bytewise) = (make(), make());
        prop_assert_eq!(feed(&mut whole, &input), feed_bytewise(&mut bytewise, &input));
        prop_assert_eq!(take_output(&mut whole), take_output(&mut bytewise));
        prop_assert_eq!(whole.state(), bytewise.state());
    }

    #[test]
    fn byte_at_a_time_equals_whole(bytes in proptest::collection::vec(any::<u8>(), 0..400),
                                   prefix in proptest::collection::vec(any_message(), 0..3)) {
        // Valid frames followed by arbitrary bytes: same events and same error.
        let mut sender = Connection::client(Config::default(), Box::new(|| [9, 8, 7, 6]));
        for message in prefix {
            sender.send(message).unwrap();
        }
        let mut input = take_output(&mut sender);
        input.extend(bytes);
        let whole = feed(&mut server(), &input);
        prop_assert_eq!(whole, feed_bytewise(&mut server(), &input));
    }
}

mod deflate {
    //! permessage-deflate on the data path (RFC 7692 §6, §7.2.3).

    use super::*;
    use crate::deflate::{DeflateConfig, DeflateParams};
    use crate::frame::RSV1;

    fn params(bits: u8, server_nct: bool, client_nct: bool) -> DeflateParams {
        DeflateParams {
            server_no_context_takeover: server_nct,
            client_no_context_takeover: client_nct,
            server_max_window_bits: Some(bits),
            client_max_window_bits: Some(bits),
        }
    }

    fn policy(threshold: usize) -> DeflateConfig {
        DeflateConfig {
            threshold,
            ..DeflateConfig::default()
        }
    }

    fn pair(p: DeflateParams, config: Config) -> (Connection, Connection) {
        let server = Connection::server(config.clone()).with_deflate(p, &policy(0));
        let mut n = 7u32;
        let client = Connection::client(
            config,
            Box::new(move || {
                n = n.wrapping_mul(1_103_515_245).wrapping_add(12345);
                n.to_le_bytes()
            }),
        )
        .with_deflate(p, &policy(0));
        (server, client)
    }

    #[test]
    fn rfc7692_hello_on_the_wire() {
        let mut conn = Connection::server(Config::default())
            .with_deflate(DeflateParams::default(), &policy(0));
        conn.send_text("Hello").unwrap();
        // §7.2.3.1: 0xc1 0x07 0xf2 0x48 0xcd 0xc9 0xc9 0x07 0x00
        assert_eq!(
            take_output(&mut conn),
            [0xc1, 0x07, 0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]
        );
    }

    #[test]
    fn rfc7692_examples_decompress() {
        let mut conn = client().with_deflate(DeflateParams::default(), &policy(0));
        // §7.2.3.1 single frame; §7.2.3.2 context takeover ("Hello" again);
        // §7.2.3.3 no compression (BTYPE 00 block); §7.2.3.4 two fragments.
        let mut bytes = vec![0xc1, 0x07, 0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
        bytes.extend([0xc1, 0x05, 0xf2, 0x00, 0x11, 0x00, 0x00]);
        bytes.extend([
            0xc1, 0x0b, 0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00,
        ]);
        bytes.extend([
            0x41, 0x03, 0xf2, 0x48, 0xcd, 0x80, 0x04, 0xc9, 0xc9, 0x07, 0x00,
        ]);
        let (events, error) = feed(&mut conn, &bytes);
        assert_eq!(error, None);
        assert_eq!(events, vec![Event::Message(Message::text("Hello")); 4]);
    }

    #[test]
    fn rsv1_on_continuation_is_a_protocol_error() {
        let mut conn = Connection::server(Config::default())
            .with_deflate(DeflateParams::default(), &policy(0));
        let mut bytes = cframe(false, RSV1, OpCode::Text, &[0xf2, 0x48]);
        bytes.extend(cframe(true, RSV1, OpCode::Continuation, &[0xcd]));
        let (_, error) = feed(&mut conn, &bytes);
        assert_eq!(error, Some(ProtocolError::CompressedNonStartFrame));
    }

    #[test]
    fn rsv1_on_control_frame_is_a_protocol_error() {
        let mut conn = Connection::server(Config::default())
            .with_deflate(DeflateParams::default(), &policy(0));
        let (_, error) = feed(&mut conn, &cframe(true, RSV1, OpCode::Ping, b""));
        assert_eq!(error, Some(ProtocolError::CompressedNonStartFrame));
    }

    #[test]
    fn rsv1_without_negotiation_is_a_protocol_error() {
        assert_server_fails(
            &cframe(true, RSV1, OpCode::Text, &[0xf2, 0x48]),
            ProtocolError::ReservedBits,
        );
    }

    #[test]
    fn invalid_deflate_data_fails_with_1007() {
        let mut conn = Connection::server(Config::default())
            .with_deflate(DeflateParams::default(), &policy(0));
        let (_, error) = feed(
            &mut conn,
            &cframe(true, RSV1, OpCode::Binary, &[0xff, 0xff, 0xff, 0xff]),
        );
        let error = error.expect("invalid data fails");
        assert!(
            matches!(error, ProtocolError::InvalidCompressedData(_)),
            "{error:?}"
        );
        assert_eq!(error.close_code(), CloseCode::INVALID_PAYLOAD);
    }

    #[test]
    fn bomb_stops_at_the_message_limit() {
        // 16 MiB of zeros compresses to about 16 KiB; the limit is 1 MiB.
        let limit = 1 << 20;
        let config = Config {
            max_message_size: limit,
            ..Config::default()
        };
        let (_, mut sender) = pair(DeflateParams::default(), Config::default());
        sender.send_binary(&vec![0u8; 16 << 20]).unwrap();
        let bomb = take_output(&mut sender);
        assert!(bomb.len() < 64 * 1024, "bomb is small: {}", bomb.len());
        let mut receiver =
            Connection::server(config).with_deflate(DeflateParams::default(), &policy(0));
        let (events, error) = feed(&mut receiver, &bomb);
        assert!(events.is_empty());
        assert_eq!(error, Some(ProtocolError::MessageTooLarge { limit }));
        assert_eq!(error.unwrap().close_code(), CloseCode::MESSAGE_TOO_BIG);
    }

    /// `len` bytes that deflate cannot shrink (xorshift64).
    fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    /// A sender of `role` (masking if a client) and a receiver of the other
    /// role with `config`, both with permessage-deflate (default window) and
    /// the sender compressing at `level` with `mem_level`.
    fn compressed_pair(
        sender_role: crate::Role,
        config: &Config,
        level: u32,
        mem_level: Option<u8>,
    ) -> (Connection, Connection) {
        let p = DeflateParams::default();
        let sending = DeflateConfig {
            level,
            mem_level,
            ..policy(0)
        };
        let mut n = 7u32;
        let mask: MaskSource = Box::new(move || {
            n = n.wrapping_mul(1_103_515_245).wrapping_add(12345);
            n.to_le_bytes()
        });
        let mut n2 = 11u32;
        let mask2: MaskSource = Box::new(move || {
            n2 = n2.wrapping_mul(1_103_515_245).wrapping_add(12345);
            n2.to_le_bytes()
        });
        match sender_role {
            crate::Role::Client => (
                Connection::client(Config::default(), mask).with_deflate(p, &sending),
                Connection::server(config.clone()).with_deflate(p, &policy(0)),
            ),
            crate::Role::Server => (
                Connection::server(Config::default()).with_deflate(p, &sending),
                Connection::client(config.clone(), mask2).with_deflate(p, &policy(0)),
            ),
        }
    }

    #[test]
    fn the_message_limit_is_exact_with_and_without_compression_in_both_roles() {
        // Incompressible data compressed grows by deflate's overhead: a
        // message at the limit makes a frame over `max_frame_size`, which
        // must pass; one byte over the limit fails with 1009 either way.
        let limit = 256 << 10;
        let config = Config {
            max_frame_size: limit,
            max_message_size: limit,
            ..Config::default()
        };
        for sender_role in [crate::Role::Client, crate::Role::Server] {
            // zlib's defaults, and its smallest stored blocks (memLevel 1).
            for (level, mem_level) in [(6, None), (1, Some(1)), (9, Some(5))] {
                let case = format!("{sender_role:?} sends, level {level}, memLevel {mem_level:?}");
                for (compress, size) in [
                    (Compress::Always, limit),
                    (Compress::Always, limit + 1),
                    (Compress::Never, limit),
                    (Compress::Never, limit + 1),
                ] {
                    let (mut sender, mut receiver) =
                        compressed_pair(sender_role, &config, level, mem_level);
                    let data = noise(size, size as u64);
                    sender
                        .send_with(Message::binary(data.clone()), compress)
                        .unwrap();
                    let wire = take_output(&mut sender);
                    if compress == Compress::Always {
                        assert!(wire.len() > size + 14, "{case}: deflate grew the frame");
                    }
                    let (events, error) = feed(&mut receiver, &wire);
                    if size <= limit {
                        assert_eq!(error, None, "{case}, {compress:?}, {size} bytes");
                        assert_eq!(events, vec![Event::Message(Message::binary(data))]);
                    } else {
                        let error = error.expect("one byte over the limit fails");
                        let expected = match compress {
                            Compress::Never => ProtocolError::FrameTooLarge {
                                size: size as u64,
                                limit,
                            },
                            _ => ProtocolError::MessageTooLarge { limit },
                        };
                        assert_eq!(error, expected, "{case}, {compress:?}");
                        assert_eq!(error.close_code(), CloseCode::MESSAGE_TOO_BIG);
                    }
                }
            }
        }
    }

    #[test]
    fn a_compressed_frame_is_bounded_by_the_deflate_bound_of_the_frame_limit() {
        let config = Config::default();
        let bound = config.compressed_frame_limit();
        assert_eq!(bound, 19_136_528);
        // What Python `websockets` (memLevel 5) sends for 16 MiB of noise.
        assert!(bound >= 16_818_182);
        let header = |rsv: u8, opcode: OpCode, len: u64, fin: bool| {
            let mut out = BytesMut::new();
            crate::frame::encode_header(
                &crate::frame::FrameHeader {
                    fin,
                    rsv,
                    opcode,
                    mask: Some(KEY),
                    payload_len: len,
                },
                &mut out,
            );
            out.to_vec()
        };
        let conn = || {
            Connection::server(Config::default()).with_deflate(DeflateParams::default(), &policy(0))
        };
        // The first frame of a compressed message, and a continuation of
        // one: only the header is sent, the limit is checked on it.
        let mut first = conn();
        let (_, error) = feed(&mut first, &header(RSV1, OpCode::Binary, bound + 1, true));
        assert_eq!(
            error,
            Some(ProtocolError::FrameTooLarge {
                size: bound + 1,
                limit: bound as usize
            })
        );
        let mut continued = conn();
        let mut bytes = cframe(false, RSV1, OpCode::Binary, &[]);
        bytes.extend(header(0, OpCode::Continuation, bound + 1, true));
        let (_, error) = feed(&mut continued, &bytes);
        assert_eq!(
            error,
            Some(ProtocolError::FrameTooLarge {
                size: bound + 1,
                limit: bound as usize
            })
        );
        // An uncompressed frame keeps the plain limit.
        let mut plain = conn();
        let max = config.max_frame_size as u64;
        let (_, error) = feed(&mut plain, &header(0, OpCode::Binary, max + 1, true));
        assert_eq!(
            error,
            Some(ProtocolError::FrameTooLarge {
                size: max + 1,
                limit: config.max_frame_size
            })
        );
        // A header at the bound is accepted (the payload is awaited).
        let mut at = conn();
        let (_, error) = feed(&mut at, &header(RSV1, OpCode::Binary, bound, true));
        assert_eq!(error, None);
    }

    #[test]
    fn small_message_below_threshold_is_sent_uncompressed() {
        let mut conn = Connection::server(Config::default())
            .with_deflate(DeflateParams::default(), &policy(128));
        conn.send_text("short").unwrap();
        let out = take_output(&mut conn);
        assert_eq!(out[0] & 0x40, 0, "RSV1 clear");
        conn.send_with(Message::text("short"), Compress::Always)
            .unwrap();
        assert_eq!(
            take_output(&mut conn)[0] & 0x40,
            0x40,
            "RSV1 set when forced"
        );
        conn.send_with(Message::text("x".repeat(500)), Compress::Never)
            .unwrap();
        assert_eq!(
            take_output(&mut conn)[0] & 0x40,
            0,
            "RSV1 clear when refused"
        );
    }

    #[test]
    fn incompressible_message_goes_uncompressed_without_context_takeover() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let noise: Vec<u8> = (0..2000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let mut conn =
            Connection::server(Config::default()).with_deflate(params(15, true, false), &policy(0));
        conn.send_binary(&noise).unwrap();
        let out = take_output(&mut conn);
        assert_eq!(out[0] & 0x40, 0, "sent as it is");
        assert_eq!(&out[4..], &noise[..]);
    }

    /// A chat-like JSON message of about 300 bytes, which deflate shrinks.
    fn chat_json() -> Message {
        Message::text(
            r#"{"op":"message","channel":"chat:lobby","offset":1042,"time":1732190000123,"from":{"user":"alice","client":"c1a2b3"},"data":{"type":"message","user":"alice","text":"hello there, how is everyone today? the meeting moved to three, see the channel topic for the new room","reactions":{"thumbs_up":3,"heart":1}}}"#,
        )
    }

    /// A client connection with `p` (and the default receiving policy).
    fn client_with(p: DeflateParams) -> Connection {
        let mut n = 11u32;
        Connection::client(
            Config::default(),
            Box::new(move || {
                n = n.wrapping_mul(1_103_515_245).wrapping_add(12345);
                n.to_le_bytes()
            }),
        )
        .with_deflate(p, &policy(0))
    }

    #[test]
    fn a_prepared_message_goes_compressed_and_shared_without_context_takeover() {
        let message = chat_json();
        let prepared = PreparedMessage::new(&message);
        let p = params(12, true, false);
        let mut first = Connection::server(Config::default()).with_deflate(p, &policy(128));
        let mut second = Connection::server(Config::default()).with_deflate(p, &policy(128));
        assert_eq!(prepared.compressed_frame(12), None, "made on first use");
        first.send_prepared(&prepared).unwrap();
        let shared = prepared.compressed_frame(12).expect("made").clone();
        second.send_prepared(&prepared).unwrap();
        // Both connections sent the one compressed frame, made once.
        assert_eq!(
            prepared.compressed_frame(12).unwrap().as_ptr(),
            shared.as_ptr()
        );
        let (a, b) = (take_output(&mut first), take_output(&mut second));
        assert_eq!(a, b);
        assert_eq!(a, shared);
        assert_eq!(a[0], 0x80 | RSV1 << 4 | 0x1, "FIN, RSV1, text");
        assert!(a.len() < prepared.frame().len(), "{} bytes", a.len());
        // It decodes to the message on a client of the same agreement, also
        // several in a row (each compressed alone) and among messages the
        // connection compressed itself.
        let mut client = client_with(p);
        let mut wire = a.clone();
        first.send(message.clone()).unwrap();
        wire.extend(take_output(&mut first));
        wire.extend(&b);
        let (events, error) = feed(&mut client, &wire);
        assert_eq!(error, None);
        assert_eq!(events, vec![Event::Message(message); 3]);
    }

    #[test]
    fn each_window_size_gets_its_own_compressed_frame() {
        let message = chat_json();
        let prepared = PreparedMessage::new(&message);
        for bits in [8, 9, 15] {
            let p = params(bits, true, true);
            let mut server = Connection::server(Config::default()).with_deflate(p, &policy(0));
            server.send_prepared(&prepared).unwrap();
            let wire = take_output(&mut server);
            assert_ne!(wire[0] & 0x40, 0, "w{bits}: compressed");
            assert_eq!(prepared.compressed_frame(bits).unwrap()[..], wire[..]);
            let (events, error) = feed(&mut client_with(p), &wire);
            assert_eq!(error, None, "w{bits}");
            assert_eq!(events, vec![Event::Message(message.clone())], "w{bits}");
        }
        assert_eq!(prepared.compressed_frame(12), None, "never asked for");
    }

    #[test]
    fn a_prepared_message_goes_plain_with_context_takeover_or_without_deflate() {
        let message = chat_json();
        let prepared = PreparedMessage::new(&message);
        let p = params(12, false, false);
        let mut takeover = Connection::server(Config::default()).with_deflate(p, &policy(0));
        takeover.send_prepared(&prepared).unwrap();
        let wire = take_output(&mut takeover);
        assert_eq!(wire, prepared.frame()[..], "plain");
        assert_eq!(prepared.compressed_frame(12), None, "nothing compressed");
        // The plain frame leaves the context in step: a message the
        // connection compresses next still decodes.
        takeover.send(message.clone()).unwrap();
        let mut both = wire.clone();
        both.extend(take_output(&mut takeover));
        let (events, error) = feed(&mut client_with(p), &both);
        assert_eq!(error, None);
        assert_eq!(events, vec![Event::Message(message.clone()); 2]);

        let mut plain = server();
        plain.send_prepared(&prepared).unwrap();
        assert_eq!(take_output(&mut plain), prepared.frame()[..]);
    }

    #[test]
    fn a_prepared_message_goes_plain_when_compressing_does_not_pay() {
        let p = params(12, true, false);
        // Under the threshold.
        let short = PreparedMessage::new(&Message::text("x".repeat(100)));
        let mut conn = Connection::server(Config::default()).with_deflate(p, &policy(128));
        conn.send_prepared(&short).unwrap();
        assert_eq!(take_output(&mut conn), short.frame()[..]);
        assert_eq!(short.compressed_frame(12), None);
        // Not smaller compressed: the decision is kept, and every later
        // connection sends the plain frame without compressing again.
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let noise: Vec<u8> = (0..2000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let noisy = PreparedMessage::new(&Message::binary(noise));
        for _ in 0..2 {
            let mut conn = Connection::server(Config::default()).with_deflate(p, &policy(0));
            conn.send_prepared(&noisy).unwrap();
            assert_eq!(take_output(&mut conn), noisy.frame()[..]);
        }
        assert_eq!(noisy.compressed_frame(12), None);
    }

    #[test]
    fn compressed_frames_are_smaller_for_repetitive_json() {
        let (mut server, mut client) = pair(params(15, false, false), Config::default());
        let message = r#"{"type":"message","channel":"chat:lobby","user":"alice","text":"hello there, how is everyone today?"}"#;
        let mut plain = 0;
        for _ in 0..50 {
            server.send_text(message).unwrap();
            plain += message.len() + 2;
        }
        let wire = take_output(&mut server);
        assert!(wire.len() * 3 < plain, "{} vs {}", wire.len(), plain);
        let (events, error) = feed(&mut client, &wire);
        assert_eq!(error, None);
        assert_eq!(events.len(), 50);
    }

    fn json_like() -> impl Strategy<Value = Message> {
        prop_oneof![
            ("[a-z]{0,12}", 0u32..1000).prop_map(|(user, n)| Message::text(format!(
                r#"{{"type":"message","user":"{user}","seq":{n},"text":"hello hello hello {user}"}}"#
            ))),
            proptest::collection::vec(any::<u8>(), 0..3000).prop_map(Message::binary),
            "\\PC{0,200}".prop_map(Message::text),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]

        #[test]
        fn round_trip_every_window_and_takeover_mode(
            bits in 9u8..=15, server_nct in any::<bool>(), client_nct in any::<bool>(),
            messages in proptest::collection::vec(json_like(), 1..6),
            frame_size in prop_oneof![Just(usize::MAX), 1usize..200],
            chunk in prop_oneof![Just(1usize), 1usize..512],
            ping_between in any::<bool>(),
        ) {
            let config = Config { max_send_frame_size: frame_size, ..Config::default() };
            let (mut server, mut client) = pair(params(bits, server_nct, client_nct), config);
            // Client to server, fed in chunks (down to one byte at a time).
            for message in &messages {
                client.send(message.clone()).unwrap();
                if ping_between { client.send_ping(b"p").unwrap(); }
            }
            let bytes = take_output(&mut client);
            let mut got = Vec::new();
            for piece in bytes.chunks(chunk) {
                let (events, error) = feed(&mut server, piece);
                prop_assert_eq!(error, None);
                got.extend(events.into_iter().filter(|e| matches!(e, Event::Message(_))));
            }
            let expected: Vec<Event> = messages.iter().cloned().map(Event::Message).collect();
            prop_assert_eq!(&got, &expected);
            // And back, server to client.
            let _ = take_output(&mut server); // pongs
            for message in &messages {
                server.send(message.clone()).unwrap();
            }
            let bytes = take_output(&mut server);
            let (events, error) = feed(&mut client, &bytes);
            prop_assert_eq!(error, None);
            prop_assert_eq!(events, expected);
        }

        #[test]
        fn release_between_messages_keeps_both_ends_in_step(
            bits in 9u8..=15, messages in proptest::collection::vec(json_like(), 1..6)) {
            let (mut server, mut client) = pair(params(bits, false, false), Config::default());
            for message in &messages {
                server.send(message.clone()).unwrap();
                server.release_compression();
                let bytes = take_output(&mut server);
                let (events, error) = feed(&mut client, &bytes);
                client.release_compression();
                prop_assert_eq!(error, None);
                prop_assert_eq!(events, vec![Event::Message(message.clone())]);
            }
        }
    }
}

/// Single-frame messages skip the event queue; control frames between them
/// still come out in order, and a message split anywhere (its header held in
/// the read buffer until the payload is complete) arrives whole.
#[test]
fn pipelined_messages_and_pings_keep_their_order_at_any_split() {
    let mut stream = Vec::new();
    stream.extend(cframe(true, 0, OpCode::Text, b"one"));
    stream.extend(cframe(true, 0, OpCode::Ping, b"p"));
    stream.extend(cframe(true, 0, OpCode::Binary, &[9; 300]));
    stream.extend(cframe(true, 0, OpCode::Text, b""));
    let expected = vec![
        Event::Message(Message::text("one")),
        Event::Ping(Bytes::from_static(b"p")),
        Event::Message(Message::binary(vec![9; 300])),
        Event::Message(Message::text("")),
    ];
    for split in 0..=stream.len() {
        let mut conn = server();
        let (mut events, error) = feed(&mut conn, &stream[..split]);
        assert_eq!(error, None);
        if split < stream.len() {
            assert!(conn.pending_frame_bytes() <= stream.len() - split);
        }
        let (rest, error) = feed(&mut conn, &stream[split..]);
        assert_eq!(error, None);
        events.extend(rest);
        assert_eq!(events, expected, "split at {split}");
        assert_eq!(conn.pending_frame_bytes(), 0);
    }
}

/// A server's frames at every header length (7-bit, 16-bit and 64-bit
/// lengths), copied or shared, encode exactly as `encode_frame` does and
/// parse back to the same messages.
#[test]
fn server_frames_encode_at_every_header_length() {
    for len in [0, 1, 125, 126, 4095, 4096, 65_535, 65_536, 70_000] {
        let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let mut server = server();
        server.send_binary(&payload).unwrap();
        server
            .send(Message::binary(Bytes::from(payload.clone())))
            .unwrap();
        let bytes = take_output(&mut server);
        let one = sframe(true, 0, OpCode::Binary, &payload);
        assert_eq!(bytes.len(), 2 * one.len(), "length {len}");
        assert_eq!(&bytes[..one.len()], &one[..], "copied, length {len}");
        assert_eq!(&bytes[one.len()..], &one[..], "shared, length {len}");
        let (events, error) = feed(&mut client(), &bytes);
        assert_eq!(error, None);
        let expected = Event::Message(Message::binary(payload.clone()));
        assert_eq!(events, vec![expected.clone(), expected], "length {len}");
    }
}

#[test]
fn a_written_out_queue_goes_to_the_next_connection_that_sends() {
    let (mut first, mut second) = (server(), server());
    first.send_text("a reply").unwrap();
    let queue: *const OutBuf = &**first.out.as_ref().expect("a queue while bytes wait");
    // Written but one byte: the queue stays.
    let n = first.buffered_amount();
    first.transmit().advance(n - 1);
    first.release_written();
    assert!(first.out.is_some());
    assert_eq!(take_output(&mut first).len(), 1);
    first.release_written();
    assert!(
        first.out.is_none(),
        "a written-out connection holds no queue"
    );
    assert_eq!(first.buffered_amount(), 0);
    // The next connection on this thread to send takes it, empty.
    second.send_text("hi").unwrap();
    let reused: *const OutBuf = &**second.out.as_ref().unwrap();
    assert_eq!(reused, queue);
    assert_eq!(
        take_output(&mut second),
        sframe(true, 0, OpCode::Text, b"hi")
    );
}

#[test]
fn a_spare_queue_forgets_its_connection_s_pongs() {
    // A burst of automatic pongs, written out: the spare starts a new count.
    let mut first = server();
    let ping = cframe(true, 0, OpCode::Ping, b"p");
    for _ in 0..PONG_BURST + 3 {
        let _ = feed(&mut first, &ping);
    }
    let pongs = take_output(&mut first);
    first.release_written();
    assert!(first.out.is_none());
    let mut second = server();
    for _ in 0..PONG_BURST + 1 {
        let _ = feed(&mut second, &ping);
    }
    let pong = sframe(true, 0, OpCode::Pong, b"p");
    assert_eq!(take_output(&mut second), pong.repeat(PONG_BURST + 1));
    assert!(pongs.len() < pong.len() * (PONG_BURST + 3));
}
