//! `duplex bench echo` and `duplex bench connect` as processes against an
//! echo server in the test: bounded by count as well as by duration, they
//! stop by themselves with exactly the count asked for, and `--json` carries
//! the figures.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio::process::Command;
use tokio::time::timeout;

/// A WebSocket echo server on 127.0.0.1.
async fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = duplex::accept(tcp).await else {
                    return;
                };
                // `feed` without a flush: the next read writes the replies.
                while let Some(Ok(message)) = ws.next().await {
                    if ws.feed(message).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

/// Runs `duplex bench ARGS --json` and returns its JSON result and how long
/// it took.
async fn bench(args: &[&str]) -> (serde_json::Value, Duration) {
    let started = Instant::now();
    let output = timeout(
        Duration::from_secs(30),
        Command::new(env!("CARGO_BIN_EXE_duplex"))
            .arg("bench")
            .args(args)
            .arg("--json")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the bench stops by itself")
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let value = serde_json::from_slice(&output.stdout).expect("one JSON object");
    (value, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_echo_stops_at_the_message_count() {
    let addr = echo_server().await;
    let url = format!("ws://{addr}/");
    let (result, took) = bench(&[
        "echo",
        "--url",
        &url,
        "--connections",
        "4",
        "--in-flight",
        "8",
        "--duration",
        "20",
        "--messages",
        "2000",
        "--source-ips",
        "127.0.0.1,127.0.0.2",
    ])
    .await;
    assert_eq!(result["messages"], 2000, "{result}");
    assert_eq!(result["latency"]["count"], 2000);
    assert_eq!(result["messages_limit"], 2000);
    let measured = result["measured_s"].as_f64().unwrap();
    assert!(measured < 20.0, "{result}");
    assert!(took < Duration::from_secs(15), "took {took:?}");
    let rate = result["messages_per_s"].as_f64().unwrap();
    assert!((rate - 2000.0 / measured).abs() < 1.0, "{result}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_connect_stops_at_the_connection_count() {
    let addr = echo_server().await;
    let url = format!("ws://{addr}/");
    let (result, took) = bench(&[
        "connect",
        "--url",
        &url,
        "--concurrency",
        "4",
        "--duration",
        "20",
        "--count",
        "60",
    ])
    .await;
    assert_eq!(result["connections"], 60, "{result}");
    assert_eq!(result["failures"], 0);
    assert!(result["measured_s"].as_f64().unwrap() < 20.0);
    assert!(took < Duration::from_secs(15), "took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_echo_without_a_count_runs_its_duration() {
    let addr = echo_server().await;
    let url = format!("ws://{addr}/");
    let (result, _) = bench(&[
        "echo",
        "--url",
        &url,
        "--connections",
        "2",
        "--duration",
        "0.5",
    ])
    .await;
    assert_eq!(result["measured_s"].as_f64().unwrap(), 0.5, "{result}");
    assert!(result["messages"].as_u64().unwrap() > 0);
    assert!(result["messages_limit"].is_null());
}

/// A `duplex serve` on 127.0.0.1 with these extra arguments; killed on drop.
struct Hub {
    child: std::process::Child,
    addr: String,
}

impl Drop for Hub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_hub(extra: &[&str]) -> Hub {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_duplex"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(extra)
        .env("RUST_LOG", "info")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start duplex serve");
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = loop {
        let line = lines.next().expect("duplex serve exited early").unwrap();
        if let Some(rest) = line.split("hub listening address=").nth(1) {
            break rest.split_whitespace().next().unwrap().to_owned();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    Hub { child, addr }
}

/// Runs `duplex bench ARGS --json` to its end: its exit status, JSON result
/// and standard error.
async fn bench_output(args: &[&str]) -> (i32, serde_json::Value, String) {
    let output = timeout(
        Duration::from_secs(40),
        Command::new(env!("CARGO_BIN_EXE_duplex"))
            .arg("bench")
            .args(args)
            .arg("--json")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the bench stops by itself")
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|_| panic!("one JSON object; stderr: {stderr}"));
    (output.status.code().unwrap(), value, stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_idle_reports_the_hubs_close_instead_of_a_hold() {
    let dir = std::env::temp_dir().join(format!("duplex-bench-idle-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("hub.toml");
    std::fs::write(&file, "[limits]\nconnect_timeout = 1\n").unwrap();
    let hub = start_hub(&["--config", file.to_str().unwrap()]);
    let url = format!("ws://{}/ws", hub.addr);
    let (status, value, stderr) =
        bench_output(&["idle", "--url", &url, "--connections", "3", "--hold", "3"]).await;
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(status, 1, "{stderr}");
    assert_eq!(value["held"], 0, "{value}");
    assert_eq!(value["closed_by_server"], 3, "{value}");
    assert_eq!(value["closes"][0]["code"], 4001, "{value}");
    assert_eq!(
        value["closes"][0]["reason"], "no connect in time",
        "{value}"
    );
    assert!(stderr.contains("connect_timeout"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_fanout_says_what_to_change_when_rate_limited() {
    let hub = start_hub(&[]);
    let url = format!("ws://{}/ws", hub.addr);
    let (status, value, stderr) = bench_output(&[
        "fanout",
        "--url",
        &url,
        "--subscribers",
        "3",
        "--duration",
        "5",
    ])
    .await;
    assert_eq!(status, 1, "{stderr}");
    assert!(
        stderr.contains("rate_limited") && stderr.contains("duplex serve --rate"),
        "{stderr}"
    );
    assert!(stderr.contains("--publish-rate"), "{stderr}");
    // No rate over a window the refusal cut short.
    assert!(value["publishes_per_s"].is_null(), "{value}");
    assert!(value["deliveries_per_s"].is_null(), "{value}");

    // Paced under the hub's limit (the old flag name still works), it runs.
    let (status, value, stderr) = bench_output(&[
        "fanout",
        "--url",
        &url,
        "--subscribers",
        "3",
        "--duration",
        "1",
        "--rate",
        "20",
    ])
    .await;
    assert_eq!(status, 0, "{stderr}");
    assert!(value["publishes_per_s"].as_f64().unwrap() > 0.0, "{value}");
}

/// A whole fan-out run against a hub reports what it measured: the load, the
/// counts (every completed message at every subscriber, nothing lost), the
/// latency, and, with `--server-pid`, the server's CPU and memory readings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_fanout_reports_what_it_measured() {
    let hub = start_hub(&[]);
    let url = format!("ws://{}/ws", hub.addr);
    let pid = hub.child.id().to_string();
    let (status, value, stderr) = bench_output(&[
        "fanout",
        "--url",
        &url,
        "--server-pid",
        &pid,
        "--subscribers",
        "4",
        "--duration",
        "1",
        "--publish-rate",
        "20",
        "--settle",
        "0.2",
        "--quiet",
        "0.2",
    ])
    .await;
    assert_eq!(status, 0, "{stderr}");
    assert_eq!(value["bench"], "fanout", "{value}");
    assert_eq!(value["protocol"], "hub", "{value}");
    assert_eq!(value["window"], "paced", "{value}");
    assert_eq!(value["subscribers"], 4, "{value}");
    let completed = value["completed"].as_u64().unwrap();
    assert!(completed > 0, "{value}");
    assert!(
        value["deliveries"].as_u64().unwrap() >= 4 * completed,
        "{value}"
    );
    for key in ["lost", "reordered", "duplicates", "failed_subscribers"] {
        assert_eq!(value[key], 0, "{key}: {value}");
    }
    // A 100-byte payload in the hub's JSON envelope.
    assert!(
        value["delivered_bytes_avg"].as_f64().unwrap() > 100.0,
        "{value}"
    );
    assert!(
        value["latency_last"]["p50_us"].as_f64().unwrap() > 0.0,
        "{value}"
    );
    assert!(value["server_cpu_s"].as_f64().is_some(), "{value}");
    for key in [
        "server_bytes_per_subscriber",
        "server_bytes_per_subscriber_warm",
        "server_bytes_per_quiet_subscriber",
    ] {
        assert!(value[key].is_number(), "{key}: {value}");
    }
    assert!(value["server_rss_end"].as_u64().unwrap() > 0, "{value}");
    assert_eq!(value["quiet_s"], 0.2, "{value}");
    assert!(value["first_error"].is_null(), "{value}");
}
