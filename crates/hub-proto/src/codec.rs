//! The codec: messages to WebSocket frames and back.
//!
//! **Text frames** hold one JSON object with an `op`. **Binary frames** hold a
//! 4-byte big-endian header length, a header (the same JSON object, UTF-8,
//! without `data`) and the data bytes; only `publish`/`signal` (client to hub)
//! and `message`/`signal` (hub to client) may be binary, and they are binary
//! exactly when their data is [`Data::Binary`].
//!
//! Decoding rules (both directions):
//!
//! - Unknown fields are ignored; an unknown `op` is [`ErrorCode::UnknownOp`];
//!   anything else wrong is [`ErrorCode::BadRequest`], with the `id` when it
//!   could be read. Nothing panics, whatever the bytes.
//! - An optional field set to `null` is the same as an absent one; a required
//!   field set to `null` has the wrong type (`data`, where `null` is a JSON
//!   value like any other, excepted).
//! - Integers (ids, offsets, times, …) are JSON numbers written as plain digits
//!   (`1.0`, `1e3` and `-1` are not integers here) from 0 to
//!   [`crate::MAX_INTEGER`] (2^53 − 1) included, `since.offset` too; booleans
//!   that are absent are `false`.
//! - JSON `data` nests arrays and objects at most [`crate::MAX_DATA_DEPTH`]
//!   deep.
//! - A field given twice is a bad request when the op reads it.
//! - `data` in a text frame is kept as the raw JSON text it arrived as.
//! - Commands name valid channels ([`crate::validate_channel`]) and keys of at
//!   most [`crate::MAX_KEY_LEN`] bytes; the client side does not re-check what
//!   the hub sends.
//!
//! Encoding writes `op` first, then `id`, then the fields, with `data` last,
//! and is exact: what decodes, re-encoded, decodes to the same value.

use bytes::Bytes;
use serde_json::value::RawValue;

use crate::channel::validate_channel;
use crate::data::{Data, JsonText};
use crate::fields::{Field, FieldError, Fields};
use crate::json::{ObjectWriter, str_hint};
use crate::message::{ClientInfo, Command, ErrorCode, Publication, Request, ServerMessage, Since};

/// A received WebSocket message, independent of any WebSocket crate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A text message.
    Text(&'a str),
    /// A binary message.
    Binary(&'a [u8]),
}

/// An encoded message, ready to send as one WebSocket message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Encoded {
    /// Send as a text message.
    Text(String),
    /// Send as a binary message.
    Binary(Vec<u8>),
}

impl Encoded {
    /// Whether this is a text message.
    pub fn is_text(&self) -> bool {
        matches!(self, Self::Text(_))
    }

    /// The payload.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Self::Text(text) => text.as_bytes(),
            Self::Binary(bytes) => bytes,
        }
    }

    /// The payload's length in bytes.
    pub fn len(&self) -> usize {
        self.as_bytes().len()
    }

    /// Whether the payload is empty (never, for what the encoders produce).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// This message as a received [`Frame`] (for decoding it again).
    pub fn as_frame(&self) -> Frame<'_> {
        match self {
            Self::Text(text) => Frame::Text(text),
            Self::Binary(bytes) => Frame::Binary(bytes),
        }
    }

    /// The payload as shareable [`Bytes`], without copying.
    pub fn into_bytes(self) -> Bytes {
        match self {
            Self::Text(text) => Bytes::from(text.into_bytes()),
            Self::Binary(bytes) => Bytes::from(bytes),
        }
    }
}

/// Why a frame could not be decoded. The connection stays usable: the hub
/// answers with [`DecodeError::to_reply`] and reads on.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct DecodeError {
    /// The frame's `id`, when it could be read.
    pub id: Option<u64>,
    /// [`ErrorCode::BadRequest`] or [`ErrorCode::UnknownOp`].
    pub code: ErrorCode,
    /// What is wrong, in plain English.
    pub message: String,
}

impl DecodeError {
    pub(crate) fn new(id: Option<u64>, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            id,
            code,
            message: message.into(),
        }
    }

    /// The `error` reply the hub sends for this error.
    pub fn to_reply(&self) -> ServerMessage {
        ServerMessage::Error {
            id: self.id,
            code: self.code,
            message: self.message.clone(),
        }
    }

    /// The `error` reply the hub sends for this error.
    pub fn into_reply(self) -> ServerMessage {
        ServerMessage::Error {
            id: self.id,
            code: self.code,
            message: self.message,
        }
    }
}

