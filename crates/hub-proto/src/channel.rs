//! Channel names.
//!
//! A channel is `namespace:name`, or `name` alone for the default namespace
//! (`""`): 1 to 255 bytes of `A-Z a-z 0-9 _ - . : @ / =`. The namespace is what
//! precedes the first `:`. A name may also start with one `$`: such names
//! belong to the hub itself (for example `$sys:stats`), which refuses
//! publishes to them. Every valid name is ASCII.

/// The longest channel name, in bytes.
pub const MAX_CHANNEL_LEN: usize = 255;

/// Why a channel name is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NameError {
    /// The name is empty.
    #[error("a channel name must not be empty")]
    Empty,
    /// The name is longer than [`MAX_CHANNEL_LEN`] bytes.
    #[error("a channel name is at most 255 bytes, this one is {len}")]
    TooLong {
        /// The name's length in bytes.
        len: usize,
    },
    /// The name holds a character outside `A-Z a-z 0-9 _ - . : @ / =`.
    #[error("a channel name may hold only A-Z a-z 0-9 _ - . : @ / =, not {ch:?} (at byte {at})")]
    BadChar {
        /// The offending character.
        ch: char,
        /// Its byte offset in the name.
        at: usize,
    },
}

/// Whether `b` may appear in a channel name.
fn allowed(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':' | b'@' | b'/' | b'=')
}

/// Whether `name` is one of the hub's own channels (it starts with `$`):
/// no client publishes to them, and each node serves its own.
pub fn is_hub_channel(name: &str) -> bool {
    name.starts_with('$')
}

/// Checks `name` against the channel name rules.
pub fn validate_channel(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > MAX_CHANNEL_LEN {
        return Err(NameError::TooLong { len: name.len() });
    }
    let hub_owned = usize::from(name.len() > 1 && name.starts_with('$'));
    match name.bytes().skip(hub_owned).position(|b| !allowed(b)) {
        None => Ok(()),
        Some(at) => Err(NameError::BadChar {
            at: at + hub_owned,
            // `at` is the first byte that is not allowed ASCII, so a char starts there.
            ch: name[at + hub_owned..]
                .chars()
                .next()
                .unwrap_or(char::REPLACEMENT_CHARACTER),
        }),
    }
}

/// The namespace of channel `name`: what precedes its first `:`, or `""` (the
/// default namespace) when it has none.
pub fn namespace(name: &str) -> &str {
    match name.find(':') {
        Some(i) => &name[..i],
        None => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_names() {
        for name in [
            "a",
            "chat:lobby",
            "A-Z_a.z:0/9@x=y",
            ":x",
            "x:",
            "a:b:c",
            "$sys:stats",
            &"z".repeat(255),
        ] {
            assert_eq!(validate_channel(name), Ok(()), "{name}");
        }
    }

    #[test]
    fn invalid_names() {
        assert_eq!(validate_channel(""), Err(NameError::Empty));
        assert_eq!(
            validate_channel(&"z".repeat(256)),
            Err(NameError::TooLong { len: 256 })
        );
        assert_eq!(
            validate_channel("chat lobby"),
            Err(NameError::BadChar { ch: ' ', at: 4 })
        );
        assert_eq!(
            validate_channel("caf\u{e9}"),
            Err(NameError::BadChar {
                ch: '\u{e9}',
                at: 3
            })
        );
        assert_eq!(
            validate_channel("$$x"),
            Err(NameError::BadChar { ch: '$', at: 1 })
        );
        assert_eq!(
            validate_channel("$"),
            Err(NameError::BadChar { ch: '$', at: 0 })
        );
        assert_eq!(
            validate_channel("a$"),
            Err(NameError::BadChar { ch: '$', at: 1 })
        );
        for bad in ["a*", "a#", "a\0", "a\"", "a\\", "a+b", "a,b", "a\n"] {
            assert!(
                matches!(validate_channel(bad), Err(NameError::BadChar { at: 1, .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn namespaces() {
        assert_eq!(namespace("chat:lobby"), "chat");
        assert_eq!(namespace("lobby"), "");
        assert_eq!(namespace(":lobby"), "");
        assert_eq!(namespace("a:b:c"), "a");
    }

    #[test]
    fn errors_read_plainly() {
        assert_eq!(
            validate_channel("a b").unwrap_err().to_string(),
            "a channel name may hold only A-Z a-z 0-9 _ - . : @ / =, not ' ' (at byte 1)"
        );
    }
}
