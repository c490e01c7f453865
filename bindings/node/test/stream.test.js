// Streaming both ways: request bodies read piece by piece or whole, responses written in
// pieces with backpressure against a slow reader, and aborts in the middle.
'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const http = require('node:http');
const crypto = require('node:crypto');
const { setTimeout: sleep } = require('node:timers/promises');
const { myriad, serve, request, raw, until, connect, resetAfter, slowDownload } = require('./helpers');

const warnings = [];
process.on('warning', (w) => warnings.push(w.name));
const sha = (b) => crypto.createHash('sha256').update(b).digest('hex');

test('a chunked upload read piece by piece as it arrives', async () => {
  let pieces = 0;
  let firstPieceBeforeEnd = false;
  let clientDone = false;
  const { srv, addr } = await serve(async (req, res) => {
    const h = crypto.createHash('sha256');
    let n = 0;
    for await (const c of req) {
      assert.ok(Buffer.isBuffer(c));
      if (pieces++ === 0) firstPieceBeforeEnd = !clientDone;
      h.update(c);
      n += c.length;
    }
    res.end(`${n} ${h.digest('hex')}`);
  }, { maxBody: 64 << 20 });
  const data = crypto.randomBytes(4 << 20);
  const done = new Promise((resolve, reject) => {
    const [host, port] = addr.split(':');
    const req = http.request({ host, port, method: 'PUT', path: '/up', headers: { 'Transfer-Encoding': 'chunked' } }, (res) => {
      const parts = [];
      res.on('data', (c) => parts.push(c));
      res.on('end', () => resolve(Buffer.concat(parts).toString()));
    });
    req.on('error', reject);
    (async () => {
      for (let off = 0; off < data.length; off += 256 << 10) {
        req.write(data.subarray(off, off + (256 << 10)));
        await sleep(2);
      }
      clientDone = true;
      req.end();
    })();
  });
  assert.equal(await done, `${data.length} ${sha(data)}`);
  assert.ok(pieces > 1, `the body came in pieces (${pieces})`);
  assert.ok(firstPieceBeforeEnd, 'the handler saw data before the upload ended');
  await srv.close();
});

test('req.body() with Content-Length, empty bodies, and a second reader refused', async () => {
  let second;
  const { srv, base } = await serve(async (req, res) => {
    const b = await req.body();
    try {
      await req.body();
    } catch (e) {
      second = e.code;
    }
    res.end(`${req.method} ${b.length} ${sha(b)}`);
  }, { maxBody: 64 << 20 });
  const data = crypto.randomBytes(3_000_000);
  let r = await request(`${base}/`, { method: 'POST', body: data, headers: { 'Content-Length': data.length } });
  assert.equal(r.body.toString(), `POST ${data.length} ${sha(data)}`);
  assert.equal(second, 'ERR_BODY_CONSUMED');
  r = await request(`${base}/`);
  assert.equal(r.body.toString(), `GET 0 ${sha(Buffer.alloc(0))}`);
  r = await request(`${base}/`, { method: 'POST', body: '', headers: { 'Content-Length': 0 } });
  assert.equal(r.body.toString(), `POST 0 ${sha(Buffer.alloc(0))}`);
  await srv.close();
});

test('a large download paced by write() and drain against a slow reader', async () => {
  const total = 16 << 20;
  const piece = Buffer.alloc(64 << 10, 'z');
  let peak = 0;
  let waits = 0;
  const { srv, addr } = await serve(async (req, res) => {
    res.setHeader('Content-Type', 'application/octet-stream');
    for (let sent = 0; sent < total; sent += piece.length) {
      const ok = res.write(piece);
      peak = Math.max(peak, res.writableLength);
      if (!ok) {
        waits++;
        await res.drain();
      }
    }
    res.end();
  });
  // The client reads slowly at first: 2 MB, then a pause, then the rest.
  const got = await slowDownload(addr);
  assert.equal(got, total);
  assert.ok(waits > 0, 'write() returned false at least once');
  assert.ok(peak <= 256 << 10, `queued bytes stayed bounded (peak ${peak})`);
  assert.deepEqual(warnings, [], 'no listener piled up while waiting for drain');
  await srv.close();
});

test('a client that goes away mid-download: signal, close event, released handle', async () => {
  let signalled = false;
  let closed = false;
  let writesAfter = null;
  const { srv, addr } = await serve(async (req, res) => {
    req.signal.addEventListener('abort', () => {
      signalled = true;
    });
    res.on('close', () => {
      closed = true;
    });
    while (!req.aborted) {
      if (!res.write(Buffer.alloc(32 << 10))) await res.drain();
    }
    writesAfter = res.write('more'); // false: nobody to send it to
    res.end();
  });
  await resetAfter(addr, 1 << 20);
  assert.ok(await until(() => writesAfter !== null), 'the handler loop ended');
  assert.equal(signalled, true);
  assert.equal(closed, true);
  assert.equal(writesAfter, false);
  assert.equal(myriad.stats().requests, 0);
  await srv.close();
});

test('an upload cut off by the client: the body iterator throws', async () => {
  let error;
  const { srv, addr } = await serve(async (req, res) => {
    try {
      for await (const c of req) void c;
    } catch (e) {
      error = e;
    }
    res.end();
  });
  const s = connect(addr);
  s.write(`POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n${'a'.repeat(1000)}`);
  await sleep(50);
  s.destroy(); // FIN before the declared length: the body can never complete
  assert.ok(await until(() => error), 'the iterator threw');
  assert.equal(error.code, 'ECONNRESET');
  assert.equal(myriad.stats().requests, 0);
  await srv.close();
});

test('20,000 one-byte chunks in one write arrive whole and in order, however the body is read', async () => {
  const { srv, addr } = await serve(async (req, res) => {
    let body = '';
    if (req.path === '/body') body = (await req.body()).toString('latin1');
    else if (req.path === '/iter') for await (const p of req) body += p.toString('latin1');
    else {
      req.on('data', (p) => { body += p.toString('latin1'); });
      await new Promise((resolve) => req.on('end', resolve));
    }
    res.end(`${body.length} ${sha(body)}`);
  });
  let wire = '';
  let want = '';
  for (let i = 0; i < 20000; i++) {
    const c = String.fromCharCode(97 + (i % 26));
    wire += `1\r\n${c}\r\n`;
    want += c;
  }
  wire += '0\r\n\r\n';
  for (const path of ['/body', '/iter', '/events']) {
    const out = await raw(addr, `POST ${path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n${wire}`);
    assert.ok(out.startsWith('HTTP/1.1 200'), out.slice(0, 200));
    assert.ok(out.endsWith(`20000 ${sha(want)}`), `${path}: ${out.slice(-100)}`);
  }
  await srv.close();
});
