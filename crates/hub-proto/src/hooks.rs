//! Proxy hooks: the hub asks the application's backend, over HTTP + JSON,
//! whether a connection may connect, refresh its session, subscribe or
//! publish, and forwards `rpc` calls to it (`docs/hooks.md`).
//!
//! This module holds the rules, without I/O: the JSON body of each hook's
//! request ([`connect_request`], [`refresh_request`], …), how an answer
//! (HTTP status and body) is read into a [`Verdict`] ([`parse_connect`],
//! [`parse_refresh`], …, with a structured [`AnswerError`] when it cannot
//! be), what each verdict does to the session ([`Refused::to_reply`],
//! [`Refused::connect_close`]), and the failure policy ([`on_failure`]).
//! The hub's driver sends the requests, bounds them in time and
//! concurrency, and tells [`on_failure`] which [`Failure`] happened.
//!
//! # Invariants
//!
//! - Every answer is `{"result": {…}}` (accept), `{"error": {…}}` (refuse)
//!   or `{"disconnect": {…}}` (close the connection), with a 2xx status;
//!   anything else (another status, not JSON, none or several of the three,
//!   a field of the wrong type, an invalid channel, a close code outside
//!   4000–4999, data nested deeper than [`crate::MAX_DATA_DEPTH`]) is an
//!   [`AnswerError`], which the session treats as a [`Failure::BadAnswer`]:
//!   never as an accept.
//! - A failure never accepts silently: `connect` closes with 1013 (try
//!   again later), `subscribe`, `publish` and `rpc` are refused with
//!   `backend_unavailable` — except `subscribe` and `publish` in a
//!   namespace configured fail-open, where the command goes on under the
//!   hub's own rules; a `refresh` that fails is tried again until the
//!   session expires ([`refresh_retry_at`]).
//! - A hook only narrows: it is asked after the hub's own rules (phase,
//!   namespace permissions, token grants, limits) allowed the command, and
//!   it cannot allow what they refuse.
//! - Close reasons are at most [`MAX_REASON_LEN`] bytes (cut at a character
//!   boundary); a `connect` answer names at most [`MAX_CONNECT_CHANNELS`]
//!   channels.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::channel::{NameError, validate_channel};
use crate::close;
use crate::data::{Data, JsonText};
use crate::message::{ErrorCode, ServerMessage};

/// A proxy hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Hook {
    /// A connection without a token asks to connect.
    Connect,
    /// The session of a connection the `connect` hook let in nears its
    /// expiry.
    Refresh,
    /// A client asks to subscribe to a channel.
    Subscribe,
    /// A client publishes to a channel.
    Publish,
    /// A client calls a method of the backend.
    Rpc,
}

impl Hook {
    /// Every hook, in label order.
    pub const ALL: [Self; 5] = [
        Self::Connect,
        Self::Refresh,
        Self::Subscribe,
        Self::Publish,
        Self::Rpc,
    ];

    /// Its name (in the configuration, the metrics and the docs).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Refresh => "refresh",
            Self::Subscribe => "subscribe",
            Self::Publish => "publish",
            Self::Rpc => "rpc",
        }
    }

    /// Its position in [`Hook::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// The most channels a `connect` answer may name.
pub const MAX_CONNECT_CHANNELS: usize = 256;

/// The longest close reason (a close frame's 125 bytes, less the code).
pub const MAX_REASON_LEN: usize = 123;

/// Close code of a connection the `connect` hook could not decide on (the
/// backend is down, slow or answered garbage): 1013, try again later.
pub const TRY_AGAIN_LATER: u16 = close::TRY_AGAIN_LATER;

// ---- requests ---------------------------------------------------------------

/// Who is asking: the connection's id and its user (empty: anonymous).
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    /// The connection's client id.
    pub client: &'a str,
    /// Its user (empty for anonymous).
    pub user: &'a str,
}

