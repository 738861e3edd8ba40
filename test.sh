#!/usr/bin/env bash
# test.sh — every test of the project. Run after `make`; it builds the test programs itself.
# Prints one line per check and ends with "N passed, M failed"; exits non-zero on any failure.
set -u
cd "$(dirname "$0")"
passed=0
failed=0
skipped=0
ok()   { passed=$((passed + 1)); echo "ok: $*"; }
bad()  { failed=$((failed + 1)); echo "FAIL: $*"; }
skip() { skipped=$((skipped + 1)); echo "skip: $*"; }
section() { echo "== $* (${SECONDS}s into test.sh)"; } # a group of checks, and when it began
expect() { # expect DESCRIPTION COMMAND...: the command succeeds
    local desc=$1; shift
    if "$@" >"$work/out.txt" 2>&1; then ok "$desc"; else bad "$desc"; tail -5 "$work/out.txt"; fi
}
# expect_error DESCRIPTION PATTERN COMMAND...: exits 1 (not a crash) with one error line matching
expect_error() {
    local desc=$1 pattern=$2; shift 2
    "$@" >"$work/out.txt" 2>"$work/err.txt"
    local rc=$?
    local lines; lines=$(wc -l <"$work/err.txt")
    if [ "$rc" -eq 1 ] && [ "$lines" -eq 1 ] && grep -q -- "$pattern" "$work/err.txt"; then
        ok "$desc: $(cat "$work/err.txt")"
    else
        bad "$desc: exit $rc, stderr: $(head -3 "$work/err.txt")"
    fi
}

# OpenMP threads waiting at a barrier sleep instead of spinning: on a machine shared with other
# jobs (a CI runner) spinning threads slow every test tenfold. It changes no result.
export OMP_WAIT_POLICY=passive

# Every file of the run goes in $work, a fresh directory, removed at the end (chmod first: a
# check below makes a read-only directory in it). The programs run here make their own scratch
# directories in $TMPDIR: it is $work/tmp, and the last checks find anything left in it, or in
# the checkout.
work=$(mktemp -d) || { echo "cannot make a scratch directory in TMPDIR=${TMPDIR-}"; echo "0 passed, 1 failed"; exit 1; }
trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT
mkdir "$work/tmp" && export TMPDIR="$work/tmp"

# the builds run a compiler per core: each test program compiles the whole of sirt.c
jobs=$(nproc 2>/dev/null || echo 2)
make -s -j"$jobs" sirt tests || { echo "build failed"; echo "0 passed, 1 failed"; exit 1; }
# the files in the checkout that git does not track, and the tracked files changed, before the tests
in_checkout() { { git ls-files --others; git diff --name-only; } 2>/dev/null | sort -u; }
git rev-parse --is-inside-work-tree >/dev/null 2>&1 && in_checkout >"$work/checkout_before.txt"

# Adds the "ok"/"FAIL" lines of a test program's output ($1, the program $2 ended with status
# $3) to the totals. It must end with "N passed, 0 failed" and exit 0: under the sanitizers a
# leak found at exit comes after that line, with exit status 86.
count_unit() {
    grep -v '^[0-9]* passed' "$1"
    passed=$((passed + $(grep -c '^ok' "$1")))
    failed=$((failed + $(grep -c '^FAIL' "$1")))
    skipped=$((skipped + $(grep -c '^skip' "$1")))
    if ! grep -q '^[0-9]* passed, 0 failed$' "$1" || [ "$3" -ne 0 ]; then
        failed=$((failed + 1)); echo "FAIL: $2 did not finish cleanly (exit $3)"; tail -20 "$1"
    fi
}
# Runs one of the C test programs (from tests/, or from $unit_dir) and counts its lines.
unit_dir=tests
unit() {
    local name=$1; shift
    section "unit tests ($unit_dir/$name)"
    "./$unit_dir/$name" "$@" >"$work/$name.txt" 2>&1
    count_unit "$work/$name.txt" "$unit_dir/$name" $?
}
# The unit tests, run twice: by the normal build here, under the sanitizers further down. Each
# writes only in a scratch directory it makes in $TMPDIR (tests/check.h: scratch_make).
unit_tests() {
    unit test_core                          # kernels, gradients, AdamW, checkpoints
    unit test_tokenizer ../shared/data      # BPE, GPT-2 encoding, file formats
    unit test_text ../shared/data/gsm8k     # JSON lines, templates, GSM8K
    unit test_sft                           # SFT batches, masking, truncation
    unit test_generate                      # KV-cache decoding, the sampler, determinism
    unit test_answer ../shared/data/gsm8k   # answer extraction, step truth
    unit test_dpo                           # preference losses and their gradients
    unit test_prm                           # process feedback: step labels, the PRM, its gradients
    unit test_task                          # the built-in task
    unit test_repro                         # the reproduction's statistics
}
unit_tests

