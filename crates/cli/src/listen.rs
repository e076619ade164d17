//! `--listen` addresses as people write them: `127.0.0.1:8080`,
//! `[::1]:8080`, `localhost:8080` (a name, resolved once, IPv4 first), or
//! `:8080` (every interface, as `0.0.0.0:8080`).

use std::net::{SocketAddr, ToSocketAddrs};

/// Parses a `--listen` value (a clap value parser); the error says what is
/// expected.
pub(crate) fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    let expected = "expected HOST:PORT (127.0.0.1:8080, [::1]:8080, localhost:8080) or :PORT \
                    (every interface)";
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    if let Some(port) = text.strip_prefix(':') {
        let port: u16 = port
            .parse()
            .map_err(|_| format!("`{port}` is not a port (0 to 65535); {expected}"))?;
        return Ok(SocketAddr::from(([0, 0, 0, 0], port)));
    }
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err(format!("`{text}` has no port; {expected}"));
    };
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(format!(
            "`{text}` is not an address to listen on; {expected}"
        ));
    }
    let addrs: Vec<SocketAddr> = text
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve `{host}`: {e}"))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addrs.first())
        .copied()
        .ok_or_else(|| format!("`{host}` resolves to no address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses_as_people_write_them() {
        assert_eq!(
            parse_listen("127.0.0.1:8080"),
            Ok(SocketAddr::from(([127, 0, 0, 1], 8080)))
        );
        assert_eq!(parse_listen("[::1]:9000").unwrap().port(), 9000);
        assert_eq!(
            parse_listen(":8080"),
            Ok(SocketAddr::from(([0, 0, 0, 0], 8080)))
        );
        let local = parse_listen("localhost:8080").unwrap();
        assert!(local.ip().is_loopback() && local.port() == 8080, "{local}");
        for bad in ["8080", ":99999", "localhost:", ":x", "host:port"] {
            let error = parse_listen(bad).unwrap_err();
            assert!(!error.is_empty(), "{bad}");
        }
        assert!(parse_listen("8080").unwrap_err().contains("no port"));
        assert!(parse_listen(":99999").unwrap_err().contains("not a port"));
    }
}
