// WebSockets over HTTP/2 (RFC 8441) for the Node peer (peer.js --http2):
// Node's own `http2` module carries the streams and `ws` does everything
// WebSocket (framing, masking, permessage-deflate negotiation, closing), so
// Duplex meets two implementations of its own: Node's HTTP/2 and ws's frames.
//
// ws speaks HTTP/1.1 upgrades only. These adapters translate at the edge and
// nowhere else:
// - server: an extended CONNECT (`:protocol = websocket`) becomes the
//   HTTP/1.1 upgrade request ws's `handleUpgrade` expects; ws's `101` answer
//   becomes the stream's `200` with the negotiated extensions and
//   subprotocol; from then on the stream is ws's socket.
// - client: ws's upgrade request, written to the "socket" that
//   `createConnection` gives it, becomes an extended CONNECT on one HTTP/2
//   session; the `200` becomes the `101` ws's http client expects (with the
//   `Sec-WebSocket-Accept` RFC 6455 computes from the key, which RFC 8441
//   leaves out); then the stream is the socket.
// Ending the stream is closing the TCP connection (RFC 8441 §5).

'use strict';

const crypto = require('node:crypto');
const http2 = require('node:http2');
const { Duplex } = require('node:stream');

const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';

/** Headers an HTTP/1.1 head carries, lower-cased; the request line apart. */
function parseHead(head) {
  const lines = head.split('\r\n');
  const headers = {};
  for (const line of lines.slice(1)) {
    const at = line.indexOf(':');
    if (at > 0) headers[line.slice(0, at).trim().toLowerCase()] = line.slice(at + 1).trim();
  }
  return { first: lines[0], headers };
}

/** Gives the socket methods ws and http call on a net.Socket. */
function socketLike(duplex) {
  duplex.setNoDelay = () => duplex;
  duplex.setKeepAlive = () => duplex;
  if (typeof duplex.setTimeout !== 'function') duplex.setTimeout = () => duplex;
  duplex.ref = () => duplex;
  duplex.unref = () => duplex;
  return duplex;
}

/**
 * An h2c server announcing SETTINGS_ENABLE_CONNECT_PROTOCOL whose extended
 * CONNECTs go to `wss` (a ws WebSocketServer with `noServer: true`), each
 * emitted as `connection` with the translated request. `onStream(headers)`
 * is told of each request first.
 */
function createServer(wss, onStream) {
  const server = http2.createServer({ settings: { enableConnectProtocol: true } });
  server.on('stream', (stream, headers) => {
    onStream(headers);
    if (headers[':method'] !== 'CONNECT' || headers[':protocol'] !== 'websocket') {
      stream.respond({ ':status': 400 });
      stream.end();
      return;
    }
    const request = {
      method: 'GET',
      url: headers[':path'],
      headers: {
        host: headers[':authority'],
        upgrade: 'websocket',
        connection: 'Upgrade',
        // RFC 8441 has no key; ws wants one and answers with its Accept,
        // which the translation below drops.
        'sec-websocket-key': crypto.randomBytes(16).toString('base64'),
        'sec-websocket-version': headers['sec-websocket-version'],
      },
    };
    for (const name of ['sec-websocket-extensions', 'sec-websocket-protocol', 'origin']) {
      if (headers[name] !== undefined) request.headers[name] = headers[name];
    }
    const socket = socketLike(stream);
    const write = stream.write.bind(stream);
    // ws writes its whole 101 (or refusal) head in one call.
    stream.write = (chunk, ...rest) => {
      stream.write = write;
      const { first, headers: answer } = parseHead(chunk.toString('latin1'));
      if (!first.startsWith('HTTP/1.1 101')) {
        stream.respond({ ':status': Number(first.split(' ')[1]) || 400 });
        stream.end();
        return true;
      }
      const response = { ':status': 200 };
      for (const name of ['sec-websocket-extensions', 'sec-websocket-protocol']) {
        if (answer[name] !== undefined) response[name] = answer[name];
      }
      stream.respond(response);
      const callback = rest.find((r) => typeof r === 'function');
      if (callback) process.nextTick(callback);
      return true;
    };
    wss.handleUpgrade(request, socket, Buffer.alloc(0), (ws) => wss.emit('connection', ws, request));
  });
  return server;
}

/**
 * A ws `createConnection` opening each WebSocket as an extended CONNECT on
 * one HTTP/2 session to `url`'s origin. `onSettings(settings)` is told of
 * the server's SETTINGS before the first stream opens; a server that does
 * not allow extended CONNECT fails the connection.
 */
function connector(url, onSettings) {
  const session = http2.connect(new URL(url).origin.replace(/^ws/, 'http'));
  const ready = new Promise((resolve, reject) => {
    session.once('remoteSettings', (settings) => {
      onSettings(settings);
      if (settings.enableConnectProtocol) resolve();
      else reject(new Error('the server does not allow extended CONNECT (RFC 8441)'));
    });
    session.once('error', reject);
  });
  const createConnection = () => socketLike(new Tunnel(session, ready));
  return { createConnection, close: () => session.close() };
}

/** The socket ws's http client writes its upgrade to (see the file doc). */
class Tunnel extends Duplex {
  constructor(session, ready) {
    super();
    this.session = session;
    this.ready = ready;
    this.head = '';
    this.stream = null;
  }

  _write(chunk, encoding, callback) {
    if (this.stream) {
      this.stream.write(chunk, callback);
      return;
    }
    this.head += chunk.toString('latin1');
    const end = this.head.indexOf('\r\n\r\n');
    if (end < 0) {
      callback();
      return;
    }
    const { first, headers } = parseHead(this.head.slice(0, end));
    this.ready.then(
      () => {
        this.open(first.split(' ')[1], headers);
        callback();
      },
      (error) => callback(error),
    );
  }

  open(path, headers) {
    const request = {
      ':method': 'CONNECT',
      ':protocol': 'websocket',
      ':scheme': 'http',
      ':path': path,
      ':authority': headers.host,
      'sec-websocket-version': headers['sec-websocket-version'],
    };
    for (const name of ['sec-websocket-extensions', 'sec-websocket-protocol', 'origin']) {
      if (headers[name] !== undefined) request[name] = headers[name];
    }
    const stream = this.session.request(request, { endStream: false });
    stream.on('response', (answer) => {
      const status = answer[':status'];
      if (status !== 200) {
        this.push(`HTTP/1.1 ${status} Refused\r\nContent-Length: 0\r\n\r\n`);
        this.push(null);
        return;
      }
      const accept = crypto
        .createHash('sha1')
        .update(headers['sec-websocket-key'] + GUID)
        .digest('base64');
      let head =
        'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
        `Sec-WebSocket-Accept: ${accept}\r\n`;
      for (const name of ['sec-websocket-extensions', 'sec-websocket-protocol']) {
        if (answer[name] !== undefined) head += `${name}: ${answer[name]}\r\n`;
      }
      this.stream = stream;
      this.push(head + '\r\n');
      stream.on('data', (data) => {
        if (!this.push(data)) stream.pause();
      });
      stream.on('end', () => this.push(null));
    });
    stream.on('error', (error) => this.destroy(error));
    stream.on('close', () => {
      if (!this.destroyed) this.push(null);
    });
  }

  _read() {
    if (this.stream) this.stream.resume();
  }

  _final(callback) {
    if (this.stream) this.stream.end(callback);
    else callback();
  }

  _destroy(error, callback) {
    if (this.stream && !this.stream.destroyed) this.stream.close();
    callback(error);
  }
}

module.exports = { createServer, connector };
