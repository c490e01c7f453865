#!/usr/bin/env bash
# Builds and runs the demo server in C (examples/hello.c on libmyriad), setup included.
# Extra arguments go to the demo, e.g.  scripts/demo.sh --http 127.0.0.1:0 --fcgi unix:/tmp/h.sock
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
make -s hello
exec ./build/hello "$@"
