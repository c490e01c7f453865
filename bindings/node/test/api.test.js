// The API: request properties, response head and body, listeners and their errors.
'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const net = require('node:net');
const { myriad, serve, request, raw, fcgi, tmpdir, until } = require('./helpers');

test('request properties over HTTP', async () => {
  let seen;
  const { srv, base, addr } = await serve((req, res) => {
    seen = {
      method: req.method,
      path: req.path,
      url: req.url,
      rawQuery: req.rawQuery,
      query: req.query,
      headers: req.headers,
      env: req.env,
      peer: req.peer,
      protocol: req.protocol,
      aborted: req.aborted,
    };
    res.end('ok');
  });
  const r = await request(`${base}/a%20b/c?x=1&y=%C3%A9&x=2&flag`, {
    headers: { 'X-Mixed-Case': 'v1', Cookie: 'a=1', 'Set-Cookie': 'not usual but kept' },
  });
  assert.equal(r.status, 200);
  assert.equal(r.body.toString(), 'ok');
  assert.equal(seen.method, 'GET');
  assert.equal(seen.path, '/a%20b/c');
  assert.equal(seen.url, '/a%20b/c?x=1&y=%C3%A9&x=2&flag');
  assert.equal(seen.rawQuery, 'x=1&y=%C3%A9&x=2&flag');
  assert.deepEqual({ ...seen.query }, { x: ['1', '2'], y: 'é', flag: '' });
  assert.equal(seen.headers['x-mixed-case'], 'v1');
  assert.equal(seen.headers.host, addr);
  assert.equal(seen.headers.cookie, 'a=1');
  assert.deepEqual(seen.headers['set-cookie'], ['not usual but kept']);
  assert.equal(seen.headers['X-Mixed-Case'], undefined);
  assert.equal(seen.env.REQUEST_METHOD, 'GET');
  assert.equal(seen.env.QUERY_STRING, 'x=1&y=%C3%A9&x=2&flag');
  assert.equal(seen.env.HTTP_X_MIXED_CASE, 'v1');
  assert.match(seen.peer, /^127\.0\.0\.1:\d+$/);
  assert.equal(seen.protocol, 'http');
  assert.equal(seen.aborted, false);
  await srv.close();
});

test('repeated request headers are joined as Node does', async () => {
  let headers;
  const { srv, addr } = await serve((req, res) => {
    headers = req.headers;
    res.end();
  });
  const out = await raw(
    addr,
    'GET / HTTP/1.1\r\nHost: x\r\nAccept: a\r\nAccept: b\r\nCookie: c=1\r\nCookie: d=2\r\nConnection: close\r\n\r\n',
  );
  assert.match(out, /^HTTP\/1\.1 200/);
  assert.equal(headers.accept, 'a, b');
  assert.equal(headers.cookie, 'c=1; d=2');
  await srv.close();
});

test('response status, headers and body types', async () => {
  const { srv, base } = await serve((req, res) => {
    const q = req.query;
    if (q.kind === 'writeHead') {
      res.writeHead(201, { 'X-One': '1', 'X-List': ['a', 'b'] });
      assert.equal(res.getHeader('x-one'), '1');
      res.end(Buffer.from('created'));
    } else if (q.kind === 'typed') {
      res.setHeader('X-Num', 42);
      res.end(new Uint16Array([0x6968])); // "hi" little-endian
    } else if (q.kind === 'arraybuffer') {
      res.end(new TextEncoder().encode('ab').buffer);
    } else if (q.kind === 'remove') {
      res.setHeader('X-Gone', 'x');
      assert.equal(res.hasHeader('X-GONE'), true);
      res.removeHeader('x-gone');
      assert.equal(res.hasHeader('x-gone'), false);
      res.setHeader('Content-Length', '999'); // managed by myriad: ignored
      assert.deepEqual(res.getHeaders(), { 'content-length': '999' });
      res.end('four');
    } else if (q.kind === 'utf8') {
      res.end('é'.repeat(20000)); // 40,000 bytes of UTF-8, longer than the stack buffer
    } else if (q.kind === 'big') {
      const b = Buffer.alloc(1 << 20, 7);
      res.end(b); // written without a copy
      b.fill(0, 0, 0); // (no change: the bytes must stay as written)
    } else {
      res.statusCode = 418;
      res.end();
    }
  });
  let r = await request(`${base}/?kind=writeHead`);
  assert.equal(r.status, 201);
  assert.equal(r.headers['x-one'], '1');
  assert.deepEqual(
    r.raw.filter((_, i) => i % 2 === 0 && r.raw[i] === 'X-List').length,
    2,
    'both values of a list header are sent',
  );
  assert.equal(r.body.toString(), 'created');
  r = await request(`${base}/?kind=typed`);
  assert.equal(r.headers['x-num'], '42');
  assert.equal(r.body.toString(), 'hi');
  r = await request(`${base}/?kind=arraybuffer`);
  assert.equal(r.body.toString(), 'ab');
  r = await request(`${base}/?kind=remove`);
  assert.equal(r.headers['x-gone'], undefined);
  assert.equal(r.headers['content-length'], '4');
  assert.equal(r.body.toString(), 'four');
  r = await request(`${base}/?kind=utf8`);
  assert.equal(r.body.toString(), 'é'.repeat(20000));
  r = await request(`${base}/?kind=big`);
  assert.equal(r.body.length, 1 << 20);
  assert.ok(r.body.every((x) => x === 7));
  r = await request(`${base}/`);
  assert.equal(r.status, 418);
  assert.equal(r.body.length, 0);
  r = await request(`${base}/`, { method: 'HEAD' });
  assert.equal(r.status, 418);
  await srv.close();
});