#[derive(Serialize)]
struct ConnectBody<'a> {
    client: &'a str,
    transport: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    remote: &'a str,
}

/// The body of a `connect` request: `{"client", "transport": "websocket",
/// "name"?, "remote"}` (`remote`: the client's address as the hub sees it).
pub fn connect_request(client: &str, name: Option<&str>, remote: &str) -> Vec<u8> {
    to_body(&ConnectBody {
        client,
        transport: "websocket",
        name,
        remote,
    })
}

#[derive(Serialize)]
struct RefreshBody<'a> {
    client: &'a str,
    user: &'a str,
    expires: u64,
}

/// The body of a `refresh` request: `{"client", "user", "expires"}` (the
/// current expiry, seconds since the Unix epoch).
pub fn refresh_request(caller: Caller<'_>, expires: u64) -> Vec<u8> {
    to_body(&RefreshBody {
        client: caller.client,
        user: caller.user,
        expires,
    })
}

#[derive(Serialize)]
struct ChannelBody<'a> {
    client: &'a str,
    user: &'a str,
    channel: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    b64data: Option<String>,
}

/// The body of a `subscribe` request: `{"client", "user", "channel"}`.
pub fn subscribe_request(caller: Caller<'_>, channel: &str) -> Vec<u8> {
    to_body(&ChannelBody {
        client: caller.client,
        user: caller.user,
        channel,
        data: None,
        b64data: None,
    })
}

/// The body of a `publish` request: `{"client", "user", "channel",
/// "data"}`, or `"b64data"` (standard base64) for binary data.
pub fn publish_request(caller: Caller<'_>, channel: &str, data: &Data) -> Vec<u8> {
    let (json, b64data) = match data {
        Data::Json(json) => (Some(raw(json)), None),
        Data::Binary(bytes) => (None, Some(BASE64.encode(bytes))),
    };
    to_body(&ChannelBody {
        client: caller.client,
        user: caller.user,
        channel,
        data: json,
        b64data,
    })
}

#[derive(Serialize)]
struct RpcBody<'a> {
    client: &'a str,
    user: &'a str,
    method: &'a str,
    data: &'a RawValue,
}

/// The body of an `rpc` request: `{"client", "user", "method", "data"}`.
pub fn rpc_request(caller: Caller<'_>, method: &str, data: &JsonText) -> Vec<u8> {
    to_body(&RpcBody {
        client: caller.client,
        user: caller.user,
        method,
        data: raw(data),
    })
}

/// `json` as a raw value (it is valid JSON by [`JsonText`]'s invariant).
fn raw(json: &JsonText) -> &RawValue {
    // JsonText holds one valid JSON value: the fallback is never taken.
    serde_json::from_str(json.as_str()).unwrap_or(RawValue::NULL)
}

fn to_body<T: Serialize>(body: &T) -> Vec<u8> {
    // Strings and raw JSON always serialise.
    serde_json::to_vec(body).unwrap_or_default()
}

// ---- answers ----------------------------------------------------------------

/// What the backend decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict<T> {
    /// Go on, with what the backend said.
    Accept(T),
    /// Refuse the command (or the connection, for `connect`).
    Refuse(Refused),
    /// Close the connection with this code and reason.
    Disconnect(Disconnect),
}

/// The backend's refusal, with its message for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// The message (default: "refused by the application").
    pub message: String,
}

/// The backend asks to close the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disconnect {
    /// A close code in 4000–4999.
    pub code: u16,
    /// The reason, at most [`MAX_REASON_LEN`] bytes.
    pub reason: String,
}

/// A `connect` the backend accepted.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Connected {
    /// The user (empty: anonymous).
    pub user: String,
    /// When the session expires (seconds since the Unix epoch); `None`:
    /// never.
    pub expires: Option<u64>,
    /// Data for the client, sent in `connected` (never `null`).
    pub data: Option<JsonText>,
    /// Channels to subscribe the connection to at once (server-side).
    pub channels: Vec<String>,
}

