#!/usr/bin/env bash
# End-to-end check of a demo's --root DIR (GET/HEAD /static/PATH) on both backends: curl with
# -I, --range, -z and --compressed; raw requests for every traversal form; files of 0 B, 1 B,
# 64 KiB and 24 MiB; a slow reader of the large file in bounded memory without a busy loop;
# pipelined file and generated responses in order; directories; no --root: 404;
# FastCGI behind a real nginx serving the large file (and a range of it); and HTTPS (the
# file read and encrypted in bounded chunks).
#   tests/files_e2e.sh COMMAND...   (the demo; --http, --fcgi and --root are added)
#   (on epoll and io_uring, or only on the backend MYRIAD_BACKEND names)
# Ends with "N passed, M failed".
set -uo pipefail
cd "$(dirname "$0")/.."
pass=0
fail=0
ok() { pass=$((pass + 1)); echo "ok   $1"; }
bad() { fail=$((fail + 1)); echo "FAIL $1"; }
expect() { # name, expected, command...
    local name=$1 want=$2; shift 2
    local got; got=$("$@" 2>/dev/null)
    if [ "$got" = "$want" ]; then ok "$name"; else bad "$name: got [$got] want [$want]"; fi
}
T=$(mktemp -d)
DPID=
NPID=
cleanup() {
    [ -n "$DPID" ] && kill "$DPID" 2>/dev/null
    [ -n "$NPID" ] && kill "$NPID" 2>/dev/null
    wait 2>/dev/null
    rm -rf "$T"
}
trap cleanup EXIT
DEMO=("$@")
PY="python3 tests/files_client.py"

# ---- the tree ----
W=$T/www
mkdir -p "$W/dir" "$W/noindex" "$W/sub/deeper"
printf 'hello world\n' >"$W/hello.txt"
: >"$W/empty.bin"
printf 'x' >"$W/one.bin"
head -c 65536 /dev/urandom >"$W/k64.bin"
head -c $((24 * 1024 * 1024)) /dev/urandom >"$W/big.bin"
printf '<h1>index</h1>' >"$W/dir/index.html"
printf 'body { color: red }\n%.0s' $(seq 200) >"$W/style.css"
gzip -k -9 "$W/style.css"
printf 'secret\n' >"$T/secret.txt"
ln -s hello.txt "$W/link-in"
ln -s ../secret.txt "$W/link-out"
ln -s /etc/passwd "$W/link-abs"
sha() { sha256sum | cut -d' ' -f1; }
# A self-signed certificate for 127.0.0.1 (HTTPS: the file read and encrypted in bounded
# chunks instead of sent by sendfile).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$T/tls.key" -out "$T/tls.pem" \
    -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 -days 2 >/dev/null 2>&1

start_demo() { # args... -> DPID, H, F
    "${DEMO[@]}" --http 127.0.0.1:0 --fcgi 127.0.0.1:0 "$@" >"$T/out" 2>"$T/err" &
    DPID=$!
    for _ in $(seq 1 300); do [ "$(grep -c '^listening' "$T/out")" = 2 ] && break; sleep 0.1; done
    H=$(awk '/^listening http/{print $3}' "$T/out")
    F=$(awk '/^listening fcgi/{print $3}' "$T/out")
}
stop_demo() { kill -TERM "$DPID" 2>/dev/null; wait "$DPID"; local rc=$?; DPID=; return $rc; }

