// Shared by the node --test suites: a server per test, and real clients (Node's http, raw
// sockets, cgi-fcgi) over loopback and Unix sockets. Every request has a time limit.
'use strict';
const http = require('node:http');
const net = require('node:net');
const os = require('node:os');
const fs = require('node:fs');
const path = require('node:path');
const { execFile } = require('node:child_process');
const myriad = require('..');

const TIME_LIMIT = 10000;

/** Starts a server with `handler` on an ephemeral loopback port (plus `what`), returns
 * { srv, base, addr, addrs }. */
async function serve(handler, what = {}) {
  const srv = myriad.createServer(handler);
  const addrs = await srv.listen({ http: ['127.0.0.1:0'], ...what });
  const addr = addrs.find((a) => a.proto === 'http')?.addr;
  return { srv, addr, addrs, base: `http://${addr}` };
}

/** One request with Node's http client (no keep-alive): { status, headers, body }. */
function request(url, { method = 'GET', headers = {}, body, socketPath, agent = false } = {}) {
  return new Promise((resolve, reject) => {
    const u = new URL(url);
    const req = http.request(
      { method, headers, agent, host: u.hostname.replace(/^\[|\]$/g, ''), port: u.port, path: u.pathname + u.search, socketPath },
      (res) => {
        const parts = [];
        res.on('data', (c) => parts.push(c));
        res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(parts), raw: res.rawHeaders }));
        res.on('error', reject);
      },
    );
    req.setTimeout(TIME_LIMIT, () => req.destroy(new Error(`timeout: ${method} ${url}`)));
    req.on('error', reject);
    if (body !== undefined) req.write(body);
    req.end();
  });
}

/** Sends raw bytes on a new connection; resolves with everything read until the server
 * closes (or `untilBytes` arrived). */
function raw(addr, bytes, { untilBytes = Infinity } = {}) {
  return new Promise((resolve, reject) => {
    const i = addr.lastIndexOf(':');
    const s = net.connect({ host: addr.slice(0, i), port: Number(addr.slice(i + 1)) });
    const parts = [];
    let n = 0;
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error('raw: timeout'));
    }, TIME_LIMIT);
    s.on('data', (c) => {
      parts.push(c);
      n += c.length;
      if (n >= untilBytes) s.end();
    });
    s.on('close', () => {
      clearTimeout(timer);
      resolve(Buffer.concat(parts).toString('latin1'));
    });
    s.on('error', reject);
    s.write(bytes);
  });
}

/** A raw TCP connection to HOST:PORT. */
function connect(addr) {
  const i = addr.lastIndexOf(':');
  return net.connect({ host: addr.slice(0, i), port: Number(addr.slice(i + 1)) });
}

/** GET / on a raw connection, read `bytes` of the answer, then reset the connection (a
 * client going away mid-download). */
async function resetAfter(addr, bytes) {
  const s = connect(addr);
  s.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n');
  let n = 0;
  const timer = setTimeout(() => s.destroy(new Error('resetAfter: timeout')), TIME_LIMIT);
  await new Promise((resolve, reject) => {
    s.on('data', (c) => {
      n += c.length;
      if (n > bytes) resolve();
    });
    s.on('error', reject);
    s.on('close', () => reject(new Error(`resetAfter: closed after ${n} bytes`)));
  });
  clearTimeout(timer);
  s.resetAndDestroy();
}

/** GET / with Node's http client reading slowly: it stops for `pauseMs` after the first
 * `after` bytes. Resolves with the number of body bytes. */
function slowDownload(addr, { after = 2 << 20, pauseMs = 300 } = {}) {
  return new Promise((resolve, reject) => {
    const i = addr.lastIndexOf(':');
    http
      .get({ host: addr.slice(0, i), port: addr.slice(i + 1), path: '/', timeout: TIME_LIMIT }, (res) => {
        let n = 0;
        let paused = false;
        res.on('data', (c) => {
          n += c.length;
          if (!paused && n > after) {
            paused = true;
            res.pause();
            setTimeout(() => res.resume(), pauseMs);
          }
        });
        res.on('end', () => resolve(n));
        res.on('error', reject);
      })
      .on('timeout', function () {
        this.destroy(new Error('slowDownload: timeout'));
      })
      .on('error', reject);
  });
}

/** A FastCGI request with the real cgi-fcgi client: { status, headers, body }. */
function fcgi(addr, env, body = '') {
  return new Promise((resolve, reject) => {
    const child = execFile(
      'cgi-fcgi',
      ['-bind', '-connect', addr],
      { env: { CONTENT_LENGTH: String(Buffer.byteLength(body)), ...env }, encoding: 'latin1', timeout: TIME_LIMIT },
      (err, stdout) => {
        if (err) return reject(err);
        const sep = stdout.indexOf('\r\n\r\n');
        const head = stdout.slice(0, sep).split('\r\n');
        const headers = {};
        for (const l of head) {
          const c = l.indexOf(':');
          headers[l.slice(0, c).toLowerCase()] = l.slice(c + 1).trim();
        }
        resolve({ status: Number((headers.status || '200').split(' ')[0]), headers, body: stdout.slice(sep + 4) });
      },
    );
    child.stdin.end(body);
  });
}

function tmpdir() {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'myriad-node-'));
}

/** Polls `cond` every 10 ms until true or `ms` passed; returns the last value. */
async function until(cond, ms = 5000) {
  const end = Date.now() + ms;
  let v = cond();
  while (!v && Date.now() < end) {
    await new Promise((r) => setTimeout(r, 10));
    v = cond();
  }
  return v;
}

module.exports = { myriad, serve, request, raw, connect, resetAfter, slowDownload, fcgi, tmpdir, until };
