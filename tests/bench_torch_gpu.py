#!/usr/bin/env python3
# The GPT-2 of tests/bench_torch.py (llm.c's definition), timed on the GPU: forward + loss +
# backward + AdamW + zero_grad, FP32 (TF32 off), best and median of the timed steps after warm-up.
# Usage: python3 tests/bench_torch_gpu.py [--compile] L,NH,C,maxT,V,B,T [...]   (tests/gpu.sh)
import os, sys, time, statistics
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch
import torch.nn.functional as F
from bench_torch import GPT

torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False


class GPTCuda(GPT):
    def forward(s, idx, targets):
        B, T = idx.shape
        x = s.wte(idx) + s.wpe(torch.arange(T, device=idx.device))
        for b in s.h:
            x = b(x)
        logits = s.lm_head(s.ln_f(x))[:, :, : s.V]
        return F.cross_entropy(logits.reshape(-1, s.V), targets.reshape(-1))


def bench(L, NH, C, maxT, V, B, T, compile_, steps=10, warmup=3):
    torch.manual_seed(0)
    model = GPTCuda(L, NH, C, maxT, V).cuda()
    step_model = torch.compile(model) if compile_ else model
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.0)
    x = torch.randint(0, V, (B, T), device="cuda")
    y = torch.randint(0, V, (B, T), device="cuda")
    times = []
    for i in range(warmup + steps):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        loss = step_model(x, y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    best, med = min(times), statistics.median(times)
    print(f"torch {'compile' if compile_ else 'eager'} {L},{NH},{C},{maxT},{V} B={B} T={T}: "
          f"best {best*1e3:.2f} ms/step  median {med*1e3:.2f} ms  {B*T/best:.0f} tok/s", flush=True)


if __name__ == "__main__":
    args = sys.argv[1:]
    compile_ = "--compile" in args
    print("torch", torch.__version__, torch.cuda.get_device_name(0), flush=True)
    for spec in (a for a in args if a != "--compile"):
        bench(*map(int, spec.split(",")), compile_)
