//! The operator's console on the hub's own port: the admin login and the
//! server API calls the console page (`/console`, `web/dashboard.html`)
//! makes, under `/console/`, in HTTP/1.1 and HTTP/2 alike, whether or not
//! the server API's own listener (`[api] listen`) is on.
//!
//! - `POST /console/login` with `{"token": ADMIN_TOKEN}` logs in: the token
//!   is compared in constant time with `[admin] token`, and a session cookie
//!   is set (`duplex_console`, `HttpOnly; SameSite=Strict; Path=/`, `Secure`
//!   when the hub serves TLS or a public URL is `https`). `POST
//!   /console/logout` ends the session; `POST /console/session` says
//!   whether the request is logged in and whether a login is possible.
//! - `POST /console/api/<call>` runs a server API call through the API's
//!   own code ([`crate::api::call`]): the reads `info` and `channels` for
//!   whoever may read the admin pages (as `/dashboard`), `connections`,
//!   `publish` and `disconnect` only for the admin: logged in, or with the
//!   admin token as `Authorization: Bearer`. One read is the console's
//!   own: `offsets`, `{"channels": [≤ 50 names]}` → `{"offsets": {name:
//!   {epoch, offset}}}`, each the server API's `history` with `limit: 0`
//!   (no message is read out), for the channels' publish rates.
//!
//! # Invariants
//!
//! - **Read-only without the admin token.** No call that acts or reads a
//!   user's connections runs without it; a hub without `[admin] token` has
//!   no login at all (403 `login_unavailable`).
//! - **CSRF-safe.** Every console request is a `POST` of
//!   `application/json` (which a page of another site cannot send without
//!   a CORS preflight, and none is answered), its `Origin`, when sent, must
//!   be one the hub allows for its WebSockets ([`crate::origin`]), and the
//!   session cookie is `SameSite=Strict`.
//! - **Bounded.** At most [`MAX_LOGINS`] sessions live at once (a new one
//!   ends the oldest), each for [`LOGIN_TTL`]; a body is at most `[api]
//!   max_body` bytes; session ids are 256 random bits; at most
//!   [`MAX_FAILED_LOGINS`] wrong tokens a minute are looked at (then 429
//!   until the minute ends, the right token included).
//! - **Clear errors.** Every refusal is `{"error": {"code", "message"}}`
//!   with its status ([`ConsoleError`]), as the server API's are.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::ApiError;
use crate::hub::Hub;
use crate::origin::OriginPolicy;

/// The most console sessions alive at once.
pub(crate) const MAX_LOGINS: usize = 64;

/// How long a console session lasts.
pub(crate) const LOGIN_TTL: Duration = Duration::from_secs(12 * 3600);

/// The most wrong admin tokens taken in a minute; beyond, logins are
/// refused with 429 until the minute ends.
pub(crate) const MAX_FAILED_LOGINS: u32 = 20;

/// The window of [`MAX_FAILED_LOGINS`].
const FAILED_WINDOW: Duration = Duration::from_secs(60);

/// The session cookie's name.
const COOKIE: &str = "duplex_console";

/// The calls anyone who may read the admin pages may make.
const READ_CALLS: &[&str] = &["info", "channels", "offsets"];

/// The most channels one `offsets` names.
const MAX_OFFSETS: usize = 50;

/// The calls only the admin may make.
const ADMIN_CALLS: &[&str] = &["connections", "publish", "disconnect"];

/// The console's logged-in sessions (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct Logins {
    sessions: Mutex<HashMap<[u8; 32], Instant>>,
    /// Wrong tokens in the current window: when it started, how many.
    failed: Mutex<Option<(Instant, u32)>>,
}

impl Logins {
    /// Whether a login may be tried now (fewer than [`MAX_FAILED_LOGINS`]
    /// wrong tokens in the window); if not, in how many seconds.
    fn may_try(&self, now: Instant) -> Result<(), u64> {
        let failed = self.failed.lock().unwrap_or_else(|e| e.into_inner());
        match *failed {
            Some((start, count)) if count >= MAX_FAILED_LOGINS && now < start + FAILED_WINDOW => {
                Err((start + FAILED_WINDOW - now).as_secs().max(1))
            }
            _ => Ok(()),
        }
    }

