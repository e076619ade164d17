//! `[webhooks]`: where lifecycle events go and how they are delivered
//! (reference: `docs/webhooks.md`).
//!
//! Invariants: off unless [`WebhooksConfig::url`] is set; then a secret of
//! at least [`MIN_WEBHOOK_SECRET_LEN`] bytes is required (events are never
//! sent unsigned), every event name in the filter is known, and every
//! bound (queue, batch, timeout, backoff) is above 0 and ordered.

use std::time::Duration;

use duplex_hub_proto::events::{EventKind, EventSet};
use serde::Deserialize;

use crate::config::ConfigError;

/// The shortest webhook secret accepted (bytes).
pub const MIN_WEBHOOK_SECRET_LEN: usize = duplex_hub_proto::signature::MIN_SECRET_LEN;

/// The environment variable a `[webhooks]` table without `secret` takes it
/// from.
pub const SECRET_ENV: &str = "DUPLEX_WEBHOOK_SECRET";

fn secret_from_env() -> Option<String> {
    std::env::var(SECRET_ENV).ok().filter(|s| !s.is_empty())
}

/// Lifecycle events sent to the application's backend (`[webhooks]`).
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhooksConfig {
    /// Where events are POSTed (`http://` or `https://`); `None` (the
    /// default): no webhooks.
    pub url: Option<String>,
    /// The shared secret the requests are signed with (HMAC-SHA256), at
    /// least 32 bytes. A `[webhooks]` table without it takes the
    /// environment variable [`SECRET_ENV`] (`DUPLEX_WEBHOOK_SECRET`), so the
    /// file need not hold the secret.
    #[serde(default = "secret_from_env")]
    pub secret: Option<String>,
    /// The event types sent (default: all of them): `connected`,
    /// `disconnected`, `subscribed`, `unsubscribed`, `channel_occupied`,
    /// `channel_vacated`, `user_online`, `user_offline`.
    pub events: Vec<String>,
    /// The longest wait for the backend's answer to one request (default
    /// 5 s); longer counts as a failure and is retried.
    #[serde(with = "seconds")]
    pub timeout: Duration,
    /// Events waiting for delivery at most (default 100,000): in memory
    /// with the in-memory broker, in Redis (a stream, shared by the
    /// cluster) with Redis. An event beyond it is dropped and counted
    /// (`duplex_webhook_events_dropped_total`).
    pub max_queue: usize,
    /// Events in one request at most (default 100).
    pub batch: usize,
    /// The first retry's delay bound (default 0.5 s); it doubles per
    /// failure, with jitter, up to `retry_max`.
    #[serde(with = "seconds")]
    pub retry_min: Duration,
    /// The longest delay between two attempts (default 30 s).
    #[serde(with = "seconds")]
    pub retry_max: Duration,
    /// How long a user stays online after its last connection ended before
    /// `user_offline` (default 5 s); a connection within it cancels it.
    #[serde(with = "seconds")]
    pub offline_grace: Duration,
    /// How long a channel stays occupied after its last subscriber left
    /// before `channel_vacated` (default 5 s).
    #[serde(with = "seconds")]
    pub vacated_grace: Duration,
    /// With Redis: events a node took from the queue and has not confirmed
    /// for this long (its node died) are taken over by another node
    /// (default 30 s; at least twice `timeout`).
    #[serde(with = "seconds")]
    pub claim_idle: Duration,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        Self {
            url: None,
            secret: None,
            events: Vec::new(),
            timeout: Duration::from_secs(5),
            max_queue: 100_000,
            batch: 100,
            retry_min: Duration::from_millis(500),
            retry_max: Duration::from_secs(30),
            offline_grace: Duration::from_secs(5),
            vacated_grace: Duration::from_secs(5),
            claim_idle: Duration::from_secs(30),
        }
    }
}

impl std::fmt::Debug for WebhooksConfig {
    /// The secret is not shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhooksConfig")
            .field("url", &self.url)
            .field("secret", &self.secret.as_ref().map(|_| "…"))
            .field("events", &self.events)
            .field("timeout", &self.timeout)
            .field("max_queue", &self.max_queue)
            .field("batch", &self.batch)
            .field("retry_min", &self.retry_min)
            .field("retry_max", &self.retry_max)
            .field("offline_grace", &self.offline_grace)
            .field("vacated_grace", &self.vacated_grace)
            .field("claim_idle", &self.claim_idle)
            .finish()
    }
}

