//! The generator's side of a plain TCP echo (`tcp://` URLs): the ceiling a
//! WebSocket server is compared with.
//!
//! A plain echo server sends back the client's frames as they are, masked, so
//! a WebSocket client would refuse them. This connection therefore encodes
//! with a client-role [`Connection`] (masking every frame with a key from the
//! thread's RNG, exactly as the duplex client does) and decodes the echo with
//! a server-role [`Connection`] (which expects, unmasks and validates masked
//! frames). Per message the generator does the same work as against a
//! WebSocket server, plus unmasking, so differences in messages per second
//! come from the server.
//!
//! Invariant: like [`duplex::WebSocket`], queued frames are written in one
//! write before each read, and reads go through one buffer per connection.

use anyhow::bail;
use duplex::Message;
use duplex::proto::connection::{Config, Connection, Event};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Size of the read buffer, as the WebSocket's per-thread read buffer.
const READ_SIZE: usize = 64 * 1024;

/// A plain TCP connection that speaks client WebSocket frames to an echo
/// server. See the module docs.
pub(crate) struct RawConn {
    tcp: TcpStream,
    encoder: Connection,
    decoder: Connection,
    buf: Box<[u8]>,
}

impl std::fmt::Debug for RawConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawConn")
            .field("tcp", &self.tcp)
            .finish_non_exhaustive()
    }
}

impl RawConn {
    /// Wraps a connected stream.
    pub(crate) fn new(tcp: TcpStream) -> Self {
        Self {
            tcp,
            encoder: Connection::client(Config::default(), Box::new(rand::random::<[u8; 4]>)),
            decoder: Connection::server(Config::default()),
            buf: vec![0; READ_SIZE].into_boxed_slice(),
        }
    }

    /// Encodes `message` as a masked client frame and queues it.
    pub(crate) fn feed(&mut self, message: Message) -> anyhow::Result<()> {
        self.encoder.send(message)?;
        Ok(())
    }

    /// Writes out everything queued.
    pub(crate) async fn flush(&mut self) -> std::io::Result<()> {
        let out = self.encoder.transmit();
        while !out.is_empty() {
            self.tcp.write_buf(out).await?;
        }
        Ok(())
    }

    /// The next echoed message; `None` at end of stream. Writes what is
    /// queued before it waits to read.
    pub(crate) async fn next(&mut self) -> anyhow::Result<Option<Message>> {
        loop {
            match self.decoder.poll_event()? {
                Some(Event::Message(message)) => return Ok(Some(message)),
                Some(other) => bail!("unexpected {other:?} from a plain echo server"),
                None => {}
            }
            self.flush().await?;
            let n = self.tcp.read(&mut self.buf).await?;
            if n == 0 {
                return Ok(None);
            }
            self.decoder.receive(&self.buf[..n]);
        }
    }

    /// The TCP stream, for closing.
    pub(crate) fn into_inner(self) -> TcpStream {
        self.tcp
    }
}
