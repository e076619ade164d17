//! The data of `publish`, `message` and `signal`.
//!
//! Data is either JSON or bytes. JSON data is held as [`JsonText`]: the text of
//! one JSON value, validated once when it enters (decoding, [`JsonText::parse`],
//! [`JsonText::from_value`]) and never parsed again by this crate. Encoding
//! writes that text verbatim, so the hub passes data through without building a
//! tree or re-serialising it. Cloning is a reference-count increment for both
//! kinds.
//!
//! The nesting depth of JSON text ([`JsonText::depth`]; the decoders refuse
//! `data` deeper than [`crate::MAX_DATA_DEPTH`]) is measured by the scans of
//! [`crate::depth`], which never recurse.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;

/// The text of one valid JSON value (any type: object, array, string, number,
/// `true`, `false` or `null`), without leading or trailing whitespace.
///
/// Invariant: the text is accepted by a JSON parser as exactly one value.
/// Equality compares the text, so `{"a":1}` and `{"a": 1}` differ.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JsonText(Arc<str>);

impl JsonText {
    /// Validates `text` as one JSON value (surrounding whitespace is dropped).
    pub fn parse(text: &str) -> Result<Self, serde_json::Error> {
        let raw: &RawValue = serde_json::from_str(text)?;
        Ok(Self::from_raw(raw))
    }

    /// The compact JSON text of `value`.
    pub fn from_value(value: &serde_json::Value) -> Self {
        Self(Arc::from(value.to_string()))
    }

    /// The JSON text of anything serde can serialise.
    pub fn from_serialize<T: serde::Serialize + ?Sized>(
        value: &T,
    ) -> Result<Self, serde_json::Error> {
        Ok(Self(Arc::from(serde_json::to_string(value)?)))
    }

    /// Copies the text of a value serde_json has already validated.
    pub(crate) fn from_raw(raw: &RawValue) -> Self {
        Self(Arc::from(raw.get()))
    }

    /// JSON `null`.
    pub fn null() -> Self {
        Self(Arc::from("null"))
    }

    /// The JSON text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// How deeply arrays and objects nest in this value: 0 for a scalar, 1
    /// for `[]`, `{}` or `[1, {}]`, 2 for `[[]]` or `{"a": {}}`. Brackets
    /// inside strings do not count. Linear in the text's length, without
    /// recursion.
    pub fn depth(&self) -> usize {
        crate::depth::depth(&self.0)
    }

    /// Parses the text into a `T` (for example a [`serde_json::Value`]). This can
    /// fail even though the text is valid JSON: when it does not fit `T`, nests
    /// deeper than serde_json allows or holds a number too large for it.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_str(&self.0)
    }

    /// Parses the text into a [`serde_json::Value`].
    pub fn to_value(&self) -> Result<serde_json::Value, serde_json::Error> {
        self.decode()
    }
}

impl fmt::Debug for JsonText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JsonText({})", &*self.0)
    }
}

impl fmt::Display for JsonText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for JsonText {
    type Err = serde_json::Error;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text)
    }
}

impl From<&serde_json::Value> for JsonText {
    fn from(value: &serde_json::Value) -> Self {
        Self::from_value(value)
    }
}

impl From<serde_json::Value> for JsonText {
    fn from(value: serde_json::Value) -> Self {
        Self::from_value(&value)
    }
}

impl From<Box<RawValue>> for JsonText {
    fn from(raw: Box<RawValue>) -> Self {
        Self::from_raw(&raw)
    }
}

impl From<&RawValue> for JsonText {
    fn from(raw: &RawValue) -> Self {
        Self::from_raw(raw)
    }
}

impl AsRef<str> for JsonText {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Serialises as the JSON value itself (with serde_json, verbatim).
impl serde::Serialize for JsonText {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let raw: &RawValue = serde_json::from_str(&self.0).map_err(serde::ser::Error::custom)?;
        raw.serialize(serializer)
    }
}

/// Deserialises any JSON value, keeping its text (with serde_json only).
impl<'de> serde::Deserialize<'de> for JsonText {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Box::<RawValue>::deserialize(deserializer).map(Self::from)
    }
}

