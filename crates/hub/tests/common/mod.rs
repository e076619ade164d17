//! A hub on a loopback port and a small protocol client for the tests.

#![allow(dead_code, unreachable_pub)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use duplex::client::ClientRequest;
use duplex::transport::Transport;
use duplex::{CloseInfo, Config, Message, WebSocket};
use duplex_hub::{Hub, HubConfig, Server};
use duplex_hub_proto::{
    Command, Data, Encoded, Encoding, Frame, JsonText, Request, ServerMessage, Since,
};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How long any single wait in these tests may take.
pub const WAIT: Duration = Duration::from_secs(10);

/// A hub serving on `127.0.0.1:0` in this process.
pub struct TestHub {
    pub addr: SocketAddr,
    pub hub: Arc<Hub>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<usize>>,
}

impl TestHub {
    /// Starts a hub with `config` (its listen address is ignored).
    pub async fn start(config: HubConfig) -> Self {
        Self::start_on("127.0.0.1:0".parse().unwrap(), config).await
    }

    /// Starts a hub on `addr`.
    pub async fn start_on(addr: SocketAddr, config: HubConfig) -> Self {
        let hub = Hub::new(config).expect("valid config");
        let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
        let server = Server::from_listener(hub.clone(), listener).expect("server");
        let addr = server.local_addr();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));
        Self {
            addr,
            hub,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Runs `server` (bound at `addr`, serving `hub`) as a test hub.
    pub fn adopt(hub: Arc<Hub>, addr: SocketAddr, server: Server) -> Self {
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));
        Self {
            addr,
            hub,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// The hub's WebSocket URL.
    pub fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// The value of the sample `name{label}` in the hub's metrics; panics
    /// when there is none.
    pub fn metric(&self, name: &str, label: &str) -> f64 {
        let text = self.hub.metrics().render();
        let prefix = format!("{name}{{{label}}} ");
        text.lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
            .parse()
            .unwrap()
    }

    /// `(websocket_http1, websocket_http2)`: the WebSockets open, by the
    /// HTTP version they came over.
    pub fn websockets_by_transport(&self) -> (f64, f64) {
        let name = "duplex_connections_by_transport";
        (
            self.metric(name, "transport=\"websocket_http1\""),
            self.metric(name, "transport=\"websocket_http2\""),
        )
    }

    /// Shuts the hub down gracefully and returns the connections dropped at
    /// the end of the grace period.
    pub async fn stop(mut self) -> usize {
        let _ = self.stop.take().expect("running").send(());
        tokio::time::timeout(Duration::from_secs(30), self.task.take().expect("running"))
            .await
            .expect("hub stops in time")
            .expect("hub task")
    }

    /// Connects a client and completes `connect`.
    pub async fn client(&self) -> TestClient {
        self.client_in(Encoding::Json).await
    }

    /// A connected anonymous client speaking `encoding`.
    pub async fn client_in(&self, encoding: Encoding) -> TestClient {
        let mut client = TestClient::open_in(encoding, &self.url(), |r| r, &Config::client())
            .await
            .expect("open");
        client.connect(None).await;
        client
    }

    /// An HTTP GET on the hub's port: (status, body).
    pub async fn get(&self, path: &str) -> (u16, String) {
        http_get(self.addr, path).await
    }
}

impl Drop for TestHub {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// A plain HTTP/1.1 GET: (status, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.expect("write");
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

/// One HTTP/1.1 request with `headers` and `body`, the connection closed
/// after it: (status, head, JSON body or `Null`). The body is written after
/// the head even when the server answers first (a 413 before reading it).
pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String, serde_json::Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    tcp.write_all(request.as_bytes()).await.unwrap();
    let _ = tcp.write_all(body).await;
    let mut response = Vec::new();
    tokio::time::timeout(WAIT, tcp.read_to_end(&mut response))
        .await
        .expect("answer in time")
        .ok();
    let text = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("a response");
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let body = serde_json::from_str(body).unwrap_or(serde_json::Value::Null);
    (status, head.to_owned(), body)
}

