//! Test support for the hub cluster: a Redis server of the test's own
//! ([`Redis`], plain or TLS with a CA made by the test: [`Pki`]), hub nodes
//! in this process ([`Node`]) or in a child process that a test can kill
//! ([`NodeProcess`]), a TCP link that a test can cut ([`Cut`]), HAProxy
//! ([`Haproxy`], and the configurations of docs/deploy.md:
//! [`deploy_doc_haproxy`]), a transport that keeps what it read
//! ([`Recorded`]), a log recorder ([`LogCapture`]) and a checker of message
//! streams ([`Stream`]).
//!
//! Everything listens on loopback, every wait is bounded, and every process
//! started here is stopped by the PID it was started with (on drop too).

#![allow(dead_code, unreachable_pub)]

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use duplex_hub::RedisOptions;
use duplex_hub::{Hub, HubConfig, Server};
use duplex_hub_proto::ServerMessage;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::common::{TestClient, http_get};

/// How long a node or server may take to come up.
pub const STARTUP: Duration = Duration::from_secs(15);

/// Broker options for tests: a dead node leaves presence within about 1.5 s,
/// and reconnection retries quickly.
pub fn fast_options() -> RedisOptions {
    RedisOptions {
        heartbeat: Duration::from_millis(250),
        node_expiry: Duration::from_millis(1000),
        command_timeout: Duration::from_secs(1),
        backoff_min: Duration::from_millis(50),
        backoff_max: Duration::from_millis(400),
        ..RedisOptions::default()
    }
}

