//! Tests across both sides: a client's request through the server and back,
//! and properties over random input and random splits.

use bytes::BytesMut;
use http::{HeaderMap, StatusCode};
use proptest::prelude::*;

use super::client::{ClientHandshake, ResponseError};
use super::peers;
use super::server::{
    HandshakeError, RequestParser, UpgradeRequest, accept_response, write_response,
};
use crate::extension::ExtensionOffer;

const KEY: [u8; 16] = *b"0123456789abcdef";

/// A masked text frame "Hi" (mask 01 02 03 04).
const CLIENT_FRAME: &[u8] = b"\x81\x82\x01\x02\x03\x04\x49\x6b";
/// An unmasked text frame "Hi".
const SERVER_FRAME: &[u8] = b"\x81\x02Hi";

/// Feeds `input` to a server parser in chunks cut at `cuts`; returns the
/// first outcome, with the offset in `input` where the header block ended
/// when there is one, or `None` if no outcome came.
fn server_outcome(
    input: &[u8],
    cuts: &[usize],
) -> Option<(Result<UpgradeRequest, HandshakeError>, Option<usize>)> {
    let mut parser = RequestParser::new();
    let mut start = 0;
    for end in chunk_ends(input.len(), cuts) {
        let chunk = &input[start..end];
        match parser.feed(chunk) {
            Ok(None) => {}
            Ok(Some((request, consumed))) => {
                assert!(consumed <= chunk.len());
                return Some((Ok(request), Some(start + consumed)));
            }
            Err(error) => return Some((Err(error), None)),
        }
        start = end;
    }
    None
}

/// Feeds `input` to a client handshake in chunks cut at `cuts`; returns the
/// first outcome as text, with the offset in `input` where the header block
/// ended when it is reported, or `None` if no outcome came.
fn client_outcome(
    mut handshake: ClientHandshake,
    input: &[u8],
    cuts: &[usize],
) -> Option<(String, Option<usize>)> {
    let mut start = 0;
    for end in chunk_ends(input.len(), cuts) {
        let chunk = &input[start..end];
        match handshake.feed(chunk) {
            Ok(None) => {}
            Ok(Some((accepted, consumed))) => {
                assert!(consumed <= chunk.len());
                assert!(matches!(handshake.feed(b"x"), Err(ResponseError::Finished)));
                return Some((format!("{accepted:?}"), Some(start + consumed)));
            }
            Err(ResponseError::Rejected {
                status,
                response,
                consumed,
            }) => {
                assert!(consumed <= chunk.len());
                return Some((format!("{status} {response:?}"), Some(start + consumed)));
            }
            Err(error) => return Some((format!("{error:?}"), None)),
        }
        start = end;
    }
    None
}

/// Chunk end offsets for `len` bytes cut at `cuts` (taken modulo `len + 1`).
fn chunk_ends(len: usize, cuts: &[usize]) -> Vec<usize> {
    let mut ends: Vec<usize> = cuts.iter().map(|cut| cut % (len + 1)).collect();
    ends.push(len);
    ends.sort_unstable();
    ends
}

fn client() -> ClientHandshake {
    ClientHandshake::builder("ws://example.com/chat", KEY)
        .protocols(["chat"])
        .extensions_header("permessage-deflate; client_max_window_bits")
        .build()
        .unwrap()
}

fn request_bytes(handshake: &ClientHandshake) -> BytesMut {
    let mut bytes = BytesMut::new();
    handshake.write_request(&mut bytes);
    bytes
}

#[test]
fn client_request_through_server_and_back() {
    let mut client = ClientHandshake::builder("wss://example.com/chat?room=7", KEY)
        .origin("https://example.com")
        .protocols(["v2.chat", "v1.chat"])
        .extensions([
            ExtensionOffer::new("permessage-deflate").param("client_max_window_bits", None)
        ])
        .build()
        .unwrap();
    let mut wire = request_bytes(&client);
    wire.extend_from_slice(CLIENT_FRAME);

    let (request, consumed) = RequestParser::new().feed(&wire).unwrap().unwrap();
    assert_eq!(&wire[consumed..], CLIENT_FRAME);
    assert_eq!(request.path(), "/chat");
    assert_eq!(request.query(), Some("room=7"));
    assert_eq!(request.host(), "example.com");
    assert_eq!(request.origin(), Some("https://example.com"));
    assert_eq!(request.key(), client.key());
    assert_eq!(request.protocols(), ["v2.chat", "v1.chat"]);
    assert_eq!(request.extensions()[0].name, "permessage-deflate");

    let response = accept_response(
        &request,
        Some("v1.chat"),
        Some("permessage-deflate; client_max_window_bits=15"),
        &HeaderMap::new(),
    )
    .unwrap();
    let mut wire = BytesMut::new();
    write_response(&response, &mut wire);
    wire.extend_from_slice(SERVER_FRAME);

    let (accepted, consumed) = client.feed(&wire).unwrap().unwrap();
    assert_eq!(&wire[consumed..], SERVER_FRAME);
    assert_eq!(accepted.protocol(), Some("v1.chat"));
    assert_eq!(
        accepted.extensions(),
        [ExtensionOffer::new("permessage-deflate")
            .param("client_max_window_bits", Some("15".into()))]
    );
}

