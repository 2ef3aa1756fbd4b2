#!/usr/bin/env python3
"""Golden logits from llama.cpp for small random llama and Gemma 3 models, and for SmolLM2.

Random models: weights come from a splitmix64 stream that the Rust test suite
(tests/inference.rs) regenerates bit for bit, so only the logits are committed, not the models.
Each model is written with gguf-py's GGUFWriter (weights quantized by gguf-py), run through
llama.cpp (llama-cpp-python, logits for every position, f32 KV cache), and its logits saved as
tests/fixtures/llama/<name>.npy ([n_tokens, n_vocab] float32). models.json describes each model.
K-quant matrices (no quantizer in gguf-py) are random bytes from the same stream with their f16
scales set to fit (llm/src/llama/random.rs, `random_blocks`).

SmolLM2 (if the model is in the cache): argmax and the top-8 logits of every position of a fixed
text, in tests/fixtures/llama/smollm2.json (the full logits would be megabytes).

Run:  scripts/reference/setup-llama.sh avx2 && \
      ~/.cache/fedtune/ref-venv-avx2/bin/python scripts/reference/golden_logits.py [--only PREFIX]

The avx2 build sums in llama.cpp's 8-lane AVX2 order on every x86 machine; a native build on
an AVX-512 part sums in 16 lanes, which moves F32 logits by ~1e-7 and now and then flips a
quantized activation's rounding.

--only regenerates the models whose name starts with PREFIX and keeps the other fixtures.
llama.cpp runs without its extra buffer types (no repacked or AMX matrices): its plain CPU
kernels, whose arithmetic fedtune follows (a native build on an AMX part crashes on these
tiny models otherwise).
"""
import json
import os
import sys
import tempfile

import numpy as np
import gguf
from gguf import GGMLQuantizationType as Q
import llama_cpp

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "tests", "fixtures", "llama")
MASK = (1 << 64) - 1

# The natural text the real models are compared on.
HAMLET = ("HAMLET: To be, or not to be, that is the question:\nWhether 'tis nobler in the mind "
          "to suffer\nThe slings and arrows of outrageous fortune,\nOr to take arms against a sea "
          "of troubles\nAnd by opposing end them. To die—to sleep,\nNo more; and by a sleep to say "
          "we end\nThe heart-ache and the thousand natural shocks\nThat flesh is heir to: 'tis a "
          "consummation\nDevoutly to be wish'd. To die, to sleep;\nTo sleep, perchance to dream—ay, "
          "there's the rub:\nFor in that sleep of death what dreams may come,\nWhen we have shuffled "
          "off this mortal coil,\nMust give us pause—there's the respect\nThat makes calamity of so "
          "long life.\n\nOPHELIA: Good my lord,\nHow does your honour for this many a day?\n"
          "HAMLET: I humbly thank you; well, well, well.")

# name, dim, heads, kv heads, ffn, layers, vocab, tied output, matrix type, seed
SHAPES = {
    "gqa": dict(dim=64, heads=4, kv_heads=2, ffn=96, layers=2, vocab=270, tied=True),
    "odd": dict(dim=96, heads=3, kv_heads=1, ffn=160, layers=2, vocab=301, tied=False),
    # Gemma 3: head size apart from dim / heads, five local layers (window 16) then a global one;
    # rows of 256 values for the K-quants.
    "gemma": dict(dim=256, heads=4, kv_heads=1, ffn=512, layers=6, vocab=300, tied=True,
                  head_dim=128, sliding_window=16),
}
MODELS = [
    ("gqa_f32", "gqa", "F32", 1),
    ("gqa_f16", "gqa", "F16", 2),
    ("gqa_q8_0", "gqa", "Q8_0", 3),
    ("gqa_q4_0", "gqa", "Q4_0", 4),
    ("gqa_q4_1", "gqa", "Q4_1", 5),
    ("odd_f32", "odd", "F32", 6),
    ("odd_q8_0", "odd", "Q8_0", 7),
    ("odd_q4_0", "odd", "Q4_0", 8),
    ("odd_q4_1", "odd", "Q4_1", 9),
    ("gemma_f32", "gemma", "F32", 10),
    ("gemma_q8_0", "gemma", "Q8_0", 11),
    ("gemma_q5_0", "gemma", "Q5_0", 12),
    ("gemma_q4_k", "gemma", "Q4_K", 13),
    ("gemma_q6_k", "gemma", "Q6_K", 14),
]
# K-quants: (offsets of the f16 scale fields in a block, divisor), as random.rs.
K_SCALES = {"Q4_K": ([0, 2], 1000.0), "Q6_K": ([208], 4000.0)}
N_TOKENS = 48