test('misuse of the response throws where Node throws', async () => {
  const errors = [];
  const { srv, base } = await serve((req, res) => {
    const attempt = (f) => {
      try {
        f();
        errors.push(null);
      } catch (e) {
        errors.push(e.code || e.name);
      }
    };
    attempt(() => res.setHeader('Bad Name', 'x'));
    attempt(() => res.setHeader('X-Ok', 'line\r\nInjected: 1'));
    attempt(() => res.setHeader('X-Undef', undefined));
    attempt(() => res.write({ not: 'bytes' }));
    attempt(() => res.setHeader('X-After', 'a refused write sent nothing'));
    res.write('a');
    attempt(() => res.setHeader('X-Late', '1'));
    attempt(() => res.writeHead(500));
    res.end('b');
    attempt(() => res.write('c'));
    res.end('ignored: already ended');
  });
  const r = await request(`${base}/`);
  assert.equal(r.body.toString(), 'ab');
  assert.equal(r.headers['x-after'], 'a refused write sent nothing');
  assert.deepEqual(errors, [
    'TypeError',
    'TypeError',
    'TypeError',
    'ERR_INVALID_ARG_TYPE',
    null,
    'ERR_HTTP_HEADERS_SENT',
    'ERR_HTTP_HEADERS_SENT',
    'ERR_STREAM_WRITE_AFTER_END',
  ]);
  await srv.close();
});

test('an invalid status code gives the client a 500', async () => {
  const errors = [];
  const { srv, base } = await serve((req, res) => {
    res.statusCode = 99;
    res.end('x');
  });
  srv.on('error', (e) => errors.push(e.code));
  const r = await request(`${base}/`);
  assert.equal(r.status, 500);
  assert.deepEqual(errors, ['ERR_HTTP_INVALID_STATUS_CODE']);
  await srv.close();
});

test('listeners: Unix socket, IPv6, FastCGI, addresses()', async () => {
  const dir = tmpdir();
  const sock = path.join(dir, 'h.sock');
  const fsock = path.join(dir, 'f.sock');
  const srv = myriad.createServer((req, res) => {
    res.setHeader('Content-Type', 'text/plain');
    res.end(`${req.protocol} ${req.peer} ${req.env.SCRIPT_NAME || ''}`);
  });
  const addrs = await srv.listen({ http: [`unix:${sock}`, '[::1]:0'], fcgi: `unix:${fsock}` });
  assert.equal(addrs.length, 3);
  assert.deepEqual(addrs[0], { proto: 'http', addr: `unix:${sock}` });
  assert.match(addrs[1].addr, /^\[::1\]:\d+$/);
  assert.deepEqual(addrs[2], { proto: 'fcgi', addr: `unix:${fsock}` });
  assert.deepEqual(srv.addresses(), addrs);
  assert.equal(srv.listening, true);
  let r = await request('http://localhost/', { socketPath: sock });
  assert.equal(r.body.toString(), 'http unix: ');
  r = await request(`http://${addrs[1].addr}/`);
  assert.match(r.body.toString(), /^http \[::1\]:\d+ $/);
  r = await fcgi(fsock, { REQUEST_METHOD: 'GET', SCRIPT_NAME: '/f', REQUEST_URI: '/f' });
  assert.equal(r.body, 'fcgi unix: /f');
  assert.equal(r.headers['content-type'], 'text/plain');
  await srv.close();
  assert.equal(srv.listening, false);
  assert.deepEqual(srv.addresses(), []);
});

