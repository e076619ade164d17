//! A small WebDriver BiDi client over Duplex's own WebSocket client, to
//! drive headless Firefox (Debian's `firefox-esr`) from tests.
//!
//! [`Firefox::launch`] starts `/usr/bin/firefox-esr` (or
//! `$DUPLEX_FIREFOX`) with `--headless --remote-debugging-port=0` and a
//! fresh profile directory, reads the `WebDriver BiDi listening on ws://…`
//! line from its stderr, connects to `<that>/session` and opens a session
//! (`session.new`). [`Firefox::new_page`] opens a tab
//! (`browsingContext.create`) and navigates it; pages evaluate JavaScript
//! (`script.evaluate`, values deserialized from BiDi's remote values), set
//! their viewport and take screenshots.
//!
//! Invariants (as in [`super::browser`]): every wait is bounded (commands
//! [`CALL_TIMEOUT`], start-up [`LAUNCH_TIMEOUT`], polls their own timeout);
//! Firefox runs in a process group of its own, and dropping the [`Firefox`]
//! ends that group only (SIGTERM, then SIGKILL after [`EXIT_GRACE`]) and
//! removes the profile; a missing Firefox is an error, never a silent skip.

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use duplex::Message;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Map, Value, json};
use tokio::sync::{mpsc, oneshot};

use super::browser::TempDir;

/// Where Firefox is unless `$DUPLEX_FIREFOX` says otherwise.
pub(crate) const FIREFOX: &str = "/usr/bin/firefox-esr";
/// Longest wait for Firefox to start and print its BiDi address.
pub(crate) const LAUNCH_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest wait for the answer to one BiDi command.
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long Firefox gets to exit after SIGTERM before SIGKILL.
pub(crate) const EXIT_GRACE: Duration = Duration::from_secs(5);
/// Console lines kept, for failure messages.
const LOG_LINES: usize = 2000;
/// Lines of Firefox's stderr kept for failure messages.
const STDERR_LINES: usize = 200;

/// What went wrong while driving Firefox.
#[derive(Debug)]
pub(crate) struct FirefoxError(pub(crate) String);

impl std::fmt::Display for FirefoxError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for FirefoxError {}

/// The result of a Firefox operation.
pub(crate) type Result<T> = std::result::Result<T, FirefoxError>;

fn error(message: impl Into<String>) -> FirefoxError {
    FirefoxError(message.into())
}

/// One BiDi command on its way to the I/O task.
struct Call {
    method: String,
    params: Value,
    reply: oneshot::Sender<Result<Value>>,
}

/// Console lines: (browsing context, line).
type Log = Arc<Mutex<VecDeque<(String, String)>>>;

/// A handle on the BiDi connection; answers come back by id.
#[derive(Clone)]
pub(crate) struct Bidi {
    calls: mpsc::UnboundedSender<Call>,
    log: Log,
}

impl Bidi {
    async fn connect(url: &str) -> Result<Self> {
        let ws = tokio::time::timeout(CALL_TIMEOUT, duplex::connect(url))
            .await
            .map_err(|_| error(format!("timed out connecting to WebDriver BiDi at {url}")))?
            .map_err(|e| error(format!("cannot connect to WebDriver BiDi at {url}: {e}")))?;
        let (calls, rx) = mpsc::unbounded_channel();
        let log: Log = Arc::default();
        tokio::spawn(pump(ws, rx, log.clone()));
        Ok(Self { calls, log })
    }

    /// Sends `method` with `params`; its `result`, or its error as an error.
    pub(crate) async fn call(&self, method: &str, params: Value) -> Result<Value> {
        let (reply, answer) = oneshot::channel();
        self.calls
            .send(Call {
                method: method.to_owned(),
                params,
                reply,
            })
            .map_err(|_| error(format!("{method}: the BiDi connection is gone")))?;
        match tokio::time::timeout(CALL_TIMEOUT, answer).await {
            Ok(Ok(result)) => result.map_err(|e| error(format!("{method}: {e}"))),
            Ok(Err(_)) => Err(error(format!(
                "{method}: the BiDi connection closed before the answer"
            ))),
            Err(_) => Err(error(format!(
                "{method}: no answer within {CALL_TIMEOUT:?}"
            ))),
        }
    }

    fn log_of(&self, context: &str) -> Vec<String> {
        let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        log.iter()
            .filter(|(c, _)| c == context)
            .map(|(_, line)| line.clone())
            .collect()
    }
}

