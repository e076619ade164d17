//! The chat page where WebSockets are blocked, in headless Chromium and
//! headless Firefox: a relay in front of the hub (a TCP proxy written here)
//! refuses every WebSocket upgrade with 403, as some corporate proxies do,
//! and passes plain HTTP on. The page loaded through it falls back to the
//! hub over HTTP (SSE down, POSTs up) by itself, and chats with a page on a
//! WebSocket: every message once, in order, on both; the hub counts one
//! connection of each transport. Then the relay cuts the page's stream:
//! it resumes (or reconnects over HTTP) and loses nothing.
//!
//! Browsers missing is a failure, not a skip; every wait is bounded.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use support::WebPage;
use support::browser::Key;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};

const SHORT: Duration = Duration::from_secs(20);
const TEST_TIMEOUT: Duration = Duration::from_secs(120);

/// One browser at a time in this binary (2 cores shared).
static BROWSERS: Semaphore = Semaphore::const_new(1);

/// A relay to `target` that answers every WebSocket upgrade with 403 and
/// relays everything else; `cut()` resets what it relays.
struct RefusingRelay {
    addr: SocketAddr,
    refused: Arc<AtomicUsize>,
    cut: watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl RefusingRelay {
    async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("bound");
        let refused = Arc::new(AtomicUsize::new(0));
        let (cut, cuts) = watch::channel(0u64);
        let task = tokio::spawn({
            let refused = refused.clone();
            async move {
                loop {
                    let Ok((client, _)) = listener.accept().await else {
                        continue;
                    };
                    let mut cuts = cuts.clone();
                    cuts.mark_unchanged();
                    tokio::spawn(relay(client, target, refused.clone(), cuts));
                }
            }
        });
        Self {
            addr,
            refused,
            cut,
            task,
        }
    }

    fn cut(&self) {
        self.cut.send_modify(|n| *n += 1);
    }
}

impl Drop for RefusingRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads the request head; refuses an upgrade, else relays both ways
/// until either side ends or a cut.
async fn relay(
    mut client: TcpStream,
    target: SocketAddr,
    refused: Arc<AtomicUsize>,
    mut cuts: watch::Receiver<u64>,
) {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match tokio::time::timeout(SHORT, client.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => head.extend_from_slice(&buf[..n]),
            _ => return,
        }
        if head.len() > 64 << 10 {
            return;
        }
    }
    let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
    if text
        .lines()
        .any(|l| l.starts_with("upgrade:") && l.contains("websocket"))
    {
        refused.fetch_add(1, Ordering::SeqCst);
        let _ = client
            .write_all(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 9\r\nConnection: close\r\n\r\nForbidden")
            .await;
        let _ = client.shutdown().await;
        return;
    }
    let Ok(mut server) = TcpStream::connect(target).await else {
        return;
    };
    if server.write_all(&head).await.is_err() {
        return;
    }
    let cut = tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => false,
        _ = cuts.changed() => true,
    };
    if cut {
        let _ = client.set_zero_linger();
    }
}

/// A hub on loopback whose public URL is `public` (the relay's, so pages
/// loaded through it are of the hub's own origin).
async fn hub(listener: TcpListener, public: String) -> tokio::task::JoinHandle<usize> {
    let config = duplex_hub::HubConfig {
        public_urls: vec![public],
        shutdown_grace: Duration::from_millis(500),
        ..duplex_hub::HubConfig::default()
    };
    let hub = duplex_hub::Hub::new(config).expect("valid config");
    let server = duplex_hub::Server::from_listener(hub, listener).expect("serve");
    tokio::spawn(server.run(std::future::pending()))
}

