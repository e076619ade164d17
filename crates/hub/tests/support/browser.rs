//! A small Chrome DevTools Protocol client over Duplex's own WebSocket
//! client, to drive headless Chromium from tests.
//!
//! [`Browser::launch`] starts `/usr/bin/chromium` (or `$DUPLEX_CHROMIUM`)
//! headless with a fresh profile directory and DevTools on a port of its
//! choosing, which it reads from Chromium's stderr; one WebSocket to the
//! browser target carries every command, with flat sessions for pages.
//! [`Browser::new_page`] opens a page in its own browser context (its own
//! cookies and localStorage, like a separate person). Pages evaluate
//! JavaScript, wait for conditions, take screenshots and can be cut off the
//! network.
//!
//! Invariants: every wait is bounded (commands [`CALL_TIMEOUT`], start-up
//! [`LAUNCH_TIMEOUT`], polls their own timeout); dropping the [`Browser`]
//! ends the one process it started (SIGTERM, then SIGKILL after
//! [`EXIT_GRACE`]) and removes the profile directory; a missing Chromium is
//! an error, never a silent skip.

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use duplex::Message;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

/// Where Chromium is unless `$DUPLEX_CHROMIUM` says otherwise.
pub(crate) const CHROMIUM: &str = "/usr/bin/chromium";
/// Longest wait for Chromium to start and print its DevTools address.
pub(crate) const LAUNCH_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for the answer to one DevTools command.
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long Chromium gets to exit after SIGTERM before SIGKILL.
pub(crate) const EXIT_GRACE: Duration = Duration::from_secs(5);
/// Console lines and page errors kept per browser, for failure messages.
const LOG_LINES: usize = 2000;
/// Lines of Chromium's stderr kept for failure messages.
const STDERR_LINES: usize = 200;

/// What went wrong while driving the browser.
#[derive(Debug)]
pub(crate) struct BrowserError(pub(crate) String);

impl std::fmt::Display for BrowserError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BrowserError {}

/// The result of a browser operation.
pub(crate) type Result<T> = std::result::Result<T, BrowserError>;

fn error(message: impl Into<String>) -> BrowserError {
    BrowserError(message.into())
}

/// A fresh, empty directory removed (with its contents) when dropped.
#[derive(Debug)]
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    /// Creates `<tmp>/<prefix>-<pid>-<nanos>`.
    pub(crate) fn new(prefix: &str) -> std::io::Result<Self> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir = std::env::temp_dir().join(format!("{prefix}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        Ok(Self(dir))
    }

    /// The directory.
    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One DevTools command on its way to the I/O task.
struct Call {
    method: String,
    params: Value,
    session: Option<String>,
    reply: oneshot::Sender<Result<Value>>,
}

/// Console output and errors of pages: (session id, line).
type Log = Arc<Mutex<VecDeque<(String, String)>>>;

/// A handle on the DevTools connection: commands go to the task that owns
/// the WebSocket; answers come back by id.
#[derive(Clone)]
pub(crate) struct Cdp {
    calls: mpsc::UnboundedSender<Call>,
    log: Log,
}

impl Cdp {
    /// Connects to the browser's DevTools WebSocket at `url`.
    async fn connect(url: &str) -> Result<Self> {
        let ws = tokio::time::timeout(CALL_TIMEOUT, duplex::connect(url))
            .await
            .map_err(|_| error(format!("timed out connecting to DevTools at {url}")))?
            .map_err(|e| error(format!("cannot connect to DevTools at {url}: {e}")))?;
        let (calls, rx) = mpsc::unbounded_channel();
        let log: Log = Arc::default();
        tokio::spawn(pump(ws, rx, log.clone()));
        Ok(Self { calls, log })
    }

    /// Sends `method` with `params` (to a page when `session` is set) and
    /// returns its `result`, or its `error` as an error.
    pub(crate) async fn call(
        &self,
        method: &str,
        params: Value,
        session: Option<&str>,
    ) -> Result<Value> {
        let (reply, answer) = oneshot::channel();
        self.calls
            .send(Call {
                method: method.to_owned(),
                params,
                session: session.map(str::to_owned),
                reply,
            })
            .map_err(|_| error(format!("{method}: the DevTools connection is gone")))?;
        match tokio::time::timeout(CALL_TIMEOUT, answer).await {
            Ok(Ok(result)) => result.map_err(|e| error(format!("{method}: {e}"))),
            Ok(Err(_)) => Err(error(format!(
                "{method}: the DevTools connection closed before the answer"
            ))),
            Err(_) => Err(error(format!(
                "{method}: no answer within {CALL_TIMEOUT:?}"
            ))),
        }
    }

    /// The console lines and errors logged by the page of `session`.
    fn log_of(&self, session: &str) -> Vec<String> {
        let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        log.iter()
            .filter(|(s, _)| s == session)
            .map(|(_, line)| line.clone())
            .collect()
    }
}

/// Owns the DevTools WebSocket: writes calls, routes answers by id, records
/// console output. Ends when every [`Cdp`] handle is gone or the browser
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
                let mut command = json!({"id": id, "method": call.method, "params": call.params});
                if let Some(session) = call.session {
                    command["sessionId"] = Value::String(session);
                }
                if let Err(e) = ws.send(Message::text(command.to_string())).await {
                    let _ = call.reply.send(Err(error(format!("send failed: {e}"))));
                    break;
                }
                pending.insert(id, call.reply);
            }
            incoming = ws.next() => {
                let text = match incoming {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Binary(_))) => continue,
                    Some(Err(_)) | None => break,
                };
                let Ok(message) = serde_json::from_str::<Value>(&text) else { continue };
                if let Some(id) = message.get("id").and_then(Value::as_u64) {
                    if let Some(reply) = pending.remove(&id) {
                        let answer = match message.get("error") {
                            Some(e) => Err(error(e.to_string())),
                            None => Ok(message.get("result").cloned().unwrap_or(Value::Null)),
                        };
                        let _ = reply.send(answer);
                    }
                } else if let Some(line) = describe_event(&message) {
                    let session = message["sessionId"].as_str().unwrap_or("").to_owned();
                    let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
                    if log.len() == LOG_LINES {
                        log.pop_front();
                    }
                    log.push_back((session, line));
                }
            }
        }
    }
}

