//! Token (JWT) verification and channel grants.
//!
//! A [`Verifier`] is built once from the hub's configuration with at most
//! one static key (an HS256 shared secret, an RS256 public key or an ES256
//! public key) and, beside it or alone, the keys of a JWKS URL
//! ([`jwks`]: cached, refreshed on an unknown `kid`, rate-limited).
//! [`Verifier::verify`] turns a token into an [`Identity`]: who the client is
//! (`sub`), until when (`exp`), and which channels its token grants
//! ([`Grants`]). [`Verifier::prepare`] is its asynchronous first step: it
//! fetches the JWKS when the token names a key not held (or the keys are
//! old), so that `verify` itself never waits.
//!
//! # Invariants
//! - **One algorithm per key.** A token whose `kid` names a JWKS key is
//!   verified with that key and must carry its algorithm; any other token
//!   with the static key and its algorithm; with neither, it is
//!   [`AuthError::UnknownKey`]. The token's header is read before anything
//!   else: `alg: "none"`, another algorithm (such as HS256 signed with an
//!   RS256 public key, the classic algorithm-confusion attack) or any `crit`
//!   header is refused with [`AuthError::WrongAlgorithm`] or
//!   [`AuthError::Malformed`], before the signature is even looked at.
//! - **Signature first.** No claim of a token is trusted, or reported on,
//!   before its signature is verified.
//! - **No clock inside.** Time checks use the `now` the caller passes (Unix
//!   seconds), so verification is deterministic. `exp` is required: a token
//!   is expired when `now >= exp + leeway`; with `nbf`, it is not yet valid
//!   while `now + leeway < nbf`. The leeway is 0 unless configured.
//! - **Times are times.** `exp`, `nbf` and `iat`, when present, are numbers
//!   from 0 to [`MAX_NUMERIC_DATE`] (the end of the year 9999), else the
//!   token is [`AuthError::InvalidTime`]: a value such as `1e300` is refused,
//!   never saturated into "never expires". Fractions of a second are allowed,
//!   as RFC 7519 §2 allows them, and rounded the strict way (`exp` down,
//!   `nbf` up), so [`Identity::expires`] is a whole second within the range,
//!   exact in any JSON number (below 2^53).
//! - **`sub` is required** and not empty: an empty user is the anonymous
//!   user, which a token must not be able to claim.
//! - `aud` and `iss` are checked only when configured
//!   ([`Verifier::with_audience`], [`Verifier::with_issuer`]); then they are
//!   required.
//! - Tokens longer than [`MAX_TOKEN_LEN`] are refused unparsed.
//!
//! # Grants
//! The claims `"channels"`, `"subscribe"`, `"publish"` and `"presence"` are
//! arrays of channel patterns. `"channels"` grants all three actions; each
//! of the others grants just its action. A pattern is an exact channel name
//! (`"news:sport"`) or a prefix ending in `*` (`"chat:*"` matches every
//! channel starting with `chat:`; `"*"` matches every channel). A `*`
//! anywhere else is an ordinary character (channel names never contain one,
//! so such a pattern matches nothing). A claim that is present but not an
//! array of strings makes the token [`AuthError::Malformed`].

use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::config::AuthConfig;

/// Longest token accepted, in bytes (8 KiB); longer ones are
/// [`AuthError::Malformed`] without being decoded.
pub(crate) const MAX_TOKEN_LEN: usize = 8 << 10;

/// Shortest HS256 secret [`Verifier::from_config`] accepts, in bytes, unless
/// [`AuthConfig::allow_short_secret`] is set: RFC 7518 §3.2 requires a key as
/// long as the hash output (256 bits) or longer.
pub(crate) const MIN_HS256_SECRET_LEN: usize = 32;

/// Latest time a token's `exp`, `nbf` or `iat` may name, in seconds since
/// the Unix epoch: 9999-12-31T23:59:59Z.
pub(crate) const MAX_NUMERIC_DATE: u64 = 253_402_300_799;

/// Smallest RSA modulus accepted for RS256, in bits.
pub(crate) const MIN_RSA_BITS: usize = 2048;

