//! The hub's web pages in headless Chromium, against a hub started in this
//! process on `127.0.0.1:0`.
//!
//! - Two chat pages (each its own browser context, like two people) join the
//!   lobby, see each other in the presence list by name, see "… is typing",
//!   and see each other's messages with names, once each and in order.
//! - Rooms: a page joins a second room through the form, each room shows
//!   its own messages and presence, a room not open counts unread messages,
//!   and leaving a room takes the person off its presence list.
//! - A chat page whose connection is cut (a relay in front of the hub resets
//!   its TCP connection and refuses new ones) while the other sends 5
//!   messages reconnects by itself with backoff and shows all 5, in order,
//!   once each; what it sent while cut off is delivered once after. Its
//!   reconnect waits stay under the backoff's ceiling and are spread over
//!   the whole range (full jitter).
//! - A publish whose reply is lost with the connection is sent again with
//!   its idempotency key after the reconnect and is delivered once.
//! - A link gone silent (DevTools' offline mode: the socket stays open,
//!   nothing passes) is found by the app-level ping; back online, the page
//!   reconnects and recovers what it missed.
//! - A gap older than the history (rooms keep 3 messages here) shows a note
//!   in the message list, then the messages the history still had.
//! - The dashboard's connection count and message rate follow a load of
//!   Rust clients, and go back down when it stops.
//! - The operator's console (`/console`) by keyboard alone in Chromium and
//!   Firefox, desktop and phone: a wrong admin token refused with its
//!   reason, the login, the stats flowing to the logged-in page, a user's
//!   connections found, a publish a Rust client receives, the channels
//!   sorted, a user disconnected with a code and reason, the logout; axe-core
//!   logged in and out.
//! - The pages are ES modules on the TypeScript SDK (`/assets/duplex-client.js`);
//!   tests reach the chat's client through `window.chat` (`client`, `delays`,
//!   `duplex`, `hubState()`) and the dashboard's through `window.dashboard`.
//! - In Chromium and in Firefox, with a Rust peer posting: a tab in the
//!   background while messages arrive (visibility emulated; in Chromium the
//!   page is frozen too, `Page.setWebLifecycleState`), a network cut, a hub
//!   restart on the same port (a gap note, then live), and 4-second tokens
//!   expiring mid-session (`?token_url=`, refreshed without a drop): every
//!   message once, in order, nothing pending, live again.
//!
//! Screenshots land in `artifacts/web/`. Chromium missing is a failure, not
//! a skip; every wait is bounded and each test has an overall time limit.

mod support;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use duplex::{ClientRequest, Config, Message};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use support::Relay;
use support::browser::{Browser, Key, Page};
use tokio::sync::{oneshot, watch};

/// The longest a single test may run.
const TEST_TIMEOUT: Duration = Duration::from_secs(150);
/// The longest to wait for something a page should show soon.
const SHORT: Duration = Duration::from_secs(15);
/// The longest to wait for a reconnect: the backoff grows to 8 s while the
/// connection is cut for a few seconds.
const RECONNECT: Duration = Duration::from_secs(45);

/// A hub serving on `127.0.0.1:<free port>` until dropped.
struct TestHub {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<usize>,
}

impl TestHub {
    /// Starts a hub with the default configuration (anonymous clients, the
    /// pages' own origin allowed, `$sys:stats` once a second).
    async fn start() -> Self {
        Self::start_with(duplex_hub::HubConfig::default()).await
    }

    /// Starts a hub with `config`, on a free port whatever it says.
    async fn start_with(config: duplex_hub::HubConfig) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        Self::start_on(config, listener)
    }

    /// Starts a hub with `config` and a [`Relay`] in front of it, whose URL
    /// is the hub's public URL (the relay's pages are on another port than
    /// the hub's, so their origin is not a loopback origin of the hub's).
    async fn start_behind_relay(mut config: duplex_hub::HubConfig) -> (Self, Relay) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("bound");
        let relay = Relay::start(addr).await.expect("start the relay");
        config.public_urls.push(format!("http://{}", relay.addr()));
        (Self::start_on(config, listener), relay)
    }

    /// Serves a hub with `config` on `listener`.
    fn start_on(mut config: duplex_hub::HubConfig, listener: tokio::net::TcpListener) -> Self {
        config.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        let hub = duplex_hub::Hub::new(config).expect("the hub config is valid");
        let server =
            duplex_hub::Server::from_listener(hub, listener).expect("serve on the listener");
        let addr = server.local_addr();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));
        Self {
            addr,
            stop: Some(stop),
            task,
        }
    }

    /// Starts a hub with `config` on `addr` (a port a stopped hub used),
    /// trying for a few seconds while the port is still being released.
    async fn start_at(config: duplex_hub::HubConfig, addr: SocketAddr) -> Self {
        let deadline = std::time::Instant::now() + SHORT;
        loop {
            match tokio::net::TcpListener::bind(addr).await {
                Ok(listener) => return Self::start_on(config, listener),
                Err(e) if std::time::Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("bind {addr} again: {e}"),
            }
        }
    }

    /// Stops the hub as a shutdown does (its connections are closed) and
    /// waits for it, bounded; returns the address it served on.
    async fn stop(mut self) -> SocketAddr {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let task = &mut self.task;
        tokio::time::timeout(SHORT, task)
            .await
            .expect("the hub stops in time")
            .expect("the hub task ends");
        self.addr
    }

    /// `http://127.0.0.1:<port>`.
    fn base(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for TestHub {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.abort();
    }
}

/// Runs a test body with the overall time limit; on timeout the body (and
/// with it the browser and the hub) is dropped and the test fails.
/// Browsers running at once in this test binary: the tests run in parallel
/// and a machine of 2 cores runs 2 Chromiums well, not 5.
static BROWSERS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

/// Runs a test body with the overall time limit (counted once it may start
/// a browser); on timeout the body (and with it the browser and the hub) is
/// dropped and the test fails.
async fn bounded(test: impl Future<Output = ()>) {
    let _turn = BROWSERS
        .acquire()
        .await
        .expect("the semaphore is never closed");
    if tokio::time::timeout(TEST_TIMEOUT, test).await.is_err() {
        panic!("the test did not finish within {TEST_TIMEOUT:?}");
    }
}

async fn launch() -> Browser {
    Browser::launch()
        .await
        .unwrap_or_else(|e| panic!("cannot start headless Chromium: {e}"))
}

/// Opens the chat at `base` as `name` and waits until it is live.
async fn open_chat(browser: &Browser, base: &str, name: &str) -> Page {
    let page = browser
        .new_page(&format!("{base}/?name={name}"))
        .await
        .unwrap_or_else(|e| panic!("open the chat for {name}: {e}"));
    wait(&page, "window.chat && chat.hubState() === 'open'", SHORT).await;
    page
}

