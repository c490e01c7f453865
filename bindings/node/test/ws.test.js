// WebSocket through the Node binding (res.websocket(), the `ws`-shaped socket, pub/sub),
// checked with the real `ws` package client (npm, installed by scripts/setup.sh into
// build/ws-client): echo of text and binary, fragmentation, ping/pong, permessage-deflate,
// close codes both ways, publish to several subscribers, a refused plain GET.
'use strict';
const test = require('node:test');
const assert = require('node:assert');
const path = require('node:path');
const myriad = require('..');
const { serve, request } = require('./helpers.js');

const WS = require(path.join(__dirname, '..', '..', '..', 'build', 'ws-client', 'node_modules', 'ws'));

function open(url, opts) {
  return new Promise((resolve, reject) => {
    const c = new WS(url, opts);
    c.once('open', () => resolve(c));
    c.once('error', reject);
  });
}
const next = (c, ev) => new Promise((resolve) => c.once(ev, (...a) => resolve(a)));

async function server() {
  const events = { closes: [] };
  const s = await serve((req, res) => {
    if (req.path === '/ws') {
      const ws = res.websocket({ protocols: ['chat', 'echo'] });
      if (!ws) return;
      assert.strictEqual(ws.readyState, myriad.WebSocket.OPEN);
      ws.on('message', (data, isBinary) => {
        assert.ok(Buffer.isBuffer(data));
        if (!isBinary && data.toString() === 'close please') return ws.close(4002, 'as asked');
        if (!isBinary && data.toString() === 'buffered') return ws.send(String(typeof ws.bufferedAmount));
        ws.send(data, { binary: isBinary });
      });
      ws.on('close', (code, reason) => events.closes.push([code, reason.toString()]));
    } else if (req.path === '/sub') {
      const ws = res.websocket();
      ws.subscribe('room');
      ws.on('message', (data) => ws.publish('room', data, { binary: false }));
    } else {
      res.end('plain');
    }
  });
  return { ...s, events, url: `ws://${s.addr}` };
}

test('echo, fragments, ping, deflate and close codes with the ws client', async () => {
  const { srv, url, events } = await server();
  try {
    const c = await open(`${url}/ws`, ['superchat', 'echo']);
    assert.strictEqual(c.protocol, 'echo');
    assert.match(c.extensions, /permessage-deflate/);
    c.send('héllo');
    let [data, isBinary] = await next(c, 'message');
    assert.deepStrictEqual([data.toString(), isBinary], ['héllo', false]);
    c.send(Buffer.from([0, 1, 255]));
    [data, isBinary] = await next(c, 'message');
    assert.deepStrictEqual([[...data], isBinary], [[0, 1, 255], true]);
    // Large (compressed both ways by deflate) and fragmented messages.
    const big = 'x'.repeat(100000) + 'end';
    c.send(big);
    [data] = await next(c, 'message');
    assert.strictEqual(data.toString(), big);
    c.send('frag', { fin: false });
    c.send('ment', { fin: false });
    c.send('ed', { fin: true });
    [data, isBinary] = await next(c, 'message');
    assert.deepStrictEqual([data.toString(), isBinary], ['fragmented', false]);
    c.ping('pi');
    [data] = await next(c, 'pong');
    assert.strictEqual(data.toString(), 'pi');
    c.send('buffered');
    [data] = await next(c, 'message');
    assert.strictEqual(data.toString(), 'number');
    // The client's close code comes back; the server's socket sees it too.
    c.close(4000, 'bye');
    const [code] = await next(c, 'close');
    assert.strictEqual(code, 4000);
    // A close the server starts.
    const d = await open(`${url}/ws`, { perMessageDeflate: false });
    assert.strictEqual(d.extensions, '');
    d.send('close please');
    const [code2, reason2] = await next(d, 'close');
    assert.deepStrictEqual([code2, reason2.toString()], [4002, 'as asked']);
    for (let i = 0; i < 100 && events.closes.length < 2; i++) await new Promise((r) => setTimeout(r, 20));
    assert.deepStrictEqual(events.closes.map((x) => x[0]).sort(), [4000, 4002]);
  } finally {
    await srv.close();
  }
});

test('publish reaches every subscriber; a plain GET is refused', async () => {
  const { srv, url, base } = await server();
  try {
    const subs = await Promise.all([1, 2, 3].map(() => open(`${url}/sub`)));
    await new Promise((r) => setTimeout(r, 50));
    const got = subs.slice(1).map((c) => next(c, 'message'));
    subs[0].send('to the room');
    for (const [data] of await Promise.all(got)) assert.strictEqual(data.toString(), 'to the room');
    assert.strictEqual(myriad.publish('room', 'from the server'), 3);
    for (const [data] of await Promise.all(subs.map((c) => next(c, 'message')))) assert.strictEqual(data.toString(), 'from the server');
    for (const c of subs) c.close();
    await Promise.all(subs.map((c) => next(c, 'close')));
    const r = await request(`${base}/ws`);
    assert.strictEqual(r.status, 426);
    assert.strictEqual(r.headers.upgrade, 'websocket');
  } finally {
    await srv.close();
  }
});