/// Why a token was refused.
///
/// Every variant is the client's fault except [`AuthError::BadKey`], which is
/// a configuration error. [`AuthError::code`] names each for metrics and
/// logs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum AuthError {
    /// Not a JWT: wrong shape, bad base64 or JSON, a claim of the wrong type,
    /// an unsupported `crit` header, or too long.
    #[error("malformed token")]
    Malformed,
    /// The signature does not match the configured key.
    #[error("invalid token signature")]
    BadSignature,
    /// `exp` has passed.
    #[error("token expired")]
    Expired,
    /// `nbf` is still in the future.
    #[error("token not valid yet")]
    NotYetValid,
    /// The token's `alg` is not the configured algorithm (this includes
    /// `"none"`).
    #[error("token signed with an algorithm this hub does not accept")]
    WrongAlgorithm,
    /// `aud` is missing or names another audience.
    #[error("token for another audience")]
    WrongAudience,
    /// `iss` is missing or names another issuer.
    #[error("token from another issuer")]
    WrongIssuer,
    /// `sub` is missing or empty.
    #[error("token without a subject")]
    MissingSubject,
    /// `exp` is missing: tokens without an expiry are not accepted.
    #[error("token without an expiry")]
    MissingExpiry,
    /// The token names (`kid`) a key that neither the JWKS nor the static
    /// key is (or it names none, and there is no static key).
    #[error("token signed with a key this hub does not know")]
    UnknownKey,
    /// A time claim (named here: `"exp"`, `"nbf"` or `"iat"`) is a number
    /// outside 0 ..= [`MAX_NUMERIC_DATE`].
    #[error("token's `{0}` is not a time from 1970 to 9999 (seconds since the Unix epoch)")]
    InvalidTime(&'static str),
    /// The configured key cannot be used (unreadable, wrong type, too weak).
    #[error("bad key: {0}")]
    BadKey(#[from] KeyError),
}

/// Why a key for token verification cannot be used: a configuration error,
/// found when the [`Verifier`] is built (or, for a key the crypto backend
/// refuses only later, when a token is verified).
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The key file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: Arc<std::io::Error>,
    },
    /// The key is not a public key of the algorithm's type (or curve).
    #[error("not a usable {algorithm} public key: {source}")]
    Unusable {
        /// `"RS256"` or `"ES256"`.
        algorithm: &'static str,
        /// What the JWT library found wrong.
        #[source]
        source: jsonwebtoken::errors::Error,
    },
    /// An RSA key shorter than [`MIN_RSA_BITS`].
    #[error("RS256 key of {bits} bits; at least {MIN_RSA_BITS} are required")]
    WeakRsa {
        /// The key's modulus size.
        bits: usize,
    },
    /// `hs256_secret` is empty.
    #[error("empty hs256_secret")]
    EmptySecret,
    /// `hs256_secret` is shorter than [`MIN_HS256_SECRET_LEN`] and
    /// [`AuthConfig::allow_short_secret`] is not set.
    #[error(
        "hs256_secret is {len} bytes; at least {MIN_HS256_SECRET_LEN} are required \
         (RFC 7518 §3.2), or set allow_short_secret"
    )]
    ShortSecret {
        /// The secret's length in bytes.
        len: usize,
    },
    /// No key source, or more than one static key, is configured.
    #[error(
        "set one of hs256_secret, rs256_public_key, es256_public_key, or jwks_url, \
         or jwks_url and one of the others"
    )]
    KeySources,
    /// `jwks_url` is not an absolute `http://` or `https://` URL.
    #[error("jwks_url {url:?} is not an absolute http:// or https:// URL")]
    JwksUrl {
        /// The URL as configured.
        url: String,
    },
    /// The HTTP client for `jwks_url` could not be built (no TLS roots).
    #[error("the client for jwks_url: {0}")]
    JwksClient(#[source] Arc<dyn std::error::Error + Send + Sync>),
}

