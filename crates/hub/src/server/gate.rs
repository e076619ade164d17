//! Who may in: the decisions every connection meets before it is served —
//! the connection limits ([`admit`]), the origin ([`check_origin`]), the
//! subprotocol and the token ([`decide`], [`identity_of`]), the same for a
//! session over plain HTTP ([`admit_http`]) — each refusal counted by reason
//! and logged (at most once per address per interval); and the admin token.

use crate::auth::{Action, AuthError, Grants, Identity, token_from_request};
use crate::config::STATS_CHANNEL;
use crate::console;
use crate::hub::{Hub, now_secs};
use crate::limits::Ticket;
use crate::metrics::RejectReason;
use duplex::UpgradeRequest;
use duplex::{Accept, Reject};
use duplex_hub_proto::{Encoding, SUBPROTOCOL, SUBPROTOCOL_BINARY};
use http::{StatusCode, header};
use std::net::SocketAddr;
use tokio::io::AsyncWrite;

use super::{ADMIN_IDENTITY_SECS, ADMIN_USER, Endpoint, Gate, plain, respond};

/// The headers of an upgrade request the proxy hooks forward (none
/// without hooks).
pub(super) fn forwarded(hub: &Hub, request: &UpgradeRequest) -> http::HeaderMap {
    forwarded_headers(hub, request.headers())
}

/// The headers of a request the proxy hooks forward to the backend (none
/// without hooks): cookies and `[hooks] forward_headers`.
pub(crate) fn forwarded_headers(hub: &Hub, headers: &http::HeaderMap) -> http::HeaderMap {
    hub.hooks
        .as_ref()
        .map(|hooks| hooks.forwarded(headers))
        .unwrap_or_default()
}

/// The connection limits, before any other work on a WebSocket request
/// (HTTP/1.1 upgrade or HTTP/2 stream alike): an admission ticket, or the
/// refusal (503 total, 429 + `Retry-After` per client address), counted and
/// logged.
pub(super) fn admit(hub: &Hub, client: SocketAddr) -> Result<Ticket, Reject> {
    let refused = match hub.admission.try_admit(client.ip()) {
        Ok(ticket) => return Ok(ticket),
        Err(refused) => refused,
    };
    hub.metrics.rejected(RejectReason::from(refused));
    if let Some(dropped) = hub.refusals.admit(client.ip()) {
        tracing::info!(
            peer = %client,
            status = %refused.status(),
            reason = refused.reason(),
            dropped,
            "connection refused"
        );
    }
    let mut reject = Reject::new(refused.status(), refused.reason());
    if let Some(seconds) = refused.retry_after() {
        reject
            .headers
            .insert(header::RETRY_AFTER, http::HeaderValue::from(seconds));
    }
    Err(reject)
}

/// [`decide`], with a refusal counted by reason in the metrics and logged
/// (once per address per interval), for both HTTP versions.
pub(super) fn decide_counted(
    hub: &Hub,
    gate: &Gate,
    endpoint: Endpoint,
    request: &UpgradeRequest,
    client: SocketAddr,
) -> Result<(Accept, Option<Identity>), Reject> {
    decide(hub, gate, endpoint, request, client)
        .map_err(|(reason, reject)| refused(hub, client, reason, reject))
}

/// Counts a refusal and logs it (rate-limited per address); an origin
/// refusal is logged where it is decided, with what to set.
fn refused(hub: &Hub, client: SocketAddr, reason: RejectReason, reject: Reject) -> Reject {
    hub.metrics.rejected(reason);
    if reason != RejectReason::Origin
        && let Some(dropped) = hub.refusals.admit(client.ip())
    {
        tracing::info!(
            peer = %client,
            reason = reason.as_str(),
            status = %reject.status,
            error = %reject.reason,
            dropped,
            "connection refused"
        );
    }
    reject
}

