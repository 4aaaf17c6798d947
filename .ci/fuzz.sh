#!/usr/bin/env bash
# Fuzz every parser of outside input for a bounded time (issue 5): .ci/fuzz.sh [SECONDS_PER_TARGET]
#
# Targets live in fuzz/fuzz_targets (see docs/fuzzing.md); seeds in fuzz/corpus/<target>/ are
# read, never written: new inputs go to a scratch directory that is thrown away. A crash fails
# the run; its input is kept in fuzz/artifacts/<target>/ and the libFuzzer report is printed:
# turn it into a unit test next to the code, fix, and add the input to the seeds.
#
# cargo-fuzz needs nightly-only rustc flags (-Zsanitizer=address): on a stable toolchain this
# script sets RUSTC_BOOTSTRAP=1 for the fuzz build only (fuzz/ is its own workspace; nothing
# else is built with it). Installs cargo-fuzz if it is missing.
set -uo pipefail
cd "$(dirname "$0")/.."

per_target=${1:-30}
cargo_fuzz_version=0.13.2
targets=(misp_wire validate warninglist snapshot store_file query_request)
# Sanitizer: address by default (catches memory errors in dependencies' unsafe code);
# FUZZ_SANITIZER=none runs more inputs in the same time (needs a full rebuild of the fuzz build).
sanitizer=${FUZZ_SANITIZER:-address}

started=$(date +%s)
elapsed() { echo $(( $(date +%s) - started )); }

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz $cargo_fuzz_version"
    cargo install --locked --quiet cargo-fuzz --version "$cargo_fuzz_version" || exit 1
fi
if ! rustc --version | grep -q nightly; then
    export RUSTC_BOOTSTRAP=1
fi

echo "== build ($(cargo fuzz --version), $(rustc --version), sanitizer $sanitizer)"
# One build for all targets: mispd and its dependencies are compiled once.
if ! cargo fuzz build --sanitizer "$sanitizer" >fuzz/build.log 2>&1; then
    cat fuzz/build.log
    echo "FAIL: cargo fuzz build"
    exit 1
fi
echo "built in $(elapsed)s"

failed=0
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
for t in "${targets[@]}"; do
    mkdir -p "$scratch/$t" "fuzz/artifacts/$t"
    log=$scratch/$t.log
    # -rss_limit_mb: a body of a few KiB must not make the daemon use 2 GiB either.
    cargo fuzz run --sanitizer "$sanitizer" "$t" "$scratch/$t" "fuzz/corpus/$t" -- \
        -max_total_time="$per_target" -rss_limit_mb=2048 -max_len=65536 -timeout=10 \
        -print_final_stats=1 >"$log" 2>&1
    rc=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    secs=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1)
    if [ "$rc" -eq 0 ]; then
        echo "PASS: $t: ${per_target}s, ${runs:-?} executions (${secs:-?}/s), ${cov:-cov: ?}, no crash"
    else
        tail -n 60 "$log"
        echo "FAIL: $t (exit $rc): crash input in fuzz/artifacts/$t/"
        failed=$((failed + 1))
    fi
done
echo "fuzz: $(elapsed)s in all, $failed target(s) failed"
[ "$failed" -eq 0 ]