/// A `publish` the backend accepted.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Published {
    /// Data to publish instead of the client's.
    pub data: Option<Data>,
}

/// Why an answer cannot be used. The session treats each as a
/// [`Failure::BadAnswer`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AnswerError {
    /// The status is not 2xx.
    #[error("the backend answered with HTTP status {0}")]
    Status(u16),
    /// The body is not a JSON object.
    #[error("the backend's answer is not a JSON object: {0}")]
    NotAnObject(String),
    /// The object has none, or more than one, of `result`, `error` and
    /// `disconnect`.
    #[error("the backend's answer must hold exactly one of `result`, `error`, `disconnect`")]
    Outcome,
    /// A field has the wrong type or value.
    #[error("the backend's answer: `{field}` must be {expected}")]
    Field {
        /// The field, as `result.user`.
        field: &'static str,
        /// What it must be.
        expected: &'static str,
    },
    /// A channel to join is invalid.
    #[error("the backend's answer: channel {channel:?}: {source}")]
    Channel {
        /// The name.
        channel: String,
        /// Why it is invalid.
        #[source]
        source: NameError,
    },
    /// `result.expires` is not after now.
    #[error("the backend's answer: `result.expires` ({expires}) is not in the future")]
    Expired {
        /// The expiry it gave.
        expires: u64,
    },
}

/// The three outcomes of an answer, before each hook reads its result.
enum Outcome {
    Result(Map<String, Value>),
    Error(Refused),
    Disconnect(Disconnect),
}

fn field(field: &'static str, expected: &'static str) -> AnswerError {
    AnswerError::Field { field, expected }
}

/// Reads the status and the envelope.
fn outcome(status: u16, body: &[u8]) -> Result<Outcome, AnswerError> {
    if !(200..300).contains(&status) {
        return Err(AnswerError::Status(status));
    }
    let value: Value =
        serde_json::from_slice(body).map_err(|e| AnswerError::NotAnObject(e.to_string()))?;
    let Value::Object(mut object) = value else {
        return Err(AnswerError::NotAnObject("another JSON value".to_owned()));
    };
    let present = ["result", "error", "disconnect"]
        .iter()
        .filter(|key| object.get(**key).is_some_and(|v| !v.is_null()))
        .count();
    if present != 1 {
        return Err(AnswerError::Outcome);
    }
    if let Some(result) = object.remove("result").filter(|v| !v.is_null()) {
        return match result {
            Value::Object(result) => Ok(Outcome::Result(result)),
            _ => Err(field("result", "an object")),
        };
    }
    if let Some(error) = object.remove("error").filter(|v| !v.is_null()) {
        let Value::Object(error) = error else {
            return Err(field("error", "an object"));
        };
        let message = match error.get("message") {
            None | Some(Value::Null) => "refused by the application".to_owned(),
            Some(Value::String(message)) => message.clone(),
            Some(_) => return Err(field("error.message", "a string")),
        };
        return Ok(Outcome::Error(Refused { message }));
    }
    let Some(Value::Object(disconnect)) = object.remove("disconnect") else {
        return Err(field("disconnect", "an object"));
    };
    let code = disconnect
        .get("code")
        .and_then(Value::as_u64)
        .and_then(|code| u16::try_from(code).ok())
        .filter(|code| (4000..=4999).contains(code))
        .ok_or_else(|| field("disconnect.code", "an integer in 4000..=4999"))?;
    let reason = match disconnect.get("reason") {
        None | Some(Value::Null) => "",
        Some(Value::String(reason)) => reason,
        Some(_) => return Err(field("disconnect.reason", "a string")),
    };
    Ok(Outcome::Disconnect(Disconnect {
        code,
        reason: cut(reason, MAX_REASON_LEN).to_owned(),
    }))
}

