#!/usr/bin/env bash
# Creates the Python venv (outside the repo) with Google's dp-accounting, the reference the
# privacy accountant is checked against (scripts/reference/golden_dp_accounting.py).
# Venv path: ${FEDTUNE_DP_VENV:-$HOME/.cache/fedtune/dp-venv}. Idempotent.
set -euo pipefail

DP_ACCOUNTING_VERSION=0.6.0
VENV="${FEDTUNE_DP_VENV:-$HOME/.cache/fedtune/dp-venv}"
if [ ! -x "$VENV/bin/python" ]; then
    mkdir -p "$(dirname "$VENV")"
    python3 -m venv "$VENV"
fi
installed="$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("dp-accounting"))' 2>/dev/null || true)"
if [ "$installed" = "$DP_ACCOUNTING_VERSION" ]; then
    echo "dp-accounting $DP_ACCOUNTING_VERSION already installed" >&2
else
    "$VENV/bin/python" -m pip install "dp-accounting==$DP_ACCOUNTING_VERSION" >&2
fi
echo "$VENV"
