//! Duplex against Python `websockets` (17.4, `.tools/py3`), both ways.
//!
//! `websockets` client → in-test Duplex server, and Duplex client →
//! `websockets` server (`python/peer.py server`), with text and binary of 0 to
//! 16 MiB, permessage-deflate off, at both libraries' defaults, without
//! context takeover, and with each window size `websockets` allows (8 to 15
//! where it decompresses, 9 to 15 where it compresses); fragmented messages
//! both ways (`websockets` reports how many frames each of Duplex's messages
//! came in); pings both ways; closes with 1000 and 4000-range codes and
//! reasons, checked on both sides.
//! See `common/mod.rs` for what each run checks.
//!
//! The tests with 16 MiB messages are named `all_sizes_*` so that they sort
//! first and start first: they are the slowest.

mod common;

use common::{
    ALL_SIZES, AT_THE_LIMIT, Case, Closing, Fragments, Peer, PeerDeflate, UP_TO_1_MIB,
    UP_TO_64_KIB, params, run_case, run_cases,
};
use duplex_proto::deflate::DeflateConfig;

const PEER: Peer = Peer::Python;

/// Duplex's server policy with `threshold: 0`, so even the empty message is
/// compressed.
fn server_policy() -> DeflateConfig {
    DeflateConfig {
        threshold: 0,
        ..DeflateConfig::default()
    }
}

/// Duplex's client policy (Chromium's offer) with `threshold: 0`.
fn client_policy() -> DeflateConfig {
    DeflateConfig {
        threshold: 0,
        ..DeflateConfig::client()
    }
}

// ---- websockets client → Duplex server ----

#[tokio::test]
async fn all_sizes_python_client_uncompressed() {
    // websockets offers nothing; Duplex (compression on) answers without it.
    let case = Case {
        name: "python client, no compression offered".into(),
        peer: PeerDeflate::OFF,
        duplex: Some(DeflateConfig::default()),
        sizes: ALL_SIZES,
        closing: Closing::ByPeer(1000, ""),
        fragments: Fragments::NONE,
        negotiated: None,
        incompressible: false,
        response_header: None,
    };
    run_case(PEER, case, true).await;
}

#[tokio::test]
async fn all_sizes_python_client_deflate_defaults() {
    let case = Case {
        name: "python client, deflate at both defaults".into(),
        peer: PeerDeflate::DEFAULT,
        duplex: Some(DeflateConfig::default()),
        sizes: ALL_SIZES,
        closing: Closing::ByPeer(4000, "python says bye ✓"),
        fragments: Fragments::NONE,
        negotiated: Some(params(false, false, Some(12), Some(12))),
        incompressible: false,
        response_header: Some(
            "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12".into(),
        ),
    };
    run_case(PEER, case, true).await;
}

#[tokio::test]
async fn all_sizes_python_client_incompressible_16_mib_deflate() {
    // 16 MiB of random bytes grow when deflated: the compressed frame is over
    // the 16 MiB limit, the message is at it, and must pass.
    let case = Case {
        name: "python client, 16 MiB incompressible, deflate at both defaults".into(),
        peer: PeerDeflate::DEFAULT,
        duplex: Some(DeflateConfig::default()),
        sizes: AT_THE_LIMIT,
        closing: Closing::ByPeer(1000, ""),
        fragments: Fragments::NONE,
        negotiated: Some(params(false, false, Some(12), Some(12))),
        incompressible: true,
        response_header: Some(
            "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12".into(),
        ),
    };
    run_case(PEER, case, true).await;
}

#[tokio::test]
async fn python_client_offer_declined_by_duplex() {
    let case = Case {
        name: "python client offers deflate, Duplex has it off".into(),
        peer: PeerDeflate::DEFAULT,
        duplex: None,
        sizes: UP_TO_64_KIB,
        closing: Closing::ByDuplex(4001, "duplex says bye"),
        fragments: Fragments::NONE,
        negotiated: None,
        incompressible: false,
        response_header: None,
    };
    run_case(PEER, case, true).await;
}

