//! The TypeScript SDK, `clients/js` (npm package `duplex-client`), under
//! cargo: installs its pinned dev dependencies with `npm ci` when
//! `node_modules` is missing or older than `package-lock.json` (a stamp file
//! records the lock it was installed from), then runs `npm test` (build, the
//! shared vectors, unit tests, end to end against this crate's `duplex`
//! binary through `DUPLEX_BIN`, the package checks).
//!
//! It asserts the exit status and that the number of tests Node ran is what
//! the files say: one per shared vector case (every case of
//! `crates/hub-proto/tests/vectors/*.json`) plus one per top-level `test(`
//! line of `clients/js/test/*.test.mjs`, all passed, none skipped. Node and
//! npm missing is a failure, not a skip. The run is bounded in time; on
//! timeout its whole process group is killed.

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long `npm ci` plus `npm test` may take (they take about a minute).
const LIMIT: Duration = Duration::from_secs(600);

fn sdk() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../clients/js")
}

/// Every case of the shared vectors, counted from the files.
fn vector_cases() -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../hub-proto/tests/vectors");
    let mut cases = 0;
    for entry in fs::read_dir(&dir).expect("the vectors folder is readable") {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let file: serde_json::Value = serde_json::from_str(&fs::read_to_string(&path).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        cases += file["cases"]
            .as_array()
            .expect("a vector file has cases")
            .len();
    }
    cases
}

/// Top-level `test(` calls in the SDK's test files.
fn top_level_tests() -> usize {
    let mut n = 0;
    for entry in fs::read_dir(sdk().join("test")).expect("clients/js/test is readable") {
        let path = entry.unwrap().path();
        if !path.to_string_lossy().ends_with(".test.mjs") {
            continue;
        }
        n += fs::read_to_string(&path)
            .unwrap()
            .lines()
            .filter(|line| line.starts_with("test("))
            .count();
    }
    n
}

/// Runs `command` in its own process group, bounded by what is left of `deadline`.
fn run(command: &mut Command, deadline: Instant, what: &str) -> (bool, String) {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {what}: {e}. Node.js 20 or later and npm must be on PATH \
                 (Debian: apt-get install npm; `cargo xtask setup node-ws` installs it)"
            )
        });
    let pid = child.id() as i32;
    let out = child.stdout.take().unwrap();
    let err = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || std::io::read_to_string(out).unwrap_or_default());
    let err_reader = std::thread::spawn(move || std::io::read_to_string(err).unwrap_or_default());
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for npm") {
            break status;
        }
        if Instant::now() > deadline {
            killpg(pid);
            let _ = child.wait();
            panic!("{what} ran longer than {LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let output = format!("{}\n{}", reader.join().unwrap(), err_reader.join().unwrap());
    (status.success(), output)
}

/// Kills the process group `pgid` (the child and everything it started), with
/// `kill(1)`, so that the test needs no `unsafe`.
fn killpg(pgid: i32) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .status();
}

/// The number after `name` in the runner's summary (`# pass 3` or `ℹ pass 3`).
fn summary(output: &str, name: &str) -> Option<usize> {
    output.lines().rev().find_map(|line| {
        let rest = line
            .trim()
            .strip_prefix("# ")
            .or_else(|| line.trim().strip_prefix("ℹ "))?;
        rest.strip_prefix(name)?.trim().parse().ok()
    })
}

#[test]
fn the_js_sdk_passes_its_tests_against_this_binary() {
    let dir = sdk();
    let deadline = Instant::now() + LIMIT;
    let lock =
        fs::read_to_string(dir.join("package-lock.json")).expect("clients/js/package-lock.json");
    let stamp = dir.join("node_modules/.duplex-lock");
    if fs::read_to_string(&stamp).ok().as_deref() != Some(lock.as_str()) {
        let (ok, output) = run(
            Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund"])
                .current_dir(&dir),
            deadline,
            "`npm ci` in clients/js",
        );
        assert!(ok, "npm ci failed:\n{output}");
        fs::write(&stamp, &lock).expect("writing node_modules/.duplex-lock");
    }
    let (ok, output) = run(
        Command::new("npm")
            .arg("test")
            .env("DUPLEX_BIN", env!("CARGO_BIN_EXE_duplex"))
            .current_dir(&dir),
        deadline,
        "`npm test` in clients/js",
    );
    assert!(ok, "npm test failed:\n{output}");
    let expected = vector_cases() + top_level_tests();
    let count = |name| {
        summary(&output, name).unwrap_or_else(|| panic!("no `{name}` in the summary:\n{output}"))
    };
    assert_eq!(
        count("tests"),
        expected,
        "tests run ≠ what the files say:\n{output}"
    );
    assert_eq!(count("pass"), expected, "{output}");
    for name in ["fail", "skipped", "todo", "cancelled"] {
        assert_eq!(count(name), 0, "{name}:\n{output}");
    }
    assert!(expected >= 120, "the SDK's tests shrank to {expected}");
}
