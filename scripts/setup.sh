#!/usr/bin/env bash
# Installs what the build, the demo and the tests need on a fresh Debian machine.
# Idempotent: what is already present is not fetched again.
set -euo pipefail

# command -> Debian package providing it
declare -A NEED=(
    [cc]=build-essential
    [pkg-config]=pkg-config
    [curl]=curl
    [openssl]=openssl
    [python3]=python3
    [nginx]=nginx-light
    [haproxy]=haproxy
    [logrotate]=logrotate
    [spawn-fcgi]=spawn-fcgi
    [cgi-fcgi]=libfcgi-bin
    [valgrind]=valgrind
    [g++]=g++
    [readelf]=binutils
    [lua5.4]=lua5.4
    [luajit]=luajit
    [luarocks]=luarocks
    [node]=nodejs
    [npm]=npm
    [wrk]=wrk
    [systemd-socket-activate]=systemd
)

missing=()
for cmd in "${!NEED[@]}"; do
    if ! command -v "$cmd" >/dev/null 2>&1 && ! [ -x "/usr/sbin/$cmd" ]; then
        missing+=("${NEED[$cmd]}")
    fi
done
# Headers for building the Lua module.
[ -f /usr/include/lua5.4/lua.h ] || missing+=(liblua5.4-dev)
[ -f /usr/include/luajit-2.1/lua.h ] || missing+=(libluajit-5.1-dev)
# Node-API and uv.h for the Node addon: Node's own include/node, else Debian's libnode-dev.
if command -v node >/dev/null 2>&1; then
    inc="$(dirname "$(readlink -f "$(command -v node)")")/../include/node"
    [ -f "$inc/node_api.h" ] || [ -f /usr/include/node/node_api.h ] || missing+=(libnode-dev)
else
    missing+=(libnode-dev)
fi
if ((${#missing[@]})); then
    echo "setup: installing ${missing[*]}"
    SUDO=""
    [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi
# The packaged nginx and HAProxy services are not ours to run: tests start their own instances.
if command -v systemctl >/dev/null 2>&1; then
    systemctl disable --now nginx >/dev/null 2>&1 || true
    systemctl disable --now haproxy >/dev/null 2>&1 || true
fi

command -v cargo >/dev/null || { echo "setup: cargo is required (rustup)"; exit 1; }
rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy rustfmt
# The standard library of the kqueue platforms, for type-checking and linting the kqueue
# backend (nothing here can run it).
for t in x86_64-unknown-freebsd x86_64-apple-darwin; do
    rustup target list --installed 2>/dev/null | grep -qx "$t" || rustup target add "$t"
done
# Fuzzing (scripts/fuzz.sh): cargo-fuzz runs on the stable toolchain with --sanitizer none.
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
# The differential test of the HTTP head parser compares it with Python's h11.
if ! python3 -c 'import h11' 2>/dev/null; then
    command -v pip3 >/dev/null 2>&1 || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-pip
    pip3 install -q h11 2>/dev/null || pip3 install -q --break-system-packages h11
fi
# WebSocket clients for tests/ws_e2e.sh and the Node binding's ws test: the npm ws package
# (into build/ws-client, not a dependency of the binding) and Python's websockets.
if [ ! -f "$(dirname "$0")/../build/ws-client/node_modules/ws/package.json" ]; then
    npm install --prefix "$(dirname "$0")/../build/ws-client" --no-audit --no-fund --loglevel=error ws@8 >/dev/null
fi
if ! python3 -c 'import websockets' 2>/dev/null; then
    command -v pip3 >/dev/null 2>&1 || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-pip
    pip3 install -q websockets 2>/dev/null || pip3 install -q --break-system-packages websockets
fi