C="curl -sS --max-time 20"
# Both backends, or the one MYRIAD_BACKEND names (a suite already run once per backend).
for be in ${MYRIAD_BACKEND:-epoll io_uring}; do
    export MYRIAD_BACKEND=$be
    start_demo --root "$W"
    if [ -n "$H" ] && [ -n "$F" ]; then ok "$be: demo up with --root"; else bad "$be: demo did not start: $(cat "$T/err")"; continue; fi
    U="http://$H/static"
    expect "$be: GET a file" "hello world" $C "$U/hello.txt"
    expect "$be: Content-Type, Accept-Ranges, strong ETag" "text/plain bytes yes" bash -c \
        "$C -o /dev/null -D - '$U/hello.txt' | tr -d '\r' | awk -F': ' 'tolower(\$1)==\"content-type\"{t=\$2} tolower(\$1)==\"accept-ranges\"{r=\$2} tolower(\$1)==\"etag\"{e=(\$2 ~ /^\"/)?\"yes\":\"no\"} END{print t, r, e}'"
    for f in empty.bin one.bin k64.bin big.bin; do
        expect "$be: GET $f whole" "$(sha <"$W/$f") $(stat -c %s "$W/$f")" bash -c "$C -D '$T/h' '$U/$f' | sha256sum | cut -d' ' -f1 | tr '\n' ' '; tr -d '\r' <'$T/h' | awk -F': ' 'tolower(\$1)==\"content-length\"{print \$2}'"
    done
    expect "$be: curl -I (HEAD)" "200 25165824" $C -I -o /dev/null -w '%{http_code} %header{content-length}' "$U/big.bin"
    expect "$be: HEAD sends no body" "0" bash -c "$C -I '$U/big.bin' -o /dev/null -w '%{size_download}'"
    expect "$be: --range 0-99" "206 bytes 0-99/65536 $(head -c 100 "$W/k64.bin" | sha)" bash -c \
        "$C --range 0-99 -o '$T/r' -w '%{http_code} %header{content-range} ' '$U/k64.bin'; sha256sum <'$T/r' | cut -d' ' -f1"
    expect "$be: --range -10 (suffix)" "$(tail -c 10 "$W/k64.bin" | sha)" bash -c "$C --range -10 '$U/k64.bin' | sha256sum | cut -d' ' -f1"
    expect "$be: --range into the large file" "$(tail -c +20000001 "$W/big.bin" | head -c 1000000 | sha)" bash -c \
        "$C --range 20000000-20999999 '$U/big.bin' | sha256sum | cut -d' ' -f1"
    expect "$be: --range 0-1,10-11 (multipart)" "206 multipart/byteranges" bash -c \
        "$C --range 0-1,10-11 -o /dev/null -w '%{http_code} %{content_type}' '$U/k64.bin' | cut -d';' -f1"
    expect "$be: unsatisfiable range: 416" "416 bytes */65536" $C --range 70000- -o /dev/null -w '%{http_code} %header{content-range}' "$U/k64.bin"
    expect "$be: -z a later date: 304" "304" $C -z "$(date -u -R -d '+1 day')" -o /dev/null -w '%{http_code}' "$U/hello.txt"
    expect "$be: -z an earlier date: 200" "200" $C -z "$(date -u -R -d '2001-01-01')" -o /dev/null -w '%{http_code}' "$U/hello.txt"
    # (curl's %{http_code} says 304 for any unmet time condition: the status line tells.)
    expect "$be: -z -DATE (If-Unmodified-Since) before: 412" "412" bash -c \
        "$C -z '-$(date -u -R -d '2001-01-01')' -D - -o /dev/null '$U/hello.txt' | head -1 | cut -d' ' -f2"
    etag=$($C -o /dev/null -w '%header{etag}' "$U/hello.txt")
    expect "$be: If-None-Match: 304" "304" $C -H "If-None-Match: $etag" -o /dev/null -w '%{http_code}' "$U/hello.txt"
    expect "$be: If-Match another tag: 412" "412" $C -H 'If-Match: "nope"' -o /dev/null -w '%{http_code}' "$U/hello.txt"
    expect "$be: If-Range another tag: the whole file" "200 65536" $C --range 0-0 -H 'If-Range: "old"' -o /dev/null -w '%{http_code} %{size_download}' "$U/k64.bin"
    expect "$be: --compressed takes the .gz sibling" "gzip Accept-Encoding $(sha <"$W/style.css")" bash -c \
        "$C --compressed -o '$T/c' -w '%header{content-encoding} %header{vary} ' '$U/style.css'; sha256sum <'$T/c' | cut -d' ' -f1"
    expect "$be: without Accept-Encoding: identity" "$(sha <"$W/style.css")" bash -c "$C '$U/style.css' | sha256sum | cut -d' ' -f1"
    expect "$be: a directory redirects to its slash form" "301 /static/dir/" $C -o /dev/null -w '%{http_code} %header{location}' "$U/dir"
    expect "$be: a directory's index.html" "<h1>index</h1>" $C "$U/dir/"
    expect "$be: no listing" "403" $C -o /dev/null -w '%{http_code}' "$U/noindex/"
    expect "$be: missing: 404" "404" $C -o /dev/null -w '%{http_code}' "$U/missing"
    expect "$be: POST: 405 with Allow" "405 GET, HEAD" $C -X POST -o /dev/null -w '%{http_code} %header{allow}' "$U/hello.txt"
    expect "$be: a symlink inside the root" "hello world" $C "$U/link-in"
    for t in "/static/../secret.txt:400" "/static/%2e%2e/secret.txt:400" "/static/%2E%2E/%2E%2E/etc/passwd:400" \
        "/static/.%2e/secret.txt:400" "/static/..%2fsecret.txt:404" "/static/%2e%2e%2fsecret.txt:404" \
        '/static/..\x5csecret.txt:400' "/static/..%5csecret.txt:400" "/static/hello.txt%00.png:400" \
        "/static/link-out:403" "/static/link-abs:403" "/static/sub/../../secret.txt:400" "/static//etc/passwd:404"; do
        expect "$be: raw GET ${t%:*}" "${t##*:}" $PY raw "$H" "${t%:*}"
    done
    expect "$be: pipelined file and generated responses in order" "9 in order" $PY pipeline "$H" "$W"
    expect "$be: a slow reader of 24 MiB: bounded memory, no busy loop" "bounded" $PY slow "$H" "$DPID" "$W" big.bin
    expect "$be: clients that reset mid-file (EPIPE, no SIGPIPE death)" "still serving" $PY leave "$H" /static/big.bin
    # FastCGI directly (cgi-fcgi), then behind nginx below.
    expect "$be: FastCGI GET a file" "hello world" bash -c \
        "env -i REQUEST_METHOD=GET REQUEST_URI=/static/hello.txt SCRIPT_NAME=/static/hello.txt QUERY_STRING= SERVER_PROTOCOL=HTTP/1.1 \
         timeout 10 cgi-fcgi -bind -connect '$F' </dev/null | tr -d '\r' | sed '1,/^\$/d'"

    # ---- FastCGI behind nginx: the large file as STDOUT records ----
    NP=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    mkdir -p "$T/ng"
    cat >"$T/ng/nginx.conf" <<NGINX
