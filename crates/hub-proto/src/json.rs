//! A small JSON object writer for the encoders.
//!
//! Keys are `'static` ASCII names that need no escaping; string values are
//! escaped per RFC 8259 (`"`, `\` and the control characters U+0000–U+001F;
//! everything else, including non-ASCII, is written as UTF-8); raw values are
//! [`crate::JsonText`] written verbatim. The output is always one valid JSON
//! object once [`ObjectWriter::finish`] has run.

/// Whether `b` must be escaped inside a JSON string.
fn needs_escape(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\'
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Appends the escape of `b`, one of the bytes [`needs_escape`] selects.
fn write_escape(out: &mut String, b: u8) {
    let short = match b {
        b'"' => "\\\"",
        b'\\' => "\\\\",
        b'\n' => "\\n",
        b'\r' => "\\r",
        b'\t' => "\\t",
        0x08 => "\\b",
        0x0c => "\\f",
        _ => {
            let hex = [
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xf)],
            ];
            out.extend(hex.iter().map(|&b| char::from(b)));
            return;
        }
    };
    out.push_str(short);
}

/// Appends `s` as a JSON string (with quotes).
pub(crate) fn write_str(out: &mut String, s: &str) {
    out.push('"');
    // Most strings need no escape: check the whole string without an early
    // exit (which vectorises), then copy it in one go.
    if !s.bytes().fold(false, |any, b| any | needs_escape(b)) {
        out.push_str(s);
        out.push('"');
        return;
    }
    let mut rest = s;
    while let Some(i) = rest.bytes().position(needs_escape) {
        // The byte at `i` is ASCII, so `i` and `i + 1` are char boundaries.
        out.push_str(&rest[..i]);
        write_escape(out, rest.as_bytes()[i]);
        rest = &rest[i + 1..];
    }
    out.push_str(rest);
    out.push('"');
}

/// "00", "01", … "99": two digits per division.
const DIGIT_PAIRS: &[u8; 200] = b"\
0001020304050607080910111213141516171819\
2021222324252627282930313233343536373839\
4041424344454647484950515253545556575859\
6061626364656667686970717273747576777879\
8081828384858687888990919293949596979899";

/// Appends `n` in decimal.
pub(crate) fn write_u64(out: &mut String, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    while n >= 100 {
        let pair = usize::from((n % 100) as u8) * 2;
        n /= 100;
        i -= 2;
        buf[i..i + 2].copy_from_slice(&DIGIT_PAIRS[pair..pair + 2]);
    }
    if n >= 10 {
        let pair = usize::from(n as u8) * 2;
        i -= 2;
        buf[i..i + 2].copy_from_slice(&DIGIT_PAIRS[pair..pair + 2]);
    } else {
        i -= 1;
        buf[i] = b'0' + n as u8;
    }
    // Only ASCII digits were written.
    out.push_str(std::str::from_utf8(&buf[i..]).unwrap_or_default());
}

/// The length of `s` once written by [`write_str`], give or take escapes: a
/// capacity hint.
pub(crate) fn str_hint(s: &str) -> usize {
    s.len() + 2
}

/// Writes one JSON object, field by field, `op` first.
pub(crate) struct ObjectWriter {
    out: String,
}

impl ObjectWriter {
    /// Starts `{"op":"<op>"` with room for about `capacity` bytes.
    pub(crate) fn new(op: &'static str, capacity: usize) -> Self {
        let mut out = String::with_capacity(capacity + 16);
        out.push_str("{\"op\":\"");
        out.push_str(op);
        out.push('"');
        Self { out }
    }

    fn key(&mut self, key: &'static str) {
        self.out.push_str(",\"");
        self.out.push_str(key);
        self.out.push_str("\":");
    }

    pub(crate) fn str(&mut self, key: &'static str, value: &str) {
        self.key(key);
        write_str(&mut self.out, value);
    }

    pub(crate) fn opt_str(&mut self, key: &'static str, value: Option<&str>) {
        if let Some(value) = value {
            self.str(key, value);
        }
    }

