//! The browser build of the TypeScript SDK the web pages import,
//! `web/duplex-client.js` (served at `/assets/duplex-client.js`), is what
//! `clients/js` builds today: this test runs the build (`npm run -s web`, the
//! pinned esbuild, whose output is deterministic) and compares the bytes.
//! Regenerate the file with `cd clients/js && npm run build:web`.
//!
//! `clients/js/node_modules` is installed with `npm ci` when it is missing or
//! older than `package-lock.json` (the stamp `node_modules/.duplex-lock`,
//! shared with `crates/cli/tests/js_sdk.rs` and `cargo xtask setup node-ws`).
//! Node and npm missing is a failure, not a skip. Each command is bounded in
//! time; on timeout its process group is killed.

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// How long `npm ci` plus the build may take.
const LIMIT: Duration = Duration::from_secs(300);

fn sdk() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../clients/js")
}

/// Runs `command` in its own process group until `deadline`, then kills the group.
fn run(command: &mut Command, deadline: Instant, what: &str) -> Output {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {what}: {e}. Node.js 20 or later and npm must be on PATH \
                 (`cargo xtask setup node-ws` installs them)"
            )
        });
    let pid = child.id();
    let out = child.stdout.take().expect("piped");
    let err = child.stderr.take().expect("piped");
    let out = std::thread::spawn(move || {
        let mut out = out;
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut out, &mut bytes).map(|_| bytes)
    });
    let err = std::thread::spawn(move || std::io::read_to_string(err).unwrap_or_default());
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for npm") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .status();
            let _ = child.wait();
            panic!("{what} ran longer than {LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Output {
        status,
        stdout: out.join().expect("reader").expect("read stdout"),
        stderr: err.join().expect("reader").into_bytes(),
    }
}

#[test]
fn the_checked_in_sdk_build_is_current() {
    let dir = sdk();
    let deadline = Instant::now() + LIMIT;
    let lock =
        fs::read_to_string(dir.join("package-lock.json")).expect("clients/js/package-lock.json");
    let stamp = dir.join("node_modules/.duplex-lock");
    if fs::read_to_string(&stamp).ok().as_deref() != Some(lock.as_str()) {
        let output = run(
            Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund"])
                .current_dir(&dir),
            deadline,
            "`npm ci` in clients/js",
        );
        assert!(
            output.status.success(),
            "npm ci failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        fs::write(&stamp, &lock).expect("writing node_modules/.duplex-lock");
    }
    let built = run(
        Command::new("npm")
            .args(["run", "-s", "web"])
            .current_dir(&dir),
        deadline,
        "`npm run -s web` in clients/js",
    );
    assert!(
        built.status.success(),
        "the build failed:\n{}",
        String::from_utf8_lossy(&built.stderr)
    );
    assert!(
        built.stdout.len() > 5000,
        "the build printed only {} bytes",
        built.stdout.len()
    );
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("web/duplex-client.js");
    let checked_in = fs::read(&file).expect("crates/hub/web/duplex-client.js");
    assert!(
        checked_in == built.stdout,
        "crates/hub/web/duplex-client.js is not the current build of clients/js \
         ({} bytes checked in, {} built): regenerate it with \
         `cd clients/js && npm run build:web` and commit it",
        checked_in.len(),
        built.stdout.len()
    );
}
