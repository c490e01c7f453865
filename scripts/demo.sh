#!/usr/bin/env bash
# Builds and runs the demo server (setup included). Extra arguments go to the demo, e.g.
#   scripts/demo.sh --http 127.0.0.1:0 --threads 2
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release --example hello
exec ./target/release/examples/hello "$@"
