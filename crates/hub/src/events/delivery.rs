//! One webhook request: a batch of events POSTed as JSON to the backend,
//! signed, through the hub's backend client (`crate::backend`).
//!
//! The body is `{"events":[…]}`; the headers are `Duplex-Signature:
//! t=<unix>,v1=<hex>` (the core's `signature::signature_header`, signed anew
//! for each attempt, so its time is the attempt's) and `Duplex-Event-Id`
//! (the events' ids, comma-separated). A 2xx answer delivers every event
//! of the batch; anything else (another status, a timeout, a refused
//! connection) fails the whole batch, which the caller retries after
//! [`Webhook::retry_delay`].

use bytes::Bytes;
use duplex_hub_proto::events::{Backoff, EVENT_ID_HEADER, Event};
use duplex_hub_proto::signature::{SIGNATURE_HEADER, signature_header};
use http::{HeaderMap, HeaderValue, StatusCode, Uri};

use super::config::WebhooksConfig;
use crate::backend::{Backend, BackendError};

/// The most of the backend's answer that is read (it is not used).
const MAX_ANSWER: usize = 4096;

/// Why a request did not deliver its batch.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum DeliveryError {
    /// The request failed (unreachable, timeout, …).
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// The backend answered, but not with a 2xx.
    #[error("the backend answered {0}")]
    Status(StatusCode),
}

/// Where and how events are delivered.
pub(crate) struct Webhook {
    url: Uri,
    secret: Vec<u8>,
    backend: Backend,
    timeout: std::time::Duration,
    backoff: Backoff,
    /// Events per request at most.
    pub(crate) batch: usize,
    /// With Redis: when another node takes over unconfirmed events.
    pub(crate) claim_idle: std::time::Duration,
}

impl Webhook {
    /// The webhook `config` describes; `None` when webhooks are off.
    pub(crate) fn new(config: &WebhooksConfig) -> Result<Option<Self>, BackendError> {
        let (Some(url), Some(secret)) = (&config.url, &config.secret) else {
            return Ok(None);
        };
        Ok(Some(Self {
            url: crate::backend::check_url(url)?,
            secret: secret.as_bytes().to_vec(),
            backend: Backend::new(&duplex::transport::Options::default())?,
            timeout: config.timeout,
            backoff: Backoff {
                min: config.retry_min,
                max: config.retry_max,
            },
            batch: config.batch,
            claim_idle: config.claim_idle,
        }))
    }

    /// POSTs `events` once.
    pub(crate) async fn post(&self, events: &[Event]) -> Result<(), DeliveryError> {
        let body = body(events);
        let mut headers = HeaderMap::new();
        let signature = signature_header(&self.secret, crate::hub::now_secs(), &body);
        if let Ok(value) = HeaderValue::from_str(&signature) {
            headers.insert(SIGNATURE_HEADER, value);
        }
        let ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
        if let Ok(value) = HeaderValue::from_str(&ids.join(",")) {
            headers.insert(EVENT_ID_HEADER, value);
        }
        let answer = self
            .backend
            .post_json(&self.url, headers, body, self.timeout, MAX_ANSWER)
            .await?;
        if answer.status.is_success() {
            Ok(())
        } else {
            Err(DeliveryError::Status(answer.status))
        }
    }

    /// How long to wait before retry `attempt` (0: the first retry).
    pub(crate) fn retry_delay(&self, attempt: u32) -> std::time::Duration {
        use rand::Rng;
        self.backoff.delay(attempt, rand::rng().random::<f64>())
    }
}

/// `{"events":[…]}`.
pub(crate) fn body(events: &[Event]) -> Bytes {
    #[derive(serde::Serialize)]
    struct Body<'a> {
        events: &'a [Event],
    }
    // Events are plain strings and numbers: they always encode.
    Bytes::from(serde_json::to_vec(&Body { events }).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use duplex_hub_proto::events::EventKind;

    #[test]
    fn the_body_is_an_object_with_the_events() {
        let event = Event {
            id: "n-1".into(),
            kind: EventKind::UserOnline,
            time: 5,
            node: "n".into(),
            client: None,
            user: Some("ada".into()),
            channel: None,
            code: None,
            reason: None,
        };
        assert_eq!(
            &body(&[event])[..],
            br#"{"events":[{"id":"n-1","type":"user_online","time":5,"node":"n","user":"ada"}]}"#
        );
    }
}
