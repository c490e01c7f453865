// The response as a destination for Node's stream helpers: readable.pipe(res) and
// stream.pipeline(source, res), with backpressure against a slow reader, a source that
// fails half-way, and write()/end() with encodings and callbacks, over real HTTP clients.
'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const crypto = require('node:crypto');
const { EventEmitter } = require('node:events');
const { Readable, pipeline } = require('node:stream');
const { serve, request, raw, connect, resetAfter, slowDownload, until } = require('./helpers');

const sha = (b) => crypto.createHash('sha256').update(b).digest('hex');

test('a file piped into the response arrives whole; the response is an EventEmitter', async () => {
  const file = path.join(os.tmpdir(), `myriad-pipe-${process.pid}.bin`);
  const data = crypto.randomBytes(3 << 20);
  fs.writeFileSync(file, data);
  const events = [];
  let isEmitter;
  const { srv, base } = await serve((req, res) => {
    isEmitter = res instanceof EventEmitter;
    res.setHeader('Content-Type', 'application/octet-stream');
    res.on('finish', () => events.push('finish'));
    res.on('close', () => events.push('close'));
    fs.createReadStream(file).pipe(res);
  });
  try {
    const r = await request(`${base}/`);
    assert.equal(r.status, 200);
    assert.equal(r.body.length, data.length);
    assert.equal(sha(r.body), sha(data));
    assert.ok(await until(() => events.length === 2), `finish and close: ${events}`);
    assert.deepEqual(events, ['finish', 'close']);
    assert.equal(isEmitter, true);
  } finally {
    fs.rmSync(file, { force: true });
    await srv.close();
  }
});

test('pipeline() into the response: paced by a slow reader, callback without error', async () => {
  const total = 8 << 20;
  const piece = Buffer.alloc(64 << 10, 'p');
  let peak = 0;
  let pauses = 0;
  let drains = 0;
  let done;
  const { srv, addr } = await serve((req, res) => {
    const src = new Readable({
      highWaterMark: 64 << 10,
      read() {
        peak = Math.max(peak, res.writableLength);
        this.push(this.sent >= total ? null : piece);
        this.sent = (this.sent ?? 0) + piece.length;
      },
    });
    src.on('pause', () => pauses++);
    res.on('drain', () => drains++);
    pipeline(src, res, (err) => {
      done = err ?? 'ok';
    });
  });
  // The client stops reading for 300 ms after the first 2 MB.
  const got = await slowDownload(addr);
  try {
    assert.equal(got, total);
    assert.ok(await until(() => done !== undefined), 'the pipeline callback ran');
    assert.equal(done, 'ok');
    assert.ok(pauses > 0 && drains > 0, `the source was held back until 'drain' (${pauses} pauses, ${drains} drains)`);
    assert.ok(peak <= 512 << 10, `queued bytes stayed bounded (peak ${peak})`);
  } finally {
    await srv.close();
  }
});

test('pipeline(req, res) echoes a 1 MB upload', async () => {
  const body = crypto.randomBytes(1 << 20);
  let done;
  const { srv, base } = await serve((req, res) => {
    pipeline(req, res, (err) => {
      done = err ?? 'ok';
    });
  });
  try {
    const r = await request(`${base}/echo`, { method: 'POST', body });
    assert.equal(r.status, 200);
    assert.equal(sha(r.body), sha(body));
    // The request is an async iterable: pipeline() writes it, ends the response and
    // waits for its 'finish'.
    assert.ok(await until(() => done !== undefined), 'the pipeline callback ran');
    assert.equal(done, 'ok');
  } finally {
    await srv.close();
  }
});

test('a source that fails half-way: the pipeline gets its error and the client a cut response', async () => {
  let done;
  const { srv, addr } = await serve((req, res) => {
    async function* source() {
      yield 'first piece\n';
      await new Promise((r) => setTimeout(r, 20));
      yield 'second piece\n';
      throw new Error('upstream failed');
    }
    pipeline(Readable.from(source()), res, (err) => {
      done = err;
    });
  });
  try {
    // HTTP/1.1: chunked, so a complete body ends with the zero-length chunk.
    const got = await raw(addr, 'GET / HTTP/1.1\r\nHost: x\r\n\r\n');
    assert.match(got, /^HTTP\/1\.1 200 /);
    assert.match(got, /first piece\n[\s\S]*second piece\n/);
    assert.ok(!got.endsWith('0\r\n\r\n'), `the body must not look complete: ${JSON.stringify(got.slice(-40))}`);
    assert.ok(await until(() => done !== undefined), 'the pipeline callback ran');
    assert.equal(done.message, 'upstream failed');
  } finally {
    await srv.close();
  }
});

