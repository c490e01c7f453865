#!/usr/bin/env bash
# Listeners as an operator meets them, for each demo (C, Lua 5.4, Node): behind a real nginx
# whose workers run as nobody, the Unix sockets get their mode and group from the address
# (`unix:PATH?mode=0660&group=nogroup`, no chmod by hand) and answer over FastCGI and HTTP,
# while the default mode (the umask's: owner only) gives nginx's 502; and the errors a
# demo prints name what failed (the port in use, the missing directory, a host name).
#   tests/listen_e2e.sh        (needs build/hello, bindings/node/build/myriad.node; root)
# Ends with "N passed, M failed".
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
pass=0
fail=0
ok() { pass=$((pass + 1)); echo "ok   $1"; }
bad() { fail=$((fail + 1)); echo "FAIL $1"; }
TMP=$(mktemp -d)
chmod 755 "$TMP" # nginx's workers (nobody) must reach the sockets in it
NPID=""
DPID=""
cleanup() {
    [ -n "$DPID" ] && kill "$DPID" 2>/dev/null
    [ -n "$NPID" ] && kill "$NPID" 2>/dev/null
    wait 2>/dev/null
    rm -rf "$TMP"
}
trap cleanup EXIT

make -s PROFILE=debug hello >/dev/null || { echo "0 passed, 1 failed"; exit 1; }
mkdir -p "$TMP/lua"
gcc -std=c99 -O2 -fPIC -shared -Iinclude -I/usr/include/lua5.4 bindings/lua/myriad.c -o "$TMP/lua/myriad.so" \
    -Ltarget/debug -Wl,-rpath,"$ROOT/target/debug" -lmyriad || bad "Lua module builds"
[ -f bindings/node/build/myriad.node ] ||
    (cd bindings/node && MYRIAD_PROFILE=debug npm install --no-audit --no-fund --loglevel=error >/dev/null) ||
    bad "Node addon builds"
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

declare -A DEMO=(
    [c]="build/hello"
    [lua]="env LUA_CPATH=$TMP/lua/?.so lua5.4 examples/hello.lua"
    [js]="node examples/hello.js"
)

# Starts demo $1 with the remaining flags; waits for its listening lines (count $2).
start_demo() {
    local name=$1 want=$2; shift 2
    : >"$TMP/out"
    ${DEMO[$name]} "$@" >"$TMP/out" 2>"$TMP/err" &
    DPID=$!
    for _ in $(seq 1 200); do [ "$(grep -c '^listening' "$TMP/out")" -ge "$want" ] && return 0; sleep 0.05; done
    echo "  demo $name did not start: $(cat "$TMP/err")"
    return 1
}
stop_demo() { [ -n "$DPID" ] && kill "$DPID" 2>/dev/null; wait "$DPID" 2>/dev/null; DPID=""; }

start_nginx() { # fcgi socket, http socket
    NPORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    cat >"$TMP/nginx.conf" <<EOF
user nobody nogroup;
worker_processes 1;
daemon off;
pid $TMP/nginx.pid;
error_log $TMP/nginx.err error;
events { worker_connections 64; }
http {
    access_log off;
    client_body_temp_path $TMP/body;
    proxy_temp_path $TMP/proxy;
    fastcgi_temp_path $TMP/fcgi;
    server {
        listen 127.0.0.1:$NPORT;
        location /f/ { include /etc/nginx/fastcgi_params; fastcgi_param REQUEST_URI /; fastcgi_pass unix:$1; }
        location /h/ { proxy_pass http://unix:$2:/; }
    }
}
EOF
    "$NGINX" -c "$TMP/nginx.conf" -e "$TMP/nginx.err" &
    NPID=$!
    for _ in $(seq 1 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$NPORT") 2>/dev/null && break
        kill -0 "$NPID" 2>/dev/null || break
        sleep 0.05
    done
}
stop_nginx() { [ -n "$NPID" ] && kill "$NPID" 2>/dev/null; wait "$NPID" 2>/dev/null; NPID=""; }
get() { curl -sS --max-time 10 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$NPORT$1" 2>/dev/null; }

for name in c lua js; do
    F=$TMP/$name-f.sock
    H=$TMP/$name-h.sock
    # The default mode: what the umask leaves (owner only), so nginx's nobody gets EACCES.
    if start_demo "$name" 2 --fcgi "unix:$F" --http "unix:$H"; then
        start_nginx "$F" "$H"
        mode=$(stat -c %a "$F")
        code=$(get /f/)
        if [ "$code" = 502 ] && grep -q 'Permission denied' "$TMP/nginx.err"; then
            ok "[$name] default mode $mode: nginx as nobody is refused (502, EACCES)"
        else
            bad "[$name] default mode $mode: got $code"
        fi
        stop_nginx
        stop_demo
    else
        bad "[$name] starts on unix sockets"
    fi
    # Mode and group from the address: nginx's workers (nobody:nogroup) connect.
    if start_demo "$name" 2 --fcgi "unix:$F?mode=0660&group=nogroup" --http "unix:$H?mode=0666"; then
        start_nginx "$F" "$H"
        st_f=$(stat -c '%a %G' "$F")
        st_h=$(stat -c '%a' "$H")
        [ "$st_f" = "660 nogroup" ] && [ "$st_h" = 666 ] && ok "[$name] sockets made 660 nogroup and 666" ||
            bad "[$name] socket modes: $st_f / $st_h"
        body=$(curl -sS --max-time 10 "http://127.0.0.1:$NPORT/f/" 2>&1)
        [ "$body" = "Hello, World!" ] && ok "[$name] nginx (nobody) -> FastCGI unix socket, no chmod" ||
            bad "[$name] FastCGI through nginx: $body $(tail -2 "$TMP/nginx.err")"
        body=$(curl -sS --max-time 10 "http://127.0.0.1:$NPORT/h/" 2>&1)
        [ "$body" = "Hello, World!" ] && ok "[$name] nginx (nobody) -> HTTP unix socket, no chmod" ||
            bad "[$name] HTTP through nginx: $body $(tail -2 "$TMP/nginx.err")"
        stop_nginx
        stop_demo
    else
        bad "[$name] starts with socket options"
    fi

    # Errors that name what failed.
    start_demo "$name" 1 --http 127.0.0.1:0 || bad "[$name] starts"
    A=$(awk '/^listening http/{print $3}' "$TMP/out")
    expect_err() { # what, pattern, flags...
        local what=$1 pat=$2; shift 2
        ${DEMO[$name]} "$@" >/dev/null 2>"$TMP/err2" </dev/null &
        local p=$!
        for _ in $(seq 1 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.05; done
        kill "$p" 2>/dev/null
        wait "$p" 2>/dev/null
        if grep -qE "$pat" "$TMP/err2"; then ok "[$name] $what"; else bad "[$name] $what: $(cat "$TMP/err2")"; fi
    }
    expect_err "port in use names the listener" "http listener $A: Address already in use" --http "$A"
    # (the Lua and Node demos run one thread)
    [ "$name" = c ] && expect_err "a second instance does not share the port with --threads 2 either" \
        "http listener $A: Address already in use" --http "$A" --threads 2
    stop_demo
    expect_err "a missing directory is named" "unix:/nonexistent/x.sock: No such file or directory \(the directory /nonexistent does not exist\)" \
        --fcgi unix:/nonexistent/x.sock
    expect_err "a host name is refused as such" "nosuchhost.invalid.*host name.*numeric" --http nosuchhost.invalid:80
done

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
