//! The server API: HTTP + JSON for the application's backend, on a listener
//! of its own (`[api] listen`), off unless configured (`docs/api.md`).
//!
//! `POST /api/<call>` with a JSON object carries one call ([`calls`] lists
//! them); `POST /api/batch` carries several, `{"commands": [{"method",
//! "params"}, …]}`, carried out and answered in order; `GET
//! /api/openapi.json` serves the OpenAPI 3.1 document of them all
//! (`api/openapi.json`, checked in). HTTP/1.1 and HTTP/2 without TLS
//! (h2c) are both served (hyper).
//!
//! # Invariants
//!
//! - **Never without a key.** Every request, the OpenAPI document
//!   included, must carry one of the configured keys as `Authorization:
//!   apikey KEY`, else 401 before anything else is looked at. Keys are
//!   compared in constant time (every key is compared, so the time does
//!   not say which one nearly matched), and the configuration refuses an
//!   API without keys or with a key under 16 bytes.
//! - **Bounded.** A body larger than `[api] max_body` is refused with 413
//!   without being read further; request heads are read within hyper's
//!   header timeout.
//! - **Clear errors.** Every refusal is `{"error": {"code", "message"}}`
//!   with its status: 400 bad JSON, 401 no or a wrong key, 404 an unknown
//!   call, 405 a wrong method, 413 too large, 415 not JSON, 422 parameters
//!   of the wrong type or value, 501 a call the broker does not offer, 503
//!   the broker unavailable ([`ApiError`]).
//! - **The whole cluster.** A call acts through the broker (publish,
//!   history, presence) or sends a control to every node's sessions
//!   (disconnect, subscribe, unsubscribe, refresh; see [`crate::control`]),
//!   and its reply says so in `scope` (`"cluster"`; `"node"` where the
//!   answer is this node's only). The API is a driver: the rules of a
//!   session stay in `duplex_hub_proto::session`.

mod calls;

pub(crate) use calls::call;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::broker::BrokerError;
use crate::config::ConfigError;
use crate::hub::{Hub, HubError};

/// The OpenAPI 3.1 document of the API, served at `GET /api/openapi.json`.
pub(crate) const OPENAPI: &str = include_str!("api/openapi.json");

/// How long an API request head may take to arrive.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// The server API bound to its port, ready to run (see the module docs).
pub struct ApiServer {
    hub: Arc<Hub>,
    listener: TcpListener,
}

impl std::fmt::Debug for ApiServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiServer")
            .field("listener", &self.listener)
            .finish_non_exhaustive()
    }
}

