#!/usr/bin/env python3
"""Golden logits from llama.cpp with fedtune's exported GGUF LoRA adapters.

For each case: the random model of golden_logits.py (same splitmix64 weights and tokens), a
random adapter made by fedtune (`fedtune bench random-adapter`, a PEFT directory) and converted
by `fedtune export --format gguf`, then llama.cpp (llama-cpp-python, `lora_path=`) computes the
logits of every position. tests/adapters.rs regenerates model and adapter in Rust and
compares. The SmolLM2 case (if the model is cached) stores the top-8 logits per position of
the text of golden_logits.py.

Run:  cargo build --release && scripts/reference/setup-llama.sh && \
      ~/.cache/fedtune/ref-venv/bin/python scripts/reference/golden_lora.py
"""
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import llama_cpp

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import golden_logits as gl  # noqa: E402

ROOT = gl.ROOT
OUT = os.path.join(ROOT, "tests", "fixtures", "lora")
FEDTUNE = os.environ.get("FEDTUNE_BIN", os.path.join(ROOT, "target", "release", "fedtune"))

# name, model (from golden_logits.MODELS), rank, alpha, targets, adapter seed, B scale
CASES = [
    ("gqa_f32_all", "gqa_f32", 4, 16.0, "all", 11, 0.2),
    ("odd_q8_0_qvdown", "odd_q8_0", 2, 3.0, "q,v,down", 12, 0.2),
    ("gqa_q4_0_qkvo", "gqa_q4_0", 8, 16.0, "q,k,v,o", 13, 0.2),
]
SMOLLM2 = dict(rank=8, alpha=16.0, targets="q,k,v,o", seed=21, b_scale=0.02)


def fedtune(*args):
    subprocess.run([FEDTUNE, *args], check=True, stderr=subprocess.DEVNULL)


def gguf_adapter(tmp, model_path, name, rank, alpha, targets, seed, b_scale):
    peft_dir = os.path.join(tmp, name + "_peft")
    out = os.path.join(tmp, name + ".lora.gguf")
    fedtune("bench", "random-adapter", "-m", model_path, "--rank", str(rank), "--alpha", str(alpha),
            "--targets", targets, "--seed", str(seed), "--b-scale", str(b_scale), "--out", peft_dir)
    fedtune("export", "--adapter", peft_dir, "--format", "gguf", "--out", out, "-m", model_path)
    return out


def logits(model_path, lora_path, tokens, n_ctx=64):
    llm = llama_cpp.Llama(model_path=model_path, lora_path=lora_path, logits_all=True,
                          n_ctx=max(n_ctx, len(tokens)), n_threads=2, type_k=0, type_v=0,
                          flash_attn=False, verbose=False)
    llm.eval(tokens)
    return np.array(llm.scores[: len(tokens)], dtype=np.float32)


def smollm2(tmp):
    path = os.path.join(os.environ.get("FEDTUNE_CACHE", os.path.expanduser("~/.cache/fedtune")),
                        "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
    if not os.path.exists(path):
        print("SmolLM2 not in the cache (scripts/fetch-model.sh): skipped", file=sys.stderr)
        return
    with open(os.path.join(ROOT, "tests", "fixtures", "llama", "smollm2.json")) as f:
        ids = json.load(f)["tokens"]
    c = SMOLLM2
    lora = gguf_adapter(tmp, path, "smollm2", c["rank"], c["alpha"], c["targets"], c["seed"], c["b_scale"])
    rows = gl.top8(logits(path, lora, ids, 256))
    with open(os.path.join(OUT, "smollm2.json"), "w") as f:
        json.dump({**c, "tokens": ids, "positions": rows}, f)
    print(f"smollm2 + adapter: {len(ids)} positions", file=sys.stderr)


def main():
    os.makedirs(OUT, exist_ok=True)
    models = {m[0]: m for m in gl.MODELS}
    index = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, model, rank, alpha, targets, seed, b_scale in CASES:
            _, shape, qtype, mseed = models[model]
            model_path = os.path.join(tmp, model + ".gguf")
            tokens = gl.write_model(model_path, shape, qtype, mseed)
            lora = gguf_adapter(tmp, model_path, name, rank, alpha, targets, seed, b_scale)
            out = logits(model_path, lora, tokens)
            base = logits(model_path, None, tokens)
            np.save(os.path.join(OUT, name + ".npy"), out)
            index.append(dict(name=name, model=model, shape=shape, type=qtype, model_seed=mseed,
                              rank=rank, alpha=alpha, targets=targets, seed=seed, b_scale=b_scale,
                              tokens=tokens, **gl.SHAPES[shape]))
            print(f"{name}: {out.shape}, max|logit| {np.abs(out).max():.3f}, "
                  f"adapter moves logits by up to {np.abs(out - base).max():.3f}", file=sys.stderr)
        with open(os.path.join(OUT, "cases.json"), "w") as f:
            json.dump(index, f, indent=1)
        smollm2(tmp)


if __name__ == "__main__":
    main()
