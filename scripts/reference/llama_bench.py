#!/usr/bin/env python3
"""llama.cpp's inference speed, measured the way `fedtune bench infer` measures fedtune's.

A batch of random prompt tokens (timed as prompt processing), then tokens fed one llama_decode
each with logits for the last one (timed as generation), in a fresh context per repetition; the median of the
repetitions. Prints `pp_tok_s=... tg_tok_s=...` last, like `fedtune bench infer`.

Run:  scripts/reference/setup-llama.sh && ~/.cache/fedtune/ref-venv/bin/python \
        scripts/reference/llama_bench.py MODEL.gguf [--prompt-tokens 128] [--gen-tokens 64] [--threads 2]
"""
import argparse
import random
import resource
import statistics
import time

import llama_cpp


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--gen-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args()
    llm = llama_cpp.Llama(model_path=a.model, n_ctx=a.prompt_tokens + a.gen_tokens + 8,
                          n_batch=max(a.prompt_tokens, 32), n_threads=a.threads,
                          n_threads_batch=a.threads, verbose=False)
    rng = random.Random(42)
    prompt = [rng.randrange(llm.n_vocab()) for _ in range(a.prompt_tokens)]
    # Generated tokens are drawn in advance: the choice does not change the work per token.
    gen = [rng.randrange(llm.n_vocab()) for _ in range(a.gen_tokens)]
    llm.eval(prompt[:8])  # warm-up
    pps, tgs = [], []
    for rep in range(a.reps):
        llm.reset()
        t = time.perf_counter()
        llm.eval(prompt)
        pp = time.perf_counter() - t
        t = time.perf_counter()
        for nxt in gen:
            llm.eval([nxt])
        tg = time.perf_counter() - t
        pps.append(a.prompt_tokens / pp)
        tgs.append(a.gen_tokens / tg)
        print(f"rep={rep} pp_tok_s={pps[-1]:.2f} tg_tok_s={tgs[-1]:.2f}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak_rss_mib={peak:.1f}")
    print(f"pp_tok_s={statistics.median(pps):.2f} tg_tok_s={statistics.median(tgs):.2f}")


if __name__ == "__main__":
    main()
