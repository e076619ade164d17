//! `duplex token --sub alice --channels 'chat:*' --ttl 1h`: signs a
//! development token with the hub's HS256 secret, so that trying auth
//! takes no JWT signer of one's own.
//!
//! The secret comes from, in increasing precedence: `[auth] hs256_secret`
//! in the file `--config` (or `DUPLEX_CONFIG`) names, `DUPLEX_JWT_SECRET`,
//! `--jwt-secret` — the places `duplex serve` reads it from. The token
//! carries what the hub reads (`crates/hub/src/auth.rs`): `sub`, `exp`,
//! `iat`, the grants `channels` (all three actions), `subscribe`,
//! `publish`, `presence`, `channel` for a subscription token (`--channel`),
//! and `aud`/`iss` when the configuration requires them. It is printed on standard output, alone on its line.
//!
//! Invariants: a hub that verifies RS256 or ES256 holds only a public key,
//! so this command refuses it (tokens come from the identity provider's
//! private key); an empty secret is refused; the token expires (`--ttl`,
//! 1 hour by default, at most a year).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use duplex_hub::HubConfig;
use duplex_hub::config::ConfigError;
use jsonwebtoken::{EncodingKey, Header};

/// The longest `--ttl`: a development token is not meant to live on.
const MAX_TTL: Duration = Duration::from_secs(366 * 24 * 3600);

/// Options of `duplex token`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Example: duplex token --jwt-secret \"$SECRET\" --sub alice \
--channels 'chat:*' --ttl 1h, then connect with {\"op\":\"connect\",\"token\":\"…\"} or \
Authorization: Bearer … (docs/operations.md, \"Authentication\")."
)]
pub(crate) struct TokenArgs {
    /// The hub's TOML configuration file: its `[auth]` holds the secret,
    /// the audience and the issuer.
    #[arg(long, short, env = "DUPLEX_CONFIG")]
    config: Option<PathBuf>,
    /// The HS256 secret (overrides the file's).
    #[arg(long, env = "DUPLEX_JWT_SECRET", hide_env_values = true)]
    jwt_secret: Option<String>,
    /// The user (`sub`).
    #[arg(long)]
    sub: String,
    /// Channel patterns granted for every action: subscribe, publish,
    /// presence (`chat:*`, `room:42`; repeat it or separate with commas).
    #[arg(long, value_name = "PATTERN", value_delimiter = ',')]
    channels: Vec<String>,
    /// Channel patterns granted for subscribe only.
    #[arg(long, value_name = "PATTERN", value_delimiter = ',')]
    subscribe: Vec<String>,
    /// Channel patterns granted for publish only.
    #[arg(long, value_name = "PATTERN", value_delimiter = ',')]
    publish: Vec<String>,
    /// Channel patterns granted for presence only.
    #[arg(long, value_name = "PATTERN", value_delimiter = ',')]
    presence: Vec<String>,
    /// How long the token is valid: `90s`, `30m`, `1h`, `7d` (at most a
    /// year).
    #[arg(long, default_value = "1h", value_parser = parse_ttl)]
    ttl: Duration,
    /// Makes it a subscription token for this channel (the `channel`
    /// claim), which a namespace with `subscribe = "token"` requires in the
    /// `subscribe` command.
    #[arg(long, value_name = "CHANNEL")]
    channel: Option<String>,
}

/// Why no token was signed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum TokenError {
    /// The configuration file could not be read or is not valid.
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// Neither `--jwt-secret`, `DUPLEX_JWT_SECRET` nor the file's `[auth]
    /// hs256_secret` gives a secret.
    #[error(
        "no HS256 secret: pass --jwt-secret (or DUPLEX_JWT_SECRET), or --config with \
         [auth] hs256_secret, the secret `duplex serve` verifies tokens with"
    )]
    NoSecret,
    /// The hub verifies RS256 or ES256: only the identity provider's private
    /// key can sign its tokens.
    #[error(
        "the configuration verifies {0} tokens with a public key: sign them with the matching \
         private key (this command signs HS256 only)"
    )]
    PublicKeyOnly(&'static str),
    /// The secret is empty.
    #[error("the HS256 secret is empty")]
    EmptySecret,
    /// The token could not be encoded.
    #[error("cannot sign the token: {0}")]
    Sign(#[source] jsonwebtoken::errors::Error),
}

/// `--ttl`: a humantime duration, from 1 second to a year.
fn parse_ttl(text: &str) -> Result<Duration, String> {
    let ttl = humantime::parse_duration(text)
        .map_err(|e| format!("{e} (expected a duration such as 90s, 30m, 1h or 7d)"))?;
    if ttl < Duration::from_secs(1) || ttl > MAX_TTL {
        return Err(format!("{text}: expected from 1s to 366d"));
    }
    Ok(ttl)
}

pub(crate) fn run(args: TokenArgs) -> anyhow::Result<ExitCode> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    println!("{}", sign(&args, now)?);
    Ok(ExitCode::SUCCESS)
}

