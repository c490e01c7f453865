// FastCGI through real front ends: cgi-fcgi (libfcgi's client) and nginx with keep_conn.
'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const net = require('node:net');
const { spawn, execFileSync } = require('node:child_process');
const { myriad, fcgi, request, tmpdir, until } = require('./helpers');

function handler(req, res) {
  if (req.path === '/echo') {
    return req.body().then((b) => {
      res.statusCode = 201;
      res.setHeader('X-Len', b.length);
      res.setHeader('Content-Type', req.headers['content-type'] || 'none');
      res.end(b);
    });
  }
  if (req.path === '/log') {
    res.log('logged from node');
    return void res.end('logged');
  }
  if (req.path === '/stream') {
    for (let i = 0; i < 3; i++) res.write(`part${i};`);
    return void setTimeout(() => res.end('end'), 10);
  }
  res.statusCode = 404;
  res.end(`${req.env.REQUEST_METHOD} ${req.env.SCRIPT_NAME} ${req.query.k} ${req.env.HTTP_X_FRONT ?? ''}`);
}

test('FastCGI with cgi-fcgi: params, body, status, headers, streaming', async () => {
  const dir = tmpdir();
  const sock = path.join(dir, 'app.sock');
  const srv = myriad.createServer(handler);
  await srv.listen({ fcgi: `unix:${sock}` });
  let r = await fcgi(sock, { REQUEST_METHOD: 'GET', SCRIPT_NAME: '/x', REQUEST_URI: '/x?k=v', QUERY_STRING: 'k=v', HTTP_X_FRONT: 'f' });
  assert.equal(r.status, 404);
  assert.equal(r.body, 'GET /x v f');
  r = await fcgi(sock, { REQUEST_METHOD: 'POST', SCRIPT_NAME: '/echo', REQUEST_URI: '/echo', CONTENT_TYPE: 'text/x' }, 'fcgi body');
  assert.equal(r.status, 201);
  assert.equal(r.headers['x-len'], '9');
  assert.equal(r.headers['content-type'], 'text/x');
  assert.equal(r.body, 'fcgi body');
  r = await fcgi(sock, { REQUEST_METHOD: 'GET', SCRIPT_NAME: '/stream', REQUEST_URI: '/stream' });
  assert.equal(r.body, 'part0;part1;part2;end');
  await srv.close();
});

test('nginx in front with keep_conn: many requests over few connections', { skip: !fs.existsSync('/usr/sbin/nginx') && 'no nginx' }, async (t) => {
  const dir = tmpdir();
  const sock = path.join(dir, 'app.sock');
  const srv = myriad.createServer(handler);
  await srv.listen({ fcgi: `unix:${sock}` });
  // A port the kernel says is free (a random one collided now and then with a client
  // socket's local port, and nginx could not bind).
  const port = await new Promise((resolve) => {
    const probe = net.createServer().listen(0, '127.0.0.1', () => {
      const p = probe.address().port;
      probe.close(() => resolve(p));
    });
  });
  fs.writeFileSync(
    path.join(dir, 'nginx.conf'),
    `daemon off; worker_processes 1; ${process.getuid() === 0 ? 'user root;' : ''} pid ${dir}/nginx.pid; error_log ${dir}/error.log info;
     events { worker_connections 256; }
     http { access_log off; client_body_temp_path ${dir}; fastcgi_temp_path ${dir};
       upstream app { server unix:${sock}; keepalive 4; }
       server { listen 127.0.0.1:${port};
         location / { include /etc/nginx/fastcgi_params; fastcgi_param SCRIPT_NAME $uri;
                      fastcgi_pass app; fastcgi_keep_conn on; } } }`,
  );
  const nginx = spawn('/usr/sbin/nginx', ['-p', dir, '-c', path.join(dir, 'nginx.conf'), '-e', path.join(dir, 'error.log')], { stdio: 'ignore' });
  t.after(() => nginx.kill('SIGQUIT'));
  assert.ok(await until(() => fs.existsSync(path.join(dir, 'nginx.pid'))), 'nginx started');
  const before = myriad.stats().accepted;
  for (let i = 0; i < 50; i++) {
    const r = await request(`http://127.0.0.1:${port}/q?k=${i}`, { headers: { 'X-Front': 'nginx' } });
    assert.equal(r.status, 404);
    assert.equal(r.body.toString(), `GET /q ${i} nginx`);
  }
  const r = await request(`http://127.0.0.1:${port}/echo`, { method: 'POST', body: 'via nginx', headers: { 'Content-Type': 'a/b' } });
  assert.equal(r.status, 201);
  assert.equal(r.body.toString(), 'via nginx');
  const log = await request(`http://127.0.0.1:${port}/log`);
  assert.equal(log.body.toString(), 'logged');
  assert.ok(await until(() => /logged from node/.test(fs.readFileSync(path.join(dir, 'error.log'), 'utf8'))), 'STDERR reached nginx\'s error log');
  const conns = myriad.stats().accepted - before;
  assert.ok(conns >= 1 && conns <= 4, `52 requests over ${conns} FastCGI connection(s)`);
  await srv.close();
});

