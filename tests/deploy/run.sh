#!/usr/bin/env bash
# The deploy configurations (examples/deploy/) with the real programs, and scale-out with
# failover: three instances of the C demo (build/hello) on 127.0.0.2, 127.0.0.3 and
# 127.0.0.4 behind nginx (HTTP and FastCGI upstreams) and HAProxy (HTTP and FastCGI),
# each config rendered with this run's addresses (envsubst) and run as is. Under load
# (tests/deploy/load.py: keep-alive, no client retries): every backend gets a share; one
# is killed with SIGKILL and started again; all three are restarted in turn (SIGTERM drain,
# start); one is drained and left out for a while, then started again — with zero failed
# client requests. The same with each backend a supervisor of 2 workers (the C demo's
# --workers 2): one killed outright (supervisor and workers), each reloaded with SIGHUP in
# turn, one drained with SIGTERM and started again. Then the unix-socket variants, and
# logrotate.conf with SIGUSR1.
# Prints the figures (requests, failures, per-backend share: the backends' access log
# lines of the load client). Ends with "N passed, M failed".
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
pass=0
fail=0
ok() { pass=$((pass + 1)); echo "ok   $1"; }
bad() { fail=$((fail + 1)); echo "FAIL $1"; }

if [ -z "${HELLO:-}" ]; then
    make -s PROFILE=debug hello >/dev/null || { echo "0 passed, 1 failed"; exit 1; }
    HELLO=$ROOT/build/hello
