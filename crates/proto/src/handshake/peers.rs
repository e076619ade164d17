//! Handshakes shaped like those real peers write, for tests.
//!
//! Invariant: each constant is a complete header block. The header order and
//! the extension offers follow what the named peer sends (the offers are the
//! ones `FACTS.md` records on the wire); keys, cookies, dates, versions in
//! `User-Agent`, and the subprotocols in the Firefox request are
//! illustrative. They are reconstructions, not packet captures.

/// Chromium 156 (headless), with a cookie.
pub(crate) const CHROMIUM: &str = "GET /chat?room=1 HTTP/1.1\r\n\
    Host: localhost:8080\r\n\
    Connection: Upgrade\r\n\
    Pragma: no-cache\r\n\
    Cache-Control: no-cache\r\n\
    User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/156.0.0.0 Safari/537.36\r\n\
    Upgrade: websocket\r\n\
    Origin: http://localhost:8080\r\n\
    Sec-WebSocket-Version: 13\r\n\
    Accept-Encoding: gzip, deflate, br, zstd\r\n\
    Accept-Language: en-US,en;q=0.9\r\n\
    Cookie: session=abc123; theme=dark\r\n\
    Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
    Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\
    \r\n";

/// Firefox ESR 153: `Connection: keep-alive, Upgrade`, a bare deflate offer,
/// and two subprotocols.
pub(crate) const FIREFOX: &str = "GET /chat HTTP/1.1\r\n\
    Host: localhost:8080\r\n\
    User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:153.0) Gecko/20100101 Firefox/153.0\r\n\
    Accept: */*\r\n\
    Accept-Language: en-US,en;q=0.5\r\n\
    Accept-Encoding: gzip, deflate, br, zstd\r\n\
    Sec-WebSocket-Version: 13\r\n\
    Origin: http://localhost:8080\r\n\
    Sec-WebSocket-Protocol: chat, superchat\r\n\
    Sec-WebSocket-Extensions: permessage-deflate\r\n\
    Sec-WebSocket-Key: AAECAwQFBgcICQoLDA0ODw==\r\n\
    Connection: keep-alive, Upgrade\r\n\
    Sec-Fetch-Dest: empty\r\n\
    Sec-Fetch-Mode: websocket\r\n\
    Sec-Fetch-Site: same-origin\r\n\
    Pragma: no-cache\r\n\
    Cache-Control: no-cache\r\n\
    Upgrade: websocket\r\n\
    \r\n";

/// Python `websockets` 17.4 client with compression="deflate".
pub(crate) const PYTHON: &str = "GET / HTTP/1.1\r\n\
    Host: localhost:8765\r\n\
    Upgrade: websocket\r\n\
    Connection: Upgrade\r\n\
    Sec-WebSocket-Key: AAECAwQFBgcICQoLDA0ODw==\r\n\
    Sec-WebSocket-Version: 13\r\n\
    Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\
    User-Agent: Python/3.13 websockets/17.4\r\n\
    \r\n";

/// Node `ws` 8.23 client with perMessageDeflate on.
pub(crate) const NODE: &str = "GET /socket HTTP/1.1\r\n\
    Sec-WebSocket-Version: 13\r\n\
    Sec-WebSocket-Key: AAECAwQFBgcICQoLDA0ODw==\r\n\
    Connection: Upgrade\r\n\
    Upgrade: websocket\r\n\
    Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\
    Host: 127.0.0.1:9001\r\n\
    \r\n";

/// What Python `websockets` 17.4 answers to a deflate offer, for the key
/// `AAECAwQFBgcICQoLDA0ODw==` (bytes 0 to 15).
pub(crate) const PYTHON_RESPONSE: &str = "HTTP/1.1 101 Switching Protocols\r\n\
    Date: Tue, 01 Jul 2025 12:00:00 GMT\r\n\
    Upgrade: websocket\r\n\
    Connection: Upgrade\r\n\
    Sec-WebSocket-Accept: Bz3qJYTGdOe8gUSpLosEdiLKDrk=\r\n\
    Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=12; client_max_window_bits=12\r\n\
    Server: Python/3.13 websockets/17.4\r\n\
    \r\n";
