#!/usr/bin/python3
# The training step of a minimal GPT-2 (llm.c's definition), or of a Llama (llama2.c's) with its
# cached decoding, in PyTorch eager, fp32, for comparison with `./sirt bench` (BENCHMARKS.md).
# Usage (not part of test.sh: it needs PyTorch):
#   /usr/bin/python3 tests/bench_torch.py [--threads N] [a, s or b ...]  GPT-2 shapes (a), (s), (b)
#   /usr/bin/python3 tests/bench_torch.py [--threads N] --arch llama [--config L,NH,C,maxT,V[,KVH[,hidden]]]
#                                         [--batch B --seq T] [--steps N] [--train-only]
# --threads N (default 2) sets OMP_NUM_THREADS, OPENBLAS_NUM_THREADS and torch's threads.
# --arch llama runs what `./sirt bench --arch llama` runs, the same shapes, batches and FLOP count.
import os
import sys

THREADS = "2"
if "--threads" in sys.argv:  # before torch is imported: OpenBLAS reads its variable at load time
    at = sys.argv.index("--threads")
    THREADS = sys.argv[at + 1]
    del sys.argv[at:at + 2]
os.environ["OMP_NUM_THREADS"] = THREADS
os.environ["OPENBLAS_NUM_THREADS"] = THREADS
import argparse, math, time, statistics
import torch
import torch.nn as nn
import torch.nn.functional as F

torch.set_num_threads(int(THREADS))


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
    # the reproduction's GPT-2 student and its SFT batch (./sirt bench --config 4,4,128,256,1024 --batch 16 --seq 256)
    "s": dict(L=4, NH=4, C=128, maxT=256, V=1024, B=16, T=256, steps=5),
    "b": dict(L=12, NH=12, C=768, maxT=1024, V=50257, B=4, T=64, steps=5),
}


def time_training_steps(model, V, B, T, steps, warmup):
    """Times warmup + steps training steps (forward, loss, backward, AdamW, zero_grad) on random
    tokens; returns the parameter count, the last loss and the times of the steps after warm-up."""
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
    return nparam, loss, times


def bench(name, L, NH, C, maxT, V, B, T, steps, warmup=2):
    torch.manual_seed(0)
    model = GPT(L, NH, C, maxT, V)
    nparam, loss, times = time_training_steps(model, V, B, T, steps, warmup)
    best, med = min(times), statistics.median(times)
    print(f"({name}) L={L} NH={NH} C={C} V={V}(Vp={model.Vp}) B={B} T={T} params={nparam/1e6:.2f}M "
          f"loss={loss.item():.4f} steps={steps} | best {best*1e3:.2f} ms  median {med*1e3:.2f} ms | "
          f"best {B*T/best:.0f} tok/s  median {B*T/med:.0f} tok/s  loadavg={os.getloadavg()[0]:.2f}",
          flush=True)
    return best, med


# ---------------------------------------------------------------------------------------------
# Llama as llama2.c's model.py defines it (and sirt's --arch llama): token embedding, L blocks of
# RMSNorm (eps 1e-5) -> attention with rotary embeddings on interleaved pairs (base 10000) and
# grouped-query attention (KVH key/value heads) -> residual, RMSNorm -> SwiGLU w2(silu(w1 x) * w3 x)
# -> residual; a final RMSNorm and a classifier tied to the token embedding (or not). No biases.
# The vocabulary is padded to Vp (multiple of 128) as in sirt; the classifier computes all Vp
# columns and the loss and the argmax use the first V.

def llama_default_hidden(C):  # llama2.c's: 2/3 of 4C, rounded up to a multiple of 32
    hidden = 2 * (4 * C) // 3
    return (hidden + 31) // 32 * 32


def parse_llama_config(text):
    v = [int(x) for x in text.split(",")]
    if not 5 <= len(v) <= 7:
        sys.exit("--config wants L,NH,C,maxT,V[,KVH[,hidden]]")
    L, NH, C, maxT, V = v[:5]
    KVH = v[5] if len(v) > 5 else NH
    hidden = v[6] if len(v) > 6 else llama_default_hidden(C)
    return dict(L=L, NH=NH, C=C, maxT=maxT, V=V, KVH=KVH, hidden=hidden)


def rmsnorm(x, w, eps=1e-5):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def rope(x, cos, sin):
    # x (B, T, heads, hs): pairs (2i, 2i+1) rotate by pos * theta^(-2i/hs), as llama2.c's run.c
    x0, x1 = x[..., 0::2], x[..., 1::2]
    return torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1).flatten(-2)


