//! Opening the Redis client: `redis://` or `rediss://` URLs, the operator's
//! CA for TLS, errors that point at the setting to fix, and URLs printed
//! without their password.

use std::path::PathBuf;

use super::cluster::ClusterUrlError;
use super::sentinel::SentinelUrlError;
use super::*;

/// Why the Redis broker cannot be set up: each says what to fix, and shows
/// URLs without their password.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedisSetupError {
    /// A Redis node was asked for, with no Redis URL in the configuration.
    #[error("no Redis URL configured")]
    NoUrl,
    /// A scheme the hub does not speak.
    #[error(
        "redis URL {url}: the scheme must be redis://, rediss:// (TLS), \
         redis+sentinel://, rediss+sentinel://, redis+cluster:// or rediss+cluster://"
    )]
    Scheme {
        /// The URL, without its password.
        url: String,
    },
    /// The URL does not parse.
    #[error(
        "redis URL {url} is not valid: {what}; expected \
         redis://[USER:PASSWORD@]HOST[:PORT][/DB]"
    )]
    Invalid {
        /// The URL, without its password.
        url: String,
        /// What is wrong, in words.
        what: String,
        /// What redis-rs said.
        #[source]
        source: RedisError,
    },
    /// A `redis+sentinel://` URL that cannot be used.
    #[error(transparent)]
    Sentinel(#[from] SentinelUrlError),
    /// A `redis+cluster://` URL that cannot be used.
    #[error(transparent)]
    ClusterUrl(#[from] ClusterUrlError),
    /// A CA file given for a URL that is not `rediss://`.
    #[error("redis CA {}: set, but the redis URL {url} is not rediss:// (TLS)", ca.display())]
    CaWithoutTls {
        /// The CA file.
        ca: PathBuf,
        /// The URL, without its password.
        url: String,
    },
    /// `#insecure`: no certificate verification.
    #[error(
        "redis URL {url}: `#insecure` (no certificate verification) is not supported; \
         give the CA that signed Redis's certificate (redis_ca, --redis-ca)"
    )]
    Insecure {
        /// The URL, without its password.
        url: String,
    },
    /// The CA file cannot be read.
    #[error("redis CA file {}: {source}", path.display())]
    CaUnreadable {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The CA file holds something that is not valid PEM.
    #[error("redis CA file {}: bad PEM: {source}", path.display())]
    CaNotPem {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: duplex::tls::rustls::pki_types::pem::Error,
    },
    /// The CA file holds no certificate.
    #[error("redis CA file {}: no PEM certificate in it", path.display())]
    CaEmpty {
        /// The file.
        path: PathBuf,
    },
    /// redis-rs refused the client (its TLS set-up, say).
    #[error("redis URL {url}: {source}")]
    Client {
        /// The URL, without its password.
        url: String,
        /// What redis-rs said.
        #[source]
        source: RedisError,
    },
    /// The broker was started outside a tokio runtime.
    #[error("the Redis broker needs a tokio runtime")]
    NoRuntime,
}

/// The client for `url`. A `rediss://` URL verifies Redis's certificate
/// (and its name: the URL's host) against the PEM certificates of `ca` if
/// given, else against the system's roots; `ca` needs a `rediss://` URL.
pub(super) fn open_client(url: &str, ca: Option<&Path>) -> Result<redis::Client, RedisSetupError> {
    let shown = redacted(url);
    check_scheme(url, &shown)?;
    let info = url.into_connection_info().map_err(|source| {
        // redis-rs says "WHAT - InvalidClientConfig[: DETAIL]": keep WHAT
        // and DETAIL, in a sentence.
        let text = source.to_string();
        let what = text.split(" - ").next().unwrap_or(&text).to_lowercase();
        let detail = source
            .detail()
            .map_or_else(String::new, |d| format!(" ({d})"));
        RedisSetupError::Invalid {
            url: shown.clone(),
            what: format!("{what}{detail}"),
            source,
        }
    })?;
    let insecure = match info.addr() {
        ConnectionAddr::TcpTls { insecure, .. } => Some(*insecure),
        _ => None,
    };
    let client = |source| RedisSetupError::Client {
        url: shown.clone(),
        source,
    };
    match (insecure, ca) {
        (None, None) => redis::Client::open(info).map_err(client),
        (None, Some(ca)) => Err(RedisSetupError::CaWithoutTls {
            ca: ca.to_path_buf(),
            url: shown.clone(),
        }),
        (Some(true), _) => Err(RedisSetupError::Insecure { url: shown.clone() }),
        (Some(false), ca) => {
            // redis-rs builds its rustls configs with the process-wide
            // provider: make it the one the rest of the stack uses.
            if CryptoProvider::get_default().is_none() {
                let _ = duplex::tls::rustls::crypto::ring::default_provider().install_default();
            }
            let root_cert = ca.map(read_ca).transpose()?;
            let certificates = TlsCertificates {
                client_tls: None,
                root_cert,
            };
            redis::Client::build_with_tls(info, certificates).map_err(client)
        }
    }
}

