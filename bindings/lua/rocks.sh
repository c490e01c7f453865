#!/usr/bin/env bash
# LuaRocks as a user runs it: `luarocks make` in bindings/lua for Lua 5.4 and LuaJIT into
# temporary trees, against an installed libmyriad found by pkg-config (make install of the
# debug library), or an explicit MYRIAD_LIBDIR; the installed module (and myriad.http)
# load and serve; `luarocks pack` makes a binary rock that installs elsewhere; nothing is
# left in the source tree; without a findable libmyriad the build fails with one clear line.
# Ends with "N passed, M failed".
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
pass=0
fail=0
ok() { pass=$((pass + 1)); echo "ok   $1"; }
bad() { fail=$((fail + 1)); echo "FAIL $1"; }
check() { local name=$1; shift; if "$@" >"$T/log" 2>&1; then ok "$name"; else bad "$name"; tail -5 "$T/log"; fi; }
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
command -v luarocks >/dev/null || { echo "FAIL luarocks not installed (scripts/setup.sh)"; echo "0 passed, 1 failed"; exit 1; }

make -s PROFILE=debug lib >/dev/null 2>&1 && make -s PROFILE=debug install PREFIX="$T/prefix" >/dev/null ||
    { echo "0 passed, 1 failed"; exit 1; }
# (PKG_CONFIG_LIBDIR: only this install, not one the machine may have in /usr/local)
export PKG_CONFIG_LIBDIR="$T/prefix/lib/pkgconfig"
before=$(git status --porcelain --ignored bindings/lua)

# load TREE LUA LUAVER: the installed module serves a request through myriad.http
load() {
    "$2" -e "
      package.cpath = '$1/lib/lua/$3/?.so'
      package.path = '$1/share/lua/$3/?.lua'
      local myriad = require 'myriad'
      local http = require 'myriad.http'
      local srv = myriad.server { http = '127.0.0.1:0', handler = function(req, res) res:finish('rock ' .. req.path) end }
      local got
      myriad.spawn(function()
        local r = http.get('http://' .. srv:addresses()[1].addr .. '/x')
        got = r and r.body
        srv:close(function() myriad.stop() end)
      end)
      myriad.run()
      assert(got == 'rock /x', tostring(got))
      assert(package.loaded.myriad and not package.cpath:find('build'))
    "
}
(cd bindings/lua && check "luarocks make for Lua 5.4 (libmyriad by pkg-config)" \
    luarocks --lua-version 5.4 make --tree "$T/t54")
check "the Lua 5.4 rock loads and serves (lua5.4)" load "$T/t54" lua5.4 5.4
(cd bindings/lua && check "luarocks make for LuaJIT (--lua-version 5.1, LuaJIT's headers)" \
    luarocks --lua-version 5.1 make --tree "$T/tjit" LUA_INCDIR=/usr/include/luajit-2.1)
check "the LuaJIT rock loads and serves (luajit)" load "$T/tjit" luajit 5.1
out=$(luarocks --lua-version 5.4 make --tree "$T/troot" bindings/lua/myriad-0.1.0-1.rockspec 2>&1)
if grep -q "run \`luarocks make\` in bindings/lua" <<<"$out" && [ ! -e "$T/troot/lib/lua/5.4/myriad.so" ]; then
    ok "luarocks make from the repository root is refused with the way to do it"
else
    bad "luarocks make from the root: $out"
fi
(cd bindings/lua && check "an explicit MYRIAD_LIBDIR wins" env PKG_CONFIG_LIBDIR=/nonexistent \
    MYRIAD_LIBDIR="$T/prefix/lib" MYRIAD_INCDIR="$T/prefix/include" luarocks --lua-version 5.4 make --tree "$T/tdir")
check "the rock links the library it was built against (rpath, no LD_LIBRARY_PATH)" \
    bash -c "readelf -d '$T/tdir/lib/lua/5.4/myriad.so' | grep -q 'R.*PATH.*$T/prefix/lib'"
(cd "$T" && check "luarocks pack of the installed rock" luarocks --lua-version 5.4 pack myriad --tree "$T/t54")
check "the packed rock installs into another tree and loads" bash -c \
    "luarocks --lua-version 5.4 install --tree '$T/t2' '$T'/myriad-0.1.0-1.*.rock && true"
check "... and serves" load "$T/t2" lua5.4 5.4
# make lua (here on the debug library: PROFILE=release is its default) builds both modules.
if make -s PROFILE=debug lua >"$T/log" 2>&1 &&
    LUA_CPATH="$ROOT/build/lua/lua5.4/?.so" lua5.4 -e 'assert(require("myriad").version)' &&
    LUA_CPATH="$ROOT/build/lua/luajit/?.so" luajit -e 'assert(require("myriad").version)'; then
    ok "make lua builds the module for lua5.4 and luajit"
else
    bad "make lua: $(tail -3 "$T/log")"
fi
after=$(git status --porcelain --ignored bindings/lua)
if [ "$before" = "$after" ]; then ok "no build products left in bindings/lua"; else bad "left in the tree: $after"; fi
# Outside the source tree, with no pkg-config file: one clear line.
cp -r bindings/lua "$T/copy"
out=$(cd "$T/copy" && env PKG_CONFIG_LIBDIR=/nonexistent luarocks --lua-version 5.4 make --tree "$T/t3" 2>&1)
if grep -q "libmyriad not found: 'make install' it" <<<"$out"; then ok "no libmyriad: a clear message"; else bad "no libmyriad: $out"; fi

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
