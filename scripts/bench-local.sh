#!/usr/bin/env bash
# Time per update of the local trainer (release build) against the PyTorch
# reference script doing the same updates on the same model and batch size,
# measured side by side in one run. Reports ratios; absolute times on a shared
# machine mean little.
#
#   make bench                      # defaults below
#   UPDATES=50 THREADS=2 make bench
set -euo pipefail
cd "$(dirname "$0")/.."
UPDATES=${UPDATES:-30}
WARMUP=${WARMUP:-3}
THREADS=${THREADS:-1}
BATCH=${BATCH:-256}
ROUNDS=${ROUNDS:-3}
py=.venv/bin/python
bin=target/release/rwp-train
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

rust_ms() { # method -> mean ms per update after the warm-up updates
  "$bin" --method "$1" --model small-cnn --batch-size "$BATCH" --epochs 1000 \
    --max-updates $((UPDATES + WARMUP)) --threads "$THREADS" --device cpu --eval-every 0 \
    --quiet --metrics "$tmp/$1.jsonl" > /dev/null 2> "$tmp/$1.err" || { cat "$tmp/$1.err" >&2; exit 1; }
  "$py" - "$tmp/$1.jsonl" "$WARMUP" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"update"' in l]
times = [r["update_ms"] for r in rows[int(sys.argv[2]):]]
print(sum(times) / len(times))
PY
}

torch_ms() {
  "$py" tests/reference/rwp_reference.py bench --method "$1" --updates "$UPDATES" --warmup "$WARMUP" \
    --batch-size "$BATCH" --threads "$THREADS" | "$py" -c 'import json,sys; print(json.load(sys.stdin)["ms_per_update"])'
}

echo "small CNN, batch $BATCH, $UPDATES updates after $WARMUP warm-up, $THREADS thread(s), best of $ROUNDS interleaved rounds"
declare -A rust torch
for round in $(seq "$ROUNDS"); do
  for m in sgd m-arwp sam; do
    r=$(rust_ms "$m"); t=$(torch_ms "$m")
    rust[$m]=$("$py" -c "print(min(float('${rust[$m]:-inf}'), $r))")
    torch[$m]=$("$py" -c "print(min(float('${torch[$m]:-inf}'), $t))")
  done
done
"$py" - "${rust[sgd]}" "${rust[m-arwp]}" "${rust[sam]}" "${torch[sgd]}" "${torch[m-arwp]}" "${torch[sam]}" <<'PY'
import sys
r = dict(zip(["sgd", "m-arwp", "sam"], map(float, sys.argv[1:4])))
t = dict(zip(["sgd", "m-arwp", "sam"], map(float, sys.argv[4:7])))
print(f"{'method':<8} {'rust ms':>9} {'torch ms':>9} {'rust/torch':>11} {'rust vs sgd':>12} {'torch vs sgd':>13}")
for m in r:
    print(f"{m:<8} {r[m]:>9.2f} {t[m]:>9.2f} {r[m]/t[m]:>11.3f} {r[m]/r['sgd']:>12.3f} {t[m]/t['sgd']:>13.3f}")
PY

# The model sandbox's cost for a TorchScript CNN with BatchNorm: a worker's
# m-arwp update computed in this process and in an rwp-sandbox process.
echo
BATCH="$BATCH" THREADS="$THREADS" ROUNDS="$ROUNDS" UPDATES="$UPDATES" WARMUP="$WARMUP" \
  cargo bench --quiet -p rwp-sandbox --bench sandbox | grep -v '^{'
