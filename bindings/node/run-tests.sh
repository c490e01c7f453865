#!/usr/bin/env bash
# Builds the Node.js addon the way users do (`npm install` in bindings/node, which runs
# build.js: no node-gyp, no download) against the debug libmyriad, type-checks
# lib/index.d.ts with tsc, and runs the node --test suites (test/demo.test.js checks the
# demo contract against examples/hello.js) and tests/files_e2e.sh (the demo's --root). Ends with "N passed, M failed".
set -uo pipefail
cd "$(dirname "$0")/../.."
pass=0
fail=0
count() { # name, passed, failed
    echo "[node] $1: $2 passed, $3 failed"
    pass=$((pass + $2))
    fail=$((fail + $3))
}

if ! (cd bindings/node && MYRIAD_PROFILE=debug npm install --no-audit --no-fund --loglevel=error >/dev/null); then
    echo "FAIL [node] npm install (build)"
    echo "$pass passed, 1 failed"
    exit 1
fi
count "npm install builds build/myriad.node" 1 0

# The declarations: tsc (from the registry, into build/, not a dependency of the package).
TSC=build/tsc/node_modules/.bin/tsc
if [ -x "$TSC" ] || npm install --prefix build/tsc --no-audit --no-fund --loglevel=error typescript@5 @types/node@20 >/dev/null; then
    if "$TSC" --strict --noEmit --target es2022 --module commonjs --typeRoots build/tsc/node_modules/@types \
        --types node bindings/node/test/types.ts; then
        count "index.d.ts type-checks" 1 0
    else
        echo "FAIL [node] index.d.ts"; count "index.d.ts type-checks" 0 1
    fi
else
    echo "FAIL [node] cannot install typescript"; count "typescript" 0 1
fi

# npm pack, then npm install of the tarball in a clean folder as a user would: no libmyriad
# anywhere to find (PKG_CONFIG_LIBDIR empty), so the Rust sources the tarball bundles are
# built with cargo and linked in statically; a server runs from it. Without cargo: one line.
# (once: not again in the io_uring run of the suite, which changes nothing here)
T=$(mktemp -d)
ROOT=$PWD
if [ "${MYRIAD_BACKEND:-}" = io_uring ]; then
    : # packaging does not depend on the backend
elif (cd bindings/node && npm pack --silent --pack-destination "$T" >/dev/null 2>"$T/pack.err"); then
    tgz=$(ls "$T"/myriad-*.tgz)
    list=$(tar tzf "$tgz")
    if grep -q '^package/native/ffi/src/lib.rs$' <<<"$list" && ! grep -qE 'native/target/|node_modules/|package/build/' <<<"$list" &&
        [ ! -e bindings/node/native ]; then
        count "npm pack bundles the Rust sources (and leaves no copy behind)" 1 0
    else
        echo "FAIL [node] tarball contents"; count "npm pack contents" 0 1
    fi
    tar xzf "$tgz" -O package/package.json | grep -q '"@types/node"' &&
        count "the package declares @types/node for its types" 1 0 || count "@types/node declared" 0 1
    mkdir -p "$T/app" "$T/app2"
    echo '{ "name": "app", "private": true }' >"$T/app/package.json"
    cp "$T/app/package.json" "$T/app2/package.json"
    if (cd "$T/app" && PKG_CONFIG_LIBDIR=/nonexistent MYRIAD_PROFILE=debug CARGO_TARGET_DIR="$ROOT/build/npm-pack-target" \
        timeout 900 npm install --no-audit --no-fund --loglevel=error "$tgz" >"$T/install.log" 2>&1); then
        count "npm install of the tarball in a clean folder builds it" 1 0
        if ! ldd "$T/app/node_modules/myriad/build/myriad.node" | grep -q libmyriad &&
            (cd "$T/app" && timeout 30 node -e "
              const http = require('node:http');
              const myriad = require('myriad');
              const srv = myriad.createServer((req, res) => res.end('from the tarball ' + req.url));
              srv.listen({ http: '127.0.0.1:0' }).then(([{ addr }]) => {
                http.get('http://' + addr + '/x', (res) => {
                  let b = ''; res.on('data', (c) => (b += c));
                  res.on('end', () => { if (b !== 'from the tarball /x') process.exit(1); srv.close(); });
                });
              });") ; then
            count "a server runs from the clean install (library linked in)" 1 0
        else
            echo "FAIL [node] server from the tarball"; count "server from the tarball" 0 1
        fi
    else
        echo "FAIL [node] npm install of the tarball:"; tail -5 "$T/install.log"; count "npm install of the tarball" 0 1
    fi
    out=$(cd "$T/app2" && PKG_CONFIG_LIBDIR=/nonexistent CARGO=/nonexistent/cargo \
        timeout 300 npm install --no-audit --no-fund --loglevel=error "$tgz" 2>&1)
    if [ $? -ne 0 ] && grep -q 'cargo is not installed to build it from the bundled sources: install Rust' <<<"$out"; then
        count "without cargo or libmyriad: one line saying what to install" 1 0
    else
        echo "FAIL [node] without cargo: $out"; count "without cargo" 0 1
    fi
else
    echo "FAIL [node] npm pack: $(cat "$T/pack.err")"; count "npm pack" 0 1
fi
rm -rf "$T"

out=$(cd bindings/node && timeout 600 node --expose-gc --test --test-timeout=120000 --test-reporter=tap test/*.test.js 2>&1)
echo "$out" | grep -E '^\s*not ok' | sed 's/^/FAIL [node] /'
p=$(echo "$out" | sed -n 's/^# pass \([0-9]*\)$/\1/p' | tail -1)
f=$(echo "$out" | sed -n 's/^# fail \([0-9]*\)$/\1/p' | tail -1)
if [ -z "$p" ]; then
    echo "$out" | tail -20
    count "node --test" 0 1
else
    count "node --test" "$p" "$f"
fi

# The demo's --root (static files) against tests/files_e2e.sh.
out=$(timeout 600 bash tests/files_e2e.sh node examples/hello.js 2>&1)
echo "$out" | grep -E '^FAIL' | sed 's/^/[node] /'
line=$(echo "$out" | tail -1)
p=$(echo "$line" | sed -n 's/^\([0-9]*\) passed, \([0-9]*\) failed$/\1/p')
f=$(echo "$line" | sed -n 's/^\([0-9]*\) passed, \([0-9]*\) failed$/\2/p')
if [ -z "$p" ]; then count "tests/files_e2e.sh" 0 1; else count "tests/files_e2e.sh" "$p" "$f"; fi

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