/// Waits for `predicate` on `page`, or fails the test with the page's
/// console output.
async fn wait(page: &Page, predicate: &str, timeout: Duration) -> Value {
    page.wait_for(predicate, timeout)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

async fn eval(page: &Page, js: &str) -> Value {
    page.eval(js).await.unwrap_or_else(|e| panic!("{e}"))
}

/// Types `text` in the composer and presses Enter, as a person would.
async fn say(page: &Page, text: &str) {
    page.type_into("#text", text)
        .await
        .unwrap_or_else(|e| panic!("type {text:?}: {e}"));
    page.press_enter()
        .await
        .unwrap_or_else(|e| panic!("send {text:?}: {e}"));
}

/// `[name, text]` of every message shown in the open room, in order.
const MESSAGES: &str = "Array.from(document.querySelectorAll('#messages li.msg'))\
    .map(li => [li.querySelector('.name').textContent, li.querySelector('.text').textContent])";

/// The texts of the messages shown, in order.
const TEXTS: &str = "Array.from(document.querySelectorAll('#messages li.msg .text'))\
    .map(el => el.textContent)";

/// Names in the presence list, sorted.
const PRESENT: &str =
    "Array.from(document.querySelectorAll('#presence li')).map(li => li.dataset.name).sort()";

/// A JS predicate: the list of message texts shown equals `texts`.
fn texts_are(texts: &[&str]) -> String {
    format!(
        "JSON.stringify({TEXTS}) === {}",
        Value::String(json!(texts).to_string())
    )
}

/// The chat page knows it is cut off: between attempts ("reconnecting") or
/// in one whose TCP connection a relay holds open ("connecting"), not open.
async fn assert_cut_off(page: &Page) {
    let state = eval(page, "chat.hubState()").await;
    assert!(
        state == "reconnecting" || state == "connecting",
        "cut off, the page is {state}"
    );
}

/// A JS predicate: the presence list shows `names` (sorted).
fn present_are(names: &[&str]) -> String {
    format!(
        "JSON.stringify({PRESENT}) === {}",
        Value::String(json!(names).to_string())
    )
}

/// Fails if the page logged an uncaught exception.
fn assert_no_page_errors(page: &Page, who: &str) {
    let errors: Vec<String> = page
        .console()
        .into_iter()
        .filter(|line| line.starts_with("uncaught") || line.contains("the page crashed"))
        .collect();
    assert!(
        errors.is_empty(),
        "{who}'s page had errors:\n{}",
        errors.join("\n")
    );
}

async fn screenshot(page: &Page, file: &str) {
    let path = support::artifacts_dir().join(file);
    page.screenshot(&path)
        .await
        .unwrap_or_else(|e| panic!("screenshot {}: {e}", path.display()));
}

#[tokio::test]
async fn two_chat_pages_see_each_other_presence_and_typing() {
    bounded(async {
        let hub = TestHub::start().await;
        let browser = launch().await;
        let alice = open_chat(&browser, &hub.base(), "alice").await;
        let bob = open_chat(&browser, &hub.base(), "bob").await;

        // Presence: both pages list both people, by name (the names travel
        // in signals; anonymous connections have an empty `user`).
        for page in [&alice, &bob] {
            wait(
                page,
                &present_are(&["alice", "bob"]),
                SHORT,
            )
            .await;
        }
        assert_eq!(
            eval(&alice, "document.querySelector('#presence li.me').dataset.name").await,
            "alice"
        );
        assert_eq!(eval(&alice, "document.querySelector('#state-text').textContent").await, "live");
        assert_eq!(eval(&alice, "document.querySelector('#state').dataset.state").await, "open");

        // Typing shows on the other page, and goes away with the message.
        alice.type_into("#text", "hi bob").await.expect("type");
        wait(
            &bob,
            "document.querySelector('#typing').textContent === 'alice is typing…'",
            SHORT,
        )
        .await;
        assert_eq!(eval(&alice, "document.querySelector('#typing').textContent").await, "");
        alice.press_enter().await.expect("send");
        wait(&bob, &texts_are(&["hi bob"]), SHORT).await;
        wait(&bob, "document.querySelector('#typing').textContent === ''", SHORT).await;

        say(&bob, "hello alice").await;
        let both = json!([["alice", "hi bob"], ["bob", "hello alice"]]);
        for page in [&alice, &bob] {
            wait(page, &texts_are(&["hi bob", "hello alice"]), SHORT).await;
            assert_eq!(eval(page, MESSAGES).await, both);
            // Nothing left waiting for its acknowledgement.
            wait(page, "document.querySelectorAll('#messages li.pending').length === 0", SHORT)
                .await;
        }
        assert_eq!(
            eval(&alice, "Array.from(document.querySelectorAll('#messages li.msg')).map(li => li.classList.contains('mine'))").await,
            json!([true, false])
        );
        assert_eq!(eval(&alice, "chat.client.counters.duplicates").await, 0);

        // A screenshot of alice's view while bob types.
        bob.type_into("#text", "how are you").await.expect("type");
        wait(
            &alice,
            "document.querySelector('#typing').textContent === 'bob is typing…'",
            SHORT,
        )
        .await;
        screenshot(&alice, "chat.png").await;
        // And bob's on a phone, in dark mode.
        bob.set_viewport(390, 780, true).await.expect("viewport");
        bob.set_dark(true).await.expect("dark");
        tokio::time::sleep(Duration::from_millis(300)).await;
        screenshot(&bob, "chat-phone-dark.png").await;

        assert_no_page_errors(&alice, "alice");
        assert_no_page_errors(&bob, "bob");
        browser.close().await;
    })
    .await;
}

/// A JS predicate: the room list shows `rooms`, in order.
fn rooms_are(rooms: &[&str]) -> String {
    format!(
        "JSON.stringify(Array.from(document.querySelectorAll('#rooms li')).map(li => li.dataset.room)) === {}",
        Value::String(json!(rooms).to_string())
    )
}

#[tokio::test]
async fn rooms_keep_their_own_messages_presence_and_unread_counts() {
    bounded(async {
        let hub = TestHub::start().await;
        let browser = launch().await;
        let alice = open_chat(&browser, &hub.base(), "alice").await;
        let bob = open_chat(&browser, &hub.base(), "bob").await;
        for page in [&alice, &bob] {
            wait(page, &present_are(&["alice", "bob"]), SHORT).await;
        }

        // Alice joins #ops through the form and is alone there.
        alice
            .type_into("#room-input", "ops")
            .await
            .expect("type a room");
        alice.press_enter().await.expect("join");
        wait(&alice, &rooms_are(&["lobby", "ops"]), SHORT).await;
        wait(
            &alice,
            "document.querySelector('#room-title').textContent === '# ops'",
            SHORT,
        )
        .await;
        wait(&alice, &present_are(&["alice"]), SHORT).await;
        say(&alice, "in ops").await;
        wait(&alice, &texts_are(&["in ops"]), SHORT).await;

        // Bob, in the lobby, does not see it; what he says there counts as
        // unread in alice's lobby.
        say(&bob, "in lobby").await;
        wait(&bob, &texts_are(&["in lobby"]), SHORT).await;
        wait(
            &alice,
            "document.querySelector('#rooms li[data-room=\"lobby\"] .unread')?.textContent === '1'",
            SHORT,
        )
        .await;
        assert_eq!(eval(&alice, TEXTS).await, json!(["in ops"]));
        assert_eq!(eval(&bob, TEXTS).await, json!(["in lobby"]));

        // Bob joins #ops and gets its history; both are listed there.
        bob.type_into("#room-input", "#ops")
            .await
            .expect("type a room");
        bob.press_enter().await.expect("join");
        wait(&bob, &texts_are(&["in ops"]), SHORT).await;
        for page in [&alice, &bob] {
            wait(page, &present_are(&["alice", "bob"]), SHORT).await;
        }
        screenshot(&alice, "chat-rooms.png").await;

        // Back to the lobby: its messages, and the badge is gone.
        eval(
            &alice,
            "document.querySelector('#rooms li[data-room=\"lobby\"] .room-open').click()",
        )
        .await;
        wait(&alice, &texts_are(&["in lobby"]), SHORT).await;
        assert_eq!(
            eval(
                &alice,
                "document.querySelector('#rooms li[data-room=\"lobby\"] .unread') === null"
            )
            .await,
            true
        );

        // Alice leaves #ops: it is gone from her list and from bob's
        // presence list there.
        eval(
            &alice,
            "document.querySelector('#rooms li[data-room=\"ops\"] .room-leave').click()",
        )
        .await;
        wait(&alice, &rooms_are(&["lobby"]), SHORT).await;
        wait(&bob, &present_are(&["bob"]), SHORT).await;

        assert_no_page_errors(&alice, "alice");
        assert_no_page_errors(&bob, "bob");
        browser.close().await;
    })
    .await;
}

#[tokio::test]
async fn a_cut_off_chat_page_reconnects_and_shows_what_it_missed_once_in_order() {
    bounded(async {
        let (hub, relay) = TestHub::start_behind_relay(duplex_hub::HubConfig::default()).await;
        let browser = launch().await;
        // Alice reaches the hub through the relay, bob directly.
        let alice = open_chat(&browser, &format!("http://{}", relay.addr()), "alice").await;
        let bob = open_chat(&browser, &hub.base(), "bob").await;
        wait(&bob, &format!("{PRESENT}.length === 2"), SHORT).await;
        say(&bob, "before the cut").await;
        wait(&alice, &texts_are(&["before the cut"]), SHORT).await;

        relay.cut();
        wait(&alice, "chat.hubState() === 'reconnecting'", SHORT).await;
        wait(
            &alice,
            "/^reconnecting/.test(document.querySelector('#state-text').textContent)",
            SHORT,
        )
        .await;
        // The hub noticed too: alice left bob's room.
        wait(&bob, &present_are(&["bob"]), SHORT).await;

        let missed = ["missed 1", "missed 2", "missed 3", "missed 4", "missed 5"];
        for text in missed {
            say(&bob, text).await;
        }
        let mut seen_by_bob = vec!["before the cut"];
        seen_by_bob.extend(missed);
        wait(&bob, &texts_are(&seen_by_bob), SHORT).await;

        // Alice writes while cut off: the message waits in her queue.
        say(&alice, "written while offline").await;
        wait(
            &alice,
            "document.querySelectorAll('#messages li.pending').length === 1",
            SHORT,
        )
        .await;
        assert_eq!(eval(&alice, "chat.client.queued").await, 1);
        assert_cut_off(&alice).await;
        screenshot(&alice, "chat-reconnecting.png").await;

        relay.restore();
        wait(&alice, "chat.hubState() === 'open'", RECONNECT).await;
        let mut everything = seen_by_bob.clone();
        everything.push("written while offline");
        for page in [&alice, &bob] {
            wait(page, &texts_are(&everything), SHORT).await;
            wait(
                page,
                "document.querySelectorAll('#messages li.pending').length === 0",
                SHORT,
            )
            .await;
        }
        let counters = eval(&alice, "chat.client.counters").await;
        assert!(counters["reconnects"].as_u64() >= Some(1), "{counters}");
        assert!(counters["recovered"].as_u64() >= Some(1), "{counters}");
        assert_eq!(counters["gaps"], 0, "{counters}");
        assert_eq!(
            eval(
                &alice,
                "document.querySelectorAll('#messages li.note').length"
            )
            .await,
            0,
            "no gap note: everything was recovered"
        );
        wait(
            &alice,
            "document.querySelector('#state-text').textContent === 'live'",
            SHORT,
        )
        .await;
        wait(&bob, &format!("{PRESENT}.length === 2"), SHORT).await;

        // Full-jitter backoff: attempt n waited at most min(30 s, 1 s × 2^n).
        let delays = eval(&alice, "chat.delays").await;
        let delays = delays.as_array().expect("chat.delays is an array");
        assert!(!delays.is_empty());
        for d in delays {
            let (attempt, delay) = (d["attempt"].as_u64().unwrap(), d["delay"].as_u64().unwrap());
            let cap = 30_000u64.min(1000 << attempt.min(5));
            assert!(
                delay <= cap,
                "attempt {attempt} waited {delay} ms > {cap} ms"
            );
        }
        // And the waits are spread over the whole range, so that pages cut
        // off together do not come back together: 400 draws of attempt 3
        // (at most 8 s) in this browser.
        let draws = eval(
            &alice,
            "Array.from({ length: 400 }, () => chat.duplex.backoffDelay(3, 1000, 30000))",
        )
        .await;
        let draws: Vec<f64> = draws
            .as_array()
            .expect("an array")
            .iter()
            .map(|d| d.as_f64().expect("a number"))
            .collect();
        assert!(
            draws.iter().all(|d| (0.0..=8000.0).contains(d)),
            "{draws:?}"
        );
        let quarter = |q: f64| {
            draws
                .iter()
                .filter(|d| **d >= q * 2000.0 && **d < (q + 1.0) * 2000.0)
                .count()
        };
        for q in 0..4 {
            // 100 expected in each quarter; 50 is far outside chance.
            assert!(quarter(f64::from(q)) >= 50, "quarter {q}: {draws:?}");
        }

        screenshot(&alice, "chat-recovered.png").await;
        assert_no_page_errors(&alice, "alice");
        assert_no_page_errors(&bob, "bob");
        browser.close().await;
    })
    .await;
}

#[tokio::test]
async fn a_publish_whose_reply_was_lost_is_delivered_once() {
    bounded(async {
        let (hub, relay) = TestHub::start_behind_relay(duplex_hub::HubConfig::default()).await;
        let browser = launch().await;
        let alice = open_chat(&browser, &format!("http://{}", relay.addr()), "alice").await;
        let bob = open_chat(&browser, &hub.base(), "bob").await;
        wait(&alice, &format!("{PRESENT}.length === 2"), SHORT).await;

        // The hub gets alice's publish and delivers it, but its reply (and
        // the message's echo) never reach her: the link fails before.
        relay.hold_replies(true);
        say(&alice, "only once").await;
        wait(&bob, &texts_are(&["only once"]), SHORT).await;
        assert_eq!(
            eval(
                &alice,
                "document.querySelectorAll('#messages li.pending').length"
            )
            .await,
            1
        );
        assert_eq!(eval(&alice, "chat.client.counters.published").await, 0);
        relay.cut();
        wait(&alice, "chat.hubState() === 'reconnecting'", SHORT).await;
        relay.hold_replies(false);
        relay.restore();
        wait(&alice, "chat.hubState() === 'open'", RECONNECT).await;

        // Sent again with the same key: the hub says it is a duplicate.
        wait(
            &alice,
            "chat.client.counters.duplicatePublishes === 1",
            SHORT,
        )
        .await;
        assert!(eval(&alice, "chat.client.counters.retried").await.as_u64() >= Some(1));
        for page in [&alice, &bob] {
            wait(page, &texts_are(&["only once"]), SHORT).await;
            wait(
                page,
                "document.querySelectorAll('#messages li.pending').length === 0",
                SHORT,
            )
            .await;
        }
        // Still once a little later.
        say(&bob, "after").await;
        for page in [&alice, &bob] {
            wait(page, &texts_are(&["only once", "after"]), SHORT).await;
        }
        assert_no_page_errors(&alice, "alice");
        browser.close().await;
    })
    .await;
}

#[tokio::test]
async fn a_silent_link_is_found_by_the_ping_and_recovered_when_back_online() {
    bounded(async {
        let hub = TestHub::start().await;
        let browser = launch().await;
        let alice = open_chat(&browser, &hub.base(), "alice").await;
        let bob = open_chat(&browser, &hub.base(), "bob").await;
        wait(&alice, &format!("{PRESENT}.length === 2"), SHORT).await;
        say(&bob, "before").await;
        wait(&alice, &texts_are(&["before"]), SHORT).await;

        // DevTools' offline mode: new connections fail, and the open
        // WebSocket stays OPEN with nothing getting through (Chromium does
        // not close it): a link gone silent, which only the ping finds.
        alice.set_offline(true).await.expect("offline");
        wait(&alice, "navigator.onLine === false", SHORT).await;
        assert_eq!(eval(&alice, "chat.hubState()").await, "open");
        for text in ["while silent 1", "while silent 2", "while silent 3"] {
            say(&bob, text).await;
        }
        wait(
            &bob,
            "document.querySelectorAll('#messages li.msg').length === 4",
            SHORT,
        )
        .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(
            eval(&alice, "chat.client.state").await,
            "connected",
            "Chromium keeps the WebSocket open while offline (no close reached the client)"
        );
        assert_eq!(
            eval(&alice, &format!("{TEXTS}.length")).await,
            1,
            "nothing got through"
        );

        // The next ping goes unanswered (2 s here instead of 10 s).
        eval(&alice, "chat.client.ping(2000); true").await;
        // The dot read in the same evaluation that finds the state: a retry
        // may begin (connecting) between two evaluations.
        let dot = wait(
            &alice,
            "chat.hubState() === 'reconnecting' && document.querySelector('#state').dataset.state",
            SHORT,
        )
        .await;
        assert_eq!(dot, "offline", "the dot says offline while the browser is");
        // Reconnect attempts fail while offline.
        wait(&alice, "chat.delays.length >= 2", RECONNECT).await;
        assert_cut_off(&alice).await;

        alice.set_offline(false).await.expect("online");
        wait(&alice, "chat.hubState() === 'open'", RECONNECT).await;
        wait(
            &alice,
            &texts_are(&[
                "before",
                "while silent 1",
                "while silent 2",
                "while silent 3",
            ]),
            SHORT,
        )
        .await;
        let counters = eval(&alice, "chat.client.counters").await;
        assert!(counters["recovered"].as_u64() >= Some(1), "{counters}");
        assert_eq!(counters["gaps"], 0, "{counters}");
        assert_no_page_errors(&alice, "alice");
        browser.close().await;
    })
    .await;
}

#[tokio::test]
async fn a_gap_too_old_to_recover_is_shown_as_a_note() {
    bounded(async {
        // Rooms keep 3 messages: 5 missed ones cannot all be recovered.
        let mut config = duplex_hub::HubConfig::default();
        config.namespaces.insert(
            "chat".to_owned(),
            duplex_hub::config::NamespaceConfig {
                history_size: 3,
                ..duplex_hub::config::NamespaceConfig::default()
            },
        );
        let (hub, relay) = TestHub::start_behind_relay(config).await;
        let browser = launch().await;
        let alice = open_chat(&browser, &format!("http://{}", relay.addr()), "alice").await;
        let bob = open_chat(&browser, &hub.base(), "bob").await;
        wait(&alice, &format!("{PRESENT}.length === 2"), SHORT).await;
        say(&bob, "before the cut").await;
        wait(&alice, &texts_are(&["before the cut"]), SHORT).await;

        relay.cut();
        wait(&alice, "chat.hubState() === 'reconnecting'", SHORT).await;
        for n in 1..=5 {
            say(&bob, &format!("missed {n}")).await;
        }
        wait(&bob, "document.querySelectorAll('#messages li.msg').length === 6", SHORT).await;
        relay.restore();
        wait(&alice, "chat.hubState() === 'open'", RECONNECT).await;

        // The note, then what the history still had (the last 3), once each.
        wait(&alice, "chat.client.counters.gaps === 1", SHORT).await;
        wait(
            &alice,
            &texts_are(&["before the cut", "missed 3", "missed 4", "missed 5"]),
            SHORT,
        )
        .await;
        let kinds = eval(
            &alice,
            "Array.from(document.querySelectorAll('#messages li')).map(li => li.className.split(' ')[0])",
        )
        .await;
        assert_eq!(kinds, json!(["msg", "note", "msg", "msg", "msg"]));
        let note = eval(&alice, "document.querySelector('#messages li.note').textContent").await;
        assert!(
            note.as_str().is_some_and(|n| n.contains("could not be recovered")),
            "{note}"
        );
        // Live again afterwards.
        say(&bob, "after the gap").await;
        wait(
            &alice,
            &texts_are(&["before the cut", "missed 3", "missed 4", "missed 5", "after the gap"]),
            SHORT,
        )
        .await;
        screenshot(&alice, "chat-gap.png").await;
        assert_no_page_errors(&alice, "alice");
        browser.close().await;
    })
    .await;
}

/// A Rust client of the hub protocol posting to `chat:lobby` as a chat page
/// would ({"name", "text"}), each publish waited for, so the order is known.
struct Peer {
    ws: duplex::WebSocket<duplex::transport::Transport>,
    id: u64,
}

impl Peer {
    /// Connects to the hub at `addr` (with `token`, if any).
    async fn connect(addr: SocketAddr, token: Option<&str>) -> Self {
        let request = ClientRequest::new(format!("ws://{addr}/ws")).protocol("duplex.v1");
        let ws = tokio::time::timeout(SHORT, duplex::connect_with(&request, &Config::client()))
            .await
            .expect("the peer connects in time")
            .expect("the peer connects");
        let mut peer = Self { ws, id: 0 };
        let mut connect = json!({"op": "connect", "name": "peer"});
        if let Some(token) = token {
            connect["token"] = json!(token);
        }
        let reply = peer.request(connect).await;
        assert_eq!(reply["op"], "connected", "{reply}");
        peer
    }

    /// Sends `command` with the next id and returns the reply to it.
    async fn request(&mut self, mut command: Value) -> Value {
        self.id += 1;
        command["id"] = json!(self.id);
        self.ws
            .send(Message::text(command.to_string()))
            .await
            .expect("the peer sends");
        loop {
            let next = tokio::time::timeout(SHORT, self.ws.next())
                .await
                .expect("the hub answers the peer in time");
            let Some(Ok(Message::Text(text))) = next else {
                panic!("the peer's connection ended: {next:?}");
            };
            let reply: Value = serde_json::from_str(&text).expect("JSON");
            if reply["id"] == json!(self.id) {
                return reply;
            }
        }
    }

    /// Publishes `text` as "bob" to the lobby; returns once the hub acknowledged it.
    async fn say(&mut self, text: &str) {
        let reply = self
            .request(json!({"op": "publish", "channel": "chat:lobby", "data": {"name": "bob", "text": text}}))
            .await;
        assert_eq!(reply["op"], "published", "{reply}");
    }
}

/// Waits for `predicate` on a page of either browser, or fails the test.
async fn until<P: support::WebPage>(page: &P, predicate: &str, timeout: Duration) -> Value {
    support::wait_on(page, predicate, timeout)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Asserts the chat shows exactly `texts` (nothing lost, nothing twice, in
/// order), nothing pending, and is live again (no stuck state).
async fn settled<P: support::WebPage>(page: &P, texts: &[&str]) {
    until(page, &texts_are(texts), SHORT).await;
    until(
        page,
        "document.querySelectorAll('#messages li.pending').length === 0 \
         && chat.hubState() === 'open' \
         && document.querySelector('#state-text').textContent === 'live'",
        SHORT,
    )
    .await;
    // And still so a moment later: nothing arrives twice late.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        page.eval(&texts_are(texts))
            .await
            .unwrap_or_else(|e| panic!("{e}")),
        true,
        "the messages changed after settling"
    );
}

/// Emulates the page going to the background (`hidden`) or coming back:
/// `document.visibilityState` overridden and `visibilitychange` dispatched,
/// which is what the SDK listens to; asserts `chat.client.inBackground`
/// follows.
async fn set_hidden<P: support::WebPage>(page: &P, hidden: bool) {
    let state = if hidden { "hidden" } else { "visible" };
    let js = format!(
        "(() => {{ Object.defineProperty(document, 'visibilityState', {{ configurable: true, get: () => '{state}' }}); \
         Object.defineProperty(document, 'hidden', {{ configurable: true, get: () => {hidden} }}); \
         document.dispatchEvent(new Event('visibilitychange')); return chat.client.inBackground; }})()"
    );
    let background = page.eval(&js).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        background, hidden,
        "the SDK's background mode follows the page"
    );
}

/// The background scenario on `page` (a chat in the lobby showing
/// `before`): hidden, messages published by `peer`, visible again: every
/// message shown once, in order, live; then one more, live.
async fn background_scenario<P: support::WebPage>(page: &P, peer: &mut Peer, browser: &str) {
    set_hidden(page, true).await;
    let arrive = [
        "in the background 1",
        "in the background 2",
        "in the background 3",
    ];
    for text in arrive {
        peer.say(text).await;
    }
    set_hidden(page, false).await;
    let mut all = vec!["before"];
    all.extend(arrive);
    settled(page, &all).await;
    peer.say("back in front").await;
    all.push("back in front");
    settled(page, &all).await;
    let counters = page.eval("chat.client.counters").await.expect("counters");
    assert_eq!(counters["gaps"], 0, "{browser}: {counters}");
}

/// A tab in the background while messages arrive (Chromium): hidden (the
/// SDK's relaxed liveness budget), then frozen as Chromium freezes a
/// background tab (`Page.setWebLifecycleState`: no timer nor task runs,
/// frames wait in the socket), messages published meanwhile; resumed and
/// visible again, the page shows every message once, in order, and is live.
#[tokio::test]
async fn a_background_tab_shows_what_arrived_meanwhile_once_in_order() {
    bounded(async {
        let hub = TestHub::start().await;
        let browser = launch().await;
        let alice = open_chat(&browser, &hub.base(), "alice").await;
        let mut peer = Peer::connect(hub.addr, None).await;
        peer.say("before").await;
        wait(&alice, &texts_are(&["before"]), SHORT).await;

        set_hidden(&alice, true).await;
        alice
            .call("Page.setWebLifecycleState", json!({"state": "frozen"}))
            .await
            .expect("freeze the page");
        let arrive = ["while frozen 1", "while frozen 2", "while frozen 3"];
        for text in arrive {
            peer.say(text).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        alice
            .call("Page.setWebLifecycleState", json!({"state": "active"}))
            .await
            .expect("resume the page");
        set_hidden(&alice, false).await;
        let mut all = vec!["before"];
        all.extend(arrive);
        settled(&alice, &all).await;
        // Chromium may close a frozen page's WebSocket: then it was recovered.
        let frozen = eval(&alice, "chat.client.counters").await;
        assert_eq!(frozen["gaps"], 0, "{frozen}");
        assert!(
            frozen["drops"] == 0 || frozen["recovered"].as_u64() >= Some(1),
            "{frozen}"
        );
        // Hidden again, not frozen: the connection lives through it on the
        // background budget.
        set_hidden(&alice, true).await;
        peer.say("hidden, not frozen").await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        set_hidden(&alice, false).await;
        all.push("hidden, not frozen");
        settled(&alice, &all).await;
        let counters = eval(&alice, "chat.client.counters").await;
        assert_eq!(counters["gaps"], 0, "{counters}");
        assert_eq!(
            counters["drops"], frozen["drops"],
            "the connection lived through the background: {counters}"
        );
        assert_no_page_errors(&alice, "alice");
        browser.close().await;
    })
    .await;
}

/// The hub restarts (stopped, then started again on the same port, with the
/// in-memory broker, so the channels' history and epochs are new): the page
/// reconnects by itself, shows a gap note (what was sent while the hub was
/// down is lost with it, and said so), then is live again: the messages
/// before and after, each once, in order.
async fn restart_scenario<P: support::WebPage>(
    page: &P,
    hub: TestHub,
    mut peer: Peer,
    browser: &str,
) -> TestHub {
    peer.say("before the restart").await;
    until(page, &texts_are(&["before the restart"]), SHORT).await;
    drop(peer);
    let addr = hub.stop().await;
    until(page, "chat.hubState() === 'reconnecting'", SHORT).await;
    let hub = TestHub::start_at(duplex_hub::HubConfig::default(), addr).await;
    until(page, "chat.hubState() === 'open'", RECONNECT).await;
    until(page, "chat.client.counters.gaps >= 1", SHORT).await;
    until(
        page,
        "document.querySelectorAll('#messages li.note.gap').length === 1",
        SHORT,
    )
    .await;
    let mut peer = Peer::connect(hub.addr, None).await;
    peer.say("after the restart").await;
    settled(page, &["before the restart", "after the restart"]).await;
    let kinds = page
        .eval("Array.from(document.querySelectorAll('#messages li')).map(li => li.className.split(' ')[0])")
        .await
        .expect("kinds");
    assert_eq!(kinds, json!(["msg", "note", "msg"]), "{browser}");
    hub
}

/// A hub restart under a Chromium page: see [`restart_scenario`].
#[tokio::test]
async fn a_hub_restart_shows_a_gap_note_then_the_page_is_live_again() {
    bounded(async {
        let hub = TestHub::start().await;
        let browser = launch().await;
        let alice = open_chat(&browser, &hub.base(), "alice").await;
        let peer = Peer::connect(hub.addr, None).await;
        let _hub = restart_scenario(&alice, hub, peer, "chromium").await;
        screenshot(&alice, "chat-after-restart.png").await;
        assert_no_page_errors(&alice, "alice");
        browser.close().await;
    })
    .await;
}

/// A small HTTP server on `127.0.0.1:0` that answers every request with a
/// fresh HS256 token for `alice` valid `ttl` seconds (CORS: the requesting
/// origin, with credentials), counting the tokens it gave.
struct TokenServer {
    addr: SocketAddr,
    served: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl TokenServer {
    async fn start(secret: &'static str, ttl: u64) -> Self {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the token server");
        let addr = listener.local_addr().expect("bound");
        let served = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = served.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let count = count.clone();
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buf = [0u8; 2048];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    let request = String::from_utf8_lossy(&request).into_owned();
                    let origin = request
                        .lines()
                        .find_map(|l| {
                            let (name, value) = l.split_once(':')?;
                            name.eq_ignore_ascii_case("origin")
                                .then(|| value.trim().to_owned())
                        })
                        .unwrap_or_else(|| "null".into());
                    let exp = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .expect("after 1970")
                        .as_secs()
                        + ttl;
                    let token = jsonwebtoken::encode(
                        &jsonwebtoken::Header::default(),
                        &json!({"sub": "alice", "exp": exp}),
                        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
                    )
                    .expect("sign a token");
                    count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let response = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nCache-Control: no-store\r\n\
                         Access-Control-Allow-Origin: {origin}\r\nAccess-Control-Allow-Credentials: true\r\n\
                         Content-Length: {}\r\nConnection: close\r\n\r\n{token}",
                        token.len()
                    );
                    let _ = stream.write_all(response.as_bytes()).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        Self { addr, served, task }
    }

    fn served(&self) -> usize {
        self.served.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

const TOKEN_SECRET: &str = "a secret for the token expiry test";

/// A hub with a JWT secret, for the token scenario.
fn auth_config() -> duplex_hub::HubConfig {
    duplex_hub::HubConfig {
        auth: Some(duplex_hub::config::AuthConfig {
            hs256_secret: Some(TOKEN_SECRET.into()),
            ..duplex_hub::config::AuthConfig::default()
        }),
        ..duplex_hub::HubConfig::default()
    }
}

/// A token for `sub` valid an hour, signed with [`TOKEN_SECRET`].
fn long_token(sub: &str) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
        + 3600;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"sub": sub, "exp": exp}),
        &jsonwebtoken::EncodingKey::from_secret(TOKEN_SECRET.as_bytes()),
    )
    .expect("sign a token")
}

