//! Test peers: the other WebSocket implementations Duplex is tested against.
//!
//! Each installer is idempotent: it checks first (fast when installed), installs
//! only what is missing, verifies the result, and fails loudly otherwise.
//! Project-local tools go in `.tools/` (git-ignored), pinned by files under
//! `tests/interop/`; Debian packages are installed with apt-get (as root, or
//! through sudo), with at most one `apt-get update` per run.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::cmd::{self, Result};

/// One test peer.
pub(crate) struct Peer {
    /// The name `cargo xtask setup` accepts.
    pub(crate) name: &'static str,
    /// Installs the peer if it is missing.
    pub(crate) ensure: fn() -> Result<Outcome>,
}

/// What [`Peer::ensure`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    AlreadyInstalled,
    Installed,
}

pub(crate) const PEERS: &[Peer] = &[
    Peer {
        name: "python-websockets",
        ensure: python_websockets,
    },
    Peer {
        name: "node-ws",
        ensure: node_ws,
    },
    Peer {
        name: "chromium",
        ensure: chromium,
    },
    Peer {
        name: "firefox-esr",
        ensure: firefox_esr,
    },
    Peer {
        name: "autobahn",
        ensure: autobahn,
    },
    Peer {
        name: "redis",
        ensure: redis,
    },
    Peer {
        name: "haproxy",
        ensure: haproxy,
    },
    Peer {
        name: "nginx",
        ensure: nginx,
    },
];

/// The project-local Python 3 environment (python `websockets`, and `virtualenv`
/// to make the Autobahn environment).
const PY3_VENV: &str = ".tools/py3";
/// The project-local Python 2.7 environment holding Autobahn|Testsuite's `wstest`.
const AUTOBAHN_VENV: &str = ".tools/autobahn";
/// The last `virtualenv` that can still create Python 2.7 environments is < 20.22.
const VIRTUALENV: &str = "virtualenv==20.21.1";
const AUTOBAHN: &str = "autobahntestsuite==0.8.2";

/// `cargo xtask setup [PEER...]`.
pub(crate) fn main(args: &[String]) -> Result {
    let mut selected = Vec::new();
    for name in args {
        let peer = find(name)?;
        selected.push(peer);
    }
    if selected.is_empty() {
        selected = PEERS.iter().collect();
    }
    let mut failed = Vec::new();
    for peer in selected {
        eprintln!("\n==> {}", peer.name);
        let (result, took) = cmd::timed(peer.ensure);
        match result {
            Ok(Outcome::AlreadyInstalled) => {
                eprintln!("{}: already installed ({})", peer.name, cmd::secs(took));
            }
            Ok(Outcome::Installed) => {
                eprintln!("{}: installed in {}", peer.name, cmd::secs(took));
            }
            Err(message) => {
                eprintln!("{}: FAILED: {message}", peer.name);
                failed.push(peer.name);
            }
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!("could not install: {}", failed.join(", ")))
    }
}

/// The peer called `name`.
pub(crate) fn find(name: &str) -> Result<&'static Peer> {
    PEERS.iter().find(|p| p.name == name).ok_or_else(|| {
        let names: Vec<_> = PEERS.iter().map(|p| p.name).collect();
        format!("unknown peer `{name}` (peers: {})", names.join(", "))
    })
}

/// Installs `name` if missing (for test steps that need a peer).
pub(crate) fn ensure(name: &str) -> Result<Outcome> {
    let peer = find(name)?;
    (peer.ensure)().map_err(|e| format!("installing test peer {name}: {e}"))
}

/// Python `websockets`, pinned by `tests/interop/python/requirements.txt`, in `.tools/py3`.
fn python_websockets() -> Result<Outcome> {
    let requirements = "tests/interop/python/requirements.txt";
    let pins = read(requirements)?;
    let venv = cmd::root().join(PY3_VENV);
    let python = venv.join("bin/python");
    let stamp = venv.join(".duplex-requirements");
    let import = || cmd::succeeds(&mut cmd::program(&python, ["-c", "import websockets"]));
    if read_opt(&stamp).as_deref() == Some(pins.as_str()) && import() {
        return Ok(Outcome::AlreadyInstalled);
    }
    py3_venv()?;
    pip(
        &python,
        ["install", "--quiet", "--requirement", requirements],
    )?;
    if !import() {
        return Err(format!(
            "`import websockets` fails in {PY3_VENV} after installing"
        ));
    }
    write(&stamp, &pins)?;
    Ok(Outcome::Installed)
}

