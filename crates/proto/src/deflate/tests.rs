//! Tests of negotiation and the codec, with literal header strings and the
//! RFC 7692 §7.2.3 vectors. `puff` below is an independent, test-only deflate
//! decoder (after Mark Adler's puff.c) that also reports the longest
//! back-reference distance, to check window limits zlib-rs's inflater does
//! not enforce.

use bytes::BytesMut;
use proptest::prelude::*;

use super::*;
use crate::Role;
use crate::extension::{ExtensionOffer, parse_extensions};

fn offers(header: &str) -> Vec<ExtensionOffer> {
    parse_extensions([header.as_bytes()]).expect("header parses")
}

fn one(header: &str) -> ExtensionOffer {
    let mut all = offers(header);
    assert_eq!(all.len(), 1, "{header}");
    all.remove(0)
}

fn answer(header: &str, config: &DeflateConfig) -> Option<String> {
    negotiate(&offers(header), config).map(|params| params.response_header())
}

fn cfg(server_bits: u8, client_bits: u8) -> DeflateConfig {
    DeflateConfig {
        server_max_window_bits: server_bits,
        client_max_window_bits: client_bits,
        ..DeflateConfig::default()
    }
}

// ---------------------------------------------------------------- server side

#[test]
fn server_answers_chromium_offer() {
    let header = "permessage-deflate; client_max_window_bits";
    assert_eq!(
        answer(header, &DeflateConfig::default()).as_deref(),
        Some("permessage-deflate; server_max_window_bits=12; client_max_window_bits=12")
    );
    assert_eq!(
        answer(header, &cfg(15, 15)).as_deref(),
        Some("permessage-deflate; client_max_window_bits=15")
    );
    assert_eq!(
        answer(header, &cfg(10, 10)).as_deref(),
        Some("permessage-deflate; server_max_window_bits=10; client_max_window_bits=10")
    );
    let params = negotiate(&offers(header), &cfg(10, 9)).unwrap();
    assert_eq!(params.compress_window_bits(Role::Server), 10);
    assert_eq!(params.decompress_window_bits(Role::Server), 9);
    assert!(!params.compress_no_context_takeover(Role::Server));
    assert!(!params.decompress_no_context_takeover(Role::Server));
}

#[test]
fn server_answers_firefox_bare_offer() {
    let header = "permessage-deflate";
    assert_eq!(
        answer(header, &DeflateConfig::default()).as_deref(),
        Some("permessage-deflate; server_max_window_bits=12")
    );
    assert_eq!(
        answer(header, &cfg(15, 10)).as_deref(),
        Some("permessage-deflate")
    );
    // The client did not offer client_max_window_bits: it may use 15.
    let params = negotiate(&offers(header), &cfg(10, 10)).unwrap();
    assert_eq!(params.client_max_window_bits, None);
    assert_eq!(params.decompress_window_bits(Role::Server), 15);
    assert_eq!(params.compress_window_bits(Role::Client), 15);
}

#[test]
fn server_picks_first_acceptable_of_autobahn_style_offers() {
    // Autobahn 13.7: three offers in one header.
    let header = "permessage-deflate; server_no_context_takeover; server_max_window_bits=8, \
                  permessage-deflate; server_no_context_takeover, permessage-deflate";
    assert_eq!(
        answer(header, &cfg(15, 15)).as_deref(),
        Some("permessage-deflate; server_no_context_takeover; server_max_window_bits=8")
    );
    // When the first is malformed, the second is taken.
    let header = "permessage-deflate; server_max_window_bits=7, \
                  permessage-deflate; server_no_context_takeover, permessage-deflate";
    assert_eq!(
        answer(header, &cfg(15, 15)).as_deref(),
        Some("permessage-deflate; server_no_context_takeover")
    );
    // Other extensions are skipped.
    let header = "x-webkit-deflate-frame, permessage-deflate; client_max_window_bits=11";
    assert_eq!(
        answer(header, &cfg(15, 12)).as_deref(),
        Some("permessage-deflate; client_max_window_bits=11")
    );
    assert_eq!(answer("x-webkit-deflate-frame", &cfg(15, 15)), None);
    assert_eq!(answer("", &cfg(15, 15)), None);
}

#[test]
fn server_honours_window_and_takeover_requests() {
    let config = cfg(12, 12);
    let cases = [
        (
            "permessage-deflate; server_max_window_bits=10",
            "permessage-deflate; server_max_window_bits=10",
        ),
        (
            "permessage-deflate; server_max_window_bits=15",
            "permessage-deflate; server_max_window_bits=12",
        ),
        (
            "permessage-deflate; client_max_window_bits=9",
            "permessage-deflate; server_max_window_bits=12; client_max_window_bits=9",
        ),
        (
            "permessage-deflate; client_max_window_bits=\"10\"",
            "permessage-deflate; server_max_window_bits=12; client_max_window_bits=10",
        ),
        (
            "permessage-deflate; server_no_context_takeover",
            "permessage-deflate; server_no_context_takeover; server_max_window_bits=12",
        ),
        (
            "permessage-deflate; client_no_context_takeover",
            "permessage-deflate; client_no_context_takeover; server_max_window_bits=12",
        ),
        (
            "permessage-deflate;client_max_window_bits;server_max_window_bits=9;\
             client_no_context_takeover;server_no_context_takeover",
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
             server_max_window_bits=9; client_max_window_bits=12",
        ),
    ];
    for (offer, expected) in cases {
        assert_eq!(answer(offer, &config).as_deref(), Some(expected), "{offer}");
    }
    // A server at 15 must still echo an offered server_max_window_bits.
    assert_eq!(
        answer(
            "permessage-deflate; server_max_window_bits=15",
            &cfg(15, 15)
        )
        .as_deref(),
        Some("permessage-deflate; server_max_window_bits=15")
    );
}