/// The ops a client may send.
const COMMAND_OPS: [&str; 9] = [
    "connect",
    "refresh",
    "subscribe",
    "unsubscribe",
    "publish",
    "presence",
    "signal",
    "ping",
    "rpc",
];

/// The ops the hub may send.
const SERVER_OPS: [&str; 15] = [
    "connected",
    "refreshed",
    "subscribed",
    "unsubscribed",
    "published",
    "presence",
    "ok",
    "pong",
    "message",
    "join",
    "leave",
    "signal",
    "gap",
    "error",
    "rpc",
];

/// How much of a client-supplied string an error message quotes.
const QUOTE_CHARS: usize = 40;

/// `s` quoted for an error message, cut after [`QUOTE_CHARS`] characters.
fn quote(s: &str) -> String {
    match s.char_indices().nth(QUOTE_CHARS) {
        None => format!("{s:?}"),
        Some((cut, _)) => format!("{:?}…", &s[..cut]),
    }
}

/// The data bytes of a binary frame, copied or shared on demand.
enum BinaryData<'a> {
    Slice(&'a [u8]),
    Shared(&'a Bytes, usize),
}

impl BinaryData<'_> {
    fn to_bytes(&self) -> Bytes {
        match self {
            Self::Slice(data) => Bytes::copy_from_slice(data),
            Self::Shared(frame, start) => frame.slice(*start..),
        }
    }
}

/// Splits a binary frame into its header text and the offset of its data.
fn split_binary(frame: &[u8]) -> Result<(&str, usize), DecodeError> {
    let bad = |message: String| DecodeError::new(None, ErrorCode::BadRequest, message);
    let Some((len, rest)) = frame.split_first_chunk::<4>() else {
        return Err(bad(format!(
            "a binary frame starts with a 4-byte header length; this one has {} bytes",
            frame.len()
        )));
    };
    let len = u32::from_be_bytes(*len) as usize;
    if len > rest.len() {
        return Err(bad(format!(
            "the binary frame's header length {len} exceeds the {} bytes after it",
            rest.len()
        )));
    }
    let header = std::str::from_utf8(&rest[..len])
        .map_err(|_| bad("the binary frame's header is not UTF-8".to_owned()))?;
    Ok((header, 4 + len))
}

/// Integers are plain digits, at most [`crate::MAX_INTEGER`].
fn parse_u64(raw: &RawValue) -> Result<u64, NumberError> {
    let text = raw.get();
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(NumberError::NotInteger);
    }
    match text.parse() {
        Ok(n) if n <= crate::MAX_INTEGER => Ok(n),
        _ => Err(NumberError::TooLarge),
    }
}

/// The error message for an integer `field` above [`crate::MAX_INTEGER`].
fn too_large(field: &str) -> String {
    format!(
        "field `{field}` is too large: integers are at most {} (2^53 - 1)",
        crate::MAX_INTEGER
    )
}

enum NumberError {
    NotInteger,
    TooLarge,
}

/// A JSON string's value, or `None` when `raw` is not a string.
fn parse_string(raw: &RawValue) -> Result<String, StringError> {
    let text = raw.get();
    let Some(inner) = text.strip_prefix('"').and_then(|t| t.strip_suffix('"')) else {
        return Err(StringError::NotString);
    };
    if !inner.contains('\\') {
        // A valid JSON string without escapes is its contents verbatim.
        return Ok(inner.to_owned());
    }
    serde_json::from_str(text).map_err(|_| StringError::BadUnicode)
}

enum StringError {
    NotString,
    BadUnicode,
}

/// The fields of one frame, with the id read first so that every later error
/// can carry it.
struct Reader<'a> {
    fields: Fields<'a>,
    id: Option<u64>,
}