/// Tokens expiring mid-session: the page (opened with `?token_url=`) gets
/// a token of 4 s from `tokens` and refreshes it before each expiry, while
/// the peer posts a message a second and the page posts too, for more than
/// three token lifetimes: every message once, in order, and the connection
/// never dropped (refreshed, not closed with 4002 and reconnected).
async fn token_scenario<P: support::WebPage>(
    page: &P,
    peer: &mut Peer,
    tokens: &TokenServer,
    browser: &str,
) {
    until(
        page,
        "document.querySelector('#name-input').value === 'alice'",
        SHORT,
    )
    .await;
    let mut all = Vec::new();
    for n in 1..=14 {
        let text = format!("tick {n}");
        peer.say(&text).await;
        all.push(text);
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }
    let texts: Vec<&str> = all.iter().map(String::as_str).collect();
    settled(page, &texts).await;
    let counters = page.eval("chat.client.counters").await.expect("counters");
    assert_eq!(
        counters["connects"], 1,
        "{browser}: never reconnected: {counters}"
    );
    assert_eq!(counters["drops"], 0, "{browser}: {counters}");
    assert!(
        tokens.served() >= 4,
        "{browser}: {} tokens fetched over 14 s of 4 s tokens",
        tokens.served()
    );
    assert_eq!(
        page.eval(MESSAGES).await.expect("messages")[0][0],
        "bob",
        "{browser}: the verified user of the peer"
    );
}