async fn until<P: WebPage>(page: &P, predicate: &str) -> Value {
    support::wait_on(page, predicate, SHORT)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Types `text` in the composer and presses Enter, as a person would.
async fn say<P: WebPage>(page: &P, text: &str) {
    page.eval("document.querySelector('#text').focus(), true")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    page.type_keys(text).await.unwrap_or_else(|e| panic!("{e}"));
    page.key(Key::Enter).await.unwrap_or_else(|e| panic!("{e}"));
    // Sent (not pending) before the next one, so the order is the test's.
    until(
        page,
        "document.querySelectorAll('#messages li.pending').length === 0",
    )
    .await;
}

/// A JS predicate: the chat shows exactly `texts`, in order.
fn texts_are(texts: &[String]) -> String {
    format!(
        "JSON.stringify(Array.from(document.querySelectorAll('#messages li.msg .text')).map(e => e.textContent)) === {}",
        Value::String(json!(texts).to_string())
    )
}

/// The hub's `/metrics` line for `transport`.
async fn transport_count(hub: SocketAddr, transport: &str) -> String {
    let mut tcp = TcpStream::connect(hub).await.expect("connect");
    tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut body = String::new();
    tcp.read_to_string(&mut body).await.expect("read");
    let prefix = format!("duplex_connections_by_transport{{transport=\"{transport}\"}}");
    body.lines()
        .find(|l| l.starts_with(&prefix))
        .expect("the metric")
        .to_owned()
}

/// The scenario, with `fallback` (loaded through the refusing relay) and
/// `direct` (loaded from the hub, on a WebSocket) pages of one browser.
async fn scenario<P: WebPage>(
    fallback: &P,
    direct: &P,
    relay: &RefusingRelay,
    hub: SocketAddr,
    browser: &str,
) {
    until(fallback, "window.chat && chat.hubState() === 'open'").await;
    until(direct, "window.chat && chat.hubState() === 'open'").await;
    assert_eq!(
        fallback.eval("chat.client.transport").await.unwrap(),
        "http",
        "{browser}: the page fell back to HTTP"
    );
    assert_eq!(
        direct.eval("chat.client.transport").await.unwrap(),
        "websocket"
    );
    assert!(
        relay.refused.load(Ordering::SeqCst) >= 1,
        "{browser}: the upgrade was tried and refused"
    );
    assert!(
        transport_count(hub, "sse").await.ends_with(" 1"),
        "{browser}"
    );
    assert!(
        transport_count(hub, "websocket_http1")
            .await
            .ends_with(" 1"),
        "{browser}"
    );

    let mut texts = Vec::new();
    for n in 1..=3 {
        let (a, b) = (format!("over sse {n}"), format!("over websocket {n}"));
        say(fallback, &a).await;
        texts.push(a);
        say(direct, &b).await;
        texts.push(b);
    }
    until(fallback, &texts_are(&texts)).await;
    until(direct, &texts_are(&texts)).await;

    // The relay cuts the page's stream: it resumes or reconnects over HTTP,
    // and what was said meanwhile arrives once, in order.
    relay.cut();
    for n in 1..=3 {
        let text = format!("during the cut {n}");
        say(direct, &text).await;
        texts.push(text);
    }
    until(fallback, &texts_are(&texts)).await;
    until(fallback, "chat.hubState() === 'open'").await;
    say(fallback, "after the cut").await;
    texts.push("after the cut".to_owned());
    until(direct, &texts_are(&texts)).await;
    until(fallback, &texts_are(&texts)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        fallback.eval(&texts_are(&texts)).await.unwrap(),
        true,
        "{browser}: nothing twice"
    );
    assert_eq!(
        fallback.eval("chat.client.transport").await.unwrap(),
        "http",
        "{browser}"
    );
    let counters = fallback.eval("chat.client.counters").await.unwrap();
    assert_eq!(counters["gaps"], 0, "{browser}: {counters}");
}

async fn setup() -> (RefusingRelay, SocketAddr, tokio::task::JoinHandle<usize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let hub_addr = listener.local_addr().expect("bound");
    let relay = RefusingRelay::start(hub_addr).await;
    let task = hub(listener, format!("http://{}", relay.addr)).await;
    (relay, hub_addr, task)
}

#[tokio::test]
async fn in_chromium_a_page_whose_websocket_is_refused_chats_over_sse() {
    let _turn = BROWSERS.acquire().await.expect("open");
    let body = async {
        let (relay, hub_addr, task) = setup().await;
        let browser = support::browser::Browser::launch()
            .await
            .unwrap_or_else(|e| panic!("cannot start headless Chromium: {e}"));
        let fallback = browser
            .new_page(&format!("http://{}/?name=alice", relay.addr))
            .await
            .expect("open the page through the relay");
        let direct = browser
            .new_page(&format!("http://{hub_addr}/?name=bob"))
            .await
            .expect("open the page");
        scenario(&fallback, &direct, &relay, hub_addr, "chromium").await;
        let path = support::artifacts_dir().join("chat-over-sse-chromium.png");
        fallback.screenshot(&path).await.expect("screenshot");
        browser.close().await;
        task.abort();
    };
    tokio::time::timeout(TEST_TIMEOUT, body)
        .await
        .expect("the test finishes in time");
}

#[tokio::test]
async fn in_firefox_a_page_whose_websocket_is_refused_chats_over_sse() {
    let _turn = BROWSERS.acquire().await.expect("open");
    let body = async {
        let (relay, hub_addr, task) = setup().await;
        let firefox = support::firefox::Firefox::launch()
            .await
            .unwrap_or_else(|e| panic!("cannot start headless Firefox: {e}"));
        let fallback = firefox
            .new_page(&format!("http://{}/?name=alice", relay.addr))
            .await
            .expect("open the page through the relay");
        let direct = firefox
            .new_page(&format!("http://{hub_addr}/?name=bob"))
            .await
            .expect("open the page");
        scenario(&fallback, &direct, &relay, hub_addr, "firefox").await;
        firefox.close().await;
        task.abort();
    };
    tokio::time::timeout(TEST_TIMEOUT, body)
        .await
        .expect("the test finishes in time");
}
