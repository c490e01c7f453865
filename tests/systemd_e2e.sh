#!/usr/bin/env bash
# The demos under systemd's own tools: examples/systemd/'s units pass `systemd-analyze
# verify`, and each demo (C, Lua, JS, and the Rust twin) run by `systemd-socket-activate`
# with an HTTP and a FastCGI socket (--fdname=http:fcgi) serves both from the passed fds
# (the first request is the one that made systemd-socket-activate start it), and reports
# READY=1 + STATUS=, WATCHDOG=1 pings (WATCHDOG_USEC) and STOPPING=1 to a notification
# socket held by a small Python receiver; an unnamed socket serves HTTP; malformed
# LISTEN_* variables stop the demo with exit 1. Ends with "N passed, M failed".
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
pass=0
fail=0
ok() { pass=$((pass + 1)); echo "ok   $1"; }
bad() { fail=$((fail + 1)); echo "FAIL $1"; }
TMP=$(mktemp -d)
cleanup() {
    for p in ${SPID:-} ${RPID:-}; do kill "$p" 2>/dev/null; done
    rm -rf "$TMP"
}
trap cleanup EXIT

if ! command -v systemd-socket-activate >/dev/null || ! command -v systemd-analyze >/dev/null; then
    echo "FAIL systemd-socket-activate / systemd-analyze missing (scripts/setup.sh installs systemd)"
    echo "0 passed, 1 failed"
    exit 1
fi

