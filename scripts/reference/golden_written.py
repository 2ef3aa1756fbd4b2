#!/usr/bin/env python3
"""llama.cpp's logits for the full models that fedtune writes: `pretrain`, `quantize`, `merge`.

Each case is a list of fedtune commands run in a scratch directory ({dir} in the arguments),
with FEDTUNE_KERNELS=scalar and one thread so the bytes written are the same on every x86-64
CPU; llama.cpp (llama-cpp-python, f32 KV cache, no flash attention) then loads the last file
written and computes the logits of every position of a fixed token list. Saved in
tests/fixtures/written/: cases.json (the commands, the file's XXH3-128 digest, the tokens) and
<name>.npy. tests/written_models.rs runs the same commands, checks the digest (so the
fixture's logits are of the very same bytes) and compares fedtune's logits with llama.cpp's.

Run:  cargo build --release && scripts/reference/setup-llama.sh && \\
      ~/.cache/fedtune/ref-venv/bin/python scripts/reference/golden_written.py
"""
import json
import os
import subprocess
import tempfile

import numpy as np
import llama_cpp
import xxhash

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "tests", "fixtures", "written")
FEDTUNE = os.environ.get("FEDTUNE_BIN", os.path.join(ROOT, "target", "release", "fedtune"))

PRETRAIN = ["pretrain", "--steps", "4", "--vocab", "300", "--dim", "64", "--layers", "2",
            "--heads", "4", "--kv-heads", "2", "--ffn", "128", "--context", "64", "--seq", "32",
            "--batch", "2", "--warmup", "0", "--seed", "3", "--holdout-every", "0", "-t", "1"]
F32 = PRETRAIN + ["--type", "f32", "--out", "{dir}/base.gguf"]
CASES = [
    ("pretrain_q8_0", [PRETRAIN + ["--type", "q8_0", "--out", "{dir}/out.gguf"]]),
    ("pretrain_f32", [F32]),
    ("quantize_q4_0", [F32, ["quantize", "{dir}/base.gguf", "{dir}/out.gguf", "--type", "q4_0"]]),
    ("quantize_q5_1", [F32, ["quantize", "{dir}/base.gguf", "{dir}/out.gguf", "--type", "q5_1"]]),
    ("merge_q8_0", [F32,
                    ["bench", "random-adapter", "-m", "{dir}/base.gguf", "--rank", "4", "--alpha",
                     "8", "--targets", "all", "--seed", "5", "--b-scale", "0.2", "--out",
                     "{dir}/adapter"],
                    ["merge", "-m", "{dir}/base.gguf", "--adapter", "{dir}/adapter", "--out",
                     "{dir}/out.gguf", "--type", "q8_0"]]),
]
TOKENS = [(i * 37 + 11) % 300 for i in range(32)]


def run_case(tmp, commands):
    env = dict(os.environ, FEDTUNE_KERNELS="scalar")
    path = None
    for args in commands:
        args = [a.replace("{dir}", tmp) for a in args]
        subprocess.run([FEDTUNE, *args], check=True, env=env, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        path = args[args.index("--out") + 1] if "--out" in args else args[2]
    return path


def main():
    os.makedirs(OUT, exist_ok=True)
    index = []
    for name, commands in CASES:
        with tempfile.TemporaryDirectory() as tmp:
            path = run_case(tmp, commands)
            with open(path, "rb") as f:
                digest = xxhash.xxh3_128_hexdigest(f.read())
            llm = llama_cpp.Llama(model_path=path, logits_all=True, n_ctx=64, n_threads=2,
                                  type_k=0, type_v=0, flash_attn=False, verbose=False)
            llm.eval(TOKENS)
            logits = np.array(llm.scores[: len(TOKENS)], dtype=np.float32)
        np.save(os.path.join(OUT, name + ".npy"), logits)
        index.append({"name": name, "commands": commands, "xxh3": digest, "tokens": TOKENS})
        print(f"{name}: {logits.shape}, xxh3 {digest}")
    with open(os.path.join(OUT, "cases.json"), "w") as f:
        json.dump(index, f, indent=1)


if __name__ == "__main__":
    main()
