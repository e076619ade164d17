//! Which browser pages may open the hub's WebSockets: the `Origin` check of
//! every WebSocket endpoint (`/ws`, and `/echo` when it is on).
//!
//! Invariants:
//! - The request's `Host` plays no part. A page on `http://evil.example:P`
//!   whose name was rebound to the hub's address (DNS rebinding) sends `Host:
//!   evil.example:P` and `Origin: http://evil.example:P`, which match each
//!   other but nothing configured, so it is refused.
//! - Allowed are: a request without `Origin` (not a browser); an origin
//!   listed in `allowed_origins` (`"*"`: any); the origin of a configured
//!   public URL; a loopback origin (`127.0.0.0/8`, `[::1]`, `localhost`, over
//!   `http` or `https`) on the port the hub listens on. Browsers resolve
//!   `localhost` and loopback addresses themselves, so no remote page can
//!   have such an origin.
//! - Origins compare as browsers serialize them: scheme and host without
//!   regard to case, the scheme's default port (80, 443) made explicit.

use std::net::{IpAddr, Ipv4Addr};

/// An origin: scheme (`http` or `https`), host (lower case; an IPv6 address
/// in brackets) and port (the scheme's default when absent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SiteOrigin {
    scheme: &'static str,
    host: String,
    port: u16,
}

impl SiteOrigin {
    /// Parses an `Origin` header value (`scheme://host[:port]`, nothing
    /// after it). `None` for `null`, other schemes, or anything malformed.
    pub(crate) fn parse(origin: &str) -> Option<Self> {
        let (scheme, authority) = origin.split_once("://")?;
        if authority.is_empty() || authority.contains(['/', '?', '#', '@']) {
            return None;
        }
        Self::from_parts(scheme, authority)
    }

    /// The origin of a public URL (`https://chat.example.com/app`: scheme
    /// and authority, the path ignored; `ws`/`wss` count as `http`/`https`).
    pub(crate) fn from_public_url(url: &str) -> Option<Self> {
        let (scheme, rest) = url.trim().split_once("://")?;
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        if authority.is_empty() || authority.contains('@') {
            return None;
        }
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "ws" => "http",
            "wss" => "https",
            _ => scheme,
        };
        Self::from_parts(scheme, authority)
    }

    fn from_parts(scheme: &str, authority: &str) -> Option<Self> {
        let (scheme, default_port) = if scheme.eq_ignore_ascii_case("http") {
            ("http", 80)
        } else if scheme.eq_ignore_ascii_case("https") {
            ("https", 443)
        } else {
            return None;
        };
        let uri: http::uri::Authority = authority.parse().ok()?;
        let host = uri.host().to_ascii_lowercase();
        if host.is_empty() {
            return None;
        }
        Some(Self {
            scheme,
            host,
            port: uri.port_u16().unwrap_or(default_port),
        })
    }

    /// Whether the host is a loopback name or address.
    fn is_loopback(&self) -> bool {
        if self.host == "localhost" {
            return true;
        }
        let bare = self
            .host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(&self.host);
        match bare.parse::<IpAddr>() {
            Ok(IpAddr::V4(v4)) => v4.is_loopback(),
            Ok(IpAddr::V6(v6)) => {
                v6.is_loopback()
                    || v6
                        .to_ipv4_mapped()
                        .is_some_and(|v4| Ipv4Addr::is_loopback(&v4))
            }
            Err(_) => false,
        }
    }
}

/// The origins allowed to open the hub's WebSockets (see the module docs).
#[derive(Debug)]
pub(crate) struct OriginPolicy {
    any: bool,
    /// `allowed_origins` as written (compared without regard to case), for
    /// schemes this module does not parse (`chrome-extension://…`).
    listed: Vec<String>,
    /// `allowed_origins` and `public_urls`, parsed.
    origins: Vec<SiteOrigin>,
    /// The port the hub listens on: loopback origins on it are its own.
    port: u16,
}

impl OriginPolicy {
    /// The policy of a hub configured with `config`, listening on `port`.
    pub(crate) fn new(config: &crate::HubConfig, port: u16) -> Self {
        let any = config.allowed_origins.iter().any(|a| a == "*");
        let mut origins: Vec<SiteOrigin> = config
            .allowed_origins
            .iter()
            .filter_map(|a| SiteOrigin::parse(a.trim_end_matches('/')))
            .collect();
        origins.extend(
            config
                .public_urls
                .iter()
                .filter_map(|url| SiteOrigin::from_public_url(url)),
        );
        Self {
            any,
            listed: config.allowed_origins.clone(),
            origins,
            port,
        }
    }

    /// Whether a page at `origin` (the `Origin` header) may connect.
    pub(crate) fn allows(&self, origin: &str) -> bool {
        if self.any || self.listed.iter().any(|a| a.eq_ignore_ascii_case(origin)) {
            return true;
        }
        let Some(origin) = SiteOrigin::parse(origin) else {
            return false;
        };
        (origin.is_loopback() && origin.port == self.port) || self.origins.contains(&origin)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::HubConfig;

    fn policy(allowed: &[&str], public: &[&str], port: u16) -> OriginPolicy {
        let config = HubConfig {
            allowed_origins: allowed.iter().map(|s| (*s).to_owned()).collect(),
            public_urls: public.iter().map(|s| (*s).to_owned()).collect(),
            ..HubConfig::default()
        };
        OriginPolicy::new(&config, port)
    }

    #[test]
    fn loopback_origins_on_the_hub_port_are_its_own() {
        let p = policy(&[], &[], 8080);
        for own in [
            "http://127.0.0.1:8080",
            "https://127.0.0.1:8080",
            "http://127.9.8.7:8080",
            "http://localhost:8080",
            "http://LOCALHOST:8080",
            "http://[::1]:8080",
        ] {
            assert!(p.allows(own), "{own}");
        }
        for other in [
            "http://127.0.0.1:8081",
            "http://127.0.0.1",
            "http://evil.example:8080",
            "http://localhost.evil.example:8080",
            "http://10.0.0.1:8080",
            "null",
            "file://",
            "http://127.0.0.1:8080/path",
            "http://user@127.0.0.1:8080",
        ] {
            assert!(!p.allows(other), "{other}");
        }
        // Port 80: the origin has no port.
        let p = policy(&[], &[], 80);
        assert!(p.allows("http://localhost"));
        assert!(!p.allows("https://localhost"));
    }

    #[test]
    fn public_urls_and_listed_origins_are_allowed() {
        let p = policy(
            &["https://app.example", "chrome-extension://abc"],
            &[
                "https://Chat.Example.com/app/",
                "wss://hub.example.org:8443",
            ],
            8080,
        );
        assert!(p.allows("https://chat.example.com"));
        assert!(p.allows("https://chat.example.com:443"));
        assert!(p.allows("https://hub.example.org:8443"));
        assert!(p.allows("https://app.example"));
        assert!(p.allows("chrome-extension://abc"));
        assert!(!p.allows("http://chat.example.com"));
        assert!(!p.allows("https://chat.example.com:8443"));
        assert!(policy(&["*"], &[], 1).allows("https://anything.example"));
    }

    #[test]
    fn public_urls_must_be_http_urls_with_a_host() {
        for bad in ["chat.example.com", "ftp://x", "https://", "https://u@x"] {
            assert!(SiteOrigin::from_public_url(bad).is_none(), "{bad}");
        }
    }
}
