//! Proxy hooks, the hub's side: HTTP requests to the application's
//! backend through [`crate::backend`], bounded in time and concurrency,
//! counted in the metrics (`docs/hooks.md`).
//!
//! What a request says and what an answer means — the bodies, the
//! verdicts, the failure policy — are the core's rules,
//! [`duplex_hub_proto::hooks`]; this module only sends, waits and counts.
//! The session asks it (see `session::hooks`).
//!
//! # Invariants
//!
//! - **Bounded concurrency.** At most `max_concurrency` requests of one
//!   hook are in flight on the node; a request finding them all busy waits
//!   at most `queue_timeout` for a slot, then fails as
//!   [`Failure::Busy`]. A backend that is slow or down thus holds at most
//!   that many requests, and everything else the hub does goes on.
//! - **Bounded in time.** A request that got a slot finishes within
//!   `timeout` ([`Failure::Timeout`]); so a hook decides within
//!   `queue_timeout + timeout`.
//! - **Bounded in memory.** An answer over `max_response_bytes` is not
//!   read ([`Failure::TooLarge`]); the per-connection state kept here (the
//!   headers to forward and whether the `connect` hook let it in) exists
//!   only for connections of a hub with hooks, from their handshake to
//!   their end, one entry each.
//! - **Signed.** Every request carries `Duplex-Signature` (the core's
//!   [`duplex_hub_proto::signature`], as webhooks do), signed with the
//!   configured secret when it is sent — after its wait for a slot, so `t`
//!   is when it left; a request sent again (a `refresh` retried) is signed
//!   anew. A forwarded header of that name from the client is replaced.
//! - Every request and its result is counted ([`HookMetrics`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use duplex_hub_proto::hooks::{AnswerError, Failure, Hook, Verdict};
use duplex_hub_proto::signature::{SIGNATURE_HEADER, signature_header};
use http::{HeaderMap, HeaderName, HeaderValue, Uri, header};
use tokio::sync::Semaphore;

use crate::backend::{Backend, BackendError, check_url};
use crate::hub::HubError;
use crate::metrics::Metrics;

pub(crate) mod config;
mod metrics;

pub(crate) use self::metrics::HookMetrics;
use self::metrics::Outcome;
use crate::config::HooksConfig;

/// The parsed URLs of one namespace's hooks.
#[derive(Debug, Default)]
struct NamespaceUrls {
    subscribe: Option<Uri>,
    publish: Option<Uri>,
    rpc: Option<Uri>,
    fail_open: bool,
}

/// A connection's state, as hooks need it (see the module docs).
#[derive(Debug, Default)]
struct Peer {
    /// The headers of its upgrade request forwarded with its requests.
    headers: Arc<HeaderMap>,
    /// The `connect` hook let it in: the `refresh` hook extends it.
    by_hook: bool,
    /// The `refresh` hook refused to extend it: it ends at its expiry.
    refresh_refused: bool,
}

/// A node's proxy hooks (see the module docs).
pub(crate) struct Hooks {
    backend: Backend,
    /// The signing secret (validated: at least 32 bytes).
    secret: Vec<u8>,
    connect: Option<Uri>,
    refresh: Option<Uri>,
    namespaces: HashMap<String, NamespaceUrls>,
    default_namespace: NamespaceUrls,
    timeout: Duration,
    queue_timeout: Duration,
    max_response: usize,
    forward: Vec<HeaderName>,
    /// One gate per hook, [`Hook::index`] order.
    gates: [Semaphore; Hook::ALL.len()],
    peers: Mutex<HashMap<u64, Peer>>,
    metrics: Arc<Metrics>,
    /// When a failure was last logged at `warn` (seconds since the epoch).
    logged: AtomicU64,
}

/// Failures are logged at `warn` at most once per this many seconds.
const LOG_INTERVAL_SECS: u64 = 10;

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooks")
            .field("connect", &self.connect)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// A configured URL, already checked by [`HooksConfig::validate`].
fn url(url: Option<&String>) -> Result<Option<Uri>, HubError> {
    url.map(|url| {
        check_url(url).map_err(|error| {
            HubError::Config(crate::config::ConfigError::Invalid(format!(
                "hooks: {error}"
            )))
        })
    })
    .transpose()
}

