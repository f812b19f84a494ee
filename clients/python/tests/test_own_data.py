"""A job on its owner's data through the client: a tensors file written
with numpy-free struct packing, the data inspected by a worker without a
job, the summary the server keeps, the job trained to the end, and a
problem in the data refused naming it."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from rwp_client import (
    BadSamples,
    Client,
    DataReport,
    Dataset,
    DataSource,
    SplitReport,
    InvalidArgument,
    JobSpec,
    JobState,
    Method,
    Model,
    Transforms,
)


def write_tensors(path: Path, labels: list[int]) -> None:
    """A safetensors file of ``len(labels)`` uint8 samples of shape [3, 8, 8]."""
    n = len(labels)
    inputs = bytes((i * 7 + label * 40) % 256 for label in labels for i in range(3 * 8 * 8))
    label_bytes = struct.pack(f"<{n}q", *labels)
    header = {
        "inputs": {"dtype": "U8", "shape": [n, 3, 8, 8], "data_offsets": [0, len(inputs)]},
        "labels": {"dtype": "I64", "shape": [n], "data_offsets": [len(inputs), len(inputs) + len(label_bytes)]},
    }
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + inputs + label_bytes)


def test_a_tensors_job_is_inspected_planned_and_trained(client: Client, tmp_path: Path) -> None:
    write_tensors(tmp_path / "train.safetensors", [i % 3 for i in range(96)])
    write_tensors(tmp_path / "test.safetensors", [i % 3 for i in range(30)])
    data = DataSource(train=str(tmp_path / "train.safetensors"), test=str(tmp_path / "test.safetensors"))
    assert (data.transforms, data.bad_samples) == (Transforms.IMAGENET, BadSamples.FAIL)
    spec = JobSpec(
        method=Method.M_ARWP, model=Model.MLP, dataset="tensors", data=data, augment=False,
        batch_size=32, epochs=2, seed=3,
    )
    job = client.submit(spec, name="py-tensors")
    assert (job.total_updates, job.updates_per_epoch) == (6, 3)
    summary = job.spec.data.summary if job.spec.data else None
    assert summary is not None
    assert (summary.classes, summary.train, summary.test, summary.shape) == (3, 96, 30, (3, 8, 8))
    assert len(summary.digest) == 64
    assert client.wait(job).state is JobState.SUCCEEDED


def test_a_worker_inspects_the_data_without_a_job(client: Client, tmp_path: Path) -> None:
    write_tensors(tmp_path / "train.safetensors", [i % 3 for i in range(96)])
    write_tensors(tmp_path / "test.safetensors", [i % 3 for i in range(30)])
    data = DataSource(train=str(tmp_path / "train.safetensors"), test=str(tmp_path / "test.safetensors"))
    jobs_before = len(client.list())
    report = client.inspect_data(data, dataset="tensors")
    assert isinstance(report, DataReport)
    assert report.kind is Dataset.TENSORS
    assert report.splits == [
        SplitReport("data.train", str(tmp_path / "train.safetensors"), 96, 1),
        SplitReport("data.test", str(tmp_path / "test.safetensors"), 30, 1),
    ]
    assert (len(report.class_names), report.shape, report.unreadable, report.first_image) == (3, (3, 8, 8), [], None)
    assert len(client.list()) == jobs_before, "no job was started"
    # A job on the same data is planned from the same summary.
    spec = JobSpec(
        method=Method.SGD, model=Model.MLP, dataset=Dataset.TENSORS, data=data, augment=False, batch_size=32, epochs=1
    )
    job = client.submit(spec, name="py-inspected")
    assert job.spec.data is not None and job.spec.data.summary == report.summary
    client.cancel(job)

    write_tensors(tmp_path / "test.safetensors", [0, 1, -4])
    with pytest.raises(InvalidArgument, match="data.test") as refused:
        client.inspect_data(data, dataset=Dataset.TENSORS, decode=True)
    assert "-4" in str(refused.value)
    with pytest.raises(InvalidArgument, match="only image-folder, tar-shards and tensors"):
        client.inspect_data(data, dataset=Dataset.CIFAR10)


def test_a_problem_in_the_data_is_refused_naming_it(client: Client, tmp_path: Path) -> None:
    write_tensors(tmp_path / "train.safetensors", [0, 1, 2, 0])
    write_tensors(tmp_path / "test.safetensors", [0, 1, -4])
    spec = JobSpec(
        method=Method.SGD, model=Model.MLP, dataset=Dataset.TENSORS, augment=False,
        data=DataSource(train=str(tmp_path / "train.safetensors"), test=str(tmp_path / "test.safetensors")),
    )
    with pytest.raises(InvalidArgument, match=r"data\.test: .*test\.safetensors has label -4 at row 2"):
        client.submit(spec, name="py-bad-labels")


def test_a_job_file_data_table_reads_as_the_rust_sdk_reads_it() -> None:
    name, spec = JobSpec.from_toml(
        """
        name = "imagenet"
        method = "m-arwp"
        model = "resnet50"
        dataset = "tar-shards"
        [data]
        train = "s3://bucket/train-{0000..0003}.tar"
        test = "s3://bucket/val-{0000..0001}.tar"
        image_size = 160
        transforms = "resize"
        bad_samples = "skip"
        mean = [0.5, 0.5, 0.5]
        std = [0.25, 0.25, 0.25]
        """
    )
    assert name == "imagenet" and spec.data is not None
    assert (spec.dataset, spec.data.image_size, spec.data.transforms) == (Dataset.TAR_SHARDS, 160, Transforms.RESIZE)
    assert (spec.data.bad_samples, spec.data.mean) == (BadSamples.SKIP, (0.5, 0.5, 0.5))
    assert JobSpec.from_proto(spec.to_proto()) == spec
    _, tensors = JobSpec.from_toml('method = "sgd"\ndataset = "tensors"\n[data]\ntrain = "a"\ntest = "b"\n')
    assert tensors.augment is False, "tensors are used as stored"
    with pytest.raises(InvalidArgument, match="unknown key 'color'"):
        JobSpec.from_toml('method = "sgd"\n[data]\ntrain = "a"\ntest = "b"\ncolor = 1\n')
