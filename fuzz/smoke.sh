#!/usr/bin/env bash
# CI smoke for the fuzz targets, on stable rustc and without installing anything: builds every
# target with libFuzzer's coverage instrumentation (the flags cargo-fuzz passes, minus
# AddressSanitizer, which needs RUSTC_BOOTSTRAP) and runs each for a few seconds from its seeds
# and saved crashes. A crash fails the run and names the input it wrote.
#
#     fuzz/smoke.sh            # FUZZ_SMOKE_SECONDS=5 per target by default
#
# The build shares the workspace's target directory: after `cargo test --workspace` the host
# build scripts and proc macros are already there. --target keeps RUSTFLAGS off them.
set -euo pipefail
cd "$(dirname "$0")"
seconds=${FUZZ_SMOKE_SECONDS:-5}
host=$(rustc -vV | sed -n 's/^host: //p')
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/../target}
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing"
start=$SECONDS
cargo build --locked --target "$host" --bins
echo "fuzz smoke: built the targets in $((SECONDS - start)) s"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for src in fuzz_targets/*.rs; do
    t=$(basename "$src" .rs)
    mkdir -p "$work/$t"
    dirs=("$work/$t" "seeds/$t")
    [[ -d regressions/$t ]] && dirs+=("regressions/$t")
    if ! "$CARGO_TARGET_DIR/$host/debug/$t" "${dirs[@]}" -max_total_time="$seconds" \
        -print_final_stats=1 -artifact_prefix="$PWD/artifacts-smoke-$t-" >"$work/$t.log" 2>&1; then
        tail -n 40 "$work/$t.log"
        echo "fuzz smoke: $t FAILED (input saved as fuzz/artifacts-smoke-$t-*)" >&2
        exit 1
    fi
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/$t.log")
    echo "fuzz smoke: $t ok, $runs executions in ${seconds} s"
done
echo "fuzz smoke: done in $((SECONDS - start)) s"
