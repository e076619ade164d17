//! # duplex-benches: inputs for the duplex-proto micro-benchmarks
//!
//! The criterion benchmarks in `benches/` (`mask`, `utf8`, `parse`, `deflate`)
//! and the `deflate_ratio` example all build their inputs here, so every
//! benchmark and every peer reads exactly the same bytes. Everything is
//! deterministic: a fixed-seed generator, no clock, no system randomness, so
//! two runs (or two machines) measure the same work.
//!
//! The benchmarks measure this thread's CPU time by default ([`measure`]),
//! which a busy shared machine disturbs less than wall-clock time; set
//! `DUPLEX_BENCH_CLOCK=wall` for criterion's usual wall clock.
//!
//! See `docs/benchmarks.md` at the workspace root for the commands and results.

pub mod measure;

use bytes::BytesMut;
use duplex_proto::connection::{Config, Connection, Event};
use duplex_proto::deflate::{DeflateConfig, DeflateParams};
use duplex_proto::frame::{OpCode, encode_frame};

/// The payload sizes the byte-throughput benchmarks (`mask`, `utf8`) run at:
/// 20 B, 1 KiB, 16 KiB, 1 MiB.
pub const PAYLOAD_SIZES: [usize; 4] = [20, 1 << 10, 16 << 10, 1 << 20];

/// The `parse` benchmark's cases: payload length and the approximate wire
/// bytes of one batch (64 KiB of 20-byte frames, 256 KiB of 1 KiB ones, 1 MiB
/// of 16 KiB ones).
pub const PARSE_CASES: [(usize, usize); 3] =
    [(20, 64 << 10), (1 << 10, 256 << 10), (16 << 10, 1 << 20)];

/// A small deterministic pseudo-random generator (SplitMix64), enough to vary
/// benchmark inputs without a dependency.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator started from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// One element of `items` (non-empty).
    pub fn pick<'a, T: ?Sized>(&mut self, items: &[&'a T]) -> &'a T {
        items[self.below(items.len())]
    }

    /// Four random bytes, e.g. a masking key.
    pub fn key(&mut self) -> [u8; 4] {
        (self.next_u64() as u32).to_le_bytes()
    }
}

/// Random bytes of length `len` (for masking: the content does not matter).
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = SplitMix64::new(seed);
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        out.extend_from_slice(&rng.next_u64().to_le_bytes());
    }
    out.truncate(len);
    out
}

/// The `memcpy` yardstick: copies `len` bytes between two buffers laid out
/// the same way on every run, both 64-byte aligned and 2 KiB apart modulo
/// 4 KiB.
///
/// Where two freshly allocated buffers land varies between programs and
/// runs, and glibc's `memcpy` on this machine (AVX2, `rep movsb` for mid
/// sizes) runs anywhere from ~2.5 to ~80 GiB/s at 16 KiB depending on how
/// source and destination sit relative to each other modulo 4 KiB. A fixed,
/// favourable layout makes the yardstick repeatable and, if anything, fast.
#[derive(Debug, Clone)]
pub struct AlignedCopy {
    buf: Vec<u8>,
    src: usize,
    dst: usize,
    len: usize,
}

impl AlignedCopy {
    /// Buffers for copying `src`, which is copied in as the source.
    pub fn new(src: &[u8]) -> Self {
        let len = src.len();
        let mut buf = vec![0u8; 2 * len + 8192 + 64];
        let start = buf.as_ptr().align_offset(64);
        let dst = start + len.next_multiple_of(4096) + 2048;
        buf[start..start + len].copy_from_slice(src);
        Self {
            buf,
            src: start,
            dst,
            len,
        }
    }

    /// Copies the source into the destination (one `memcpy` of `len` bytes).
    #[inline]
    pub fn copy(&mut self) {
        let (left, right) = self.buf.split_at_mut(self.dst);
        right[..self.len].copy_from_slice(&left[self.src..self.src + self.len]);
    }

