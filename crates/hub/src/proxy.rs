//! The client's address behind a proxy: the PROXY protocol (v1 and v2) and
//! the `X-Forwarded-For` / `Forwarded` headers, believed from the configured
//! trusted proxies only. The address found is the one the per-IP connection
//! limit counts and the logs name.
//!
//! Invariants:
//! - Nothing a peer outside `trusted_proxies` sends changes the address its
//!   connection counts under: its forwarding headers are ignored, and a
//!   PROXY header from it is not parsed (it is then a malformed HTTP
//!   request, answered 400, or a failed TLS handshake).
//! - With `client_address = "proxy-protocol"`, every connection from a
//!   trusted proxy must begin with a PROXY header; one without is refused.
//!   The header is read within the handshake timeout and is at most
//!   [`MAX_HEADER`] bytes; exactly its bytes are consumed, what follows is
//!   the client's. A `LOCAL` header (v2: the proxy's own health check) or an
//!   `UNKNOWN` one (v1) leaves the proxy's address.
//! - Forwarding headers are read from the right (the hop nearest the hub):
//!   addresses of trusted proxies are skipped and the first other one is
//!   the client (the leftmost if all are trusted). Entries the client put in
//!   front of the proxy's own cannot be reached that way. An entry that is
//!   not an address (`unknown`, an obfuscated name) stops the walk and the
//!   connection counts under the proxy's address.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use http::HeaderMap;
use ppp::{HeaderResult, PartialResult};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use crate::config::{ClientAddress, HubConfig};

/// The longest PROXY header accepted (v1 headers are at most 107 bytes; v2
/// ones carry TLVs, which HAProxy keeps well below this).
pub(crate) const MAX_HEADER: usize = 4096;

/// Why a connection from a trusted proxy was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum ProxyError {
    /// The connection did not start with a PROXY header.
    #[error("no PROXY header from a trusted proxy")]
    Missing,
    /// The PROXY header is malformed.
    #[error("malformed PROXY header")]
    Malformed,
    /// The PROXY header is longer than [`MAX_HEADER`].
    #[error("PROXY header over {MAX_HEADER} bytes")]
    TooLong,
    /// The connection ended before the header did.
    #[error("connection ended inside the PROXY header")]
    Eof,
    /// The socket failed.
    #[error("reading the PROXY header: {0}")]
    Io(#[from] std::io::Error),
}

/// The trusted proxies and how they name clients.
#[derive(Debug, Default)]
pub(crate) struct Proxies {
    nets: Vec<ipnet::IpNet>,
    mode: Option<ClientAddress>,
}

impl Proxies {
    /// The hub's `trusted_proxies` and `client_address`.
    pub(crate) fn new(config: &HubConfig) -> Self {
        Self {
            nets: config.trusted_proxies.clone(),
            mode: config.client_address,
        }
    }

    /// Whether `ip` is a trusted proxy.
    pub(crate) fn trusts(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.nets.iter().any(|net| net.contains(&ip))
    }

    /// Whether a connection from `peer` must begin with a PROXY header.
    pub(crate) fn expects_proxy_header(&self, peer: IpAddr) -> bool {
        self.mode == Some(ClientAddress::ProxyProtocol) && self.trusts(peer)
    }

    /// The client's address for a request with `headers` that came from
    /// `peer` (see the module docs): `peer` unless it is a trusted proxy and
    /// the configured header names someone else.
    pub(crate) fn client_of(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let name = match self.mode {
            Some(ClientAddress::XForwardedFor) => "x-forwarded-for",
            Some(ClientAddress::Forwarded) => "forwarded",
            _ => return peer,
        };
        if !self.trusts(peer) {
            return peer;
        }
        // Every header line, in order, split into its hops.
        let mut hops: Vec<&str> = Vec::new();
        for value in headers.get_all(name) {
            let Ok(value) = value.to_str() else {
                return peer;
            };
            hops.extend(value.split(','));
        }
        let mut client = peer;
        for hop in hops.iter().rev() {
            let address = if self.mode == Some(ClientAddress::Forwarded) {
                forwarded_for(hop)
            } else {
                parse_address(hop.trim())
            };
            let Some(address) = address else {
                return peer;
            };
            client = address;
            if !self.trusts(address) {
                break;
            }
        }
        client
    }
}

/// The `for=` address of one element of a `Forwarded` header (RFC 7239:
/// `for=192.0.2.60;proto=http`, `for="[2001:db8::1]:4711"`).
fn forwarded_for(element: &str) -> Option<IpAddr> {
    element.split(';').find_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        if !name.trim().eq_ignore_ascii_case("for") {
            return None;
        }
        parse_address(value.trim().trim_matches('"'))
    })
}

/// An address as proxies write it: `192.0.2.1`, `192.0.2.1:4711`,
/// `2001:db8::1`, `[2001:db8::1]` or `[2001:db8::1]:4711`.
fn parse_address(text: &str) -> Option<IpAddr> {
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Some(addr.ip().to_canonical());
    }
    text.strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .and_then(|t| t.parse::<IpAddr>().ok())
        .map(|ip| ip.to_canonical())
}