impl<'a> Reader<'a> {
    fn new(text: &'a str) -> Result<Self, DecodeError> {
        let fields = Fields::parse(text).map_err(|e| {
            let message = match e.classify() {
                serde_json::error::Category::Data => "a frame must hold a JSON object".to_owned(),
                _ => format!("malformed JSON: {e}"),
            };
            DecodeError::new(None, ErrorCode::BadRequest, message)
        })?;
        let mut reader = Self { fields, id: None };
        reader.id = reader.opt_u64(Field::Id)?;
        Ok(reader)
    }

    fn bad(&self, message: impl Into<String>) -> DecodeError {
        DecodeError::new(self.id, ErrorCode::BadRequest, message)
    }

    /// The raw value, `null` included.
    fn raw(&self, field: Field) -> Result<Option<&'a RawValue>, DecodeError> {
        self.fields.get(field).map_err(|FieldError::Duplicate| {
            self.bad(format!("field `{}` appears more than once", field.name()))
        })
    }

    /// The raw value of an optional field (`null` is absent).
    fn optional(&self, field: Field) -> Result<Option<&'a RawValue>, DecodeError> {
        Ok(self.raw(field)?.filter(|raw| raw.get() != "null"))
    }

    /// The raw value of a required field (`null` is returned, to be rejected by
    /// the field's type).
    fn required(&self, field: Field) -> Result<&'a RawValue, DecodeError> {
        self.raw(field)?
            .ok_or_else(|| self.bad(format!("missing field `{}`", field.name())))
    }

    fn string_of(&self, field: Field, raw: &RawValue) -> Result<String, DecodeError> {
        parse_string(raw).map_err(|e| {
            self.bad(match e {
                StringError::NotString => format!("field `{}` must be a string", field.name()),
                StringError::BadUnicode => {
                    format!("field `{}` is not valid Unicode", field.name())
                }
            })
        })
    }

    fn string(&self, field: Field) -> Result<String, DecodeError> {
        self.string_of(field, self.required(field)?)
    }

    fn opt_string(&self, field: Field) -> Result<Option<String>, DecodeError> {
        self.optional(field)?
            .map(|raw| self.string_of(field, raw))
            .transpose()
    }

    fn u64_of(&self, field: Field, raw: &RawValue) -> Result<u64, DecodeError> {
        parse_u64(raw).map_err(|e| {
            self.bad(match e {
                NumberError::NotInteger => {
                    format!("field `{}` must be a non-negative integer", field.name())
                }
                NumberError::TooLarge => too_large(field.name()),
            })
        })
    }

    fn u64(&self, field: Field) -> Result<u64, DecodeError> {
        self.u64_of(field, self.required(field)?)
    }

    fn opt_u64(&self, field: Field) -> Result<Option<u64>, DecodeError> {
        self.optional(field)?
            .map(|raw| self.u64_of(field, raw))
            .transpose()
    }

    fn u32_of(&self, field: Field, raw: &RawValue) -> Result<u32, DecodeError> {
        let n = self.u64_of(field, raw)?;
        u32::try_from(n).map_err(|_| self.bad(format!("field `{}` is too large", field.name())))
    }

    /// An optional boolean, `false` when absent.
    fn flag(&self, field: Field) -> Result<bool, DecodeError> {
        match self.optional(field)?.map(RawValue::get) {
            None | Some("false") => Ok(false),
            Some("true") => Ok(true),
            Some(_) => Err(self.bad(format!("field `{}` must be a boolean", field.name()))),
        }
    }

    fn op(&self) -> Result<String, DecodeError> {
        self.string(Field::Op)
    }

    /// A valid channel name.
    fn channel(&self) -> Result<String, DecodeError> {
        let channel = self.string(Field::Channel)?;
        validate_channel(&channel).map_err(|e| self.bad(format!("invalid channel: {e}")))?;
        Ok(channel)
    }

    /// Any string as a channel name (the client trusts the hub).
    fn any_channel(&self) -> Result<String, DecodeError> {
        self.string(Field::Channel)
    }

    /// `data` from the text frame (at most [`crate::MAX_DATA_DEPTH`] deep), or
    /// the binary frame's bytes.
    fn data(&self, binary: Option<&BinaryData<'_>>) -> Result<Data, DecodeError> {
        match binary {
            Some(binary) => {
                if self.fields.has(Field::Data) {
                    return Err(self.bad("a binary frame's header must not have a `data` field"));
                }
                Ok(Data::Binary(binary.to_bytes()))
            }
            None => {
                let raw = self.required(Field::Data)?;
                if crate::depth::deeper_than(raw.get(), crate::MAX_DATA_DEPTH) {
                    return Err(self.bad(format!(
                        "field `data` nests arrays and objects more than {} levels deep",
                        crate::MAX_DATA_DEPTH
                    )));
                }
                Ok(Data::Json(JsonText::from_raw(raw)))
            }
        }
    }

    /// JSON `data` of a text frame that may be absent (or `null`): `None`
    /// then (at most [`crate::MAX_DATA_DEPTH`] deep otherwise).
    fn opt_json(&self) -> Result<Option<JsonText>, DecodeError> {
        let Some(raw) = self.optional(Field::Data)? else {
            return Ok(None);
        };
        if crate::depth::deeper_than(raw.get(), crate::MAX_DATA_DEPTH) {
            return Err(self.bad(format!(
                "field `data` nests arrays and objects more than {} levels deep",
                crate::MAX_DATA_DEPTH
            )));
        }
        Ok(Some(JsonText::from_raw(raw)))
    }

    /// An rpc's JSON `data`: `null` when absent.
    fn rpc_data(&self) -> Result<JsonText, DecodeError> {
        Ok(self.opt_json()?.unwrap_or_else(JsonText::null))
    }

    fn since(&self) -> Result<Option<Since>, DecodeError> {
        let Some(raw) = self.optional(Field::Since)? else {
            return Ok(None);
        };
        let since = serde_json::from_str::<Since>(raw.get()).map_err(|_| {
            self.bad(
                "field `since` must be an object {\"epoch\": string, \"offset\": non-negative integer}",
            )
        })?;
        if since.offset > crate::MAX_INTEGER {
            return Err(self.bad(too_large("since.offset")));
        }
        Ok(Some(since))
    }

    fn client_info(&self, field: Field) -> Result<ClientInfo, DecodeError> {
        serde_json::from_str(self.required(field)?.get()).map_err(|_| {
            self.bad(format!(
                "field `{}` must be an object {{\"user\": string, \"client\": string}}",
                field.name()
            ))
        })
    }

    fn clients(&self) -> Result<Vec<ClientInfo>, DecodeError> {
        serde_json::from_str(self.required(Field::Clients)?.get()).map_err(|_| {
            self.bad("field `clients` must be an array of {\"user\": string, \"client\": string}")
        })
    }

    /// The error for an op that cannot travel in a binary frame.
    fn not_binary(&self, op: &str, allowed: &[&str], binary_ops: &str) -> DecodeError {
        if allowed.contains(&op) {
            self.bad(format!(
                "`{op}` cannot be sent in a binary frame (only {binary_ops} can)"
            ))
        } else {
            self.unknown_op(op)
        }
    }

    fn unknown_op(&self, op: &str) -> DecodeError {
        DecodeError::new(
            self.id,
            ErrorCode::UnknownOp,
            format!("unknown op {}", quote(op)),
        )
    }
}

