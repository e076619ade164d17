//! Requests from the hub to the application's backend: the one HTTP client
//! behind proxy hooks, lifecycle webhooks and JWKS fetches.
//!
//! A [`Backend`] holds a pool of keep-alive connections (HTTP/1.1, plain or
//! TLS through rustls with the same roots as the rest of Duplex) and sends
//! one request at a time per call. Callers choose the concurrency they allow
//! (each hook or queue bounds its own); this module bounds the rest.
//!
//! # Invariants
//!
//! - **Bounded in time.** Every request, from connect to the last byte of
//!   the response body, finishes within its deadline or fails with
//!   [`BackendError::Timeout`]; nothing waits on a backend forever.
//! - **Bounded in memory.** A response body longer than the caller's limit
//!   is not read further: [`BackendError::TooLarge`].
//! - **Structured failures.** Connection, TLS, status and body failures stay
//!   apart ([`BackendError`]), with their sources, so a caller's failure
//!   policy can tell a backend that is down from one that said no.
//! - **Only `http` and `https` URLs**, checked when the configuration is
//!   loaded ([`check_url`]) so a typo is a start-up error, not a runtime one.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// How long an idle connection to a backend is kept for reuse.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// At most this many idle connections are kept per backend host.
const POOL_MAX_IDLE_PER_HOST: usize = 32;

/// The `User-Agent` of every request: the hub and its version.
const USER_AGENT: &str = concat!("duplex-hub/", env!("CARGO_PKG_VERSION"));

/// Why a request to the backend failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum BackendError {
    /// The URL is not an absolute `http://` or `https://` URL.
    #[error("backend URL {url:?} is not an absolute http:// or https:// URL")]
    BadUrl {
        /// The URL as configured.
        url: String,
    },
    /// No root certificates could be loaded for `https://` backends.
    #[error("TLS for backend requests: {0}")]
    Tls(#[source] duplex::Error),
    /// The request did not finish within its deadline.
    #[error("the backend did not answer within {0:?}")]
    Timeout(Duration),
    /// Connecting or sending failed: the backend is down or unreachable.
    #[error("the backend could not be reached")]
    Unreachable(#[source] hyper_util::client::legacy::Error),
    /// The response body could not be read to its end.
    #[error("the backend's response body failed")]
    Body(#[source] hyper::Error),
    /// The response body is longer than the caller allows.
    #[error("the backend's response is larger than {limit} bytes")]
    TooLarge {
        /// The caller's limit, in bytes.
        limit: usize,
    },
}

/// A backend's answer: status and the whole (bounded) body.
#[derive(Debug)]
pub(crate) struct Answer {
    /// The HTTP status.
    pub(crate) status: StatusCode,
    /// The body, at most the caller's limit.
    pub(crate) body: Bytes,
}

/// The hub's HTTP client for its backend (see the module docs). Cheap to
/// clone: clones share one pool.
#[derive(Clone)]
pub(crate) struct Backend {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend").finish_non_exhaustive()
    }
}

impl Backend {
    /// A client trusting the roots `options` names (`duplex`'s defaults:
    /// the Mozilla roots built in).
    pub(crate) fn new(options: &duplex::transport::Options) -> Result<Self, BackendError> {
        let mut tls =
            Arc::unwrap_or_clone(duplex::tls::client_config(options).map_err(BackendError::Tls)?);
        // The connector sets ALPN itself (`http/1.1`).
        tls.alpn_protocols.clear();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_max_idle_per_host(POOL_MAX_IDLE_PER_HOST)
            .build(connector);
        Ok(Self { client })
    }

    /// POSTs `body` as JSON to `url` with `headers` added, and reads the
    /// answer whole (at most `max_body` bytes), all within `timeout`.
    #[allow(
        dead_code,
        reason = "for the backend hooks and webhooks; JWKS fetches GET"
    )]
    pub(crate) async fn post_json(
        &self,
        url: &Uri,
        headers: HeaderMap,
        body: Bytes,
        timeout: Duration,
        max_body: usize,
    ) -> Result<Answer, BackendError> {
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = url.clone();
        *request.headers_mut() = headers;
        request.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        self.send(request, timeout, max_body).await
    }

    /// GETs `url` and reads the answer whole (at most `max_body` bytes),
    /// all within `timeout`.
    pub(crate) async fn get(
        &self,
        url: &Uri,
        timeout: Duration,
        max_body: usize,
    ) -> Result<Answer, BackendError> {
        let mut request = Request::new(Full::new(Bytes::new()));
        *request.uri_mut() = url.clone();
        self.send(request, timeout, max_body).await
    }

    async fn send(
        &self,
        mut request: Request<Full<Bytes>>,
        timeout: Duration,
        max_body: usize,
    ) -> Result<Answer, BackendError> {
        request
            .headers_mut()
            .insert(header::USER_AGENT, HeaderValue::from_static(USER_AGENT));
        let exchange = async {
            let response: Response<_> = self
                .client
                .request(request)
                .await
                .map_err(BackendError::Unreachable)?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, max_body)
                .collect()
                .await
                .map_err(|error| match error.downcast::<hyper::Error>() {
                    Ok(error) => BackendError::Body(*error),
                    Err(_) => BackendError::TooLarge { limit: max_body },
                })?
                .to_bytes();
            Ok(Answer {
                status: parts.status,
                body,
            })
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| BackendError::Timeout(timeout))?
    }
}