    /// Counts a wrong token.
    fn failed(&self, now: Instant) {
        let mut failed = self.failed.lock().unwrap_or_else(|e| e.into_inner());
        *failed = match *failed {
            Some((start, count)) if now < start + FAILED_WINDOW => Some((start, count + 1)),
            _ => Some((now, 1)),
        };
    }

    /// A new session, as its cookie value (64 hex digits).
    fn create(&self, now: Instant) -> String {
        let id: [u8; 32] = rand::random();
        let mut sessions = self.lock();
        sessions.retain(|_, expires| *expires > now);
        if sessions.len() >= MAX_LOGINS
            && let Some(oldest) = sessions.iter().min_by_key(|(_, e)| **e).map(|(k, _)| *k)
        {
            sessions.remove(&oldest);
        }
        sessions.insert(id, now + LOGIN_TTL);
        id.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Whether the cookie value names a live session.
    fn valid(&self, value: &str, now: Instant) -> bool {
        parse_id(value).is_some_and(|id| self.lock().get(&id).is_some_and(|e| *e > now))
    }

    /// Ends the session the cookie value names.
    fn remove(&self, value: &str) {
        if let Some(id) = parse_id(value) {
            self.lock().remove(&id);
        }
    }

    /// Whether `headers` carry the cookie of a live session.
    pub(crate) fn logged_in(&self, headers: &http::HeaderMap) -> bool {
        cookie(headers).is_some_and(|value| self.valid(&value, Instant::now()))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Instant>> {
        // Every update is one step: a poisoned lock is still consistent.
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Whether a WebSocket request's query says it is the console page's
/// (`console=1`): only then does its session cookie count (see
/// `server::decide`).
pub(crate) fn asks_as_console(query: Option<&str>) -> bool {
    query.is_some_and(|q| {
        q.trim_start_matches('?')
            .split('&')
            .any(|pair| pair == "console=1")
    })
}

fn parse_id(value: &str) -> Option<[u8; 32]> {
    if value.len() != 64 {
        return None;
    }
    let mut id = [0u8; 32];
    for (i, byte) in id.iter_mut().enumerate() {
        *byte = u8::from_str_radix(value.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(id)
}

/// The value of the session cookie in `headers`, if any.
fn cookie(headers: &http::HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            (name == COOKIE).then(|| value.trim().to_owned())
        })
}

/// Why a console request was refused. Each has a stable `code` and an
/// HTTP status.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum ConsoleError {
    /// An action or a user's connections without the admin token.
    #[error("this needs the admin: log in with the admin token")]
    LoginRequired,
    /// A read without a credential on a hub whose admin pages are
    /// protected.
    #[error(
        "this hub's console needs the admin token or a token granting $sys:stats: log in, \
         or send Authorization: Bearer TOKEN"
    )]
    NotAllowed,
    /// A login with a token that is not the admin token.
    #[error("the admin token is not valid")]
    WrongToken,
    /// Too many wrong tokens in the last minute.
    #[error("too many wrong admin tokens in the last minute: try again in {0} s")]
    TooManyLogins(u64),
    /// A login on a hub without an admin token.
    #[error(
        "this hub has no admin token ([admin] token in its configuration): the console is read-only"
    )]
    NoAdminToken,
    /// A request from a page of another site.
    #[error("requests from origin {0} are not allowed (the hub's --public-url / --allow-origin)")]
    Origin(String),
    /// No such console path or call.
    #[error("there is no console call `{0}`")]
    NotFound(String),
    /// Not a POST.
    #[error("{0} is not allowed here: use POST")]
    Method(Method),
    /// A body without `Content-Length` (HTTP/1.1).
    #[error("a console request needs Content-Length (no chunked bodies)")]
    LengthRequired,
    /// A `Content-Length` that is not a number (HTTP/1.1).
    #[error("Content-Length is not a number of bytes")]
    BadLength,
    /// The body did not arrive within the handshake timeout.
    #[error("the request body did not arrive in time")]
    BodyTimeout,
    /// A server API refusal (parameters, body, broker).
    #[error(transparent)]
    Api(#[from] ApiError),
}

