#!/usr/bin/env node
// Node `ws` peer for Duplex's interop tests (tests/interop/tests/node.rs).
//
// Needs `ws` in tests/interop/node/node_modules (`cargo xtask setup node-ws`).
// It speaks exactly the command line, wire commands and report lines of
// tests/interop/python/peer.py, whose docstring is the reference:
//
//   node peer.js server [DEFLATE] [--fragment N]
//   node peer.js client URL [DEFLATE] [--fragment N] --sizes N,N,...
//                [--close CODE:REASON | --ask-close CODE:REASON]
//   DEFLATE: --compression off|deflate --server-max-window-bits N
//            --client-max-window-bits N --server-no-context-takeover
//            --client-no-context-takeover
//   --fragment N: send each data message longer than N bytes in fragments of
//            N bytes; text is split at byte offsets, so code points straddle
//            fragments.
//   --incompressible: binary messages are random bytes throughout, which
//            deflate cannot shrink (the compressed frame is larger).
//   --http2: WebSockets over HTTP/2 (RFC 8441, h2c with prior knowledge)
//            through Node's `http2` module instead of HTTP/1.1 upgrades
//            (see h2.js); reported as `http2` events.
//
// Reports are JSON lines on stdout (listening, open, message, echo, ping,
// pong, closed, done, error). Wire commands are text messages "\0cmd:ping:TEXT",
// "\0cmd:pings", "\0cmd:close:CODE:REASON", answered with "\0ack:...".

'use strict';

const crypto = require('node:crypto');
const WebSocket = require('ws');
const h2 = require('./h2.js');

const CMD = '\u0000cmd:';
const ACK = '\u0000ack:';
// Large enough for the 16 MiB messages, and a bound all the same.
const MAX_PAYLOAD = 32 << 20;
const TIMEOUT_MS = 90_000;

function report(event, fields = {}) {
  process.stdout.write(JSON.stringify({ event, ...fields }) + '\n');
}

function sha1(data) {
  return crypto.createHash('sha1').update(data).digest('hex');
}

function parseArgs(argv) {
  const args = {
    role: argv[0],
    url: null,
    compression: 'deflate',
    serverMaxWindowBits: undefined,
    clientMaxWindowBits: undefined,
    serverNoContextTakeover: false,
    clientNoContextTakeover: false,
    sizes: '0,125,126',
    close: null,
    askClose: null,
    fragment: 0,
    incompressible: false,
    http2: false,
  };
  for (let i = 1; i < argv.length; i++) {
    const arg = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) throw new Error(`${arg} needs a value`);
      return argv[++i];
    };
    switch (arg) {
      case '--compression': args.compression = value(); break;
      case '--server-max-window-bits': args.serverMaxWindowBits = Number(value()); break;
      case '--client-max-window-bits': args.clientMaxWindowBits = Number(value()); break;
      case '--server-no-context-takeover': args.serverNoContextTakeover = true; break;
      case '--client-no-context-takeover': args.clientNoContextTakeover = true; break;
      case '--sizes': args.sizes = value(); break;
      case '--close': args.close = value(); break;
      case '--ask-close': args.askClose = value(); break;
      case '--fragment': args.fragment = Number(value()); break;
      case '--incompressible': args.incompressible = true; break;
      case '--http2': args.http2 = true; break;
      default:
        if (arg.startsWith('--') || args.url !== null) throw new Error(`unexpected argument ${arg}`);
        args.url = arg;
    }
  }
  if (args.role !== 'server' && args.role !== 'client') throw new Error('role must be server or client');
  if (args.compression !== 'off' && args.compression !== 'deflate') throw new Error('--compression off|deflate');
  return args;
}

/** The `perMessageDeflate` option of ws for these arguments. */
function deflateOption(args) {
  if (args.compression === 'off') return false;
  const options = { threshold: 0 };
  if (args.serverMaxWindowBits !== undefined) options.serverMaxWindowBits = args.serverMaxWindowBits;
  if (args.clientMaxWindowBits !== undefined) options.clientMaxWindowBits = args.clientMaxWindowBits;
  if (args.serverNoContextTakeover) options.serverNoContextTakeover = true;
  if (args.clientNoContextTakeover) options.clientNoContextTakeover = true;
  return options;
}

/** Sends `data` whole, or in fragments of `size` bytes when it is longer. */
function sendMessage(ws, data, isBinary, size) {
  if (!size || data.length <= size) {
    ws.send(data, { binary: isBinary });
    return;
  }
  for (let at = 0; at < data.length; at += size) {
    const fin = at + size >= data.length;
    ws.send(data.subarray(at, at + size), { binary: isBinary, fin });
  }
}