/// Decodes a command from a client (the hub's decoder).
///
/// Binary data is copied out of the frame; [`decode_binary_command`] shares it
/// instead.
pub fn decode_command(frame: Frame<'_>) -> Result<Request, DecodeError> {
    match frame {
        Frame::Text(text) => command(Reader::new(text)?, None),
        Frame::Binary(frame) => {
            let (header, start) = split_binary(frame)?;
            command(
                Reader::new(header)?,
                Some(BinaryData::Slice(&frame[start..])),
            )
        }
    }
}

/// Decodes a command from a client's binary frame, sharing `frame`'s bytes for
/// the data instead of copying them.
pub fn decode_binary_command(frame: &Bytes) -> Result<Request, DecodeError> {
    let (header, start) = split_binary(frame)?;
    command(Reader::new(header)?, Some(BinaryData::Shared(frame, start)))
}

fn command(r: Reader<'_>, binary: Option<BinaryData<'_>>) -> Result<Request, DecodeError> {
    let op = r.op()?;
    if binary.is_some() && op != "publish" && op != "signal" {
        return Err(r.not_binary(&op, &COMMAND_OPS, "publish and signal"));
    }
    let command = match op.as_str() {
        "connect" => Command::Connect {
            token: r.opt_string(Field::Token)?,
            name: r.opt_string(Field::Name)?,
        },
        "refresh" => Command::Refresh {
            token: r.string(Field::Token)?,
        },
        "subscribe" => Command::Subscribe {
            channel: r.channel()?,
            since: r.since()?,
            recent: match r.optional(Field::Recent)? {
                None => 0,
                Some(raw) => r.u32_of(Field::Recent, raw)?,
            },
            token: r.opt_string(Field::Token)?,
        },
        "unsubscribe" => Command::Unsubscribe {
            channel: r.channel()?,
        },
        "publish" => {
            let channel = r.channel()?;
            let key = r.opt_string(Field::Key)?;
            if let Some(key) = &key
                && key.len() > crate::MAX_KEY_LEN
            {
                return Err(r.bad(format!(
                    "field `key` is at most {} bytes, this one is {}",
                    crate::MAX_KEY_LEN,
                    key.len()
                )));
            }
            Command::Publish {
                channel,
                key,
                data: r.data(binary.as_ref())?,
            }
        }
        "presence" => Command::Presence {
            channel: r.channel()?,
        },
        "signal" => Command::Signal {
            channel: r.channel()?,
            data: r.data(binary.as_ref())?,
        },
        "ping" => Command::Ping,
        "rpc" => {
            let method = r.string(Field::Method)?;
            validate_channel(&method).map_err(|e| {
                r.bad(format!(
                    "invalid method (the rules of a channel name apply): {e}"
                ))
            })?;
            Command::Rpc {
                method,
                data: r.rpc_data()?,
            }
        }
        other => return Err(r.unknown_op(other)),
    };
    Ok(Request { id: r.id, command })
}

