//! `duplex connect` as a process, against servers in the test: standard
//! input and output as message streams, binary encodings, request options,
//! the frame and handshake logs, TLS, a proxy, pings, `--echo`, and the exit
//! status for each way a connection ends.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::{Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use duplex::tls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use duplex::tls::{self, TlsAcceptor};
use duplex::{Accept, CloseCode, Config, Message, Reject, WebSocket};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::Command;
use tokio::sync::mpsc;
use tokio::time::timeout;

/// Bound on every wait, including each run of the binary.
const LIMIT: Duration = Duration::from_secs(15);

type Handler = Arc<dyn Fn(TcpStream) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// Serves each TCP connection on 127.0.0.1 with `handler`.
async fn serve(
    handler: impl Fn(TcpStream) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync + 'static,
) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handler: Handler = Arc::new(handler);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(handler(tcp));
        }
    });
    addr
}

async fn echo_loop<S: AsyncRead + AsyncWrite + Unpin>(mut ws: WebSocket<S>) {
    while let Some(Ok(message)) = ws.next().await {
        if ws.send(message).await.is_err() {
            break;
        }
    }
}

/// A WebSocket echo server.
async fn echo_server() -> SocketAddr {
    serve(|tcp| {
        Box::pin(async move {
            if let Ok(ws) = duplex::accept(tcp).await {
                echo_loop(ws).await;
            }
        })
    })
    .await
}

/// Runs `duplex connect ARGS` with `input` on standard input (closed after
/// it, or after `hold` when given).
async fn run_with(args: &[&str], input: &str, hold: Option<Duration>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_duplex"))
        .arg("connect")
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start duplex connect");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).await.unwrap();
    let feeder = tokio::spawn(async move {
        if let Some(hold) = hold {
            tokio::time::sleep(hold).await;
        }
        drop(stdin);
    });
    let output = timeout(LIMIT, child.wait_with_output())
        .await
        .expect("duplex connect ends in time")
        .unwrap();
    feeder.abort();
    output
}

