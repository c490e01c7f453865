#!/usr/bin/env bash
# C-side tests: the header compiles as C11 and C++, the API test, the demo (examples/hello.c)
# under valgrind through every route over HTTP and FastCGI, and an install that a C program
# builds against with pkg-config. Ends with "N passed, M failed".
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
pass=0
fail=0
ok() { pass=$((pass + 1)); echo "ok   $1"; }
bad() { fail=$((fail + 1)); echo "FAIL $1"; }
check() { local name=$1; shift; if "$@"; then ok "$name"; else bad "$name"; fi; }

make -s PROFILE=debug hello >/dev/null || { echo "0 passed, 1 failed"; exit 1; }
LIB=$ROOT/target/debug
WARN="-std=c11 -Wall -Wextra -Werror -pedantic"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"; [ -n "${VPID:-}" ] && kill "$VPID" 2>/dev/null' EXIT

check "header compiles as C++" bash -c "echo '#include \"myriad.h\"
int main() { return myriad_version() == nullptr; }' | g++ -x c++ -std=c++11 -Wall -Wextra -Werror -pedantic -Iinclude - -o $TMP/cxx -L$LIB -lmyriad"
check "examples compile as strict C11" gcc $WARN -Iinclude -fsyntax-only examples/hello.c
check "api test compiles" gcc $WARN -g -Iinclude tests/c/test_api.c -o "$TMP/test_api" -L"$LIB" -Wl,-rpath,"$LIB" -lmyriad -lpthread
out=$("$TMP/test_api" 2>/dev/null)
echo "$out" | grep -E '^FAIL' || true
check "api test: $(echo "$out" | tail -1)" grep -q '^[0-9]* passed, 0 failed$' <<<"$out"

# ---- the demo under valgrind: every route over HTTP and FastCGI ----
valgrind -q --leak-check=full --errors-for-leak-kinds=definite,indirect --error-exitcode=99 \
    --log-file="$TMP/vg.log" build/hello --http 127.0.0.1:0 --fcgi 127.0.0.1:0 --threads 2 >"$TMP/hello.out" &
VPID=$!
for _ in $(seq 1 300); do [ "$(grep -c listening "$TMP/hello.out")" = 2 ] && break; sleep 0.1; done
H=$(awk '/^listening http/{print $3}' "$TMP/hello.out")
F=$(awk '/^listening fcgi/{print $3}' "$TMP/hello.out")
check "demo prints its listeners" test -n "$H" -a -n "$F"

expect() { # name, expected, command...
    local name=$1 want=$2; shift 2
    local got; got=$("$@" 2>/dev/null)
    if [ "$got" = "$want" ]; then ok "$name"; else bad "$name: got [$got] want [$want]"; fi
}
fcgi() { # method uri [body] -> CGI response
    local m=$1 uri=$2 body=${3:-}
    env -i REQUEST_METHOD="$m" REQUEST_URI="$uri" SCRIPT_NAME="${uri%%\?*}" QUERY_STRING="$( [[ $uri == *\?* ]] && echo "${uri#*\?}")" \
        SERVER_PROTOCOL=HTTP/1.1 REMOTE_ADDR=127.0.0.1 REMOTE_PORT=1234 CONTENT_TYPE=text/x CONTENT_LENGTH=${#body} \
        "$(command -v cgi-fcgi)" -bind -connect "$F" <<<"$body" | tr -d '\r'
}
fbody() { fcgi "$@" | sed '1,/^$/d'; }
fstatus() { fcgi "$@" | sed -n 's/^Status: \([0-9]*\).*/\1/p'; }

C="curl -sS --max-time 10"
expect "http GET /" "Hello, World!" $C "http://$H/"
expect "http HEAD /" "200 13" $C -I -o /dev/null -w '%{http_code} %header{content-length}' "http://$H/"
expect "http POST /echo" "echo body|text/x" $C -H 'Content-Type: text/x' --data-binary 'echo body' -w '|%{content_type}' "http://$H/echo"
expect "http PUT /echo chunked" "chunked!|application/octet-stream" $C -X PUT -H 'Content-Type:' -H 'Transfer-Encoding: chunked' --data-binary 'chunked!' -w '|%{content_type}' "http://$H/echo"
expect "http GET /env" "REQUEST_METHOD=GET" bash -c "$C 'http://$H/env' | grep '^REQUEST_METHOD='"
expect "http GET /stream" "aaabbbccc" $C "http://$H/stream?chunks=3&bytes=3"
expect "http GET /delay" "delayed 50" $C "http://$H/delay?ms=50"
expect "http GET /work" "worked 50" $C "http://$H/work?ms=50"
expect "http 404" "404" $C -o /dev/null -w '%{http_code}' "http://$H/nope"
expect "http 404 body" "Not Found" $C "http://$H/nope"
expect "fcgi GET /" "Hello, World!" fbody GET /
expect "fcgi POST /echo" "over fcgi" fbody POST /echo "over fcgi"
expect "fcgi GET /env" "QUERY_STRING=x=1" bash -c "$(declare -f fcgi fbody); F=$F; fbody GET '/env?x=1' | grep '^QUERY_STRING='"
expect "fcgi GET /stream" "aabbcc" fbody GET "/stream?chunks=3&bytes=2"
expect "fcgi GET /delay" "delayed 20" fbody GET "/delay?ms=20"
expect "fcgi GET /work" "worked 20" fbody GET "/work?ms=20"
expect "fcgi 404" "404" fstatus GET /nope

# Graceful stop with a request in flight: it completes, the demo exits 0.
$C "http://$H/delay?ms=300" >"$TMP/inflight" &
CPID=$!
sleep 0.1
kill -TERM "$VPID"
wait "$CPID"
check "in-flight request finished on SIGTERM" grep -q 'delayed 300' "$TMP/inflight"
wait "$VPID"; rc=$?
VPID=
check "demo exits 0 under valgrind with no leaks or errors (rc=$rc)" test "$rc" = 0
[ "$rc" = 0 ] || cat "$TMP/vg.log"

# Bad flags: usage and exit 2.
build/hello --bogus 2>"$TMP/usage"; rc=$?
check "bad flag exits 2 with usage" test "$rc" = 2 -a -s "$TMP/usage"

# ---- install + pkg-config ----
make -s PROFILE=debug install PREFIX="$TMP/prefix" >/dev/null
cat >"$TMP/app.c" <<'C'
#include <myriad.h>
#include <stdio.h>
#include <string.h>
int main(void) {
    myriad_loop_t *lp;
    if (myriad_loop_new(&lp) != MYRIAD_OK) return 1;
    myriad_loop_free(lp);
    printf("%s\n", myriad_version());
    return strcmp(myriad_version(), MYRIAD_VERSION_STRING) != 0;
}
C
export PKG_CONFIG_PATH="$TMP/prefix/lib/pkgconfig"
check "installed library has its soname" bash -c "readelf -d '$TMP/prefix/lib/libmyriad.so.0.1.0' | grep -q 'SONAME.*libmyriad.so.0'"
check "a program builds against the install with pkg-config" \
    bash -c "gcc $WARN \$(pkg-config --cflags myriad) '$TMP/app.c' -o '$TMP/app' \$(pkg-config --libs myriad)"
check "and runs" bash -c "LD_LIBRARY_PATH='$TMP/prefix/lib' '$TMP/app' | grep -q '^0.1.0$'"
check "static library links too" \
    bash -c "gcc $WARN \$(pkg-config --cflags myriad) '$TMP/app.c' -o '$TMP/app_static' '$TMP/prefix/lib/libmyriad.a' -lpthread -ldl -lm && '$TMP/app_static' >/dev/null"

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
