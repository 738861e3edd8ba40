#!/usr/bin/env bash
# tests/kill_resume.sh — crash safety. A training run is killed with SIGKILL at random moments,
# resumed with --resume (and killed again) until it finishes; its final weights, training state
# and metrics log must equal those of an uninterrupted run, bit for bit. After every kill, each
# output under its final name must be complete (a checkpoint is written to PATH.tmp and renamed).
# Covers ./sirt train (llm.c shards), ./sirt sft (with its best checkpoint) and ./sirt dpo, with
# tiny models and --save-every 1, so that most kills land while a checkpoint is being written.
#
#   usage: tests/kill_resume.sh SCRATCH_DIR [TRIALS (5)] [SEED (1)]
# Run from the repository root after `make`; prints "ok: ..." / "FAIL: ..." lines and a last
# line "N passed, M failed", as the unit tests do. The kill times come from bash's $RANDOM
# seeded with SEED, so a run can be repeated (the machine's speed still moves the kill points).
set -u
dir=$1
trials=${2:-5}
RANDOM=${3:-1}
sirt=$PWD/sirt
passed=0
failed=0
ok()  { passed=$((passed + 1)); echo "ok: $*"; }
bad() { failed=$((failed + 1)); echo "FAIL: $*"; }
export OMP_NUM_THREADS=1
mkdir -p "$dir"

# ---- the data: two token shards, 64 task items and a tokenizer, 24 preference pairs ------------
./tests/test_core --write-cyclic-shard "$dir/train.bin" 20000 64
./tests/test_core --write-shard "$dir/more.bin" 5000 64 7
"$sirt" data --task math --split train --n 64 --seed 3 --out "$dir/items.jsonl" >/dev/null
"$sirt" data --task math --split valid --n 16 --seed 3 --out "$dir/valid.jsonl" >/dev/null
"$sirt" tokenizer --train "$dir/items.jsonl" --vocab 300 --out "$dir/tok.bin" >/dev/null
: >"$dir/pairs.jsonl"
for i in $(seq 1 24); do
    a=$((i % 9 + 2)); b=$((i % 7 + 3)); c=$((a + b)); w=$((c + i % 5 + 1))
    printf '{"prompt": "Tom has %d apples. He buys %d more. How many apples does Tom have?\\n", "chosen": "%d + %d = %d.\\nThe answer is %d.", "rejected": "The answer is %d."}\n' $a $b $a $b $c $c $w >>"$dir/pairs.jsonl"
done

# The three runs, as argument lists for ./sirt (a shell function would put a subshell between
# the kill and the process; the commands run in the background with their own pid).
train_run=(train --config 2,2,32,64,64 --data "$dir/train.bin,$dir/more.bin" --batch 4 --seq 32
           --lr 3e-3 --warmup 3 --wd 0.1 --steps 60 --shuffle)
sft_run=(sft --config 1,2,32,128,384 --tokenizer "$dir/tok.bin" --data "$dir/items.jsonl"
         --valid "$dir/valid.jsonl" --epochs 5 --batch 8 --seq 128 --lr 3e-3 --eval-every 4)
dpo_run=(dpo --model "$dir/sft_ref.bin" --ref "$dir/sft_ref.bin" --tokenizer "$dir/tok.bin"
         --pairs "$dir/pairs.jsonl" --batch 4 --seq 64 --lr 1e-3 --epochs 6) # from the SFT result

strip_speed() { sed 's/, "tok_per_s": [0-9.]*//' "$1"; }
file_size() { if [ -e "$1" ]; then wc -c <"$1"; else echo 0; fi; }