# Feeds every seed-corpus and saved-crash input of the fuzz harnesses (tests/fuzz) to its harness
# through the replay programs in $1 (tests/fuzz/replay.c, no clang needed). A file named ok_* must
# be accepted and bad_* rejected; all must be survived. $2 = 1: one line per input.
replay() {
    local dir=$1 each=$2 harness name f
    for harness in tests/fuzz/fuzz_*.c; do
        name=$(basename "$harness" .c); name=${name#fuzz_}
        local files=()
        for f in tests/fuzz/corpus/"$name"/* tests/fuzz/crashes/"$name"/*; do [ -f "$f" ] && files+=("$f"); done
        if "./$dir/replay_$name" "${files[@]}" >"$work/replay.txt" 2>&1; then
            if [ "$each" = 1 ]; then
                while IFS= read -r line; do ok "fuzz replay ${line#tests/fuzz/}"; done <"$work/replay.txt"
            else ok "$dir/replay_$name: ${#files[@]} corpus and crash inputs"; fi
        else
            bad "$dir/replay_$name (exit $?)"; grep -v ': accepted\|: rejected' "$work/replay.txt" | tail -20
            grep UNEXPECTED "$work/replay.txt"
        fi
    done
}
section "fuzz corpus and crash replays (tests/fuzz)"
replay tests/fuzz/bin 1

section "./sirt tokenizer / tokenize"
printf 'Tom has 3 apples. He buys 5 more: 3 + 5 = 8.\nThe answer is 8.\n' >"$work/corpus.txt"
for i in 1 2 3 4 5 6; do cat "$work/corpus.txt"; done >"$work/corpus6.txt"
expect "train a tokenizer" ./sirt tokenizer --train "$work/corpus.txt,$work/corpus6.txt" --vocab 300 --out "$work/tok.bin" --llmc-out "$work/tok_llmc.bin"
ids=$(printf 'Tom buys 5 more.\n\xff\xfe raw bytes\n' | ./sirt tokenize --tokenizer "$work/tok.bin")
back=$(echo "$ids" | ./sirt tokenize --tokenizer "$work/tok.bin" --decode)
if [ "$back" = "$(printf 'Tom buys 5 more.\n\xff\xfe raw bytes')" ] && [ "$(echo "$ids" | wc -l)" -eq 2 ]; then
    ok "tokenize: one line of ids per input line, --decode gives the text back"
else bad "tokenize round trip: $ids"; fi
printf '{"text": "Tom has 3 apples.\\nHe buys 5 \\"more\\"."}\n{"id": 7, "text": "The answer is 8."}\n' >"$work/docs.jsonl"
expect "tokenize --shard --jsonl: documents with newlines" ./sirt tokenize --tokenizer "$work/tok.bin" --shard "$work/docs.shard" --jsonl <"$work/docs.jsonl"
shard_ids=$(od -An -tu2 -j1024 -v "$work/docs.shard" | tr -s ' \n' ' ' | sed 's/^ //; s/ $//')
shard_count=$(od -An -tu4 -j8 -N4 "$work/docs.shard" | tr -d ' ')
if [ "$(echo "$shard_ids" | ./sirt tokenize --tokenizer "$work/tok.bin" --decode)" = "$(printf 'Tom has 3 apples.\nHe buys 5 "more".<|endoftext|>The answer is 8.<|endoftext|>')" ] &&
   [ "$shard_count" -eq "$(echo "$shard_ids" | wc -w)" ]; then
    ok "tokenize --shard --jsonl: the shard's $shard_count ids decode to each \"text\" (newline and quotes kept), each followed by <|endoftext|>"
else bad "tokenize --shard --jsonl: ids '$shard_ids', count $shard_count"; fi
expect_error "tokenize --jsonl: a line without a string \"text\", with its line number" '^sirt: error: tokenize --jsonl: input line 2: "text" must be a string$' sh -c "printf '{\"text\": \"a\"}\n{\"text\": 3}\n' | ./sirt tokenize --tokenizer '$work/tok.bin' --shard '$work/bad.shard' --jsonl"
[ ! -e "$work/bad.shard" ] && ok "tokenize --jsonl: no shard written after a bad line" || bad "tokenize --jsonl: a shard was left after a bad line"
expect_error "tokenize: --jsonl without --shard" '^sirt: error: tokenize: --jsonl reads the documents of --shard; give --shard FILE$' ./sirt tokenize --tokenizer "$work/tok.bin" --jsonl
expect_error "tokenize: a missing tokenizer, named" "^sirt: error: $work/nope.bin: cannot open" ./sirt tokenize --tokenizer "$work/nope.bin"
mkdir -p "$work/badgpt2" && printf '{"a" 1}' >"$work/badgpt2/encoder.json" && : >"$work/badgpt2/vocab.bpe"
expect_error "tokenize: a malformed encoder.json, named with the column" "^sirt: error: $work/badgpt2/encoder.json: malformed JSON: expected ':' after key (column 6)$" ./sirt tokenize --tokenizer "$work/badgpt2"
expect_error "tokenize --decode: an id outside the vocabulary, with its input line" "^sirt: error: tokenize --decode: input line 2: expected token ids in 0\.\." sh -c "printf '1 2\n1 70000\n' | ./sirt tokenize --tokenizer '$work/tok.bin' --decode"
expect_error "tokenize: an unknown flag" "^sirt: error: tokenize: unknown flag '--bogus'" ./sirt tokenize --bogus
expect_error "tokenizer: --vocab below 257" "^sirt: error: --vocab: 256 is outside \[257, 65536\]" ./sirt tokenizer --train "$work/corpus.txt" --vocab 256 --out "$work/x.bin"
expect_error "tokenizer: a missing training file, named" "^sirt: error: cannot open $work/nope.txt" ./sirt tokenizer --train "$work/corpus.txt,$work/nope.txt" --vocab 300 --out "$work/x.bin"
if [ -d ../shared/data/gpt2 ]; then
    got=$(echo "Hello world" | ./sirt tokenize --tokenizer ../shared/data/gpt2)
    [ "$got" = "15496 995" ] && ok "GPT-2 tokenizer: 'Hello world' -> 15496 995" || bad "GPT-2 'Hello world' -> $got"
else skip "../shared/data/gpt2 is absent, GPT-2 CLI check skipped"; fi

# ---- phase 1 on the built-in task: data -> tokenizer -> sft -----------------------------------
section "./sirt data / sft"
expect "data: 300 train items" ./sirt data --task math --split train --n 300 --seed 3 --out "$work/math_train.jsonl"
expect "data: 60 valid items" ./sirt data --task math --split valid --n 60 --seed 3 --out "$work/math_valid.jsonl"
./sirt data --task math --split train --n 300 --seed 3 >"$work/math_train2.jsonl"
cmp -s "$work/math_train.jsonl" "$work/math_train2.jsonl" && ok "data: same seed, same file" || bad "data: not deterministic"
expect "tokenizer on the task" ./sirt tokenizer --train "$work/math_train.jsonl" --vocab 512 --out "$work/task_tok.bin"
expect "sft 6 epochs on 300 built-in items" ./sirt sft --config 2,4,64,256,512 --tokenizer "$work/task_tok.bin" --data "$work/math_train.jsonl" --valid "$work/math_valid.jsonl" --epochs 6 --batch 8 --seq 256 --lr 6e-3 --warmup 5 --log "$work/sft.jsonl" --out "$work/sft.bin"
s_first=$(head -1 "$work/sft.jsonl" | sed 's/.*"loss": \([^,]*\),.*/\1/')
s_last=$(tail -1 "$work/sft.jsonl" | sed 's/.*"loss": \([^,]*\),.*/\1/')
s_val=$(grep -c val_loss "$work/sft.jsonl")
if awk -v a="$s_first" -v b="$s_last" 'BEGIN { exit !(b < 0.35 * a) }' && [ -f "$work/sft.best.bin" ] && [ "$s_val" -ge 6 ]; then
    ok "sft drives the loss well down ($s_first -> $s_last), validates each epoch, keeps sft.best.bin"
else bad "sft: loss $s_first -> $s_last, $s_val validations"; fi
sft_small() { ./sirt sft --config 1,2,32,256,512 --tokenizer "$work/task_tok.bin" --data "$work/math_train.jsonl" --valid "$work/math_valid.jsonl" --epochs 2 --batch 16 --seq 256 --lr 3e-3 --eval-every 10 "$@"; }
sft_small --out "$work/sa.bin" --log "$work/sa.jsonl" >/dev/null
sft_small --out "$work/sb.bin" --log "$work/sb.jsonl" --stop-after 13 >/dev/null
sft_small --out "$work/sb.bin" --log "$work/sb.jsonl" --resume >/dev/null
strip() { sed 's/, "tok_per_s": [0-9.]*//' "$1"; }
if cmp -s "$work/sa.bin" "$work/sb.bin" && cmp -s "$work/sa.best.bin" "$work/sb.best.bin" && [ "$(strip "$work/sa.jsonl")" = "$(strip "$work/sb.jsonl")" ]; then
    ok "sft resume: 13 steps + --resume = one run, bit for bit (last and best checkpoints, log)"
else bad "sft resume differs from an uninterrupted run"; fi
# --group-by-length: the same examples each epoch in a new order, so also resumable bit for bit
sft_small --out "$work/ga.bin" --log "$work/ga.jsonl" --group-by-length >/dev/null
sft_small --out "$work/gb.bin" --log "$work/gb.jsonl" --group-by-length --stop-after 13 >/dev/null
sft_small --out "$work/gb.bin" --log "$work/gb.jsonl" --group-by-length --resume >/dev/null
if cmp -s "$work/ga.bin" "$work/gb.bin" && [ "$(strip "$work/ga.jsonl")" = "$(strip "$work/gb.jsonl")" ] && ! cmp -s "$work/ga.bin" "$work/sa.bin"; then
    ok "sft --group-by-length: a different run from the plain order, and 13 steps + --resume = one run, bit for bit"
else bad "sft --group-by-length resume differs from an uninterrupted run (or equals the ungrouped run)"; fi
# --pack 1 (the default) against --pack 0: the same examples each step, so the same losses to
# float rounding, with less padding (and tok_per_s counting the examples' tokens only). Rows of
# 512 tokens hold two or three of these examples.
sft_pack() { ./sirt sft --config 1,2,32,512,512 --tokenizer "$work/task_tok.bin" --data "$work/math_train.jsonl" --batch 16 --seq 512 --lr 3e-3 --steps 3 "$@" >/dev/null; }
sft_pack --out "$work/p1.bin" --log "$work/p1.jsonl"
sft_pack --out "$work/p0.bin" --log "$work/p0.jsonl" --pack 0
field() { sed "s/.*\"$2\": \([^,}]*\).*/\1/" "$1" | tr '\n' ' '; }
if awk -v a="$(field "$work/p1.jsonl" loss)" -v b="$(field "$work/p0.jsonl" loss)" -v p="$(field "$work/p1.jsonl" pad_frac)" -v q="$(field "$work/p0.jsonl" pad_frac)" \
    'BEGIN { n = split(a, x, " "); split(b, y, " "); split(p, u, " "); split(q, v, " "); if (n != 3) exit 1
             for (i = 1; i <= n; i++) { d = x[i] - y[i]; if (d < 0) d = -d; if (d > 1e-4 * y[i] || !(u[i] < v[i])) exit 1 }; exit 0 }'; then
    ok "sft --pack 1 = --pack 0: losses $(field "$work/p1.jsonl" loss)vs $(field "$work/p0.jsonl" loss)(to 1e-4), pad_frac $(field "$work/p1.jsonl" pad_frac)vs $(field "$work/p0.jsonl" pad_frac)"
else bad "sft --pack 1 vs 0: losses $(field "$work/p1.jsonl" loss)vs $(field "$work/p0.jsonl" loss), pad_frac $(field "$work/p1.jsonl" pad_frac)vs $(field "$work/p0.jsonl" pad_frac)"; fi
# the numerical guard: --lr 1e10 makes step 2's forward overflow; steps 2..4 are skipped and the
# run stops, saving the weights of step 1 (the same bits as a 1-step run) and their moments
sft_bad() { ./sirt sft --config 1,2,32,256,512 --tokenizer "$work/task_tok.bin" --data "$work/math_train.jsonl" --batch 8 --seq 256 --lr 1e10 --schedule constant "$@"; }
sft_bad --steps 8 --max-bad-steps 3 --out "$work/h.bin" --log "$work/h.jsonl" >/dev/null 2>"$work/err.txt"
rc=$?
sft_bad --steps 1 --out "$work/h1.bin" >/dev/null 2>&1
if [ $rc -eq 1 ] && [ "$(grep -c '"loss": null, .*"grad_norm": null, .*"skipped": true' "$work/h.jsonl")" -eq 3 ] &&
    [ "$(wc -l <"$work/h.jsonl")" -eq 4 ] && ! head -1 "$work/h.jsonl" | grep -q skipped &&
    [ "$(grep -c '^sirt: warning: step [234]: loss .*: not finite, the update was skipped' "$work/err.txt")" -eq 3 ] &&
    tail -1 "$work/err.txt" | grep -q '^sirt: error: steps 2 to 4 had a non-finite loss or gradient norm (--max-bad-steps 3): stopping' &&
    cmp -s "$work/h.bin" "$work/h1.bin" && cmp -s <(tail -c +1025 "$work/h.bin.state") <(tail -c +1025 "$work/h1.bin.state"); then
    ok "sft --lr 1e10: steps 2-4 non-finite, skipped (log: null + \"skipped\": true; 3 warnings), stopped at --max-bad-steps 3; weights and AdamW moments = those of the 1-step run"
else bad "sft guard: exit $rc, $(tail -1 "$work/err.txt")"; fi
expect_error "sft: malformed JSONL line names file and line" "bad.jsonl:2:" sh -c "printf '{\"prompt\": \"a\", \"completion\": \"b\"}\n{\"prompt\": oops}\n' >'$work/bad.jsonl'; ./sirt sft --config 1,1,8,32,512 --tokenizer '$work/task_tok.bin' --data '$work/bad.jsonl' --batch 2 --seq 16 --lr 1e-3"

# ---- sampling and evaluation ------------------------------------------------------------------
section "./sirt sample / eval"
./sirt data --task math --split test --n 1000 --seed 5 --out "$work/math_test.jsonl"
./sirt data --task choice --split test-ood --n 1000 --seed 5 --out "$work/choice_ood.jsonl"
for f in math_test choice_ood; do
    out=$(./sirt eval --teacher --data "$work/$f.jsonl")
    echo "$out" | grep -q "accuracy 100.00% (1000/1000)" && ok "eval --teacher on $f (noise off): $out" || bad "eval --teacher on $f: $out"
done
./sirt data --task math --split test --n 1000 --seed 5 --noise 0.2 --out "$work/math_noisy.jsonl"
out=$(./sirt eval --teacher --data "$work/math_noisy.jsonl")
echo "$out" | grep -q "accuracy 100.00%" && bad "noisy teacher scored 100%" || ok "eval --teacher with --noise 0.2: $out"
head -5 "$work/math_valid.jsonl" >"$work/five.jsonl"
expect "sample --data, 3 samples each" ./sirt sample --model "$work/sft.bin" --tokenizer "$work/task_tok.bin" --data "$work/five.jsonl" --out "$work/s16.jsonl" -n 3 --max-new 40 --batch 16 --seed 9
./sirt sample --model "$work/sft.bin" --tokenizer "$work/task_tok.bin" --data "$work/five.jsonl" --out "$work/s1.jsonl" -n 3 --max-new 40 --batch 1 --seed 9 --threads 1 >/dev/null
if cmp -s "$work/s16.jsonl" "$work/s1.jsonl" && [ "$(grep -c '"question": .*"answer": .*"gold": .*"samples": \["' "$work/s16.jsonl")" -eq 5 ]; then
    ok "sample: input fields kept, samples added; the same text with batch 16 / 2 threads and batch 1 / 1 thread"
else bad "sample output differs between batch sizes or lacks fields"; fi
got=$(./sirt sample --model "$work/sft.bin" --tokenizer "$work/task_tok.bin" --prompt "Tom has 3 apples." --template cot --temperature 0 --max-new 30)
[ -n "$got" ] && ok "sample --prompt (greedy): $(echo "$got" | head -1 | cut -c1-60)" || bad "sample --prompt printed nothing"
expect "eval with 4 samples" ./sirt eval --model "$work/sft.bin" --tokenizer "$work/task_tok.bin" --data "$work/math_valid.jsonl" --samples 4 --max-new 120 --out "$work/preds.jsonl"
if grep -q "maj@4" "$work/out.txt" && grep -q "pass@4" "$work/out.txt" && [ "$(wc -l <"$work/preds.jsonl")" -eq 60 ]; then
    ok "eval reports accuracy with its interval, maj@4, pass@4 and writes 60 predictions: $(grep -h 'accuracy' "$work/out.txt")"
else bad "eval output incomplete"; cat "$work/out.txt" | tail -3; fi

# ---- preference training ----------------------------------------------------------------------
section "./sirt dpo"
: >"$work/pairs.jsonl"
for i in $(seq 1 24); do
    a=$((i % 9 + 2)); b=$((i % 7 + 3)); c=$((a + b)); w=$((c + i % 5 + 1))
    printf '{"prompt": "### Instruction:\\nLet'"'"'s think step by step to answer the following question.\\n\\n### Question:\\nTom has %d apples. He buys %d more. How many apples does Tom have?\\n\\n### Answer:\\n", "chosen": "Tom buys %d more: %d + %d = %d.\\nThe answer is %d.", "rejected": "The answer is %d."}\n' $a $b $b $a $b $c $c $w >>"$work/pairs.jsonl"
done
printf '{"prompt": "p", "chosen": "same", "rejected": "same"}\n{"prompt": "p", "chosen": "", "rejected": "x"}\n' >>"$work/pairs.jsonl"
dpo() { ./sirt dpo --model "$work/sft.bin" --ref "$work/sft.bin" --tokenizer "$work/task_tok.bin" --pairs "$work/pairs.jsonl" --batch 4 --seq 128 --lr 1e-3 --schedule constant "$@"; }
expect "dpo 12 steps" dpo --steps 12 --log "$work/dpo.jsonl" --out "$work/dpo.bin"
grep -q "pairs: 24 (dropped: 1 with an empty completion, 1 identical" "$work/out.txt" && ok "dpo: a pair with an empty completion and one with chosen = rejected are dropped and counted" || bad "dpo: drop counts missing: $(grep pairs: "$work/out.txt")"
first=$(head -1 "$work/dpo.jsonl")
if echo "$first" | grep -q '"loss": 0.6931472,' && echo "$first" | grep -q '"rewards/accuracies": 0,'; then
    ok "dpo step 1 (policy = reference): loss ln 2 = 0.6931472, rewards/accuracies 0"
else bad "dpo step 1: $first"; fi
for key in rewards/chosen rewards/rejected rewards/margins rewards/accuracies logps/chosen logps/rejected nll; do
    grep -q "\"$key\": " "$work/dpo.jsonl" || bad "dpo log lacks $key"
done
margin=$(tail -1 "$work/dpo.jsonl" | sed 's/.*"rewards\/margins": \([^,]*\),.*/\1/')
awk -v m="$margin" 'BEGIN { exit !(m > 0) }' && ok "dpo: the reward margin grows (last step: $margin); the log has all of TRL's metrics" || bad "dpo margin $margin"
dpo --steps 12 --loss ipo --out "$work/ipo.bin" --log "$work/ipo.jsonl" >/dev/null && ok "dpo --loss ipo runs" || bad "dpo --loss ipo"
# every reward is exactly 0 at step 1 (policy = reference) under every loss, so accuracy is 0
for loss in dpo cdpo ipo; do
    extra=""; [ $loss = cdpo ] && extra="--label-smoothing 0.1"
    dpo --steps 1 --loss $loss $extra --out "$work/zero.bin" --log "$work/zero.jsonl" >/dev/null
    grep -q '"rewards/chosen": 0, "rewards/rejected": 0, "rewards/margins": 0, "rewards/accuracies": 0,' "$work/zero.jsonl" &&
        ok "dpo --loss $loss step 1 (policy = reference): rewards exactly 0, accuracy 0" ||
        bad "dpo --loss $loss step 1 rewards: $(head -1 "$work/zero.jsonl")"
done
# ORPO: no reference, its NLL term, TRL's metric names; the loss falls
./sirt dpo --model "$work/sft.bin" --tokenizer "$work/task_tok.bin" --pairs "$work/pairs.jsonl" --batch 4 --seq 128 --lr 1e-3 --schedule constant --loss orpo --steps 12 --log "$work/orpo.jsonl" --out "$work/orpo.bin" >/dev/null &&
    grep -q '"log_odds_ratio": .*"log_odds_chosen": .*"nll_loss": ' "$work/orpo.jsonl" &&
    awk -F'"loss": ' 'NR == 1 { split($2, a, ","); first = a[1] } END { split($2, a, ","); exit !(a[1] < first) }' "$work/orpo.jsonl" &&
    ok "dpo --loss orpo: no --ref needed, logs log_odds_ratio, log_odds_chosen, nll_loss; the loss falls over 12 steps" ||
    bad "dpo --loss orpo: $(tail -1 "$work/orpo.jsonl" 2>/dev/null)"
expect_error "dpo --loss orpo with --rpo-alpha" "orpo has its own NLL term" dpo --steps 1 --loss orpo --rpo-alpha 1 --out "$work/x.bin"
dpo --steps 12 --out "$work/dr.bin" --log "$work/dr.jsonl" --stop-after 5 >/dev/null
dpo --steps 12 --out "$work/dr.bin" --log "$work/dr.jsonl" --resume >/dev/null
cmp -s "$work/dpo.bin" "$work/dr.bin" && ok "dpo resume: 5 steps + --resume = 12 steps in one run, bit for bit" || bad "dpo resume differs"
printf '{"prompt": "p", "chosen": "a", "rejected": "b"}\n{"prompt": "p", "chosen": "a" "rejected": "b"}\n' >"$work/badpairs.jsonl"
expect_error "dpo: malformed pairs line names file and line" "badpairs.jsonl:2:" dpo --steps 1 --pairs "$work/badpairs.jsonl" --out "$work/x.bin"
printf '{"prompt": "p", "chosen": "a"}\n' >"$work/badpairs.jsonl"
expect_error "dpo: missing field" 'badpairs.jsonl:1: missing field "rejected"' dpo --steps 1 --pairs "$work/badpairs.jsonl" --out "$work/x.bin"
printf '{"prompt": "p", "chosen": "a", "rejected": "b", "ref_chosen_logps": 5, "ref_rejected_logps": -3}\n' >"$work/badpairs.jsonl"
expect_error "dpo: a positive reference log-prob" 'badpairs.jsonl:1: ref_chosen_logps 5 and ref_rejected_logps -3 must be finite and <= 0' dpo --steps 1 --pairs "$work/badpairs.jsonl" --out "$work/x.bin"
# a reference log-prob of -1e300 makes IPO's loss infinite (and its coefficients): every step is
# skipped, the run stops after 2, the policy is the starting model; --detect-anomaly names the
# first kernel with a non-finite output, in the backward pass
sed 's/}$/, "ref_chosen_logps": -1e300, "ref_rejected_logps": -20}/' "$work/pairs.jsonl" | head -24 >"$work/infpairs.jsonl"
dpo --steps 6 --loss ipo --pairs "$work/infpairs.jsonl" --max-bad-steps 2 --out "$work/inf.bin" --log "$work/inf.jsonl" >/dev/null 2>"$work/err.txt"
if [ $? -eq 1 ] && [ "$(grep -c '"loss": null, .*"skipped": true' "$work/inf.jsonl")" -eq 2 ] && cmp -s "$work/inf.bin" "$work/sft.bin" &&
    tail -1 "$work/err.txt" | grep -q 'steps 1 to 2 had a non-finite loss or gradient norm (--max-bad-steps 2)'; then
    ok "dpo --loss ipo with an infinite loss: 2 steps skipped and logged, stopped, policy = the starting model bit for bit"
else bad "dpo guard: $(tail -1 "$work/err.txt")"; fi
expect_error "dpo --detect-anomaly names the first backward kernel with a non-finite output" "detect-anomaly: classifier_backward wrote [0-9]* non-finite values (of [0-9]*) into dlogits; every kernel before it wrote finite values" dpo --steps 6 --loss ipo --pairs "$work/infpairs.jsonl" --detect-anomaly --out "$work/inf.bin"

head -20 "$work/math_train.jsonl" >"$work/twenty.jsonl"
expect "refine: a round end to end (sample, score, pair, DPO, validate)" ./sirt refine --model "$work/sft.bin" --tokenizer "$work/task_tok.bin" --data "$work/twenty.jsonl" --valid "$work/five.jsonl" --pairs both --samples 2 --max-new 60 --rounds 1 --batch 4 --seq 200 --out "$work/refined.bin" --keep-pairs "$work"
if grep -q "round 0 (the phase-1 model): validation accuracy" "$work/out.txt" && grep -q "round 1: .* pairs" "$work/out.txt" && [ -f "$work/refined.bin" ]; then
    ok "refine: $(grep 'round 1: .* pairs' "$work/out.txt")"
else bad "refine output incomplete"; tail -5 "$work/out.txt"; fi

expect "refine --rft: a round end to end (sample, score, keep the verified samples, SFT)" ./sirt refine --model "$work/sft.bin" --tokenizer "$work/task_tok.bin" --data "$work/twenty.jsonl" --samples 2 --max-new 60 --rounds 1 --batch 2 --seq 200 --lr 1e-4 --rft --out "$work/rft.bin" --keep-pairs "$work"
if grep -q "round 1: [0-9]* examples for RFT (right, every step the true one" "$work/out.txt" && [ -f "$work/rft.bin" ] && ! grep -q "pairs" "$work/out.txt"; then
    ok "refine --rft: $(grep 'examples for RFT' "$work/out.txt")"
else bad "refine --rft output incomplete"; tail -5 "$work/out.txt"; fi
expect_error "refine: --seq above the model's context" "--seq 300 is longer than the model's context maxT=256" ./sirt refine --model "$work/sft.bin" --tokenizer "$work/task_tok.bin" --data "$work/twenty.jsonl" --seq 300

section "./sirt reproduce --quick"
# the whole reproduction in its quick mode (tiny sizes, seconds), in a scratch directory
if (cd "$work" && "$OLDPWD/sirt" reproduce --quick >"$work/repro.txt" 2>&1); then
    missing=""
    for f in results.json results.svg sft.bin sft.best.bin refined.bin sft_metrics.jsonl math_test.jsonl math_test-ood.jsonl; do
        [ -s "$work/runs/quick/$f" ] || missing="$missing $f"
    done
    for f in settings.txt base.bin tokenizer.bin stories.jsonl base_metrics.jsonl; do # phase 0's base
        [ -s "$work"/runs/base/*/"$f" ] || missing="$missing base/$f"
    done
    if [ -z "$missing" ] && grep -q "^SFT + self-refine" "$work/repro.txt" && grep -q '"model": "teacher", "family": "math", "split": "test", "correct": 30, "n": 30' "$work/runs/quick/results.json"; then
        ok "reproduce --quick runs end to end: phase 0's base in runs/base/KEY/, table printed, results.json (teacher 30/30), results.svg, checkpoints, logs"
    else bad "reproduce --quick: missing$missing"; fi
    # the accuracy by round: round 0 is the SFT row's own test score; each round's checkpoint
    # was evaluated; the chart, the finding and the time of each stage are there
    rj="$work/runs/quick/results.json"
    sft_test=$(grep -o '"model": "sft", "family": "math", "split": "test", "correct": [0-9]*' "$rj" | grep -o '[0-9]*$')
    r0=$(grep -o '"model": "refined", "family": "math", "split": "test", "round": 0, "correct": [0-9]*' "$rj" | grep -o '[0-9]*$')
    rounds_run=$(grep -c '"model": "refined", "family": "math", "split": "test", "round": [12]' "$rj")
    [ -e "$work/runs/quick/refined.round1.bin" ] && round_files=1 || round_files=0 # the quick student may make no pairs
    if [ -n "$sft_test" ] && [ "$sft_test" = "$r0" ] && [ "$((rounds_run > 0))" = "$round_files" ] \
        && grep -q "^accuracy by round on math test" "$work/repro.txt" && grep -q "<polyline" "$work/runs/quick/results_rounds.svg" \
        && grep -q "^Finding (math, 1 seed" "$work/repro.txt" && grep -q '^- SFT + RFT (control) over SFT: test' "$work/repro.txt" \
        && grep -q '"seconds": \[{"seed": 1, "data": [0-9.]*, "phase 1": [0-9.]*, "phase 2": [0-9.]*, "evaluation": [0-9.]*}\]' "$rj" \
        && grep -q "^seed 1 done in [0-9]*s: data [0-9]*s, phase 1 [0-9]*s, phase 2 [0-9]*s, evaluation [0-9]*s" "$work/repro.txt"; then
        ok "reproduce --quick: accuracy by round (round 0 = SFT's $sft_test, $rounds_run round(s) evaluated), results_rounds.svg, the finding, the time of each stage"
    else bad "reproduce --quick: by-round results, finding or timing missing (sft $sft_test, round 0 $r0, rounds $rounds_run)"; fi
else bad "reproduce --quick failed"; tail -5 "$work/repro.txt"; fi
# the same seed reproduces the same run: data, tokenizer, checkpoints and results, byte for byte
if (cd "$work" && "$OLDPWD/sirt" reproduce --quick --name again >"$work/repro_again.txt" 2>&1); then
    differ=""
    for f in math_train.jsonl sft.bin refined.bin results.svg; do
        cmp -s "$work/runs/quick/$f" "$work/runs/again/$f" || differ="$differ $f"
    done
    # results.json too, but for its "seconds" line: how long each stage took is not reproducible
    cmp -s <(grep -v '^"seconds": ' "$work/runs/quick/results.json") <(grep -v '^"seconds": ' "$work/runs/again/results.json") \
        || differ="$differ results.json"
    grep -q '^"seconds": ' "$work/runs/again/results.json" || differ="$differ (no seconds line)"
    grep -q "== 0. phase 0: the base student, kept in runs/base/" "$work/repro_again.txt" || differ="$differ (the base was not reused)"
    [ -z "$differ" ] && ok "reproduce --quick again with the same seed: the base reused; data, checkpoints, results.json (but for the seconds) and .svg identical" ||
        bad "reproduce --quick again differs:$differ"
else bad "reproduce --quick (again) failed"; fi
# --resume keeps every row whose KEY.done stamp records the arguments it would run now: again
# as it was, nothing retrains and the results are the same; with another --rft-lr only the
# control retrains, a stamp with another thread count does not match, and a row whose SFT row
# retrained retrains too
if (cd "$work" && "$OLDPWD/sirt" reproduce --quick --name again --resume >"$work/repro_resume.txt" 2>&1) \
    && cp "$work/runs/again/results.json" "$work/resumed_results.json" \
    && (cd "$work" && sed -i '1s/.*/threads 999/' runs/again/refined.done \
        && "$OLDPWD/sirt" reproduce --quick --name again --resume --rft-lr 2e-4 >"$work/repro_resume2.txt" 2>&1 \
        && cp runs/again/refined.bin "$work/refined_rerun.bin" \
        && "$OLDPWD/sirt" reproduce --quick --name again --resume --rft-lr 2e-4 --epochs 2 >"$work/repro_resume3.txt" 2>&1); then
    kept1=$(grep -c "^kept from an earlier run: runs/again/[a-z]*.done records these arguments (--resume)$" "$work/repro_resume.txt")
    kept2=$(grep "^kept from an earlier run" "$work/repro_resume2.txt" | grep -o "again/[a-z]*.done" | tr '\n' ' ')
    reran=$(grep -o "^runs/again/[a-z]*.done: [a-z ]*; running it$" "$work/repro_resume2.txt" | tr '\n' ' ')
    # another --epochs retrains SFT, and so both phase-2 rows built on it, whose own arguments are unchanged
    reran3=$(grep -c "^runs/again/[a-z]*.done: other arguments; running it$" "$work/repro_resume3.txt")
    same=1
    cmp -s <(grep -v '^"seconds": ' "$work/runs/quick/results.json") \
        <(grep -v '^"seconds": ' "$work/resumed_results.json") || same=0
    stamp_ok=0
    [ "$(sed -n 1p "$work/runs/again/sft.done")" = "threads $(grep -o '[0-9]* threads' "$work/repro.txt" | head -1 | cut -d' ' -f1)" ] \
        && grep -qx -- "--lr" "$work/runs/again/rft.done" && grep -qx "2e-4" "$work/runs/again/rft.done" && stamp_ok=1
    if [ "$kept1" = 3 ] && ! grep -q "^step 1/" "$work/repro_resume.txt" && [ "$kept2" = "again/sft.done " ] \
        && [ "$reran" = "runs/again/refined.done: other arguments; running it runs/again/rft.done: other arguments; running it " ] \
        && [ "$reran3" = 3 ] && ! grep -q "^kept from" "$work/repro_resume3.txt" \
        && grep -qx "after runs/again/sft.done:" "$work/runs/again/rft.done" && [ "$stamp_ok" = 1 ] && cmp -s "$work/runs/quick/refined.bin" "$work/refined_rerun.bin"; then
        [ "$same" = 1 ] && ok "reproduce --resume: all 3 rows kept by their stamps, nothing trained, the same results; another --rft-lr retrains the control only, another thread count its row, another --epochs all three" ||
            bad "reproduce --resume: the results differ from the run it resumed"
    else bad "reproduce --resume: kept '$kept1' then '$kept2', reran '$reran' then $reran3, stamp $stamp_ok"; fi
else bad "reproduce --resume failed"; tail -5 "$work/repro_resume2.txt"; fi
# two seeds: one directory each, mean ± sd and the gains with bootstrap intervals in the summary
# (and phase 0 with two candidate bases: checked below)
if (cd "$work" && "$OLDPWD/sirt" reproduce --quick --task both --seeds 2 --train 40 --base-candidates 2 --name two >"$work/repro2.txt" 2>&1); then
    r="$work/runs/two"
    if [ -s "$r/seed1/refined.bin" ] && [ -s "$r/seed2/refined.bin" ] && ! cmp -s "$r/seed1/math_test.jsonl" "$r/seed2/math_test.jsonl" \
        && grep -q "mean ± sd over seeds" "$work/repro2.txt" && grep -q '"seeds": \[1, 2\]' "$r/results.json" \
        && [ "$(grep -c '"over": "sft"' "$r/results.json")" -eq 12 ] && grep -q '"seed": 2' "$r/results.json"; then
        ok "reproduce --task both --seeds 2: a directory per seed, mean ± sd, twelve gains over SFT with intervals (refine and RFT, both families)"
    else bad "reproduce --seeds 2: output incomplete"; fi
else bad "reproduce --seeds 2 failed"; tail -5 "$work/repro2.txt"; fi
# --base-candidates 2: both candidates trained their first step (--base-trial-steps, 1 in --quick)
# and were scored on valid stories of both families; the one kept was continued with --resume to
# the same bits as one run of it that never stopped, and the other's checkpoint is gone
bdir=$(grep -o "runs/base/[0-9a-f]*/" "$work/repro2.txt" | head -1)
kept=$(sed -n 's/^kept candidate \([0-9]\) (seed \([0-9]*\)), the lowest$/\1 \2/p' "$work/$bdir/candidates.txt" 2>/dev/null)
read -r kept_c kept_s <<<"${kept:-x x}"
if [ -n "$kept" ] && [ "$(grep -c "^candidate [01] seed 100[01]: validation loss [0-9.]* at step 1$" "$work/$bdir/candidates.txt")" -eq 2 ] \
    && grep -q "candidates 2, each 1 steps" "$work/$bdir/settings.txt" && [ ! -e "$work/$bdir/candidate$((1 - kept_c)).bin" ] \
    && [ "$(grep -c . "$work/$bdir/valid_stories.jsonl")" -eq 40 ] \
    && (cd "$work/$bdir" && "$OLDPWD/sirt" sft --config 2,2,32,256,1024 --arch gpt2 --tokenizer tokenizer.bin --data stories.jsonl \
        --epochs 2 --batch 16 --seq 256 --lr 3e-3 --warmup 20 --seed "$kept_s" --valid valid_stories.jsonl --eval-every 1 \
        --out "$work/straight.bin" >/dev/null 2>&1) && cmp -s "$work/straight.bin" "$work/$bdir/base.bin"; then
    ok "reproduce --base-candidates 2: two bases scored on 40 valid stories after their first step, candidate $kept_c (seed $kept_s) kept and continued (--resume) to the same bits as one straight run of it"
else bad "reproduce --base-candidates 2: candidates.txt, settings or the kept base wrong ($kept)"; fi
# --task math --config: one family (three columns), the student's size from the flag; with
# --method all: SIRT's rows and SIPF's (SIPF, outcome-only) in one run
if (cd "$work" && "$OLDPWD/sirt" reproduce --quick --method all --task math --config 1,2,32,256,1024 --base-stories 0 --name onefam >"$work/repro3.txt" 2>&1); then
    r="$work/runs/onefam"
    if [ -s "$r/math_test.jsonl" ] && [ ! -e "$r/choice_test.jsonl" ] && grep -q '"task": "math"' "$r/results.json" \
        && [ -s "$r/tokenizer.bin" ] && ! grep -q "== 0. phase 0" "$work/repro3.txt" \
        && ! grep -q '"family": "choice"' "$r/results.json" && [ "$(grep -c '"over": "sft"' "$r/results.json")" -eq 12 ] \
        && grep -q 'L=1 NH=2 C=32' "$work/repro3.txt"; then
        ok "reproduce --task math --config 1,2,32,256,1024 --base-stories 0: math data and columns only, a 1-layer student from random weights, its own tokenizer"
    else bad "reproduce --task math: output wrong"; fi
    # the SIPF rows: in the table and by round, sipf run with --exclude-initial and -k 1,2 on the
    # first 20 questions, its files kept; labels by k, the PRM on valid and best-of-K in results.json
    rows=$(sed -n '/^accuracy (%)/,/^$/p' "$work/repro3.txt" | cut -c1-32 | sed 's/ *$//' | tr '\n' '|')
    if [ "$rows" = "accuracy (%)|teacher|SFT|SFT + self-refine|SFT + RFT (control)|SFT + SIPF|SFT + SIPF, outcome-only||" ] \
        && [ "$(sed -n '/^accuracy by round/,/^(-:/p' "$work/repro3.txt" | grep -c '^SFT + SIPF')" -eq 2 ] \
        && grep -q "^round 0 (the input model): validation accuracy .* (not kept: --exclude-initial)$" "$work/repro3.txt" \
        && [ "$(wc -l <"$r/sipf_train.jsonl")" -eq 20 ] && [ -s "$r/sipf_rounds/rounds.jsonl" ] && [ -s "$r/sipf_outcome_rounds/rounds.jsonl" ] \
        && grep -q '"by_k": \[{"k": 1, "hard": ' "$r/sipf_rounds/rounds.jsonl" && ! grep -q '"by_k"' "$r/sipf_outcome_rounds/rounds.jsonl" \
        && grep -q '"method": "all", "sipf_questions": 20, "sipf_k": "1,2", "sipf_prm_lr": 3e-4, "sipf_prm_epochs": 16, "sipf_reward": "min",' "$r/results.json" \
        && [ "$(grep -A1 -x -- '--prm-epochs' "$r/sipf.done" | tail -1)" = 16 ] && [ "$(grep -A1 -x -- '--reward' "$r/sipf.done" | tail -1)" = min ] \
        && grep -q "and best-of-4 by it (lowest step probability; %) beside maj@4 and pass@4:$" "$work/repro3.txt" \
        && grep -q '{"seed": 1, "row": "sipf", "rounds": [12], "labels_vs_truth": \[{"k": 1, "hard": {"tp": .*{"k": 2, "hard": .*"prm_round": [12], "prm_on_valid": \[{"family": "math", "steps_vs_truth": {"tp": ' "$r/results.json" \
        && grep -q '{"seed": 1, "row": "sipf_outcome", "rounds": [12], "labels_vs_truth": \[{"k": null, "hard": ' "$r/results.json" \
        && grep -q '"row": "sipf", "family": "math", "diagnosis": .*"best_of_4": [0-9.]*, "best_of_k_by": "min"' "$r/results.json" \
        && ! grep -q '"row": "refined", "family": "math", "diagnosis": .*best_of' "$r/results.json" \
        && [ "$(grep -c '"model": "sipf", "over": "sipf_outcome"\|"model": "sipf", "over": "refined"' "$r/results.json")" -eq 6 ] \
        && grep -q "^SFT + SIPF                         k = 1 of 2 " "$work/repro3.txt" && grep -q "^SFT + SIPF, outcome-only           outcome " "$work/repro3.txt" \
        && grep -q "^SFT + SIPF                         math " "$work/repro3.txt" \
        && grep -q "^- SFT + SIPF over SFT + SIPF, outcome-only: test " "$work/repro3.txt" && grep -q "^- SFT + SIPF over SFT + self-refine: test " "$work/repro3.txt" \
        && grep -q "^- by round on math test (round 0: SFT; a description, not a test): SFT + SIPF " "$work/repro3.txt"; then
        ok "reproduce --method all: rows teacher, SFT, self-refine, RFT, SIPF, outcome-only; SIPF's rounds by round; labels by k, the last PRM on valid, best-of-K (by the lowest step, sipf's --reward min, and --prm-epochs 16: the defaults); SIPF over outcome-only and over SIRT in the finding and results.json"
    else bad "reproduce --method all: SIPF rows or diagnostics missing (rows '$rows')"; fi
else bad "reproduce --task math failed"; tail -5 "$work/repro3.txt"; fi
# --ablations: the low-resource rows' phase 2 asks the questions after the demonstrations phase 1 saw
if (cd "$work" && "$OLDPWD/sirt" reproduce --quick --ablations --train 40 --name abl >"$work/repro4.txt" 2>&1); then
    r="$work/runs/abl"
    if [ "$(sed -n 11p "$r/math_train.jsonl")" = "$(head -1 "$r/refined_d25_questions.jsonl")" ] \
        && [ "$(sed -n 21p "$r/math_train.jsonl")" = "$(head -1 "$r/refined_d50_questions.jsonl")" ] \
        && [ "$(wc -l <"$r/refined_d25_questions.jsonl")" -eq 20 ] && [ "$(wc -l <"$r/refined_d50_questions.jsonl")" -eq 20 ] \
        && cmp -s "$r/refine_train.jsonl" <(head -20 "$r/math_train.jsonl") && [ -s "$r/refined_d25.bin" ]; then
        ok "reproduce --ablations: phase 2 of the 25% and 50% rows asks train questions 11-30 and 21-40 (after phase 1's demonstrations); the full row asks 1-20"
    else bad "reproduce --ablations: the low-resource questions are wrong"; fi
else bad "reproduce --ablations failed"; tail -5 "$work/repro4.txt"; fi
expect_error "reproduce: an unknown task" "^sirt: error: --task must be math, choice or both, got 'poetry'$" ./sirt reproduce --task poetry
# the Llama-shaped student through the whole reproduction: from scratch (phase 0's base a Llama,
# its cache entry apart from GPT-2's), and from a pretrained checkpoint with its own tokenizer
if (cd "$work" && "$OLDPWD/sirt" reproduce --quick --arch llama --name llama >"$work/repro_llama.txt" 2>&1); then
    r="$work/runs/llama"
    base_dirs=$(grep -h -o "runs/base/[0-9a-f]*/" "$work/repro_llama.txt" "$work/repro.txt" | sort -u | wc -l)
    if grep -q '"arch": "llama", "init": null' "$r/results.json" && [ -s "$r/refined.bin" ] && [ -s "$r/rft.bin" ] \
        && grep -q "^== 0. phase 0: the base student in runs/base/" "$work/repro_llama.txt" && [ "$base_dirs" -eq 2 ] \
        && [ "$(grep -c '^model: Llama L=2 NH=2 KVH=2 C=32' "$work/repro_llama.txt")" -ge 4 ] \
        && grep -q '"arch": "gpt2", "init": null' "$work/runs/quick/results.json" && grep -q "^SFT + self-refine" "$work/repro_llama.txt"; then
        ok "reproduce --quick --arch llama: phase 0, phase 1, phase 2, control and evaluation on a Llama student; its base has its own cache entry; results.json says llama (GPT-2's says gpt2)"
    else bad "reproduce --arch llama: output wrong"; fi
else bad "reproduce --arch llama failed"; tail -5 "$work/repro_llama.txt"; fi
# bad combinations die before any work (no run directory is made)
repro_bad() { local name=$1; shift; sh -c 'cd "$0" && exec "$@"' "$work" "$PWD/sirt" reproduce --quick --name "$name" "$@"; }
expect_error "reproduce: --init without --tokenizer" "^sirt: error: reproduce: --init needs --tokenizer, the model's tokenizer$" repro_bad bad1 --init "$work/sft.bin"
expect_error "reproduce: --init with --arch" "^sirt: error: reproduce: --init replaces phase 0 and sets the student's shape; drop --arch$" repro_bad bad2 --init "$work/sft.bin" --tokenizer "$work/task_tok.bin" --arch llama
expect_error "reproduce: --tokenizer without --init" "^sirt: error: reproduce: --tokenizer is --init's tokenizer; give --init MODEL too$" repro_bad bad3 --tokenizer "$work/task_tok.bin"
base_tok=$(ls "$work"/runs/base/*/tokenizer.bin | head -1) # phase 0's tokenizer: more than 512 tokens
expect_error "reproduce: --init with a tokenizer larger than the model's vocabulary" "^sirt: error: the tokenizer has [0-9]* tokens but the model's vocabulary is V=512$" repro_bad bad4 --init "$work/sft.bin" --tokenizer "$base_tok"
./sirt sft --config 1,2,16,128,512 --tokenizer "$work/task_tok.bin" --data "$work/math_train.jsonl" --batch 1 --seq 128 --steps 1 --lr 0 --out "$work/ctx128.bin" >/dev/null
expect_error "reproduce: --init with a context shorter than --seq 256" "^sirt: error: reproduce: .*ctx128.bin has context maxT=128, shorter than the reproduction's --seq 256$" repro_bad bad5 --init "$work/ctx128.bin" --tokenizer "$work/task_tok.bin"
expect_error "reproduce: an unknown --method" "^sirt: error: --method must be sirt, sipf or all, got 'dpo'$" repro_bad bad6 --method dpo
expect_error "reproduce: --ablations with --method sipf" "^sirt: error: reproduce: --ablations adds SIRT's rows; use --method sirt or all$" repro_bad bad7 --method sipf --ablations
expect_error "reproduce: a bad --sipf-k" "^sirt: error: -k wants ascending numbers in 1..65536" repro_bad bad8 --method all --sipf-k 4,2
made=$(ls -d "$work"/runs/bad* 2>/dev/null)
[ -z "$made" ] && ok "reproduce: the bad combinations made no run directory" || bad "reproduce: a bad combination made $made"
L2C=../shared/data/llama2c
if [ -f "$L2C/stories260K.bin" ] && [ -f "$L2C/tok512.bin" ]; then
    if (cd "$work" && "$OLDPWD/sirt" reproduce --quick --init "$OLDPWD/$L2C/stories260K.bin" --tokenizer "$OLDPWD/$L2C/tok512.bin" --name stories >"$work/repro_stories.txt" 2>&1); then
        r="$work/runs/stories"
        # pretrained weights: phase 1's first loss is far below a random model's ln(512) = 6.24
        first=$(head -1 "$r/sft_metrics.jsonl" | sed 's/.*"loss": \([^,]*\),.*/\1/')
        if grep -q "^== 0. phase 0 skipped: phase 1 starts from .*stories260K.bin (--init) with its tokenizer .*tok512.bin$" "$work/repro_stories.txt" \
            && ! grep -q "^== 0. phase 0: " "$work/repro_stories.txt" && [ ! -e "$r/tokenizer.bin" ] \
            && grep -q '"config": "5,8,64,512,512,4,172"' "$r/results.json" && grep -q '"arch": "llama", "init": ".*stories260K.bin"' "$r/results.json" \
            && [ -s "$r/refined.bin" ] && grep -q "^SFT + self-refine" "$work/repro_stories.txt" \
            && awk -v l="$first" 'BEGIN { exit !(l < log(512) - 1.5) }'; then
            ok "reproduce --quick --init stories260K.bin --tokenizer tok512.bin: phase 0 skipped, phase 1 from the pretrained weights (first loss $first, a random model's ln 512 = 6.24), phases 2 and evaluation; results.json says llama and the file"
        else bad "reproduce --init stories260K: output wrong (first loss $first)"; fi
    else bad "reproduce --init stories260K failed"; tail -5 "$work/repro_stories.txt"; fi
    expect_error "reproduce: --init stories260K.bin with phase 0's larger tokenizer" "^sirt: error: the tokenizer has [0-9]* tokens but the model's vocabulary is V=512$" repro_bad bad6 --init "$PWD/$L2C/stories260K.bin" --tokenizer "$base_tok"
else skip "$L2C is absent: reproduce --init stories260K.bin not checked"; fi

section "GPT-2's tokenizer on GSM8K"
# GPT-2's tokenizer and vocabulary (50257, padded to 50304) on real GSM8K items, as a user who
# brings an llm.c GPT-2 checkpoint would run it (a 1-layer model stands in for the 124M weights)
if [ -d ../shared/data/gpt2 ] && [ -d ../shared/data/gsm8k ]; then
    head -8 ../shared/data/gsm8k/train.jsonl >"$work/gsm8.jsonl"
    ./tests/test_core --write-shard "$work/gpt2ish_tokens.bin" 100 50257 1
    ./sirt train --config 1,2,64,1024,50257 --data "$work/gpt2ish_tokens.bin" --batch 1 --seq 8 --steps 1 --lr 0 --out "$work/gpt2ish.bin" >/dev/null
    expect "sft from an llm.c checkpoint with the GPT-2 tokenizer on GSM8K" ./sirt sft --init "$work/gpt2ish.bin" --tokenizer ../shared/data/gpt2 --data "$work/gsm8.jsonl" --batch 4 --seq 256 --steps 2 --lr 1e-4 --out "$work/gpt2sft.bin"
else skip "../shared/data/gpt2 or gsm8k is absent, GPT-2 SFT check skipped"; fi

# ---- process feedback: label-steps, prm, eval --rerank -------------------------------------------
section "./sirt label-steps / prm / eval --rerank"
head -8 "$work/math_valid.jsonl" >"$work/eight.jsonl"
./sirt sample --model "$work/sft.bin" --tokenizer "$work/task_tok.bin" --data "$work/eight.jsonl" --out "$work/paths.jsonl" -n 4 --max-new 120 --temperature 1 --seed 3 >/dev/null
lsteps() { ./sirt label-steps --model "$work/sft.bin" --tokenizer "$work/task_tok.bin" --data "$work/paths.jsonl" --max-new 120 "$@"; }
expect "label-steps -k 2,4 on 32 sampled paths" lsteps -k 2,4 --out "$work/steps.jsonl" --summary "$work/labels.json"
lsteps -k 2,4 --out "$work/steps1.jsonl" --summary "$work/labels1.json" --batch 1 --threads 1 >/dev/null
cmp -s "$work/steps.jsonl" "$work/steps1.jsonl" && cmp -s "$work/labels.json" "$work/labels1.json" &&
    ok "label-steps: the same labels and summary with --batch 64 / all threads and --batch 1 / 1 thread" ||
    bad "label-steps differs between batch sizes or thread counts"
# each line: as many labels as soft scores; each soft score a multiple of 1/4; a label true
# exactly when its soft score is above 0 (some continuation reached the gold answer)
lab() { sed 's/.*"labels": \[\([^]]*\)\], "soft": \[\([^]]*\)\].*/\1|\2/' "$1"; }
if lab "$work/steps.jsonl" | awk -F'|' '{ n = split($1, l, ", "); m = split($2, s, ", "); if (n != m || n < 1) bad = 1
        for (i = 1; i <= n; i++) { q = s[i] * 4; if (q != int(q + 0.5) && (q - int(q + 0.5))^2 > 1e-10) bad = 1
            if ((l[i] == "true") != (s[i] > 0)) bad = 1; if (l[i] == "true") t++; else f++ } }
        END { exit !(bad == 0 && t > 0 && f > 0 && NR == 32) }' &&
    grep -q '"prompt": "### Instruction:.*"completions": \[".*"gold": ".*"question": ".*"truth": ".*"index": 0, "sample": 0}' "$work/steps.jsonl"; then
    ok "label-steps: TRL's stepwise lines (prompt, completions, labels, soft, gold, question, truth, index, sample); soft scores multiples of 1/4, label = (soft > 0), both labels present"
else bad "label-steps output format or label/soft consistency: $(head -c 300 "$work/steps.jsonl")"; fi
# the first k of the 4 continuations: k = 2 labels at most as many steps correct as k = 4; the
# file holds k = 4's labels: its true labels are k = 4's tp + fp
pos=$(grep -o '"hard": {"tp": [0-9]*, "fp": [0-9]*' "$work/labels.json" | sed 's/.*"tp": \([0-9]*\), "fp": \([0-9]*\)/\1 \2/' | awk '{ print $1 + $2 }' | tr '\n' ' ')
trues=$(lab "$work/steps.jsonl" | cut -d'|' -f1 | grep -o true | wc -l)
set -- $pos
if [ $# -eq 2 ] && [ "$1" -le "$2" ] && [ "$2" -eq "$trues" ] && grep -q "k = 2 .*hard: precision" "$work/out.txt" && grep -q "k = 4 .*soft >= 0.5:" "$work/out.txt"; then
    ok "label-steps -k 2,4: steps labelled correct $1 (k = 2) <= $2 (k = 4) = the file's true labels; P/R/F1 printed per k"
else bad "label-steps levels: positives '$pos', file trues $trues"; fi
# outcome labels of hand-made paths against their true steps, counted by hand: A right on the
# true path (truth 1 1 1, labels 1 1 1), B wrong (1 0 0 vs 0 0 0), C right by luck (1 0 0 vs
# 1 1 1), D no step (skipped): tp 4, fp 2, fn 1, tn 2, precision 4/6, recall 4/5, F1 8/11
printf '%s\n' '{"question": "Tom has 5 apples. He buys 3 more. He gives 2 away. How many apples does Tom have now?", "answer": "#### 6", "gold": "6", "truth": "5 + 3 = 8\n8 - 2 = 6", "samples": ["Tom has 5 apples.\nHe buys 3: 5 + 3 = 8.\nHe gives 2: 8 - 2 = 6.\nThe answer is 6.", "Tom has 5 apples.\nHe buys 3: 5 + 3 = 9.\nHe gives 2: 9 - 2 = 7.\nThe answer is 7.", "Tom has 5 apples.\nHe buys 3: 5 + 3 = 9.\nHe gives 3: 9 - 3 = 6.\nThe answer is 6.", "The answer is 6."]}' >"$work/hand.jsonl"
./sirt label-steps --outcome --data "$work/hand.jsonl" --out "$work/hand_steps.jsonl" --summary "$work/hand.json" >/dev/null
if grep -q '"samples_without_steps": 1, "steps": 9, "steps_with_truth": 9, "truly_correct": 5, "labels": "outcome"' "$work/hand.json" &&
    grep -q '"hard": {"tp": 4, "fp": 2, "fn": 1, "tn": 2, "precision": 0.6666667, "recall": 0.8, "f1": 0.7272727}' "$work/hand.json" &&
    [ "$(lab "$work/hand_steps.jsonl" | cut -d'|' -f1 | tr '\n' ';')" = "true, true, true;false, false, false;true, true, true;" ]; then
    ok "label-steps --outcome on hand-made paths: every step labelled with the final answer; tp 4 fp 2 fn 1 tn 2, P 4/6 R 4/5 F1 8/11 as counted by hand"
else bad "label-steps --outcome by hand: $(cat "$work/hand.json")"; fi
# the PRM on those labels (hard, then soft): the loss falls; the report on held-out paths
prm() { ./sirt prm --init "$work/sft.bin" --tokenizer "$work/task_tok.bin" --batch 8 --seq 256 --lr 1e-3 --schedule constant "$@"; }
head -24 "$work/steps.jsonl" >"$work/steps_train.jsonl"; tail -8 "$work/steps.jsonl" >"$work/steps_valid.jsonl"
expect "prm: 12 steps on 24 labelled paths, held-out report" prm --data "$work/steps_train.jsonl" --valid "$work/steps_valid.jsonl" --steps 12 --out "$work/prm.bin" --log "$work/prm.jsonl" --summary "$work/prm.json"
first=$(head -1 "$work/prm.jsonl" | sed 's/.*"loss": \([^,]*\),.*/\1/'); last=$(tail -3 "$work/prm.jsonl" | sed 's/.*"loss": \([^,]*\),.*/\1/' | awk '{ s += $1 } END { print s / NR }')
if awk -v a="$first" -v b="$last" 'BEGIN { exit !(b < a) }' && [ "$(wc -l <"$work/prm.jsonl")" -eq 12 ] &&
    grep -q '"vs_labels": {"tp": .*"vs_truth": {"tp": .*"paths_with_truth": 8, "first_error_exact": [0-9.]*}' "$work/prm.json" &&
    grep -q "steps vs the true steps: .*first error placed exactly on" "$work/out.txt" &&
    [ "$(stat -c %s "$work/prm.bin")" -eq $(( $(stat -c %s "$work/sft.bin") + 16 + 4 * 65 )) ]; then
    ok "prm: loss $first -> $last (mean of the last 3); held-out F1 vs labels and vs the true steps, first-error placement; prm.bin = sft.bin + 16 + 4(C+1) bytes"
else bad "prm: loss $first -> $last, $(cat "$work/prm.json" 2>/dev/null)"; fi
expect "prm --soft (the soft labels as targets)" prm --data "$work/steps_train.jsonl" --soft --steps 3 --out "$work/prm_soft.bin"
# best-of-4 by the PRM beside maj@4 and pass@4; it can never beat pass@4
expect "eval --rerank prm.bin --samples 4" ./sirt eval --model "$work/sft.bin" --tokenizer "$work/task_tok.bin" --data "$work/eight.jsonl" --samples 4 --temperature 1 --max-new 120 --rerank "$work/prm.bin" --summary "$work/rr.json" --out "$work/rr.jsonl"
best=$(sed 's/.*"best_of_4": \([0-9.]*\).*/\1/' "$work/rr.json"); pass=$(sed 's/.*"pass@4": \([0-9.]*\).*/\1/' "$work/rr.json")
if grep -q "best-of-4 by the reward model (path reward: mean step probability)" "$work/out.txt" && grep -q '"best_of_k_by": "mean"' "$work/rr.json" &&
    awk -v b="$best" -v p="$pass" 'BEGIN { exit !(b <= p) }' && [ "$(grep -c '"reranked": [0-3], "reranked_correct": ' "$work/rr.jsonl")" -eq 8 ]; then
    ok "eval --rerank: best-of-4 by the PRM $best% <= pass@4 $pass%, beside maj@4; each item's chosen sample in --out"
else bad "eval --rerank: best $best pass $pass"; fi
# the outcome reward model: the same head on outcome labels; reranked by the lowest step probability
lsteps --outcome --out "$work/osteps.jsonl" >/dev/null && prm --data "$work/osteps.jsonl" --steps 3 --out "$work/orm.bin" >/dev/null &&
    ./sirt eval --model "$work/sft.bin" --tokenizer "$work/task_tok.bin" --data "$work/eight.jsonl" --samples 4 --temperature 1 --max-new 120 --rerank "$work/orm.bin" --rerank-by min >"$work/out.txt" 2>&1 &&
    grep -q "best-of-4 by the reward model (path reward: lowest step probability)" "$work/out.txt" &&
    ok "an outcome reward model: label-steps --outcome, prm, eval --rerank --rerank-by min" || bad "outcome reward model: $(tail -2 "$work/out.txt")"
printf '{"question": "Q", "answer": "#### 3", "gold": "3", "samples": ["a\\nThe answer is 3."]}\n{"question": "Q", "answer": "#### 3"}\n' >"$work/nosamples.jsonl"
expect_error "label-steps: a line without samples, named with file and line" "^sirt: error: $work/nosamples.jsonl:2: \"samples\" must be an array of strings" ./sirt label-steps --outcome --data "$work/nosamples.jsonl" --out "$work/x.jsonl"
printf '{"question": "Q", "answer": "#### 3", "samples": ["a", 7]}\n' >"$work/badsamples.jsonl"
expect_error "label-steps: a sample that is not a string" "^sirt: error: $work/badsamples.jsonl:1: \"samples\" must be an array of strings" ./sirt label-steps --outcome --data "$work/badsamples.jsonl" --out "$work/x.jsonl"
expect_error "label-steps: -k not ascending" "^sirt: error: -k wants ascending numbers" ./sirt label-steps --outcome --data "$work/hand.jsonl" -k 4,2 --out "$work/x.jsonl"
expect_error "label-steps: no simulator without --outcome" "^sirt: error: label-steps: --model and --tokenizer are required" ./sirt label-steps --data "$work/hand.jsonl" --out "$work/x.jsonl"
printf '{"prompt": "Q\\n", "completions": ["a", "b"], "labels": [true]}\n' >"$work/badsteps.jsonl"
expect_error "prm: completions and labels of different lengths, named with file and line" "^sirt: error: $work/badsteps.jsonl:1: 2 completions but 1 labels$" prm --data "$work/badsteps.jsonl" --steps 1 --out "$work/x.bin"
printf '{"prompt": "Q\\n", "completions": ["a"], "labels": [true], "soft": [1.5]}\n' >"$work/badsoft.jsonl"
expect_error "prm --soft: a soft label outside [0, 1]" "^sirt: error: $work/badsoft.jsonl:1: \"soft\" must be a non-empty array of numbers in \[0, 1\]$" prm --data "$work/badsoft.jsonl" --soft --steps 1 --out "$work/x.bin"
expect_error "eval --rerank: a model without a value head" "is a model without a value head, not a PRM" ./sirt eval --model "$work/sft.bin" --tokenizer "$work/task_tok.bin" --data "$work/eight.jsonl" --samples 1 --max-new 8 --rerank "$work/sft.bin"
expect_error "eval --rerank without --samples" "^sirt: error: eval: --rerank needs --samples K" ./sirt eval --model "$work/sft.bin" --tokenizer "$work/task_tok.bin" --data "$work/eight.jsonl" --rerank "$work/prm.bin"

# ---- SIPF's loop: sipf ----------------------------------------------------------------------------
section "./sirt sipf"
# the PRM of the tiny student learns little more than the share of good steps, so its path
# rewards differ by thousandths: a margin of 0.0005 makes pairs
sipf() { ./sirt sipf --model "$work/sft.bin" --tokenizer "$work/task_tok.bin" --data "$work/twenty.jsonl" --samples 4 -k 2 --max-new 120 --batch 4 --seq 256 --lr 1e-4 --prm-lr 1e-3 --margin 0.0005 "$@"; }
expect "sipf: 2 rounds on 20 questions (4 paths each, 2 continuations per step, PRM, pairs, ORPO, validation)" sipf --valid "$work/five.jsonl" --rounds 2 --keep "$work/sipf" --log "$work/sipf_log.jsonl" --out "$work/sipf.bin"
cp "$work/out.txt" "$work/sipf_out.txt"
missing=""
for r in 1 2; do
    for f in "sipf/round${r}_steps.jsonl" "sipf/round${r}_prm.bin" "sipf/round${r}_pairs.jsonl" "sipf.round$r.bin" "sipf_log.round$r.jsonl" "sipf_log.round${r}_prm.jsonl"; do
        [ -s "$work/$f" ] || missing="$missing $f"
    done
done
# every round: as many stepwise lines as kept paths, labels and soft scores of equal length, as
# many pair lines as pairs printed, each pair's chosen reward at least the margin above its
# rejected one; the PRM file is the model and a head; rounds.jsonl has rounds 0, 1, 2
bad_round=""
for r in 1 2; do
    kept=$(sed -n "s/^round $r: .* kept \([0-9]*\) paths .*/\1/p" "$work/sipf_out.txt")
    pairs=$(sed -n "s/^round $r: \([0-9]*\) pairs (path rewards mean step probability, at least 0.0005 apart.*/\1/p" "$work/sipf_out.txt")
    steps="$work/sipf/round${r}_steps.jsonl" pf="$work/sipf/round${r}_pairs.jsonl"
    [ -n "$kept" ] && [ "$(wc -l <"$steps")" -eq "$kept" ] && [ -n "$pairs" ] && [ "$pairs" -gt 0 ] && [ "$(wc -l <"$pf")" -eq "$pairs" ] &&
        lab "$steps" | awk -F'|' '{ if (split($1, l, ", ") != split($2, s, ", ") || $1 == "") bad = 1 } END { exit bad }' &&
        [ "$(grep -c '^{"prompt": "### Instruction:.*", "completions": \[".*"\], "labels": \[.*\], "soft": \[.*\], "gold": ".*", "question": ".*", "truth": ".*", "index": [0-9]*, "sample": [0-3]}$' "$steps")" -eq "$kept" ] &&
        [ "$(grep -c '^{"prompt": "### Instruction:.*", "chosen": ".*", "rejected": ".*", "chosen_reward": [0-9.e-]*, "rejected_reward": [0-9.e-]*}$' "$pf")" -eq "$pairs" ] &&
        sed 's/.*"chosen_reward": \([^,]*\), "rejected_reward": \([^}]*\)}$/\1 \2/' "$pf" | awk '{ if (!($1 - $2 >= 0.0005 - 1e-9)) bad = 1 } END { exit bad }' &&
        [ "$(stat -c %s "$work/sipf/round${r}_prm.bin")" -eq $(( $(stat -c %s "$work/sft.bin") + 16 + 4 * 65 )) ] || bad_round="$bad_round $r (kept '$kept', pairs '$pairs')"
done
if [ -z "$missing" ] && [ -z "$bad_round" ] && [ "$(grep -c '^{"round": [012],' "$work/sipf/rounds.jsonl")" -eq 3 ] &&
    grep -q "round 2: the PRM on D(2): [0-9]* paths" "$work/sipf_out.txt" && grep -q "round 1: the PRM on its own training data D(1): loss .*steps vs labels: precision" "$work/sipf_out.txt" &&
    grep -q "round 1: [0-9]* steps labelled (simulated); against the true steps, hard: precision .*soft >= 0.5:" "$work/sipf_out.txt"; then
    ok "sipf: each round's steps (TRL's stepwise lines, one per kept path), PRM (model + head), pairs (one per pair printed, chosen reward >= rejected + 0.0005), model and logs; rounds.jsonl; label P/R/F1 and the PRM's F1 printed"
else bad "sipf rounds: missing '$missing', bad rounds '$bad_round'"; tail -5 "$work/sipf_out.txt"; fi
# the PRM of D(2) is trained on both rounds' paths
d2=$(sed -n 's/^round 2: the PRM on D(2): \([0-9]*\) paths.*/\1/p' "$work/sipf_out.txt")
[ -n "$d2" ] && [ "$d2" -eq $(( $(wc -l <"$work/sipf/round1_steps.jsonl") + $(wc -l <"$work/sipf/round2_steps.jsonl") )) ] &&
    ok "sipf: D(2) = D(1) ∪ round 2's paths ($d2 paths)" || bad "sipf: D(2) has '$d2' paths"
# the files are loadable by prm and dpo --loss orpo
./sirt prm --init "$work/sft.bin" --tokenizer "$work/task_tok.bin" --data "$work/sipf/round2_steps.jsonl" --batch 4 --seq 256 --lr 1e-3 --steps 1 --out "$work/x.bin" >/dev/null &&
    ./sirt dpo --model "$work/sft.bin" --tokenizer "$work/task_tok.bin" --pairs "$work/sipf/round2_pairs.jsonl" --loss orpo --batch 4 --seq 256 --lr 1e-4 --steps 1 --out "$work/x.bin" >/dev/null &&
    ok "sipf: a round's steps file trains prm, its pairs file trains dpo --loss orpo" || bad "sipf files not readable by prm / dpo"
# the kept model: the first round with the best validation accuracy (round 0: the input model),
# bit for bit, and eval gives it the accuracy printed
accs=$(sed -n 's/^round \([0-9]*\)[^:]*: validation accuracy \([0-9.]*\)%.*/\1 \2/p' "$work/sipf_out.txt")
best_round=$(echo "$accs" | awk '$2 > best || NR == 1 { best = $2; r = $1 } END { print r }')
best_acc=$(echo "$accs" | awk '$2 > best || NR == 1 { best = $2 } END { print best }')
kept_acc=$(sed -n 's/^kept .*: validation accuracy \([0-9.]*\)%$/\1/p' "$work/sipf_out.txt")
eval_acc=$(./sirt eval --model "$work/sipf.bin" --tokenizer "$work/task_tok.bin" --data "$work/five.jsonl" --max-new 120 | sed -n 's/.*five.jsonl: accuracy \([0-9.]*\)%.*/\1/p')
if [ "$best_round" = 0 ]; then best_file="$work/sft.bin"; else best_file="$work/sipf.round$best_round.bin"; fi
[ "$(echo "$accs" | wc -l)" -eq 3 ] && [ -n "$kept_acc" ] && [ "$kept_acc" = "$best_acc" ] && [ "$eval_acc" = "$kept_acc" ] && cmp -s "$work/sipf.bin" "$best_file" &&
    ok "sipf: the kept model is round $best_round's (the first with the best validation accuracy, $best_acc%), bit for bit; eval gives it $eval_acc%" ||
    bad "sipf kept model: accuracies '$accs', kept $kept_acc, eval $eval_acc, best round $best_round"
# the same seed: the same files, bit for bit. A round depends only on the rounds before it, so
# a run of round 1 alone (half the time) must give round 1's files of the 2-round run.
sipf --valid "$work/five.jsonl" --rounds 1 --keep "$work/sipf2" --out "$work/sipf2.bin" >/dev/null 2>&1
same=1
for f in round1_steps.jsonl round1_prm.bin round1_pairs.jsonl; do
    cmp -s "$work/sipf/$f" "$work/sipf2/$f" || same=0
done
[ $same = 1 ] && cmp -s "$work/sipf.round1.bin" "$work/sipf2.round1.bin" && cmp -s "$work/sipf2/rounds.jsonl" <(head -2 "$work/sipf/rounds.jsonl") &&
    ok "sipf: the same seed again gives round 1's steps, PRM, pairs, model and rounds.jsonl lines bit for bit" || bad "sipf: not deterministic"
# the outcome-only variant: every step labelled with its path's final answer. Round 1 samples
# with the seed (1337), so sample + label-steps --outcome label the same paths: each line of
# sipf's file is one of theirs (verbatim, but for a byte that is not UTF-8: sipf writes the raw
# sample's as \ufffd, label-steps reads sample's U+FFFD back and writes it raw). With
# --drop-wrong-arithmetic, paths are dropped.
expect "sipf --outcome --drop-wrong-arithmetic: 1 round" sipf --rounds 1 --outcome --drop-wrong-arithmetic --keep "$work/sipf_o" --out "$work/sipf_o.bin"
cp "$work/out.txt" "$work/sipf_o_out.txt"
./sirt sample --model "$work/sft.bin" --tokenizer "$work/task_tok.bin" --data "$work/twenty.jsonl" -n 4 --max-new 120 --temperature 1 --seed 1337 --out "$work/sipf_paths.jsonl" >/dev/null
./sirt label-steps --outcome --data "$work/sipf_paths.jsonl" --out "$work/sipf_osteps.jsonl" >/dev/null
o="$work/sipf_o/round1_steps.jsonl"
sed 's/\\ufffd/\xef\xbf\xbd/g' "$o" >"$work/sipf_o_utf8.jsonl"
if [ -s "$o" ] && [ "$(grep -c -F -x -f "$work/sipf_o_utf8.jsonl" "$work/sipf_osteps.jsonl")" -eq "$(wc -l <"$o")" ] &&
    lab "$o" | awk -F'|' '{ n = split($1, l, ", "); split($2, s, ", "); for (i = 1; i <= n; i++) if (l[i] != l[1] || (l[i] == "true") != (s[i] == 1)) bad = 1 } END { exit bad }' &&
    grep -q '"round": 1, "samples": 80, .*"dropped_wrong_arithmetic": [1-9][0-9]*, .*"labels": "outcome"' "$work/sipf_o/rounds.jsonl" &&
    grep -q "round 1: [0-9]* steps labelled (outcome)" "$work/sipf_o_out.txt" && ! grep -q "simulating" "$work/sipf_o_out.txt"; then
    ok "sipf --outcome: every step labelled with its path's final answer, nothing simulated; each line one of label-steps --outcome's on the same samples; paths with a wrong equation dropped"
else bad "sipf --outcome: $(head -c 300 "$o")"; fi
expect_error "sipf: a margin of 0" "^sirt: error: --margin must be positive" sipf --margin 0
expect_error "sipf: --resume" "^sirt: error: sipf: --config, --resume, --save-every and --stop-after are not supported" sipf --resume

# ---- ./sirt train ----------------------------------------------------------------------------
section "./sirt train"
./tests/test_core --write-cyclic-shard "$work/train.bin" 20000 64
./tests/test_core --write-shard "$work/more.bin" 5000 64 7
cfg="--config 2,2,32,64,64"
run() { ./sirt train $cfg --data "$work/train.bin,$work/more.bin" --batch 4 --seq 32 --lr 3e-3 --warmup 3 --wd 0.1 "$@"; }

expect "train 40 steps" run --steps 40 --out "$work/a.bin" --log "$work/a.jsonl"
n=$(wc -l <"$work/a.jsonl")
first=$(head -1 "$work/a.jsonl")
if [ "$n" -eq 40 ] && echo "$first" | grep -q '^{"step": 1, "loss": [0-9.e+-]*, "lr": [0-9.e+-]*, "grad_norm": [0-9.e+-]*, "tok_per_s": [0-9.]*, "pad_frac": 0.0000}$'; then
    ok "metrics log: 40 lines, step counts from 1, loss/lr/grad_norm/tok_per_s, pad_frac 0 (windows)"
else bad "metrics log: $n lines, first: $first"; fi
l1=$(sed -n 1p "$work/a.jsonl" | sed 's/.*"loss": \([^,]*\),.*/\1/')
l40=$(sed -n 40p "$work/a.jsonl" | sed 's/.*"loss": \([^,]*\),.*/\1/')
if awk -v a="$l1" -v b="$l40" 'BEGIN { exit !(b < a - 1.0) }'; then ok "loss falls: $l1 -> $l40"
else bad "loss does not fall: $l1 -> $l40"; fi

expect "same seed again" run --steps 40 --out "$work/b.bin"
if cmp -s "$work/a.bin" "$work/b.bin"; then ok "same seed, same threads: bit-identical model"; else bad "same seed gave different weights"; fi
expect "one thread" env OMP_NUM_THREADS=1 ./sirt train $cfg --data "$work/train.bin,$work/more.bin" --batch 4 --seq 32 --lr 3e-3 --warmup 3 --wd 0.1 --steps 40 --out "$work/c.bin"
if cmp -s "$work/a.bin" "$work/c.bin"; then ok "1 thread and 2 threads: bit-identical model"; else bad "thread count changed the weights"; fi

# resume: 40 steps in one run == 15 steps, stop, --resume for the rest (log included); GPT-2,
# then a Llama with grouped-query attention (4 heads, 2 key/value heads)
strip() { sed 's/, "tok_per_s": [0-9.]*//' "$1"; }
for cfg in "--config 2,2,32,64,64" "--config 2,4,32,64,64,2 --arch llama"; do
    arch=$(case "$cfg" in *llama*) echo "Llama ";; esac)
    for mode in "" "--shuffle"; do
        rm -f "$work/r.bin" "$work/r.bin.state"
        run --steps 40 $mode --out "$work/full.bin" --log "$work/full.jsonl" >/dev/null
        run --steps 40 $mode --out "$work/r.bin" --log "$work/r.jsonl" --stop-after 15 --save-every 10 >/dev/null
        s1=$(wc -l <"$work/r.jsonl")
        run --steps 40 $mode --out "$work/r.bin" --log "$work/r.jsonl" --resume >"$work/out.txt" 2>&1
        if cmp -s "$work/full.bin" "$work/r.bin" && [ "$s1" -eq 15 ] && [ "$(strip "$work/full.jsonl")" = "$(strip "$work/r.jsonl")" ]; then
            ok "${arch}resume ${mode:-(in order)}: 15 steps + --resume 25 = 40 steps in one run, bit for bit (weights and log)"
        else bad "${arch}resume ${mode:-(in order)} differs"; tail -3 "$work/out.txt"; fi
    done
done
# the Llama's loss falls as GPT-2's does, and its bits do not depend on the thread count
run --steps 40 --out "$work/la.bin" --log "$work/la.jsonl" >/dev/null 2>&1
OMP_NUM_THREADS=1 run --steps 40 --out "$work/lb.bin" >/dev/null 2>&1
l1=$(sed -n 1p "$work/la.jsonl" | sed 's/.*"loss": \([^,]*\),.*/\1/')
l40=$(sed -n 40p "$work/la.jsonl" | sed 's/.*"loss": \([^,]*\),.*/\1/')
if awk -v a="$l1" -v b="$l40" 'BEGIN { exit !(b < a - 1.0) }' && cmp -s "$work/la.bin" "$work/lb.bin" &&
    head -c 4 "$work/la.bin" | od -An -tu4 | grep -q 20261116; then
    ok "train --arch llama: loss falls $l1 -> $l40; 1 and 2 threads bit-identical; our Llama file (magic 20261116)"
else bad "train --arch llama: loss $l1 -> $l40, or the thread count changed the weights"; fi
# bench --arch llama runs and prints its rows (no timing is checked): one training row, a decoding
# row for B=1 and B=64; params and the step's FLOPs as counted by hand for L=2 C=32 NH=4 KVH=2
# (k and v 16 wide) hidden=48 V=100 (Vp=128): 128*32 + 2*(32+64*32+32*32+32+96*32+32*48) + 32
# = 19,616 parameters; 3*(32 tokens * 2*(2*7,680+32*128) + 2 rows * 4*32*2 * (16*17/2)) =
# 3,944,448 FLOPs, printed as 0.004 GFLOP
if OMP_NUM_THREADS=1 ./sirt bench --arch llama --config 2,4,32,32,100,2,48 --batch 2 --seq 16 --steps 1 >"$work/bench.txt" 2>&1 &&
    grep -q '^Llama training step' "$work/bench.txt" && grep -q '^Llama decoding with the key/value cache' "$work/bench.txt" &&
    [ "$(awk '$1 == "2,4,32,32,100,2,48" && $2 == 2 && $3 == 16 && $4 == 19616 && $5 == "0.004" && NF == 9' "$work/bench.txt" | wc -l)" -eq 1 ] &&
    [ "$(awk '$1 == "2,4,32,32,100,2,48" && ($2 == 1 || $2 == 64) && $3 == 32 && $4 == 19616 && NF == 8' "$work/bench.txt" | wc -l)" -eq 2 ]; then
    ok "bench --arch llama: a training row (19,616 parameters, 0.004 GFLOP a step) and decoding rows at B=1 and B=64"
else bad "bench --arch llama: output wrong"; cat "$work/bench.txt"; fi
expect_error "bench --arch llama: --seq longer than maxT" "^sirt: error: --seq 64 exceeds maxT 32$" ./sirt bench --arch llama --config 2,4,32,32,100,2,48 --seq 64
cfg="--config 2,2,32,64,64"
# a log with lines past the checkpoint (as after a crash) is cut back to the checkpoint
run --steps 40 --out "$work/k.bin" --log "$work/k.jsonl" --stop-after 10 >/dev/null
echo '{"step": 11, "loss": 9, "lr": 0, "grad_norm": 0, "tok_per_s": 0}' >>"$work/k.jsonl"
run --steps 12 --out "$work/k.bin" --log "$work/k.jsonl" --resume >/dev/null 2>&1
if [ "$(grep -c '"step": 11,' "$work/k.jsonl")" -eq 1 ] && ! grep -q '"loss": 9,' "$work/k.jsonl"; then
    ok "resume drops log lines written after the checkpoint"
else bad "resume kept stale log lines"; fi

expect "train from --init (llm.c checkpoint)" ./sirt train --init "$work/a.bin" --data "$work/train.bin" --batch 2 --seq 64 --steps 3 --lr 1e-3 --out "$work/i.bin"
ls "$work"/*.tmp >/dev/null 2>&1 && bad "temporary files left behind" || ok "no temporary files left behind"

# ---- the Llama student and llama2.c's files -------------------------------------------------
section "Llama: llama2.c's files (../shared/data/llama2c)"
expect_error "--arch llama needs --config" "^sirt: error: train: --arch llama is the shape of a --config model" ./sirt train --init "$work/a.bin" --arch llama --data "$work/train.bin" --batch 2 --seq 8 --steps 1 --lr 1e-3
expect_error "export of a GPT-2 model to llama2.c" "^sirt: error: llama2.c's files hold Llama models; this model is GPT-2$" ./sirt export --model "$work/a.bin" --format llama2c --out "$work/x.bin"
# Hugging Face directories: GPT-2 out and back in bit-exact (the model file written again is
# the same file), and read as transformers reads it (tests/hf_reference.py, plain Python)
if ./sirt export --model "$work/a.bin" --format hf --out "$work/hf_gpt2" >/dev/null &&
    ./sirt train --init "$work/hf_gpt2" --data "$work/train.bin" --batch 2 --seq 16 --steps 1 --lr 0 --out "$work/hf_back.bin" >/dev/null &&
    ./sirt export --model "$work/hf_back.bin" --format hf --out "$work/hf_gpt2_again" >/dev/null &&
    cmp -s "$work/hf_gpt2/model.safetensors" "$work/hf_gpt2_again/model.safetensors" &&
    grep -q '"architectures": \["GPT2LMHeadModel"\]' "$work/hf_gpt2/config.json"; then
    ok "export --format hf (GPT-2) and --init DIR: a step at lr 0 gives the same safetensors back"
else bad "GPT-2 through a Hugging Face directory changed"; fi
sed 's/"layer_norm_epsilon": 1e-05/"layer_norm_epsilon": 1e-06/' "$work/hf_gpt2/config.json" >"$work/hf_gpt2_again/config.json"
expect_error "a Hugging Face config with another epsilon" "hf_gpt2_again/config.json: layer_norm_epsilon 1e-06; sirt uses 1e-5$" ./sirt sample --model "$work/hf_gpt2_again" --tokenizer "$work/tok.bin" --prompt hi
sed 's/"gelu_new"/"gelu"/' "$work/hf_gpt2/config.json" >"$work/hf_gpt2_again/config.json"
expect_error "a Hugging Face config with another activation" "hf_gpt2_again/config.json: activation_function gelu; sirt's GPT-2 uses \"gelu_new\" (GELU, tanh form)$" ./sirt sample --model "$work/hf_gpt2_again" --tokenizer "$work/tok.bin" --prompt hi
cp "$work/hf_gpt2/config.json" "$work/hf_gpt2_again/config.json"
head -c 5000 "$work/hf_gpt2/model.safetensors" >"$work/hf_gpt2_again/model.safetensors"
expect_error "a truncated safetensors file" "model.safetensors: transformer.wte.weight: data_offsets \[0, 8192\] do not hold 2048 values of F32 in 2160 bytes" ./sirt sample --model "$work/hf_gpt2_again" --tokenizer "$work/tok.bin" --prompt hi
if command -v python3 >/dev/null 2>&1; then
    python3 tests/hf_reference.py "$work/hf_gpt2" "$work/a.bin" tests/test_core 1 7 30 2 63 9 >"$work/hf_ref.txt" 2>&1
    count_unit "$work/hf_ref.txt" tests/hf_reference.py $?
else skip "python3 is absent: tests/hf_reference.py is skipped"; fi
L2C=../shared/data/llama2c
if [ -f "$L2C/stories260K.bin" ] && [ -f "$L2C/stories260K_v1.bin" ] && [ -f "$L2C/tok512.bin" ]; then
    first="Once upon a time, there was a little girl named Lily. She loved to play outside in the park."
    for m in stories260K.bin stories260K_v1.bin; do
        ./sirt sample --model "$L2C/$m" --tokenizer "$L2C/tok512.bin" --prompt "" --temperature 0 --max-new 200 >"$work/story.txt" 2>&1
        if [ "$(head -c ${#first} "$work/story.txt")" = "$first" ]; then
            ok "sample --model $m --prompt \"\" --temperature 0: from BOS, llama2.c's greedy text: $first ..."
        else bad "sample from $m: $(head -c 200 "$work/story.txt")"; fi
    done
    if ./sirt export --model "$L2C/stories260K.bin" --format llama2c --out "$work/s_v1.bin" >/dev/null && cmp -s "$work/s_v1.bin" "$L2C/stories260K_v1.bin"; then
        ok "export --format llama2c of the legacy stories260K.bin = llama2.c's own version-1 export, byte for byte"
    else bad "export --format llama2c differs from stories260K_v1.bin"; fi
    head -c 500000 "$L2C/stories260K.bin" >"$work/l2c_trunc.bin"
    expect_error "truncated llama2.c checkpoint" "legacy checkpoint of dim 64, 5 layers, 8 heads, 4 kv heads, vocabulary 512, seq_len 512 has 1056540 bytes, the file 500000 (truncated)" ./sirt sample --model "$work/l2c_trunc.bin" --tokenizer "$L2C/tok512.bin" --prompt hi
    head -c 300000 "$L2C/stories260K_v1.bin" >"$work/l2c_trunc.bin"
    expect_error "truncated llama2.c version-1 checkpoint" "version 1 checkpoint of dim 64.* the file 300000 (truncated)" ./sirt sample --model "$work/l2c_trunc.bin" --tokenizer "$L2C/tok512.bin" --prompt hi
    # fine-tuning stories260K: a shard of tok512's ids (each line a document after BOS), then
    # train from the llama2.c file; 4 steps, stop, --resume = 10 steps in one run
    printf '%s\n' "Once upon a time, there was a little dog named Max. Max liked to run in the big green park with his friend Sue." \
        "One day, Sue found a shiny red ball under a tree. She threw the ball and Max ran very fast to get it." \
        "Tom had a small boat. He wanted to sail it on the pond, but the wind was too strong and the boat went away." \
        "Lily and her mom baked a cake for dad. They put sugar and eggs in a bowl and mixed them with a spoon." \
        "The cat saw a bird on the fence. The cat wanted to play, but the bird flew up into the blue sky." \
        "Ben was sad because it was raining. His mom said, \"Let's read a book together.\" Ben smiled and sat on her lap." >"$work/stories.txt"
    ./sirt tokenize --tokenizer "$L2C/tok512.bin" --shard "$work/stories.shard" <"$work/stories.txt" >/dev/null
    ltrain() { ./sirt train --init "$L2C/stories260K.bin" --data "$work/stories.shard" --batch 4 --seq 32 --steps 10 --lr 5e-3 --wd 0 --clip 0 --schedule constant --warmup 0 "$@"; }
    ltrain --log "$work/st.jsonl" --out "$work/st.bin" >/dev/null 2>&1
    ltrain --log "$work/st2.jsonl" --out "$work/st2.bin" --stop-after 4 >/dev/null 2>&1
    ltrain --log "$work/st2.jsonl" --out "$work/st2.bin" --resume >/dev/null 2>&1
    n=$(grep -c '^{"step": [0-9]*, "loss": [0-9.e+-]*, "lr": 0.005, "grad_norm": [0-9.e+-]*, "tok_per_s": [0-9.]*, "pad_frac": 0.0000}$' "$work/st.jsonl")
    l1=$(sed -n 1p "$work/st.jsonl" | sed 's/.*"loss": \([^,]*\),.*/\1/')
    l10=$(sed -n 10p "$work/st.jsonl" | sed 's/.*"loss": \([^,]*\),.*/\1/')
    if [ "$n" -eq 10 ] && awk -v a="$l1" -v b="$l10" 'BEGIN { exit !(b < a && a < 3) }' &&
        cmp -s "$work/st.bin" "$work/st2.bin" && [ "$(strip "$work/st.jsonl")" = "$(strip "$work/st2.jsonl")" ]; then
        ok "train --init stories260K.bin: 10 log lines as GPT-2's, loss $l1 (pretrained) -> $l10; 4 steps + --resume 6 = 10 in one run, bit for bit"
    else bad "train --init stories260K.bin: $n log lines, loss $l1 -> $l10, or resume differs"; fi
    # sft, dpo and refine on the Llama, from llama2.c's file; the results load and sample
    printf '%s\n' '{"prompt": "Max had a red ball.", "completion": " He played with it in the park."}' \
        '{"prompt": "Sue saw a cat.", "completion": " The cat was soft and happy."}' >"$work/lsft.jsonl"
    printf '%s\n' '{"prompt": "Max had a red ball.", "chosen": " He played with it in the park.", "rejected": " The sky fell down."}' \
        '{"prompt": "Sue saw a cat.", "chosen": " The cat was soft and happy.", "rejected": " Cat cat cat."}' >"$work/lpairs.jsonl"
    ./sirt data --task math --split train --n 4 --seed 3 --out "$work/lq.jsonl" >/dev/null
    expect "sft --init stories260K.bin (llama2.c's tokenizer.bin)" ./sirt sft --init "$L2C/stories260K.bin" --tokenizer "$L2C/tok512.bin" --data "$work/lsft.jsonl" --batch 2 --seq 32 --steps 4 --lr 1e-3 --out "$work/lsft.bin"
    expect "dpo on the Llama (policy = reference = the SFT model)" ./sirt dpo --model "$work/lsft.bin" --ref "$work/lsft.bin" --tokenizer "$L2C/tok512.bin" --pairs "$work/lpairs.jsonl" --batch 2 --seq 32 --steps 2 --lr 1e-4 --out "$work/ldpo.bin" --log "$work/ldpo.jsonl"
    if head -1 "$work/ldpo.jsonl" | grep -q '"loss": 0.6931472,'; then ok "dpo on the Llama starts at ln 2 (policy = reference)"
    else bad "dpo on the Llama: first line $(head -1 "$work/ldpo.jsonl")"; fi
    expect "refine on the Llama" ./sirt refine --model "$work/lsft.bin" --tokenizer "$L2C/tok512.bin" --data "$work/lq.jsonl" --samples 2 --max-new 16 --batch 2 --seq 128 --steps 1 --out "$work/lref.bin"
    expect "sample from the Llama after dpo" ./sirt sample --model "$work/ldpo.bin" --tokenizer "$L2C/tok512.bin" --prompt "Max had a red ball." --temperature 0 --max-new 8
    # through a Hugging Face directory and back to llama2.c's file: byte for byte the same
    ./sirt export --model "$L2C/stories260K.bin" --format hf --out "$work/hf_stories" >/dev/null
    ./sirt sample --model "$work/hf_stories" --tokenizer "$L2C/tok512.bin" --prompt "" --temperature 0 --max-new 40 >"$work/story.txt" 2>&1
    if ./sirt export --model "$work/hf_stories" --format llama2c --out "$work/hf_v1.bin" >/dev/null &&
        cmp -s "$work/hf_v1.bin" "$L2C/stories260K_v1.bin" && [ "$(head -c ${#first} "$work/story.txt")" = "$first" ] &&
        grep -q '"num_key_value_heads": 4,' "$work/hf_stories/config.json" && grep -q '"tie_word_embeddings": true,' "$work/hf_stories/config.json"; then
        ok "stories260K -> Hugging Face directory (LlamaForCausalLM, 4 kv heads, tied) -> llama2.c: stories260K_v1.bin byte for byte; greedy text from the directory as llama2.c's"
    else bad "stories260K through a Hugging Face directory changed"; fi
    if command -v python3 >/dev/null 2>&1; then
        python3 tests/hf_reference.py "$work/hf_stories" "$L2C/stories260K.bin" tests/test_core 1 403 407 261 378 11 >"$work/hf_ref.txt" 2>&1
        count_unit "$work/hf_ref.txt" tests/hf_reference.py $?
        python3 tests/llama2c_reference.py "$L2C/stories260K.bin" "$L2C/tok512.bin" ./sirt tests/test_core >"$work/l2c_ref.txt" 2>&1
        count_unit "$work/l2c_ref.txt" tests/llama2c_reference.py $?
    else skip "python3 is absent: the independent reference (tests/llama2c_reference.py) is skipped"; fi
else skip "$L2C is absent: stories260K and tok512 checks skipped"; fi

# crash safety: kill -9 at random moments and --resume, for train, sft and dpo
section "kill -9 and --resume (tests/kill_resume.sh)"
tests/kill_resume.sh "$work/kill" 5 1 >"$work/kill_resume.txt" 2>&1
count_unit "$work/kill_resume.txt" tests/kill_resume.sh $?

# a failed write names the file and the reason, removes its .tmp files and leaves the previous
# checkpoint as it was: a file size limit (as a full disk) hit by the weights (124.5 KiB) or the
# state (248 KiB), a directory in the way of the state's .tmp, a read-only directory
section "failed writes"
wflags="$cfg --data $work/train.bin --batch 4 --seq 32 --lr 3e-3 --steps 20 --out $work/f.bin --log $work/f.jsonl"
./sirt train $wflags --stop-after 5 >/dev/null
./sirt train $wflags --out "$work/f_full.bin" --log "$work/f_full.jsonl" >/dev/null
cp "$work/f.bin" "$work/f_saved.bin"; cp "$work/f.bin.state" "$work/f_saved.state"
intact() { # the checkpoint is the one of step 5, and no .tmp file is left
    if cmp -s "$work/f.bin" "$work/f_saved.bin" && cmp -s "$work/f.bin.state" "$work/f_saved.state" && ! ls "$work"/f.bin*.tmp >/dev/null 2>&1; then
        ok "$1: the checkpoint of step 5 is intact, no .tmp left"
    else bad "$1: the previous checkpoint changed or a .tmp is left"; fi
}
expect_error "file size limit while writing the weights" "cannot write .*/f.bin.tmp: File too large (.*/f.bin and .*/f.bin.state are left as they were)" bash -c "trap '' XFSZ; ulimit -f 100; exec ./sirt train $wflags --resume --save-every 2"
intact "file size limit on the weights"
expect_error "file size limit while writing the state" "cannot write .*/f.bin.state.tmp: File too large (.*/f.bin and .*/f.bin.state are left as they were)" bash -c "trap '' XFSZ; ulimit -f 200; exec ./sirt train $wflags --resume --save-every 2"
intact "file size limit on the state"
mkdir "$work/f.bin.state.tmp"
expect_error "a directory in the way of the state's .tmp" "cannot write .*/f.bin.state.tmp: Is a directory (.*/f.bin and .*/f.bin.state are left as they were)" ./sirt train $wflags --resume --save-every 2
rmdir "$work/f.bin.state.tmp"
intact "a directory in the way"
# a read-only directory (in $work); root writes anywhere, so as root the run goes without the
# capabilities that override file permissions (as the directory's owner, it may still reach it)
ro="$work/ro"; mkdir "$ro"; cp "$work/f_saved.bin" "$ro/m.bin"; cp "$work/f_saved.state" "$ro/m.bin.state"; cp "$work/train.bin" "$ro/"
chmod 644 "$ro"/*; chmod 555 "$ro"
as_user=""; [ "$(id -u)" -eq 0 ] && as_user="setpriv --bounding-set -dac_override,-dac_read_search,-fowner --"
if [ "$(id -u)" -ne 0 ] || $as_user true 2>/dev/null; then
    expect_error "a read-only directory" "cannot write $ro/m.bin.tmp: Permission denied" $as_user ./sirt train $cfg --data "$ro/train.bin" --batch 4 --seq 32 --lr 3e-3 --steps 20 --out "$ro/m.bin" --resume
    cmp -s "$ro/m.bin" "$work/f_saved.bin" && cmp -s "$ro/m.bin.state" "$work/f_saved.state" && [ "$(ls "$ro" | wc -l)" -eq 3 ] &&
        ok "a read-only directory: the checkpoint is intact" || bad "a read-only directory: the checkpoint changed"
else skip "running as root and setpriv cannot drop capabilities: the read-only directory is not checked"; fi
chmod 755 "$ro"; rm -rf "$ro"
./sirt train $wflags --resume >/dev/null 2>&1
if cmp -s "$work/f.bin" "$work/f_full.bin" && [ "$(strip "$work/f.jsonl")" = "$(strip "$work/f_full.jsonl")" ]; then
    ok "after the failed writes, --resume finishes identical to an uninterrupted run (weights and log)"
else bad "resume after failed writes differs"; fi

# the numerical guard and --detect-anomaly on a checkpoint with a NaN weight in layer 1's fcw
section "numerical guards"
./sirt train $cfg --data "$work/train.bin" --batch 4 --seq 32 --steps 1 --lr 0 --out "$work/nan.bin" >/dev/null
./tests/test_core --poke "$work/nan.bin" fcw 4096 nan # fcw is (L, 4C, C): 4096 = layer 1, row 0
./sirt train --init "$work/nan.bin" --data "$work/train.bin" --batch 4 --seq 32 --steps 10 --lr 1e-3 --max-bad-steps 3 --out "$work/g.bin" --log "$work/g.jsonl" >/dev/null 2>"$work/err.txt"
rc=$?
state_int() { od -An -t d4 -j $((4 * $2)) -N 4 "$1" | tr -d ' '; } # state_int FILE INDEX: header[INDEX]
if [ $rc -eq 1 ] && [ "$(grep -c '^{"step": [123], "loss": null, "lr": [0-9.e-]*, "grad_norm": null, "tok_per_s": [0-9.]*, "pad_frac": 0.0000, "skipped": true}$' "$work/g.jsonl")" -eq 3 ] &&
    [ "$(wc -l <"$work/g.jsonl")" -eq 3 ] && [ "$(grep -c '^sirt: warning: step [123]: loss -*nan, gradient norm -*nan: not finite, the update was skipped' "$work/err.txt")" -eq 3 ]; then
    ok "train on a NaN weight: 3 steps logged as skipped (loss and grad_norm null), 3 warnings, exit 1"
else bad "train guard: exit $rc, $(head -c 300 "$work/g.jsonl")"; fi
if tail -1 "$work/err.txt" | grep -q "^sirt: error: steps 1 to 3 had a non-finite loss or gradient norm (--max-bad-steps 3): stopping. Their updates were skipped: .*g.bin holds the weights after step 0, saved with the state at step 3"; then
    ok "the stop after --max-bad-steps 3: $(tail -1 "$work/err.txt" | cut -c1-150)..."
else bad "the stop message: $(tail -1 "$work/err.txt")"; fi
if cmp -s "$work/g.bin" "$work/nan.bin" && [ "$(tail -c +1025 "$work/g.bin.state" | tr -d '\0' | wc -c)" -eq 0 ] &&
    [ "$(state_int "$work/g.bin.state" 2)" -eq 3 ] && [ "$(state_int "$work/g.bin.state" 15)" -eq 3 ] && [ "$(state_int "$work/g.bin.state" 16)" -eq 3 ]; then
    ok "skipped updates leave the parameters (= the input, bit for bit) and AdamW's moments (all zero) untouched; the state counts 3 steps, 3 skipped, 3 in a row"
else bad "skipped updates changed the weights or moments"; fi
expect_error "--detect-anomaly names the kernel, layer and tensor" "^sirt: error: --detect-anomaly: matmul_forward in layer 1 wrote 128 non-finite values (of 16384) into fch; every kernel before it wrote finite values$" ./sirt train --init "$work/nan.bin" --data "$work/train.bin" --batch 4 --seq 32 --steps 10 --lr 1e-3 --detect-anomaly --out "$work/g2.bin"

# ---- bad input: one clear line and exit 1, never a crash -------------------------------------
section "bad input"
printf 'not a model at all, just some bytes that go on for a while............' >"$work/junk.bin"
expect_error "missing data file" "cannot open token shard" run --steps 1 --data "$work/nope.bin"
expect_error "missing model file" "cannot open model" ./sirt train --init "$work/nope.bin" --data "$work/train.bin" --batch 2 --seq 8 --steps 1 --lr 1e-3
expect_error "wrong magic" "bad magic" ./sirt train --init "$work/train.bin" --data "$work/train.bin" --batch 2 --seq 8 --steps 1 --lr 1e-3
expect_error "short junk file" "truncated header" ./sirt train --init "$work/junk.bin" --data "$work/train.bin" --batch 2 --seq 8 --steps 1 --lr 1e-3
cp "$work/a.bin" "$work/v5.bin"; printf '\x05\x00\x00\x00' | dd of="$work/v5.bin" bs=1 seek=4 conv=notrunc 2>/dev/null
expect_error "bfloat16 version" "version 5" ./sirt train --init "$work/v5.bin" --data "$work/train.bin" --batch 2 --seq 8 --steps 1 --lr 1e-3
printf '\x07\x00\x00\x00' | dd of="$work/v5.bin" bs=1 seek=4 conv=notrunc 2>/dev/null
expect_error "unknown version" "unsupported version 7" ./sirt train --init "$work/v5.bin" --data "$work/train.bin" --batch 2 --seq 8 --steps 1 --lr 1e-3
head -c 30000 "$work/a.bin" >"$work/trunc.bin"
expect_error "truncated checkpoint" "truncated" ./sirt train --init "$work/trunc.bin" --data "$work/train.bin" --batch 2 --seq 8 --steps 1 --lr 1e-3
head -c 3000 "$work/train.bin" >"$work/short.bin"
expect_error "shard size not matching its header" "but the file is" run --steps 1 --data "$work/short.bin"
./tests/test_core --write-shard "$work/big.bin" 3000 500 1
expect_error "token id >= V names the file and position" "big.bin: token [0-9]* at position [0-9]* is outside the model's vocabulary (V=64)" run --steps 1 --data "$work/big.bin"
expect_error "T > maxT" "longer than the model's context" ./sirt train --config 1,1,8,16,64 --data "$work/train.bin" --batch 1 --seq 32 --steps 1 --lr 1e-3
expect_error "bad --config" "C must be a multiple of NH" ./sirt train --config 1,3,8,16,64 --data "$work/train.bin" --batch 1 --seq 8 --steps 1 --lr 1e-3
expect_error "missing checkpoint on --resume" "cannot resume" ./sirt train --data "$work/train.bin" --batch 4 --seq 32 --steps 5 --lr 1e-3 --out "$work/none.bin" --resume
cp "$work/a.bin" "$work/nostate.bin"
expect_error "missing state on --resume" "cannot resume: training state" ./sirt train --data "$work/train.bin" --batch 4 --seq 32 --steps 5 --lr 1e-3 --out "$work/nostate.bin" --resume
cp "$work/a.bin.state" "$work/nostate.bin.state"; cp "$work/i.bin" "$work/nostate.bin"
expect_error "state from another checkpoint" "does not belong with" ./sirt train --data "$work/train.bin" --batch 4 --seq 32 --steps 5 --lr 1e-3 --out "$work/nostate.bin" --resume
expect_error "unknown flag" "unknown flag" ./sirt train --bogus 1
expect_error "unwritable --out is reported before training" "cannot write" run --steps 5 --out "$work/no/such/dir/m.bin"
./tests/test_core --write-shard "$work/tiny.bin" 100 64 1
expect_error "data too short for one batch" "holds no batch" ./sirt train $cfg --data "$work/tiny.bin" --batch 4 --seq 64 --steps 1 --lr 1e-3
# sizes against memory, before anything is allocated: a batch, a model; and an allocation that fails
expect_error "an absurd batch" "^sirt: error: B=1048576 T=1024 needs [0-9.]* GiB of activations ([0-9.]* GiB with the parameters, gradients and AdamW moments); this machine has [0-9.]* GiB$" ./sirt train --config 2,2,32,1024,64 --data "$work/train.bin" --batch 1048576 --seq 1024 --steps 1 --lr 1e-3
expect_error "an absurd model" "^sirt: error: the model (L=1024 NH=16 C=65536 maxT=1024 V=16777216) needs [0-9.]* GiB of parameters; this machine has [0-9.]* GiB$" ./sirt train --config 1024,16,65536,1024,16777216 --data "$work/train.bin" --batch 1 --seq 8 --steps 1 --lr 1e-3
./tests/test_core --write-shard "$work/long.bin" 600000 64 1
expect_error "activations that cannot be allocated (ulimit -v)" "^sirt: error: B=512 T=1024 needs 2.80 GiB of activations: out of memory (the allocation failed)$" bash -c "ulimit -v 1500000; exec ./sirt train --config 1,1,8,1024,64 --data '$work/long.bin' --batch 512 --seq 1024 --steps 1 --lr 1e-3 --out '$work/x.bin'"
./sirt data --task math --split train --n 1100 --seed 3 --out "$work/math1100.jsonl"
expect_error "--epochs too many steps" "epochs 1000000 x 1100 batches per epoch = 1100000000 steps, more than 2^30" ./sirt sft --config 1,2,32,256,512 --tokenizer "$work/task_tok.bin" --data "$work/math1100.jsonl" --batch 1 --seq 64 --lr 1e-3 --epochs 1000000 --out "$work/x.bin"

# ---- AddressSanitizer + UndefinedBehaviorSanitizer -----------------------------------------------
# `make asan`: the unit tests and a few steps of every command (tests/short_runs.sh) again, built
# with -fsanitize=address,undefined. A finding (ASan, LeakSanitizer at exit, UBSan) ends the program
# with status 86, so no run can pass with one.
section "make asan: unit tests and short runs under AddressSanitizer + UBSan"
if echo 'int main(void) { return 0; }' | ${CC:-cc} -fsanitize=address,undefined -x c -o "$work/asan_probe" - >/dev/null 2>&1 &&
   "$work/asan_probe" >/dev/null 2>&1; then
    if make -s -j"$jobs" asan >"$work/asan_build.txt" 2>&1; then
        mkdir -p "$work/asan"
        export ASAN_OPTIONS=exitcode=86:detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=exitcode=86:print_stacktrace=1
        # first, that a finding really fails a run: an overflow, a leak, undefined behaviour
        san_flags=$(make -s -p asan 2>/dev/null | sed -n 's/^SAN_FLAGS = //p' | head -1)
        live=""
        for bug in 'volatile char *p = malloc(4); p[c + 3] = 1; free((void *)p); return 0;' \
                   'char *volatile p = malloc(4); p[0] = (char)c; p = 0; return 0;' \
                   'int x = 2147483647 - 1; x += c + 1; return x == 7;'; do
            printf '#include <stdlib.h>\nint main(int c, char **v) { (void)v; %s }\n' "$bug" >"$work/bug.c"
            ${CC:-cc} $san_flags -o "$work/bug" "$work/bug.c" >/dev/null 2>&1 && "$work/bug" >/dev/null 2>&1
            live="$live $?"
        done
        [ "$live" = " 86 86 86" ] && ok "sanitizers are live: a heap overflow, a leak and a signed overflow each exit 86" ||
            bad "sanitizer probes exited with$live (expected 86 86 86)"
        unit_dir=tests/asan
        unit_tests
        section "fuzz corpus and crash replays under the sanitizers"
        replay tests/asan 0
        section "./sirt_asan: every command for a few steps (tests/short_runs.sh)"
        tests/short_runs.sh "$work/asan/runs" ./sirt_asan >"$work/short_runs.txt" 2>&1
        count_unit "$work/short_runs.txt" tests/short_runs.sh $?
        unset ASAN_OPTIONS UBSAN_OPTIONS
        unit_dir=tests
    else bad "make asan failed"; tail -20 "$work/asan_build.txt"; fi
else skip "${CC:-cc} cannot build and run -fsanitize=address,undefined programs; sanitizer runs skipped"; fi

# ---- a build without OpenMP ------------------------------------------------------------------
section "make NO_OMP=1"
if make -s NO_OMP=1 BIN="$work/sirt_noomp" >"$work/out.txt" 2>&1 && ! grep -q fopenmp <(make -n NO_OMP=1 BIN="$work/x"); then
    expect "NO_OMP build trains" "$work/sirt_noomp" train $cfg --data "$work/train.bin" --batch 4 --seq 32 --lr 3e-3 --warmup 3 --wd 0.1 --steps 10 --out "$work/n.bin"
else bad "make NO_OMP=1 failed"; cat "$work/out.txt"; fi

# ---- the CUDA build: a compile-and-link check where nvcc exists (no GPU needed) -------------------
section "make cuda"
if command -v nvcc >/dev/null 2>&1 || [ -x /usr/local/cuda/bin/nvcc ]; then
    command -v nvcc >/dev/null 2>&1 || export PATH=/usr/local/cuda/bin:$PATH
    if make -s -j"$jobs" cuda >"$work/cuda.txt" 2>&1 && [ -x sirt_cuda ] && ! grep -qi warning "$work/cuda.txt"; then
        ok "kernels.cu compiles without warnings and ./sirt_cuda links (sm_$(make -s -p cuda 2>/dev/null | sed -n 's/^CUDA_ARCH = //p' | head -1))"
    else bad "make cuda failed"; tail -20 "$work/cuda.txt"; fi
    # the kernel-by-kernel GPU test (tests/gpu_kernels.c), compiled and linked, not run here
    if make -s -j"$jobs" tests/gpu_kernels >"$work/gpu_kernels.txt" 2>&1 && [ -x tests/gpu_kernels ] && ! grep -qi warning "$work/gpu_kernels.txt"; then
        ok "tests/gpu_kernels (every kernel, GPU against CPU) compiles without warnings and links"
    else bad "make tests/gpu_kernels failed"; tail -20 "$work/gpu_kernels.txt"; fi
    if nvidia-smi >/dev/null 2>&1; then echo "note: a GPU is present: tests/gpu.sh (make gpu-check) runs the GPU checks"; fi
else skip "nvcc is absent, the CUDA build is not checked"; fi

# ---- nothing left behind ------------------------------------------------------------------------
section "files left behind"
left=$(ls -A "$TMPDIR")
[ -z "$left" ] && ok "no scratch directory or file left in TMPDIR" || bad "left in TMPDIR: $(echo "$left" | tr '\n' ' ')"
if [ -f "$work/checkout_before.txt" ]; then
    # new in the checkout: only what test.sh builds there (make asan, make cuda, tests/gpu_kernels)
    new=$(in_checkout | comm -13 "$work/checkout_before.txt" - | grep -v -x -e sirt_asan -e sirt_cuda -e 'tests/asan/[^/]*' -e tests/gpu_kernels -e tests/gpu_kernels.o -e tests/cpu_kernels.o)
    [ -z "$new" ] && ok "no file written or changed in the checkout, but the build outputs" || bad "written in the checkout: $(echo "$new" | tr '\n' ' ')"
else skip "not a git checkout: files written in the checkout are not checked"; fi

[ "$skipped" -eq 0 ] || echo "$skipped skipped (the skip lines above)"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
