#!/usr/bin/env bash
# tests/short_runs.sh — every command of the program for a few steps on tiny models, to run
# under a memory checker:
#     tests/short_runs.sh WORKDIR PROGRAM...
# PROGRAM... is how to start sirt: `./sirt_asan` (test.sh), or `valgrind ... ./sirt_vg`
# (tests/valgrind.sh). Covers tokenizer training and tokenize, data, train and its resume, sft,
# sample, eval (and --rerank), dpo, refine, label-steps, prm and sipf, a Llama (train, resume, sft,
# sample, export to llama2.c and Hugging Face and back), plus a few bad inputs that must end in
# one clear error (exit 1).
# The checker must make a run fail with an exit status other than 0 and 1 when it finds
# something. Needs tests/test_core (the normal build) to write token shards.
# Prints "ok: ..." or "FAIL: ..." per run and ends with "N passed, M failed".
set -u
work=$1
shift
mkdir -p "$work"
passed=0
failed=0
log="$work/short_runs.txt"

# run DESCRIPTION ARGS...: PROGRAM ARGS... exits 0
run() {
    local desc=$1; shift
    if "$@" >"$log" 2>&1 </dev/null; then passed=$((passed + 1)); echo "ok: $desc"
    else failed=$((failed + 1)); echo "FAIL: $desc (exit $?)"; tail -30 "$log"; fi
}
sirt() { run "$1" "${prog[@]}" "${@:2}"; }
# sirt_error DESCRIPTION PATTERN ARGS...: exits 1 with PATTERN in its output (a checker's report
# would change the exit status)
sirt_error() {
    local desc=$1 pattern=$2; shift 2
    "${prog[@]}" "$@" >"$log" 2>&1 </dev/null
    local rc=$?
    if [ "$rc" -eq 1 ] && grep -q -- "$pattern" "$log" && ! grep -q 'Sanitizer\|runtime error:' "$log"; then
        passed=$((passed + 1)); echo "ok: $desc: $(grep -m1 -- "$pattern" "$log")"
    else failed=$((failed + 1)); echo "FAIL: $desc (exit $rc)"; tail -30 "$log"; fi
}
prog=("$@")
w=$work

# inputs: token shards, the built-in task, a tokenizer, preference pairs
./tests/test_core --write-cyclic-shard "$w/shard.bin" 3000 64
sirt "data: 40 train and 6 valid items" data --task math --split train --n 40 --seed 3 --out "$w/train.jsonl"
"${prog[@]}" data --task math --split valid --n 6 --seed 3 --out "$w/valid.jsonl" >/dev/null 2>&1
sirt "tokenizer: train 300 tokens, write llm.c's table" tokenizer --train "$w/train.jsonl" --vocab 300 \
    --split-digits --out "$w/tok.bin" --llmc-out "$w/tok_llmc.bin"
printf 'Tom buys 5 more.\n\xff\xfe raw bytes <|endoftext|>\n' >"$w/text.txt"
run "tokenize and --decode" sh -c '"$@" tokenize --tokenizer "$0/tok.bin" <"$0/text.txt" >"$0/ids.txt" &&
    "$@" tokenize --tokenizer "$0/tok.bin" --decode <"$0/ids.txt" >"$0/back.txt" && cmp -s "$0/text.txt" "$0/back.txt"' "$w" "${prog[@]}"
for i in 1 2 3 4 5 6; do
    printf '{"prompt": "Tom has %d apples. How many?\\n", "chosen": "%d + 1 = %d.\\nThe answer is %d.", "rejected": "The answer is %d."}\n' \
        $i $i $((i + 1)) $((i + 1)) $((i + 5))
done >"$w/pairs.jsonl"

