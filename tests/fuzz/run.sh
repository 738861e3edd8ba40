#!/usr/bin/env bash
# tests/fuzz/run.sh — runs fuzz harnesses one after the other (`make fuzz` calls it):
#     tests/fuzz/run.sh NAME...
# Each runs for $FUZZ_SECONDS as one single-threaded process with the libFuzzer flags in
# $FUZZ_RUN_FLAGS, on its seed corpus tests/fuzz/corpus/NAME (read only) plus
# tests/fuzz/work/NAME, where the inputs it finds go (not committed). A crash, a leak, a hang or
# an allocation over the limit is saved in tests/fuzz/crashes/NAME/ (commit it: test.sh replays
# it from then on). Prints each harness's last status line (executions, coverage) and ends
# with the list of harnesses that found something; exits 1 if any did.
set -u
cd "$(dirname "$0")/../.."
: "${FUZZ_SECONDS:=60}"
: "${FUZZ_RUN_FLAGS:=-rss_limit_mb=2048 -malloc_limit_mb=512 -timeout=10 -max_total_time=$FUZZ_SECONDS}"
export OMP_NUM_THREADS=1
found=""
for name in "$@"; do
    mkdir -p "tests/fuzz/crashes/$name" "tests/fuzz/work/$name"
    log="tests/fuzz/work/$name.log"
    echo "== fuzz_$name for $FUZZ_SECONDS s (log: $log)"
    # shellcheck disable=SC2086
    "tests/fuzz/bin/fuzz_$name" $FUZZ_RUN_FLAGS -print_final_stats=1 \
        -artifact_prefix="tests/fuzz/crashes/$name/" \
        "tests/fuzz/work/$name" "tests/fuzz/corpus/$name" >"$log" 2>&1
    status=$?
    grep -E '^#[0-9]+' "$log" | tail -1
    grep -E '^stat::number_of_executed_units|^stat::peak_rss_mb' "$log"
    if [ "$status" -ne 0 ]; then
        found="$found $name"
        grep -E 'ERROR|SUMMARY|Test unit written|property failed' "$log" | head -5
    fi
done
if [ -n "$found" ]; then echo "found something:$found"; exit 1; fi
echo "no crash, leak, hang or oversized allocation in:" "$@"
