#!/usr/bin/env bash
# tests/valgrind.sh — the short runs of tests/short_runs.sh (every command, tiny models, a few
# bad inputs) and the fuzz corpus replays under valgrind's memcheck: invalid reads and writes,
# uninitialised values that decide a branch, and leaks (definite, indirect and possible) all
# fail. Not part of test.sh (valgrind is slow and often absent); run it by hand:
#     tests/valgrind.sh
# The program is built for it without -march=native (valgrind does not decode AVX-512) and
# without OpenMP (libgomp's thread pool would show up as "possibly lost" memory).
# Ends with "N passed, M failed" like the other test scripts; exits non-zero on any failure.
set -u
cd "$(dirname "$0")/.."
if ! command -v valgrind >/dev/null 2>&1; then echo "skip: valgrind is not installed"; exit 0; fi
make -s sirt tests/test_core || exit 1
build=$(mktemp -d) || { echo "cannot make a scratch directory in TMPDIR=${TMPDIR-}"; exit 1; }
trap 'rm -rf "$build"' EXIT
flags=(-std=c11 -Wall -Wextra -Wno-unknown-pragmas -O1 -g)
cc "${flags[@]}" -o "$build/sirt_vg" sirt.c -lm || exit 1
vg=(valgrind -q --leak-check=full --errors-for-leak-kinds=definite,indirect,possible
    --show-leak-kinds=definite,indirect,possible --error-exitcode=99)

echo "== short runs under valgrind"
tests/short_runs.sh "$build/work" "${vg[@]}" "$build/sirt_vg" | tee "$build/short.txt" | grep -v '^[0-9]* passed'
passed=$(grep -c '^ok' "$build/short.txt")
failed=$(grep -c '^FAIL' "$build/short.txt")

echo "== fuzz corpus and crash replays under valgrind"
for harness in tests/fuzz/fuzz_*.c; do
    name=$(basename "$harness" .c | sed 's/^fuzz_//')
    cc "${flags[@]}" -o "$build/replay_$name" "$harness" tests/fuzz/replay.c -lm || exit 1
    files=()
    for f in tests/fuzz/corpus/"$name"/* tests/fuzz/crashes/"$name"/*; do [ -f "$f" ] && files+=("$f"); done
    if "${vg[@]}" "$build/replay_$name" "${files[@]}" >"$build/replay.txt" 2>&1; then
        passed=$((passed + 1)); echo "ok: replay_$name: ${#files[@]} files, no memcheck error"
    else
        failed=$((failed + 1)); echo "FAIL: replay_$name under valgrind"; tail -30 "$build/replay.txt"
    fi
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