/// Creates `.tools/py3` with the machine's Python 3 unless it exists.
fn py3_venv() -> Result<PathBuf> {
    let venv = cmd::root().join(PY3_VENV);
    let python = venv.join("bin/python");
    if !cmd::succeeds(&mut cmd::program(&python, ["-c", "import sys, pip"])) {
        let python3 = ["python3", "python"]
            .into_iter()
            .find(|p| {
                cmd::succeeds(&mut cmd::program(
                    p,
                    [
                        "-c",
                        "import sys, venv; sys.exit(sys.version_info < (3, 9))",
                    ],
                ))
            })
            .ok_or("no Python 3.9 or later (with the venv module) on PATH")?;
        cmd::run(&mut cmd::program(
            python3,
            ["-m", "venv", "--clear", PY3_VENV],
        ))?;
    }
    Ok(python)
}

fn pip<const N: usize>(python: &Path, args: [&str; N]) -> Result {
    let mut pip = cmd::program(python, ["-m", "pip", "--disable-pip-version-check"]);
    pip.args(args);
    cmd::run(&mut pip)
}

/// Node `ws` (interop peer) and `axe-core` (the web pages' accessibility
/// audits), pinned by `tests/interop/node/package-lock.json`, in
/// `tests/interop/node/node_modules`; and the TypeScript SDK's build tools
/// (esbuild, TypeScript), pinned by `clients/js/package-lock.json`, in
/// `clients/js/node_modules`, so that its tests and the web pages' build
/// check do not install anything mid-run.
fn node_ws() -> Result<Outcome> {
    let interop = node_ws_interop()?;
    let sdk = clients_js()?;
    Ok(match (interop, sdk) {
        (Outcome::AlreadyInstalled, Outcome::AlreadyInstalled) => Outcome::AlreadyInstalled,
        _ => Outcome::Installed,
    })
}

/// `npm ci` in `clients/js` unless its `node_modules` was installed from the
/// current lock (the stamp `node_modules/.duplex-lock`, which
/// `crates/cli/tests/js_sdk.rs` reads and writes too).
fn clients_js() -> Result<Outcome> {
    let dir = cmd::root().join("clients/js");
    let lock = read("clients/js/package-lock.json")?;
    let stamp = dir.join("node_modules/.duplex-lock");
    if read_opt(&stamp).as_deref() == Some(lock.as_str())
        && dir.join("node_modules/esbuild/package.json").is_file()
    {
        return Ok(Outcome::AlreadyInstalled);
    }
    let mut npm = cmd::program("npm", ["ci", "--no-audit", "--no-fund"]);
    cmd::run(npm.current_dir(&dir))?;
    if !dir.join("node_modules/esbuild/package.json").is_file() {
        return Err("esbuild is missing in clients/js after `npm ci`".into());
    }
    write(&stamp, &lock)?;
    Ok(Outcome::Installed)
}

