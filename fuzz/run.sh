#!/usr/bin/env bash
# Runs one fuzz target under libFuzzer with AddressSanitizer, on the stable toolchain:
#
#     fuzz/run.sh <target> [libFuzzer options, e.g. -max_total_time=60]
#
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`). AddressSanitizer is an unstable
# rustc flag (-Zsanitizer=address): RUSTC_BOOTSTRAP=1 lets stable rustc accept it. Optimized,
# with overflow checks and debug assertions on. New inputs
# go to fuzz/corpus/<target> (not committed), the seeds are read from fuzz/seeds/<target>, and a
# crash is written to fuzz/artifacts/<target>/.
set -euo pipefail
cd "$(dirname "$0")"
if (($# < 1)); then
    echo "usage: fuzz/run.sh <target> [libFuzzer options]; targets: $(ls fuzz_targets | sed 's/\.rs$//' | tr '\n' ' ')" >&2
    exit 2
fi
target=$1
shift
mkdir -p "corpus/$target"
RUSTC_BOOTSTRAP=1 exec cargo fuzz run --release --debug-assertions "$target" "corpus/$target" "seeds/$target" -- "$@"