#[test]
fn server_forces_no_context_takeover_from_config() {
    let config = DeflateConfig {
        server_no_context_takeover: true,
        client_no_context_takeover: true,
        ..cfg(15, 15)
    };
    let params = negotiate(&offers("permessage-deflate"), &config).unwrap();
    assert_eq!(
        params.response_header(),
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
    );
    assert!(params.compress_no_context_takeover(Role::Server));
    assert!(params.decompress_no_context_takeover(Role::Server));
}

#[test]
fn the_shared_policy_answers_browsers_with_no_context_takeover_both_ways() {
    let config = DeflateConfig::shared();
    // Chromium's offer, Firefox's bare one, and a client asking for less.
    for (offer, expected) in [
        (
            "permessage-deflate; client_max_window_bits",
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=12; client_max_window_bits=12",
        ),
        (
            "permessage-deflate",
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=12",
        ),
        (
            "permessage-deflate; server_max_window_bits=10",
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10",
        ),
    ] {
        let params = negotiate(&offers(offer), &config).unwrap();
        assert_eq!(params.response_header(), expected, "{offer}");
        assert!(params.compress_no_context_takeover(Role::Server), "{offer}");
        assert!(
            params.decompress_no_context_takeover(Role::Server),
            "{offer}"
        );
        // The answer is valid for the offer: the client accepts it and
        // ends up with the same agreement.
        let answer = &offers(expected)[0];
        let accepted = accept_response(answer, &offers(offer)[0]).unwrap();
        assert!(accepted.server_no_context_takeover, "{offer}");
        assert_eq!(
            accepted.compress_window_bits(Role::Server),
            params.compress_window_bits(Role::Server),
            "{offer}"
        );
    }
    // Our own client, which offers what Chromium does.
    let answer = &offers(
        &negotiate(&[client_offer(&DeflateConfig::client())], &config)
            .unwrap()
            .response_header(),
    )[0];
    assert!(client_accept(answer, &DeflateConfig::client()).is_ok());
}

#[test]
fn server_declines_bad_offers() {
    let bad = [
        (
            "permessage-deflate; foo",
            NegotiationError::UnknownParameter("foo".into()),
        ),
        (
            "permessage-deflate; Server_No_Context_Takeover",
            NegotiationError::UnknownParameter("Server_No_Context_Takeover".into()),
        ),
        (
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            NegotiationError::DuplicateParameter("server_no_context_takeover".into()),
        ),
        (
            "permessage-deflate; client_max_window_bits; client_max_window_bits=10",
            NegotiationError::DuplicateParameter("client_max_window_bits".into()),
        ),
    ];
    for (header, error) in bad {
        assert_eq!(
            negotiate_offer(&one(header), &DeflateConfig::default()),
            Err(error),
            "{header}"
        );
        assert_eq!(answer(header, &DeflateConfig::default()), None, "{header}");
    }
    let bad_values = [
        ("server_max_window_bits", None),
        ("server_max_window_bits", Some("7")),
        ("server_max_window_bits", Some("16")),
        ("server_max_window_bits", Some("010")),
        ("server_max_window_bits", Some("09")),
        ("server_max_window_bits", Some("+9")),
        ("server_max_window_bits", Some("1e1")),
        ("client_max_window_bits", Some("0")),
        ("client_max_window_bits", Some("abc")),
        ("client_max_window_bits", Some("100")),
        ("server_no_context_takeover", Some("1")),
        ("client_no_context_takeover", Some("true")),
    ];
    for (name, value) in bad_values {
        let offer = ExtensionOffer::new(EXTENSION_NAME).param(name, value.map(String::from));
        let header = offer.to_string();
        assert_eq!(
            negotiate_offer(&offer, &DeflateConfig::default()),
            Err(NegotiationError::InvalidValue {
                name: name.into(),
                value: value.map(String::from),
            }),
            "{header}"
        );
        assert_eq!(answer(&header, &DeflateConfig::default()), None, "{header}");
    }
}

#[test]
fn config_windows_are_clamped() {
    let config = cfg(3, 200);
    assert_eq!(
        answer("permessage-deflate; client_max_window_bits", &config).as_deref(),
        Some("permessage-deflate; server_max_window_bits=8; client_max_window_bits=15")
    );
    assert_eq!(
        client_offer(&config).to_string(),
        "permessage-deflate; server_max_window_bits=8; client_max_window_bits"
    );
}

// ---------------------------------------------------------------- client side

#[test]
fn client_offers() {
    assert_eq!(
        client_offer(&DeflateConfig::client()).to_string(),
        "permessage-deflate; client_max_window_bits"
    );
    assert_eq!(
        client_offer(&DeflateConfig::default()).to_string(),
        "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12"
    );
    let config = DeflateConfig {
        server_no_context_takeover: true,
        client_no_context_takeover: true,
        ..cfg(10, 15)
    };
    assert_eq!(
        client_offer(&config).to_string(),
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
         server_max_window_bits=10; client_max_window_bits"
    );
}

