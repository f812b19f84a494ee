#!/usr/bin/env bash
# The local demo: m-arwp and sgd on the built-in dataset, one process each,
# then a side-by-side summary. (The distributed demo replaces this once the
# parameter server and workers exist.)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=target/release/rwp-train
out=runs/demo-local
mkdir -p "$out"
EPOCHS=${EPOCHS:-20}
BATCH=${BATCH:-128}
declare -A summary
for method in m-arwp sgd; do
  echo "== $method: $EPOCHS epochs, batch $BATCH, reference hyper-parameters" >&2
  summary[$method]=$("$bin" --method "$method" --epochs "$EPOCHS" --batch-size "$BATCH" --device cpu \
    --eval-every 10 --metrics "$out/$method.jsonl" | grep '^summary ')
done
field() { sed -n "s/.* $2=\([^ ]*\).*/\1/p" <<<"${summary[$1]}"; }
printf '\n%-8s %14s %12s %14s\n' method test_accuracy wall_time_s ms_per_update
for method in m-arwp sgd; do
  printf '%-8s %14s %12s %14s\n' "$method" "$(field "$method" test_accuracy)" "$(field "$method" wall_time_s)" "$(field "$method" ms_per_update)"
done
echo "metrics (JSON lines): $out/" >&2
