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

# The small CNN's architecture as a user's nn.Module, saved as TorchScript:
# the ts-* rows train it with rwp-train and time it in eager PyTorch.
"$py" tests/reference/script_models.py small-cnn "$tmp/small-cnn.pt"

rust_ms() { # method [model flags, default --model small-cnn] -> mean ms per update after the warm-up updates
  local method=$1; shift
  local model=("$@")
  [ ${#model[@]} -gt 0 ] || model=(--model small-cnn)
  "$bin" --method "$method" "${model[@]}" --batch-size "$BATCH" --epochs 1000 \
    --max-updates $((UPDATES + WARMUP)) --threads "$THREADS" --device cpu --eval-every 0 \
    --quiet --metrics "$tmp/run.jsonl" > /dev/null 2> "$tmp/run.err" || { cat "$tmp/run.err" >&2; exit 1; }
  "$py" - "$tmp/run.jsonl" "$WARMUP" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"update"' in l]
times = [r["update_ms"] for r in rows[int(sys.argv[2]):]]
print(sum(times) / len(times))
PY
}

torch_ms() { # method [--eager-module]
  "$py" tests/reference/rwp_reference.py bench --method "$@" --updates "$UPDATES" --warmup "$WARMUP" \
    --batch-size "$BATCH" --threads "$THREADS" | "$py" -c 'import json,sys; print(json.load(sys.stdin)["ms_per_update"])'
}

echo "small CNN, batch $BATCH, $UPDATES updates after $WARMUP warm-up, $THREADS thread(s), best of $ROUNDS interleaved rounds"
echo "ts-* rows: the same CNN as a user's module, rwp-train on its TorchScript file vs eager PyTorch"
declare -A rust torch
rows=(sgd m-arwp sam ts-sgd ts-m-arwp)
for round in $(seq "$ROUNDS"); do
  for row in "${rows[@]}"; do
    case $row in
      ts-*) m=${row#ts-}; r=$(rust_ms "$m" --model torchscript --model-file "$tmp/small-cnn.pt"); t=$(torch_ms "$m" --eager-module) ;;
      *) m=$row; r=$(rust_ms "$m"); t=$(torch_ms "$m") ;;
    esac
    rust[$row]=$("$py" -c "print(min(float('${rust[$row]:-inf}'), $r))")
    torch[$row]=$("$py" -c "print(min(float('${torch[$row]:-inf}'), $t))")
  done
done
args=()
for row in "${rows[@]}"; do args+=("$row" "${rust[$row]}" "${torch[$row]}"); done
"$py" - "${args[@]}" <<'PY'
import sys
a = sys.argv[1:]
rows = {a[i]: (float(a[i + 1]), float(a[i + 2])) for i in range(0, len(a), 3)}
print(f"{'method':<10} {'rust ms':>9} {'torch ms':>9} {'rust/torch':>11} {'rust vs sgd':>12} {'torch vs sgd':>13}")
for m, (r, t) in rows.items():
    base = rows["ts-sgd" if m.startswith("ts-") else "sgd"]
    print(f"{m:<10} {r:>9.2f} {t:>9.2f} {r/t:>11.3f} {r/base[0]:>12.3f} {t/base[1]:>13.3f}")
PY

# The model sandbox's cost for a TorchScript CNN with BatchNorm: a worker's
# m-arwp update computed in this process and in an rwp-sandbox process.
echo
BATCH="$BATCH" THREADS="$THREADS" ROUNDS="$ROUNDS" UPDATES="$UPDATES" WARMUP="$WARMUP" \
  cargo bench --quiet -p rwp-sandbox --bench sandbox | grep -v '^{'