/// A hub-protocol client over a real WebSocket.
pub struct TestClient {
    pub ws: WebSocket<Transport>,
    next_id: u64,
    /// Pushes and replies read while waiting for something else.
    pending: VecDeque<ServerMessage>,
    pub client_id: String,
    /// The envelope the hub answered with (JSON when it named none).
    pub encoding: Encoding,
}

impl TestClient {
    /// Opens a WebSocket to `url` offering `duplex.v1`; `customize` may add
    /// headers or an origin.
    pub async fn open(
        url: &str,
        customize: impl FnOnce(ClientRequest) -> ClientRequest,
    ) -> Result<Self, duplex::Error> {
        Self::open_with(url, customize, &Config::client()).await
    }

    /// [`TestClient::open`] with a WebSocket config of the test's own.
    pub async fn open_with(
        url: &str,
        customize: impl FnOnce(ClientRequest) -> ClientRequest,
        config: &Config,
    ) -> Result<Self, duplex::Error> {
        Self::open_in(Encoding::Json, url, customize, config).await
    }

    /// Opens a WebSocket to `url` offering `encoding`'s subprotocol; the
    /// client then speaks the envelope the hub answered with.
    pub async fn open_in(
        encoding: Encoding,
        url: &str,
        customize: impl FnOnce(ClientRequest) -> ClientRequest,
        config: &Config,
    ) -> Result<Self, duplex::Error> {
        let request = customize(ClientRequest::new(url).protocol(encoding.subprotocol()));
        let ws = duplex::connect_with(&request, config).await?;
        let encoding = ws
            .protocol()
            .and_then(Encoding::from_subprotocol)
            .unwrap_or_default();
        Ok(Self {
            ws,
            next_id: 1,
            pending: VecDeque::new(),
            client_id: String::new(),
            encoding,
        })
    }

    /// Sends `connect` and waits for `connected`.
    pub async fn connect(&mut self, token: Option<&str>) -> ServerMessage {
        let reply = self
            .call(Command::Connect {
                token: token.map(str::to_owned),
                name: None,
            })
            .await;
        match &reply {
            ServerMessage::Connected { client, .. } => self.client_id = client.clone(),
            other => panic!("expected connected, got {other:?}"),
        }
        reply
    }

