//! Keys from a JWKS URL (`[auth] jwks_url`): the identity provider's
//! public keys, fetched through the hub's backend client, cached, and
//! fetched again when a token names a key (`kid`) the cache does not hold
//! or the cache is older than `jwks_max_age`.
//!
//! # Invariants
//!
//! - **Rate-limited.** At most one fetch starts per `jwks_min_refresh`
//!   (10 s by default), whatever asks for it: a flood of tokens with bogus
//!   `kid`s costs the identity provider one request per interval. Callers
//!   that ask while a fetch runs wait for it (bounded by its timeout)
//!   rather than start another.
//! - **Bounded.** A fetch takes at most [`JWKS_TIMEOUT`]; a body over
//!   [`MAX_JWKS_BYTES`] or a set of more than [`MAX_JWKS_KEYS`] keys is
//!   refused whole. A failed fetch keeps the keys held (logged at warn).
//! - **Rotation.** A successful fetch replaces the set: a key that appeared
//!   is accepted, one that is gone is refused from then on.
//! - **Signature keys only.** A key is taken when it has a `kid`, its `use`
//!   (if given) is `sig`, and it is an RSA key of at least
//!   [`MIN_RSA_BITS`](super::MIN_RSA_BITS) bits (RS256), a P-256 key
//!   (ES256) or an Ed25519 key (EdDSA), with an `alg` (if given) that
//!   matches. Symmetric (`oct`) keys and anything else are skipped: a
//!   published secret would let anyone mint tokens. A key is used only for
//!   its one algorithm.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{StatusCode, Uri};
use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, KeyOperations, PublicKeyUse,
};
use jsonwebtoken::{Algorithm, DecodingKey};
use tokio::time::Instant;

use super::{KeyError, MIN_RSA_BITS, significant_bits};
use crate::backend::{Backend, BackendError};

/// Most keys a JWKS may hold; a larger set is refused whole.
pub(crate) const MAX_JWKS_KEYS: usize = 64;

/// Largest JWKS body read, in bytes (64 KiB).
pub(crate) const MAX_JWKS_BYTES: usize = 64 << 10;