fn namespace_urls(ns: &config::NamespaceHooks) -> Result<NamespaceUrls, HubError> {
    Ok(NamespaceUrls {
        subscribe: url(ns.subscribe.as_ref())?,
        publish: url(ns.publish.as_ref())?,
        rpc: url(ns.rpc.as_ref())?,
        fail_open: ns.fail_open,
    })
}

/// What a hook's answer was: the status and the body.
type Answered = (u16, Bytes);

impl Hooks {
    /// The hooks `config` sets, or `None` when it sets none.
    pub(crate) fn new(
        config: &HooksConfig,
        metrics: Arc<Metrics>,
    ) -> Result<Option<Arc<Self>>, HubError> {
        if !config.any() {
            return Ok(None);
        }
        let backend =
            Backend::new(&duplex::transport::Options::default()).map_err(|e| match e {
                BackendError::Tls(error) => HubError::Tls(error),
                other => HubError::Config(crate::config::ConfigError::Invalid(format!(
                    "hooks: {other}"
                ))),
            })?;
        let mut namespaces = HashMap::new();
        for (name, ns) in &config.namespaces {
            namespaces.insert(name.clone(), namespace_urls(ns)?);
        }
        let mut forward: Vec<HeaderName> = config
            .forward_headers
            .iter()
            .filter_map(|name| HeaderName::from_bytes(name.as_bytes()).ok())
            .collect();
        if config.forward_cookies && !forward.contains(&header::COOKIE) {
            forward.push(header::COOKIE);
        }
        let Some(secret) = &config.secret else {
            return Err(HubError::Config(crate::config::ConfigError::Invalid(
                "hooks: a hook is set but secret is not".into(),
            )));
        };
        Ok(Some(Arc::new(Self {
            backend,
            secret: secret.as_bytes().to_vec(),
            connect: url(config.connect.as_ref())?,
            refresh: url(config.refresh.as_ref())?,
            namespaces,
            default_namespace: namespace_urls(&config.default_namespace)?,
            timeout: config.timeout,
            queue_timeout: config.queue_timeout,
            max_response: config.max_response_bytes,
            forward,
            gates: std::array::from_fn(|_| Semaphore::new(config.max_concurrency)),
            peers: Mutex::new(HashMap::new()),
            metrics,
            logged: AtomicU64::new(0),
        })))
    }

    /// Whether the `refresh` hook is set.
    pub(crate) fn has_refresh(&self) -> bool {
        self.refresh.is_some()
    }

    fn namespace(&self, name: &str) -> &NamespaceUrls {
        self.namespaces
            .get(duplex_hub_proto::namespace(name))
            .unwrap_or(&self.default_namespace)
    }

    /// The URL of `hook` for channel or method `name`, if one is set.
    pub(crate) fn url_for(&self, hook: Hook, name: &str) -> Option<&Uri> {
        match hook {
            Hook::Connect => self.connect.as_ref(),
            Hook::Refresh => self.refresh.as_ref(),
            Hook::Subscribe => self.namespace(name).subscribe.as_ref(),
            Hook::Publish => self.namespace(name).publish.as_ref(),
            Hook::Rpc => self.namespace(name).rpc.as_ref(),
        }
    }

    /// Whether `name`'s namespace lets `subscribe` and `publish` go on
    /// when its hook fails.
    pub(crate) fn fail_open(&self, name: &str) -> bool {
        self.namespace(name).fail_open
    }

