//! permessage-deflate on a connection: a server fed arbitrary (mostly
//! compressed) frames never panics and never inflates past its limit; and
//! messages a client compresses round-trip exactly for every window size and
//! takeover mode.
//!
//! Input layout: byte 0 = window bits (9..=15 from the low bits) and takeover
//! flags; byte 1 = chunk size; the rest is split at its first 0xFF: before it,
//! messages to round-trip (split at 0xFE); after it, raw wire input.
#![no_main]

use bytes::Buf;
use duplex_proto::connection::{Config, Connection, Event};
use duplex_proto::deflate::{DeflateConfig, DeflateParams};
use duplex_proto::message::Message;
use libfuzzer_sys::fuzz_target;

fn params(byte: u8) -> DeflateParams {
    let bits = 9 + (byte & 0x07) % 7;
    DeflateParams {
        server_no_context_takeover: byte & 0x10 != 0,
        client_no_context_takeover: byte & 0x20 != 0,
        server_max_window_bits: Some(bits),
        client_max_window_bits: Some(bits),
    }
}

fn drain(conn: &mut Connection) -> (Vec<Event>, bool) {
    let mut events = Vec::new();
    loop {
        match conn.poll_event() {
            Ok(Some(event)) => events.push(event),
            Ok(None) => return (events, false),
            Err(_) => return (events, true),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let [setup, chunk, rest @ ..] = data else {
        return;
    };
    let p = params(*setup);
    let policy = DeflateConfig {
        threshold: 0,
        ..DeflateConfig::default()
    };
    let (messages, raw) = match rest.iter().position(|&b| b == 0xFF) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[][..]),
    };

    // Round trip: client compresses, server inflates, content is exact.
    let mut client =
        Connection::client(Config::default(), Box::new(|| [1, 2, 3, 4])).with_deflate(p, &policy);
    let mut server = Connection::server(Config::default()).with_deflate(p, &policy);
    let sent: Vec<Message> = messages
        .split(|&b| b == 0xFE)
        .map(|m| Message::binary(m.to_vec()))
        .collect();
    for message in &sent {
        client.send(message.clone()).expect("open connection sends");
    }
    let out = client.transmit();
    let wire = out.copy_to_bytes(out.remaining());
    for piece in wire.chunks(usize::from(*chunk).max(1)) {
        server.receive(piece);
    }
    let (events, failed) = drain(&mut server);
    assert!(!failed, "own compressed output rejected");
    let expected: Vec<Event> = sent.into_iter().map(Event::Message).collect();
    assert_eq!(events, expected);

    // Arbitrary input after that: bounded, no panic.
    let limit = 4096;
    let config = Config {
        max_message_size: limit,
        ..Config::default()
    };
    let mut victim = Connection::server(config).with_deflate(p, &policy);
    victim.receive(raw);
    let (events, _) = drain(&mut victim);
    for event in events {
        if let Event::Message(message) = event {
            assert!(message.payload().len() <= limit);
        }
    }
});