# the commands
train=(train --config 1,2,16,32,64 --data "$w/shard.bin" --batch 2 --seq 16 --lr 1e-3 --log "$w/t.jsonl")
sirt "train 3 steps, stopping after 2" "${train[@]}" --steps 3 --stop-after 2 --out "$w/t.bin"
sirt "train --resume (model and state load)" "${train[@]}" --steps 3 --resume --out "$w/t.bin"
sirt "train --init --shuffle" train --init "$w/t.bin" --data "$w/shard.bin" --batch 2 --seq 16 --lr 1e-3 \
    --steps 2 --shuffle --out "$w/t2.bin"
sirt "sft 3 steps with validation" sft --config 1,2,16,160,300 --tokenizer "$w/tok.bin" --data "$w/train.jsonl" \
    --valid "$w/valid.jsonl" --steps 3 --batch 4 --seq 160 --lr 1e-3 --eval-every 2 --out "$w/sft.bin"
sirt "sample 2 completions per prompt" sample --model "$w/sft.bin" --tokenizer "$w/tok.bin" --data "$w/valid.jsonl" \
    --out "$w/samples.jsonl" -n 2 --max-new 12 --batch 4 --top-k 5 --top-p 0.9
sirt "eval with 2 samples" eval --model "$w/sft.bin" --tokenizer "$w/tok.bin" --data "$w/valid.jsonl" \
    --samples 2 --max-new 12 --out "$w/preds.jsonl"
sirt "dpo 2 steps" dpo --model "$w/sft.bin" --ref "$w/sft.bin" --tokenizer "$w/tok.bin" --pairs "$w/pairs.jsonl" \
    --batch 2 --seq 64 --steps 2 --lr 1e-3 --out "$w/dpo.bin"
head -4 "$w/train.jsonl" >"$w/four.jsonl"
sirt "refine: one round" refine --model "$w/sft.bin" --tokenizer "$w/tok.bin" --data "$w/four.jsonl" \
    --valid "$w/valid.jsonl" --samples 2 --max-new 16 --rounds 1 --batch 2 --seq 160 --out "$w/refined.bin"
sirt "label-steps: 2 continuations per step of 2 samples" label-steps --model "$w/sft.bin" --tokenizer "$w/tok.bin" \
    --data "$w/samples.jsonl" -k 1,2 --max-new 12 --out "$w/steps.jsonl" --summary "$w/labels.json"
sirt "label-steps --outcome" label-steps --outcome --data "$w/samples.jsonl" --out "$w/osteps.jsonl"
sirt "prm 2 steps with a held-out report" prm --init "$w/sft.bin" --tokenizer "$w/tok.bin" --data "$w/steps.jsonl" \
    --valid "$w/osteps.jsonl" --batch 4 --seq 160 --steps 2 --lr 1e-3 --out "$w/prm.bin" --summary "$w/prm.json"
sirt "eval --rerank with 2 samples" eval --model "$w/sft.bin" --tokenizer "$w/tok.bin" --data "$w/valid.jsonl" \
    --samples 2 --max-new 12 --rerank "$w/prm.bin" --rerank-by min --out "$w/rr.jsonl" --summary "$w/rr.json"

sirt "sipf: two rounds (sample, keep, simulate, PRM, pairs, ORPO, validate), every round's files" sipf \
    --model "$w/sft.bin" --tokenizer "$w/tok.bin" --data "$w/four.jsonl" --valid "$w/valid.jsonl" --samples 3 -k 2 \
    --max-new 12 --rounds 2 --batch 2 --seq 160 --lr 1e-3 --margin 1e-6 --keep "$w/sipf" --log "$w/sipf.jsonl" --out "$w/sipf.bin"
sirt "sipf --outcome --drop-wrong-arithmetic --reward min --soft" sipf --model "$w/sft.bin" --tokenizer "$w/tok.bin" \
    --data "$w/four.jsonl" --samples 3 --max-new 12 --rounds 1 --batch 2 --seq 160 --lr 1e-3 --margin 1e-6 --outcome \
    --drop-wrong-arithmetic --reward min --soft --out "$w/sipf_o.bin"