#[test]
fn client_accepts_python_websockets_answer() {
    let response = one("permessage-deflate; server_max_window_bits=12; client_max_window_bits=12");
    let params = client_accept(&response, &DeflateConfig::client()).unwrap();
    assert_eq!(
        params,
        DeflateParams {
            server_no_context_takeover: false,
            client_no_context_takeover: false,
            server_max_window_bits: Some(12),
            client_max_window_bits: Some(12),
        }
    );
    assert_eq!(params.compress_window_bits(Role::Client), 12);
    assert_eq!(params.decompress_window_bits(Role::Client), 12);
}

#[test]
fn client_accepts_valid_answers() {
    let client = DeflateConfig::client();
    let bare = client_accept(&one("permessage-deflate"), &client).unwrap();
    assert_eq!(bare, DeflateParams::default());
    assert_eq!(bare.compress_window_bits(Role::Client), 15);

    // The server may add a window limit or no-context-takeover unasked.
    let params = client_accept(
        &one("permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=9"),
        &client,
    )
    .unwrap();
    assert!(params.decompress_no_context_takeover(Role::Client));
    assert!(params.compress_no_context_takeover(Role::Client));
    assert_eq!(params.decompress_window_bits(Role::Client), 9);

    // A client that offered a smaller window keeps to it even if the server
    // does not answer the parameter; so does a client that offered
    // client_no_context_takeover.
    let config = DeflateConfig {
        client_no_context_takeover: true,
        ..cfg(15, 11)
    };
    let params = client_accept(&one("permessage-deflate"), &config).unwrap();
    assert_eq!(params.compress_window_bits(Role::Client), 11);
    assert!(params.compress_no_context_takeover(Role::Client));

    // Requested limits echoed, same or smaller.
    let config = DeflateConfig {
        server_no_context_takeover: true,
        ..cfg(10, 12)
    };
    let params = client_accept(
        &one("permessage-deflate; server_no_context_takeover; server_max_window_bits=10; client_max_window_bits=8"),
        &config,
    )
    .unwrap();
    assert_eq!(params.decompress_window_bits(Role::Client), 10);
    assert_eq!(params.compress_window_bits(Role::Client), 8);
}

#[test]
fn client_fails_bad_answers() {
    let client = DeflateConfig::client();
    let cases: Vec<(&str, DeflateConfig, NegotiationError)> = vec![
        (
            "x-webkit-deflate-frame",
            client.clone(),
            NegotiationError::OtherExtension("x-webkit-deflate-frame".into()),
        ),
        (
            "permessage-deflate; foo=1",
            client.clone(),
            NegotiationError::UnknownParameter("foo".into()),
        ),
        (
            "permessage-deflate; client_no_context_takeover; client_no_context_takeover",
            client.clone(),
            NegotiationError::DuplicateParameter("client_no_context_takeover".into()),
        ),
        (
            "permessage-deflate; client_max_window_bits",
            client.clone(),
            NegotiationError::InvalidValue {
                name: "client_max_window_bits".into(),
                value: None,
            },
        ),
        (
            "permessage-deflate; server_max_window_bits=16",
            client.clone(),
            NegotiationError::InvalidValue {
                name: "server_max_window_bits".into(),
                value: Some("16".into()),
            },
        ),
        (
            "permessage-deflate; server_max_window_bits=12",
            cfg(10, 15),
            NegotiationError::WindowTooLarge {
                name: "server_max_window_bits",
                offered: 10,
                answered: 12,
            },
        ),
        (
            "permessage-deflate",
            cfg(10, 15),
            NegotiationError::Missing("server_max_window_bits"),
        ),
        (
            "permessage-deflate; client_max_window_bits=13",
            cfg(15, 12),
            NegotiationError::WindowTooLarge {
                name: "client_max_window_bits",
                offered: 12,
                answered: 13,
            },
        ),
        (
            "permessage-deflate",
            DeflateConfig {
                server_no_context_takeover: true,
                ..DeflateConfig::client()
            },
            NegotiationError::Missing("server_no_context_takeover"),
        ),
    ];
    for (header, config, error) in cases {
        assert_eq!(client_accept(&one(header), &config), Err(error), "{header}");
    }
    // The server answers client_max_window_bits the client did not offer.
    assert_eq!(
        accept_response(
            &one("permessage-deflate; client_max_window_bits=10"),
            &one("permessage-deflate")
        ),
        Err(NegotiationError::Unrequested("client_max_window_bits"))
    );
}

#[test]
fn negotiation_round_trips_between_our_client_and_server() {
    let windows = [8u8, 9, 12, 15];
    for server_bits in windows {
        for client_bits in windows {
            for flags in 0..4 {
                let client = DeflateConfig {
                    server_no_context_takeover: flags & 1 != 0,
                    client_no_context_takeover: flags & 2 != 0,
                    ..cfg(server_bits, client_bits)
                };
                let server = cfg(client_bits, server_bits);
                let offer = client_offer(&client).to_string();
                let agreed = negotiate(&offers(&offer), &server).expect("accepted");
                let response = one(&agreed.response_header());
                let seen = client_accept(&response, &client).expect("valid answer");
                for role in [Role::Client, Role::Server] {
                    // What each end compresses with, the other decompresses with.
                    let (us, them) = match role {
                        Role::Client => (&seen, &agreed),
                        Role::Server => (&agreed, &seen),
                    };
                    let peer = match role {
                        Role::Client => Role::Server,
                        Role::Server => Role::Client,
                    };
                    assert!(
                        us.compress_window_bits(role) <= them.decompress_window_bits(peer),
                        "{offer} -> {response}"
                    );
                    assert!(
                        !them.decompress_no_context_takeover(peer)
                            || us.compress_no_context_takeover(role),
                        "{offer} -> {response}"
                    );
                }
                assert_eq!(
                    seen.compress_window_bits(Role::Client),
                    client_bits.min(server_bits)
                );
                assert_eq!(
                    agreed.compress_window_bits(Role::Server),
                    server_bits.min(client_bits)
                );
            }
        }
    }
}

