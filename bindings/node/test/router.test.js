// The router, forms (urlencoded and streamed multipart), query strings and cookies, with
// Node's own http client, raw sockets and cgi-fcgi.
'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const { myriad, serve, request, raw, fcgi } = require('./helpers');

function app() {
  const r = myriad.router();
  let hooked = 0;
  r.use((req, res) => {
    hooked++;
    if (req.path.startsWith('/private/') && !req.headers['x-token']) {
      res.statusCode = 401;
      res.end('no token');
    }
  });
  r.get('/users/:id', (req, res) => {
    res.setCookie('seen', 'yes', { path: '/', httpOnly: true, sameSite: 'Lax', maxAge: 60 });
    assert.throws(() => res.setCookie('bad name', 'v'), { code: 'MYRIAD_ECOOKIE' });
    assert.throws(() => res.setCookie('n', 'a;b'), { code: 'MYRIAD_ECOOKIE' });
    res.end(`${req.params.id}|${req.cookies.sid}|${req.cookies.a}`);
  });
  r.get('/users/new', (req, res) => res.end('new form'));
  r.put('/users/:id', async (req, res) => {
    await new Promise((resolve) => setTimeout(resolve, 5));
    res.end(`put ${req.params.id}`);
  });
  r.get('/files/*path', (req, res) => res.end(`file ${req.params.path}`));
  r.get('/private/x', (req, res) => res.end('secret'));
  r.get('/q', (req, res) => {
    const pairs = myriad.parseUrlencoded(req.rawQuery).map(([k, v]) => `[${k}=${v}]`).join('');
    res.end(`${pairs} a=${req.query.a}`);
  });
  r.post('/form', async (req, res) => {
    const out = [];
    try {
      for await (const part of req.form({ parts: 10 })) {
        if (part.filename === undefined) out.push(`${part.name}=${await part.text()}`);
        else {
          let n = 0;
          for await (const c of part) n += c.length;
          out.push(`${part.name}: ${part.filename} ${part.contentType} (${n} bytes)`);
        }
      }
    } catch (e) {
      if (e.status === undefined) throw e; // the body was cut short: nobody to answer
      res.statusCode = e.status;
      res.end(e.message);
      return;
    }
    res.end(out.join('\n'));
  });
  r.post('/skip', async (req, res) => {
    const names = [];
    for await (const part of req.form()) names.push(part.name); // data not read: skipped
    res.end(names.join(','));
  });
  return { r, hooks: () => hooked };
}

test('routes, parameters, 404/405/400, hooks, cookies', async () => {
  const { r, hooks } = app();
  const { srv, base } = await serve(r.handler);
  const get = async (p, o) => {
    const x = await request(base + p, o);
    return { ...x, text: x.body.toString() };
  };
  let x = await get('/users/42', { headers: { Cookie: 'a=1; sid=s3; a=2' } });
  assert.equal(x.text, '42|s3|1');
  assert.deepEqual(x.headers['set-cookie'], ['seen=yes; Path=/; Max-Age=60; HttpOnly; SameSite=Lax']);
  assert.equal((await get('/users/new')).text, 'new form');
  assert.equal((await get('/users/a%2Fb')).text, 'a/b|undefined|undefined');
  assert.equal((await get('/users/%E2%82%AC')).text, '€|undefined|undefined');
  assert.equal((await get('/users/%zz')).status, 400);
  assert.equal((await get('/users/')).status, 404);
  x = await get('/nothing');
  assert.equal(x.status, 404);
  assert.equal(x.text, 'Not Found');
  x = await get('/users/1', { method: 'DELETE' });
  assert.equal(x.status, 405);
  assert.equal(x.headers.allow, 'GET, HEAD, PUT');
  assert.equal((await get('/users/9', { method: 'PUT' })).text, 'put 9');
  assert.equal((await get('/users/7', { method: 'HEAD' })).status, 200);
  assert.equal((await get('/files/a/b.css')).text, 'file a/b.css');
  assert.equal((await get('/private/x')).status, 401);
  assert.equal((await get('/private/x', { headers: { 'X-Token': 't' } })).text, 'secret');
  assert.equal(hooks(), 13);
  await srv.close();
});

test('route registration errors', () => {
  const r = myriad.router();
  r.get('/u/:id', () => {});
  assert.throws(() => r.get('/u/:id', () => {}), { code: 'MYRIAD_ECONFLICT', message: /already registered/ });
  assert.throws(() => r.get('/u/:name/x', () => {}), { code: 'MYRIAD_ECONFLICT', message: /conflicts/ });
  assert.throws(() => r.get('nope', () => {}), { code: 'MYRIAD_EPATTERN', message: /starts with/ });
  assert.throws(() => r.get('/a/*w/b', () => {}), { code: 'MYRIAD_EPATTERN' });
  assert.throws(() => r.route('G T', '/a', () => {}), { code: 'MYRIAD_EPATTERN' });
  assert.throws(() => r.get('/b'), TypeError);
});

