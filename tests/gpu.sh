#!/bin/bash
# tests/gpu.sh — the GPU build checked against the CPU build, on a machine with an NVIDIA GPU
# (issue 17). Run from the repository root: tests/gpu.sh (or `make gpu-check`). It
#   1. builds ./sirt, ./sirt_cuda and tests/gpu_kernels (CUDA_ARCH, default 90) and names the GPU;
#   2. runs tests/gpu_kernels: every kernel of model.h on the GPU against its CPU version;
#   3. trains 20 steps of config 2,4,64,64,512 on the CPU and on the GPU from the same init and
#      data and compares the per-step losses (within 1e-4 relative); checks DPO's first loss
#      (ln 2, policy = reference) on the GPU; compares greedy sampling (KV-cache decoding) on CPU
#      and GPU, and GPU batch 16 with batch 1;
#   4. times ./sirt_cuda bench at three shapes, the same GPT-2 in PyTorch on the same GPU
#      (tests/bench_torch_gpu.py, eager, then torch.compile), ./sirt_cuda reproduce --quick, and
#      the full ./sirt_cuda reproduce for whatever time is left (reported, not a check).
# Every step is bounded by `timeout` and by a deadline for the whole script (GPU_SECONDS, default
# 420); a failing step is reported and the script goes on. Output and numbers go to stdout and
# to $OUT/gpu_results.txt, a summary to $OUT/gpu_results.json, with the kernel report and the
# training and DPO logs of both builds (OUT defaults to a fresh temporary directory).
set -u
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
OUT=${OUT:-$(mktemp -d /tmp/sirt_gpu.XXXXXX)}
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_results.txt") 2>&1
start=$(date +%s)
deadline=$((start + ${GPU_SECONDS:-420}))
work=$(mktemp -d /tmp/sirt_gpu_work.XXXXXX)
m=null # the largest relative difference of the training losses, once measured
pass=0; fail=0; failed=""
ok() { pass=$((pass + 1)); echo "PASS $*"; }
bad() { fail=$((fail + 1)); failed="$failed
  $*"; echo "FAIL $*"; }
# bounded CMD...: runs CMD with at most SECONDS and at most what is left before the deadline
bounded() {
    local limit=$1; shift
    local left=$((deadline - $(date +%s)))
    [ "$left" -lt "$limit" ] && limit=$left
    if [ "$limit" -le 5 ]; then echo "(skipped, out of time: $*)"; return 124; fi
    timeout "$limit" "$@"
}
elapsed() { echo "[$(($(date +%s) - start)) s]"; }

echo "== 1. build $(date -u +%FT%TZ)"
nvidia-smi --query-gpu=name,compute_cap,driver_version,memory.total --format=csv,noheader ||
    echo "nvidia-smi failed"
nvcc --version | tail -1
arch=${CUDA_ARCH:-90}
if bounded 240 make -j"$(nproc)" sirt cuda tests/test_core tests/gpu_kernels CUDA_ARCH="$arch" \
    >"$work/build.txt" 2>&1; then
    ok "build: ./sirt, ./sirt_cuda and tests/gpu_kernels for sm_$arch"
else
    tail -30 "$work/build.txt"; bad "build (make cuda CUDA_ARCH=$arch)"
fi
grep -i "warning" "$work/build.txt" | head -5
elapsed

echo "== 2. every kernel of model.h, GPU against CPU (max |gpu-cpu| / max |cpu|, tolerance 1e-4)"
if bounded 120 tests/gpu_kernels >"$work/kernels.txt" 2>&1; then ok "kernels: $(tail -1 "$work/kernels.txt")"
else bad "kernels: $(grep -c '^FAIL' "$work/kernels.txt") failing checks, or the program stopped"; fi
cat "$work/kernels.txt"
elapsed

echo "== 3. training, DPO and sampling: ./sirt (CPU) against ./sirt_cuda (GPU)"
# a predictable shard (the loss falls, so differences between the builds would grow) and a random one
./tests/test_core --write-cyclic-shard "$work/cyclic.bin" 40000 512
./tests/test_core --write-shard "$work/random.bin" 10000 512 11
for b in sirt sirt_cuda; do
    bounded 60 ./$b train --config 2,4,64,64,512 --data "$work/cyclic.bin,$work/random.bin" \
        --batch 8 --seq 64 --steps 20 --lr 3e-3 --warmup 2 --seed 5 --log "$work/train_$b.jsonl" \
        --out "$work/train_$b.bin" >"$work/train_$b.txt" 2>&1 || { tail -3 "$work/train_$b.txt"; bad "train on $b"; }
done
if [ -s "$work/train_sirt.jsonl" ] && [ -s "$work/train_sirt_cuda.jsonl" ]; then
    paste -d' ' <(sed 's/.*"loss": \([^,]*\),.*/\1/' "$work/train_sirt.jsonl") \
                <(sed 's/.*"loss": \([^,]*\),.*/\1/' "$work/train_sirt_cuda.jsonl") >"$work/losses.txt"
    echo "step  cpu loss     gpu loss     rel diff"
    awk '{ d = ($1 - $2) / $1; if (d < 0) d = -d; printf "%4d  %.7f  %.7f  %.2e\n", NR, $1, $2, d;
           if (d > m) m = d } END { printf "max rel diff %.3e over %d steps\n", m, NR }' "$work/losses.txt" |
        tee "$work/lossdiff.txt"
    n=$(wc -l <"$work/losses.txt")
    m=$(tail -1 "$work/lossdiff.txt" | awk '{print $4}')
    if [ "$n" -eq 20 ] && awk -v m="$m" 'BEGIN { exit !(m <= 1e-4) }'; then
        ok "train 20 steps, config 2,4,64,64,512, B8 T64: CPU and GPU losses within 1e-4 relative (max $m)"
    else bad "train: $n steps, max relative loss difference $m (limit 1e-4)"; fi