// ------------------------------------------------------------------- codec

fn compress(compressor: &mut Compressor, input: &[u8]) -> Vec<u8> {
    let mut out = BytesMut::new();
    compressor.compress(input, &mut out).unwrap();
    out.to_vec()
}

fn decompress(decompressor: &mut Decompressor, input: &[u8]) -> Result<Vec<u8>, DecompressError> {
    let mut out = BytesMut::new();
    decompressor.decompress(input, &mut out, usize::MAX)?;
    decompressor.finish_message(&mut out, usize::MAX)?;
    Ok(out.to_vec())
}

const HELLO: &[u8] = b"Hello";

#[test]
fn rfc7692_7_2_3_1_hello() {
    let mut compressor = Compressor::new(15, true, 6);
    assert_eq!(
        compress(&mut compressor, HELLO),
        [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]
    );
    let mut decompressor = Decompressor::new(15, true);
    assert_eq!(
        decompress(
            &mut decompressor,
            &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]
        )
        .unwrap(),
        HELLO
    );
}

#[test]
fn rfc7692_7_2_3_2_context_takeover() {
    let mut compressor = Compressor::new(15, false, 6);
    assert_eq!(
        compress(&mut compressor, HELLO),
        [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]
    );
    assert_eq!(
        compress(&mut compressor, HELLO),
        [0xf2, 0x00, 0x11, 0x00, 0x00]
    );
    let mut decompressor = Decompressor::new(15, false);
    assert_eq!(
        decompress(
            &mut decompressor,
            &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]
        )
        .unwrap(),
        HELLO
    );
    assert_eq!(
        decompress(&mut decompressor, &[0xf2, 0x00, 0x11, 0x00, 0x00]).unwrap(),
        HELLO
    );
    // Without context takeover the second message cannot be understood.
    let mut reset = Decompressor::new(15, true);
    decompress(&mut reset, &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]).unwrap();
    assert!(matches!(
        decompress(&mut reset, &[0xf2, 0x00, 0x11, 0x00, 0x00]),
        Err(DecompressError::Invalid(_))
    ));
}

#[test]
fn rfc7692_7_2_3_3_bfinal_then_context_takeover() {
    let mut decompressor = Decompressor::new(15, false);
    let bfinal = [0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00];
    assert_eq!(decompress(&mut decompressor, &bfinal).unwrap(), HELLO);
    // The next message refers back into the first one's window.
    assert_eq!(
        decompress(&mut decompressor, &[0xf2, 0x00, 0x11, 0x00, 0x00]).unwrap(),
        HELLO
    );
    // Without the trailing 00 after the final block too.
    let mut decompressor = Decompressor::new(15, false);
    assert_eq!(decompress(&mut decompressor, &bfinal[..7]).unwrap(), HELLO);
    assert_eq!(
        decompress(&mut decompressor, &[0xf2, 0x00, 0x11, 0x00, 0x00]).unwrap(),
        HELLO
    );
    // And fed byte by byte.
    let mut decompressor = Decompressor::new(15, false);
    let mut out = BytesMut::new();
    for byte in bfinal {
        decompressor.decompress(&[byte], &mut out, 5).unwrap();
    }
    decompressor.finish_message(&mut out, 5).unwrap();
    assert_eq!(&out[..], HELLO);
}

#[test]
fn rfc7692_7_2_3_4_two_blocks_and_7_2_3_5_stored() {
    let mut decompressor = Decompressor::new(15, false);
    let two_blocks = [
        0xf2, 0x48, 0x05, 0x00, 0x00, 0x00, 0xff, 0xff, 0xca, 0xc9, 0xc9, 0x07, 0x00,
    ];
    assert_eq!(decompress(&mut decompressor, &two_blocks).unwrap(), HELLO);
    let stored = [
        0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00,
    ];
    assert_eq!(decompress(&mut decompressor, &stored).unwrap(), HELLO);
    // Level 0 sends stored blocks, which we read back too.
    let mut compressor = Compressor::new(15, false, 0);
    let data = compress(&mut compressor, HELLO);
    assert_eq!(
        data,
        [
            0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00
        ]
    );
    assert_eq!(decompress(&mut decompressor, &data).unwrap(), HELLO);
}

#[test]
fn rfc7692_7_2_3_6_empty_message() {
    for no_context_takeover in [false, true] {
        let mut compressor = Compressor::new(15, no_context_takeover, 6);
        let mut decompressor = Decompressor::new(15, no_context_takeover);
        assert_eq!(compress(&mut compressor, b""), [0x00]);
        assert_eq!(decompress(&mut decompressor, &[0x00]).unwrap(), b"");
        let hello = compress(&mut compressor, HELLO);
        assert_eq!(decompress(&mut decompressor, &hello).unwrap(), HELLO);
        assert_eq!(compress(&mut compressor, b""), [0x00]);
        assert_eq!(decompress(&mut decompressor, &[0x00]).unwrap(), b"");
        // An empty compressed payload is taken as an empty message, and the
        // context carries on.
        assert_eq!(decompress(&mut decompressor, &[]).unwrap(), b"");
        let hello = compress(&mut compressor, HELLO);
        assert_eq!(decompress(&mut decompressor, &hello).unwrap(), HELLO);
    }
}

