#!/usr/bin/env node
// Node `ws` broadcast server for `duplex bench fanout --protocol broadcast`
// (benches/run-fanout.sh): every text or binary message any client sends goes
// to every connected client, the sender included, as ws's README "broadcast
// to all connected clients" example writes it:
//
//   wss.clients.forEach((client) => client.send(data, { binary: isBinary }))
//
//   node benches/node/broadcast.js [--listen HOST:PORT]   (default 127.0.0.1:9000)
//
// `ws` comes from tests/interop/node/node_modules (`cargo xtask setup node-ws`)
// unless one resolves from here. No compression (ws's server default, stated
// here); ws sets TCP_NODELAY on every socket and frames each message once per
// client. Invariant: a client gets messages only while its readyState is OPEN;
// nothing is queued for a closing one. Prints "listening" on stderr when ready.

'use strict';

const path = require('node:path');

// `ws` from here if it resolves, else from the interop tests' install.
const wsMain = require.resolve('ws', {
  paths: [__dirname, path.join(__dirname, '..', '..', 'tests', 'interop', 'node')],
});
const WebSocket = require(wsMain);
const wsVersion = require(path.join(path.dirname(wsMain), 'package.json')).version;

let listen = '127.0.0.1:9000';
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i++) {
  if (argv[i] === '--listen' && i + 1 < argv.length) {
    listen = argv[++i];
  } else {
    console.error(`usage: node broadcast.js [--listen HOST:PORT] (unknown argument ${argv[i]})`);
    process.exit(2);
  }
}
const colon = listen.lastIndexOf(':');
const host = listen.slice(0, colon);
const port = Number(listen.slice(colon + 1));

const wss = new WebSocket.WebSocketServer({ host, port, perMessageDeflate: false });

wss.on('connection', (ws) => {
  ws.on('error', () => {});
  ws.on('message', (data, isBinary) => {
    wss.clients.forEach((client) => {
      if (client.readyState === WebSocket.OPEN) {
        client.send(data, { binary: isBinary });
      }
    });
  });
});

wss.on('listening', () => {
  console.error(`broadcast.js: ws ${wsVersion} listening on ${host}:${port}`);
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => process.exit(0));
}