#[tokio::test]
async fn python_client_asks_no_context_takeover() {
    let case = Case {
        name: "python client offers no context takeover both ways".into(),
        peer: PeerDeflate {
            server_no_context_takeover: true,
            client_no_context_takeover: true,
            ..PeerDeflate::DEFAULT
        },
        duplex: Some(server_policy()),
        sizes: UP_TO_1_MIB,
        closing: Closing::ByDuplex(1000, ""),
        fragments: Fragments::NONE,
        negotiated: Some(params(true, true, Some(12), Some(12))),
        incompressible: false,
        response_header: Some(
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
             server_max_window_bits=12; client_max_window_bits=12"
                .into(),
        ),
    };
    run_case(PEER, case, true).await;
}

#[tokio::test]
async fn python_client_duplex_forces_no_context_takeover() {
    let case = Case {
        name: "Duplex server answers no context takeover both ways unasked".into(),
        peer: PeerDeflate::DEFAULT,
        duplex: Some(DeflateConfig {
            server_no_context_takeover: true,
            client_no_context_takeover: true,
            ..server_policy()
        }),
        sizes: UP_TO_1_MIB,
        closing: Closing::ByPeer(4002, "no context"),
        fragments: Fragments::NONE,
        negotiated: Some(params(true, true, Some(12), Some(12))),
        incompressible: false,
        response_header: Some(
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
             server_max_window_bits=12; client_max_window_bits=12"
                .into(),
        ),
    };
    run_case(PEER, case, true).await;
}

#[tokio::test]
async fn python_client_asks_each_window_size() {
    // websockets may ask the server for 8..=15 bits, and compresses itself with 9..=15.
    let cases = (8..=15u8)
        .map(|bits| {
            let client_bits = bits.max(9);
            Case {
                name: format!("python client asks server_max_window_bits={bits}, client_max_window_bits={client_bits}"),
                peer: PeerDeflate {
                    server_max_window_bits: Some(bits),
                    client_max_window_bits: Some(client_bits),
                    ..PeerDeflate::DEFAULT
                },
                duplex: Some(DeflateConfig {
                    server_max_window_bits: 15,
                    client_max_window_bits: 15,
                    ..server_policy()
                }),
                sizes: UP_TO_64_KIB,
                closing: Closing::ByPeer(4000 + u16::from(bits), "window"),
                fragments: Fragments::NONE,
                negotiated: Some(params(false, false, Some(bits), Some(client_bits))),
                incompressible: false,
                response_header: Some(format!(
                    "permessage-deflate; server_max_window_bits={bits}; client_max_window_bits={client_bits}"
                )),
            }
        })
        .collect();
    run_cases(PEER, cases, true).await;
}

#[tokio::test]
async fn python_client_duplex_limits_each_window_size() {
    // Duplex's policy sets both windows; websockets offers a bare
    // client_max_window_bits, so Duplex may pick the client's window (9..=15:
    // websockets cannot compress with 8 bits).
    let cases = (9..=15u8)
        .map(|bits| {
            let server_bits = (bits < 15).then_some(bits);
            let header = match server_bits {
                Some(b) => format!(
                    "permessage-deflate; server_max_window_bits={b}; client_max_window_bits={bits}"
                ),
                None => format!("permessage-deflate; client_max_window_bits={bits}"),
            };
            Case {
                name: format!("Duplex server limits windows to {bits} bits"),
                peer: PeerDeflate::DEFAULT,
                duplex: Some(DeflateConfig {
                    server_max_window_bits: bits,
                    client_max_window_bits: bits,
                    ..server_policy()
                }),
                sizes: UP_TO_64_KIB,
                closing: Closing::ByDuplex(4000 + u16::from(bits), "window"),
                fragments: Fragments::NONE,
                negotiated: Some(params(false, false, server_bits, Some(bits))),
                incompressible: false,
                response_header: Some(header),
            }
        })
        .collect();
    run_cases(PEER, cases, true).await;
}

