//! Parking on real sockets: every wake source resumes a parked connection,
//! and it carries on where it was.

use std::future::{Future, poll_fn};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Poll, Waker};
use std::time::Duration;

use duplex_proto::close::CloseCode;
use futures_util::task::AtomicWaker;
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};

use super::{Resume, park};
use crate::{Accept, Config, Error, Message, Shutdown, WebSocket};

/// Counts of what the server side did.
#[derive(Default)]
struct Counts {
    parks: AtomicUsize,
    resumes: AtomicUsize,
    abandons: AtomicUsize,
    /// The application's own wake source (a queue, in a real server).
    nudged: AtomicBool,
    nudge: AtomicWaker,
}

/// An echo server that parks when told and says "nudged" when nudged.
struct Echo(Arc<Counts>);

impl Resume for Echo {
    fn register(&mut self, waker: &Waker) -> bool {
        self.0.nudge.register(waker);
        self.0.nudged.load(Ordering::Acquire)
    }

    fn resume(self, ws: WebSocket<TcpStream>) -> impl Future<Output = ()> + Send + 'static {
        self.0.resumes.fetch_add(1, Ordering::SeqCst);
        serve(ws, self)
    }

    fn abandon(self) {
        self.0.abandons.fetch_add(1, Ordering::SeqCst);
    }
}

enum Step {
    Message(Option<Result<Message, Error>>),
    Nudged,
    Park,
}

async fn serve(mut ws: WebSocket<TcpStream>, app: Echo) {
    loop {
        let step = poll_fn(|cx| {
            app.0.nudge.register(cx.waker());
            if app.0.nudged.swap(false, Ordering::AcqRel) {
                return Poll::Ready(Step::Nudged);
            }
            match ws.poll_next_unpin(cx) {
                Poll::Ready(message) => Poll::Ready(Step::Message(message)),
                Poll::Pending if ws.park_due() => Poll::Ready(Step::Park),
                Poll::Pending => Poll::Pending,
            }
        })
        .await;
        let reply = match step {
            Step::Message(Some(Ok(message))) => message,
            Step::Message(_) => return,
            Step::Nudged => Message::text("nudged"),
            Step::Park => {
                app.0.parks.fetch_add(1, Ordering::SeqCst);
                return park(ws, app);
            }
        };
        if ws.send(reply).await.is_err() {
            return;
        }
    }
}

fn config() -> Config {
    Config {
        park_after: Some(Duration::from_millis(100)),
        ..Config::default().without_compression()
    }
}

/// One connection served; its URL, counts and shutdown.
async fn server(config: Config) -> (String, Arc<Counts>, Shutdown) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let counts = Arc::new(Counts::default());
    let shutdown = Shutdown::new();
    let (app, watch) = (Echo(counts.clone()), shutdown.watch());
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut ws = crate::accept_with(tcp, &config, |_| Ok(Accept::default()))
            .await
            .unwrap();
        ws.set_shutdown(watch);
        serve(ws, app).await;
    });
    (url, counts, shutdown)
}

/// Waits (up to 5 s) until `done` holds.
async fn until(mut done: impl FnMut() -> bool) {
    for _ in 0..500 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("not within 5 s");
}

fn parks(counts: &Counts) -> usize {
    counts.parks.load(Ordering::SeqCst)
}

fn resumes(counts: &Counts) -> usize {
    counts.resumes.load(Ordering::SeqCst)
}

#[tokio::test]
async fn a_quiet_connection_parks_and_the_peer_resumes_it() {
    let (url, counts, _shutdown) = server(config()).await;
    let mut client = crate::connect(&url).await.unwrap();
    client.send(Message::text("a")).await.unwrap();
    assert_eq!(client.next().await.unwrap().unwrap(), Message::text("a"));
    until(|| parks(&counts) == 1).await;
    assert_eq!(resumes(&counts), 0);
    for text in ["b", "c"] {
        client.send(Message::text(text)).await.unwrap();
        assert_eq!(client.next().await.unwrap().unwrap(), Message::text(text));
    }
    assert_eq!(resumes(&counts), 1);
    // Quiet again: parked again.
    until(|| parks(&counts) == 2).await;
}

