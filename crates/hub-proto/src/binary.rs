//! The binary envelope (`duplex.v1.bin`): every message in one WebSocket
//! binary frame, without field names.
//!
//! The same messages as the JSON codec ([`crate::codec`]), in fewer bytes: a
//! frame is a one-byte **tag** naming the op (bit 7 set: the message's data
//! is bytes, not JSON), then the op's fields in a fixed order, with `data`,
//! where the op has it, as the rest of the frame. Field types:
//!
//! | type | bytes |
//! |---|---|
//! | `uint` | unsigned LEB128, minimal (no trailing `0x00` byte), at most [`crate::MAX_INTEGER`] |
//! | `opt uint` | `uint` of `n + 1`; `0` is absent |
//! | `str` | `uint` header `h`, then `h >> 1` bytes of UTF-8 when `h & 1 == 0`; when `h & 1 == 1`, `h >> 1` lowercase hex digits packed two per byte, high nibble first (an odd count leaves the last low nibble `0`) |
//! | `opt str` | `str` with its header plus one; `0` is absent |
//! | `flags` | one byte of booleans, bit 0 first; the unnamed bits are `0` |
//! | `data` | the rest of the frame: JSON text (UTF-8) or the bytes, as the tag says |
//!
//! The encoders pack a string as hex when it is at least two lowercase hex
//! digits and nothing else (the hub's client ids, hex epochs), otherwise as
//! UTF-8. Every command has its `id` (`opt uint`) right after the tag, so an
//! error about a command can carry it whatever the op; replies have it
//! there too, pushes have none. The layouts, one per op, are [`COMMAND_TAGS`]
//! and [`SERVER_TAGS`] with the two `match`es of the encoders below
//! (`docs/protocol.md` has the byte-level table).
//!
//! Invariants:
//! - Decoding never panics and allocates no more than the frame's length
//!   (a presence list is bounded by the bytes left); anything wrong is a
//!   [`DecodeError`]: an unknown tag is [`ErrorCode::UnknownOp`], anything
//!   else [`ErrorCode::BadRequest`], with the id once read.
//! - The checks are the JSON codec's: commands name valid channels and keys
//!   of at most [`crate::MAX_KEY_LEN`] bytes, JSON data is one valid JSON value
//!   at most [`crate::MAX_DATA_DEPTH`] deep, integers are at most
//!   [`crate::MAX_INTEGER`]; the client side does not re-check names.
//! - Encoding is canonical and exact: what decodes, re-encoded, decodes to an
//!   equal value; bytes the encoder wrote decode and re-encode to the same
//!   bytes. A frame with bytes left over after its last field is refused.

use bytes::Bytes;

use crate::channel::validate_channel;
use crate::codec::DecodeError;
use crate::data::{Data, JsonText};
use crate::message::{ClientInfo, Command, ErrorCode, Publication, Request, ServerMessage, Since};

/// The tag bit saying a message's data is bytes rather than JSON text.
pub const BINARY_DATA: u8 = 0x80;

/// The tag of each command (client to hub), by op. A new command takes the
/// next free tag below `0x40`.
pub const COMMAND_TAGS: [(u8, &str); 9] = [
    (0x01, "connect"),
    (0x02, "refresh"),
    (0x03, "subscribe"),
    (0x04, "unsubscribe"),
    (0x05, "publish"),
    (0x06, "presence"),
    (0x07, "signal"),
    (0x08, "ping"),
    (0x09, "rpc"),
];

/// The tag of each reply and push (hub to client), by op. A new one takes
/// the next free tag from `0x40` to `0x7f`.
pub const SERVER_TAGS: [(u8, &str); 15] = [
    (0x41, "connected"),
    (0x42, "refreshed"),
    (0x43, "subscribed"),
    (0x44, "unsubscribed"),
    (0x45, "published"),
    (0x46, "presence"),
    (0x47, "ok"),
    (0x48, "pong"),
    (0x49, "message"),
    (0x4a, "join"),
    (0x4b, "leave"),
    (0x4c, "signal"),
    (0x4d, "gap"),
    (0x4e, "error"),
    (0x4f, "rpc"),
];