/// A free TCP port on loopback (bound then released).
pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Finds `program` on `PATH` (or in the usual system directories).
pub fn find_program(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// Waits until `addr` accepts TCP connections, at most `within`.
pub fn wait_listening(addr: SocketAddr, within: Duration) -> bool {
    let deadline = std::time::Instant::now() + within;
    while std::time::Instant::now() < deadline {
        if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Stops a child we started, by its PID (SIGKILL), and reaps it.
fn kill_child(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// A CA made for one test and a server certificate it signed for
/// `localhost` and `127.0.0.1`, written as PEM files in a directory of the
/// test's own (removed when dropped).
pub struct Pki {
    dir: PathBuf,
    /// The CA certificate (PEM): what a client trusts.
    pub ca: PathBuf,
    /// The server certificate (PEM).
    pub cert: PathBuf,
    /// The server's private key (PEM, PKCS#8).
    pub key: PathBuf,
}

impl Pki {
    /// Makes one; `name` tells its directory apart.
    pub fn new(name: &str) -> Self {
        use rcgen::{
            BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair,
            KeyUsagePurpose,
        };
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, format!("duplex test CA {name}"));
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("CA key"))
            .expect("CA certificate");
        let key = KeyPair::generate().expect("server key");
        let params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("server params");
        let cert = params.signed_by(&key, &ca).expect("server certificate");
        let dir = std::env::temp_dir().join(format!(
            "duplex-pki-{name}-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let pki = Self {
            ca: dir.join("ca.pem"),
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
            dir,
        };
        std::fs::write(&pki.ca, ca.pem()).expect("write the CA");
        std::fs::write(&pki.cert, cert.pem()).expect("write the certificate");
        std::fs::write(&pki.key, key.serialize_pem()).expect("write the key");
        pki
    }

    /// The directory of its files (for more files of the test's own).
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A `redis-server` of the test's own on a free loopback port, without
/// persistence; with [`Redis::start_tls`] it speaks TLS only, with
/// [`Redis::start_with`] it keeps its files in a directory of its own and
/// takes more arguments. Stopped (by PID) when dropped.
pub struct Redis {
    port: u16,
    child: Option<Child>,
    tls: Option<Pki>,
    /// Its working directory (`--dir`), removed when dropped.
    dir: Option<PathBuf>,
    /// Arguments after the defaults (which they override).
    args: Vec<String>,
}

impl Redis {
    /// Starts one; panics with the fix if `redis-server` is missing.
    pub fn start() -> Self {
        let mut redis = Self {
            port: free_port(),
            child: None,
            tls: None,
            dir: None,
            args: Vec::new(),
        };
        redis.spawn();
        redis
    }

    /// Starts one working in a directory of its own ([`Redis::dir`], where
    /// `dump.rdb` and `appendonlydir/` go), with `args` after the defaults
    /// (`--save ""`, `--appendonly no`), which they override: for example
    /// `["--appendonly", "yes"]`, or `["--replicaof", "127.0.0.1", "PORT"]`.
    /// [`Redis::restart`] starts it again with the same directory and
    /// arguments.
    pub fn start_with(name: &str, args: &[&str]) -> Self {
        let port = free_port();
        let dir =
            std::env::temp_dir().join(format!("duplex-redis-{name}-{}-{port}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("redis dir");
        let mut redis = Self {
            port,
            child: None,
            tls: None,
            dir: Some(dir),
            args: args.iter().map(|&a| a.to_owned()).collect(),
        };
        redis.spawn();
        redis
    }

    /// Its working directory ([`Redis::start_with`] only).
    pub fn dir(&self) -> &Path {
        self.dir
            .as_deref()
            .expect("a redis started with start_with")
    }

    /// Starts one that accepts TLS only (`rediss://`, no plain port), with a
    /// certificate from a CA made for it ([`Redis::ca`]); clients need no
    /// certificate of their own.
    pub fn start_tls() -> Self {
        let mut redis = Self {
            port: free_port(),
            child: None,
            tls: Some(Pki::new("redis")),
            dir: None,
            args: Vec::new(),
        };
        redis.spawn();
        redis
    }

    /// The CA that signed its certificate (TLS only).
    pub fn ca(&self) -> &Path {
        &self.tls.as_ref().expect("a TLS redis").ca
    }

    /// Its certificates (TLS only).
    pub fn pki(&self) -> &Pki {
        self.tls.as_ref().expect("a TLS redis")
    }

    fn spawn(&mut self) {
        let Some(program) = find_program("redis-server") else {
            panic!(
                "redis-server is missing: the cluster tests need Debian's redis-server \
                 (`cargo xtask setup redis`, or `apt-get install redis-server`)"
            );
        };
        let port = self.port.to_string();
        let mut command = Command::new(program);
        match &self.tls {
            None => {
                command.args(["--port", &port]);
            }
            Some(pki) => {
                command
                    .args(["--port", "0", "--tls-port", &port])
                    .arg("--tls-cert-file")
                    .arg(&pki.cert)
                    .arg("--tls-key-file")
                    .arg(&pki.key)
                    .arg("--tls-ca-cert-file")
                    .arg(&pki.ca)
                    .args(["--tls-auth-clients", "no"]);
            }
        }
        let child = command
            .args([
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "no",
            ])
            .args(
                self.dir
                    .iter()
                    .flat_map(|dir| [OsStr::new("--dir"), dir.as_os_str()]),
            )
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        let deadline = std::time::Instant::now() + STARTUP;
        while std::time::Instant::now() < deadline {
            if self.ping() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server on port {} did not answer PING", self.port);
    }

    fn ping(&self) -> bool {
        let Ok(mut conn) = self
            .client()
            // Generous: a TLS handshake in a debug build on a loaded
            // machine can take longer than a plain connect.
            .get_connection_with_timeout(Duration::from_secs(2))
        else {
            return false;
        };
        redis::cmd("PING").query::<String>(&mut conn).is_ok()
    }

    /// A client of the test's own (trusting its CA when TLS).
    pub fn client(&self) -> redis::Client {
        match &self.tls {
            None => redis::Client::open(self.url()).expect("url"),
            Some(pki) => redis::Client::build_with_tls(
                self.url(),
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(std::fs::read(&pki.ca).expect("read the CA")),
                },
            )
            .expect("a TLS client"),
        }
    }

    /// `redis://127.0.0.1:PORT`, or `rediss://127.0.0.1:PORT` when TLS.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Kills it (SIGKILL: no goodbye to its clients, data lost).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_child(&mut child);
        }
    }

    /// Starts it again on the same port: empty, or, with
    /// [`Redis::start_with`], with what its files hold.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Runs one command (blocking; for checks between steps).
    pub fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> T {
        let mut conn = self
            .client()
            .get_connection_with_timeout(Duration::from_secs(2))
            .expect("connect to the test redis");
        cmd.query(&mut conn).expect("redis command")
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A hub node in this process, a member of the cluster through Redis.
pub struct Node {
    pub addr: SocketAddr,
    pub hub: Arc<Hub>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<usize>>,
}

impl Node {
    /// A node with the default configuration on `redis_url`.
    pub async fn start(redis_url: &str) -> Self {
        let config = HubConfig {
            // Tests keep clients open past the end: do not wait long for
            // their close handshakes.
            shutdown_grace: Duration::from_millis(500),
            ..HubConfig::default()
        };
        Self::start_with(config, redis_url, fast_options()).await
    }

    /// A node with `config` (its listen address is ignored) and `options`;
    /// returns once it is ready.
    pub async fn start_with(config: HubConfig, redis_url: &str, options: RedisOptions) -> Self {
        let node = Self::launch(config, redis_url, options)
            .await
            .expect("valid config");
        assert!(node.hub.wait_ready(STARTUP).await, "node connects to redis");
        node
    }

    /// A node serving at once, ready or not (see [`Node::start_with`]);
    /// the hub's error if it cannot be set up.
    pub async fn launch(
        mut config: HubConfig,
        redis_url: &str,
        options: RedisOptions,
    ) -> Result<Self, duplex_hub::HubError> {
        config.redis = Some(redis_url.to_owned());
        let hub = Hub::with_redis_options(config, options)?;
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let server = Server::from_listener(hub.clone(), listener).expect("server");
        let addr = server.local_addr();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));
        Ok(Self {
            addr,
            hub,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// `ws://ADDR/ws`.
    pub fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// A connected client.
    pub async fn client(&self) -> TestClient {
        client_at(&self.url()).await
    }

    /// An HTTP GET on the node: (status, body).
    pub async fn get(&self, path: &str) -> (u16, String) {
        http_get(self.addr, path).await
    }

    /// Stops it gracefully and leaves the cluster.
    pub async fn stop(mut self) {
        let _ = self.stop.take().expect("running").send(());
        let task = self.task.take().expect("running");
        let _ = tokio::time::timeout(Duration::from_secs(30), task).await;
        self.hub.leave_cluster().await;
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// A connected client of the hub at `url`.
pub async fn client_at(url: &str) -> TestClient {
    let mut client = TestClient::open(url, |r| r).await.expect("open");
    client.connect(None).await;
    client
}

/// The environment variable that makes the test binary's `node_process`
/// test run a node (see [`NodeProcess`]).
pub const NODE_REDIS_ENV: &str = "DUPLEX_CLUSTER_NODE_REDIS";

/// The environment variable carrying the node's configuration (TOML) to a
/// child process, when it is not the default (see [`NodeProcess::spawn_with`]).
pub const NODE_CONFIG_ENV: &str = "DUPLEX_CLUSTER_NODE_CONFIG";

/// What the child prints once it listens.
pub const LISTENING: &str = "DUPLEX_NODE_LISTENING ";

/// A hub node in a child process (this test binary, running its
/// `node_process` test), so that a test can kill it the hard way. The child
/// exits by itself when its stdin closes (when this process ends).
pub struct NodeProcess {
    pub addr: SocketAddr,
    child: Option<Child>,
}

impl NodeProcess {
    /// Starts a node on `redis_url` with [`fast_options`].
    pub fn spawn(redis_url: &str) -> Self {
        Self::spawn_with(redis_url, "")
    }

    /// Starts a node on `redis_url` with [`fast_options`] and the
    /// configuration `toml` (empty: the default).
    pub fn spawn_with(redis_url: &str, toml: &str) -> Self {
        let exe = std::env::current_exe().expect("the test binary");
        let mut child = Command::new(exe)
            .args([
                "--exact",
                "node_process",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env(NODE_REDIS_ENV, redis_url)
            .env(NODE_CONFIG_ENV, toml)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the node process");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                // libtest may have printed `test node_process ... ` first.
                if let Some(at) = line.find(LISTENING) {
                    let _ = tx.send(line[at + LISTENING.len()..].trim().to_owned());
                }
            }
        });
        let Ok(addr) = rx.recv_timeout(STARTUP) else {
            kill_child(&mut child);
            panic!("the node process did not start listening");
        };
        Self {
            addr: addr.parse().expect("an address"),
            child: Some(child),
        }
    }

    /// `ws://ADDR/ws`.
    pub fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// SIGKILL: no close frames, no goodbye to Redis.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_child(&mut child);
        }
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs a node for [`NodeProcess`] until stdin closes; prints
/// [`LISTENING`] and the address once it is ready.
pub fn run_node_process(redis_url: &str) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let config = match std::env::var(NODE_CONFIG_ENV) {
        Ok(toml) if !toml.is_empty() => HubConfig::from_toml(&toml).expect("the node's config"),
        _ => HubConfig::default(),
    };
    runtime.block_on(async {
        let node = Node::start_with(config, redis_url, fast_options()).await;
        println!("{LISTENING}{}", node.addr);
        let _ = tokio::task::spawn_blocking(|| {
            let mut sink = Vec::new();
            let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
        })
        .await;
    });
    std::process::exit(0);
}

/// A TCP link to a server that a test can cut: [`Cut::cut`] drops every
/// connection through it and refuses new ones until [`Cut::restore`];
/// [`Cut::retarget`] sends new connections elsewhere (a failover behind a
/// fixed address).
pub struct Cut {
    pub addr: SocketAddr,
    target: Arc<std::sync::Mutex<SocketAddr>>,
    open: Arc<AtomicBool>,
    generation: watch::Sender<u64>,
    task: JoinHandle<()>,
}

impl Cut {
    /// A link on a free loopback port to `target`.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let open = Arc::new(AtomicBool::new(true));
        let target = Arc::new(std::sync::Mutex::new(target));
        let (generation, _) = watch::channel(0u64);
        let task = {
            let (open, generation, target) = (open.clone(), generation.clone(), target.clone());
            tokio::spawn(async move {
                loop {
                    let Ok((inbound, _)) = listener.accept().await else {
                        continue;
                    };
                    if !open.load(Ordering::SeqCst) {
                        drop(inbound);
                        continue;
                    }
                    let mut cut = generation.subscribe();
                    let target = *target.lock().unwrap_or_else(|e| e.into_inner());
                    tokio::spawn(async move {
                        let Ok(outbound) = TcpStream::connect(target).await else {
                            return;
                        };
                        let (mut inbound, mut outbound) = (inbound, outbound);
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                            _ = cut.changed() => {}
                        }
                    });
                }
            })
        };
        Self {
            addr,
            target,
            open,
            generation,
            task,
        }
    }

    /// Sends new connections to `target` from now on (those open stay
    /// where they are: [`Cut::cut`] them to move them).
    pub fn retarget(&self, target: SocketAddr) {
        *self.target.lock().unwrap_or_else(|e| e.into_inner()) = target;
    }

    /// `redis://ADDR` (when the target is Redis).
    pub fn redis_url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// Drops every connection and refuses new ones.
    pub fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        self.generation.send_modify(|g| *g += 1);
    }

    /// Accepts connections again.
    pub fn restore(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

impl Drop for Cut {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// HAProxy in front of hub nodes, from a configuration the test writes.
/// Stopped (by PID) when dropped.
pub struct Haproxy {
    pub addr: SocketAddr,
    child: Option<Child>,
    dir: PathBuf,
}

impl Haproxy {
    /// Starts `haproxy -db -f FILE` with `config`, in which `{port}` is
    /// replaced by a free loopback port it listens on; panics with the fix
    /// if haproxy is missing.
    pub fn start(config: &str) -> Self {
        let Some(program) = find_program("haproxy") else {
            panic!(
                "haproxy is missing: the load-balancer test needs Debian's haproxy \
                 (`cargo xtask setup haproxy`, or `apt-get install haproxy`)"
            );
        };
        let port = free_port();
        let dir =
            std::env::temp_dir().join(format!("duplex-haproxy-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("haproxy.cfg");
        std::fs::write(&file, config.replace("{port}", &port.to_string())).expect("write config");
        let check = Command::new(&program)
            .arg("-c")
            .arg("-f")
            .arg(&file)
            .output()
            .expect("run haproxy -c");
        if !check.status.success() {
            let _ = std::fs::remove_dir_all(&dir);
        }
        assert!(
            check.status.success(),
            "haproxy refuses the configuration: {}{}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
        let child = Command::new(&program)
            .arg("-db")
            .arg("-f")
            .arg(&file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start haproxy");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut haproxy = Self {
            addr,
            child: Some(child),
            dir,
        };
        if !wait_listening(addr, STARTUP) {
            haproxy.stop();
            panic!("haproxy did not listen on {addr}");
        }
        haproxy
    }

    /// `ws://ADDR/ws`.
    pub fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// The directory of its configuration file.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_child(&mut child);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The HAProxy configuration docs/deploy.md gives, as the operator would
/// copy it: its full configuration (`global`, `defaults`, `frontend`) with
/// the `backend nodes` block that contains `backend_marker` (for example
/// `cookie DUPLEXNODE`), for nodes `a` and `b` on loopback. Only addresses
/// change (the doc's `bind :8080` becomes `{port}` for [`Haproxy::start`],
/// its servers `a` and `b`), and `maxconn` becomes 4096 so that HAProxy
/// needs no raised file limit; panics if the doc no longer has what this
/// replaces.
pub fn deploy_doc_haproxy(backend_marker: &str, a: SocketAddr, b: SocketAddr) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/deploy.md");
    let doc = std::fs::read_to_string(&path).expect("read docs/deploy.md");
    let blocks: Vec<&str> = doc.split("```").skip(1).step_by(2).collect();
    let full = blocks
        .iter()
        .find(|block| block.trim_start().starts_with("global"))
        .expect("docs/deploy.md has a full HAProxy configuration");
    let head = &full[..=full.find("\nbackend nodes").expect("a backend in it")];
    let backend = blocks
        .iter()
        .find(|block| {
            block.trim_start().starts_with("backend nodes") && block.contains(backend_marker)
        })
        .unwrap_or_else(|| panic!("docs/deploy.md has a backend with {backend_marker:?}"));
    let mut config = format!("{}{}", head.trim_start(), backend.trim_start());
    for (from, to) in [
        ("maxconn 100000", "maxconn 4096".to_owned()),
        ("bind :8080", "bind 127.0.0.1:{port}".to_owned()),
        ("10.0.0.11:8080", a.to_string()),
        ("10.0.0.12:8080", b.to_string()),
    ] {
        assert!(
            config.contains(from),
            "docs/deploy.md's HAProxy configuration no longer has {from:?}:\n{config}"
        );
        config = config.replace(from, &to);
    }
    config
}

/// A transport that keeps the first bytes it read (up to 64 KiB), so that
/// a test can look at an HTTP response that a WebSocket client consumed.
pub struct Recorded<S> {
    inner: S,
    read: Vec<u8>,
}

impl<S> Recorded<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            read: Vec::new(),
        }
    }

    /// The HTTP response head read first (up to its blank line), if whole.
    pub fn response_head(&self) -> Option<String> {
        let end = self.read.windows(4).position(|w| w == b"\r\n\r\n")?;
        Some(String::from_utf8_lossy(&self.read[..end]).into_owned())
    }

    /// The values of the response header `name` (any case), in order.
    pub fn response_headers(&self, name: &str) -> Vec<String> {
        let Some(head) = self.response_head() else {
            return Vec::new();
        };
        head.lines()
            .skip(1)
            .filter_map(|line| line.split_once(':'))
            .filter(|(key, _)| key.trim().eq_ignore_ascii_case(name))
            .map(|(_, value)| value.trim().to_owned())
            .collect()
    }
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Recorded<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let poll = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        let room = (64usize << 10).saturating_sub(self.read.len());
        let new = &buf.filled()[before..];
        let keep = &new[..new.len().min(room)];
        self.read.extend_from_slice(keep);
        poll
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Recorded<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A `tracing` subscriber that keeps every event as one line (`LEVEL
/// field=value …`), to check what an operator would read in the logs. Set
/// it for a thread with `tracing::subscriber::set_default` (in a
/// current-thread runtime, the hub's tasks log on that thread).
#[derive(Clone, Default)]
pub struct LogCapture {
    lines: Arc<std::sync::Mutex<Vec<String>>>,
}

impl LogCapture {
    /// The lines logged so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

struct LineVisitor<'a>(&'a mut String);

impl tracing::field::Visit for LineVisitor<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        use std::fmt::Write;
        let _ = write!(self.0, " {}={value:?}", field.name());
    }
}

impl tracing::Subscriber for LogCapture {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }

    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}

    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}

    fn event(&self, event: &tracing::Event<'_>) {
        let mut line = event.metadata().level().to_string();
        event.record(&mut LineVisitor(&mut line));
        self.lines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(line);
    }

    fn enter(&self, _: &tracing::span::Id) {}

    fn exit(&self, _: &tracing::span::Id) {}
}

/// One subscriber's view of a channel, checked as it arrives: every message
/// continues the one before (same epoch, next offset) unless a `gap` push
/// (or a `subscribed` with `gap: true`) came in between.
#[derive(Debug, Default)]
pub struct Stream {
    /// The epoch and offset of the position.
    pub position: Option<(String, u64)>,
    /// Messages received, as (epoch, offset).
    pub messages: Vec<(String, u64)>,
    /// Gap pushes received.
    pub gaps: Vec<(String, u64)>,
    /// What broke the rule, if anything.
    pub violations: Vec<String>,
}

impl Stream {
    /// Starts at a `subscribed` reply.
    pub fn from_subscribed(reply: &ServerMessage) -> Self {
        match reply {
            ServerMessage::Subscribed { epoch, offset, .. } => Self {
                position: Some((epoch.clone(), *offset)),
                ..Self::default()
            },
            other => panic!("expected subscribed, got {other:?}"),
        }
    }

    /// Takes in one push; ignores those of other kinds or channels.
    pub fn push(&mut self, channel: &str, message: &ServerMessage) {
        match message {
            ServerMessage::Message(publication) if publication.channel == channel => {
                let (epoch, last) = self.position.clone().unwrap_or_default();
                if publication.offset != last + 1 {
                    self.violations.push(format!(
                        "offset {} after {last} without a gap push",
                        publication.offset
                    ));
                }
                self.messages.push((epoch.clone(), publication.offset));
                self.position = Some((epoch, publication.offset));
            }
            ServerMessage::Gap {
                channel: c,
                epoch,
                offset,
            } if c == channel => {
                self.gaps.push((epoch.clone(), *offset));
                self.position = Some((epoch.clone(), *offset));
            }
            _ => {}
        }
    }

    /// The offsets received in `epoch`.
    pub fn offsets_in(&self, epoch: &str) -> Vec<u64> {
        self.messages
            .iter()
            .filter(|(e, _)| e == epoch)
            .map(|(_, o)| *o)
            .collect()
    }
}
