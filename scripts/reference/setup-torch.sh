#!/usr/bin/env bash
# Creates the Python venv (outside the repo) with PyTorch + transformers + peft on CPU, the
# reference that `fedtune bench train` is compared with (scripts/reference/torch_train_bench.py)
# and that reads fedtune's PEFT adapters back.
# Venv path: ${FEDTUNE_TORCH_VENV:-$HOME/.cache/fedtune/torch-venv}. Idempotent.
# PyPI's torch wheel pulls CUDA libraries (several GB) that a CPU run never loads; that is the
# price of installing from PyPI alone.
set -euo pipefail

VENV="${FEDTUNE_TORCH_VENV:-$HOME/.cache/fedtune/torch-venv}"
if [ ! -x "$VENV/bin/python" ]; then
    mkdir -p "$(dirname "$VENV")"
    python3 -m venv "$VENV"
fi
if "$VENV/bin/python" -c 'import torch, transformers, peft, gguf, safetensors' 2>/dev/null; then
    echo "torch venv ready" >&2
else
    "$VENV/bin/python" -m pip install --upgrade pip >&2
    "$VENV/bin/python" -m pip install "torch==2.*" "transformers>=4.46" "peft>=0.13" \
        "gguf>=0.10" safetensors numpy sentencepiece psutil >&2
fi
echo "$VENV"
