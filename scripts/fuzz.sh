#!/usr/bin/env bash
# Runs every fuzz target (fuzz/fuzz_targets/) for SECONDS each (default 60), on the stable
# toolchain: cargo-fuzz with --sanitizer none needs no nightly flag (no -Z, no
# RUSTC_BOOTSTRAP); libFuzzer's coverage comes from stable codegen options. Debug
# assertions are on (-a), so overflow checks count as findings too.
#   scripts/fuzz.sh [SECONDS] [TARGET...]
# Each target starts from its committed seeds (fuzz/seeds/TARGET) plus the working corpus
# of earlier runs (fuzz/corpus/TARGET, not committed); a finding is written to
# fuzz/artifacts/TARGET/ and replayed with
#   cd fuzz && cargo fuzz run --sanitizer none -a TARGET artifacts/TARGET/crash-...
# Prints one line per target (executions, coverage, verdict) and "N passed, M failed".
set -uo pipefail
cd "$(dirname "$0")/../fuzz"
secs=${1:-60}
shift || true
command -v cargo-fuzz >/dev/null || { echo "fuzz: cargo-fuzz missing (scripts/setup.sh)"; exit 1; }
if ! nice -n 10 cargo fuzz build --sanitizer none -a >build.log 2>&1; then
    tail -30 build.log
    echo "0 passed, 1 failed"
    exit 1
fi
targets=("$@")
((${#targets[@]})) || mapfile -t targets < <(cargo fuzz list)
pass=0 fail=0
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "seeds/$t" "artifacts/$t"
    log="corpus/$t.log"
    # -timeout: an input running 10 s is a hang (a finding); -rss_limit_mb: a leak is one.
    nice -n 10 cargo fuzz run --sanitizer none -a "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
        -print_final_stats=1 >"$log" 2>&1
    rc=$?
    execs=$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' | tail -1)
    cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -1)
    if [ "$rc" -eq 0 ] && ! grep -q 'Test unit written' "$log"; then
        pass=$((pass + 1))
        echo "fuzz $t: ${execs:-?} execs in ${secs}s, ${cov:-cov: ?}, no finding"
    else
        fail=$((fail + 1))
        echo "fuzz $t: FINDING after ${execs:-?} execs (exit $rc):"
        grep -E -A8 'panicked|ERROR: libFuzzer|Test unit written' "$log" | head -30
    fi
done
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
