//! Duplex against Node over HTTP/2 (RFC 8441), both ways: Node's own
//! `http2` module carries the streams (h2c with prior knowledge, Node's
//! SETTINGS, flow control and stream ends) and Node `ws` frames the
//! WebSockets on them (`node/peer.js --http2`, adapters in `node/h2.js`).
//! Node → in-test Duplex server (served by `duplex::http2::Server` when the
//! connection opens with the HTTP/2 preface), and Duplex client (through an
//! `http2::Pool`) → Node server, with the message cases of `node.rs`: text
//! and binary of 0 B to 16 MiB, permessage-deflate off and on, fragments
//! both ways, pings both ways, closes with codes and reasons. Each run
//! checks that the WebSocket really went over HTTP/2 (the Duplex server saw
//! an extended CONNECT; the Duplex client's pool holds an HTTP/2
//! connection; Node reported `:protocol websocket` or the server's
//! `SETTINGS_ENABLE_CONNECT_PROTOCOL`).

mod common;

use common::{
    ALL_SIZES, Case, Closing, Fragments, Peer, PeerDeflate, PeerProcess, UP_TO_1_MIB, params,
    run_case,
};
use duplex_proto::deflate::DeflateConfig;

const PEER: Peer = Peer::NodeHttp2;

// ---- Node http2 + ws client → Duplex server ----

#[tokio::test]
async fn all_sizes_node_h2_client_uncompressed() {
    let case = Case {
        name: "Node http2 client, no compression".into(),
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
async fn node_h2_client_deflate_fragmented() {
    let case = Case {
        name: "Node http2 client, deflate, fragmented both ways".into(),
        peer: PeerDeflate::DEFAULT,
        duplex: Some(DeflateConfig {
            threshold: 0,
            ..DeflateConfig::default()
        }),
        sizes: UP_TO_1_MIB,
        closing: Closing::ByDuplex(4001, "over h2 ✓"),
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

// ---- Duplex client → Node http2 + ws server ----

#[tokio::test]
async fn all_sizes_duplex_client_node_h2_server_uncompressed() {
    let case = Case {
        name: "Node http2 server, no compression".into(),
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
async fn duplex_client_node_h2_server_deflate_asked_close() {
    let case = Case {
        name: "Node http2 server, deflate at both defaults, Node closes".into(),
        peer: PeerDeflate::DEFAULT,
        duplex: Some(DeflateConfig::client()),
        sizes: UP_TO_1_MIB,
        closing: Closing::ByPeer(4002, "node says bye"),
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

/// The Node server announces `SETTINGS_ENABLE_CONNECT_PROTOCOL` and saw an
/// extended CONNECT with `:protocol websocket` from Duplex's client.
#[tokio::test]
async fn node_h2_server_sees_extended_connect_from_duplex() {
    let mut process = PeerProcess::spawn(PEER, vec!["server".into()]);
    let listening = process.expect("listening").await;
    let port = listening["port"].as_u64().expect("a port");
    let url = format!("ws://127.0.0.1:{port}/");
    let outcome = common::run_duplex_client(
        &url,
        &duplex::Config::client(),
        &[0, 125],
        false,
        Closing::ByDuplex(1000, ""),
        true,
    )
    .await;
    assert!(outcome.is_ok(), "{outcome:?}");
    let request = process.expect("http2").await;
    assert_eq!(request["method"], "CONNECT", "{request}");
    assert_eq!(request["protocol"], "websocket", "{request}");
    process.kill().await;
}
