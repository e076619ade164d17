//! The reconnecting client against a real server on loopback that drops,
//! refuses and closes connections as each test scripts it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use duplex::reconnect::{Backoff, Closed, Event, Options, ReadyState, SendError};
use duplex::{
    Accept, ClientRequest, CloseCode, Config, Message, ReconnectingWebSocket, Reject, WebSocket,
};
use futures_util::{SinkExt, StreamExt};
use http::StatusCode;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

/// Bound on every single wait of these tests.
const WAIT: Duration = Duration::from_secs(10);

type Script = Arc<
    dyn Fn(usize, WebSocket<TcpStream>) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync,
>;

/// What the server does with connection `n` (0-based).
enum Plan {
    /// Refuse the handshake with this status.
    Refuse(StatusCode),
    /// Accept and run the script.
    Accept,
}

/// A scripted WebSocket server on 127.0.0.1.
struct Server {
    url: String,
    accepted: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Server {
    async fn start(
        plan: impl Fn(usize) -> Plan + Send + Sync + 'static,
        script: impl Fn(usize, WebSocket<TcpStream>) -> Pin<Box<dyn Future<Output = ()> + Send>>
        + Send
        + Sync
        + 'static,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/", listener.local_addr().unwrap());
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        let script: Script = Arc::new(script);
        let plan = Arc::new(plan);
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let n = count.fetch_add(1, Ordering::SeqCst);
                let (script, plan) = (script.clone(), plan.clone());
                tokio::spawn(async move {
                    let decision = plan(n);
                    let config = Config::default();
                    let accepted = duplex::accept_with(tcp, &config, |_| match decision {
                        Plan::Refuse(status) => {
                            let mut reject = Reject::new(status, "scripted refusal");
                            if status == StatusCode::TOO_MANY_REQUESTS {
                                reject
                                    .headers
                                    .insert(http::header::RETRY_AFTER, "1".parse().unwrap());
                            }
                            Err(reject)
                        }
                        Plan::Accept => Ok(Accept::default()),
                    })
                    .await;
                    if let Ok(ws) = accepted {
                        script(n, ws).await;
                    }
                });
            }
        });
        Self {
            url,
            accepted,
            task,
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// Sends a greeting naming the connection, then drops the socket without a
/// close frame.
fn greet_and_drop(
    n: usize,
    mut ws: WebSocket<TcpStream>,
) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    Box::pin(async move {
        let _ = ws.send(Message::text(format!("hello {n}"))).await;
        drop(ws);
    })
}

/// Echoes until the peer closes.
fn echo(_: usize, mut ws: WebSocket<TcpStream>) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    Box::pin(async move {
        while let Some(Ok(message)) = ws.next().await {
            if ws.send(message).await.is_err() {
                break;
            }
        }
    })
}

/// Fast, deterministic reconnection: waits are exactly the ceilings, and
/// every open resets the schedule (`stable_after` zero; the tests of
/// `stable_after` set their own).
fn fast() -> Options {
    Options::default()
        .backoff(Backoff {
            initial: Duration::from_millis(20),
            max: Duration::from_millis(200),
            factor: 2.0,
        })
        .random(|| 1.0)
        .stable_after(Duration::ZERO)
}

fn client(url: &str, options: Options) -> ReconnectingWebSocket {
    ReconnectingWebSocket::connect(
        ClientRequest::new(url),
        Config::client().without_compression(),
        options,
    )
}

async fn next(ws: &mut ReconnectingWebSocket) -> Event {
    timeout(WAIT, ws.next_event())
        .await
        .expect("an event in time")
        .expect("the stream goes on")
}

async fn expect_open(ws: &mut ReconnectingWebSocket) -> u64 {
    match next(ws).await {
        Event::Open(opened) => opened.connection,
        other => panic!("expected open, got {other:?}"),
    }
}

async fn expect_text(ws: &mut ReconnectingWebSocket) -> String {
    match next(ws).await {
        Event::Message(Message::Text(text)) => text.as_str().to_owned(),
        other => panic!("expected a text message, got {other:?}"),
    }
}

