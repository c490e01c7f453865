// How Node users expect things to work: request fields in 'finish', Connect-style
// middleware, Express apps refused with a reason (never a crash), listen errors in Node's
// shape, cluster workers sharing a port.
'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const { execFile } = require('node:child_process');
const { myriad, serve, request } = require('./helpers');

test("request fields stay readable after the response ends (a logger on 'finish')", async () => {
  const logged = [];
  const { srv, base } = await serve((req, res) => {
    res.on('finish', () => {
      logged.push([req.method, req.url, req.path, req.rawQuery, req.query?.a, req.headers?.['user-agent'], req.peer]);
    });
    if (req.path === '/destroyed') {
      res.write('x');
      res.destroy();
      setImmediate(() => logged.push(['after destroy', req.url, req.headers?.['user-agent']]));
      return;
    }
    res.end('ok');
  });
  const r = await request(`${base}/log?a=1&a=2`, { headers: { 'User-Agent': 'probe/1' } });
  assert.equal(r.status, 200);
  await request(`${base}/destroyed`, { headers: { 'User-Agent': 'probe/2' } }).catch(() => {});
  await new Promise((r2) => setTimeout(r2, 50));
  const [m, url, p, raw, a, ua, peer] = logged[0];
  assert.deepEqual([m, url, p, raw, a, ua], ['GET', '/log?a=1&a=2', '/log', 'a=1&a=2', ['1', '2'], 'probe/1']);
  assert.match(peer, /^127\.0\.0\.1:\d+$/);
  assert.deepEqual(logged[1], ['after destroy', '/destroyed', 'probe/2']);
  await srv.close();
});

test('request fields stay readable after a client abort', async () => {
  let seen;
  let pending;
  const { srv, addr } = await serve((req, res) => {
    pending = res;
    // Never ends: writes until the client, gone, makes a write fail (that is when an abort
    // is noticed).
    const t = setInterval(() => res.write('x'.repeat(1024)), 20);
    res.on('close', () => {
      clearInterval(t);
      setImmediate(() => (seen = [req.aborted, req.url, req.headers?.['x-probe'], req.peer]));
    });
  });
  const net = require('node:net');
  const [host, port] = [addr.slice(0, addr.lastIndexOf(':')), Number(addr.slice(addr.lastIndexOf(':') + 1))];
  const c = net.connect(port, host, () => c.write('GET /gone?q=1 HTTP/1.1\r\nHost: x\r\nX-Probe: here\r\n\r\n'));
  c.once('data', () => c.destroy());
  for (let i = 0; i < 500 && !seen; i++) await new Promise((r) => setTimeout(r, 10));
  if (!seen) pending?.destroy(); // (so that close() below does not wait for it)
  assert.ok(seen, "'close' after the abort");
  assert.equal(seen[0], true);
  assert.equal(seen[1], '/gone?q=1');
  assert.equal(seen[2], 'here');
  assert.match(seen[3], /^127\.0\.0\.1:\d+$/);
  await srv.close();
});

test('a Connect-style (req, res, next) function works; next(err) is a 500, next() a 404', async () => {
  const errors = [];
  const mw = (req, res, next) => {
    if (req.path === '/ok') {
      res.setHeader('Content-Type', 'text/plain');
      res.end(`hello ${req.query.name}`);
    } else if (req.path === '/fail') next(new Error('mw failed'));
    else next();
  };
  const srv = myriad.createServer(mw);
  srv.on('error', (e) => errors.push(e.message));
  const [{ addr }] = await srv.listen({ http: '127.0.0.1:0' });
  let r = await request(`http://${addr}/ok?name=connect`);
  assert.equal(r.status, 200);
  assert.equal(String(r.body), 'hello connect');
  r = await request(`http://${addr}/fail`);
  assert.equal(r.status, 500);
  assert.deepEqual(errors, ['mw failed']);
  r = await request(`http://${addr}/other`);
  assert.equal(r.status, 404);
  assert.equal(String(r.body), 'Cannot GET /other');
  await srv.close();
});

test('an Express/Connect app is refused at createServer with what to do instead', () => {
  // The shape express() and connect() return: a function with handle and use.
  const app = function app(req, res, next) {
    app.handle(req, res, next);
  };
  app.handle = () => {};
  app.use = () => app;
  app.set = () => app;
  assert.throws(() => myriad.createServer(app), (e) => {
    assert.equal(e.code, 'ERR_MYRIAD_EXPRESS_APP');
    assert.match(e.message, /Express\/Connect app.*http\.createServer\(app\)/);
    return true;
  });
  let express;
  try {
    express = require('express');
  } catch {
    return; // (express is not a dependency; the real one is checked when it is installed)
  }
  assert.throws(() => myriad.createServer(express()), { code: 'ERR_MYRIAD_EXPRESS_APP' });
});

test('listen errors have the shape of Node\'s net errors, for every listener kind', async () => {
  const a = myriad.createServer((req, res) => res.end());
  const [{ addr }] = await a.listen({ http: '[::1]:0' }).catch(() => a.listen({ http: '127.0.0.1:0' }));
  const b = myriad.createServer((req, res) => res.end());
  const e = await b.listen({ fcgi: addr }).catch((err) => err);
  assert.equal(e.code, 'EADDRINUSE');
  assert.equal(e.errno, -98);
  assert.equal(e.syscall, 'listen');
  const port = Number(addr.slice(addr.lastIndexOf(':') + 1));
  assert.equal(e.port, port);
  assert.equal(e.address, addr.startsWith('[') ? '::1' : '127.0.0.1');
  assert.match(e.message, new RegExp(`fcgi listener ${addr.replace(/[[\]]/g, '\\$&')}`));
  await a.close();
  const p = await b.listen({ http: '127.0.0.1:1' }).catch((err) => err);
  if (process.getuid() !== 0) assert.equal(p.code, 'EACCES'); // (root may bind port 1)
  else await b.close();
});

test('cluster: workers share a TCP port (SO_REUSEPORT); a Unix path is refused with what to use', async () => {
  const script = path.join(__dirname, 'cluster-app.js');
  const out = await new Promise((resolve, reject) => {
    execFile(process.execPath, [script], { timeout: 30000 }, (err, stdout, stderr) =>
      err ? reject(new Error(`${err.message}\n${stdout}\n${stderr}`)) : resolve(stdout),
    );
  });
  const res = JSON.parse(out.trim().split('\n').pop());
  assert.equal(res.listening, 2, 'both workers listen on one port');
  assert.equal(res.pids, 2, 'connections reach both workers');
  assert.equal(res.answered, res.sent);
  assert.equal(res.unixCode, 'ERR_MYRIAD_CLUSTER');
  assert.match(res.unixMessage, /supervisor/);
});
