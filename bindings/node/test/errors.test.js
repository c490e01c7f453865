// Handler errors and bad input: the client gets the right status, the error is reported,
// the server keeps serving, and no request handle is left behind.
'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const net = require('node:net');
const path = require('node:path');
const { execFile } = require('node:child_process');
const { myriad, serve, request, raw, until } = require('./helpers');

test('a thrown error or a rejected promise gives a 500, reported on the error event', async () => {
  const reported = [];
  const { srv, base, addr } = await serve(async (req, res) => {
    if (req.path === '/sync') throw new Error('sync boom');
    if (req.path === '/async') {
      await new Promise((r) => setTimeout(r, 5));
      throw new Error('async boom');
    }
    if (req.path === '/after-head') {
      res.setHeader('Content-Type', 'text/plain');
      res.write('partial');
      await new Promise((r) => setImmediate(r));
      throw new Error('late boom');
    }
    if (req.path === '/reject-value') return Promise.reject('not an Error');
    res.end('fine');
  });
  srv.on('error', (err, req) => reported.push([String(err.message ?? err), req.path]));
  let r = await request(`${base}/sync`);
  assert.equal(r.status, 500);
  assert.equal(r.body.toString(), 'Internal Server Error');
  r = await request(`${base}/async`);
  assert.equal(r.status, 500);
  r = await request(`${base}/reject-value`);
  assert.equal(r.status, 500);
  // The head was out: the body is cut short (no last chunk, then the close), never passed
  // off as a whole one.
  const cut = await raw(addr, 'GET /after-head HTTP/1.1\r\nHost: t\r\n\r\n');
  assert.match(cut, /^HTTP\/1\.1 200 /);
  assert.match(cut, /\r\n\r\n7\r\npartial\r\n$/);
  r = await request(`${base}/ok`);
  assert.equal(r.status, 200);
  assert.equal(r.body.toString(), 'fine');
  assert.deepEqual(reported, [
    ['sync boom', '/sync'],
    ['async boom', '/async'],
    ['not an Error', '/reject-value'],
    ['late boom', '/after-head'],
  ]);
  assert.equal(myriad.stats().requests, 0);
  await srv.close();
});

test('without an error listener, handler errors go to stderr with their stack', async () => {
  const script = `
    const myriad = require(${JSON.stringify(path.join(__dirname, '..'))});
    const http = require('node:http');
    const srv = myriad.createServer(() => { throw new Error('to stderr'); });
    srv.listen({ http: '127.0.0.1:0' }).then(([{ addr }]) => {
      http.get('http://' + addr + '/', (res) => {
        res.resume();
        res.on('end', () => { console.log('status', res.statusCode); srv.close(); });
      });
    });`;
  const { stdout, stderr } = await new Promise((resolve, reject) =>
    execFile(process.execPath, ['-e', script], { timeout: 10000 }, (err, stdout, stderr) =>
      err ? reject(err) : resolve({ stdout, stderr }),
    ),
  );
  assert.equal(stdout.trim(), 'status 500');
  assert.match(stderr, /myriad: request handler failed: Error: to stderr\n\s+at /);
});

test('malformed requests are answered by myriad without calling the handler', async () => {
  let calls = 0;
  const { srv, addr } = await serve((req, res) => {
    calls++;
    res.end();
  });
  const cases = [
    ['GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n', /^HTTP\/1\.1 400/],
    ['GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n', /^HTTP\/1\.1 400/],
    ['GET /\x00 HTTP/1.1\r\nHost: x\r\n\r\n', /^HTTP\/1\.1 400/],
    ['BAD\r\n\r\n', /^HTTP\/1\.1 400/],
    ['GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n', /^HTTP\/1\.1 (400|501)/],
  ];
  for (const [bytes, want] of cases) assert.match(await raw(addr, bytes), want, JSON.stringify(bytes));
  assert.equal(calls, 0);
  const ok = await raw(addr, 'GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
  assert.match(ok, /^HTTP\/1\.1 200/);
  assert.equal(calls, 1);
  await srv.close();
});

test('a body over maxBody: 413 to the client, body() rejects in the handler', async () => {
  let bodyError;
  const srv = myriad.createServer({ maxBody: 1000 }, async (req, res) => {
    try {
      await req.body();
      res.end('read');
    } catch (e) {
      bodyError = e;
      res.end('not sent: the request is gone');
    }
  });
  const [{ addr }] = await srv.listen({ http: '127.0.0.1:0' });
  // A declared length over the limit is refused before the handler runs.
  let out = await raw(addr, `POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n${'x'.repeat(5000)}`);
  assert.match(out, /^HTTP\/1\.1 413/);
  assert.equal(bodyError, undefined);
  // A chunked body crosses it while the handler reads.
  const chunk = `${(600).toString(16)}\r\n${'y'.repeat(600)}\r\n`;
  out = await raw(addr, `POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n${chunk}${chunk}0\r\n\r\n`);
  assert.match(out, /^HTTP\/1\.1 413/);
  assert.ok(await until(() => bodyError));
  assert.equal(bodyError.code, 'ECONNRESET');
  assert.equal(myriad.stats().requests, 0);
  const r = await request(`http://${addr}/`, { method: 'POST', body: 'small' });
  assert.equal(r.body.toString(), 'read');
  await srv.close();
});

test('a response never ended is released when the client goes away', async () => {
  let req0;
  const { srv, addr } = await serve((req) => {
    req0 = req;
    req.on('aborted', () => {});
  });
  const s = net.connect({ host: addr.split(':')[0], port: Number(addr.split(':')[1]) });
  s.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n');
  await until(() => req0);
  s.resetAndDestroy(); // an RST: a FIN alone is a half-close, which still gets its response
  assert.ok(await until(() => req0 && req0.aborted), 'the handler saw the abort');
  assert.equal(myriad.stats().requests, 0);
  await srv.close();
});

test('res.destroy() cuts the response short; nothing at all before the head', async () => {
  const seen = [];
  const { srv, addr } = await serve(async (req, res) => {
    if (req.path === '/early') {
      res.destroy();
    } else {
      res.write('part');
      res.destroy();
    }
    seen.push([res.destroyed, res.writableEnded]);
    assert.throws(() => res.write('more'), { code: 'ERR_STREAM_WRITE_AFTER_END' });
    res.destroy(); // a second call does nothing
  });
  const cut = await raw(addr, 'GET /late HTTP/1.1\r\nHost: t\r\n\r\nGET /late HTTP/1.1\r\nHost: t\r\n\r\n');
  assert.match(cut, /^HTTP\/1\.1 200 /);
  assert.match(cut, /\r\n\r\n4\r\npart\r\n$/); // and no answer to the second request
  assert.equal(await raw(addr, 'GET /early HTTP/1.1\r\nHost: t\r\n\r\n'), '');
  assert.deepEqual(seen, [[true, true], [true, true]]);
  assert.ok(await until(() => myriad.stats().requests === 0), 'no request handle left');
  await srv.close();
});
