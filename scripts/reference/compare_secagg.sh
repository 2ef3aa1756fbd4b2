#!/usr/bin/env bash
# Side by side: Flower 1.42's SecAgg+ (flower_secagg.py) and `fedtune bench overhead --secagg`
# on the same workload, then fedtune without secure aggregation, each run once in turn.
# Usage: scripts/reference/compare_secagg.sh [CLIENTS ROUNDS PARAMS]
# Needs scripts/reference/setup-venv.sh and a release build (cargo build --release).
set -euo pipefail
cd "$(dirname "$0")/../.."
n="${1:-100}" r="${2:-3}" p="${3:-1000000}"
py="${FEDTUNE_REF_VENV:-$HOME/.cache/fedtune/ref-venv}/bin/python"
bin=target/release/fedtune
flower=$(cd scripts/reference && "$py" flower_secagg.py --clients "$n" --rounds "$r" --params "$p" 2>/dev/null | tail -1)
secure=$("$bin" --log warn bench overhead --clients "$n" --rounds "$r" --params "$p" --transport grpc --secagg | tail -1)
plain=$("$bin" --log warn bench overhead --clients "$n" --rounds "$r" --params "$p" --transport grpc | tail -1)
echo "flower secagg+: $flower"
echo "fedtune secagg: $secure"
echo "fedtune plain:  $plain"
f=${flower#flower_s=}; f=${f%% *}
s=${secure#fedtune_s=}; s=${s%% *}
q=${plain#fedtune_s=}; q=${q%% *}
python3 -c "print(f'flower/fedtune_secagg={$f/$s:.1f}x fedtune_secagg/plain={$s/$q:.1f}x')"
