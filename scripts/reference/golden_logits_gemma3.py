#!/usr/bin/env python3
"""Golden logits of Gemma 3 270M Q4_K_M from llama.cpp, and llama.cpp's own spread.

Evaluates a fixed text (Hamlet's soliloquy and a few lines after it, BOS first, as Gemma wants)
with llama.cpp batched three ways: an f32 KV cache without flash attention (the reference,
llama.cpp's arithmetic that fedtune follows), the same with flash attention, and an f16 cache
(llama.cpp's default) without it. Writes tests/fixtures/llama/gemma3.json: the tokens, the
reference's top-8 logits per position, and for each of the other two settings its distance
from the reference (mean |Δ| over the reference's top-8 logits, worst top-1 |Δ| over max
|logit|, argmax agreement). tests/gemma3.rs holds fedtune to no more than that spread.

Run:  scripts/fetch-model.sh gemma3 && scripts/reference/setup-llama.sh && \
      ~/.cache/fedtune/ref-venv/bin/python scripts/reference/golden_logits_gemma3.py
"""
import json
import os
import sys

import numpy as np
import llama_cpp

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "tests", "fixtures", "llama", "gemma3.json")
MODEL = os.path.join(os.environ.get("FEDTUNE_CACHE", os.path.expanduser("~/.cache/fedtune")),
                     "models", "gemma-3-270m-q4_k_m.gguf")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from golden_logits import HAMLET, top8  # noqa: E402

TEXT = HAMLET + ("\nOPHELIA: My lord, I have remembrances of yours,\nThat I have longed long to "
                 "re-deliver;\nI pray you, now receive them.")


def logits(tokens, cache_type, flash):
    llm = llama_cpp.Llama(model_path=MODEL, logits_all=True, n_ctx=512, n_batch=512, n_threads=2,
                          type_k=cache_type, type_v=cache_type, flash_attn=flash, verbose=False)
    llm.eval(tokens)
    return np.array(llm.scores[: len(tokens)], dtype=np.float32)


def distance(ref, other):
    """As tests/common/llama.rs compare_top8 measures fedtune against the reference."""
    rows = top8(ref)
    diffs = [abs(other[i][t] - ref[i][t]) for i, r in enumerate(rows) for t in r["top_ids"]]
    worst = max(abs(other[i][r["top_ids"][0]] - ref[i][r["top_ids"][0]]) / r["max_abs"]
                for i, r in enumerate(rows))
    agree = float(np.mean(ref.argmax(axis=1) == other.argmax(axis=1)))
    return dict(mean_abs_top8=float(np.mean(diffs)), worst_rel_top1=float(worst), argmax=agree)


def main():
    if not os.path.exists(MODEL):
        sys.exit("model not found: %s (run scripts/fetch-model.sh gemma3)" % MODEL)
    vocab = llama_cpp.Llama(model_path=MODEL, vocab_only=True, verbose=False)
    tokens = vocab.tokenize(TEXT.encode(), add_bos=True, special=False)
    ref = logits(tokens, 0, False)
    spread = {"flash_attn": distance(ref, logits(tokens, 0, True)),
              "f16_cache": distance(ref, logits(tokens, 1, False))}
    with open(OUT, "w") as f:
        json.dump({"text": TEXT, "tokens": [int(t) for t in tokens], "spread": spread,
                   "positions": top8(ref)}, f)
    print(f"gemma3: {len(tokens)} positions; llama.cpp's spread {json.dumps(spread)}", file=sys.stderr)


if __name__ == "__main__":
    main()