/// Decodes a reply or push from the hub (the client's decoder).
pub fn decode_server(frame: Frame<'_>) -> Result<ServerMessage, DecodeError> {
    match frame {
        Frame::Text(text) => server(Reader::new(text)?, None),
        Frame::Binary(frame) => {
            let (header, start) = split_binary(frame)?;
            server(
                Reader::new(header)?,
                Some(BinaryData::Slice(&frame[start..])),
            )
        }
    }
}

fn server(r: Reader<'_>, binary: Option<BinaryData<'_>>) -> Result<ServerMessage, DecodeError> {
    let op = r.op()?;
    if binary.is_some() && op != "message" && op != "signal" {
        return Err(r.not_binary(&op, &SERVER_OPS, "message and signal"));
    }
    let id = r.id;
    Ok(match op.as_str() {
        "connected" => ServerMessage::Connected {
            id,
            client: r.string(Field::Client)?,
            user: r.string(Field::User)?,
            version: r.u32_of(Field::Version, r.required(Field::Version)?)?,
            expires: r.opt_u64(Field::Expires)?,
            ping: r.u64(Field::Ping)?,
            data: r.opt_json()?,
        },
        "refreshed" => ServerMessage::Refreshed {
            id,
            expires: r.opt_u64(Field::Expires)?,
        },
        "subscribed" => ServerMessage::Subscribed {
            id,
            channel: r.any_channel()?,
            epoch: r.string(Field::Epoch)?,
            offset: r.u64(Field::Offset)?,
            recovered: r.flag(Field::Recovered)?,
            gap: r.flag(Field::Gap)?,
        },
        "unsubscribed" => ServerMessage::Unsubscribed {
            id,
            channel: r.any_channel()?,
            reason: r.opt_string(Field::Reason)?,
        },
        "published" => ServerMessage::Published {
            id,
            channel: r.any_channel()?,
            offset: r.u64(Field::Offset)?,
            duplicate: r.flag(Field::Duplicate)?,
        },
        "presence" => ServerMessage::Presence {
            id,
            channel: r.any_channel()?,
            clients: r.clients()?,
        },
        "ok" => ServerMessage::Ok { id },
        "pong" => ServerMessage::Pong { id },
        "rpc" => ServerMessage::Rpc {
            id,
            data: r.rpc_data()?,
        },
        "message" => ServerMessage::Message(Publication {
            channel: r.any_channel()?,
            offset: r.u64(Field::Offset)?,
            time: r.u64(Field::Time)?,
            from: r.client_info(Field::From)?,
            data: r.data(binary.as_ref())?,
        }),
        "join" => ServerMessage::Join {
            channel: r.any_channel()?,
            user: r.string(Field::User)?,
            client: r.string(Field::Client)?,
        },
        "leave" => ServerMessage::Leave {
            channel: r.any_channel()?,
            user: r.string(Field::User)?,
            client: r.string(Field::Client)?,
        },
        "signal" => ServerMessage::Signal {
            channel: r.any_channel()?,
            from: r.client_info(Field::From)?,
            data: r.data(binary.as_ref())?,
        },
        "gap" => ServerMessage::Gap {
            channel: r.any_channel()?,
            epoch: r.string(Field::Epoch)?,
            offset: r.u64(Field::Offset)?,
        },
        "error" => {
            let code = r.string(Field::Code)?;
            ServerMessage::Error {
                id,
                code: ErrorCode::from_wire(&code)
                    .ok_or_else(|| r.bad(format!("unknown error code {}", quote(&code))))?,
                message: r.string(Field::Message)?,
            }
        }
        other => return Err(r.unknown_op(other)),
    })
}