/// A line for the console messages, page errors and crashes worth keeping.
fn describe_event(event: &Value) -> Option<String> {
    let params = &event["params"];
    match event["method"].as_str()? {
        "Runtime.consoleAPICalled" => {
            let args: Vec<String> = params["args"]
                .as_array()
                .map(|args| {
                    args.iter()
                        .map(|a| match &a["value"] {
                            Value::String(s) => s.clone(),
                            Value::Null => a["description"].as_str().unwrap_or("").to_owned(),
                            other => other.to_string(),
                        })
                        .collect()
                })
                .unwrap_or_default();
            Some(format!(
                "console.{}: {}",
                params["type"].as_str().unwrap_or("log"),
                args.join(" ")
            ))
        }
        "Runtime.exceptionThrown" => {
            let details = &params["exceptionDetails"];
            let text = details["exception"]["description"]
                .as_str()
                .or_else(|| details["text"].as_str())
                .unwrap_or("?");
            Some(format!("uncaught: {text}"))
        }
        "Log.entryAdded" => Some(format!(
            "log.{}: {} {}",
            params["entry"]["level"].as_str().unwrap_or(""),
            params["entry"]["text"].as_str().unwrap_or(""),
            params["entry"]["url"].as_str().unwrap_or("")
        )),
        "Inspector.targetCrashed" => Some("the page crashed".to_owned()),
        _ => None,
    }
}

/// A headless Chromium this test started; ended when dropped.
pub(crate) struct Browser {
    child: Child,
    cdp: Cdp,
    stderr: Arc<Mutex<VecDeque<String>>>,
    // Dropped after the child is gone (fields drop in order after `drop`).
    _profile: TempDir,
}

impl std::fmt::Debug for Browser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Browser")
            .field("pid", &self.child.id())
            .finish_non_exhaustive()
    }
}

impl Browser {
    /// Starts headless Chromium and connects to its DevTools. Fails (never
    /// skips) when Chromium is missing.
    pub(crate) async fn launch() -> Result<Self> {
        let path = std::env::var_os("DUPLEX_CHROMIUM")
            .map_or_else(|| PathBuf::from(CHROMIUM), PathBuf::from);
        if !path.exists() {
            return Err(error(format!(
                "Chromium not found at {} (install Debian's `chromium`, as `cargo xtask test` \
                 does, or set DUPLEX_CHROMIUM): the browser tests cannot run without it",
                path.display()
            )));
        }
        let profile = TempDir::new("duplex-hub-chromium")
            .map_err(|e| error(format!("cannot create a profile directory: {e}")))?;
        let mut child = Command::new(&path)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                "--disable-dev-shm-usage",
                "--hide-scrollbars",
                "--mute-audio",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| error(format!("cannot start {}: {e}", path.display())))?;

