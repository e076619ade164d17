//! The payloads `duplex bench fanout` publishes and the stamp every
//! subscriber finds in what it receives.
//!
//! Invariant: every payload is a JSON object that starts with
//! `{"fanout":[SEQ,TS],` and parses back to `(SEQ, TS)` with
//! [`parse_stamp`], wherever it sits inside a server's envelope.

/// What every payload starts with, before the sequence number.
const MARKER: &[u8] = b"\"fanout\":[";

/// The payload of message `seq` sent at `ts` (nanoseconds since the origin):
/// `{"fanout":[SEQ,TS],"pad":"xxx…"}`, `size` bytes when that fits.
pub(super) fn payload(seq: u64, ts: u64, size: usize) -> String {
    use std::fmt::Write as _;
    let mut text = String::with_capacity(size.max(48));
    let _ = write!(text, "{{\"fanout\":[{seq},{ts}],\"pad\":\"");
    let pad = size.saturating_sub(text.len() + 2);
    text.extend(std::iter::repeat_n('x', pad));
    text.push_str("\"}");
    text
}

/// Users of [`chat_payload`]'s threads.
const CHAT_USERS: [&str; 6] = ["ada", "grace", "linus", "margaret", "ken", "barbara"];
/// Words of [`chat_payload`]'s texts.
const CHAT_WORDS: [&str; 48] = [
    "the", "build", "is", "green", "again", "on", "main", "so", "we", "can", "ship", "today",
    "after", "lunch", "who", "has", "the", "release", "notes", "I", "will", "review", "your",
    "change", "to", "drain", "test", "looks", "good", "but", "please", "add", "a", "comment",
    "about", "timing", "meeting", "moved", "three", "room", "four", "thanks", "sounds", "great",
    "let", "me", "know", "when",
];

/// The payload of message `seq` sent at `ts` as chat text:
/// `{"fanout":[SEQ,TS],"room":"general","msgs":[{"user":"ada","text":"…"},…]}`,
/// `size` bytes when that fits (else [`payload`]'s). Each message's thread
/// is drawn afresh from `seq`: entries of 20 to 160 characters of words.
pub(super) fn chat_payload(seq: u64, ts: u64, size: usize) -> String {
    let mut state = seq.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut next = move |n: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % n as u64) as usize
    };
    let prefix = format!("{{\"fanout\":[{seq},{ts}],\"room\":\"general\",\"msgs\":[");
    let mut entries: Vec<(&str, String)> = Vec::new();
    // `{"user":"","text":""}` and the `]}` that ends the payload.
    let entry = |user: &str| 21 + user.len();
    let mut total = prefix.len() + 2;
    loop {
        let user = CHAT_USERS[next(CHAT_USERS.len())];
        let overhead = entry(user) + usize::from(!entries.is_empty());
        if total + overhead + 8 > size {
            break;
        }
        let want = (20 + next(141)).min(size - total - overhead);
        let mut text = String::with_capacity(want);
        while text.len() < want {
            if !text.is_empty() {
                text.push(' ');
            }
            text.push_str(CHAT_WORDS[next(CHAT_WORDS.len())]);
        }
        text.truncate(want);
        total += overhead + text.len();
        entries.push((user, text));
    }
    let Some(last) = entries.last_mut() else {
        return payload(seq, ts, size);
    };
    while total < size {
        let word = CHAT_WORDS[next(CHAT_WORDS.len())];
        let add = (word.len() + 1).min(size - total);
        last.1.push_str(&format!(" {word}")[..add]);
        total += add;
    }
    let mut text = prefix;
    for (i, (user, words)) in entries.iter().enumerate() {
        if i > 0 {
            text.push(',');
        }
        text.push_str(&format!("{{\"user\":\"{user}\",\"text\":\"{words}\"}}"));
    }
    text.push_str("]}");
    text
}

/// Finds the marker in a received message and parses `(seq, ts)`.
pub(super) fn parse_stamp(bytes: &[u8]) -> Option<(u64, u64)> {
    let at = memchr::memmem::find(bytes, MARKER)? + MARKER.len();
    let rest = &bytes[at..];
    let (seq, used) = parse_u64(rest)?;
    let rest = rest.get(used..)?.strip_prefix(b",")?;
    let (ts, _) = parse_u64(rest)?;
    Some((seq, ts))
}

/// A decimal number at the start of `bytes`, and the digits it took.
fn parse_u64(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut value: u64 = 0;
    let mut used = 0;
    for &b in bytes {
        if !b.is_ascii_digit() {
            break;
        }
        value = value.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
        used += 1;
    }
    (used > 0).then_some((value, used))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_have_the_requested_size_and_parse_back() {
        for size in [0, 40, 100, 1000] {
            let text = payload(123, 456_789, size);
            if size >= 40 {
                assert_eq!(text.len(), size, "{text}");
            }
            serde_json::from_str::<serde_json::Value>(&text).unwrap();
            assert_eq!(parse_stamp(text.as_bytes()), Some((123, 456_789)));
        }
    }

    #[test]
    fn chat_payloads_have_the_requested_size_and_parse_back() {
        for size in [100, 1000, 1024, 4096] {
            for seq in [1, 2, 123_456] {
                let text = chat_payload(seq, 456_789_012, size);
                assert_eq!(text.len(), size, "{text}");
                let value: serde_json::Value = serde_json::from_str(&text).unwrap();
                assert!(value["msgs"][0]["text"].is_string(), "{text}");
                assert_eq!(parse_stamp(text.as_bytes()), Some((seq, 456_789_012)));
            }
        }
        assert_ne!(
            chat_payload(1, 0, 1000)[20..],
            chat_payload(2, 0, 1000)[20..]
        );
    }

    #[test]
    fn stamps_are_found_inside_the_hub_envelope() {
        let data = payload(7, 99, 100);
        let envelope = format!(
            "{{\"op\":\"message\",\"channel\":\"bench\",\"offset\":8,\"time\":1,\
             \"from\":{{\"user\":\"\",\"client\":\"c1\"}},\"data\":{data}}}"
        );
        assert_eq!(parse_stamp(envelope.as_bytes()), Some((7, 99)));
        assert_eq!(parse_stamp(b"{\"op\":\"pong\"}"), None);
        assert_eq!(parse_stamp(b"\"fanout\":[1,"), None);
        assert_eq!(parse_stamp(b"\"fanout\":[99999999999999999999999,1]"), None);
    }
}
