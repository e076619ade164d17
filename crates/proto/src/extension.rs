//! The `Sec-WebSocket-Extensions` header grammar (RFC 6455 §9.1, RFC 7230 §3.2.6).
//!
//! ```text
//! extension-list = 1#extension
//! extension      = extension-token *( ";" extension-param )
//! extension-param = token [ "=" ( token / quoted-string ) ]
//! ```
//!
//! Several header lines are one comma-separated list. Optional whitespace may
//! surround `,`, `;` and `=`; empty list elements are skipped (RFC 7230 §7).
//! A quoted-string value is unescaped and must then itself be a token.
//!
//! Invariant: [`parse_extensions`] accepts exactly this grammar and
//! [`ExtensionOffer`]'s `Display` writes it back in canonical form.

use std::fmt;

/// One element of an extension list: a name and its parameters in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtensionOffer {
    /// The extension token, such as `permessage-deflate`.
    pub name: String,
    /// Parameters in the order given; a parameter without `=` has no value.
    pub params: Vec<(String, Option<String>)>,
}

impl ExtensionOffer {
    /// An offer named `name` with no parameters.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            params: Vec::new(),
        }
    }

    /// Adds a parameter, builder style.
    pub fn param(mut self, name: impl Into<String>, value: Option<String>) -> Self {
        self.params.push((name.into(), value));
        self
    }
}

impl fmt::Display for ExtensionOffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        for (name, value) in &self.params {
            match value {
                Some(value) => write!(f, "; {name}={value}")?,
                None => write!(f, "; {name}")?,
            }
        }
        Ok(())
    }
}

/// The header value does not follow the extension grammar.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed Sec-WebSocket-Extensions header: {0}")]
pub struct ExtensionParseError(pub &'static str);

/// RFC 7230 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Whether `s` is a non-empty RFC 7230 token.
pub fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_tchar)
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn skip_ows(&mut self) {
        while matches!(self.bytes.get(self.pos), Some(b' ' | b'\t')) {
            self.pos += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn token(&mut self) -> Result<&'a str, ExtensionParseError> {
        let start = self.pos;
        while self.peek().is_some_and(is_tchar) {
            self.pos += 1;
        }
        if start == self.pos {
            return Err(ExtensionParseError("expected a token"));
        }
        Ok(std::str::from_utf8(&self.bytes[start..self.pos]).expect("tchar is ASCII"))
    }

    fn quoted_string(&mut self) -> Result<String, ExtensionParseError> {
        self.pos += 1; // opening quote
        let mut out = String::new();
        loop {
            match self.peek() {
                None => return Err(ExtensionParseError("unterminated quoted-string")),
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    let escaped = self
                        .bytes
                        .get(self.pos + 1)
                        .copied()
                        .ok_or(ExtensionParseError("unterminated quoted-string"))?;
                    out.push(char::from(escaped));
                    self.pos += 2;
                }
                Some(b) => {
                    out.push(char::from(b));
                    self.pos += 1;
                }
            }
        }
    }
}

/// Parses one or more `Sec-WebSocket-Extensions` header values into offers, in order.
pub fn parse_extensions<'a, I>(values: I) -> Result<Vec<ExtensionOffer>, ExtensionParseError>
where
    I: IntoIterator<Item = &'a [u8]>,
{
    let mut offers = Vec::new();
    for value in values {
        let mut c = Cursor {
            bytes: value,
            pos: 0,
        };
        loop {
            c.skip_ows();
            match c.peek() {
                None => break,
                Some(b',') => {
                    c.pos += 1;
                    continue;
                }
                Some(_) => {}
            }
            let mut offer = ExtensionOffer::new(c.token()?);
            loop {
                c.skip_ows();
                match c.peek() {
                    None | Some(b',') => break,
                    Some(b';') => c.pos += 1,
                    Some(_) => return Err(ExtensionParseError("expected ';' or ','")),
                }
                c.skip_ows();
                let name = c.token()?.to_owned();
                c.skip_ows();
                let value = if c.peek() == Some(b'=') {
                    c.pos += 1;
                    c.skip_ows();
                    let value = if c.peek() == Some(b'"') {
                        c.quoted_string()?
                    } else {
                        c.token()?.to_owned()
                    };
                    if !is_token(&value) {
                        return Err(ExtensionParseError("parameter value is not a token"));
                    }
                    Some(value)
                } else {
                    None
                };
                offer.params.push((name, value));
            }
            offers.push(offer);
        }
    }
    Ok(offers)
}

/// Writes `offers` as one header value, comma-separated.
pub fn format_extensions(offers: &[ExtensionOffer]) -> String {
    offers
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(values: &[&str]) -> Result<Vec<ExtensionOffer>, ExtensionParseError> {
        parse_extensions(values.iter().map(|v| v.as_bytes()))
    }

    #[test]
    fn chromium_offer() {
        let offers = parse(&["permessage-deflate; client_max_window_bits"]).unwrap();
        assert_eq!(
            offers,
            vec![ExtensionOffer::new("permessage-deflate").param("client_max_window_bits", None)]
        );
    }

    #[test]
    fn several_offers_and_lines() {
        let offers = parse(&[
            "permessage-deflate; client_max_window_bits=10 , permessage-deflate",
            "x-custom;a=\"1\";b",
        ])
        .unwrap();
        assert_eq!(offers.len(), 3);
        assert_eq!(
            offers[0].params,
            vec![("client_max_window_bits".into(), Some("10".into()))]
        );
        assert_eq!(offers[1].params, vec![]);
        assert_eq!(
            offers[2].params,
            vec![("a".into(), Some("1".into())), ("b".into(), None)]
        );
    }

    #[test]
    fn quoted_value_must_be_token() {
        assert!(parse(&["x; a=\"has space\""]).is_err());
        assert!(parse(&["x; a=\"ok\\-1\""]).is_ok());
    }

    #[test]
    fn malformed_values() {
        for bad in [
            "; a",
            "x;",
            "x; =1",
            "x a",
            "x; a=",
            "x; a=\"open",
            "x; a=b c",
        ] {
            assert!(parse(&[bad]).is_err(), "{bad:?}");
        }
        assert_eq!(parse(&["", " , ,"]).unwrap(), vec![]);
    }

    #[test]
    fn display_round_trips() {
        let text = "permessage-deflate; server_max_window_bits=10; client_no_context_takeover";
        let offers = parse(&[text]).unwrap();
        assert_eq!(format_extensions(&offers), text);
    }
}
