#!/usr/bin/env bash
# The demo (README command one): a parameter server and two workers on
# loopback, an m-arwp job and an sgd job on the built-in dataset, their
# progress, a side-by-side summary and a plot of the learning curves. Every
# process started here is stopped on exit and on Ctrl-C.
#
#   EPOCHS=20 BATCH=128 make demo
set -euo pipefail
cd "$(dirname "$0")/.."
bin=target/release
out=runs/demo
EPOCHS=${EPOCHS:-20}
BATCH=${BATCH:-128}
rm -rf "$out"
mkdir -p "$out"

pids=()
cleanup() {
  trap - EXIT INT TERM
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'echo "demo: interrupted, stopping everything" >&2; exit 130' INT TERM

RUST_LOG=warn "$bin/rwp-server" --listen 127.0.0.1:0 --data-dir "$out/server" --torch-threads 1 \
  > "$out/server.out" 2> "$out/server.log" &
pids+=($!)
for _ in $(seq 100); do
  grep -q 'listening on' "$out/server.out" 2>/dev/null && break
  sleep 0.1
done
addr=$(sed -n 's/^rwp-server listening on //p' "$out/server.out")
[ -n "$addr" ] || { echo "demo: the server did not start; see $out/server.log" >&2; exit 1; }
export RWP_SERVER="http://$addr"
echo "demo: parameter server on $addr (data in $out/server)" >&2

for i in 1 2; do
  RUST_LOG=warn "$bin/rwp-worker" --server "$RWP_SERVER" --device cpu --threads 1 --name "demo-worker-$i" \
    2> "$out/worker-$i.log" &
  pids+=($!)
done
echo "demo: 2 gradient workers started" >&2

marwp=$("$bin/rwp" submit --method m-arwp --epochs "$EPOCHS" --batch-size "$BATCH" --name demo-m-arwp)
sgd=$("$bin/rwp" submit --method sgd --epochs "$EPOCHS" --batch-size "$BATCH" --name demo-sgd)
echo "demo: submitted $marwp (m-arwp) and $sgd (sgd): $EPOCHS epochs, batch $BATCH, sharing the workers" >&2

status=0
for job in "$marwp" "$sgd"; do
  "$bin/rwp" watch "$job" | tee -a "$out/summary.txt" || status=$?
done

"$bin/rwp" plot "$marwp" "$sgd" -o "$out/curves.png" >&2
"$bin/rwp" plot "$marwp" "$sgd" -o "$out/curves.svg" >&2
echo
"$bin/rwp" list
echo
echo "curves: $out/curves.png (and .svg); logs and data: $out/"
exit "$status"
