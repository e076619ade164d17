//! Reading header fields: comma-separated lists and single-valued fields.
//!
//! Invariants: a list field is the concatenation of all its lines (RFC 9110
//! §5.3); elements are trimmed of spaces and tabs and empty elements are
//! skipped (RFC 9110 §5.6.1); nothing here allocates per element or panics.

use http::HeaderMap;
use http::header::{AsHeaderName, HeaderValue};
use http::uri::Authority;

use crate::extension::is_token;

/// Trims optional whitespace (spaces and tabs) from both ends.
pub(crate) fn trim_ows(mut bytes: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = bytes {
        bytes = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = bytes {
        bytes = rest;
    }
    bytes
}

/// The non-empty, trimmed elements of the list field `name`, over all its lines.
pub(crate) fn list_elements<K: AsHeaderName>(
    headers: &HeaderMap,
    name: K,
) -> impl Iterator<Item = &[u8]> {
    headers
        .get_all(name)
        .into_iter()
        .flat_map(|value| value.as_bytes().split(|&b| b == b','))
        .map(trim_ows)
        .filter(|element| !element.is_empty())
}

/// Whether the list field `name` holds `token`, compared case-insensitively.
pub(crate) fn has_token<K: AsHeaderName>(headers: &HeaderMap, name: K, token: &str) -> bool {
    list_elements(headers, name).any(|element| element.eq_ignore_ascii_case(token.as_bytes()))
}

/// The value of a field that may appear on at most one line.
///
/// `Err(())` when it appears on several.
pub(crate) fn single<K: AsHeaderName>(
    headers: &HeaderMap,
    name: K,
) -> Result<Option<&HeaderValue>, ()> {
    let mut values = headers.get_all(name).into_iter();
    match (values.next(), values.next()) {
        (value, None) => Ok(value),
        (Some(_), Some(_)) | (None, Some(_)) => Err(()),
    }
}

/// The elements of a list of tokens, such as `Sec-WebSocket-Protocol`, in order.
///
/// `None` when an element is not a token.
pub(crate) fn token_list<K: AsHeaderName>(headers: &HeaderMap, name: K) -> Option<Vec<String>> {
    list_elements(headers, name)
        .map(|element| {
            let element = std::str::from_utf8(element).ok()?;
            is_token(element).then(|| element.to_owned())
        })
        .collect()
}

/// Whether `value` is a valid `Host`: a non-empty host and, after a colon,
/// a port that fits in 16 bits; no user information (RFC 9110 §7.2).
pub(crate) fn is_valid_host(value: &str) -> bool {
    let Ok(authority) = value.parse::<Authority>() else {
        return false;
    };
    !authority.host().is_empty()
        && !value.contains('@')
        && (authority.port_u16().is_some() || value == authority.host())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::{CONNECTION, SEC_WEBSOCKET_PROTOCOL};

    fn headers(lines: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for &(name, value) in lines {
            map.append(name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn hosts() {
        for host in [
            "example.com",
            "example.com:8080",
            "127.0.0.1:1",
            "[::1]",
            "[::1]:80",
        ] {
            assert!(is_valid_host(host), "{host}");
        }
        for host in [
            "",
            ":80",
            "example.com:",
            "example.com:port",
            "example.com:65536",
            "user@example.com",
            "exa mple.com",
            "example.com/path",
        ] {
            assert!(!is_valid_host(host), "{host}");
        }
    }

    #[test]
    fn trims_spaces_and_tabs_only() {
        assert_eq!(trim_ows(b" \t a b\t "), b"a b");
        assert_eq!(trim_ows(b" \t "), b"");
        assert_eq!(trim_ows(b""), b"");
    }

    #[test]
    fn tokens_over_several_lines() {
        let map = headers(&[("connection", "keep-alive, "), ("connection", " ,UPGRADE")]);
        assert!(has_token(&map, CONNECTION, "upgrade"));
        assert!(has_token(&map, CONNECTION, "Keep-Alive"));
        assert!(!has_token(&map, CONNECTION, "close"));
        let elements: Vec<&[u8]> = list_elements(&map, CONNECTION).collect();
        assert_eq!(elements, [&b"keep-alive"[..], b"UPGRADE"]);
    }

    #[test]
    fn token_must_match_whole_element() {
        let map = headers(&[("connection", "upgrade-ish, notupgrade")]);
        assert!(!has_token(&map, CONNECTION, "upgrade"));
    }

    #[test]
    fn single_rejects_repeats() {
        assert_eq!(single(&headers(&[]), CONNECTION), Ok(None));
        let one = headers(&[("connection", "a")]);
        assert_eq!(
            single(&one, CONNECTION),
            Ok(Some(&HeaderValue::from_static("a")))
        );
        let two = headers(&[("connection", "a"), ("connection", "a")]);
        assert_eq!(single(&two, CONNECTION), Err(()));
    }

    #[test]
    fn token_lists_keep_order_and_reject_non_tokens() {
        let map = headers(&[
            ("sec-websocket-protocol", "chat, superchat"),
            ("sec-websocket-protocol", "v2.json"),
        ]);
        assert_eq!(
            token_list(&map, SEC_WEBSOCKET_PROTOCOL),
            Some(vec!["chat".into(), "superchat".into(), "v2.json".into()])
        );
        let bad = headers(&[("sec-websocket-protocol", "chat, a b")]);
        assert_eq!(token_list(&bad, SEC_WEBSOCKET_PROTOCOL), None);
        let quoted = headers(&[("sec-websocket-protocol", "\"chat\"")]);
        assert_eq!(token_list(&quoted, SEC_WEBSOCKET_PROTOCOL), None);
    }
}