/// Compares causes by what a caller can match on: an I/O error by its kind.
impl PartialEq for KeyError {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Read { path, source }, Self::Read { path: p, source: s }) => {
                path == p && source.kind() == s.kind()
            }
            (
                Self::Unusable { algorithm, source },
                Self::Unusable {
                    algorithm: a,
                    source: s,
                },
            ) => algorithm == a && source == s,
            (Self::WeakRsa { bits }, Self::WeakRsa { bits: b }) => bits == b,
            (Self::ShortSecret { len }, Self::ShortSecret { len: l }) => len == l,
            (Self::EmptySecret, Self::EmptySecret) | (Self::KeySources, Self::KeySources) => true,
            (Self::JwksUrl { url }, Self::JwksUrl { url: u }) => url == u,
            (Self::JwksClient(a), Self::JwksClient(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl Eq for KeyError {}

impl AuthError {
    #[cfg(test)]
    /// A short, stable name for metrics and logs, such as `"expired"`.
    pub(crate) fn code(&self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::BadSignature => "bad_signature",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::WrongAlgorithm => "wrong_algorithm",
            Self::WrongAudience => "wrong_audience",
            Self::WrongIssuer => "wrong_issuer",
            Self::MissingSubject => "missing_subject",
            Self::MissingExpiry => "missing_expiry",
            Self::InvalidTime(_) => "invalid_time",
            Self::UnknownKey => "unknown_key",
            Self::BadKey(_) => "bad_key",
        }
    }

    /// The reason of the 4001 close a session sends for this token: what
    /// the HTTP 401 says, in at most 123 bytes (a close frame's limit). A
    /// configuration error names no key.
    pub(crate) fn close_reason(&self) -> &'static str {
        match self {
            Self::Malformed => "token refused: malformed token",
            Self::BadSignature => "token refused: invalid token signature",
            Self::Expired => "token refused: token expired",
            Self::NotYetValid => "token refused: token not valid yet",
            Self::WrongAlgorithm => {
                "token refused: token signed with an algorithm this hub does not accept"
            }
            Self::WrongAudience => "token refused: token for another audience",
            Self::WrongIssuer => "token refused: token from another issuer",
            Self::MissingSubject => "token refused: token without a subject",
            Self::MissingExpiry => "token refused: token without an expiry",
            Self::InvalidTime(_) => "token refused: a time claim is not a time from 1970 to 9999",
            Self::UnknownKey => "token refused: token signed with a key this hub does not know",
            Self::BadKey(_) => "token refused: the hub's key is misconfigured",
        }
    }
}

pub(crate) use duplex_hub_proto::session::Action;

mod grants;
pub(crate) mod jwks;
pub(crate) mod subscription;
#[cfg(test)]
mod tests;

pub(crate) use grants::Grants;
use grants::bit;
use jwks::Jwks;

/// Who a verified token says the client is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Identity {
    /// The token's `sub`: never empty.
    pub user: String,
    /// The token's `exp`, in seconds since the Unix epoch; at most
    /// [`MAX_NUMERIC_DATE`].
    pub expires: u64,
    /// The channels the token grants.
    pub grants: Grants,
    /// The token's `jti`, if any: what a token's revocation names.
    pub jti: Option<Box<str>>,
    /// The token's `iat` (whole seconds, rounded down), if any: what a
    /// user's revocation compares.
    pub issued: Option<u64>,
    /// The token's `channel` claim, if any: the channel a subscription
    /// token is for.
    pub channel: Option<Box<str>>,
}

impl Identity {
    /// What the revocation rule looks at (see
    /// [`duplex_hub_proto::revocation`]).
    pub(crate) fn facts(&self) -> duplex_hub_proto::revocation::TokenFacts<'_> {
        duplex_hub_proto::revocation::TokenFacts {
            user: &self.user,
            jti: self.jti.as_deref(),
            issued: self.issued,
        }
    }
}

/// The claims the hub reads. Other claims are ignored.
#[derive(Deserialize)]
struct Claims {
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    exp: Option<f64>,
    #[serde(default)]
    nbf: Option<f64>,
    /// Checked like the other times; revocation compares it.
    #[serde(default)]
    iat: Option<f64>,
    #[serde(default)]
    jti: Option<String>,
    #[serde(default)]
    channel: Option<String>,
    #[serde(default)]
    channels: Option<Vec<String>>,
    #[serde(default)]
    subscribe: Option<Vec<String>>,
    #[serde(default)]
    publish: Option<Vec<String>>,
    #[serde(default)]
    presence: Option<Vec<String>>,
}

/// Verifies tokens with the configured keys. Cheap to clone; build it once
/// at startup. See the module docs for what is checked.
#[derive(Debug, Clone)]
pub(crate) struct Verifier {
    /// The static key and its algorithm, if configured.
    fixed: Option<(DecodingKey, Algorithm)>,
    /// The JWKS, if configured.
    jwks: Option<Arc<Jwks>>,
    /// What `jsonwebtoken` checks, one per algorithm of [`ALGORITHMS`], in
    /// that order: the algorithm (the key's, chosen before: see
    /// [`Verifier::key_for`]), the signature, `aud` and `iss`. Its own
    /// clock checks are off: `exp` and `nbf` are checked against the
    /// caller's `now`.
    validations: Vec<Validation>,
    leeway: u64,
}