#[tokio::test]
async fn python_client_fragmented_both_ways_deflate() {
    // websockets sends each message in 1000-unit fragments; Duplex echoes in
    // 4096-byte frames: compressed messages split across frames both ways.
    let case = Case {
        name: "python client, fragmented messages, deflate".into(),
        peer: PeerDeflate::DEFAULT,
        duplex: Some(server_policy()),
        sizes: UP_TO_1_MIB,
        closing: Closing::ByPeer(4005, "fragments"),
        fragments: Fragments {
            peer: Some(1000),
            duplex: Some(4096),
        },
        negotiated: Some(params(false, false, Some(12), Some(12))),
        incompressible: false,
        response_header: Some(
            "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12".into(),
        ),
    };
    run_case(PEER, case, true).await;
}

#[tokio::test]
async fn python_client_fragmented_both_ways_uncompressed() {
    let case = Case {
        name: "python client, fragmented messages, no compression".into(),
        peer: PeerDeflate::OFF,
        duplex: None,
        sizes: UP_TO_1_MIB,
        closing: Closing::ByDuplex(4006, "fragments"),
        fragments: Fragments {
            peer: Some(1000),
            duplex: Some(4096),
        },
        negotiated: None,
        incompressible: false,
        response_header: None,
    };
    run_case(PEER, case, true).await;
}

// ---- Duplex client → websockets server ----

#[tokio::test]
async fn all_sizes_duplex_client_python_server_uncompressed() {
    // Duplex offers; the websockets server has compression off.
    let case = Case {
        name: "python server, no compression".into(),
        peer: PeerDeflate::OFF,
        duplex: Some(DeflateConfig::client()),
        sizes: ALL_SIZES,
        closing: Closing::ByDuplex(1000, ""),
        fragments: Fragments::NONE,
        negotiated: None,
        incompressible: false,
        response_header: None,
    };
    run_case(PEER, case, false).await;
}

#[tokio::test]
async fn all_sizes_duplex_client_python_server_deflate_defaults() {
    let case = Case {
        name: "python server, deflate at both defaults".into(),
        peer: PeerDeflate::DEFAULT,
        duplex: Some(DeflateConfig::client()),
        sizes: ALL_SIZES,
        closing: Closing::ByDuplex(4000, "duplex says bye ✓"),
        fragments: Fragments::NONE,
        negotiated: Some(params(false, false, Some(12), Some(12))),
        incompressible: false,
        response_header: Some(
            "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12".into(),
        ),
    };
    run_case(PEER, case, false).await;
}

#[tokio::test]
async fn all_sizes_duplex_client_python_server_incompressible_16_mib_deflate() {
    // The python server's echo of 16 MiB of random bytes, compressed: a
    // frame over the 16 MiB limit for a message at it, which must pass.
    let case = Case {
        name: "python server, 16 MiB incompressible, deflate at both defaults".into(),
        peer: PeerDeflate::DEFAULT,
        duplex: Some(DeflateConfig::client()),
        sizes: AT_THE_LIMIT,
        closing: Closing::ByDuplex(1000, ""),
        fragments: Fragments::NONE,
        negotiated: Some(params(false, false, Some(12), Some(12))),
        incompressible: true,
        response_header: Some(
            "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12".into(),
        ),
    };
    run_case(PEER, case, false).await;
}

#[tokio::test]
async fn duplex_client_without_compression_python_server() {
    let case = Case {
        name: "Duplex client offers nothing, python server has deflate on".into(),
        peer: PeerDeflate::DEFAULT,
        duplex: None,
        sizes: UP_TO_64_KIB,
        closing: Closing::ByPeer(4003, "python closes"),
        fragments: Fragments::NONE,
        negotiated: None,
        incompressible: false,
        response_header: None,
    };
    run_case(PEER, case, false).await;
}

