//! `duplex serve --api-listen` and `duplex api` as real processes: the key
//! from the environment, a call's JSON reply on stdout, a non-zero exit on
//! an error reply.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const KEY: &str = "process-test-api-key-0123";

/// A running `duplex serve`, killed on drop.
struct Serve(std::process::Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn api(url: &str, key: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_duplex"))
        .arg("api")
        .args(args)
        .args(["--url", url])
        .env("DUPLEX_API_KEY", key)
        .output()
        .expect("run duplex api")
}

#[test]
fn duplex_api_calls_the_server_api_of_duplex_serve() {
    // A free loopback port for the API (the hub's own is 0).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let _serve = Serve(
        Command::new(env!("CARGO_BIN_EXE_duplex"))
            .args(["serve", "--listen", "127.0.0.1:0", "--api-listen", &listen])
            .env("DUPLEX_API_KEY", KEY)
            .stderr(Stdio::null())
            .spawn()
            .expect("start duplex serve"),
    );
    let url = format!("http://{listen}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let info = loop {
        let out = api(&url, KEY, &["info"]);
        if out.status.success() {
            break out;
        }
        assert!(Instant::now() < deadline, "the API never answered: {out:?}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let reply: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(reply["nodes"].as_array().unwrap().len(), 1);
    let out = api(
        &url,
        KEY,
        &["publish", r#"{"channel":"news","data":{"n":1}}"#],
    );
    assert!(out.status.success(), "{out:?}");
    let reply: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(reply["offset"], 1);
    // An error reply: printed, and exit code 1.
    let out = api(&url, KEY, &["publish", r#"{"channel":7}"#]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let reply: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(reply["error"]["code"], "invalid_params");
    let out = api(&url, "a-wrong-key-0123456789", &["info"]);
    assert_eq!(out.status.code(), Some(1));
    // Not JSON: refused before sending.
    assert!(!api(&url, KEY, &["publish", "{"]).status.success());
}

#[test]
fn serve_refuses_an_api_without_a_key() {
    let out = Command::new(env!("CARGO_BIN_EXE_duplex"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--api-listen",
            "127.0.0.1:0",
        ])
        .env_remove("DUPLEX_API_KEY")
        .output()
        .expect("run duplex serve");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("at least one key"), "{stderr}");
}
