'use strict';
// The Node `ws` peer of hubbub-bench: every text message received on /ws is sent to every
// connected client (the sender included); /echo sends each message back to its sender.
// Configured the way a production deployment would be: no compression, no per-message
// logging, a large accept backlog.

const http = require('http');
const { WebSocketServer, WebSocket } = require('ws');

const port = Number(process.env.PORT) || 8080;
const host = process.env.HOST || '127.0.0.1';

const server = http.createServer((req, res) => {
  res.writeHead(req.url === '/healthz' ? 200 : 404);
  res.end();
});
const chat = new WebSocketServer({ noServer: true, perMessageDeflate: false });
const echo = new WebSocketServer({ noServer: true, perMessageDeflate: false, clientTracking: false });

server.on('upgrade', (req, socket, head) => {
  const path = req.url.split('?')[0];
  const wss = path === '/ws' ? chat : path === '/echo' ? echo : null;
  if (!wss) {
    socket.destroy();
    return;
  }
  wss.handleUpgrade(req, socket, head, (ws) => wss.emit('connection', ws, req));
});

chat.on('connection', (ws) => {
  ws.on('error', () => {});
  ws.on('message', (data, isBinary) => {
    if (isBinary) return;
    for (const client of chat.clients) {
      if (client.readyState === WebSocket.OPEN) client.send(data, { binary: false });
    }
  });
});

echo.on('connection', (ws) => {
  ws.on('error', () => {});
  ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
});

server.listen(port, host, 4096);
process.on('SIGTERM', () => process.exit(0));
