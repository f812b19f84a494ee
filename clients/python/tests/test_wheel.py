"""The client as users install it: `make wheel` builds a wheel with the gRPC
modules already generated, which installs in a fresh virtualenv with its
runtime dependencies only (no grpcio-tools) and runs a job there."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import rwp_client
from _cluster import REPO, Cluster

# Run by the wheel's interpreter in the fresh venv, from outside the repository.
SUBMIT_A_JOB = """
import json, sys

import rwp_client
from rwp_client import Client, JobSpec

with Client(sys.argv[1]) as client:
    job = client.submit(JobSpec(method="m-arwp", epochs=1, batch_size=128, max_updates=3, seed=5), name="py-wheel")
    final = client.wait(job, timeout=120)
print(json.dumps({"module": rwp_client.__file__, "state": final.state.value, "step": final.step,
                  "total_updates": final.total_updates, "error": final.error}))
"""


def run(args: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel `make wheel` builds (into a temporary WHEEL_DIR)."""
    make = shutil.which("make")
    if make is None:
        pytest.fail("make is not installed: the wheel is built by `make wheel`")
    dist = tmp_path_factory.mktemp("dist")
    run([make, "--no-print-directory", "-C", str(REPO), "wheel", f"WHEEL_DIR={dist}", f"PYTHON={sys.executable}"])
    wheels = sorted(p.name for p in dist.iterdir())
    expected = f"rwp_client-{rwp_client.__version__}-py3-none-any.whl"
    assert wheels == [expected], f"make wheel wrote {wheels}"
    return dist / expected


def test_the_wheel_holds_the_generated_modules_and_needs_only_grpcio_and_protobuf(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = archive.read(f"rwp_client-{rwp_client.__version__}.dist-info/METADATA").decode()
    generated = {
        f"rwp_client/_proto/rwp/v1/{proto}{suffix}"
        for proto in ("jobs", "spec", "worker")
        for suffix in ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")
    }
    assert generated <= names, f"missing: {sorted(generated - names)}"
    assert {"rwp_client/py.typed", "rwp_client/_progress.py", "rwp_client/_proto/rwp/v1/__init__.py"} <= names
    assert not [n for n in names if n.endswith(".proto") or "__pycache__" in n]
    runtime = [line for line in metadata.splitlines() if line.startswith("Requires-Dist:") and "extra ==" not in line]
    assert runtime == ["Requires-Dist: grpcio>=1.85.1", "Requires-Dist: protobuf<8,>=7.35.1"], runtime


def test_the_wheel_installed_in_a_fresh_venv_runs_a_job(wheel: Path, cluster: Cluster, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", str(venv)])  # without the system's site packages
    python = str(venv / "bin" / "python")
    # Its runtime dependencies (grpcio, protobuf) from the package index.
    run([python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(wheel)])

    generator = subprocess.run([python, "-c", "import grpc_tools"], capture_output=True, text=True, timeout=60)
    assert generator.returncode != 0, "installing the wheel brought grpcio-tools"
    assert "No module named 'grpc_tools'" in generator.stderr, generator.stderr

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    out = run([python, "-c", SUBMIT_A_JOB, cluster.url], cwd=tmp_path, env=env)
    result = json.loads(out.strip().splitlines()[-1])
    assert Path(result["module"]).is_relative_to(venv), f"rwp_client came from {result['module']}, not the venv"
    assert (result["state"], result["step"], result["total_updates"]) == ("succeeded", 3, 3), result
