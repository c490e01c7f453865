// Static files from Node: myriad.files (options and errors), files.serve and
// res.sendFile (ranges, headers set before, errors answered), with Node's http client and
// raw sockets; 'finish' after a file response as after end().
'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { myriad, serve, request, raw } = require('./helpers');

function tree() {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'myriad-node-files-'));
  fs.mkdirSync(path.join(d, 'dir'));
  fs.writeFileSync(path.join(d, 'a.txt'), '0123456789');
  fs.writeFileSync(path.join(d, 'dir', 'start.html'), '<p>start</p>');
  fs.writeFileSync(path.join(d, 'big.bin'), Buffer.alloc(3 << 20, 7));
  return d;
}

test('myriad.files refuses a bad root or option with a code', () => {
  const d = tree();
  assert.throws(() => myriad.files(path.join(d, 'missing')), { code: 'MYRIAD_EFILES_ROOT', message: /missing/ });
  assert.throws(() => myriad.files(path.join(d, 'a.txt')), { code: 'MYRIAD_EFILES_ROOT' });
  assert.throws(() => myriad.files(d, { index: 'a/b' }), { code: 'MYRIAD_EINVAL' });
  assert.throws(() => myriad.files(d, { cacheValidMs: 0 }), { code: 'MYRIAD_EINVAL' });
  assert.throws(() => myriad.files(5), { code: 'ERR_INVALID_ARG_TYPE' });
  assert.ok(myriad.files(d) instanceof myriad.Files);
  fs.rmSync(d, { recursive: true });
});

test('files.serve and res.sendFile answer and end the response', async () => {
  const d = tree();
  const files = myriad.files(d, { index: 'start.html', cacheControl: 'max-age=7' });
  let finished = 0;
  const { srv, base, addr } = await serve((req, res) => {
    res.on('finish', () => finished++);
    if (req.path.startsWith('/f/')) {
      assert.equal(files.serve(req, res, req.path.slice(3)), 0);
      assert.equal(res.writableEnded, true);
      assert.equal(files.serve(req, res, 'a.txt'), -8, 'a second answer: MYRIAD_EGONE');
    } else if (req.path === '/range') {
      assert.equal(res.sendFile(path.join(d, 'a.txt'), { offset: 2, length: 3 }), 0);
    } else if (req.path === '/typed') {
      res.statusCode = 201;
      res.setHeader('Content-Type', 'text/x-digits');
      res.sendFile(path.join(d, 'a.txt'));
    } else if (req.path === '/missing') {
      assert.equal(res.sendFile(path.join(d, 'nope')), -1002, 'ENOENT as MYRIAD_EOS_BASE - 2');
    } else if (req.path === '/past') {
      assert.equal(res.sendFile(path.join(d, 'a.txt'), { offset: 8, length: 5 }), -62);
    } else {
      res.sendFile(path.join(d, 'big.bin'));
    }
  });
  let r = await request(`${base}/f/a.txt`);
  assert.equal(r.status, 200);
  assert.equal(r.body.toString(), '0123456789');
  assert.equal(r.headers['cache-control'], 'max-age=7');
  assert.match(r.headers.etag, /^"/);
  r = await request(`${base}/f/a.txt`, { headers: { 'If-None-Match': r.headers.etag } });
  assert.equal(r.status, 304);
  r = await request(`${base}/f/a.txt`, { headers: { Range: 'bytes=-3' } });
  assert.equal(r.status, 206);
  assert.equal(r.body.toString(), '789');
  r = await request(`${base}/f/dir/`);
  assert.equal(r.body.toString(), '<p>start</p>');
  r = await request(`${base}/f/dir`);
  assert.equal(r.status, 301);
  assert.equal(r.headers.location, '/f/dir/');
  const t = await raw(addr, 'GET /f/../a.txt HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n');
  assert.match(t.toString(), /^HTTP\/1\.1 400 /);
  r = await request(`${base}/f/a.txt`, { method: 'POST', body: 'x' });
  assert.equal(r.status, 405);
  r = await request(`${base}/range`);
  assert.equal(r.body.toString(), '234');
  r = await request(`${base}/typed`);
  assert.equal(r.status, 201);
  assert.equal(r.headers['content-type'], 'text/x-digits');
  assert.equal(r.body.toString(), '0123456789');
  r = await request(`${base}/missing`);
  assert.equal(r.status, 404);
  r = await request(`${base}/past`);
  assert.equal(r.status, 416);
  r = await request(`${base}/big`);
  assert.equal(r.body.length, 3 << 20);
  assert.ok(r.body.every((b) => b === 7));
  r = await request(`${base}/big`, { method: 'HEAD' });
  assert.equal(r.headers['content-length'], String(3 << 20));
  await new Promise((resolve) => setImmediate(resolve));
  assert.ok(finished >= 12, `'finish' after each file response (${finished})`);
  await srv.close();
  fs.rmSync(d, { recursive: true });
});
