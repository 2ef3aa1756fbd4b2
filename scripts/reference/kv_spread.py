#!/usr/bin/env python3
"""llama.cpp's own spread between its f32 and f16 KV caches on SmolLM2.

Evaluates the tokens of tests/fixtures/llama/smollm2.json twice with llama.cpp (batched, no
flash attention): once with an f32 cache, once with f16 (llama.cpp's default), and prints the
argmax agreement and the largest logit difference between the two. tests/inference.rs
(`smollm2_f16_cache_keeps_the_argmax`) holds fedtune's f16 cache to the same spread.

Run:  scripts/reference/setup-llama.sh && \
      ~/.cache/fedtune/ref-venv/bin/python scripts/reference/kv_spread.py
"""
import json
import os

import numpy as np
import llama_cpp

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODEL = os.path.join(os.environ.get("FEDTUNE_CACHE", os.path.expanduser("~/.cache/fedtune")),
                     "models", "SmolLM2-135M-Instruct.Q4_1.gguf")


def logits(tokens, cache_type):
    llm = llama_cpp.Llama(model_path=MODEL, logits_all=True, n_ctx=256, n_batch=256,
                          n_threads=2, type_k=cache_type, type_v=cache_type, flash_attn=False,
                          verbose=False)
    llm.eval(tokens)
    return np.array(llm.scores[: len(tokens)], dtype=np.float32)


def main():
    with open(os.path.join(ROOT, "tests", "fixtures", "llama", "smollm2.json")) as f:
        tokens = json.load(f)["tokens"]
    f32, f16 = logits(tokens, 0), logits(tokens, 1)
    agree = float(np.mean(f32.argmax(axis=1) == f16.argmax(axis=1)))
    top = np.sort(f32, axis=1)
    lead = top[:, -1] - top[:, -2]
    clear = lead > 0.5
    kept = f32.argmax(axis=1)[clear] == f16.argmax(axis=1)[clear]
    print(f"llama.cpp SmolLM2 f16 vs f32 cache over {len(tokens)} positions: argmax "
          f"{100 * agree:.1f}%, {int(kept.sum())}/{int(clear.sum())} where the lead > 0.5, "
          f"max|Δ| {np.abs(f32 - f16).max():.3f} (max|logit| {np.abs(f32).max():.1f})")


if __name__ == "__main__":
    main()