/// A token expiring mid-session in Chromium: see [`token_scenario`].
#[tokio::test]
async fn a_token_expiring_mid_session_is_refreshed_without_a_drop() {
    bounded(async {
        let hub = TestHub::start_with(auth_config()).await;
        let tokens = TokenServer::start(TOKEN_SECRET, 4).await;
        let browser = launch().await;
        let alice = open_chat(
            &browser,
            &hub.base(),
            &format!("mallory&token_url=http://{}/token", tokens.addr),
        )
        .await;
        let mut peer = Peer::connect(hub.addr, Some(&long_token("bob"))).await;
        token_scenario(&alice, &mut peer, &tokens, "chromium").await;
        assert_no_page_errors(&alice, "alice");
        browser.close().await;
    })
    .await;
}

/// Opens the chat at `base` as `name` in Firefox and waits until it is live.
async fn open_chat_in_firefox(
    firefox: &support::firefox::Firefox,
    base: &str,
    name: &str,
) -> support::firefox::FirefoxPage {
    let page = firefox
        .new_page(&format!("{base}/?name={name}"))
        .await
        .unwrap_or_else(|e| panic!("open the chat in Firefox for {name}: {e}"));
    until(&page, "window.chat && chat.hubState() === 'open'", SHORT).await;
    page
}

/// In Firefox (WebDriver BiDi): a tab in the background while messages
/// arrive (visibility emulated as in Chromium; BiDi has no way to freeze a
/// page), then a network cut (the relay resets the connection and refuses
/// new ones while messages are sent): every message once, in order, live.
#[tokio::test]
async fn in_firefox_a_background_tab_and_a_network_cut_lose_nothing() {
    bounded(async {
        let (hub, relay) = TestHub::start_behind_relay(duplex_hub::HubConfig::default()).await;
        let firefox = launch_firefox().await;
        let alice =
            open_chat_in_firefox(&firefox, &format!("http://{}", relay.addr()), "alice").await;
        let mut peer = Peer::connect(hub.addr, None).await;
        peer.say("before").await;
        until(&alice, &texts_are(&["before"]), SHORT).await;
        background_scenario(&alice, &mut peer, "firefox").await;

        relay.cut();
        until(&alice, "chat.hubState() === 'reconnecting'", SHORT).await;
        for text in ["missed 1", "missed 2", "missed 3"] {
            peer.say(text).await;
        }
        relay.restore();
        until(&alice, "chat.hubState() === 'open'", RECONNECT).await;
        settled(
            &alice,
            &[
                "before",
                "in the background 1",
                "in the background 2",
                "in the background 3",
                "back in front",
                "missed 1",
                "missed 2",
                "missed 3",
            ],
        )
        .await;
        let counters = alice.eval("chat.client.counters").await.expect("counters");
        assert!(counters["recovered"].as_u64() >= Some(1), "{counters}");
        assert_eq!(counters["gaps"], 0, "{counters}");
        firefox.close().await;
    })
    .await;
}

/// A hub restart under a Firefox page: see [`restart_scenario`].
#[tokio::test]
async fn in_firefox_a_hub_restart_shows_a_gap_note_then_the_page_is_live_again() {
    bounded(async {
        let hub = TestHub::start().await;
        let firefox = launch_firefox().await;
        let alice = open_chat_in_firefox(&firefox, &hub.base(), "alice").await;
        let peer = Peer::connect(hub.addr, None).await;
        let _hub = restart_scenario(&alice, hub, peer, "firefox").await;
        firefox.close().await;
    })
    .await;
}

/// A token expiring mid-session in Firefox: see [`token_scenario`].
#[tokio::test]
async fn in_firefox_a_token_expiring_mid_session_is_refreshed_without_a_drop() {
    bounded(async {
        let hub = TestHub::start_with(auth_config()).await;
        let tokens = TokenServer::start(TOKEN_SECRET, 4).await;
        let firefox = launch_firefox().await;
        let alice = open_chat_in_firefox(
            &firefox,
            &hub.base(),
            &format!("mallory&token_url=http://{}/token", tokens.addr),
        )
        .await;
        let mut peer = Peer::connect(hub.addr, Some(&long_token("bob"))).await;
        token_scenario(&alice, &mut peer, &tokens, "firefox").await;
        firefox.close().await;
    })
    .await;
}

/// A Rust client of the hub protocol that publishes `burst` messages to
/// `chat:load` every `every` until `stop` turns true, reading everything it
/// receives.
async fn load_client(
    addr: SocketAddr,
    n: usize,
    every: Duration,
    burst: usize,
    mut stop: watch::Receiver<bool>,
) {
    let request = ClientRequest::new(format!("ws://{addr}/ws")).protocol("duplex.v1");
    let mut ws = duplex::connect_with(&request, &Config::client())
        .await
        .expect("a load client connects");
    let commands = [
        json!({"op": "connect", "id": 1, "name": format!("load-{n}")}),
        json!({"op": "subscribe", "id": 2, "channel": "chat:load"}),
    ];
    for command in commands {
        ws.send(Message::text(command.to_string()))
            .await
            .expect("send");
    }
    // Both replies, bounded.
    let mut replies = 0;
    while replies < 2 {
        let next = tokio::time::timeout(SHORT, ws.next())
            .await
            .expect("the hub answers a load client");
        let Some(Ok(Message::Text(text))) = next else {
            panic!("load client {n}: connection ended early: {next:?}");
        };
        let reply: Value = serde_json::from_str(&text).expect("JSON");
        assert_ne!(reply["op"], "error", "load client {n}: {reply}");
        if reply["op"] == "connected" || reply["op"] == "subscribed" {
            replies += 1;
        }
    }
    let mut tick = tokio::time::interval(every);
    let mut sent = 0u64;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let mut failed = false;
                for _ in 0..burst {
                    sent += 1;
                    let publish = json!({
                        "op": "publish",
                        "channel": "chat:load",
                        "data": {"name": format!("load-{n}"), "text": format!("message {sent}")},
                    });
                    if ws.feed(Message::text(publish.to_string())).await.is_err() {
                        failed = true;
                        break;
                    }
                }
                if failed || ws.flush().await.is_err() {
                    break;
                }
            }
            incoming = ws.next() => {
                if !matches!(incoming, Some(Ok(_))) {
                    break;
                }
            }
            _ = stop.changed() => break,
        }
    }
    let _ = tokio::time::timeout(
        Duration::from_secs(2),
        ws.close(duplex::CloseCode(1000), "done"),
    )
    .await;
}