class SplitMix64:
    """splitmix64; values in [-1, 1) with 24 random bits, exact in f32 and f64."""

    def __init__(self, seed):
        self.state = seed & MASK

    def next(self):
        self.state = (self.state + 0x9E3779B97F4A7C15) & MASK
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
        return z ^ (z >> 31)

    def uniform(self, n, scale):
        vals = np.array([(self.next() >> 40) for _ in range(n)], dtype=np.float64)
        u = (vals / 16777216.0 * 2.0 - 1.0).astype(np.float32)
        return u * np.float32(scale)


def random_blocks(rng, qtype, rows, cols, scale):
    """K-quant bytes as random.rs draws them: eight bytes a draw, then per block each f16
    scale field set to scale / div · (0.75 + 0.25·u)."""
    bs, ts = gguf.GGML_QUANT_SIZES[getattr(Q, qtype)]
    n_bytes = rows * cols // bs * ts
    raw = b"".join(rng.next().to_bytes(8, "little") for _ in range((n_bytes + 7) // 8))
    b = bytearray(raw[:n_bytes])
    fields, div = K_SCALES[qtype]
    for o in range(0, n_bytes, ts):
        for f in fields:
            u = rng.uniform(1, 1.0)[0]
            v = np.float32(scale) / np.float32(div) * (np.float32(0.75) + np.float32(0.25) * u)
            b[o + f:o + f + 2] = np.float16(v).tobytes()
    return np.frombuffer(bytes(b), dtype=np.uint8).reshape(rows, cols // bs * ts)


def tensors(shape, seed, qtype):
    """(name, rows, cols, values or K-quant bytes) in generation order; norms are 1 + 0.1·u."""
    s = SHAPES[shape]
    d = s["dim"]
    hd = s.get("head_dim", d // s["heads"])
    gemma = "head_dim" in s
    rng = SplitMix64(seed)
    out = []

    def mat(name, rows, cols):
        scale = 1.0 / np.sqrt(cols)
        if qtype in K_SCALES:
            out.append((name, rows, cols, random_blocks(rng, qtype, rows, cols, scale)))
        else:
            out.append((name, rows, cols, rng.uniform(rows * cols, scale).reshape(rows, cols)))

    def norm(name, n):
        out.append((name, 1, n, (np.float32(1.0) + rng.uniform(n, 0.1)).reshape(1, n)))

    mat("token_embd.weight", s["vocab"], d)
    for i in range(s["layers"]):
        norm(f"blk.{i}.attn_norm.weight", d)
        mat(f"blk.{i}.attn_q.weight", s["heads"] * hd, d)
        mat(f"blk.{i}.attn_k.weight", s["kv_heads"] * hd, d)
        mat(f"blk.{i}.attn_v.weight", s["kv_heads"] * hd, d)
        if gemma:
            norm(f"blk.{i}.attn_q_norm.weight", hd)
            norm(f"blk.{i}.attn_k_norm.weight", hd)
        mat(f"blk.{i}.attn_output.weight", d, s["heads"] * hd)
        if gemma:
            norm(f"blk.{i}.post_attention_norm.weight", d)
        norm(f"blk.{i}.ffn_norm.weight", d)
        mat(f"blk.{i}.ffn_gate.weight", s["ffn"], d)
        mat(f"blk.{i}.ffn_up.weight", s["ffn"], d)
        mat(f"blk.{i}.ffn_down.weight", d, s["ffn"])
        if gemma:
            norm(f"blk.{i}.post_ffw_norm.weight", d)
    norm("output_norm.weight", d)
    if not s["tied"]:
        mat("output.weight", s["vocab"], d)
    tokens = [rng.next() % s["vocab"] for _ in range(N_TOKENS)]
    return out, tokens


def byte_alphabet():
    """GPT-2's byte -> printable character map."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for _, c in sorted(zip(bs, cs))]


def write_model(path, shape, qtype, seed):
    s = SHAPES[shape]
    gemma = "head_dim" in s
    w = gguf.GGUFWriter(path, "gemma3" if gemma else "llama")
    w.add_block_count(s["layers"])
    w.add_context_length(256)
    w.add_embedding_length(s["dim"])
    w.add_feed_forward_length(s["ffn"])
    w.add_head_count(s["heads"])
    w.add_head_count_kv(s["kv_heads"])
    if gemma:
        # llama.cpp's gemma3: every sixth layer global, local RoPE base 10000 (both fixed).
        w.add_key_length(s["head_dim"])
        w.add_value_length(s["head_dim"])
        w.add_sliding_window(s["sliding_window"])
        w.add_rope_freq_base(1000000.0)
        w.add_layer_norm_rms_eps(1e-6)
    else:
        w.add_rope_freq_base(10000.0)
        w.add_layer_norm_rms_eps(1e-5)
    # A byte-level vocabulary (llama.cpp needs one to load a model): 256 bytes + merged pairs.
    alpha = byte_alphabet()
    tokens, merges = list(alpha), []
    i = 0
    while len(tokens) < s["vocab"] - 2:
        a, b = alpha[65 + i % 26], alpha[97 + i // 26]
        tokens.append(a + b)
        merges.append(f"{a} {b}")
        i += 1
    tokens += ["<s>", "</s>"]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types([1] * (len(tokens) - 2) + [3, 3])
    w.add_token_merges(merges)
    w.add_bos_token_id(len(tokens) - 2)
    w.add_eos_token_id(len(tokens) - 1)
    w.add_add_bos_token(False)
    ts, toks = tensors(shape, seed, qtype)
    for name, rows, cols, vals in ts:
        if qtype in K_SCALES and rows > 1:
            w.add_tensor(name, vals, raw_dtype=getattr(Q, qtype))
        elif rows == 1 or qtype == "F32":
            w.add_tensor(name, vals.reshape(-1) if rows == 1 else vals)
        elif qtype == "F16":
            w.add_tensor(name, vals.astype(np.float16))
        else:
            qt = getattr(Q, qtype)
            w.add_tensor(name, gguf.quants.quantize(vals, qt), raw_dtype=qt)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return toks


def plain_kernels():
    """Model parameters without extra buffer types, for every Llama made after this call."""
    default = llama_cpp.llama_model_default_params

    def params():
        p = default()
        p.use_extra_bufts = False
        return p

    llama_cpp.llama_model_default_params = params
    llama_cpp.llama.llama_cpp.llama_model_default_params = params


def llama_logits(path, tokens):
    llm = llama_cpp.Llama(model_path=path, logits_all=True, n_ctx=max(64, len(tokens)), n_threads=2,
                          type_k=0, type_v=0, verbose=False)
    llm.eval(tokens)
    return np.array(llm.scores[: len(tokens)], dtype=np.float32)


def top8(logits):
    """Per position: the 8 largest logits (ids and values) and max |logit|."""
    rows = []
    for row in logits:
        top = np.argsort(-row, kind="stable")[:8]
        rows.append({"top_ids": [int(t) for t in top], "top_logits": [float(row[t]) for t in top],
                     "max_abs": float(np.abs(row).max())})
    return rows


def smollm2():
    path = os.path.join(os.environ.get("FEDTUNE_CACHE", os.path.expanduser("~/.cache/fedtune")),
                        "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
    if not os.path.exists(path):
        print("SmolLM2 not in the cache (scripts/fetch-model.sh): skipped", file=sys.stderr)
        return
    text = HAMLET
    llm = llama_cpp.Llama(model_path=path, logits_all=True, n_ctx=256, n_threads=2, type_k=0, type_v=0,
                          flash_attn=False, verbose=False)
    ids = llm.tokenize(text.encode(), add_bos=False, special=False)
    llm.eval(ids)
    rows = top8(np.array(llm.scores[: len(ids)], dtype=np.float32))
    with open(os.path.join(OUT, "smollm2.json"), "w") as f:
        json.dump({"text": text, "tokens": [int(t) for t in ids], "positions": rows}, f)
    print(f"smollm2: {len(ids)} positions", file=sys.stderr)


def main():
    os.makedirs(OUT, exist_ok=True)
    only = sys.argv[sys.argv.index("--only") + 1] if "--only" in sys.argv else None
    plain_kernels()
    kept = {}
    if only is not None:
        with open(os.path.join(OUT, "models.json")) as f:
            kept = {m["name"]: m for m in json.load(f)}
    index = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, shape, qtype, seed in MODELS:
            if only is not None and not name.startswith(only):
                index.append(kept[name])
                continue
            path = os.path.join(tmp, name + ".gguf")
            toks = write_model(path, shape, qtype, seed)
            logits = llama_logits(path, toks)
            np.save(os.path.join(OUT, name + ".npy"), logits)
            index.append(dict(name=name, shape=shape, type=qtype, seed=seed, tokens=toks, **SHAPES[shape]))
            print(f"{name}: {logits.shape}, max|logit| {np.abs(logits).max():.3f}", file=sys.stderr)
    with open(os.path.join(OUT, "models.json"), "w") as f:
        json.dump(index, f, indent=1)
    if only is None:
        smollm2()


if __name__ == "__main__":
    main()
