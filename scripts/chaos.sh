#!/usr/bin/env bash
# Chaos test of a real deployment: a `fedtune server` and 6 `fedtune client` processes run 30
# rounds while the server is SIGKILLed at random moments (at least 20 times, outages of up to
# 60 s) and devices are killed and restarted. The run must end with the uninterrupted run's
# bytes in every checkpoint, the same rows (no duplicate, none lost) and every device done.
#
#   scripts/chaos.sh [KILLS] [MAX_OUTAGE_SECONDS]     (defaults: 20, 60; ~15 minutes)
#
# Exits non-zero on any difference. Output: docs/testing.md#chaos.
set -euo pipefail

KILLS=${1:-20}
MAX_OUTAGE=${2:-60}
DEVICES=6
ROUNDS=30
SEED=${CHAOS_SEED:-7}
RANDOM=$SEED

cd "$(dirname "$0")/.."
cargo build --release --quiet
BIN=$PWD/target/release/fedtune
WORK=$(mktemp -d)
PIDS_FILE=$WORK/pids
trap 'kill -9 $(cat "$PIDS_FILE" 2>/dev/null) 2>/dev/null || true; rm -rf "$WORK"' EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Rounds committed so far, read from the database while the server runs.
committed() {
  python3 - "$1/state.sqlite" <<'EOF'
import sqlite3, sys
try:
    db = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True, timeout=5)
    print(db.execute("SELECT COALESCE(MAX(round), 0) FROM rounds").fetchone()[0])
except sqlite3.Error:
    print(0)
EOF
}

# Both start a process of this shell (so it can be waited for); its pid is then in $!.
start_server() { # STATE PORT LOG
  "$BIN" server --listen "127.0.0.1:$2" --state "$1" --model linreg:16 --seed "$SEED" \
    --rounds $ROUNDS --clients-per-round $DEVICES --over-selection 1 \
    --min-clients $DEVICES --min-commit $DEVICES --round-timeout 10m --linger 20s \
    --log warn >>"$3" 2>&1 &
}

start_device() { # PORT INDEX LOG
  "$BIN" client --server "http://127.0.0.1:$1" --id "dev-$2" --index "$2" --seed "$SEED" \
    --dim 16 --delay "$((1000 + 200 * $2))ms" --log warn >>"$3" 2>&1 &
}

# The uninterrupted run.
REF=$WORK/reference
PORT=$(free_port)
start_server "$REF" "$PORT" "$WORK/reference.log"; SERVER=$!
DEVS=()
for i in $(seq 0 $((DEVICES - 1))); do start_device "$PORT" "$i" "$WORK/reference.log"; DEVS+=($!); done
echo "$SERVER ${DEVS[*]}" >"$PIDS_FILE"
for p in "${DEVS[@]}"; do wait "$p"; done
wait "$SERVER"
echo "reference: $(committed "$REF") rounds committed without interruption"

# The same federation under chaos.
RUN=$WORK/chaos
PORT=$(free_port)
LOG=$WORK/chaos.log
start_server "$RUN" "$PORT" "$LOG"; SERVER=$!
DEVS=()
for i in $(seq 0 $((DEVICES - 1))); do start_device "$PORT" "$i" "$LOG"; DEVS+=($!); done
kills=0 device_kills=0 longest=0 started=$SECONDS
while :; do
  echo "$SERVER ${DEVS[*]}" >"$PIDS_FILE"
  # Up for a random moment after the next commit (or 20 s, if the devices are slow to come
  # back), so that the kills fall in rounds all along the federation.
  before=$(committed "$RUN")
  for _ in $(seq 40); do (($(committed "$RUN") > before)) && break; sleep 0.5; done
  sleep "$((RANDOM % 2)).$((RANDOM % 10))"
  done_rounds=$(committed "$RUN")
  if ((kills >= KILLS && done_rounds >= ROUNDS)); then break; fi
  if ((done_rounds >= ROUNDS)); then
    echo "the federation finished after only $kills server kills: raise the device delays" >&2
    exit 1
  fi
  # Now and then a device dies and comes back 0-9 s later (its task is redone).
  if ((RANDOM % 3 == 0)); then
    i=$((RANDOM % DEVICES))
    if kill -9 "${DEVS[$i]}" 2>/dev/null; then
      wait "${DEVS[$i]}" 2>/dev/null || true
      device_kills=$((device_kills + 1))
      sleep $((RANDOM % 10))
      start_device "$PORT" "$i" "$LOG"; DEVS[$i]=$!
      echo "$SERVER ${DEVS[*]}" >"$PIDS_FILE"
    fi
  fi
  kill -9 "$SERVER"
  wait "$SERVER" 2>/dev/null || true
  kills=$((kills + 1))
  # Mostly short outages, one in four long; the longest reaches MAX_OUTAGE at least once.
  if ((kills == KILLS / 2)); then outage=$MAX_OUTAGE
  elif ((RANDOM % 4 == 0)); then outage=$((MAX_OUTAGE / 3 + RANDOM % (MAX_OUTAGE * 2 / 3)))
  else outage=$((1 + RANDOM % 8)); fi
  ((outage > longest)) && longest=$outage
  echo "kill $kills at round $done_rounds: server down ${outage}s"
  sleep "$outage"
  start_server "$RUN" "$PORT" "$LOG"; SERVER=$!
  # After enough kills, let it finish.
  if ((kills >= KILLS)); then
    while (($(committed "$RUN") < ROUNDS)); do sleep 1; done
    break
  fi
done
for i in "${!DEVS[@]}"; do
  if ! wait "${DEVS[$i]}"; then echo "device dev-$i did not finish" >&2; exit 1; fi
done
wait "$SERVER"
echo "chaos: $kills server kills (longest outage ${longest}s), $device_kills device kills, $((SECONDS - started))s"

# Every checkpoint byte for byte; every row once, the same as without interruption.
python3 - "$REF" "$RUN" <<'EOF'
import filecmp, os, sqlite3, sys
ref, run = sys.argv[1:]
names = sorted(os.listdir(f"{ref}/checkpoints"))
assert names == sorted(os.listdir(f"{run}/checkpoints")), "checkpoint files differ"
bad = [n for n in names if not filecmp.cmp(f"{ref}/checkpoints/{n}", f"{run}/checkpoints/{n}", shallow=False)]
assert not bad, f"checkpoints differ: {bad}"
queries = {
    "rounds": "SELECT round, model_version, num_clients, total_weight, digest FROM rounds",
    "contributions": "SELECT round, client_id, num_examples, weight FROM contributions",
    "clients": "SELECT client_id, capabilities FROM clients",
    # The server's round_seconds is a duration: only that it is there is compared.
    "metrics": "SELECT round, client_id, name, CASE WHEN name = 'round_seconds' THEN 0 ELSE value END FROM metrics",
}
for table, q in queries.items():
    a = sorted(sqlite3.connect(f"{ref}/state.sqlite").execute(q).fetchall())
    b = sorted(sqlite3.connect(f"{run}/state.sqlite").execute(q).fetchall())
    assert len(b) == len(set(b)), f"{table}: duplicated rows"
    missing, extra = set(a) - set(b), set(b) - set(a)
    assert not missing and not extra, f"{table}: {len(missing)} rows lost, {len(extra)} differ: {sorted(missing)[:3]} {sorted(extra)[:3]}"
    print(f"{table}: {len(b)} rows, identical")
print(f"checkpoints: {len(names)} files, byte-identical")
EOF
echo "chaos test passed"