#[tokio::test]
async fn the_dashboard_follows_connections_and_message_rate() {
    bounded(async {
        let hub = TestHub::start().await;
        let browser = launch().await;
        let dash = browser
            .new_page(&format!("{}/dashboard", hub.base()))
            .await
            .unwrap_or_else(|e| panic!("open the dashboard: {e}"));
        dash.set_dark(true).await.expect("dark");
        wait(&dash, "window.dashboard && dashboard.snapshots >= 2", SHORT).await;
        // The first snapshots may be history from before it connected: wait
        // for one that counts the dashboard itself.
        let base = wait(
            &dash,
            "Number(document.querySelector('#conn-count').dataset.value)",
            SHORT,
        )
        .await
        .as_u64()
        .expect("a connection count");

        // 5 clients publishing 20 messages a second each.
        const CLIENTS: u64 = 5;
        let (stop, stopped) = watch::channel(false);
        let mut load = tokio::task::JoinSet::new();
        for n in 0..CLIENTS as usize {
            load.spawn(load_client(
                hub.addr,
                n,
                Duration::from_millis(50),
                1,
                stopped.clone(),
            ));
        }
        wait(
            &dash,
            &format!(
                "Number(document.querySelector('#conn-count').dataset.value) >= {}",
                base + CLIENTS
            ),
            SHORT,
        )
        .await;
        wait(
            &dash,
            "Number(document.querySelector('#msg-rate').dataset.value) >= 50 \
             && Number(document.querySelector('#msg-out-rate').dataset.value) >= 50",
            SHORT,
        )
        .await;
        wait(
            &dash,
            "document.querySelector('#lat-p50').dataset.value !== ''",
            SHORT,
        )
        .await;
        // The charts draw the last minute.
        wait(
            &dash,
            "['connections', 'inRate', 'outRate', 'p50'].every(s => { \
               const line = document.querySelector(`polyline[data-series=${s}]`); \
               return line && line.getAttribute('points').split(' ').length >= 2; })",
            SHORT,
        )
        .await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        screenshot(&dash, "dashboard.png").await;

        // When the load stops, the numbers come back down.
        stop.send_replace(true);
        while let Some(done) = load.join_next().await {
            done.expect("a load client ran without panicking");
        }
        wait(
            &dash,
            &format!("Number(document.querySelector('#conn-count').dataset.value) === {base}"),
            SHORT,
        )
        .await;
        wait(
            &dash,
            "Number(document.querySelector('#msg-rate').dataset.value) < 10",
            SHORT,
        )
        .await;
        assert_eq!(eval(&dash, "dashboard.hubState()").await, "open");
        assert_no_page_errors(&dash, "the dashboard");
        browser.close().await;
    })
    .await;
}

/// On a hub with `[auth]` and an admin token, the dashboard opened with
/// `?token=ADMIN` shows the statistics (the page hands the token to its
/// WebSocket handshake); without it the page is refused.
#[tokio::test]
async fn the_protected_dashboard_opens_with_the_admin_token() {
    bounded(async {
        const ADMIN: &str = "dashboard admin token";
        let config = duplex_hub::HubConfig {
            auth: Some(duplex_hub::config::AuthConfig {
                hs256_secret: Some("a secret for the web test's own hub".into()),
                ..duplex_hub::config::AuthConfig::default()
            }),
            admin: duplex_hub::config::AdminConfig {
                token: Some(ADMIN.into()),
                open: None,
            },
            ..duplex_hub::HubConfig::default()
        };
        let hub = TestHub::start_with(config).await;
        let browser = launch().await;
        let dash = browser
            .new_page(&format!(
                "{}/dashboard?token={}",
                hub.base(),
                ADMIN.replace(' ', "+")
            ))
            .await
            .unwrap_or_else(|e| panic!("open the dashboard: {e}"));
        wait(&dash, "window.dashboard && dashboard.snapshots >= 2", SHORT).await;
        let refused = browser
            .new_page(&format!("{}/dashboard", hub.base()))
            .await
            .unwrap_or_else(|e| panic!("open the dashboard without a token: {e}"));
        wait(
            &refused,
            "document.body && document.body.innerText.includes('admin token')",
            SHORT,
        )
        .await;
    })
    .await;
}

#[tokio::test]
async fn a_page_refused_for_its_origin_stops_retrying_and_says_what_to_set() {
    bounded(async {
        // The page comes from one hub; the other, on another port, does
        // not allow its origin (403 at every handshake).
        let home = TestHub::start().await;
        let other = TestHub::start().await;
        let browser = launch().await;
        let page = open_chat(&browser, &home.base(), "alice").await;
        eval(
            &page,
            &format!(
                "window.refusals = []; window.waits = []; \
                 window.other = new chat.duplex.Client('ws://{}/ws', \
                 {{ name: 't', backoffBase: 20, backoffCap: 50, firstConnectAttempts: 5 }}); \
                 other.on('error', (e) => refusals.push(e.error)); \
                 other.on('disconnected', (d) => d.willReconnect && waits.push(d)); \
                 other.connect().catch(() => {{}}); true",
                other.addr
            ),
        )
        .await;
        wait(
            &page,
            "window.other.state === 'closed' && refusals.length === 1",
            SHORT,
        )
        .await;
        // It stays stopped: no more attempts.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let state = eval(
            &page,
            "({ state: other.state, delays: waits.length, errors: refusals.length, \
              code: refusals[0].code, message: refusals[0].message })",
        )
        .await;
        assert_eq!(state["state"], "closed", "{state}");
        assert_eq!(
            state["delays"], 4,
            "four waits between five attempts: {state}"
        );
        assert_eq!(state["errors"], 1, "{state}");
        assert_eq!(state["code"], "unreachable", "{state}");
        let message = state["message"].as_str().unwrap();
        assert!(
            message.contains("--public-url")
                && message.contains(&format!("--allow-origin {}", home.base())),
            "{message}"
        );
    })
    .await;
}

/// The console lines of `page` that are errors or warnings (the browser's
/// own, e.g. an invalid `pattern`, and the page's).
fn console_problems(page: &Page) -> Vec<String> {
    page.console()
        .into_iter()
        .filter(|line| {
            line.starts_with("uncaught")
                || line.starts_with("log.error")
                || line.starts_with("log.warning")
                || line.starts_with("console.error")
                || line.starts_with("console.warn")
                || line.contains("the page crashed")
        })
        .collect()
}

/// The chat loads without a console error or warning (current Chromium
/// compiles `pattern` with the `v` flag and rejected the old one on every
/// load, which also turned the validation off), and the room name's
/// `pattern` does validate.
#[tokio::test]
async fn the_chat_loads_with_a_clean_console_and_a_working_pattern() {
    bounded(async {
        let hub = TestHub::start().await;
        let browser = launch().await;
        let alice = open_chat(&browser, &hub.base(), "alice").await;
        wait(&alice, &present_are(&["alice"]), SHORT).await;
        // The pattern works: the browser itself judges names.
        let validity = eval(
            &alice,
            "(() => { const el = document.querySelector('#room-input'); const out = {}; \
             for (const v of ['bad room!', 'ops', '#ops', 'a/b.c@d=e_f-g']) { el.value = v; \
             out[v] = el.validity.patternMismatch; } el.value = ''; return out; })()",
        )
        .await;
        assert_eq!(
            validity,
            json!({"bad room!": true, "ops": false, "#ops": false, "a/b.c@d=e_f-g": false})
        );
        let problems = console_problems(&alice);
        assert!(problems.is_empty(), "console:\n{}", problems.join("\n"));
        browser.close().await;
    })
    .await;
}

/// After an invalid room name the Join form still joins the next valid one
/// (a custom validity error used to stay set and block every submit).
#[tokio::test]
async fn the_join_form_recovers_after_an_invalid_room_name() {
    bounded(async {
        let hub = TestHub::start().await;
        let browser = launch().await;
        let alice = open_chat(&browser, &hub.base(), "alice").await;
        alice
            .type_into("#room-input", "bad room!")
            .await
            .expect("type a room");
        alice.press_enter().await.expect("submit");
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            eval(
                &alice,
                "document.querySelector('#room-input').checkValidity()"
            )
            .await,
            false
        );
        wait(&alice, &rooms_are(&["lobby"]), SHORT).await;
        // Edit the name as a person would: select it, type over it.
        eval(
            &alice,
            "document.querySelector('#room-input').select(); true",
        )
        .await;
        alice.type_text("ops").await.expect("type over");
        alice.press_enter().await.expect("submit");
        wait(&alice, &rooms_are(&["lobby", "ops"]), SHORT).await;
        wait(
            &alice,
            "document.querySelector('#room-title').textContent === '# ops'",
            SHORT,
        )
        .await;
        assert_no_page_errors(&alice, "alice");
        browser.close().await;
    })
    .await;
}

/// WCAG AA contrast (4.5:1), computed in the page for what it renders: the
/// name colour of every one of the 360 hues on the room's background, white
/// avatar initials on every hue, and the "live" badge; in light and dark.
const CONTRAST_AUDIT: &str = r#"(() => {
  const lin = (c) => { c /= 255; return c <= 0.04045 ? c / 12.92 : Math.pow((c + 0.055) / 1.055, 2.4); };
  const rgb = (css) => { const m = css.match(/[\d.]+/g).map(Number); return m.slice(0, 3); };
  const lum = ([r, g, b]) => 0.2126 * lin(r) + 0.7152 * lin(g) + 0.0722 * lin(b);
  const ratio = (a, b) => { const x = lum(rgb(a)), y = lum(rgb(b)); return (Math.max(x, y) + 0.05) / (Math.min(x, y) + 0.05); };
  const room = document.querySelector('.room');
  const bg = getComputedStyle(room).backgroundColor;
  const probe = document.createElement('span');
  probe.className = 'name';
  room.append(probe);
  const avatar = document.createElement('span');
  avatar.className = 'avatar';
  room.append(avatar);
  const failures = [];
  let worstName = 99, worstAvatar = 99;
  for (let hue = 0; hue < 360; hue++) {
    probe.style.setProperty('--hue', String(hue));
    avatar.style.setProperty('--hue', String(hue));
    const n = ratio(getComputedStyle(probe).color, bg);
    const a = ratio(getComputedStyle(avatar).color, getComputedStyle(avatar).backgroundColor);
    worstName = Math.min(worstName, n);
    worstAvatar = Math.min(worstAvatar, a);
    if (n < 4.5) failures.push(`name hue ${hue}: ${n.toFixed(2)}`);
    if (a < 4.5) failures.push(`avatar hue ${hue}: ${a.toFixed(2)}`);
  }
  probe.remove();
  avatar.remove();
  const state = document.querySelector('#state');
  const live = ratio(getComputedStyle(state).color, getComputedStyle(state).backgroundColor);
  if (live < 4.5) failures.push(`live badge (${state.dataset.state}): ${live.toFixed(2)}`);
  return { failures, worstName, worstAvatar, live };
})()"#;

#[tokio::test]
async fn name_colours_avatars_and_the_live_badge_meet_wcag_aa_contrast() {
    bounded(async {
        let hub = TestHub::start().await;
        let browser = launch().await;
        let alice = open_chat(&browser, &hub.base(), "alice").await;
        wait(
            &alice,
            "document.querySelector('#state').dataset.state === 'open'",
            SHORT,
        )
        .await;
        for dark in [false, true] {
            alice.set_dark(dark).await.expect("colour scheme");
            let audit = eval(&alice, CONTRAST_AUDIT).await;
            assert_eq!(audit["failures"], json!([]), "dark: {dark}: {audit}");
        }
        browser.close().await;
    })
    .await;
}