/// Refuses, in a sentence, the schemes the hub does not speak.
fn check_scheme(url: &str, shown: &str) -> Result<(), RedisSetupError> {
    let scheme = url.split_once("://").map_or("", |(scheme, _)| scheme);
    let scheme = scheme.to_ascii_lowercase();
    let url = shown.to_owned();
    match scheme.as_str() {
        "redis" | "rediss" | "redis+unix" | "unix" => Ok(()),
        _ => Err(RedisSetupError::Scheme { url }),
    }
}

/// Why a connection to Redis failed, in words an operator can act on: a
/// TLS failure says so, and a certificate Redis sent that does not verify
/// points at `redis_ca`.
pub(super) fn connect_error(error: &RedisError) -> String {
    match tls_failure(error) {
        Some(tls @ duplex::tls::rustls::Error::InvalidCertificate(_)) => format!(
            "TLS to redis failed: {tls} (redis_ca / --redis-ca must hold the CA that signed \
             Redis's certificate, and the certificate must name the URL's host)"
        ),
        Some(tls) => format!("TLS to redis failed: {tls}"),
        None => error.to_string(),
    }
}

/// The rustls error behind `error`, if TLS is what failed.
pub(super) fn tls_failure(error: &RedisError) -> Option<&duplex::tls::rustls::Error> {
    type Shared = Arc<dyn std::error::Error + Send + Sync>;
    let mut source = std::error::Error::source(error);
    while let Some(mut error) = source {
        // redis-rs keeps I/O errors in an `Arc`, which is its source.
        if let Some(shared) = error.downcast_ref::<Shared>() {
            error = shared.as_ref();
        }
        if let Some(tls) = error.downcast_ref::<duplex::tls::rustls::Error>() {
            return Some(tls);
        }
        if let Some(tls) = error
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
            .and_then(|inner| inner.downcast_ref::<duplex::tls::rustls::Error>())
        {
            return Some(tls);
        }
        source = error.source();
    }
    None
}

/// The PEM file `path`, checked to hold at least one certificate, all valid
/// PEM.
pub(super) fn read_ca(path: &Path) -> Result<Vec<u8>, RedisSetupError> {
    let pem = std::fs::read(path).map_err(|source| RedisSetupError::CaUnreadable {
        path: path.to_path_buf(),
        source,
    })?;
    let mut count = 0;
    for certificate in CertificateDer::pem_slice_iter(&pem) {
        certificate.map_err(|source| RedisSetupError::CaNotPem {
            path: path.to_path_buf(),
            source,
        })?;
        count += 1;
    }
    if count == 0 {
        return Err(RedisSetupError::CaEmpty {
            path: path.to_path_buf(),
        });
    }
    Ok(pem)
}

