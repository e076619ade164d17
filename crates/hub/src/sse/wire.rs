//! The HTTP/1.x side of the HTTP transports: a stream's response head and
//! chunks, a `POST`'s body, query parameters.
//!
//! Invariants: a stream's head has no `Content-Length` and says
//! `Cache-Control: no-cache`, `X-Accel-Buffering: no` (proxies pass each
//! event on at once); an HTTP/1.1 stream is chunked (one chunk per write),
//! an HTTP/1.0 one ends with the connection. A body is read within a time
//! limit and a size limit, from its `Content-Length` only (no length: 411).

use std::time::Duration;

use bytes::BytesMut;
use duplex::server::Incoming;
use http::{Response, StatusCode, Version};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::server::plain;

/// Any client connection (TCP, TLS), boxed.
pub(crate) type BoxIo = Box<dyn Io>;

/// What a client connection is.
pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A stream's response: its connection, and whether it is chunked.
pub(crate) struct Out {
    pub(crate) io: BoxIo,
    chunked: bool,
}

impl std::fmt::Debug for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Out")
            .field("chunked", &self.chunked)
            .finish_non_exhaustive()
    }
}

impl Out {
    /// The response to `request` on `io` (nothing written yet).
    pub(crate) fn new(io: BoxIo, request: &http::Request<()>) -> Self {
        Self {
            io,
            chunked: request.version() != Version::HTTP_10,
        }
    }

    /// Writes the head, `retry`, and `first`.
    pub(crate) async fn start(&mut self, first: &[u8]) -> std::io::Result<()> {
        let mut head = String::from(
            "HTTP/1.1 200 OK\r\n\
             Content-Type: text/event-stream; charset=utf-8\r\n\
             Cache-Control: no-cache, no-transform\r\n\
             X-Accel-Buffering: no\r\n\
             X-Content-Type-Options: nosniff\r\n\
             Connection: close\r\n",
        );
        if self.chunked {
            head.push_str("Transfer-Encoding: chunked\r\n");
        }
        head.push_str("\r\n");
        self.io.write_all(head.as_bytes()).await?;
        // EventSource reconnects after this many milliseconds.
        let mut body = b"retry: 1000\n\n".to_vec();
        body.extend_from_slice(first);
        self.write(&body).await
    }

    /// Writes `bytes` (one chunk) and flushes.
    pub(crate) async fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        if self.chunked {
            // One write (one system call) per chunk.
            let mut chunk = Vec::with_capacity(bytes.len() + 12);
            chunk.extend_from_slice(format!("{:x}\r\n", bytes.len()).as_bytes());
            chunk.extend_from_slice(bytes);
            chunk.extend_from_slice(b"\r\n");
            self.io.write_all(&chunk).await?;
        } else {
            self.io.write_all(bytes).await?;
        }
        self.io.flush().await
    }

    /// Ends the response (the last chunk) and the connection, within a
    /// second.
    pub(crate) async fn finish(mut self) {
        let end = async {
            if self.chunked {
                self.io.write_all(b"0\r\n\r\n").await?;
            }
            self.io.shutdown().await
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), end).await;
    }
}

/// The first value of query parameter `name` (percent-decoded).
pub(crate) fn query_value(query: Option<&str>, name: &str) -> Option<String> {
    query_values(query, name).into_iter().next()
}

/// Every value of query parameter `name` (percent-decoded, `+` a space),
/// in order; values that are not UTF-8 are left out.
pub(crate) fn query_values(query: Option<&str>, name: &str) -> Vec<String> {
    let Some(query) = query else {
        return Vec::new();
    };
    let decode = |text: &str| {
        percent_encoding::percent_decode_str(&text.replace('+', " "))
            .decode_utf8()
            .ok()
            .map(|text| text.into_owned())
    };
    query
        .split('&')
        .filter_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(key)? == name).then(|| decode(value)).flatten()
        })
        .collect()
}

/// Reads the body of `incoming` (after its head, on `io`): at most
/// `limit` bytes, within `within`. An error response for a body without
/// `Content-Length` (411), over the limit (413), or late or cut (408).
pub(crate) async fn read_body<S>(
    io: &mut S,
    incoming: Incoming,
    limit: usize,
    within: Duration,
) -> Result<Vec<u8>, Box<Response<Vec<u8>>>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let headers = incoming.request.headers();
    if headers.contains_key(http::header::TRANSFER_ENCODING) {
        return Err(Box::new(plain(
            StatusCode::LENGTH_REQUIRED,
            "send the commands with a Content-Length",
        )));
    }
    let length = match headers.get(http::header::CONTENT_LENGTH) {
        None => 0,
        Some(value) => match value.to_str().ok().and_then(|v| v.trim().parse().ok()) {
            Some(length) => length,
            None => {
                return Err(Box::new(plain(
                    StatusCode::BAD_REQUEST,
                    "Content-Length is not a number",
                )));
            }
        },
    };
    if length > limit {
        return Err(Box::new(plain(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!(
                "the body is {length} bytes; this hub takes at most {limit} ([http] max_post_bytes)"
            ),
        )));
    }
    let expects_continue = headers
        .get(http::header::EXPECT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
    let mut body = BytesMut::from(&incoming.leftover[..incoming.leftover.len().min(length)]);
    let read = async {
        if expects_continue && body.len() < length {
            io.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
        }
        while body.len() < length {
            let mut chunk = vec![0; (length - body.len()).min(16 << 10)];
            let n = io.read(&mut chunk).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            body.extend_from_slice(&chunk[..n]);
        }
        Ok::<_, std::io::Error>(())
    };
    match tokio::time::timeout(within, read).await {
        Ok(Ok(())) => Ok(body.to_vec()),
        _ => Err(Box::new(plain(
            StatusCode::REQUEST_TIMEOUT,
            "the body did not arrive in time",
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_decoded_in_order() {
        let query = Some("channel=a&x=1&channel=chat%3Alobby&channel=b+c&token=");
        assert_eq!(query_values(query, "channel"), ["a", "chat:lobby", "b c"]);
        assert_eq!(query_value(query, "x").as_deref(), Some("1"));
        assert_eq!(query_value(query, "token").as_deref(), Some(""));
        assert_eq!(query_value(query, "none"), None);
        assert!(query_values(None, "channel").is_empty());
    }
}
