#!/usr/bin/env bash
# Creates the Python venv (outside the repo) used to run the Flower reference
# measurement in scripts/reference/flower_overhead.py.
# Venv path: ${FEDTUNE_REF_VENV:-$HOME/.cache/fedtune/ref-venv}. Idempotent.
set -euo pipefail

FLWR_VERSION=1.42.0
VENV="${FEDTUNE_REF_VENV:-$HOME/.cache/fedtune/ref-venv}"

if [ ! -x "$VENV/bin/python" ]; then
    mkdir -p "$(dirname "$VENV")"
    python3 -m venv "$VENV"
fi

installed="$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("flwr"))' 2>/dev/null || true)"
if [ "$installed" = "$FLWR_VERSION" ] && "$VENV/bin/python" -c 'import numpy, ray' 2>/dev/null; then
    echo "flwr $FLWR_VERSION already installed" >&2
else
    "$VENV/bin/python" -m pip install "flwr[simulation]==$FLWR_VERSION" numpy
fi

echo "$VENV"