daemon off; master_process off; worker_processes 1;
pid $T/ng/nginx.pid; error_log $T/ng/error.log warn;
events { worker_connections 256; }
http {
  access_log off;
  client_body_temp_path $T/ng/body; proxy_temp_path $T/ng/proxy;
  fastcgi_temp_path $T/ng/fcgi; uwsgi_temp_path $T/ng/uwsgi; scgi_temp_path $T/ng/scgi;
  server {
    listen 127.0.0.1:$NP;
    location / {
      fastcgi_pass $F;
      fastcgi_keep_conn on;
      fastcgi_param REQUEST_METHOD \$request_method;
      fastcgi_param REQUEST_URI \$request_uri;
      fastcgi_param SCRIPT_NAME \$uri;
      fastcgi_param QUERY_STRING \$query_string;
      fastcgi_param SERVER_PROTOCOL \$server_protocol;
      fastcgi_param REMOTE_ADDR \$remote_addr;
    }
  }
}
NGINX
    /usr/sbin/nginx -c "$T/ng/nginx.conf" &
    NPID=$!
    for _ in $(seq 100); do curl -s --max-time 2 -o /dev/null "http://127.0.0.1:$NP/" && break; sleep 0.05; done
    expect "$be: nginx -> FastCGI: the 24 MiB file" "200 $(sha <"$W/big.bin")" bash -c \
        "$C -o '$T/n' -w '%{http_code} ' 'http://127.0.0.1:$NP/static/big.bin'; sha256sum <'$T/n' | cut -d' ' -f1"
    expect "$be: nginx -> FastCGI: a range of it" "206 $(tail -c +1001 "$W/big.bin" | head -c 5000000 | sha)" bash -c \
        "$C --range 1000-5000999 -o '$T/n' -w '%{http_code} ' 'http://127.0.0.1:$NP/static/big.bin'; sha256sum <'$T/n' | cut -d' ' -f1"
    expect "$be: nginx -> FastCGI: 304" "304" $C -H "If-None-Match: $etag" -o /dev/null -w '%{http_code}' "http://127.0.0.1:$NP/static/hello.txt"
    kill "$NPID" 2>/dev/null; wait "$NPID" 2>/dev/null; NPID=
    if stop_demo; then ok "$be: exits 0 after SIGTERM"; else bad "$be: exit code after SIGTERM"; fi

    # ---- HTTPS: the same files through TLS ----
    "${DEMO[@]}" --https 127.0.0.1:0 --cert "$T/tls.pem" --key "$T/tls.key" --root "$W" >"$T/out" 2>"$T/err" &
    DPID=$!
    for _ in $(seq 1 300); do grep -q '^listening https' "$T/out" && break; sleep 0.1; done
    S=$(awk '/^listening https/{print $3}' "$T/out")
    CS="$C --cacert $T/tls.pem"
    expect "$be: HTTPS: the 24 MiB file" "200 $(sha <"$W/big.bin")" bash -c \
        "$CS -o '$T/s' -w '%{http_code} ' 'https://$S/static/big.bin'; sha256sum <'$T/s' | cut -d' ' -f1"
    expect "$be: HTTPS: a range of it" "206 $(tail -c +3000001 "$W/big.bin" | head -c 2000000 | sha)" bash -c \
        "$CS --range 3000000-4999999 -o '$T/s' -w '%{http_code} ' 'https://$S/static/big.bin'; sha256sum <'$T/s' | cut -d' ' -f1"
    expect "$be: HTTPS: keep-alive file and generated responses" "$(sha <"$W/k64.bin")|Hello, World!hello world" bash -c \
        "$CS -s 'https://$S/static/k64.bin' -o '$T/s' --next --cacert '$T/tls.pem' -s 'https://$S/' --next --cacert '$T/tls.pem' -s 'https://$S/static/hello.txt' >'$T/s2';
         printf '%s|%s' \"\$(sha256sum <'$T/s' | cut -d' ' -f1)\" \"\$(cat '$T/s2')\""
    if stop_demo; then ok "$be: HTTPS: exits 0 after SIGTERM"; else bad "$be: HTTPS: exit code after SIGTERM"; fi
done
unset MYRIAD_BACKEND

# Without --root: /static/ is 404.
start_demo
expect "no --root: 404" "404" $C -o /dev/null -w '%{http_code}' "http://$H/static/hello.txt"
stop_demo
# A --root that is not a directory: usage and exit 2.
"${DEMO[@]}" --http 127.0.0.1:0 --root "$W/hello.txt" >/dev/null 2>"$T/usage"; rc=$?
if [ "$rc" = 2 ] && grep -qi 'root' "$T/usage"; then ok "--root FILE: exit 2 naming it"; else bad "--root FILE gave $rc: $(cat "$T/usage")"; fi

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
