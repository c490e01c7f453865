#!/usr/bin/env bash
# Builds and runs the demo server (setup included). Extra arguments go to the demo.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release --example echo
exec ./target/release/examples/echo "$@"
