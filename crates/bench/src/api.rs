//! The server API as `duplex bench fanout`'s publisher (`--api-url`): each
//! publish is a `POST /api/publish` over one HTTP/2 connection without TLS
//! (h2c), the requests of the messages in flight multiplexed on it.
//!
//! Invariants: every request's latency (from just before it is sent to its
//! complete reply) is recorded, success or not; a reply other than 200, or
//! a lost connection, reaches the publisher as an error and ends the run.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::sync::mpsc;

/// A publisher through the server API.
#[derive(Clone)]
pub(crate) struct ApiPublisher {
    sender: SendRequest<Full<Bytes>>,
    uri: String,
    key: Arc<str>,
    /// Each call's outcome, in the order they complete.
    done: mpsc::UnboundedSender<anyhow::Result<()>>,
    /// Call latencies, in nanoseconds.
    pub(crate) latency: Arc<Mutex<Histogram<u64>>>,
}

impl std::fmt::Debug for ApiPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiPublisher")
            .field("uri", &self.uri)
            .finish_non_exhaustive()
    }
}

impl ApiPublisher {
    /// Connects to the server API at `url` (`http://HOST:PORT`); the
    /// receiver gets each call's outcome.
    pub(crate) async fn connect(
        url: &str,
        key: &str,
    ) -> anyhow::Result<(Self, mpsc::UnboundedReceiver<anyhow::Result<()>>)> {
        let uri: http::Uri = url.parse().context("--api-url is not a URL")?;
        if uri.scheme_str() != Some("http") {
            bail!("--api-url must be http://HOST:PORT (h2c)");
        }
        let host = uri.host().context("--api-url has no host")?;
        let port = uri.port_u16().unwrap_or(80);
        let tcp = tokio::net::TcpStream::connect((host, port))
            .await
            .with_context(|| format!("cannot reach the server API at {url}"))?;
        tcp.set_nodelay(true)?;
        let (sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
                .await
                .context("HTTP/2 handshake with the server API")?;
        tokio::spawn(connection);
        let (done, outcomes) = mpsc::unbounded_channel();
        Ok((
            Self {
                sender,
                uri: format!("{}/api/publish", url.trim_end_matches('/')),
                key: key.into(),
                done,
                latency: Arc::new(Mutex::new(crate::report::histogram())),
            },
            outcomes,
        ))
    }

    /// Starts `POST /api/publish` of `data` (JSON text) to `channel`; its
    /// outcome arrives on the receiver.
    pub(crate) fn publish(&self, channel: &str, data: &str) {
        let body = format!(
            "{{\"channel\":{},\"data\":{data}}}",
            serde_json::Value::from(channel)
        );
        let mut sender = self.sender.clone();
        let request = http::Request::post(&self.uri)
            .header(http::header::AUTHORIZATION, format!("apikey {}", self.key))
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)));
        let (done, latency) = (self.done.clone(), self.latency.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            let outcome = async {
                let response = sender.send_request(request?).await?;
                let status = response.status();
                let body = response.into_body().collect().await?.to_bytes();
                if status != http::StatusCode::OK {
                    bail!(
                        "the server API answered {status}: {}",
                        String::from_utf8_lossy(&body)
                    );
                }
                Ok(())
            }
            .await;
            let nanos = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
            let _ = latency
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .record(nanos.max(1));
            let _ = done.send(outcome);
        });
    }
}
