#!/usr/bin/env bash
# examples/proxy.c end to end: a real nginx (started here, on loopback) and the demo
# (build/hello) as upstreams, curl as the client, the proxy under valgrind. Checks routing,
# keep-alive reuse of upstream connections, streaming both ways, a client that aborts a
# slow download midway (the upstream connection is closed, no fd leaks), 502/504, and a
# clean valgrind report at exit. Ends with "N passed, M failed".
#   tests/proxy_e2e.sh PROXY_BINARY
set -uo pipefail
cd "$(dirname "$0")/.."
PROXY=$1
pass=0
fail=0
ok() { pass=$((pass + 1)); echo "ok   $1"; }
bad() { fail=$((fail + 1)); echo "FAIL $1"; }
check() { local name=$1; shift; if "$@"; then ok "$name"; else bad "$name"; fi; }

T=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
    wait 2>/dev/null
    rm -rf "$T"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_line() { for _ in $(seq 100); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.05; done; return 1; }
port_in() { grep -m1 "$2" "$1" | sed 's/.*://'; }

# ---- nginx: a fixed answer, a 32 MiB file (fast and rate-limited), a connection log ----
NG=$(free_port)
mkdir -p "$T/www" "$T/ng"
head -c 33554432 /dev/urandom >"$T/www/big.bin"
cat >"$T/ng/nginx.conf" <<NGINX
daemon off; master_process off; worker_processes 1;
pid $T/ng/nginx.pid; error_log $T/ng/error.log warn;
events { worker_connections 1024; }
http {
  log_format conn '\$connection \$request';
  access_log $T/ng/access.log conn;
  client_body_temp_path $T/ng/body; proxy_temp_path $T/ng/proxy;
  fastcgi_temp_path $T/ng/fcgi; uwsgi_temp_path $T/ng/uwsgi; scgi_temp_path $T/ng/scgi;
  keepalive_requests 10000;
  server {
    listen 127.0.0.1:$NG;
    root $T/www;
    location = /hello { default_type text/plain; return 200 "hello from nginx\n"; }
    location = /slow/big.bin { alias $T/www/big.bin; limit_rate 2m; }
  }
}
NGINX
/usr/sbin/nginx -c "$T/ng/nginx.conf" &
PIDS+=($!)

# ---- the demo as a second upstream (it echoes request bodies) ----
build/hello --http 127.0.0.1:0 >"$T/hello.out" &
PIDS+=($!)
wait_line "$T/hello.out" listening || { echo "0 passed, 1 failed"; exit 1; }
HP=$(port_in "$T/hello.out" listening)

# ---- the proxy under valgrind, in front of nginx; a second one in front of the demo ----
valgrind -q --leak-check=full --show-possibly-lost=no --errors-for-leak-kinds=definite,indirect --error-exitcode=99 \
    --track-fds=no --log-file="$T/vg.log" "$PROXY" --upstream "127.0.0.1:$NG" --http 127.0.0.1:0 \
    >"$T/proxy.out" 2>"$T/proxy.err" &
VPID=$!
PIDS+=($VPID)
"$PROXY" --upstream "localhost:$HP" --http 127.0.0.1:0 --fcgi "unix:$T/px.sock" >"$T/proxy2.out" 2>&1 &
PIDS+=($!)
wait_line "$T/proxy.out" listening && wait_line "$T/proxy2.out" listening || { echo "0 passed, 1 failed"; exit 1; }
for _ in $(seq 100); do curl -s --max-time 20 -o /dev/null "http://127.0.0.1:$NG/hello" && break; sleep 0.05; done
P=$(port_in "$T/proxy.out" listening)
P2=$(port_in "$T/proxy2.out" listening)
U="http://127.0.0.1:$P"

check "GET through the proxy" bash -c "[ \"\$(curl -s --max-time 20 $U/hello)\" = 'hello from nginx' ]"
check "upstream status passes through (404)" bash -c "[ \"\$(curl -s --max-time 20 -o /dev/null -w '%{http_code}' $U/missing)\" = 404 ]"
before=$(wc -l <"$T/ng/access.log")
for _ in $(seq 20); do curl -s --max-time 20 -o /dev/null "$U/hello"; done
conns=$(tail -n +$((before + 1)) "$T/ng/access.log" | awk '{print $1}' | sort -u | wc -l)
check "20 sequential requests reuse one upstream connection (saw $conns)" [ "$conns" = 1 ]
check "32 MiB download streams intact" bash -c "curl -s --max-time 20 $U/big.bin | cmp -s - $T/www/big.bin"
head -c 5000000 /dev/urandom >"$T/up.bin"
check "5 MB upload streams to the upstream and back (Content-Length)" \
    bash -c "curl -s --max-time 20 --data-binary @$T/up.bin http://127.0.0.1:$P2/echo | cmp -s - $T/up.bin"
