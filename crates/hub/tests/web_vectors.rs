//! The browser client (`web/hub.js`) against the shared test vectors of
//! `crates/hub-proto/tests/vectors/`: runs their Node runner, `run.mjs`,
//! and checks that it passed and that it ran every case a client can run
//! (all but the codec cases of role `hub`), as counted here from the files.
//! The Rust client runs the same files in `crates/hub-proto/tests/vectors.rs`.
//!
//! Node.js (20 or later) missing is a failure, not a skip; the run is bounded
//! in time.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long the runner may take (it takes well under a second).
const LIMIT: Duration = Duration::from_secs(60);

fn vectors() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../hub-proto/tests/vectors")
}

/// (every case, the cases a client runs), counted from the files.
fn count_cases() -> (u64, u64) {
    let (mut all, mut client) = (0, 0);
    for entry in std::fs::read_dir(vectors()).expect("the vectors folder is readable") {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let file: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for case in file["cases"].as_array().expect("a vector file has cases") {
            all += 1;
            if case["role"] != "hub" {
                client += 1;
            }
        }
    }
    (all, client)
}

#[test]
fn hub_js_holds_to_every_shared_vector() {
    let runner = vectors().join("run.mjs");
    let mut child = Command::new("node")
        .arg(&runner)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run `node {}`: {e}. Node.js 20 or later must be on PATH to hold \
                 web/hub.js to the shared vectors (Debian: apt-get install nodejs)",
                runner.display()
            )
        });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for node") {
            break status;
        }
        if start.elapsed() > LIMIT {
            child.kill().expect("stopping node");
            child.wait().expect("reaping node");
            panic!("run.mjs ran longer than {LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let output = child.wait_with_output().expect("node's output");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        status.success(),
        "run.mjs failed ({status}):\n{stdout}\n{stderr}"
    );
    let summary: Value = stdout
        .lines()
        .last()
        .and_then(|line| serde_json::from_str(line).ok())
        .unwrap_or_else(|| panic!("run.mjs printed no summary:\n{stdout}\n{stderr}"));
    let (all, client) = count_cases();
    assert_eq!(summary["failed"], 0, "{summary}\n{stdout}");
    assert_eq!(
        summary["cases"], all,
        "run.mjs saw another set of cases: {summary}"
    );
    assert_eq!(
        summary["ran"], client,
        "run.mjs did not run every client case: {summary}"
    );
    assert_eq!(summary["hub_only"], all - client, "{summary}");
    assert!(client >= 80, "the vectors shrank: {summary}");
}
