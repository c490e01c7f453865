#!/usr/bin/env node
// npm pack helpers: `node pack.js bundle` (prepack) copies the library's Rust sources
// (core/, ffi/, include/, the workspace's Cargo.toml and Cargo.lock) into native/, so that
// `npm install` of the packed tarball can build libmyriad where there is none (build.js);
// `node pack.js clean` (postpack) removes that copy again.
'use strict';
const fs = require('node:fs');
const path = require('node:path');

const here = __dirname;
const root = path.resolve(here, '..', '..');
const native = path.join(here, 'native');

function copy(from, to) {
  const st = fs.statSync(from);
  if (st.isDirectory()) {
    if (path.basename(from) === 'target') return;
    fs.mkdirSync(to, { recursive: true });
    for (const e of fs.readdirSync(from)) copy(path.join(from, e), path.join(to, e));
  } else {
    fs.copyFileSync(from, to);
  }
}

const what = process.argv[2];
fs.rmSync(native, { recursive: true, force: true });
if (what === 'bundle') {
  if (!fs.existsSync(path.join(root, 'ffi', 'Cargo.toml'))) {
    console.error('myriad: pack: not inside the myriad source tree; nothing bundled');
    process.exit(1);
  }
  for (const d of ['core', 'ffi', 'include']) copy(path.join(root, d), path.join(native, d));
  // The examples core/Cargo.toml names (not built, but the manifest points at them).
  fs.mkdirSync(path.join(native, 'examples'), { recursive: true });
  for (const f of ['hello.rs', 'echo.rs']) copy(path.join(root, 'examples', f), path.join(native, 'examples', f));
  fs.copyFileSync(path.join(root, 'Cargo.lock'), path.join(native, 'Cargo.lock'));
  // The workspace with only the two crates the library needs.
  const ws = fs.readFileSync(path.join(root, 'Cargo.toml'), 'utf8').replace(/^members\s*=\s*\[[^\]]*\]/m, 'members = ["core", "ffi"]');
  fs.writeFileSync(path.join(native, 'Cargo.toml'), ws);
  console.error('myriad: pack: bundled the Rust sources in native/');
}
