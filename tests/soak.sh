#!/usr/bin/env bash
# The reduced soak (bench/soak/soak.py --reduced, under a minute): the C demo (build/hello,
# as tests/c/run.sh built it) against 200 slowloris connections (none left after the header
# timeout, others served), 40 slow readers of a 4 MiB response (RSS bounded), an fd limit of
# 64 with 120 clients (served, no spin, recovers), mixed keep-alive uploads, 300 resets
# (no fd leak), 1,800 mutated HTTP and FastCGI requests (no crash, hang or malformed
# response) and a subset under valgrind (no error, no leak). Ends with "N passed, M failed".
set -uo pipefail
cd "$(dirname "$0")/.."
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [ ! -x build/hello ]; then
    make -s PROFILE=debug hello >/dev/null || { echo "0 passed, 1 failed"; exit 1; }
fi
for c in wrk prlimit; do
    command -v "$c" >/dev/null || { echo "soak: $c missing (scripts/setup.sh)"; echo "0 passed, 1 failed"; exit 1; }
done
timeout 300 python3 bench/soak/soak.py --reduced