/// Decides on an upgrade: origin, subprotocol (`/ws`), handshake token.
#[allow(clippy::result_large_err)]
pub(super) fn decide(
    hub: &Hub,
    gate: &Gate,
    endpoint: Endpoint,
    request: &UpgradeRequest,
    client: SocketAddr,
) -> Result<(Accept, Option<Identity>), (RejectReason, Reject)> {
    check_origin(hub, gate, request.origin(), client)?;
    let protocol = if endpoint == Endpoint::Echo || request.protocols().is_empty() {
        None
    } else if let Some(encoding) =
        Encoding::negotiate(request.protocols().iter().map(String::as_str))
    {
        // The first envelope of the client's offer (its preference).
        Some(match encoding {
            Encoding::Json => hub.subprotocol.clone(),
            Encoding::Binary => hub.subprotocol_binary.clone(),
        })
    } else {
        return Err((
            RejectReason::Subprotocol,
            Reject::new(
                StatusCode::BAD_REQUEST,
                format!("unsupported hub protocol; offer {SUBPROTOCOL} or {SUBPROTOCOL_BINARY}"),
            ),
        ));
    };
    let needs_token = endpoint == Endpoint::Echo && hub.verifier.is_some();
    // A logged-in console's page (`/ws?console=1`) reads the `$sys`
    // channels as the admin token would (its cookie is `SameSite=Strict`,
    // and the origin was checked above); other pages of the same browser
    // are not made the admin by the cookie.
    let console_page = endpoint == Endpoint::Hub
        && console::asks_as_console(request.query())
        && hub.console.logged_in(request.headers());
    let identity = identity_of(
        hub,
        request.headers(),
        request.query(),
        needs_token,
        console_page,
    )?;
    Ok((
        Accept {
            protocol,
            ..Accept::default()
        },
        identity,
    ))
}

/// The origin rule of every browser-facing endpoint: a request whose
/// `Origin` the hub does not allow is refused with 403 (and logged at info,
/// once per address per interval, with what to set).
#[allow(clippy::result_large_err)]
pub(super) fn check_origin(
    hub: &Hub,
    gate: &Gate,
    origin: Option<&str>,
    client: SocketAddr,
) -> Result<(), (RejectReason, Reject)> {
    let Some(origin) = origin else {
        return Ok(());
    };
    if gate.origins.allows(origin) {
        return Ok(());
    }
    // At info (once per address per interval): a page refused here
    // retries and fails the same way, and whoever runs the hub needs to
    // know which origin and what to set.
    if let Some(dropped) = hub.refusals.admit(client.ip()) {
        tracing::info!(
            peer = %client,
            origin,
            dropped,
            "connection refused (403): origin not allowed: set --public-url to the URL \
             the hub is reached at, or --allow-origin to allow another site"
        );
    }
    Err((
        RejectReason::Origin,
        Reject::new(
            StatusCode::FORBIDDEN,
            "origin not allowed: the hub's operator can set --public-url to the URL \
             the hub is reached at, or --allow-origin for another site",
        ),
    ))
}

/// The identity of a request's token (`Authorization: Bearer`, or
/// `?token=`): the admin token's, a verified JWT's (not revoked), the
/// admin's for a logged-in console page without a token, or none without a
/// token (refused with 401 when `needs_token`). A bad or revoked token is
/// refused with 401.
#[allow(clippy::result_large_err)]
pub(super) fn identity_of(
    hub: &Hub,
    headers: &http::HeaderMap,
    query: Option<&str>,
    needs_token: bool,
    console_page: bool,
) -> Result<Option<Identity>, (RejectReason, Reject)> {
    match token_from_request(headers, query) {
        None if needs_token => Err((
            RejectReason::Auth,
            Reject::new(StatusCode::UNAUTHORIZED, "this endpoint needs a token"),
        )),
        None if console_page => Ok(Some(admin_identity())),
        None => Ok(None),
        Some(token) if is_admin_token(hub, &token) => Ok(Some(admin_identity())),
        Some(token) => {
            let Some(verifier) = &hub.verifier else {
                return Err((
                    RejectReason::Auth,
                    Reject::new(StatusCode::UNAUTHORIZED, "this hub does not take tokens"),
                ));
            };
            let now = now_secs();
            match verifier.verify(&token, now) {
                Ok(identity) => match hub.registry.check(&identity, now) {
                    Ok(()) => Ok(Some(identity)),
                    Err(why) => Err((
                        RejectReason::Auth,
                        Reject::new(StatusCode::UNAUTHORIZED, why.refusal()),
                    )),
                },
                Err(error) => {
                    // Over HTTP/2 the decision runs before any fetch: the
                    // JWKS is fetched now, for the client's next attempt.
                    if error == AuthError::UnknownKey
                        && let Some(jwks) = verifier.jwks()
                    {
                        let jwks = jwks.clone();
                        tokio::spawn(async move { jwks.refresh().await });
                    }
                    Err((
                        RejectReason::Auth,
                        Reject::new(StatusCode::UNAUTHORIZED, format!("token refused: {error}")),
                    ))
                }
            }
        }
    }
}