check "chunked upload is re-chunked to the upstream" \
    bash -c "curl -s --max-time 20 -H 'Transfer-Encoding: chunked' --data-binary @$T/up.bin http://127.0.0.1:$P2/echo | cmp -s - $T/up.bin"
check "a streamed upstream response arrives whole" \
    bash -c "[ \"\$(curl -s --max-time 20 'http://127.0.0.1:$P2/stream?chunks=3&bytes=4')\" = aaaabbbbcccc ]"

# A slow client makes the proxy pause its upstream; the connection must go back to the pool
# reading again, so the next request on it is answered.
check "a slowly read 8 MiB response arrives whole" bash -c "[ \"\$(curl -s --max-time 20 --limit-rate 16M 'http://127.0.0.1:$P2/stream?chunks=128&bytes=65536' | wc -c)\" = 8388608 ]"
check "the upstream connection paused for it serves the next request" \
    bash -c "[ \"\$(curl -s --max-time 5 'http://127.0.0.1:$P2/stream?chunks=1&bytes=3')\" = aaa ]"

# The same handler behind FastCGI: the upstream's answer goes out as a CGI response.
fcgi_get() {
    env -i REQUEST_METHOD=GET REQUEST_URI="$1" SCRIPT_NAME="${1%%\?*}" QUERY_STRING="${1#*\?}" \
        SERVER_PROTOCOL=HTTP/1.1 REMOTE_ADDR=127.0.0.1 REMOTE_PORT=1234 \
        "$(command -v cgi-fcgi)" -bind -connect "$T/px.sock" </dev/null | tr -d '\r'
}
check "a FastCGI request is proxied too" bash -c "$(declare -f fcgi_get); T=$T; fcgi_get '/stream?chunks=2&bytes=3' | tail -1 | grep -qx aaabbb"

# A client that stops a slow (2 MB/s) download after 0.5 s: its upstream connection must
# close at once (nginx logs the request as soon as its connection goes).
fds() { ls "/proc/$VPID/fd" | wc -l; }
base=$(fds)
before=$(grep -c 'slow/big.bin' "$T/ng/access.log")
curl -s --max-time 0.5 -o /dev/null "$U/slow/big.bin"
closed=0
for _ in $(seq 40); do
    [ "$(grep -c 'slow/big.bin' "$T/ng/access.log")" -gt "$before" ] && { closed=1; break; }
    sleep 0.05
done
check "client abort closes the upstream connection (nginx saw it close)" [ "$closed" = 1 ]
for _ in $(seq 40); do [ "$(fds)" -le "$base" ] && break; sleep 0.05; done
check "no fd left behind by the aborted exchange ($(fds) <= $base)" [ "$(fds)" -le "$base" ]
check "the proxy keeps serving after the abort" bash -c "[ \"\$(curl -s --max-time 20 $U/hello)\" = 'hello from nginx' ]"

# An upstream that refuses: 502.
DEAD=$(free_port)
"$PROXY" --upstream "127.0.0.1:$DEAD" --http 127.0.0.1:0 >"$T/proxy3.out" 2>/dev/null &
PIDS+=($!)
wait_line "$T/proxy3.out" listening
P3=$(port_in "$T/proxy3.out" listening)
check "refused upstream gives 502" bash -c "[ \"\$(curl -s --max-time 20 -o /dev/null -w '%{http_code}' http://127.0.0.1:$P3/)\" = 502 ]"

# An upstream that promises 100 bytes, sends 7 and closes: the client must see its response
# cut short (curl: 18, transfer closed with outstanding data), not a whole one.
CUT=$(free_port)
python3 - "$CUT" <<'PY' &
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen(16)
while True:
    c, _ = s.accept()
    buf = b""
    while b"\r\n\r\n" not in buf:
        d = c.recv(4096)
        if not d:
            break
        buf += d
    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
    c.close()
PY
PIDS+=($!)
"$PROXY" --upstream "127.0.0.1:$CUT" --http 127.0.0.1:0 >"$T/proxy4.out" 2>/dev/null &
PIDS+=($!)
wait_line "$T/proxy4.out" listening
P4=$(port_in "$T/proxy4.out" listening)
for _ in $(seq 100); do python3 -c "import socket; socket.create_connection(('127.0.0.1', $CUT)).close()" 2>/dev/null && break; sleep 0.05; done
cut_rc=0
cut_body=$(curl -s --max-time 20 "http://127.0.0.1:$P4/") || cut_rc=$?
check "an upstream that fails mid-body cuts the client's response short (curl rc $cut_rc, body '$cut_body')" \
    bash -c "[ '$cut_rc' = 18 ] && [ '$cut_body' = partial ]"

kill -TERM "$VPID"
wait "$VPID"
rc=$?
check "proxy exits 0 on SIGTERM with a clean valgrind report (rc $rc)" [ "$rc" = 0 ]
if [ -s "$T/vg.log" ]; then echo "valgrind:"; cat "$T/vg.log"; bad "valgrind reported something"; fi
echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
