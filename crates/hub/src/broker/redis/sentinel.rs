//! Redis behind Sentinel: `redis+sentinel://` URLs (`rediss+sentinel://`
//! for TLS), asking the sentinels which node is the primary, and watching
//! them for a failover.
//!
//! A node asks the sentinels of its URL in turn (starting with the one that
//! answered last) `SENTINEL get-master-addr-by-name NAME`, and connects to
//! the address the first one that knows `NAME` gives, with the URL's
//! credentials, database and TLS setting. Invariants:
//!
//! - **Every connect resolves again.** The link asks the sentinels on every
//!   (re)connect, so a node never returns to a primary the sentinels have
//!   replaced; there is no cached address.
//! - **Only a primary is served.** After connecting, the link checks `ROLE`
//!   (a sentinel may still name a demoted primary for a moment): a replica
//!   ends the connection, and the node asks again after its backoff.
//! - **A failover ends the link.** The link subscribes to `+switch-master`
//!   on the sentinel that answered; a switch of `NAME` ends the connection
//!   (and so does a command answered `READONLY`, or a lost connection),
//!   which makes the node resolve again, reconnect, and catch up as after
//!   any reconnect: a failover changes Redis's `run_id`, so every channel
//!   starts a new epoch and subscribers are told of a gap (parent module,
//!   *Lost writes*). Losing the sentinel's watch alone does not end the
//!   link (the other signals remain).
//!
//! The URL's user and password are for the Redis nodes; the sentinels are
//! asked without credentials (over TLS with `rediss+sentinel://`, verified
//! like the primary: `redis_ca` or the system's roots, against the host the
//! sentinel gives).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use redis::{AsyncConnectionConfig, Value};

use super::open::{RedisSetupError, open_client};

/// The default port of a sentinel.
const SENTINEL_PORT: u16 = 26379;

/// The channel on which sentinels announce a new primary.
pub(super) const SWITCH_MASTER: &str = "+switch-master";

/// Why a `redis+sentinel://` URL cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SentinelUrlError {
    /// No `HOST:PORT` before the path.
    #[error(
        "redis URL {0}: name at least one sentinel, as in \
         redis+sentinel://10.0.0.1:26379,10.0.0.2:26379/mymaster"
    )]
    NoSentinel(String),
    /// A sentinel address that is not `HOST[:PORT]`.
    #[error("redis URL {url}: `{address}` is not a sentinel address (HOST:PORT, or [IPv6]:PORT)")]
    BadAddress {
        /// The URL, without its password.
        url: String,
        /// The address as written.
        address: String,
    },
    /// No primary name after the sentinels.
    #[error(
        "redis URL {0}: the path must be the name the sentinels monitor the primary \
         under, as in redis+sentinel://10.0.0.1:26379/mymaster"
    )]
    NoName(String),
    /// A query parameter other than `db`, or a `db` that is not a number.
    #[error("redis URL {url}: `{parameter}` is not understood (only ?db=NUMBER is)")]
    BadParameter {
        /// The URL, without its password.
        url: String,
        /// The parameter as written.
        parameter: String,
    },
}

/// A parsed `redis+sentinel://` or `rediss+sentinel://` URL.
#[derive(Clone, PartialEq, Eq)]
pub(super) struct SentinelUrl {
    /// TLS to the sentinels and to the primary.
    pub(super) tls: bool,
    /// `user:password` or `:password`, as written (percent-encoded).
    userinfo: Option<String>,
    /// The sentinels, `HOST:PORT` (IPv6 hosts in brackets).
    pub(super) sentinels: Vec<String>,
    /// The name the sentinels monitor the primary under.
    pub(super) name: String,
    /// The database number.
    db: Option<u32>,
}

impl fmt::Debug for SentinelUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SentinelUrl")
            .field("tls", &self.tls)
            .field("sentinels", &self.sentinels)
            .field("name", &self.name)
            .field("db", &self.db)
            .finish_non_exhaustive()
    }
}