/// `text` cut to at most `max` bytes, at a character boundary.
fn cut(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Reads an answer whose result `read` turns into a `T`.
fn parse<T>(
    status: u16,
    body: &[u8],
    read: impl FnOnce(Map<String, Value>) -> Result<T, AnswerError>,
) -> Result<Verdict<T>, AnswerError> {
    Ok(match outcome(status, body)? {
        Outcome::Result(result) => Verdict::Accept(read(result)?),
        Outcome::Error(refused) => Verdict::Refuse(refused),
        Outcome::Disconnect(disconnect) => Verdict::Disconnect(disconnect),
    })
}

/// JSON data of a result: `None` when absent or `null`.
fn json_data(
    result: &Map<String, Value>,
    name: &'static str,
) -> Result<Option<JsonText>, AnswerError> {
    match result.get("data") {
        None | Some(Value::Null) => Ok(None),
        Some(value) => {
            let json = JsonText::from_value(value);
            if json.depth() > crate::MAX_DATA_DEPTH {
                return Err(field(name, "JSON nested at most 64 levels deep"));
            }
            Ok(Some(json))
        }
    }
}

/// An expiry after `now`, or `None` when absent.
fn expires(
    result: &Map<String, Value>,
    now: u64,
    name: &'static str,
) -> Result<Option<u64>, AnswerError> {
    match result.get("expires") {
        None | Some(Value::Null) => Ok(None),
        Some(value) => {
            let expires = value
                .as_u64()
                .filter(|e| *e <= crate::MAX_INTEGER)
                .ok_or_else(|| field(name, "seconds since the Unix epoch"))?;
            if expires <= now {
                return Err(AnswerError::Expired { expires });
            }
            Ok(Some(expires))
        }
    }
}

/// Reads a `connect` answer; `now` is the time in seconds since the Unix
/// epoch (an `expires` must be after it). Result fields, all optional:
/// `user` (string; empty or absent: anonymous), `expires` (integer, with a
/// `user` only), `data` (any JSON), `channels` (array of channel names, at
/// most [`MAX_CONNECT_CHANNELS`]).
pub fn parse_connect(
    status: u16,
    body: &[u8],
    now: u64,
) -> Result<Verdict<Connected>, AnswerError> {
    parse(status, body, |result| {
        let user = match result.get("user") {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(user)) => user.clone(),
            Some(_) => return Err(field("result.user", "a string")),
        };
        let channels = match result.get("channels") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(names)) if names.len() <= MAX_CONNECT_CHANNELS => names
                .iter()
                .map(|name| {
                    let Value::String(name) = name else {
                        return Err(field("result.channels", "an array of strings"));
                    };
                    validate_channel(name).map_err(|source| AnswerError::Channel {
                        channel: name.clone(),
                        source,
                    })?;
                    Ok(name.clone())
                })
                .collect::<Result<_, _>>()?,
            Some(_) => {
                return Err(field(
                    "result.channels",
                    "an array of at most 256 channel names",
                ));
            }
        };
        let expires = expires(&result, now, "result.expires")?;
        if expires.is_some() && user.is_empty() {
            // An anonymous connection has no session to expire.
            return Err(field("result.expires", "absent when `user` is empty"));
        }
        Ok(Connected {
            user,
            expires,
            data: json_data(&result, "result.data")?,
            channels,
        })
    })
}

/// Reads a `refresh` answer: the result's `expires` (required, after
/// `now`) is the session's new expiry.
pub fn parse_refresh(status: u16, body: &[u8], now: u64) -> Result<Verdict<u64>, AnswerError> {
    parse(status, body, |result| {
        expires(&result, now, "result.expires")?
            .ok_or_else(|| field("result.expires", "seconds since the Unix epoch"))
    })
}

/// Reads a `subscribe` answer (the result's fields are not read).
pub fn parse_subscribe(status: u16, body: &[u8]) -> Result<Verdict<()>, AnswerError> {
    parse(status, body, |_| Ok(()))
}