async fn run(args: &[&str], input: &str) -> Output {
    run_with(args, input, None).await
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn status(output: &Output) -> i32 {
    output.status.code().expect("exited")
}

#[tokio::test]
async fn lines_in_messages_out_and_a_clean_exit() {
    let addr = echo_server().await;
    let output = run(&[&format!("ws://{addr}/")], "hello\nworld\n").await;
    assert_eq!(stdout(&output), "hello\nworld\n", "{}", stderr(&output));
    assert_eq!(status(&output), 0, "{}", stderr(&output));
    assert!(stderr(&output).contains("closed: code 1000"));
}

#[tokio::test]
async fn binary_in_hex_and_base64_both_ways() {
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    let addr = serve(move |tcp| {
        let seen_tx = seen_tx.clone();
        Box::pin(async move {
            let mut ws = duplex::accept(tcp).await.unwrap();
            while let Some(Ok(message)) = ws.next().await {
                let _ = seen_tx.send(message.clone());
                if ws.send(message).await.is_err() {
                    break;
                }
            }
        })
    })
    .await;
    let url = format!("ws://{addr}/");
    let output = run(&[&url, "--binary"], "68656c6c6f\n00 ff\n").await;
    assert_eq!(stdout(&output), "68656c6c6f\n00ff\n", "{}", stderr(&output));
    assert_eq!(seen.recv().await.unwrap(), Message::binary(&b"hello"[..]));
    assert_eq!(seen.recv().await.unwrap(), Message::binary(&[0u8, 255][..]));
    let output = run(&[&url, "--binary", "base64"], "aGVsbG8=\nnot base64!\n").await;
    assert_eq!(stdout(&output), "aGVsbG8=\n", "{}", stderr(&output));
    assert!(stderr(&output).contains("not sent: invalid base64"));
    assert_eq!(status(&output), 0);
    assert_eq!(seen.recv().await.unwrap(), Message::binary(&b"hello"[..]));
}

/// What the server saw of a handshake.
#[derive(Debug)]
struct Seen {
    header: Option<String>,
    origin: Option<String>,
    protocols: Vec<String>,
    extensions: Vec<String>,
}

#[tokio::test]
async fn headers_origin_subprotocols_and_compression_reach_the_server() {
    let (seen_tx, mut handshakes) = mpsc::unbounded_channel();
    let addr = serve(move |tcp| {
        let seen_tx = seen_tx.clone();
        Box::pin(async move {
            let accepted = duplex::accept_with(tcp, &Config::default(), |request| {
                let _ = seen_tx.send(Seen {
                    header: request
                        .headers()
                        .get("x-token")
                        .map(|v| v.to_str().unwrap().to_owned()),
                    origin: request.origin().map(str::to_owned),
                    protocols: request.protocols().to_vec(),
                    extensions: request
                        .extensions()
                        .iter()
                        .map(|e| e.name.clone())
                        .collect(),
                });
                Ok(Accept {
                    protocol: request.protocols().first().map(|p| p.as_str().into()),
                    ..Accept::default()
                })
            })
            .await;
            if let Ok(ws) = accepted {
                echo_loop(ws).await;
            }
        })
    })
    .await;
    let url = format!("ws://{addr}/");
    let output = run(
        &[
            &url,
            "-H",
            "X-Token: abc 123",
            "--origin",
            "https://example.test",
            "--subprotocol",
            "chat.v2",
            "--subprotocol",
            "chat.v1",
            "--no-compress",
        ],
        "",
    )
    .await;
    assert_eq!(status(&output), 0, "{}", stderr(&output));
    let seen = handshakes.recv().await.unwrap();
    assert_eq!(seen.header.as_deref(), Some("abc 123"));
    assert_eq!(seen.origin.as_deref(), Some("https://example.test"));
    assert_eq!(seen.protocols, ["chat.v2", "chat.v1"]);
    assert!(seen.extensions.is_empty(), "{:?}", seen.extensions);
    // Compression is offered unless refused.
    run(&[&url], "").await;
    let seen = handshakes.recv().await.unwrap();
    assert_eq!(seen.extensions, ["permessage-deflate"]);
    // A malformed header is a usage error.
    let output = run(&[&url, "-H", "no colon"], "").await;
    assert_eq!(status(&output), 2);
}

#[tokio::test]
async fn show_frames_and_show_handshake_log_the_wire_on_stderr() {
    let addr = echo_server().await;
    // Long enough to be compressed.
    let line = format!("{}\n", "ha".repeat(150));
    let output = run(
        &[
            &format!("ws://{addr}/chat"),
            "--show-frames",
            "--show-handshake",
        ],
        &line,
    )
    .await;
    assert_eq!(stdout(&output), line);
    assert_eq!(status(&output), 0);
    let log = stderr(&output);
    for expected in [
        ">> GET /chat HTTP/1.1",
        ">> sec-websocket-key: ",
        "<< HTTP/1.1 101 Switching Protocols",
        "<< sec-websocket-accept: ",
        "<< sec-websocket-extensions: permessage-deflate",
        // Compressed (RSV1) and masked from the client; the server's not.
        ">> frame op=text fin=1 rsv=100 len=",
        "<< frame op=text fin=1 rsv=100 len=",
        ">> frame op=close fin=1 rsv=000 len=2 masked=yes code=1000 reason=\"\"",
        "<< frame op=close fin=1 rsv=000 len=2 masked=no code=1000 reason=\"\"",
    ] {
        assert!(
            log.to_lowercase().contains(&expected.to_lowercase()),
            "{expected:?} not in:\n{log}"
        );
    }
    assert!(log.contains("masked=yes t=+"), "{log}");
    // Without compression the text frame is its own length.
    let output = run(
        &[&format!("ws://{addr}/"), "--show-frames", "--no-compress"],
        "hello\n",
    )
    .await;
    let log = stderr(&output);
    assert!(
        log.contains(">> frame op=text fin=1 rsv=000 len=5 masked=yes"),
        "{log}"
    );
    assert!(
        log.contains("<< frame op=text fin=1 rsv=000 len=5 masked=no"),
        "{log}"
    );
}

#[tokio::test]
async fn the_exit_status_tells_how_the_connection_ended() {
    async fn server(
        end: impl Fn(WebSocket<TcpStream>) -> Pin<Box<dyn Future<Output = ()> + Send>>
        + Send
        + Sync
        + 'static,
    ) -> String {
        let end = Arc::new(end);
        let addr = serve(move |tcp| {
            let end = end.clone();
            Box::pin(async move {
                if let Ok(ws) = duplex::accept(tcp).await {
                    end(ws).await;
                }
            })
        })
        .await;
        format!("ws://{addr}/")
    }
    let hold = Some(Duration::from_secs(5));

    let going_away = server(|mut ws| {
        Box::pin(async move {
            let _ = ws.close(CloseCode::GOING_AWAY, "restarting").await;
        })
    })
    .await;
    let output = run_with(&[&going_away], "", hold).await;
    assert_eq!(status(&output), 0, "{}", stderr(&output));

    let unauthorized = server(|mut ws| {
        Box::pin(async move {
            let _ = ws.close(CloseCode(4001), "who are you").await;
        })
    })
    .await;
    let output = run_with(&[&unauthorized], "", hold).await;
    assert_eq!(status(&output), 5, "{}", stderr(&output));
    assert!(stderr(&output).contains("code 4001 reason \"who are you\" clean true"));

    let dropped = server(|ws| Box::pin(async move { drop(ws) })).await;
    let output = run_with(&[&dropped], "", hold).await;
    assert_eq!(status(&output), 6, "{}", stderr(&output));

    let refusing = serve(|tcp| {
        Box::pin(async move {
            let _ = duplex::accept_with(tcp, &Config::default(), |_| {
                Err(Reject::new(http::StatusCode::FORBIDDEN, "not you"))
            })
            .await;
        })
    })
    .await;
    let output = run(&[&format!("ws://{refusing}/")], "").await;
    assert_eq!(status(&output), 4, "{}", stderr(&output));
    assert!(stderr(&output).contains("403"), "{}", stderr(&output));

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let output = run(&[&format!("ws://127.0.0.1:{port}/")], "").await;
    assert_eq!(status(&output), 3, "{}", stderr(&output));

    let output = run(&["http://example.test/"], "").await;
    assert_eq!(status(&output), 2, "{}", stderr(&output));
}

/// A CA and a certificate it signed for 127.0.0.1 and localhost: (the CA's
/// PEM, the server's TLS config).
fn pki() -> (String, Arc<tls::rustls::ServerConfig>) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let config = tls::server_config(
        vec![CertificateDer::from(cert.der().to_vec())],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    )
    .unwrap();
    (ca.pem(), config)
}