fn node_ws_interop() -> Result<Outcome> {
    let dir = cmd::root().join("tests/interop/node");
    let lock = read("tests/interop/node/package-lock.json")?;
    let stamp = dir.join("node_modules/.duplex-lock");
    // Node itself runs tests too (the SDK against the shared vectors): on a
    // machine without it, Debian's `npm` brings `nodejs`.
    let mut installed = false;
    if !cmd::on_path("npm") || !cmd::on_path("node") {
        apt_install("npm", Path::new("/usr/bin/npm"), &["--version"])?;
        installed = true;
    }
    if !installed
        && read_opt(&stamp).as_deref() == Some(lock.as_str())
        && dir.join("node_modules/ws/package.json").is_file()
        && dir.join("node_modules/axe-core/axe.min.js").is_file()
    {
        return Ok(Outcome::AlreadyInstalled);
    }
    let mut npm = cmd::program("npm", ["ci", "--no-audit", "--no-fund"]);
    cmd::run(npm.current_dir(&dir))?;
    let check = "require('ws'); console.log(require('ws/package.json').version)";
    let mut node = cmd::program("node", ["-e", check]);
    let version = cmd::output(node.current_dir(&dir))
        .ok_or("`require('ws')` fails in tests/interop/node after `npm ci`")?;
    eprintln!("ws {}", version.trim());
    if !dir.join("node_modules/axe-core/axe.min.js").is_file() {
        return Err("axe-core/axe.min.js is missing in tests/interop/node after `npm ci`".into());
    }
    write(&stamp, &lock)?;
    Ok(Outcome::Installed)
}

/// Debian's `chromium` (headless browser tests), from apt.
fn chromium() -> Result<Outcome> {
    apt_install("chromium", Path::new("/usr/bin/chromium"), &["--version"])
}

/// Debian's `firefox-esr` (the web pages' tests in Firefox, driven with
/// WebDriver BiDi), from apt.
fn firefox_esr() -> Result<Outcome> {
    apt_install(
        "firefox-esr",
        Path::new("/usr/bin/firefox-esr"),
        &["--version"],
    )
}

/// Debian's `redis-server` (the hub's Redis broker tests), and
/// `redis-cli` from `redis-tools` (the Redis Cluster tests join their
/// cluster with `redis-cli --cluster create`), from apt.
fn redis() -> Result<Outcome> {
    let server = apt_install(
        "redis-server",
        Path::new("/usr/bin/redis-server"),
        &["--version"],
    )?;
    let cli = apt_install(
        "redis-tools",
        Path::new("/usr/bin/redis-cli"),
        &["--version"],
    )?;
    Ok(match (server, cli) {
        (Outcome::AlreadyInstalled, Outcome::AlreadyInstalled) => Outcome::AlreadyInstalled,
        _ => Outcome::Installed,
    })
}

/// Debian's `haproxy` (the hub cluster's load-balancer test), from apt.
fn haproxy() -> Result<Outcome> {
    apt_install("haproxy", Path::new("/usr/sbin/haproxy"), &["-v"])
}

/// Debian's `nginx` (the hub's test behind a proxy that sends
/// `X-Forwarded-For`), from apt.
fn nginx() -> Result<Outcome> {
    apt_install("nginx", Path::new("/usr/sbin/nginx"), &["-v"])
}

/// Autobahn|Testsuite's `wstest` in a Python 2.7 environment, `.tools/autobahn`,
/// pinned by `tests/interop/autobahn/py27-constraints.txt`.
fn autobahn() -> Result<Outcome> {
    let constraints = "tests/interop/autobahn/py27-constraints.txt";
    let pins = format!("{AUTOBAHN}\n{}", read(constraints)?);
    let venv = cmd::root().join(AUTOBAHN_VENV);
    let wstest = venv.join("bin/wstest");
    let stamp = venv.join(".duplex-constraints");
    if read_opt(&stamp).as_deref() == Some(pins.as_str()) && wstest.is_file() {
        return Ok(Outcome::AlreadyInstalled);
    }
    let python27 = python27()?;
    let py3 = py3_venv()?;
    pip(&py3, ["install", "--quiet", VIRTUALENV])?;
    let virtualenv = cmd::root().join(PY3_VENV).join("bin/virtualenv");
    let mut make = cmd::program(&virtualenv, ["--clear", "--no-download", "-p"]);
    make.arg(&python27).arg(AUTOBAHN_VENV);
    cmd::run(&mut make)?;
    let python = venv.join("bin/python");
    pip(
        &python,
        ["install", "--quiet", "--constraint", constraints, AUTOBAHN],
    )?;
    // wstest has no --version; loading its modules is the check.
    let check =
        "import autobahntestsuite, autobahntestsuite.wstest; print(autobahntestsuite.version)";
    let version = cmd::output(&mut cmd::program(&python, ["-c", check]))
        .ok_or("autobahntestsuite does not import in the Python 2.7 environment")?;
    if !wstest.is_file() {
        return Err(format!("{} is missing after installing", wstest.display()));
    }
    eprintln!("autobahntestsuite {}", version.trim());
    write(&stamp, &pins)?;
    Ok(Outcome::Installed)
}