/// Reads a `publish` answer: the result's `data` (JSON) or `b64data`
/// (standard base64, published as binary), when present, replace the
/// client's data.
pub fn parse_publish(status: u16, body: &[u8]) -> Result<Verdict<Published>, AnswerError> {
    parse(status, body, |result| {
        let json = json_data(&result, "result.data")?;
        let binary = match result.get("b64data") {
            None | Some(Value::Null) => None,
            Some(Value::String(text)) => Some(
                BASE64
                    .decode(text)
                    .map_err(|_| field("result.b64data", "standard base64"))?,
            ),
            Some(_) => return Err(field("result.b64data", "a string")),
        };
        let data = match (json, binary) {
            (Some(_), Some(_)) => {
                return Err(field("result", "at most one of `data` and `b64data`"));
            }
            (Some(json), None) => Some(Data::Json(json)),
            (None, Some(bytes)) => Some(Data::Binary(Bytes::from(bytes))),
            (None, None) => None,
        };
        Ok(Published { data })
    })
}

/// Reads an `rpc` answer: the result's `data` (`null` when absent) is the
/// reply's.
pub fn parse_rpc(status: u16, body: &[u8]) -> Result<Verdict<JsonText>, AnswerError> {
    parse(status, body, |result| {
        Ok(json_data(&result, "result.data")?.unwrap_or_else(JsonText::null))
    })
}

// ---- what verdicts and failures do -----------------------------------------

impl Refused {
    /// The `error` reply to command `id` that `hook` refused: `forbidden`
    /// for `subscribe` and `publish`, `rpc_error` for `rpc` (and
    /// `unauthorized` for the others, which close instead: see
    /// [`Refused::connect_close`]).
    pub fn to_reply(&self, hook: Hook, id: Option<u64>) -> ServerMessage {
        let code = match hook {
            Hook::Subscribe | Hook::Publish => ErrorCode::Forbidden,
            Hook::Rpc => ErrorCode::RpcError,
            Hook::Connect | Hook::Refresh => ErrorCode::Unauthorized,
        };
        ServerMessage::Error {
            id,
            code,
            message: self.message.clone(),
        }
    }

    /// How a refused `connect` closes: 4001 with the backend's message.
    pub fn connect_close(&self) -> Disconnect {
        Disconnect {
            code: close::UNAUTHORIZED,
            reason: cut(&self.message, MAX_REASON_LEN).to_owned(),
        }
    }
}

/// Why a hook got no usable answer (the `kind` label of the failure
/// metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Failure {
    /// The hook's concurrency was full for longer than its queue wait.
    Busy,
    /// No answer within the hook's timeout.
    Timeout,
    /// The backend could not be reached (refused, reset, DNS, TLS).
    Unreachable,
    /// The answer was larger than the hub reads.
    TooLarge,
    /// The status was not 2xx.
    Status,
    /// The answer could not be read ([`AnswerError`] other than a status).
    BadAnswer,
}

impl Failure {
    /// Every kind, in label order.
    pub const ALL: [Self; 6] = [
        Self::Busy,
        Self::Timeout,
        Self::Unreachable,
        Self::TooLarge,
        Self::Status,
        Self::BadAnswer,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Busy => "busy",
            Self::Timeout => "timeout",
            Self::Unreachable => "unreachable",
            Self::TooLarge => "too_large",
            Self::Status => "status",
            Self::BadAnswer => "bad_answer",
        }
    }

    /// Its position in [`Failure::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// What the client is told.
    fn message(self) -> &'static str {
        match self {
            Self::Busy => "the application's backend is busy: too many requests wait for it",
            Self::Timeout => "the application's backend did not answer in time",
            Self::Unreachable => "the application's backend cannot be reached",
            Self::TooLarge => "the application's backend answered more than the hub reads",
            Self::Status => "the application's backend answered with an error status",
            Self::BadAnswer => "the application's backend gave an answer the hub cannot read",
        }
    }
}

