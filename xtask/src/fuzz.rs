//! Fuzzing on stable Rust.
//!
//! `cargo fuzz` builds with `-Zsanitizer=address`, which needs nightly. The
//! instrumentation libFuzzer needs for coverage feedback is not a sanitizer,
//! though: it is LLVM's SanitizerCoverage pass, and stable rustc runs it when
//! asked with `-Cpasses=sancov-module` and `-Cllvm-args=-sanitizer-coverage-*`.
//! `libfuzzer-sys` compiles libFuzzer itself from C++ (its build script, with
//! the system C++ compiler) and supplies `main`. So this module builds the
//! `fuzz/` crate (its own workspace) with plain `cargo build` and the flags in
//! [`RUSTFLAGS`], into `fuzz/target`, for the host triple given explicitly so
//! the flags reach the target code but not build scripts or proc macros, and
//! runs each target binary directly: libFuzzer's own command line
//! (`-max_total_time`, corpus directories, `-artifact_prefix`).
//!
//! What is lost without nightly is AddressSanitizer, which this code base (with
//! `#![forbid(unsafe_code)]` in the protocol crates) has little use for: panics,
//! failed assertions, overflow (`-Coverflow-checks`), timeouts and running out
//! of memory are all caught.
//!
//! Layout per target `T` (a `[[bin]]` of `fuzz/Cargo.toml`, discovered there):
//! seeds in `fuzz/corpus/T/` (checked in, read only), the growing working corpus
//! in `fuzz/target/corpus/T/`, crashes in `fuzz/artifacts/T/`, the log of the
//! last smoke run in `fuzz/target/logs/T.log`.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::cmd::{self, Result};
use crate::parse_seconds;

/// Total time of the fuzz smoke run in `cargo xtask test`, split across targets.
pub(crate) const SMOKE_SECONDS: u64 = 60;

/// Each target gets at least this long in a smoke run, however many there are.
const MIN_SMOKE_SECONDS_PER_TARGET: u64 = 5;

/// Time per target of `cargo xtask fuzz` when `--seconds` is not given.
const DEFAULT_SECONDS: u64 = 300;

/// One input running longer than this is a failure (a hang), in seconds.
const INPUT_TIMEOUT_SECONDS: u64 = 10;

/// The instrumentation (SanitizerCoverage, as cargo-fuzz asks for it, minus the
/// sanitizer) and the checks that make bugs visible as panics.
const RUSTFLAGS: &[&str] = &[
    "-Cpasses=sancov-module",
    "-Cllvm-args=-sanitizer-coverage-level=4",
    "-Cllvm-args=-sanitizer-coverage-inline-8bit-counters",
    "-Cllvm-args=-sanitizer-coverage-pc-table",
    "-Cllvm-args=-sanitizer-coverage-trace-compares",
    // Keeps branches apart so that each is a coverage point (cargo-fuzz does too).
    "-Cllvm-args=-simplifycfg-branch-fold-threshold=0",
    "--cfg",
    "fuzzing",
    "-Cdebug-assertions",
    "-Coverflow-checks",
];

/// `cargo xtask fuzz [TARGET] [--seconds N] [--list] [-- LIBFUZZER_ARGS...]`.
pub(crate) fn main(args: &[String]) -> Result {
    let mut target = None;
    let mut seconds = DEFAULT_SECONDS;
    let mut list = false;
    let mut libfuzzer_args: &[String] = &[];
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--seconds" => {
                seconds = parse_seconds("--seconds", args.get(i + 1))?;
                i += 1;
            }
            "--list" => list = true,
            "--" => {
                libfuzzer_args = &args[i + 1..];
                break;
            }
            flag if flag.starts_with('-') => {
                return Err(format!("unknown option `{flag}` of `cargo xtask fuzz`"));
            }
            name if target.is_none() => target = Some(name.to_owned()),
            extra => return Err(format!("one target at a time (got `{extra}` too)")),
        }
        i += 1;
    }

    let targets = targets()?;
    if list {
        for t in &targets {
            println!("{t}");
        }
        return Ok(());
    }
    let selected = match target {
        Some(t) if targets.contains(&t) => vec![t],
        Some(t) => {
            return Err(format!(
                "no fuzz target `{t}` in fuzz/Cargo.toml (targets: {})",
                targets.join(", ")
            ));
        }
        None => targets,
    };
    let bins = build()?;
    for t in &selected {
        replay_artifacts(&bins, t)?;
        eprintln!("\n==> fuzzing {t} for {seconds} s");
        let run = run_target(&bins, t, seconds, Output::Terminal, libfuzzer_args);
        check(&bins, t, &run)?;
        eprintln!("{t}: no crash in {seconds} s");
    }
    Ok(())
}

