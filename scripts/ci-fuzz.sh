#!/usr/bin/env bash
# Runs every fuzz target in fuzz/ for a bounded time, starting from the seed corpus kept in
# fuzz/seeds/TARGET. A crash (panic, overflow, failed assertion) fails the script and leaves
# the input in fuzz/artifacts/TARGET/.
#
#   FUZZ_SECONDS=25 bash scripts/ci-fuzz.sh          # seconds per target (default 25)
#   bash scripts/ci-fuzz.sh provider_headers         # only the named targets
#
# cargo-fuzz needs nightly compiler flags: on the stable toolchain they are unlocked with
# RUSTC_BOOTSTRAP=1. No sanitizer: the crates forbid unsafe code, so what fuzzing can find
# is panics and arithmetic overflow (debug assertions and overflow checks stay on).
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_PER_TARGET="${FUZZ_SECONDS:-25}"
export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-$PWD/fuzz/target}"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "ci-fuzz: installing cargo-fuzz"
    cargo install --locked cargo-fuzz
fi

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo fuzz list --fuzz-dir fuzz)
fi

# The first `cargo fuzz run` builds (a cold build takes ~5 min on 2 cores); the time limit
# counts from the fuzzer's start, not the build's.
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
for t in "${targets[@]}"; do
    # New inputs go to a scratch corpus; the seeds in the repository are only read.
    mkdir -p "$work/$t" "fuzz/artifacts/$t"
    echo "ci-fuzz: $t for ${SECONDS_PER_TARGET}s"
    if ! cargo fuzz run --fuzz-dir fuzz --sanitizer none --debug-assertions "$t" \
        "$work/$t" "fuzz/seeds/$t" -- \
        -max_total_time="$SECONDS_PER_TARGET" -max_len=4096 -timeout=10 -rss_limit_mb=1024 \
        -artifact_prefix="fuzz/artifacts/$t/" -print_final_stats=1 >"$work/$t.log" 2>&1; then
        tail -n 60 "$work/$t.log"
        echo "ci-fuzz: $t failed; the input is in fuzz/artifacts/$t/; reproduce with:"
        echo "  RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir fuzz --sanitizer none $t fuzz/artifacts/$t/<file>"
        exit 1
    fi
    grep -E '^stat::number_of_executed_units|^#[0-9]+ +DONE' "$work/$t.log" || true
done
echo "ci-fuzz: ${#targets[@]} targets, no crash"