impl From<&AnswerError> for Failure {
    fn from(error: &AnswerError) -> Self {
        match error {
            AnswerError::Status(_) => Self::Status,
            _ => Self::BadAnswer,
        }
    }
}

/// What the session does when `hook` failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OnFailure {
    /// Go on as if there were no hook (fail-open `subscribe`/`publish`).
    Proceed,
    /// Refuse the command with this `error` reply (`backend_unavailable`).
    Reply(ServerMessage),
    /// Close the connection (`connect`: 1013, try again later).
    Close(Disconnect),
    /// Try again later ([`refresh_retry_at`]), until the session expires.
    Retry,
}

/// The failure policy (see the module docs): what the session does when
/// `hook` failed with `failure` for command `id`; `fail_open` is the
/// namespace's setting (it applies to `subscribe` and `publish` only).
pub fn on_failure(hook: Hook, failure: Failure, fail_open: bool, id: Option<u64>) -> OnFailure {
    match hook {
        Hook::Subscribe | Hook::Publish if fail_open => OnFailure::Proceed,
        Hook::Subscribe | Hook::Publish | Hook::Rpc => OnFailure::Reply(ServerMessage::Error {
            id,
            code: ErrorCode::BackendUnavailable,
            message: failure.message().to_owned(),
        }),
        Hook::Connect => OnFailure::Close(Disconnect {
            code: TRY_AGAIN_LATER,
            reason: failure.message().to_owned(),
        }),
        Hook::Refresh => OnFailure::Retry,
    }
}

// ---- refresh timing -----------------------------------------------------------

/// How long before its expiry a session's `refresh` hook is asked, at
/// most (and at most half the session's remaining life).
pub const REFRESH_MARGIN_SECS: u64 = 60;

/// After a failed `refresh`, how long until the next try, at most.
pub const REFRESH_RETRY_SECS: u64 = 5;

/// When (seconds since the Unix epoch) to ask the `refresh` hook for a
/// session that expires at `expires`, at `now`: [`REFRESH_MARGIN_SECS`]
/// before, or half-way for a shorter session, never before `now`.
pub fn refresh_at(now: u64, expires: u64) -> u64 {
    let left = expires.saturating_sub(now);
    expires - left.min(REFRESH_MARGIN_SECS).min(left / 2)
}

