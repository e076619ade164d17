//! `cargo xtask`: project tasks, in Rust, with no dependencies.
//!
//! - `cargo xtask test` runs every check CI runs, in order, failing fast (see [`test::STEPS`]).
//! - `cargo xtask fuzz` runs the fuzz targets under `fuzz/` on stable Rust (see [`fuzz`]).
//! - `cargo xtask setup` installs the test peers (see [`peers`]).

mod autobahn;
mod cmd;
mod fuzz;
mod peers;
mod test;

use std::process::ExitCode;

use cmd::Result;

const USAGE: &str = "\
usage: cargo xtask <task> [options]

tasks:
  test [STEP...] [--fuzz-seconds N]
        Run every check, in order, stopping at the first failure. STEPs pick a
        subset (in the usual order). Steps: fmt, clippy, tests, doctests, fuzz.
        --fuzz-seconds N  time for the fuzz smoke run, split across targets (default 60)
  fuzz [TARGET] [--seconds N] [--list] [-- LIBFUZZER_ARGS...]
        Build the fuzz targets with coverage instrumentation (stable Rust) and
        fuzz TARGET (default: every target in turn) for N seconds each
        (default 300). Arguments after `--` go to libFuzzer, e.g. -jobs=2.
  setup [PEER...]
        Install the test peers that are missing (default: all). Peers:
        python-websockets, node-ws, chromium, autobahn, redis, haproxy, nginx.
  help  Show this.
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.split_first() {
        Some((task, rest)) => match task.as_str() {
            "test" => test::main(rest),
            "fuzz" => fuzz::main(rest),
            "setup" => peers::main(rest),
            "help" | "-h" | "--help" => {
                print!("{USAGE}");
                Ok(())
            }
            other => Err(format!("unknown task `{other}`\n\n{USAGE}")),
        },
        None => Err(format!("no task given\n\n{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Parses the value of `--name N` as a positive number of seconds.
fn parse_seconds(flag: &str, value: Option<&String>) -> Result<u64> {
    let value = value.ok_or_else(|| format!("{flag} needs a number of seconds"))?;
    match value.parse::<u64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!(
            "{flag}: `{value}` is not a positive number of seconds"
        )),
    }
}