/// A JWT's verified user is the name shown: a token for `alice` whose page
/// was told `?name=mallory` shows as "alice" to herself and to others, in
/// messages and in the presence list; the typed name cannot be changed to
/// another one while signed in.
#[tokio::test]
async fn with_a_token_the_verified_user_is_shown_not_the_typed_name() {
    bounded(async {
        const SECRET: &str = "a secret for the web test's own hub";
        let config = duplex_hub::HubConfig {
            auth: Some(duplex_hub::config::AuthConfig {
                hs256_secret: Some(SECRET.into()),
                ..duplex_hub::config::AuthConfig::default()
            }),
            ..duplex_hub::HubConfig::default()
        };
        let hub = TestHub::start_with(config).await;
        let token = |sub: &str| {
            let exp = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("after 1970")
                .as_secs()
                + 3600;
            jsonwebtoken::encode(
                &jsonwebtoken::Header::default(),
                &json!({"sub": sub, "exp": exp}),
                &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
            )
            .expect("sign a token")
        };
        let browser = launch().await;
        // Alice's page says she is "mallory"; bob's says he is "alice".
        let alice = open_chat(
            &browser,
            &hub.base(),
            &format!("mallory&token={}", token("alice")),
        )
        .await;
        let bob = open_chat(
            &browser,
            &hub.base(),
            &format!("alice&token={}", token("bob")),
        )
        .await;
        for page in [&alice, &bob] {
            wait(page, &present_are(&["alice", "bob"]), SHORT).await;
        }
        assert_eq!(
            eval(&alice, "document.querySelector('#name-input').value").await,
            "alice"
        );
        assert_eq!(
            eval(&alice, "document.querySelector('#name-input').readOnly").await,
            true
        );
        assert_eq!(
            eval(&bob, "document.querySelector('#name-input').value").await,
            "bob"
        );
        say(&alice, "from alice").await;
        say(&bob, "from bob").await;
        let expected = json!([["alice", "from alice"], ["bob", "from bob"]]);
        for page in [&alice, &bob] {
            wait(page, &texts_are(&["from alice", "from bob"]), SHORT).await;
            assert_eq!(eval(page, MESSAGES).await, expected);
        }
        // Typing another name changes nothing while signed in.
        alice
            .type_into("#name-input", "mallory")
            .await
            .expect("type");
        alice.press_enter().await.expect("rename");
        say(&alice, "still alice").await;
        wait(
            &bob,
            &texts_are(&["from alice", "from bob", "still alice"]),
            SHORT,
        )
        .await;
        assert_eq!(eval(&bob, &format!("{MESSAGES}[2][0]")).await, "alice");
        wait(&bob, &present_are(&["alice", "bob"]), SHORT).await;
        assert_no_page_errors(&alice, "alice");
        assert_no_page_errors(&bob, "bob");
        browser.close().await;
    })
    .await;
}

/// Presses Tab (or Shift+Tab when `back`) until the focus is on an element
/// matching `selector`, at most 40 times; fails with where the focus went.
async fn tab_to<P: support::WebPage>(page: &P, selector: &str, back: bool) {
    let is_there = format!(
        "document.activeElement && document.activeElement.matches({})",
        Value::String(selector.to_owned())
    );
    let mut path = Vec::new();
    for _ in 0..40 {
        if page.eval(&is_there).await.unwrap_or_else(|e| panic!("{e}")) == Value::Bool(true) {
            return;
        }
        page.key(if back { Key::ShiftTab } else { Key::Tab })
            .await
            .unwrap_or_else(|e| panic!("press Tab: {e}"));
        path.push(
            page.eval(
                "(() => { const e = document.activeElement; return e ? `${e.tagName.toLowerCase()}#${e.id}.${e.className}[${e.getAttribute('aria-label') || e.textContent.trim().slice(0, 20)}]` : 'none'; })()",
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .to_string(),
        );
    }
    panic!(
        "Tab never reached `{selector}`; the focus went: {}",
        path.join(" → ")
    );
}

/// A JS predicate: the element matching `selector` is shown, inside the
/// viewport.
fn visible(selector: &str) -> String {
    format!(
        "(() => {{ const el = document.querySelector({}); if (!el || !el.checkVisibility({{visibilityProperty: true, opacityProperty: true}})) return false; \
         const r = el.getBoundingClientRect(); return r.width > 0 && r.height > 0 && r.left >= 0 && r.top >= 0 \
         && r.right <= innerWidth && r.bottom <= innerHeight; }})()",
        Value::String(selector.to_owned())
    )
}

/// Keyboard only on the chat at `browser`'s current size: Tab to the Join
/// form, join a room, send a message, reach the room's leave control by
/// Shift+Tab and leave with Space; join another and leave it with Enter;
/// on a phone, open the presence list with the People button.
async fn keyboard_flow<P: support::WebPage>(page: &P, browser: &str, phone: bool) {
    let until = |predicate: String| async move {
        support::wait_on(page, &predicate, SHORT)
            .await
            .unwrap_or_else(|e| panic!("{browser}: {e}"))
    };
    let key = |k: Key| async move {
        page.key(k)
            .await
            .unwrap_or_else(|e| panic!("{browser}: {e}"))
    };
    let typed = |text: &'static str| async move {
        page.type_keys(text)
            .await
            .unwrap_or_else(|e| panic!("{browser}: {e}"))
    };
    page.eval("document.activeElement && document.activeElement.blur(); true")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    tab_to(page, "#room-input", false).await;
    typed("ops").await;
    key(Key::Enter).await;
    until(rooms_are(&["lobby", "ops"])).await;
    // Joining puts the focus in the composer.
    until("document.activeElement === document.querySelector('#text')".into()).await;
    typed("typed, not clicked").await;
    key(Key::Enter).await;
    until(format!("{TEXTS}.includes('typed, not clicked')")).await;

    let leave_ops = "#rooms li[data-room=\"ops\"] .room-leave";
    tab_to(page, leave_ops, true).await;
    until(visible(leave_ops)).await;
    key(Key::Space).await;
    until(rooms_are(&["lobby"])).await;

    tab_to(page, "#room-input", false).await;
    typed("dev").await;
    key(Key::Enter).await;
    until(rooms_are(&["lobby", "dev"])).await;
    tab_to(page, "#rooms li[data-room=\"dev\"] .room-leave", true).await;
    key(Key::Enter).await;
    until(rooms_are(&["lobby"])).await;

    if phone {
        until(visible("#people-toggle")).await;
        tab_to(page, "#people-toggle", false).await;
        key(Key::Space).await;
        until(visible("#presence li.me")).await;
        key(Key::Space).await;
        until(format!("!{}", visible("#presence li.me"))).await;
    }
}

/// The chat by keyboard alone, at desktop and phone sizes, in Chromium.
#[tokio::test]
async fn the_chat_works_by_keyboard_alone() {
    bounded(async {
        let hub = TestHub::start().await;
        let browser = launch().await;
        for (size, width, height, mobile) in SIZES {
            let alice = open_chat(&browser, &hub.base(), &format!("alice-{size}")).await;
            alice
                .set_viewport(width, height, mobile)
                .await
                .expect("viewport");
            wait(&alice, &format!("{PRESENT}.length >= 1"), SHORT).await;
            keyboard_flow(&alice, "chromium", mobile).await;
            assert_no_page_errors(&alice, "alice");
        }
        browser.close().await;
    })
    .await;
}

/// The chat by keyboard alone, at desktop and phone sizes, in Firefox.
#[tokio::test]
async fn the_chat_works_by_keyboard_alone_in_firefox() {
    bounded(async {
        let hub = TestHub::start().await;
        let firefox = launch_firefox().await;
        for (size, width, height, _) in SIZES {
            let alice = firefox
                .new_page(&format!("{}/?name=alice-{size}", hub.base()))
                .await
                .unwrap_or_else(|e| panic!("open the chat in Firefox: {e}"));
            alice.set_viewport(width, height).await.expect("viewport");
            support::wait_on(&alice, "window.chat && chat.hubState() === 'open'", SHORT)
                .await
                .unwrap_or_else(|e| panic!("Firefox: {e}"));
            keyboard_flow(&alice, "firefox", width < 700).await;
        }
        firefox.close().await;
    })
    .await;
}

/// On a 375 px phone the presence list opens with the "People" button
/// (by keyboard too) and each room's leave control is shown and works.
#[tokio::test]
async fn on_a_phone_the_presence_list_and_leave_control_are_reachable() {
    bounded(async {
        let hub = TestHub::start().await;
        let browser = launch().await;
        let alice = open_chat(&browser, &hub.base(), "alice").await;
        let _bob = open_chat(&browser, &hub.base(), "bob").await;
        alice.set_viewport(375, 740, true).await.expect("viewport");
        wait(&alice, &present_are(&["alice", "bob"]), SHORT).await;
        alice.type_into("#room-input", "ops").await.expect("type");
        alice.press(Key::Enter).await.expect("join");
        wait(&alice, &rooms_are(&["lobby", "ops"]), SHORT).await;
        // The lobby again, where bob is.
        tab_to(&alice, "#rooms li[data-room=\"lobby\"] .room-open", true).await;
        alice.press(Key::Enter).await.expect("open the lobby");
        wait(
            &alice,
            "document.querySelector('#room-title').textContent === '# lobby'",
            SHORT,
        )
        .await;

        wait(&alice, &visible("#people-toggle"), SHORT).await;
        assert_eq!(
            eval(&alice, &visible("#presence")).await,
            false,
            "closed at first"
        );
        tab_to(&alice, "#people-toggle", false).await;
        alice
            .press(Key::Space)
            .await
            .expect("open the presence list");
        wait(&alice, &visible("#presence li[data-name=\"bob\"]"), SHORT).await;
        assert_eq!(
            eval(
                &alice,
                "document.querySelector('#people-toggle').getAttribute('aria-expanded')"
            )
            .await,
            "true"
        );
        assert_eq!(
            eval(
                &alice,
                "document.querySelector('#people-count').textContent"
            )
            .await,
            "2"
        );

        wait(
            &alice,
            &visible("#rooms li[data-room=\"ops\"] .room-leave"),
            SHORT,
        )
        .await;
        tab_to(&alice, "#rooms li[data-room=\"ops\"] .room-leave", true).await;
        alice.press(Key::Enter).await.expect("leave");
        wait(&alice, &rooms_are(&["lobby"]), SHORT).await;
        assert_no_page_errors(&alice, "alice");
        browser.close().await;
    })
    .await;
}