/// When to try a failed `refresh` again: [`REFRESH_RETRY_SECS`] after
/// `now`, or `None` when the session expires first (it then ends).
pub fn refresh_retry_at(now: u64, expires: u64) -> Option<u64> {
    let next = now
        + REFRESH_RETRY_SECS
            .min(expires.saturating_sub(now) / 2)
            .max(1);
    (next < expires).then_some(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;

    fn body(value: Value) -> Vec<u8> {
        serde_json::to_vec(&value).unwrap()
    }

    #[test]
    fn requests_carry_the_caller_and_the_data_verbatim() {
        let caller = Caller {
            client: "c1",
            user: "ada",
        };
        let text = String::from_utf8(connect_request("c1", Some("web"), "10.0.0.1")).unwrap();
        assert_eq!(
            text,
            r#"{"client":"c1","transport":"websocket","name":"web","remote":"10.0.0.1"}"#
        );
        let data = Data::Json(JsonText::parse(r#"{"a": [1, 2]}"#).unwrap());
        let text = String::from_utf8(publish_request(caller, "news:x", &data)).unwrap();
        assert_eq!(
            text,
            r#"{"client":"c1","user":"ada","channel":"news:x","data":{"a": [1, 2]}}"#
        );
        let binary = Data::Binary(Bytes::from_static(b"\x00\xff"));
        let value: Value = serde_json::from_slice(&publish_request(caller, "b", &binary)).unwrap();
        assert_eq!(value["b64data"], "AP8=");
        assert!(value.get("data").is_none());
        let value: Value =
            serde_json::from_slice(&rpc_request(caller, "orders:get", &JsonText::null())).unwrap();
        assert_eq!(
            value,
            serde_json::json!({"client": "c1", "user": "ada", "method": "orders:get", "data": null})
        );
        let value: Value = serde_json::from_slice(&refresh_request(caller, NOW)).unwrap();
        assert_eq!(value["expires"], NOW);
        let value: Value = serde_json::from_slice(&subscribe_request(caller, "a")).unwrap();
        assert_eq!(value["channel"], "a");
    }

    #[test]
    fn a_connect_result_sets_user_expiry_data_and_channels() {
        let answer = body(serde_json::json!({"result": {
            "user": "ada", "expires": NOW + 600, "data": {"plan": "pro"},
            "channels": ["news:ada", "chat:lobby"]
        }}));
        let Verdict::Accept(connected) = parse_connect(200, &answer, NOW).unwrap() else {
            panic!("accepted")
        };
        assert_eq!(connected.user, "ada");
        assert_eq!(connected.expires, Some(NOW + 600));
        assert_eq!(connected.data.unwrap().as_str(), r#"{"plan":"pro"}"#);
        assert_eq!(connected.channels, ["news:ada", "chat:lobby"]);
        // Everything is optional; `null` data is no data.
        let empty = parse_connect(200, br#"{"result": {"data": null}}"#, NOW).unwrap();
        assert_eq!(empty, Verdict::Accept(Connected::default()));
    }

    #[test]
    fn refusals_and_disconnects_are_read() {
        assert_eq!(
            parse_subscribe(200, br#"{"error": {"message": "members only"}}"#).unwrap(),
            Verdict::Refuse(Refused {
                message: "members only".into()
            })
        );
        assert_eq!(
            parse_subscribe(200, br#"{"error": {}}"#).unwrap(),
            Verdict::Refuse(Refused {
                message: "refused by the application".into()
            })
        );
        let long = "x".repeat(200);
        let answer = body(serde_json::json!({"disconnect": {"code": 4403, "reason": long}}));
        let Verdict::Disconnect(disconnect) = parse_rpc(200, &answer).unwrap() else {
            panic!("disconnect")
        };
        assert_eq!(disconnect.code, 4403);
        assert_eq!(disconnect.reason.len(), MAX_REASON_LEN);
    }

    #[test]
    fn garbage_is_an_error_never_an_accept() {
        let cases: [(u16, &[u8]); 12] = [
            (500, br#"{"result": {}}"#),
            (302, br#"{"result": {}}"#),
            (200, b"not json"),
            (200, b"[]"),
            (200, b"{}"),
            (200, br#"{"result": {}, "error": {}}"#),
            (200, br#"{"result": 1}"#),
            (200, br#"{"result": {"user": 7}}"#),
            (200, br#"{"result": {"channels": ["bad name"]}}"#),
            (200, br#"{"result": {"expires": 5}}"#),
            (200, br#"{"disconnect": {"code": 1000}}"#),
            (200, br#"{"error": {"message": 3}}"#),
        ];
        for (status, answer) in cases {
            let error = parse_connect(status, answer, NOW).unwrap_err();
            let failure = Failure::from(&error);
            assert_eq!(
                failure == Failure::Status,
                !(200..300).contains(&status),
                "{error}"
            );
        }
        let many: Vec<String> = (0..=MAX_CONNECT_CHANNELS)
            .map(|i| format!("c{i}"))
            .collect();
        let answer = body(serde_json::json!({"result": {"channels": many}}));
        assert!(parse_connect(200, &answer, NOW).is_err());
        let deep = format!("{}{}", "[".repeat(70), "]".repeat(70));
        let answer = format!(r#"{{"result": {{"data": {deep}}}}}"#);
        assert!(parse_rpc(200, answer.as_bytes()).is_err(), "too deep");
        assert!(parse_refresh(200, br#"{"result": {}}"#, NOW).is_err());
        let anonymous_expiry = body(serde_json::json!({"result": {"expires": NOW + 60}}));
        assert!(parse_connect(200, &anonymous_expiry, NOW).is_err());
    }

    #[test]
    fn a_publish_may_replace_the_data() {
        let keep = parse_publish(200, br#"{"result": {}}"#).unwrap();
        assert_eq!(keep, Verdict::Accept(Published { data: None }));
        let Verdict::Accept(Published { data: Some(data) }) =
            parse_publish(200, br#"{"result": {"data": {"text": "***"}}}"#).unwrap()
        else {
            panic!("replaced")
        };
        assert_eq!(data.as_json().unwrap().as_str(), r#"{"text":"***"}"#);
        let Verdict::Accept(Published {
            data: Some(Data::Binary(bytes)),
        }) = parse_publish(200, br#"{"result": {"b64data": "AP8="}}"#).unwrap()
        else {
            panic!("binary")
        };
        assert_eq!(&bytes[..], b"\x00\xff");
        assert!(parse_publish(200, br#"{"result": {"b64data": "!!"}}"#).is_err());
        assert!(parse_publish(200, br#"{"result": {"data": 1, "b64data": "AA=="}}"#).is_err());
    }

    #[test]
    fn rpc_data_defaults_to_null_and_refusals_are_rpc_errors() {
        assert_eq!(
            parse_rpc(200, br#"{"result": {}}"#).unwrap(),
            Verdict::Accept(JsonText::null())
        );
        let refused = Refused {
            message: "no such order".into(),
        };
        let ServerMessage::Error { id, code, message } = refused.to_reply(Hook::Rpc, Some(4))
        else {
            panic!("an error")
        };
        assert_eq!(
            (id, code, message.as_str()),
            (Some(4), ErrorCode::RpcError, "no such order")
        );
        assert!(matches!(
            refused.to_reply(Hook::Subscribe, None),
            ServerMessage::Error {
                code: ErrorCode::Forbidden,
                ..
            }
        ));
        assert_eq!(refused.connect_close().code, close::UNAUTHORIZED);
    }

    #[test]
    fn failures_never_accept_unless_fail_open() {
        for failure in Failure::ALL {
            assert!(matches!(
                on_failure(Hook::Connect, failure, true, None),
                OnFailure::Close(Disconnect {
                    code: TRY_AGAIN_LATER,
                    ..
                })
            ));
            for hook in [Hook::Subscribe, Hook::Publish, Hook::Rpc] {
                let OnFailure::Reply(ServerMessage::Error { code, id, .. }) =
                    on_failure(hook, failure, false, Some(3))
                else {
                    panic!("{hook:?} refused")
                };
                assert_eq!((code, id), (ErrorCode::BackendUnavailable, Some(3)));
            }
            assert_eq!(
                on_failure(Hook::Subscribe, failure, true, None),
                OnFailure::Proceed
            );
            assert_eq!(
                on_failure(Hook::Publish, failure, true, None),
                OnFailure::Proceed
            );
            assert!(matches!(
                on_failure(Hook::Rpc, failure, true, None),
                OnFailure::Reply(_)
            ));
            assert_eq!(
                on_failure(Hook::Refresh, failure, false, None),
                OnFailure::Retry
            );
        }
    }

    #[test]
    fn refresh_is_asked_before_expiry_and_retried_until_it() {
        assert_eq!(refresh_at(NOW, NOW + 3600), NOW + 3600 - 60);
        assert_eq!(refresh_at(NOW, NOW + 20), NOW + 10, "half-way when short");
        assert_eq!(refresh_at(NOW, NOW), NOW);
        assert_eq!(refresh_retry_at(NOW, NOW + 3600), Some(NOW + 5));
        assert_eq!(refresh_retry_at(NOW, NOW + 4), Some(NOW + 2));
        assert_eq!(refresh_retry_at(NOW, NOW + 1), None);
        assert_eq!(refresh_retry_at(NOW, NOW), None);
    }
}