impl ApiServer {
    /// Binds `[api] listen`; an error when the API is not configured.
    pub async fn bind(hub: Arc<Hub>) -> Result<Self, HubError> {
        let Some(addr) = hub.config.api.listen else {
            return Err(HubError::Config(ConfigError::Invalid(
                "api.listen is not set: the server API is off".to_owned(),
            )));
        };
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|error| HubError::Bind { addr, error })?;
        Ok(Self { hub, listener })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| self.hub.config.api.listen.unwrap_or(self.hub.config.listen))
    }

    /// Serves until `until` completes; then stops accepting, lets the
    /// requests in progress finish (and closes idle keep-alive
    /// connections) within the hub's `shutdown_grace`, and ends what is
    /// left after it.
    pub async fn run(self, until: impl Future<Output = ()>) {
        let Self { hub, listener } = self;
        tracing::info!(address = %listener.local_addr().map_or(hub.config.listen, |a| a), "server API listening");
        let graceful = GracefulShutdown::new();
        let mut tasks = JoinSet::new();
        tokio::pin!(until);
        loop {
            tokio::select! {
                () = &mut until => break,
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                accepted = listener.accept() => {
                    let (tcp, _peer) = match accepted {
                        Ok(pair) => pair,
                        Err(error) => {
                            tracing::warn!(%error, "API accept failed; pausing");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let _ = tcp.set_nodelay(true);
                    let service_hub = hub.clone();
                    let service = hyper::service::service_fn(move |request| {
                        let hub = service_hub.clone();
                        async move { Ok::<_, std::convert::Infallible>(handle(&hub, request).await) }
                    });
                    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    builder
                        .http1()
                        .timer(TokioTimer::new())
                        .header_read_timeout(HEADER_TIMEOUT);
                    let connection = graceful
                        .watch(builder.serve_connection(TokioIo::new(tcp), service).into_owned());
                    tasks.spawn(async move {
                        if let Err(error) = connection.await {
                            tracing::debug!(%error, "API connection ended");
                        }
                    });
                }
            }
        }
        drop(listener);
        let grace = hub.config.shutdown_grace;
        if tokio::time::timeout(grace, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!(
                ?grace,
                "API requests still in progress after the shutdown grace; ending them"
            );
        }
        tasks.abort_all();
    }
}

/// Why an API request was refused. Each has a stable `code` and an HTTP
/// status ([`ApiError::status`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum ApiError {
    /// No `Authorization: apikey KEY`.
    #[error("an API key is required: send `Authorization: apikey KEY`")]
    MissingKey,
    /// A key that is not configured.
    #[error("the API key is not valid")]
    WrongKey,
    /// No such call.
    #[error("there is no call `{0}`: GET /api/openapi.json lists them")]
    UnknownCall(String),
    /// The method is not the one the path takes.
    #[error("{method} is not allowed here: use {allowed}")]
    Method {
        /// The method used.
        method: Method,
        /// The method to use.
        allowed: &'static str,
    },
    /// The body is larger than `[api] max_body`.
    #[error("the body is larger than {limit} bytes (api.max_body)")]
    TooLarge {
        /// The limit.
        limit: usize,
    },
    /// The body is declared as something else than JSON.
    #[error("the body must be JSON (Content-Type: application/json), not {0:?}")]
    MediaType(String),
    /// The body could not be read.
    #[error("the body could not be read: {0}")]
    Body(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The body is not JSON.
    #[error("the body is not valid JSON: {0}")]
    BadJson(#[source] serde_json::Error),
    /// The JSON does not have the call's shape (a missing field, a wrong
    /// type, an unknown field).
    #[error("invalid parameters: {0}")]
    Params(#[source] serde_json::Error),
    /// A parameter has the right type but a value that cannot be used.
    #[error("invalid `{field}`: {why}")]
    Invalid {
        /// The parameter.
        field: &'static str,
        /// Why.
        why: String,
    },
    /// A control (disconnect, subscribe …) that cannot be sent.
    #[error(transparent)]
    Control(#[from] crate::control::ControlError),
    /// The broker could not carry it out.
    #[error(transparent)]
    Broker(#[from] BrokerError),
    /// As many revocations are in force as a node keeps.
    #[error(transparent)]
    Revocations(#[from] duplex_hub_proto::revocation::Full),
}

impl ApiError {
    /// The HTTP status.
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            Self::MissingKey | Self::WrongKey => StatusCode::UNAUTHORIZED,
            Self::UnknownCall(_) => StatusCode::NOT_FOUND,
            Self::Method { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::MediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Body(_) | Self::BadJson(_) => StatusCode::BAD_REQUEST,
            Self::Params(_) | Self::Invalid { .. } | Self::Control(_) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            Self::Broker(BrokerError::Unsupported(_)) => StatusCode::NOT_IMPLEMENTED,
            Self::Broker(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Revocations(_) => StatusCode::INSUFFICIENT_STORAGE,
        }
    }

    /// The stable code of the JSON error.
    pub(crate) fn code(&self) -> &'static str {
        match self {
            Self::MissingKey | Self::WrongKey => "unauthorized",
            Self::UnknownCall(_) => "unknown_call",
            Self::Method { .. } => "method_not_allowed",
            Self::TooLarge { .. } => "too_large",
            Self::MediaType(_) => "unsupported_media_type",
            Self::Body(_) | Self::BadJson(_) => "bad_request",
            Self::Params(_) | Self::Invalid { .. } | Self::Control(_) => "invalid_params",
            Self::Broker(BrokerError::Unsupported(_)) => "not_supported",
            Self::Broker(_) => "unavailable",
            Self::Revocations(_) => "too_many_revocations",
        }
    }

    /// `{"code", "message"}`.
    pub(crate) fn to_json(&self) -> serde_json::Value {
        json!({"code": self.code(), "message": self.to_string()})
    }

    /// A parse error of the body: not JSON (400), or JSON of the wrong
    /// shape (422).
    pub(crate) fn of_json(error: serde_json::Error) -> Self {
        match error.classify() {
            serde_json::error::Category::Data => Self::Params(error),
            _ => Self::BadJson(error),
        }
    }
}

/// Answers one request (see the module docs).
async fn handle(hub: &Hub, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let reply = match serve(hub, request).await {
        Ok(response) => return response,
        Err(error) => error,
    };
    if reply.status().is_server_error() {
        tracing::warn!(error = %reply, "API call failed");
    }
    let mut response = json_response(reply.status(), &json!({"error": reply.to_json()}));
    match &reply {
        ApiError::MissingKey | ApiError::WrongKey => {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("apikey"));
        }
        ApiError::Method { allowed, .. } => {
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(allowed));
        }
        _ => {}
    }
    response
}

async fn serve(hub: &Hub, request: Request<Incoming>) -> Result<Response<Full<Bytes>>, ApiError> {
    authorize(hub, request.headers())?;
    let path = request.uri().path().to_owned();
    let Some(call) = path.strip_prefix("/api/") else {
        return Err(ApiError::UnknownCall(path));
    };
    if call == "openapi.json" {
        if request.method() != Method::GET {
            return Err(ApiError::Method {
                method: request.method().clone(),
                allowed: "GET",
            });
        }
        let mut response = Response::new(Full::new(Bytes::from_static(OPENAPI.as_bytes())));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        return Ok(response);
    }
    if call != "batch" && !calls::CALLS.contains(&call) {
        return Err(ApiError::UnknownCall(call.to_owned()));
    }
    if request.method() != Method::POST {
        return Err(ApiError::Method {
            method: request.method().clone(),
            allowed: "POST",
        });
    }
    if let Some(kind) = request.headers().get(header::CONTENT_TYPE) {
        let kind = String::from_utf8_lossy(kind.as_bytes()).into_owned();
        let essence = kind.split(';').next().unwrap_or_default().trim();
        if !essence.eq_ignore_ascii_case("application/json") {
            return Err(ApiError::MediaType(kind));
        }
    }
    let limit = hub.config.api.max_body;
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(ApiError::TooLarge { limit });
    }
    let body = Limited::new(request.into_body(), limit)
        .collect()
        .await
        .map_err(|error| {
            if error.is::<http_body_util::LengthLimitError>() {
                ApiError::TooLarge { limit }
            } else {
                ApiError::Body(error)
            }
        })?
        .to_bytes();
    // An empty body is an empty object: calls without parameters.
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        &body
    };
    let reply = if call == "batch" {
        calls::batch(hub, body).await?
    } else {
        calls::call(hub, call, body).await?
    };
    Ok(json_response(StatusCode::OK, &reply))
}

/// Checks `Authorization: apikey KEY` against every configured key, in
/// constant time.
fn authorize(hub: &Hub, headers: &http::HeaderMap) -> Result<(), ApiError> {
    use subtle::ConstantTimeEq;
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or(ApiError::MissingKey)?;
    let value = value.as_bytes();
    let key = match value.split_at_checked(7) {
        Some((scheme, key)) if scheme.eq_ignore_ascii_case(b"apikey ") => key.trim_ascii(),
        _ => return Err(ApiError::MissingKey),
    };
    let mut found = subtle::Choice::from(0);
    for configured in &hub.config.api.keys {
        found |= configured.as_bytes().ct_eq(key);
    }
    if bool::from(found) {
        Ok(())
    } else {
        Err(ApiError::WrongKey)
    }
}

fn json_response(status: StatusCode, value: &serde_json::Value) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec(value).unwrap_or_default();
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every call the router knows is in the OpenAPI document, and the
    /// document names no other.
    #[test]
    fn the_openapi_document_lists_exactly_the_calls() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        let paths: std::collections::BTreeSet<String> =
            doc["paths"].as_object().unwrap().keys().cloned().collect();
        let mut expected: std::collections::BTreeSet<String> =
            calls::CALLS.iter().map(|c| format!("/api/{c}")).collect();
        expected.insert("/api/batch".to_owned());
        expected.insert("/api/openapi.json".to_owned());
        assert_eq!(paths, expected);
        // And the batch's methods are the calls.
        let methods: std::collections::BTreeSet<String> =
            doc["components"]["schemas"]["Command"]["properties"]["method"]["enum"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m.as_str().unwrap().to_owned())
                .collect();
        let calls: std::collections::BTreeSet<String> =
            calls::CALLS.iter().map(|c| (*c).to_owned()).collect();
        assert_eq!(methods, calls);
    }

    #[test]
    fn each_error_has_its_status_and_code() {
        let json = serde_json::from_str::<serde_json::Value>("{").unwrap_err();
        assert_eq!(ApiError::of_json(json).status(), StatusCode::BAD_REQUEST);
        let shape = serde_json::from_str::<u64>("\"x\"").unwrap_err();
        let shape = ApiError::of_json(shape);
        assert_eq!(
            (shape.status(), shape.code()),
            (StatusCode::UNPROCESSABLE_ENTITY, "invalid_params")
        );
        let down = ApiError::Broker(BrokerError::Unavailable("down"));
        assert_eq!(
            (down.status(), down.code()),
            (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
        );
        assert_eq!(ApiError::WrongKey.status(), StatusCode::UNAUTHORIZED);
    }
}