function parseClose(text) {
  const at = text.indexOf(':');
  if (at < 0) return [Number(text), ''];
  return [Number(text.slice(0, at)), text.slice(at + 1)];
}

/** Pings with `payload` and resolves when the matching pong arrives. */
function pingAndWait(ws, payload) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no pong for ${payload}`)), TIMEOUT_MS);
    const onPong = (data) => {
      if (data.toString() === payload) {
        clearTimeout(timer);
        ws.off('pong', onPong);
        resolve();
      }
    };
    ws.on('pong', onPong);
    ws.ping(payload);
  });
}

function runServer(args) {
  let counter = 0;
  const options = { maxPayload: MAX_PAYLOAD, perMessageDeflate: deflateOption(args) };
  const wss = args.http2
    ? new WebSocket.WebSocketServer({ noServer: true, ...options })
    : new WebSocket.WebSocketServer({ host: '127.0.0.1', port: 0, ...options });
  if (args.http2) {
    const server = h2.createServer(wss, (headers) =>
      report('http2', { method: headers[':method'], protocol: headers[':protocol'] ?? null }),
    );
    server.listen(0, '127.0.0.1', () => report('listening', { port: server.address().port }));
  }
  const responseExtensions = new WeakMap();
  wss.on('headers', (headers, req) => {
    const line = headers.find((h) => h.toLowerCase().startsWith('sec-websocket-extensions:'));
    responseExtensions.set(req, line ? line.slice(line.indexOf(':') + 1).trim() : null);
  });
  if (!args.http2) wss.on('listening', () => report('listening', { port: wss.address().port }));
  wss.on('connection', (ws, req) => {
    const conn = ++counter;
    const pings = [];
    report('open', {
      conn,
      request_extensions: req.headers['sec-websocket-extensions'] ?? null,
      response_extensions: responseExtensions.get(req) ?? null,
    });
    ws.on('ping', (data) => {
      pings.push(data.toString());
      report('ping', { conn, payload: data.toString() });
    });
    ws.on('message', async (data, isBinary) => {
      const text = isBinary ? null : data.toString();
      if (text !== null && text.startsWith(CMD)) {
        const command = text.slice(CMD.length);
        const at = command.indexOf(':');
        const name = at < 0 ? command : command.slice(0, at);
        const arg = at < 0 ? '' : command.slice(at + 1);
        try {
          if (name === 'ping') {
            await pingAndWait(ws, arg);
            report('pong', { conn, payload: arg });
            ws.send(ACK + 'ping:' + arg);
          } else if (name === 'pings') {
            ws.send(ACK + 'pings:' + JSON.stringify(pings));
          } else if (name === 'close') {
            const [code, reason] = parseClose(arg);
            ws.close(code, reason);
          } else {
            report('error', { conn, message: `unknown command ${JSON.stringify(command)}` });
          }
        } catch (error) {
          report('error', { conn, message: String(error) });
        }
        return;
      }
      report('message', { conn, kind: isBinary ? 'binary' : 'text', len: data.length, sha1: sha1(data) });
      sendMessage(ws, data, isBinary, args.fragment);
    });
    ws.on('close', (code, reason) => report('closed', { conn, code, reason: reason.toString() }));
    ws.on('error', (error) => report('error', { conn, message: String(error) }));
  });
}

const WORDS = ['duplex ', 'héllo ', 'wörld ', '€uro ', '日本語 ', '🦀 ', 'websocket ', 'ping '].map((w) =>
  Buffer.from(w),
);

/** Valid UTF-8 of exactly `size` bytes, with 2-, 3- and 4-byte characters. */
function makeText(size) {
  const target = Math.min(size, 1 << 16);
  const parts = [];
  let length = 0;
  for (;;) {
    const word = WORDS[crypto.randomInt(WORDS.length)];
    if (length + word.length > target) break;
    parts.push(word);
    length += word.length;
  }
  const chunk = Buffer.concat(parts);
  const out = Buffer.alloc(size, 'x');
  let at = 0;
  while (chunk.length > 0 && at + chunk.length <= size) {
    chunk.copy(out, at);
    at += chunk.length;
  }
  return out;
}

/** `size` bytes: 64 random bytes, then the same 64 again, and so on; all
 * random with `incompressible`. */
function makeBinary(size, incompressible) {
  if (incompressible) return crypto.randomBytes(size);
  const out = Buffer.alloc(size);
  for (let at = 0; at < size; at += 128) {
    const block = crypto.randomBytes(64);
    block.copy(out, at);
    if (at + 64 < size) block.copy(out, at + 64);
  }
  return out;
}

/** A reader of the messages of `ws`, in order. */
function messageQueue(ws) {
  const queue = [];
  const waiting = [];
  let closed = null;
  ws.on('message', (data, isBinary) => {
    const item = { data, isBinary };
    if (waiting.length > 0) waiting.shift().resolve(item);
    else queue.push(item);
  });
  ws.on('close', () => {
    closed = new Error('connection closed');
    while (waiting.length > 0) waiting.shift().reject(closed);
  });
  return () =>
    new Promise((resolve, reject) => {
      if (queue.length > 0) return resolve(queue.shift());
      if (closed) return reject(closed);
      const timer = setTimeout(() => reject(new Error('timed out waiting for a message')), TIMEOUT_MS);
      waiting.push({
        resolve: (v) => (clearTimeout(timer), resolve(v)),
        reject: (e) => (clearTimeout(timer), reject(e)),
      });
    });
}

async function runClient(args) {
  if (!args.url) throw new Error('client needs a URL');
  const sizes = args.sizes.split(',').filter((s) => s !== '').map(Number);
  const tunnel = args.http2
    ? h2.connector(args.url, (settings) =>
        report('http2', { enable_connect_protocol: Boolean(settings.enableConnectProtocol) }),
      )
    : null;
  const ws = new WebSocket(args.url, {
    maxPayload: MAX_PAYLOAD,
    perMessageDeflate: deflateOption(args),
    handshakeTimeout: TIMEOUT_MS,
    ...(tunnel ? { createConnection: tunnel.createConnection } : {}),
  });
  const pings = [];
  const pingWaiters = [];
  ws.on('ping', (data) => {
    pings.push(data.toString());
    while (pingWaiters.length > 0) pingWaiters.shift()();
  });
  const closed = new Promise((resolve) => ws.on('close', (code, reason) => resolve([code, reason.toString()])));
  ws.on('error', (error) => report('error', { message: String(error) }));
  const recv = messageQueue(ws);
  // ws keeps its http.ClientRequest in `_req` until the 'upgrade' event returns.
  const upgrade = new Promise((resolve) =>
    ws.on('upgrade', (res) => resolve([res, ws._req?.getHeader('sec-websocket-extensions')])),
  );
  await new Promise((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('error', reject);
  });
  const [res, offer] = await upgrade;
  report('open', {
    conn: 1,
    request_extensions: offer ?? null,
    response_extensions: res.headers['sec-websocket-extensions'] ?? null,
  });

  let ok = true;
  for (const size of sizes) {
    for (const kind of ['text', 'binary']) {
      const sent = kind === 'text' ? makeText(size) : makeBinary(size, args.incompressible);
      sendMessage(ws, sent, kind === 'binary', args.fragment);
      const echo = await recv();
      const same = echo.isBinary === (kind === 'binary') && Buffer.compare(echo.data, sent) === 0;
      ok &&= same;
      report('echo', { kind, len: size, sha1: sha1(sent), ok: same });
    }
  }

  // We ping; the server answers.
  await pingAndWait(ws, 'ping from ws');
  report('pong', { conn: 1, payload: 'ping from ws' });

  // The server pings; the library answers; we saw it.
  ws.send(CMD + 'ping:ping from the server');
  const ack = await recv();
  const acked = !ack.isBinary && ack.data.toString() === ACK + 'ping:ping from the server';
  if (!pings.includes('ping from the server')) {
    await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('the server ping never arrived')), TIMEOUT_MS);
      pingWaiters.push(() => (clearTimeout(timer), resolve()));
    });
  }
  for (const payload of pings) report('ping', { conn: 1, payload });
  ok &&= acked && pings.includes('ping from the server');

  if (args.askClose) {
    ws.send(CMD + 'close:' + args.askClose);
  } else {
    const [code, reason] = parseClose(args.close ?? '1000:');
    ws.close(code, reason);
  }
  const extra = recv().then(
    (m) => m,
    () => null,
  );
  const [code, reason] = await closed;
  const after = await extra;
  if (after !== null) {
    report('error', { message: `message after closing: ${after.data.length} bytes` });
    ok = false;
  }
  report('closed', { conn: 1, code, reason });
  if (tunnel) tunnel.close();
  report('done', { ok });
  return ok ? 0 : 1;
}

async function main() {
  let args;
  try {
    args = parseArgs(process.argv.slice(2));
  } catch (error) {
    report('error', { message: String(error) });
    process.exit(2);
  }
  try {
    if (args.role === 'server') {
      runServer(args);
    } else {
      process.exitCode = await runClient(args);
    }
  } catch (error) {
    report('error', { message: String(error && error.stack ? error.stack : error) });
    process.exit(1);
  }
}

main();
