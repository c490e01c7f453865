#!/usr/bin/env bash
# WebSocket end to end against the demos (the demo contract's GET /ws echo) with real
# clients, over HTTP and HTTPS: tests/ws_raw.py (raw frames: the handshake, bytes sent with
# the upgrade, echo, fragmentation, pings, deflate, close codes, framing errors), the npm
# `ws` package's client and Python's `websockets` (both installed by scripts/setup.sh).
#   tests/ws_e2e.sh                 # every demo: C, Rust twin, Lua 5.4, Node
#   tests/ws_e2e.sh COMMAND...      # one demo ("--http 127.0.0.1:0 --https ..." is added)
# Ends with "N passed, M failed".
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
pass=0
fail=0
ok() { pass=$((pass + 1)); echo "ok   $1"; }
bad() { fail=$((fail + 1)); echo "FAIL $1"; }
TMP=$(mktemp -d)
DPID=
trap 'rm -rf "$TMP"; [ -n "$DPID" ] && kill "$DPID" 2>/dev/null' EXIT
WSMOD=$ROOT/build/ws-client/node_modules/ws
[ -d "$WSMOD" ] || { echo "FAIL the npm ws client is missing (scripts/setup.sh)"; echo "0 passed, 1 failed"; exit 1; }
python3 -c 'import websockets' 2>/dev/null || { echo "FAIL python websockets is missing (scripts/setup.sh)"; echo "0 passed, 1 failed"; exit 1; }
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$TMP/key.pem" -out "$TMP/cert.pem" \
    -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 -days 2 >/dev/null 2>&1

suite() { # name, output of a client
    local name=$1 out=$2 line
    echo "$out" | grep '^FAIL' | sed "s|^|  [$name] |"
    line=$(echo "$out" | tail -1)
    if [[ $line =~ ^([0-9]+)\ passed,\ 0\ failed$ ]] && [ "${BASH_REMATCH[1]}" -gt 0 ]; then ok "$name: $line"; else bad "$name: $line"; fi
}

run_demo() { # label, command...
    local label=$1; shift
    local tls=(--https 127.0.0.1:0 --cert "$TMP/cert.pem" --key "$TMP/key.pem")
    rm -f "$TMP/out" "$TMP/err" # (the previous demo's lines: the shell truncates in the child)
    "$@" --http 127.0.0.1:0 "${tls[@]}" >"$TMP/out" 2>"$TMP/err" &
    DPID=$!
    for _ in $(seq 1 300); do [ "$(grep -c '^listening' "$TMP/out" 2>/dev/null)" = 2 ] && break; sleep 0.1; done
    local H S
    H=$(awk '/^listening http /{print $3}' "$TMP/out")
    S=$(awk '/^listening https /{print $3}' "$TMP/out")
    if [ -z "$H" ] || [ -z "$S" ]; then
        bad "$label: listening lines: $(cat "$TMP/out" "$TMP/err")"
    else
        suite "$label raw frames (http)" "$(timeout 60 python3 tests/ws_raw.py "$H" 2>&1)"
        suite "$label raw frames (https)" "$(timeout 60 python3 tests/ws_raw.py "$S" --tls 2>&1)"
        suite "$label npm ws client (ws://)" "$(timeout 60 node tests/ws_clients/ws_client.js "$WSMOD" "ws://$H/ws" 2>&1)"
        suite "$label npm ws client (wss://)" "$(timeout 60 node tests/ws_clients/ws_client.js "$WSMOD" "wss://$S/ws" 2>&1)"
        suite "$label python websockets (ws://)" "$(timeout 60 python3 tests/ws_clients/websockets_client.py "ws://$H/ws" 2>&1)"
        suite "$label python websockets (wss://)" "$(timeout 60 python3 tests/ws_clients/websockets_client.py "wss://$S/ws" 2>&1)"
    fi
    kill -TERM "$DPID" 2>/dev/null
    wait "$DPID" 2>/dev/null
    DPID=
}

if [ $# -gt 0 ]; then
    run_demo "$*" "$@"
else
    make -s PROFILE=debug hello >/dev/null 2>&1 || { echo "0 passed, 1 failed"; exit 1; }
    cargo build -q -p myriad --example hello || bad "examples/hello.rs builds"
    mkdir -p build/lua/lua5.4
    gcc -std=c99 -O2 -fPIC -shared -Iinclude -I/usr/include/lua5.4 bindings/lua/myriad.c -o build/lua/lua5.4/myriad.so \
        -Ltarget/debug -Wl,-rpath,"$ROOT/target/debug" -lmyriad || bad "the Lua module builds"
    (cd bindings/node && MYRIAD_PROFILE=debug npm install --no-audit --no-fund --loglevel=error >/dev/null) || bad "the Node addon builds"
    for be in epoll io_uring; do
        export MYRIAD_BACKEND=$be
        run_demo "C demo on $be" build/hello
        run_demo "Rust demo on $be" target/debug/examples/hello
        LUA_CPATH="$ROOT/build/lua/lua5.4/?.so" run_demo "Lua demo on $be" lua5.4 examples/hello.lua
        run_demo "Node demo on $be" node examples/hello.js
    done
fi
echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
