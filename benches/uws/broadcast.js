#!/usr/bin/env node
// uWebSockets pub/sub broadcast server for `duplex bench fanout --protocol
// broadcast` (benches/run-fanout.sh): every text or binary message any client
// sends goes to every connected client, the sender included, through uWS's own
// C++ pub/sub (its topic tree), as uWS's pub/sub benchmarks do it:
//
//   open:    ws.subscribe(TOPIC)
//   message: app.publish(TOPIC, message, isBinary)
//
// `app.publish` and not `ws.publish`: uWS's `ws.publish` publishes "as the
// sender" and skips the sender's own subscription, while `app.publish` goes
// to every subscriber of the topic; the other broadcast peers (peer-broadcast,
// benches/node/broadcast.js) send to the sender too, and so does this one.
// JavaScript runs once per received message (the publish); the copies to each
// subscriber, their framing and the writes are uWS's C++ (the message is
// framed once per subscriber into its buffer and written at the end of the
// event-loop iteration, corked).
//
//   node benches/uws/broadcast.js [--listen HOST:PORT]   (default 127.0.0.1:9615)
//
// The WebSocket route is `/*` (the generator connects to `/`), no subprotocol.
// uWebSockets comes from the npm package `uwebsockets` 3.0.6 (see echo.js),
// pinned in package-lock.json, installed by `npm ci` in this folder
// (run-fanout.sh does it). No compression, no idle timeout, 16 MiB messages.
// Invariant: no message is dropped for backpressure. uWS skips a subscriber
// whose unsent bytes exceed maxBackpressure (64 KiB by default), so that
// limit is raised to 1 GiB here: the benchmark bounds what is in flight, and
// a slow client grows its buffer as the other peers' queues grow.
// Prints "listening" on stderr when ready.

'use strict';

const uWS = require('uwebsockets');

const TOPIC = 'fanout';

let listen = '127.0.0.1:9615';
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i++) {
  if (argv[i] === '--listen' && i + 1 < argv.length) {
    listen = argv[++i];
  } else {
    console.error(`usage: broadcast.js [--listen HOST:PORT] (unknown argument ${argv[i]})`);
    process.exit(2);
  }
}
const colon = listen.lastIndexOf(':');
const host = listen.slice(0, colon);
const port = Number(listen.slice(colon + 1));

const app = uWS.App();
app
  .ws('/*', {
    compression: uWS.DISABLED,
    maxPayloadLength: 16 * 1024 * 1024,
    idleTimeout: 0,
    maxBackpressure: 1024 * 1024 * 1024,
    closeOnBackpressureLimit: false,
    open: (ws) => {
      ws.subscribe(TOPIC);
    },
    message: (ws, message, isBinary) => {
      app.publish(TOPIC, message, isBinary);
    },
  })
  .listen(host, port, (token) => {
    if (!token) {
      console.error(`uws broadcast: cannot listen on ${listen}`);
      process.exit(1);
    }
    console.error(`uws broadcast listening on ${listen}`);
  });

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => process.exit(0));
}
