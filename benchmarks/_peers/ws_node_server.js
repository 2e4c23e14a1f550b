// Peer server for the fan-out benchmark: node with the `ws` package.
//
// Usage: NODE_PATH=<dir>/node_modules node ws_node_server.js PORT
// (listens on 127.0.0.1 only; stops on SIGTERM/SIGINT).
//
// Same contract as ws_asyncio_server.py: subscribers on any path but /publish get a welcome once
// registered; each text frame on /publish is a JSON array of {type, data}, every item gets the
// next seq and a timestamp, is serialised once with Sigma's envelope (type, timestamp, seq, data)
// into a Buffer and sent to every open subscriber (the broadcast loop from ws's README); then
// {"seqs": [...]} is sent back. No pings, no compression. Like broadcast() in Python, ws.send()
// buffers without bound for a client that stops reading.
'use strict';

const { WebSocketServer, WebSocket } = require('ws');

const port = Number(process.argv[2]);
const subscribers = new Set();
let seq = 0;

const wss = new WebSocketServer({
  host: '127.0.0.1',
  port,
  backlog: 1024,
  perMessageDeflate: false,
  clientTracking: false,
  maxPayload: 16 * 1024 * 1024,
});

wss.on('connection', (ws, req) => {
  if (req.url === '/publish') {
    ws.on('message', (data) => {
      const items = JSON.parse(data);
      const seqs = new Array(items.length);
      for (let i = 0; i < items.length; i++) {
        seq += 1;
        seqs[i] = seq;
        const frame = Buffer.from(JSON.stringify({
          type: items[i].type,
          timestamp: new Date().toISOString(),
          seq,
          data: items[i].data,
        }));
        for (const client of subscribers) {
          if (client.readyState === WebSocket.OPEN) client.send(frame, { binary: false });
        }
      }
      ws.send(JSON.stringify({ seqs }));
    });
    return;
  }
  subscribers.add(ws);
  const forget = () => subscribers.delete(ws);
  ws.on('close', forget);
  ws.on('error', forget);
  ws.send(JSON.stringify({
    type: 'notification', timestamp: new Date().toISOString(), seq: null, data: { kind: 'welcome' },
  }));
});

wss.on('listening', () => console.log(`listening on 127.0.0.1:${port}`));

const stop = () => {
  for (const client of subscribers) client.terminate();
  wss.close();
  process.exit(0);
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
