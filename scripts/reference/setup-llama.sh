#!/usr/bin/env bash
# Installs the inference references into the same venv as setup-venv.sh (outside the repo):
#   - gguf (gguf-py): GGUF reader/writer and llama.cpp's block formats, for golden fixtures;
#   - xxhash: the digests golden_written.py records of the files fedtune writes;
#   - llama-cpp-python built from source with -DGGML_NATIVE=ON, for logits, tokens and speed.
# The source build takes about 8 minutes on 2 cores. Idempotent. Prints the venv path.
#
# `setup-llama.sh avx2` builds the golden-fixture reference instead, into ref-venv-avx2: AVX2,
# FMA and F16C only (no AVX-512, no AMX), so the goldens' float order is the same on every
# x86 machine (a native build on an AVX-512 part sums in 16 lanes, not 8).
set -euo pipefail

GGUF_VERSION=0.19.0
LLAMA_CPP_PYTHON_VERSION=0.3.36
XXHASH_VERSION=3.5.0
VENV="${FEDTUNE_REF_VENV:-$HOME/.cache/fedtune/ref-venv}"
CMAKE_FLAGS="-DGGML_NATIVE=ON"
if [ "${1:-}" = avx2 ]; then
    VENV="${FEDTUNE_REF_VENV_AVX2:-$HOME/.cache/fedtune/ref-venv-avx2}"
    CMAKE_FLAGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"
    CMAKE_FLAGS="$CMAKE_FLAGS -DGGML_AVX512=OFF -DGGML_AVX512_VNNI=OFF -DGGML_AVX_VNNI=OFF"
    CMAKE_FLAGS="$CMAKE_FLAGS -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
fi

if [ ! -x "$VENV/bin/python" ]; then
    mkdir -p "$(dirname "$VENV")"
    python3 -m venv "$VENV"
fi
py="$VENV/bin/python"

have() { "$py" -c "import importlib.metadata as m; assert m.version('$1') == '$2'" 2>/dev/null; }

have gguf "$GGUF_VERSION" || "$py" -m pip install --quiet "gguf==$GGUF_VERSION" numpy
have xxhash "$XXHASH_VERSION" || "$py" -m pip install --quiet "xxhash==$XXHASH_VERSION"
if ! have llama_cpp_python "$LLAMA_CPP_PYTHON_VERSION"; then
    CMAKE_ARGS="$CMAKE_FLAGS" "$py" -m pip install --quiet --no-cache-dir --no-binary llama-cpp-python \
        "llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION"
fi
echo "$VENV"