/// Every algorithm a key may have here: a static key's or a JWKS key's.
const ALGORITHMS: [Algorithm; 4] = [
    Algorithm::HS256,
    Algorithm::RS256,
    Algorithm::ES256,
    Algorithm::EdDSA,
];

/// What the hub reads of a token's header.
struct Header {
    alg: String,
    kid: Option<String>,
}

impl Verifier {
    fn new(key: DecodingKey, algorithm: Algorithm) -> Self {
        let mut verifier = Self::keyless();
        verifier.fixed = Some((key, algorithm));
        verifier
    }

    fn keyless() -> Self {
        let validations = ALGORITHMS
            .iter()
            .map(|algorithm| {
                let mut validation = Validation::new(*algorithm);
                validation.validate_exp = false;
                validation.validate_nbf = false;
                validation.validate_aud = false;
                validation.leeway = 0;
                validation.required_spec_claims.clear();
                validation
            })
            .collect();
        Self {
            fixed: None,
            jwks: None,
            validations,
            leeway: 0,
        }
    }

    /// What `jsonwebtoken` checks for a key of `algorithm`.
    fn validation(&self, algorithm: Algorithm) -> Result<&Validation, AuthError> {
        ALGORITHMS
            .iter()
            .position(|a| *a == algorithm)
            .and_then(|at| self.validations.get(at))
            .ok_or(AuthError::WrongAlgorithm)
    }

    /// Also (or only, when built with [`Verifier::keyless`]) takes the keys
    /// of `jwks`.
    pub(crate) fn with_jwks(mut self, jwks: Arc<Jwks>) -> Self {
        self.jwks = Some(jwks);
        self
    }

    /// The JWKS, if any.
    pub(crate) fn jwks(&self) -> Option<&Arc<Jwks>> {
        self.jwks.as_ref()
    }

    /// The asynchronous first step of verifying `token`: with a JWKS, when
    /// the token names a key not held (or the keys are old), fetches them
    /// again (rate-limited: see [`jwks`]). Never fails: `verify` judges.
    pub(crate) async fn prepare(&self, token: &str) {
        let Some(jwks) = &self.jwks else { return };
        if token.len() > MAX_TOKEN_LEN {
            return;
        }
        let Ok(header) = read_header(token) else {
            return;
        };
        if let Some(kid) = &header.kid
            && jwks.wants_fetch(kid)
        {
            jwks.refresh().await;
        }
    }

    /// The key a token with `header` is verified with, and its algorithm
    /// (see the module docs).
    fn key_for(&self, header: &Header) -> Result<(KeyRef<'_>, Algorithm), AuthError> {
        if let (Some(jwks), Some(kid)) = (&self.jwks, &header.kid)
            && let Some(key) = jwks.key(kid)
        {
            let algorithm = key.algorithm;
            if header.alg != algorithm_name(algorithm) {
                return Err(AuthError::WrongAlgorithm);
            }
            return Ok((KeyRef::Jwks(key), algorithm));
        }
        match &self.fixed {
            Some((key, algorithm)) if header.alg == algorithm_name(*algorithm) => {
                Ok((KeyRef::Fixed(key), *algorithm))
            }
            Some(_) => Err(AuthError::WrongAlgorithm),
            None if header.alg == "none" => Err(AuthError::WrongAlgorithm),
            None => Err(AuthError::UnknownKey),
        }
    }

    /// A verifier of HS256 tokens signed with `secret`.
    ///
    /// The secret should be long and random, [`MIN_HS256_SECRET_LEN`] bytes
    /// or more: anyone who knows it can mint tokens. This constructor takes
    /// any secret; [`Verifier::from_config`] is the one that enforces the
    /// length.
    pub(crate) fn hs256(secret: &[u8]) -> Self {
        Self::new(DecodingKey::from_secret(secret), Algorithm::HS256)
    }

