#!/usr/bin/env python3
# tests/hf_reference.py — checks `./sirt export --format hf` against the meaning transformers
# gives the files, without transformers: the forward pass of LlamaForCausalLM (RMSNorm,
# rotate_half rotary embedding, repeat_kv grouped-query attention, SwiGLU, lm_head or the tied
# embedding) or of GPT2LMHeadModel (Conv1D x·W + b, gelu_new, LayerNorm, the tied wte) written
# in plain Python (no numpy) from config.json and model.safetensors, against the logits of
# sirt's own forward pass of the model that was exported (`tests/test_core --logits`).
# Usage: tests/hf_reference.py HF_DIR CHECKPOINT tests/test_core ID [ID...]
# Prints one ok/FAIL line, then "N passed, M failed"; exits 1 on a failure.
import json
import math
import struct
import subprocess
import sys


def read_safetensors(path):
    data = open(path, "rb").read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    assert header["__metadata__"]["format"] == "pt"
    base = 8 + n
    tensors = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        assert entry["dtype"] == "F32"
        begin, end = entry["data_offsets"]
        values = struct.unpack("<%df" % ((end - begin) // 4), data[base + begin:base + end])
        shape = entry["shape"]
        if len(shape) == 1:
            tensors[name] = list(values)
        else:
            rows, cols = shape
            tensors[name] = [list(values[r * cols:(r + 1) * cols]) for r in range(rows)]
    return tensors


def linear(w, x):  # nn.Linear: w (out, in)
    return [sum(a * b for a, b in zip(row, x)) for row in w]


def conv1d(w, b, x):  # GPT-2's Conv1D: w (in, out), x·w + b
    out = list(b)
    for i, xi in enumerate(x):
        row = w[i]
        for j in range(len(out)):
            out[j] += xi * row[j]
    return out


def attention(qs, ks, vs, heads, kv_heads, hs):
    """causal attention of the last query over all keys so far; q, k, v per position"""
    group = heads // kv_heads
    q = qs[-1]
    out = []
    for h in range(heads):
        kh = h // group
        scores = [sum(q[h * hs + i] * k[kh * hs + i] for i in range(hs)) / math.sqrt(hs) for k in ks]
        m = max(scores)
        e = [math.exp(s - m) for s in scores]
        z = sum(e)
        out.extend(sum(e[t] / z * vs[t][kh * hs + i] for t in range(len(vs))) for i in range(hs))
    return out


def llama_forward(cfg, w, tokens):
    C, heads = cfg["hidden_size"], cfg["num_attention_heads"]
    kv_heads = cfg.get("num_key_value_heads", heads)
    hs, eps, theta = C // heads, cfg["rms_norm_eps"], cfg.get("rope_theta", 10000.0)
    L = cfg["num_hidden_layers"]
    lm_head = w["model.embed_tokens.weight"] if cfg.get("tie_word_embeddings") else w["lm_head.weight"]

    def rmsnorm(x, weight):
        s = 1.0 / math.sqrt(sum(v * v for v in x) / len(x) + eps)
        return [weight[i] * (x[i] * s) for i in range(len(x))]

    def rope(vec, n_heads, pos):  # transformers' rotate_half: pairs (i, i + hs/2)
        out = list(vec)
        for h in range(n_heads):
            for i in range(hs // 2):
                f = pos / (theta ** (2 * i / hs))
                a, b = vec[h * hs + i], vec[h * hs + i + hs // 2]
                out[h * hs + i] = a * math.cos(f) - b * math.sin(f)
                out[h * hs + i + hs // 2] = b * math.cos(f) + a * math.sin(f)
        return out

    keys = [[] for _ in range(L)]
    values = [[] for _ in range(L)]
    queries = [[] for _ in range(L)]
    logits = []
    for pos, token in enumerate(tokens):
        x = list(w["model.embed_tokens.weight"][token])
        for l in range(L):
            p = "model.layers.%d." % l
            h = rmsnorm(x, w[p + "input_layernorm.weight"])
            queries[l].append(rope(linear(w[p + "self_attn.q_proj.weight"], h), heads, pos))
            keys[l].append(rope(linear(w[p + "self_attn.k_proj.weight"], h), kv_heads, pos))
            values[l].append(linear(w[p + "self_attn.v_proj.weight"], h))
            att = attention(queries[l], keys[l], values[l], heads, kv_heads, hs)
            x = [a + b for a, b in zip(x, linear(w[p + "self_attn.o_proj.weight"], att))]
            h = rmsnorm(x, w[p + "post_attention_layernorm.weight"])
            gate, up = linear(w[p + "mlp.gate_proj.weight"], h), linear(w[p + "mlp.up_proj.weight"], h)
            act = [g / (1.0 + math.exp(-g)) * u for g, u in zip(gate, up)]
            x = [a + b for a, b in zip(x, linear(w[p + "mlp.down_proj.weight"], act))]
        logits.append(linear(lm_head, rmsnorm(x, w["model.norm.weight"])))
    return logits


def gpt2_forward(cfg, w, tokens):
    C, heads, L = cfg["n_embd"], cfg["n_head"], cfg["n_layer"]
    hs, eps = C // heads, cfg.get("layer_norm_epsilon", 1e-5)

    def layernorm(x, weight, bias):
        m = sum(x) / len(x)
        v = sum((a - m) ** 2 for a in x) / len(x)
        return [(x[i] - m) / math.sqrt(v + eps) * weight[i] + bias[i] for i in range(len(x))]

    def gelu_new(a):
        return 0.5 * a * (1.0 + math.tanh(math.sqrt(2.0 / math.pi) * (a + 0.044715 * a ** 3)))

    qs = [[] for _ in range(L)]
    ks = [[] for _ in range(L)]
    vs = [[] for _ in range(L)]
    logits = []
    for pos, token in enumerate(tokens):
        x = [a + b for a, b in zip(w["transformer.wte.weight"][token], w["transformer.wpe.weight"][pos])]
        for l in range(L):
            p = "transformer.h.%d." % l
            h = layernorm(x, w[p + "ln_1.weight"], w[p + "ln_1.bias"])
            qkv = conv1d(w[p + "attn.c_attn.weight"], w[p + "attn.c_attn.bias"], h)
            qs[l].append(qkv[:C])
            ks[l].append(qkv[C:2 * C])
            vs[l].append(qkv[2 * C:])
            att = attention(qs[l], ks[l], vs[l], heads, heads, hs)
            x = [a + b for a, b in zip(x, conv1d(w[p + "attn.c_proj.weight"], w[p + "attn.c_proj.bias"], att))]
            h = layernorm(x, w[p + "ln_2.weight"], w[p + "ln_2.bias"])
            f = [gelu_new(a) for a in conv1d(w[p + "mlp.c_fc.weight"], w[p + "mlp.c_fc.bias"], h)]
            x = [a + b for a, b in zip(x, conv1d(w[p + "mlp.c_proj.weight"], w[p + "mlp.c_proj.bias"], f))]
        x = layernorm(x, w["transformer.ln_f.weight"], w["transformer.ln_f.bias"])
        logits.append(linear(w["transformer.wte.weight"], x))
    return logits


def main():
    hf_dir, checkpoint, test_core = sys.argv[1:4]
    tokens = [int(t) for t in sys.argv[4:]]
    cfg = json.load(open(hf_dir + "/config.json"))
    w = read_safetensors(hf_dir + "/model.safetensors")
    forward = llama_forward if cfg["model_type"] == "llama" else gpt2_forward
    reference = forward(cfg, w, tokens)
    out = subprocess.run([test_core, "--logits", checkpoint] + [str(t) for t in tokens],
                         capture_output=True, text=True, check=True).stdout.splitlines()
    worst = largest = 0.0
    for ref_row, line in zip(reference, out):
        for a, b in zip(ref_row, (float(v) for v in line.split())):
            worst = max(worst, abs(a - b))
            largest = max(largest, abs(a))
    ok = len(out) == len(tokens) and len(out[0].split()) == cfg["vocab_size"] and worst <= 1e-4 * largest
    print("%s: %s read as transformers reads it (%s, in plain Python) gives sirt's logits at %d "
          "positions (max |diff| %.2g, logits up to %.1f)" % (
              "ok" if ok else "FAIL", hf_dir.rstrip("/").split("/")[-1], cfg["architectures"][0],
              len(tokens), worst, largest))
    print("%d passed, %d failed" % (ok, not ok))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
