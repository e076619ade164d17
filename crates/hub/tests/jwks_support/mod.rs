//! An identity provider for the JWKS tests: signers made from the test keys
//! in `tests/keys/` (each with its `kid` and its public JWK), and a real
//! HTTP server on loopback publishing the JWKS the test sets, counting its
//! fetches, with an optional delay before each answer.

#![allow(dead_code, reason = "each test file uses some of these")]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A key of the identity provider: it signs tokens naming its `kid`.
pub(crate) struct Signer {
    pub(crate) kid: String,
    pub(crate) algorithm: Algorithm,
    key: EncodingKey,
    /// The public half, as the JWKS publishes it.
    pub(crate) jwk: Value,
}

impl Signer {
    /// The test key `file` (in `tests/keys/`) for `algorithm`, as `kid`.
    pub(crate) fn new(file: &str, algorithm: Algorithm, kid: &str) -> Self {
        let path = format!("{}/tests/keys/{file}", env!("CARGO_MANIFEST_DIR"));
        let pem = std::fs::read(&path).unwrap();
        let key = match algorithm {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem),
            Algorithm::ES256 => EncodingKey::from_ec_pem(&pem),
            Algorithm::EdDSA => EncodingKey::from_ed_pem(&pem),
            other => panic!("no test key for {other:?}"),
        }
        .unwrap();
        let mut jwk = Jwk::from_encoding_key(&key, algorithm).unwrap();
        jwk.common.key_id = Some(kid.to_owned());
        Self {
            kid: kid.to_owned(),
            algorithm,
            key,
            jwk: serde_json::to_value(&jwk).unwrap(),
        }
    }

    /// An RSA key (`rsa_a.pem`).
    pub(crate) fn rsa(kid: &str) -> Self {
        Self::new("rsa_a.pem", Algorithm::RS256, kid)
    }

    /// A P-256 key (`ec_a.pem`).
    pub(crate) fn ec(kid: &str) -> Self {
        Self::new("ec_a.pem", Algorithm::ES256, kid)
    }

    /// An Ed25519 key (`ed25519.pem`).
    pub(crate) fn ed(kid: &str) -> Self {
        Self::new("ed25519.pem", Algorithm::EdDSA, kid)
    }

    /// A token with `claims`, its header naming this key.
    pub(crate) fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.algorithm);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.key).unwrap()
    }

    /// A token for `sub` expiring at `exp` (seconds since the Unix epoch).
    pub(crate) fn token(&self, sub: &str, exp: u64) -> String {
        self.sign(&json!({"sub": sub, "exp": exp}))
    }
}

/// The identity provider's JWKS endpoint, a real HTTP/1.1 server on
/// loopback (`Connection: close` after each answer). Stops with the test's
/// runtime.
pub(crate) struct JwksServer {
    addr: SocketAddr,
    body: Arc<Mutex<String>>,
    fetches: Arc<AtomicUsize>,
    delay: Arc<Mutex<Duration>>,
}

impl JwksServer {
    /// Starts it, publishing `keys`.
    pub(crate) async fn start(keys: &[&Signer]) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = Self {
            addr: listener.local_addr().unwrap(),
            body: Arc::default(),
            fetches: Arc::default(),
            delay: Arc::default(),
        };
        server.publish(keys);
        let (body, fetches, delay) = (
            server.body.clone(),
            server.fetches.clone(),
            server.delay.clone(),
        );
        tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                let (body, fetches, delay) = (body.clone(), fetches.clone(), delay.clone());
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    fetches.fetch_add(1, Ordering::SeqCst);
                    let wait = *delay.lock().unwrap();
                    tokio::time::sleep(wait).await;
                    let body = body.lock().unwrap().clone();
                    let response = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = stream.write_all(response.as_bytes()).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        server
    }

    /// From now on publishes `keys`.
    pub(crate) fn publish(&self, keys: &[&Signer]) {
        let keys: Vec<&Value> = keys.iter().map(|k| &k.jwk).collect();
        *self.body.lock().unwrap() = json!({ "keys": keys }).to_string();
    }

    /// From now on publishes `body` as it is.
    pub(crate) fn publish_raw(&self, body: String) {
        *self.body.lock().unwrap() = body;
    }

    /// From now on waits `delay` before each answer.
    pub(crate) fn delay(&self, delay: Duration) {
        *self.delay.lock().unwrap() = delay;
    }

    /// How many fetches it has had.
    pub(crate) fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }

    /// Its URL.
    pub(crate) fn url(&self) -> String {
        format!("http://{}/.well-known/jwks.json", self.addr)
    }
}
