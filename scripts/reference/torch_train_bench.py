#!/usr/bin/env python3
"""PyTorch + PEFT LoRA training speed on CPU, measured the way `fedtune bench train` measures
fedtune's: the same GGUF model (transformers dequantizes it to f32), LoRA r=8 alpha=16 on
q,k,v,o, AdamW, batches of random token sequences, one untimed warm-up step, then timed steps.
Prints `train_tok_s=... peak_rss_mb=...` last.

Run:  scripts/reference/setup-torch.sh && ~/.cache/fedtune/torch-venv/bin/python \
        scripts/reference/torch_train_bench.py MODEL.gguf [--seq 64] [--batch 4] [--threads 2]
"""
import argparse
import os
import resource
import time

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--alpha", type=float, default=16.0)
    ap.add_argument("--targets", default="q_proj,k_proj,v_proj,o_proj")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(
        os.path.dirname(os.path.abspath(a.model)), gguf_file=os.path.basename(a.model),
        torch_dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=a.rank, lora_alpha=a.alpha, lora_dropout=0.0,
                                             target_modules=a.targets.split(","),
                                             task_type="CAUSAL_LM"))
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    vocab = model.config.vocab_size
    g = torch.Generator().manual_seed(42)

    def step():
        ids = torch.randint(0, vocab, (a.batch, a.seq), generator=g)
        out = model(input_ids=ids, labels=ids)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
        opt.step()
        opt.zero_grad()
        return out.loss.item()

    step()
    start = time.perf_counter()
    losses = [step() for _ in range(a.steps)]
    secs = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"model={a.model} threads={a.threads} seq={a.seq} batch={a.batch} steps={a.steps} "
          f"torch={torch.__version__}")
    print(f"mean_loss={sum(losses) / len(losses):.4f}")
    print(f"train_tok_s={a.steps * a.batch * a.seq / secs:.2f} peak_rss_mb={peak:.1f}")


if __name__ == "__main__":
    main()
