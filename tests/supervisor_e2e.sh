#!/usr/bin/env bash
# The supervisor flags of the demo contract, end to end, against any demo:
#   tests/supervisor_e2e.sh COMMAND...   (the demo; listener and supervisor flags are added)
# --workers N (listening lines once; /pid from every worker), kill -9 of a worker under load
# (replaced within 1 s, only in-flight requests may fail, nobody refused), --max-requests
# recycling under load, SIGHUP and SIGUSR2 under load (zero failures, same supervisor pid and
# address), --watchdog with /hang, SIGTERM with slow requests in flight (all answered, exit 0,
# no process left), an unknown --user (exit 2), --user nobody as root, --https (workers load
# the certificates, SIGHUP serves replaced files, a bad pair exits 2); with SUP_NGINX=1 the
# crash test over FastCGI behind nginx (zero 502s with fastcgi_next_upstream).
# Load: tests/load.py (keep-alive; one retry of a request whose idle connection was closed
# before any response byte, as browsers do). Ends with "N passed, M failed".
set -uo pipefail
DEMO=("$@")
cd "$(dirname "$0")/.."
pass=0
fail=0
ok() { pass=$((pass + 1)); echo "ok   $1"; }
bad() { fail=$((fail + 1)); echo "FAIL $1"; }
T=$(mktemp -d)
SPID=
cleanup() {
    [ -n "$SPID" ] && kill -KILL "$SPID" 2>/dev/null
    [ -f "$T/ng/nginx.pid" ] && kill "$(cat "$T/ng/nginx.pid")" 2>/dev/null
    kill -KILL $(jobs -p) 2>/dev/null
    rm -rf "$T"
}
trap cleanup EXIT
C="curl -sS --max-time 10"
LOAD="timeout 60 python3 tests/load.py"

# start NAME FLAGS...: the demo with a status listener; sets SPID, H (http), F (fcgi), S.
start() {
    local name=$1; shift
    "${DEMO[@]}" "$@" --status 127.0.0.1:0 >"$T/$name.out" 2>"$T/$name.err" &
    SPID=$!
    local want; want=$(( $(grep -o -- '--http\|--fcgi' <<<"$*" | wc -l) + 1 ))
    for _ in $(seq 1 300); do [ "$(grep -c '^listening' "$T/$name.out")" -ge "$want" ] && break; sleep 0.05; done
    H=$(awk '/^listening http/{print $3}' "$T/$name.out")
    F=$(awk '/^listening fcgi/{print $3}' "$T/$name.out")
    S=$(awk '/^listening status/{print $3}' "$T/$name.out")
    # Every worker ready.
    for _ in $(seq 1 200); do
        [ -n "$S" ] && [ "$(workers | grep -cE ' (idle|busy)$')" -ge "${WANT_WORKERS:-1}" ] && break
        sleep 0.05
    done
}
# workers: "PID STATE" per worker, from the status JSON.
workers() {
    $C "http://$S/status" 2>/dev/null | python3 -c '
import json, sys
for w in json.load(sys.stdin)["workers"]:
    print(w["pid"], w["state"])' 2>/dev/null
}
field() { python3 -c "import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])" "$1" "$2"; }
stop() { # stop NAME -> exit code of the supervisor after SIGTERM
    kill -TERM "$SPID"
    wait "$SPID"; local rc=$?
    SPID=
    return $rc
}
distinct_bodies() { python3 -c "import json,sys; print(len(json.loads(sys.argv[1])['bodies']))" "$1"; }

# ---- --workers 3: the addresses once, every worker serving ----
WANT_WORKERS=3 start spread --workers 3 --http 127.0.0.1:0 --fcgi 127.0.0.1:0
if [ "$(grep -c '^listening http' "$T/spread.out")" = 1 ] && [ "$(grep -c '^listening fcgi' "$T/spread.out")" = 1 ]; then
    ok "the supervisor prints each listening line once"
