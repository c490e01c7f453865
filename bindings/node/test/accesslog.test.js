// The access log options: accessLog / accessLogFormat, reopenAccessLog after a rename,
// and the errors for a bad format or a path that cannot be opened.
'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { myriad, serve, request, tmpdir, until } = require('./helpers');

const read = (p) => (fs.existsSync(p) ? fs.readFileSync(p, 'utf8') : '');

test('lines in the given format, and a new file after rename + reopenAccessLog', async () => {
  const dir = tmpdir();
  const log = path.join(dir, 'access.log');
  const { srv, base } = await serve(
    (req, res) => {
      res.statusCode = 201;
      res.end('made');
    },
    { accessLog: log, accessLogFormat: '$status $request_method $request_uri $body_bytes_sent $protocol $http_x_tag' },
  );
  assert.equal((await request(`${base}/a?b=1`, { headers: { 'X-Tag': 't1' } })).status, 201);
  await until(() => read(log) !== '');
  assert.equal(read(log), '201 GET /a?b=1 4 HTTP t1\n');
  fs.renameSync(log, `${log}.1`);
  srv.reopenAccessLog();
  await request(`${base}/c`);
  await srv.close(); // the shutdown writes what is buffered
  assert.equal(read(log), '201 GET /c 4 HTTP -\n');
  assert.equal(read(`${log}.1`), '201 GET /a?b=1 4 HTTP t1\n');
  fs.rmSync(dir, { recursive: true, force: true });
});

test('a bad format or an unopenable path is refused by listen()', async () => {
  const dir = tmpdir();
  const srv = myriad.createServer((req, res) => res.end());
  await assert.rejects(srv.listen({ http: '127.0.0.1:0', accessLog: path.join(dir, 'x'), accessLogFormat: '$nope' }), {
    code: 'MYRIAD_EINVAL',
  });
  await assert.rejects(srv.listen({ http: '127.0.0.1:0', accessLog: '/nonexistent-dir/x.log' }), (e) => {
    assert.match(e.message, /accessLog '\/nonexistent-dir\/x.log': No such file or directory/);
    assert.equal(e.code, 'ENOENT');
    return true;
  });
  await assert.rejects(srv.listen({ http: '127.0.0.1:0', accessLog: 7 }), /accessLog must be a string/);
  await assert.rejects(srv.listen({ http: '127.0.0.1:0', accessLogFormat: '$status' }), /without accessLog/);
  assert.equal(fs.readdirSync(dir).length, 0);
  fs.rmSync(dir, { recursive: true, force: true });
});
