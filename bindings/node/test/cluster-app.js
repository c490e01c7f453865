// Run by ecosystem.test.js: a cluster primary with two workers serving one port through
// myriad; prints a JSON summary as its last line and exits.
'use strict';
const cluster = require('node:cluster');
const http = require('node:http');
const net = require('node:net');
const myriad = require('..');

if (cluster.isPrimary) {
  // A port nobody uses (the workers bind it; the primary does not listen).
  const probe = net.createServer().listen(0, '127.0.0.1', () => {
    const port = probe.address().port;
    probe.close(() => start(port));
  });
  const start = (port) => {
    const workers = [cluster.fork({ PORT: port }), cluster.fork({ PORT: port })];
    let listening = 0;
    let unixCode;
    let unixMessage;
    for (const w of workers) {
      w.on('message', (m) => {
        if (m.unix) [unixCode, unixMessage] = m.unix;
        if (m.listening) listening++;
        if (listening === 2 && unixCode) run();
      });
    }
    const run = async () => {
      const pids = new Set();
      let answered = 0;
      const sent = 40;
      for (let i = 0; i < sent; i++) {
        const body = await new Promise((resolve, reject) => {
          http.get({ host: '127.0.0.1', port, path: '/', agent: false }, (res) => {
            let b = '';
            res.on('data', (c) => (b += c));
            res.on('end', () => resolve(b));
          }).on('error', reject);
        });
        pids.add(body);
        answered++;
      }
      process.stdout.write(JSON.stringify({ listening, pids: pids.size, answered, sent, unixCode, unixMessage }) + '\n');
      for (const w of workers) w.kill();
      process.exit(0);
    };
    setTimeout(() => {
      process.stdout.write(JSON.stringify({ listening, error: 'timeout' }) + '\n');
      process.exit(1);
    }, 20000).unref();
  };
} else {
  const srv = myriad.createServer((req, res) => res.end(String(process.pid)));
  const bad = myriad.createServer((req, res) => res.end());
  bad.listen({ http: `unix:/tmp/myriad-cluster-${process.ppid}.sock` }).then(
    () => process.send({ unix: ['bound', ''] }),
    (e) => process.send({ unix: [e.code, e.message] }),
  );
  srv.listen({ http: `127.0.0.1:${process.env.PORT}` }).then(
    () => process.send({ listening: true }),
    (e) => {
      console.error(e.message);
      process.exit(1);
    },
  );
}
