#!/usr/bin/env node
// hello.js — the myriad demo app in JavaScript (same contract as examples/hello.c):
//   node hello.js [--http ADDR]... [--fcgi ADDR]... [--https ADDR]... [--cert FILE --key FILE]...
//                 [--threads N] [--backend NAME] [--max-body BYTES]
//                 [--workers N] [--max-requests N] [--watchdog SECONDS] [--user NAME] [--status ADDR]...
//                 [--access-log PATH] [--root DIR]
// --access-log PATH logs each request (combined format) to PATH, "-" for stderr; SIGUSR1
// opens PATH again (logrotate); a log that cannot be opened is a bad flag (exit 2).
// --root DIR: GET|HEAD /static/PATH serves DIR/PATH with myriad's static file handler
// (myriad.files); without it /static/ is 404; a DIR that is not a directory exits 2.
// --https serves HTTPS with the --cert/--key pairs (the first the default, the others by
// SNI); a missing, unreadable or mismatched file: its name on stderr, exit 2. SIGHUP
// reloads the certificates (under the supervisor: checked once, loaded by every new worker).
// ADDR is HOST:PORT, [V6]:PORT, unix:PATH or fd:N. With no listener flag it serves FastCGI
// on fd 0 when started by spawn-fcgi, else HTTP on 127.0.0.1:8080 — unless socket-activated
// (LISTEN_FDS: "fcgi" by name FastCGI, the others HTTP). Prints "listening http|fcgi ADDR"
// per listener; with NOTIFY_SOCKET: READY=1 + STATUS= once serving, STOPPING=1 at drain,
// WATCHDOG=1 pings for WATCHDOG_USEC. SIGTERM/SIGINT: stop accepting, finish in-flight
// requests, exit 0. Bad flags: usage on stderr, exit 2.
// /work runs on a pool of worker_threads workers. Node's thread runs one loop, so
// --threads must be 1 and --backend epoll (or absent).
// Routes, on a myriad router: GET|HEAD / ; GET /hello/:name ; POST|PUT /echo ; GET /env ;
// GET /stream?chunks=N&bytes=B ; GET /delay?ms=M ; GET /work?ms=M ; GET /stats (the
// loop's counters as JSON) ; POST /form ; GET /pid (the serving process) ; GET /hang (with
// --watchdog: a handler that never returns) ; GET /ws (a WebSocket echo: each message back
// as the same kind; a plain GET is 426) ; else 404, or 405 with Allow.
// With --workers N (or any supervisor flag) a supervisor (myriad.supervise, exec mode: Node
// does not fork) binds the listeners, prints them once and runs N copies of this script
// that get them as LISTEN_FDS: SIGHUP replaces them, SIGUSR2 re-executes node and this script
// in place, SIGTERM drains them; an unknown --user exits 2.
'use strict';
const fs = require('node:fs');
const { Worker } = require('node:worker_threads');
const { setTimeout: sleep } = require('node:timers/promises');
// The installed package, or the binding in this source tree (after `npm install` there).
let myriad;
try {
  myriad = require('myriad');
} catch (e) {
  if (e.code !== 'MODULE_NOT_FOUND') throw e;
  myriad = require('../bindings/node');
}

function usage(msg) {
  process.stderr.write(
    `hello: ${msg}\nusage: hello.js [--http ADDR]... [--fcgi ADDR]... [--https ADDR]... [--cert FILE --key FILE]...\n` +
      '       [--threads N] [--backend NAME] [--access-log PATH] [--max-body BYTES] [--root DIR]\n' +
      '       [--workers N] [--max-requests N] [--watchdog SECONDS] [--user NAME] [--status ADDR]...\n',
  );
  process.exit(2);
}