    pub(crate) fn u64(&mut self, key: &'static str, value: u64) {
        self.key(key);
        write_u64(&mut self.out, value);
    }

    pub(crate) fn opt_u64(&mut self, key: &'static str, value: Option<u64>) {
        if let Some(value) = value {
            self.u64(key, value);
        }
    }

    pub(crate) fn bool(&mut self, key: &'static str, value: bool) {
        self.key(key);
        self.out.push_str(if value { "true" } else { "false" });
    }

    /// `"key":{"epoch":…,"offset":…}`.
    pub(crate) fn since(&mut self, key: &'static str, epoch: &str, offset: u64) {
        self.key(key);
        self.out.push_str("{\"epoch\":");
        write_str(&mut self.out, epoch);
        self.out.push_str(",\"offset\":");
        write_u64(&mut self.out, offset);
        self.out.push('}');
    }

    /// `"key":{"user":…,"client":…}`.
    pub(crate) fn client_info(&mut self, key: &'static str, user: &str, client: &str) {
        self.key(key);
        self.client_object(user, client);
    }

    fn client_object(&mut self, user: &str, client: &str) {
        self.out.push_str("{\"user\":");
        write_str(&mut self.out, user);
        self.out.push_str(",\"client\":");
        write_str(&mut self.out, client);
        self.out.push('}');
    }

    /// `"key":[{"user":…,"client":…},…]`.
    pub(crate) fn client_list<'a>(
        &mut self,
        key: &'static str,
        clients: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) {
        self.key(key);
        self.out.push('[');
        for (i, (user, client)) in clients.into_iter().enumerate() {
            if i > 0 {
                self.out.push(',');
            }
            self.client_object(user, client);
        }
        self.out.push(']');
    }

    /// `"key":<json>`, the text written verbatim (it must be one JSON value).
    pub(crate) fn raw(&mut self, key: &'static str, json: &str) {
        self.key(key);
        self.out.push_str(json);
    }

    /// Closes the object.
    pub(crate) fn finish(mut self) -> String {
        self.out.push('}');
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn escaped(s: &str) -> String {
        let mut out = String::new();
        write_str(&mut out, s);
        out
    }

    #[test]
    fn strings_escape_like_rfc_8259() {
        assert_eq!(escaped(""), "\"\"");
        assert_eq!(escaped("plain"), "\"plain\"");
        assert_eq!(escaped("a\"b\\c"), "\"a\\\"b\\\\c\"");
        assert_eq!(
            escaped("\u{0}\u{8}\t\n\u{b}\u{c}\r\u{1f}"),
            "\"\\u0000\\b\\t\\n\\u000b\\f\\r\\u001f\""
        );
        assert_eq!(escaped("/\u{7f}é😀\u{2028}"), "\"/\u{7f}é😀\u{2028}\"");
        for s in ["\u{0}x\"é\\\n😀", "\u{1}\u{2}\u{3}", "tail\\"] {
            assert_eq!(serde_json::from_str::<String>(&escaped(s)).unwrap(), s);
        }
    }

    #[test]
    fn numbers() {
        for n in [
            0,
            1,
            9,
            10,
            11,
            99,
            100,
            101,
            999,
            1000,
            12345,
            u64::MAX - 1,
            u64::MAX,
        ] {
            let mut out = String::new();
            write_u64(&mut out, n);
            assert_eq!(out, n.to_string());
        }
    }

    #[test]
    fn objects() {
        let mut w = ObjectWriter::new("x", 0);
        w.u64("id", 3);
        w.opt_u64("none", None);
        w.str("s", "a\"");
        w.bool("b", false);
        w.since("since", "e", 4);
        w.client_list("clients", [("u", "c"), ("v", "d")]);
        w.raw("data", "[1, 2]");
        assert_eq!(
            w.finish(),
            r#"{"op":"x","id":3,"s":"a\"","b":false,"since":{"epoch":"e","offset":4},"clients":[{"user":"u","client":"c"},{"user":"v","client":"d"}],"data":[1, 2]}"#
        );
    }
}