impl WebhooksConfig {
    /// Whether webhooks are on.
    pub fn enabled(&self) -> bool {
        self.url.is_some()
    }

    /// The event types sent.
    pub fn filter(&self) -> EventSet {
        if self.events.is_empty() {
            return EventSet::ALL;
        }
        EventSet::of(self.events.iter().filter_map(|name| EventKind::parse(name)))
    }

    /// Checks the section (see the module docs).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |what: String| Err(ConfigError::Invalid(format!("webhooks: {what}")));
        let Some(url) = &self.url else {
            if self.secret.is_some() || !self.events.is_empty() {
                return bad("a secret or events are set but url is not".into());
            }
            return Ok(());
        };
        if let Err(error) = crate::backend::check_url(url) {
            return bad(error.to_string());
        }
        match &self.secret {
            None => {
                return bad(
                    "url is set but secret is not (webhooks.secret or DUPLEX_WEBHOOK_SECRET): \
                     events are never sent unsigned"
                        .into(),
                );
            }
            Some(secret) if secret.len() < MIN_WEBHOOK_SECRET_LEN => {
                return bad(format!(
                    "the secret is {} bytes; it must be at least {MIN_WEBHOOK_SECRET_LEN} \
                     (e.g. `openssl rand -hex 32`)",
                    secret.len()
                ));
            }
            Some(_) => {}
        }
        if let Some(unknown) = self.events.iter().find(|n| EventKind::parse(n).is_none()) {
            let known: Vec<&str> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
            return bad(format!(
                "unknown event `{unknown}` (known: {})",
                known.join(", ")
            ));
        }
        if self.max_queue == 0 || self.batch == 0 {
            return bad("max_queue and batch must be at least 1".into());
        }
        if self.timeout.is_zero() || self.retry_min.is_zero() || self.retry_max < self.retry_min {
            return bad(
                "timeout and retry_min must be above 0, retry_max at least retry_min".into(),
            );
        }
        if self.claim_idle < self.timeout * 2 {
            return bad("claim_idle must be at least twice timeout".into());
        }
        Ok(())
    }
}

/// Durations in the TOML file are seconds (integers or decimals).
mod seconds {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let secs = f64::deserialize(d)?;
        Duration::try_from_secs_f64(secs).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::HubConfig;

    #[test]
    fn webhooks_are_off_by_default_and_need_a_long_secret() {
        assert!(!HubConfig::default().webhooks.enabled());
        let parse = |text: &str| HubConfig::from_toml(&format!("[webhooks]\n{text}"));
        let secret = "s".repeat(32);
        let config = parse(&format!(
            "url = \"http://127.0.0.1:9/h\"\nsecret = \"{secret}\"\nevents = [\"user_online\"]\noffline_grace = 1.5"
        ))
        .unwrap();
        assert_eq!(config.webhooks.offline_grace, Duration::from_millis(1500));
        assert!(config.webhooks.filter().contains(EventKind::UserOnline));
        assert!(!config.webhooks.filter().contains(EventKind::Connected));
        assert!(
            !format!("{config:?}").contains(&secret),
            "the secret is not shown"
        );
        for (bad, says) in [
            ("url = \"http://127.0.0.1:9/h\"", "secret is not"),
            (
                "url = \"http://127.0.0.1:9/h\"\nsecret = \"short\"",
                "at least 32",
            ),
            ("url = \"ftp://x/y\"", "http"),
            (
                &format!("url = \"http://h/\"\nsecret = \"{secret}\"\nevents = [\"joined\"]"),
                "unknown event `joined`",
            ),
            (
                &format!("url = \"http://h/\"\nsecret = \"{secret}\"\nmax_queue = 0"),
                "max_queue",
            ),
            (&format!("secret = \"{secret}\""), "url is not"),
        ] {
            let error = parse(bad).unwrap_err().to_string();
            assert!(error.contains(says), "{bad}: {error}");
        }
    }
}