    /// The destination, as last copied.
    pub fn dst(&self) -> &[u8] {
        &self.buf[self.dst..self.dst + self.len]
    }
}

const ASCII_WORDS: &[&str] = &[
    "the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "message", "server", "client",
    "frame", "socket", "hello", "world", "channel", "presence", "offset", "history", "ok",
];

const MULTIBYTE_WORDS: &[&str] = &[
    "héllo",
    "naïve",
    "café",
    "κόσμε",
    "привет",
    "日本語",
    "中文",
    "€100",
    "😀",
    "🚀ok",
];

/// Valid UTF-8 text of exactly `len` bytes: mostly ASCII words, with about one
/// word in eight multi-byte (2-, 3- and 4-byte sequences), like chat text.
/// About 5% of the bytes are non-ASCII.
pub fn mixed_text(len: usize, seed: u64) -> String {
    let mut rng = SplitMix64::new(seed);
    let mut out = String::with_capacity(len + 16);
    while out.len() < len {
        let word = if rng.below(8) == 0 {
            rng.pick(MULTIBYTE_WORDS)
        } else {
            rng.pick(ASCII_WORDS)
        };
        if out.len() + word.len() + 1 > len {
            break;
        }
        out.push_str(word);
        out.push(' ');
    }
    while out.len() < len {
        out.push('.');
    }
    debug_assert_eq!(out.len(), len);
    out
}

/// A stream of `count` single-frame masked text messages, as a client sends
/// them, each with a payload of exactly `payload_len` bytes of
/// [`mixed_text`] and its own masking key.
pub fn masked_text_frames(payload_len: usize, count: usize, seed: u64) -> Vec<u8> {
    let mut rng = SplitMix64::new(seed);
    let mut out = BytesMut::new();
    for i in 0..count {
        let text = mixed_text(payload_len, seed.wrapping_add(i as u64));
        encode_frame(
            true,
            0,
            OpCode::Text,
            Some(rng.key()),
            text.as_bytes(),
            &mut out,
        );
    }
    out.to_vec()
}

/// The number of frames of `payload_len` bytes that fill about `total` bytes
/// of wire (at least one).
pub fn frames_for(payload_len: usize, total: usize) -> usize {
    let frame_len = payload_len + duplex_proto::frame::header_len(payload_len as u64, true);
    (total / frame_len).max(1)
}

const USERS: &[&str] = &[
    "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy", "mallory",
    "niaj", "olivia", "peggy", "rupert", "sybil", "trent", "victor", "walter", "zoé",
];

const ROOMS: &[&str] = &["general", "random", "dev", "ops", "support", "music"];

/// Words chat text is drawn from: common English, some chat slang, a few
/// names, numbers and non-ASCII words. Each message picks its own random
/// sequence, so texts repeat words but not sentences.
const CHAT_WORDS: &[&str] = &[
    "the",
    "a",
    "to",
    "and",
    "is",
    "it",
    "you",
    "that",
    "of",
    "in",
    "for",
    "on",
    "this",
    "we",
    "i",
    "be",
    "have",
    "not",
    "with",
    "are",
    "was",
    "but",
    "just",
    "so",
    "can",
    "what",
    "do",
    "if",
    "at",
    "my",
    "me",
    "no",
    "yes",
    "ok",
    "will",
    "all",
    "get",
    "about",
    "now",
    "out",
    "there",
    "they",
    "one",
    "like",
    "up",
    "when",
    "how",
    "time",
    "think",
    "know",
    "see",
    "today",
    "tomorrow",
    "deploy",
    "build",
    "test",
    "tests",
    "review",
    "merge",
    "branch",
    "server",
    "client",
    "database",
    "cache",
    "staging",
    "production",
    "latency",
    "error",
    "logs",
    "metrics",
    "dashboard",
    "ticket",
    "meeting",
    "standup",
    "lunch",
    "coffee",
    "weekend",
    "release",
    "rollback",
    "config",
    "migration",
    "queue",
    "timeout",
    "memory",
    "thanks",
    "please",
    "sorry",
    "great",
    "cool",
    "nice",
    "weird",
    "broken",
    "fixed",
    "slow",
    "fast",
    "again",
    "still",
    "maybe",
    "probably",
    "definitely",
    "lol",
    "btw",
    "imo",
    "afaik",
    "brb",
    "+1",
    "👍",
    "😅",
    "🎉",
    "café",
    "déjà",
    "vu",
    "naïve",
    "über",
    "v2",
    "42",
    "3.14",
    "10ms",
    "500",
    "#1234",
    "@alice",
    "@bob",
    "PR",
    "CI",
    "API",
];