class LlamaBlock(nn.Module):
    def __init__(s, C, NH, KVH, hidden):
        super().__init__()
        s.NH, s.KVH, s.hs = NH, KVH, C // NH
        s.attention_norm = nn.Parameter(torch.ones(C))
        s.wq = nn.Linear(C, C, bias=False)
        s.wk = nn.Linear(C, KVH * s.hs, bias=False)
        s.wv = nn.Linear(C, KVH * s.hs, bias=False)
        s.wo = nn.Linear(C, C, bias=False)
        s.ffn_norm = nn.Parameter(torch.ones(C))
        s.w1 = nn.Linear(C, hidden, bias=False)
        s.w2 = nn.Linear(hidden, C, bias=False)
        s.w3 = nn.Linear(C, hidden, bias=False)

    def forward(s, x, cos, sin, cache=None, start=0):
        # cache: None (training: the whole causal sequence) or (k, v) tensors (B, KVH, Tc, hs)
        # holding positions 0..start-1; this call's keys and values are written at start..
        B, T, C = x.shape
        h = rmsnorm(x, s.attention_norm)
        q = rope(s.wq(h).view(B, T, s.NH, s.hs), cos, sin).transpose(1, 2)
        k = rope(s.wk(h).view(B, T, s.KVH, s.hs), cos, sin).transpose(1, 2)
        v = s.wv(h).view(B, T, s.KVH, s.hs).transpose(1, 2)
        if cache is not None:
            cache[0][:, :, start:start + T] = k
            cache[1][:, :, start:start + T] = v
            k, v = cache[0][:, :, :start + T], cache[1][:, :, :start + T]
        keys = k.shape[2]
        # grouped-query attention: query head j uses key/value head j // (NH / KVH)
        q = q.reshape(B, s.KVH, s.NH // s.KVH * T, s.hs)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(s.hs))
        att = att.view(B, s.KVH, s.NH // s.KVH, T, keys)
        if T > 1:  # causal: query at position start+t sees keys 0..start+t
            mask = torch.ones(T, keys, dtype=torch.bool).tril(diagonal=keys - T)
            att = att.masked_fill(~mask, float("-inf"))
        att = F.softmax(att, dim=-1).view(B, s.KVH, s.NH // s.KVH * T, keys)
        y = (att @ v).view(B, s.NH, T, s.hs).transpose(1, 2).reshape(B, T, C)
        x = x + s.wo(y)
        h = rmsnorm(x, s.ffn_norm)
        return x + s.w2(F.silu(s.w1(h)) * s.w3(h))


class Llama(nn.Module):
    def __init__(s, L, NH, C, maxT, V, KVH, hidden, tied=True, theta=10000.0):
        super().__init__()
        Vp = (V + 127) // 128 * 128
        s.V, s.Vp, s.L, s.KVH, s.hs = V, Vp, L, KVH, C // NH
        s.tok_embeddings = nn.Embedding(Vp, C)
        s.layers = nn.ModuleList([LlamaBlock(C, NH, KVH, hidden) for _ in range(L)])
        s.norm = nn.Parameter(torch.ones(C))
        s.output = nn.Linear(C, Vp, bias=False)
        if tied:
            s.output.weight = s.tok_embeddings.weight
        for m in s.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, mean=0.0, std=0.02)
        freqs = 1.0 / theta ** (torch.arange(0, s.hs, 2).float() / s.hs)
        angles = torch.outer(torch.arange(maxT).float(), freqs)  # (maxT, hs/2)
        s.register_buffer("cos", angles.cos()[:, None, :])       # (maxT, 1, hs/2): over heads
        s.register_buffer("sin", angles.sin()[:, None, :])

    def logits(s, idx, caches=None, start=0):
        T = idx.shape[1]
        cos, sin = s.cos[start:start + T], s.sin[start:start + T]
        x = s.tok_embeddings(idx)
        for i, layer in enumerate(s.layers):
            x = layer(x, cos, sin, None if caches is None else caches[i], start)
        return s.output(rmsnorm(x, s.norm))

    def forward(s, idx, targets):
        z = s.logits(idx)[:, :, : s.V]
        return F.cross_entropy(z.reshape(-1, s.V), targets.reshape(-1))


# FLOPs: the same count as sirt's lib/bench.h (matmul_flops_per_token, attention_flops): every
# weight matrix of R rows and K columns 2*R*K per token (q: C rows, k and v: KVH*C/NH each, wo: C,
# w1 and w3: hidden each, w2: C rows of hidden, the classifier Vp rows), attention 4*C*keys a
# layer for a query that sees `keys` positions; a training step is 3x its forward pass.
def llama_matmul_flops_per_token(L, NH, C, V, KVH, hidden, **_):
    Vp = (V + 127) // 128 * 128
    KVC = KVH * (C // NH)
    return 2.0 * (L * ((C + 2 * KVC) * C + C * C + 2 * hidden * C + C * hidden) + C * Vp)


def llama_training_flops(cfg, B, T):
    attention = 4.0 * cfg["C"] * cfg["L"] * (T * (T + 1) / 2)
    return 3.0 * (B * T * llama_matmul_flops_per_token(**cfg) + B * attention)


def llama_decoding_flops(cfg, B, prompt, total):
    return sum(B * (llama_matmul_flops_per_token(**cfg) + 4.0 * cfg["C"] * cfg["L"] * (p + 1))
               for p in range(prompt, total))


PEAK_GFLOPS = 190.0  # the 2-core machine's float32 matrix-product peak (BENCHMARKS.md)
LLAMA_SHAPES = [("student", "4,4,128,256,1024"), ("stories260K", "5,8,64,512,512,4,172")]


def bench_llama_training(name, cfg, B, T, steps, warmup=2):
    torch.manual_seed(0)
    model = Llama(**cfg)
    nparam, loss, times = time_training_steps(model, cfg["V"], B, T, steps, warmup)
    best, med = min(times), statistics.median(times)
    flops = llama_training_flops(cfg, B, T)
    gflops = flops / best * 1e-9
    print(f"{name:22s} {B:5d} {T:5d} {nparam:10d} {flops * 1e-9:10.3f} {best * 1e3:10.2f} "
          f"{B * T / best:10.0f} {gflops:8.1f} {100 * gflops / PEAK_GFLOPS:5.1f}%  "
          f"(median {med * 1e3:.2f} ms, loss {loss.item():.4f}, loadavg {os.getloadavg()[0]:.2f})",
          flush=True)


@torch.no_grad()
def bench_llama_decoding(name, cfg, B, prompt=16, passes=3):
    # as sirt's bench_decode: prefill a random prompt of `prompt` tokens (not timed), then greedy
    # steps from position `prompt` up to `total`, each the argmax of the first V logits; the
    # rate of a pass is the generated tokens over its time; best of `passes`
    torch.manual_seed(0)
    model = Llama(**cfg)
    nparam = sum(p.numel() for p in model.parameters())
    total = min(cfg["maxT"], 256)
    prompt = min(prompt, total - 1)
    best = 0.0
    for _ in range(passes):
        caches = [(torch.zeros(B, cfg["KVH"], total, model.hs), torch.zeros(B, cfg["KVH"], total, model.hs))
                  for _ in range(cfg["L"])]
        prompts = torch.randint(0, cfg["V"], (B, prompt))
        z = model.logits(prompts, caches, 0)[:, -1, : cfg["V"]]
        t0 = time.perf_counter()
        for p in range(prompt, total):
            tokens = z.argmax(dim=-1, keepdim=True)  # (B, 1)
            z = model.logits(tokens, caches, p)[:, -1, : cfg["V"]]
        best = max(best, B * (total - prompt) / (time.perf_counter() - t0))
    step_s = B / best
    gflops = llama_decoding_flops(cfg, B, prompt, total) / (total - prompt) / step_s * 1e-9
    print(f"{name:22s} {B:5d} {total:5d} {nparam:10d} {step_s * 1e3:10.3f} {best:10.0f} "
          f"{gflops:8.1f} {100 * gflops / PEAK_GFLOPS:5.1f}%  (loadavg {os.getloadavg()[0]:.2f})",
          flush=True)


@torch.no_grad()
def verify_stories260k(directory):
    # The definition above against a real llama2.c model: stories260K's weights (llama2.c's legacy
    # file: 7 int32 dim, hidden, L, NH, KVH, V (negative: untied), maxT; then the tensors) decoded
    # greedily from BOS (id 1) through the cache must give the text llama2.c's run gives (its
    # README); the uncached forward over the same tokens must give the same logits.
    import struct
    with open(os.path.join(directory, "stories260K.bin"), "rb") as f:
        C, H, L, NH, KVH, V, maxT = struct.unpack("7i", f.read(28))
        data = torch.frombuffer(bytearray(f.read()), dtype=torch.float32)
    tied, V = V > 0, abs(V)
    model = Llama(L, NH, C, maxT, V, KVH, H, tied=tied)
    hs, at = C // NH, 0

    def take(*shape):
        nonlocal at
        n = math.prod(shape)
        t = data[at:at + n].view(*shape)
        at += n
        return t

    model.tok_embeddings.weight.copy_(take(V, C))
    for name, shape in [("attention_norm", (C,)), ("wq", (C, C)), ("wk", (KVH * hs, C)),
                        ("wv", (KVH * hs, C)), ("wo", (C, C)), ("ffn_norm", (C,)), ("w1", (H, C)),
                        ("w2", (C, H)), ("w3", (H, C))]:
        for layer in model.layers:
            target = getattr(layer, name)
            (target if isinstance(target, nn.Parameter) else target.weight).copy_(take(*shape))
    model.norm.copy_(take(C))
    take(maxT * hs // 2), take(maxT * hs // 2)  # llama2.c's legacy RoPE tables, unused
    if not tied:
        model.output.weight.copy_(take(V, C))
    with open(os.path.join(directory, "tok512.bin"), "rb") as f:
        f.read(4)
        pieces = []
        for _ in range(V):
            _score, n = struct.unpack("fi", f.read(8))
            pieces.append(f.read(n).decode("utf-8", "replace"))
    caches = [(torch.zeros(1, KVH, maxT, hs), torch.zeros(1, KVH, maxT, hs)) for _ in range(L)]
    ids, steps = [1], []
    for p in range(60):
        z = model.logits(torch.tensor([[ids[-1]]]), caches, p)[0, -1, :V]
        steps.append(z)
        ids.append(int(z.argmax()))
    full = model.logits(torch.tensor([ids[:-1]]))[0, :, :V]
    cached = torch.stack(steps)
    text = "".join(pieces[i] for i in ids[1:]).lstrip()
    print(f"stories260K greedy from BOS: {text!r}")
    print(f"max |uncached - cached logits| over {len(ids) - 1} positions: {(full - cached).abs().max().item():.3g}")
    expected = "Once upon a time, there was a little girl named Lily. She loved to play outside in the park."
    print("matches llama2.c's text" if text.startswith(expected) else "DIFFERS from llama2.c's text")


def main_llama(args):
    shapes = [(args.config, args.config)] if args.config else LLAMA_SHAPES
    batches = [(args.batch, args.seq)] if args.batch or args.seq else [(4, 64), (16, 256)]
    if any(b is None for b in batches[0]):
        sys.exit("--batch and --seq go together")
    print(f"Llama training step (forward + backward + AdamW), torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, best of {args.steps}; % of {PEAK_GFLOPS:.0f} GFLOP/s")
    print(f"{'shape':22s} {'B':>5s} {'T':>5s} {'params':>10s} {'GFLOP':>10s} {'ms/step':>10s} "
          f"{'tok/s':>10s} {'GFLOP/s':>8s} {'%peak':>6s}")
    for name, text in shapes:
        for B, T in batches:
            bench_llama_training(name, parse_llama_config(text), B, T, args.steps)
    if args.train_only:
        return
    print("\nLlama decoding with the key/value cache, greedy: prompt 16 tokens, generating up to "
          "position 256 (or maxT), best of 3 passes")
    print(f"{'shape':22s} {'B':>5s} {'to':>5s} {'params':>10s} {'ms/step':>10s} {'tok/s':>10s} "
          f"{'GFLOP/s':>8s} {'%peak':>6s}")
    for name, text in shapes:
        for B in (1, 64):
            bench_llama_decoding(name, parse_llama_config(text), B)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="PyTorch side of ./sirt bench")
    parser.add_argument("shapes", nargs="*", help="GPT-2 shapes: a, s, b (default a and b)")
    parser.add_argument("--arch", choices=["gpt2", "llama"], default="gpt2")
    parser.add_argument("--config", help="Llama: L,NH,C,maxT,V[,KVH[,hidden]]")
    parser.add_argument("--batch", type=int)
    parser.add_argument("--seq", type=int)
    parser.add_argument("--steps", type=int, default=5, help="Llama: timed steps; the best counts")
    parser.add_argument("--train-only", action="store_true")
    parser.add_argument("--verify", metavar="DIR",
                        help="Llama: decode DIR/stories260K.bin greedily and compare with llama2.c's text")
    args = parser.parse_args()
    print("torch", torch.__version__, "threads", torch.get_num_threads())
    print("\n".join(torch.__config__.parallel_info().splitlines()[:4]))
    print("loadavg before:", os.getloadavg())
    if args.verify:
        verify_stories260k(args.verify)
    elif args.arch == "llama":
        main_llama(args)
    else:
        for n in (args.shapes or ["a", "b"]):
            bench(n, **SHAPES[n])