const http = [];
let maxBody = 64 * 1024 * 1024;
const fcgi = [];
const https = [];
const certs = []; // [{ cert: FILE, key: FILE }]
let accessLog;
let root;
const status = [];
let sup = null; // the supervisor's options, with any supervisor flag
const workerArgs = []; // what each executed worker gets (no listener flags)
const int = (v, lo, hi, msg) => {
  const n = Number(v);
  if (v === undefined || v === '' || !Number.isInteger(n) || n < lo || n > hi) usage(msg);
  return n;
};
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i += 2) {
  const [a, v] = [argv[i], argv[i + 1]];
  if (a !== '--http' && a !== '--fcgi' && a !== '--https' && a !== '--status') workerArgs.push(a, v);
  if (a === '--http' || a === '--fcgi' || a === '--https') {
    if (v === undefined) usage('missing ADDR');
    ({ '--http': http, '--fcgi': fcgi, '--https': https })[a].push(v);
  } else if (a === '--cert') {
    if (v === undefined) usage('missing FILE');
    if (certs.length && !certs[certs.length - 1].key) usage('--cert FILE --key FILE go in pairs');
    certs.push({ cert: v });
  } else if (a === '--key') {
    if (v === undefined) usage('missing FILE');
    if (!certs.length || certs[certs.length - 1].key) usage('--cert FILE --key FILE go in pairs');
    certs[certs.length - 1].key = v;
  } else if (a === '--root') {
    if (v === undefined) usage('missing DIR');
    try {
      root = myriad.files(v);
    } catch (e) {
      usage(`--root ${e.message}`);
    }
  } else if (a === '--access-log') {
    if (v === undefined) usage('missing PATH');
    accessLog = v;
  } else if (a === '--workers') {
    (sup ??= {}).workers = int(v, 1, 1024, '--workers takes 1..1024');
  } else if (a === '--max-requests') {
    (sup ??= {}).maxRequests = int(v, 0, Number.MAX_SAFE_INTEGER, '--max-requests takes a number');
  } else if (a === '--watchdog') {
    (sup ??= {}).watchdog = int(v, 1, 86400, '--watchdog takes 1..86400 seconds');
  } else if (a === '--user') {
    if (v === undefined) usage('missing NAME');
    (sup ??= {}).user = v;
  } else if (a === '--status') {
    if (v === undefined) usage('missing ADDR');
    sup ??= {};
    status.push(v);
  } else if (a === '--threads') {
    if (v !== '1') usage('--threads: this binding runs one thread (start more processes)');
  } else if (a === '--backend') {
    if (v !== 'epoll' && v !== '') usage('--backend: only epoll');
  } else if (a === '--max-body') {
    if (!/^[0-9]+$/.test(v ?? '') || Number(v) < 1) usage('--max-body takes a byte count');
    maxBody = Number(v);
  } else {
    usage(`unknown argument ${a}`);
  }
}
if (certs.length && !certs[certs.length - 1].key) usage('--cert FILE --key FILE go in pairs');
if (https.length && !certs.length) usage('--https needs --cert FILE --key FILE');

/** The --cert/--key pairs read: [{ cert, key, certName, keyName }]; throws naming a file. */
function readCerts() {
  const read = (f) => {
    try {
      return fs.readFileSync(f);
    } catch (e) {
      throw new Error(`${f}: ${e.code === 'ENOENT' ? 'No such file or directory' : e.message}`);
    }
  };
  return certs.map((c) => ({ cert: read(c.cert), key: read(c.key), certName: c.cert, keyName: c.key }));
}
let tls = [];
if (https.length) {
  try {
    tls = readCerts();
  } catch (e) {
    process.stderr.write(`hello: ${e.message}\n`);
    process.exit(2);
  }
}
// An executed worker of the supervisor: its listeners are LISTEN_FDS (fds 3.., named).
const supervised = process.env.MYRIAD_SUPERVISOR && process.env.LISTEN_FDS &&
  Number(process.env.LISTEN_PID) === process.pid;