/// The smoke run of `cargo xtask test`: every target, `total_seconds` in all.
pub(crate) fn smoke(total_seconds: u64) -> Result {
    let targets = targets()?;
    for t in &targets {
        let seeds = cmd::root().join("fuzz/corpus").join(t);
        if list_files(&seeds).is_empty() {
            return Err(format!(
                "fuzz target `{t}` has no seed corpus: add a few small valid inputs under fuzz/corpus/{t}/"
            ));
        }
    }
    let seconds = (total_seconds / targets.len().max(1) as u64).max(MIN_SMOKE_SECONDS_PER_TARGET);
    let bins = build()?;
    eprintln!(
        "fuzzing {} targets for {seconds} s each: {}",
        targets.len(),
        targets.join(", ")
    );
    let mut failures = Vec::new();
    for t in &targets {
        let result = replay_artifacts(&bins, t).and_then(|()| {
            let run = run_target(&bins, t, seconds, Output::Log, &[]);
            check(&bins, t, &run)?;
            Ok(run)
        });
        match result {
            Ok(run) => eprintln!("  {t}: ok, {}", run.stats()),
            Err(message) => {
                eprintln!("  {t}: FAILED\n{message}");
                failures.push(t.as_str());
            }
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(format!("fuzz target(s) failed: {}", failures.join(", ")))
    }
}

/// The fuzz targets: the `[[bin]]` names of `fuzz/Cargo.toml`.
pub(crate) fn targets() -> Result<Vec<String>> {
    let path = cmd::root().join("fuzz/Cargo.toml");
    let manifest =
        fs::read_to_string(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let names = bin_names(&manifest);
    if names.is_empty() {
        return Err("fuzz/Cargo.toml declares no [[bin]] fuzz targets".into());
    }
    Ok(names)
}

/// The `name`s of the `[[bin]]` tables of a Cargo manifest.
fn bin_names(manifest: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut in_bin = false;
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_bin = line
                .split('#')
                .next()
                .is_some_and(|h| h.trim() == "[[bin]]");
        } else if in_bin
            && let Some((key, value)) = line.split_once('=')
            && key.trim() == "name"
        {
            let value = value.split('#').next().unwrap_or_default();
            names.push(value.trim().trim_matches(['"', '\'']).to_owned());
        }
    }
    names
}

/// Builds every target with coverage instrumentation; returns the directory of the binaries.
fn build() -> Result<PathBuf> {
    let root = cmd::root();
    let host = host_triple()?;
    let mut flags: Vec<String> = RUSTFLAGS.iter().map(|&f| f.to_owned()).collect();
    if let Ok(extra) = std::env::var("RUSTFLAGS") {
        flags.extend(extra.split_whitespace().map(str::to_owned));
    }
    let target_dir = root.join("fuzz/target");
    let mut build = cmd::cargo([
        "build",
        "--manifest-path",
        "fuzz/Cargo.toml",
        "--release",
        "--bins",
        "--target",
        &host,
    ]);
    build
        .env("CARGO_TARGET_DIR", &target_dir)
        .env("CARGO_ENCODED_RUSTFLAGS", flags.join("\x1f"))
        .env_remove("RUSTFLAGS");
    eprintln!("fuzz build flags: {}", flags.join(" "));
    cmd::run(&mut build).map_err(|e| format!("building the fuzz targets: {e}"))?;
    Ok(target_dir.join(host).join("release"))
}

fn host_triple() -> Result<String> {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let info = cmd::output(Command::new(rustc).arg("-vV"))
        .ok_or("`rustc -vV` failed; cannot tell the host target")?;
    info.lines()
        .find_map(|l| l.strip_prefix("host: "))
        .map(str::to_owned)
        .ok_or_else(|| "`rustc -vV` printed no `host:` line".into())
}

