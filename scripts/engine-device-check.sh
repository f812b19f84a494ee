#!/usr/bin/env bash
# The server's engine on a device, end to end: an rwp-server with
# `--engine-device $DEVICE` and two rwp-workers on $DEVICE train an m-arwp
# job; its exported weights, momentum, F and BatchNorm buffers must be the
# bits of rwp-train running the same job on $DEVICE. scripts/gpu-check.sh
# runs it with DEVICE=cuda; DEVICE=cpu checks the script itself anywhere.
#
#   BIN_DIR=target/release DEVICE=cpu OUT=runs/engine-device scripts/engine-device-check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(realpath "${BIN_DIR:-target/release}")
out=$(realpath -m "${OUT:-runs/engine-device}")
device=${DEVICE:-cuda}
py=${RWP_PYTHON:-.venv/bin/python}
rm -rf "$out"
mkdir -p "$out"

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

RUST_LOG=warn "$bin/rwp-server" --listen 127.0.0.1:0 --data-dir "$out/server" --engine-device "$device" \
  --eval-every-epochs 0 > "$out/server.out" 2> "$out/server.log" &
pids+=($!)
for _ in $(seq 300); do
  grep -q 'listening on' "$out/server.out" 2>/dev/null && break
  kill -0 "${pids[0]}" 2>/dev/null || { cat "$out/server.log" >&2; exit 1; }
  sleep 0.1
done
addr=$(sed -n 's/^rwp-server listening on //p' "$out/server.out")
[ -n "$addr" ] || { echo "engine-device-check: the server did not start; see $out/server.log" >&2; exit 1; }
export RWP_SERVER="http://$addr"
for i in 1 2; do
  RUST_LOG=warn "$bin/rwp-worker" --server "$RWP_SERVER" --device "$device" --threads 1 --name "w$i" \
    2> "$out/worker-$i.log" &
  pids+=($!)
done

job=(--method m-arwp --model small-cnn --epochs 1 --max-updates 12 --batch-size 64
  --clean-shards 2 --perturbed-shards 2 --seed 7)
id=$("$bin/rwp" submit "${job[@]}" --name engine-on-"$device")
timeout 300 "$bin/rwp" watch "$id" > "$out/watch.txt"
"$bin/rwp" export "$id" -o "$out/distributed.safetensors"

timeout 300 "$bin/rwp-train" "${job[@]}" --device "$device" --threads 1 --eval-every 0 --quiet \
  --checkpoint-dir "$out/local" > /dev/null

"$py" - "$out/distributed.safetensors" "$out/local" "$device" <<'PY'
import glob, os, sys
from safetensors.torch import load_file
distributed = load_file(sys.argv[1])
latest = max(glob.glob(os.path.join(sys.argv[2], "*.safetensors")), key=os.path.getmtime)
local = load_file(latest)
assert sorted(distributed) == sorted(local), (sorted(distributed), sorted(local))
groups = {k.split(".")[0] for k in local}
assert {"weights", "momentum", "history", "buffers"} <= groups, groups
differing = [k for k in local if not distributed[k].equal(local[k])]
assert not differing, f"not bit-identical to rwp-train on the same device: {differing}"
print(f"engine on {sys.argv[3]}: {len(local)} tensors bit-identical to rwp-train on {sys.argv[3]}")
PY
