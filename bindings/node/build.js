#!/usr/bin/env node
// Builds build/myriad.node from src/addon.c with the system C compiler — no node-gyp, and
// nothing is downloaded at build time. `npm install` in this folder runs it.
//
// Headers: Node-API and uv.h from the include/node folder Node ships next to its binary
// (/usr/include/node for a packaged Node), else node_api.h from the node-api-headers
// package and uv.h from libuv1-dev (/usr/include). myriad.h and libmyriad: MYRIAD_INCLUDE /
// MYRIAD_LIB_DIR if set; else, inside the myriad source tree, `make lib` builds them
// (PROFILE=release unless MYRIAD_PROFILE says otherwise); else pkg-config myriad; else (a
// tarball from `npm pack`, which bundles the Rust sources in native/) cargo builds the
// library from them and the addon links it statically (nothing to find at run time;
// CARGO_TARGET_DIR is honoured, native/target is removed afterwards). Without any of those
// the build stops with one line saying what to install.
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const { execFileSync } = require('node:child_process');

const here = __dirname;
const root = path.resolve(here, '..', '..');
const fail = (msg) => {
  console.error(`myriad: build: ${msg}`);
  process.exit(1);
};
const has = (dir, file) => dir && fs.existsSync(path.join(dir, file));

function nodeIncludes() {
  const dirs = [
    process.env.NODE_INCLUDE,
    path.resolve(path.dirname(process.execPath), '..', 'include', 'node'),
    '/usr/include/node',
    '/usr/local/include/node',
  ];
  let napi = dirs.find((d) => has(d, 'node_api.h'));
  if (!napi) {
    try {
      napi = require('node-api-headers').include_dir;
    } catch {
      // not installed
    }
  }
  if (!napi) fail('node_api.h not found: install Node.js headers or `npm install node-api-headers`');
  const uv = [napi, ...dirs, '/usr/include', '/usr/local/include'].find((d) => has(d, 'uv.h'));
  if (!uv) fail('uv.h not found: install the headers Node ships (include/node) or libuv1-dev');
  return [...new Set([napi, uv])];
}

function myriadPaths() {
  if (process.env.MYRIAD_LIB_DIR) {
    return {
      inc: process.env.MYRIAD_INCLUDE || path.join(root, 'include'),
      libdir: path.resolve(process.env.MYRIAD_LIB_DIR),
    };
  }
  if (fs.existsSync(path.join(root, 'Makefile')) && fs.existsSync(path.join(root, 'include', 'myriad.h'))) {
    const profile = process.env.MYRIAD_PROFILE || 'release';
    execFileSync('make', ['-s', '-C', root, `PROFILE=${profile}`, 'lib'], { stdio: ['ignore', 'ignore', 'inherit'] });
    return { inc: path.join(root, 'include'), libdir: path.join(root, 'target', profile) };
  }
  try {
    const out = (args) => execFileSync('pkg-config', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    return { inc: out(['--variable=includedir', 'myriad']), libdir: out(['--variable=libdir', 'myriad']) };
  } catch {
    // not installed
  }
  const bundled = path.join(here, 'native');
  if (fs.existsSync(path.join(bundled, 'Cargo.toml'))) return buildBundled(bundled);
  return fail('libmyriad not found: set MYRIAD_LIB_DIR, build inside the myriad tree, or `make install` it');
}

/** Builds libmyriad.a from the Rust sources bundled by `npm pack`; the addon links it in. */
function buildBundled(dir) {
  const profile = process.env.MYRIAD_PROFILE || 'release';
  const target = process.env.CARGO_TARGET_DIR || path.join(dir, 'target');
  const cargo = process.env.CARGO || 'cargo';
  try {
    execFileSync(cargo, ['--version'], { stdio: 'ignore' });
  } catch {
    return fail(
      'libmyriad not found, and cargo is not installed to build it from the bundled sources: install Rust ' +
        '(https://rustup.rs) and run npm install again, or install libmyriad (make install; pkg-config myriad) or set MYRIAD_LIB_DIR',
    );
  }
  console.error(`myriad: building libmyriad (${profile}) from the bundled sources with cargo...`);
  const args = ['build', '-q', '-p', 'myriad-ffi', '--manifest-path', path.join(dir, 'Cargo.toml'), '--target-dir', target];
  if (profile === 'release') args.push('--release');
  try {
    execFileSync(cargo, args, { stdio: ['ignore', 'inherit', 'inherit'] });
  } catch {
    return fail('cargo build of the bundled libmyriad failed (see above)');
  }
  const lib = path.join(target, profile === 'release' ? 'release' : 'debug', 'libmyriad.a');
  return { inc: path.join(dir, 'include'), staticLib: lib, cleanup: process.env.CARGO_TARGET_DIR ? null : target };
}

const { inc, libdir, staticLib, cleanup } = myriadPaths();
const cc = process.env.CC || 'cc';
const out = path.join(here, 'build', 'myriad.node');
fs.mkdirSync(path.dirname(out), { recursive: true });
const args = [
  '-std=c11', '-Wall', '-Wextra', '-Werror', '-O2', '-g', '-fPIC', '-shared', '-fvisibility=hidden',
  ...nodeIncludes().map((d) => `-I${d}`), `-I${inc}`,
  path.join(here, 'src', 'addon.c'), '-o', out,
  ...(staticLib ? [staticLib, '-lpthread', '-ldl', '-lm'] : [`-L${libdir}`, `-Wl,-rpath,${libdir}`, '-lmyriad']),
];
try {
  execFileSync(cc, args, { stdio: 'inherit' });
} catch {
  fail(`${cc} failed`);
}
if (cleanup) fs.rmSync(cleanup, { recursive: true, force: true }); // the addon has it all
console.log(`myriad: built ${path.relative(process.cwd(), out) || out}`);
