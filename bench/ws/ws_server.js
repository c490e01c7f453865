// The Node `ws` side of bench/ws/run (the npm ws package, perMessageDeflate off as by
// default on a ws server): /ws echo, /sub subscribers to one broadcast set ("pub:X" on any
// socket sends X to every subscriber, the way ws's README broadcasts), / "ok".
//   node ws_server.js WS_MODULE_DIR PORT   (prints "listening 127.0.0.1:PORT")
'use strict';
const http = require('node:http');
const { WebSocketServer, WebSocket } = require(process.argv[2]);

const subs = new Set();
const server = http.createServer((req, res) => res.end('ok'));
const wss = new WebSocketServer({ noServer: true });
server.on('upgrade', (req, socket, head) => {
  wss.handleUpgrade(req, socket, head, (ws) => {
    const sub = req.url === '/sub';
    if (sub) {
      subs.add(ws);
      ws.on('close', () => subs.delete(ws));
    }
    ws.on('message', (data, isBinary) => {
      if (data.length > 4 && data.toString('latin1', 0, 4) === 'pub:') {
        const m = data.subarray(4);
        for (const s of subs) if (s.readyState === WebSocket.OPEN) s.send(m, { binary: isBinary });
        return;
      }
      ws.send(data, { binary: isBinary });
    });
  });
});
server.listen(Number(process.argv[3] || 0), '127.0.0.1', () => {
  console.log(`listening 127.0.0.1:${server.address().port}`);
});
process.on('SIGTERM', () => process.exit(0));