test('write() and end() take an encoding and a callback; finish is a tick after end()', async () => {
  const calls = [];
  let finishedAtEnd;
  let lateFinish = false;
  const { srv, base } = await serve((req, res) => {
    res.write('68656c6c6f20', 'hex', (err) => calls.push(`write ${err}`));
    res.write('wor', () => calls.push('write2'));
    res.end('bGQ=', 'base64', () => {
      calls.push('end');
    });
    finishedAtEnd = res.writableFinished;
    // A listener added after end() still hears 'finish', as with Node's own responses.
    res.once('finish', () => {
      lateFinish = true;
    });
    assert.throws(() => res.write('x'), { code: 'ERR_STREAM_WRITE_AFTER_END' });
  });
  try {
    const r = await request(`${base}/`);
    assert.equal(r.body.toString(), 'hello world');
    assert.ok(await until(() => calls.length === 3 && lateFinish), `callbacks: ${calls}`);
    assert.deepEqual(calls, ['write null', 'write2', 'end']);
    assert.equal(finishedAtEnd, true);
  } finally {
    await srv.close();
  }
  const bad = await serve((req, res) => {
    try {
      res.write('x', 'klingon');
    } catch (e) {
      res.end(e.code);
    }
  });
  try {
    assert.equal((await request(`${bad.base}/`)).body.toString(), 'ERR_UNKNOWN_ENCODING');
  } finally {
    await bad.srv.close();
  }
});

test('a client that goes away under a pipe: close, no finish, the source destroyed', async () => {
  let src;
  let finish = false;
  let closed = false;
  let done;
  const { srv, addr } = await serve((req, res) => {
    src = new Readable({
      read() {
        this.push(Buffer.alloc(32 << 10, 'c'));
      },
    });
    res.on('finish', () => {
      finish = true;
    });
    res.on('close', () => {
      closed = true;
    });
    pipeline(src, res, (err) => {
      done = err;
    });
  });
  try {
    await resetAfter(addr, 1 << 20);
    assert.ok(await until(() => done !== undefined), 'the pipeline callback ran');
    assert.equal(done.code, 'ERR_STREAM_PREMATURE_CLOSE');
    assert.equal(closed, true);
    assert.equal(finish, false);
    assert.equal(src.destroyed, true);
  } finally {
    await srv.close();
  }
});

test("the request's 'data' and 'end' events, pause() and resume(), and req.pipe(res)", async () => {
  const body = crypto.randomBytes(1 << 20);
  let heldBack = null;
  const { srv, base } = await serve((req, res) => {
    if (req.path === '/events') {
      const parts = [];
      let during = 0;
      let paused = false;
      req.on('data', (c) => {
        if (paused) during++;
        parts.push(c);
        if (parts.length === 1) {
          req.pause();
          paused = true;
          setTimeout(() => {
            heldBack = during;
            paused = false;
            req.resume();
          }, 100);
        }
      });
      req.on('end', () => res.end(`${parts.length > 1} ${sha(Buffer.concat(parts))}`));
    } else if (req.path === '/pipe') {
      req.pipe(res);
    } else if (req.path === '/drop') {
      req.resume();
      req.on('end', () => res.end('dropped'));
    } else {
      // No body: 'end' at once.
      req.on('data', () => res.end('data?')).on('end', () => res.end('no body'));
    }
  });
  try {
    const r = await request(`${base}/events`, { method: 'POST', body, headers: { 'Transfer-Encoding': 'chunked' } });
    assert.equal(r.body.toString(), `true ${sha(body)}`);
    assert.equal(heldBack, 0, "no 'data' while paused");
    const p = await request(`${base}/pipe`, { method: 'PUT', body });
    assert.equal(sha(p.body), sha(body));
    assert.equal((await request(`${base}/drop`, { method: 'POST', body })).body.toString(), 'dropped');
    assert.equal((await request(`${base}/get`)).body.toString(), 'no body');
  } finally {
    await srv.close();
  }
});

test("an upload cut off under 'data' listeners: 'aborted', then 'error' with ECONNRESET", async () => {
  const seen = [];
  const { srv, addr } = await serve((req, res) => {
    req.on('aborted', () => seen.push('aborted'));
    req.on('error', (e) => seen.push(e.code));
    req.on('data', () => {
      if (!seen.includes('data')) seen.push('data');
    });
    req.on('end', () => res.end('whole?'));
  });
  try {
    const s = connect(addr);
    s.write('POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n');
    s.write(Buffer.alloc(1000, 'u'));
    assert.ok(await until(() => seen.includes('data')), 'the first piece arrived');
    s.resetAndDestroy();
    assert.ok(await until(() => seen.length === 3), `events: ${seen}`);
    assert.deepEqual(seen, ['data', 'aborted', 'ECONNRESET']);
  } finally {
    await srv.close();
  }
});

test('pipeline(req, res) with an upload cut off: the callback gets an error', async () => {
  let done;
  const { srv, addr } = await serve((req, res) => {
    pipeline(req, res, (err) => {
      done = err ?? 'ok';
    });
  });
  try {
    const s = connect(addr);
    s.write('POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n');
    s.write(Buffer.alloc(1000, 'u'));
    await new Promise((resolve) => s.once('data', resolve)); // the echo started
    s.resetAndDestroy();
    assert.ok(await until(() => done !== undefined), 'the pipeline callback ran');
    assert.ok(done instanceof Error, `an error, not ${done}`);
    assert.ok(['ECONNRESET', 'ERR_STREAM_PREMATURE_CLOSE'].includes(done.code), done.code);
  } finally {
    await srv.close();
  }
});