test('query strings: the same cases as C and Lua', async () => {
  const { r } = app();
  const { srv, base } = await serve(r);
  const x = await request(`${base}/q?a=1&b=x+y%21&a=2&&flag&e=&%zz=100%&k=a=b`);
  assert.equal(x.body.toString(), '[a=1][b=x y!][a=2][flag=][e=][%zz=100%][k=a=b] a=1,2');
  await srv.close();
});

test('cookies: serializeCookie', () => {
  assert.equal(
    myriad.serializeCookie('id', '42', { path: '/', domain: 'example.com', expires: new Date(784111777000), secure: true, sameSite: 'None' }),
    'id=42; Path=/; Domain=example.com; Expires=Sun, 06 Nov 1994 08:49:37 GMT; Secure; SameSite=None',
  );
  assert.throws(() => myriad.serializeCookie('a', 'b', { sameSite: 'None' }), { code: 'MYRIAD_ECOOKIE', message: /Secure/ });
  assert.throws(() => myriad.serializeCookie('a', 'b', { path: '/x;y' }), { code: 'MYRIAD_ECOOKIE' });
});

const B = 'XyZ';
const mp = (s) => Buffer.from(s.replace(/\n/g, '\r\n'));
const MP = { 'Content-Type': `multipart/form-data; boundary=${B}` };

test('forms: urlencoded, multipart in pieces, a 4 MiB file streamed, errors', async () => {
  const { r } = app();
  const { srv, base, addrs } = await serve(r, { fcgi: ['127.0.0.1:0'], maxBody: 8 << 20 });
  const post = async (body, headers) => {
    const x = await request(`${base}/form`, { method: 'POST', body, headers });
    return { status: x.status, text: x.body.toString() };
  };
  assert.deepEqual(await post('a=1&b=x+y&a=&c', { 'Content-Type': 'application/x-www-form-urlencoded' }), {
    status: 200,
    text: 'a=1\nb=x y\na=\nc=',
  });
  const body = mp(`pre\n--${B}\nContent-Disposition: form-data; name="t"\n\nhi\n--${B}\n` +
    `Content-Disposition: form-data; name="f"; filename="a b.txt"\nContent-Type: text/plain\n\n` +
    `0123456789\n--${B}--\n`);
  assert.deepEqual(await post(body, MP), { status: 200, text: 't=hi\nf: a b.txt text/plain (10 bytes)' });
  // The same body from a raw socket client.
  const { addr } = { addr: base.slice(7) };
  let req = `POST /form HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=${B}\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n`;
  const out = await raw(addr, Buffer.concat([Buffer.from(req), body]));
  assert.match(out, /\r\n\r\nt=hi\nf: a b\.txt text\/plain \(10 bytes\)$/);
  const big = Buffer.alloc(4 << 20, 'ab\r\n--X');
  const bigBody = Buffer.concat([mp(`--${B}\nContent-Disposition: form-data; name="big"; filename="big.bin"\n\n`), big, mp(`\n--${B}--`)]);
  assert.deepEqual(await post(bigBody, MP), { status: 200, text: `big: big.bin undefined (${4 << 20} bytes)` });
  assert.equal((await post(mp(`--${B}\nContent-Disposition: form-data; name="a"\n\n1\n`), MP)).status, 400);
  assert.equal((await post(mp(`--${B}\nno colon\n\n1\n--${B}--`), MP)).status, 400);
  assert.equal((await post('x', { 'Content-Type': 'multipart/form-data' })).status, 400);
  assert.equal((await post('x', { 'Content-Type': 'text/plain' })).status, 415);
  const many = Array.from({ length: 11 }, (_, i) => `f${i}=1`).join('&');
  assert.equal((await post(many, { 'Content-Type': 'application/x-www-form-urlencoded' })).status, 413);
  const sk = await request(`${base}/skip`, { method: 'POST', body, headers: MP });
  assert.equal(sk.body.toString(), 't,f');
  // Over FastCGI.
  const f = addrs.find((a) => a.proto === 'fcgi').addr;
  const x = await fcgi(f, { REQUEST_METHOD: 'POST', REQUEST_URI: '/form', CONTENT_TYPE: MP['Content-Type'] }, body.toString('latin1'));
  assert.equal(x.body, 't=hi\nf: a b.txt text/plain (10 bytes)');
  const y = await fcgi(f, { REQUEST_METHOD: 'GET', REQUEST_URI: '/users/a%2Fb' });
  assert.equal(y.body, 'a/b|undefined|undefined');
  await srv.close();
});