#[tokio::test]
async fn messages_keep_a_connection_from_parking() {
    let (url, counts, _shutdown) = server(config()).await;
    let mut client = crate::connect(&url).await.unwrap();
    // One message every 20 ms for 600 ms: never quiet for 100 ms.
    for i in 0..30 {
        let text = i.to_string();
        client.send(Message::text(text.clone())).await.unwrap();
        assert_eq!(client.next().await.unwrap().unwrap(), Message::text(text));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(parks(&counts), 0);
    until(|| parks(&counts) == 1).await;
}

#[tokio::test]
async fn the_keepalive_timer_resumes_a_parked_connection() {
    let config = Config {
        ping_interval: Some(Duration::from_millis(500)),
        pong_timeout: Duration::from_millis(500),
        ..config()
    };
    let (url, counts, _shutdown) = server(config).await;
    let mut client = crate::connect(&url).await.unwrap();
    // The client reads (and so answers pings) in its own task.
    let reader = tokio::spawn(async move { client.next().await.map(|m| m.is_ok()) });
    until(|| parks(&counts) == 1).await;
    // Nothing from the peer: the ping resumes it, the pong comes back, and
    // it parks again, still open, several times over.
    until(|| resumes(&counts) >= 2 && parks(&counts) >= 3).await;
    assert!(!reader.is_finished(), "the connection was dropped");
}

#[tokio::test]
async fn shutdown_resumes_a_parked_connection_to_close_it() {
    let (url, counts, shutdown) = server(config()).await;
    let mut client = crate::connect(&url).await.unwrap();
    until(|| parks(&counts) == 1).await;
    shutdown.trigger();
    let next = tokio::time::timeout(Duration::from_secs(5), client.next())
        .await
        .expect("closed within 5 s");
    assert!(next.is_none(), "{next:?}");
    let info = client.close_info().unwrap();
    assert_eq!(info.code, CloseCode::GOING_AWAY);
    assert_eq!(resumes(&counts), 1);
}

#[tokio::test]
async fn the_applications_wake_resumes_a_parked_connection() {
    let (url, counts, _shutdown) = server(config()).await;
    let mut client = crate::connect(&url).await.unwrap();
    until(|| parks(&counts) == 1).await;
    counts.nudged.store(true, Ordering::Release);
    counts.nudge.wake();
    let next = tokio::time::timeout(Duration::from_secs(5), client.next())
        .await
        .expect("a message within 5 s");
    assert_eq!(next.unwrap().unwrap(), Message::text("nudged"));
    assert_eq!(resumes(&counts), 1);
}

#[tokio::test]
async fn a_peer_that_closes_resumes_its_parked_connection_to_end_it() {
    let (url, counts, _shutdown) = server(config()).await;
    let mut client = crate::connect(&url).await.unwrap();
    until(|| parks(&counts) == 1).await;
    client.close(CloseCode::NORMAL, "bye").await.unwrap();
    assert_eq!(client.close_info().unwrap().code, CloseCode::NORMAL);
    assert!(client.close_info().unwrap().was_clean);
    assert_eq!(resumes(&counts), 1);
}

#[test]
fn a_runtime_that_shuts_down_abandons_its_parked_connections() {
    let runtime = || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap()
    };
    let (servers, clients) = (runtime(), runtime());
    let (url, counts, _shutdown) = servers.block_on(server(config()));
    let mut client = clients.block_on(crate::connect(&url)).unwrap();
    clients.block_on(until(|| parks(&counts) == 1));
    assert_eq!(counts.abandons.load(Ordering::SeqCst), 0);
    // Dropping a runtime drops its tasks, the lot's driver among them.
    drop(servers);
    assert_eq!(counts.abandons.load(Ordering::SeqCst), 1);
    assert_eq!(resumes(&counts), 0);
    // The socket closed with it: the peer sees the end without a close.
    let next = clients
        .block_on(async { tokio::time::timeout(Duration::from_secs(5), client.next()).await })
        .expect("ended within 5 s");
    assert!(!matches!(next, Some(Ok(_))), "{next:?}");
}

/// What a parked connection holds besides the kernel's socket and its wake-up
/// node: the slot (in an `Arc`: 16 bytes more) and its table entry. With an
/// application state of 8 bytes the slot fits jemalloc's 224-byte class,
/// where a task (384) and tokio's registration (256) held 640.
#[test]
fn a_parked_connection_is_small() {
    let slot = super::slot_size::<Echo>();
    eprintln!(
        "slot: {slot} bytes; WebSocket without its transport: {} bytes",
        std::mem::size_of::<WebSocket<()>>()
    );
    assert!(slot <= 224, "{slot} bytes");
}