    /// A verifier of RS256 tokens, from an RSA public key in PEM (SPKI
    /// `PUBLIC KEY` or PKCS#1 `RSA PUBLIC KEY`) of at least
    /// [`MIN_RSA_BITS`] bits.
    pub(crate) fn rs256_pem(pem: &[u8]) -> Result<Self, KeyError> {
        let key = DecodingKey::from_rsa_pem(pem).map_err(|e| bad_key("RS256", e))?;
        let der = key.try_get_as_bytes().map_err(|e| bad_key("RS256", e))?;
        let (modulus, _) = (jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER
            .key_utils
            .rsa_pub_components_from_public_key)(der)
        .map_err(|e| bad_key("RS256", e))?;
        let bits = significant_bits(&modulus);
        if bits < MIN_RSA_BITS {
            return Err(KeyError::WeakRsa { bits });
        }
        Self::probed(key, Algorithm::RS256)
    }

    /// A verifier of ES256 tokens, from a P-256 public key in PEM (SPKI
    /// `PUBLIC KEY`).
    pub(crate) fn es256_pem(pem: &[u8]) -> Result<Self, KeyError> {
        let key = DecodingKey::from_ec_pem(pem).map_err(|e| bad_key("ES256", e))?;
        Self::probed(key, Algorithm::ES256)
    }

    /// A verifier for `algorithm`, once the crypto backend has accepted
    /// `key` for it (a key of the wrong type or curve fails here, at
    /// startup, rather than on every token).
    fn probed(key: DecodingKey, algorithm: Algorithm) -> Result<Self, KeyError> {
        let name = algorithm_name(algorithm);
        jsonwebtoken::crypto::verify("", b"probe", &key, algorithm)
            .map_err(|e| bad_key(name, e))?;
        Ok(Self::new(key, algorithm))
    }

    /// A verifier as the hub's `[auth]` configuration says: exactly one key
    /// source (key files are read here), and the audience and issuer if set.
    /// An HS256 secret shorter than [`MIN_HS256_SECRET_LEN`] bytes is refused,
    /// unless [`AuthConfig::allow_short_secret`] is set, which logs a warning
    /// instead; an empty one is refused always.
    pub(crate) fn from_config(config: &AuthConfig) -> Result<Self, KeyError> {
        let verifier = match (
            &config.hs256_secret,
            &config.rs256_public_key,
            &config.es256_public_key,
        ) {
            (None, None, None) if config.jwks_url.is_some() => Self::keyless(),
            (Some(secret), None, None) => {
                if secret.is_empty() {
                    return Err(KeyError::EmptySecret);
                }
                if secret.len() < MIN_HS256_SECRET_LEN {
                    if !config.allow_short_secret {
                        return Err(KeyError::ShortSecret { len: secret.len() });
                    }
                    tracing::warn!(
                        bytes = secret.len(),
                        min = MIN_HS256_SECRET_LEN,
                        "auth.hs256_secret is shorter than RFC 7518 §3.2 allows, accepted because \
                         allow_short_secret is set: whoever guesses it can mint tokens"
                    );
                }
                Self::hs256(secret.as_bytes())
            }
            (None, Some(path), None) => Self::rs256_pem(&read_key(path)?)?,
            (None, None, Some(path)) => Self::es256_pem(&read_key(path)?)?,
            _ => return Err(KeyError::KeySources),
        };
        let verifier = match &config.jwks_url {
            Some(url) => verifier.with_jwks(Arc::new(Jwks::new(
                url,
                config.jwks_min_refresh,
                config.jwks_max_age,
            )?)),
            None => verifier,
        };
        let verifier = match &config.audience {
            Some(audience) => verifier.with_audience(audience),
            None => verifier,
        };
        Ok(match &config.issuer {
            Some(issuer) => verifier.with_issuer(issuer),
            None => verifier,
        })
    }

    /// Also requires `aud` to name `audience`. Called several times, any of
    /// the audiences is accepted.
    pub(crate) fn with_audience(mut self, audience: impl Into<String>) -> Self {
        let audience = audience.into();
        for validation in &mut self.validations {
            let set = validation.aud.get_or_insert_with(Default::default);
            set.insert(audience.clone());
            validation.validate_aud = true;
            validation.required_spec_claims.insert("aud".to_owned());
        }
        self
    }