/// Finishes `w` with the data: as a `data` field of a text frame, or after the
/// header of a binary frame.
fn finish_with_data(mut w: ObjectWriter, data: &Data) -> Encoded {
    match data {
        Data::Json(json) => {
            w.raw("data", json.as_str());
            Encoded::Text(w.finish())
        }
        Data::Binary(bytes) => Encoded::Binary(binary_frame(&w.finish(), bytes)),
    }
}

/// `len | header | data`.
///
/// # Panics
///
/// If the header is 4 GiB or more, which takes names that long.
fn binary_frame(header: &str, data: &[u8]) -> Vec<u8> {
    let len = u32::try_from(header.len()).expect("a binary frame header under 4 GiB");
    let mut frame = Vec::with_capacity(4 + header.len() + data.len());
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(header.as_bytes());
    frame.extend_from_slice(data);
    frame
}

/// The JSON text length of `data` when inline, for capacity hints.
fn json_hint(data: &Data) -> usize {
    data.as_json().map_or(0, |json| json.as_str().len())
}

/// Encodes a command (the client's encoder). Commands with binary data become
/// binary frames.
pub fn encode_command(request: &Request) -> Encoded {
    let command = &request.command;
    let hint = match command {
        Command::Connect { token, name } => {
            token.as_deref().map_or(0, str_hint) + name.as_deref().map_or(0, str_hint)
        }
        Command::Refresh { token } => str_hint(token),
        Command::Subscribe {
            channel,
            since,
            token,
            ..
        } => {
            str_hint(channel)
                + since.as_ref().map_or(0, |s| str_hint(&s.epoch) + 48)
                + token.as_deref().map_or(0, str_hint)
        }
        Command::Unsubscribe { channel } | Command::Presence { channel } => str_hint(channel),
        Command::Publish { channel, data, key } => {
            str_hint(channel) + key.as_deref().map_or(0, str_hint) + json_hint(data)
        }
        Command::Signal { channel, data } => str_hint(channel) + json_hint(data),
        Command::Ping => 0,
        Command::Rpc { method, data } => str_hint(method) + data.as_str().len(),
    };
    let mut w = ObjectWriter::new(command.op(), 64 + hint);
    w.opt_u64("id", request.id);
    match command {
        Command::Connect { token, name } => {
            w.opt_str("token", token.as_deref());
            w.opt_str("name", name.as_deref());
        }
        Command::Refresh { token } => w.str("token", token),
        Command::Subscribe {
            channel,
            since,
            recent,
            token,
        } => {
            w.str("channel", channel);
            if let Some(since) = since {
                w.since("since", &since.epoch, since.offset);
            }
            if *recent != 0 {
                w.u64("recent", u64::from(*recent));
            }
            w.opt_str("token", token.as_deref());
        }
        Command::Unsubscribe { channel } | Command::Presence { channel } => {
            w.str("channel", channel);
        }
        Command::Publish { channel, data, key } => {
            w.str("channel", channel);
            w.opt_str("key", key.as_deref());
            return finish_with_data(w, data);
        }
        Command::Signal { channel, data } => {
            w.str("channel", channel);
            return finish_with_data(w, data);
        }
        Command::Ping => {}
        Command::Rpc { method, data } => {
            w.str("method", method);
            w.raw("data", data.as_str());
        }
    }
    Encoded::Text(w.finish())
}

