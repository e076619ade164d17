//! The connection rate per client address (`[limits]
//! connection_rate_per_ip` / `connection_burst_per_ip`): a burst of
//! connects from one address is refused with 429 and `Retry-After` before
//! the upgrade, counted and logged, while another address is unaffected;
//! behind a trusted proxy the client's address counts, not the proxy's.
//! Clients come from distinct loopback addresses (127.0.0.2, 127.0.0.3),
//! which Linux routes to the loopback interface.

mod common;

use std::net::SocketAddr;

use common::{TestHub, WAIT};
use duplex_hub::HubConfig;
use duplex_hub::config::{ClientAddress, parse_net};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// The status and head of a `/ws` upgrade from the loopback address
/// `from` (with `extra` header lines); the connection is kept on 101.
async fn upgrade_from(
    from: [u8; 4],
    to: SocketAddr,
    extra: &str,
    keep: &mut Vec<TcpStream>,
) -> (u16, String) {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((from, 0))).unwrap();
    let mut tcp = tokio::time::timeout(WAIT, socket.connect(to))
        .await
        .unwrap()
        .unwrap();
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: hub.example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match tokio::time::timeout(WAIT, tcp.read(&mut buf))
            .await
            .unwrap()
        {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    if status == 101 {
        keep.push(tcp);
    }
    (status, head)
}

fn config(rate: f64, burst: f64) -> HubConfig {
    let mut config = HubConfig::default();
    config.limits.connection_rate_per_ip = rate;
    config.limits.connection_burst_per_ip = burst;
    config
}

#[tokio::test]
async fn a_burst_from_one_address_is_refused_and_another_is_not() {
    let hub = TestHub::start(config(1.0, 5.0)).await;
    let mut open = Vec::new();
    let mut statuses = Vec::new();
    for _ in 0..8 {
        statuses.push(upgrade_from([127, 0, 0, 2], hub.addr, "", &mut open).await);
    }
    let codes: Vec<u16> = statuses.iter().map(|(s, _)| *s).collect();
    assert_eq!(codes, [101, 101, 101, 101, 101, 429, 429, 429]);
    let refused = &statuses[5].1.to_ascii_lowercase();
    assert!(refused.contains("retry-after: 1\r\n"), "{refused}");
    // Another address is unaffected.
    for _ in 0..5 {
        let (status, _) = upgrade_from([127, 0, 0, 3], hub.addr, "", &mut open).await;
        assert_eq!(status, 101);
    }
    // Counted by reason.
    let (_, metrics) = hub.get("/metrics").await;
    assert!(
        metrics.contains("duplex_connections_rejected_total{reason=\"ip_rate\"} 3"),
        "{metrics}"
    );
    // A second later, one more token.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (status, _) = upgrade_from([127, 0, 0, 2], hub.addr, "", &mut open).await;
    assert_eq!(status, 101);
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_client_counts() {
    let mut config = config(1.0, 2.0);
    config.trusted_proxies = vec![parse_net("127.0.0.1").unwrap()];
    config.client_address = Some(ClientAddress::XForwardedFor);
    let hub = TestHub::start(config).await;
    let mut open = Vec::new();
    let from = |client: &str| format!("X-Forwarded-For: {client}\r\n");
    for expected in [101, 101, 429] {
        let (status, _) =
            upgrade_from([127, 0, 0, 1], hub.addr, &from("198.51.100.7"), &mut open).await;
        assert_eq!(status, expected);
    }
    // Another client through the same proxy is unaffected.
    let (status, _) =
        upgrade_from([127, 0, 0, 1], hub.addr, &from("198.51.100.8"), &mut open).await;
    assert_eq!(status, 101);
}