#[test]
fn state_lives_only_as_long_as_needed() {
    let text = b"a message long enough to be worth compressing, a message long enough";
    // No context takeover: nothing held between messages.
    let mut compressor = Compressor::new(10, true, 6);
    let mut decompressor = Decompressor::new(10, true);
    assert!(!compressor.is_allocated() && !decompressor.is_allocated());
    let data = compress(&mut compressor, text);
    assert!(!compressor.is_allocated());
    assert_eq!(compressor.history_bytes(), 0);
    let mut out = BytesMut::new();
    decompressor.decompress(&data, &mut out, 1 << 20).unwrap();
    assert!(decompressor.is_allocated());
    decompressor.finish_message(&mut out, 1 << 20).unwrap();
    assert!(!decompressor.is_allocated());
    assert_eq!(decompressor.history_bytes(), 0);
    assert_eq!(&out[..], text);

    // Context takeover: held until released, and the window survives.
    let mut compressor = Compressor::new(10, false, 6);
    let mut decompressor = Decompressor::new(10, false);
    let first = compress(&mut compressor, text);
    assert!(compressor.is_allocated());
    assert_eq!(compressor.history_bytes(), 1024);
    assert_eq!(decompress(&mut decompressor, &first).unwrap(), text);
    assert!(decompressor.is_allocated());
    compressor.release();
    decompressor.release();
    assert!(!compressor.is_allocated() && !decompressor.is_allocated());
    let second = compress(&mut compressor, text);
    assert!(
        second.len() < 10,
        "refers back into the kept window: {second:?}"
    );
    assert_eq!(decompress(&mut decompressor, &second).unwrap(), text);

    // Release in the middle of a message does nothing.
    let third = compress(&mut compressor, text);
    let mut out = BytesMut::new();
    decompressor
        .decompress(&third[..2], &mut out, 1 << 20)
        .unwrap();
    decompressor.release();
    assert!(decompressor.is_allocated());
    decompressor
        .decompress(&third[2..], &mut out, 1 << 20)
        .unwrap();
    decompressor.finish_message(&mut out, 1 << 20).unwrap();
    assert_eq!(&out[..], text);
}

#[test]
fn per_message_deflate_builds_both_sides_from_the_agreement() {
    let server_config = DeflateConfig {
        threshold: 10,
        ..cfg(10, 9)
    };
    let client_config = DeflateConfig::client();
    let offer = client_offer(&client_config).to_string();
    let agreed = negotiate(&offers(&offer), &server_config).unwrap();
    let seen = client_accept(&one(&agreed.response_header()), &client_config).unwrap();
    let mut server = PerMessageDeflate::new(Role::Server, &agreed, &server_config);
    let mut client = PerMessageDeflate::new(Role::Client, &seen, &client_config);
    assert_eq!(server.compressor().window_bits(), 10);
    assert_eq!(server.decompressor().window_bits(), 9);
    assert_eq!(client.compressor().window_bits(), 9);
    assert_eq!(client.decompressor().window_bits(), 10);
    assert!(!server.should_compress(9) && server.should_compress(10));
    assert!(!client.should_compress(127) && client.should_compress(128));
    for round in 0..3 {
        let text = format!("round {round}: the quick brown fox jumps over the lazy dog");
        let mut wire = BytesMut::new();
        client
            .compressor()
            .compress(text.as_bytes(), &mut wire)
            .unwrap();
        let mut out = BytesMut::new();
        server
            .decompressor()
            .decompress(&wire, &mut out, 1000)
            .unwrap();
        server
            .decompressor()
            .finish_message(&mut out, 1000)
            .unwrap();
        assert_eq!(&out[..], text.as_bytes());
        let mut wire = BytesMut::new();
        server
            .compressor()
            .compress(text.as_bytes(), &mut wire)
            .unwrap();
        let mut out = BytesMut::new();
        client
            .decompressor()
            .decompress(&wire, &mut out, 1000)
            .unwrap();
        client
            .decompressor()
            .finish_message(&mut out, 1000)
            .unwrap();
        assert_eq!(&out[..], text.as_bytes());
        server.release();
        client.release();
    }
}