fi
# the same on the GPU with TF32 matrix products (SIRT_TF32=1): reported, not checked
SIRT_TF32=1 bounded 60 ./sirt_cuda train --config 2,4,64,64,512 --data "$work/cyclic.bin,$work/random.bin" \
    --batch 8 --seq 64 --steps 20 --lr 3e-3 --warmup 2 --seed 5 --log "$work/train_tf32.jsonl" \
    --out "$work/train_tf32.bin" >"$work/train_tf32.txt" 2>&1 || tail -3 "$work/train_tf32.txt"
if [ -s "$work/train_sirt.jsonl" ] && [ -s "$work/train_tf32.jsonl" ]; then
    paste -d' ' <(sed 's/.*"loss": \([^,]*\),.*/\1/' "$work/train_sirt.jsonl") \
                <(sed 's/.*"loss": \([^,]*\),.*/\1/' "$work/train_tf32.jsonl") |
        awk '{ d = ($1 - $2) / $1; if (d < 0) d = -d; if (d > m) m = d }
             END { printf "TF32 (SIRT_TF32=1): max relative loss difference to the CPU %.3e over %d steps\n", m, NR }' |
        tee -a "$work/lossdiff.txt"
fi
elapsed
# a small SFT model (on the CPU), then DPO against itself and greedy sampling on both builds
./sirt data --task math --split train --n 300 --seed 3 --out "$work/math.jsonl" >/dev/null
./sirt data --task math --split test --n 16 --seed 5 --out "$work/test16.jsonl" >/dev/null
./sirt tokenizer --train "$work/math.jsonl" --vocab 512 --out "$work/tok.bin" >/dev/null
bounded 60 ./sirt sft --config 2,4,64,256,512 --tokenizer "$work/tok.bin" --data "$work/math.jsonl" \
    --epochs 2 --batch 8 --seq 256 --lr 6e-3 --warmup 5 --out "$work/sft.bin" >"$work/sft.txt" 2>&1 ||
    { tail -3 "$work/sft.txt"; bad "sft (CPU) for the DPO and sampling checks"; }
: >"$work/pairs.jsonl"
for i in $(seq 1 24); do
    a=$((i % 9 + 2)); b=$((i % 7 + 3)); c=$((a + b)); w=$((c + i % 5 + 1))
    printf '{"prompt": "### Instruction:\\nAnswer the question.\\n\\n### Question:\\nTom has %d apples. He buys %d more. How many apples does Tom have?\\n\\n### Answer:\\n", "chosen": "%d + %d = %d.\\nThe answer is %d.", "rejected": "The answer is %d."}\n' $a $b $a $b $c $c $w >>"$work/pairs.jsonl"
done
for b in sirt sirt_cuda; do
    bounded 60 ./$b dpo --model "$work/sft.bin" --ref "$work/sft.bin" --tokenizer "$work/tok.bin" \
        --pairs "$work/pairs.jsonl" --batch 4 --seq 128 --lr 1e-3 --schedule constant --steps 4 \
        --log "$work/dpo_$b.jsonl" --out "$work/dpo_$b.bin" >"$work/dpo_$b.txt" 2>&1 ||
        { tail -3 "$work/dpo_$b.txt"; bad "dpo on $b"; }
    echo "dpo on $b, step 1: $(head -1 "$work/dpo_$b.jsonl" 2>/dev/null | cut -c1-160)"
done
if head -1 "$work/dpo_sirt_cuda.jsonl" 2>/dev/null | grep -q '"loss": 0.6931472,'; then
    ok "dpo on the GPU, step 1 (policy = reference): loss ln 2 = 0.6931472"
else bad "dpo on the GPU, step 1: $(head -1 "$work/dpo_sirt_cuda.jsonl" 2>/dev/null | cut -c1-120)"; fi
paste -d' ' <(sed 's/.*"loss": \([^,]*\),.*/\1/' "$work/dpo_sirt.jsonl" 2>/dev/null) \
            <(sed 's/.*"loss": \([^,]*\),.*/\1/' "$work/dpo_sirt_cuda.jsonl" 2>/dev/null) |
    awk '{ printf "dpo step %d: cpu loss %s gpu loss %s\n", NR, $1, $2 }'