#[tokio::test]
async fn wss_with_a_private_ca_or_insecure() {
    let (ca_pem, config) = pki();
    let acceptor = TlsAcceptor::from(config);
    let addr = serve(move |tcp| {
        let acceptor = acceptor.clone();
        Box::pin(async move {
            let Ok(stream) = tls::accept(&acceptor, tcp, Duration::from_secs(5)).await else {
                return;
            };
            if let Ok(ws) = duplex::accept(stream).await {
                echo_loop(ws).await;
            }
        })
    })
    .await;
    let ca_file: PathBuf =
        std::env::temp_dir().join(format!("duplex-connect-ca-{}.pem", std::process::id()));
    std::fs::write(&ca_file, ca_pem).unwrap();
    let url = format!("wss://127.0.0.1:{}/", addr.port());

    let output = run(&[&url, "--ca", ca_file.to_str().unwrap()], "secure\n").await;
    assert_eq!(stdout(&output), "secure\n", "{}", stderr(&output));
    assert_eq!(status(&output), 0);

    // The frame log sees the plaintext inside TLS.
    let output = run(
        &[&url, "--ca", ca_file.to_str().unwrap(), "--show-frames"],
        "x\n",
    )
    .await;
    assert_eq!(stdout(&output), "x\n", "{}", stderr(&output));
    assert!(stderr(&output).contains(">> frame op=text"));

    let output = run(&[&url], "untrusted\n").await;
    assert_eq!(status(&output), 3, "{}", stderr(&output));
    assert!(stdout(&output).is_empty());
    // In words, with the flag that fixes it, and one TLS prefix.
    let told = stderr(&output);
    assert!(
        told.contains("not signed by a CA this client trusts"),
        "{told}"
    );
    assert!(told.contains("pass --ca FILE"), "{told}");
    assert!(
        !told.contains("UnknownIssuer,") && told.matches("TLS").count() == 1,
        "{told}"
    );

    let output = run(&[&url, "--insecure"], "anyway\n").await;
    assert_eq!(stdout(&output), "anyway\n", "{}", stderr(&output));
    assert!(stderr(&output).contains("not checked"));

    let output = run(&[&url, "--ca", "/nonexistent/ca.pem"], "").await;
    assert_eq!(status(&output), 1, "{}", stderr(&output));
    let _ = std::fs::remove_file(ca_file);
}

