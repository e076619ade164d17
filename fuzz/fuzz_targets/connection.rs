//! A server `Connection` fed arbitrary bytes never panics, never buffers past
//! its limits, gives the same events and error however the input is split,
//! and after an error produces nothing more.
//!
//! Input layout: byte 0 = options (bit 0 streaming, bit 1 small limits,
//! bit 2 auto-pong off, bits 3-7 chunk size); the rest is the wire input.
#![no_main]

use bytes::Buf;
use duplex_proto::connection::{Config, Connection, Event, ReceiveMode};
use libfuzzer_sys::fuzz_target;

fn config(options: u8) -> Config {
    let mut config = Config::default();
    if options & 1 != 0 {
        config.receive_mode = ReceiveMode::Streaming;
    }
    if options & 2 != 0 {
        config.max_frame_size = 64;
        config.max_message_size = 100;
        config.max_fragments = 4;
    }
    config.auto_pong = options & 4 == 0;
    config
}

fn run(options: u8, input: &[u8], chunk: usize) -> (Vec<Event>, Option<String>, Vec<u8>) {
    let config = config(options);
    let limit = config.max_message_size;
    let mut conn = Connection::server(config);
    let mut events = Vec::new();
    let mut error = None;
    'feed: for piece in input.chunks(chunk.max(1)) {
        conn.receive(piece);
        loop {
            match conn.poll_event() {
                Ok(Some(event)) => {
                    if let Event::Message(message) = &event {
                        assert!(message.payload().len() <= limit);
                    }
                    events.push(event);
                }
                Ok(None) => break,
                Err(e) => {
                    error = Some(e.to_string());
                    assert!(
                        matches!(conn.poll_event(), Ok(None)),
                        "events after an error"
                    );
                    break 'feed;
                }
            }
        }
    }
    let out = conn.transmit();
    let bytes = out.copy_to_bytes(out.remaining()).to_vec();
    (events, error, bytes)
}

fuzz_target!(|data: &[u8]| {
    let Some((&options, input)) = data.split_first() else {
        return;
    };
    let whole = run(options, input, input.len());
    let split = run(options, input, usize::from(options >> 3) + 1);
    if options & 1 == 0 {
        // Whole mode: identical events, error and output.
        assert_eq!(whole, split);
    } else {
        // Streaming mode: data chunks follow the input split; the rest agrees.
        assert_eq!(whole.1, split.1);
        assert_eq!(whole.2, split.2);
    }
});