async fn expect_close(ws: &mut ReconnectingWebSocket) -> Closed {
    loop {
        match next(ws).await {
            Event::Close(closed) => return closed,
            Event::Error(_) => {}
            other => panic!("expected close, got {other:?}"),
        }
    }
}

async fn expect_end(ws: &mut ReconnectingWebSocket) {
    let end = timeout(WAIT, ws.next_event()).await.expect("end in time");
    assert!(end.is_none(), "expected the end, got {end:?}");
    assert_eq!(ws.ready_state(), ReadyState::Closed);
}

#[tokio::test]
async fn reconnects_after_drops_and_the_new_connection_works() {
    let server = Server::start(
        |_| Plan::Accept,
        |n, ws| {
            if n < 2 {
                greet_and_drop(n, ws)
            } else {
                echo(n, ws)
            }
        },
    )
    .await;
    let mut ws = client(&server.url, fast());
    assert_eq!(ws.ready_state(), ReadyState::Connecting);
    for n in 0..2u64 {
        assert_eq!(expect_open(&mut ws).await, n + 1);
        assert_eq!(expect_text(&mut ws).await, format!("hello {n}"));
        let closed = expect_close(&mut ws).await;
        assert_eq!(closed.code, CloseCode::ABNORMAL);
        assert!(!closed.was_clean);
        // Reset after each open (`stable_after` zero): always the first
        // step of the schedule.
        assert_eq!(closed.reconnect_in, Some(Duration::from_millis(20)));
    }
    assert_eq!(expect_open(&mut ws).await, 3);
    assert_eq!(ws.ready_state(), ReadyState::Open);
    ws.send(Message::text("echo me")).unwrap();
    assert_eq!(expect_text(&mut ws).await, "echo me");
    ws.close(1000, "done").unwrap();
    let closed = expect_close(&mut ws).await;
    assert_eq!(
        (closed.code, closed.was_clean, closed.reconnect_in),
        (CloseCode::NORMAL, true, None)
    );
    expect_end(&mut ws).await;
    assert_eq!(server.accepted(), 3);
}