/// The tag of `op` in `table`.
///
/// # Panics
///
/// If `op` is not in the table: every op of [`Command`] and
/// [`ServerMessage`] is (a unit test checks it).
fn tag(table: &[(u8, &'static str)], op: &str) -> u8 {
    table
        .iter()
        .find(|(_, o)| *o == op)
        .map(|(t, _)| *t)
        .expect("every op has a tag")
}

/// The op `tag` names in `table` (bit 7 ignored).
fn op_of(table: &[(u8, &'static str)], tag: u8) -> Option<&'static str> {
    let tag = tag & !BINARY_DATA;
    table.iter().find(|(t, _)| *t == tag).map(|(_, o)| *o)
}

// ---- writing ---------------------------------------------------------------

/// Appends fields to a frame.
struct Writer(Vec<u8>);

impl Writer {
    fn new(tag: u8, capacity: usize) -> Self {
        let mut out = Vec::with_capacity(capacity);
        out.push(tag);
        Self(out)
    }

    fn uint(&mut self, mut n: u64) {
        while n >= 0x80 {
            self.0.push((n as u8) | 0x80);
            n >>= 7;
        }
        self.0.push(n as u8);
    }

    fn opt_uint(&mut self, n: Option<u64>) {
        self.uint(n.map_or(0, |n| n + 1));
    }

    /// A string with its header plus `bias` (1 for an optional one).
    fn biased_str(&mut self, s: &str, bias: u64) {
        let bytes = s.as_bytes();
        let hex = bytes.len() >= 2 && bytes.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        self.uint(((bytes.len() as u64) << 1 | u64::from(hex)) + bias);
        if !hex {
            self.0.extend_from_slice(bytes);
            return;
        }
        let nibble = |b: u8| if b <= b'9' { b - b'0' } else { b - b'a' + 10 };
        for pair in bytes.chunks(2) {
            let low = pair.get(1).map_or(0, |&b| nibble(b));
            self.0.push(nibble(pair[0]) << 4 | low);
        }
    }

    fn str(&mut self, s: &str) {
        self.biased_str(s, 0);
    }

    fn opt_str(&mut self, s: Option<&str>) {
        match s {
            None => self.uint(0),
            Some(s) => self.biased_str(s, 1),
        }
    }

    fn flags(&mut self, bits: &[bool]) {
        let byte = bits
            .iter()
            .enumerate()
            .fold(0u8, |byte, (i, &bit)| byte | (u8::from(bit) << i));
        self.0.push(byte);
    }

    /// Ends the frame with `data`, setting the tag's bit for bytes.
    fn data(mut self, data: &Data) -> Vec<u8> {
        match data {
            Data::Json(json) => self.0.extend_from_slice(json.as_str().as_bytes()),
            Data::Binary(bytes) => {
                self.0[0] |= BINARY_DATA;
                self.0.extend_from_slice(bytes);
            }
        }
        self.0
    }
}

/// Room for the fields of a frame besides its strings and data.
const FIXED: usize = 40;

/// Encodes a command (the client's encoder).
pub fn encode_command(request: &Request) -> Vec<u8> {
    let command = &request.command;
    let hint = match command {
        Command::Publish { channel, data, .. } | Command::Signal { channel, data } => {
            channel.len() + data.len()
        }
        Command::Connect { token, .. } => token.as_deref().map_or(0, str::len),
        Command::Refresh { token } => token.len(),
        Command::Rpc { method, data } => method.len() + data.as_str().len(),
        _ => 0,
    };
    let mut w = Writer::new(tag(&COMMAND_TAGS, command.op()), FIXED + hint);
    w.opt_uint(request.id);
    match command {
        Command::Connect { token, name } => {
            w.opt_str(token.as_deref());
            w.opt_str(name.as_deref());
        }
        Command::Refresh { token } => w.str(token),
        Command::Subscribe {
            channel,
            since,
            recent,
            token,
        } => {
            w.str(channel);
            w.opt_str(since.as_ref().map(|s| s.epoch.as_str()));
            if let Some(since) = since {
                w.uint(since.offset);
            }
            w.uint(u64::from(*recent));
            w.opt_str(token.as_deref());
        }
        Command::Unsubscribe { channel } | Command::Presence { channel } => w.str(channel),
        Command::Publish { channel, data, key } => {
            w.str(channel);
            w.opt_str(key.as_deref());
            return w.data(data);
        }
        Command::Signal { channel, data } => {
            w.str(channel);
            return w.data(data);
        }
        Command::Ping => {}
        Command::Rpc { method, data } => {
            w.str(method);
            return w.data(&Data::Json(data.clone()));
        }
    }
    w.0
}

/// Encodes a `message` push: what a publish encodes once for every
/// subscriber on this envelope.
pub fn encode_publication(publication: &Publication) -> Vec<u8> {
    let Publication {
        channel,
        offset,
        time,
        from,
        data,
    } = publication;
    let hint = channel.len() + from.user.len() + from.client.len() + data.len();
    let mut w = Writer::new(tag(&SERVER_TAGS, "message"), FIXED + hint);
    w.str(channel);
    w.uint(*offset);
    w.uint(*time);
    w.str(&from.user);
    w.str(&from.client);
    w.data(data)
}

/// Encodes a reply or push (the hub's encoder).
pub fn encode_server(message: &ServerMessage) -> Vec<u8> {
    let mut w = Writer::new(tag(&SERVER_TAGS, message.op()), 64);
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
            w.opt_uint(*id);
            w.str(client);
            w.str(user);
            w.uint(u64::from(*version));
            w.opt_uint(*expires);
            w.uint(*ping);
            // The backend's data, when there is any, is the rest of the frame.
            if let Some(data) = data {
                w.0.extend_from_slice(data.as_str().as_bytes());
            }
        }
        ServerMessage::Refreshed { id, expires } => {
            w.opt_uint(*id);
            w.opt_uint(*expires);
        }
        ServerMessage::Subscribed {
            id,
            channel,
            epoch,
            offset,
            recovered,
            gap,
        } => {
            w.opt_uint(*id);
            w.str(channel);
            w.str(epoch);
            w.uint(*offset);
            w.flags(&[*recovered, *gap]);
        }
        ServerMessage::Unsubscribed {
            id,
            channel,
            reason,
        } => {
            w.opt_uint(*id);
            w.str(channel);
            w.opt_str(reason.as_deref());
        }
        ServerMessage::Published {
            id,
            channel,
            offset,
            duplicate,
        } => {
            w.opt_uint(*id);
            w.str(channel);
            w.uint(*offset);
            w.flags(&[*duplicate]);
        }
        ServerMessage::Presence {
            id,
            channel,
            clients,
        } => {
            w.opt_uint(*id);
            w.str(channel);
            w.uint(clients.len() as u64);
            for c in clients {
                w.str(&c.user);
                w.str(&c.client);
            }
        }
        ServerMessage::Ok { id } | ServerMessage::Pong { id } => w.opt_uint(*id),
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
            w.str(channel);
            w.str(user);
            w.str(client);
        }
        ServerMessage::Signal {
            channel,
            from,
            data,
        } => {
            w.str(channel);
            w.str(&from.user);
            w.str(&from.client);
            return w.data(data);
        }
        ServerMessage::Gap {
            channel,
            epoch,
            offset,
        } => {
            w.str(channel);
            w.str(epoch);
            w.uint(*offset);
        }
        ServerMessage::Error { id, code, message } => {
            w.opt_uint(*id);
            w.str(code.as_str());
            w.str(message);
        }
        ServerMessage::Rpc { id, data } => {
            w.opt_uint(*id);
            w.0.extend_from_slice(data.as_str().as_bytes());
        }
    }
    w.0
}

// ---- reading ---------------------------------------------------------------

/// The bytes of a frame being decoded, shared or borrowed.
#[derive(Clone, Copy)]
enum Source<'a> {
    Slice(&'a [u8]),
    Shared(&'a Bytes),
}

/// Reads the fields of one frame in order.
struct Reader<'a> {
    source: Source<'a>,
    bytes: &'a [u8],
    at: usize,
    tag: u8,
    id: Option<u64>,
}

impl<'a> Reader<'a> {
    fn new(source: Source<'a>) -> Result<Self, DecodeError> {
        let bytes = match source {
            Source::Slice(bytes) => bytes,
            Source::Shared(bytes) => bytes,
        };
        let Some(&tag) = bytes.first() else {
            return Err(DecodeError::new(
                None,
                ErrorCode::BadRequest,
                "an empty frame: a frame starts with its tag",
            ));
        };
        Ok(Self {
            source,
            bytes,
            at: 1,
            tag,
            id: None,
        })
    }

    fn bad(&self, message: impl Into<String>) -> DecodeError {
        DecodeError::new(self.id, ErrorCode::BadRequest, message)
    }

    /// The op the tag names in `table`, or `unknown_op`.
    fn op(&self, table: &[(u8, &'static str)]) -> Result<&'static str, DecodeError> {
        op_of(table, self.tag).ok_or_else(|| {
            DecodeError::new(
                self.id,
                ErrorCode::UnknownOp,
                format!("unknown tag 0x{:02x}", self.tag),
            )
        })
    }

    fn ends_in(&self, field: &str) -> DecodeError {
        self.bad(format!("the frame ends inside field `{field}`"))
    }

    /// A raw LEB128 number, minimal, at most `max`.
    fn raw_uint(&mut self, field: &str, max: u64) -> Result<u64, DecodeError> {
        let mut n = 0u64;
        for shift in (0..).step_by(7).take(9) {
            let Some(&byte) = self.bytes.get(self.at) else {
                return Err(self.ends_in(field));
            };
            self.at += 1;
            n |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                if byte == 0 && shift > 0 {
                    return Err(self.bad(format!("field `{field}` is not a minimal varint")));
                }
                return if n > max {
                    Err(self.bad(format!(
                        "field `{field}` is too large: integers are at most {} (2^53 - 1)",
                        crate::MAX_INTEGER
                    )))
                } else {
                    Ok(n)
                };
            }
        }
        Err(self.bad(format!("field `{field}` is too large")))
    }

    fn uint(&mut self, field: &str) -> Result<u64, DecodeError> {
        self.raw_uint(field, crate::MAX_INTEGER)
    }

    fn opt_uint(&mut self, field: &str) -> Result<Option<u64>, DecodeError> {
        let n = self.raw_uint(field, crate::MAX_INTEGER + 1)?;
        Ok(n.checked_sub(1))
    }

    fn u32(&mut self, field: &str) -> Result<u32, DecodeError> {
        let n = self.uint(field)?;
        u32::try_from(n).map_err(|_| self.bad(format!("field `{field}` is too large")))
    }

    /// The next `len` bytes.
    fn take(&mut self, field: &str, len: u64) -> Result<&'a [u8], DecodeError> {
        let left = (self.bytes.len() - self.at) as u64;
        if len > left {
            return Err(self.ends_in(field));
        }
        let bytes = &self.bytes[self.at..self.at + len as usize];
        self.at += len as usize;
        Ok(bytes)
    }

    /// A string whose header `h` was read.
    fn str_body(&mut self, field: &str, h: u64) -> Result<String, DecodeError> {
        let len = h >> 1;
        if h & 1 == 0 {
            let bytes = self.take(field, len)?;
            return std::str::from_utf8(bytes)
                .map(str::to_owned)
                .map_err(|_| self.bad(format!("field `{field}` is not valid UTF-8")));
        }
        let packed = self.take(field, len.div_ceil(2))?;
        if len < 2 || (len % 2 == 1 && packed.last().is_some_and(|b| b & 0x0f != 0)) {
            return Err(self.bad(format!("field `{field}` is badly packed hex")));
        }
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut s = String::with_capacity(len as usize);
        for &b in packed {
            s.push(char::from(HEX[usize::from(b >> 4)]));
            s.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
        s.truncate(len as usize);
        Ok(s)
    }

    fn str(&mut self, field: &str) -> Result<String, DecodeError> {
        let h = self.raw_uint(field, u64::MAX >> 1)?;
        self.str_body(field, h)
    }

    fn opt_str(&mut self, field: &str) -> Result<Option<String>, DecodeError> {
        match self.raw_uint(field, u64::MAX >> 1)? {
            0 => Ok(None),
            h => self.str_body(field, h - 1).map(Some),
        }
    }

    /// A flags byte of which only the low `count` bits may be set.
    fn flags(&mut self, field: &str, count: u32) -> Result<u8, DecodeError> {
        let byte = self.take(field, 1)?[0];
        if byte >> count != 0 {
            return Err(self.bad(format!("field `{field}` has unknown bits set")));
        }
        Ok(byte)
    }

    /// A valid channel name (commands).
    fn channel(&mut self) -> Result<String, DecodeError> {
        let channel = self.str("channel")?;
        validate_channel(&channel).map_err(|e| self.bad(format!("invalid channel: {e}")))?;
        Ok(channel)
    }

    fn client_info(&mut self) -> Result<ClientInfo, DecodeError> {
        Ok(ClientInfo {
            user: self.str("user")?,
            client: self.str("client")?,
        })
    }

    /// The rest of the frame as data, JSON or bytes as the tag says.
    fn data(&mut self) -> Result<Data, DecodeError> {
        let start = self.at;
        self.at = self.bytes.len();
        if self.tag & BINARY_DATA != 0 {
            return Ok(Data::Binary(match self.source {
                Source::Slice(bytes) => Bytes::copy_from_slice(&bytes[start..]),
                Source::Shared(bytes) => bytes.slice(start..),
            }));
        }
        let text = std::str::from_utf8(&self.bytes[start..])
            .map_err(|_| self.bad("JSON data is not valid UTF-8"))?;
        if crate::depth::deeper_than(text, crate::MAX_DATA_DEPTH) {
            return Err(self.bad(format!(
                "field `data` nests arrays and objects more than {} levels deep",
                crate::MAX_DATA_DEPTH
            )));
        }
        JsonText::parse(text)
            .map(Data::Json)
            .map_err(|e| self.bad(format!("field `data` is not one JSON value: {e}")))
    }

    /// The rest of the frame as JSON text (`rpc`, `connected`'s data: never
    /// bytes; the tag's data bit is refused before).
    fn json(&mut self, field: &str) -> Result<JsonText, DecodeError> {
        match self.data()? {
            Data::Json(json) => Ok(json),
            Data::Binary(_) => Err(self.bad(format!("field `{field}` must be JSON"))),
        }
    }

    /// Refuses the data bit on an op without data.
    fn no_data(&self, op: &str) -> Result<(), DecodeError> {
        if self.tag & BINARY_DATA != 0 {
            return Err(self.bad(format!("`{op}` carries no data")));
        }
        Ok(())
    }

    /// Refuses bytes after the last field.
    fn end(&self) -> Result<(), DecodeError> {
        match self.bytes.len() - self.at {
            0 => Ok(()),
            left => Err(self.bad(format!("{left} bytes after the last field"))),
        }
    }
}

/// Decodes a command (the hub's decoder); binary data is copied.
pub fn decode_command(frame: &[u8]) -> Result<Request, DecodeError> {
    command(Reader::new(Source::Slice(frame))?)
}

/// Decodes a command, sharing `frame`'s bytes for binary data.
pub fn decode_command_shared(frame: &Bytes) -> Result<Request, DecodeError> {
    command(Reader::new(Source::Shared(frame))?)
}

fn command(mut r: Reader<'_>) -> Result<Request, DecodeError> {
    r.id = r.opt_uint("id")?;
    let op = r.op(&COMMAND_TAGS)?;
    if !matches!(op, "publish" | "signal") {
        r.no_data(op)?;
    }
    let command = match op {
        "connect" => Command::Connect {
            token: r.opt_str("token")?,
            name: r.opt_str("name")?,
        },
        "refresh" => Command::Refresh {
            token: r.str("token")?,
        },
        "subscribe" => {
            let channel = r.channel()?;
            let since = match r.opt_str("since.epoch")? {
                None => None,
                Some(epoch) => Some(Since {
                    epoch,
                    offset: r.uint("since.offset")?,
                }),
            };
            Command::Subscribe {
                channel,
                since,
                recent: r.u32("recent")?,
                token: r.opt_str("token")?,
            }
        }
        "unsubscribe" => Command::Unsubscribe {
            channel: r.channel()?,
        },
        "publish" => {
            let channel = r.channel()?;
            let key = r.opt_str("key")?;
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
                data: r.data()?,
            }
        }
        "presence" => Command::Presence {
            channel: r.channel()?,
        },
        "signal" => Command::Signal {
            channel: r.channel()?,
            data: r.data()?,
        },
        "ping" => Command::Ping,
        "rpc" => {
            let method = r.str("method")?;
            validate_channel(&method).map_err(|e| r.bad(format!("invalid method: {e}")))?;
            Command::Rpc {
                method,
                data: r.json("data")?,
            }
        }
        other => unreachable!("{other} is in COMMAND_TAGS but not decoded"),
    };
    r.end()?;
    Ok(Request { id: r.id, command })
}

/// Decodes a reply or push (the client's decoder).
pub fn decode_server(frame: &[u8]) -> Result<ServerMessage, DecodeError> {
    let mut r = Reader::new(Source::Slice(frame))?;
    let op = r.op(&SERVER_TAGS)?;
    if !matches!(op, "message" | "signal") {
        r.no_data(op)?;
    }
    let message = match op {
        "connected" => ServerMessage::Connected {
            id: r.opt_uint("id")?,
            client: r.str("client")?,
            user: r.str("user")?,
            version: r.u32("version")?,
            expires: r.opt_uint("expires")?,
            ping: r.uint("ping")?,
            data: if r.at < r.bytes.len() {
                Some(r.json("data")?)
            } else {
                None
            },
        },
        "refreshed" => ServerMessage::Refreshed {
            id: r.opt_uint("id")?,
            expires: r.opt_uint("expires")?,
        },
        "subscribed" => {
            let (id, channel, epoch, offset) = (
                r.opt_uint("id")?,
                r.str("channel")?,
                r.str("epoch")?,
                r.uint("offset")?,
            );
            let flags = r.flags("flags", 2)?;
            ServerMessage::Subscribed {
                id,
                channel,
                epoch,
                offset,
                recovered: flags & 1 != 0,
                gap: flags & 2 != 0,
            }
        }
        "unsubscribed" => ServerMessage::Unsubscribed {
            id: r.opt_uint("id")?,
            channel: r.str("channel")?,
            reason: r.opt_str("reason")?,
        },
        "published" => ServerMessage::Published {
            id: r.opt_uint("id")?,
            channel: r.str("channel")?,
            offset: r.uint("offset")?,
            duplicate: r.flags("flags", 1)? != 0,
        },
        "presence" => {
            let (id, channel, count) = (r.opt_uint("id")?, r.str("channel")?, r.uint("clients")?);
            // Each entry takes two bytes at least.
            let room = (r.bytes.len() - r.at) / 2;
            let mut clients = Vec::with_capacity(room.min(count as usize));
            for _ in 0..count {
                clients.push(r.client_info()?);
            }
            ServerMessage::Presence {
                id,
                channel,
                clients,
            }
        }
        "ok" => ServerMessage::Ok {
            id: r.opt_uint("id")?,
        },
        "pong" => ServerMessage::Pong {
            id: r.opt_uint("id")?,
        },
        "message" => ServerMessage::Message(Publication {
            channel: r.str("channel")?,
            offset: r.uint("offset")?,
            time: r.uint("time")?,
            from: r.client_info()?,
            data: r.data()?,
        }),
        "join" | "leave" => {
            let (channel, user, client) = (r.str("channel")?, r.str("user")?, r.str("client")?);
            if op == "join" {
                ServerMessage::Join {
                    channel,
                    user,
                    client,
                }
            } else {
                ServerMessage::Leave {
                    channel,
                    user,
                    client,
                }
            }
        }
        "signal" => ServerMessage::Signal {
            channel: r.str("channel")?,
            from: r.client_info()?,
            data: r.data()?,
        },
        "gap" => ServerMessage::Gap {
            channel: r.str("channel")?,
            epoch: r.str("epoch")?,
            offset: r.uint("offset")?,
        },
        "error" => {
            let id = r.opt_uint("id")?;
            r.id = id;
            let code = r.str("code")?;
            let code = ErrorCode::from_wire(&code)
                .ok_or_else(|| r.bad(format!("unknown error code {code:?}")))?;
            ServerMessage::Error {
                id,
                code,
                message: r.str("message")?,
            }
        }
        "rpc" => ServerMessage::Rpc {
            id: r.opt_uint("id")?,
            data: r.json("data")?,
        },
        other => unreachable!("{other} is in SERVER_TAGS but not decoded"),
    };
    r.end()?;
    Ok(message)
}

#[cfg(test)]
#[path = "binary_tests.rs"]
mod tests;
