#!/usr/bin/env bash
# Makes libtorch available to the build and to the binaries, with nothing
# done by hand:
#   - creates .venv (git-ignored) with torch==2.11.0 unless it is already there;
#   - writes .cargo/config.toml (git-ignored) so that every cargo command builds
#     tch against that torch and links binaries with an rpath to its libraries
#     (no LD_LIBRARY_PATH needed at run time).
# With LIBTORCH=/path/to/libtorch set, that libtorch is used for the build and
# the rpath instead; the virtualenv is still made, since the reference tests
# run the PyTorch script.
# The build itself uses LIBTORCH_USE_PYTORCH=1, which runs the virtualenv's
# python: the Makefile puts .venv/bin first on PATH (or activate .venv before
# running cargo by hand).
# A second run that finds everything in place returns at once.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
torch_version=2.11.0
# The torchvision release built for that torch (its ResNet-50 is the
# reference of tests/resnet50_matches_torchvision.rs).
torchvision_version=0.26.0
venv=$root/.venv
py=$venv/bin/python

# torch for libtorch and the reference script; torchvision for the ResNet-50
# reference; safetensors to read checkpoints
# back; tensorboard to read the event files back in the tests; mlflow for the
# tracking server tests/mlflow_tracking.rs starts; moto, the S3-compatible
# server the object-storage tests start on loopback; grpcio, grpcio-tools,
# pytest, mypy and the grpc/protobuf type stubs for the Python client
# (clients/python) and its tests (grpcio-tools needs setuptools >= 77,
# torch < 82).
if ! "$py" -c "import torch, torchvision, safetensors, numpy, tensorboard, grpc, grpc_tools, pytest, mypy, sys, importlib.metadata as m; m.version('types-grpcio'); m.version('types-protobuf'); m.version('mlflow'); m.version('moto'); m.version('flask'); sys.exit(torch.__version__.split('+')[0] != '$torch_version')" 2>/dev/null; then
  echo "setup: installing torch==$torch_version, the tests' tools (tensorboard, mlflow) and the Python client's tools into .venv (once; a few minutes)" >&2
  [ -x "$py" ] || python3 -m venv "$venv"
  "$py" -m pip install --quiet --disable-pip-version-check "torch==$torch_version" "torchvision==$torchvision_version" \
    "safetensors>=0.4" "numpy" "tensorboard==2.21.0" \
    "setuptools>=77.0.1,<82" "grpcio>=1.85.1,<1.86" "grpcio-tools>=1.85.1,<1.86" "protobuf>=7.35.1,<8" \
    "pytest>=9.2,<10" "mypy>=2.4,<3" "types-grpcio>=1.85,<1.86" "types-protobuf>=7.35,<8" "mlflow>=3.17,<3.18" \
    "moto[server]>=5.1,<6"
fi

if [ -n "${LIBTORCH:-}" ]; then
  lib_dir=$LIBTORCH/lib
  env_block="LIBTORCH = \"$LIBTORCH\""
else
  lib_dir=$("$py" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
  env_block="LIBTORCH_USE_PYTORCH = \"1\"
VIRTUAL_ENV = \"$venv\""
fi

# (The binaries that compute on GPUs keep libtorch_cuda linked themselves:
# see build.rs of rwp-worker and rwp-train.)
link_args="\"-C\", \"link-arg=-Wl,-rpath,$lib_dir\""

mkdir -p .cargo
config=$(cat <<TOML
# Written by scripts/setup-libtorch.sh; git-ignored, machine-specific.
[env]
$env_block
RWP_PYTHON = "$py"
RWP_TORCH_LIB = "$lib_dir"

[target.x86_64-unknown-linux-gnu]
rustflags = [$link_args]

[target.aarch64-unknown-linux-gnu]
rustflags = [$link_args]
TOML
)
if [ ! -f .cargo/config.toml ] || [ "$(cat .cargo/config.toml)" != "$config" ]; then
  printf '%s\n' "$config" > .cargo/config.toml
  echo "setup: wrote .cargo/config.toml (libtorch in $lib_dir)" >&2
fi