    /// Sends a command with a fresh id; returns the id.
    pub async fn send(&mut self, command: Command) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.send_request(Request {
            id: Some(id),
            command,
        })
        .await;
        id
    }

    /// Sends a request as it is.
    pub async fn send_request(&mut self, request: Request) {
        let message = match self.encoding.encode_command(&request) {
            Encoded::Text(text) => Message::text(text),
            Encoded::Binary(bytes) => Message::binary(bytes),
        };
        self.ws.send(message).await.expect("send");
    }

    /// Sends raw text (for malformed-input tests).
    pub async fn send_raw(&mut self, text: &str) {
        self.ws
            .send(Message::text(text.to_owned()))
            .await
            .expect("send");
    }

    /// The next message from the hub (pending ones first).
    pub async fn recv(&mut self) -> ServerMessage {
        if let Some(message) = self.pending.pop_front() {
            return message;
        }
        self.read().await.expect("a message, not the end")
    }

    /// The next message from the hub (pending ones first); `None` at the
    /// end of the connection (then see [`TestClient::closed`]).
    pub async fn next(&mut self) -> Option<ServerMessage> {
        match self.pending.pop_front() {
            Some(message) => Some(message),
            None => self.read().await,
        }
    }

    /// Reads one message from the socket; `None` at the end.
    async fn read(&mut self) -> Option<ServerMessage> {
        let item = tokio::time::timeout(WAIT, self.ws.next())
            .await
            .expect("hub answers in time")?;
        let message = item.ok()?;
        let frame = match &message {
            Message::Text(text) => Frame::Text(text.as_str()),
            Message::Binary(bytes) => Frame::Binary(bytes),
        };
        Some(
            self.encoding
                .decode_server(frame)
                .expect("hub sends valid messages"),
        )
    }

    /// Sends a command and waits for the reply with its id; pushes read
    /// meanwhile are kept for [`TestClient::recv`].
    pub async fn call(&mut self, command: Command) -> ServerMessage {
        let id = self.send(command).await;
        self.reply_to(id).await
    }

    /// Waits for the reply with `id`.
    pub async fn reply_to(&mut self, id: u64) -> ServerMessage {
        if let Some(at) = self.pending.iter().position(|m| m.id() == Some(id)) {
            return self.pending.remove(at).expect("present");
        }
        loop {
            let message = self.read().await.expect("a reply, not the end");
            if message.id() == Some(id) {
                return message;
            }
            self.pending.push_back(message);
        }
    }

    /// Waits for the next push matching `pred`, keeping others.
    pub async fn wait_for(&mut self, pred: impl Fn(&ServerMessage) -> bool) -> ServerMessage {
        if let Some(at) = self.pending.iter().position(&pred) {
            return self.pending.remove(at).expect("present");
        }
        loop {
            let message = self.read().await.expect("a push, not the end");
            if pred(&message) {
                return message;
            }
            self.pending.push_back(message);
        }
    }

    /// Whether a message read earlier and not yet taken matches `pred`.
    pub fn pending_has(&self, pred: impl Fn(&ServerMessage) -> bool) -> bool {
        self.pending.iter().any(pred)
    }

    /// Reads until the connection ends; returns how it ended.
    pub async fn closed(&mut self) -> CloseInfo {
        while let Some(Ok(_)) = tokio::time::timeout(WAIT, self.ws.next())
            .await
            .expect("connection ends in time")
        {}
        self.ws.close_info().cloned().expect("close info")
    }

    /// Subscribes and returns the `subscribed` reply.
    pub async fn subscribe(&mut self, channel: &str) -> ServerMessage {
        self.call(Command::Subscribe {
            channel: channel.to_owned(),
            since: None,
            recent: 0,
            token: None,
        })
        .await
    }

    /// Subscribes recovering from `offset` of `epoch` (no `recent`) and
    /// returns the `subscribed` reply.
    pub async fn subscribe_since(
        &mut self,
        channel: &str,
        epoch: &str,
        offset: u64,
    ) -> ServerMessage {
        self.call(Command::Subscribe {
            channel: channel.to_owned(),
            since: Some(Since {
                epoch: epoch.to_owned(),
                offset,
            }),
            recent: 0,
            token: None,
        })
        .await
    }

    /// Publishes JSON `data` and returns the reply.
    pub async fn publish(&mut self, channel: &str, data: serde_json::Value) -> ServerMessage {
        self.call(Command::Publish {
            channel: channel.to_owned(),
            data: json(data),
            key: None,
        })
        .await
    }
}

/// JSON data.
pub fn json(value: serde_json::Value) -> Data {
    Data::Json(JsonText::from_value(&value))
}

/// The offset of a `message` push (panics on anything else).
pub fn offset_of(message: &ServerMessage) -> u64 {
    match message {
        ServerMessage::Message(publication) => publication.offset,
        other => panic!("expected a message, got {other:?}"),
    }
}

/// How a `connect` with `token` ends: `Ok` connected, or the close.
pub async fn try_connect(url: &str, token: &str) -> Result<(), (u16, String)> {
    let mut client = TestClient::open(url, |r| r).await.unwrap();
    client
        .send(Command::Connect {
            token: Some(token.to_owned()),
            name: None,
        })
        .await;
    match client.next().await {
        Some(ServerMessage::Connected { .. }) => Ok(()),
        Some(other) => panic!("{other:?}"),
        None => {
            let info = client.closed().await;
            Err((u16::from(info.code), info.reason))
        }
    }
}
