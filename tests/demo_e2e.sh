#!/usr/bin/env bash
# End-to-end check of a demo implementation (hello.c, hello.lua, ...) against the demo
# contract: every route over HTTP, over HTTPS (certificates made here by the openssl CLI:
# SNI between two, reload on SIGHUP, bad files refused with exit 2) and over FastCGI
# (cgi-fcgi), graceful SIGTERM with a request in flight (exit 0), --access-log (lines,
# SIGUSR1 reopen, stderr, a full disk), --root (a file, HEAD, FastCGI, a traversal refused,
# none: 404; the full checks are tests/files_e2e.sh), bad flags (exit 2).
#   tests/demo_e2e.sh COMMAND...   (the demo; "--http 127.0.0.1:0 --fcgi 127.0.0.1:0
#   --https 127.0.0.1:0 --cert FILE --key FILE --cert FILE --key FILE" is added)
# DEMO_E2E_TLS=0 leaves out the HTTPS listener and its checks (not the bad-file ones): for
# a run under valgrind, whose memcheck cannot follow the outputs of ring's AES-GCM and
# ChaCha20 assembly and so flags every branch on decrypted bytes.
# Ends with "N passed, M failed".
set -uo pipefail
pass=0
fail=0
ok() { pass=$((pass + 1)); echo "ok   $1"; }
bad() { fail=$((fail + 1)); echo "FAIL $1"; }
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"; [ -n "${DPID:-}" ] && kill "$DPID" 2>/dev/null' EXIT

# Certificates: a CA, a.pem (EC P-256, PKCS#8 key; 127.0.0.1, localhost, a.test) and
# b.pem (RSA, PKCS#1 key; b.test), and c.pem (b.test too, another CN) for the reload.
(
    cd "$TMP" || exit 1
    q() { "$@" >/dev/null 2>&1; }
    q openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem -subj /CN=demo-ca -days 2
    leaf() { # name key san
        q openssl req -new -key "$2" -out "$1.csr" -subj "/CN=$1"
        printf 'subjectAltName=%s\n' "$3" >"$1.ext"
        q openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -out "$1.pem" -days 2 -extfile "$1.ext"
    }
    q openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out a.key
    leaf a a.key IP:127.0.0.1,DNS:localhost,DNS:a.test
    q openssl genrsa -traditional -out b.key 2048
    leaf b b.key DNS:b.test
    q openssl ecparam -name prime256v1 -genkey -noout -out c.key
    leaf c c.key DNS:b.test
)
CERTS=(--cert "$TMP/a.pem" --key "$TMP/a.key" --cert "$TMP/tb.pem" --key "$TMP/tb.key")
cp "$TMP/b.pem" "$TMP/tb.pem"; cp "$TMP/b.key" "$TMP/tb.key"
TLS=${DEMO_E2E_TLS:-1}
if [ "$TLS" = 1 ]; then HTTPS=(--https 127.0.0.1:0 "${CERTS[@]}"); NL=3; else HTTPS=(); NL=2; fi

"$@" --http 127.0.0.1:0 --fcgi 127.0.0.1:0 "${HTTPS[@]}" >"$TMP/out" 2>"$TMP/err" &
DPID=$!
for _ in $(seq 1 300); do [ "$(grep -c '^listening' "$TMP/out")" = $NL ] && break; sleep 0.1; done
H=$(awk '/^listening http /{print $3}' "$TMP/out")
F=$(awk '/^listening fcgi /{print $3}' "$TMP/out")
S=$(awk '/^listening https /{print $3}' "$TMP/out")
if [ -n "$H" ] && [ -n "$F" ] && { [ -n "$S" ] || [ "$TLS" = 0 ]; }; then ok "prints 'listening http|fcgi|https ADDR'"; else bad "listening lines: $(cat "$TMP/out" "$TMP/err")"; fi