#[derive(Clone, Copy, PartialEq)]
enum Output {
    /// libFuzzer writes to the terminal (long runs).
    Terminal,
    /// libFuzzer writes to `fuzz/target/logs/T.log` (smoke runs); a summary is printed.
    Log,
}

struct Run {
    status: std::result::Result<std::process::ExitStatus, String>,
    new_artifacts: Vec<PathBuf>,
    log: Option<PathBuf>,
}

impl Run {
    fn log_text(&self) -> String {
        self.log
            .as_ref()
            .and_then(|p| fs::read(p).ok())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// "N runs, cov C, ft F, corpus K" from libFuzzer's final report.
    fn stats(&self) -> String {
        let log = self.log_text();
        let runs = log
            .lines()
            .find_map(|l| l.strip_prefix("stat::number_of_executed_units:"))
            .map_or("? runs".to_owned(), |n| format!("{} runs", n.trim()));
        let last = log
            .lines()
            .rev()
            .find(|l| l.contains(" cov: "))
            .unwrap_or("");
        let field = |name: &str| {
            let mut words = last.split_whitespace();
            words.find(|w| *w == name);
            words.next().unwrap_or("?").to_owned()
        };
        let corpus = field("corp:");
        let corpus = corpus.split('/').next().unwrap_or("?");
        format!(
            "{runs}, cov {}, ft {}, corpus {corpus} inputs",
            field("cov:"),
            field("ft:")
        )
    }
}

fn run_target(bins: &Path, target: &str, seconds: u64, output: Output, extra: &[String]) -> Run {
    let root = cmd::root();
    let seeds = format!("fuzz/corpus/{target}");
    let work = format!("fuzz/target/corpus/{target}");
    let artifacts = format!("fuzz/artifacts/{target}");
    for dir in [&work, &artifacts] {
        let _ = fs::create_dir_all(root.join(dir));
    }
    let before = list_files(&root.join(&artifacts));

    let mut fuzz = cmd::program(
        bins.join(target),
        [
            format!("-max_total_time={seconds}"),
            format!("-timeout={INPUT_TIMEOUT_SECONDS}"),
            "-print_final_stats=1".to_owned(),
            format!("-artifact_prefix={artifacts}/"),
        ],
    );
    fuzz.args(extra).arg(&work); // new inputs are written to the first directory
    if root.join(&seeds).is_dir() {
        fuzz.arg(&seeds);
    }
    let mut log = None;
    if output == Output::Log {
        let path = root.join(format!("fuzz/target/logs/{target}.log"));
        let _ = fs::create_dir_all(path.parent().expect("has a parent"));
        match File::create(&path).and_then(|f| Ok((f.try_clone()?, f))) {
            Ok((out, err)) => {
                fuzz.stdout(out).stderr(err);
            }
            Err(e) => {
                return Run {
                    status: Err(format!("cannot create {}: {e}", path.display())),
                    new_artifacts: Vec::new(),
                    log: None,
                };
            }
        }
        log = Some(path);
    }
    fuzz.stdin(Stdio::null());
    eprintln!("$ {}", cmd::display(&fuzz));
    let status = fuzz
        .status()
        .map_err(|e| format!("could not start `{}`: {e}", cmd::display(&fuzz)));
    let new_artifacts = list_files(&root.join(&artifacts))
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    Run {
        status,
        new_artifacts,
        log,
    }
}

/// Turns a run that crashed, hung, ran out of memory or was not instrumented into an error.
fn check(bins: &Path, target: &str, run: &Run) -> Result {
    let log = run.log_text();
    let status = run.status.as_ref().map_err(Clone::clone)?;
    let mut problems = Vec::new();
    if !status.success() {
        problems.push(format!("libFuzzer exited with {status}"));
    }
    if !run.new_artifacts.is_empty() {
        problems.push("it found failing inputs".to_owned());
    }
    if run.log.is_some() && problems.is_empty() && !instrumented(&log) {
        problems.push(
            "the binary reports no coverage counters: the build is not instrumented, so \
             fuzzing is blind (were the RUSTFLAGS overridden?)"
                .to_owned(),
        );
    }
    if problems.is_empty() {
        return Ok(());
    }
    let mut message = format!("fuzz target `{target}`: {}", problems.join("; "));
    let binary = bins.join(target);
    let binary = binary.strip_prefix(cmd::root()).unwrap_or(&binary);
    for artifact in &run.new_artifacts {
        let artifact = artifact.strip_prefix(cmd::root()).unwrap_or(artifact);
        message.push_str(&format!(
            "\n  failing input: {}\n  reproduce:     {} {}",
            artifact.display(),
            binary.display(),
            artifact.display()
        ));
    }
    if let Some(path) = &run.log {
        message.push_str(&format!(
            "\n  end of {} (backtrace frames left out):\n{}",
            path.strip_prefix(cmd::root()).unwrap_or(path).display(),
            log_tail(&log, 25)
        ));
    }
    Err(message)
}

/// The last `n` lines of a libFuzzer log worth reading, indented: without
/// backtrace frames and statistics, so the panic message stays in view.
fn log_tail(log: &str, n: usize) -> String {
    let frame = |line: &str| {
        let line = line.trim_start();
        line.starts_with("at ")
            || line
                .split_once(':')
                .is_some_and(|(num, _)| !num.is_empty() && num.bytes().all(|b| b.is_ascii_digit()))
    };
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| !frame(l) && !l.starts_with("stat::") && !l.trim().is_empty())
        .collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| format!("    {l}\n"))
        .collect()
}

