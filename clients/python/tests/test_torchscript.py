"""A user's own PyTorch model: scripted, uploaded (UploadModel), trained by the
workers (FetchModel) as a ``Model.TORCHSCRIPT`` job, and exported."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.numpy import load_file
from torch import nn

from _cluster import Cluster
from rwp_client import CHUNK_BYTES, Client, InvalidArgument, JobSpec, Method, Model, ModelFile, NotFound, OutOfRange


class TinyCnn(nn.Module):
    """Conv, BatchNorm, ReLU, global pooling, linear: for 3x16x16 images, 10 classes."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.conv(x)))
        logits: torch.Tensor = self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))
        return logits


# torch 2.11 deprecates TorchScript in favour of torch.export; the service
# takes TorchScript files.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")

SPEC = JobSpec(method=Method.M_ARWP, model=Model.TORCHSCRIPT, epochs=1, batch_size=128, max_updates=4, seed=5)


@pytest.fixture(scope="module")
def scripted() -> torch.jit.ScriptModule:
    torch.manual_seed(0)
    module: torch.jit.ScriptModule = torch.jit.script(TinyCnn())
    return module


def test_upload_submit_and_train_a_scripted_cnn(client: Client, scripted: torch.jit.ScriptModule, tmp_path: Path) -> None:
    path = tmp_path / "net.pt"
    scripted.save(str(path))
    data = path.read_bytes()

    uploaded = client.upload_model(path)
    assert uploaded == ModelFile(sha256=hashlib.sha256(data).hexdigest(), size_bytes=len(data))
    assert client.upload_model(path) == uploaded, "uploading the same file again is harmless"

    job = client.submit(SPEC, name="py-torchscript", model=path)
    assert job.spec == dataclasses.replace(SPEC, model_file=uploaded)
    final = client.wait(job, timeout=180)
    assert final.succeeded, final.error
    assert final.step == 4

    exported = tmp_path / "trained.safetensors"
    assert client.export(job, exported).step == 4
    tensors = load_file(exported)
    parameters = dict(scripted.named_parameters())
    for name, parameter in parameters.items():
        assert tensors[f"weights.{name}"].shape == tuple(parameter.shape), name
        assert tensors[f"momentum.{name}"].shape == tuple(parameter.shape), name
    for name in ("bn.running_mean", "bn.running_var"):
        assert tensors[f"buffers.{name}"].shape == (8,), name
    # The initial weights are the file's: training moved them.
    assert not (tensors["weights.fc.weight"] == parameters["fc.weight"].detach().numpy()).all()


def test_submit_takes_the_scripted_module_itself(client: Client, scripted: torch.jit.ScriptModule) -> None:
    job = client.submit(dataclasses.replace(SPEC, max_updates=2), name="py-torchscript-object", model=scripted)
    assert job.spec.model_file is not None and job.spec.model_file.size_bytes > 0
    assert client.wait(job, timeout=180).succeeded


def test_a_large_file_travels_in_chunks_and_a_non_module_is_refused(client: Client, tmp_path: Path) -> None:
    # Not a TorchScript module: the server reads all chunks, checks the
    # checksum, then refuses the content.
    junk = tmp_path / "junk.pt"
    junk.write_bytes(bytes(range(256)) * (CHUNK_BYTES // 256 * 2 + 3))
    with pytest.raises(InvalidArgument):
        client.upload_model(junk)
    with pytest.raises(InvalidArgument, match="script the module first"):
        client.upload_model(TinyCnn())  # type: ignore[arg-type]


def test_a_file_over_the_servers_limit_is_out_of_range(tmp_path: Path) -> None:
    cluster = Cluster.start(tmp_path, workers=0, server_flags=["--max-model-file-bytes", "4096"])
    try:
        big = tmp_path / "big.pt"
        big.write_bytes(bytes(3 * CHUNK_BYTES))
        with Client(cluster.url) as client, pytest.raises(OutOfRange, match="max_model_file_bytes") as raised:
            client.upload_model(big)
        assert isinstance(raised.value, InvalidArgument)
    finally:
        cluster.stop()


def test_the_readme_example_runs(client: Client, tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    example = readme.split("```python\n", 1)[1].split("```", 1)[0]
    # A file, not `python -c`: torch.jit.script reads the module's source.
    (tmp_path / "example.py").write_text(example)
    result = subprocess.run(
        [sys.executable, "example.py"],
        cwd=tmp_path, env={**os.environ, "RWP_SERVER": client.address}, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "job succeeded" in result.stdout, result.stdout
    assert (tmp_path / "my-cnn.safetensors").is_file()


def test_uploaded_files_are_listed_and_deleted(client: Client, tmp_path: Path) -> None:
    torch.manual_seed(1)
    path = tmp_path / "listed.pt"
    torch.jit.script(TinyCnn()).save(str(path))
    uploaded = client.upload_model(path)
    listed = {m.sha256: m for m in client.list_models()}
    assert listed[uploaded.sha256].size_bytes == uploaded.size_bytes
    assert listed[uploaded.sha256].owner is None, "a server without tokens has no owners"
    assert listed[uploaded.sha256].uploaded_unix_ms > 1_700_000_000_000

    client.delete_model(uploaded)
    assert uploaded.sha256 not in {m.sha256 for m in client.list_models()}
    with pytest.raises(NotFound, match="upload it first"):
        client.delete_model(uploaded.sha256)