for b in sirt sirt_cuda; do
    for batch in 16 1; do
        bounded 60 ./$b sample --model "$work/sft.bin" --tokenizer "$work/tok.bin" \
            --data "$work/test16.jsonl" -n 1 --temperature 0 --max-new 60 --batch $batch \
            --out "$work/greedy_${b}_$batch.jsonl" >/dev/null 2>"$work/sample_err.txt" ||
            { tail -3 "$work/sample_err.txt"; bad "sample on $b, batch $batch"; }
    done
done
if cmp -s "$work/greedy_sirt_16.jsonl" "$work/greedy_sirt_cuda_16.jsonl" && cmp -s "$work/greedy_sirt_cuda_16.jsonl" "$work/greedy_sirt_cuda_1.jsonl" && [ -s "$work/greedy_sirt_16.jsonl" ]; then
    ok "sample --temperature 0 (KV-cache decoding), 16 prompts x 60 tokens: the same text on CPU and GPU, GPU batch 16 = batch 1"
else
    bad "greedy sampling differs: CPU/GPU batch 16 $(cmp "$work/greedy_sirt_16.jsonl" "$work/greedy_sirt_cuda_16.jsonl" 2>&1 | head -1); GPU batch 16/1 $(cmp "$work/greedy_sirt_cuda_16.jsonl" "$work/greedy_sirt_cuda_1.jsonl" 2>&1 | head -1)"
    diff <(head -3 "$work/greedy_sirt_16.jsonl") <(head -3 "$work/greedy_sirt_cuda_16.jsonl") | head -8
fi
elapsed

echo "== 4. timings on $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)"
echo "-- ./sirt_cuda bench (training step forward + backward + AdamW, FP32; then decoding)"
bounded 60 ./sirt_cuda bench --config 2,4,64,64,512 --batch 8 --seq 64 --steps 10 || bad "bench small"
bounded 60 ./sirt_cuda bench --config 4,4,128,256,1024 --batch 16 --seq 256 --steps 10 || bad "bench reproduction shape"
bounded 90 ./sirt_cuda bench --config 12,12,768,1024,50257 --batch 4 --seq 1024 --steps 5 --train-only || bad "bench GPT-2 124M"
elapsed
echo "-- PyTorch on the same GPU, the same three shapes (tests/bench_torch_gpu.py)"
shapes="2,4,64,64,512,8,64 4,4,128,256,1024,16,256 12,12,768,1024,50257,4,1024"
bounded 90 python3 tests/bench_torch_gpu.py $shapes || bad "PyTorch eager benchmark"
elapsed
echo "-- ./sirt_cuda reproduce --quick"
t0=$(date +%s)
if (cd "$work" && bounded 150 "$OLDPWD/sirt_cuda" reproduce --quick >"$work/repro.txt" 2>&1); then
    ok "reproduce --quick on the GPU: $(($(date +%s) - t0)) s"
else bad "reproduce --quick on the GPU (stopped after $(($(date +%s) - t0)) s)"; fi
tail -15 "$work/repro.txt"
elapsed
echo "-- PyTorch torch.compile (if time is left)"
bounded 120 python3 tests/bench_torch_gpu.py --compile $shapes ||
    echo "(torch.compile did not finish within its time)"
elapsed

echo "-- ./sirt_cuda reproduce (the default, full reproduction) for the time left, to see how far it gets"
t0=$(date +%s)
mkdir -p "$work/full"
if (cd "$work/full" && bounded 300 "$OLDPWD/sirt_cuda" reproduce >"$work/repro_full.txt" 2>&1); then
    ok "reproduce (full) on the GPU: $(($(date +%s) - t0)) s"
else echo "(reproduce, full: stopped after $(($(date +%s) - t0)) s; its last lines:)"; fi
tr '\r' '\n' <"$work/repro_full.txt" | grep -v '^$' | tail -12
elapsed

echo "== summary: $pass passed, $fail failed, $(($(date +%s) - start)) s"
kerr=$(awk '/max rel err/ { if ($NF + 0 > e) e = $NF + 0 } END { printf "%.3e", e }' "$work/kernels.txt" 2>/dev/null)
printf '{"gpu": "%s", "passed": %d, "failed": %d, "kernel_checks": "%s", "max_kernel_rel_err": %s, "train_max_rel_loss_diff": %s, "seconds": %d}\n' \
    "$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)" "$pass" "$fail" \
    "$(tail -1 "$work/kernels.txt" 2>/dev/null)" "${kerr:-null}" "$m" "$(($(date +%s) - start))" >"$OUT/gpu_results.json"
cat "$OUT/gpu_results.json"
[ "$fail" -eq 0 ] || echo "failed:$failed"
cp "$work"/train_*.jsonl "$work"/dpo_*.jsonl "$work/kernels.txt" "$OUT/" 2>/dev/null
rm -rf "$work"
[ "$fail" -eq 0 ]