#[test]
fn window_8_compresses_with_run_length_matches_only() {
    // A client told client_max_window_bits=8 still compresses, within 8 bits.
    let params = client_accept(
        &one("permessage-deflate; client_max_window_bits=8"),
        &DeflateConfig::client(),
    )
    .unwrap();
    let mut client = PerMessageDeflate::new(Role::Client, &params, &DeflateConfig::client());
    let mut server = PerMessageDeflate::new(Role::Server, &params, &DeflateConfig::default());
    assert_eq!(client.compressor().window_bits(), 8);
    assert_eq!(server.decompressor().window_bits(), 8);
    let messages: Vec<Vec<u8>> = vec![
        b"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".to_vec(),
        b"abcabcabcabcabcabcabcabcabcabcabc the same words, the same words".repeat(20),
        vec![0; 5000],
        b"".to_vec(),
    ];
    let mut stream = Vec::new();
    for message in &messages {
        let mut wire = BytesMut::new();
        client.compressor().compress(message, &mut wire).unwrap();
        stream.extend_from_slice(&wire);
        stream.extend_from_slice(&TAIL);
        let mut out = BytesMut::new();
        server
            .decompressor()
            .decompress(&wire, &mut out, usize::MAX)
            .unwrap();
        server
            .decompressor()
            .finish_message(&mut out, usize::MAX)
            .unwrap();
        assert_eq!(&out[..], &message[..]);
    }
    let (decoded, max_distance) = puff::inflate(&stream).unwrap();
    assert_eq!(decoded, messages.concat());
    assert_eq!(max_distance, 1);
    // Runs still shrink.
    let mut wire = BytesMut::new();
    client.compressor().compress(&[7; 5000], &mut wire).unwrap();
    assert!(wire.len() < 100, "{}", wire.len());
}

#[test]
fn decompressed_size_limit_is_exact() {
    let mut compressor = Compressor::new(15, false, 6);
    let data = compress(&mut compressor, &[b'x'; 1000]);
    let mut decompressor = Decompressor::new(15, false);
    let mut out = BytesMut::new();
    decompressor.decompress(&data, &mut out, 1000).unwrap();
    decompressor.finish_message(&mut out, 1000).unwrap();
    assert_eq!(out.len(), 1000);

    let data = compress(&mut compressor, &[b'x'; 1001]);
    let mut out = BytesMut::new();
    let result = decompressor
        .decompress(&data, &mut out, 1000)
        .and_then(|()| decompressor.finish_message(&mut out, 1000));
    assert_eq!(result, Err(DecompressError::TooLarge));
    assert_eq!(out.len(), 1001);
    // A failed decompressor stays failed.
    assert!(matches!(
        decompressor.decompress(&[0x00], &mut out, 1000),
        Err(DecompressError::Invalid(_))
    ));
}

/// A fixed-Huffman deflate block of one zero byte then `matches` copies of
/// 258 bytes at distance 1: `1 + 258 * matches` zero bytes in 13 bits per 258.
fn zero_bomb(matches: usize) -> Vec<u8> {
    let mut writer = puff::BitWriter::default();
    writer.bits(0, 1); // BFINAL = 0
    writer.bits(1, 2); // BTYPE = fixed
    writer.huffman(0x30, 8); // literal 0
    for _ in 0..matches {
        writer.huffman(0xc5, 8); // length symbol 285: 258 bytes
        writer.huffman(0, 5); // distance code 0: distance 1
    }
    writer.finish()
}

#[test]
fn bomb_stops_at_the_limit() {
    // 6.5 MiB of deflate data that inflates to 1 GiB.
    let matches = (1usize << 30) / 258;
    let bomb = zero_bomb(matches);
    assert!(bomb.len() < 7 << 20);
    let limit = 16 << 20;
    let mut decompressor = Decompressor::new(15, false);
    let mut out = BytesMut::new();
    let mut fed = 0;
    let mut result = Ok(());
    for chunk in bomb.chunks(1024) {
        fed += chunk.len();
        result = decompressor.decompress(chunk, &mut out, limit);
        if result.is_err() {
            break;
        }
    }
    assert_eq!(result, Err(DecompressError::TooLarge));
    assert_eq!(out.len(), limit + 1);
    assert!(out.capacity() <= 2 * limit, "{}", out.capacity());
    // It stopped reading as soon as the limit was passed.
    assert!(fed <= limit / 258 * 13 / 8 + 2048, "{fed}");
    assert!(out.iter().all(|&b| b == 0));

    // The same with the whole bomb in one call.
    let mut decompressor = Decompressor::new(15, false);
    let mut out = BytesMut::new();
    assert_eq!(
        decompressor.decompress(&bomb, &mut out, limit),
        Err(DecompressError::TooLarge)
    );
    assert_eq!(out.len(), limit + 1);
}

