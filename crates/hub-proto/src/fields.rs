//! Reading a JSON object's fields as raw slices of the input.
//!
//! A frame's object is parsed once into [`Fields`]: for every field name the
//! protocol knows, the raw text of its value (borrowed from the input, already
//! validated as JSON by serde_json); every other field is skipped (validated,
//! not kept). The decoders then read each field they need on its own, which
//! lets them report the `id` even when another field is wrong, and keeps
//! `data` as raw text. A field given twice is remembered, and reported only if
//! the decoder reads it.

use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;

macro_rules! fields {
    ($($variant:ident = $name:literal,)*) => {
        /// A field name the protocol knows (in either direction).
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub(crate) enum Field {
            $($variant,)*
        }

        impl Field {
            const ALL: &[Field] = &[$(Field::$variant,)*];

            /// The name on the wire.
            pub(crate) fn name(self) -> &'static str {
                match self {
                    $(Field::$variant => $name,)*
                }
            }

            fn from_name(name: &str) -> Option<Self> {
                match name {
                    $($name => Some(Field::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

fields! {
    Op = "op",
    Id = "id",
    Token = "token",
    Name = "name",
    Channel = "channel",
    Since = "since",
    Recent = "recent",
    Data = "data",
    Key = "key",
    Client = "client",
    User = "user",
    Version = "version",
    Expires = "expires",
    Ping = "ping",
    Epoch = "epoch",
    Offset = "offset",
    Recovered = "recovered",
    Gap = "gap",
    Duplicate = "duplicate",
    Clients = "clients",
    Time = "time",
    From = "from",
    Code = "code",
    Message = "message",
    Reason = "reason",
    Method = "method",
}

const COUNT: usize = Field::ALL.len();
const _: () = assert!(COUNT <= 32, "the duplicate set is a u32");

/// The known fields of one JSON object, as raw JSON text.
pub(crate) struct Fields<'a> {
    values: [Option<&'a RawValue>; COUNT],
    /// Bit `f as usize` is set when field `f` appeared more than once.
    duplicates: u32,
}

/// A field whose value is not what the decoder needs.
#[derive(Debug)]
pub(crate) enum FieldError {
    /// The field appears more than once.
    Duplicate,
}

impl<'a> Fields<'a> {
    /// Parses `text` as one JSON object.
    pub(crate) fn parse(text: &'a str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// The raw value of `field` (`Ok(None)` when absent; `null` is returned as
    /// is).
    pub(crate) fn get(&self, field: Field) -> Result<Option<&'a RawValue>, FieldError> {
        if self.duplicates & (1 << field as u32) != 0 {
            return Err(FieldError::Duplicate);
        }
        Ok(self.values[field as usize])
    }

    /// Whether `field` is present (with any value, even `null`).
    pub(crate) fn has(&self, field: Field) -> bool {
        self.values[field as usize].is_some()
    }
}

/// A key of the object: a known field, or `None` for any other.
struct Key(Option<Field>);

impl<'de> de::Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_str<E: de::Error>(self, name: &str) -> Result<Key, E> {
                Ok(Key(Field::from_name(name)))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

impl<'de> de::Deserialize<'de> for Fields<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor;
        impl<'de> Visitor<'de> for ObjectVisitor {
            type Value = Fields<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields<'de>, A::Error> {
                let mut fields = Fields {
                    values: [None; COUNT],
                    duplicates: 0,
                };
                while let Some(Key(key)) = map.next_key()? {
                    match key {
                        Some(field) => {
                            let value: &'de RawValue = map.next_value()?;
                            let slot = &mut fields.values[field as usize];
                            if slot.is_some() {
                                fields.duplicates |= 1 << field as u32;
                            } else {
                                *slot = Some(value);
                            }
                        }
                        None => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(fields)
            }
        }
        deserializer.deserialize_map(ObjectVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_variants() {
        for &field in Field::ALL {
            assert_eq!(Field::from_name(field.name()), Some(field));
        }
        assert_eq!(Field::from_name("nope"), None);
    }

    #[test]
    fn known_fields_are_raw_and_others_skipped() {
        let fields =
            Fields::parse(r#"{"op":"x","data": {"a" : [1]} ,"zzz":{"deep":[true]},"id":null}"#)
                .unwrap();
        assert_eq!(fields.get(Field::Op).unwrap().unwrap().get(), "\"x\"");
        assert_eq!(
            fields.get(Field::Data).unwrap().unwrap().get(),
            "{\"a\" : [1]}"
        );
        assert_eq!(fields.get(Field::Id).unwrap().unwrap().get(), "null");
        assert!(fields.has(Field::Id));
        assert!(fields.get(Field::Channel).unwrap().is_none());
    }

    #[test]
    fn escaped_keys_are_recognised() {
        let fields = Fields::parse(r#"{"\u006fp":"x"}"#).unwrap();
        assert_eq!(fields.get(Field::Op).unwrap().unwrap().get(), "\"x\"");
    }

    #[test]
    fn duplicates_are_reported_when_read() {
        let fields = Fields::parse(r#"{"op":"x","op":"y","id":1,"other":1,"other":2}"#).unwrap();
        assert!(matches!(fields.get(Field::Op), Err(FieldError::Duplicate)));
        assert!(fields.get(Field::Id).is_ok());
    }

    #[test]
    fn not_an_object() {
        for bad in ["[]", "1", "\"op\"", "null", "{", "{}x", ""] {
            assert!(Fields::parse(bad).is_err(), "{bad:?}");
        }
    }
}
