//! The `[hooks]` table: which proxy hooks call which URL, and their bounds
//! (`docs/hooks.md`).
//!
//! Invariants: every hook is off unless its URL is set; a set URL is an
//! absolute `http://` or `https://` URL (checked at load, not at the first
//! call); with any hook set, a secret of at least [`MIN_HOOK_SECRET_LEN`]
//! bytes is required (hook requests are never sent unsigned); every bound is finite and above zero (a timeout, a concurrency,
//! a wait for a free slot, an answer's size); `forward_headers` are valid
//! header names; `fail_open` is only accepted where a `subscribe` or
//! `publish` hook exists to fail.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::config::ConfigError;

/// The shortest hook secret accepted (bytes).
pub const MIN_HOOK_SECRET_LEN: usize = duplex_hub_proto::signature::MIN_SECRET_LEN;

/// The environment variable a `[hooks]` table without `secret` takes it
/// from.
pub const HOOK_SECRET_ENV: &str = "DUPLEX_HOOK_SECRET";

fn secret_from_env() -> Option<String> {
    std::env::var(HOOK_SECRET_ENV)
        .ok()
        .filter(|s| !s.is_empty())
}

/// The proxy hooks (`[hooks]`). Off unless a URL is set.
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HooksConfig {
    /// The shared secret every hook request is signed with
    /// (`Duplex-Signature`, HMAC-SHA256, as webhooks are), at least 32
    /// bytes; required when any hook is set. A `[hooks]` table without it
    /// takes the environment variable [`HOOK_SECRET_ENV`]
    /// (`DUPLEX_HOOK_SECRET`), so the file need not hold the secret.
    #[serde(default = "secret_from_env")]
    pub secret: Option<String>,
    /// URL of the `connect` hook: asked when a client connects without a
    /// token; the backend accepts (and may name the user, the session's
    /// expiry, data for the client and channels to join) or refuses.
    pub connect: Option<String>,
    /// URL of the `refresh` hook: asked before the session of a
    /// connection the `connect` hook let in expires, to extend it.
    pub refresh: Option<String>,
    /// How long one request may take, from connecting to the last byte of
    /// the answer (default 3 s, at most 60 s).
    #[serde(with = "crate::config::seconds")]
    pub timeout: Duration,
    /// Requests in flight at once per hook (connect, refresh, subscribe,
    /// publish, rpc; all namespaces together), per node (default 64).
    pub max_concurrency: usize,
    /// How long a request waits for a free slot when `max_concurrency` are
    /// in flight, before it fails as `busy` (default 1 s, at most 60 s).
    #[serde(with = "crate::config::seconds")]
    pub queue_timeout: Duration,
    /// The largest answer read, in bytes (default 64 KiB); a larger one is
    /// a failure (`too_large`).
    pub max_response_bytes: usize,
    /// Headers of the client's WebSocket upgrade request to send with
    /// every hook request of its connection, by name (e.g.
    /// `["authorization", "x-request-id"]`). Cookies are sent too, unless
    /// `forward_cookies` is off.
    pub forward_headers: Vec<String>,
    /// Whether the upgrade request's `Cookie` header is sent with every
    /// hook request (default on), so the backend can use its own session.
    pub forward_cookies: bool,
    /// Hooks of channels (and rpc methods) per namespace (the part before
    /// the first `:`; `""` for names without one).
    pub namespaces: BTreeMap<String, NamespaceHooks>,
    /// Hooks of the namespaces not listed in `namespaces`.
    pub default_namespace: NamespaceHooks,
}

/// The hooks of one namespace (`[hooks.namespaces.NAME]`,
/// `[hooks.default_namespace]`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NamespaceHooks {
    /// URL of the `subscribe` hook: asked for each `subscribe` the hub's
    /// own rules allow.
    pub subscribe: Option<String>,
    /// URL of the `publish` hook: asked for each `publish` and `signal`
    /// the hub's own rules allow; may refuse it or replace its data.
    pub publish: Option<String>,
    /// URL of the `rpc` hook: `rpc` calls of methods in this namespace go
    /// there.
    pub rpc: Option<String>,
    /// When the backend gives no usable answer (down, slow, busy, garbage),
    /// let `subscribe` and `publish` go on under the hub's own rules
    /// instead of refusing them with `backend_unavailable` (default off).
    pub fail_open: bool,
}