#[test]
fn server_rejection_reaches_the_client() {
    let mut client = client();
    let request = RequestParser::new()
        .feed(&request_bytes(&client))
        .unwrap()
        .unwrap()
        .0;
    assert_eq!(request.origin(), None);
    let error = HandshakeError::Forbidden("origin not allowed".into());
    let mut wire = BytesMut::new();
    write_response(&error.to_response(), &mut wire);
    match client.feed(&wire) {
        Err(ResponseError::Rejected {
            status, consumed, ..
        }) => {
            assert_eq!(status, StatusCode::FORBIDDEN);
            assert_eq!(&wire[consumed..], b"origin not allowed");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn plain_http_get_gets_426_a_client_can_read() {
    let text = b"GET / HTTP/1.1\r\nHost: example.com\r\nAccept: text/html\r\n\r\n";
    let error = RequestParser::new().feed(text).unwrap_err();
    let mut wire = BytesMut::new();
    write_response(&error.to_response(), &mut wire);
    match client().feed(&wire) {
        Err(ResponseError::Rejected {
            status, response, ..
        }) => {
            assert_eq!(status, StatusCode::UPGRADE_REQUIRED);
            assert_eq!(response.headers()["sec-websocket-version"], "13");
            assert_eq!(response.headers()["upgrade"], "websocket");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn peer_requests_parse_the_same_byte_by_byte() {
    for text in [peers::CHROMIUM, peers::FIREFOX, peers::PYTHON, peers::NODE] {
        let mut input = text.as_bytes().to_vec();
        input.extend_from_slice(CLIENT_FRAME);
        let whole = server_outcome(&input, &[]);
        let byte_cuts: Vec<usize> = (1..input.len()).collect();
        let byte_by_byte = server_outcome(&input, &byte_cuts);
        assert_eq!(format!("{whole:?}"), format!("{byte_by_byte:?}"));
        assert!(matches!(whole, Some((Ok(_), Some(end))) if end == text.len()));
    }
}

#[test]
fn peer_response_parses_the_same_byte_by_byte() {
    let client = || {
        ClientHandshake::builder("ws://localhost:8765/", std::array::from_fn(|i| i as u8))
            .extensions_header("permessage-deflate; client_max_window_bits")
            .build()
            .unwrap()
    };
    let mut input = peers::PYTHON_RESPONSE.as_bytes().to_vec();
    input.extend_from_slice(SERVER_FRAME);
    let whole = client_outcome(client(), &input, &[]);
    let byte_cuts: Vec<usize> = (1..input.len()).collect();
    assert_eq!(whole, client_outcome(client(), &input, &byte_cuts));
    let (text, end) = whole.unwrap();
    assert!(text.starts_with("Accepted"), "{text}");
    assert_eq!(end, Some(peers::PYTHON_RESPONSE.len()));
}

/// What a client may be built from: URI, key, subprotocols, extension offers.
type Options = (String, [u8; 16], Vec<String>, Vec<ExtensionOffer>);

/// Random valid client options.
fn options() -> impl Strategy<Value = Options> {
    let param = ("[a-z_]{1,8}", proptest::option::of("[0-9]{1,3}"));
    let offer =
        ("x-[a-z]{1,6}", proptest::collection::vec(param, 0..3)).prop_map(|(name, params)| {
            params
                .into_iter()
                .fold(ExtensionOffer::new(name), |offer, (p, v)| offer.param(p, v))
        });
    (
        "(/[a-zA-Z0-9._~-]{0,10}){0,4}",
        proptest::option::of("[a-z0-9=&]{0,12}"),
        "[a-z]{1,10}(\\.[a-z]{1,5}){0,2}",
        proptest::option::of(1u16..),
        any::<[u8; 16]>(),
        proptest::collection::btree_set("[a-z][a-z0-9.]{0,8}", 0..4),
        proptest::collection::vec(offer, 0..3),
    )
        .prop_map(|(path, query, host, port, key, protocols, offers)| {
            let port = port.map(|port| format!(":{port}")).unwrap_or_default();
            let query = query.map(|query| format!("?{query}")).unwrap_or_default();
            let uri = format!("ws://{host}{port}{path}{query}");
            (uri, key, protocols.into_iter().collect(), offers)
        })
}

fn build((uri, key, protocols, offers): &Options) -> ClientHandshake {
    ClientHandshake::builder(uri, *key)
        .protocols(protocols.iter().cloned())
        .extensions(offers.iter().cloned())
        .build()
        .unwrap()
}

/// `bytes` with each `(index, byte)` edit applied (index modulo length).
fn mutate(bytes: &[u8], edits: &[(usize, u8)]) -> Vec<u8> {
    let mut bytes = bytes.to_vec();
    for &(index, byte) in edits {
        if !bytes.is_empty() {
            let i = index % bytes.len();
            bytes[i] = byte;
        }
    }
    bytes
}

fn response_for(client: &ClientHandshake) -> Vec<u8> {
    let request = RequestParser::new()
        .feed(&request_bytes(client))
        .unwrap()
        .unwrap()
        .0;
    let protocol = request.protocols().first().cloned();
    let extensions = crate::extension::format_extensions(request.extensions());
    let response = accept_response(
        &request,
        protocol.as_deref(),
        Some(&extensions),
        &HeaderMap::new(),
    )
    .unwrap();
    let mut wire = BytesMut::new();
    write_response(&response, &mut wire);
    wire.to_vec()
}

proptest! {
    #[test]
    fn random_bytes_never_panic(
        input in proptest::collection::vec(any::<u8>(), 0..2048),
        cuts in proptest::collection::vec(any::<usize>(), 0..16),
    ) {
        server_outcome(&input, &cuts);
        client_outcome(client(), &input, &cuts);
    }

    #[test]
    fn mutated_handshakes_never_panic_and_ignore_splits(
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..6),
        cuts in proptest::collection::vec(any::<usize>(), 0..16),
    ) {
        let mut request = request_bytes(&client()).to_vec();
        request.extend_from_slice(CLIENT_FRAME);
        let request = mutate(&request, &edits);
        let whole = server_outcome(&request, &[]);
        let split = server_outcome(&request, &cuts);
        prop_assert_eq!(format!("{whole:?}"), format!("{split:?}"));

        let mut response = response_for(&client());
        response.extend_from_slice(SERVER_FRAME);
        let response = mutate(&response, &edits);
        let whole = client_outcome(client(), &response, &[]);
        let split = client_outcome(client(), &response, &cuts);
        prop_assert_eq!(whole, split);
    }

    #[test]
    fn valid_requests_parse_the_same_byte_by_byte(options in options()) {
        let client = build(&options);
        let mut input = request_bytes(&client).to_vec();
        let head_len = input.len();
        input.extend_from_slice(CLIENT_FRAME);
        let whole = server_outcome(&input, &[]);
        let byte_cuts: Vec<usize> = (1..input.len()).collect();
        let byte_by_byte = server_outcome(&input, &byte_cuts);
        prop_assert_eq!(format!("{whole:?}"), format!("{byte_by_byte:?}"));
        let Some((Ok(request), end)) = whole else {
            panic!("{whole:?}");
        };
        prop_assert_eq!(end, Some(head_len));
        // What the client writes, the server reads back as written.
        prop_assert_eq!(request.key(), client.key());
        prop_assert_eq!(request.uri().path_and_query(), client.request().uri().path_and_query());
        prop_assert_eq!(request.headers(), client.request().headers());
        prop_assert_eq!(request.protocols(), &options.2[..]);
        prop_assert_eq!(request.extensions(), &options.3[..]);
    }

    #[test]
    fn valid_responses_parse_the_same_byte_by_byte(options in options()) {
        let mut input = response_for(&build(&options));
        let head_len = input.len();
        input.extend_from_slice(SERVER_FRAME);
        let byte_cuts: Vec<usize> = (1..input.len()).collect();
        let whole = client_outcome(build(&options), &input, &[]);
        let byte_by_byte = client_outcome(build(&options), &input, &byte_cuts);
        prop_assert_eq!(&whole, &byte_by_byte);
        prop_assert_eq!(whole.and_then(|(_, end)| end), Some(head_len));
        let (accepted, _) = build(&options).feed(&input).unwrap().unwrap();
        prop_assert_eq!(accepted.protocol(), options.2.first().map(String::as_str));
        prop_assert_eq!(accepted.extensions(), &options.3[..]);
    }
}

/// RFC 8441: the client's extended CONNECT passes the server's validation,
/// the server's 200 passes the client's check, and neither carries the
/// HTTP/1.1-only headers (no key, no accept, no Upgrade or Connection).
#[test]
fn extended_connect_round_trip() {
    let mut client = ClientHandshake::builder("wss://example.com:8443/chat?room=1", KEY)
        .protocols(["v2.chat", "v1.chat"])
        .origin("https://example.com")
        .extensions([ExtensionOffer::new("permessage-deflate")])
        .build()
        .unwrap();
    let request = client.extended_connect_request(true);
    assert_eq!(request.method(), http::Method::CONNECT);
    assert_eq!(
        request.uri().to_string(),
        "https://example.com:8443/chat?room=1"
    );
    for name in ["host", "upgrade", "connection", "sec-websocket-key"] {
        assert!(!request.headers().contains_key(name), "{name}");
    }
    assert_eq!(request.headers()["sec-websocket-version"], "13");
    let request = UpgradeRequest::validate_extended_connect(request, Some("websocket")).unwrap();
    assert!(request.is_extended_connect());
    assert_eq!(request.key(), "");
    assert_eq!(request.host(), "example.com:8443");
    assert_eq!(request.path(), "/chat");
    assert_eq!(request.origin(), Some("https://example.com"));
    assert_eq!(request.protocols(), ["v2.chat", "v1.chat"]);
    let response = accept_response(
        &request,
        Some("v1.chat"),
        Some("permessage-deflate"),
        &HeaderMap::new(),
    )
    .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    for name in ["upgrade", "connection", "sec-websocket-accept"] {
        assert!(!response.headers().contains_key(name), "{name}");
    }
    let accepted = client.check_extended_connect(response).unwrap();
    assert_eq!(accepted.protocol(), Some("v1.chat"));
    assert_eq!(accepted.extensions().len(), 1);
    assert!(matches!(
        client.check_extended_connect(http::Response::new(())),
        Err(ResponseError::Finished)
    ));
}

#[test]
fn extended_connect_refusals() {
    let client = ClientHandshake::builder("ws://example.com/", KEY)
        .build()
        .unwrap();
    let good = || client.extended_connect_request(false);
    let validate = UpgradeRequest::validate_extended_connect;
    let status = |r: Result<UpgradeRequest, HandshakeError>| r.unwrap_err().status().as_u16();
    assert!(validate(good(), Some("websocket")).is_ok());
    assert_eq!(status(validate(good(), None)), 400, "a plain CONNECT");
    assert!(matches!(
        validate(good(), Some("h2c")),
        Err(HandshakeError::ExtendedConnectProtocol(Some(p))) if p == "h2c"
    ));
    let mut get = good();
    *get.method_mut() = http::Method::GET;
    assert_eq!(status(validate(get, Some("websocket"))), 405);
    let mut no_version = good();
    no_version.headers_mut().remove("sec-websocket-version");
    assert_eq!(status(validate(no_version, Some("websocket"))), 426);
    let mut old_version = good();
    old_version
        .headers_mut()
        .insert("sec-websocket-version", "8".parse().unwrap());
    assert_eq!(status(validate(old_version, Some("websocket"))), 426);
    let mut no_authority = good();
    *no_authority.uri_mut() = "/".parse().unwrap();
    assert_eq!(status(validate(no_authority, Some("websocket"))), 400);
    let mut bad_protocols = good();
    bad_protocols
        .headers_mut()
        .insert("sec-websocket-protocol", "a, a".parse().unwrap());
    assert!(matches!(
        validate(bad_protocols, Some("websocket")),
        Err(HandshakeError::InvalidProtocols)
    ));
    // A refusal by the server is reported with its status.
    let mut client = ClientHandshake::builder("ws://example.com/", KEY)
        .build()
        .unwrap();
    let mut forbidden = http::Response::new(());
    *forbidden.status_mut() = StatusCode::FORBIDDEN;
    assert!(matches!(
        client.check_extended_connect(forbidden),
        Err(ResponseError::Rejected { status, .. }) if status == StatusCode::FORBIDDEN
    ));
}
