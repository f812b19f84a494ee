"""Enum-valued fields take the names the CLI and job files use as well as the
members: the same spellings as the Rust crates, an unknown one refused with
the accepted ones listed, and a spec made of names runs on the server."""

from __future__ import annotations

import dataclasses
import enum
import re
from pathlib import Path
from typing import Any, get_args

import pytest

from rwp_client import (
    Client,
    ConstantLr,
    ConstantSigma,
    CosineIncreasingSigma,
    CosineLrPerEpoch,
    CosineLrPerUpdate,
    Dataset,
    DatasetName,
    Distribution,
    DistributionName,
    GradientEncoding,
    GradientEncodingName,
    InvalidArgument,
    JobSpec,
    LrScheduleName,
    Method,
    MethodName,
    Model,
    ModelName,
    NonFinitePolicy,
    NonFinitePolicyName,
    Search,
    SearchMode,
    SearchModeName,
    SearchParam,
    SigmaScheduleName,
    StepLr,
    SweepSpec,
)

REPO = Path(__file__).resolve().parents[3]
README = Path(__file__).resolve().parents[1] / "README.md"

# Each enum-valued field of JobSpec, its enum, and the Literal of its names.
JOB_SPEC_ENUMS: list[tuple[str, type[enum.Enum], Any]] = [
    ("method", Method, MethodName),
    ("model", Model, ModelName),
    ("dataset", Dataset, DatasetName),
    ("non_finite", NonFinitePolicy, NonFinitePolicyName),
    ("gradient_encoding", GradientEncoding, GradientEncodingName),
]
ALL_ENUMS: list[tuple[str, type[enum.Enum], Any]] = [
    *JOB_SPEC_ENUMS,
    ("mode", SearchMode, SearchModeName),
    ("distribution", Distribution, DistributionName),
]


def rust(path: str) -> str:
    return (REPO / path).read_text()


def documented_choices(source: str) -> dict[str, set[str]]:
    """``key = "value"  # a | b | c`` lines of a Rust file's doc comment."""
    pattern = re.compile(r'^//! (?:# )?(\w+) = "[^"]*" +# ([\w-]+(?: \| [\w-]+)+)$', re.MULTILINE)
    return {key: set(choices.split(" | ")) for key, choices in pattern.findall(source)}


def string_array(source: str, after: str) -> set[str]:
    """The first ``["a", "b"]`` after ``after``."""
    match = re.search(re.escape(after) + r'.*?\[((?:\s*"[^"]*",?)+\s*)\]', source, re.DOTALL)
    assert match, f"{after!r} not found"
    return set(re.findall(r'"([^"]+)"', match[1]))


def test_the_names_are_the_rust_crates_spellings() -> None:
    job_file = documented_choices(rust("crates/rwp-sdk/src/job_file.rs"))
    sweep_file = documented_choices(rust("crates/rwp-sdk/src/sweep_file.rs"))
    cli = rust("crates/rwp-cli/src/cli.rs")
    # The CLI's value parsers: `fn non_finite_parser() ... PossibleValuesParser::new(["fail", "skip"])`.
    cli_parser = "fn {}() -> impl TypedValueParser<Value = {}> {{".format
    schedules = rust("crates/rwp-spec/src/spec/mod.rs")
    expected = {
        "method": job_file["method"],
        "model": job_file["model"],
        "dataset": job_file["dataset"],
        "non_finite": string_array(cli, cli_parser("non_finite_parser", "NonFinitePolicy")),
        "gradient_encoding": string_array(cli, cli_parser("encoding_parser", "GradientEncoding")),
        "mode": sweep_file["mode"],
        "distribution": sweep_file["distribution"],
    }
    for field, enum_class, names in ALL_ENUMS:
        assert {m.value for m in enum_class} == expected[field], field
        assert list(get_args(names)) == [m.value for m in enum_class], f"the Literal of {field}'s names"
    # "step" needs its parameters: it is no name alone.
    lr_names = string_array(schedules, "impl LrSchedule {\n")
    assert set(get_args(LrScheduleName)) | {"step"} == lr_names
    assert set(get_args(SigmaScheduleName)) == string_array(schedules, "impl SigmaSchedule {\n")


@pytest.mark.parametrize(("field", "enum_class"), [(f, e) for f, e, _ in JOB_SPEC_ENUMS])
def test_every_name_makes_its_member(field: str, enum_class: type[enum.Enum]) -> None:
    for member in enum_class:
        values: dict[str, Any] = {"method": Method.SGD, field: member.value}
        by_name = JobSpec(**values)
        assert getattr(by_name, field) is member
        assert by_name == JobSpec(**{**values, field: member}), "the same spec as with the member"


def test_names_make_the_same_spec_everywhere_a_spec_is_made() -> None:
    spec = JobSpec(
        method="m-arwp", model="mlp", dataset="synthetic", non_finite="skip", gradient_encoding="bf16",
        lr_schedule="cosine-per-update", sigma_schedule="cosine-increasing",
    )
    assert spec == JobSpec(
        method=Method.M_ARWP, model=Model.MLP, dataset=Dataset.SYNTHETIC, non_finite=NonFinitePolicy.SKIP,
        gradient_encoding=GradientEncoding.BF16, lr_schedule=CosineLrPerUpdate(),
        sigma_schedule=CosineIncreasingSigma(inc=10.0),
    )
    assert dataclasses.replace(spec, method="sam").method is Method.SAM
    assert JobSpec.from_proto(spec.to_proto()) == spec
    # The stored value is the member: vars() (pickling, copies) and hashing agree.
    assert vars(spec)["method"] is Method.M_ARWP and hash(spec) == hash(dataclasses.replace(spec))