#[tokio::test]
async fn through_an_http_connect_proxy() {
    let target = echo_server().await;
    let (asked_tx, mut asked) = mpsc::unbounded_channel::<String>();
    let proxy = serve(move |mut client| {
        let asked_tx = asked_tx.clone();
        Box::pin(async move {
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                if client.read(&mut byte).await.unwrap_or(0) == 0 {
                    return;
                }
                head.push(byte[0]);
            }
            let head = String::from_utf8(head).unwrap();
            let line = head.lines().next().unwrap().to_owned();
            let authority = line.split(' ').nth(1).unwrap().to_owned();
            let _ = asked_tx.send(line);
            let mut upstream = TcpStream::connect(authority).await.unwrap();
            client
                .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                .await
                .unwrap();
            let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
        })
    })
    .await;
    for extra in [&[][..], &["--show-frames"][..]] {
        let mut args = vec![
            format!("ws://{target}/"),
            "--proxy".into(),
            format!("http://{proxy}"),
        ];
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let output = run(&args, "via proxy\n").await;
        assert_eq!(stdout(&output), "via proxy\n", "{}", stderr(&output));
        assert_eq!(
            asked.recv().await.unwrap(),
            format!("CONNECT {target} HTTP/1.1")
        );
    }
}

#[tokio::test]
async fn ping_interval_pings_and_the_server_answers() {
    let addr = echo_server().await;
    let output = run_with(
        &[
            &format!("ws://{addr}/"),
            "--ping-interval",
            "0.2",
            "--show-frames",
        ],
        "",
        Some(Duration::from_millis(900)),
    )
    .await;
    assert_eq!(status(&output), 0, "{}", stderr(&output));
    let log = stderr(&output);
    let pings = log.matches(">> frame op=ping").count();
    let pongs = log.matches("<< frame op=pong").count();
    assert!(pings >= 2, "{pings} pings:\n{log}");
    assert!(pongs >= 2, "{pongs} pongs:\n{log}");
}

#[tokio::test]
async fn echo_sends_back_what_arrives_as_it_came() {
    let (back_tx, mut back) = mpsc::unbounded_channel();
    let addr = serve(move |tcp| {
        let back_tx = back_tx.clone();
        Box::pin(async move {
            let mut ws = duplex::accept(tcp).await.unwrap();
            for message in [Message::text("abc"), Message::binary(&[1u8, 2, 3][..])] {
                ws.send(message.clone()).await.unwrap();
                let echoed = ws.next().await.unwrap().unwrap();
                let _ = back_tx.send(echoed == message);
            }
            let _ = ws.close(CloseCode::NORMAL, "").await;
        })
    })
    .await;
    let output = run_with(
        &[&format!("ws://{addr}/"), "--echo"],
        "",
        Some(Duration::from_secs(5)),
    )
    .await;
    assert_eq!(status(&output), 0, "{}", stderr(&output));
    assert!(stdout(&output).is_empty());
    assert!(back.recv().await.unwrap());
    assert!(back.recv().await.unwrap());
}

#[tokio::test]
async fn keep_open_waits_for_the_server() {
    let addr = serve(|tcp| {
        Box::pin(async move {
            let mut ws = duplex::accept(tcp).await.unwrap();
            let first = ws.next().await.unwrap().unwrap();
            // Answer after the client's input has ended.
            tokio::time::sleep(Duration::from_millis(300)).await;
            ws.send(first).await.unwrap();
            let _ = ws.close(CloseCode::NORMAL, "done").await;
        })
    })
    .await;
    let output = run(&[&format!("ws://{addr}/"), "--keep-open"], "later\n").await;
    assert_eq!(stdout(&output), "later\n", "{}", stderr(&output));
    assert_eq!(status(&output), 0);
    assert!(stderr(&output).contains("reason \"done\""));
}