#[test]
fn invalid_data_is_an_error() {
    let invalid: [&[u8]; 4] = [
        // BTYPE = 11, reserved.
        &[0xff, 0xff, 0xff],
        // Stored block whose NLEN is not the complement of LEN.
        &[0x00, 0x05, 0x00, 0x00, 0x00, b'H'],
        // Fixed block: a match at distance 1 before any output.
        &{
            let mut writer = puff::BitWriter::default();
            writer.bits(0, 1);
            writer.bits(1, 2);
            writer.huffman(0xc5, 8);
            writer.huffman(0, 5);
            writer.finish()
        },
        // Dynamic block with an over-subscribed code length code.
        &[0x04, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
    ];
    for data in invalid {
        for no_context_takeover in [false, true] {
            let mut decompressor = Decompressor::new(15, no_context_takeover);
            let result = decompress(&mut decompressor, data);
            assert!(
                matches!(result, Err(DecompressError::Invalid(_))),
                "{data:02x?}: {result:?}"
            );
            assert!(matches!(
                decompress(&mut decompressor, &[0x00]),
                Err(DecompressError::Invalid(_))
            ));
        }
    }
}

/// Text-like data: words from a small vocabulary, so it compresses and has
/// matches at many distances.
fn message_strategy() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..600),
        prop::collection::vec(0usize..12, 0..800).prop_map(|words| {
            const WORDS: [&str; 12] = [
                "the ",
                "channel ",
                "presence ",
                "{\"id\":",
                "42,",
                "\"text\":\"",
                "hello ",
                "world\"}",
                "\n",
                "offset ",
                "epoch ",
                "subscribe ",
            ];
            words.iter().flat_map(|&w| WORDS[w].bytes()).collect()
        }),
        (any::<u8>(), 0usize..70_000).prop_map(|(byte, len)| vec![byte; len]),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Every window, level and takeover setting round-trips, whatever the
    /// chunking and releases, and back-references stay within the window.
    #[test]
    fn round_trip(
        window_bits in 8u8..=15,
        no_context_takeover in any::<bool>(),
        level in 0u32..=9,
        messages in prop::collection::vec(message_strategy(), 1..6),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
        releases in any::<u8>(),
    ) {
        let mut compressor = Compressor::new(window_bits, no_context_takeover, level);
        let mut decompressor = Decompressor::new(window_bits, no_context_takeover);
        let mut stream = Vec::new();
        for (i, message) in messages.iter().enumerate() {
            let mut wire = BytesMut::new();
            compressor.compress(message, &mut wire).unwrap();
            if no_context_takeover {
                let mut alone = wire.to_vec();
                alone.extend_from_slice(&TAIL);
                let (decoded, max_distance) = puff::inflate(&alone).unwrap();
                prop_assert_eq!(&decoded, message);
                prop_assert!(max_distance <= 1 << window_bits);
            } else {
                stream.extend_from_slice(&wire);
                stream.extend_from_slice(&TAIL);
            }
            let mut points: Vec<usize> = cuts.iter().map(|c| c.index(wire.len() + 1)).collect();
            points.sort_unstable();
            let mut out = BytesMut::new();
            let mut at = 0;
            for point in points.into_iter().chain([wire.len()]) {
                decompressor.decompress(&wire[at..point], &mut out, message.len()).unwrap();
                at = point;
            }
            decompressor.finish_message(&mut out, message.len()).unwrap();
            prop_assert_eq!(&out[..], &message[..]);
            if releases & (1 << i) != 0 {
                compressor.release();
                decompressor.release();
            }
        }
        if !no_context_takeover {
            let (decoded, max_distance) = puff::inflate(&stream).unwrap();
            prop_assert_eq!(decoded, messages.concat());
            let limit = if window_bits == 8 { 1 } else { 1 << window_bits };
            prop_assert!(max_distance <= limit, "{} > {}", max_distance, limit);
        }
    }

    /// Arbitrary bytes never panic and never exceed the limit.
    #[test]
    fn arbitrary_input_is_safe(
        window_bits in 8u8..=15,
        data in prop::collection::vec(any::<u8>(), 0..2000),
        limit in 0usize..5000,
    ) {
        let mut decompressor = Decompressor::new(window_bits, false);
        let mut out = BytesMut::new();
        let result = decompressor
            .decompress(&data, &mut out, limit)
            .and_then(|()| decompressor.finish_message(&mut out, limit));
        prop_assert!(out.len() <= limit + 1);
        if result.is_ok() {
            prop_assert!(out.len() <= limit);
        }
    }
}

/// A small independent deflate decoder for tests (after puff.c), reporting
/// the longest back-reference, and a bit writer to craft streams.
mod puff {
    /// Writes deflate's LSB-first bit stream.
    #[derive(Default)]
    pub(super) struct BitWriter {
        out: Vec<u8>,
        acc: u64,
        n: u32,
    }

    impl BitWriter {
        /// `count` bits of `value`, least significant first.
        pub(super) fn bits(&mut self, value: u32, count: u32) {
            self.acc |= u64::from(value) << self.n;
            self.n += count;
            while self.n >= 8 {
                self.out.push(self.acc as u8);
                self.acc >>= 8;
                self.n -= 8;
            }
        }

        /// A Huffman code of `len` bits, most significant first.
        pub(super) fn huffman(&mut self, code: u32, len: u32) {
            let reversed = code.reverse_bits() >> (32 - len);
            self.bits(reversed, len);
        }

        pub(super) fn finish(mut self) -> Vec<u8> {
            if self.n > 0 {
                self.out.push(self.acc as u8);
            }
            self.out
        }
    }