impl SentinelUrl {
    /// Parses `url` if its scheme is `redis+sentinel` or `rediss+sentinel`
    /// (any case); `Ok(None)` for other schemes.
    pub(super) fn parse(url: &str) -> Result<Option<Self>, SentinelUrlError> {
        let Some((scheme, rest)) = url.split_once("://") else {
            return Ok(None);
        };
        let tls = if scheme.eq_ignore_ascii_case("redis+sentinel") {
            false
        } else if scheme.eq_ignore_ascii_case("rediss+sentinel") {
            true
        } else {
            return Ok(None);
        };
        let shown = super::open::redacted(url);
        let (rest, query) = match rest.split_once('?') {
            Some((rest, query)) => (rest, Some(query)),
            None => (rest, None),
        };
        let (authority, path) = match rest.split_once('/') {
            Some((authority, path)) => (authority, path),
            None => (rest, ""),
        };
        let (userinfo, hosts) = match authority.rsplit_once('@') {
            Some((userinfo, hosts)) => (Some(userinfo.to_owned()), hosts),
            None => (None, authority),
        };
        let mut sentinels = Vec::new();
        for address in hosts.split(',').filter(|a| !a.is_empty()) {
            sentinels.push(sentinel_address(address).ok_or_else(|| {
                SentinelUrlError::BadAddress {
                    url: shown.clone(),
                    address: address.to_owned(),
                }
            })?);
        }
        if sentinels.is_empty() {
            return Err(SentinelUrlError::NoSentinel(shown));
        }
        let name = path.trim_end_matches('/');
        if name.is_empty() || name.contains('/') {
            return Err(SentinelUrlError::NoName(shown));
        }
        let mut db = None;
        for parameter in query.into_iter().flat_map(|q| q.split('&')) {
            match parameter.split_once('=') {
                Some(("db", number)) if number.parse::<u32>().is_ok() => {
                    db = number.parse().ok();
                }
                _ => {
                    return Err(SentinelUrlError::BadParameter {
                        url: shown,
                        parameter: parameter.to_owned(),
                    });
                }
            }
        }
        Ok(Some(Self {
            tls,
            userinfo,
            sentinels,
            name: name.to_owned(),
            db,
        }))
    }

    fn scheme(&self) -> &'static str {
        if self.tls { "rediss" } else { "redis" }
    }

    /// The URL of the sentinel `address` (no credentials, no database).
    fn sentinel_url(&self, address: &str) -> String {
        format!("{}://{address}", self.scheme())
    }

    /// The URL of the primary at `host`:`port`, with the credentials and
    /// database of this URL.
    fn primary_url(&self, host: &str, port: u16) -> String {
        let host = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]")
        } else {
            host.to_owned()
        };
        let userinfo = self
            .userinfo
            .as_ref()
            .map_or_else(String::new, |u| format!("{u}@"));
        let db = self.db.map_or_else(String::new, |db| format!("/{db}"));
        format!("{}://{userinfo}{host}:{port}{db}", self.scheme())
    }
}

/// `HOST[:PORT]` or `[IPv6][:PORT]` as `HOST:PORT` (a sentinel's port by
/// default).
fn sentinel_address(address: &str) -> Option<String> {
    host_port(address, SENTINEL_PORT)
}

/// `HOST[:PORT]` or `[IPv6][:PORT]` as `HOST:PORT`, `default` the port.
pub(super) fn host_port(address: &str, default: u16) -> Option<String> {
    let (host, port) = if let Some(rest) = address.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after {
            "" => None,
            after => Some(after.strip_prefix(':')?),
        };
        (format!("[{host}]"), port)
    } else {
        match address.split_once(':') {
            Some((host, port)) => (host.to_owned(), Some(port)),
            None => (address.to_owned(), None),
        }
    };
    let port = match port {
        Some(port) => port.parse::<u16>().ok().filter(|&p| p != 0)?,
        None => default,
    };
    let valid = host.len() > 2 || (!host.is_empty() && !host.starts_with('['));
    valid.then(|| format!("{host}:{port}"))
}

