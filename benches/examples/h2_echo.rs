//! Echo over HTTP/2 (RFC 8441) beside HTTP/1.1, in the same run: Duplex's
//! client against Duplex's server on loopback, in one process on one
//! thread (a current-thread tokio runtime), so both versions get the same
//! core and the same background load.
//!
//! `cargo run --release -p duplex-benches --example h2_echo [ROUNDS] [SECS]`
//! (default 3 rounds of 3 s per version, alternating) prints Markdown:
//!
//! - throughput: 64 WebSockets (HTTP/1.1: 64 TCP connections; HTTP/2: 64
//!   streams of one connection), each keeping 16 echoes of 64 B in flight;
//!   echoes per second, best round and median;
//! - CPU per echo: the process's user + system time (`/proc/self/stat`,
//!   client and server together) over the echoes of the round;
//! - memory per WebSocket: resident memory (`/proc/self/statm`) after
//!   opening 1,000 idle WebSockets (HTTP/2: all on one connection), minus
//!   before, over 1,000; both ends are in this process, so it is the cost
//!   of a client and a server WebSocket together.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use duplex::http2::{self, Pool, Server};
use duplex::{ClientRequest, Config, Message, WebSocket};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;

const SOCKETS: usize = 64;
const IN_FLIGHT: usize = 16;
const SIZE: usize = 64;
const IDLE: usize = 1000;

/// Process CPU time (user + system) in microseconds, from `/proc/self/stat`.
fn process_cpu_us() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // Fields after the command name (which is in parentheses).
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 here.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // CLK_TCK is 100 on Linux.
    ticks * 10_000
}

/// Resident memory in bytes, from `/proc/self/statm`.
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
    let pages: u64 = statm.split(' ').nth(1).unwrap().parse().unwrap();
    pages * 4096
}

async fn echo<S: AsyncRead + AsyncWrite + Unpin>(mut ws: WebSocket<S>) {
    while let Some(Ok(message)) = ws.next().await {
        if ws.feed(message).await.is_err() {
            break;
        }
    }
}

/// A server for both versions on one port: h2c by its preface, else
/// HTTP/1.1.
async fn serve(config: Config) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = Server::new(config.clone());
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            tcp.set_nodelay(true).unwrap();
            let (server, config) = (server.clone(), config.clone());
            tokio::spawn(async move {
                if http2::is_h2c_preface(&tcp).await.unwrap_or(false) {
                    let _ = server
                        .serve_connection(tcp, |ws, _| async move { echo(ws).await })
                        .await;
                } else if let Ok(ws) =
                    duplex::accept_with(tcp, &config, |_| Ok(duplex::Accept::default())).await
                {
                    echo(ws).await;
                }
            });
        }
    });
    addr
}

fn request(addr: std::net::SocketAddr, pool: Option<&Pool>) -> ClientRequest {
    let mut request = ClientRequest::new(format!("ws://{addr}/"));
    request.transport.http2 = pool.cloned();
    request
}

/// Echoes per second and CPU µs per echo for one round.
async fn round(addr: std::net::SocketAddr, h2: bool, secs: f64) -> (f64, f64) {
    let config = Config::client().without_compression();
    let pool = Pool::new();
    let request = request(addr, h2.then_some(&pool));
    let count = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let mut sockets = Vec::new();
    for _ in 0..SOCKETS {
        let ws = duplex::connect_with(&request, &config).await.unwrap();
        assert_eq!(ws.get_ref().is_http2(), h2);
        sockets.push(ws);
    }
    let cpu0 = process_cpu_us();
    let start = Instant::now();
    let tasks: Vec<_> = sockets
        .into_iter()
        .map(|mut ws| {
            let count = count.clone();
            tokio::spawn(async move {
                let message = Message::binary(vec![7u8; SIZE]);
                for _ in 0..IN_FLIGHT {
                    ws.feed(message.clone()).await.unwrap();
                }
                ws.flush().await.unwrap();
                while Instant::now() < deadline {
                    ws.next().await.unwrap().unwrap();
                    count.fetch_add(1, Ordering::Relaxed);
                    ws.feed(message.clone()).await.unwrap();
                }
                let _ = ws.close(duplex::CloseCode::NORMAL, "").await;
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = (process_cpu_us() - cpu0) as f64;
    let echoes = count.load(Ordering::Relaxed) as f64;
    (echoes / elapsed, cpu / echoes)
}

/// Resident bytes per WebSocket (both ends) with IDLE open at once.
async fn memory(addr: std::net::SocketAddr, h2: bool) -> f64 {
    let config = Config::client();
    let pool = Pool::new();
    let request = request(addr, h2.then_some(&pool));
    // Warm up allocator arenas and the connection.
    let warm = duplex::connect_with(&request, &config).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = rss_bytes();
    let mut sockets = Vec::with_capacity(IDLE);
    for _ in 0..IDLE {
        sockets.push(duplex::connect_with(&request, &config).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_bytes();
    drop(sockets);
    drop(warm);
    (after.saturating_sub(before)) as f64 / IDLE as f64
}

fn best_and_median(mut values: Vec<f64>, higher_is_better: bool) -> (f64, f64) {
    values.sort_by(|a, b| a.partial_cmp(b).unwrap());
    if higher_is_better {
        values.reverse();
    }
    (values[0], values[values.len() / 2])
}

fn main() {
    let mut args = std::env::args().skip(1);
    let rounds: usize = args.next().map_or(3, |a| a.parse().unwrap());
    let secs: f64 = args.next().map_or(3.0, |a| a.parse().unwrap());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let addr = serve(Config::default().without_compression()).await;
        let mut results = [(Vec::new(), Vec::new()), (Vec::new(), Vec::new())];
        for _ in 0..rounds {
            for (i, h2) in [false, true].into_iter().enumerate() {
                let (rate, cpu) = round(addr, h2, secs).await;
                results[i].0.push(rate);
                results[i].1.push(cpu);
            }
        }
        // Memory last, each version in a fresh state of the allocator as far
        // as possible: HTTP/2 first (its 1,000 streams on one connection).
        let h2_mem = memory(addr, true).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let h1_mem = memory(addr, false).await;
        println!(
            "{rounds} rounds of {secs} s per version, {SOCKETS} WebSockets x {IN_FLIGHT} echoes of {SIZE} B in flight, one thread\n"
        );
        println!("| version | echoes/s best (median) | CPU µs/echo best (median) | RSS per idle WebSocket, both ends |");
        println!("|---|---|---|---|");
        for (i, name) in ["HTTP/1.1 (64 TCP)", "HTTP/2 (1 TCP, 64 streams)"].iter().enumerate() {
            let (rate, rate_median) = best_and_median(results[i].0.clone(), true);
            let (cpu, cpu_median) = best_and_median(results[i].1.clone(), false);
            let mem = if i == 0 { h1_mem } else { h2_mem };
            println!(
                "| {name} | {rate:.0} ({rate_median:.0}) | {cpu:.2} ({cpu_median:.2}) | {:.1} KiB |",
                mem / 1024.0
            );
        }
    });
}