/// The dashboard's latency is that of the last 10 s (it says so): a burst of
/// load moves p99 up, and once the load stops p99 falls back within the
/// window (all-time percentiles stayed where the burst put them). The axis
/// labels read as numbers with units.
#[tokio::test]
async fn the_dashboard_latency_is_windowed_and_its_axes_are_readable() {
    bounded(async {
        let hub = TestHub::start().await;
        let browser = launch().await;
        let dash = browser
            .new_page(&format!("{}/dashboard", hub.base()))
            .await
            .unwrap_or_else(|e| panic!("open the dashboard: {e}"));
        wait(&dash, "window.dashboard && dashboard.snapshots >= 2", SHORT).await;
        assert_eq!(
            eval(&dash, "Array.from(document.querySelectorAll('.lat-window')).map(el => el.textContent)").await,
            json!(["10", "10", "10", "10"])
        );
        assert!(
            eval(&dash, "document.querySelector('.number .window').textContent").await == "last 10 s"
        );
        // Axis labels: distinct, with units, as numbers (no "1|1|0").
        let labels = eval(
            &dash,
            "Object.fromEntries(['conn', 'rate', 'latency'].map(c => [c, \
               Array.from(document.querySelectorAll(`#chart-${c} text.axis`)).slice(0, 3).map(t => t.textContent)]))",
        )
        .await;
        for (chart, unit) in [("conn", ""), ("rate", " /s"), ("latency", " ms")] {
            let ticks: Vec<&str> = labels[chart]
                .as_array()
                .expect("ticks")
                .iter()
                .map(|t| t.as_str().expect("text"))
                .collect();
            assert_eq!(ticks.len(), 3, "{labels}");
            assert_eq!(ticks[0], format!("0{unit}"), "{chart}: {ticks:?}");
            let mut seen = ticks.clone();
            seen.dedup();
            assert_eq!(seen.len(), 3, "{chart}: ticks repeat: {ticks:?}");
            for tick in &ticks {
                let number = tick.strip_suffix(unit).unwrap_or_else(|| panic!("{chart}: {tick:?} lacks {unit:?}"));
                number
                    .replace(',', "")
                    .parse::<f64>()
                    .unwrap_or_else(|e| panic!("{chart}: {tick:?} is not a number: {e}"));
            }
        }

        // Bursts: 5 clients, 400 messages at once every 250 ms each, every
        // message delivered to all 5: queues form, latency rises.
        let (stop, stopped) = watch::channel(false);
        let mut load = tokio::task::JoinSet::new();
        for n in 0..5 {
            load.spawn(load_client(hub.addr, n, Duration::from_millis(250), 400, stopped.clone()));
        }
        // The window fills with the load's deliveries, and p99 is theirs.
        const LAST: &str = "dashboard.points[dashboard.points.length - 1]";
        wait(
            &dash,
            &format!("{LAST}.latencyCount >= 1000 && {LAST}.p99 > 0"),
            Duration::from_secs(30),
        )
        .await;
        tokio::time::sleep(Duration::from_secs(4)).await;
        let peak = eval(
            &dash,
            &format!("Math.max(...dashboard.points.filter(p => p.time > {LAST}.time - 5000).map(p => p.p99 || 0))"),
        )
        .await
        .as_f64()
        .expect("a number");
        screenshot(&dash, "dashboard-burst.png").await;
        stop.send_replace(true);
        while let Some(done) = load.join_next().await {
            done.expect("a load client ran without panicking");
        }
        // Within the 10 s window (and a little), the load's deliveries are
        // out of it: only the dashboard's own snapshots are left (1 a
        // second), and the number shown follows the window's p99. All-time,
        // the count would stay over 1,000. (The p99 itself is not compared
        // with the peak: on a busy machine the bursts may raise it less
        // than the scheduling noise of the snapshots after them.)
        let after = wait(
            &dash,
            &format!(
                "{LAST}.latencyCount <= 30 \
                 && document.querySelector('#lat-p99').dataset.value === String({LAST}.p99 ?? '') \
                 && JSON.stringify({LAST})"
            ),
            Duration::from_secs(20),
        )
        .await;
        eprintln!("dashboard p99: burst peak {peak} ms, after the window {after}");
        assert_no_page_errors(&dash, "the dashboard");
        browser.close().await;
    })
    .await;
}

/// The sizes every page is audited at: desktop and phone.
const SIZES: [(&str, u32, u32, bool); 2] =
    [("desktop", 1280, 800, false), ("phone", 375, 740, true)];

/// Audits `page` (already showing `name`) with axe-core at desktop and
/// phone sizes, saving a screenshot of each as
/// `artifacts/web/<name>-<size>-<browser>.png`; returns the violations,
/// each prefixed with where it was found.
async fn audit_page<P: support::WebPage>(
    page: &P,
    name: &str,
    browser: &str,
    axe: &str,
) -> Vec<String> {
    let mut found = Vec::new();
    for (size, width, height, mobile) in SIZES {
        page.viewport(width, height, mobile)
            .await
            .unwrap_or_else(|e| panic!("{browser}: viewport {width}×{height}: {e}"));
        tokio::time::sleep(Duration::from_millis(400)).await;
        let path = support::artifacts_dir().join(format!("{name}-{size}-{browser}.png"));
        page.save_screenshot(&path)
            .await
            .unwrap_or_else(|e| panic!("{browser}: screenshot {}: {e}", path.display()));
        let violations = support::axe_violations(page, axe)
            .await
            .unwrap_or_else(|e| panic!("{browser}: axe on {name} at {size}: {e}"));
        found.extend(
            violations
                .into_iter()
                .map(|v| format!("{browser} {name} {size}: {v}")),
        );
    }
    found
}

/// Every page passes axe-core's audit (WCAG A/AA rules and best practices)
/// at desktop and phone sizes, in light and dark, in Chromium; screenshots
/// of each are kept.
#[tokio::test]
async fn every_page_passes_an_accessibility_audit_in_chromium() {
    bounded(async {
        let axe = support::axe_source();
        let hub = TestHub::start().await;
        let browser = launch().await;
        let alice = open_chat(&browser, &hub.base(), "alice").await;
        let bob = open_chat(&browser, &hub.base(), "bob").await;
        wait(&alice, &present_are(&["alice", "bob"]), SHORT).await;
        alice.type_into("#room-input", "ops").await.expect("type");
        alice.press_enter().await.expect("join");
        wait(&alice, &rooms_are(&["lobby", "ops"]), SHORT).await;
        eval(
            &alice,
            "document.querySelector('#rooms li[data-room=\"lobby\"] .room-open').click()",
        )
        .await;
        say(&bob, "hello alice").await;
        say(&alice, "hi bob").await;
        wait(&alice, &texts_are(&["hello alice", "hi bob"]), SHORT).await;
        let dash = browser
            .new_page(&format!("{}/dashboard", hub.base()))
            .await
            .unwrap_or_else(|e| panic!("open the dashboard: {e}"));
        wait(&dash, "window.dashboard && dashboard.snapshots >= 3", SHORT).await;

        let mut violations = Vec::new();
        for dark in [false, true] {
            let scheme = if dark { "dark" } else { "light" };
            alice.set_dark(dark).await.expect("scheme");
            dash.set_dark(dark).await.expect("scheme");
            violations
                .extend(audit_page(&alice, &format!("chat-{scheme}"), "chromium", &axe).await);
            // The phone's presence list, opened.
            eval(
                &alice,
                "document.querySelector('#people-toggle').click(); true",
            )
            .await;
            violations.extend(
                audit_page(&alice, &format!("chat-people-{scheme}"), "chromium", &axe).await,
            );
            eval(
                &alice,
                "document.querySelector('#people-toggle').click(); true",
            )
            .await;
            violations
                .extend(audit_page(&dash, &format!("dashboard-{scheme}"), "chromium", &axe).await);
        }
        assert!(
            violations.is_empty(),
            "axe-core found:\n{}",
            violations.join("\n")
        );
        assert_no_page_errors(&alice, "alice");
        browser.close().await;
    })
    .await;
}

async fn launch_firefox() -> support::firefox::Firefox {
    support::firefox::Firefox::launch()
        .await
        .unwrap_or_else(|e| panic!("cannot start headless Firefox: {e}"))
}

/// The same audit in Firefox, driven with WebDriver BiDi: the chat (with
/// another person, messages and a second room) and the dashboard pass
/// axe-core at desktop and phone sizes, with screenshots; the console stays
/// clean (the room-name `pattern` compiles there too) and every name colour,
/// avatar and the live badge meet 4.5:1.
#[tokio::test]
async fn every_page_passes_an_accessibility_audit_in_firefox() {
    bounded(async {
        let axe = support::axe_source();
        let hub = TestHub::start().await;
        let chromium = launch().await;
        let bob = open_chat(&chromium, &hub.base(), "bob").await;
        let firefox = launch_firefox().await;
        let alice = firefox
            .new_page(&format!("{}/?name=alice&room=ops", hub.base()))
            .await
            .unwrap_or_else(|e| panic!("open the chat in Firefox: {e}"));
        let ff_wait = |page: &support::firefox::FirefoxPage, predicate: String| {
            let page = page.clone();
            async move {
                page.wait_for(&predicate, SHORT)
                    .await
                    .unwrap_or_else(|e| panic!("Firefox: {e}"))
            }
        };
        ff_wait(&alice, "window.chat && chat.hubState() === 'open'".into()).await;
        ff_wait(&alice, rooms_are(&["lobby", "ops"])).await;
        alice
            .eval("document.querySelector('#rooms li[data-room=\"lobby\"] .room-open').click(); true")
            .await
            .expect("open the lobby");
        ff_wait(&alice, present_are(&["alice", "bob"])).await;
        say(&bob, "hello from chromium").await;
        ff_wait(&alice, texts_are(&["hello from chromium"])).await;
        let pattern = alice
            .eval(
                "(() => { const el = document.querySelector('#room-input'); el.value = 'bad room!'; \
                 const bad = el.validity.patternMismatch; el.value = 'ops'; \
                 const ok = !el.validity.patternMismatch; el.value = ''; return bad && ok; })()",
            )
            .await
            .expect("check the pattern");
        assert_eq!(pattern, true, "Firefox validates the room name");
        let contrast = alice.eval(CONTRAST_AUDIT).await.expect("contrast audit");
        assert_eq!(contrast["failures"], json!([]), "Firefox: {contrast}");

        let mut violations = audit_page(&alice, "chat", "firefox", &axe).await;
        alice
            .eval("document.querySelector('#people-toggle').click(); true")
            .await
            .expect("open the presence list");
        violations.extend(audit_page(&alice, "chat-people", "firefox", &axe).await);
        let dash = firefox
            .new_page(&format!("{}/dashboard", hub.base()))
            .await
            .unwrap_or_else(|e| panic!("open the dashboard in Firefox: {e}"));
        ff_wait(&dash, "window.dashboard && dashboard.snapshots >= 3".into()).await;
        violations.extend(audit_page(&dash, "dashboard", "firefox", &axe).await);
        assert!(violations.is_empty(), "axe-core found:\n{}", violations.join("\n"));

        for (who, page) in [("chat", &alice), ("dashboard", &dash)] {
            let problems: Vec<String> = page
                .console()
                .into_iter()
                .filter(|line| line.contains(".error:") || line.contains(".warn"))
                .collect();
            assert!(problems.is_empty(), "Firefox {who} console:\n{}", problems.join("\n"));
        }
        firefox.close().await;
        chromium.close().await;
    })
    .await;
}

/// A hub config serving TLS with a certificate for 127.0.0.1 from a fresh
/// test CA, written under `dir`.
fn tls_config(dir: &std::path::Path) -> duplex_hub::HubConfig {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    duplex_hub::HubConfig {
        tls: Some(duplex_hub::config::TlsConfig {
            cert: cert_path,
            key: key_path,
        }),
        ..duplex_hub::HubConfig::default()
    }
}

/// A TLS hub on a free loopback port, kept as its `Hub` so the test reads
/// its metrics without a request of its own; stops when the sender drops.
async fn start_tls_hub(
    dir: &std::path::Path,
) -> (
    std::sync::Arc<duplex_hub::Hub>,
    SocketAddr,
    oneshot::Sender<()>,
) {
    let hub = duplex_hub::Hub::new(tls_config(dir)).expect("the hub config is valid");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let server =
        duplex_hub::Server::from_listener(hub.clone(), listener).expect("serve on the listener");
    let addr = server.local_addr();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));
    (hub, addr, stop)
}

/// The value of the sample `name{label}` in `hub`'s metrics.
fn metric(hub: &duplex_hub::Hub, name: &str, label: &str) -> f64 {
    let text = hub.metrics().render();
    let prefix = format!("{name}{{{label}}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {prefix} in the metrics"))
        .parse()
        .unwrap()
}