/// `count` realistic chat messages as JSON text (about 100-300 bytes each):
/// the same keys every time, varying users, rooms, ids, timestamps and text.
pub fn chat_messages(count: usize, seed: u64) -> Vec<String> {
    let mut rng = SplitMix64::new(seed);
    let mut ts: u64 = 1_760_000_000_000;
    (0..count)
        .map(|i| {
            ts += 200 + rng.below(5_000) as u64;
            let user = rng.pick(USERS);
            let room = rng.pick(ROOMS);
            let words = 1 + rng.below(20);
            let mut text = String::new();
            for w in 0..words {
                if w > 0 {
                    text.push(' ');
                }
                text.push_str(rng.pick(CHAT_WORDS));
            }
            if rng.below(3) == 0 {
                text.push('?');
            }
            let reply = if rng.below(4) == 0 {
                format!("{}", 1_000 + rng.below(i + 1))
            } else {
                "null".to_owned()
            };
            format!(
                concat!(
                    r#"{{"type":"message","channel":"room:{room}","offset":{offset},"#,
                    r#""id":"msg-{id:08x}","user":{{"id":"u-{uid:04}","name":"{user}"}},"#,
                    r#""ts":{ts},"reply_to":{reply},"text":"{text}"}}"#
                ),
                room = room,
                offset = 1_000 + i,
                id = rng.next_u64() as u32,
                uid = USERS.iter().position(|u| u == &user).unwrap_or(0),
                user = user,
                ts = ts,
                reply = reply,
                text = text,
            )
        })
        .collect()
}

/// One permessage-deflate setup to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeflateCase {
    /// Window bits, both directions.
    pub window_bits: u8,
    /// Context takeover kept between messages (both directions).
    pub context_takeover: bool,
}

impl DeflateCase {
    /// The four setups the benchmarks report: windows 15 and 10, with and
    /// without context takeover.
    pub const ALL: [DeflateCase; 4] = [
        DeflateCase {
            window_bits: 15,
            context_takeover: true,
        },
        DeflateCase {
            window_bits: 15,
            context_takeover: false,
        },
        DeflateCase {
            window_bits: 10,
            context_takeover: true,
        },
        DeflateCase {
            window_bits: 10,
            context_takeover: false,
        },
    ];

    /// A short label, e.g. `w15-takeover` or `w10-no-takeover`.
    pub fn label(&self) -> String {
        format!(
            "w{}-{}",
            self.window_bits,
            if self.context_takeover {
                "takeover"
            } else {
                "no-takeover"
            }
        )
    }

    /// The negotiated parameters both ends use.
    pub fn params(&self) -> DeflateParams {
        DeflateParams {
            server_no_context_takeover: !self.context_takeover,
            client_no_context_takeover: !self.context_takeover,
            server_max_window_bits: Some(self.window_bits),
            client_max_window_bits: Some(self.window_bits),
        }
    }

    /// A sending server (threshold 0: every message is compressed, level 6)
    /// and a receiving client, both with permessage-deflate as negotiated.
    pub fn pair(&self) -> (Connection, Connection) {
        let params = self.params();
        let server_config = DeflateConfig {
            server_max_window_bits: self.window_bits,
            client_max_window_bits: self.window_bits,
            server_no_context_takeover: !self.context_takeover,
            client_no_context_takeover: !self.context_takeover,
            threshold: 0,
            ..DeflateConfig::default()
        };
        let client_config = DeflateConfig {
            threshold: 0,
            ..server_config.clone()
        };
        let server = Connection::server(Config::default()).with_deflate(params, &server_config);
        let client = Connection::client(Config::default(), Box::new(|| [0x12, 0x34, 0x56, 0x78]))
            .with_deflate(params, &client_config);
        (server, client)
    }
}