        // A thread reads stderr for the whole life of the process (a full
        // pipe would stall Chromium), hands over the DevTools address and
        // keeps the last lines for failure messages.
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
                        && line.contains("DevTools listening on")
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
        let mut browser_parts = Some((child, profile));
        let url = match tokio::time::timeout(LAUNCH_TIMEOUT, address).await {
            Ok(Ok(url)) => url,
            outcome => {
                let (child, profile) = browser_parts.take().expect("not taken yet");
                end_child(child);
                drop(profile);
                let why = if outcome.is_err() {
                    format!("did not print its DevTools address within {LAUNCH_TIMEOUT:?}")
                } else {
                    "exited before printing its DevTools address".to_owned()
                };
                return Err(error(format!(
                    "Chromium {why}; its stderr:\n{}",
                    tail_of(&stderr)
                )));
            }
        };
        let (child, profile) = browser_parts.take().expect("not taken yet");
        let cdp = match Cdp::connect(&url).await {
            Ok(cdp) => cdp,
            Err(e) => {
                end_child(child);
                return Err(e);
            }
        };
        Ok(Self {
            child,
            cdp,
            stderr,
            _profile: profile,
        })
    }

    /// The DevTools connection, for commands to the browser itself.
    pub(crate) fn cdp(&self) -> &Cdp {
        &self.cdp
    }

    /// The last lines Chromium wrote to stderr.
    pub(crate) fn stderr_tail(&self) -> String {
        tail_of(&self.stderr)
    }

    /// Opens `url` in a new page with its own browser context (storage of
    /// its own) and a 1200×800 viewport, and waits for it to load.
    pub(crate) async fn new_page(&self, url: &str) -> Result<Page> {
        let context = self
            .cdp
            .call(
                "Target.createBrowserContext",
                json!({"disposeOnDetach": true}),
                None,
            )
            .await?["browserContextId"]
            .as_str()
            .ok_or_else(|| error("Target.createBrowserContext: no browserContextId"))?
            .to_owned();
        let target = self
            .cdp
            .call(
                "Target.createTarget",
                json!({"url": "about:blank", "browserContextId": context}),
                None,
            )
            .await?["targetId"]
            .as_str()
            .ok_or_else(|| error("Target.createTarget: no targetId"))?
            .to_owned();
        let session = self
            .cdp
            .call(
                "Target.attachToTarget",
                json!({"targetId": target, "flatten": true}),
                None,
            )
            .await?["sessionId"]
            .as_str()
            .ok_or_else(|| error("Target.attachToTarget: no sessionId"))?
            .to_owned();
        let page = Page {
            cdp: self.cdp.clone(),
            session,
            target,
        };
        for domain in [
            "Runtime.enable",
            "Page.enable",
            "Network.enable",
            "Log.enable",
        ] {
            page.call(domain, json!({})).await?;
        }
        page.set_viewport(1200, 800, false).await?;
        page.goto(url).await?;
        Ok(page)
    }

    /// Closes the browser through DevTools and waits (bounded) for the
    /// process to exit; dropping does the same with signals.
    pub(crate) async fn close(mut self) {
        let _ = tokio::time::timeout(
            Duration::from_secs(5),
            self.cdp.call("Browser.close", json!({}), None),
        )
        .await;
        let deadline = Instant::now() + EXIT_GRACE;
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Drop sends the signals.
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        terminate(&mut self.child);
    }
}

/// Ends a child that never became a [`Browser`].
fn end_child(mut child: Child) {
    terminate(&mut child);
}