/// Headless Chromium loads the chat over HTTPS, which it gets over HTTP/2
/// (ALPN h2), and opens `wss://…/ws` as an RFC 8441 stream of that same
/// connection: the hub counts one WebSocket over HTTP/2, none over
/// HTTP/1.1, and one client connection, in HTTP/2, for the page, its
/// assets and the socket. The test CA is not trusted by the browser: it
/// ignores certificate errors (DevTools' `Security.setIgnoreCertificateErrors`).
#[tokio::test]
async fn the_chat_runs_over_http2_in_chromium() {
    bounded(async {
        let dir = support::browser::TempDir::new("duplex-hub-h2-web").unwrap();
        let (hub, addr, _stop) = start_tls_hub(dir.path()).await;
        let browser = launch().await;
        browser
            .cdp()
            .call(
                "Security.setIgnoreCertificateErrors",
                json!({"ignore": true}),
                None,
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let page = open_chat(&browser, &format!("https://{addr}"), "ada").await;
        say(&page, "hello over h2").await;
        wait(&page, &texts_are(&["hello over h2"]), SHORT).await;
        let protocol = eval(
            &page,
            "performance.getEntriesByType('navigation')[0].nextHopProtocol",
        )
        .await;
        assert_eq!(protocol, json!("h2"), "the page itself came over HTTP/2");
        let by_transport = |transport: &str| {
            metric(
                &hub,
                "duplex_connections_by_transport",
                &format!("transport=\"{transport}\""),
            )
        };
        assert_eq!(by_transport("websocket_http2"), 1.0);
        assert_eq!(by_transport("websocket_http1"), 0.0);
        let connections = |version: &str| {
            metric(
                &hub,
                "duplex_http_connections_total",
                &format!("version=\"{version}\""),
            )
        };
        assert_eq!(connections("1.1"), 0.0, "nothing came over HTTP/1.1");
        assert_eq!(
            connections("2"),
            1.0,
            "page, assets and socket on one connection"
        );
        screenshot(&page, "chat-http2-chromium.png").await;
        assert_no_page_errors(&page, "ada");
        browser.close().await;
    })
    .await;
}

/// Headless Firefox (WebDriver BiDi, the test CA accepted with the
/// session's `acceptInsecureCerts`) loads the chat over HTTPS + HTTP/2 and
/// opens its WebSocket on the same connection
/// (`network.http.http2.websockets`, on by default): one WebSocket over
/// HTTP/2, none over HTTP/1.1, one client connection in HTTP/2.
#[tokio::test]
async fn the_chat_runs_over_http2_in_firefox() {
    bounded(async {
        let dir = support::browser::TempDir::new("duplex-hub-h2-firefox").unwrap();
        let (hub, addr, _stop) = start_tls_hub(dir.path()).await;
        let firefox = launch_firefox().await;
        let page = firefox
            .new_page(&format!("https://{addr}/?name=grace"))
            .await
            .unwrap_or_else(|e| panic!("open the chat: {e}"));
        page.wait_for("window.chat && chat.hubState() === 'open'", SHORT)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let protocol = page
            .eval("performance.getEntriesByType('navigation')[0].nextHopProtocol")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(protocol, json!("h2"), "the page itself came over HTTP/2");
        let sample = |name: &str, label: String| metric(&hub, name, &label);
        let transport = |t: &str| {
            sample(
                "duplex_connections_by_transport",
                format!("transport=\"{t}\""),
            )
        };
        let version = |v: &str| sample("duplex_http_connections_total", format!("version=\"{v}\""));
        assert_eq!(
            (transport("websocket_http1"), transport("websocket_http2")),
            (0.0, 1.0),
            "the WebSocket's transport (HTTP/1.1, HTTP/2)"
        );
        assert_eq!(
            (version("1.1"), version("2")),
            (0.0, 1.0),
            "client connections"
        );
        let path = support::artifacts_dir().join("chat-http2-firefox.png");
        page.screenshot(&path)
            .await
            .unwrap_or_else(|e| panic!("screenshot: {e}"));
        firefox.close().await;
    })
    .await;
}

/// The console's admin token in the console tests.
const CONSOLE_ADMIN: &str = "console-admin-token-for-the-web-test";

/// A protected hub (JWT auth and an admin token) for the console tests.
fn console_config() -> duplex_hub::HubConfig {
    let mut config = auth_config();
    config.admin.token = Some(CONSOLE_ADMIN.into());
    config
}

/// Reads `peer`'s pushes until one whose text contains `needle`, or its
/// close; returns the text, or the close as `close CODE REASON`.
async fn next_matching(peer: &mut Peer, needle: &str) -> String {
    loop {
        let next = tokio::time::timeout(SHORT, peer.ws.next())
            .await
            .unwrap_or_else(|_| panic!("nothing with {needle:?} in time"));
        match next {
            Some(Ok(Message::Text(text))) if text.contains(needle) => return text.to_string(),
            Some(Ok(_)) => {}
            _ => {
                let close = peer.ws.close_info();
                return close.map_or("close none".to_owned(), |c| {
                    format!("close {} {}", u16::from(c.code), c.reason)
                });
            }
        }
    }
}

/// The console by keyboard alone, on a protected hub: log in with the
/// admin token (the stats then flow over the page's WebSocket, which the
/// session cookie admits), find Ada's connection, publish to a channel a
/// Rust client follows, sort the channels, disconnect Ada with a reason,
/// and log out; audited by axe-core logged in, with a screenshot.
async fn console_flow<P: support::WebPage>(
    page: &P,
    browser: &str,
    size: &str,
    addr: SocketAddr,
    axe: &str,
) -> Vec<String> {
    let until = |predicate: String| async move {
        support::wait_on(page, &predicate, SHORT)
            .await
            .unwrap_or_else(|e| panic!("{browser} {size}: {e}"))
    };
    let key = |k: Key| async move {
        page.key(k)
            .await
            .unwrap_or_else(|e| panic!("{browser}: {e}"))
    };
    let typed = |text: &'static str| async move {
        page.type_keys(text)
            .await
            .unwrap_or_else(|e| panic!("{browser}: {e}"))
    };
    let mut ada = Peer::connect(addr, Some(&long_token("ada"))).await;
    let mut watcher = Peer::connect(addr, Some(&long_token("watcher"))).await;
    let reply = watcher
        .request(json!({"op": "subscribe", "channel": "news"}))
        .await;
    assert_eq!(reply["op"], "subscribed", "{reply}");

    // Not logged in: read-only, and it says why.
    until(
        "window.hubConsole && hubConsole.session.login === true && !hubConsole.session.admin"
            .into(),
    )
    .await;
    until(visible("#login-token")).await;
    until("document.querySelector('#actions').hidden".into()).await;
    page.eval("document.activeElement && document.activeElement.blur(); true")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    tab_to(page, "#login-token", false).await;
    typed("not the token").await;
    key(Key::Enter).await;
    until("document.querySelector('#login-status').textContent.includes('not valid')".into()).await;
    tab_to(page, "#login-token", false).await;
    page.eval("document.querySelector('#login-token').value = ''; true")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    page.type_keys(CONSOLE_ADMIN)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    key(Key::Enter).await;
    // The page starts again, logged in; the stats flow.
    until("window.hubConsole && hubConsole.session.admin === true".into()).await;
    until("window.dashboard && dashboard.snapshots >= 2".into()).await;
    until(
        "hubConsole.refreshes >= 1 && document.querySelectorAll('#nodes tbody tr').length === 1"
            .into(),
    )
    .await;
    until("document.querySelector('#transports tbody').textContent.includes('WebSocket over HTTP/1.1')".into()).await;

    // Ada's connections.
    page.eval("document.activeElement && document.activeElement.blur(); true")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    tab_to(page, "#user-input", false).await;
    typed("ada").await;
    key(Key::Enter).await;
    until(
        "document.querySelectorAll('#user-conns tbody tr').length === 1 \
           && document.querySelector('#search-status').textContent.startsWith('ada: 1 connection')"
            .into(),
    )
    .await;

    // Publish to "news": the Rust client gets it.
    tab_to(page, "#publish-channel", false).await;
    typed("news").await;
    tab_to(page, "#publish-form button", false).await;
    key(Key::Enter).await;
    until("document.querySelector('#publish-status').textContent.includes('offset')".into()).await;
    let got = next_matching(&mut watcher, "hello from the console").await;
    assert!(got.contains("\"news\""), "{browser}: {got}");

    // Sort the channels by name, by keyboard.
    page.eval("hubConsole.refresh()")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    until("document.querySelector('#channels tbody tr[data-channel=\"news\"]') !== null".into())
        .await;
    tab_to(page, "#channels .sort[data-key=\"channel\"]", true).await;
    key(Key::Enter).await;
    until("document.querySelector('#channels .sort[data-key=\"channel\"]').closest('th').getAttribute('aria-sort') === 'ascending'".into()).await;

    let mut violations: Vec<String> = support::axe_violations(page, axe)
        .await
        .unwrap_or_else(|e| panic!("{browser}: axe: {e}"))
        .into_iter()
        .map(|v| format!("{browser} console {size}: {v}"))
        .collect();

    // Disconnect Ada with a reason.
    tab_to(page, "#disconnect-user", false).await;
    typed("ada").await;
    tab_to(page, "#disconnect-reason", false).await;
    typed("bye from the console").await;
    key(Key::Enter).await;
    until("document.querySelector('#disconnect-status').textContent.includes('4000')".into()).await;
    assert_eq!(
        next_matching(&mut ada, "never in a push").await,
        "close 4000 bye from the console",
        "{browser}"
    );

    page.eval("document.activeElement.blur(); window.scrollTo(0, 0); true")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let path = support::artifacts_dir().join(format!("console-{size}-{browser}.png"));
    page.save_screenshot(&path)
        .await
        .unwrap_or_else(|e| panic!("{browser}: screenshot: {e}"));

    // Log out: read-only again.
    tab_to(page, "#logout", true).await;
    key(Key::Enter).await;
    until(
        "window.hubConsole && hubConsole.session.login === true && !hubConsole.session.admin"
            .into(),
    )
    .await;
    violations.extend(
        support::axe_violations(page, axe)
            .await
            .unwrap_or_else(|e| panic!("{browser}: axe: {e}"))
            .into_iter()
            .map(|v| format!("{browser} console logged out {size}: {v}")),
    );
    violations
}

/// The console by keyboard alone at desktop and phone sizes in Chromium
/// (light on the desktop, dark on the phone), with axe-core's audit.
#[tokio::test]
async fn the_console_works_by_keyboard_alone_with_an_admin_login() {
    bounded(async {
        let axe = support::axe_source();
        let hub = TestHub::start_with(console_config()).await;
        let browser = launch().await;
        let mut violations = Vec::new();
        for (size, width, height, mobile) in SIZES {
            let page = browser
                .new_page(&format!("{}/console", hub.base()))
                .await
                .unwrap_or_else(|e| panic!("open the console: {e}"));
            page.set_viewport(width, height, mobile)
                .await
                .expect("viewport");
            page.set_dark(mobile).await.expect("scheme");
            let scheme = if mobile { "dark" } else { "light" };
            violations.extend(
                console_flow(
                    &page,
                    "chromium",
                    &format!("{scheme}-{size}"),
                    hub.addr,
                    &axe,
                )
                .await,
            );
            assert_no_page_errors(&page, "the console");
        }
        assert!(
            violations.is_empty(),
            "axe-core found:\n{}",
            violations.join("\n")
        );
        browser.close().await;
    })
    .await;
}

/// The same in Firefox.
#[tokio::test]
async fn the_console_works_by_keyboard_alone_with_an_admin_login_in_firefox() {
    bounded(async {
        let axe = support::axe_source();
        let hub = TestHub::start_with(console_config()).await;
        let firefox = launch_firefox().await;
        let mut violations = Vec::new();
        for (size, width, height, _) in SIZES {
            let page = firefox
                .new_page(&format!("{}/console", hub.base()))
                .await
                .unwrap_or_else(|e| panic!("open the console in Firefox: {e}"));
            page.set_viewport(width, height).await.expect("viewport");
            violations.extend(console_flow(&page, "firefox", size, hub.addr, &axe).await);
        }
        assert!(
            violations.is_empty(),
            "axe-core found:\n{}",
            violations.join("\n")
        );
        firefox.close().await;
    })
    .await;
}