/// A server that answers each text message that is a JSON object with an
/// `"id"` below 100 with `{"id":ID,"op":"ok"}`, `delay` later, and
/// nothing else. It keeps reading meanwhile (as the hub does with
/// publishes in flight), so a close that arrives before the replies ends
/// the connection without them.
async fn slow_replier(delay: Duration) -> SocketAddr {
    serve(move |tcp| {
        Box::pin(async move {
            let mut ws = duplex::accept(tcp).await.unwrap();
            let mut due = std::collections::VecDeque::new();
            loop {
                let next = due.front().map(|(at, _)| *at);
                tokio::select! {
                    item = ws.next() => {
                        let Some(Ok(Message::Text(text))) = item else {
                            if item.is_none() { break } else { continue }
                        };
                        let value = serde_json::from_str::<serde_json::Value>(text.as_str());
                        if let Some(id) = value.ok().and_then(|v| v.get("id")?.as_u64())
                            && id < 100
                        {
                            due.push_back((tokio::time::Instant::now() + delay, id));
                        }
                    }
                    () = async { tokio::time::sleep_until(next.unwrap()).await },
                        if next.is_some() => {
                        let (_, id) = due.pop_front().unwrap();
                        let reply = format!("{{\"id\":{id},\"op\":\"ok\"}}");
                        if ws.send(Message::text(reply)).await.is_err() {
                            break;
                        }
                    }
                }
            }
        })
    })
    .await
}

#[tokio::test]
async fn at_end_of_input_the_replies_owed_are_awaited_before_closing() {
    let addr = slow_replier(Duration::from_millis(300)).await;
    let input = "{\"op\":\"connect\",\"id\":1}\n{\"op\":\"publish\",\"id\":2}\nno id\n";
    let output = run(&[&format!("ws://{addr}/")], input).await;
    assert_eq!(
        stdout(&output),
        "{\"id\":1,\"op\":\"ok\"}\n{\"id\":2,\"op\":\"ok\"}\n",
        "{}",
        stderr(&output)
    );
    assert_eq!(status(&output), 0, "{}", stderr(&output));
}

#[tokio::test]
async fn replies_still_owed_after_the_wait_are_counted_and_fail_the_exit() {
    let addr = slow_replier(Duration::from_millis(10)).await;
    let input = "{\"id\":1}\n{\"id\":100}\n{\"id\":101}\n";
    let started = std::time::Instant::now();
    let output = run(&[&format!("ws://{addr}/"), "--reply-wait", "0.5"], input).await;
    assert_eq!(stdout(&output), "{\"id\":1,\"op\":\"ok\"}\n");
    assert_eq!(status(&output), 7, "{}", stderr(&output));
    assert!(
        stderr(&output).contains("2 request(s) sent with an \"id\" got no reply"),
        "{}",
        stderr(&output)
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_ca_certificate_serving_as_the_servers_own_is_named() {
    // What `openssl req -x509` makes by default: self-signed, CA:TRUE.
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).unwrap();
    let config = tls::server_config(
        vec![CertificateDer::from(cert.der().to_vec())],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    )
    .unwrap();
    let acceptor = TlsAcceptor::from(config);
    let addr = serve(move |tcp| {
        let acceptor = acceptor.clone();
        Box::pin(async move {
            let _ = tls::accept(&acceptor, tcp, Duration::from_secs(5)).await;
        })
    })
    .await;
    let ca_file: PathBuf =
        std::env::temp_dir().join(format!("duplex-connect-selfca-{}.pem", std::process::id()));
    std::fs::write(&ca_file, cert.pem()).unwrap();
    let url = format!("wss://127.0.0.1:{}/", addr.port());
    let output = run(&[&url, "--ca", ca_file.to_str().unwrap()], "").await;
    let _ = std::fs::remove_file(ca_file);
    let told = stderr(&output);
    assert_eq!(status(&output), 3, "{told}");
    assert!(
        told.contains("is a CA certificate (basicConstraints CA:TRUE"),
        "{told}"
    );
    assert!(!told.contains("OtherError"), "{told}");
}

#[tokio::test]
async fn a_port_past_65535_is_a_usage_error() {
    let output = run(&["ws://127.0.0.1:99999/"], "").await;
    assert_eq!(status(&output), 2, "{}", stderr(&output));
    assert!(
        stderr(&output).contains("invalid port \"99999\""),
        "{}",
        stderr(&output)
    );
}
