//! Shared by the process tests: a test CA and a `localhost` certificate it
//! signed, written as PEM files; `duplex serve` as a child process.

#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// PEM files of a `localhost` certificate and its key in a directory of
/// their own (removed on drop), and the CA to trust for them.
pub struct TestCert {
    pub dir: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The CA's certificate, PEM.
    pub ca_pem: String,
}

impl TestCert {
    /// A new CA and certificate, under a directory named after `label`.
    pub fn new(label: &str) -> Self {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        let dir = std::env::temp_dir().join(format!("duplex-{label}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        Self {
            dir,
            cert: cert_path,
            key: key_path,
            ca_pem: ca.pem(),
        }
    }

    /// The flags that serve TLS with it.
    pub fn flags(&self) -> [&str; 4] {
        [
            "--tls-cert",
            self.cert.to_str().unwrap(),
            "--tls-key",
            self.key.to_str().unwrap(),
        ]
    }

    /// Its CA, as a client's extra root.
    pub fn root(&self) -> duplex::tls::CaCertificate {
        duplex::tls::CaCertificate::Pem(self.ca_pem.clone().into_bytes())
    }
}

impl Drop for TestCert {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A running `duplex serve`, killed on drop if still running.
pub struct ServeProcess {
    pub child: Child,
    pub addr: String,
    /// Its log lines up to the one announcing the address.
    pub log_head: Vec<String>,
    /// Its log lines after that one, as they come.
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl ServeProcess {
    /// Waits (up to 5 s) until its log has a line for which `pred` holds;
    /// returns every such line logged by then.
    pub fn wait_log(&self, pred: impl Fn(&str) -> bool) -> Vec<String> {
        for _ in 0..50 {
            let lines: Vec<String> = self
                .log_head
                .iter()
                .chain(self.log.lock().unwrap().iter())
                .filter(|line| pred(line))
                .cloned()
                .collect();
            if !lines.is_empty() {
                return lines;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("no such log line in {:#?}", self.log.lock().unwrap());
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn start_serve(extra: &[&str]) -> ServeProcess {
    start_serve_with_env(extra, &[])
}

/// `duplex serve` with these flags and environment variables.
pub fn start_serve_with_env(extra: &[&str], env: &[(&str, &str)]) -> ServeProcess {
    let mut child = Command::new(env!("CARGO_BIN_EXE_duplex"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(extra)
        .envs(env.iter().copied())
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .expect("start duplex serve");
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let mut log_head = Vec::new();
    let addr = loop {
        let line = lines.next().expect("duplex serve exited early").unwrap();
        log_head.push(line.clone());
        if let Some(addr) = listening_address(&line) {
            break addr;
        }
    };
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    ServeProcess {
        child,
        addr,
        log_head,
        log,
    }
}

/// The address in the "hub listening" log line, human or JSON.
pub fn listening_address(line: &str) -> Option<String> {
    if line.starts_with('{') {
        let event: serde_json::Value = serde_json::from_str(line).ok()?;
        let fields = event.get("fields")?;
        (fields.get("message")?.as_str()? == "hub listening")
            .then(|| fields.get("address")?.as_str().map(str::to_owned))?
    } else if line.contains("hub listening") {
        let rest = line.split("address=").nth(1)?;
        Some(rest.split_whitespace().next()?.to_owned())
    } else {
        None
    }
}
