// The demo contract's GET /ws checked with the npm `ws` package's client:
//   node tests/ws_clients/ws_client.js WS_MODULE_DIR URL     (ws://H/ws or wss://H/ws)
// echo of text and binary as the same kind, a fragmented message, ping -> pong, a 200 KB
// message with permessage-deflate negotiated, the client's close code echoed, and a
// connection without deflate. Prints one line per failure and "N passed, M failed".
'use strict';
const WebSocket = require(process.argv[2]);
const url = process.argv[3];
let passed = 0;
let failed = 0;
const check = (cond, what) => {
  if (cond) passed++;
  else {
    failed++;
    console.log(`FAIL ${what}`);
  }
};
const open = (opts) => new Promise((resolve, reject) => {
  const c = new WebSocket(url, { rejectUnauthorized: false, ...opts });
  c.once('open', () => resolve(c));
  c.once('error', reject);
});
const next = (c, ev) => new Promise((resolve, reject) => {
  const t = setTimeout(() => reject(new Error(`timeout waiting for ${ev}`)), 10000);
  c.once(ev, (...a) => {
    clearTimeout(t);
    resolve(a);
  });
});

(async () => {
  const c = await open({ perMessageDeflate: true });
  check(/permessage-deflate/.test(c.extensions), `deflate negotiated: ${c.extensions}`);
  c.send('hello ws');
  let [d, bin] = await next(c, 'message');
  check(d.toString() === 'hello ws' && bin === false, 'text echoed as text');
  c.send(Buffer.from([1, 2, 3, 0, 255]));
  [d, bin] = await next(c, 'message');
  check(Buffer.compare(d, Buffer.from([1, 2, 3, 0, 255])) === 0 && bin === true, 'binary echoed as binary');
  const big = Buffer.alloc(200000, 'abcdefgh');
  c.send(big, { binary: true });
  [d, bin] = await next(c, 'message');
  check(Buffer.compare(d, big) === 0 && bin, '200 KB message through deflate');
  c.send('fra', { fin: false });
  c.send('gm', { fin: false });
  c.send('ent', { fin: true });
  [d, bin] = await next(c, 'message');
  check(d.toString() === 'fragment' && !bin, `fragmented message reassembled: ${d}`);
  c.ping('ping-data');
  [d] = await next(c, 'pong');
  check(d.toString() === 'ping-data', 'pong with the ping payload');
  c.close(4321, 'done');
  const [code] = await next(c, 'close');
  check(code === 4321, `close code echoed: ${code}`);
  const p = await open({ perMessageDeflate: false });
  check(p.extensions === '', 'no deflate when not offered');
  p.send('plain');
  [d] = await next(p, 'message');
  check(d.toString() === 'plain', 'echo without deflate');
  p.close(1000);
  const [code2] = await next(p, 'close');
  check(code2 === 1000, `close 1000 echoed: ${code2}`);
})()
  .catch((e) => check(false, `error: ${e.message}`))
  .finally(() => {
    console.log(`${passed} passed, ${failed} failed`);
    process.exit(failed ? 1 : 0);
  });