/// Finds the primary through the sentinels of a URL.
pub(super) struct Sentinels {
    url: SentinelUrl,
    ca: Option<PathBuf>,
    /// The sentinel to ask first: the one that answered last.
    first: AtomicUsize,
}

/// The primary the sentinels named, and the sentinel that named it.
pub(super) struct Resolved {
    /// A client of the primary.
    pub(super) primary: redis::Client,
    /// Its address as the sentinel gave it, for logs.
    pub(super) address: String,
    /// A client of the sentinel that answered (to watch for a failover).
    pub(super) sentinel: redis::Client,
}

impl Sentinels {
    /// Checks that every sentinel's URL (and a primary's) opens with `ca`.
    pub(super) fn new(url: SentinelUrl, ca: Option<&Path>) -> Result<Self, RedisSetupError> {
        for address in &url.sentinels {
            open_client(&url.sentinel_url(address), ca)?;
        }
        open_client(&url.primary_url("127.0.0.1", 6379), ca)?;
        Ok(Self {
            url,
            ca: ca.map(Path::to_path_buf),
            first: AtomicUsize::new(0),
        })
    }

    /// The name the primary is monitored under.
    pub(super) fn name(&self) -> &str {
        &self.url.name
    }

    /// Asks the sentinels, in turn, where the primary is; each within
    /// `timeout`. The error names what each sentinel answered.
    pub(super) async fn resolve(&self, timeout: Duration) -> Result<Resolved, String> {
        let count = self.url.sentinels.len();
        let first = self.first.load(Ordering::Relaxed) % count;
        let mut failures = Vec::new();
        for i in 0..count {
            let at = (first + i) % count;
            let address = &self.url.sentinels[at];
            match self.ask(address, timeout).await {
                Ok((host, port)) => {
                    self.first.store(at, Ordering::Relaxed);
                    let ca = self.ca.as_deref();
                    let primary = open_client(&self.url.primary_url(&host, port), ca)
                        .map_err(|e| e.to_string())?;
                    let sentinel = open_client(&self.url.sentinel_url(address), ca)
                        .map_err(|e| e.to_string())?;
                    return Ok(Resolved {
                        primary,
                        address: format!("{host}:{port}"),
                        sentinel,
                    });
                }
                Err(why) => failures.push(format!("{address}: {why}")),
            }
        }
        Err(format!(
            "no sentinel named the primary `{}`: {}",
            self.url.name,
            failures.join("; ")
        ))
    }

    /// One sentinel's answer: the primary's host and port.
    async fn ask(&self, address: &str, timeout: Duration) -> Result<(String, u16), String> {
        let client = open_client(&self.url.sentinel_url(address), self.ca.as_deref())
            .map_err(|e| e.to_string())?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout));
        let query = async {
            let mut conn = client
                .get_multiplexed_async_connection_with_config(&config)
                .await
                .map_err(|e| super::open::connect_error(&e))?;
            redis::cmd("SENTINEL")
                .arg("get-master-addr-by-name")
                .arg(&self.url.name)
                .query_async::<Value>(&mut conn)
                .await
                .map_err(|e| e.to_string())
        };
        let reply = tokio::time::timeout(timeout, query)
            .await
            .map_err(|_| "timed out".to_owned())??;
        parse_master_addr(&reply).ok_or_else(|| match reply {
            Value::Nil => format!("does not monitor a primary named `{}`", self.url.name),
            other => format!("unexpected answer {other:?}"),
        })
    }
}

/// `[host, port]`, the answer to `SENTINEL get-master-addr-by-name`.
fn parse_master_addr(reply: &Value) -> Option<(String, u16)> {
    let Value::Array(items) = reply else {
        return None;
    };
    let [host, port] = items.as_slice() else {
        return None;
    };
    let host = super::bytes(host)?;
    let host = std::str::from_utf8(host).ok()?.to_owned();
    let port = u16::try_from(super::int(port)?).ok()?;
    Some((host, port))
}