#[tokio::test]
async fn failures_back_off_exponentially_and_open_resets_the_schedule() {
    // Three refusals (503, retried), then a connection that drops, then echo.
    let server = Server::start(
        |n| {
            if n < 3 {
                Plan::Refuse(StatusCode::SERVICE_UNAVAILABLE)
            } else {
                Plan::Accept
            }
        },
        |n, ws| {
            if n == 3 {
                greet_and_drop(n, ws)
            } else {
                echo(n, ws)
            }
        },
    )
    .await;
    let mut ws = client(&server.url, fast());
    let mut waits = Vec::new();
    for _ in 0..3 {
        match next(&mut ws).await {
            Event::Error(duplex::Error::HttpStatus(response)) => {
                assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        let closed = expect_close(&mut ws).await;
        assert_eq!(closed.code, CloseCode::ABNORMAL);
        waits.push(closed.reconnect_in.expect("retried").as_millis());
    }
    assert_eq!(waits, [20, 40, 80]);
    expect_open(&mut ws).await;
    assert_eq!(expect_text(&mut ws).await, "hello 3");
    let closed = expect_close(&mut ws).await;
    assert_eq!(closed.reconnect_in, Some(Duration::from_millis(20)));
    expect_open(&mut ws).await;
    ws.close(1000, "").unwrap();
    expect_close(&mut ws).await;
    expect_end(&mut ws).await;
}

#[tokio::test]
async fn the_cap_bounds_every_wait() {
    let server = Server::start(|_| Plan::Refuse(StatusCode::BAD_GATEWAY), echo).await;
    let options = fast().max_attempts(6);
    let mut ws = client(&server.url, options);
    let mut waits = Vec::new();
    loop {
        let closed = expect_close(&mut ws).await;
        match closed.reconnect_in {
            Some(wait) => waits.push(wait.as_millis()),
            None => break,
        }
    }
    // Six attempts: five waits, capped at 200 ms; then the final close.
    assert_eq!(waits, [20, 40, 80, 160, 200]);
    expect_end(&mut ws).await;
    assert_eq!(server.accepted(), 6);
}

#[tokio::test]
async fn gives_up_after_max_attempts_when_nothing_listens() {
    // A port with no listener: bind, note it, close.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let started = Instant::now();
    let mut ws = client(&format!("ws://127.0.0.1:{port}/"), fast().max_attempts(3));
    let mut errors = 0;
    let mut closes = Vec::new();
    while let Some(event) = timeout(WAIT, ws.next_event()).await.unwrap() {
        match event {
            Event::Error(_) => errors += 1,
            Event::Close(closed) => closes.push(closed.reconnect_in),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(errors, 3);
    assert_eq!(
        closes,
        [
            Some(Duration::from_millis(20)),
            Some(Duration::from_millis(40)),
            None
        ]
    );
    assert!(started.elapsed() >= Duration::from_millis(60));
    assert_eq!(ws.ready_state(), ReadyState::Closed);
}

#[tokio::test]
async fn no_reconnect_after_normal_policy_or_listed_close_codes() {
    for (code, listed) in [(1000u16, false), (1008, false), (4001, true)] {
        let server = Server::start(
            |_| Plan::Accept,
            move |_, mut ws| {
                Box::pin(async move {
                    let _ = ws.close(CloseCode(code), "go away for good").await;
                })
            },
        )
        .await;
        let mut options = fast();
        if listed {
            options = options.no_reconnect_on([4001, 4002]);
        }
        let mut ws = client(&server.url, options);
        expect_open(&mut ws).await;
        let closed = expect_close(&mut ws).await;
        assert_eq!(closed.code, CloseCode(code));
        assert_eq!(closed.reason, "go away for good");
        assert!(closed.was_clean);
        assert_eq!(closed.reconnect_in, None, "code {code}");
        expect_end(&mut ws).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(server.accepted(), 1, "code {code}");
    }
}

#[tokio::test]
async fn reconnects_after_going_away() {
    let server = Server::start(
        |_| Plan::Accept,
        |n, mut ws| {
            Box::pin(async move {
                if n == 0 {
                    let _ = ws.close(CloseCode::GOING_AWAY, "restarting").await;
                } else {
                    echo(n, ws).await;
                }
            })
        },
    )
    .await;
    let mut ws = client(&server.url, fast());
    expect_open(&mut ws).await;
    let closed = expect_close(&mut ws).await;
    assert_eq!(
        (closed.code, closed.was_clean),
        (CloseCode::GOING_AWAY, true)
    );
    assert!(closed.reconnect_in.is_some());
    assert_eq!(expect_open(&mut ws).await, 2);
    ws.close(1000, "").unwrap();
    expect_close(&mut ws).await;
    expect_end(&mut ws).await;
}

/// A draining server (`Shutdown::trigger_spread`) closes with 1001 and
/// the delay it chose in the reason; the client waits exactly that long,
/// not a backoff draw (here 20 ms), before it connects again.
#[tokio::test]
async fn a_drain_advice_sets_the_wait() {
    let shutdown = duplex::Shutdown::new();
    let watching = shutdown.clone();
    let server = Server::start(
        |_| Plan::Accept,
        move |n, mut ws| {
            if n == 0 {
                ws.set_shutdown(watching.watch());
            }
            echo(n, ws)
        },
    )
    .await;
    let options = fast().backoff(Backoff {
        initial: Duration::from_millis(20),
        max: Duration::from_secs(5),
        factor: 2.0,
    });
    let mut ws = client(&server.url, options);
    expect_open(&mut ws).await;
    // The server's watch exists once its script ran: the echo answers.
    ws.send(Message::text("ping")).unwrap();
    assert_eq!(expect_text(&mut ws).await, "ping");
    let delays = shutdown.trigger_spread(Duration::from_millis(1500));
    assert_eq!(delays.len(), 1);
    let closed = expect_close(&mut ws).await;
    let closed_at = Instant::now();
    assert_eq!(
        (closed.code, closed.was_clean),
        (CloseCode::GOING_AWAY, true)
    );
    assert_eq!(
        closed.reason,
        duplex::shutdown::reconnect_reason(delays[0]),
        "{closed:?}"
    );
    assert_eq!(closed.reconnect_in, Some(delays[0]));
    assert_eq!(expect_open(&mut ws).await, 2);
    let waited = closed_at.elapsed();
    assert!(
        waited + Duration::from_millis(20) >= delays[0],
        "came back after {waited:?}, advised {:?}",
        delays[0]
    );
    assert_eq!(server.accepted(), 2);
    ws.close(1000, "").unwrap();
    expect_close(&mut ws).await;
    expect_end(&mut ws).await;
}

#[tokio::test]
async fn a_refusal_with_a_client_error_is_final() {
    let server = Server::start(|_| Plan::Refuse(StatusCode::UNAUTHORIZED), echo).await;
    let mut ws = client(&server.url, fast());
    match next(&mut ws).await {
        Event::Error(duplex::Error::HttpStatus(response)) => {
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(expect_close(&mut ws).await.reconnect_in, None);
    expect_end(&mut ws).await;
    assert_eq!(server.accepted(), 1);
}

#[tokio::test]
async fn retry_after_lengthens_the_wait() {
    let server = Server::start(
        |n| {
            if n == 0 {
                Plan::Refuse(StatusCode::TOO_MANY_REQUESTS)
            } else {
                Plan::Accept
            }
        },
        echo,
    )
    .await;
    let mut ws = client(&server.url, fast());
    let closed = expect_close(&mut ws).await;
    assert_eq!(closed.reconnect_in, Some(Duration::from_secs(1)));
    expect_open(&mut ws).await;
    ws.close(1000, "").unwrap();
    expect_close(&mut ws).await;
    expect_end(&mut ws).await;
}

#[tokio::test]
async fn close_while_waiting_stops_for_good() {
    let server = Server::start(|_| Plan::Accept, greet_and_drop).await;
    let options = fast().backoff(Backoff {
        initial: Duration::from_secs(5),
        max: Duration::from_secs(5),
        factor: 2.0,
    });
    let mut ws = client(&server.url, options);
    expect_open(&mut ws).await;
    expect_text(&mut ws).await;
    let closed = expect_close(&mut ws).await;
    assert_eq!(closed.reconnect_in, Some(Duration::from_secs(5)));
    assert_eq!(ws.ready_state(), ReadyState::Connecting);
    assert_eq!(
        ws.send(Message::text("nobody hears")),
        Err(SendError::NotOpen(ReadyState::Connecting))
    );
    let started = Instant::now();
    ws.close(4000, "user left").unwrap();
    let closed = expect_close(&mut ws).await;
    assert_eq!(
        (closed.code, closed.reason.as_str(), closed.reconnect_in),
        (CloseCode(4000), "user left", None)
    );
    expect_end(&mut ws).await;
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(server.accepted(), 1);
}

#[tokio::test]
async fn the_server_sees_the_close_code_and_reason() {
    let (seen_tx, seen_rx) = tokio::sync::oneshot::channel();
    let seen_tx = Arc::new(std::sync::Mutex::new(Some(seen_tx)));
    let server = Server::start(
        |_| Plan::Accept,
        move |_, mut ws| {
            let seen_tx = seen_tx.clone();
            Box::pin(async move {
                while let Some(Ok(_)) = ws.next().await {}
                if let Some(tx) = seen_tx.lock().unwrap().take() {
                    let _ = tx.send(ws.close_info().cloned());
                }
            })
        },
    )
    .await;
    let mut ws = client(&server.url, fast());
    expect_open(&mut ws).await;
    ws.close(4321, "bye now").unwrap();
    let closed = expect_close(&mut ws).await;
    assert_eq!((closed.code, closed.was_clean), (CloseCode(4321), true));
    let seen = timeout(WAIT, seen_rx).await.unwrap().unwrap().unwrap();
    assert_eq!(
        (seen.code, seen.reason.as_str()),
        (CloseCode(4321), "bye now")
    );
    expect_end(&mut ws).await;
}

#[tokio::test]
async fn sends_for_a_gone_connection_are_refused_and_never_carried_over() {
    // Connection 0 stays silent and is dropped once the test says so;
    // connection 1 echoes.
    let (drop_tx, drop_rx) = tokio::sync::oneshot::channel::<()>();
    let drop_rx = Arc::new(std::sync::Mutex::new(Some(drop_rx)));
    let server = Server::start(
        |_| Plan::Accept,
        move |n, ws| {
            let drop_rx = drop_rx.clone();
            Box::pin(async move {
                if n == 0 {
                    let rx = drop_rx.lock().unwrap().take().unwrap();
                    let _ = rx.await;
                    drop(ws);
                } else {
                    echo(n, ws).await;
                }
            })
        },
    )
    .await;
    let mut ws = client(&server.url, fast());
    let first = expect_open(&mut ws).await;
    drop_tx.send(()).unwrap();
    expect_close(&mut ws).await;
    let second = expect_open(&mut ws).await;
    assert_eq!(second, first + 1);
    assert_eq!(
        ws.send_on(first, Message::text("stale")),
        Err(SendError::Gone(first))
    );
    ws.send_on(second, Message::text("fresh")).unwrap();
    assert_eq!(expect_text(&mut ws).await, "fresh");
    ws.close(1000, "").unwrap();
    expect_close(&mut ws).await;
    expect_end(&mut ws).await;
}

#[tokio::test]
async fn buffered_amount_is_bounded_and_drains() {
    let server = Server::start(|_| Plan::Accept, echo).await;
    let mut options = fast();
    options.max_buffered = 64 * 1024;
    let mut ws = client(&server.url, options);
    expect_open(&mut ws).await;
    assert!(matches!(
        ws.send(Message::binary(vec![0u8; 64 * 1024 + 1])),
        Err(SendError::Full { limit: 65536, .. })
    ));
    for i in 0..10 {
        ws.send(Message::binary(vec![i; 1000])).unwrap();
    }
    for i in 0..10 {
        match next(&mut ws).await {
            Event::Message(Message::Binary(bytes)) => assert_eq!(bytes[..], [i; 1000][..]),
            other => panic!("expected binary, got {other:?}"),
        }
    }
    assert_eq!(ws.buffered_amount(), 0);
    ws.close(1000, "").unwrap();
    expect_close(&mut ws).await;
    expect_end(&mut ws).await;
}

#[tokio::test]
async fn dropping_the_client_closes_with_going_away() {
    let (seen_tx, seen_rx) = tokio::sync::oneshot::channel();
    let seen_tx = Arc::new(std::sync::Mutex::new(Some(seen_tx)));
    let server = Server::start(
        |_| Plan::Accept,
        move |_, mut ws| {
            let seen_tx = seen_tx.clone();
            Box::pin(async move {
                while let Some(Ok(_)) = ws.next().await {}
                if let Some(tx) = seen_tx.lock().unwrap().take() {
                    let _ = tx.send(ws.close_info().cloned());
                }
            })
        },
    )
    .await;
    let mut ws = client(&server.url, fast());
    expect_open(&mut ws).await;
    drop(ws);
    let seen = timeout(WAIT, seen_rx).await.unwrap().unwrap().unwrap();
    assert_eq!(seen.code, CloseCode::GOING_AWAY);
}

/// Closes at once with 1001 (a code that is retried), noting when the
/// connection was accepted.
fn close_at_once(
    accepted_at: Arc<std::sync::Mutex<Vec<Instant>>>,
    mut ws: WebSocket<TcpStream>,
) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    accepted_at.lock().unwrap().push(Instant::now());
    Box::pin(async move {
        let _ = ws.close(CloseCode::GOING_AWAY, "flapping").await;
    })
}

fn millis(waits: &[Duration]) -> Vec<u128> {
    waits.iter().map(Duration::as_millis).collect()
}

#[tokio::test]
async fn a_server_that_closes_at_once_gets_ever_longer_waits() {
    let accepted_at = Arc::new(std::sync::Mutex::new(Vec::new()));
    let times = accepted_at.clone();
    // Connections 0-4 close at once; 5 echoes (and is noted too).
    let server = Server::start(
        |_| Plan::Accept,
        move |n, ws| {
            if n < 5 {
                close_at_once(times.clone(), ws)
            } else {
                times.lock().unwrap().push(Instant::now());
                echo(n, ws)
            }
        },
    )
    .await;
    // The default `stable_after` (seconds): no connection here lasts that long.
    let stable_after = Options::default().stable_after;
    assert!(stable_after >= Duration::from_secs(1));
    let mut ws = client(&server.url, fast().stable_after(stable_after));
    let mut waits = Vec::new();
    for n in 1..=5u64 {
        assert_eq!(expect_open(&mut ws).await, n);
        let closed = expect_close(&mut ws).await;
        assert_eq!(closed.code, CloseCode::GOING_AWAY);
        waits.push(closed.reconnect_in.expect("retried"));
    }
    // Every open was short, so the schedule went on growing up to the cap
    // instead of starting again at 20 ms each time.
    assert_eq!(millis(&waits), [20, 40, 80, 160, 200]);
    // The server sees the gaps grow: each at least the wait announced before
    // it (lower bounds only, so a slow machine cannot fail this).
    assert_eq!(expect_open(&mut ws).await, 6);
    // The echo proves the server noted connection 5.
    ws.send(Message::text("up")).unwrap();
    assert_eq!(expect_text(&mut ws).await, "up");
    let times = accepted_at.lock().unwrap().clone();
    assert_eq!(times.len(), 6);
    let gaps: Vec<Duration> = times.windows(2).map(|w| w[1] - w[0]).collect();
    for (gap, wait) in gaps.iter().zip(&waits) {
        let slack = Duration::from_millis(5);
        assert!(
            *gap + slack >= *wait,
            "gap {gap:?} shorter than the wait {wait:?}; gaps {gaps:?}"
        );
    }
    // Reset after every open, the five gaps would be about 5 x 20 ms.
    assert!(gaps[3..].iter().sum::<Duration>() >= Duration::from_millis(350));
    ws.close(1000, "").unwrap();
    expect_close(&mut ws).await;
    expect_end(&mut ws).await;
}

#[tokio::test]
async fn a_connection_open_longer_than_stable_after_resets_the_schedule() {
    // Connections 0-2 and 4 close at once; connection 3 stays open until the
    // test has seen it open for longer than `stable_after`; 5 echoes.
    let stable_after = Duration::from_secs(1);
    let (release_tx, release_rx) = tokio::sync::oneshot::channel::<()>();
    let release_rx = Arc::new(std::sync::Mutex::new(Some(release_rx)));
    let accepted_at = Arc::new(std::sync::Mutex::new(Vec::new()));
    let server = Server::start(
        |_| Plan::Accept,
        move |n, mut ws| match n {
            3 => {
                let release_rx = release_rx.lock().unwrap().take().unwrap();
                Box::pin(async move {
                    let _ = release_rx.await;
                    let _ = ws.close(CloseCode::GOING_AWAY, "was up long enough").await;
                })
            }
            5 => echo(n, ws),
            _ => close_at_once(accepted_at.clone(), ws),
        },
    )
    .await;
    let mut ws = client(&server.url, fast().stable_after(stable_after));
    let mut waits = Vec::new();
    for n in 1..=3u64 {
        assert_eq!(expect_open(&mut ws).await, n);
        waits.push(expect_close(&mut ws).await.reconnect_in.expect("retried"));
    }
    // Short connections: the waits grow.
    assert_eq!(millis(&waits), [20, 40, 80]);

    assert_eq!(expect_open(&mut ws).await, 4);
    let opened = Instant::now();
    tokio::time::sleep(stable_after + Duration::from_millis(300)).await;
    release_tx.send(()).unwrap();
    let closed = expect_close(&mut ws).await;
    assert_eq!(closed.reason, "was up long enough");
    assert!(opened.elapsed() > stable_after);
    // Stable: the next wait is the first step again.
    assert_eq!(closed.reconnect_in, Some(Duration::from_millis(20)));

    // And a short connection after it grows the schedule from there.
    assert_eq!(expect_open(&mut ws).await, 5);
    let closed = expect_close(&mut ws).await;
    assert_eq!(closed.reconnect_in, Some(Duration::from_millis(40)));

    assert_eq!(expect_open(&mut ws).await, 6);
    ws.send(Message::text("still here")).unwrap();
    assert_eq!(expect_text(&mut ws).await, "still here");
    ws.close(1000, "").unwrap();
    expect_close(&mut ws).await;
    expect_end(&mut ws).await;
    assert_eq!(server.accepted(), 6);
}
