'use strict';
// The Socket.IO peer of hubbub-bench: every `message` event is emitted to every connected
// socket (the sender included, one encoding per broadcast); an `echo` event is emitted back to
// its sender. WebSocket transport only (no long-polling upgrade dance), no compression, no
// per-message logging.

const http = require('http');
const { Server } = require('socket.io');

const port = Number(process.env.PORT) || 8080;
const host = process.env.HOST || '127.0.0.1';

const httpServer = http.createServer();
const io = new Server(httpServer, {
  transports: ['websocket'],
  serveClient: false,
  perMessageDeflate: false,
  httpCompression: false,
});

io.on('connection', (socket) => {
  socket.on('message', (text) => io.emit('message', text));
  socket.on('echo', (text) => socket.emit('echo', text));
});

httpServer.listen(port, host, 4096);
process.on('SIGTERM', () => process.exit(0));