/// The token `args` describe, issued at `now` (Unix seconds).
fn sign(args: &TokenArgs, now: u64) -> Result<String, TokenError> {
    let config = match &args.config {
        Some(path) => HubConfig::from_toml_file(path)?,
        None => HubConfig::default(),
    };
    let auth = config.auth.unwrap_or_default();
    let secret = match (&args.jwt_secret, &auth.hs256_secret) {
        (Some(secret), _) | (None, Some(secret)) => secret.clone(),
        (None, None) if auth.rs256_public_key.is_some() => {
            return Err(TokenError::PublicKeyOnly("RS256"));
        }
        (None, None) if auth.es256_public_key.is_some() => {
            return Err(TokenError::PublicKeyOnly("ES256"));
        }
        (None, None) => return Err(TokenError::NoSecret),
    };
    if secret.is_empty() {
        return Err(TokenError::EmptySecret);
    }
    let mut claims = serde_json::json!({
        "sub": args.sub,
        "iat": now,
        "exp": now + args.ttl.as_secs(),
    });
    let object = claims.as_object_mut().expect("an object");
    for (name, patterns) in [
        ("channels", &args.channels),
        ("subscribe", &args.subscribe),
        ("publish", &args.publish),
        ("presence", &args.presence),
    ] {
        if !patterns.is_empty() {
            object.insert(name.into(), serde_json::json!(patterns));
        }
    }
    if let Some(channel) = &args.channel {
        object.insert("channel".into(), channel.as_str().into());
    }
    if let Some(audience) = auth.audience {
        object.insert("aud".into(), audience.into());
    }
    if let Some(issuer) = auth.issuer {
        object.insert("iss".into(), issuer.into());
    }
    jsonwebtoken::encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .map_err(TokenError::Sign)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        token: TokenArgs,
    }

    fn args(list: &[&str]) -> TokenArgs {
        Cli::try_parse_from(std::iter::once("token").chain(list.iter().copied()))
            .unwrap()
            .token
    }

    fn claims(token: &str) -> serde_json::Value {
        use base64::Engine as _;
        let payload = token.split('.').nth(1).unwrap();
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[test]
    fn a_subscription_token_names_its_channel() {
        let token = sign(
            &args(&[
                "--jwt-secret",
                "a-token-test-secret-of-32-bytes!",
                "--sub",
                "alice",
                "--channel",
                "vip:lounge",
            ]),
            1_795_000_000,
        )
        .unwrap();
        let read = claims(&token);
        assert_eq!(
            (read["sub"].as_str(), read["channel"].as_str()),
            (Some("alice"), Some("vip:lounge"))
        );
        let plain = sign(
            &args(&[
                "--jwt-secret",
                "a-token-test-secret-of-32-bytes!",
                "--sub",
                "a",
            ]),
            1_795_000_000,
        )
        .unwrap();
        assert!(claims(&plain).get("channel").is_none());
    }

    #[test]
    fn the_token_carries_the_claims_the_hub_reads() {
        let token = sign(
            &args(&[
                "--jwt-secret",
                "a-token-test-secret-of-32-bytes!",
                "--sub",
                "alice",
                "--channels",
                "chat:*,room:1",
                "--subscribe",
                "news:*",
                "--ttl",
                "30m",
            ]),
            1_000,
        )
        .unwrap();
        assert_eq!(
            claims(&token),
            serde_json::json!({
                "sub": "alice",
                "iat": 1_000,
                "exp": 2_800,
                "channels": ["chat:*", "room:1"],
                "subscribe": ["news:*"],
            })
        );
    }

    #[test]
    fn mistakes_say_what_to_change() {
        let error = sign(&args(&["--sub", "alice"]), 0).unwrap_err().to_string();
        assert!(error.contains("--jwt-secret"), "{error}");
        let parsed = Cli::try_parse_from(["token", "--sub", "a", "--ttl", "forever"]);
        let error = parsed.err().expect("refused").to_string();
        assert!(error.contains("30m"), "{error}");
        let parsed = Cli::try_parse_from(["token", "--sub", "a", "--ttl", "400d"]);
        assert!(parsed.is_err());
    }
}
