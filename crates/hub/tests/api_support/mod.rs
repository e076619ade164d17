//! The server API as the cluster tests drive it: a hub configuration with
//! JWT auth, anonymous clients and an API on a free port with one key;
//! tokens for it; one call over HTTP/1.1 that must answer 200 in time.

#![allow(dead_code, reason = "each test file uses some of these")]

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use duplex_hub::HubConfig;
use duplex_hub::config::AuthConfig;
use jsonwebtoken::{EncodingKey, Header, encode};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::WAIT;

/// The hubs' HS256 secret.
pub(crate) const SECRET: &str = "the api cluster tests' hub secret";
/// The API key.
pub(crate) const KEY: &str = "cluster-api-key-0123456789";

/// A token for `sub`, valid for an hour.
pub(crate) fn token(sub: &str) -> String {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    encode(
        &Header::default(),
        &json!({"sub": sub, "exp": exp}),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

/// Seconds since the Unix epoch.
pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A token with these claims, signed with [`SECRET`].
pub(crate) fn sign(claims: &Value) -> String {
    encode(
        &Header::default(),
        claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

/// A hub with JWT auth (anonymous clients admitted) and the server API on
/// `127.0.0.1:0` with [`KEY`].
pub(crate) fn api_config() -> HubConfig {
    let mut config = HubConfig {
        auth: Some(AuthConfig {
            hs256_secret: Some(SECRET.into()),
            ..AuthConfig::default()
        }),
        shutdown_grace: Duration::from_millis(500),
        ..HubConfig::default()
    };
    config.default_namespace.anonymous = Some(true);
    config.api.listen = Some("127.0.0.1:0".parse().unwrap());
    config.api.keys = vec![KEY.into()];
    config
}

/// One server API call; panics unless it answers 200 in time.
pub(crate) async fn post(api: SocketAddr, call: &str, params: Value) -> Value {
    let (status, reply) = post_status(api, call, &params).await;
    assert_eq!(status, 200, "{call}: {reply}");
    reply
}

/// One server API call answered in time: its status and JSON body.
pub(crate) async fn post_status(api: SocketAddr, call: &str, params: &Value) -> (u16, Value) {
    let body = serde_json::to_vec(&params).unwrap();
    let mut tcp = tokio::net::TcpStream::connect(api).await.unwrap();
    let head = format!(
        "POST /api/{call} HTTP/1.1\r\nHost: {api}\r\nConnection: close\r\nAuthorization: apikey {KEY}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    tcp.write_all(&body).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(WAIT, tcp.read_to_end(&mut response))
        .await
        .expect("answer in time")
        .unwrap();
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("{call}: {head}"));
    (status, serde_json::from_str(body).unwrap())
}
