#!/usr/bin/env bash
# The GPU checks, from release binaries built on another machine (a lent GPU
# machine has PyTorch but no registry access, so nothing is built there):
#   1. a TorchScript module and the built-in small CNN trained on CUDA by
#      rwp-train (the C++ module API and libtorch_cuda, end to end);
#   2. the server's engine on the GPU (engine_device = "cuda") trains an
#      m-arwp job to the bits of rwp-train on CUDA (engine-device-check.sh);
#   3. benchmark sections 1-3 with the workers on CUDA (make bench-gpu):
#      the GPU block of BENCHMARKS.md and benchmarks/results-cuda.json.
# Usage, from the repository root:
#   BIN_DIR=target/gpu OUT=runs/gpu [ROUNDS=2] scripts/gpu-check.sh
# BIN_DIR holds bench-suite, rwp, rwp-server, rwp-worker and rwp-train (see
# `make gpu-bundle`); the loader finds libtorch in the machine's own torch.
set -uo pipefail
bin=$(realpath "${BIN_DIR:-target/gpu}")
out=$(realpath -m "${OUT:-runs/gpu}")
mkdir -p "$out"
py=${RWP_PYTHON:-$(command -v python3)}
torch_lib=$("$py" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
export LD_LIBRARY_PATH="$torch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export RWP_PYTHON=$py RWP_WORKSPACE_ROOT=$PWD RUST_LOG=error
status=0
step() { echo "== $*" | tee -a "$out/summary.txt"; }

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/nvidia-smi.txt"

step "TorchScript CNN with BatchNorm, m-arwp, 20 updates on cuda"
"$py" tests/reference/script_models.py cnn-bn "$out/cnn_bn.pt" || status=1
timeout 120 "$bin/rwp-train" --device cuda --model torchscript --model-file "$out/cnn_bn.pt" --method m-arwp \
  --epochs 2 --max-updates 20 --batch-size 128 --quiet 2>&1 | tee -a "$out/summary.txt"
[ "${PIPESTATUS[0]}" = 0 ] || status=1

step "built-in small CNN, m-arwp, 20 updates on cuda"
timeout 120 "$bin/rwp-train" --device cuda --model small-cnn --method m-arwp \
  --epochs 2 --max-updates 20 --batch-size 128 --quiet 2>&1 | tee -a "$out/summary.txt"
[ "${PIPESTATUS[0]}" = 0 ] || status=1

step "the server's engine on cuda: distributed m-arwp == rwp-train on cuda, bit for bit"
BIN_DIR="$bin" DEVICE=cuda OUT="$out/engine-device" RWP_PYTHON="$py" \
  timeout 300 scripts/engine-device-check.sh 2>&1 | tee -a "$out/summary.txt"
[ "${PIPESTATUS[0]}" = 0 ] || status=1

step "bench-suite sections 1-3, workers on cuda, ROUNDS=${ROUNDS:-2}"
DEVICE=cuda SECTIONS=1,2,3 ROUNDS=${ROUNDS:-2} BENCHMARKS_MD=$PWD/BENCHMARKS.md \
  timeout "${BENCH_SECONDS:-450}" "$bin/bench-suite" 2>&1 | tee "$out/bench-gpu.txt"
[ "${PIPESTATUS[0]}" = 0 ] || status=1
cp BENCHMARKS.md "$out/" 2>/dev/null
cp benchmarks/results-cuda.json "$out/" 2>/dev/null
echo "status $status" | tee -a "$out/summary.txt"
exit $status