/// Whether a `+switch-master` announcement (`NAME OLD-HOST OLD-PORT
/// NEW-HOST NEW-PORT`) is about the primary `name`.
pub(super) fn is_switch_of(payload: &[u8], name: &str) -> bool {
    payload
        .split(|&b| b == b' ')
        .next()
        .is_some_and(|first| first == name.as_bytes())
}

/// Whether `reply`, the answer to `ROLE`, is a primary's.
pub(super) fn is_primary_role(reply: &Value) -> bool {
    match reply {
        Value::Array(items) => items
            .first()
            .and_then(super::bytes)
            .is_some_and(|role| role == b"master"),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: &str) -> SentinelUrl {
        SentinelUrl::parse(url)
            .expect("valid")
            .expect("a sentinel URL")
    }

    #[test]
    fn sentinel_urls_parse() {
        let url = parse("redis+sentinel://10.0.0.1:26380,10.0.0.2,[::1]:5000/mymaster");
        assert!(!url.tls);
        assert_eq!(
            url.sentinels,
            ["10.0.0.1:26380", "10.0.0.2:26379", "[::1]:5000"]
        );
        assert_eq!(url.name, "mymaster");
        assert_eq!(
            url.primary_url("10.0.0.9", 6379),
            "redis://10.0.0.9:6379",
            "no credentials, no db"
        );
        assert_eq!(url.primary_url("::1", 7000), "redis://[::1]:7000");
        let url = parse("REDISS+SENTINEL://app:p%40ss@s1:1,s2:2/main?db=3");
        assert!(url.tls);
        assert_eq!(url.primary_url("h", 7), "rediss://app:p%40ss@h:7/3");
        assert_eq!(url.sentinel_url("s1:1"), "rediss://s1:1");
        assert!(!format!("{url:?}").contains("p%40ss"));
        assert_eq!(SentinelUrl::parse("redis://h:1").unwrap(), None);
        assert_eq!(SentinelUrl::parse("not a url").unwrap(), None);
    }

    #[test]
    fn bad_sentinel_urls_are_sentences_without_the_password() {
        let cases = [
            ("redis+sentinel:///mymaster", "name at least one sentinel"),
            (
                "redis+sentinel://:pw@/mymaster",
                "name at least one sentinel",
            ),
            ("redis+sentinel://h:x/mymaster", "is not a sentinel address"),
            ("redis+sentinel://h:0/mymaster", "is not a sentinel address"),
            (
                "redis+sentinel://[::1/mymaster",
                "is not a sentinel address",
            ),
            ("redis+sentinel://:pw@h:1", "the path must be the name"),
            ("redis+sentinel://h:1/a/b", "the path must be the name"),
            (
                "redis+sentinel://:pw@h:1/m?db=x",
                "`db=x` is not understood",
            ),
            ("redis+sentinel://h:1/m?tls=1", "`tls=1` is not understood"),
        ];
        for (url, expected) in cases {
            let error = SentinelUrl::parse(url).expect_err(url).to_string();
            assert!(error.contains(expected), "{url}: {error}");
            assert!(
                error.starts_with("redis URL \"redis+sentinel://"),
                "{error}"
            );
            assert!(!error.contains("pw"), "{error}");
        }
    }

    #[test]
    fn sentinel_replies_parse() {
        let reply = Value::Array(vec![
            Value::BulkString(b"127.0.0.1".to_vec()),
            Value::BulkString(b"6380".to_vec()),
        ]);
        assert_eq!(
            parse_master_addr(&reply),
            Some(("127.0.0.1".to_owned(), 6380))
        );
        assert_eq!(parse_master_addr(&Value::Nil), None);
        assert!(is_switch_of(
            b"mymaster 127.0.0.1 1 127.0.0.1 2",
            "mymaster"
        ));
        assert!(!is_switch_of(
            b"mymaster2 127.0.0.1 1 127.0.0.1 2",
            "mymaster"
        ));
        let role = |r: &str| Value::Array(vec![Value::BulkString(r.as_bytes().to_vec())]);
        assert!(is_primary_role(&role("master")));
        assert!(!is_primary_role(&role("slave")));
        assert!(!is_primary_role(&Value::Nil));
    }
}
