// Async handlers: responses ended from timers, promises, nextTick and other events, in any
// order, and the callback scope around myriad's callbacks (promise jobs and nextTicks run).
'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const http = require('node:http');
const { setTimeout: sleep } = require('node:timers/promises');
const { myriad, serve, request } = require('./helpers');

test('responses ended from timers, immediates, nextTick and microtasks', async () => {
  const { srv, base } = await serve((req, res) => {
    const end = () => res.end(req.path);
    switch (req.path) {
      case '/timeout': return void setTimeout(end, 20);
      case '/immediate': return void setImmediate(end);
      case '/nexttick': return void process.nextTick(end);
      case '/microtask': return void queueMicrotask(end);
      case '/promise': return Promise.resolve().then(end);
      default: return end();
    }
  });
  for (const p of ['/timeout', '/immediate', '/nexttick', '/microtask', '/promise', '/sync']) {
    const r = await request(`${base}${p}`);
    assert.equal(r.body.toString(), p);
  }
  await srv.close();
});

test('nextTick and promise jobs queued by a handler run before the loop sleeps', async () => {
  const order = [];
  const { srv, base } = await serve((req, res) => {
    order.push('handler');
    process.nextTick(() => order.push('tick'));
    Promise.resolve().then(() => order.push('microtask'));
    res.end('x');
    order.push('ended');
  });
  await request(`${base}/`);
  assert.deepEqual(order, ['handler', 'ended', 'tick', 'microtask']);
  await srv.close();
});

test('200 concurrent async requests finish out of order, each with its own answer', async () => {
  const { srv, addr } = await serve(async (req, res) => {
    const ms = Number(req.query.ms);
    await sleep(ms);
    res.end(`${req.query.i}:${ms}`);
  });
  const agent = new http.Agent({ keepAlive: true, maxSockets: 50 });
  const n = 200;
  const finished = [];
  await Promise.all(
    Array.from({ length: n }, async (_, i) => {
      const ms = (i * 37) % 60;
      const r = await request(`http://${addr}/?i=${i}&ms=${ms}`, { agent });
      assert.equal(r.body.toString(), `${i}:${ms}`);
      finished.push(i);
    }),
  );
  agent.destroy();
  assert.equal(finished.length, n);
  assert.notDeepEqual(finished, [...finished].sort((a, b) => a - b), 'answers came out of order');
  assert.equal(myriad.stats().requests, 0);
  await srv.close();
});

test('keep-alive and pipelining: in-order answers from async handlers', async () => {
  const { srv, addr } = await serve(async (req, res) => {
    await sleep(Number(req.query.ms));
    res.end(req.query.n);
  });
  const { raw } = require('./helpers');
  const reqs = [30, 0, 15, 5]
    .map((ms, n) => `GET /?ms=${ms}&n=${n} HTTP/1.1\r\nHost: x\r\n${n === 3 ? 'Connection: close\r\n' : ''}\r\n`)
    .join('');
  const out = await raw(addr, reqs);
  const bodies = [...out.matchAll(/\r\n\r\n(\d)/g)].map((m) => m[1]);
  assert.deepEqual(bodies, ['0', '1', '2', '3']);
  await srv.close();
});

test('a server inside a handler\'s own await chain keeps serving other clients', async () => {
  let release;
  const gate = new Promise((r) => {
    release = r;
  });
  const { srv, base } = await serve(async (req, res) => {
    if (req.path === '/wait') await gate;
    res.end(req.path);
  });
  const slow = request(`${base}/wait`);
  for (let i = 0; i < 20; i++) assert.equal((await request(`${base}/fast`)).body.toString(), '/fast');
  release();
  assert.equal((await slow).body.toString(), '/wait');
  await srv.close();
});
