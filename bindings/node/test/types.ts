// Type-checked (not run) by run-tests.sh with `tsc --strict --noEmit`: the declarations in
// lib/index.d.ts describe the API as the tests use it. Each @ts-expect-error line must fail.
import * as myriad from '../lib/index';
import { Readable, pipeline } from 'node:stream';

const srv: myriad.Server = myriad.createServer({ maxBody: 1 << 20 }, async (req, res) => {
  const m: string = req.method;
  const q = req.query['a'];
  const h = req.headers['content-type'];
  const body: Buffer = await req.body();
  for await (const piece of req) piece.byteLength;
  req.signal.addEventListener('abort', () => {});
  res.statusCode = 201;
  res.setHeader('X-List', ['a', 'b']).setHeader('X-Num', 1);
  if (!res.write(body)) await res.drain();
  res.on('drain', () => {});
  res.end(`${m} ${String(q)} ${String(h)} ${req.peer} ${req.env['QUERY_STRING']} ${req.tls?.version ?? "-"} ${req.tls?.sni ?? ""}`);
  // @ts-expect-error a number is not a body chunk
  res.write(42);
});
myriad.createServer((req, res) => {
  res.write('ff00', 'hex', (err) => void err);
  req.on('data', (c: Buffer) => c.byteLength).on('end', () => {}).pause().resume();
  if (req.path === '/echo') req.pipe(res);
  if (req.path === '/pipe') Readable.from(['a', 'b']).pipe(res);
  else pipeline(req, res, (err) => void err);
  res.end('x', 'latin1', () => {});
  const w: NodeJS.WritableStream = res;
  void w;
  // @ts-expect-error not an encoding
  res.write('x', 'klingon');
});
srv.on('error', (err, req) => console.error(err, req.path));

async function main(): Promise<void> {
  const addrs: myriad.BoundAddress[] = await srv.listen({ http: ['127.0.0.1:0'], fcgi: 'unix:/tmp/x.sock' });
  const proto: 'http' | 'https' | 'fcgi' = addrs[0].proto;
  void proto;
  await srv.listen({ https: '127.0.0.1:0', key: 'PEM', cert: Buffer.from('PEM') });
  await srv.listen({ https: ['127.0.0.1:0'], tls: [{ key: 'a', cert: 'b', keyName: 'a.key' }] });
  srv.setSecureContext({ cert: ['a', 'b'], key: ['c', 'd'] });
  // @ts-expect-error PEM is text or bytes
  srv.setSecureContext({ key: 42 });
  // @ts-expect-error addresses are strings
  await srv.listen({ http: [8080] });
  // @ts-expect-error one thread per loop
  await srv.listen({ http: '127.0.0.1:0', threads: 4 });
  await srv.listen({ http: '127.0.0.1:0', accessLog: '-', accessLogFormat: '$status $request' });
  srv.reopenAccessLog();
  // @ts-expect-error a path
  await srv.listen({ http: '127.0.0.1:0', accessLog: true });
  const s: myriad.Stats = myriad.stats();
  console.log(s.requests, myriad.version);
  await srv.close();
}
void main();

// systemd
const nfds: number = myriad.listenFds();
const sent: boolean = myriad.notify('READY=1');
const armed: boolean = myriad.watchdog();
void srv.listen({ inherited: true });
void [nfds, sent, armed];
// @ts-expect-error the state is a string
myriad.notify(1);
// The router, forms, cookies.
const r: myriad.Router = myriad.router();
r.get('/users/:id', (req, res) => {
  const id: string = req.params.id;
  const sid: string | undefined = req.cookies.sid;
  res.setCookie('seen', 'yes', { path: '/', httpOnly: true, sameSite: 'Lax', maxAge: 60, expires: new Date() });
  res.end(id + (sid ?? ''));
})
  .post('/form', async (req, res) => {
    for await (const part of req.form({ parts: 10, fieldBytes: 1024 })) {
      const n: string = part.name;
      const f: string | undefined = part.filename;
      if (f === undefined) res.write(`${n}=${await part.text()}`);
      else for await (const chunk of part) res.write(String(chunk.length));
    }
    res.end();
  })
  .use(async (req, res) => {
    if (!req.headers['x-token']) res.end();
  });
myriad.createServer(r);
myriad.createServer({ maxBody: 1 }, r);
const pairs: Array<[string, string]> = myriad.parseUrlencoded('a=1&b=2');
const cookie: string = myriad.serializeCookie('a', 'b', { secure: true, sameSite: 'None' });
void pairs;
void cookie;

// Static files.
const files: myriad.Files = myriad.files('/srv/www', { index: null, cacheControl: 'max-age=60', cacheEntries: 0 });
myriad.createServer((req, res) => {
  if (req.path.startsWith('/static/')) {
    const rc: number = files.serve(req, res, req.path.slice(8));
    void rc;
  } else {
    const rc: number = res.sendFile('/srv/www/a.txt', { offset: 0, length: 10 });
    void rc;
  }
});
// WebSocket
myriad.createServer((req, res) => {
  const ws = res.websocket({ perMessageDeflate: true, protocols: ['chat'], maxPayload: 1 << 20 });
  if (!ws) return;
  ws.on('message', (data: Buffer, isBinary: boolean) => ws.send(data, { binary: isBinary }));
  ws.on('close', (code: number, reason: Buffer) => void [code, reason.length]);
  const queued: boolean = ws.send('text', (err) => void err);
  const n: number = ws.bufferedAmount + ws.publish('room', 'hi') + myriad.publish('room', Buffer.from('x'));
  ws.subscribe('room');
  ws.ping();
  ws.close(1000, 'bye');
  void [queued, n, ws.readyState === myriad.WebSocket.OPEN, ws.protocol, req.path];
  // @ts-expect-error a number is not a message
  ws.send(42);
});
