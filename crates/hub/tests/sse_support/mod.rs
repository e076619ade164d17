//! A client of the hub's HTTP transports for the tests: a Server-Sent
//! Events reader over a raw HTTP/1.1 connection (chunked or not), and a hub
//! session over `GET /session` + `POST /session`.

#![allow(dead_code, unreachable_pub)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use duplex_hub_proto::{Frame, ServerMessage, decode_server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long any single wait may take.
pub const WAIT: Duration = Duration::from_secs(10);

/// One SSE event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Event {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
}

/// A response head: status and headers (names lower-cased).
#[derive(Debug, Clone)]
pub struct Head {
    pub status: u16,
    pub headers: Vec<(String, String)>,
}

impl Head {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// An open `text/event-stream` response.
pub struct EventStream {
    pub head: Head,
    tcp: TcpStream,
    raw: Vec<u8>,
    chunked: bool,
    /// Decoded body not yet parsed into events.
    text: String,
    events: VecDeque<Event>,
    /// Comment lines seen.
    pub comments: usize,
    ended: bool,
}

/// Sends `GET path` with `headers` to `addr`; the stream, or the status
/// and body of a response that is not one.
pub async fn get_stream(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<EventStream, (u16, String)> {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    let mut request =
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    tcp.write_all(request.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    let end = loop {
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
        let mut buf = [0u8; 4096];
        let n = tokio::time::timeout(WAIT, tcp.read(&mut buf))
            .await
            .expect("head in time")
            .expect("read");
        assert!(n > 0, "connection closed before the head");
        raw.extend_from_slice(&buf[..n]);
    };
    let head_text = String::from_utf8_lossy(&raw[..end]).into_owned();
    raw.drain(..end + 4);
    let mut lines = head_text.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let head = Head { status, headers };
    if status != 200 {
        let _ = tokio::time::timeout(WAIT, tcp.read_to_end(&mut raw)).await;
        return Err((status, String::from_utf8_lossy(&raw).into_owned()));
    }
    let chunked = head
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    Ok(EventStream {
        head,
        tcp,
        raw,
        chunked,
        text: String::new(),
        events: VecDeque::new(),
        comments: 0,
        ended: false,
    })
}

impl EventStream {
    /// The next event; `None` once the stream ended.
    pub async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.events.pop_front() {
                return Some(event);
            }
            if self.ended {
                return None;
            }
            self.decode();
            self.parse();
            if !self.events.is_empty() || self.ended {
                continue;
            }
            let mut buf = [0u8; 16384];
            let n = tokio::time::timeout(WAIT, self.tcp.read(&mut buf))
                .await
                .expect("an event in time")
                .unwrap_or(0);
            if n == 0 {
                self.ended = true;
                continue;
            }
            self.raw.extend_from_slice(&buf[..n]);
        }
    }

    /// The next event that is not a comment, within `within`; `None` when
    /// none came (or the stream ended).
    pub async fn next_within(&mut self, within: Duration) -> Option<Event> {
        tokio::time::timeout(within, self.next())
            .await
            .ok()
            .flatten()
    }

    /// Moves the body from `raw` to `text`, undoing the chunking.
    fn decode(&mut self) {
        if !self.chunked {
            self.text.push_str(&String::from_utf8_lossy(&self.raw));
            self.raw.clear();
            return;
        }
        loop {
            let Some(line_end) = self.raw.windows(2).position(|w| w == b"\r\n") else {
                return;
            };
            let size = usize::from_str_radix(
                std::str::from_utf8(&self.raw[..line_end])
                    .expect("chunk size")
                    .trim(),
                16,
            )
            .expect("chunk size");
            if size == 0 {
                self.ended = true;
                self.raw.clear();
                return;
            }
            if self.raw.len() < line_end + 2 + size + 2 {
                return;
            }
            let chunk = &self.raw[line_end + 2..line_end + 2 + size];
            self.text
                .push_str(std::str::from_utf8(chunk).expect("UTF-8 chunk"));
            self.raw.drain(..line_end + 2 + size + 2);
        }
    }

    fn parse(&mut self) {
        while let Some(end) = self.text.find("\n\n") {
            let block: String = self.text.drain(..end + 2).collect();
            let mut event = Event::default();
            let mut data = Vec::new();
            let mut any = false;
            for line in block.lines() {
                if line.starts_with(':') {
                    self.comments += 1;
                    continue;
                }
                let (field, value) = line.split_once(':').unwrap_or((line, ""));
                let value = value.strip_prefix(' ').unwrap_or(value);
                match field {
                    "id" => event.id = Some(value.to_owned()),
                    "event" => event.event = Some(value.to_owned()),
                    "data" => {
                        data.push(value.to_owned());
                        any = true;
                    }
                    _ => {}
                }
            }
            if any {
                event.data = data.join("\n");
                self.events.push_back(event);
            }
        }
    }
}

/// A hub session over the HTTP transports.
pub struct HttpSession {
    pub addr: SocketAddr,
    pub id: String,
    pub stream: Option<EventStream>,
    /// The last numbered event received.
    pub last: u64,
    /// The close event, once received: (code, reason).
    pub closed: Option<(u16, String)>,
}

impl HttpSession {
    /// Opens a session's stream at `addr` (with `headers`).
    pub async fn open(addr: SocketAddr, headers: &[(&str, &str)]) -> Self {
        let mut stream = get_stream(addr, "/session", headers)
            .await
            .expect("a session stream");
        let open = stream.next().await.expect("the open event");
        assert_eq!(open.event.as_deref(), Some("open"), "{open:?}");
        let data: serde_json::Value = serde_json::from_str(&open.data).expect("JSON");
        let id = data["session"].as_str().expect("session id").to_owned();
        Self {
            addr,
            id,
            stream: Some(stream),
            last: 0,
            closed: None,
        }
    }