def test_schedules_take_their_names_and_job_file_tables() -> None:
    def lr(value: Any) -> object:
        return JobSpec(method="sgd", lr_schedule=value).lr_schedule

    def sigma(value: Any) -> object:
        return JobSpec(method="rwp", sigma_schedule=value).sigma_schedule

    assert (lr("constant"), lr("cosine-per-update"), lr("cosine-per-epoch")) == (
        ConstantLr(), CosineLrPerUpdate(), CosineLrPerEpoch(),
    )
    assert lr({"kind": "step", "milestones": [60, 120], "gamma": 0.2}) == StepLr(milestones=(60, 120), gamma=0.2)
    assert lr(StepLr(milestones=(3,), gamma=0.5)) == StepLr(milestones=(3,), gamma=0.5)
    # As `rwp submit --sigma-schedule cosine-increasing` without --sigma-inc.
    assert (sigma("constant"), sigma("cosine-increasing")) == (ConstantSigma(), CosineIncreasingSigma(inc=10.0))
    assert sigma({"kind": "cosine-increasing", "inc": 4}) == CosineIncreasingSigma(inc=4.0)
    assert JobSpec(method="arwp").sigma_schedule == CosineIncreasingSigma(inc=10.0), "unset: the method's own"


def test_sweeps_take_names_for_the_mode_and_distribution() -> None:
    param = SearchParam(field="lr", distribution="log-uniform", low=0.01, high=0.3)
    search = Search(params=(param,), mode="random", n_trials=4)
    assert (param.distribution, search.mode) == (Distribution.LOG_UNIFORM, SearchMode.RANDOM)
    assert Search(params=(param,)).mode is SearchMode.GRID and SearchParam(field="lr").distribution is None
    spec = SweepSpec(base=JobSpec(method="sgd", validation_fraction=0.2), search=search)
    assert SweepSpec.from_proto(spec.to_proto()) == spec


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"method": "adam"}, "method = 'adam': must be a Method or one of 'sgd', 'sam', 'rwp', 'arwp', 'm-rwp'"),
        ({"method": "M_ARWP"}, "method = 'M_ARWP': must be a Method or one of 'sgd'"),
        ({"method": "sgd", "model": "resnet152"}, "model = 'resnet152': must be a Model or one of 'mlp', 'small-cnn'"),
        ({"method": "sgd", "dataset": "imagenet"}, "dataset = 'imagenet': must be a Dataset or one of 'synthetic'"),
        ({"method": "sgd", "non_finite": "ignore"}, "non_finite = 'ignore': must be a NonFinitePolicy or one of"),
        ({"method": "sgd", "gradient_encoding": "f16"}, "gradient_encoding = 'f16': must be a GradientEncoding or one"),
        ({"method": "sgd", "model": 3}, "model = 3: must be a Model or one of"),
        (
            {"method": "sgd", "lr_schedule": "linear"},
            "lr_schedule = 'linear': must be one of 'constant', 'cosine-per-update', 'cosine-per-epoch'",
        ),
        ({"method": "sgd", "lr_schedule": "step"}, "lr_schedule = 'step': a step schedule needs its milestones"),
        ({"method": "sgd", "lr_schedule": {"kind": "step", "gamma": 0.1}}, "lr_schedule.milestones"),
        ({"method": "sgd", "sigma_schedule": "cosine"}, "sigma_schedule = 'cosine': must be one of 'constant'"),
    ],
)
def test_an_unknown_name_is_a_value_error_listing_the_names(values: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError) as raised:
        JobSpec(**values)
    assert isinstance(raised.value, InvalidArgument)
    assert message in str(raised.value)


def test_sweep_names_are_checked_too() -> None:
    with pytest.raises(ValueError, match="mode = 'bayesian': must be a SearchMode or one of 'grid', 'random'"):
        Search(params=(), mode="bayesian")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="distribution = 'normal': must be a Distribution or one of 'choice'"):
        SearchParam(field="lr", distribution="normal")  # type: ignore[arg-type]


def test_a_spec_of_names_runs_on_the_server(client: Client) -> None:
    spec = JobSpec(
        method="sgd", model="mlp", dataset="synthetic", lr_schedule="constant", batch_size=250, epochs=1
    )
    final = client.wait(client.submit(spec, name="py-names"), timeout=120)
    assert final.succeeded, final.error
    assert final.spec == spec and final.spec.method is Method.SGD and final.spec.lr_schedule == ConstantLr()


def test_the_readme_example_of_names_runs() -> None:
    section = README.read_text().split("## Names or enum members", 1)[1]
    example = section.split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict[str, Any] = {}
    exec(compile(example, "README.md", "exec"), namespace)
    assert namespace["spec"].lr_schedule == CosineLrPerEpoch() and namespace["spec"].non_finite is NonFinitePolicy.SKIP
