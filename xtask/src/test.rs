//! `cargo xtask test`: every check, in order, failing fast, then one summary line.
//!
//! The checks are [`STEPS`]; adding one (interop, Autobahn, …) is one entry there
//! and one function.

use std::time::Duration;

use crate::cmd::{self, Result};
use crate::{fuzz, parse_seconds};

/// What the steps may need to know.
pub(crate) struct Ctx {
    /// Total time of the fuzz smoke run, split across the targets.
    pub(crate) fuzz_seconds: u64,
}

/// One check of `cargo xtask test`.
pub(crate) struct Step {
    /// The name shown in the log and the summary, and accepted on the command line.
    pub(crate) name: &'static str,
    /// What it checks, for the log.
    pub(crate) about: &'static str,
    /// Runs the check; an error says what failed.
    pub(crate) run: fn(&Ctx) -> Result,
}

/// The checks, in the order they run.
pub(crate) const STEPS: &[Step] = &[
    Step {
        name: "fmt",
        about: "formatting (rustfmt)",
        run: fmt,
    },
    Step {
        name: "clippy",
        about: "lints, warnings denied",
        run: clippy,
    },
    Step {
        name: "peers",
        about: "test peers installed (Python websockets, Node ws, Chromium, Autobahn)",
        run: peers,
    },
    Step {
        name: "tests",
        about: "unit and integration tests (cargo nextest)",
        run: tests,
    },
    Step {
        name: "doctests",
        about: "documentation examples",
        run: doctests,
    },
    Step {
        name: "fuzz",
        about: "fuzz smoke run of every target",
        run: fuzz_smoke,
    },
    Step {
        name: "autobahn",
        about: "Autobahn|Testsuite, server and client roles, strict",
        run: autobahn,
    },
];

pub(crate) fn main(args: &[String]) -> Result {
    let mut ctx = Ctx {
        fuzz_seconds: fuzz::SMOKE_SECONDS,
    };
    let mut only = Vec::new();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--fuzz-seconds" => ctx.fuzz_seconds = parse_seconds(arg, args.next())?,
            name if STEPS.iter().any(|s| s.name == name) => only.push(name),
            other => {
                let names: Vec<_> = STEPS.iter().map(|s| s.name).collect();
                return Err(format!(
                    "`{other}` is not a step of `cargo xtask test` (steps: {})",
                    names.join(", ")
                ));
            }
        }
    }
    let steps: Vec<&Step> = STEPS
        .iter()
        .filter(|s| only.is_empty() || only.contains(&s.name))
        .collect();

    let mut done: Vec<(&str, Duration)> = Vec::new();
    let mut total = Duration::ZERO;
    for (i, step) in steps.iter().enumerate() {
        eprintln!(
            "\n==> [{}/{}] {}: {}",
            i + 1,
            steps.len(),
            step.name,
            step.about
        );
        let (result, took) = cmd::timed(|| (step.run)(&ctx));
        total += took;
        if let Err(message) = result {
            eprintln!("\nxtask test: step `{}` failed: {message}", step.name);
            println!(
                "xtask test: FAILED at {} after {} ({})",
                step.name,
                cmd::secs(total),
                timings(&done, Some((step.name, took)))
            );
            return Err(format!("`cargo xtask test` failed at step `{}`", step.name));
        }
        done.push((step.name, took));
    }
    println!(
        "xtask test: OK, {} steps in {} ({})",
        done.len(),
        cmd::secs(total),
        timings(&done, None)
    );
    Ok(())
}

fn timings(done: &[(&str, Duration)], failed: Option<(&str, Duration)>) -> String {
    let mut parts: Vec<String> = done
        .iter()
        .map(|(name, took)| format!("{name} {}", cmd::secs(*took)))
        .collect();
    if let Some((name, took)) = failed {
        parts.push(format!("{name} FAILED {}", cmd::secs(took)));
    }
    parts.join(", ")
}

fn fmt(_: &Ctx) -> Result {
    // The fuzz crate is its own workspace, so `--all` does not reach it.
    cmd::run(&mut cmd::cargo(["fmt", "--all", "--", "--check"]))
        .and_then(|()| {
            cmd::run(&mut cmd::cargo([
                "fmt",
                "--manifest-path",
                "fuzz/Cargo.toml",
                "--",
                "--check",
            ]))
        })
        .map_err(|e| {
            format!("{e}\n  to fix: cargo fmt --all && cargo fmt --manifest-path fuzz/Cargo.toml")
        })
}

fn clippy(_: &Ctx) -> Result {
    cmd::run(&mut cmd::cargo([
        "clippy",
        "--workspace",
        "--all-targets",
        "--all-features",
        "--",
        "-D",
        "warnings",
    ]))
}

fn tests(_: &Ctx) -> Result {
    if !cmd::succeeds(&mut cmd::cargo(["nextest", "--version"])) {
        eprintln!("cargo-nextest is missing; installing it");
        cmd::run(&mut cmd::cargo(["install", "--locked", "cargo-nextest"]))
            .map_err(|e| format!("could not install cargo-nextest: {e}"))?;
    }
    cmd::run(&mut cmd::cargo([
        "nextest",
        "run",
        "--workspace",
        "--all-features",
    ]))
}

fn doctests(_: &Ctx) -> Result {
    cmd::run(&mut cmd::cargo([
        "test",
        "--workspace",
        "--all-features",
        "--doc",
    ]))
}

/// The peers the interop tests, the hub cluster tests and Autobahn talk to,
/// installed when missing.
fn peers(_: &Ctx) -> Result {
    for name in [
        "python-websockets",
        "node-ws",
        "chromium",
        "firefox-esr",
        "autobahn",
        "redis",
        "haproxy",
        "nginx",
    ] {
        crate::peers::ensure(name).map_err(|e| format!("{name}: {e}"))?;
    }
    Ok(())
}

fn autobahn(_: &Ctx) -> Result {
    crate::autobahn::run()
}

fn fuzz_smoke(ctx: &Ctx) -> Result {
    fuzz::smoke(ctx.fuzz_seconds)
}
