//! WebSocket upgrades inside a hyper 1.x server (and so axum), behind the
//! `hyper` feature.
//!
//! hyper parses the request and owns the connection; this module checks the
//! request, lets the application decide, builds the `101` for hyper to send,
//! and turns the upgraded connection into a [`WebSocket`]:
//!
//! ```no_run
//! use duplex::upgrade::{Rejection, upgrade_response};
//! use duplex::{Accept, Config};
//! use http_body_util::Full;
//! use hyper::body::{Bytes, Incoming};
//!
//! async fn handle(
//!     mut req: http::Request<Incoming>,
//! ) -> Result<http::Response<Full<Bytes>>, std::convert::Infallible> {
//!     match upgrade_response(&mut req, &Config::default(), |_| Ok(Accept::default())) {
//!         Ok((response, upgrading)) => {
//!             tokio::spawn(async move {
//!                 if let Ok(ws) = upgrading.await {
//!                     // ... use ws ...
//! #                   drop(ws);
//!                 }
//!             });
//!             Ok(response)
//!         }
//!         Err(Rejection { response, .. }) => Ok(response),
//!     }
//! }
//! ```
//!
//! Serve the connection with `hyper::server::conn::http1::Builder`'s
//! `serve_connection(...).with_upgrades()`: without `with_upgrades` hyper
//! never hands the connection over and [`Upgrading`] fails.
//!
//! Invariants:
//! - The request is validated exactly as [`crate::accept_with`] validates
//!   its own ([`UpgradeRequest::validate`]), answered with the same statuses,
//!   and compression is negotiated by the same code, so both paths accept
//!   and refuse the same requests.
//! - Only HTTP/1.1 upgrades (RFC 6455) are accepted; an HTTP/2 extended
//!   `CONNECT` (RFC 8441) is refused with 405.
//! - Bytes the client sent after its request are kept: hyper hands them over
//!   with the upgraded connection.
//! - Reading the request head is bounded by hyper's settings
//!   (`header_read_timeout`, `max_buf_size`), not by
//!   [`Config::handshake_timeout`](crate::Config::handshake_timeout).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use duplex_proto::connection::Connection;
use duplex_proto::handshake::server::reject_response;
use http::{Request, Response, StatusCode};
use hyper::upgrade::OnUpgrade;

use crate::Error;
use crate::config::Config;
use crate::server::{self, Accept, Reject};
use crate::websocket::WebSocket;

pub use duplex_proto::handshake::server::UpgradeRequest;
pub use hyper::upgrade::Upgraded;
pub use hyper_util::rt::TokioIo;

/// The WebSocket an upgrade yields: over hyper's upgraded connection.
pub type UpgradedWebSocket = WebSocket<TokioIo<Upgraded>>;

/// A refused upgrade: the response to send instead of the `101`, and why.
#[derive(Debug)]
pub struct Rejection<B> {
    /// The HTTP error response (400, 405, 426 …, or the application's
    /// [`Reject`]), with `Connection: close`.
    pub response: Response<B>,
    /// Why: [`Error::Handshake`] for an invalid request, [`Error::Refused`]
    /// when the application refused it, [`Error::Accept`] when the
    /// application's [`Accept`] could not be honoured (answered 500).
    pub error: Error,
}

/// Checks `req` as a WebSocket upgrade, asks `decide`, and returns the `101`
/// response for hyper to send with the future of the WebSocket it opens.
///
/// `decide` sees the validated request (path, origin, subprotocols,
/// cookies …) and accepts it, choosing a subprotocol and extra headers, or
/// refuses it. Compression is negotiated by `config`, as [`crate::accept_with`]
/// does. The response body type `B` is the service's (`Full<Bytes>`,
/// `String`, axum's `Body` …); the `101` has an empty body.
///
/// The returned [`Upgrading`] resolves once hyper has sent the `101` and
/// handed the connection over; spawn it, as it only completes after the
/// service has returned the response.
///
/// # Errors
///
/// A [`Rejection`] holding the error response to send.
#[allow(
    clippy::result_large_err,
    reason = "once per request; the Ok variant holds a response of the same size"
)]
pub fn upgrade_response<ReqB, B, F>(
    req: &mut Request<ReqB>,
    config: &Config,
    decide: F,
) -> Result<(Response<B>, Upgrading), Rejection<B>>
where
    B: From<String>,
    F: FnOnce(&UpgradeRequest) -> Result<Accept, Reject>,
{
    let mut head = Request::new(());
    *head.method_mut() = req.method().clone();
    *head.uri_mut() = req.uri().clone();
    *head.version_mut() = req.version();
    *head.headers_mut() = req.headers().clone();
    let request = match UpgradeRequest::validate(head) {
        Ok(request) => request,
        Err(error) => {
            return Err(Rejection {
                response: error.to_response().map(B::from),
                error: Error::Handshake(error),
            });
        }
    };
    let accept = match decide(&request) {
        Ok(accept) => accept,
        Err(reject) => {
            let mut response = reject_response(reject.status, &reject.reason);
            response.headers_mut().extend(*reject.headers);
            return Err(Rejection {
                response: response.map(B::from),
                error: Error::Refused(reject.status),
            });
        }
    };
    let (response, conn) = match server::answer(&request, &accept, config) {
        Ok(answer) => answer,
        Err(error) => {
            let response = reject_response(StatusCode::INTERNAL_SERVER_ERROR, "server error");
            return Err(Rejection {
                response: response.map(B::from),
                error: Error::Accept(error),
            });
        }
    };
    let upgrading = Upgrading {
        on_upgrade: hyper::upgrade::on(req),
        parts: Some((conn, config.clone(), accept.protocol)),
    };
    Ok((response.map(|()| B::from(String::new())), upgrading))
}

/// The WebSocket of an accepted upgrade, once hyper hands the connection
/// over. See [`upgrade_response`].
#[must_use = "the WebSocket exists only once this future is awaited"]
pub struct Upgrading {
    on_upgrade: OnUpgrade,
    /// Taken when the future completes.
    parts: Option<(Connection, Config, Option<std::sync::Arc<str>>)>,
}

impl std::fmt::Debug for Upgrading {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upgrading")
            .field("done", &self.parts.is_none())
            .finish_non_exhaustive()
    }
}

impl Future for Upgrading {
    type Output = Result<UpgradedWebSocket, Error>;

    /// # Errors
    ///
    /// [`Error::Io`] when hyper cannot hand the connection over (the client
    /// went away, or the connection was not served `with_upgrades`).
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let upgraded = ready!(Pin::new(&mut this.on_upgrade).poll(cx))
            .map_err(|e| Error::Io(std::io::Error::other(e)))?;
        let (conn, config, protocol) = this
            .parts
            .take()
            .expect("Upgrading polled after completion");
        Poll::Ready(Ok(WebSocket::from_parts(
            TokioIo::new(upgraded),
            conn,
            &config,
            protocol,
        )))
    }
}
