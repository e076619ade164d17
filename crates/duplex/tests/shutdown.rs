//! A shutdown's close to a peer that never answers it: the connection ends
//! within the close timeout, and its keepalive timer neither spins nor
//! hangs the task meanwhile (regression: the timer re-armed a ping
//! deadline already past, forever, in one poll).

use std::time::Duration;

use duplex::{Accept, ClientRequest, Config, Shutdown};
use futures_util::StreamExt;

#[test]
fn a_shutdown_close_to_a_silent_peer_ends_within_the_close_timeout() {
    let (done, ended) = std::sync::mpsc::channel();
    // A thread of its own: a spinning poll would never let a timeout in the
    // same runtime fire, so the test waits from outside it.
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let config = Config {
                ping_interval: Some(Duration::from_millis(50)),
                close_timeout: Duration::from_millis(400),
                ..Config::default()
            };
            let (server_io, client_io) = tokio::io::duplex(64 * 1024);
            let request = ClientRequest::new("ws://127.0.0.1/");
            let client_config = Config::client();
            let accepting = duplex::accept_with(server_io, &config, |_| Ok(Accept::default()));
            let connecting = duplex::client_handshake(client_io, &request, &client_config);
            let (server, client) = tokio::join!(accepting, connecting);
            let (mut server, _client) = (server.unwrap(), client.unwrap());
            let shutdown = Shutdown::new();
            server.set_shutdown(shutdown.watch());
            // A quiet spell longer than the ping interval, unpolled: the
            // keepalive deadline is already past when the close goes out.
            tokio::time::sleep(Duration::from_millis(120)).await;
            shutdown.trigger();
            // The client is held but never read: no close reply comes, and
            // well past the ping interval the server waits on its close.
            let started = tokio::time::Instant::now();
            while let Some(item) = server.next().await {
                if item.is_err() {
                    break;
                }
            }
            let _ = done.send(started.elapsed());
        });
    });
    let took = ended
        .recv_timeout(Duration::from_secs(10))
        .expect("the connection did not end: its timer spun or hung");
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(5),
        "ended after {took:?}; the close timeout is 400 ms"
    );
}