/// Reads the PROXY header a trusted proxy starts its connection with and
/// returns the client's address (`peer` for a `LOCAL` or `UNKNOWN` one).
/// Consumes exactly the header. The caller bounds it in time.
pub(crate) async fn read_header(
    tcp: &mut TcpStream,
    peer: SocketAddr,
) -> Result<SocketAddr, ProxyError> {
    let mut buf = vec![0u8; MAX_HEADER];
    loop {
        // Peeked, so that nothing past the header is taken from the client.
        let n = tcp.peek(&mut buf).await?;
        if n == 0 {
            return Err(ProxyError::Eof);
        }
        let parsed = HeaderResult::parse(&buf[..n]);
        if parsed.is_incomplete() {
            if n == buf.len() {
                return Err(ProxyError::TooLong);
            }
            // More is on its way (a header split across segments is rare:
            // proxies write it in one piece); `peek` would return the same
            // bytes at once, so wait a little.
            tokio::time::sleep(Duration::from_millis(2)).await;
            continue;
        }
        let (length, client) = match parsed {
            HeaderResult::V1(Ok(header)) => {
                let client = match header.addresses {
                    ppp::v1::Addresses::Tcp4(a) => {
                        SocketAddr::from((a.source_address, a.source_port))
                    }
                    ppp::v1::Addresses::Tcp6(a) => {
                        SocketAddr::from((a.source_address, a.source_port))
                    }
                    ppp::v1::Addresses::Unknown => peer,
                };
                (header.header.len(), client)
            }
            HeaderResult::V2(Ok(header)) => {
                let client = match (header.command, header.addresses) {
                    (ppp::v2::Command::Local, _) => peer,
                    (_, ppp::v2::Addresses::IPv4(a)) => {
                        SocketAddr::from((a.source_address, a.source_port))
                    }
                    (_, ppp::v2::Addresses::IPv6(a)) => {
                        SocketAddr::from((a.source_address, a.source_port))
                    }
                    (_, _) => peer,
                };
                (header.len(), client)
            }
            HeaderResult::V1(Err(_)) if !buf.starts_with(b"PROXY") => {
                return Err(ProxyError::Missing);
            }
            _ => return Err(ProxyError::Malformed),
        };
        tcp.read_exact(&mut buf[..length]).await?;
        return Ok(client);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxies(nets: &[&str], mode: ClientAddress) -> Proxies {
        Proxies {
            nets: nets
                .iter()
                .map(|n| crate::config::parse_net(n).unwrap())
                .collect(),
            mode: Some(mode),
        }
    }

    fn headers(name: &str, values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for value in values {
            map.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        map
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn x_forwarded_for_is_read_from_the_right_past_trusted_hops() {
        let p = proxies(&["10.0.0.0/8", "127.0.0.1"], ClientAddress::XForwardedFor);
        let peer = ip("127.0.0.1");
        // nginx appends the address it saw; what the client wrote is left.
        let spoofed = headers("x-forwarded-for", &["6.6.6.6, 203.0.113.9"]);
        assert_eq!(p.client_of(peer, &spoofed), ip("203.0.113.9"));
        let chain = headers("x-forwarded-for", &["203.0.113.9", "10.1.1.1"]);
        assert_eq!(p.client_of(peer, &chain), ip("203.0.113.9"));
        let all_trusted = headers("x-forwarded-for", &["10.2.2.2, 10.1.1.1"]);
        assert_eq!(p.client_of(peer, &all_trusted), ip("10.2.2.2"));
        let v6 = headers("x-forwarded-for", &["[2001:db8::7]:443"]);
        assert_eq!(p.client_of(peer, &v6), ip("2001:db8::7"));
        // Nothing, or nonsense: the proxy's own address.
        assert_eq!(p.client_of(peer, &HeaderMap::new()), peer);
        let junk = headers("x-forwarded-for", &["203.0.113.9, unknown"]);
        assert_eq!(p.client_of(peer, &junk), peer);
        // An untrusted peer's headers count for nothing.
        assert_eq!(
            p.client_of(ip("198.51.100.1"), &spoofed),
            ip("198.51.100.1")
        );
        // Nor does the other header.
        let other = headers("forwarded", &["for=203.0.113.9"]);
        assert_eq!(p.client_of(peer, &other), peer);
    }

    #[test]
    fn forwarded_for_parameters_are_read() {
        let p = proxies(&["127.0.0.0/8"], ClientAddress::Forwarded);
        let peer = ip("127.0.0.1");
        let h = headers(
            "forwarded",
            &[r#"for=6.6.6.6, for="[2001:db8:cafe::17]:4711";proto=https;by=127.0.0.1"#],
        );
        assert_eq!(p.client_of(peer, &h), ip("2001:db8:cafe::17"));
        let h = headers("forwarded", &["proto=http;For=192.0.2.60"]);
        assert_eq!(p.client_of(peer, &h), ip("192.0.2.60"));
        let h = headers("forwarded", &["for=_hidden"]);
        assert_eq!(p.client_of(peer, &h), peer);
        let xff = headers("x-forwarded-for", &["192.0.2.60"]);
        assert_eq!(p.client_of(peer, &xff), peer);
    }

    #[test]
    fn mapped_addresses_match_their_ipv4_block() {
        let p = proxies(&["127.0.0.1/32"], ClientAddress::ProxyProtocol);
        assert!(p.trusts(ip("::ffff:127.0.0.1")));
        assert!(p.expects_proxy_header(ip("127.0.0.1")));
        assert!(!p.expects_proxy_header(ip("127.0.0.2")));
    }
}
