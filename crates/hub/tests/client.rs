//! The reconnecting hub client (`duplex_hub_client`) against a real hub:
//! connections cut under it (recovery, exactly once, in order), acks lost
//! (idempotent retries), publishes queued while disconnected, the hub killed
//! and restarted on the same port (an explicit gap, then the new epoch in
//! full), and 1,000 clients coming back after a restart spread out in time.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{TestHub, WAIT, json};
use duplex::reconnect::{self, Backoff};
use duplex::{CloseCode, Config};
use duplex_hub::HubConfig;
use duplex_hub_client::{Ack, Client, Event, Options, PublishError};
use duplex_hub_proto::{Data, Publication, ServerMessage, SubscribeOptions};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{AbortHandle, JoinHandle};
use tokio::time::timeout;

/// A hub config that lets the tests publish fast and keep long histories.
fn config() -> HubConfig {
    let mut config = HubConfig::default();
    config.limits.messages_per_second = 100_000.0;
    config.limits.burst = 100_000.0;
    config.limits.max_connections_per_ip = 10_000;
    config.default_namespace.history_size = 10_000;
    config.shutdown_grace = Duration::from_secs(2);
    config
}

/// Client options with fast, jittered reconnection; the backoff starts over
/// after every open (these tests cut connections seconds apart, and check
/// recovery, not how a flapping server is backed off from).
fn options() -> Options {
    let reconnect = reconnect::Options::default()
        .backoff(Backoff {
            initial: Duration::from_millis(50),
            max: Duration::from_millis(500),
            factor: 2.0,
        })
        .stable_after(Duration::ZERO);
    let mut options = Options::default().reconnect(reconnect);
    options.config = Config::client().without_compression();
    options
}

fn data(n: u64) -> Data {
    json(json!({ "n": n }))
}

fn n_of(publication: &Publication) -> u64 {
    let value = publication
        .data
        .as_json()
        .expect("JSON data")
        .to_value()
        .unwrap();
    value["n"].as_u64().expect("n")
}

async fn next(client: &mut Client) -> Event {
    timeout(WAIT, client.next_event())
        .await
        .expect("an event in time")
        .expect("the client goes on")
}

/// Waits for an event matching `pred`, returning it and what came before.
async fn wait_for(client: &mut Client, pred: impl Fn(&Event) -> bool) -> (Event, Vec<Event>) {
    let mut before = Vec::new();
    loop {
        let event = next(client).await;
        if pred(&event) {
            return (event, before);
        }
        before.push(event);
    }
}

async fn connected(client: &mut Client) {
    wait_for(client, |e| matches!(e, Event::Connected { .. })).await;
}

async fn subscribed(client: &mut Client, channel: &str) -> bool {
    let (event, _) = wait_for(
        client,
        |e| matches!(e, Event::Subscribed { channel: c, .. } if c == channel),
    )
    .await;
    let Event::Subscribed { recovered, .. } = event else {
        unreachable!()
    };
    recovered
}

/// A TCP relay in front of the hub that the test can cut, mute (drop what
/// the hub sends) or make refuse new connections.
struct Relay {
    addr: SocketAddr,
    relays: Arc<Mutex<Vec<AbortHandle>>>,
    muted: Arc<AtomicBool>,
    refusing: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
        self.cut();
    }
}