fi
# What start_backend runs: the C demo, plain or (supervised) with --workers 2.
BIN=$HELLO
EXTRA=()
TMP=$(mktemp -d)
declare -A BPID BADDR
FEPID=
LOADPID=
cleanup() {
    [ -n "$LOADPID" ] && kill "$LOADPID" 2>/dev/null
    [ -n "$FEPID" ] && kill "$FEPID" 2>/dev/null
    for i in "${!BPID[@]}"; do kill -9 "${BPID[$i]}" 2>/dev/null; done
    wait 2>/dev/null
    rm -rf "$TMP"
}
trap cleanup EXIT
[ -n "${KEEP:-}" ] && trap 'echo "kept $TMP"' EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start_backend I PROTO ADDR: hello on ADDR (port 0 the first time; the same address on
# restarts), its access log in $TMP/bI.log (appended to across restarts).
start_backend() {
    local i=$1 proto=$2 addr=${BADDR[$1]:-$3}
    : >"$TMP/b$i.out"
    "$BIN" "${EXTRA[@]}" "--$proto" "$addr" --access-log "$TMP/b$i.log" >"$TMP/b$i.out" 2>>"$TMP/b$i.err" &
    BPID[$i]=$!
    for _ in $(seq 1 200); do grep -q '^listening' "$TMP/b$i.out" && break; sleep 0.02; done
    BADDR[$i]=$(awk '/^listening/{print $3; exit}' "$TMP/b$i.out")
    [ -n "${BADDR[$i]}" ]
}
# drain_backend I: SIGTERM, waits for the exit (in-flight requests finish first).
drain_backend() { kill -TERM "${BPID[$1]}"; wait "${BPID[$1]}" 2>/dev/null; unset "BPID[$1]"; }
# kill_backend I: SIGKILL to the whole instance (a supervisor and its workers).
kill_backend() {
    local kids
    kids=$(pgrep -P "${BPID[$1]}" | tr '\n' ' ')
    # shellcheck disable=SC2086
    kill -9 "${BPID[$1]}" $kids 2>/dev/null
    wait "${BPID[$1]}" 2>/dev/null
    unset "BPID[$1]"
}
stop_backends() { for i in "${!BPID[@]}"; do drain_backend "$i"; done; }

# render TEMPLATE OUT RUN LISTEN B1 B2 B3
render() {
    RUN=$3 LISTEN=$4 BACKEND1=$5 BACKEND2=$6 BACKEND3=$7 \
        envsubst '${RUN} ${LISTEN} ${BACKEND1} ${BACKEND2} ${BACKEND3}' <"$1" >"$2"
}

# start_front KIND CONF: nginx or haproxy in the foreground; waits until it answers.
start_front() {
    local kind=$1 conf=$2 run
    run=$(dirname "$conf")
    if [ "$kind" = nginx ]; then
        # As root, nginx's workers would run as nobody; the test's files are root's.
        nginx -p "$run" -c "$conf" -g 'user root;' 2>>"$run/front.err" &
        FESTOP=QUIT
    else
        haproxy -db -f "$conf" >>"$run/front.err" 2>&1 &
        FESTOP=USR1
    fi
    FEPID=$!
    for _ in $(seq 1 100); do
        [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://$FE/")" = 200 ] && return 0
        sleep 0.05
    done
    return 1
}
# stop_front: nginx's graceful stop is SIGQUIT, HAProxy's soft stop SIGUSR1.
stop_front() {
    kill "-$FESTOP" "$FEPID" 2>/dev/null
    for _ in $(seq 1 50); do kill -0 "$FEPID" 2>/dev/null || break; sleep 0.05; done
    kill -TERM "$FEPID" 2>/dev/null
    wait "$FEPID" 2>/dev/null
    FEPID=
}

# The load client's requests each backend logged (its User-Agent; health checks are not).
lines_of() { grep -c '"myriad-scaleout"$' "$TMP/b$1.log" 2>/dev/null || echo 0; }

# scenario NAME KIND TEMPLATE PROTO [sup]: the backends' addresses as the front end's
# config writes them; plain processes, or (sup) supervisors of 2 workers each.
scenario() {
    local name=$1 kind=$2 tmpl=$3 proto=$4 mode=${5:-plain} run=$TMP/$1
    [[ -n "${ONLY:-}" && $name != $ONLY ]] && return
    mkdir -p "$run"
    BADDR=()
    rm -f "$TMP"/b?.log "$TMP"/b?.err
    local i
    for i in 1 2 3; do
        start_backend "$i" "$proto" "127.0.0.$((i + 1)):0" || { bad "$name: backend $i did not start"; return; }
    done
    FE=127.0.0.1:$(free_port)
    render "$tmpl" "$run/front.conf" "$run" "$FE" "${BADDR[1]}" "${BADDR[2]}" "${BADDR[3]}"
    if ! start_front "$kind" "$run/front.conf"; then
        bad "$name: $kind did not start: $(tail -3 "$run/front.err")"
        stop_backends
        return
    fi
    rm -f "$TMP/stop"
    python3 tests/deploy/load.py --addr "$FE" --conns 8 --duration 30 --stop-file "$TMP/stop" >"$run/load.json" &
    LOADPID=$!
    if [ "$mode" = sup ]; then
        sup_steps "$name" "$proto"
    else
        plain_steps "$name" "$proto"
    fi
    touch "$TMP/stop"
    wait "$LOADPID"
    LOADPID=
    stop_front
    stop_backends
    report "$name" "$run" "$mode"
}

# Under load, plain processes: kill -9 + start, a rolling restart, a drain.
plain_steps() {
    local name=$1 proto=$2 i
    sleep 0.6
    # A backend killed outright, then started again. Each step waits for the front end
    # to take the backend back (nginx: fail_timeout=1s; HAProxy: a health check every
    # 500 ms), as an operator's rolling restart waits for the backend to be healthy.
    kill_backend 2
    sleep 0.3
    start_backend 2 "$proto" || bad "$name: backend 2 did not restart"
    sleep 1.1
    # A rolling restart: each drained with SIGTERM and started again, in turn.
    for i in 1 2 3; do
        drain_backend "$i"
        start_backend "$i" "$proto" || bad "$name: backend $i did not restart"
        sleep 1.1
    done
    # One drained and left out for a while (the other two serve), then back.
    drain_backend 3
    sleep 0.3
    start_backend 3 "$proto" || bad "$name: backend 3 did not restart"
    sleep 1.1
}

# Under load, supervisors: one killed outright (all its processes) and started again, a
# rolling reload (SIGHUP to each supervisor in turn: it replaces its workers, the new
# ones ready first), one drained with SIGTERM and started again.
sup_steps() {
    local name=$1 proto=$2 i
    sleep 0.6
    kill_backend 2
    sleep 0.3
    start_backend 2 "$proto" || bad "$name: backend 2 did not restart"
    sleep 1.1
    for i in 1 2 3; do
        kill -HUP "${BPID[$i]}"
        sleep 1.1
    done
    drain_backend 3
    sleep 0.3
    start_backend 3 "$proto" || bad "$name: backend 3 did not restart"
    sleep 1.1
}

# report NAME RUN MODE: the figures, and the check.
report() {
    local name=$1 run=$2 mode=$3 figures
    figures=$(python3 - "$run/load.json" "$(lines_of 1)" "$(lines_of 2)" "$(lines_of 3)" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
n = [int(x) for x in sys.argv[2:5]]
tot = sum(n) or 1
share = " ".join("b%d %.0f%%" % (i + 1, 100.0 * v / tot) for i, v in enumerate(n))
ok = s["failures"] == 0 and s["requests"] >= 100 and min(n) >= 0.1 * tot
print("%s %d requests, %d failures, share %s%s" % (
    "OK" if ok else "BAD", s["requests"], s["failures"], share,
    "" if not s["errors"] else " errors: " + "; ".join(s["errors"][:3])))
PY
)
    echo "  $name: ${figures#* }"
    if [ "${figures%% *}" = OK ]; then
        if [ "$mode" = sup ]; then
            ok "$name: supervisors of 2 workers: kill -9, SIGHUP each in turn and a drain under load, zero failures, load on all three"
        else
            ok "$name: kill -9, rolling restart and a drain under load, zero failures, load on all three"
        fi
    else
        bad "$name: ${figures#* } $(tail -2 "$run/front.err")"
    fi
}

# unix_variant NAME KIND TEMPLATE PROTO PREFIX: the backends on unix sockets (PREFIX is
# how the config names one: "unix:" for nginx, "" for HAProxy); 90 requests spread.
unix_variant() {
    local name=$1 kind=$2 tmpl=$3 proto=$4 prefix=$5 run=$TMP/$1
    [[ -n "${ONLY:-}" && $name != $ONLY ]] && return
    mkdir -p "$run"
    BADDR=()
    rm -f "$TMP"/b?.log
    local i
    for i in 1 2 3; do
        start_backend "$i" "$proto" "unix:$run/b$i.sock" || { bad "$name: backend $i did not start"; return; }
    done
    FE=127.0.0.1:$(free_port)
    render "$tmpl" "$run/front.conf" "$run" "$FE" "$prefix$run/b1.sock" "$prefix$run/b2.sock" "$prefix$run/b3.sock"
    if start_front "$kind" "$run/front.conf"; then
        python3 tests/deploy/load.py --addr "$FE" --conns 3 --requests 90 --duration 20 >"$run/load.json"
        stop_front
    else
        bad "$name: $kind did not start: $(tail -3 "$run/front.err")"
    fi
    stop_backends
    local r
    r=$(python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); print(s["ok"], s["failures"])' "$run/load.json" 2>/dev/null)
    if [ "$r" = "90 0" ] && [ "$(lines_of 1)" -ge 10 ] && [ "$(lines_of 2)" -ge 10 ] && [ "$(lines_of 3)" -ge 10 ]; then
        ok "$name: 90 requests over unix sockets, all answered, on all three ($(lines_of 1)/$(lines_of 2)/$(lines_of 3))"
    else
        bad "$name: [$r] $(lines_of 1)/$(lines_of 2)/$(lines_of 3) $(tail -2 "$run/front.err" 2>/dev/null)"
    fi
}

D=examples/deploy
for f in nginx-http.conf nginx-fastcgi.conf; do
    mkdir -p "$TMP/check"
    render "$D/$f" "$TMP/check/$f" "$TMP/check" 127.0.0.1:1 127.0.0.2:1 127.0.0.3:1 unix:/x.sock
    if nginx -t -q -p "$TMP/check" -c "$TMP/check/$f" 2>"$TMP/check/err"; then ok "$f: nginx -t"; else bad "$f: $(cat "$TMP/check/err")"; fi
done
for f in haproxy-http.cfg haproxy-fastcgi.cfg; do
    render "$D/$f" "$TMP/check/$f" "$TMP/check" 127.0.0.1:1 127.0.0.2:1 127.0.0.3:1 /x.sock
    if haproxy -c -q -f "$TMP/check/$f" 2>"$TMP/check/err"; then ok "$f: haproxy -c"; else bad "$f: $(cat "$TMP/check/err")"; fi
done

echo "scale-out (plain processes; figures: the client's requests and failures, each backend's share of them):"
scenario nginx-http nginx "$D/nginx-http.conf" http
scenario nginx-fastcgi nginx "$D/nginx-fastcgi.conf" fcgi
scenario haproxy-http haproxy "$D/haproxy-http.cfg" http
scenario haproxy-fastcgi haproxy "$D/haproxy-fastcgi.cfg" fcgi

echo "scale-out, each backend a supervisor of 2 workers:"
EXTRA=(--workers 2)
scenario nginx-http-sup nginx "$D/nginx-http.conf" http sup
scenario haproxy-fastcgi-sup haproxy "$D/haproxy-fastcgi.cfg" fcgi sup
EXTRA=()

unix_variant nginx-http-unix nginx "$D/nginx-http.conf" http unix:
unix_variant nginx-fastcgi-unix nginx "$D/nginx-fastcgi.conf" fcgi unix:
unix_variant haproxy-http-unix haproxy "$D/haproxy-http.cfg" http ""
unix_variant haproxy-fastcgi-unix haproxy "$D/haproxy-fastcgi.cfg" fcgi ""

# logrotate.conf: logrotate renames the log and sends SIGUSR1; the server writes on in a
# new file.
LR=$TMP/logrotate
mkdir -p "$LR"
BADDR=()
"$HELLO" --http 127.0.0.1:0 --access-log "$LR/access.log" >"$LR/out" 2>"$LR/err" &
BPID[9]=$!
echo "${BPID[9]}" >"$LR/hello.pid"
for _ in $(seq 1 200); do grep -q '^listening' "$LR/out" && break; sleep 0.02; done
A=$(awk '/^listening/{print $3}' "$LR/out")
ACCESS_LOG=$LR/access.log PIDFILE=$LR/hello.pid envsubst '${ACCESS_LOG} ${PIDFILE}' <"$D/logrotate.conf" >"$LR/logrotate.conf"
curl -s -o /dev/null "http://$A/before"
for _ in $(seq 1 50); do [ -s "$LR/access.log" ] && break; sleep 0.1; done
logrotate -f -s "$LR/state" "$LR/logrotate.conf" 2>"$LR/lr.err"
sleep 0.2
curl -s -o /dev/null "http://$A/after"
for _ in $(seq 1 50); do [ -s "$LR/access.log" ] && break; sleep 0.1; done
if grep -q '"GET /before ' "$LR/access.log.1" 2>/dev/null && grep -q '"GET /after ' "$LR/access.log" &&
    ! grep -q '/after' "$LR/access.log.1"; then
    ok "logrotate.conf: rotated, SIGUSR1, new lines in a new file"
else
    bad "logrotate: $(cat "$LR/lr.err") [$(cat "$LR/access.log" 2>&1)] [$(cat "$LR/access.log.1" 2>&1)]"
fi
drain_backend 9

echo "deploy and scale-out: ${SECONDS}s"
echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