# kill_trials NAME ARGS...: ./sirt ARGS; the uninterrupted run writes NAME_ref.*, each trial NAME_k.*.
kill_trials() {
    local name=$1 ref="$dir/${1}_ref" k="$dir/${1}_k"
    shift
    local cmd=("$sirt" "$@")
    local start end
    start=$(date +%s.%N)
    "${cmd[@]}" --out "$ref.bin" --log "$ref.jsonl" --save-every 1 >/dev/null 2>&1 || { bad "$name: the uninterrupted run failed"; return; }
    end=$(date +%s.%N)
    local span; span=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.3f", b - a }')
    local steps; steps=$(wc -l <"$ref.jsonl")
    echo "$name: the uninterrupted run takes ${span}s for $steps steps"
    local files=("$ref.bin" "$ref.bin.state")
    [ -e "$ref.best.bin" ] && files+=("$ref.best.bin")
    local trial=1 attempts=0
    while [ $trial -le "$trials" ]; do
        rm -f "$k".*
        local kills=0 points="" problems="" rolled=0
        attempts=$((attempts + 1))
        while :; do
            local resume=""
            [ -e "$k.bin" ] && resume=--resume
            "${cmd[@]}" --out "$k.bin" --log "$k.jsonl" --save-every 1 $resume >"$k.out" 2>&1 &
            local pid=$!
            if [ $kills -ge 3 ]; then # the last run goes to the end
                wait $pid || problems="$problems; the last run failed: $(tail -1 "$k.out")"
                break
            fi
            # a random moment within the time the uninterrupted run took for the steps still to do
            local done_steps; done_steps=$(cat "$k.jsonl" 2>/dev/null | wc -l)
            sleep "$(awk -v r=$RANDOM -v t="$span" -v d="$done_steps" -v n="$steps" \
                     'BEGIN { printf "%.3f", r / 32768 * 0.9 * t * (n - d) / n }')"
            if kill -9 $pid 2>/dev/null; then
                wait $pid 2>/dev/null
                kills=$((kills + 1))
                local where="no .tmp on disk"
                ls "$k".*tmp >/dev/null 2>&1 && where="with $(cd "$dir" && echo $(ls "${name}_k".*tmp | sed "s/${name}_k//")) on disk"
                points="$points, step $(cat "$k.jsonl" 2>/dev/null | wc -l) $where"
                # what is visible under the final names must be complete
                for f in "${files[@]}"; do
                    local mine="$k${f#$ref}"
                    if [ -e "$mine" ] && [ "$(file_size "$mine")" -ne "$(file_size "$f")" ]; then
                        problems="$problems; $(basename "$mine") is $(file_size "$mine") bytes, not $(file_size "$f")"
                    fi
                done
            else
                wait $pid || problems="$problems; a run failed: $(tail -1 "$k.out")"
                break # it had finished before the kill
            fi
            grep -q "finished an interrupted checkpoint" "$k.out" && rolled=$((rolled + 1))
        done
        grep -q "finished an interrupted checkpoint" "$k.out" && rolled=$((rolled + 1))
        if [ $kills -eq 0 ] && [ -z "$problems" ] && [ $attempts -lt 10 ]; then
            continue # the run ended before the first kill (a faster moment): this trial again
        fi
        for f in "${files[@]}"; do
            cmp -s "$f" "$k${f#$ref}" || problems="$problems; $(basename "$k${f#$ref}") differs"
        done
        [ "$(strip_speed "$ref.jsonl")" = "$(strip_speed "$k.jsonl")" ] || problems="$problems; the log differs"
        [ $rolled -gt 0 ] && points="$points; $rolled interrupted commit(s) finished at resume"
        if [ -z "$problems" ]; then
            ok "$name trial $trial: $kills kill(s) (${points#, }); final weights, state${files[2]:+, best checkpoint} and log identical"
        else
            bad "$name trial $trial: kills (${points#, })${problems}"
        fi
        [ $kills -gt 0 ] || bad "$name trial $trial: no kill landed before the run ended"
        trial=$((trial + 1))
        attempts=0
    done
}

kill_trials train "${train_run[@]}"
kill_trials sft "${sft_run[@]}"
kill_trials dpo "${dpo_run[@]}"

# A crash that falls exactly between the two renames of a checkpoint (too narrow a window to hit
# by chance): new weights beside the old state, and the new state complete in PATH.state.tmp.
"$sirt" "${train_run[@]}" --out "$dir/x.bin" --stop-after 20 >/dev/null
cp "$dir/x.bin.state" "$dir/old.state"
"$sirt" "${train_run[@]}" --out "$dir/x.bin" --stop-after 1 --resume >/dev/null # step 21
mv "$dir/x.bin.state" "$dir/x.bin.state.tmp"
cp "$dir/old.state" "$dir/x.bin.state"
head -c 5000 "$dir/x.bin" >"$dir/x.bin.tmp" # and a half-written weights file of a later attempt
"$sirt" "${train_run[@]}" --out "$dir/x.bin" --resume >"$dir/x.out" 2>&1
if grep -q "finished an interrupted checkpoint" "$dir/x.out" && grep -q "resuming .* at step 21" "$dir/x.out" &&
    cmp -s "$dir/x.bin" "$dir/train_ref.bin" && ! ls "$dir"/x.bin*.tmp >/dev/null 2>&1; then
    ok "a crash between the renames of weights and state: --resume finishes the commit (step 21) and the run ends identical; stale .tmp files are deleted"
else bad "crash between the renames: $(tail -2 "$dir/x.out")"; fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