impl Default for HooksConfig {
    fn default() -> Self {
        Self {
            secret: None,
            connect: None,
            refresh: None,
            timeout: Duration::from_secs(3),
            max_concurrency: 64,
            queue_timeout: Duration::from_secs(1),
            max_response_bytes: 64 << 10,
            forward_headers: Vec::new(),
            forward_cookies: true,
            namespaces: BTreeMap::new(),
            default_namespace: NamespaceHooks::default(),
        }
    }
}

impl std::fmt::Debug for HooksConfig {
    /// The secret is not shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HooksConfig")
            .field("secret", &self.secret.as_ref().map(|_| "…"))
            .field("connect", &self.connect)
            .field("refresh", &self.refresh)
            .field("timeout", &self.timeout)
            .field("max_concurrency", &self.max_concurrency)
            .field("queue_timeout", &self.queue_timeout)
            .field("max_response_bytes", &self.max_response_bytes)
            .field("forward_headers", &self.forward_headers)
            .field("forward_cookies", &self.forward_cookies)
            .field("namespaces", &self.namespaces)
            .field("default_namespace", &self.default_namespace)
            .finish()
    }
}

/// The longest timeout or queue wait accepted.
const MAX_WAIT: Duration = Duration::from_secs(60);

impl HooksConfig {
    /// Whether any hook is configured.
    pub fn any(&self) -> bool {
        self.connect.is_some()
            || self.refresh.is_some()
            || self
                .namespaces
                .values()
                .chain([&self.default_namespace])
                .any(NamespaceHooks::any)
    }

    /// The hooks of `name`'s namespace (a channel or an rpc method).
    pub fn namespace(&self, name: &str) -> &NamespaceHooks {
        self.namespaces
            .get(duplex_hub_proto::namespace(name))
            .unwrap_or(&self.default_namespace)
    }

    /// Checks what parses but cannot work (see the module docs).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |what: String| Err(ConfigError::Invalid(format!("hooks: {what}")));
        let mut urls = vec![("connect", &self.connect), ("refresh", &self.refresh)];
        for ns in self.namespaces.values().chain([&self.default_namespace]) {
            urls.extend([
                ("subscribe", &ns.subscribe),
                ("publish", &ns.publish),
                ("rpc", &ns.rpc),
            ]);
            if ns.fail_open && ns.subscribe.is_none() && ns.publish.is_none() {
                return bad(
                    "fail_open applies to subscribe and publish hooks: set one, or drop it".into(),
                );
            }
        }
        for (hook, url) in urls {
            if let Some(url) = url
                && let Err(error) = crate::backend::check_url(url)
            {
                return bad(format!("{hook}: {error}"));
            }
        }
        if self.refresh.is_some() && self.connect.is_none() {
            return bad(
                "refresh extends the sessions the connect hook opened: set connect too".into(),
            );
        }
        if self.timeout.is_zero() || self.timeout > MAX_WAIT {
            return bad("timeout must be above 0 and at most 60 s".into());
        }
        if self.queue_timeout > MAX_WAIT {
            return bad("queue_timeout must be at most 60 s".into());
        }
        if !(1..=10_000).contains(&self.max_concurrency) {
            return bad("max_concurrency must be from 1 to 10000".into());
        }
        if !(1024..=16 << 20).contains(&self.max_response_bytes) {
            return bad("max_response_bytes must be from 1024 to 16 MiB".into());
        }
        if let Some(name) = self
            .forward_headers
            .iter()
            .find(|name| http::HeaderName::from_bytes(name.as_bytes()).is_err())
        {
            return bad(format!("forward_headers: {name:?} is not a header name"));
        }
        if self.any() {
            match &self.secret {
                None => {
                    return bad(format!(
                        "a hook is set but secret is not (hooks.secret, --hook-secret or \
                         {HOOK_SECRET_ENV}): hook requests are never sent unsigned \
                         (e.g. `openssl rand -hex 32`)"
                    ));
                }
                Some(secret) if secret.len() < MIN_HOOK_SECRET_LEN => {
                    return bad(format!(
                        "the secret is {} bytes; it must be at least {MIN_HOOK_SECRET_LEN} \
                         (e.g. `openssl rand -hex 32`)",
                        secret.len()
                    ));
                }
                Some(_) => {}
            }
        }
        Ok(())
    }
}

