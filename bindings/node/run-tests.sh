#!/usr/bin/env bash
# Builds the Node.js addon the way users do (`npm install` in bindings/node, which runs
# build.js: no node-gyp, no download) against the debug libmyriad, type-checks
# lib/index.d.ts with tsc, and runs the node --test suites (test/demo.test.js checks the
# demo contract against examples/hello.js). Ends with "N passed, M failed".
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

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
