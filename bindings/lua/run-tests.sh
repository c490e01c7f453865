#!/usr/bin/env bash
# Builds the Lua module for Lua 5.4 and LuaJIT against include/myriad.h and libmyriad, runs
# the binding's test suite with both, and the demo contract against examples/hello.lua.
# Ends with "N passed, M failed".
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
make -s PROFILE=debug lib >/dev/null || { echo "0 passed, 1 failed"; exit 1; }
pass=0
fail=0
for v in "lua5.4:/usr/include/lua5.4" "luajit:/usr/include/luajit-2.1"; do
    lua=${v%%:*}
    inc=${v#*:}
    out="build/lua/$lua"
    mkdir -p "$out"
    if ! gcc -std=c99 -Wall -Wextra -Werror -pedantic -O2 -fPIC -shared -Iinclude -I"$inc" \
        bindings/lua/myriad.c -o "$out/myriad.so" -Ltarget/debug -Wl,-rpath,"$ROOT/target/debug" -lmyriad; then
        echo "FAIL build for $lua"; fail=$((fail + 1)); continue
    fi
    for suite in "bindings/lua/test.lua" "bindings/lua/test_io.lua" "bindings/lua/test_ws.lua" "tests/demo_e2e.sh" "tests/files_e2e.sh"; do
        if [ "${suite%.lua}" != "$suite" ]; then
            res=$(cd "$out" && TMPDIR_TEST=$(mktemp -d) LUA_CPATH="$ROOT/$out/?.so" LUA_PATH="$ROOT/bindings/lua/?.lua" \
                timeout 300 "$lua" "$ROOT/$suite" 2>/dev/null)
        else
            res=$(LUA_CPATH="$ROOT/$out/?.so" timeout 300 bash "$suite" "$lua" examples/hello.lua 2>&1)
        fi
        echo "$res" | grep -E '^(FAIL|after)' | sed "s/^/[$lua] /"
        line=$(echo "$res" | tail -1)
        echo "[$lua] $suite: $line"
        p=$(echo "$line" | sed -n 's/^\([0-9]*\) passed, \([0-9]*\) failed$/\1/p')
        f=$(echo "$line" | sed -n 's/^\([0-9]*\) passed, \([0-9]*\) failed$/\2/p')
        if [ -z "$p" ]; then fail=$((fail + 1)); else pass=$((pass + p)); fail=$((fail + f)); fi
    done
done
echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