/// SIGTERM to the one process we started (Chromium then closes its helper
/// processes itself), SIGKILL to it if it is still there after
/// [`EXIT_GRACE`], and reaps it.
fn terminate(child: &mut Child) {
    if let Ok(pid) = libc::pid_t::try_from(child.id())
        && pid > 1
    {
        // SAFETY: kill() takes no pointers; `pid` is the id of a child this
        // process spawned and has not reaped yet (try_wait found it running
        // or we are about to reap it), so it cannot name another process.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let deadline = Instant::now() + EXIT_GRACE;
        while Instant::now() < deadline {
            if matches!(child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn tail_of(lines: &Mutex<VecDeque<String>>) -> String {
    let lines = lines.lock().unwrap_or_else(|e| e.into_inner());
    lines.iter().cloned().collect::<Vec<_>>().join("\n")
}

/// Whether a JSON value counts as true in JavaScript.
fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0 && !f.is_nan()),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}

/// A key [`Page::press`] can press.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Key {
    /// Tab: the focus moves to the next control.
    Tab,
    /// Shift+Tab: the focus moves to the previous control.
    ShiftTab,
    /// Enter.
    Enter,
    /// The space bar.
    Space,
    /// Escape.
    Escape,
}

/// One page (tab) of the browser, attached through a flat session.
#[derive(Clone)]
pub(crate) struct Page {
    cdp: Cdp,
    session: String,
    target: String,
}

impl std::fmt::Debug for Page {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Page")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl Page {
    /// Sends a DevTools command to this page.
    pub(crate) async fn call(&self, method: &str, params: Value) -> Result<Value> {
        self.cdp.call(method, params, Some(&self.session)).await
    }

    /// Navigates to `url` and waits (20 s at most) until it has loaded.
    pub(crate) async fn goto(&self, url: &str) -> Result<()> {
        let answer = self.call("Page.navigate", json!({"url": url})).await?;
        if let Some(text) = answer.get("errorText").and_then(Value::as_str) {
            return Err(error(format!("cannot open {url}: {text}")));
        }
        self.wait_for(
            "document.readyState === 'complete'",
            Duration::from_secs(20),
        )
        .await?;
        Ok(())
    }

    /// Sets the viewport (CSS pixels); `mobile` emulates a phone.
    pub(crate) async fn set_viewport(&self, width: u32, height: u32, mobile: bool) -> Result<()> {
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile}),
        )
        .await?;
        Ok(())
    }

    /// Emulates `prefers-color-scheme: dark` (or light).
    pub(crate) async fn set_dark(&self, dark: bool) -> Result<()> {
        let scheme = if dark { "dark" } else { "light" };
        self.call(
            "Emulation.setEmulatedMedia",
            json!({"features": [{"name": "prefers-color-scheme", "value": scheme}]}),
        )
        .await?;
        Ok(())
    }

    /// Evaluates `js` (awaiting a promise it returns) and returns its value
    /// as JSON (`null` for `undefined`). A thrown exception is an error.
    pub(crate) async fn eval(&self, js: &str) -> Result<Value> {
        let answer = self
            .call(
                "Runtime.evaluate",
                json!({
                    "expression": js,
                    "awaitPromise": true,
                    "returnByValue": true,
                    "userGesture": true,
                }),
            )
            .await?;
        if let Some(details) = answer.get("exceptionDetails") {
            let text = details["exception"]["description"]
                .as_str()
                .or_else(|| details["text"].as_str())
                .unwrap_or("exception");
            return Err(error(format!("`{js}` threw: {text}")));
        }
        Ok(answer["result"]
            .get("value")
            .cloned()
            .unwrap_or(Value::Null))
    }

    /// Evaluates `predicate` every 100 ms until its value is truthy (in the
    /// JavaScript sense) and returns that value; an error after `timeout`,
    /// with the last value or exception and the page's console output.
    pub(crate) async fn wait_for(&self, predicate: &str, timeout: Duration) -> Result<Value> {
        let deadline = Instant::now() + timeout;
        let mut last = None;
        let mut polls = 0u32;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            polls += 1;
            match tokio::time::timeout(
                remaining.max(Duration::from_millis(1)),
                self.eval(predicate),
            )
            .await
            {
                Ok(Ok(value)) if truthy(&value) => return Ok(value),
                Ok(Ok(value)) => last = Some(format!("value {value}")),
                Ok(Err(e)) => last = Some(e.to_string()),
                // Keep what the last finished evaluation said.
                Err(_) => {}
            }
            if Instant::now() >= deadline {
                let last = last.unwrap_or_else(|| "no evaluation finished".to_owned());
                return Err(error(format!(
                    "timed out after {timeout:?} waiting for `{predicate}` ({polls} polls, \
                     last: {last}); page console:\n{}",
                    self.console().join("\n")
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Types `text` into the element matched by `selector` as a keyboard
    /// would (focus, then `input` events).
    pub(crate) async fn type_into(&self, selector: &str, text: &str) -> Result<()> {
        let focused = self
            .eval(&format!(
                "(() => {{ const el = document.querySelector({}); if (!el) return false; \
                 el.focus(); return document.activeElement === el; }})()",
                Value::String(selector.to_owned())
            ))
            .await?;
        if focused != Value::Bool(true) {
            return Err(error(format!("cannot focus `{selector}`")));
        }
        self.call("Input.insertText", json!({"text": text})).await?;
        Ok(())
    }

    /// Presses Enter in the focused element (submits its form).
    pub(crate) async fn press_enter(&self) -> Result<()> {
        for kind in ["keyDown", "keyUp"] {
            let mut event = json!({
                "type": kind,
                "key": "Enter",
                "code": "Enter",
                "windowsVirtualKeyCode": 13,
                "nativeVirtualKeyCode": 13,
            });
            if kind == "keyDown" {
                event["text"] = Value::String("\r".to_owned());
            }
            self.call("Input.dispatchKeyEvent", event).await?;
        }
        Ok(())
    }

    /// Presses and releases `key` (a [`Key`]) in the focused element, as a
    /// keyboard does: Tab moves the focus, Space and Enter activate.
    pub(crate) async fn press(&self, key: Key) -> Result<()> {
        let (name, code, vk, text, modifiers) = match key {
            Key::Tab => ("Tab", "Tab", 9, None, 0),
            Key::ShiftTab => ("Tab", "Tab", 9, None, 8),
            Key::Enter => ("Enter", "Enter", 13, Some("\r"), 0),
            Key::Space => (" ", "Space", 32, Some(" "), 0),
            Key::Escape => ("Escape", "Escape", 27, None, 0),
        };
        for kind in ["keyDown", "keyUp"] {
            let mut event = json!({
                "type": kind,
                "key": name,
                "code": code,
                "windowsVirtualKeyCode": vk,
                "nativeVirtualKeyCode": vk,
                "modifiers": modifiers,
            });
            if kind == "keyDown"
                && let Some(text) = text
            {
                event["text"] = Value::String(text.to_owned());
            }
            self.call("Input.dispatchKeyEvent", event).await?;
        }
        Ok(())
    }

    /// Types `text` into the focused element (`input` events), without
    /// moving the focus.
    pub(crate) async fn type_text(&self, text: &str) -> Result<()> {
        self.call("Input.insertText", json!({"text": text})).await?;
        Ok(())
    }

    /// Saves a PNG screenshot of the viewport to `path` (creating its
    /// directory).
    pub(crate) async fn screenshot(&self, path: &Path) -> Result<()> {
        let answer = self
            .call(
                "Page.captureScreenshot",
                json!({"format": "png", "captureBeyondViewport": false}),
            )
            .await?;
        let data = answer["data"]
            .as_str()
            .ok_or_else(|| error("Page.captureScreenshot: no data"))?;
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

    /// Cuts this page off the network (`true`) or reconnects it (`false`)
    /// with DevTools' offline emulation. Chromium 156 then fails new
    /// connections (`net::ERR_INTERNET_DISCONNECTED`) and turns
    /// `navigator.onLine` false, but does not close a WebSocket already
    /// open: it stays `OPEN` with nothing getting through, like a link that
    /// went silent (the client's ping timeout finds it). To drop a
    /// connection at once, cut it with [`crate::support::Relay`].
    pub(crate) async fn set_offline(&self, offline: bool) -> Result<()> {
        self.call(
            "Network.emulateNetworkConditions",
            json!({
                "offline": offline,
                "latency": 0,
                "downloadThroughput": -1,
                "uploadThroughput": -1,
            }),
        )
        .await?;
        Ok(())
    }

    /// The console messages and uncaught errors of this page so far.
    pub(crate) fn console(&self) -> Vec<String> {
        self.cdp.log_of(&self.session)
    }

    /// Closes the page.
    pub(crate) async fn close(self) -> Result<()> {
        self.cdp
            .call("Target.closeTarget", json!({"targetId": self.target}), None)
            .await?;
        Ok(())
    }
}
