//! Duplex against Node `ws` (8.23, `tests/interop/node/node_modules`), both ways.
//!
//! `ws` client → in-test Duplex server, and Duplex client → `ws` server
//! (`node/peer.js server`), with text and binary of 0 to 16 MiB,
//! permessage-deflate off, at both libraries' defaults (`ws` with
//! `threshold: 0`, so every message is compressed), without context takeover,
//! and with window sizes 9 to 15 (Node's zlib turns a raw 8-bit deflate window
//! into 9, so `ws` cannot honour 8); fragmented messages both ways (`ws`
//! splits text at byte offsets, so code points straddle fragments); pings both
//! ways; closes with 1000 and 4000-range codes and reasons, checked on both
//! sides. See `common/mod.rs` for
//! what each run checks.
//!
//! The tests with 16 MiB messages are named `all_sizes_*` so that they sort
//! first and start first: they are the slowest.

mod common;

use common::{
    ALL_SIZES, AT_THE_LIMIT, Case, Closing, Fragments, Peer, PeerDeflate, UP_TO_1_MIB,
    UP_TO_64_KIB, params, run_case, run_cases,
};
use duplex_proto::deflate::DeflateConfig;

const PEER: Peer = Peer::Node;

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

// ---- ws client → Duplex server ----

#[tokio::test]
async fn all_sizes_node_client_uncompressed() {
    let case = Case {
        name: "ws client, perMessageDeflate: false".into(),
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
async fn all_sizes_node_client_deflate_defaults() {
    let case = Case {
        name: "ws client, deflate at both defaults".into(),
        peer: PeerDeflate::DEFAULT,
        duplex: Some(DeflateConfig::default()),
        sizes: ALL_SIZES,
        closing: Closing::ByPeer(4000, "ws says bye ✓"),
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
async fn all_sizes_node_client_incompressible_16_mib_deflate() {
    // 16 MiB of random bytes grow when deflated: the compressed frame is over
    // the 16 MiB limit, the message is at it, and must pass.
    let case = Case {
        name: "ws client, 16 MiB incompressible, deflate at both defaults".into(),
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
async fn node_client_offer_declined_by_duplex() {
    let case = Case {
        name: "ws client offers deflate, Duplex has it off".into(),
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
async fn node_client_asks_no_context_takeover() {
    let case = Case {
        name: "ws client offers no context takeover both ways".into(),
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
async fn node_client_duplex_forces_no_context_takeover() {
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
async fn node_client_asks_each_window_size() {
    let cases = (9..=15u8)
        .map(|bits| Case {
            name: format!("ws client asks for {bits}-bit windows both ways"),
            peer: PeerDeflate {
                server_max_window_bits: Some(bits),
                client_max_window_bits: Some(bits),
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
            negotiated: Some(params(false, false, Some(bits), Some(bits))),
            incompressible: false,
            response_header: Some(format!(
                "permessage-deflate; server_max_window_bits={bits}; client_max_window_bits={bits}"
            )),
        })
        .collect();
    run_cases(PEER, cases, true).await;
}

#[tokio::test]
async fn node_client_duplex_limits_each_window_size() {
    // ws offers a bare client_max_window_bits; Duplex's policy picks both windows.
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
async fn node_client_fragmented_both_ways_deflate() {
    // ws sends each message in 1000-unit fragments; Duplex echoes in
    // 4096-byte frames: compressed messages split across frames both ways.
    let case = Case {
        name: "ws client, fragmented messages, deflate".into(),
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
async fn node_client_fragmented_both_ways_uncompressed() {
    let case = Case {
        name: "ws client, fragmented messages, no compression".into(),
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

// ---- Duplex client → ws server ----

#[tokio::test]
async fn all_sizes_duplex_client_node_server_uncompressed() {
    let case = Case {
        name: "ws server, perMessageDeflate: false".into(),
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
async fn all_sizes_duplex_client_node_server_deflate_defaults() {
    // ws answers Chromium's offer with a bare `permessage-deflate`: 15-bit
    // windows and context takeover both ways.
    let case = Case {
        name: "ws server, deflate at both defaults".into(),
        peer: PeerDeflate::DEFAULT,
        duplex: Some(DeflateConfig::client()),
        sizes: ALL_SIZES,
        closing: Closing::ByDuplex(4000, "duplex says bye ✓"),
        fragments: Fragments::NONE,
        negotiated: Some(params(false, false, None, None)),
        incompressible: false,
        response_header: Some("permessage-deflate".into()),
    };
    run_case(PEER, case, false).await;
}

#[tokio::test]
async fn all_sizes_duplex_client_node_server_incompressible_16_mib_deflate() {
    // The ws server's echo of 16 MiB of random bytes, compressed: a
    // frame over the 16 MiB limit for a message at it, which must pass.
    let case = Case {
        name: "ws server, 16 MiB incompressible, deflate at both defaults".into(),
        peer: PeerDeflate::DEFAULT,
        duplex: Some(DeflateConfig::client()),
        sizes: AT_THE_LIMIT,
        closing: Closing::ByDuplex(1000, ""),
        fragments: Fragments::NONE,
        negotiated: Some(params(false, false, None, None)),
        incompressible: true,
        response_header: Some("permessage-deflate".into()),
    };
    run_case(PEER, case, false).await;
}

#[tokio::test]
async fn duplex_client_without_compression_node_server() {
    let case = Case {
        name: "Duplex client offers nothing, ws server has deflate on".into(),
        peer: PeerDeflate::DEFAULT,
        duplex: None,
        sizes: UP_TO_64_KIB,
        closing: Closing::ByPeer(4003, "ws closes"),
        fragments: Fragments::NONE,
        negotiated: None,
        incompressible: false,
        response_header: None,
    };
    run_case(PEER, case, false).await;
}

#[tokio::test]
async fn duplex_client_node_server_forces_no_context_takeover() {
    let case = Case {
        name: "ws server answers no context takeover both ways".into(),
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
async fn duplex_client_asks_node_server_no_context_takeover() {
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
        negotiated: Some(params(true, true, None, None)),
        incompressible: false,
        response_header: Some(
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover".into(),
        ),
    };
    run_case(PEER, case, false).await;
}

#[tokio::test]
async fn duplex_client_node_server_each_window_size() {
    let cases = (9..=15u8)
        .map(|bits| Case {
            name: format!("ws server sets {bits}-bit windows both ways"),
            peer: PeerDeflate {
                server_max_window_bits: Some(bits),
                client_max_window_bits: Some(bits),
                ..PeerDeflate::DEFAULT
            },
            duplex: Some(client_policy()),
            sizes: UP_TO_64_KIB,
            closing: Closing::ByPeer(4000 + u16::from(bits), "window"),
            fragments: Fragments::NONE,
            negotiated: Some(params(false, false, Some(bits), Some(bits))),
            // ws writes client_max_window_bits first.
            incompressible: false,
            response_header: Some(format!(
                "permessage-deflate; client_max_window_bits={bits}; server_max_window_bits={bits}"
            )),
        })
        .collect();
    run_cases(PEER, cases, false).await;
}

#[tokio::test]
async fn duplex_client_asks_node_server_each_window_size() {
    // Duplex offers server_max_window_bits=N and client_max_window_bits=N
    // (both omitted at 15); the ws server at its defaults accepts them as offered.
    let cases = (9..=15u8)
        .map(|bits| {
            let (negotiated, header) = if bits < 15 {
                (
                    params(false, false, Some(bits), Some(bits)),
                    format!(
                        "permessage-deflate; server_max_window_bits={bits}; client_max_window_bits={bits}"
                    ),
                )
            } else {
                (params(false, false, None, None), "permessage-deflate".to_owned())
            };
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
                negotiated: Some(negotiated),
                incompressible: false,
                response_header: Some(header),
            }
        })
        .collect();
    run_cases(PEER, cases, false).await;
}

#[tokio::test]
async fn duplex_client_fragmented_both_ways_node_server() {
    // ws splits text at byte offsets, so code points straddle fragments.
    let case = Case {
        name: "Duplex client and ws server send fragments, deflate".into(),
        peer: PeerDeflate::DEFAULT,
        duplex: Some(client_policy()),
        sizes: UP_TO_1_MIB,
        closing: Closing::ByDuplex(4007, "fragments"),
        fragments: Fragments {
            peer: Some(1000),
            duplex: Some(4096),
        },
        negotiated: Some(params(false, false, None, None)),
        incompressible: false,
        response_header: Some("permessage-deflate".into()),
    };
    run_case(PEER, case, false).await;
}