# the Llama: train (grouped-query attention) and resume, sft, sample, the exports and reading them
ltrain=(train --config 1,4,16,32,64,2 --arch llama --data "$w/shard.bin" --batch 2 --seq 16 --lr 1e-3)
sirt "train a Llama 3 steps, stopping after 2" "${ltrain[@]}" --steps 3 --stop-after 2 --out "$w/l.bin"
sirt "train a Llama --resume" "${ltrain[@]}" --steps 3 --resume --out "$w/l.bin"
sirt "sft a Llama 2 steps" sft --config 1,4,16,160,300,2 --arch llama --tokenizer "$w/tok.bin" \
    --data "$w/train.jsonl" --steps 2 --batch 4 --seq 160 --lr 1e-3 --out "$w/lsft.bin"
sirt "sample from the Llama" sample --model "$w/lsft.bin" --tokenizer "$w/tok.bin" --prompt "Tom has" \
    -n 2 --max-new 8 --batch 2
sirt "export the Llama to llama2.c" export --model "$w/l.bin" --format llama2c --out "$w/l_v1.bin"
sirt "train from the llama2.c file" train --init "$w/l_v1.bin" --data "$w/shard.bin" --batch 2 --seq 16 \
    --lr 1e-3 --steps 1 --out "$w/l3.bin"
sirt "export the Llama to Hugging Face" export --model "$w/l.bin" --format hf --out "$w/l_hf"
sirt "export GPT-2 to Hugging Face" export --model "$w/t.bin" --format hf --out "$w/t_hf"
sirt "train from the Hugging Face directories" train --init "$w/l_hf" --data "$w/shard.bin" --batch 2 \
    --seq 16 --lr 1e-3 --steps 1 --out "$w/l4.bin"
sirt "train from GPT-2's Hugging Face directory" train --init "$w/t_hf" --data "$w/shard.bin" --batch 2 \
    --seq 16 --lr 1e-3 --steps 1 --out "$w/t4.bin"

# bad inputs: one error line, exit 1, nothing leaked or touched out of bounds on the way
head -c 2000 "$w/t.bin" >"$w/trunc.bin"
sirt_error "truncated checkpoint" "truncated" train --init "$w/trunc.bin" --data "$w/shard.bin" --batch 2 --seq 8 \
    --steps 1 --lr 1e-3 --out "$w/x.bin"
head -c 1500 "$w/shard.bin" >"$w/short.bin"
sirt_error "shard shorter than its header says" "but the file is" "${train[@]}" --steps 1 --data "$w/short.bin" --out "$w/x.bin"
printf '{"prompt": "a", "completion": "b"}\n{"prompt": "a\\ud800", "completion": "b"}\n' >"$w/bad.jsonl"
sirt_error "JSONL with a lone surrogate" "bad.jsonl:2:" sft --config 1,1,8,32,300 --tokenizer "$w/tok.bin" \
    --data "$w/bad.jsonl" --batch 2 --seq 16 --lr 1e-3 --steps 1 --out "$w/x.bin"
head -c 30 "$w/tok.bin" >"$w/badtok.bin"
sirt_error "truncated tokenizer" "truncated" tokenize --tokenizer "$w/badtok.bin"
head -c 3000 "$w/l_v1.bin" >"$w/l_trunc.bin"
sirt_error "truncated llama2.c checkpoint" "(truncated)" train --init "$w/l_trunc.bin" --data "$w/shard.bin" \
    --batch 2 --seq 8 --steps 1 --lr 1e-3 --out "$w/x.bin"
head -c 3000 "$w/l_hf/model.safetensors" >"$w/l_hf/trunc" && mv "$w/l_hf/trunc" "$w/l_hf/model.safetensors"
sirt_error "truncated safetensors" "do not hold" train --init "$w/l_hf" --data "$w/shard.bin" \
    --batch 2 --seq 8 --steps 1 --lr 1e-3 --out "$w/x.bin"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
