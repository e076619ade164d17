#!/usr/bin/env node
// uWebSockets echo server for benches/run-echo.sh: the C++ reference beside
// duplex in the same harness. Every text or binary message is sent back as it
// came, from uWS's own message handler (no copy into JavaScript beyond the
// ArrayBuffer view uWS lends for the call).
//
//   node benches/uws/echo.js [--listen HOST:PORT]   (default 127.0.0.1:9106)
//
// uWebSockets comes from the npm package `uwebsockets` 3.0.6, a republished
// build of uWebSockets.js (v20.x) whose Linux x64 binaries need glibc 2.27 (the
// upstream `uWebSockets.js` is not on the npm registry, and
// `@btc-vision/uwebsockets.js` 20.57 needs glibc 2.38); pinned in
// package-lock.json, installed by `npm ci` in this folder (run-echo.sh does it).
// No compression, no idle timeout (idle memory is measured with connections
// held open), 16 MiB messages. Prints "listening" on stderr when ready.

'use strict';

const uWS = require('uwebsockets');

let listen = '127.0.0.1:9106';
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i++) {
  if (argv[i] === '--listen' && i + 1 < argv.length) {
    listen = argv[++i];
  } else {
    console.error(`usage: echo.js [--listen HOST:PORT] (unknown argument ${argv[i]})`);
    process.exit(2);
  }
}
const colon = listen.lastIndexOf(':');
const host = listen.slice(0, colon);
const port = Number(listen.slice(colon + 1));

uWS
  .App()
  .ws('/*', {
    compression: uWS.DISABLED,
    maxPayloadLength: 16 * 1024 * 1024,
    idleTimeout: 0,
    maxBackpressure: 64 * 1024 * 1024,
    message: (ws, message, isBinary) => {
      ws.send(message, isBinary);
    },
  })
  .listen(host, port, (token) => {
    if (!token) {
      console.error(`uws echo: cannot listen on ${listen}`);
      process.exit(1);
    }
    console.error(`uws echo listening on ${listen}`);
  });
