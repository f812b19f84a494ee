"""Job specs without a server: reference defaults, wire round trips, job files."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from rwp_client import (
    ConstantLr,
    ConstantSigma,
    CosineIncreasingSigma,
    CosineLrPerEpoch,
    CosineLrPerUpdate,
    Dataset,
    GradientEncoding,
    InvalidArgument,
    JobSpec,
    JobState,
    Method,
    Model,
    ModelFile,
    NonFinitePolicy,
    StepLr,
)
from rwp_client._proto.rwp.v1 import spec_pb2

REPO = Path(__file__).resolve().parents[3]


def test_unset_fields_take_the_methods_reference_values() -> None:
    # JobSpec::reference in crates/rwp-spec/src/spec.rs.
    spec = JobSpec(method=Method.M_ARWP)
    assert (spec.model, spec.dataset, spec.epochs, spec.batch_size) == (Model.SMALL_CNN, Dataset.SYNTHETIC, 30, 256)
    assert (spec.lr, spec.momentum, spec.weight_decay, spec.lambda_, spec.eta, spec.beta, spec.rho) == (
        0.1, 0.9, 1e-3, 0.5, 0.1, 0.99, 0.05,
    )
    assert (spec.sigma, spec.sigma_schedule, spec.lr_schedule) == (0.015, ConstantSigma(), CosineLrPerEpoch())
    assert (spec.augment, spec.non_finite, spec.gradient_encoding) == (True, NonFinitePolicy.FAIL, GradientEncoding.F32)
    assert JobSpec(method=Method.SGD).sigma == 0.0
    assert JobSpec(method=Method.RWP).sigma == JobSpec(method=Method.M_RWP).sigma == 0.01
    arwp = JobSpec(method=Method.ARWP)
    assert (arwp.sigma, arwp.sigma_schedule, arwp.lr_schedule) == (
        0.001, CosineIncreasingSigma(inc=10.0), CosineLrPerUpdate(),
    )
    assert JobSpec(method=Method.ARWP, sigma=0.0).sigma == 0.0, "an explicit value wins"


def test_every_field_survives_the_wire() -> None:
    spec = JobSpec(
        method=Method.SAM, model=Model.TORCHSCRIPT, dataset=Dataset.CIFAR100, data_dir="/data/c100", seed=2**63,
        epochs=7, max_updates=11, batch_size=96, clean_shards=3, perturbed_shards=4, independent_noise=True,
        lr=0.05, momentum=0.5, nesterov=True, weight_decay=5e-4, lr_schedule=StepLr(milestones=(2, 5), gamma=0.2),
        warmup_updates=9, sigma=0.02, sigma_schedule=CosineIncreasingSigma(inc=3.0), lambda_=0.25, eta=0.3,
        beta=0.9, rho=0.1, augment=False, non_finite=NonFinitePolicy.SKIP, gradient_encoding=GradientEncoding.BF16,
        model_file=ModelFile(sha256="ab" * 32, size_bytes=1234), validation_fraction=0.25,
    )
    wire = spec.to_proto()
    assert getattr(wire, "lambda") == 0.25
    assert wire.method == spec_pb2.METHOD_SAM and wire.model == spec_pb2.MODEL_TORCHSCRIPT
    assert JobSpec.from_proto(spec_pb2.JobSpec.FromString(wire.SerializeToString())) == spec
    for schedule in (ConstantLr(), CosineLrPerUpdate(), CosineLrPerEpoch()):
        plain = JobSpec(method=Method.SGD, lr_schedule=schedule)
        assert JobSpec.from_proto(plain.to_proto()) == plain
        assert not plain.to_proto().HasField("max_updates") and not plain.to_proto().HasField("model_file")


def test_the_readme_job_file_reads_as_the_cli_reads_it() -> None:
    readme = (REPO / "README.md").read_text()
    text = readme.split("### Job files", 1)[1].split("```toml\n", 1)[1].split("```", 1)[0]
    name, spec = JobSpec.from_toml(text)
    assert name == "cifar-marwp"
    assert spec == JobSpec(
        method=Method.M_ARWP, model=Model.RESNET18, dataset=Dataset.CIFAR10, data_dir="/data/cifar10",
        epochs=200, batch_size=256, seed=0, sigma=0.015, lambda_=0.5, eta=0.1, beta=0.99, lr=0.1, momentum=0.9,
        nesterov=False, weight_decay=0.001, lr_schedule=CosineLrPerEpoch(), warmup_updates=0, max_updates=1000,
        independent_noise=False, rho=0.05, augment=True, non_finite=NonFinitePolicy.FAIL,
        gradient_encoding=GradientEncoding.F32, validation_fraction=0.1,
    )


def test_job_files_use_the_reference_values_for_unset_keys(tmp_path: Path) -> None:
    path = tmp_path / "job.toml"
    path.write_text(
        'method = "arwp"\nepochs = 3\nlr_schedule = { kind = "step", milestones = [1, 2], gamma = 0.5 }\n'
        'sigma_schedule = { kind = "cosine-increasing", inc = 2.0 }\nmodel = "torchscript"\n'
    )
    name, spec = JobSpec.from_file(path)
    assert name is None
    assert spec == dataclasses.replace(
        JobSpec(method=Method.ARWP), epochs=3, model=Model.TORCHSCRIPT,
        lr_schedule=StepLr(milestones=(1, 2), gamma=0.5), sigma_schedule=CosineIncreasingSigma(inc=2.0),
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('method = "sgd"\nsigmaa = 0.1\n', "unknown key 'sigmaa'"),
        ("epochs = 2\n", "`method` is required"),
        ('method = "adam"\n', "method = 'adam'"),
        ('method = "sgd"\nepochs = "many"\n', "epochs = 'many': must be an integer"),
        ('method = "sgd"\ndata_dir = ""\n', "data_dir"),
        ('method = "sgd"\nlr_schedule = { kind = "linear" }\n', "lr_schedule.kind = 'linear'"),
        ('method = "sgd"\nlr_schedule = { kind = "constant", gamma = 1.0 }\n', "unknown key 'gamma'"),
        ('method = "sgd"\nlr_schedule = { kind = "step", milestones = [1] }\n', "lr_schedule.gamma"),
        ('method = "sgd"\nsigma = \n', "job.toml: "),
    ],
)
def test_bad_job_files_are_refused_by_name(text: str, message: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        JobSpec.from_toml(text, origin="job.toml")
    assert raised.value.message.startswith("job.toml: ")
    assert message in raised.value.message


def test_a_missing_job_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="cannot read job file .*missing.toml"):
        JobSpec.from_file(tmp_path / "missing.toml")


def test_every_job_state_on_the_wire_has_a_python_state() -> None:
    from rwp_client._proto.rwp.v1 import jobs_pb2
    from rwp_client._types import _STATE_FROM_WIRE

    wire = {v for n, v in jobs_pb2.JobState.items() if n != "JOB_STATE_UNSPECIFIED"}
    assert wire == set(_STATE_FROM_WIRE), "a state the server can send that the client would refuse"
    assert JobState.STOPPED.terminal and not JobState.PAUSED.terminal