/// Owns the BiDi WebSocket: writes calls, routes answers by id, records
/// console entries. Ends when every [`Bidi`] handle is gone or Firefox
/// closes the connection; pending calls then fail.
async fn pump(
    mut ws: duplex::WebSocket<duplex::transport::Transport>,
    mut calls: mpsc::UnboundedReceiver<Call>,
    log: Log,
) {
    let mut pending: HashMap<u64, oneshot::Sender<Result<Value>>> = HashMap::new();
    let mut next_id = 1u64;
    loop {
        tokio::select! {
            call = calls.recv() => {
                let Some(call) = call else { break };
                let id = next_id;
                next_id += 1;
                let command = json!({"id": id, "method": call.method, "params": call.params});
                if let Err(e) = ws.send(Message::text(command.to_string())).await {
                    let _ = call.reply.send(Err(error(format!("send failed: {e}"))));
                    break;
                }
                pending.insert(id, call.reply);
            }
            incoming = ws.next() => {
                let text = match incoming {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(_)) => continue,
                    Some(Err(_)) | None => break,
                };
                let Ok(message) = serde_json::from_str::<Value>(&text) else { continue };
                match message["type"].as_str() {
                    Some("success") | Some("error") => {
                        let Some(id) = message["id"].as_u64() else { continue };
                        if let Some(reply) = pending.remove(&id) {
                            let answer = if message["type"] == "success" {
                                Ok(message["result"].clone())
                            } else {
                                Err(error(format!(
                                    "{}: {}",
                                    message["error"].as_str().unwrap_or("error"),
                                    message["message"].as_str().unwrap_or("")
                                )))
                            };
                            let _ = reply.send(answer);
                        }
                    }
                    Some("event") if message["method"] == "log.entryAdded" => {
                        let params = &message["params"];
                        let context = params["source"]["context"].as_str().unwrap_or("").to_owned();
                        let line = format!(
                            "{}.{}: {}",
                            params["type"].as_str().unwrap_or("log"),
                            params["level"].as_str().unwrap_or(""),
                            params["text"].as_str().unwrap_or("")
                        );
                        let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
                        if log.len() == LOG_LINES {
                            log.pop_front();
                        }
                        log.push_back((context, line));
                    }
                    _ => {}
                }
            }
        }
    }
}

/// A headless Firefox this test started, in a process group of its own;
/// ended when dropped.
pub(crate) struct Firefox {
    child: Child,
    bidi: Bidi,
    stderr: Arc<Mutex<VecDeque<String>>>,
    // Dropped after the processes are gone.
    _profile: TempDir,
}

impl std::fmt::Debug for Firefox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Firefox")
            .field("pid", &self.child.id())
            .finish_non_exhaustive()
    }
}