/// Longest a JWKS fetch may take, connect to last byte.
pub(crate) const JWKS_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a JWKS fetch gave no keys (the keys held stay).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum JwksError {
    /// The request failed (unreachable, timeout, body too large …).
    #[error("fetching the JWKS failed")]
    Fetch(#[source] BackendError),
    /// The URL answered another status than 200.
    #[error("the JWKS URL answered {0}")]
    Status(StatusCode),
    /// The body is not a JSON object with a `keys` array.
    #[error("the JWKS is not a JSON key set")]
    Json(#[source] serde_json::Error),
    /// More keys than [`MAX_JWKS_KEYS`].
    #[error("the JWKS holds {0} keys; at most {MAX_JWKS_KEYS} are taken")]
    TooManyKeys(usize),
}

/// One usable key of the set.
#[derive(Clone)]
pub(crate) struct JwksKey {
    pub(crate) key: DecodingKey,
    pub(crate) algorithm: Algorithm,
}

impl std::fmt::Debug for JwksKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksKey")
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

/// `kid` → key.
type KeySet = HashMap<String, Arc<JwksKey>>;

/// The `{"keys": [...]}` of a JWKS, each key read on its own so that one
/// key of a kind this crate does not read (an encryption key …) does not
/// spoil the others.
#[derive(serde::Deserialize)]
struct RawSet {
    keys: Vec<serde_json::Value>,
}

/// The usable keys of a JWKS body (see the module docs).
pub(crate) fn parse_jwks(body: &[u8]) -> Result<KeySet, JwksError> {
    let raw: RawSet = serde_json::from_slice(body).map_err(JwksError::Json)?;
    if raw.keys.len() > MAX_JWKS_KEYS {
        return Err(JwksError::TooManyKeys(raw.keys.len()));
    }
    Ok(raw
        .keys
        .into_iter()
        .filter_map(|value| serde_json::from_value::<Jwk>(value).ok())
        .filter_map(|jwk| usable(&jwk))
        .collect())
}

/// The key and its algorithm, if `jwk` is a usable signature key.
fn usable(jwk: &Jwk) -> Option<(String, Arc<JwksKey>)> {
    let kid = jwk.common.key_id.clone().filter(|kid| !kid.is_empty())?;
    if jwk
        .common
        .public_key_use
        .as_ref()
        .is_some_and(|u| *u != PublicKeyUse::Signature)
    {
        return None;
    }
    if jwk
        .common
        .key_operations
        .as_ref()
        .is_some_and(|ops| !ops.contains(&KeyOperations::Verify))
    {
        return None;
    }
    let declared = jwk.common.key_algorithm;
    let algorithm = match &jwk.algorithm {
        AlgorithmParameters::RSA(rsa) => {
            let modulus = URL_SAFE_NO_PAD.decode(&rsa.n).ok()?;
            if significant_bits(&modulus) < MIN_RSA_BITS {
                return None;
            }
            matches!(declared, None | Some(KeyAlgorithm::RS256)).then_some(Algorithm::RS256)?
        }
        AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => {
            matches!(declared, None | Some(KeyAlgorithm::ES256)).then_some(Algorithm::ES256)?
        }
        AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => {
            matches!(declared, None | Some(KeyAlgorithm::EdDSA)).then_some(Algorithm::EdDSA)?
        }
        _ => return None,
    };
    let key = DecodingKey::from_jwk(jwk).ok()?;
    Some((kid, Arc::new(JwksKey { key, algorithm })))
}

/// The cached keys of one JWKS URL (see the module docs).
pub(crate) struct Jwks {
    url: Uri,
    backend: Backend,
    keys: RwLock<Arc<KeySet>>,
    /// When the keys held were fetched (none yet: never).
    fetched: Mutex<Option<Instant>>,
    /// When the last fetch started; held while one runs.
    attempt: tokio::sync::Mutex<Option<Instant>>,
    min_refresh: Duration,
    max_age: Duration,
}

impl std::fmt::Debug for Jwks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jwks")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl Jwks {
    /// Keys from `url`, fetched at most once per `min_refresh`, and again
    /// before use once older than `max_age`. Nothing is fetched yet.
    pub(crate) fn new(
        url: &str,
        min_refresh: Duration,
        max_age: Duration,
    ) -> Result<Self, KeyError> {
        let url = crate::backend::check_url(url).map_err(|_| KeyError::JwksUrl {
            url: url.to_owned(),
        })?;
        let backend = Backend::new(&duplex::transport::Options::default())
            .map_err(|e| KeyError::JwksClient(Arc::new(e)))?;
        Ok(Self {
            url,
            backend,
            keys: RwLock::new(Arc::default()),
            fetched: Mutex::new(None),
            attempt: tokio::sync::Mutex::new(None),
            min_refresh,
            max_age,
        })
    }

    /// The key `kid` names, if held.
    pub(crate) fn key(&self, kid: &str) -> Option<Arc<JwksKey>> {
        self.keys
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(kid)
            .cloned()
    }

    /// Whether a token naming `kid` calls for a fetch first: the key is not
    /// held, or the keys are older than the maximum age.
    pub(crate) fn wants_fetch(&self, kid: &str) -> bool {
        let stale = self
            .fetched
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_none_or(|at| at.elapsed() >= self.max_age);
        stale || self.key(kid).is_none()
    }

    /// Fetches the keys again unless a fetch started less than
    /// `min_refresh` ago; one running is waited for instead.
    pub(crate) async fn refresh(&self) {
        let mut attempt = self.attempt.lock().await;
        if attempt.is_some_and(|at| at.elapsed() < self.min_refresh) {
            return;
        }
        *attempt = Some(Instant::now());
        match self.fetch().await {
            Ok(keys) => {
                tracing::debug!(url = %self.url, keys = keys.len(), "JWKS fetched");
                *self.keys.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(keys);
                *self.fetched.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
            }
            Err(error) => {
                let error = error_chain(&error);
                tracing::warn!(url = %self.url, %error, "JWKS not fetched; the keys held stay");
            }
        }
    }

    async fn fetch(&self) -> Result<KeySet, JwksError> {
        let answer = self
            .backend
            .get(&self.url, JWKS_TIMEOUT, MAX_JWKS_BYTES)
            .await
            .map_err(JwksError::Fetch)?;
        if answer.status != StatusCode::OK {
            return Err(JwksError::Status(answer.status));
        }
        parse_jwks(&answer.body)
    }
}

/// An error and its sources, `: `-separated, for a log line.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const P256_X: &str = "vXvzZIlAcEPZFro0q1NkUtMmbdSMVsA4eAY6ioaFlsg";
    const P256_Y: &str = "i6vVlbuh7H4zK3bVg6GVb5Yxm-F47o-voBfS3T7E_wg";

    fn ec(kid: &str) -> serde_json::Value {
        json!({"kty": "EC", "crv": "P-256", "x": P256_X, "y": P256_Y, "kid": kid})
    }

    #[test]
    fn signature_keys_are_taken_and_the_rest_skipped() {
        let small_rsa = json!({"kty": "RSA", "n": "AQAB", "e": "AQAB", "kid": "small"});
        let body = json!({"keys": [
            ec("a"),
            json!({"kty": "EC", "crv": "P-256", "x": P256_X, "y": P256_Y}),
            json!({"kty": "EC", "crv": "P-256", "x": P256_X, "y": P256_Y, "kid": "enc", "use": "enc"}),
            json!({"kty": "EC", "crv": "P-256", "x": P256_X, "y": P256_Y, "kid": "rs", "alg": "RS256"}),
            json!({"kty": "oct", "k": "c2VjcmV0", "kid": "secret"}),
            json!({"kty": "RSA", "kid": "enc-alg", "alg": "RSA-OAEP", "n": "x", "e": "AQAB"}),
            json!({"kty": "weird", "kid": "w"}),
            small_rsa,
        ]});
        let keys = parse_jwks(body.to_string().as_bytes()).unwrap();
        let kids: Vec<&str> = keys.keys().map(String::as_str).collect();
        assert_eq!(kids, ["a"], "only the usable signature key");
        assert_eq!(keys["a"].algorithm, Algorithm::ES256);
    }

    #[test]
    fn a_set_too_large_or_not_a_set_is_refused_whole() {
        let many: Vec<_> = (0..=MAX_JWKS_KEYS).map(|i| ec(&i.to_string())).collect();
        let body = json!({ "keys": many }).to_string();
        assert!(matches!(
            parse_jwks(body.as_bytes()),
            Err(JwksError::TooManyKeys(n)) if n == MAX_JWKS_KEYS + 1
        ));
        for bad in [&b"[]"[..], b"{}", b"not json", b"{\"keys\": 1}"] {
            assert!(matches!(parse_jwks(bad), Err(JwksError::Json(_))));
        }
        assert!(parse_jwks(b"{\"keys\": []}").unwrap().is_empty());
    }
}