else bad "listening lines: $(cat "$T/spread.out")"; fi
pid=$($C "http://$H/pid")
listed=0
for _ in 1 2 3 4 5; do workers | grep -q "^$pid " && { listed=1; break; }; sleep 0.2; done
if [[ $pid =~ ^[0-9]+$ ]] && [ "$pid" != "$SPID" ] && [ "$listed" = 1 ]; then ok "GET /pid: a worker's pid"; else bad "GET /pid gave [$pid] (supervisor $SPID)"; fi
r=$($LOAD --addr "$H" --path /pid --conns 8 --requests 240 --new-conn-every 1)
if [ "$(field "$r" failed)" = 0 ] && [ "$(distinct_bodies "$r")" = 3 ]; then ok "8 clients: all 3 workers take connections"; else bad "spread: $r"; fi
# kill -9 a worker under load
$LOAD --addr "$H" --path /pid --conns 8 --duration 2.5 >"$T/kill.json" &
LP=$!
sleep 0.7
victim=$(workers | head -1 | cut -d' ' -f1)
# Kill it and watch the status from one process (ms to a new worker, ms to it serving).
read -r started replaced < <(python3 - "$S" "$victim" <<'PY'
import json, os, sys, time, urllib.request
s, v = sys.argv[1], int(sys.argv[2])
os.kill(v, 9)
t0 = time.time()
started = None
while time.time() - t0 < 15:
    ws = json.load(urllib.request.urlopen("http://%s/status" % s, timeout=5))["workers"]
    others = [w for w in ws if w["pid"] != v]
    if started is None and len(others) == 3:
        started = int((time.time() - t0) * 1000)
    if started is not None and len(others) == len(ws) and sum(w["state"] in ("idle", "busy") for w in others) == 3:
        print(started, int((time.time() - t0) * 1000))
        break
    time.sleep(0.005)
PY
)
wait "$LP"
r=$(cat "$T/kill.json")
# The replacement starts within 1 s; it serves once the program has started (READY_MS:
# 1000 by default; a Node worker needs Node's own start-up time on top).
if [ -n "$started" ] && [ "$started" -lt 1000 ] && [ -n "$replaced" ] && [ "$replaced" -lt "${READY_MS:-1000}" ]; then
    ok "kill -9: replacement started in ${started} ms, serving in ${replaced} ms"
else bad "kill -9: replacement started [${started}] serving [${replaced}] ms"; fi
if [ "$(field "$r" refused)" = 0 ] && [ "$(field "$r" failed)" -le 8 ] && [ "$(field "$r" ok)" -gt 100 ]; then ok "kill -9 under load: only in-flight requests failed ($(field "$r" failed)), none refused"; else bad "kill -9 under load: $r"; fi
if grep -q "worker $victim .*killed by signal 9" "$T/spread.err"; then ok "the crash is logged with its signal"; else bad "no crash log: $(cat "$T/spread.err")"; fi
# SIGHUP under load
before=$(workers | cut -d' ' -f1 | sort)
$LOAD --addr "$H" --path /pid --conns 8 --duration 2.5 >"$T/hup.json" &
LP=$!
sleep 0.7
kill -HUP "$SPID"
wait "$LP"
sleep 0.3
after=$(workers | cut -d' ' -f1 | sort)
r=$(cat "$T/hup.json")
if [ "$(field "$r" failed)" = 0 ] && [ -z "$(comm -12 <(echo "$before") <(echo "$after"))" ] && kill -0 "$SPID"; then ok "SIGHUP under load: every worker replaced, zero failures, same supervisor"; else bad "SIGHUP: $r before [$before] after [$after]"; fi
stop spread; rc=$?
if [ "$rc" = 0 ]; then ok "SIGTERM: exit 0"; else bad "SIGTERM exit $rc"; fi

