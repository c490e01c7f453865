// HTTPS: listen({ https, key, cert }) with PEM strings and Buffers, the SNI list, req.tls,
// setSecureContext, and configuration errors (code MYRIAD_ETLS naming what failed), with
// Node's own https client. Certificates are made here by the openssl CLI.
'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const https = require('node:https');
const { execFileSync } = require('node:child_process');
const myriad = require('..');

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'myriad-tls-'));
const ssl = (...args) => execFileSync('openssl', args, { cwd: dir, stdio: 'ignore' });
ssl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem',
  '-subj', '/CN=node-ca', '-days', '2');
for (const [name, san] of [['a', 'DNS:a.test,IP:127.0.0.1'], ['b', 'DNS:b.test']]) {
  ssl('genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', `${name}.key`);
  ssl('req', '-new', '-key', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${name}`);
  fs.writeFileSync(path.join(dir, `${name}.ext`), `subjectAltName=${san}\n`);
  ssl('x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', `${name}.pem`,
    '-days', '2', '-extfile', `${name}.ext`);
}
const read = (f) => fs.readFileSync(path.join(dir, f));
const ca = read('ca.pem');

function get(port, servername) {
  return new Promise((resolve, reject) => {
    const r = https.get({ host: '127.0.0.1', port, path: '/', ca, servername, agent: false }, (res) => {
      const cn = res.socket.getPeerCertificate().subject.CN;
      let body = '';
      res.on('data', (d) => (body += d));
      res.on('end', () => resolve({ cn, body: JSON.parse(body) }));
    });
    r.on('error', reject);
  });
}

const facts = (req, res) => {
  res.setHeader('Content-Type', 'application/json');
  res.end(JSON.stringify({ tls: req.tls ?? null, https: req.env.HTTPS ?? null }));
};

test('https with key/cert strings, then the SNI list with Buffers; req.tls', async () => {
  const srv = myriad.createServer(facts);
  const [a] = await srv.listen({ https: '127.0.0.1:0', key: read('a.key').toString(), cert: read('a.pem').toString() });
  assert.equal(a.proto, 'https');
  const port = Number(a.addr.split(':').pop());
  const r = await get(port, 'a.test');
  assert.equal(r.cn, 'a');
  assert.equal(r.body.https, 'on');
  assert.equal(r.body.tls.version, 'TLSv1.3');
  assert.match(r.body.tls.cipher, /^TLS_/);
  assert.equal(r.body.tls.sni, 'a.test');
  assert.equal(r.body.tls.alpn, undefined); // Node's https client offers no ALPN
  // setSecureContext: the SNI list; b.test now gets b's certificate, others a's.
  srv.setSecureContext({ tls: [{ key: read('a.key'), cert: read('a.pem') }, { key: read('b.key'), cert: read('b.pem') }] });
  assert.equal((await get(port, 'b.test')).cn, 'b');
  assert.equal((await get(port, 'a.test')).cn, 'a');
  // A bad context is refused and changes nothing.
  assert.throws(() => srv.setSecureContext({ key: read('b.key'), cert: read('a.pem') }), (e) => {
    assert.equal(e.code, 'MYRIAD_ETLS');
    assert.match(e.message, /key\[0\]: private key does not match the certificate in cert\[0\]/);
    return true;
  });
  assert.equal((await get(port, 'b.test')).cn, 'b');
  await srv.close();
});

test('plain HTTP requests have no req.tls', async () => {
  const srv = myriad.createServer(facts);
  const [a] = await srv.listen({ http: '127.0.0.1:0' });
  const body = await fetch(`http://${a.addr}/`).then((r) => r.json());
  assert.deepEqual(body, { tls: null, https: null });
  await srv.close();
});

test('listen refuses unusable certificates with MYRIAD_ETLS naming them', async () => {
  const srv = myriad.createServer(facts);
  await assert.rejects(srv.listen({ https: '127.0.0.1:0', key: 'junk', cert: read('a.pem') }), (e) => {
    assert.equal(e.code, 'MYRIAD_ETLS');
    assert.match(e.message, /^key\[0\]: no private key found/);
    return true;
  });
  await assert.rejects(
    srv.listen({ https: '127.0.0.1:0', tls: [{ key: read('b.key'), cert: read('a.pem'), keyName: 'b.key', certName: 'a.pem' }] }),
    /b\.key: private key does not match the certificate in a\.pem/,
  );
  await assert.rejects(srv.listen({ https: '127.0.0.1:0' }), { code: 'ERR_INVALID_ARG_VALUE' });
  await assert.rejects(srv.listen({ https: '127.0.0.1:0', key: 42, cert: 'x' }), TypeError);
  assert.equal(srv.listening, false);
});

test.after(() => fs.rmSync(dir, { recursive: true, force: true }));