/// Whether libFuzzer reported coverage counters at start-up.
fn instrumented(log: &str) -> bool {
    log.lines().any(|l| {
        l.starts_with("INFO: Loaded")
            && l.contains("inline 8-bit counters")
            && !l.contains("(0 inline 8-bit counters)")
    })
}

/// Runs the inputs saved in `fuzz/artifacts/T/` by earlier runs: one that still
/// fails is a bug not yet fixed. (Delete artifacts once fixed, or move them to
/// the seed corpus as regression inputs.)
fn replay_artifacts(bins: &Path, target: &str) -> Result {
    let root = cmd::root();
    let saved = list_files(&root.join("fuzz/artifacts").join(target));
    if saved.is_empty() {
        return Ok(());
    }
    eprintln!(
        "replaying {} saved input(s) in fuzz/artifacts/{target}/",
        saved.len()
    );
    let mut replay = cmd::program(
        bins.join(target),
        [
            format!("-timeout={INPUT_TIMEOUT_SECONDS}"),
            format!("-artifact_prefix=fuzz/artifacts/{target}/"),
        ],
    );
    replay.args(&saved);
    let out = replay
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("could not start `{}`: {e}", cmd::display(&replay)))?;
    if out.status.success() {
        eprintln!("  none fails any more (delete them, or move them to fuzz/corpus/{target}/)");
        return Ok(());
    }
    let text = String::from_utf8_lossy(&out.stderr);
    let culprit = text
        .lines()
        .filter_map(|l| l.strip_prefix("Running: "))
        .next_back()
        .unwrap_or("(see below)");
    let culprit = Path::new(culprit);
    Err(format!(
        "a saved input still fails: {}\n  reproduce: {}\n{}",
        culprit.strip_prefix(&root).unwrap_or(culprit).display(),
        cmd::display(&replay),
        log_tail(&text, 20)
    ))
}

/// The plain files directly in `dir`, sorted (empty when `dir` does not exist).
fn list_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let files: BTreeSet<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .filter(|p| {
            !p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    files.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bin_names_reads_only_bin_tables() {
        let manifest = r#"
[package]
name = "duplex-fuzz" # not a target

[[bin]]
name = "frame_header"
path = "fuzz_targets/frame_header.rs"

[dependencies]
name = "nope"

[[bin]] # comment
name='utf8'  # trailing
test = false
"#;
        assert_eq!(bin_names(manifest), ["frame_header", "utf8"]);
    }

    #[test]
    fn instrumentation_is_detected_from_the_log() {
        assert!(instrumented(
            "INFO: Loaded 1 modules   (412 inline 8-bit counters): 412 [0x1, 0x2),"
        ));
        assert!(!instrumented(
            "INFO: A corpus is not provided, starting from an empty corpus"
        ));
    }

    #[test]
    fn every_target_has_a_seed_corpus() {
        for t in targets().unwrap() {
            let seeds = cmd::root().join("fuzz/corpus").join(&t);
            assert!(!list_files(&seeds).is_empty(), "no seeds for {t}");
        }
    }
}