/** One FastCGI record. */
function rec(type, id, content = Buffer.alloc(0)) {
  const h = Buffer.from([1, type, id >> 8, id & 255, content.length >> 8, content.length & 255, 0, 0]);
  return Buffer.concat([h, content]);
}

/** FastCGI name-value pairs (short names and values). */
function pairs(env) {
  return Buffer.concat(Object.entries(env).map(([k, v]) => Buffer.concat([Buffer.from([k.length, v.length]), Buffer.from(k + v, 'latin1')])));
}

/** A raw FastCGI POST whose body comes in `pieces` (50 ms apart) after `env`'s params;
 * resolves to the CGI response's body (after its head). */
function rawPost(addr, env, pieces) {
  return new Promise((resolve, reject) => {
    const [host, port] = addr.split(':');
    const s = net.connect(Number(port), host);
    let got = Buffer.alloc(0);
    let out = Buffer.alloc(0);
    s.on('error', reject);
    s.on('data', (d) => {
      got = Buffer.concat([got, d]);
      while (got.length >= 8) {
        const len = got.readUInt16BE(4) + got[6] + 8;
        if (got.length < len) break;
        if (got[1] === 6) out = Buffer.concat([out, got.subarray(8, 8 + got.readUInt16BE(4))]);
        if (got[1] === 3) {
          s.destroy();
          const text = out.toString('latin1');
          return resolve(text.slice(text.indexOf('\r\n\r\n') + 4));
        }
        got = got.subarray(len);
      }
    });
    s.write(Buffer.concat([rec(1, 1, Buffer.from([0, 1, 0, 0, 0, 0, 0, 0])), rec(4, 1, pairs(env)), rec(4, 1)]));
    let i = 0;
    const next = () => {
      if (i < pieces.length) {
        s.write(rec(5, 1, Buffer.from(pieces[i++])));
        setTimeout(next, 50);
      } else s.write(rec(5, 1));
    };
    setTimeout(next, 50);
  });
}

test('a FastCGI body of unknown length ends at the empty STDIN record, however it is read', async () => {
  const srv = myriad.createServer(async (req, res) => {
    let body = '';
    if (req.path === '/body') body = (await req.body()).toString();
    else if (req.path === '/iter') for await (const p of req) body += p.toString();
    else {
      req.on('data', (p) => { body += p.toString(); });
      await new Promise((resolve) => req.on('end', resolve));
    }
    res.end(body);
  });
  const [{ addr }] = await srv.listen({ fcgi: '127.0.0.1:0' });
  const pieces = ['abc', 'defg', 'hi'];
  for (const path of ['/body', '/iter', '/events']) {
    for (const cl of [undefined, '']) {
      const env = { REQUEST_METHOD: 'POST', REQUEST_URI: path, SCRIPT_NAME: path };
      if (cl !== undefined) env.CONTENT_LENGTH = cl;
      assert.equal(await rawPost(addr, env, pieces), 'abcdefghi', `${path}, CONTENT_LENGTH ${JSON.stringify(cl)}`);
    }
  }
  await srv.close();
});