    struct Reader<'a> {
        data: &'a [u8],
        pos: usize,
        bit: u32,
    }

    impl Reader<'_> {
        fn bits(&mut self, count: u32) -> Option<u32> {
            let mut value = 0;
            for i in 0..count {
                let byte = *self.data.get(self.pos)?;
                value |= u32::from((byte >> self.bit) & 1) << i;
                self.bit += 1;
                if self.bit == 8 {
                    self.bit = 0;
                    self.pos += 1;
                }
            }
            Some(value)
        }

        fn at_end(&self) -> bool {
            self.pos >= self.data.len()
        }
    }

    struct Huffman {
        counts: [u16; 16],
        symbols: Vec<u16>,
    }

    impl Huffman {
        fn new(lengths: &[u8]) -> Self {
            let mut counts = [0u16; 16];
            for &len in lengths {
                counts[len as usize] += 1;
            }
            counts[0] = 0;
            let mut offsets = [0u16; 16];
            for len in 1..15 {
                offsets[len + 1] = offsets[len] + counts[len];
            }
            let mut symbols = vec![0; lengths.len()];
            for (symbol, &len) in lengths.iter().enumerate() {
                if len != 0 {
                    symbols[offsets[len as usize] as usize] = symbol as u16;
                    offsets[len as usize] += 1;
                }
            }
            Self { counts, symbols }
        }

        fn decode(&self, reader: &mut Reader<'_>) -> Result<u16, String> {
            let (mut code, mut first, mut index) = (0i32, 0i32, 0i32);
            for len in 1..16 {
                code |= reader.bits(1).ok_or("truncated code")? as i32;
                let count = i32::from(self.counts[len]);
                if code - count < first {
                    return Ok(self.symbols[(index + (code - first)) as usize]);
                }
                index += count;
                first = (first + count) << 1;
                code <<= 1;
            }
            Err("invalid code".into())
        }
    }

    const LEN_BASE: [u16; 29] = [
        3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115,
        131, 163, 195, 227, 258,
    ];
    const LEN_EXTRA: [u8; 29] = [
        0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0,
    ];
    const DIST_BASE: [u16; 30] = [
        1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537,
        2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577,
    ];
    const DIST_EXTRA: [u8; 30] = [
        0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12,
        13, 13,
    ];

    /// Decodes blocks until the input ends at a block boundary (or a final
    /// block); returns the output and the longest distance used.
    pub(super) fn inflate(data: &[u8]) -> Result<(Vec<u8>, usize), String> {
        let mut reader = Reader {
            data,
            pos: 0,
            bit: 0,
        };
        let mut out = Vec::new();
        let mut max_distance = 0;
        while !reader.at_end() {
            let last = reader.bits(1).ok_or("truncated header")?;
            let kind = reader.bits(2).ok_or("truncated header")?;
            match kind {
                0 => {
                    if reader.bit != 0 {
                        reader.bit = 0;
                        reader.pos += 1;
                    }
                    let len = reader.bits(16).ok_or("truncated stored")?;
                    let nlen = reader.bits(16).ok_or("truncated stored")?;
                    if len != !nlen & 0xffff {
                        return Err("stored length mismatch".into());
                    }
                    let bytes = data
                        .get(reader.pos..reader.pos + len as usize)
                        .ok_or("truncated stored data")?;
                    out.extend_from_slice(bytes);
                    reader.pos += len as usize;
                }
                1 => {
                    let mut lengths = [0u8; 288];
                    lengths[..144].fill(8);
                    lengths[144..256].fill(9);
                    lengths[256..280].fill(7);
                    lengths[280..].fill(8);
                    let lit = Huffman::new(&lengths);
                    let dist = Huffman::new(&[5; 30]);
                    codes(&mut reader, &mut out, &lit, &dist, &mut max_distance)?;
                }
                2 => {
                    let nlen = reader.bits(5).ok_or("truncated")? as usize + 257;
                    let ndist = reader.bits(5).ok_or("truncated")? as usize + 1;
                    let ncode = reader.bits(4).ok_or("truncated")? as usize + 4;
                    const ORDER: [usize; 19] = [
                        16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15,
                    ];
                    let mut code_lengths = [0u8; 19];
                    for &i in &ORDER[..ncode] {
                        code_lengths[i] = reader.bits(3).ok_or("truncated")? as u8;
                    }
                    let code = Huffman::new(&code_lengths);
                    let mut lengths = vec![0u8; nlen + ndist];
                    let mut i = 0;
                    while i < nlen + ndist {
                        let symbol = code.decode(&mut reader)?;
                        let (value, repeat) = match symbol {
                            0..=15 => (symbol as u8, 1),
                            16 => {
                                let prev = *lengths[..i].last().ok_or("repeat with no length")?;
                                (prev, 3 + reader.bits(2).ok_or("truncated")?)
                            }
                            17 => (0, 3 + reader.bits(3).ok_or("truncated")?),
                            _ => (0, 11 + reader.bits(7).ok_or("truncated")?),
                        };
                        for _ in 0..repeat {
                            *lengths.get_mut(i).ok_or("too many lengths")? = value;
                            i += 1;
                        }
                    }
                    let lit = Huffman::new(&lengths[..nlen]);
                    let dist = Huffman::new(&lengths[nlen..]);
                    codes(&mut reader, &mut out, &lit, &dist, &mut max_distance)?;
                }
                _ => return Err("reserved block type".into()),
            }
            if last == 1 {
                break;
            }
        }
        Ok((out, max_distance))
    }

    fn codes(
        reader: &mut Reader<'_>,
        out: &mut Vec<u8>,
        lit: &Huffman,
        dist: &Huffman,
        max_distance: &mut usize,
    ) -> Result<(), String> {
        loop {
            let symbol = lit.decode(reader)? as usize;
            match symbol {
                0..=255 => out.push(symbol as u8),
                256 => return Ok(()),
                _ => {
                    let i = symbol - 257;
                    let extra = *LEN_EXTRA.get(i).ok_or("bad length symbol")?;
                    let len = LEN_BASE[i] as usize
                        + reader.bits(u32::from(extra)).ok_or("truncated")? as usize;
                    let d = dist.decode(reader)? as usize;
                    let extra = *DIST_EXTRA.get(d).ok_or("bad distance symbol")?;
                    let distance = DIST_BASE[d] as usize
                        + reader.bits(u32::from(extra)).ok_or("truncated")? as usize;
                    if distance > out.len() {
                        return Err("distance too far back".into());
                    }
                    *max_distance = (*max_distance).max(distance);
                    for _ in 0..len {
                        out.push(out[out.len() - distance]);
                    }
                }
            }
        }
    }
}