/// `url` without its password, for messages.
pub(super) fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return format!("{url:?}");
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
            format!("\"{scheme}://{user}:***@{host}{path}\"")
        }
        None => format!("{url:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_urls_open_as_before_and_tls_options_are_checked() {
        let client = open_client("redis://127.0.0.1:6379/2", None).expect("plain");
        assert!(matches!(
            client.get_connection_info().addr(),
            ConnectionAddr::Tcp(host, 6379) if host == "127.0.0.1"
        ));
        let client = open_client("rediss://localhost:6380", None).expect("TLS, system roots");
        assert!(matches!(
            client.get_connection_info().addr(),
            ConnectionAddr::TcpTls { port: 6380, .. }
        ));
        let error = open_client("redis://127.0.0.1:6379", Some(Path::new("/x/ca.pem")))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("rediss://") && error.contains("/x/ca.pem"),
            "{error}"
        );
        let error = open_client("rediss://localhost:6380/#insecure", None)
            .unwrap_err()
            .to_string();
        assert!(error.contains("#insecure"), "{error}");
        let error = open_client("nope://x", None).unwrap_err().to_string();
        assert!(
            error.starts_with("redis URL") && error.contains("the scheme must be"),
            "{error}"
        );
    }

    #[test]
    fn setup_errors_keep_their_kind_and_cause() {
        use std::error::Error as _;
        assert!(matches!(
            open_client("nope://x", None),
            Err(RedisSetupError::Scheme { .. })
        ));
        let cluster = RedisSetupError::from(
            super::super::cluster::ClusterUrl::parse("redis+cluster://:pw@").unwrap_err(),
        );
        assert!(
            matches!(cluster, RedisSetupError::ClusterUrl(_)),
            "{cluster:?}"
        );
        assert!(
            cluster.to_string().contains("name at least one node"),
            "{cluster}"
        );
        let invalid = open_client("redis://:99999999", None).unwrap_err();
        assert!(
            matches!(invalid, RedisSetupError::Invalid { .. }),
            "{invalid:?}"
        );
        assert!(invalid.source().is_some(), "redis-rs's error is kept");
        let missing =
            open_client("rediss://h:1", Some(Path::new("/nonexistent/ca.pem"))).unwrap_err();
        let RedisSetupError::CaUnreadable { source, .. } = &missing else {
            panic!("{missing:?}")
        };
        assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        let hub = crate::HubError::from(missing);
        assert!(hub.source().is_some(), "HubError keeps the cause: {hub}");
    }

    #[test]
    fn bad_urls_are_told_in_sentences() {
        let cases = [
            ("redis://", "is not valid: missing hostname"),
            ("redis://h:x", "is not valid: redis url did not parse"),
            ("redis://h:1/x", "is not valid: invalid database number"),
            ("http://h:1", "the scheme must be redis://"),
        ];
        for (url, expected) in cases {
            let error = open_client(url, None).unwrap_err().to_string();
            assert!(error.contains(expected), "{url}: {error}");
            assert!(!error.contains("InvalidClientConfig"), "{url}: {error}");
        }
    }

    #[test]
    fn unusable_ca_files_are_refused_with_their_name() {
        let dir = std::env::temp_dir().join(format!("duplex-redis-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("missing.pem");
        let error = open_client("rediss://localhost:6380", Some(&missing))
            .unwrap_err()
            .to_string();
        assert!(error.contains(&missing.display().to_string()), "{error}");
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "no certificate here\n").unwrap();
        let error = open_client("rediss://localhost:6380", Some(&empty))
            .unwrap_err()
            .to_string();
        assert!(error.contains("no PEM certificate"), "{error}");
        let broken = dir.join("broken.pem");
        std::fs::write(
            &broken,
            "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let error = open_client("rediss://localhost:6380", Some(&broken))
            .unwrap_err()
            .to_string();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(error.contains("bad PEM"), "{error}");
    }

    #[test]
    fn certificate_failures_point_at_redis_ca() {
        use duplex::tls::rustls::{CertificateError, Error as TlsError};
        let io = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            TlsError::InvalidCertificate(CertificateError::UnknownIssuer),
        );
        let message = connect_error(&RedisError::from(io));
        assert!(
            message.starts_with("TLS to redis failed: ")
                && message.contains("UnknownIssuer")
                && message.contains("redis_ca"),
            "{message}"
        );
        let io = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            TlsError::NoCertificatesPresented,
        );
        let message = connect_error(&RedisError::from(io));
        assert!(message.starts_with("TLS to redis failed: "), "{message}");
        assert!(!message.contains("redis_ca"), "{message}");
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let message = connect_error(&RedisError::from(refused));
        assert!(!message.contains("TLS"), "{message}");
    }

    #[test]
    fn passwords_stay_out_of_messages() {
        let shown = redacted("rediss://:s3cret@redis.internal:6380/0");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("redis.internal:6380/0"), "{shown}");
        let shown = redacted("redis://app:pw@h:1");
        assert!(
            !shown.contains("pw") && shown.contains("app:***@h:1"),
            "{shown}"
        );
        assert_eq!(redacted("redis://h:1"), "\"redis://h:1\"");
        let error = open_client("rediss://:s3cret@localhost:6380/#insecure", None)
            .unwrap_err()
            .to_string();
        assert!(!error.contains("s3cret"), "{error}");
    }
}