    /// Also requires `iss` to be `issuer`. Called several times, any of the
    /// issuers is accepted.
    pub(crate) fn with_issuer(mut self, issuer: impl Into<String>) -> Self {
        let issuer = issuer.into();
        for validation in &mut self.validations {
            let set = validation.iss.get_or_insert_with(Default::default);
            set.insert(issuer.clone());
            validation.required_spec_claims.insert("iss".to_owned());
        }
        self
    }

    #[cfg(test)]
    /// Tolerates clocks this many seconds apart when checking `exp` and `nbf`
    /// (default 0).
    pub(crate) fn with_leeway(mut self, seconds: u64) -> Self {
        self.leeway = seconds;
        self
    }

    #[cfg(test)]
    /// The static key's algorithm: `"HS256"`, `"RS256"` or `"ES256"`.
    pub(crate) fn algorithm(&self) -> &'static str {
        self.fixed
            .as_ref()
            .map_or("none", |(_, algorithm)| algorithm_name(*algorithm))
    }

    /// Verifies `token` at `now` (seconds since the Unix epoch, from the
    /// caller's clock) and returns who it identifies. See the module docs for
    /// the checks and their order.
    pub(crate) fn verify(&self, token: &str, now: u64) -> Result<Identity, AuthError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(AuthError::Malformed);
        }
        let header = read_header(token)?;
        let (key, algorithm) = self.key_for(&header)?;
        let validation = self.validation(algorithm)?;
        let data = jsonwebtoken::decode::<Claims>(token, key.get(), validation)
            .map_err(|error| map_error(error, algorithm_name(algorithm)))?;
        let claims = data.claims;

        let exp = claims.exp.ok_or(AuthError::MissingExpiry)?;
        let expires = seconds("exp", exp, f64::floor)?;
        if now >= expires.saturating_add(self.leeway) {
            return Err(AuthError::Expired);
        }
        if let Some(nbf) = claims.nbf {
            let nbf = seconds("nbf", nbf, f64::ceil)?;
            if now.saturating_add(self.leeway) < nbf {
                return Err(AuthError::NotYetValid);
            }
        }
        let issued = match claims.iat {
            Some(iat) => Some(seconds("iat", iat, f64::floor)?),
            None => None,
        };
        let user = match claims.sub {
            Some(sub) if !sub.is_empty() => sub,
            _ => return Err(AuthError::MissingSubject),
        };

        let mut grants = Grants::default();
        let all = bit(Action::Subscribe) | bit(Action::Publish) | bit(Action::Presence);
        for (patterns, bits) in [
            (&claims.channels, all),
            (&claims.subscribe, bit(Action::Subscribe)),
            (&claims.publish, bit(Action::Publish)),
            (&claims.presence, bit(Action::Presence)),
        ] {
            for pattern in patterns.iter().flatten() {
                grants.grant_bits(bits, pattern);
            }
        }
        Ok(Identity {
            user,
            expires,
            grants,
            jti: claims.jti.filter(|jti| !jti.is_empty()).map(Into::into),
            issued,
            channel: claims.channel.map(Into::into),
        })
    }
}

/// A key chosen for one token: the static one, or one of the JWKS.
enum KeyRef<'a> {
    Fixed(&'a DecodingKey),
    Jwks(Arc<jwks::JwksKey>),
}

impl KeyRef<'_> {
    fn get(&self) -> &DecodingKey {
        match self {
            Self::Fixed(key) => key,
            Self::Jwks(key) => &key.key,
        }
    }
}

/// Reads the header ourselves, so that `alg: "none"` and other algorithms
/// (which `jsonwebtoken` may not even parse) are named as such, and `crit`
/// is refused.
fn read_header(token: &str) -> Result<Header, AuthError> {
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthError::Malformed);
    };
    let json = base64url_decode(header).ok_or(AuthError::Malformed)?;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&json).map_err(|_| AuthError::Malformed)?;
    if header.contains_key("crit") {
        return Err(AuthError::Malformed);
    }
    let alg = match header.get("alg") {
        Some(serde_json::Value::String(alg)) => alg.clone(),
        _ => return Err(AuthError::Malformed),
    };
    let kid = match header.get("kid") {
        None => None,
        Some(serde_json::Value::String(kid)) => Some(kid.clone()),
        Some(_) => return Err(AuthError::Malformed),
    };
    Ok(Header { alg, kid })
}