impl Relay {
    async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let relays: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let muted = Arc::new(AtomicBool::new(false));
        let refusing = Arc::new(AtomicBool::new(false));
        let (list, mute, refuse) = (relays.clone(), muted.clone(), refusing.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                if refuse.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let mute = mute.clone();
                let relay = tokio::spawn(async move {
                    let Ok(hub) = TcpStream::connect(target).await else {
                        return;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = hub.set_nodelay(true);
                    let (mut client_read, mut client_write) = client.into_split();
                    let (mut hub_read, mut hub_write) = hub.into_split();
                    let up = tokio::io::copy(&mut client_read, &mut hub_write);
                    let down = async {
                        let mut buf = vec![0u8; 16 * 1024];
                        loop {
                            let n = match hub_read.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => n,
                            };
                            if mute.load(Ordering::SeqCst) {
                                continue;
                            }
                            if client_write.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    };
                    tokio::select! {
                        _ = up => {}
                        () = down => {}
                    }
                });
                list.lock().unwrap().push(relay.abort_handle());
            }
        });
        Self {
            addr,
            relays,
            muted,
            refusing,
            task,
        }
    }

    fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// Drops every relayed connection at once (both ends see the TCP
    /// connection end, without a close frame).
    fn cut(&self) {
        for relay in self.relays.lock().unwrap().drain(..) {
            relay.abort();
        }
    }

    fn mute(&self, on: bool) {
        self.muted.store(on, Ordering::SeqCst);
    }

    fn refuse(&self, on: bool) {
        self.refusing.store(on, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_connections_lose_nothing_and_repeat_nothing() {
    let hub = TestHub::start(config()).await;
    let relay = Relay::start(hub.addr).await;
    let mut subscriber = Client::connect(&relay.url(), options());
    subscriber.subscribe("chat:lobby").unwrap();
    assert!(!subscribed(&mut subscriber, "chat:lobby").await);

    // Publish 400 messages directly; cut the subscriber's connection three
    // times while they flow.
    let mut publisher = hub.client().await;
    let total = 400u64;
    let stream = tokio::spawn(async move {
        for n in 0..total {
            let reply = publisher.publish("chat:lobby", json!({ "n": n })).await;
            assert!(
                matches!(reply, ServerMessage::Published { .. }),
                "{reply:?}"
            );
            if n % 100 == 50 {
                relay.cut();
            }
            if n % 4 == 0 {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        relay
    });

    let mut received = Vec::new();
    let mut disconnects = 0;
    let mut recoveries = Vec::new();
    while received.len() < total as usize {
        match next(&mut subscriber).await {
            Event::Message(publication) => received.push(publication),
            Event::Disconnected(closed) => {
                assert_eq!(closed.code, CloseCode::ABNORMAL);
                assert!(closed.reconnect_in.is_some());
                disconnects += 1;
            }
            Event::Subscribed { recovered, .. } => recoveries.push(recovered),
            Event::Gap { channel } => panic!("gap on {channel} within the history window"),
            _ => {}
        }
    }
    let _relay = stream.await.unwrap();
    let offsets: Vec<u64> = received.iter().map(|p| p.offset).collect();
    assert_eq!(offsets, (1..=total).collect::<Vec<_>>());
    let ns: Vec<u64> = received.iter().map(n_of).collect();
    assert_eq!(ns, (0..total).collect::<Vec<_>>());
    assert!(disconnects >= 3, "{disconnects} disconnects");
    assert_eq!(recoveries.len(), disconnects);
    assert!(recoveries.iter().all(|&r| r), "{recoveries:?}");
    subscriber.close();
    wait_for(
        &mut subscriber,
        |e| matches!(e, Event::Disconnected(c) if c.reconnect_in.is_none()),
    )
    .await;
    assert!(subscriber.next_event().await.is_none());
}

#[tokio::test]
async fn a_publish_whose_ack_was_lost_is_retried_with_its_key_and_delivered_once() {
    let hub = TestHub::start(config()).await;
    let relay = Relay::start(hub.addr).await;
    let mut watcher = hub.client().await;
    watcher.subscribe("chat:once").await;

    let mut publisher = Client::connect(&relay.url(), options());
    connected(&mut publisher).await;
    // The hub gets the publish; its answer never reaches the publisher.
    relay.mute(true);
    let publish = publisher.publish("chat:once", data(1));
    let delivered = watcher
        .wait_for(|m| matches!(m, ServerMessage::Message(_)))
        .await;
    assert_eq!(common::offset_of(&delivered), 1);
    assert_eq!(publisher.pending_publishes(), 1);
    // The connection drops before the ack: the outcome is unclear.
    relay.mute(false);
    relay.cut();
    // Once reconnected, publish a second message (queued behind the retry),
    // then close.
    let events = tokio::spawn(async move {
        let mut second = None;
        while let Some(event) = publisher.next_event().await {
            match event {
                Event::Connected { .. } if second.is_none() => {
                    // Acks resolve while events wait unread.
                    second = Some(publisher.publish("chat:once", data(2)).await);
                    publisher.close();
                }
                Event::Disconnected(closed) if closed.reconnect_in.is_none() => break,
                _ => {}
            }
        }
        second.expect("reconnected")
    });
    let ack = timeout(WAIT, publish).await.unwrap().unwrap();
    assert_eq!(
        ack,
        Ack {
            channel: "chat:once".into(),
            offset: 1,
            duplicate: true
        }
    );
    // The next message the watcher sees is the second publish: the retry
    // was not delivered again.
    let next_message = watcher
        .wait_for(|m| matches!(m, ServerMessage::Message(_)))
        .await;
    let ServerMessage::Message(publication) = next_message else {
        unreachable!()
    };
    assert_eq!((publication.offset, n_of(&publication)), (2, 2));
    let second = timeout(WAIT, events).await.unwrap().unwrap().unwrap();
    assert_eq!((second.offset, second.duplicate), (2, false));
}

#[tokio::test]
async fn publishes_made_while_disconnected_are_queued_bounded_and_sent_in_order() {
    let hub = TestHub::start(config()).await;
    let relay = Relay::start(hub.addr).await;
    let mut watcher = hub.client().await;
    watcher.subscribe("chat:queued").await;
    relay.refuse(true);
    let mut options = options();
    options.max_pending = 20;
    let mut publisher = Client::connect(&relay.url(), options);
    // It cannot connect: attempts fail and are retried.
    let (_, before) = wait_for(
        &mut publisher,
        |e| matches!(e, Event::Disconnected(c) if c.reconnect_in.is_some()),
    )
    .await;
    assert!(before.iter().all(|e| matches!(e, Event::Error(_))));
    assert!(!publisher.is_connected());
    let publishes: Vec<_> = (0..20)
        .map(|n| publisher.publish("chat:queued", data(n)))
        .collect();
    assert_eq!(publisher.pending_publishes(), 20);
    assert_eq!(
        publisher.publish("chat:queued", data(99)).await,
        Err(PublishError::QueueFull(20))
    );
    assert_eq!(
        publisher.publish("not a channel", data(0)).await,
        Err(PublishError::InvalidChannel(
            duplex_hub_proto::validate_channel("not a channel").unwrap_err()
        ))
    );
    relay.refuse(false);
    let handle = publisher.handle();
    let drain = tokio::spawn(async move {
        while let Some(event) = publisher.next_event().await {
            if matches!(event, Event::Disconnected(ref c) if c.reconnect_in.is_none()) {
                break;
            }
        }
    });
    let mut offsets = Vec::new();
    for publish in publishes {
        let ack = timeout(WAIT, publish).await.unwrap().unwrap();
        assert!(!ack.duplicate);
        offsets.push(ack.offset);
    }
    assert_eq!(offsets, (1..=20).collect::<Vec<_>>());
    assert_eq!(handle.pending_publishes(), 0);
    for n in 0..20 {
        let message = watcher
            .wait_for(|m| matches!(m, ServerMessage::Message(_)))
            .await;
        let ServerMessage::Message(publication) = message else {
            unreachable!()
        };
        assert_eq!((publication.offset, n_of(&publication)), (n + 1, n));
    }
    handle.close();
    timeout(WAIT, drain).await.unwrap().unwrap();
    // Closed for good: publishing fails at once.
    assert_eq!(
        handle.publish("chat:queued", data(0)).await,
        Err(PublishError::Closed)
    );
}

/// Kills the hub (its task is dropped: every socket closes without a close
/// frame) and starts a new one, with a new in-memory broker, on the same
/// port.
async fn kill_and_restart(hub: TestHub, config: HubConfig) -> TestHub {
    let addr = hub.addr;
    drop(hub);
    // The old listener goes when the aborted task is dropped.
    let deadline = Instant::now() + WAIT;
    loop {
        match std::net::TcpListener::bind(addr) {
            Ok(listener) => {
                drop(listener);
                break;
            }
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err(error) => panic!("port {addr} not free again: {error}"),
        }
    }
    TestHub::start_on(addr, config).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_restart_mid_stream_is_an_explicit_gap_then_the_new_epoch_in_full() {
    let hub = TestHub::start(config()).await;
    let url = hub.url();
    let mut subscriber = Client::connect(&url, options());
    subscriber
        .subscribe_with(
            "chat:restart",
            SubscribeOptions {
                recent: 1000,
                since: None,
            },
        )
        .unwrap();
    subscribed(&mut subscriber, "chat:restart").await;
    let mut publisher = Client::connect(&url, options());
    connected(&mut publisher).await;
    let handle = publisher.handle();
    let drain = tokio::spawn(async move {
        let mut disconnects = 0;
        while let Some(event) = publisher.next_event().await {
            if let Event::Disconnected(closed) = event {
                disconnects += 1;
                if closed.reconnect_in.is_none() {
                    break;
                }
            }
        }
        disconnects
    });

    // Publish steadily (without waiting for acks) while the hub is killed
    // and restarted.
    let total = 300u64;
    let publishing = tokio::spawn(async move {
        let mut acks = Vec::new();
        for n in 0..total {
            acks.push(handle.publish("chat:restart", data(n)));
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
        let mut results = Vec::new();
        for ack in acks {
            results.push(timeout(WAIT, ack).await.expect("ack in time"));
        }
        (handle, results)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let hub = kill_and_restart(hub, config()).await;

    // The subscriber's view: epoch A from offset 1, one gap, epoch B from
    // offset 1 (the hub replays the new epoch's `recent` messages), up to
    // the last publish.
    let mut epochs: Vec<Vec<Publication>> = vec![Vec::new()];
    let mut gaps = 0;
    loop {
        match next(&mut subscriber).await {
            Event::Message(publication) => {
                let last = n_of(&publication) == total - 1;
                epochs.last_mut().unwrap().push(publication);
                if last {
                    break;
                }
            }
            Event::Gap { channel } => {
                assert_eq!(channel, "chat:restart");
                gaps += 1;
                epochs.push(Vec::new());
            }
            _ => {}
        }
    }
    assert_eq!(gaps, 1, "exactly one gap, for the restart");
    for (i, epoch) in epochs.iter().enumerate() {
        let offsets: Vec<u64> = epoch.iter().map(|p| p.offset).collect();
        assert_eq!(
            offsets,
            (1..=epoch.len() as u64).collect::<Vec<_>>(),
            "epoch {i}"
        );
        let ns: Vec<u64> = epoch.iter().map(n_of).collect();
        assert!(ns.windows(2).all(|w| w[1] == w[0] + 1), "epoch {i}: {ns:?}");
    }
    assert!(!epochs[0].is_empty() && !epochs[1].is_empty());
    // Everything published reached the subscriber, except what the killed
    // hub had accepted and not yet sent it (lost with its history: the gap).
    let first_after = n_of(&epochs[1][0]);
    let last_before = n_of(epochs[0].last().unwrap());
    assert!(
        first_after <= last_before + 50,
        "{last_before} → {first_after}"
    );

    let (handle, results) = timeout(WAIT, publishing).await.unwrap().unwrap();
    assert_eq!(results.len(), total as usize);
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    handle.close();
    let disconnects = timeout(WAIT, drain).await.unwrap().unwrap();
    assert!(disconnects >= 2, "the kill and the final close");
    subscriber.close();
    drop(hub);
}

#[tokio::test]
async fn tokens_go_in_connect_and_a_refused_token_is_final() {
    use duplex_hub::config::AuthConfig;
    use jsonwebtoken::{EncodingKey, Header, encode};
    const SECRET: &str = "a client test secret of 32 bytes";
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let token = |secret: &str| {
        encode(
            &Header::default(),
            &json!({ "sub": "alice", "exp": now + 3600 }),
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    };
    let mut config = config();
    config.auth = Some(AuthConfig {
        hs256_secret: Some(SECRET.into()),
        ..AuthConfig::default()
    });
    let hub = TestHub::start(config).await;

    let mut alice = Client::connect(&hub.url(), options().token(token(SECRET)));
    let (event, _) = wait_for(&mut alice, |e| matches!(e, Event::Connected { .. })).await;
    let Event::Connected { user, expires, .. } = event else {
        unreachable!()
    };
    assert_eq!((user.as_str(), expires), ("alice", Some(now + 3600)));
    alice.close();

    let mut forger = Client::connect(
        &hub.url(),
        options().token(token("not the secret, though 32 bytes!")),
    );
    let (event, _) = wait_for(&mut forger, |e| matches!(e, Event::Disconnected(_))).await;
    let Event::Disconnected(closed) = event else {
        unreachable!()
    };
    assert_eq!(closed.code.0, duplex_hub_proto::close::UNAUTHORIZED);
    assert_eq!(closed.reconnect_in, None);
    assert!(timeout(WAIT, forger.next_event()).await.unwrap().is_none());
}

/// When 1,000 clients came back after a restart, in time since the kill.
struct Spread {
    /// When each client scheduled its attempts (each close event says when
    /// the next attempt comes), sorted.
    attempts: Vec<Duration>,
    /// When the restarted hub accepted each upgrade (its
    /// `duplex_connections_accepted_total`, sampled every 5 ms), sorted.
    arrivals: Vec<Duration>,
    /// When each client was connected again (its `connected` event), sorted.
    connected: Vec<Duration>,
}

/// The first-to-last span of sorted times.
fn span(times: &[Duration]) -> Duration {
    times[times.len() - 1] - times[0]
}

/// The most times within any `window`.
fn densest(times: &[Duration], window: Duration) -> usize {
    let mut most = 0;
    let mut start = 0;
    for end in 0..times.len() {
        while times[end] - times[start] > window {
            start += 1;
        }
        most = most.max(end - start + 1);
    }
    most
}

fn histogram(times: &[Duration], bucket: Duration) -> BTreeMap<u128, usize> {
    let mut histogram = BTreeMap::new();
    for t in times {
        *histogram
            .entry(t.as_millis() / bucket.as_millis())
            .or_default() += 1;
    }
    histogram
}

fn report(what: &str, times: &[Duration]) {
    println!(
        "{what}: first {:?}, median {:?}, last {:?}, first-to-last {:?}, most within 10 ms: {}",
        times[0],
        times[times.len() / 2],
        times[times.len() - 1],
        span(times),
        densest(times, Duration::from_millis(10)),
    );
    for (slot, count) in histogram(times, Duration::from_millis(250)) {
        println!(
            "  {:>5}-{:<5} ms {:>4} {}",
            slot * 250,
            (slot + 1) * 250,
            count,
            "#".repeat(count.div_ceil(10))
        );
    }
}

/// Connects 1,000 clients with `options` to one hub, kills the hub and
/// restarts it on the same port, and measures when the clients come back.
async fn reconnect_spread(options: Options) -> Spread {
    const CLIENTS: usize = 1000;
    let hub = TestHub::start(config()).await;
    let url = hub.url();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(usize, Instant, Event)>();
    let mut handles = Vec::new();
    for id in 0..CLIENTS {
        let mut client = Client::connect(&url, options.clone());
        handles.push(client.handle());
        let tx = tx.clone();
        tokio::spawn(async move {
            while let Some(event) = client.next_event().await {
                if matches!(event, Event::Connected { .. } | Event::Disconnected(_))
                    && tx.send((id, Instant::now(), event)).is_err()
                {
                    break;
                }
            }
        });
    }
    drop(tx);
    let mut up = 0;
    while up < CLIENTS {
        let (_, _, event) = timeout(Duration::from_secs(30), rx.recv())
            .await
            .expect("clients connect in time")
            .unwrap();
        if matches!(event, Event::Connected { .. }) {
            up += 1;
        }
    }

    let killed = Instant::now();
    let hub = kill_and_restart(hub, config()).await;
    let restarted = killed.elapsed();
    let metrics = hub.hub.metrics().clone();
    let sampler = tokio::spawn(async move {
        let mut arrivals = Vec::new();
        let mut seen = 0;
        let deadline = Instant::now() + Duration::from_secs(60);
        while seen < CLIENTS as u64 && Instant::now() < deadline {
            let accepted = metrics.snapshot().accepted;
            let at = killed.elapsed();
            arrivals.extend((seen..accepted).map(|_| at));
            seen = seen.max(accepted);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        arrivals
    });
    let mut back: BTreeMap<usize, Duration> = BTreeMap::new();
    let mut attempts: Vec<Duration> = Vec::new();
    while back.len() < CLIENTS {
        let (id, at, event) = timeout(Duration::from_secs(60), rx.recv())
            .await
            .expect("clients come back in time")
            .unwrap();
        match event {
            Event::Connected { .. } => {
                back.entry(id).or_insert(at - killed);
            }
            Event::Disconnected(closed) => {
                attempts.push(at - killed + closed.reconnect_in.expect("reconnects"));
            }
            _ => {}
        }
    }
    let arrivals = timeout(WAIT, sampler).await.unwrap().unwrap();
    let mut connected: Vec<Duration> = back.values().copied().collect();
    connected.sort();
    attempts.sort();
    println!(
        "restarted in {restarted:?}; {} attempts for {CLIENTS} clients",
        attempts.len()
    );
    report("attempts scheduled", &attempts);
    report("upgrades accepted by the hub", &arrivals);
    report("clients connected again", &connected);
    for handle in &handles {
        handle.close();
    }
    drop(hub);
    Spread {
        attempts,
        arrivals,
        connected,
    }
}

/// Options for the 1,000 clients: the default backoff (first wait uniform
/// in [0, 1 s], then [0, 2 s] …), no compression or keepalive to keep the
/// test light.
fn crowd_options() -> Options {
    let mut options = Options::default();
    options.config = Config::client().without_compression();
    options.config.ping_interval = None;
    options
}

/// 1,000 clients on one hub; the hub is killed and restarted on the same
/// port. With full jitter the clients come back spread over the first
/// backoff window (1 s) instead of all at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_clients_come_back_spread_out_after_a_restart() {
    let spread = reconnect_spread(crowd_options()).await;
    assert_eq!(spread.arrivals.len(), 1000);
    // Each client draws its own wait: uniform over [0, 1 s] puts ~10 in any
    // 10 ms.
    let attempts = span(&spread.attempts);
    assert!(
        attempts >= Duration::from_millis(800),
        "attempts over {attempts:?}"
    );
    let most = densest(&spread.attempts, Duration::from_millis(10));
    assert!(most <= 60, "{most} attempts within 10 ms");
    // And the hub sees them arrive over that window too, not in one burst
    // (looser: a loaded machine batches accepts).
    let arrivals = span(&spread.arrivals);
    assert!(
        arrivals >= Duration::from_millis(500),
        "arrivals over {arrivals:?}"
    );
    let most = densest(&spread.arrivals, Duration::from_millis(10));
    assert!(most <= 250, "{most} upgrades within 10 ms");
    assert!(span(&spread.connected) >= Duration::from_millis(500));
}

/// The same without jitter (every wait the whole ceiling), for comparison:
/// `cargo test -p duplex-hub --test client -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a baseline to compare with, not a check"]
async fn baseline_a_thousand_clients_without_jitter() {
    let mut options = crowd_options();
    options.reconnect = options.reconnect.random(|| 1.0);
    reconnect_spread(options).await;
}

/// The binary envelope (`duplex.v1.bin`) carries the same guarantees: a
/// binary subscriber cut off mid-stream recovers (its `subscribe` carries
/// `since`) and gets every message once, in order; a binary publisher whose
/// ack was lost retries with its key and is answered `duplicate`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_envelope_recovers_and_retries_like_json() {
    use duplex_hub_proto::Encoding;
    let hub = TestHub::start(config()).await;
    let relay = Relay::start(hub.addr).await;
    let binary = || options().encoding(Encoding::Binary);
    let mut subscriber = Client::connect(&relay.url(), binary());
    subscriber.subscribe("chat:bin").unwrap();
    assert!(!subscribed(&mut subscriber, "chat:bin").await);
    let mut publisher = Client::connect(&relay.url(), binary());
    connected(&mut publisher).await;
    let total = 60u64;
    for n in 0..total {
        if n == 20 {
            relay.cut();
        }
        let ack = timeout(WAIT, publisher.publish("chat:bin", data(n)))
            .await
            .expect("answered in time")
            .expect("accepted");
        assert_eq!(ack.offset, n + 1, "{ack:?}");
        if n == 40 {
            // The hub gets the next publish; its ack is lost in a cut.
            relay.mute(true);
            let publish = publisher.publish("chat:bin", data(total));
            tokio::time::sleep(Duration::from_millis(200)).await;
            relay.mute(false);
            relay.cut();
            let ack = timeout(WAIT, publish).await.unwrap().unwrap();
            assert_eq!((ack.offset, ack.duplicate), (n + 2, true));
            break;
        }
    }
    let mut received = Vec::new();
    let mut recoveries = Vec::new();
    while received.len() < 42 {
        match next(&mut subscriber).await {
            Event::Message(publication) => received.push(publication.offset),
            Event::Subscribed { recovered, .. } => recoveries.push(recovered),
            Event::Gap { channel } => panic!("gap on {channel} within the history window"),
            _ => {}
        }
    }
    assert_eq!(received, (1..=42).collect::<Vec<_>>());
    assert!(
        !recoveries.is_empty() && recoveries.iter().all(|&r| r),
        "{recoveries:?}"
    );
}
