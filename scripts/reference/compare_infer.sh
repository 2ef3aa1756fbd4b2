#!/usr/bin/env bash
# Side-by-side inference speed: fedtune vs llama.cpp on the same model, alternating runs (A B A B ...)
# so that both see the same machine state; prints each pair's ratios and their medians.
# Usage: scripts/reference/compare_infer.sh MODEL.gguf [PAIRS=5] [THREADS=2]
# Needs: cargo build --release; scripts/reference/setup-llama.sh (the venv it prints).
set -euo pipefail
model="$1"; pairs="${2:-5}"; threads="${3:-2}"
here="$(cd "$(dirname "$0")" && pwd)"
fedtune="${FEDTUNE_BIN:-$here/../../target/release/fedtune}"
py="${FEDTUNE_REF_VENV:-$HOME/.cache/fedtune/ref-venv}/bin/python"
field() { sed -n "s/.*$1=\([0-9.]*\).*/\1/p" <<<"$2" | tail -1; }
rows=()
for i in $(seq "$pairs"); do
    f="$("$fedtune" bench infer --model "$model" --prompt-tokens 128 --gen-tokens 64 --threads "$threads" 2>/dev/null | tail -1)"
    l="$("$py" "$here/llama_bench.py" "$model" --threads "$threads" 2>/dev/null | tail -1)"
    row="$(awk -v fp="$(field pp_tok_s "$f")" -v ft="$(field tg_tok_s "$f")" \
        -v lp="$(field pp_tok_s "$l")" -v lt="$(field tg_tok_s "$l")" \
        'BEGIN { printf "%.1f %.1f %.1f %.1f %.3f %.3f", fp, lp, ft, lt, fp / lp, ft / lt }')"
    echo "pair=$i fedtune_pp=$(cut -d' ' -f1 <<<"$row") llama_pp=$(cut -d' ' -f2 <<<"$row") fedtune_tg=$(cut -d' ' -f3 <<<"$row") llama_tg=$(cut -d' ' -f4 <<<"$row") pp_ratio=$(cut -d' ' -f5 <<<"$row") tg_ratio=$(cut -d' ' -f6 <<<"$row")"
    rows+=("$row")
done
median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
pp="$(printf '%s\n' "${rows[@]}" | cut -d' ' -f5 | median)"
tg="$(printf '%s\n' "${rows[@]}" | cut -d' ' -f6 | median)"
echo "median_pp_ratio=$pp median_tg_ratio=$tg"