/// Moves everything `from` has queued to transmit into `to`'s receive
/// buffer, and returns the number of bytes moved.
pub fn pump(from: &mut Connection, to: &mut Connection) -> usize {
    use bytes::Buf;
    let out = from.transmit();
    let mut moved = 0;
    while out.has_remaining() {
        let chunk = out.chunk();
        let n = chunk.len();
        to.receive(chunk);
        out.advance(n);
        moved += n;
    }
    moved
}

/// Sends each of `messages` from `server` to `client` and reads them there,
/// one message at a time. Returns the bytes on the wire and the number of
/// messages the client received (panics on any protocol error).
pub fn send_through(
    server: &mut Connection,
    client: &mut Connection,
    messages: &[String],
) -> (usize, usize) {
    let mut wire = 0;
    let mut received = 0;
    for message in messages {
        server.send_text(message).expect("send");
        wire += pump(server, client);
        while let Some(event) = client.poll_event().expect("receive") {
            if let Event::Message(m) = event {
                debug_assert_eq!(m.payload().len(), message.len());
                received += 1;
            }
        }
    }
    (wire, received)
}

#[cfg(test)]
mod tests {
    use super::*;
    use duplex_proto::message::Message;

    #[test]
    fn aligned_copy_copies_and_aligns() {
        for len in [0, 20, 1024, 16 << 10] {
            let src = random_bytes(len, 5);
            let mut copy = AlignedCopy::new(&src);
            copy.copy();
            assert_eq!(copy.dst(), &src[..]);
            assert_eq!(copy.dst().as_ptr() as usize % 64, 0);
            assert_eq!((copy.dst + 4096 - copy.src) % 4096, 2048);
        }
    }

    #[test]
    fn mixed_text_has_exact_length_and_some_multibyte() {
        for len in [0, 1, 20, 1024, 16 << 10] {
            let text = mixed_text(len, 7);
            assert_eq!(text.len(), len);
        }
        let text = mixed_text(16 << 10, 7);
        let non_ascii = text.bytes().filter(|b| !b.is_ascii()).count();
        assert!(non_ascii > 100, "{non_ascii} non-ASCII bytes");
        assert!(non_ascii < text.len() / 5, "{non_ascii} non-ASCII bytes");
    }

    #[test]
    fn masked_frames_parse_back_into_the_same_messages() {
        let count = frames_for(20, 64 << 10);
        let wire = masked_text_frames(20, count, 1);
        let mut server = Connection::server(Config::default());
        server.receive(&wire);
        let mut seen = 0;
        while let Some(event) = server.poll_event().expect("valid stream") {
            match event {
                Event::Message(Message::Text(text)) => {
                    assert_eq!(text.as_str(), mixed_text(20, 1 + seen as u64));
                    seen += 1;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(seen, count);
    }

    #[test]
    fn chat_messages_are_json_sized_and_vary() {
        let messages = chat_messages(200, 3);
        for m in &messages {
            assert!((100..=400).contains(&m.len()), "{} bytes: {m}", m.len());
            assert!(m.starts_with('{') && m.ends_with('}'));
        }
        assert_ne!(messages[0], messages[1]);
    }

    #[test]
    fn every_deflate_case_round_trips() {
        let messages = chat_messages(50, 9);
        for case in DeflateCase::ALL {
            let (mut server, mut client) = case.pair();
            let (wire, received) = send_through(&mut server, &mut client, &messages);
            assert_eq!(received, messages.len(), "{}", case.label());
            let plain: usize = messages.iter().map(String::len).sum();
            assert!(wire < plain, "{}: {wire} >= {plain}", case.label());
        }
    }
}
