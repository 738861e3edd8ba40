#!/usr/bin/python3
# Minimal GPT-2 (llm.c definition) training-step benchmark, PyTorch eager, fp32, 2 threads.
# Usage: /usr/bin/python3 tests/bench_torch.py [a or b ...]   (not part of test.sh: needs PyTorch)
import os
os.environ["OMP_NUM_THREADS"] = "2"
os.environ["OPENBLAS_NUM_THREADS"] = "2"
import math, sys, time, statistics
import torch
import torch.nn as nn
import torch.nn.functional as F

torch.set_num_threads(2)


class Attn(nn.Module):
    def __init__(s, C, NH, maxT):
        super().__init__()
        s.NH = NH
        s.c_attn = nn.Linear(C, 3 * C)
        s.c_proj = nn.Linear(C, C)
        s.register_buffer("mask", torch.tril(torch.ones(maxT, maxT, dtype=torch.bool)).view(1, 1, maxT, maxT))

    def forward(s, x):
        B, T, C = x.shape
        hs = C // s.NH
        q, k, v = s.c_attn(x).split(C, dim=2)
        q = q.view(B, T, s.NH, hs).transpose(1, 2)
        k = k.view(B, T, s.NH, hs).transpose(1, 2)
        v = v.view(B, T, s.NH, hs).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hs))
        att = att.masked_fill(~s.mask[:, :, :T, :T], float("-inf"))
        att = F.softmax(att, dim=-1)
        y = (att @ v).transpose(1, 2).contiguous().view(B, T, C)
        return s.c_proj(y)


class MLP(nn.Module):
    def __init__(s, C):
        super().__init__()
        s.c_fc = nn.Linear(C, 4 * C)
        s.c_proj = nn.Linear(4 * C, C)

    def forward(s, x):
        return s.c_proj(F.gelu(s.c_fc(x), approximate="tanh"))


class Block(nn.Module):
    def __init__(s, C, NH, maxT):
        super().__init__()
        s.ln_1 = nn.LayerNorm(C, eps=1e-5)
        s.attn = Attn(C, NH, maxT)
        s.ln_2 = nn.LayerNorm(C, eps=1e-5)
        s.mlp = MLP(C)

    def forward(s, x):
        x = x + s.attn(s.ln_1(x))
        return x + s.mlp(s.ln_2(x))


class GPT(nn.Module):
    def __init__(s, L, NH, C, maxT, V):
        super().__init__()
        Vp = (V + 127) // 128 * 128
        s.V, s.Vp = V, Vp
        s.wte = nn.Embedding(Vp, C)
        s.wpe = nn.Embedding(maxT, C)
        s.h = nn.ModuleList([Block(C, NH, maxT) for _ in range(L)])
        s.ln_f = nn.LayerNorm(C, eps=1e-5)
        s.lm_head = nn.Linear(C, Vp, bias=False)
        s.lm_head.weight = s.wte.weight  # tied
        for m in s.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, mean=0.0, std=0.02)
                if isinstance(m, nn.Linear) and m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(s, idx, targets):
        B, T = idx.shape
        pos = torch.arange(T, dtype=torch.long)
        x = s.wte(idx) + s.wpe(pos)
        for b in s.h:
            x = b(x)
        logits = s.lm_head(s.ln_f(x))[:, :, : s.V]  # padded vocab cols excluded from softmax (llm.c)
        return F.cross_entropy(logits.reshape(-1, s.V), targets.reshape(-1))


SHAPES = {
    "a": dict(L=4, NH=4, C=128, maxT=256, V=512, B=4, T=64, steps=10),
    "b": dict(L=12, NH=12, C=768, maxT=1024, V=50257, B=4, T=64, steps=5),
}


def bench(name, L, NH, C, maxT, V, B, T, steps, warmup=2):
    torch.manual_seed(0)
    model = GPT(L, NH, C, maxT, V)
    nparam = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.0)
    x = torch.randint(0, V, (B, T))
    y = torch.randint(0, V, (B, T))
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        loss = model(x, y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        dt = time.perf_counter() - t0
        if i >= warmup:
            times.append(dt)
    best, med = min(times), statistics.median(times)
    print(f"({name}) L={L} NH={NH} C={C} V={V}(Vp={model.Vp}) B={B} T={T} params={nparam/1e6:.2f}M "
          f"loss={loss.item():.4f} steps={steps} | best {best*1e3:.2f} ms  median {med*1e3:.2f} ms | "
          f"best {B*T/best:.0f} tok/s  median {B*T/med:.0f} tok/s  loadavg={os.getloadavg()[0]:.2f}",
          flush=True)
    return best, med


if __name__ == "__main__":
    print("torch", torch.__version__, "threads", torch.get_num_threads())
    print("\n".join(torch.__config__.parallel_info().splitlines()[:4]))
    print("loadavg before:", os.getloadavg())
    for n in (sys.argv[1:] or ["a", "b"]):
        bench(n, **SHAPES[n])
