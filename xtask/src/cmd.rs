//! Running programs: echo the command, run it from the repository root, and turn
//! a failure into an error message that says which command failed and how.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What every task returns: an error is a message for the person at the terminal.
pub(crate) type Result<T = ()> = std::result::Result<T, String>;

/// The repository root (the parent of `xtask/`).
pub(crate) fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask/ has a parent")
        .to_path_buf()
}

/// A `cargo` command (the same cargo that runs xtask), in the repository root.
pub(crate) fn cargo<I, S>(args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(args).current_dir(root());
    cmd
}

/// A command for `program` in the repository root.
pub(crate) fn program<I, S>(program: impl AsRef<OsStr>, args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new(program);
    cmd.args(args).current_dir(root());
    cmd
}

/// The command line as a person would type it (program name without its directory).
pub(crate) fn display(cmd: &Command) -> String {
    let program = Path::new(cmd.get_program());
    let program = if program.components().count() > 1 && program.starts_with(root()) {
        program.strip_prefix(root()).unwrap_or(program)
    } else if program.file_name() == Some(OsStr::new("cargo")) {
        Path::new("cargo")
    } else {
        program
    };
    let mut line = program.display().to_string();
    for arg in cmd.get_args() {
        let arg = arg.to_string_lossy();
        let arg = arg
            .strip_prefix(&format!("{}/", root().display()))
            .unwrap_or(&arg);
        if arg.is_empty() || arg.contains([' ', '\'', '"', '<', '>', '*']) {
            line.push_str(&format!(" '{arg}'"));
        } else {
            line.push(' ');
            line.push_str(arg);
        }
    }
    line
}

/// Runs `cmd` with the terminal attached, echoing it first; fails unless it exits 0.
pub(crate) fn run(cmd: &mut Command) -> Result {
    eprintln!("$ {}", display(cmd));
    let status = cmd
        .status()
        .map_err(|e| format!("could not start `{}`: {e}", display(cmd)))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{}` failed ({status})", display(cmd)))
    }
}

/// Runs `cmd` silently and reports whether it exited 0 (false if it cannot start).
pub(crate) fn succeeds(cmd: &mut Command) -> bool {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs `cmd` silently and returns its standard output if it exited 0.
pub(crate) fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether `program` is on `PATH` (an executable file in one of its directories).
pub(crate) fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            std::fs::metadata(dir.join(program)).is_ok_and(|m| {
                m.is_file()
                    && std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111 != 0
            })
        })
    })
}

/// Seconds with one decimal, for summaries.
pub(crate) fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

/// Runs `f`, returning its result and how long it took.
pub(crate) fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let start = Instant::now();
    let value = f();
    (value, start.elapsed())
}