impl Firefox {
    /// Starts headless Firefox and opens a BiDi session. Fails (never
    /// skips) when Firefox is missing.
    pub(crate) async fn launch() -> Result<Self> {
        let path = std::env::var_os("DUPLEX_FIREFOX")
            .map_or_else(|| PathBuf::from(FIREFOX), PathBuf::from);
        if !path.exists() {
            return Err(error(format!(
                "Firefox not found at {} (install Debian's `firefox-esr`, as `cargo xtask test` \
                 does, or set DUPLEX_FIREFOX): the Firefox tests cannot run without it",
                path.display()
            )));
        }
        let profile = TempDir::new("duplex-hub-firefox")
            .map_err(|e| error(format!("cannot create a profile directory: {e}")))?;
        // Quiet: no first-run pages, updates or telemetry; loopback only.
        let prefs = [
            ("browser.shell.checkDefaultBrowser", "false"),
            ("browser.startup.homepage_override.mstone", "\"ignore\""),
            ("datareporting.policy.dataSubmissionEnabled", "false"),
            ("toolkit.telemetry.reportingpolicy.firstRun", "false"),
            ("app.update.disabledForTesting", "true"),
            ("browser.aboutwelcome.enabled", "false"),
            ("network.proxy.type", "0"),
        ];
        let user_js: String = prefs
            .iter()
            .map(|(k, v)| format!("user_pref(\"{k}\", {v});\n"))
            .collect();
        std::fs::write(profile.path().join("user.js"), user_js)
            .map_err(|e| error(format!("cannot write user.js: {e}")))?;
        let mut child = Command::new(&path)
            .args([
                "--headless",
                "--no-remote",
                "--remote-debugging-port=0",
                "--profile",
            ])
            .arg(profile.path())
            .arg("about:blank")
            .env("MOZ_HEADLESS", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            // Its own process group: Firefox's content processes are ended
            // with it, and nothing else is.
            .process_group(0)
            .spawn()
            .map_err(|e| error(format!("cannot start {}: {e}", path.display())))?;

        let stderr_pipe = child.stderr.take().expect("stderr is piped");
        let stderr: Arc<Mutex<VecDeque<String>>> = Arc::default();
        let (found, address) = oneshot::channel::<String>();
        {
            let stderr = stderr.clone();
            std::thread::spawn(move || {
                let mut found = Some(found);
                for line in BufReader::new(stderr_pipe).lines() {
                    let Ok(line) = line else { break };
                    if let Some(at) = line.find("ws://")
                        && line.contains("WebDriver BiDi listening on")
                        && let Some(found) = found.take()
                    {
                        let _ = found.send(line[at..].trim().to_owned());
                    }
                    let mut tail = stderr.lock().unwrap_or_else(|e| e.into_inner());
                    if tail.len() == STDERR_LINES {
                        tail.pop_front();
                    }
                    tail.push_back(line);
                }
            });
        }
        let url = match tokio::time::timeout(LAUNCH_TIMEOUT, address).await {
            Ok(Ok(url)) => url,
            outcome => {
                terminate_group(&mut child);
                let why = if outcome.is_err() {
                    format!("did not print its WebDriver BiDi address within {LAUNCH_TIMEOUT:?}")
                } else {
                    "exited before printing its WebDriver BiDi address".to_owned()
                };
                return Err(error(format!(
                    "Firefox {why}; its stderr:\n{}",
                    tail_of(&stderr)
                )));
            }
        };
        let bidi = match Bidi::connect(&format!("{}/session", url.trim_end_matches('/'))).await {
            Ok(bidi) => bidi,
            Err(e) => {
                terminate_group(&mut child);
                return Err(e);
            }
        };
        let firefox = Self {
            child,
            bidi,
            stderr,
            _profile: profile,
        };
        firefox
            .bidi
            // Certificates of the tests' own CAs (loopback only) are accepted.
            .call(
                "session.new",
                json!({"capabilities": {"alwaysMatch": {"acceptInsecureCerts": true}}}),
            )
            .await?;
        firefox
            .bidi
            .call("session.subscribe", json!({"events": ["log.entryAdded"]}))
            .await?;
        Ok(firefox)
    }

    /// The last lines Firefox wrote to stderr.
    pub(crate) fn stderr_tail(&self) -> String {
        tail_of(&self.stderr)
    }

    /// Opens `url` in a new tab with a 1280×800 viewport and waits until it
    /// has loaded.
    pub(crate) async fn new_page(&self, url: &str) -> Result<FirefoxPage> {
        let created = self
            .bidi
            .call("browsingContext.create", json!({"type": "tab"}))
            .await?;
        let context = created["context"]
            .as_str()
            .ok_or_else(|| error("browsingContext.create: no context"))?
            .to_owned();
        let page = FirefoxPage {
            bidi: self.bidi.clone(),
            context,
        };
        page.set_viewport(1280, 800).await?;
        page.goto(url).await?;
        Ok(page)
    }

    /// Ends the session and waits (bounded) for Firefox to exit; dropping
    /// does the same with signals.
    pub(crate) async fn close(self) {
        let _ = tokio::time::timeout(
            Duration::from_secs(5),
            self.bidi.call("browser.close", json!({})),
        )
        .await;
        let deadline = Instant::now() + EXIT_GRACE;
        while Instant::now() < deadline && !exited_unreaped(&self.child) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Drop ends whatever of the group is left, then reaps the leader.
    }
}

impl Drop for Firefox {
    fn drop(&mut self) {
        terminate_group(&mut self.child);
    }
}

/// Sends `signal` to the process group led by `child` (it was spawned with
/// `process_group(0)`, so the group id is its pid), with the `kill` utility:
/// that group, and no other process.
fn signal_group(child: &Child, signal: &str) {
    let group = child.id();
    if group > 1 {
        let _ = Command::new("kill")
            .args(["-s", signal, "--", &format!("-{group}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Whether `child` has exited, without reaping it (its `/proc` state is
/// `Z`, or it is gone): while it is unreaped its pid, and so its process
/// group id, cannot be reused.
fn exited_unreaped(child: &Child) -> bool {
    match std::fs::read_to_string(format!("/proc/{}/stat", child.id())) {
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => true,
    }
}

/// SIGTERM to Firefox's process group, SIGKILL to what is left of the group
/// after the leader exits or [`EXIT_GRACE`] passes, then reaps the leader.
/// The leader is reaped last, so the group id named is always ours.
fn terminate_group(child: &mut Child) {
    if matches!(child.try_wait(), Ok(Some(_))) {
        // Already reaped (it exited by itself): its group id may no longer
        // be ours; nothing is signalled.
        return;
    }
    signal_group(child, "TERM");
    let deadline = Instant::now() + EXIT_GRACE;
    while Instant::now() < deadline && !exited_unreaped(child) {
        std::thread::sleep(Duration::from_millis(25));
    }
    // Content processes may outlive the leader: the whole group goes.
    signal_group(child, "KILL");
    let _ = child.wait();
}

fn tail_of(lines: &Mutex<VecDeque<String>>) -> String {
    let lines = lines.lock().unwrap_or_else(|e| e.into_inner());
    lines.iter().cloned().collect::<Vec<_>>().join("\n")
}

/// A WebDriver BiDi remote value as plain JSON (`undefined`, functions,
/// nodes and the like become `null`; non-finite numbers become strings).
fn plain(remote: &Value) -> Value {
    let value = &remote["value"];
    match remote["type"].as_str().unwrap_or("") {
        "string" | "boolean" => value.clone(),
        "number" => match value {
            Value::Number(_) => value.clone(),
            // "NaN", "-0", "Infinity", "-Infinity".
            Value::String(s) if s == "-0" => json!(0),
            other => other.clone(),
        },
        "bigint" => value.clone(),
        "array" | "set" => Value::Array(
            value
                .as_array()
                .map_or_else(Vec::new, |items| items.iter().map(plain).collect()),
        ),
        "object" | "map" => {
            let mut out = Map::new();
            for pair in value.as_array().into_iter().flatten() {
                let key = match &pair[0] {
                    Value::String(k) => k.clone(),
                    other => plain(other).to_string(),
                };
                out.insert(key, plain(&pair[1]));
            }
            Value::Object(out)
        }
        _ => Value::Null,
    }
}

/// Whether a JSON value counts as true in JavaScript.
fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty() && s != "NaN",
        Value::Array(_) | Value::Object(_) => true,
    }
}

/// One tab of Firefox (a top-level browsing context).
#[derive(Clone)]
pub(crate) struct FirefoxPage {
    bidi: Bidi,
    context: String,
}

impl std::fmt::Debug for FirefoxPage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FirefoxPage")
            .field("context", &self.context)
            .finish_non_exhaustive()
    }
}

impl FirefoxPage {
    /// Navigates to `url` and waits until it has loaded.
    pub(crate) async fn goto(&self, url: &str) -> Result<()> {
        self.bidi
            .call(
                "browsingContext.navigate",
                json!({"context": self.context, "url": url, "wait": "complete"}),
            )
            .await?;
        Ok(())
    }

    /// Sets the viewport (CSS pixels).
    pub(crate) async fn set_viewport(&self, width: u32, height: u32) -> Result<()> {
        self.bidi
            .call(
                "browsingContext.setViewport",
                json!({
                    "context": self.context,
                    "viewport": {"width": width, "height": height},
                    "devicePixelRatio": 1,
                }),
            )
            .await?;
        Ok(())
    }

    /// Evaluates `js` as a script (awaiting a promise it returns) and
    /// returns its value as JSON. A thrown exception is an error.
    pub(crate) async fn eval(&self, js: &str) -> Result<Value> {
        let answer = self
            .bidi
            .call(
                "script.evaluate",
                json!({
                    "expression": js,
                    "target": {"context": self.context},
                    "awaitPromise": true,
                    "resultOwnership": "none",
                    "serializationOptions": {"maxObjectDepth": 16, "maxDomDepth": 0},
                    "userActivation": true,
                }),
            )
            .await?;
        if answer["type"] == "exception" {
            let details = &answer["exceptionDetails"];
            let text = details["text"].as_str().unwrap_or("exception");
            let short: String = js.chars().take(200).collect();
            return Err(error(format!("`{short}` threw: {text}")));
        }
        Ok(plain(&answer["result"]))
    }

    /// Evaluates `predicate` every 100 ms until its value is truthy and
    /// returns it; an error after `timeout`, with the last value and the
    /// console.
    pub(crate) async fn wait_for(&self, predicate: &str, timeout: Duration) -> Result<Value> {
        let deadline = Instant::now() + timeout;
        let mut last = None;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(
                remaining.max(Duration::from_millis(1)),
                self.eval(predicate),
            )
            .await
            {
                Ok(Ok(value)) if truthy(&value) => return Ok(value),
                Ok(Ok(value)) => last = Some(format!("value {value}")),
                Ok(Err(e)) => last = Some(e.to_string()),
                Err(_) => {}
            }
            if Instant::now() >= deadline {
                return Err(error(format!(
                    "timed out after {timeout:?} waiting for `{predicate}` (last: {}); console:\n{}",
                    last.unwrap_or_else(|| "no evaluation finished".to_owned()),
                    self.console().join("\n")
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Saves a PNG screenshot of the viewport to `path` (creating its
    /// directory).
    pub(crate) async fn screenshot(&self, path: &Path) -> Result<()> {
        let answer = self
            .bidi
            .call(
                "browsingContext.captureScreenshot",
                json!({"context": self.context}),
            )
            .await?;
        let data = answer["data"]
            .as_str()
            .ok_or_else(|| error("browsingContext.captureScreenshot: no data"))?;
        let png = base64::engine::general_purpose::STANDARD
            .decode(data)
            .map_err(|e| error(format!("screenshot is not base64: {e}")))?;
        if !png.starts_with(b"\x89PNG\r\n\x1a\n") {
            return Err(error("screenshot is not a PNG"));
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| error(format!("cannot create {}: {e}", dir.display())))?;
        }
        std::fs::write(path, png)
            .map_err(|e| error(format!("cannot write {}: {e}", path.display())))
    }

    /// Presses and releases `key` (WebDriver key actions).
    pub(crate) async fn press(&self, key: super::browser::Key) -> Result<()> {
        use super::browser::Key;
        let (value, shift) = match key {
            Key::Tab => ("\u{E004}", false),
            Key::ShiftTab => ("\u{E004}", true),
            Key::Enter => ("\u{E007}", false),
            Key::Space => (" ", false),
            Key::Escape => ("\u{E00C}", false),
        };
        let mut actions = Vec::new();
        if shift {
            actions.push(json!({"type": "keyDown", "value": "\u{E008}"}));
        }
        actions.push(json!({"type": "keyDown", "value": value}));
        actions.push(json!({"type": "keyUp", "value": value}));
        if shift {
            actions.push(json!({"type": "keyUp", "value": "\u{E008}"}));
        }
        self.perform(actions).await
    }

    /// Types `text` into the focused element, a key at a time.
    pub(crate) async fn type_text(&self, text: &str) -> Result<()> {
        let mut actions = Vec::new();
        for ch in text.chars() {
            let key = ch.to_string();
            actions.push(json!({"type": "keyDown", "value": key}));
            actions.push(json!({"type": "keyUp", "value": key}));
        }
        self.perform(actions).await
    }

    async fn perform(&self, actions: Vec<Value>) -> Result<()> {
        self.bidi
            .call(
                "input.performActions",
                json!({
                    "context": self.context,
                    "actions": [{"type": "key", "id": "keyboard", "actions": actions}],
                }),
            )
            .await?;
        self.bidi
            .call("input.releaseActions", json!({"context": self.context}))
            .await?;
        Ok(())
    }

    /// The console entries of this tab so far.
    pub(crate) fn console(&self) -> Vec<String> {
        self.bidi.log_of(&self.context)
    }
}

impl super::WebPage for FirefoxPage {
    async fn eval(&self, js: &str) -> std::result::Result<Value, String> {
        FirefoxPage::eval(self, js).await.map_err(|e| e.to_string())
    }

    async fn viewport(
        &self,
        width: u32,
        height: u32,
        _mobile: bool,
    ) -> std::result::Result<(), String> {
        self.set_viewport(width, height)
            .await
            .map_err(|e| e.to_string())
    }

    async fn save_screenshot(&self, path: &Path) -> std::result::Result<(), String> {
        self.screenshot(path).await.map_err(|e| e.to_string())
    }

    async fn key(&self, key: super::browser::Key) -> std::result::Result<(), String> {
        self.press(key).await.map_err(|e| e.to_string())
    }

    async fn type_keys(&self, text: &str) -> std::result::Result<(), String> {
        self.type_text(text).await.map_err(|e| e.to_string())
    }
}