/// Encodes a `message` push. This is what a broadcast encodes once and shares
/// with every subscriber: JSON data is copied in verbatim.
pub fn encode_publication(publication: &Publication) -> Encoded {
    let Publication {
        channel,
        offset,
        time,
        from,
        data,
    } = publication;
    let hint = str_hint(channel) + str_hint(&from.user) + str_hint(&from.client);
    let mut w = ObjectWriter::new("message", 96 + hint + json_hint(data));
    w.str("channel", channel);
    w.u64("offset", *offset);
    w.u64("time", *time);
    w.client_info("from", &from.user, &from.client);
    finish_with_data(w, data)
}

/// Encodes a reply or push (the hub's encoder). A `message` or `signal` with
/// binary data becomes a binary frame.
pub fn encode_server(message: &ServerMessage) -> Encoded {
    let mut w = ObjectWriter::new(message.op(), 128);
    match message {
        ServerMessage::Connected {
            id,
            client,
            user,
            version,
            expires,
            ping,
            data,
        } => {
            w.opt_u64("id", *id);
            w.str("client", client);
            w.str("user", user);
            w.u64("version", u64::from(*version));
            w.opt_u64("expires", *expires);
            w.u64("ping", *ping);
            if let Some(data) = data {
                w.raw("data", data.as_str());
            }
        }
        ServerMessage::Refreshed { id, expires } => {
            w.opt_u64("id", *id);
            w.opt_u64("expires", *expires);
        }
        ServerMessage::Subscribed {
            id,
            channel,
            epoch,
            offset,
            recovered,
            gap,
        } => {
            w.opt_u64("id", *id);
            w.str("channel", channel);
            w.str("epoch", epoch);
            w.u64("offset", *offset);
            w.bool("recovered", *recovered);
            if *gap {
                w.bool("gap", true);
            }
        }
        ServerMessage::Unsubscribed {
            id,
            channel,
            reason,
        } => {
            w.opt_u64("id", *id);
            w.str("channel", channel);
            w.opt_str("reason", reason.as_deref());
        }
        ServerMessage::Published {
            id,
            channel,
            offset,
            duplicate,
        } => {
            w.opt_u64("id", *id);
            w.str("channel", channel);
            w.u64("offset", *offset);
            if *duplicate {
                w.bool("duplicate", true);
            }
        }
        ServerMessage::Presence {
            id,
            channel,
            clients,
        } => {
            w.opt_u64("id", *id);
            w.str("channel", channel);
            w.client_list(
                "clients",
                clients.iter().map(|c| (c.user.as_str(), c.client.as_str())),
            );
        }
        ServerMessage::Ok { id } | ServerMessage::Pong { id } => w.opt_u64("id", *id),
        ServerMessage::Rpc { id, data } => {
            w.opt_u64("id", *id);
            w.raw("data", data.as_str());
        }
        ServerMessage::Message(publication) => return encode_publication(publication),
        ServerMessage::Join {
            channel,
            user,
            client,
        }
        | ServerMessage::Leave {
            channel,
            user,
            client,
        } => {
            w.str("channel", channel);
            w.str("user", user);
            w.str("client", client);
        }
        ServerMessage::Signal {
            channel,
            from,
            data,
        } => {
            w.str("channel", channel);
            w.client_info("from", &from.user, &from.client);
            return finish_with_data(w, data);
        }
        ServerMessage::Gap {
            channel,
            epoch,
            offset,
        } => {
            w.str("channel", channel);
            w.str("epoch", epoch);
            w.u64("offset", *offset);
        }
        ServerMessage::Error { id, code, message } => {
            w.opt_u64("id", *id);
            w.str("code", code.as_str());
            w.str("message", message);
        }
    }
    Encoded::Text(w.finish())
}

impl std::fmt::Display for Frame<'_> {
    /// A short description for logs: the text, or the length of the bytes.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Text(text) => f.write_str(text),
            Self::Binary(bytes) => write!(f, "<{} binary bytes>", bytes.len()),
        }
    }
}