fn algorithm_name(algorithm: Algorithm) -> &'static str {
    match algorithm {
        Algorithm::HS256 => "HS256",
        Algorithm::RS256 => "RS256",
        Algorithm::ES256 => "ES256",
        Algorithm::EdDSA => "EdDSA",
        // The constructors and the JWKS make only the four above.
        _ => "unsupported",
    }
}

fn bad_key(algorithm: &'static str, source: jsonwebtoken::errors::Error) -> KeyError {
    KeyError::Unusable { algorithm, source }
}

fn read_key(path: &Path) -> Result<Vec<u8>, KeyError> {
    std::fs::read(path).map_err(|source| KeyError::Read {
        path: path.to_owned(),
        source: Arc::new(source),
    })
}

/// Bits of a big-endian unsigned integer, leading zeros not counted.
fn significant_bits(be: &[u8]) -> usize {
    match be.iter().position(|&b| b != 0) {
        None => 0,
        Some(i) => (be.len() - i) * 8 - be[i].leading_zeros() as usize,
    }
}

/// The JWT NumericDate `value` of `claim` as whole seconds, rounded with
/// `round` (down for `exp`, up for `nbf`: the stricter way in both cases);
/// [`AuthError::InvalidTime`] outside 0 ..= [`MAX_NUMERIC_DATE`].
fn seconds(claim: &'static str, value: f64, round: fn(f64) -> f64) -> Result<u64, AuthError> {
    // Written so that NaN fails too; `MAX_NUMERIC_DATE` is exact in an f64.
    if value >= 0.0 && value <= MAX_NUMERIC_DATE as f64 {
        // Rounding a value in range to a whole second keeps it in range (the
        // bounds are whole), so the conversion is exact.
        Ok(round(value) as u64)
    } else {
        Err(AuthError::InvalidTime(claim))
    }
}

fn map_error(error: jsonwebtoken::errors::Error, algorithm: &'static str) -> AuthError {
    match error.kind() {
        ErrorKind::InvalidSignature => AuthError::BadSignature,
        ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => AuthError::WrongAlgorithm,
        ErrorKind::InvalidAudience => AuthError::WrongAudience,
        ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
        ErrorKind::MissingRequiredClaim(claim) if claim == "aud" => AuthError::WrongAudience,
        ErrorKind::MissingRequiredClaim(claim) if claim == "iss" => AuthError::WrongIssuer,
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        ErrorKind::InvalidEcdsaKey | ErrorKind::InvalidRsaKey(_) | ErrorKind::InvalidKeyFormat => {
            AuthError::BadKey(KeyError::Unusable {
                algorithm,
                source: error,
            })
        }
        _ => AuthError::Malformed,
    }
}

/// Decodes unpadded base64url (RFC 4648 §5), as JWTs use. `None` on any
/// character outside the alphabet, on padding, on an impossible length, or
/// on non-zero bits after the last byte (as `jsonwebtoken` decodes the same
/// parts, with the same engine).
fn base64url_decode(text: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(text).ok()
}

/// The token of an upgrade request: the `Authorization: Bearer` header (the
/// scheme in any case), else the `token` parameter of the query string
/// (without its `?`; percent-decoded, `+` as space). `None` if neither holds
/// a non-empty token.
///
/// The protocol gives a token in the `connect` command precedence over both;
/// that is the caller's business.
pub(crate) fn token_from_request(headers: &http::HeaderMap, query: Option<&str>) -> Option<String> {
    for value in headers.get_all(http::header::AUTHORIZATION) {
        let Ok(value) = value.to_str() else { continue };
        let value = value.trim();
        let Some((scheme, token)) = value.split_once([' ', '\t']) else {
            continue;
        };
        let token = token.trim();
        if scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() {
            return Some(token.to_owned());
        }
    }
    let query = query?;
    let query = query.strip_prefix('?').unwrap_or(query);
    query.split('&').find_map(|pair| {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if percent_decode(name).as_deref() != Some("token") {
            return None;
        }
        percent_decode(value).filter(|token| !token.is_empty())
    })
}

/// Decodes `application/x-www-form-urlencoded` text: `%XX` escapes and `+`
/// for space; a `%` not followed by two hex digits stays as it is. `None` if
/// the result is not UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    // A `+` written as `%2B` is a plus, so spaces are put back first.
    let text = text.replace('+', " ");
    percent_encoding::percent_decode_str(&text)
        .decode_utf8()
        .ok()
        .map(std::borrow::Cow::into_owned)
}