/// The payload of a `publish`, `message` or `signal`.
///
/// Data published as JSON is delivered as JSON (in a text frame), data
/// published as bytes is delivered as bytes (in a binary frame).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Data {
    /// A JSON value, carried in the `data` field of a text frame.
    Json(JsonText),
    /// Bytes, carried after the header of a binary frame.
    Binary(Bytes),
}

impl Data {
    /// JSON data from a [`serde_json::Value`].
    pub fn json(value: &serde_json::Value) -> Self {
        Self::Json(JsonText::from_value(value))
    }

    /// Whether this data travels in a binary frame.
    pub fn is_binary(&self) -> bool {
        matches!(self, Self::Binary(_))
    }

    /// The JSON text, if this is JSON data.
    pub fn as_json(&self) -> Option<&JsonText> {
        match self {
            Self::Json(json) => Some(json),
            Self::Binary(_) => None,
        }
    }

    /// The bytes, if this is binary data.
    pub fn as_binary(&self) -> Option<&Bytes> {
        match self {
            Self::Json(_) => None,
            Self::Binary(bytes) => Some(bytes),
        }
    }

    /// The size of the data in bytes (of its JSON text, or of the bytes).
    pub fn len(&self) -> usize {
        match self {
            Self::Json(json) => json.as_str().len(),
            Self::Binary(bytes) => bytes.len(),
        }
    }

    /// Whether this is empty binary data (JSON text is never empty).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl From<JsonText> for Data {
    fn from(json: JsonText) -> Self {
        Self::Json(json)
    }
}

impl From<Bytes> for Data {
    fn from(bytes: Bytes) -> Self {
        Self::Binary(bytes)
    }
}

impl From<Vec<u8>> for Data {
    fn from(bytes: Vec<u8>) -> Self {
        Self::Binary(Bytes::from(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_keeps_the_text_without_surrounding_whitespace() {
        let json = JsonText::parse(" \n{\"a\" : [1, 2.50, \"\\u0041\"]}\t ").unwrap();
        assert_eq!(json.as_str(), "{\"a\" : [1, 2.50, \"\\u0041\"]}");
        assert_eq!(
            json.to_value().unwrap(),
            serde_json::json!({"a": [1, 2.5, "A"]})
        );
    }

    #[test]
    fn parse_rejects_what_is_not_one_json_value() {
        for bad in [
            "",
            " ",
            "{",
            "[1,]",
            "1 2",
            "{\"a\":1}}",
            "'x'",
            "\"a\u{1}\"",
            "nul",
            "01",
            "NaN",
            "\"\\x\"",
        ] {
            assert!(JsonText::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn scalars_are_json_values() {
        for good in ["null", "true", "0", "-1.5e3", "\"hi\"", "[]", "{}"] {
            assert_eq!(JsonText::parse(good).unwrap().as_str(), good);
        }
    }

    #[test]
    fn big_numbers_pass_through_untouched() {
        let text = "[123456789012345678901234567890, 1e400]";
        assert_eq!(JsonText::parse(text).unwrap().as_str(), text);
    }

    #[test]
    fn serde_round_trip_is_verbatim() {
        #[derive(serde::Serialize, serde::Deserialize)]
        struct Wrap {
            data: JsonText,
        }
        let wrap: Wrap = serde_json::from_str("{\"data\": {\"x\" :  1}}").unwrap();
        assert_eq!(wrap.data.as_str(), "{\"x\" :  1}");
        assert_eq!(
            serde_json::to_string(&wrap).unwrap(),
            "{\"data\":{\"x\" :  1}}"
        );
    }

    #[test]
    fn data_accessors() {
        let json = Data::json(&serde_json::json!({"k": "v"}));
        assert!(!json.is_binary());
        assert_eq!(json.as_json().unwrap().as_str(), "{\"k\":\"v\"}");
        assert_eq!(json.len(), 9);
        let bin = Data::from(vec![1, 2, 3]);
        assert!(bin.is_binary());
        assert_eq!(bin.as_binary().unwrap().as_ref(), &[1, 2, 3]);
        assert!(Data::from(Vec::new()).is_empty());
    }
}
