#!/usr/bin/env bash
# Installs the inference references into the same venv as setup-venv.sh (outside the repo):
#   - gguf (gguf-py): GGUF reader/writer and llama.cpp's block formats, for golden fixtures;
#   - xxhash: the digests golden_written.py records of the files fedtune writes;
#   - llama-cpp-python built from source with -DGGML_NATIVE=ON, for logits, tokens and speed.
# The source build takes about 8 minutes on 2 cores. Idempotent. Prints the venv path.
set -euo pipefail

GGUF_VERSION=0.19.0
LLAMA_CPP_PYTHON_VERSION=0.3.36
XXHASH_VERSION=3.5.0
VENV="${FEDTUNE_REF_VENV:-$HOME/.cache/fedtune/ref-venv}"

if [ ! -x "$VENV/bin/python" ]; then
    mkdir -p "$(dirname "$VENV")"
    python3 -m venv "$VENV"
fi
py="$VENV/bin/python"

have() { "$py" -c "import importlib.metadata as m; assert m.version('$1') == '$2'" 2>/dev/null; }

have gguf "$GGUF_VERSION" || "$py" -m pip install --quiet "gguf==$GGUF_VERSION" numpy
have xxhash "$XXHASH_VERSION" || "$py" -m pip install --quiet "xxhash==$XXHASH_VERSION"
if ! have llama_cpp_python "$LLAMA_CPP_PYTHON_VERSION"; then
    CMAKE_ARGS="-DGGML_NATIVE=ON" "$py" -m pip install --quiet --no-binary llama-cpp-python \
        "llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION"
fi
echo "$VENV"
