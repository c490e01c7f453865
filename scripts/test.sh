#!/usr/bin/env bash
# Runs every test (setup included): formatting, lints, unit and integration tests.
# Ends with one line "N passed, M failed" summing every suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
log=$(mktemp)
trap 'rm -f "$log"' EXIT

cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
# The kqueue backend and the other non-Linux paths (FreeBSD, macOS): type-checked and linted
# for those targets, since no such machine runs the suite.
# TLS (ring's C and assembly) builds for FreeBSD with the host's gcc, not for macOS (no
# Apple toolchain here): the macOS check is of the core without the "tls" feature.
cargo clippy --target x86_64-unknown-freebsd --workspace --all-targets -- -D warnings
cargo clippy --target x86_64-apple-darwin -p myriad --no-default-features --all-targets -- -D warnings
# The fuzz crate (its own workspace: fuzz/) and the codec entry points it uses.
cargo fmt --manifest-path fuzz/Cargo.toml --check
cargo clippy -p myriad --features fuzzing --all-targets -- -D warnings
cargo clippy --manifest-path fuzz/Cargo.toml --all-targets -- -D warnings
status=0
cargo test --workspace 2>&1 | tee "$log" || status=$?
# The core suite again on the io_uring backend (the default is epoll; MYRIAD_BACKEND picks).
MYRIAD_BACKEND=io_uring cargo test -p myriad 2>&1 | tee -a "$log" || status=$?
# And on io_uring without receiving or accepting through the ring (readiness polls, recv and
# accept4 calls: the paths kernels before 6.12, and before 5.19, take).
MYRIAD_URING_RECV=0 MYRIAD_URING_ACCEPT=0 MYRIAD_BACKEND=io_uring cargo test -p myriad 2>&1 | tee -a "$log" || status=$?
bash tests/c/run.sh 2>&1 | tee -a "$log" || status=$?
bash tests/systemd_e2e.sh 2>&1 | tee -a "$log" || status=$?
# TLS with real peers: nginx proxy_pass https://, the proxy example to an HTTPS upstream,
# the echo example over TLS, Node's https client (both backends).
bash tests/tls_e2e.sh 2>&1 | tee -a "$log" || status=$?
bash bindings/lua/run-tests.sh 2>&1 | tee -a "$log" || status=$?
# LuaRocks for Lua 5.4 and LuaJIT into temporary trees, pack, install elsewhere.
bash bindings/lua/rocks.sh 2>&1 | tee -a "$log" || status=$?
bash bindings/node/run-tests.sh 2>&1 | tee -a "$log" || status=$?
# Listeners as operators see them: Unix socket mode/group behind nginx (workers as nobody),
# error messages naming the address, for each demo.
bash tests/listen_e2e.sh 2>&1 | tee -a "$log" || status=$?
# WebSocket: every demo's GET /ws over HTTP and HTTPS with raw frames, the npm ws client
# and Python's websockets, on epoll and io_uring.
bash tests/ws_e2e.sh 2>&1 | tee -a "$log" || status=$?
# The bindings on io_uring: Node drives the loop from libuv through the ring's fd.
MYRIAD_BACKEND=io_uring bash bindings/lua/run-tests.sh 2>&1 | tee -a "$log" || status=$?
MYRIAD_BACKEND=io_uring bash bindings/node/run-tests.sh 2>&1 | tee -a "$log" || status=$?
# The reduced soak (bench/soak/soak.py --reduced): slowloris, slow readers, EMFILE, resets,
# mutated requests over sockets and a subset under valgrind, against the C demo.
bash tests/soak.sh 2>&1 | tee -a "$log" || status=$?
# The fuzz crate's own tests: the connection harnesses on every committed seed, and the
# differential test of the head parser against Python's h11.
cargo test --manifest-path fuzz/Cargo.toml 2>&1 | tee -a "$log" || status=$?
# Fuzzing smoke: every target for a few seconds from its committed seeds (each target
# without a finding counts as passed); the long runs are on demand (scripts/fuzz.sh N).
bash scripts/fuzz.sh "${MYRIAD_FUZZ_SECONDS:-12}" 2>&1 | tee -a "$log" || status=$?
# The deploy configurations with real nginx and HAProxy, and scale-out with failover.
bash tests/deploy/run.sh 2>&1 | tee -a "$log" || status=$?
# The supervisor flags of the demo contract against each demo (worker processes, kill -9,
# --max-requests, SIGHUP, SIGUSR2, --watchdog, SIGTERM drain, --user; FastCGI behind nginx).
# (The C demo runs from a copy that is replaced on disk before its SIGUSR2 re-exec.)
sup_copy=$(mktemp -d)
cp build/hello "$sup_copy/hello"
USR2_REPLACE="$sup_copy/hello" SUP_NGINX=1 bash tests/supervisor_e2e.sh "$sup_copy/hello" 2>&1 | tee -a "$log" || status=$?
rm -rf "$sup_copy"
LUA_CPATH="$PWD/build/lua/lua5.4/?.so" bash tests/supervisor_e2e.sh lua5.4 examples/hello.lua 2>&1 | tee -a "$log" || status=$?
# Node workers are executed (exec mode): a replacement serves once Node has started.
READY_MS=4000 bash tests/supervisor_e2e.sh node examples/hello.js 2>&1 | tee -a "$log" || status=$?

passed=$(grep -hoE '(ok|FAILED)\. [0-9]+ passed' "$log" | awk '{s+=$2} END {print s+0}')
failed=$(grep -hoE '[0-9]+ passed; [0-9]+ failed' "$log" | awk '{s+=$3} END {print s+0}')
# Suites with their own harness print "N passed, M failed".
p2=$(grep -hoE '^[0-9]+ passed, [0-9]+ failed$' "$log" | awk '{p+=$1; f+=$3} END {print p+0, f+0}')
passed=$((passed + ${p2% *}))
failed=$((failed + ${p2#* }))
echo
echo "$passed passed, $failed failed"
if [ "$status" -ne 0 ] || [ "$failed" -ne 0 ] || [ "$passed" -eq 0 ]; then
    exit 1
fi
