//! `duplex bench scale` as processes against a real `duplex serve`: a shard
//! of clients and two publishers; the shard's report counts every delivery
//! per channel and phase, the room holds exactly the clients below
//! `--room-size`, every client ends at the channel's last offset, and
//! nothing is reported lost.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::start_serve;

fn duplex() -> Command {
    Command::new(env!("CARGO_BIN_EXE_duplex"))
}

/// Runs a publisher to the end and returns its JSON report.
fn publish(url: &str, channel: &str, phase: &str) -> serde_json::Value {
    let output = duplex()
        .args(["bench", "scale", "--url", url, "--publish", channel])
        .args(["--phase", phase, "--rate", "20", "--duration", "0.5"])
        .output()
        .expect("run the publisher");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("one JSON object")
}

#[test]
fn a_shard_counts_every_delivery_per_channel_and_phase() {
    let dir = std::env::temp_dir().join(format!("duplex-scale-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("hub.toml");
    std::fs::write(
        &config,
        "[limits]\nmax_connections_per_ip = 1000\n\n[namespaces.scale]\njoin_leave = false\nhistory_size = 100\n",
    )
    .unwrap();
    let hub = start_serve(&["--config", config.to_str().unwrap()]);
    let url = format!("ws://{}/ws", hub.addr);

    let mut shard = duplex()
        .args(["bench", "scale", "--url", &url, "--clients", "30"])
        .args(["--first", "100", "--room-size", "110", "--duration", "6"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the shard");
    let mut log = BufReader::new(shard.stderr.take().unwrap()).lines();
    let line = log
        .next()
        .expect("the shard reports")
        .expect("a line of text");
    assert!(
        line.contains("70/70 subscriptions"),
        "30 clients × (own + all) + 10 in the room: {line}"
    );

    let started = Instant::now();
    let all = publish(&url, "scale:all", "fanout");
    let room = publish(&url, "scale:room", "room");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "publishers ran within the shard's window"
    );
    let (all_acked, room_acked) = (
        all["acked"].as_u64().unwrap(),
        room["acked"].as_u64().unwrap(),
    );
    assert!(all_acked >= 5 && room_acked >= 5, "{all} {room}");
    assert_eq!(all["failed"], 0);

    let output = shard.wait_with_output().unwrap();
    assert!(output.status.success());
    let report: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("one JSON object");
    assert_eq!(report["clients"], 30);
    assert_eq!(report["room_clients"], 10);
    assert_eq!(
        report["phases"]["scale:all/fanout"]["received"],
        30 * all_acked
    );
    assert_eq!(
        report["phases"]["scale:room/room"]["received"],
        10 * room_acked
    );
    assert!(report["phases"].get("scale:all/room").is_none());
    assert_eq!(report["silent_lost"], 0);
    assert_eq!(report["gaps"], 0);
    for (channel, publisher, clients) in [("scale:all", &all, 30), ("scale:room", &room, 10)] {
        let end = &report["ends"][channel];
        assert_eq!(end["highest"], publisher["last_offset"], "{channel}");
        assert_eq!(
            end["clients_at_offset"],
            serde_json::json!([[publisher["last_offset"], clients]]),
            "{channel}: every client at the last offset"
        );
    }
    drop(hub);
    let _ = std::fs::remove_dir_all(&dir);
}
