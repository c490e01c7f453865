#!/usr/bin/env bash
# TLS with real peers on loopback (certificates made here by the openssl CLI): nginx
# proxy_pass https:// to the demo's HTTPS listener (verifying it, with SNI), the proxy
# example to an HTTPS upstream (verified against a CA file; a wrong CA gives 502; a bad CA
# file exits 2 naming it), the echo example serving TLS to openssl s_client, and Node's
# https client against the demo. Both backends. Ends with "N passed, M failed".
#   tests/tls_e2e.sh
set -uo pipefail
cd "$(dirname "$0")/.."
make -s PROFILE=debug hello examples >/dev/null || { echo "0 passed, 1 failed"; exit 1; }
pass=0
fail=0
ok() { pass=$((pass + 1)); echo "ok   $1"; }
bad() { fail=$((fail + 1)); echo "FAIL $1"; }
expect() { # name, expected, command...
    local name=$1 want=$2; shift 2
    local got; got=$("$@" 2>&1)
    if [ "$got" = "$want" ]; then ok "$name"; else bad "$name: got [$got] want [$want]"; fi
}

T=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
    wait 2>/dev/null
    rm -rf "$T"
}
trap cleanup EXIT
wait_line() { for _ in $(seq 200); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.05; done; return 1; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

(
    cd "$T" || exit 1
    q() { "$@" >/dev/null 2>&1; }
    q openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem -subj /CN=tls-e2e-ca -days 2
    q openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout other.key -out other.pem -subj /CN=other-ca -days 2
    q openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out a.key
    q openssl req -new -key a.key -out a.csr -subj /CN=a.test
    printf 'subjectAltName=DNS:a.test,DNS:localhost,IP:127.0.0.1\n' >a.ext
    q openssl x509 -req -in a.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out a.pem -days 2 -extfile a.ext
)
[ -s "$T/a.pem" ] || { echo "FAIL certificates"; echo "0 passed, 1 failed"; exit 1; }

for be in epoll io_uring; do
    export MYRIAD_BACKEND=$be
    # ---- the demo serving HTTPS ----
    build/hello --https 127.0.0.1:0 --cert "$T/a.pem" --key "$T/a.key" >"$T/hello.out" 2>"$T/hello.err" &
    PIDS+=($!)
    wait_line "$T/hello.out" '^listening https' || bad "$be: demo did not start: $(cat "$T/hello.err")"
    S=$(awk '/^listening https/{print $3}' "$T/hello.out")
    SP=${S##*:}

    # ---- nginx proxy_pass https:// to it, verifying its certificate, with SNI ----
    NG=$(free_port)
    mkdir -p "$T/ng"
    cat >"$T/ng/nginx.conf" <<NGINX
daemon off; master_process off; worker_processes 1;
pid $T/ng/nginx.pid; error_log $T/ng/error.log warn;
events { worker_connections 64; }
http {
  access_log off;
  client_body_temp_path $T/ng; proxy_temp_path $T/ng; fastcgi_temp_path $T/ng;
  uwsgi_temp_path $T/ng; scgi_temp_path $T/ng;
  upstream app { server 127.0.0.1:$SP; keepalive 4; }
  server {
    listen 127.0.0.1:$NG;
    location / {
      proxy_pass https://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_ssl_server_name on;
      proxy_ssl_name a.test;
      proxy_ssl_verify on;
      proxy_ssl_trusted_certificate $T/ca.pem;
      proxy_ssl_session_reuse on;
    }
  }
}
NGINX
    nginx -c "$T/ng/nginx.conf" -p "$T/ng" 2>"$T/ng/start.err" &
    NPID=$!
    PIDS+=($NPID)
    for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$NG/" && break; sleep 0.05; done
    expect "$be: nginx proxy_pass https:// to the demo" "Hello, World!" curl -sS --max-time 10 "http://127.0.0.1:$NG/"
    expect "$be: through nginx, the demo saw HTTPS and SNI" "HTTPS=on" bash -c "curl -sS --max-time 10 'http://127.0.0.1:$NG/env' | grep '^HTTPS='"
    expect "$be: nginx POST through TLS" "via nginx" curl -sS --max-time 10 --data-binary 'via nginx' "http://127.0.0.1:$NG/echo"
    big=$(curl -sS --max-time 20 "http://127.0.0.1:$NG/stream?chunks=64&bytes=65536" | wc -c | tr -d ' ')
    if [ "$big" = 4194304 ]; then ok "$be: 4 MiB streamed through nginx over TLS"; else bad "$be: streamed $big bytes"; fi
    kill "$NPID" 2>/dev/null; wait "$NPID" 2>/dev/null

    # ---- the proxy example to the HTTPS upstream ----
    build/proxy --upstream "127.0.0.1:$SP" --upstream-tls --upstream-ca "$T/ca.pem" --http 127.0.0.1:0 >"$T/px.out" 2>"$T/px.err" &
    PPID2=$!
    PIDS+=($PPID2)
    wait_line "$T/px.out" '^listening http' || bad "$be: proxy did not start: $(cat "$T/px.err")"
    P=$(awk '/^listening http/{print $3}' "$T/px.out")
    expect "$be: proxy to an HTTPS upstream" "Hello, World!" curl -sS --max-time 10 "http://$P/"
    expect "$be: proxy POST to an HTTPS upstream" "up and back" curl -sS --max-time 10 --data-binary 'up and back' "http://$P/echo"
    # The upstream's own count of accepted connections, asked three times through the
    # proxy: the TLS upstream connection is reused (kept alive), not reopened.
    acc() { curl -sS --max-time 10 "http://$P/stats" | python3 -c 'import json,sys; print(json.load(sys.stdin)["accepted"])'; }
    a1=$(acc); a2=$(acc); a3=$(acc)
    if [ -n "$a1" ] && [ "$a2" = "$a1" ] && [ "$a3" = "$a1" ]; then ok "$be: proxy reuses its TLS upstream connection"; else bad "$be: upstream accepted $a1 $a2 $a3"; fi
    kill "$PPID2" 2>/dev/null; wait "$PPID2" 2>/dev/null
    # Verified against another CA: the handshake fails, the client gets 502.
    build/proxy --upstream "127.0.0.1:$SP" --upstream-tls --upstream-ca "$T/other.pem" --http 127.0.0.1:0 >"$T/px2.out" 2>"$T/px2.err" &
    PPID2=$!
    PIDS+=($PPID2)
    wait_line "$T/px2.out" '^listening http' || bad "$be: proxy 2 did not start"
    P=$(awk '/^listening http/{print $3}' "$T/px2.out")
    expect "$be: an upstream certificate from an unknown CA gives 502" "502" curl -s --max-time 10 -o /dev/null -w '%{http_code}' "http://$P/"
    kill "$PPID2" 2>/dev/null; wait "$PPID2" 2>/dev/null

    # ---- Node's https client against the demo ----
    out=$(timeout 20 node -e '
const https = require("node:https"), fs = require("node:fs");
const [port, ca] = process.argv.slice(1);
const agent = new https.Agent({ keepAlive: true, ca: fs.readFileSync(ca) });
const get = (path) => new Promise((ok, no) => https.get({ host: "127.0.0.1", port, path, agent, servername: "a.test" }, (r) => {
  const proto = r.socket.getProtocol();
  let b = ""; r.on("data", (d) => (b += d)); r.on("end", () => ok([r.statusCode, b, proto]));
}).on("error", no));
(async () => {
  const a = await get("/"); const b = await get("/echo");
  console.log(a[0], a[1], a[2], b[0]);
  agent.destroy();
})().catch((e) => { console.log("error", e.message); });
' "$SP" "$T/ca.pem" 2>&1)
    if [ "$out" = "200 Hello, World! TLSv1.3 405" ]; then ok "$be: Node's https client (keep-alive agent; GET /echo is a 405 on the router)"; else bad "$be: Node https: [$out]"; fi
    kill "${PIDS[0]}" 2>/dev/null; wait "${PIDS[0]}" 2>/dev/null
    PIDS=()

    # ---- the echo example serving TLS ----
    build/echo --listen 127.0.0.1:0 --cert "$T/a.pem" --key "$T/a.key" >"$T/echo.out" 2>"$T/echo.err" &
    EPID=$!
    PIDS+=($EPID)
    wait_line "$T/echo.out" '^listening' || bad "$be: echo did not start: $(cat "$T/echo.err")"
    E=$(sed -n 's/^listening //p' "$T/echo.out")
    got=$(printf 'ping over tls\n' | timeout 10 openssl s_client -quiet -connect "$E" -servername a.test -CAfile "$T/ca.pem" -verify_return_error 2>/dev/null | head -c 14)
    expect "$be: examples/echo.c echoes over TLS" "ping over tls" echo "$got"
    kill "$EPID" 2>/dev/null; wait "$EPID" 2>/dev/null
    PIDS=()
done
unset MYRIAD_BACKEND

build/proxy --upstream 127.0.0.1:1 --upstream-tls --upstream-ca "$T/none.pem" >/dev/null 2>"$T/bad.err"; rc=$?
if [ "$rc" = 2 ] && grep -qF "$T/none.pem" "$T/bad.err"; then ok "proxy: a missing CA file exits 2 naming it"; else bad "proxy bad CA: rc $rc [$(cat "$T/bad.err")]"; fi
build/echo --listen 127.0.0.1:0 --cert "$T/a.pem" --key "$T/other.key" >/dev/null 2>"$T/bad.err"; rc=$?
if [ "$rc" = 2 ] && grep -qF "$T/other.key" "$T/bad.err"; then ok "echo: a mismatched key exits 2 naming it"; else bad "echo bad key: rc $rc [$(cat "$T/bad.err")]"; fi

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