    /// POSTs `lines` (one command each) to `addr`: the status.
    pub async fn post_to(&self, addr: SocketAddr, lines: &[String]) -> u16 {
        post(addr, &self.id, lines.join("\n").as_bytes(), "text/plain")
            .await
            .0
    }

    /// POSTs `lines` to the session's own address.
    pub async fn post(&self, lines: &[String]) -> u16 {
        self.post_to(self.addr, lines).await
    }

    /// The next protocol message; panics on the close event.
    pub async fn recv(&mut self) -> ServerMessage {
        match self.recv_or_close().await {
            Ok(message) => message,
            Err(close) => panic!("the session closed: {close:?}"),
        }
    }

    /// The next protocol message, or the close event's code and reason.
    pub async fn recv_or_close(&mut self) -> Result<ServerMessage, (u16, String)> {
        loop {
            let stream = self.stream.as_mut().expect("a stream");
            let event = stream.next().await.expect("the stream goes on");
            if let Some(id) = &event.id {
                let id: u64 = id.parse().expect("numbered event");
                assert_eq!(
                    id,
                    self.last + 1,
                    "events arrive in order, none lost: {event:?}"
                );
                self.last = id;
            }
            match event.event.as_deref() {
                None => {
                    return Ok(decode_server(Frame::Text(&event.data)).expect("a protocol message"));
                }
                Some("close") => {
                    let data: serde_json::Value = serde_json::from_str(&event.data).unwrap();
                    let close = (
                        data["code"].as_u64().unwrap() as u16,
                        data["reason"].as_str().unwrap().to_owned(),
                    );
                    self.closed = Some(close.clone());
                    return Err(close);
                }
                Some("open") => {}
                Some(other) => panic!("unexpected event {other}"),
            }
        }
    }

    /// Waits for a message matching `pred`, skipping others.
    pub async fn wait_for(&mut self, pred: impl Fn(&ServerMessage) -> bool) -> ServerMessage {
        loop {
            let message = self.recv().await;
            if pred(&message) {
                return message;
            }
        }
    }

    /// Cuts the stream (as an intermediary would).
    pub fn cut(&mut self) {
        self.stream = None;
    }

    /// Resumes the stream at `addr` from the last event received; the
    /// stream's first event (`open`, or a `close` when refused) is left to
    /// read.
    pub async fn resume_at(&mut self, addr: SocketAddr) {
        let path = format!("/session?session={}", self.id);
        let last = self.last.to_string();
        let stream = get_stream(addr, &path, &[("Last-Event-ID", &last)])
            .await
            .expect("a resumed stream");
        self.stream = Some(stream);
    }
}

/// POSTs `body` for session `id` at `addr`: (status, body).
pub async fn post(addr: SocketAddr, id: &str, body: &[u8], content_type: &str) -> (u16, String) {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "POST /session?session={id} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    tcp.write_all(head.as_bytes()).await.expect("write");
    tcp.write_all(body).await.expect("write");
    let mut response = Vec::new();
    tokio::time::timeout(WAIT, tcp.read_to_end(&mut response))
        .await
        .expect("response in time")
        .expect("read");
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// A command as JSON text.
pub fn command(value: serde_json::Value) -> String {
    value.to_string()
}

/// Sends `request` as is to `addr`; the whole response as text.
pub async fn raw_request(addr: SocketAddr, request: &[u8]) -> String {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(request).await.expect("write");
    let mut response = Vec::new();
    tokio::time::timeout(WAIT, tcp.read_to_end(&mut response))
        .await
        .expect("response in time")
        .expect("read");
    String::from_utf8_lossy(&response).into_owned()
}