/// Admits a hub connection over plain HTTP (`crate::sse`): the connection
/// limits, the origin and the token, in that order, as a WebSocket's
/// handshake is; a refusal is counted and logged as one. Answers the
/// refusal itself (with its status and headers) and returns `None`.
pub(crate) async fn admit_http<S>(
    hub: &Hub,
    gate: &Gate,
    io: &mut S,
    request: &http::Request<()>,
    client: SocketAddr,
) -> Option<(Ticket, Option<Identity>)>
where
    S: AsyncWrite + Unpin,
{
    let decided = admit(hub, client).and_then(|ticket| {
        let origin = request
            .headers()
            .get(header::ORIGIN)
            .and_then(|v| v.to_str().ok());
        check_origin(hub, gate, origin, client)
            .and_then(|()| identity_of(hub, request.headers(), request.uri().query(), false, false))
            .map(|identity| (ticket, identity))
            .map_err(|(reason, reject)| refused(hub, client, reason, reject))
    });
    match decided {
        Ok(admitted) => {
            hub.metrics.accepted();
            Some(admitted)
        }
        Err(reject) => {
            let mut response = plain(reject.status, &reject.reason);
            response.headers_mut().extend(*reject.headers);
            respond(io, response).await;
            None
        }
    }
}

/// Whether `token` is the configured admin token (compared in constant
/// time; only the lengths may differ in time).
pub(crate) fn is_admin_token(hub: &Hub, token: &str) -> bool {
    use subtle::ConstantTimeEq;
    hub.config
        .admin
        .token
        .as_ref()
        .is_some_and(|admin| bool::from(admin.as_bytes().ct_eq(token.as_bytes())))
}

/// The identity of a connection that presented the admin token: it may
/// read the `$sys` channels, nothing more.
pub(super) fn admin_identity() -> Identity {
    let mut grants = Grants::default();
    let pattern = format!("{}:*", crate::config::SYS_NAMESPACE);
    grants.grant(Action::Subscribe, &pattern);
    grants.grant(Action::Presence, &pattern);
    Identity {
        user: ADMIN_USER.to_owned(),
        expires: now_secs() + ADMIN_IDENTITY_SECS,
        grants,
        jti: None,
        issued: None,
        channel: None,
    }
}

/// Whether a plain HTTP request may read the admin pages (`/metrics`,
/// `/dashboard`): they are open, it carries a console session's cookie
/// ([`crate::console`]), or the admin token or a JWT granting `subscribe`
/// on `$sys:stats`, as `Authorization: Bearer` or `?token=`.
pub(crate) fn admin_allowed(hub: &Hub, request: &http::Request<()>) -> bool {
    if hub.config.admin_open() || hub.console.logged_in(request.headers()) {
        return true;
    }
    let Some(token) = token_from_request(request.headers(), request.uri().query()) else {
        return false;
    };
    if is_admin_token(hub, &token) {
        return true;
    }
    hub.verifier.as_ref().is_some_and(|verifier| {
        verifier
            .verify(&token, now_secs())
            .is_ok_and(|identity| identity.grants.allows(Action::Subscribe, STATS_CHANNEL))
    })
}
