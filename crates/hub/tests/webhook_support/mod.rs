//! A real webhook backend for the tests: an HTTP/1.1 server (hyper) on a
//! free loopback port that checks each request's signature itself (HMAC-
//! SHA256 over `"{t}.{body}"` with the shared secret, `t` within 300 s, as
//! `docs/webhooks.md` tells a backend to) and records the events of the
//! requests it accepts, duplicates included. It can be told to fail
//! (answer 503 without recording, or record and still answer 500), to
//! answer slowly, and counts the requests it refused as forged.

#![allow(dead_code, unreachable_pub)]

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use sha2::Sha256;

/// The secret the tests' hubs and this backend share.
pub const SECRET: &str = "the webhook tests' shared secret, 32+ bytes";

/// How far a signature's time may be from now.
pub const TOLERANCE: u64 = 300;

/// What the backend does with the next requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Record and answer 204.
    Accept,
    /// Answer 503 without recording (the backend is down).
    Down,
    /// Record, then answer 500 (it processed them but failed to say so):
    /// the hub sends them again, with the same ids.
    RecordAndFail,
}

#[derive(Default)]
struct State {
    /// Every event accepted, in arrival order, duplicates included.
    events: Vec<Value>,
    /// Raw (signature header, body) of accepted requests.
    raw: Vec<(String, Bytes)>,
}

/// The backend (see the module docs). Stops when dropped.
pub struct Receiver {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    mode: Arc<Mutex<Mode>>,
    delay_ms: Arc<AtomicU64>,
    forged: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

/// Checks a `Duplex-Signature` header for `body`, independently of the
/// hub's code: `t=<unix>,v1=<hex>`.
pub fn check(secret: &[u8], header: &str, body: &[u8], now: u64) -> bool {
    let mut t = None;
    let mut v1 = Vec::new();
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", value)) => t = value.parse::<u64>().ok(),
            Some(("v1", value)) => v1.push(value.to_owned()),
            _ => {}
        }
    }
    let Some(t) = t else { return false };
    if now.abs_diff(t) > TOLERANCE {
        return false;
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    let expected: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    // (A real backend compares in constant time; this one is a test.)
    v1.contains(&expected)
}

/// Now, in Unix seconds.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

impl Receiver {
    /// Starts one on a free loopback port, accepting.
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let mode = Arc::new(Mutex::new(Mode::Accept));
        let delay_ms = Arc::new(AtomicU64::new(0));
        let forged = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let task = {
            let (state, mode, delay_ms, forged, requests) = (
                state.clone(),
                mode.clone(),
                delay_ms.clone(),
                forged.clone(),
                requests.clone(),
            );
            tokio::spawn(async move {
                loop {
                    let Ok((tcp, _)) = listener.accept().await else {
                        continue;
                    };
                    let (state, mode, delay_ms, forged, requests) = (
                        state.clone(),
                        mode.clone(),
                        delay_ms.clone(),
                        forged.clone(),
                        requests.clone(),
                    );
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(
                            move |request: Request<hyper::body::Incoming>| {
                                let (state, mode, delay_ms, forged, requests) = (
                                    state.clone(),
                                    mode.clone(),
                                    delay_ms.clone(),
                                    forged.clone(),
                                    requests.clone(),
                                );
                                async move {
                                    let signature = request
                                        .headers()
                                        .get("duplex-signature")
                                        .and_then(|v| v.to_str().ok())
                                        .unwrap_or("")
                                        .to_owned();
                                    let body = request.into_body().collect().await?.to_bytes();
                                    requests.fetch_add(1, Ordering::SeqCst);
                                    let delay = delay_ms.load(Ordering::SeqCst);
                                    if delay > 0 {
                                        tokio::time::sleep(Duration::from_millis(delay)).await;
                                    }
                                    let status =
                                        if !check(SECRET.as_bytes(), &signature, &body, unix_now())
                                        {
                                            forged.fetch_add(1, Ordering::SeqCst);
                                            StatusCode::UNAUTHORIZED
                                        } else {
                                            let mode = *mode.lock().unwrap();
                                            if mode != Mode::Down {
                                                let parsed: Value = serde_json::from_slice(&body)
                                                    .expect("the hub sends JSON");
                                                let mut state = state.lock().unwrap();
                                                for event in
                                                    parsed["events"].as_array().expect("events")
                                                {
                                                    state.events.push(event.clone());
                                                }
                                                state.raw.push((signature, body));
                                            }
                                            match mode {
                                                Mode::Accept => StatusCode::NO_CONTENT,
                                                Mode::Down => StatusCode::SERVICE_UNAVAILABLE,
                                                Mode::RecordAndFail => {
                                                    StatusCode::INTERNAL_SERVER_ERROR
                                                }
                                            }
                                        };
                                    let mut response = Response::new(Full::new(Bytes::new()));
                                    *response.status_mut() = status;
                                    Ok::<_, hyper::Error>(response)
                                }
                            },
                        );
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(tcp), service)
                            .await;
                    });
                }
            })
        };
        Self {
            addr,
            state,
            mode,
            delay_ms,
            forged,
            requests,
            stop,
            task,
        }
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("http://{}/hooks", self.addr)
    }

    /// Sets what it does with the next requests.
    pub fn set_mode(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    /// Answers every request after `delay`.
    pub fn set_delay(&self, delay: Duration) {
        self.delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// Every event accepted so far, duplicates included.
    pub fn events(&self) -> Vec<Value> {
        self.state.lock().unwrap().events.clone()
    }

    /// The raw (signature, body) of the accepted requests.
    pub fn raw(&self) -> Vec<(String, Bytes)> {
        self.state.lock().unwrap().raw.clone()
    }

    /// Requests refused for their signature.
    pub fn forged(&self) -> usize {
        self.forged.load(Ordering::SeqCst)
    }

    /// Requests received.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    /// Waits (at most `within`) until `pred` holds of the events; panics
    /// with them otherwise.
    pub async fn wait_until(&self, within: Duration, pred: impl Fn(&[Value]) -> bool) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if pred(&self.events()) {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "the backend did not get what was expected within {within:?}; it got:\n{}",
                    self.events()
                        .iter()
                        .map(Value::to_string)
                        .collect::<Vec<_>>()
                        .join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.task.abort();
    }
}

/// The events of `events` of type `kind`.
pub fn of_type<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["type"] == kind).collect()
}

/// How many of `events` are of type `kind` with `field` = `value`.
pub fn count(events: &[Value], kind: &str, field: &str, value: &str) -> usize {
    events
        .iter()
        .filter(|e| e["type"] == kind && e[field] == value)
        .count()
}

/// Deliveries per event id, and whether every repeat of an id is the same
/// event (duplicates are allowed only as exact repeats).
pub fn deliveries(events: &[Value]) -> (BTreeMap<String, usize>, bool) {
    let mut seen: HashMap<String, &Value> = HashMap::new();
    let mut counts = BTreeMap::new();
    let mut same = true;
    for event in events {
        let id = event["id"].as_str().expect("an id").to_owned();
        *counts.entry(id.clone()).or_insert(0) += 1;
        if let Some(first) = seen.get(&id) {
            same &= *first == event;
        } else {
            seen.insert(id, event);
        }
    }
    (counts, same)
}

/// Unique events (first delivery of each id), in arrival order.
pub fn unique(events: &[Value]) -> Vec<Value> {
    let mut seen = std::collections::HashSet::new();
    events
        .iter()
        .filter(|e| seen.insert(e["id"].as_str().unwrap_or("").to_owned()))
        .cloned()
        .collect()
}