impl ConsoleError {
    /// The HTTP status.
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            Self::LoginRequired | Self::NotAllowed | Self::WrongToken => StatusCode::UNAUTHORIZED,
            Self::NoAdminToken | Self::Origin(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::TooManyLogins(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::Method(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::LengthRequired => StatusCode::LENGTH_REQUIRED,
            Self::BadLength => StatusCode::BAD_REQUEST,
            Self::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::Api(error) => error.status(),
        }
    }

    /// The stable code of the JSON error.
    pub(crate) fn code(&self) -> &'static str {
        match self {
            Self::LoginRequired => "login_required",
            Self::NotAllowed => "unauthorized",
            Self::WrongToken => "wrong_token",
            Self::NoAdminToken => "login_unavailable",
            Self::Origin(_) => "forbidden_origin",
            Self::NotFound(_) => "unknown_call",
            Self::TooManyLogins(_) => "too_many_logins",
            Self::Method(_) => "method_not_allowed",
            Self::LengthRequired => "length_required",
            Self::BadLength => "bad_request",
            Self::BodyTimeout => "timeout",
            Self::Api(error) => error.code(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Login {
    token: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Offsets {
    channels: Vec<String>,
}

/// `offsets`: each channel's epoch and latest offset, through the server
/// API's `history` with `limit: 0`; a channel it refuses is left out.
async fn offsets(hub: &Hub, body: &[u8]) -> Result<Value, ConsoleError> {
    let p: Offsets = serde_json::from_slice(body).map_err(ApiError::of_json)?;
    if p.channels.len() > MAX_OFFSETS {
        return Err(ApiError::Invalid {
            field: "channels",
            why: format!("name at most {MAX_OFFSETS} channels"),
        }
        .into());
    }
    let mut found = serde_json::Map::new();
    for channel in p.channels {
        let params = json!({"channel": channel, "limit": 0}).to_string();
        if let Ok(page) = crate::api::call(hub, "history", params.as_bytes()).await {
            found.insert(
                channel,
                json!({"epoch": page["epoch"], "offset": page["offset"]}),
            );
        }
    }
    Ok(json!({"offsets": found}))
}

/// The largest console request body: the server API's.
pub(crate) fn max_body(hub: &Hub) -> usize {
    hub.config.api.max_body
}

/// Answers one console request (`head` with its `body`), for both HTTP
/// versions.
pub(crate) async fn handle(
    hub: &Hub,
    origins: &OriginPolicy,
    head: &Request<()>,
    body: &[u8],
) -> Response<Vec<u8>> {
    match serve(hub, origins, head, body).await {
        Ok(response) => response,
        Err(error) => refusal(&error),
    }
}

/// The JSON answer to a refused console request.
pub(crate) fn refusal(error: &ConsoleError) -> Response<Vec<u8>> {
    if error.status().is_server_error() {
        tracing::warn!(%error, "console call failed");
    }
    let mut response = json_response(
        error.status(),
        &json!({"error": {"code": error.code(), "message": error.to_string()}}),
    );
    match error {
        ConsoleError::Method(_) => {
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("POST"));
        }
        ConsoleError::TooManyLogins(seconds) => {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(*seconds));
        }
        _ => {}
    }
    response
}

async fn serve(
    hub: &Hub,
    origins: &OriginPolicy,
    head: &Request<()>,
    body: &[u8],
) -> Result<Response<Vec<u8>>, ConsoleError> {
    let path = head.uri().path();
    let Some(rest) = path.strip_prefix("/console/") else {
        return Err(ConsoleError::NotFound(path.to_owned()));
    };
    if head.method() != Method::POST {
        return Err(ConsoleError::Method(head.method().clone()));
    }
    if let Some(origin) = head.headers().get(header::ORIGIN) {
        let origin = String::from_utf8_lossy(origin.as_bytes()).into_owned();
        if !origins.allows(&origin) {
            return Err(ConsoleError::Origin(origin));
        }
    }
    let kind = head
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default();
    let essence = kind.split(';').next().unwrap_or_default().trim();
    if !essence.eq_ignore_ascii_case("application/json") {
        return Err(ApiError::MediaType(kind).into());
    }
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
    };
    let admin = is_admin(hub, head);
    match rest {
        "login" => login(hub, body),
        "logout" => {
            if let Some(value) = cookie(head.headers()) {
                hub.console.remove(&value);
            }
            let mut response = json_response(StatusCode::OK, &json!({"admin": false}));
            set_cookie(
                &mut response,
                &format!("{COOKIE}=; Max-Age=0{}", attributes(hub)),
            );
            Ok(response)
        }
        "session" => Ok(json_response(
            StatusCode::OK,
            &json!({
                "admin": admin,
                "login": hub.config.admin.token.is_some(),
                "read": admin || crate::server::admin_allowed(hub, head),
            }),
        )),
        _ => {
            let Some(call) = rest.strip_prefix("api/") else {
                return Err(ConsoleError::NotFound(rest.to_owned()));
            };
            if ADMIN_CALLS.contains(&call) {
                if !admin {
                    return Err(ConsoleError::LoginRequired);
                }
            } else if READ_CALLS.contains(&call) {
                if !admin && !crate::server::admin_allowed(hub, head) {
                    return Err(ConsoleError::NotAllowed);
                }
            } else {
                return Err(ConsoleError::NotFound(call.to_owned()));
            }
            let reply = if call == "offsets" {
                offsets(hub, body).await?
            } else {
                crate::api::call(hub, call, body).await?
            };
            if ADMIN_CALLS.contains(&call) && call != "connections" {
                tracing::info!(call, "console action");
            }
            Ok(json_response(StatusCode::OK, &reply))
        }
    }
}

/// Whether the request is the admin's: a live console session, or the
/// admin token as `Authorization: Bearer`.
fn is_admin(hub: &Hub, head: &Request<()>) -> bool {
    if hub.console.logged_in(head.headers()) {
        return true;
    }
    crate::auth::token_from_request(head.headers(), None)
        .is_some_and(|token| crate::server::is_admin_token(hub, &token))
}

fn login(hub: &Hub, body: &[u8]) -> Result<Response<Vec<u8>>, ConsoleError> {
    let login: Login = serde_json::from_slice(body).map_err(ApiError::of_json)?;
    if hub.config.admin.token.is_none() {
        return Err(ConsoleError::NoAdminToken);
    }
    let now = Instant::now();
    hub.console
        .may_try(now)
        .map_err(ConsoleError::TooManyLogins)?;
    if !crate::server::is_admin_token(hub, &login.token) {
        hub.console.failed(now);
        tracing::info!("console login refused: not the admin token");
        return Err(ConsoleError::WrongToken);
    }
    let id = hub.console.create(Instant::now());
    tracing::info!("console login");
    let mut response = json_response(StatusCode::OK, &json!({"admin": true}));
    set_cookie(
        &mut response,
        &format!(
            "{COOKIE}={id}; Max-Age={}{}",
            LOGIN_TTL.as_secs(),
            attributes(hub)
        ),
    );
    Ok(response)
}

/// The cookie's attributes: `Secure` when the hub is reached over TLS (its
/// own, or a public URL that is `https`).
fn attributes(hub: &Hub) -> &'static str {
    let secure = hub.config.tls.is_some()
        || hub
            .config
            .public_urls
            .iter()
            .any(|url| url.starts_with("https://"));
    if secure {
        "; Path=/; HttpOnly; SameSite=Strict; Secure"
    } else {
        "; Path=/; HttpOnly; SameSite=Strict"
    }
}

fn set_cookie(response: &mut Response<Vec<u8>>, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
}

fn json_response(status: StatusCode, value: &Value) -> Response<Vec<u8>> {
    let mut response = Response::new(serde_json::to_vec(value).unwrap_or_default());
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// A console request over HTTP/1.1 (`/console/…`): its body (with
/// `Content-Length`, at most `[api] max_body` bytes, read within the
/// handshake timeout), then [`handle`].
pub(crate) async fn serve_http1<S>(
    hub: &Hub,
    origins: &OriginPolicy,
    io: &mut S,
    incoming: duplex::server::Incoming,
) -> Response<Vec<u8>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::AsyncReadExt;
    let duplex::server::Incoming { request, leftover } = incoming;
    let length = match request.headers().get(header::CONTENT_LENGTH) {
        None if request.headers().contains_key(header::TRANSFER_ENCODING) => {
            return refusal(&ConsoleError::LengthRequired);
        }
        None => 0,
        Some(value) => match value
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
        {
            Some(length) => length,
            None => return refusal(&ConsoleError::BadLength),
        },
    };
    let limit = max_body(hub);
    if length > limit {
        return refusal(&crate::api::ApiError::TooLarge { limit }.into());
    }
    let mut body = leftover.to_vec();
    body.truncate(length);
    if body.len() < length {
        let start = body.len();
        body.resize(length, 0);
        let read = tokio::time::timeout(
            hub.ws_config.handshake_timeout,
            io.read_exact(&mut body[start..]),
        )
        .await;
        if !matches!(read, Ok(Ok(_))) {
            return refusal(&ConsoleError::BodyTimeout);
        }
    }
    handle(hub, origins, &request, &body).await
}

/// [`handle`] for an HTTP/2 request with its body.
pub(crate) async fn handle_h2(
    hub: std::sync::Arc<Hub>,
    origins: std::sync::Arc<OriginPolicy>,
    request: Request<Bytes>,
) -> Response<Bytes> {
    let (parts, body) = request.into_parts();
    let head = Request::from_parts(parts, ());
    let response = handle(&hub, &origins, &head, &body).await;
    let length = response.body().len();
    let mut response = response.map(Bytes::from);
    response
        .headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_bounded_expire_and_end_on_logout() {
        let logins = Logins::default();
        let now = Instant::now();
        let first = logins.create(now);
        assert_eq!(first.len(), 64);
        assert!(logins.valid(&first, now));
        assert!(!logins.valid(&first, now + LOGIN_TTL), "expired");
        assert!(!logins.valid("00", now) && !logins.valid(&"zz".repeat(32), now));
        let others: Vec<String> = (1..MAX_LOGINS)
            .map(|i| logins.create(now + Duration::from_secs(i as u64)))
            .collect();
        assert!(logins.valid(&first, now), "still room");
        let last = logins.create(now + Duration::from_secs(1000));
        assert!(!logins.valid(&first, now), "the oldest made room");
        assert!(logins.valid(&last, now) && logins.valid(&others[0], now));
        assert!(logins.lock().len() <= MAX_LOGINS);
        logins.remove(&last);
        assert!(!logins.valid(&last, now));
    }

    #[test]
    fn wrong_tokens_are_bounded_per_minute() {
        let logins = Logins::default();
        let now = Instant::now();
        for _ in 0..MAX_FAILED_LOGINS {
            assert_eq!(logins.may_try(now), Ok(()));
            logins.failed(now);
        }
        assert_eq!(logins.may_try(now + Duration::from_secs(1)), Err(59));
        assert_eq!(logins.may_try(now + FAILED_WINDOW), Ok(()), "a new minute");
        logins.failed(now + FAILED_WINDOW);
        assert_eq!(logins.may_try(now + FAILED_WINDOW), Ok(()));
    }

    #[test]
    fn the_cookie_is_found_among_others() {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; duplex_console=abc ; b=2"),
        );
        assert_eq!(cookie(&headers).as_deref(), Some("abc"));
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("xduplex_console=1"),
        );
        assert_eq!(cookie(&headers), None);
    }
}
