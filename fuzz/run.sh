#!/usr/bin/env bash
# Runs every cargo-fuzz target for a bounded time (FUZZ_SECONDS each, default 60) over its
# committed seed corpus, as CI does. The committed corpus is only read: what the fuzzer finds
# goes to a scratch folder that is removed afterwards. Exits non-zero if any target crashes,
# printing the crashing input (also kept under fuzz/artifacts/<target>/ to reproduce with
# `cargo fuzz run <target> <file>`). Ends with the line `N passed, M failed`.
#
# cargo-fuzz needs nightly-only rustc flags (-Zsanitizer=address, sancov passes); the stable
# toolchain accepts them with RUSTC_BOOTSTRAP=1, set here for these builds only.
#
#   FUZZ_SECONDS=10 fuzz/run.sh              # shorter
#   FUZZ_SECONDS=600 fuzz/run.sh input_line  # one target, longer
#   FUZZ_TARGET_DIR=~/.cache/vllm-batch-fuzz fuzz/run.sh   # reuse a build between checkouts
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

CARGO_FUZZ_VERSION=0.13.2
FUZZ_SECONDS=${FUZZ_SECONDS:-60}
export RUSTC_BOOTSTRAP=1
# Parallel codegen: with the default single codegen unit the instrumented build of the whole
# dependency tree (axum, sqlx, sentry, …) takes about twice as long on two cores.
BUILD=(--fuzz-dir . --codegen-units 16)
if [ -n "${FUZZ_TARGET_DIR:-}" ]; then
    BUILD+=(--target-dir "$FUZZ_TARGET_DIR")
fi

step() { printf '\n==> %s\n' "$*"; }

if ! cargo fuzz --version 2>/dev/null | grep -qF "$CARGO_FUZZ_VERSION"; then
    step "installing cargo-fuzz $CARGO_FUZZ_VERSION"
    cargo install cargo-fuzz --locked --version "$CARGO_FUZZ_VERSION"
fi

step "building the fuzz targets (AddressSanitizer + libFuzzer)"
start=$SECONDS
cargo fuzz build "${BUILD[@]}"
echo "built in $((SECONDS - start))s"

if [ $# -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list --fuzz-dir .)
fi

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
# The targets run side by side, each for FUZZ_SECONDS of wall time: the whole run takes about
# FUZZ_SECONDS however many targets there are.
step "fuzzing ${targets[*]} for ${FUZZ_SECONDS}s"
pids=()
for target in "${targets[@]}"; do
    mkdir -p "$scratch/$target" "artifacts/$target"
    # The first folder receives new inputs; the committed seeds are only read. Leak detection is
    # off: the targets keep a runtime, a database pool and metrics alive across inputs on purpose.
    cargo fuzz run "${BUILD[@]}" "$target" "$scratch/$target" "corpus/$target" -- \
        -max_total_time="$FUZZ_SECONDS" -detect_leaks=0 -rss_limit_mb=2048 -timeout=30 \
        -print_final_stats=1 >"$scratch/$target.log" 2>&1 &
    pids+=($!)
done
passed=0
failed=0
for i in "${!targets[@]}"; do
    target=${targets[$i]}
    log="$scratch/$target.log"
    if wait "${pids[$i]}"; then
        runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
        rss=$(sed -n 's/^stat::peak_rss_mb: *//p' "$log")
        echo "ok   $target: ${runs:-?} inputs, peak RSS ${rss:-?} MB"
        passed=$((passed + 1))
    else
        failed=$((failed + 1))
        echo "FAIL $target; the end of its log:"
        tail -n 60 "$log"
        for crash in $(grep -oE "artifacts/$target/[a-z]+-[0-9a-f]+" "$log" | sort -u); do
            echo "FAIL $target input $crash ($(wc -c <"$crash") bytes), base64:"
            head -c 4096 "$crash" | base64 -w 0
            echo
        done
    fi
done
echo
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