    /// The headers of an upgrade request to forward: the configured ones
    /// and the cookies.
    pub(crate) fn forwarded(&self, request: &HeaderMap) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for name in &self.forward {
            for value in request.get_all(name) {
                headers.append(name.clone(), value.clone());
            }
        }
        headers
    }

    /// Keeps connection `id`'s forwarded headers until [`Hooks::forget`].
    pub(crate) fn remember(&self, id: u64, headers: HeaderMap) {
        if headers.is_empty() {
            return;
        }
        self.lock().entry(id).or_default().headers = Arc::new(headers);
    }

    /// Connection `id` ended.
    pub(crate) fn forget(&self, id: u64) {
        self.lock().remove(&id);
    }

    /// Connection `id` was let in by the `connect` hook.
    pub(crate) fn mark_connected_by_hook(&self, id: u64) {
        self.lock().entry(id).or_default().by_hook = true;
    }

    /// Whether the `refresh` hook may extend connection `id` (the `connect`
    /// hook let it in, and the backend has not refused to extend it).
    pub(crate) fn refreshes(&self, id: u64) -> bool {
        self.refresh.is_some()
            && self
                .lock()
                .get(&id)
                .is_some_and(|peer| peer.by_hook && !peer.refresh_refused)
    }

    /// The backend refused to extend connection `id`.
    pub(crate) fn refresh_refused(&self, id: u64) {
        self.lock().entry(id).or_default().refresh_refused = true;
    }

    fn headers(&self, id: u64) -> Arc<HeaderMap> {
        self.lock()
            .get(&id)
            .map(|peer| peer.headers.clone())
            .unwrap_or_default()
    }

    /// Logs a failure at `warn`, at most once per [`LOG_INTERVAL_SECS`]
    /// (the metrics count every one), else at `debug`.
    fn log(&self, hook: Hook, url: &Uri, error: &dyn std::fmt::Display) {
        let now = crate::hub::now_secs();
        let last = self.logged.load(Ordering::Relaxed);
        if now >= last + LOG_INTERVAL_SECS
            && self
                .logged
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(hook = hook.as_str(), %url, %error, "hook failed (see duplex_hook_failures_total)");
        } else {
            tracing::debug!(hook = hook.as_str(), %url, %error, "hook failed");
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Peer>> {
        // Every update is one step: a poisoned lock is still consistent.
        self.peers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Asks `hook` at `url` for connection `id` with `body`, and reads the
    /// answer with `parse` (a rule of [`duplex_hub_proto::hooks`]); counts
    /// the outcome.
    pub(crate) async fn ask<T>(
        &self,
        hook: Hook,
        url: &Uri,
        id: u64,
        body: Vec<u8>,
        parse: impl FnOnce(u16, &[u8]) -> Result<Verdict<T>, AnswerError>,
    ) -> Result<Verdict<T>, Failure> {
        let (status, answer) = self.send(hook, url, id, body).await?;
        match parse(status, &answer) {
            Ok(verdict) => {
                let outcome = match &verdict {
                    Verdict::Accept(_) => Outcome::Accept,
                    Verdict::Refuse(_) => Outcome::Refuse,
                    Verdict::Disconnect(_) => Outcome::Disconnect,
                };
                self.metrics.hooks.answered(hook, outcome);
                Ok(verdict)
            }
            Err(error) => {
                let failure = Failure::from(&error);
                self.log(hook, url, &error);
                self.metrics.hooks.failed(hook, failure);
                Err(failure)
            }
        }
    }

    /// One request within the bounds (see the module docs).
    async fn send(
        &self,
        hook: Hook,
        url: &Uri,
        id: u64,
        body: Vec<u8>,
    ) -> Result<Answered, Failure> {
        let metrics = &self.metrics.hooks;
        metrics.waiting(hook, 1);
        let permit =
            tokio::time::timeout(self.queue_timeout, self.gates[hook.index()].acquire()).await;
        metrics.waiting(hook, -1);
        let Ok(Ok(_permit)) = permit else {
            self.log(hook, url, &"busy: no free slot within queue_timeout");
            metrics.failed(hook, Failure::Busy);
            return Err(Failure::Busy);
        };
        metrics.in_flight(hook, 1);
        let started = tokio::time::Instant::now();
        let mut headers = HeaderMap::clone(&self.headers(id));
        let signature = signature_header(&self.secret, crate::hub::now_secs(), &body);
        // Hex digits, `t=`, `,v1=`: always a valid header value.
        if let Ok(value) = HeaderValue::from_str(&signature) {
            headers.insert(SIGNATURE_HEADER, value);
        }
        let sent = self
            .backend
            .post_json(
                url,
                headers,
                Bytes::from(body),
                self.timeout,
                self.max_response,
            )
            .await;
        metrics.took(hook, started.elapsed());
        metrics.in_flight(hook, -1);
        match sent {
            Ok(answer) => Ok((answer.status.as_u16(), answer.body)),
            Err(error) => {
                let failure = match error {
                    BackendError::Timeout(_) => Failure::Timeout,
                    BackendError::TooLarge { .. } => Failure::TooLarge,
                    _ => Failure::Unreachable,
                };
                self.log(hook, url, &error);
                metrics.failed(hook, failure);
                Err(failure)
            }
        }
    }
}
