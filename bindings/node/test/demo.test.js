// The demo contract (tests/demo_e2e.sh: every route over HTTP and FastCGI, graceful
// SIGTERM with a request in flight, exit codes) against examples/hello.js, with
// `require('myriad')` resolving to this package. One subtest per check.
'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { execFile } = require('node:child_process');

const root = path.resolve(__dirname, '..', '..', '..');

test('examples/hello.js keeps the demo contract', async (t) => {
  // NODE_PATH holds a folder where "myriad" is this package.
  const modules = fs.mkdtempSync(path.join(os.tmpdir(), 'myriad-demo-'));
  fs.symlinkSync(path.resolve(__dirname, '..'), path.join(modules, 'myriad'));
  t.after(() => fs.rmSync(modules, { recursive: true, force: true }));
  const out = await new Promise((resolve) =>
    execFile(
      'bash',
      [path.join(root, 'tests', 'demo_e2e.sh'), process.execPath, path.join(root, 'examples', 'hello.js')],
      { cwd: root, env: { ...process.env, NODE_PATH: modules }, timeout: 240000 },
      (err, stdout, stderr) => resolve(stdout + stderr),
    ),
  );
  const checks = out.split('\n').filter((l) => /^(ok|FAIL) /.test(l));
  for (const line of checks) {
    await t.test(line.slice(5), () => assert.ok(line.startsWith('ok '), line));
  }
  assert.match(out, /^(\d+) passed, 0 failed$/m, out.slice(-2000));
  assert.ok(checks.length >= 26, `${checks.length} checks ran`);
});