/// Parses a configured backend URL, refusing anything but an absolute
/// `http://` or `https://` URL.
pub(crate) fn check_url(url: &str) -> Result<Uri, BackendError> {
    let bad = || BackendError::BadUrl {
        url: url.to_owned(),
    };
    let uri: Uri = url.parse().map_err(|_| bad())?;
    match (uri.scheme_str(), uri.authority()) {
        (Some("http" | "https"), Some(_)) => Ok(uri),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn only_absolute_http_urls_are_backends() {
        assert!(check_url("http://127.0.0.1:9000/hook").is_ok());
        assert!(check_url("https://backend.example/hooks/connect").is_ok());
        for bad in ["/hook", "ftp://x/y", "backend:9000", "", "http://"] {
            assert!(
                matches!(check_url(bad), Err(BackendError::BadUrl { .. })),
                "{bad:?}"
            );
        }
    }

    /// A one-shot HTTP server on loopback answering `response` verbatim.
    async fn serve_once(response: &'static [u8]) -> Uri {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut head = vec![0; 4096];
            let _ = stream.read(&mut head).await;
            stream.write_all(response).await.unwrap();
            // Hold the connection so a slow answer stays slow.
            tokio::time::sleep(Duration::from_secs(5)).await;
        });
        format!("http://{addr}/hook").parse().unwrap()
    }

    fn backend() -> Backend {
        Backend::new(&duplex::transport::Options::default()).unwrap()
    }

    #[tokio::test]
    async fn a_json_answer_is_read_whole() {
        let url = serve_once(b"HTTP/1.1 200 OK\r\ncontent-length: 11\r\n\r\n{\"ok\":true}").await;
        let answer = backend()
            .post_json(
                &url,
                HeaderMap::new(),
                Bytes::from_static(b"{}"),
                Duration::from_secs(5),
                1024,
            )
            .await
            .unwrap();
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(&answer.body[..], b"{\"ok\":true}");
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_not_read() {
        let url =
            serve_once(b"HTTP/1.1 200 OK\r\ncontent-length: 20\r\n\r\n01234567890123456789").await;
        let error = backend()
            .get(&url, Duration::from_secs(5), 10)
            .await
            .unwrap_err();
        assert!(
            matches!(error, BackendError::TooLarge { limit: 10 }),
            "{error:?}"
        );
    }

    #[tokio::test]
    async fn a_backend_that_never_answers_times_out() {
        let url = serve_once(b"").await;
        let error = backend()
            .get(&url, Duration::from_millis(200), 10)
            .await
            .unwrap_err();
        assert!(matches!(error, BackendError::Timeout(_)), "{error:?}");
    }

    #[tokio::test]
    async fn a_backend_that_is_down_is_unreachable() {
        // Bind then drop: nothing listens on the port afterwards.
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let url: Uri = format!("http://127.0.0.1:{port}/").parse().unwrap();
        let error = backend()
            .get(&url, Duration::from_secs(5), 10)
            .await
            .unwrap_err();
        assert!(matches!(error, BackendError::Unreachable(_)), "{error:?}");
    }
}