#[tokio::test]
async fn duplex_client_python_server_forces_no_context_takeover() {
    let case = Case {
        name: "python server answers no context takeover both ways".into(),
        peer: PeerDeflate {
            server_no_context_takeover: true,
            client_no_context_takeover: true,
            ..PeerDeflate::DEFAULT
        },
        duplex: Some(client_policy()),
        sizes: UP_TO_1_MIB,
        closing: Closing::ByPeer(1000, ""),
        fragments: Fragments::NONE,
        negotiated: Some(params(true, true, None, None)),
        incompressible: false,
        response_header: Some(
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover".into(),
        ),
    };
    run_case(PEER, case, false).await;
}

#[tokio::test]
async fn duplex_client_asks_python_server_no_context_takeover() {
    let case = Case {
        name: "Duplex client offers no context takeover both ways".into(),
        peer: PeerDeflate::DEFAULT,
        duplex: Some(DeflateConfig {
            server_no_context_takeover: true,
            client_no_context_takeover: true,
            ..client_policy()
        }),
        sizes: UP_TO_1_MIB,
        closing: Closing::ByDuplex(4004, "no context"),
        fragments: Fragments::NONE,
        negotiated: Some(params(true, true, Some(12), Some(12))),
        incompressible: false,
        response_header: Some(
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
             server_max_window_bits=12; client_max_window_bits=12"
                .into(),
        ),
    };
    run_case(PEER, case, false).await;
}

#[tokio::test]
async fn duplex_client_python_server_each_window_size() {
    // websockets compresses with 9..=15 bits and lets the client use 8..=15.
    let cases = (8..=15u8)
        .map(|bits| {
            let server_bits = bits.max(9);
            Case {
                name: format!(
                    "python server sets server_max_window_bits={server_bits}, client_max_window_bits={bits}"
                ),
                peer: PeerDeflate {
                    server_max_window_bits: Some(server_bits),
                    client_max_window_bits: Some(bits),
                    ..PeerDeflate::DEFAULT
                },
                duplex: Some(client_policy()),
                sizes: UP_TO_64_KIB,
                closing: Closing::ByPeer(4000 + u16::from(bits), "window"),
                fragments: Fragments::NONE,
                negotiated: Some(params(false, false, Some(server_bits), Some(bits))),
                incompressible: false,
                response_header: Some(format!(
                    "permessage-deflate; server_max_window_bits={server_bits}; client_max_window_bits={bits}"
                )),
            }
        })
        .collect();
    run_cases(PEER, cases, false).await;
}

#[tokio::test]
async fn duplex_client_asks_python_server_each_window_size() {
    // Duplex offers server_max_window_bits=N and client_max_window_bits=N; the
    // websockets server is at its defaults (12 and 12), so it answers the
    // smaller of the two for each.
    let cases = (9..=15u8)
        .map(|bits| {
            let agreed = bits.min(12);
            Case {
                name: format!("Duplex client asks for {bits}-bit windows"),
                peer: PeerDeflate::DEFAULT,
                duplex: Some(DeflateConfig {
                    server_max_window_bits: bits,
                    client_max_window_bits: bits,
                    ..client_policy()
                }),
                sizes: UP_TO_64_KIB,
                closing: Closing::ByDuplex(4000 + u16::from(bits), "window"),
                fragments: Fragments::NONE,
                negotiated: Some(params(false, false, Some(agreed), Some(agreed))),
                incompressible: false,
                response_header: Some(format!(
                    "permessage-deflate; server_max_window_bits={agreed}; client_max_window_bits={agreed}"
                )),
            }
        })
        .collect();
    run_cases(PEER, cases, false).await;
}

#[tokio::test]
async fn duplex_client_fragmented_both_ways_python_server() {
    let case = Case {
        name: "Duplex client and python server send fragments, deflate".into(),
        peer: PeerDeflate::DEFAULT,
        duplex: Some(client_policy()),
        sizes: UP_TO_1_MIB,
        closing: Closing::ByDuplex(4007, "fragments"),
        fragments: Fragments {
            peer: Some(1000),
            duplex: Some(4096),
        },
        negotiated: Some(params(false, false, Some(12), Some(12))),
        incompressible: false,
        response_header: Some(
            "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12".into(),
        ),
    };
    run_case(PEER, case, false).await;
}