expect() { # name, expected, command...
    local name=$1 want=$2; shift 2
    local got; got=$("$@" 2>/dev/null)
    if [ "$got" = "$want" ]; then ok "$name"; else bad "$name: got [$got] want [$want]"; fi
}
fcgi() { # method uri [body] -> CGI response, CR stripped (CT= sets the Content-Type)
    local m=$1 uri=$2 body=${3:-} q=""
    [[ $uri == *\?* ]] && q=${uri#*\?}
    env -i REQUEST_METHOD="$m" REQUEST_URI="$uri" SCRIPT_NAME="${uri%%\?*}" QUERY_STRING="$q" \
        SERVER_PROTOCOL=HTTP/1.1 REMOTE_ADDR=127.0.0.1 REMOTE_PORT=1234 CONTENT_TYPE="${CT:-text/x}" \
        CONTENT_LENGTH=${#body} "$(command -v timeout)" 10 "$(command -v cgi-fcgi)" -bind -connect "$F" \
        <<<"$body" | tr -d '\r'
}
fbody() { fcgi "$@" | sed '1,/^$/d'; }
fstatus() { fcgi "$@" | sed -n 's/^Status: \([0-9]*\).*/\1/p'; }
fheader() { fcgi GET / | grep -i "^$1:" | sed 's/^[^:]*: //'; }

C0="curl -sS --max-time 10"
C=$C0
# /stats: the serving loop's counters as JSON. Two on one connection: the second sees the
# first's input and output and no new connection; a new connection adds one accept.
stats_check() {
    python3 -c '
import json, sys
keys = "iterations wait ctl read received write accept other wakeups accepted".split()
s = [json.loads(l) for l in sys.stdin.read().splitlines()]
assert len(s) == 3, "want 3 answers, got %d" % len(s)
for d in s:
    assert sorted(d) == sorted(keys), sorted(d)
    assert all(type(d[k]) is int and d[k] >= 0 for k in keys), d
a, b, c = s
assert b["accepted"] == a["accepted"], "same connection, yet accepted %d -> %d" % (a["accepted"], b["accepted"])
assert b["iterations"] > a["iterations"], "iterations did not move"
assert b["read"] + b["received"] > a["read"] + a["received"], "the second request was not counted as input"
assert b["write"] > a["write"], "the first answer was not counted as output"
assert c["accepted"] > b["accepted"], "a new connection was not counted"
print("consistent")'
}
stats_three() { { $C "$U/stats" "$U/stats"; $C "$U/stats"; } | stats_check 2>&1 | tail -1; }
# The routes over HTTP, then over HTTPS (the CA's certificate verifies the server's).
http_routes() { # label, base URL
    local P=$1 U=$2
    expect "$P GET /" "Hello, World!" $C "$U/"
    expect "$P GET / content type" "text/plain" $C -o /dev/null -w '%{content_type}' "$U/"
    expect "$P HEAD /" "200 13" $C -I -o /dev/null -w '%{http_code} %header{content-length}' "$U/"
    expect "$P POST /echo" "echo body|text/x" $C -H 'Content-Type: text/x' --data-binary 'echo body' -w '|%{content_type}' "$U/echo"
    expect "$P PUT /echo chunked, default type" "chunked!|application/octet-stream" $C -X PUT -H 'Content-Type:' -H 'Transfer-Encoding: chunked' --data-binary 'chunked!' -w '|%{content_type}' "$U/echo"
    expect "$P GET /env sorted" "sorted" bash -c "$C '$U/env' | cut -d= -f1 > $TMP/names; sort -c $TMP/names && echo sorted"
    expect "$P GET /env vars" "REQUEST_METHOD=GET QUERY_STRING=a=1" bash -c "$C '$U/env?a=1' | grep -E '^(REQUEST_METHOD|QUERY_STRING)=' | sort -r | tr '\n' ' ' | sed 's/ \$//'"
    expect "$P GET /stream" "aaabbbccc" $C "$U/stream?chunks=3&bytes=3"
    expect "$P GET /stream 30 pieces of 2" "60" bash -c "$C '$U/stream?chunks=30&bytes=2' | wc -c | tr -d ' '"
    expect "$P GET /delay" "delayed 50" $C "$U/delay?ms=50"
    expect "$P GET /work" "worked 50" $C "$U/work?ms=50"
    expect "$P 404" "404" $C -o /dev/null -w '%{http_code}' "$U/nope"
    expect "$P 404 body" "Not Found" $C "$U/nope"
    expect "$P GET /stats" "consistent" stats_three
    expect "$P GET /stats type" "application/json" $C -o /dev/null -w '%{content_type}' "$U/stats"
}
http_routes http "http://$H"
# GET /ws, a WebSocket echo, with tests/ws_raw.py (the handshake, a plain GET's 426, echo of
# each kind, fragments, pings, deflate, close codes, framing errors; tests/ws_e2e.sh adds the
# npm ws and Python websockets clients). Over FastCGI it is not an upgrade: 400.
ws_raw() { timeout 120 python3 "$(dirname "$0")/ws_raw.py" "$@" 2>&1 | tail -1 | sed 's/^[0-9]* passed, //'; }
expect "http GET /ws WebSocket echo" "0 failed" ws_raw "$H"
expect "fcgi GET /ws is not an upgrade" "400" fstatus GET /ws
https_checks() {
C="$C0 --cacert $TMP/ca.pem"
http_routes https "https://$S"
expect "https CGI HTTPS=on" "HTTPS=on REQUEST_SCHEME=https" bash -c "$C 'https://$S/env' | grep -E '^(HTTPS|REQUEST_SCHEME)=' | tr '\n' ' ' | sed 's/ \$//'"
expect "https GET /ws WebSocket echo (wss)" "0 failed" ws_raw "$S" --tls
expect "https TLS 1.2" "200" $C --tlsv1.2 --tls-max 1.2 -o /dev/null -w '%{http_code}' "https://$S/"
SP=${S##*:}
expect "https SNI picks the second certificate" "Hello, World! 200" $C --resolve "b.test:$SP:127.0.0.1" -w ' %{http_code}' "https://b.test:$SP/"
sni_cn() { timeout 10 openssl s_client -connect "$S" -servername "$1" </dev/null 2>/dev/null | sed -n 's/^subject=.*CN *= *//p'; }
expect "https unknown SNI gets the default" "a" sni_cn nothing.test
expect "https SNI b.test" "b" sni_cn b.test
# Reload on SIGHUP: b.test's files now hold c's certificate; new connections get it.
cp "$TMP/c.pem" "$TMP/tb.pem"; cp "$TMP/c.key" "$TMP/tb.key"
kill -HUP "$DPID"
for _ in $(seq 1 50); do [ "$(sni_cn b.test)" = c ] && break; sleep 0.1; done
expect "https SIGHUP reloads the certificates" "c" sni_cn b.test
expect "https still served after the reload" "Hello, World!" $C "https://$S/"
# A reload with a bad file keeps the old certificates.
echo junk >"$TMP/tb.key"
kill -HUP "$DPID"
sleep 0.3
expect "https bad reload keeps serving" "c" sni_cn b.test
}
[ "$TLS" = 1 ] && https_checks
expect "fcgi GET /stats" "1" bash -c "$(declare -f fcgi fbody); F=$F; fbody GET /stats | python3 -c 'import json,sys; print(int(json.load(sys.stdin)[\"accepted\"] >= 1))'"
C=$C0
# /delay does not block other requests (a wide margin: a blocked GET / would take the whole
# 2.5 s; starting curl on a loaded machine can take several hundred ms by itself)
( $C "http://$H/delay?ms=2500" >/dev/null & )
t0=$(date +%s%N); $C "http://$H/" >/dev/null; t1=$(date +%s%N)
if [ $(( (t1 - t0) / 1000000 )) -lt 1500 ]; then ok "other requests served during /delay"; else bad "blocked behind /delay"; fi
expect "fcgi GET /" "Hello, World!" fbody GET /
expect "fcgi GET / type" "text/plain" fheader Content-Type
expect "fcgi POST /echo" "over fcgi" fbody POST /echo "over fcgi"
expect "fcgi GET /env" "QUERY_STRING=x=1" bash -c "$(declare -f fcgi fbody); F=$F; fbody GET '/env?x=1' | grep '^QUERY_STRING='"
expect "fcgi GET /stream" "aabbcc" fbody GET "/stream?chunks=3&bytes=2"
expect "fcgi GET /delay" "delayed 20" fbody GET "/delay?ms=20"
expect "fcgi GET /work" "worked 20" fbody GET "/work?ms=20"
expect "fcgi 404" "404" fstatus GET /nope

# Strict raw-socket checks (issue 25): bad input gets its 4xx and the demo keeps serving;
# a chunked body of 20,000 one-byte chunks is echoed whole, over HTTP and FastCGI.
RAW="python3 $(dirname "$0")/rawclient.py"
hex() { printf '%s' "$1" | od -An -v -tx1 | tr -d ' \n'; }
expect "http multi-byte target: 400" "400" $RAW http-status "$H" "$(hex 'GET aaaaaa')c3a9$(hex $' HTTP/1.0\r\n\r\n')"
expect "http still serving after it" "Hello, World!" $C "http://$H/"
expect "http Host: a b: 400" "400" $RAW http-status "$H" "$(hex $'GET / HTTP/1.1\r\nHost: a b\r\n\r\n')"
expect "http Host: u@h: 400" "400" $RAW http-status "$H" "$(hex $'GET / HTTP/1.1\r\nHost: u@h\r\n\r\n')"
expect "http HEAD with a bad Host: 400 without a body" "400 0" $RAW http-after "$H" "$(hex $'HEAD / HTTP/1.1\r\nHost: a b\r\n\r\n')"
expect "http 20,000 one-byte chunks echoed" "200 20000 equal" $RAW http-chunks "$H" 20000
expect "fcgi 20,000 one-byte STDIN records echoed" "200 20000 equal" $RAW fcgi-stdin "$F" 20000
# A body of unknown length (no CONTENT_LENGTH, or an empty one) ends at the empty STDIN record.
expect "fcgi POST /echo without CONTENT_LENGTH" "200 3000 equal" $RAW fcgi-stdin "$F" 3000 -
expect "fcgi POST /echo with an empty CONTENT_LENGTH" "200 3000 equal" $RAW fcgi-stdin "$F" 3000 ""
# An error answer reaches a client that half-closed after a 70 KB head (no reset), and one
# still uploading slowly for 2.5 s after its 413 (the lingering close lasts).
expect "http 431 to a half-closed client, no reset" "431 clean" $RAW http-halfclose "$H"
expect "http 413 read after a slow upload" "413" $RAW http-slow-413 "$H"
# A response the demo cannot build (the request's Content-Type, echoed back, has a DEL in it):
# 500 and END_REQUEST at once, not a request left open. A body over the demo's 64 MiB limit
# without a CONTENT_LENGTH: 413 and END_REQUEST, as over HTTP.
expect "fcgi unbuildable response: 500 + END_REQUEST" "500 0" $RAW fcgi-hex "$F" \
    0101000100080000000100000000000001040001003700000e04524551554553545f4d4554484f44504f53540b05524551554553545f5552492f6563686f0c03434f4e54454e545f54595045617f6201040001000000000105000100000000
expect "fcgi body over the limit: 413 + END_REQUEST" "413 0" $RAW fcgi-big "$F" 70

# ---- the router: GET /hello/NAME (decoded after matching), 404 / 405, HEAD ----
expect "http GET /hello/NAME" "Hello, world!|text/plain" $C -w '|%{content_type}' "http://$H/hello/world"
expect "http GET /hello/ encoded slash stays in the parameter" "Hello, a/b!" $C "http://$H/hello/a%2Fb"
expect "http GET /hello/ UTF-8 and spaces decoded, + kept" "Hello, Jürgen x+y z!" $C "http://$H/hello/J%C3%BCrgen%20x+y%20z"
expect "http GET /hello/ (empty name) 404" "404" $C -o /dev/null -w '%{http_code}' "http://$H/hello/"
expect "http GET /hello/a/b 404" "404" $C -o /dev/null -w '%{http_code}' "http://$H/hello/a/b"
expect "http GET /hello/%zz (bad escape) 400" "400" $C -o /dev/null -w '%{http_code}' "http://$H/hello/%zz"
expect "http HEAD /hello/x goes to GET" "200" $C -I -o /dev/null -w '%{http_code}' "http://$H/hello/x"
expect "http DELETE / 405 with Allow" "405 GET, HEAD" $C -X DELETE -o /dev/null -w '%{http_code} %header{allow}' "http://$H/"
expect "http GET /form 405 with Allow" "405 POST" $C -o /dev/null -w '%{http_code} %header{allow}' "http://$H/form"
expect "fcgi GET /hello/NAME" "Hello, fcgi!" fbody GET /hello/fcgi
expect "fcgi GET /hello/a%2Fb" "Hello, a/b!" fbody GET /hello/a%2Fb
expect "fcgi GET /hello/a/b 404" "404" fstatus GET /hello/a/b
expect "fcgi GET /hello/%zz 400" "400" fstatus GET /hello/%zz
expect "fcgi DELETE / 405" "405" fstatus DELETE /

# ---- POST /form: urlencoded and multipart, one line per field in order ----
nl=$'\n'
expect "http POST /form urlencoded" "a=1${nl}b=x y!${nl}a=2${nl}empty=${nl}bad=%zz" \
    $C --data-binary 'a=1&b=x+y%21&a=2&&empty=&bad=%zz' "http://$H/form"
head -c 1000 /dev/urandom >"$TMP/f.bin"
expect "http POST /form curl -F fields and a file" "title=hi there${nl}file: f.bin (1000 bytes)${nl}n=2" \
    $C -F 'title=hi there' -F "file=@$TMP/f.bin" -F n=2 "http://$H/form"
expect "http POST /form filename reported as given" "f: ../../etc/passwd (1000 bytes)" \
    $C -F "f=@$TMP/f.bin;filename=../../etc/passwd" "http://$H/form"
head -c $((16 << 20)) /dev/urandom >"$TMP/big.bin"
expect "http POST /form 16 MiB upload" "big: big.bin (16777216 bytes)" $C --max-time 120 -F "big=@$TMP/big.bin" "http://$H/form"
mp() { printf '%s' "$1" | sed 's/$/\r/' | head -c -1; } # LF -> CRLF
mp $'--XX\nContent-Disposition: form-data; name="a"\n\n1\n--XX\n' >"$TMP/cut.txt"
expect "http POST /form multipart without closing delimiter 400" "400" \
    $C -o /dev/null -w '%{http_code}' -H 'Content-Type: multipart/form-data; boundary=XX' --data-binary @"$TMP/cut.txt" "http://$H/form"
mp $'--XX\nContent-Disposition form-data\n\n1\n--XX--\n' >"$TMP/nocolon.txt"
expect "http POST /form header line without colon 400" "400" \
    $C -o /dev/null -w '%{http_code}' -H 'Content-Type: multipart/form-data; boundary=XX' --data-binary @"$TMP/nocolon.txt" "http://$H/form"
expect "http POST /form multipart without boundary 400" "400" \
    $C -o /dev/null -w '%{http_code}' -H 'Content-Type: multipart/form-data' --data-binary @"$TMP/nocolon.txt" "http://$H/form"
expect "http POST /form text/plain 415" "415" \
    $C -o /dev/null -w '%{http_code}' -H 'Content-Type: text/plain' --data-binary 'x' "http://$H/form"
mp $'--XX\nContent-Disposition: form-data; name="q"\n\nquoted boundary\n--XX--\n' >"$TMP/ok.txt"
expect "http POST /form quoted boundary" "q=quoted boundary" \
    $C -H 'Content-Type: multipart/form-data; boundary="XX"' --data-binary @"$TMP/ok.txt" "http://$H/form"
expect "fcgi POST /form urlencoded" "x=1${nl}y=a b" bash -c "$(declare -f fcgi fbody); F=$F; CT=application/x-www-form-urlencoded fbody POST /form 'x=1&y=a+b'"
expect "fcgi POST /form multipart" "q=quoted boundary" bash -c "$(declare -f fcgi fbody); F=$F; CT='multipart/form-data; boundary=XX' fbody POST /form \"\$(cat $TMP/ok.txt)\""
expect "fcgi POST /form cut multipart 400" "400" bash -c "$(declare -f fcgi fstatus); F=$F; CT='multipart/form-data; boundary=XX' fstatus POST /form \"\$(cat $TMP/cut.txt)\""

# Graceful stop with a request in flight: it completes; the demo exits 0.
# With /work jobs whose clients give up: still queued when the loop stops, their requests
# must be released, not lost (the C demo runs under valgrind, which fails a leak).
# (Over FastCGI: a front end that closes ends its requests at once, so the drain need not
# wait for those jobs.)
for _ in 1 2 3 4 5 6 7 8; do $RAW fcgi-leave "$F" "/work?ms=1500" >/dev/null; done
sleep 0.3
$C "http://$H/delay?ms=300" >"$TMP/inflight" &
CPID=$!
# (curl's start can take longer than 0.1 s on a loaded machine: wait for its connection to
# be established before giving the request 0.1 s more to reach the handler)
for _ in $(seq 1 100); do
    [ -n "$(ss -tnH state established "( sport = :${H##*:} )" 2>/dev/null)" ] && break
    sleep 0.03
done
sleep 0.1
kill -TERM "$DPID"
wait "$CPID"
if grep -q 'delayed 300' "$TMP/inflight"; then ok "in-flight request finished on SIGTERM"; else bad "in-flight request lost"; fi
wait "$DPID"; rc=$?
DPID=
if [ "$rc" = 0 ]; then ok "exits 0 after SIGTERM"; else bad "exit code $rc: $(tail -5 "$TMP/err")"; fi

# --access-log PATH: a line per request (combined log format) within a second or so, over
# HTTP and FastCGI; a rename then SIGUSR1 starts a new file; "-" is stderr; a full disk
# loses lines, not requests; a log that cannot be opened is a bad flag.
start_demo() { # out err args... -> DPID, H, F
    local out=$1 err=$2; shift 2
    "${DEMO[@]}" --http 127.0.0.1:0 --fcgi 127.0.0.1:0 "$@" >"$out" 2>"$err" &
    DPID=$!
    for _ in $(seq 1 300); do [ "$(grep -c '^listening' "$out")" = 2 ] && break; sleep 0.1; done
    H=$(awk '/^listening http/{print $3}' "$out")
    F=$(awk '/^listening fcgi/{print $3}' "$out")
}
stop_demo() { kill -TERM "$DPID" 2>/dev/null; wait "$DPID"; local rc=$?; DPID=; return $rc; }
wait_lines() { # file n: waits up to 5 s for n lines
    for _ in $(seq 1 50); do [ -f "$1" ] && [ "$(wc -l <"$1")" -ge "$2" ] && return 0; sleep 0.1; done
    return 1
}
DEMO=("$@")
AL="$TMP/access.log"
TL='\[[0-9]{2}/[A-Z][a-z]{2}/[0-9]{4}:[0-9]{2}:[0-9]{2}:[0-9]{2} [+-][0-9]{4}\]'
start_demo "$TMP/out2" "$TMP/err2" --access-log "$AL"
$C -A 'e2e-agent/1.0' -e 'http://ref.example/' -o /dev/null "http://$H/?q=1"
fstatus GET /nope >/dev/null
if wait_lines "$AL" 2; then ok "access log: two lines within a second"; else bad "access log: $(cat "$AL" 2>&1) $(tail -3 "$TMP/err2")"; fi
if sed -n 1p "$AL" | grep -Eq "^127\.0\.0\.1 - - $TL \"GET /\?q=1 HTTP/1\.1\" 200 13 \"http://ref\.example/\" \"e2e-agent/1\.0\"\$"; then
    ok "access log: combined format over HTTP"; else bad "access log HTTP line: $(sed -n 1p "$AL")"; fi
if sed -n 2p "$AL" | grep -Eq "^127\.0\.0\.1 - - $TL \"GET /nope HTTP/1\.1\" 404 9 \"-\" \"-\"\$"; then
    ok "access log: combined format over FastCGI"; else bad "access log FastCGI line: $(sed -n 2p "$AL")"; fi
mv "$AL" "$AL.1"
kill -USR1 "$DPID"
sleep 0.3
$C -o /dev/null "http://$H/after-rotate"
if wait_lines "$AL" 1 && grep -q '"GET /after-rotate HTTP/1.1" 404' "$AL" && [ "$(wc -l <"$AL.1")" = 2 ]; then
    ok "access log: rename + SIGUSR1 starts a new file"; else bad "access log reopen: new [$(cat "$AL" 2>&1)] old [$(cat "$AL.1")]"; fi
if stop_demo; then ok "access log: exits 0 after SIGTERM"; else bad "access log: exit code after SIGTERM"; fi

start_demo "$TMP/out3" "$TMP/err3" --access-log -
$C -o /dev/null "http://$H/to-stderr"
for _ in $(seq 1 50); do grep -q '"GET /to-stderr HTTP/1.1" 404 9' "$TMP/err3" && break; sleep 0.1; done
if grep -Eq "^127\.0\.0\.1 - - $TL \"GET /to-stderr HTTP/1\.1\" 404 9 \"-\" \"curl/" "$TMP/err3"; then
    ok "access log: '-' is stderr"; else bad "access log to stderr: $(tail -3 "$TMP/err3")"; fi
stop_demo

start_demo "$TMP/out4" "$TMP/err4" --access-log /dev/full
codes=$(for i in 1 2 3 4 5; do $C -o /dev/null -w '%{http_code} ' "http://$H/"; done)
sleep 1.2
codes="$codes$($C -o /dev/null -w '%{http_code}' "http://$H/")"
if [ "$codes" = "200 200 200 200 200 200" ] && [ "$(grep -c 'No space left' "$TMP/err4")" -le 1 ]; then
    ok "access log: a full disk loses lines, not requests (reported at most once)"
else bad "access log on /dev/full: [$codes] $(tail -3 "$TMP/err4")"; fi
stop_demo

"$@" --http 127.0.0.1:0 --access-log "$TMP/no/such/dir/access.log" 2>"$TMP/usage" >/dev/null; rc=$?
if [ "$rc" = 2 ] && grep -q 'access' "$TMP/usage"; then ok "access log that cannot be opened: exit 2"; else bad "unopenable access log gave $rc: $(cat "$TMP/usage")"; fi

# --root DIR: GET|HEAD /static/PATH from DIR (the full checks: tests/files_e2e.sh); none: 404.
mkdir -p "$TMP/www"
printf 'static bytes\n' >"$TMP/www/s.txt"
start_demo "$TMP/out5" "$TMP/err5"
expect "no --root: /static/ is 404" "404" $C -o /dev/null -w '%{http_code}' "http://$H/static/s.txt"
stop_demo
start_demo "$TMP/out6" "$TMP/err6" --root "$TMP/www"
expect "--root: GET /static/PATH" "static bytes" $C "http://$H/static/s.txt"
expect "--root: HEAD /static/PATH" "200 13" $C -I -o /dev/null -w '%{http_code} %header{content-length}' "http://$H/static/s.txt"
expect "--root: over FastCGI" "static bytes" fbody GET /static/s.txt
expect "--root: a traversal is refused" "400" $C --path-as-is -o /dev/null -w '%{http_code}' "http://$H/static/../s.txt"
stop_demo
"$@" --http 127.0.0.1:0 --root "$TMP/www/s.txt" 2>"$TMP/usage" >/dev/null; rc=$?
if [ "$rc" = 2 ] && grep -q 'root' "$TMP/usage"; then ok "--root that is not a directory: exit 2"; else bad "--root FILE gave $rc: $(cat "$TMP/usage")"; fi

"$@" --max-body x 2>"$TMP/usage" >/dev/null; rc=$?
if [ "$rc" = 2 ] && [ -s "$TMP/usage" ]; then ok "bad --max-body: usage and exit 2"; else bad "--max-body x gave $rc"; fi
"$@" --bogus 2>"$TMP/usage" >/dev/null; rc=$?
if [ "$rc" = 2 ] && [ -s "$TMP/usage" ]; then ok "bad flag: usage and exit 2"; else bad "bad flag gave $rc"; fi
# Bad certificate files: a message naming the file, exit 2, before serving.
refused() { # name, file the message must name, args...
    local name=$1 file=$2; shift 2
    timeout 10 "${DEMO[@]}" --https 127.0.0.1:0 "$@" >"$TMP/bout" 2>"$TMP/berr"; local rc=$?
    if [ "$rc" = 2 ] && grep -qF "$file" "$TMP/berr" && ! grep -q '^listening' "$TMP/bout"; then ok "$name"
    else bad "$name: rc $rc, stderr [$(head -3 "$TMP/berr")]"; fi
}
DEMO=("$@")
refused "missing certificate file: exit 2 naming it" "$TMP/none.pem" --cert "$TMP/none.pem" --key "$TMP/a.key"
refused "unreadable key file: exit 2 naming it" "$TMP" --cert "$TMP/a.pem" --key "$TMP"
refused "key not matching its certificate: exit 2 naming it" "$TMP/b.key" --cert "$TMP/a.pem" --key "$TMP/b.key"
refused "not a PEM certificate: exit 2 naming it" "$TMP/a.key" --cert "$TMP/a.key" --key "$TMP/a.key"

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