impl NamespaceHooks {
    /// Whether any hook of the namespace is set.
    pub fn any(&self) -> bool {
        self.subscribe.is_some() || self.publish.is_some() || self.rpc.is_some()
    }
}

#[cfg(test)]
mod tests {
    use crate::HubConfig;

    #[test]
    fn hooks_are_off_by_default_and_read_from_toml() {
        assert!(!HubConfig::default().hooks.any());
        let config = HubConfig::from_toml(
            r#"
            [hooks]
            secret = "a-hook-secret-of-at-least-32-bytes"
            connect = "http://127.0.0.1:9000/connect"
            timeout = 0.5
            forward_headers = ["x-request-id"]
            [hooks.namespaces.orders]
            rpc = "https://backend.example/rpc"
            publish = "http://127.0.0.1:9000/publish"
            fail_open = true
            "#,
        )
        .unwrap();
        let hooks = &config.hooks;
        assert!(hooks.any());
        assert_eq!(hooks.timeout.as_millis(), 500);
        assert_eq!(hooks.max_concurrency, 64);
        assert!(hooks.forward_cookies);
        assert!(hooks.namespace("orders:get").rpc.is_some());
        assert!(hooks.namespace("orders:get").fail_open);
        assert!(hooks.namespace("chat:x").rpc.is_none());
        assert!(
            !format!("{hooks:?}").contains("a-hook-secret"),
            "the secret is not shown"
        );
    }

    #[test]
    fn hooks_need_a_long_secret_and_only_hooks_do() {
        let parse = |text: &str| HubConfig::from_toml(&format!("[hooks]\n{text}"));
        let connect = "connect = \"http://127.0.0.1:9000/connect\"";
        for (bad, says) in [
            (connect.to_owned(), "secret is not"),
            (format!("{connect}\nsecret = \"short\""), "at least 32"),
            (
                "[hooks.namespaces.x]\nrpc = \"http://a/\"".to_owned(),
                "never sent unsigned",
            ),
        ] {
            let error = parse(&bad).unwrap_err().to_string();
            assert!(error.contains(says), "{bad}: {error}");
        }
        let secret = format!("secret = \"{}\"", "s".repeat(32));
        assert!(parse(&format!("{connect}\n{secret}")).is_ok());
        // No hook, no secret needed: the default starts as ever.
        assert!(parse("timeout = 2").is_ok());
        assert!(HubConfig::default().validate().is_ok());
    }

    #[test]
    fn bad_hook_settings_are_start_up_errors() {
        for (bad, says) in [
            ("connect = \"/connect\"", "connect"),
            ("connect = \"http://a/\"\ntimeout = 0", "timeout"),
            (
                "connect = \"http://a/\"\nmax_concurrency = 0",
                "max_concurrency",
            ),
            (
                "connect = \"http://a/\"\nmax_response_bytes = 10",
                "max_response_bytes",
            ),
            (
                "connect = \"http://a/\"\nforward_headers = [\"a b\"]",
                "forward_headers",
            ),
            ("refresh = \"http://a/\"", "set connect too"),
            ("[hooks.default_namespace]\nfail_open = true", "fail_open"),
            ("[hooks.namespaces.x]\nrpc = \"ftp://a/\"", "rpc"),
            ("conect = \"http://a/\"", "unknown field"),
        ] {
            let secret = "secret = \"a-hook-secret-of-at-least-32-bytes\"";
            let error = HubConfig::from_toml(&format!("[hooks]\n{secret}\n{bad}"))
                .unwrap_err()
                .to_string();
            assert!(error.contains(says), "{bad}: {error}");
        }
    }
}
