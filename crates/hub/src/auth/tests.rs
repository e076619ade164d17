//! The verifier's tests, with test-only keys.

use super::*;
use jsonwebtoken::{EncodingKey, Header};
use serde_json::json;

const NOW: u64 = 1_795_000_000;
const SECRET: &[u8] = b"a-test-secret-of-thirty-two-byte";

fn sign(alg: Algorithm, key: &EncodingKey, claims: &serde_json::Value) -> String {
    jsonwebtoken::encode(&Header::new(alg), claims, key).unwrap()
}

fn hs(claims: &serde_json::Value) -> String {
    sign(Algorithm::HS256, &EncodingKey::from_secret(SECRET), claims)
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A token with this header and claims, and a signature of junk.
fn raw_token(header: &serde_json::Value, claims: &serde_json::Value, sig: &str) -> String {
    format!(
        "{}.{}.{sig}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    )
}

fn good_claims() -> serde_json::Value {
    json!({"sub": "alice", "exp": NOW + 60})
}

#[test]
fn base64url_round_trips_every_length() {
    for len in 0..40u8 {
        let data: Vec<u8> = (0..len).map(|i| i.wrapping_mul(37) ^ 0xa5).collect();
        assert_eq!(base64url_decode(&b64(&data)).unwrap(), data, "len {len}");
    }
    assert_eq!(base64url_decode("A"), None);
    assert_eq!(
        base64url_decode("AA=="),
        None,
        "padding is not base64url in JWTs"
    );
    assert_eq!(base64url_decode("AA+/"), None);
    // RFC 7515 appendix A.1's header, and RFC 4648 §10's vectors in the
    // URL alphabet.
    assert_eq!(
        base64url_decode("eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9").unwrap(),
        b"{\"typ\":\"JWT\",\r\n \"alg\":\"HS256\"}"
    );
    for (text, data) in [("", ""), ("Zg", "f"), ("Zm8", "fo"), ("Zm9vYmFy", "foobar")] {
        assert_eq!(base64url_decode(text).unwrap(), data.as_bytes());
    }
    assert_eq!(base64url_decode("_-8").unwrap(), [0xff, 0xef]);
    // Bits after the last byte must be zero: "Zh" would be "f" with a
    // stray bit, which `jsonwebtoken` refuses as well.
    assert_eq!(base64url_decode("Zh"), None);
}

#[test]
fn hs256_good_token_gives_identity() {
    let v = Verifier::hs256(SECRET);
    let id = v.verify(&hs(&good_claims()), NOW).unwrap();
    assert_eq!(id.user, "alice");
    assert_eq!(id.expires, NOW + 60);
    assert!(id.grants.is_empty());
    assert_eq!(v.algorithm(), "HS256");
}

#[test]
fn hs256_expiry_is_exact_and_leeway_configurable() {
    let v = Verifier::hs256(SECRET);
    let token = hs(&good_claims());
    assert!(v.verify(&token, NOW + 59).is_ok());
    assert_eq!(v.verify(&token, NOW + 60), Err(AuthError::Expired));
    assert_eq!(v.verify(&token, NOW + 6000), Err(AuthError::Expired));
    let lenient = Verifier::hs256(SECRET).with_leeway(5);
    assert!(lenient.verify(&token, NOW + 64).is_ok());
    assert_eq!(lenient.verify(&token, NOW + 65), Err(AuthError::Expired));
}

#[test]
fn hs256_exp_is_required_and_must_be_a_number() {
    let v = Verifier::hs256(SECRET);
    let no_exp = hs(&json!({"sub": "alice"}));
    assert_eq!(v.verify(&no_exp, NOW), Err(AuthError::MissingExpiry));
    let text_exp = hs(&json!({"sub": "alice", "exp": "tomorrow"}));
    assert_eq!(v.verify(&text_exp, NOW), Err(AuthError::Malformed));
    let negative = hs(&json!({"sub": "alice", "exp": -1}));
    assert_eq!(v.verify(&negative, NOW), Err(AuthError::InvalidTime("exp")));
    let fractional = hs(&json!({"sub": "alice", "exp": (NOW as f64) + 0.5}));
    assert_eq!(v.verify(&fractional, NOW), Err(AuthError::Expired));
}

/// A signed token whose claims are `{"sub":"alice", <claims>}`, written
/// as given (serde_json would write `1e300` back as `1e300` but `2^64`
/// as a float, so the text is spelled out).
fn hs_raw(claims: &str) -> String {
    let header = b64(br#"{"alg":"HS256","typ":"JWT"}"#);
    let payload = b64(format!(r#"{{"sub":"alice",{claims}}}"#).as_bytes());
    let signed = format!("{header}.{payload}");
    let signature = jsonwebtoken::crypto::sign(
        signed.as_bytes(),
        &EncodingKey::from_secret(SECRET),
        Algorithm::HS256,
    )
    .unwrap();
    format!("{signed}.{signature}")
}

#[test]
fn time_claims_out_of_range_are_refused() {
    let v = Verifier::hs256(SECRET);
    let exp = |value: &str| v.verify(&hs_raw(&format!(r#""exp":{value}"#)), NOW);
    for huge in [
        "1e300",
        "1.7976931348623157e308",
        "18446744073709551615",
        "18446744073709551616",
        "9007199254740991",
        "253402300800",
        "253402300799.5",
    ] {
        assert_eq!(exp(huge), Err(AuthError::InvalidTime("exp")), "exp {huge}");
    }
    for negative in ["-1", "-1e300", "-0.5"] {
        assert_eq!(
            exp(negative),
            Err(AuthError::InvalidTime("exp")),
            "exp {negative}"
        );
    }
    let last = exp("253402300799").unwrap();
    assert_eq!(last.expires, MAX_NUMERIC_DATE);
    assert_eq!(exp("2.534023007989e11").unwrap().expires, 253_402_300_798);
    assert_eq!(exp("1795000060.9").unwrap().expires, NOW + 60);

    let with = |claim: &str| v.verify(&hs_raw(&format!(r#""exp":{},{claim}"#, NOW + 60)), NOW);
    assert_eq!(with(r#""nbf":1e300"#), Err(AuthError::InvalidTime("nbf")));
    assert_eq!(with(r#""nbf":-1"#), Err(AuthError::InvalidTime("nbf")));
    assert_eq!(with(r#""iat":1e300"#), Err(AuthError::InvalidTime("iat")));
    assert_eq!(with(r#""iat":-5"#), Err(AuthError::InvalidTime("iat")));
    assert_eq!(with(r#""iat":"yesterday""#), Err(AuthError::Malformed));
    assert!(with(&format!(r#""iat":{NOW},"nbf":{NOW}"#)).is_ok());
    let message = with(r#""iat":1e300"#).unwrap_err().to_string();
    assert!(
        message.contains("`iat`") && message.contains("9999"),
        "{message}"
    );
}

#[test]
fn hs256_nbf_is_checked_against_callers_clock() {
    let v = Verifier::hs256(SECRET);
    let token = hs(&json!({"sub": "alice", "exp": NOW + 60, "nbf": NOW + 10}));
    assert_eq!(v.verify(&token, NOW), Err(AuthError::NotYetValid));
    assert_eq!(v.verify(&token, NOW + 9), Err(AuthError::NotYetValid));
    assert!(v.verify(&token, NOW + 10).is_ok());
    assert!(
        Verifier::hs256(SECRET)
            .with_leeway(10)
            .verify(&token, NOW)
            .is_ok()
    );
}

#[test]
fn hs256_forged_signature_is_refused() {
    let v = Verifier::hs256(SECRET);
    let other = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(b"another-secret-entirely-32-bytes"),
        &good_claims(),
    );
    assert_eq!(v.verify(&other, NOW), Err(AuthError::BadSignature));

    // A good signature over other claims: swap the payload.
    let good = hs(&good_claims());
    let evil = hs(&json!({"sub": "mallory", "exp": NOW + 60}));
    let (h, rest) = good.split_once('.').unwrap();
    let (_, sig) = rest.split_once('.').unwrap();
    let evil_payload = evil.split('.').nth(1).unwrap();
    let spliced = format!("{h}.{evil_payload}.{sig}");
    assert_eq!(v.verify(&spliced, NOW), Err(AuthError::BadSignature));

    let unsigned = format!("{h}.{evil_payload}.");
    assert_eq!(v.verify(&unsigned, NOW), Err(AuthError::BadSignature));
}

#[test]
fn forged_token_reports_no_claim_errors() {
    // Expired and forged: the signature is what is reported, so a forger
    // learns nothing about the claims' checks.
    let v = Verifier::hs256(SECRET);
    let forged = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(b"a-forger-s-own-secret-of-32-byte"),
        &json!({"exp": 1}),
    );
    assert_eq!(v.verify(&forged, NOW), Err(AuthError::BadSignature));
}

#[test]
fn alg_none_is_refused() {
    let v = Verifier::hs256(SECRET);
    for alg in ["none", "None", "NONE"] {
        let token = raw_token(&json!({"alg": alg, "typ": "JWT"}), &good_claims(), "");
        assert_eq!(
            v.verify(&token, NOW),
            Err(AuthError::WrongAlgorithm),
            "{alg}"
        );
    }
}

#[test]
fn other_algorithms_are_refused() {
    let v = Verifier::hs256(SECRET);
    let hs512 = sign(
        Algorithm::HS512,
        &EncodingKey::from_secret(SECRET),
        &good_claims(),
    );
    assert_eq!(v.verify(&hs512, NOW), Err(AuthError::WrongAlgorithm));
    let es = sign(
        Algorithm::ES256,
        &EncodingKey::from_ec_pem(EC_A_PRIVATE.as_bytes()).unwrap(),
        &good_claims(),
    );
    assert_eq!(v.verify(&es, NOW), Err(AuthError::WrongAlgorithm));
}

#[test]
fn hs256_signed_with_the_rsa_public_key_is_refused() {
    // Algorithm confusion: an RS256 verifier must not treat its public
    // key as an HMAC secret.
    let v = Verifier::rs256_pem(RSA_A_PUBLIC.as_bytes()).unwrap();
    let token = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(RSA_A_PUBLIC.as_bytes()),
        &good_claims(),
    );
    assert_eq!(v.verify(&token, NOW), Err(AuthError::WrongAlgorithm));
}

#[test]
fn malformed_tokens_are_refused() {
    let v = Verifier::hs256(SECRET);
    let good = hs(&good_claims());
    for token in [
        "",
        "abc",
        "a.b",
        "a.b.c.d",
        "!!.b.c",
        &format!("{good}.x"),
        &raw_token(&json!(["alg"]), &good_claims(), "x"),
        &raw_token(&json!({"typ": "JWT"}), &good_claims(), "x"),
        &raw_token(&json!({"alg": 256}), &good_claims(), "x"),
        &raw_token(
            &json!({"alg": "HS256", "crit": ["b64"]}),
            &good_claims(),
            "x",
        ),
        &"a".repeat(MAX_TOKEN_LEN + 1),
    ] {
        assert_eq!(
            v.verify(token, NOW),
            Err(AuthError::Malformed),
            "{token:.40}"
        );
    }
}

#[test]
fn subject_is_required_and_not_empty() {
    let v = Verifier::hs256(SECRET);
    let none = hs(&json!({"exp": NOW + 60}));
    assert_eq!(v.verify(&none, NOW), Err(AuthError::MissingSubject));
    let empty = hs(&json!({"sub": "", "exp": NOW + 60}));
    assert_eq!(v.verify(&empty, NOW), Err(AuthError::MissingSubject));
}

#[test]
fn audience_and_issuer_only_when_configured() {
    let claims = json!({"sub": "a", "exp": NOW + 60, "aud": "hub", "iss": "idp"});
    let token = hs(&claims);
    // Not configured: not checked.
    assert!(Verifier::hs256(SECRET).verify(&token, NOW).is_ok());

    let v = Verifier::hs256(SECRET)
        .with_audience("hub")
        .with_issuer("idp");
    assert!(v.verify(&token, NOW).is_ok());
    let list_aud = hs(&json!({"sub": "a", "exp": NOW + 60, "aud": ["x", "hub"], "iss": "idp"}));
    assert!(v.verify(&list_aud, NOW).is_ok());

    let wrong_aud = hs(&json!({"sub": "a", "exp": NOW + 60, "aud": "other", "iss": "idp"}));
    assert_eq!(v.verify(&wrong_aud, NOW), Err(AuthError::WrongAudience));
    let no_aud = hs(&json!({"sub": "a", "exp": NOW + 60, "iss": "idp"}));
    assert_eq!(v.verify(&no_aud, NOW), Err(AuthError::WrongAudience));
    let wrong_iss = hs(&json!({"sub": "a", "exp": NOW + 60, "aud": "hub", "iss": "evil"}));
    assert_eq!(v.verify(&wrong_iss, NOW), Err(AuthError::WrongIssuer));
    let no_iss = hs(&json!({"sub": "a", "exp": NOW + 60, "aud": "hub"}));
    assert_eq!(v.verify(&no_iss, NOW), Err(AuthError::WrongIssuer));
}

#[test]
fn rs256_good_and_forged() {
    let v = Verifier::rs256_pem(RSA_A_PUBLIC.as_bytes()).unwrap();
    assert_eq!(v.algorithm(), "RS256");
    let key_a = EncodingKey::from_rsa_pem(RSA_A_PRIVATE.as_bytes()).unwrap();
    let key_b = EncodingKey::from_rsa_pem(RSA_B_PRIVATE.as_bytes()).unwrap();
    let good = sign(Algorithm::RS256, &key_a, &good_claims());
    assert_eq!(v.verify(&good, NOW).unwrap().user, "alice");
    let forged = sign(Algorithm::RS256, &key_b, &good_claims());
    assert_eq!(v.verify(&forged, NOW), Err(AuthError::BadSignature));
    // Same key, another RSA scheme: refused by name.
    let ps256 = sign(Algorithm::PS256, &key_a, &good_claims());
    assert_eq!(v.verify(&ps256, NOW), Err(AuthError::WrongAlgorithm));
    assert_eq!(v.verify(&good, NOW + 60), Err(AuthError::Expired));
}

#[test]
fn es256_good_and_forged() {
    let v = Verifier::es256_pem(EC_A_PUBLIC.as_bytes()).unwrap();
    assert_eq!(v.algorithm(), "ES256");
    let key_a = EncodingKey::from_ec_pem(EC_A_PRIVATE.as_bytes()).unwrap();
    let key_b = EncodingKey::from_ec_pem(EC_B_PRIVATE.as_bytes()).unwrap();
    let good = sign(Algorithm::ES256, &key_a, &good_claims());
    assert_eq!(v.verify(&good, NOW).unwrap().user, "alice");
    let forged = sign(Algorithm::ES256, &key_b, &good_claims());
    assert_eq!(v.verify(&forged, NOW), Err(AuthError::BadSignature));
    let (signed, _) = good.rsplit_once('.').unwrap();
    for junk in [b64(&[7; 64]), b64(&[7; 10]), String::new()] {
        let token = format!("{signed}.{junk}");
        assert_eq!(v.verify(&token, NOW), Err(AuthError::BadSignature));
    }
    let hs = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(EC_A_PUBLIC.as_bytes()),
        &good_claims(),
    );
    assert_eq!(v.verify(&hs, NOW), Err(AuthError::WrongAlgorithm));
}

#[test]
fn unusable_keys_are_refused_at_construction() {
    let unusable = |r: Result<Verifier, KeyError>, algorithm: &str| matches!(r, Err(KeyError::Unusable { algorithm: a, .. }) if a == algorithm);
    assert!(unusable(Verifier::rs256_pem(b"not a pem"), "RS256"));
    assert!(unusable(
        Verifier::rs256_pem(EC_A_PUBLIC.as_bytes()),
        "RS256"
    ));
    assert_eq!(
        Verifier::rs256_pem(RSA_1024_PUBLIC.as_bytes()).unwrap_err(),
        KeyError::WeakRsa { bits: 1024 },
        "too weak"
    );
    assert!(unusable(Verifier::es256_pem(b""), "ES256"));
    assert!(unusable(
        Verifier::es256_pem(RSA_A_PUBLIC.as_bytes()),
        "ES256"
    ));
    assert!(
        unusable(Verifier::es256_pem(EC_P384_PUBLIC.as_bytes()), "ES256"),
        "wrong curve"
    );
    // The JWT library's error is kept as the source.
    let error = Verifier::rs256_pem(b"not a pem").unwrap_err();
    assert!(
        std::error::Error::source(&error).is_some_and(|s| s.is::<jsonwebtoken::errors::Error>())
    );
    assert_eq!(AuthError::BadKey(KeyError::KeySources).code(), "bad_key");
}

#[test]
fn from_config_reads_keys_and_claims_checks() {
    let dir = std::env::temp_dir().join(format!("duplex-auth-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("es256.pem");
    std::fs::write(&path, EC_A_PUBLIC).unwrap();
    let config = AuthConfig {
        es256_public_key: Some(path.clone()),
        audience: Some("hub".into()),
        ..AuthConfig::default()
    };
    let v = Verifier::from_config(&config).unwrap();
    let key = EncodingKey::from_ec_pem(EC_A_PRIVATE.as_bytes()).unwrap();
    let no_aud = sign(Algorithm::ES256, &key, &good_claims());
    assert_eq!(v.verify(&no_aud, NOW), Err(AuthError::WrongAudience));
    let with_aud = sign(
        Algorithm::ES256,
        &key,
        &json!({"sub": "a", "exp": NOW + 1, "aud": "hub"}),
    );
    assert!(v.verify(&with_aud, NOW).is_ok());
    std::fs::remove_dir_all(&dir).unwrap();

    let missing = AuthConfig {
        rs256_public_key: Some(dir.join("nope.pem")),
        ..AuthConfig::default()
    };
    let error = Verifier::from_config(&missing).unwrap_err();
    assert!(
        matches!(&error, KeyError::Read { path, source }
            if path.ends_with("nope.pem") && source.kind() == std::io::ErrorKind::NotFound),
        "{error:?}"
    );
    assert!(error.to_string().contains("nope.pem"), "{error}");
    let empty = AuthConfig {
        hs256_secret: Some(String::new()),
        ..AuthConfig::default()
    };
    assert_eq!(
        Verifier::from_config(&empty).unwrap_err(),
        KeyError::EmptySecret
    );
    assert_eq!(
        Verifier::from_config(&AuthConfig::default()).unwrap_err(),
        KeyError::KeySources
    );
    let with_issuer = AuthConfig {
        hs256_secret: Some(String::from_utf8(SECRET.to_vec()).unwrap()),
        issuer: Some("idp".into()),
        ..AuthConfig::default()
    };
    let v = Verifier::from_config(&with_issuer).unwrap();
    assert_eq!(
        v.verify(&hs(&good_claims()), NOW),
        Err(AuthError::WrongIssuer)
    );
}

#[test]
fn from_config_refuses_a_short_hs256_secret_unless_allowed() {
    let config = |secret: &str, allow_short_secret| AuthConfig {
        hs256_secret: Some(secret.to_owned()),
        allow_short_secret,
        ..AuthConfig::default()
    };
    for short in ["x", "s3cret", &"k".repeat(MIN_HS256_SECRET_LEN - 1)] {
        match Verifier::from_config(&config(short, false)) {
            Err(error @ KeyError::ShortSecret { len }) => {
                assert_eq!(len, short.len());
                let why = error.to_string();
                assert!(why.contains("32") && why.contains("RFC 7518"), "{why}");
            }
            other => panic!("{short:?}: {other:?}"),
        }
        let v = Verifier::from_config(&config(short, true)).unwrap();
        let token = sign(
            Algorithm::HS256,
            &EncodingKey::from_secret(short.as_bytes()),
            &good_claims(),
        );
        assert_eq!(v.verify(&token, NOW).unwrap().user, "alice");
    }
    assert!(Verifier::from_config(&config(&"k".repeat(32), false)).is_ok());
    assert_eq!(
        Verifier::from_config(&config("", true)).unwrap_err(),
        KeyError::EmptySecret
    );
}

#[test]
fn grants_from_claims() {
    let v = Verifier::hs256(SECRET);
    let token = hs(&json!({
        "sub": "alice",
        "exp": NOW + 60,
        "channels": ["chat:*", "news:sport"],
        "subscribe": ["news:*"],
        "publish": ["inbox:alice"],
        "presence": ["lobby"],
    }));
    let g = v.verify(&token, NOW).unwrap().grants;
    assert!(!g.is_empty());
    for action in [Action::Subscribe, Action::Publish, Action::Presence] {
        assert!(g.allows(action, "chat:lobby"), "{action:?}");
        assert!(g.allows(action, "news:sport"), "{action:?}");
        assert!(!g.allows(action, "chat"), "prefix includes the colon");
    }
    for action in [Action::Publish, Action::Presence] {
        assert!(!g.allows(action, "news:sports"), "exact is exact");
    }
    assert!(g.allows(Action::Subscribe, "news:weather"));
    assert!(!g.allows(Action::Publish, "news:weather"));
    assert!(!g.allows(Action::Presence, "news:weather"));
    assert!(g.allows(Action::Publish, "inbox:alice"));
    assert!(!g.allows(Action::Subscribe, "inbox:alice"));
    assert!(!g.allows(Action::Publish, "inbox:bob"));
    assert!(g.allows(Action::Presence, "lobby"));
    assert!(!g.allows(Action::Subscribe, "lobby"));

    let bad = hs(&json!({"sub": "a", "exp": NOW + 60, "channels": "chat:*"}));
    assert_eq!(v.verify(&bad, NOW), Err(AuthError::Malformed));
    let bad = hs(&json!({"sub": "a", "exp": NOW + 60, "publish": [1]}));
    assert_eq!(v.verify(&bad, NOW), Err(AuthError::Malformed));
}

#[test]
fn grant_patterns() {
    let mut g = Grants::default();
    assert!(g.is_empty());
    g.grant(Action::Subscribe, "");
    assert!(g.is_empty(), "an empty pattern grants nothing");
    g.grant(Action::Subscribe, "*");
    assert!(g.allows(Action::Subscribe, "anything:at-all"));
    assert!(!g.allows(Action::Publish, "anything:at-all"));
    g.grant(Action::Publish, "a*b");
    assert!(!g.allows(Action::Publish, "axxb"), "* only at the end");
    assert!(g.allows(Action::Publish, "a*b"));
    g.grant(Action::Publish, "*");
    g.grant(Action::Presence, "*");
    assert_eq!(g.rules.len(), 2, "one rule per distinct pattern");
    assert!(g.allows(Action::Presence, "x"));
}

#[test]
fn error_codes_are_distinct() {
    let all = [
        AuthError::Malformed,
        AuthError::BadSignature,
        AuthError::Expired,
        AuthError::NotYetValid,
        AuthError::WrongAlgorithm,
        AuthError::WrongAudience,
        AuthError::WrongIssuer,
        AuthError::MissingSubject,
        AuthError::MissingExpiry,
        AuthError::InvalidTime("exp"),
        AuthError::UnknownKey,
        AuthError::BadKey(KeyError::EmptySecret),
    ];
    let codes: std::collections::HashSet<_> = all.iter().map(AuthError::code).collect();
    assert_eq!(codes.len(), all.len());
}

#[test]
fn token_from_bearer_header() {
    let mut headers = http::HeaderMap::new();
    assert_eq!(token_from_request(&headers, None), None);
    headers.insert(
        http::header::AUTHORIZATION,
        "bEaReR  abc.def.ghi ".parse().unwrap(),
    );
    assert_eq!(
        token_from_request(&headers, Some("token=other")).as_deref(),
        Some("abc.def.ghi"),
        "the header wins over the query"
    );
    headers.insert(
        http::header::AUTHORIZATION,
        "Basic dXNlcjpwdw==".parse().unwrap(),
    );
    assert_eq!(token_from_request(&headers, None), None);
    assert_eq!(
        token_from_request(&headers, Some("token=q")).as_deref(),
        Some("q"),
        "another scheme falls back to the query"
    );
    headers.insert(http::header::AUTHORIZATION, "Bearer".parse().unwrap());
    assert_eq!(token_from_request(&headers, None), None);
    headers.append(http::header::AUTHORIZATION, "Bearer t2".parse().unwrap());
    assert_eq!(token_from_request(&headers, None).as_deref(), Some("t2"));
}

#[test]
fn token_from_query() {
    let headers = http::HeaderMap::new();
    let get = |q| token_from_request(&headers, Some(q));
    assert_eq!(get("token=a.b.c").as_deref(), Some("a.b.c"));
    assert_eq!(get("?x=1&token=a%2Eb%2ec&y").as_deref(), Some("a.b.c"));
    assert_eq!(get("tokens=a&xtoken=b"), None);
    assert_eq!(get("token=&token=second").as_deref(), Some("second"));
    assert_eq!(get("token"), None);
    assert_eq!(get("t%6Fken=x+y%20z").as_deref(), Some("x y z"));
    assert_eq!(get("token=100%").as_deref(), Some("100%"));
    assert_eq!(get("token=%zz%4").as_deref(), Some("%zz%4"));
    assert_eq!(get("token=%ff"), None, "not UTF-8");
    assert_eq!(get("token=%C3%A9").as_deref(), Some("é"));
}

// Test-only keys, generated once with `openssl genpkey` (2048-bit RSA,
// P-256 and P-384 EC). Never use them for anything else.

const RSA_A_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MIIEvgIBADANBgkqhkiG9w0BAQEFAASCBKgwggSkAgEAAoIBAQCiUiMSGz97RTvV
FMCw8/Uw7VVhZBd/QmHmbWkGyFoDV89RxHPJQmE9L7lz4z1w2Hlx9xBgB23wggEy
m/i/Rz/Z6XeKekNXlf5kIHvk6zDXn/2RnN2Al3Qln3ONlRIZFT+STrjrEyKKCn6Y
RW4Oll2tVs2K3rC9v9Rv4KOYdO+Ikb1lU7MkBfcUhPCJqvJ/zfgyZrh/wMFNcXM7
UsauCfKAkl0BHrGys4I/0GYO4TYDHaiZKFWilR7sKiXTUBkIvUicO6imOPGhbz7U
msUjT1yUcqHOsvkP+TL7FyEFo4wfSD5ro8PnQ1HbhIwSZPkF+DtYQ64AlSFU6+Jv
qZsSw547AgMBAAECggEAKAKK9nmU6jOkjd8xp+xaMZcuhnT/fbTFIOEzFCLqXQyV
45fC2obsJQLQeYo3qMsTFE5L0P/Dz5ab6PedFrjfOj1b49xDISGttMx0/XYjceLT
w8KgroOmc2ecOffWoCwmoU+aMQdkahYwIiRq/ll9+a39uA8wDXVtTa5XZMreCBFP
1pYgQrtwcj0P0ESP0B00QyJxZ8dqu7C3gRspA5QAzEN4JUVl6CRu/vi6yaDD8aLZ
IMuZPXGQY4ACN+Axm6XgPvaO+J/fjW8ksxJhK1mvrZSBRuA09rM8XSotsoV9s3Cq
SwRcaaKPdSxgCkf3X9TPA8OpwDt/W/6QQXEY4Qd24QKBgQDO+U2q9J37/pELuftD
pAudY5Jh3GujDbs871f85OXA1JmQU9qFd7j6JETB1QffvzYzDgAtRrJKX143ir6E
J+UPCqCYGCjY5XsFVmW7nwD2+JL9QMtfHqvrYcSuTiNwJKRw2OHWx6N0xHXjHJXb
AG7xpQYuBHUapIxQQ2hmrmQcWQKBgQDIxR5cOf8995jFIICdYkGit+cf/g/jZ9CI
Gq7410r7kHTY1gBj7PjVc+I0RhceABibG5REvbcwYpKZX+O+NgRgqsI9mzwOACaF
t0XMyymdTvqR5VPXkyotMNC1AvJ+J7xnC5F5R1KjMAkYGptVTQFl9oSRUtq3PODR
qGHghnisswKBgEaQqPJIRDTOLhWZaxk8rNkUQawrwmbtH5E+6PjH8a00zsZuUGqA
zwg5pVeQkgau4oO1mknVeKPyr+Sv4RSdpXLjZK12TzbjxnWjZzv4khOh3DuMA8qC
Yor14mCrM1ngpE/1IcpgdlIxSSANduob07d/VAQMcQCMaWpUERwxCODBAoGBAJUa
B00Y6Vz852DmnX3Efdg5WZVh2izZaX3ayz0UrqQbCRwL+ig70iS7ti96KirmiV+P
4NIYTtbJLfRnyTv249NinXShN71yESnXDShlbRddkysMs/JyYa1EBouXj71vBzVD
2xrFhDKbNvXGtLtpv/MYXCWM8c+Jj7FEqsPTOgWPAoGBALpG4g2OTLrkusrh+Sqc
ld7QuGIVrNj/xu+NIHby5j7dKsyOYfPR1FhhAcDze++6VjzEp0PuXdGlBRQcDt5o
ExZgK2FSSJz4lOUCK87S2MEpX6LOhq1/jWYTd8stvtpxMV5hZXgNy1aqM20zYnW+
yneUBEUBwWUw4PEYOoQJ+QfT
-----END PRIVATE KEY-----
";

const RSA_A_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAolIjEhs/e0U71RTAsPP1
MO1VYWQXf0Jh5m1pBshaA1fPUcRzyUJhPS+5c+M9cNh5cfcQYAdt8IIBMpv4v0c/
2el3inpDV5X+ZCB75Osw15/9kZzdgJd0JZ9zjZUSGRU/kk646xMiigp+mEVuDpZd
rVbNit6wvb/Ub+CjmHTviJG9ZVOzJAX3FITwiaryf834Mma4f8DBTXFzO1LGrgny
gJJdAR6xsrOCP9BmDuE2Ax2omShVopUe7Col01AZCL1InDuopjjxoW8+1JrFI09c
lHKhzrL5D/ky+xchBaOMH0g+a6PD50NR24SMEmT5Bfg7WEOuAJUhVOvib6mbEsOe
OwIDAQAB
-----END PUBLIC KEY-----
";

const RSA_B_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MIIEvAIBADANBgkqhkiG9w0BAQEFAASCBKYwggSiAgEAAoIBAQCUDjA5eSstqlvj
rEKzv2/tSPuEUoFyRda5Z7EDm582VnLJTEQvVKhtx4cjF21B2lAeJ633CxhaRvwr
wyKbQldHKVBd0HFYvwO7xJs0//z0yp+23qvS8hiWjyNgauwTWdBGMl0VcGRfhS8O
aKrtferVhLtzwjadeQ1jGwkL1Q+Uh0RQo4ve8bdaLvm9lHbR+gQyZ7/lTnsbSc9l
tr4dkoBT6I+3/NxrnRV3ljAlPGQsBVUZ3PD6gwJap2z98URIqFeAqiM17AIJnR9S
iGkZNGZ0RqNJXNT868Ia2jiXCBnownD5tGGxcYQkwuXAoLG+vwCTAXkYjXVU4poF
KpDHgBBHAgMBAAECggEAOCRvNgQUEwN0R8/VFVslIsoXkjRFIOOJypGe5rrW82Bx
s5KHkpkcK1DLlkt2Y0/ZLK4oQjNDX0xmqGOdFlngRbxNXN3DdX8td8DUiBMARYUm
bk5ewqWKHGGX7SJudeILX+sOMCiH707OKr0W/+rNJ31nJbzCQBGcuXWRhxqah1v2
IQfzIrKFNj4W6PXPYmCwPMszXPhPpRMM+RH6aZlcFMI9/dv/3bwhYQFn7ubSZVZ9
7sRUXaWrn2WYWVelw+VN57WkT8pTI31PpuvgsDylALKDVUQQKYgMx5L/FP1MfTVn
OxsIhemLHhVEUISVehoLBP8p8ALGq6jF0WTKpGDriQKBgQDHzphdKlC5cy+VpYY+
sJtgKkk6eNbC/5kV8TEAnYy7sEpJBqu8huFKfTJC/1f/fyDZy3CA5I0D52HnQVNU
sOMpyVYYB7AIlPff9U0Fq1g41HPmnY2uZ3ZNcIT6vnkT04fSe5jHOxaygB/lme6x
tuf7GSVu8V8kIvehsv3s2IkqCQKBgQC9saj9YxqJViZFcThqHr38xC77GkxldoDr
2OsWsoF/vloHNzY7I0G1CP/oWDCzj2q0EC+uGBKBPmilnU0l0V+u2ghTFrhsgFE4
IV8YqXREhTRq7vgGzb4I4ft4Y0KhX47uCHxy3CaCWTEnJLP9AVw63y9vAUp74O40
bo7kim87zwKBgHm6ZNsFp66D/W6HLHVO9SouOPTVn8mnHKXgjoEYex/xtCAvXzt5
VRIjmhZ1KDBxTBtENSNhmoPRWLUh+Fm1doADuF7leBqSXz1jXexhSls9G+tY+3NQ
dyOQtINqvasViT7zq81dM2PGaShhkqlUjJpO5J5lkRgb8Y/i046TEWW5AoGAWExc
ZyY8cfUh920OX4dT1FbVr5i8OvaAaEgelgAde4L1kSpIGhr9OPGpfVOfx9VYS9zE
9PrLklGkkIK6KIJfUZq4CUUoL4lDRSdzhp1KO6LtlWELHs+iR6w5S/6YQ1mhxHc6
xpRncIFn+dqB1aFOdzDweXFWZHd9KfbUmNk/kc0CgYALWQONql3lYbBwKAuAErLC
t7k1U/uAVHRllNv6Gy7BRwDuamsqFLHid3ethU+njVCZZV8vcJMM6RZOQLZIAdGM
8EYUmCKeadQEXXzjGqjU1qSiyatrG7O1yKvjqVp9eCsyh7r/VhBuzEkCstl98F7z
8SF09sSKbrJa28E6fqnm2g==
-----END PRIVATE KEY-----
";

const RSA_1024_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDNK9CzNctpaRxfbgEFTSCIyx04
J2Y/EBsU0GdVlf4rLwyAKaRT1U/DJ2mF8Oj9RSMpDfM3FPTfAzs5IyeJ2u3xr4nn
TkRKeGP/EgOitGaGgDw4d3RgF7HMkiRt59giF+hgC5Ta+rbAUZIUJUmjWYzx3HrH
twEb+oRRXZIiDo7T7wIDAQAB
-----END PUBLIC KEY-----
";

const EC_A_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgSZ0MPdCw1Ry8nrka
C+Z49HV+wVLs98oNzeQEorFSmNahRANCAAS9e/NkiUBwQ9kWujSrU2RS0yZt1IxW
wDh4BjqKhoWWyIur1ZW7oex+Myt21YOhlW+WMZvheO6Pr6AX0t0+xP8I
-----END PRIVATE KEY-----
";

const EC_A_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEvXvzZIlAcEPZFro0q1NkUtMmbdSM
VsA4eAY6ioaFlsiLq9WVu6HsfjMrdtWDoZVvljGb4Xjuj6+gF9LdPsT/CA==
-----END PUBLIC KEY-----
";

const EC_B_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg3nct+WDY785Dn5J4
KGjcCX3TyememUC6Ihec6xhermShRANCAAT0wqx8EW8o1T4SapHCm6PbcdYN2hMX
jK4vRaiBskeYD22zTcbeYVaa+hcssPxnuY/duV8qmsGCzbgRqRP1RHRt
-----END PRIVATE KEY-----
";

const EC_P384_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MHYwEAYHKoZIzj0CAQYFK4EEACIDYgAEvZXw0oUCmw5/Erv7Vf9o6ZixjKDiWyDv
qnH0Ld3jR4Dy8A5ib8JWpjBK0EBr3SlEGe4+D/pPEgrsf2lQ0eBu04XoQ0kGMy6g
8oQNMvp2MF8ptkKrki2BibVL0Y0PEDfS
-----END PUBLIC KEY-----
";

#[test]
fn a_jwks_url_alone_or_beside_a_static_key() {
    let jwks_only = AuthConfig {
        jwks_url: Some("http://127.0.0.1:9/jwks.json".into()),
        ..AuthConfig::default()
    };
    let v = Verifier::from_config(&jwks_only).unwrap();
    assert!(v.jwks().is_some());
    // No key held (nothing fetched): a token is refused as unknown, and
    // `alg: none` as the wrong algorithm.
    assert_eq!(
        v.verify(&hs(&good_claims()), NOW),
        Err(AuthError::UnknownKey)
    );
    let none = raw_token(&json!({"alg": "none", "kid": "k"}), &good_claims(), "");
    assert_eq!(v.verify(&none, NOW), Err(AuthError::WrongAlgorithm));
    let bad_kid = raw_token(&json!({"alg": "RS256", "kid": 7}), &good_claims(), "x");
    assert_eq!(v.verify(&bad_kid, NOW), Err(AuthError::Malformed));
    // Beside a static key, a token without a kid goes to the static key.
    let both = AuthConfig {
        hs256_secret: Some(String::from_utf8(SECRET.to_vec()).unwrap()),
        ..jwks_only.clone()
    };
    let v = Verifier::from_config(&both).unwrap();
    assert_eq!(v.verify(&hs(&good_claims()), NOW).unwrap().user, "alice");
    let url = AuthConfig {
        jwks_url: Some("ftp://idp/jwks".into()),
        ..AuthConfig::default()
    };
    assert_eq!(
        Verifier::from_config(&url).unwrap_err(),
        KeyError::JwksUrl {
            url: "ftp://idp/jwks".into()
        }
    );
    assert_eq!(AuthError::UnknownKey.code(), "unknown_key");
}

#[test]
fn jti_and_iat_are_kept_for_revocation() {
    let v = Verifier::hs256(SECRET);
    let id = v
        .verify(
            &hs(&json!({"sub": "a", "exp": NOW + 1, "jti": "t-1", "iat": NOW as f64 - 0.5})),
            NOW,
        )
        .unwrap();
    assert_eq!((id.jti.as_deref(), id.issued), (Some("t-1"), Some(NOW - 1)));
    let id = v
        .verify(&hs(&json!({"sub": "a", "exp": NOW + 1, "jti": ""})), NOW)
        .unwrap();
    assert_eq!((id.jti, id.issued), (None, None), "an empty jti is none");
    let bad = hs(&json!({"sub": "a", "exp": NOW + 1, "jti": 5}));
    assert_eq!(v.verify(&bad, NOW), Err(AuthError::Malformed));
}