test('listen errors reject with a code; the server can listen again after', async () => {
  const srv = myriad.createServer((req, res) => res.end());
  await assert.rejects(srv.listen({ http: 'no-port' }), { code: 'MYRIAD_EADDR', message: /bad http address 'no-port'/ });
  await assert.rejects(srv.listen({ http: [42] }), TypeError);
  await assert.rejects(srv.listen({}), { code: 'ERR_INVALID_ARG_VALUE' });
  await assert.rejects(srv.listen({ http: '127.0.0.1:0', threads: 2 }), { code: 'ERR_INVALID_ARG_VALUE' });
  await assert.rejects(srv.listen({ http: '127.0.0.1:0', maxBody: -1 }), { code: 'MYRIAD_EINVAL', message: /maxBody/ });
  const [{ addr }] = await srv.listen({ http: '127.0.0.1:0' });
  await assert.rejects(srv.listen({ http: '127.0.0.1:0' }), { code: 'ERR_SERVER_ALREADY_LISTEN' });
  const other = myriad.createServer((req, res) => res.end());
  // Node's shape for a port in use (as net.Server's 'error'), naming the listener.
  const [host, port] = [addr.slice(0, addr.lastIndexOf(':')), Number(addr.slice(addr.lastIndexOf(':') + 1))];
  await assert.rejects(other.listen({ http: addr }), (e) => {
    assert.equal(e.code, 'EADDRINUSE');
    assert.equal(e.errno, -98);
    assert.equal(e.syscall, 'listen');
    assert.equal(e.address, host);
    assert.equal(e.port, port);
    assert.match(e.message, new RegExp(`^listen EADDRINUSE: http listener ${addr}: Address already in use`));
    return true;
  });
  await srv.close();
  await assert.rejects(other.listen({ fcgi: 'unix:/nonexistent/x.sock' }), (e) => {
    assert.equal(e.code, 'ENOENT');
    assert.equal(e.address, '/nonexistent/x.sock');
    assert.equal(e.port, undefined);
    assert.match(e.message, /fcgi listener unix:\/nonexistent\/x\.sock: No such file or directory \(the directory \/nonexistent does not exist\)/);
    return true;
  });
  await assert.rejects(other.listen({ http: 'nosuchhost.invalid:80' }), { code: 'MYRIAD_EADDR', message: /nosuchhost\.invalid.*host name.*numeric/ });
  await assert.rejects(other.listen({ http: '127.0.0.1:0?bogus' }), { code: 'MYRIAD_EADDR', message: /unknown option "bogus"/ });
  await assert.rejects(srv.close(), { code: 'ERR_SERVER_NOT_RUNNING' });
  await srv.listen('127.0.0.1:0'); // a string is one HTTP address
  const r = await request(`http://${srv.addresses()[0].addr}/`);
  assert.equal(r.status, 200);
  await srv.close();
  assert.throws(() => myriad.createServer(), TypeError);
});

test('limits from createServer options and listen()', async () => {
  const srv = myriad.createServer({ maxHead: 1024 }, (req, res) => res.end('small'));
  const [{ addr }] = await srv.listen({ http: '127.0.0.1:0' });
  const ok = await raw(addr, 'GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
  assert.match(ok, /^HTTP\/1\.1 200/);
  const big = await raw(addr, `GET / HTTP/1.1\r\nHost: x\r\nX-Big: ${'x'.repeat(4096)}\r\n\r\n`);
  assert.match(big, /^HTTP\/1\.1 431/);
  await srv.close();
});

test('stats and version', async () => {
  assert.match(myriad.version, /^\d+\.\d+\.\d+$/);
  const { srv, base } = await serve((req, res) => res.end('x'));
  const before = myriad.stats();
  await request(`${base}/`);
  const after = myriad.stats();
  assert.equal(after.requests, 0, 'no live request handles');
  assert.ok(after.accepted >= before.accepted + 1);
  assert.ok(after.iterations > before.iterations);
  assert.ok(after.servers >= 1);
  for (const k of ['wait', 'ctl', 'read', 'received', 'write', 'accept', 'other', 'wakeups']) {
    assert.equal(typeof after[k], 'number', `stats().${k}`);
  }
  // The request was read, by a read call or (io_uring) a receive completion.
  assert.ok(after.read + after.received > before.read + before.received, 'input counted');
  assert.ok(after.write > before.write, 'output counted');
  await srv.close();
});

test('systemd: not socket-activated, no manager listening', async () => {
  // tests/systemd_e2e.sh runs the demo under systemd-socket-activate for the rest.
  assert.equal(myriad.listenFds(), 0);
  assert.equal(myriad.notify('READY=1'), false);
  assert.equal(myriad.watchdog(), false);
  assert.throws(() => myriad.notify(1), (e) => e.code === 'ERR_INVALID_ARG_TYPE');
  const srv = myriad.createServer((req, res) => res.end());
  await assert.rejects(srv.listen({ inherited: true }), (e) => e.code === 'ERR_INVALID_ARG_VALUE' && /LISTEN_FDS/.test(e.message));
});

test('flushHeaders sends the head before the body; end callbacks run', async () => {
  let release;
  const gate = new Promise((r) => {
    release = r;
  });
  const calls = [];
  const { srv, addr } = await serve(async (req, res) => {
    res.writeHead(202, { 'X-Early': 'yes' });
    res.flushHeaders();
    assert.equal(res.headersSent, true);
    await gate;
    res.end('late', () => calls.push('first'));
    res.end(() => calls.push('second'));
  });
  const [host, port] = addr.split(':');
  const s = net.connect({ host, port: Number(port) });
  s.write('GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
  let got = '';
  s.on('data', (c) => {
    got += c.toString('latin1');
  });
  assert.ok(await until(() => /\r\n\r\n/.test(got)), 'the head arrived while the handler waited');
  assert.match(got, /^HTTP\/1\.1 202/);
  assert.match(got, /X-Early: yes/);
  assert.doesNotMatch(got, /late/);
  release();
  await new Promise((r) => s.on('close', r));
  assert.match(got, /late/);
  assert.deepEqual(calls, ['first', 'second']);
  await srv.close();
});