const hang = sup !== null && sup.watchdog !== undefined;
if (supervised) {
  const names = (process.env.LISTEN_FDNAMES || '').split(':');
  for (let i = 0; i < Number(process.env.LISTEN_FDS); i++) {
    ({ fcgi, https }[names[i]] ?? http).push(`fd:${3 + i}`);
  }
  sup = null;
  // The worker loads the certificates itself: after a SIGHUP every worker is new.
  if (https.length) {
    try {
      tls = readCerts();
    } catch (e) {
      process.stderr.write(`hello: ${e.message}\n`);
      process.exit(2);
    }
  }
} else if (sup) {
  // No listener flag: the fds of socket activation (shared by every worker), else the default.
  let inherited = false;
  // The certificates checked once here (each worker loads them): a bad pair exits 2.
  for (const t of tls) {
    try {
      require('node:tls').createSecureContext({ cert: t.cert, key: t.key });
    } catch (e) {
      process.stderr.write(`hello: ${t.keyName}: ${e.message}\n`);
      process.exit(2);
    }
  }
  if (!http.length && !fcgi.length && !https.length) {
    try {
      inherited = myriad.listenFds() > 0;
    } catch (e) {
      process.stderr.write(`hello: ${e.message}\n`);
      process.exit(1);
    }
    if (!inherited) http.push('127.0.0.1:8080');
  }
  let code;
  try {
    code = myriad.supervise({
      ...sup,
      http,
      fcgi,
      https,
      status,
      inherited,
      exec: [process.execPath, ...process.execArgv, __filename, ...workerArgs],
      onListening: (proto, addr) => fs.writeSync(1, `listening ${proto} ${addr}\n`),
    });
  } catch (e) {
    process.stderr.write(`hello: ${e.message}\n`);
    process.exit(/unknown user/.test(e.message) ? 2 : 1);
  }
  process.exit(code);
}
// No listener flag: the fds of socket activation (systemd's LISTEN_FDS; "fcgi" by name
// FastCGI, the others HTTP), else spawn-fcgi's fd 0, else the default address.
let inherited = false;
if (!http.length && !fcgi.length && !https.length) {
  try {
    inherited = myriad.listenFds() > 0;
  } catch (e) {
    process.stderr.write(`hello: ${e.message}\n`);
    process.exit(1);
  }
}
if (!http.length && !fcgi.length && !https.length && !inherited) {
  let socket = false;
  try {
    socket = fs.fstatSync(0).isSocket(); // spawn-fcgi passes its listening socket as fd 0
  } catch {
    // no fd 0
  }
  if (socket) fcgi.push('fd:0');
  else http.push('127.0.0.1:8080');
}

// ---- a pool of four workers for /work ----
const WORKER = `
const { parentPort } = require('node:worker_threads');
const cell = new Int32Array(new SharedArrayBuffer(4));
parentPort.on('message', ({ id, ms }) => {
  Atomics.wait(cell, 0, 0, ms); // the "work": this thread is busy for ms
  parentPort.postMessage({ id, ms });
});`;
const pending = new Map();
let jobs = 0;
const workers = Array.from({ length: 4 }, () => {
  const w = new Worker(WORKER, { eval: true });
  w.on('message', ({ id, ms }) => {
    const done = pending.get(id);
    pending.delete(id);
    if (pending.size === 0) for (const x of workers) x.unref();
    done(ms);
  });
  w.unref(); // idle workers do not keep the process alive
  return w;
});
function work(ms) {
  const id = ++jobs;
  const w = workers[id % workers.length];
  w.ref(); // a job in progress does
  w.postMessage({ id, ms });
  return new Promise((resolve) => pending.set(id, resolve));
}

function num(s, dflt, max) {
  const n = Number(s);
  if (s === undefined || s === '' || !Number.isInteger(n) || n < 0) return dflt;
  return Math.min(n, max);
}

const one = (v) => (Array.isArray(v) ? v[0] : v);

// /stats: the loop's counters, in the order of myriad_stats_t.
const STATS = ['iterations', 'wait', 'ctl', 'read', 'received', 'write', 'accept', 'other', 'wakeups', 'accepted'];

const router = myriad.router();

router.get('/', (req, res) => {
  res.setHeader('Content-Type', 'text/plain');
  res.end('Hello, World!');
});

// The parameter comes percent-decoded ("a%2Fb" is "a/b").
router.get('/hello/:name', (req, res) => {
  res.setHeader('Content-Type', 'text/plain');
  res.end(`Hello, ${req.params.name}!`);
});

async function echo(req, res) {
  const ct = req.headers['content-type'] || 'application/octet-stream';
  const body = await req.body();
  res.setHeader('Content-Type', ct);
  res.end(body);
}
router.post('/echo', echo);
router.put('/echo', echo);

router.get('/env', (req, res) => {
  const env = req.env;
  const out = Object.keys(env)
    .sort()
    .map((k) => `${k}=${env[k]}\n`)
    .join('');
  res.setHeader('Content-Type', 'text/plain');
  res.end(out);
});

router.get('/stream', async (req, res) => {
  const q = req.query;
  const chunks = num(one(q.chunks), 1, 100000);
  const bytes = num(one(q.bytes), 1, 1 << 20);
  res.setHeader('Content-Type', 'text/plain');
  for (let n = 0; n < chunks && !req.aborted; n++) {
    if (!res.write(String.fromCharCode(97 + (n % 26)).repeat(bytes))) await res.drain(); // a slow reader
    await sleep(1);
  }
  res.end();
});