/// A Python 2.7 interpreter: `$DUPLEX_PYTHON27`, pyenv's 2.7, or `python2.7` on PATH.
fn python27() -> Result<PathBuf> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(p) = std::env::var_os("DUPLEX_PYTHON27") {
        candidates.push(p.into());
    }
    let pyenv_root = std::env::var_os("PYENV_ROOT")
        .map(PathBuf::from)
        .or_else(|| cmd::output(Command::new("pyenv").arg("root")).map(|s| s.trim().into()))
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".pyenv")));
    if let Some(versions) = pyenv_root.map(|r| r.join("versions"))
        && let Ok(entries) = fs::read_dir(versions)
    {
        let mut found: Vec<PathBuf> = entries
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with("2.7"))
            .map(|e| e.path().join("bin/python2.7"))
            .collect();
        found.sort();
        candidates.extend(found.into_iter().rev());
    }
    candidates.push("/usr/bin/python2.7".into());
    candidates.push("python2.7".into());
    let is_27 = "import sys; sys.exit(sys.version_info[:2] != (2, 7))";
    candidates
        .into_iter()
        .find(|p| cmd::succeeds(Command::new(p).args(["-c", is_27])))
        .ok_or_else(|| {
            "no Python 2.7 found (tried $DUPLEX_PYTHON27, pyenv's versions/2.7*, python2.7 on \
             PATH); install one, e.g. `pyenv install 2.7.18`"
                .into()
        })
}

static APT_UPDATED: AtomicBool = AtomicBool::new(false);

/// Installs Debian `package` unless `binary` exists; then checks `binary args` runs.
fn apt_install(package: &str, binary: &Path, args: &[&str]) -> Result<Outcome> {
    let works = || cmd::output(Command::new(binary).args(args));
    if binary.is_file() {
        return match works() {
            Some(_) => Ok(Outcome::AlreadyInstalled),
            None => Err(format!(
                "{} is there but `{} {}` fails",
                binary.display(),
                binary.display(),
                args.join(" ")
            )),
        };
    }
    if !cmd::on_path("apt-get") {
        return Err(format!(
            "{} is missing and there is no apt-get to install {package}",
            binary.display()
        ));
    }
    if !APT_UPDATED.swap(true, Ordering::SeqCst) {
        cmd::run(&mut apt(["update", "-q"]))?;
    }
    cmd::run(&mut apt([
        "install",
        "-y",
        "-q",
        "--no-install-recommends",
        package,
    ]))?;
    let version = works().ok_or_else(|| {
        format!(
            "`{} {}` fails after installing {package}",
            binary.display(),
            args.join(" ")
        )
    })?;
    eprintln!("{}", version.trim());
    Ok(Outcome::Installed)
}

/// `apt-get ARGS`, non-interactive, through sudo unless root.
fn apt<const N: usize>(args: [&str; N]) -> Command {
    let root = cmd::output(Command::new("id").arg("-u")).is_some_and(|uid| uid.trim() == "0");
    let mut cmd = if root {
        cmd::program("apt-get", args)
    } else {
        let mut sudo = cmd::program("sudo", ["-n", "apt-get"]);
        sudo.args(args);
        sudo
    };
    cmd.env("DEBIAN_FRONTEND", "noninteractive");
    cmd
}

fn read(relative: &str) -> Result<String> {
    let path = cmd::root().join(relative);
    fs::read_to_string(&path).map_err(|e| format!("cannot read {relative}: {e}"))
}

fn read_opt(path: &Path) -> Option<String> {
    fs::read_to_string(path).ok()
}

fn write(path: &Path, contents: &str) -> Result {
    fs::write(path, contents).map_err(|e| format!("cannot write {}: {e}", path.display()))
}