# ---- the units ----
# `verify` loads the units offline (no running systemd needed). Documentation= names man
# pages that are not installed here, hence --man=no; ExecStart points at the built demo.
mkdir -p "$TMP/units"
cp examples/systemd/*.socket examples/systemd/*.service "$TMP/units/"
sed -i "s|/usr/local/bin/myriad-hello|$ROOT/build/hello|" "$TMP/units/myriad-hello.service"
make -s PROFILE=debug hello >/dev/null 2>&1 || bad "make hello"
cargo build -q -p myriad --example hello || bad "build the Rust demo"
if out=$(cd "$TMP/units" && systemd-analyze verify --man=no ./*.socket ./*.service 2>&1) && [ -z "$out" ]; then
    ok "systemd-analyze verify examples/systemd/ (no warning)"
else
    bad "systemd-analyze verify: $out"
fi
svc=examples/systemd/myriad-hello.service
for want in '^Type=notify$' '^ExecReload=/bin/kill -HUP \$MAINPID$' '^WatchdogSec=' '--workers' \
    '^Requires=myriad-hello-http.socket myriad-hello-fcgi.socket$'; do
    if grep -qe "$want" "$svc"; then ok "service unit has $want"; else bad "service unit lacks $want"; fi
done
for s in http fcgi; do
    if grep -qx "FileDescriptorName=$s" "examples/systemd/myriad-hello-$s.socket"; then
        ok "socket unit names its fd $s"
    else
        bad "myriad-hello-$s.socket: FileDescriptorName=$s"
    fi
done

# ---- what the demos need ----
LUA_SO=build/lua/lua5.4/myriad.so
mkdir -p build/lua/lua5.4
gcc -std=c99 -Wall -Wextra -Werror -pedantic -O2 -fPIC -shared -Iinclude -I/usr/include/lua5.4 \
    bindings/lua/myriad.c -o "$LUA_SO" -Ltarget/debug -Wl,-rpath,"$ROOT/target/debug" -lmyriad ||
    bad "build the Lua module"
(cd bindings/node && MYRIAD_PROFILE=debug npm install --no-audit --no-fund --loglevel=error >/dev/null) ||
    bad "build the Node addon"

# A notification socket: every datagram becomes one line of $2 (newlines as '|'), and the
# sender's pid (SCM_CREDENTIALS, as systemd reads it for NotifyAccess=main) a line of $3.
cat >"$TMP/recv.py" <<'EOF'
import socket, struct, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
s.bind(sys.argv[1])
s.settimeout(120)
with open(sys.argv[2], "a", buffering=1) as f, open(sys.argv[3], "a", buffering=1) as who:
    while True:
        try:
            m, anc, _, _ = s.recvmsg(65536, socket.CMSG_SPACE(12))
        except socket.timeout:
            break
        pid = "?"
        for level, kind, data in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                pid = struct.unpack("iII", data[:12])[0]
        who.write(f"{pid}\n")
        f.write(m.decode(errors="replace").replace("\n", "|") + "\n")
EOF

free_ports() { # N -> N free TCP ports on 127.0.0.1
    python3 -c "
import socket
ss = [socket.socket() for _ in range($1)]
for s in ss: s.bind(('127.0.0.1', 0))
print(' '.join(str(s.getsockname()[1]) for s in ss))"
}

wait_for() { # seconds, command... (polls every 0.05 s)
    local n=$(($1 * 20)); shift
    for _ in $(seq 1 "$n"); do "$@" && return 0; sleep 0.05; done
    return 1
}

fcgi_get() { # ADDR URI -> body
    env -i REQUEST_METHOD=GET REQUEST_URI="$2" SCRIPT_NAME="${2%%\?*}" QUERY_STRING="${2#*\?}" \
        SERVER_PROTOCOL=HTTP/1.1 REMOTE_ADDR=127.0.0.1 REMOTE_PORT=1 \
        "$(command -v timeout)" 10 "$(command -v cgi-fcgi)" -bind -connect "$1" </dev/null |
        tr -d '\r' | sed '1,/^$/d'
}

ENV=(-E "LUA_CPATH=$ROOT/build/lua/lua5.4/?.so")
[ -n "${MYRIAD_BACKEND:-}" ] && ENV+=(-E "MYRIAD_BACKEND=$MYRIAD_BACKEND")

# Each demo with two named sockets, a notification socket and a watchdog.
activated() { # label, command...
    local label=$1; shift
    local p1 p2
    read -r p1 p2 < <(free_ports 2)
    rm -f "$TMP/notify.sock"
    : >"$TMP/notes"
    : >"$TMP/senders"
    python3 "$TMP/recv.py" "$TMP/notify.sock" "$TMP/notes" "$TMP/senders" &
    RPID=$!
    wait_for 10 test -S "$TMP/notify.sock" || bad "[$label] notification receiver"
    systemd-socket-activate -l "127.0.0.1:$p1" -l "127.0.0.1:$p2" --fdname=http:fcgi "${ENV[@]}" \
        -E "NOTIFY_SOCKET=$TMP/notify.sock" -E WATCHDOG_USEC=300000 "$@" >"$TMP/out" 2>"$TMP/err" &
    SPID=$!
    local pid=$SPID # systemd-socket-activate executes the demo: the same process
    wait_for 10 grep -qs "^Listening on 127.0.0.1:$p2" "$TMP/err"
    # systemd-socket-activate starts the demo on this first connection, which waits in the
    # backlog of the passed socket until the demo accepts it.
    local got
    got=$(curl -sS --max-time 20 "http://127.0.0.1:$p1/" 2>&1)
    [ "$got" = "Hello, World!" ] && ok "[$label] the first connection (it started the demo) is served" ||
        bad "[$label] first request: [$got] $(cat "$TMP/err")"
    if wait_for 20 grep -q 'READY=1' "$TMP/notes"; then ok "[$label] READY=1"; else bad "[$label] no READY=1: $(cat "$TMP/notes" "$TMP/err")"; fi
    if grep -q '^READY=1|STATUS=serving http fd:3, fcgi fd:4 (1 thread)$' "$TMP/notes"; then
        ok "[$label] STATUS= names the passed listeners"
    else
        bad "[$label] status: $(cat "$TMP/notes")"
    fi
    if grep -qx 'listening http fd:3' "$TMP/out" && grep -qx 'listening fcgi fd:4' "$TMP/out"; then
        ok "[$label] prints the inherited listeners (fd named fcgi serves FastCGI)"
    else
        bad "[$label] listening lines: $(cat "$TMP/out")"
    fi
    got=$(curl -sS --max-time 10 "http://127.0.0.1:$p1/work?ms=20" 2>&1)
    [ "$got" = "worked 20" ] && ok "[$label] HTTP on fd 3 (/work)" || bad "[$label] HTTP /work: [$got]"
    got=$(fcgi_get "127.0.0.1:$p2" "/delay?ms=10")
    [ "$got" = "delayed 10" ] && ok "[$label] FastCGI on fd 4" || bad "[$label] FastCGI: [$got]"
    got=$(curl -sS --max-time 5 "http://127.0.0.1:$p2/" 2>&1)
    [ "$got" != "Hello, World!" ] && ok "[$label] the fcgi fd does not speak HTTP" || bad "[$label] HTTP answered on the fcgi fd"
    # WATCHDOG_USEC=300000: a ping every half of it (150 ms) from the loop's timer: about
    # 10 in 1.5 s (bounds wide for a loaded machine; a spin or a stop would miss them).
    local n0 n1
    n0=$(grep -c '^WATCHDOG=1$' "$TMP/notes")
    sleep 1.5
    n1=$(grep -c '^WATCHDOG=1$' "$TMP/notes")
    if [ $((n1 - n0)) -ge 3 ] && [ $((n1 - n0)) -le 30 ]; then
        ok "[$label] WATCHDOG=1 every half WATCHDOG_USEC ($((n1 - n0)) in 1.5 s)"
    else
        bad "[$label] watchdog pings: $((n1 - n0)) in 1.5 s"
    fi
    kill -TERM "$SPID"
    local rc=0
    wait "$SPID" || rc=$?
    SPID=
    [ "$rc" = 0 ] && ok "[$label] SIGTERM: exit 0" || bad "[$label] exit $rc: $(cat "$TMP/err")"
    # The datagram was queued before the exit; the receiver may not have written it yet.
    if wait_for 5 grep -q '^STOPPING=1' "$TMP/notes"; then ok "[$label] STOPPING=1"; else bad "[$label] no STOPPING=1: $(cat "$TMP/notes")"; fi
    senders_are "$label" "$pid"
    kill "$RPID" 2>/dev/null
    wait "$RPID" 2>/dev/null
    RPID=
}

senders_are() { # label, pid: every notification came from that process (the main one)
    if [ "$(sort -u "$TMP/senders")" = "$2" ]; then
        ok "[$1] every notification from the main process ($2)"
    else
        bad "[$1] senders: $(sort "$TMP/senders" | uniq -c | tr '\n' ' ') (main $2)"
    fi
}

# One socket without a name (LISTEN_FDNAMES=unknown) and no NOTIFY_SOCKET: HTTP.
unnamed() { # label, command...
    local label=$1; shift
    local p
    p=$(free_ports 1)
    systemd-socket-activate -l "127.0.0.1:$p" "${ENV[@]}" "$@" >"$TMP/out" 2>"$TMP/err" &
    SPID=$!
    wait_for 10 grep -qs "^Listening on 127.0.0.1:$p" "$TMP/err"
    local got
    got=$(curl -sS --max-time 20 "http://127.0.0.1:$p/" 2>&1)
    [ "$got" = "Hello, World!" ] && ok "[$label] an unnamed fd serves HTTP" || bad "[$label] unnamed: [$got] $(cat "$TMP/err")"
    kill -TERM "$SPID"
    local rc=0
    wait "$SPID" || rc=$?
    SPID=
    [ "$rc" = 0 ] && ok "[$label] exit 0 without NOTIFY_SOCKET" || bad "[$label] exit $rc: $(cat "$TMP/err")"
}

# LISTEN_PID is the demo's own pid (exec keeps it), with a LISTEN_FDS that is no number.
malformed() { # label, command...
    local label=$1; shift
    local rc=0
    LUA_CPATH="$ROOT/build/lua/lua5.4/?.so" timeout 20 sh -c 'LISTEN_PID=$$ LISTEN_FDS=two exec "$@"' sh "$@" \
        >"$TMP/out" 2>"$TMP/err" || rc=$?
    if [ "$rc" = 1 ] && grep -q 'socket activation' "$TMP/err" && ! grep -q '^listening' "$TMP/out"; then
        ok "[$label] malformed LISTEN_FDS: exit 1 before serving"
    else
        bad "[$label] malformed LISTEN_FDS: exit $rc, $(cat "$TMP/out" "$TMP/err")"
    fi
}

# Under the supervisor (--workers 2): the supervisor takes the passed fds and is the only
# process that notifies: READY=1 once both workers serve, RELOADING=1 + MONOTONIC_USEC then
# READY=1 around a SIGHUP reload, WATCHDOG=1 from its loop, STOPPING=1; the workers serve.
supervised() { # label, command...
    local label="$1 --workers"; shift
    local p1 p2
    read -r p1 p2 < <(free_ports 2)
    rm -f "$TMP/notify.sock"
    : >"$TMP/notes"
    : >"$TMP/senders"
    python3 "$TMP/recv.py" "$TMP/notify.sock" "$TMP/notes" "$TMP/senders" &
    RPID=$!
    wait_for 10 test -S "$TMP/notify.sock" || bad "[$label] notification receiver"
    systemd-socket-activate -l "127.0.0.1:$p1" -l "127.0.0.1:$p2" --fdname=http:fcgi "${ENV[@]}" \
        -E "NOTIFY_SOCKET=$TMP/notify.sock" -E WATCHDOG_USEC=300000 "$@" --workers 2 >"$TMP/out" 2>"$TMP/err" &
    SPID=$!
    local pid=$SPID
    wait_for 10 grep -qs "^Listening on 127.0.0.1:$p2" "$TMP/err"
    local got
    got=$(curl -sS --max-time 20 "http://127.0.0.1:$p1/" 2>&1)
    [ "$got" = "Hello, World!" ] && ok "[$label] the first connection is served by a worker" ||
        bad "[$label] first request: [$got] $(cat "$TMP/err")"
    if wait_for 20 grep -q '^READY=1|STATUS=serving: 2 of 2 workers ready$' "$TMP/notes"; then
        ok "[$label] READY=1 once both workers serve"
    else
        bad "[$label] no READY=1: $(cat "$TMP/notes" "$TMP/err")"
    fi
    got=$(curl -sS --max-time 10 "http://127.0.0.1:$p1/pid" 2>&1)
    [ -n "$got" ] && [ "$got" != "$pid" ] && ok "[$label] HTTP fd served by a worker (pid $got)" ||
        bad "[$label] /pid over HTTP: [$got] (supervisor $pid)"
    got=$(fcgi_get "127.0.0.1:$p2" "/pid")
    [ -n "$got" ] && [ "$got" != "$pid" ] && ok "[$label] FastCGI fd served by a worker" ||
        bad "[$label] /pid over FastCGI: [$got]"
    local n0 n1
    n0=$(grep -c '^WATCHDOG=1$' "$TMP/notes")
    sleep 1.5
    n1=$(grep -c '^WATCHDOG=1$' "$TMP/notes")
    if [ $((n1 - n0)) -ge 3 ] && [ $((n1 - n0)) -le 30 ]; then
        ok "[$label] WATCHDOG=1 from the supervisor's loop ($((n1 - n0)) in 1.5 s)"
    else
        bad "[$label] watchdog pings: $((n1 - n0)) in 1.5 s"
    fi
    local ready0
    ready0=$(grep -c '^READY=1' "$TMP/notes")
    kill -HUP "$SPID"
    if wait_for 20 grep -q '^RELOADING=1|MONOTONIC_USEC=[0-9][0-9]*$' "$TMP/notes"; then
        ok "[$label] SIGHUP: RELOADING=1 with MONOTONIC_USEC"
    else
        bad "[$label] no RELOADING=1: $(cat "$TMP/notes")"
    fi
    ready_again() { [ "$(grep -c '^READY=1' "$TMP/notes")" -gt "$ready0" ]; }
    if wait_for 20 ready_again; then ok "[$label] READY=1 when the reload is done"; else bad "[$label] no READY=1 after the reload: $(tail -5 "$TMP/notes")"; fi
    got=$(curl -sS --max-time 10 "http://127.0.0.1:$p1/" 2>&1)
    [ "$got" = "Hello, World!" ] && ok "[$label] served after the reload" || bad "[$label] after reload: [$got]"
    # SIGUSR2: the supervisor executes itself again (same pid) and finds the passed fds in
    # LISTEN_FDS again; the new image says READY=1 once its workers serve.
    ready0=$(grep -c '^READY=1' "$TMP/notes")
    kill -USR2 "$SPID"
    if wait_for 30 ready_again && kill -0 "$pid" 2>/dev/null; then
        ok "[$label] SIGUSR2 re-exec: READY=1 again, same pid"
    else
        bad "[$label] re-exec: $(tail -5 "$TMP/notes") $(tail -5 "$TMP/err")"
    fi
    got=$(curl -sS --max-time 10 "http://127.0.0.1:$p1/" 2>&1)
    local fgot
    fgot=$(fcgi_get "127.0.0.1:$p2" "/delay?ms=1")
    [ "$got" = "Hello, World!" ] && [ "$fgot" = "delayed 1" ] && ok "[$label] both fds served after the re-exec" ||
        bad "[$label] after re-exec: [$got] [$fgot]"
    kill -TERM "$SPID"
    local rc=0
    wait "$SPID" || rc=$?
    SPID=
    [ "$rc" = 0 ] && ok "[$label] SIGTERM: exit 0" || bad "[$label] exit $rc: $(tail -5 "$TMP/err")"
    # The datagram was queued before the exit; the receiver may not have written it yet.
    if wait_for 5 grep -q '^STOPPING=1' "$TMP/notes"; then ok "[$label] STOPPING=1"; else bad "[$label] no STOPPING=1: $(cat "$TMP/notes")"; fi
    senders_are "$label" "$pid"
    kill "$RPID" 2>/dev/null
    wait "$RPID" 2>/dev/null
    RPID=
}

# The service unit's own command line (ExecStart, with the socket units' fd names and its
# WatchdogSec= as systemd would pass them) really serves.
unit_command() {
    local label=unit exec wd p1 p2
    exec=$(sed -n 's/^ExecStart=//p' "$TMP/units/myriad-hello.service")
    wd=$(sed -n 's/^WatchdogSec=\([0-9]*\)$/\1/p' "$TMP/units/myriad-hello.service")
    read -r p1 p2 < <(free_ports 2)
    rm -f "$TMP/notify.sock"
    : >"$TMP/notes"
    : >"$TMP/senders"
    python3 "$TMP/recv.py" "$TMP/notify.sock" "$TMP/notes" "$TMP/senders" &
    RPID=$!
    wait_for 10 test -S "$TMP/notify.sock" || bad "[$label] notification receiver"
    # shellcheck disable=SC2086 # ExecStart's words
    systemd-socket-activate -l "127.0.0.1:$p1" -l "127.0.0.1:$p2" \
        --fdname="$(sed -n 's/^FileDescriptorName=//p' examples/systemd/myriad-hello-http.socket):$(sed -n 's/^FileDescriptorName=//p' examples/systemd/myriad-hello-fcgi.socket)" \
        "${ENV[@]}" -E "NOTIFY_SOCKET=$TMP/notify.sock" -E "WATCHDOG_USEC=$((wd * 1000000))" $exec >"$TMP/out" 2>"$TMP/err" &
    SPID=$!
    wait_for 10 grep -qs "^Listening on 127.0.0.1:$p2" "$TMP/err"
    local got workers
    got=$(curl -sS --max-time 20 "http://127.0.0.1:$p1/" 2>&1)
    workers=$(echo "$exec" | sed -n 's/.*--workers \([0-9]*\).*/\1/p')
    if [ "$got" = "Hello, World!" ] && wait_for 20 grep -q "^READY=1|STATUS=serving: $workers of $workers workers ready$" "$TMP/notes"; then
        ok "[$label] ExecStart ($exec) serves the socket units' fds, READY=1 with $workers workers"
    else
        bad "[$label] ExecStart: [$got] $(cat "$TMP/notes") $(tail -3 "$TMP/err")"
    fi
    got=$(fcgi_get "127.0.0.1:$p2" "/delay?ms=1")
    [ "$got" = "delayed 1" ] && ok "[$label] the fcgi socket unit's fd serves FastCGI" || bad "[$label] FastCGI: [$got]"
    kill -TERM "$SPID"
    local rc=0
    wait "$SPID" || rc=$?
    SPID=
    [ "$rc" = 0 ] && wait_for 5 grep -q '^STOPPING=1' "$TMP/notes" && ok "[$label] SIGTERM: STOPPING=1, exit 0" ||
        bad "[$label] stop: exit $rc, $(tail -3 "$TMP/notes")"
    kill "$RPID" 2>/dev/null
    wait "$RPID" 2>/dev/null
    RPID=
}
unit_command

for demo in "C:build/hello" "Lua:lua5.4 examples/hello.lua" "JS:node examples/hello.js" \
    "Rust:target/debug/examples/hello"; do
    label=${demo%%:*}
    read -r -a cmd <<<"${demo#*:}"
    activated "$label" "${cmd[@]}"
    unnamed "$label" "${cmd[@]}"
    malformed "$label" "${cmd[@]}"
    # The supervisor's flags, in each demo that has them.
    src=$(printf '%s\n' "${cmd[@]}" | grep -E '^(examples/|build/|target/)' | head -1)
    case $label in C) src=examples/hello.c ;; Rust) src=examples/hello.rs ;; esac
    if grep -q -- '--workers' "$src"; then supervised "$label" "${cmd[@]}"; fi
done

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