router.get('/delay', async (req, res) => {
  const ms = num(one(req.query.ms), 0, 60000);
  await sleep(ms);
  res.setHeader('Content-Type', 'text/plain');
  res.end(`delayed ${ms}`);
});

router.get('/work', async (req, res) => {
  const ms = await work(num(one(req.query.ms), 0, 60000));
  res.setHeader('Content-Type', 'text/plain');
  res.end(`worked ${ms}`);
});

// The raw (still percent-encoded) path below /static/: the file handler decodes and checks it.
if (root) router.get('/static/*path', (req, res) => root.serve(req, res, req.path.slice('/static/'.length)));

router.get('/stats', (req, res) => {
  const st = myriad.stats();
  const out = {};
  for (const k of STATS) out[k] = st[k];
  res.setHeader('Content-Type', 'application/json');
  res.end(JSON.stringify(out) + '\n');
});

// POST /form: one line per field in the order received, "NAME=VALUE", or for a file
// "NAME: FILENAME (SIZE bytes)" (file data is counted as it streams in, never kept).
router.post('/form', async (req, res) => {
  let out = '';
  res.setHeader('Content-Type', 'text/plain');
  try {
    for await (const part of req.form()) {
      if (part.filename === undefined) {
        out += `${part.name}=${await part.text()}\n`;
      } else {
        let size = 0;
        for await (const chunk of part) size += chunk.length;
        out += `${part.name}: ${part.filename} (${size} bytes)\n`;
      }
    }
  } catch (err) {
    if (err.status === undefined) throw err; // the client went away: nothing to answer
    res.statusCode = err.status; // 400 malformed, 413 a limit, 415 not a form
    res.end(err.message);
    return;
  }
  res.end(out);
});

// GET /ws: each text or binary message back as the same kind (pings, closes and
// permessage-deflate are the library's); a request that is not a valid upgrade is answered
// (426, 400...) by res.websocket(), which then returns null.
router.get('/ws', (req, res) => {
  const ws = res.websocket();
  if (ws) ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
});

router.get('/pid', (req, res) => {
  res.setHeader('Content-Type', 'text/plain');
  res.end(String(process.pid));
});

if (hang) {
  router.get('/hang', () => {
    for (;;); // stuck for good: the supervisor's watchdog kills this worker
  });
}

const srv = myriad.createServer({ maxBody }, router);
// sd_notify when a service manager listens (NOTIFY_SOCKET); a failure is not fatal.
function notify(state) {
  try {
    myriad.notify(state);
  } catch (e) {
    process.stderr.write(`hello: sd_notify: ${e.message}\n`);
  }
}

srv.listen({ http, fcgi, inherited, accessLog, ...(https.length ? { https, tls } : {}) }).then(
  (addrs) => {
    if (supervised) return; // the supervisor printed them
    for (const a of addrs) process.stdout.write(`listening ${a.proto} ${a.addr}\n`);
    notify(`READY=1\nSTATUS=serving ${addrs.map((a) => `${a.proto} ${a.addr}`).join(', ')} (1 thread)`);
    myriad.watchdog(); // WATCHDOG=1 from the loop's timers when WATCHDOG_USEC asks for it
  },
  (err) => {
    process.stderr.write(`hello: ${err.message}\n`);
    // A bad certificate, key or access log is a configuration error: exit 2, before serving.
    process.exit(err.code === 'MYRIAD_ETLS' || err.message.includes("accessLog '") ? 2 : 1);
  },
);
if (https.length) {
  process.on('SIGHUP', () => {
    try {
      srv.setSecureContext({ tls: readCerts() });
      process.stderr.write('hello: certificates reloaded\n');
    } catch (e) {
      process.stderr.write(`hello: SIGHUP: ${e.message}; certificates not reloaded\n`);
    }
  });
}

// Graceful stop: in-flight requests finish, then nothing holds the loop and Node exits 0.
let stopping = false;
function stop() {
  if (stopping) return;
  stopping = true;
  notify('STOPPING=1\nSTATUS=draining');
  srv.close();
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
process.on('SIGUSR1', () => {
  try {
    srv.reopenAccessLog();
  } catch (e) {
    process.stderr.write(`hello: reopening the access log: ${e.message}\n`);
  }
});
