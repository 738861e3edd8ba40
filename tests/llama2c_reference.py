#!/usr/bin/env python3
# tests/llama2c_reference.py — an independent reference for the Llama student: llama2.c's run.c
# rewritten in plain Python (no numpy, no code shared with sirt), checked against sirt on a real
# llama2.c checkpoint and tokenizer.
#   - the tokenizer: run.c's encode() of several texts (dummy prefix, UTF-8 characters, byte
#     fallback, scored merges) against `./sirt tokenize`;
#   - the model: run.c's forward() (RMSNorm, interleaved rotary embedding, grouped-query
#     attention, SwiGLU, the classifier), token by token with its KV cache, against the logits of
#     sirt's full forward pass (`tests/test_core --logits`) at every position.
# Usage: tests/llama2c_reference.py CHECKPOINT(legacy) TOKENIZER.bin ./sirt tests/test_core
# Prints one ok/FAIL line per check, then "N passed, M failed"; exits 1 if any fails.
import math
import struct
import subprocess
import sys


def read_checkpoint(path):
    data = open(path, "rb").read()
    dim, hidden, layers, heads, kv_heads, vocab, seq_len = struct.unpack("<7i", data[:28])
    shared = vocab > 0
    vocab = abs(vocab)
    floats = struct.unpack("<%df" % ((len(data) - 28) // 4), data[28:])
    at = 0

    def take(rows, cols):
        nonlocal at
        m = [list(floats[at + r * cols: at + (r + 1) * cols]) for r in range(rows)]
        at += rows * cols
        return m

    hs = dim // heads
    kv_dim = kv_heads * hs
    w = {"tok": take(vocab, dim)}
    w["rms_att"] = [take(1, dim)[0] for _ in range(layers)]
    w["wq"] = [take(dim, dim) for _ in range(layers)]
    w["wk"] = [take(kv_dim, dim) for _ in range(layers)]
    w["wv"] = [take(kv_dim, dim) for _ in range(layers)]
    w["wo"] = [take(dim, dim) for _ in range(layers)]
    w["rms_ffn"] = [take(1, dim)[0] for _ in range(layers)]
    w["w1"] = [take(hidden, dim) for _ in range(layers)]
    w["w2"] = [take(dim, hidden) for _ in range(layers)]
    w["w3"] = [take(hidden, dim) for _ in range(layers)]
    w["rms_final"] = take(1, dim)[0]
    at += seq_len * hs  # the two legacy RoPE tables
    w["cls"] = w["tok"] if shared else take(vocab, dim)
    cfg = dict(dim=dim, hidden=hidden, layers=layers, heads=heads, kv_heads=kv_heads,
               vocab=vocab, seq_len=seq_len)
    return cfg, w


def matvec(m, x):
    return [sum(a * b for a, b in zip(row, x)) for row in m]


def rmsnorm(x, weight):
    ss = sum(v * v for v in x) / len(x) + 1e-5
    s = 1.0 / math.sqrt(ss)
    return [weight[i] * (s * x[i]) for i in range(len(x))]


def forward_all(cfg, w, tokens):
    """run.c's forward() for every position in turn (with its key/value cache)."""
    dim, heads, kv_heads = cfg["dim"], cfg["heads"], cfg["kv_heads"]
    hs = dim // heads
    group = heads // kv_heads
    kcache = [[] for _ in range(cfg["layers"])]
    vcache = [[] for _ in range(cfg["layers"])]
    out = []
    for pos, token in enumerate(tokens):
        x = list(w["tok"][token])
        for l in range(cfg["layers"]):
            xb = rmsnorm(x, w["rms_att"][l])
            q, k, v = matvec(w["wq"][l], xb), matvec(w["wk"][l], xb), matvec(w["wv"][l], xb)
            for i in range(0, dim, 2):  # rotate pairs (i, i+1) of each head
                freq = 1.0 / (10000.0 ** ((i % hs) / hs))
                c, s = math.cos(pos * freq), math.sin(pos * freq)
                for vec in ([q, k] if i < len(k) else [q]):
                    a, b = vec[i], vec[i + 1]
                    vec[i], vec[i + 1] = a * c - b * s, a * s + b * c
            kcache[l].append(k)
            vcache[l].append(v)
            att_out = [0.0] * dim
            for h in range(heads):
                kh = h // group
                qh = q[h * hs:(h + 1) * hs]
                scores = [sum(qh[i] * kk[kh * hs + i] for i in range(hs)) / math.sqrt(hs)
                          for kk in kcache[l]]
                m = max(scores)
                e = [math.exp(sc - m) for sc in scores]
                total = sum(e)
                for t, vv in enumerate(vcache[l]):
                    a = e[t] / total
                    for i in range(hs):
                        att_out[h * hs + i] += a * vv[kh * hs + i]
            x = [x[i] + o for i, o in enumerate(matvec(w["wo"][l], att_out))]
            xb = rmsnorm(x, w["rms_ffn"][l])
            h1, h3 = matvec(w["w1"][l], xb), matvec(w["w3"][l], xb)
            g = [a / (1.0 + math.exp(-a)) * b for a, b in zip(h1, h3)]
            x = [x[i] + o for i, o in enumerate(matvec(w["w2"][l], g))]
        out.append(matvec(w["cls"], rmsnorm(x, w["rms_final"])))
    return out


def read_tokenizer(path, vocab):
    data = open(path, "rb").read()
    at = 4
    pieces, scores = [], []
    for _ in range(vocab):
        score, n = struct.unpack("<fi", data[at:at + 8])
        pieces.append(data[at + 8:at + 8 + n])
        scores.append(score)
        at += 8 + n
    return pieces, scores


def encode(pieces, scores, text):
    """run.c's encode(text, bos=0, eos=0)."""
    lookup = {}
    for i, p in enumerate(pieces):
        lookup.setdefault(p, i)
    tokens = []
    if text:
        tokens.append(lookup[b" "])
    i = 0
    while i < len(text):
        n = 1
        while i + n < len(text) and (text[i + n] & 0xC0) == 0x80 and n < 4:
            n += 1
        ch = text[i:i + n]
        if ch in lookup:
            tokens.append(lookup[ch])
        else:
            tokens.extend(b + 3 for b in ch)
        i += n
    while True:
        best, best_id, best_at = -1e10, -1, -1
        for j in range(len(tokens) - 1):
            merged = pieces[tokens[j]] + pieces[tokens[j + 1]]
            if merged in lookup and scores[lookup[merged]] > best:
                best, best_id, best_at = scores[lookup[merged]], lookup[merged], j
        if best_at < 0:
            return tokens
        tokens[best_at:best_at + 2] = [best_id]


def main():
    checkpoint, tokenizer, sirt, test_core = sys.argv[1:5]
    cfg, w = read_checkpoint(checkpoint)
    pieces, scores = read_tokenizer(tokenizer, cfg["vocab"])
    failures = passes = 0

    def check(ok, what):
        nonlocal failures, passes
        print(("ok: " if ok else "FAIL: ") + what)
        failures += not ok
        passes += bool(ok)

    texts = ["Once upon a time, there was a little girl named Lily.",
             "The cat sat on the mat. \"Hello!\" said Tom, and smiled",
             "naïve café — 3.14 ~[x]\tnew\u00a0line 😀",
             "  two  spaces, zzzqqq xylophone"]
    ours = subprocess.run([sirt, "tokenize", "--tokenizer", tokenizer],
                          input="\n".join(texts) + "\n", capture_output=True, text=True,
                          check=True).stdout.splitlines()
    check(len(ours) == len(texts), "tokenize prints one line of ids per text (%d for %d)" % (
        len(ours), len(texts)))
    for text, line in zip(texts, ours):
        expected = encode(pieces, scores, text.encode("utf-8"))
        got = [int(t) for t in line.split()]
        check(got == expected, "tokenizer: run.c's encode of %r: %d tokens%s" % (
            text[:30], len(expected), "" if got == expected else " (sirt: %s, run.c: %s)" % (
                got, expected)))

    tokens = [1] + encode(pieces, scores, b"Once upon a time, there was")[:7]
    reference = forward_all(cfg, w, tokens)
    out = subprocess.run([test_core, "--logits", checkpoint] + [str(t) for t in tokens],
                         capture_output=True, text=True, check=True).stdout.splitlines()
    worst, largest = 0.0, 0.0
    for ref_row, line in zip(reference, out):
        got = [float(v) for v in line.split()]
        for a, b in zip(ref_row, got):
            worst = max(worst, abs(a - b))
            largest = max(largest, abs(a))
    same_argmax = all(max(range(len(r)), key=r.__getitem__) ==
                      max(range(len(r)), key=[float(v) for v in l.split()].__getitem__)
                      for r, l in zip(reference, out))
    check(len(out) == len(tokens) and worst <= 1e-4 * largest and same_argmax,
          "logits of %d positions equal run.c's forward in plain Python (max |diff| %.2g, "
          "logits up to %.1f; the same argmax everywhere)" % (len(tokens), worst, largest))
    print("%d passed, %d failed" % (passes, failures))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
