// Node's own http module serving the benchmark's hello-world (same body and Content-Type).
//   node bench/peers/node_http.js PORT
'use strict';
const http = require('node:http');
const srv = http.createServer((req, res) => {
  res.setHeader('Content-Type', 'text/plain');
  res.end('Hello, World!');
});
srv.keepAliveTimeout = 300000;
srv.headersTimeout = 310000;
srv.listen(Number(process.argv[2]), '127.0.0.1');
