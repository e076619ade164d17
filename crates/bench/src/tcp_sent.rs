//! Bytes a server has sent on its TCP connections, as the kernel counts them.
//!
//! Invariants:
//! - A reading is the sum of `bytes_sent` (TCP payload handed to the
//!   network, retransmissions included) over every established TCP socket
//!   whose local port is the server's, from `ss -Htin` (iproute2): the
//!   frames as they went out (compressed or not), whatever system call the
//!   server wrote them with (`write`, `send`, `writev`, `sendmsg`), so
//!   servers of any language compare alike.
//! - Sockets that close between two readings drop out of the sum: a
//!   difference of two readings counts only connections open at both, as
//!   the subscribers of a fan-out window are.

use std::process::Command;

use anyhow::{Context as _, bail};

/// The sum of `bytes_sent` over the established TCP sockets on local `port`.
pub(super) fn bytes_sent_from_port(port: u16) -> anyhow::Result<u64> {
    let output = Command::new("ss")
        .args(["-Htin", "state", "established"])
        .arg(format!("( sport = :{port} )"))
        .output()
        .context("cannot run ss (iproute2)")?;
    if !output.status.success() {
        bail!(
            "ss failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    sum_bytes_sent(&String::from_utf8_lossy(&output.stdout))
}

/// Sums the `bytes_sent:N` fields of `ss -i` output.
fn sum_bytes_sent(text: &str) -> anyhow::Result<u64> {
    text.split_whitespace()
        .filter_map(|token| token.strip_prefix("bytes_sent:"))
        .try_fold(0u64, |sum, n| {
            let n: u64 = n
                .parse()
                .with_context(|| format!("ss: bytes_sent:{n} is not a number"))?;
            Ok(sum + n)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_every_socket_and_nothing_else() {
        let text = "0 0 127.0.0.1:9 127.0.0.1:40000\n\t bbr rto:204 bytes_sent:457 \
                    bytes_acked:458 bytes_received:688 segs_out:9\n\
                    0 0 127.0.0.1:9 127.0.0.1:40001\n\t cubic bytes_sent:381 bytes_acked:382\n";
        assert_eq!(sum_bytes_sent(text).unwrap(), 838);
        assert_eq!(sum_bytes_sent("").unwrap(), 0);
        assert!(sum_bytes_sent("bytes_sent:x").is_err());
    }

    #[test]
    fn counts_what_a_listening_port_sent() {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        let before = bytes_sent_from_port(port).unwrap();
        server.write_all(&[7u8; 1000]).unwrap();
        let mut got = [0u8; 1000];
        client.read_exact(&mut got).unwrap();
        let after = bytes_sent_from_port(port).unwrap();
        assert_eq!(after - before, 1000);
    }
}