# ---- HTTPS under the supervisor: each worker loads the certificates; a SIGHUP (every
# worker replaced) serves the files as they are now ----
(
    cd "$T" || exit 1
    for n in one two; do
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$n.key" -out "$n.pem" \
            -subj "/CN=$n" -days 2 -addext "subjectAltName=IP:127.0.0.1" >/dev/null 2>&1
    done
    cp one.pem cur.pem && cp one.key cur.key
)
WANT_WORKERS=2 start tls --workers 2 --https 127.0.0.1:0 --cert "$T/cur.pem" --key "$T/cur.key"
HS=$(awk '/^listening https/{print $3}' "$T/tls.out")
subject() { timeout 10 openssl s_client -connect "$HS" -CAfile "$1" -verify_return_error </dev/null 2>/dev/null | openssl x509 -noout -subject 2>/dev/null; }
pid=$($C --cacert "$T/one.pem" "https://$HS/pid")
if [ -n "$HS" ] && [[ $pid =~ ^[0-9]+$ ]] && [ "$pid" != "$SPID" ] && [[ $(subject "$T/one.pem") == *CN*one* ]]; then
    ok "--https under --workers: printed once, served by a worker ($pid) with the certificate"
else bad "--https under --workers: [$HS] pid [$pid] $(tail -3 "$T/tls.err")"; fi
before=$(workers | cut -d' ' -f1 | sort)
cp "$T/two.pem" "$T/cur.pem"; cp "$T/two.key" "$T/cur.key"
kill -HUP "$SPID"
for _ in $(seq 1 100); do [ -z "$(comm -12 <(echo "$before") <(workers | cut -d' ' -f1 | sort))" ] && [ "$(workers | grep -cE ' (idle|busy)$')" = 2 ] && break; sleep 0.05; done
if [[ $(subject "$T/two.pem") == *CN*two* ]] && [ "$($C --cacert "$T/two.pem" "https://$HS/")" = "Hello, World!" ]; then
    ok "SIGHUP: the new workers serve the replaced certificate"
else bad "SIGHUP with new certificates: [$(subject "$T/two.pem")] $(tail -3 "$T/tls.err")"; fi
stop tls; rc=$?
if [ "$rc" = 0 ]; then ok "HTTPS under the supervisor: SIGTERM, exit 0"; else bad "HTTPS supervisor exit $rc"; fi
"${DEMO[@]}" --workers 2 --https 127.0.0.1:0 --cert "$T/one.pem" --key "$T/two.key" >"$T/badtls.out" 2>"$T/badtls.err"; rc=$?
if [ "$rc" = 2 ] && ! grep -q '^listening' "$T/badtls.out"; then ok "--workers with a mismatched key: exit 2 before serving"; else bad "bad certificate under --workers: rc $rc $(head -3 "$T/badtls.err")"; fi

# ---- --max-requests under load ----
WANT_WORKERS=2 start recycle --workers 2 --max-requests 200 --http 127.0.0.1:0
r=$($LOAD --addr "$H" --path /pid --conns 8 --duration 2)
if [ "$(field "$r" failed)" = 0 ] && [ "$(distinct_bodies "$r")" -gt 2 ]; then ok "--max-requests 200: workers recycled under load, zero failures"; else bad "--max-requests: $r"; fi
stop recycle

# ---- SIGUSR2: re-exec in place under load ----
WANT_WORKERS=2 start usr2 --workers 2 --http 127.0.0.1:0
before=$(workers | cut -d' ' -f1 | sort)
[ -n "${USR2_REPLACE:-}" ] && cp "$USR2_REPLACE" "$USR2_REPLACE.new"
$LOAD --addr "$H" --path /pid --conns 8 --duration 2.5 >"$T/usr2.json" &
LP=$!
sleep 0.7
[ -n "${USR2_REPLACE:-}" ] && mv "$USR2_REPLACE.new" "$USR2_REPLACE"
# The program file replaced: the running image's is gone from the disk until the re-exec.
exe_before=$(readlink "/proc/$SPID/exe" 2>/dev/null)
kill -USR2 "$SPID"
wait "$LP"
for _ in $(seq 1 100); do [ "$(workers | grep -cE ' (idle|busy)$')" = 2 ] && [ -z "$(comm -12 <(echo "$before") <(workers | cut -d' ' -f1 | sort))" ] && break; sleep 0.05; done
after=$(workers | cut -d' ' -f1 | sort)
r=$(cat "$T/usr2.json")
spid_status=$($C "http://$S/status" | python3 -c 'import json,sys; print(json.load(sys.stdin)["pid"])')
if [ "$(field "$r" failed)" = 0 ] && [ "$spid_status" = "$SPID" ] && [ -z "$(comm -12 <(echo "$before") <(echo "$after"))" ] && [ "$($C "http://$H/")" = "Hello, World!" ]; then
    ok "SIGUSR2 under load: re-executed in place (same pid and address), workers replaced, zero failures"
else bad "SIGUSR2: $r pid $spid_status/$SPID before [$before] after [$after]"; fi
if [ -n "${USR2_REPLACE:-}" ]; then
    exe_after=$(readlink "/proc/$SPID/exe" 2>/dev/null)
    if [[ $exe_before == *"(deleted)" ]] && [ "$exe_after" = "$(readlink -f "$USR2_REPLACE")" ]; then
        ok "SIGUSR2 after the program file was replaced: the new file runs (was [$exe_before])"
    else bad "SIGUSR2 with a replaced file: image before [$exe_before] after [$exe_after]"; fi
fi
stop usr2; rc=$?
if [ "$rc" = 0 ]; then ok "SIGTERM after SIGUSR2: exit 0"; else bad "exit $rc after SIGUSR2"; fi

# ---- --watchdog with /hang ----
WANT_WORKERS=2 start wd --workers 2 --watchdog 1 --http 127.0.0.1:0
code=$($C -o /dev/null -w '%{http_code}' --max-time 0.5 "http://$H/hang" 2>/dev/null)
stuck=$(workers | awk '$2 == "busy" {print $1}' | head -1)
$LOAD --addr "$H" --path /pid --conns 4 --duration 2 >"$T/wd.json" &
LP=$!
t0=$(date +%s%N)
gone=
for _ in $(seq 1 300); do
    if [ -n "$stuck" ] && ! workers | grep -q "^$stuck "; then gone=$(( ($(date +%s%N) - t0) / 1000000 )); break; fi
    sleep 0.01
done
wait "$LP"
r=$(cat "$T/wd.json")
if [ -n "$stuck" ] && [ -n "$gone" ] && [ "$gone" -lt 3000 ]; then ok "--watchdog 1: the stuck worker replaced ($gone ms after the check began)"; else bad "watchdog: stuck [$stuck] gone [$gone]"; fi
if [ "$(field "$r" ok)" -gt 50 ] && [ "$(field "$r" failed)" -le 4 ]; then ok "others served while a worker hung"; else bad "served during /hang: $r"; fi
if grep -q 'GET /hang' "$T/wd.err"; then ok "the watchdog logs the request it was running"; else bad "watchdog log: $(cat "$T/wd.err")"; fi
stop wd

# ---- SIGTERM with slow requests in flight ----
WANT_WORKERS=2 start drain --workers 2 --http 127.0.0.1:0
wpids=$(workers | cut -d' ' -f1)
for i in 1 2 3 4; do $C "http://$H/delay?ms=1200" >"$T/slow$i" & done
sleep 0.3
stop drain; rc=$?
wait
all=1
for i in 1 2 3 4; do grep -q 'delayed 1200' "$T/slow$i" || all=0; done
left=0
for p in $wpids; do kill -0 "$p" 2>/dev/null && left=1; done
if [ "$all" = 1 ] && [ "$rc" = 0 ] && [ "$left" = 0 ]; then ok "SIGTERM drains slow requests (all answered), exit 0, no process left"; else bad "drain: answered=$all rc=$rc left=$left"; fi

# ---- --user ----
"${DEMO[@]}" --workers 1 --user no-such-user-xyz --http 127.0.0.1:0 >"$T/nouser.out" 2>"$T/nouser.err"; rc=$?
if [ "$rc" = 2 ] && ! grep -q '^listening' "$T/nouser.out"; then ok "unknown --user: exit 2 before serving"; else bad "unknown user: rc $rc $(cat "$T/nouser.out" "$T/nouser.err")"; fi
if [ "$(id -u)" = 0 ]; then
    port=
    for p in $(seq 800 999); do if ! (echo >/dev/tcp/127.0.0.1/$p) 2>/dev/null; then port=$p; break; fi; done
    WANT_WORKERS=1 start user --workers 1 --user nobody --http 127.0.0.1:$port
    wp=$($C "http://127.0.0.1:$port/pid")
    uid=$(awk '/^Uid:/{print $2 $3 $4 $5}' "/proc/$wp/status" 2>/dev/null)
    nob=$(id -u nobody); ngid=$(id -g nobody)
    gid=$(awk '/^Gid:/{print $2 $3 $4 $5}' "/proc/$wp/status" 2>/dev/null)
    if [ "$uid" = "$nob$nob$nob$nob" ] && [ "$gid" = "$ngid$ngid$ngid$ngid" ]; then ok "--user nobody: the worker runs as nobody, port $port served"; else bad "--user nobody: worker $wp uid [$uid] gid [$gid]"; fi
    stop user
fi

# ---- FastCGI behind nginx: kill -9 a worker, zero 502s ----
if [ "${SUP_NGINX:-0}" = 1 ] && [ -x /usr/sbin/nginx ]; then
    WANT_WORKERS=3 start ng --workers 3 --fcgi 127.0.0.1:0
    mkdir -p "$T/ng"
    NP=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    cat >"$T/ng/nginx.conf" <<NGINX
daemon off; worker_processes 1; master_process off;
pid $T/ng/nginx.pid; error_log $T/ng/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $T/ng; fastcgi_temp_path $T/ng; proxy_temp_path $T/ng;
    uwsgi_temp_path $T/ng; scgi_temp_path $T/ng;
    # The same backend three times: a request whose connection died before any answer
    # is retried on a fresh connection instead of becoming a 502.
    upstream app { server $F max_fails=0; server $F max_fails=0; server $F max_fails=0; keepalive 16; }
    server {
        listen 127.0.0.1:$NP;
        location / {
            include /etc/nginx/fastcgi_params;
            fastcgi_keep_conn on;
            fastcgi_next_upstream error timeout;
            fastcgi_next_upstream_tries 3;
            fastcgi_pass app;
        }
    }
}
NGINX
    /usr/sbin/nginx -c "$T/ng/nginx.conf" &
    for _ in $(seq 1 100); do $C -o /dev/null "http://127.0.0.1:$NP/" 2>/dev/null && break; sleep 0.05; done
    $LOAD --addr "127.0.0.1:$NP" --path /pid --conns 8 --duration 2.5 >"$T/ng.json" &
    LP=$!
    sleep 0.7
    kill -KILL "$(workers | head -1 | cut -d' ' -f1)"
    wait "$LP"
    r=$(cat "$T/ng.json")
    n502=$(python3 -c "import json,sys; print(json.loads(sys.argv[1])['statuses'].get('502', 0))" "$r")
    if [ "$n502" = 0 ] && [ "$(field "$r" ok)" -gt 100 ]; then ok "FastCGI behind nginx: kill -9 of a worker, zero 502s ($(field "$r" failed) failed)"; else bad "nginx crash test: $r"; fi
    kill "$(cat "$T/ng/nginx.pid")" 2>/dev/null
    stop ng
fi

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
