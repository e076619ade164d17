//! The drain: two hubs share one port (`reuse_port`); the one holding every
//! client shuts down, telling each client in its close 1001 when to come
//! back, spread over `drain_spread`; the Rust clients wait that long, land
//! on the other hub (the leaving one's listener left the port at once) and
//! subscribe again.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::WAIT;
use duplex::Config;
use duplex::reconnect::{self, Backoff};
use duplex_hub::{Hub, HubConfig, Server};
use duplex_hub_client::{Client, Event, Options};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::timeout;

const CLIENTS: usize = 200;
const SPREAD: Duration = Duration::from_secs(2);

/// A hub on `addr` with `SO_REUSEPORT`, and the switch that stops it.
struct Node {
    hub: std::sync::Arc<Hub>,
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<usize>,
}

async fn node(addr: SocketAddr) -> Node {
    let mut config = HubConfig {
        listen: addr,
        reuse_port: true,
        drain_spread: SPREAD,
        shutdown_grace: Duration::from_secs(2),
        ..HubConfig::default()
    };
    config.limits.max_connections_per_ip = 10_000;
    let hub = Hub::new(config).expect("valid config");
    let server = Server::bind(hub.clone())
        .await
        .expect("bind with reuse_port");
    let addr = server.local_addr();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));
    Node {
        hub,
        addr,
        stop,
        task,
    }
}

/// Client options: a backoff far longer than the drain window would allow
/// (its first draw would be up to 20 s), so coming back within the window
/// shows the client followed the hub's advice.
fn options() -> Options {
    let reconnect = reconnect::Options::default().backoff(Backoff {
        initial: Duration::from_secs(20),
        max: Duration::from_secs(30),
        factor: 2.0,
    });
    let mut options = Options::default().reconnect(reconnect);
    options.config = Config::client().without_compression();
    options.config.ping_interval = None;
    options
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_hub_spreads_its_clients_over_the_window_onto_the_other() {
    let first = node("127.0.0.1:0".parse().unwrap()).await;
    let url = format!("ws://{}/ws", first.addr);
    // Connection ids by client: (when it was told to go, the advised delay,
    // when it was subscribed again).
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(usize, Instant, Event)>();
    let mut handles = Vec::new();
    for id in 0..CLIENTS {
        let mut client = Client::connect(&url, options());
        client.subscribe(&format!("room:{id}")).unwrap();
        handles.push(client.handle());
        let tx = tx.clone();
        tokio::spawn(async move {
            while let Some(event) = client.next_event().await {
                if matches!(event, Event::Subscribed { .. } | Event::Disconnected(_))
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
        let (_, _, event) = timeout(WAIT, rx.recv())
            .await
            .expect("subscribed in time")
            .unwrap();
        if matches!(event, Event::Subscribed { .. }) {
            up += 1;
        }
    }
    assert_eq!(first.hub.metrics().snapshot().connections, CLIENTS as u64);

    // The second node joins the port; new connections may go to either,
    // but nobody connects until the first one drains.
    let second = node(first.addr).await;
    assert_eq!(second.addr, first.addr);
    // No client is told to go before this: each comes back no sooner than
    // its advised delay after it. (Measured from here, not from when a
    // reader task saw the close, which a busy machine can delay.)
    let stopped_at = Instant::now();
    let _ = first.stop.send(());

    let mut told: BTreeMap<usize, (Instant, Duration)> = BTreeMap::new();
    let mut back: BTreeMap<usize, Instant> = BTreeMap::new();
    while back.len() < CLIENTS {
        let (id, at, event) = timeout(WAIT, rx.recv())
            .await
            .expect("clients come back in time")
            .unwrap();
        match event {
            Event::Disconnected(closed) => {
                assert_eq!(closed.code, duplex::CloseCode::GOING_AWAY, "{closed:?}");
                let delay = closed.reconnect_in.expect("reconnects");
                assert_eq!(
                    closed.reason,
                    duplex::shutdown::reconnect_reason(delay),
                    "the client waits what the hub advised"
                );
                told.entry(id).or_insert((at, delay));
            }
            Event::Subscribed { .. } => {
                let (_, delay) = told[&id];
                let waited = at - stopped_at;
                assert!(
                    waited + Duration::from_millis(5) >= delay,
                    "client {id} came back {waited:?} after the stop, advised {delay:?}"
                );
                back.insert(id, at);
            }
            _ => {}
        }
    }
    let left = timeout(WAIT, first.task)
        .await
        .expect("stops in time")
        .unwrap();
    assert_eq!(left, 0, "every close handshake finished within the grace");

    // The delays cover the window evenly: each tenth of it holds a tenth
    // of the clients (stratified, so exactly, give or take one).
    let mut tenths = [0usize; 10];
    for (_, delay) in told.values() {
        assert!(*delay < SPREAD, "{delay:?}");
        tenths[(delay.as_millis() * 10 / SPREAD.as_millis()) as usize] += 1;
    }
    let share = CLIENTS / 10;
    assert!(
        tenths.iter().all(|&n| n.abs_diff(share) <= 1),
        "delays per tenth of the window: {tenths:?}"
    );
    // Every client is back, on the other node.
    assert_eq!(second.hub.metrics().snapshot().connections, CLIENTS as u64);
    assert_eq!(second.hub.metrics().snapshot().accepted, CLIENTS as u64);
    let arrivals: Vec<Instant> = back.values().copied().collect();
    let span = *arrivals.iter().max().unwrap() - *arrivals.iter().min().unwrap();
    assert!(
        span >= SPREAD * 3 / 4,
        "the clients came back over {span:?}, not spread over {SPREAD:?}"
    );
    for handle in &handles {
        handle.close();
    }
    let _ = second.stop.send(());
    let _ = timeout(WAIT, second.task).await;
}
