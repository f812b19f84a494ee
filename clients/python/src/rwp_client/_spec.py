"""Job specs: Python-friendly enums and dataclasses mirroring ``rwp.v1.JobSpec``,
their wire conversion, and job files (TOML, as the ``rwp`` CLI reads them).
A job's own data (``DataSource``) is in ``_data``, the conversion of single
values in ``_convert``.

Every enum-valued field also takes the name the CLI and job files use
(``method="m-arwp"``, ``lr_schedule="cosine-per-epoch"``): the spec stores the
enum member (or schedule) either way, and an unknown name is refused with the
accepted ones listed."""

from __future__ import annotations

import enum
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias, get_args

from ._convert import (
    _assign,
    _boolean,
    _Converted,
    _enum,
    _from_wire,
    _integer,
    _invert,
    _no_unknown_keys,
    _number,
    _string,
)
from ._data import (
    BadSamples,
    BadSamplesName,
    DataSource,
    DataSummary,
    Transforms,
    TransformsName,
    _read_data,
)
from ._errors import DataLoss, InvalidArgument
from ._proto.rwp.v1 import spec_pb2


class Method(enum.Enum):
    """A training method (docs/algorithms.md); the values are the job-file names."""

    SGD = "sgd"
    SAM = "sam"
    RWP = "rwp"
    ARWP = "arwp"
    M_RWP = "m-rwp"
    M_ARWP = "m-arwp"


class Model(enum.Enum):
    """A built-in architecture, or ``TORCHSCRIPT`` for an uploaded module."""

    MLP = "mlp"
    SMALL_CNN = "small-cnn"
    RESNET18 = "resnet18"
    RESNET50 = "resnet50"
    VGG16_BN = "vgg16-bn"
    WRN16_8 = "wrn16-8"
    WRN28_10 = "wrn28-10"
    TORCHSCRIPT = "torchscript"


class Dataset(enum.Enum):
    """``SYNTHETIC`` is built in and needs no files; ``MNIST`` and the CIFARs
    read ``data_dir``; the last three are your own data (``JobSpec.data``)."""

    SYNTHETIC = "synthetic"
    MNIST = "mnist"
    CIFAR10 = "cifar10"
    CIFAR100 = "cifar100"
    #: One folder per class of JPEG or PNG files.
    IMAGE_FOLDER = "image-folder"
    #: WebDataset tar shards (``KEY.jpg|png`` and ``KEY.cls``).
    TAR_SHARDS = "tar-shards"
    #: safetensors files holding ``inputs`` and ``labels``.
    TENSORS = "tensors"


class NonFinitePolicy(enum.Enum):
    """What a NaN or infinite gradient does: fail the job, or skip the update."""

    FAIL = "fail"
    SKIP = "skip"


class GradientEncoding(enum.Enum):
    """How gradients travel: float32 (bit-exact) or bfloat16 (half the bytes)."""

    F32 = "f32"
    BF16 = "bf16"


# The names the enum-valued fields take besides the members: the job files'
# and the CLI's spellings (each enum's values; a test checks them against
# the Rust crates).

#: What ``JobSpec.method`` takes besides a :class:`Method`.
MethodName: TypeAlias = Literal["sgd", "sam", "rwp", "arwp", "m-rwp", "m-arwp"]
#: What ``JobSpec.model`` takes besides a :class:`Model`.
ModelName: TypeAlias = Literal["mlp", "small-cnn", "resnet18", "resnet50", "vgg16-bn", "wrn16-8", "wrn28-10", "torchscript"]
#: What ``JobSpec.dataset`` takes besides a :class:`Dataset`.
DatasetName: TypeAlias = Literal[
    "synthetic", "mnist", "cifar10", "cifar100", "image-folder", "tar-shards", "tensors"
]
#: What ``JobSpec.non_finite`` takes besides a :class:`NonFinitePolicy`.
NonFinitePolicyName: TypeAlias = Literal["fail", "skip"]
#: What ``JobSpec.gradient_encoding`` takes besides a :class:`GradientEncoding`.
GradientEncodingName: TypeAlias = Literal["f32", "bf16"]
#: What ``JobSpec.lr_schedule`` takes besides a schedule object: the names of
#: the schedules without parameters (``"step"`` needs its milestones and
#: gamma: ``StepLr(...)`` or ``{"kind": "step", "milestones": [..], "gamma": ..}``).
LrScheduleName: TypeAlias = Literal["constant", "cosine-per-update", "cosine-per-epoch"]
#: What ``JobSpec.sigma_schedule`` takes besides a schedule object
#: (``"cosine-increasing"`` with ``inc`` 10, as ``rwp submit`` without ``--sigma-inc``).
SigmaScheduleName: TypeAlias = Literal["constant", "cosine-increasing"]

@dataclass(frozen=True)
class ConstantLr:
    """The learning rate stays ``lr``."""


@dataclass(frozen=True)
class StepLr:
    """Multiply the rate by ``gamma`` at each milestone epoch."""

    milestones: tuple[int, ...]
    gamma: float


@dataclass(frozen=True)
class CosineLrPerUpdate:
    """Cosine annealing to 0, recomputed every update."""


@dataclass(frozen=True)
class CosineLrPerEpoch:
    """Cosine annealing to 0, recomputed once per epoch."""


LrSchedule: TypeAlias = ConstantLr | StepLr | CosineLrPerUpdate | CosineLrPerEpoch


@dataclass(frozen=True)
class ConstantSigma:
    """σ stays ``sigma``."""


@dataclass(frozen=True)
class CosineIncreasingSigma:
    """σ_t = σ₀ · (1 + inc · (1 − cos(π t / T)) / 2)."""

    inc: float


SigmaSchedule: TypeAlias = ConstantSigma | CosineIncreasingSigma

#: What ``JobSpec.lr_schedule`` takes: a schedule, its name, or a job file's
#: table (``{"kind": "step", "milestones": [60, 120], "gamma": 0.2}``).
LrScheduleLike: TypeAlias = LrSchedule | LrScheduleName | Mapping[str, object]
#: What ``JobSpec.sigma_schedule`` takes: a schedule, its name, or a job
#: file's table (``{"kind": "cosine-increasing", "inc": 5.0}``).
SigmaScheduleLike: TypeAlias = SigmaSchedule | SigmaScheduleName | Mapping[str, object]


@dataclass(frozen=True)
class ModelFile:
    """A TorchScript file stored on the server, named by its content."""

    sha256: str
    size_bytes: int


def _reference_sigma(method: Method) -> float:
    return {Method.RWP: 0.01, Method.M_RWP: 0.01, Method.M_ARWP: 0.015, Method.ARWP: 0.001}.get(method, 0.0)


def _reference_sigma_schedule(method: Method) -> SigmaSchedule:
    return CosineIncreasingSigma(inc=10.0) if method is Method.ARWP else ConstantSigma()


def _reference_lr_schedule(method: Method) -> LrSchedule:
    return CosineLrPerUpdate() if method is Method.ARWP else CosineLrPerEpoch()


@dataclass(frozen=True, kw_only=True)
class JobSpec:
    """Everything that decides a training run (``rwp.v1.JobSpec``).

    ``method``, ``model``, ``dataset``, ``non_finite`` and
    ``gradient_encoding`` take their enum's members or the names job files use
    (``method="m-arwp"``, ``model="mlp"``); ``lr_schedule`` and
    ``sigma_schedule`` take a schedule, its name (``"cosine-per-epoch"``) or a
    job file's table; the spec holds the members and schedules either way.

    Unset fields take the reference hyper-parameters (docs/algorithms.md), as the
    Rust SDK's ``JobSpecBuilder::new(method)`` and job files do: the small CNN
    on the built-in dataset, 30 epochs, batch 256, lr 0.1 with momentum 0.9,
    weight decay 1e-3, λ 0.5, η 0.1, β 0.99, ρ 0.05. ``sigma``,
    ``sigma_schedule`` and ``lr_schedule`` depend on the method; left as
    ``None`` they are filled in with the method's reference values when the
    spec is made, so a spec never holds ``None`` there afterwards.

    The server checks every range and names the first field out of it
    (:class:`~rwp_client.InvalidArgument`); the client converts types only.
    Specs are immutable: derive variants with :func:`dataclasses.replace`.
    """

    method: _Converted[Method | MethodName, Method] = _Converted(lambda n, v: _enum(n, v, Method))
    model: _Converted[Model | ModelName, Model] = _Converted(
        lambda n, v: _enum(n, v, Model), default=Model.SMALL_CNN
    )
    dataset: _Converted[Dataset | DatasetName, Dataset] = _Converted(
        lambda n, v: _enum(n, v, Dataset), default=Dataset.SYNTHETIC
    )
    #: Directory with the dataset's files, readable by every worker; ``None``
    #: for the built-in dataset.
    data_dir: str | None = None
    #: Root seed: initial weights, sample order, augmentation and noise.
    seed: int = 0
    epochs: int = 30
    #: Stop after this many updates (schedules still span all epochs).
    max_updates: int | None = None
    batch_size: int = 256
    #: Tasks per update for the clean (or SAM) batch.
    clean_shards: int = 1
    #: Tasks per update for the perturbed batch.
    perturbed_shards: int = 1
    #: An independent ε per perturbed shard instead of one shared ε.
    independent_noise: bool = False
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 1e-3
    lr_schedule: _Converted[LrScheduleLike | None, LrSchedule | None] = _Converted(
        lambda n, v: None if v is None else _lr_schedule(n, v), default=None
    )
    warmup_updates: int = 0
    #: Perturbation scale σ.
    sigma: float | None = None
    sigma_schedule: _Converted[SigmaScheduleLike | None, SigmaSchedule | None] = _Converted(
        lambda n, v: None if v is None else _sigma_schedule(n, v), default=None
    )
    #: Weight λ of the perturbed gradient (m-RWP, m-ARWP), in [0, 1]
    #: (``lambda`` on the wire and in job files).
    lambda_: float = 0.5
    #: Adaptive scale η (ARWP, m-ARWP).
    eta: float = 0.1
    #: History decay β (ARWP, m-ARWP), in [0, 1).
    beta: float = 0.99
    #: SAM radius ρ.
    rho: float = 0.05
    #: The references' CIFAR augmentation (crop, flip, Cutout).
    augment: bool = True
    non_finite: _Converted[NonFinitePolicy | NonFinitePolicyName, NonFinitePolicy] = _Converted(
        lambda n, v: _enum(n, v, NonFinitePolicy), default=NonFinitePolicy.FAIL
    )
    gradient_encoding: _Converted[GradientEncoding | GradientEncodingName, GradientEncoding] = _Converted(
        lambda n, v: _enum(n, v, GradientEncoding), default=GradientEncoding.F32
    )
    #: The uploaded TorchScript file of a ``Model.TORCHSCRIPT`` job
    #: (:meth:`Client.submit` sets it when given the module).
    model_file: ModelFile | None = None
    #: Fraction of the training set held out (seeded) as a validation set,
    #: in [0, 0.5); 0: none. Evaluations then report validation metrics.
    validation_fraction: float = 0.0
    #: Your own data (``dataset`` image-folder, tar-shards or tensors).
    data: DataSource | None = None

    def __post_init__(self) -> None:
        if self.sigma is None:
            object.__setattr__(self, "sigma", _reference_sigma(self.method))
        if self.sigma_schedule is None:
            object.__setattr__(self, "sigma_schedule", _reference_sigma_schedule(self.method))
        if self.lr_schedule is None:
            object.__setattr__(self, "lr_schedule", _reference_lr_schedule(self.method))

    # -- wire conversion ---------------------------------------------------

    def to_proto(self) -> spec_pb2.JobSpec:
        """The ``rwp.v1.JobSpec`` message; a value the wire cannot carry (a
        negative count, a string for a number) is refused naming its field."""
        p = spec_pb2.JobSpec()
        p.method = _METHOD_TO_WIRE[_enum("method", self.method, Method)]
        p.model = _MODEL_TO_WIRE[_enum("model", self.model, Model)]
        p.dataset = _DATASET_TO_WIRE[_enum("dataset", self.dataset, Dataset)]
        if self.data_dir is not None:
            data_dir = os.fspath(self.data_dir)
            if not data_dir:
                # An empty string is an unset field on the wire.
                raise InvalidArgument('data_dir = "": must not be empty when set (use None)')
            _assign(p, "data_dir", data_dir)
        for name in ("seed", "epochs", "batch_size", "clean_shards", "perturbed_shards", "warmup_updates"):
            _assign(p, name, _integer(name, getattr(self, name)))
        if self.max_updates is not None:
            _assign(p, "max_updates", _integer("max_updates", self.max_updates))
        for name in ("independent_noise", "nesterov", "augment"):
            _assign(p, name, _boolean(name, getattr(self, name)))
        for name in ("lr", "momentum", "weight_decay", "sigma", "eta", "beta", "rho", "validation_fraction"):
            _assign(p, name, _number(name, getattr(self, name)))
        _assign(p, "lambda", _number("lambda", self.lambda_))
        p.lr_schedule.CopyFrom(_lr_schedule_to_wire(self.lr_schedule))
        p.sigma_schedule.CopyFrom(_sigma_schedule_to_wire(self.sigma_schedule))
        p.non_finite = _NON_FINITE_TO_WIRE[_enum("non_finite", self.non_finite, NonFinitePolicy)]
        p.gradient_encoding = _ENCODING_TO_WIRE[
            _enum("gradient_encoding", self.gradient_encoding, GradientEncoding)
        ]
        if self.model_file is not None:
            p.model_file.sha256 = self.model_file.sha256
            _assign(p.model_file, "size_bytes", _integer("model_file.size_bytes", self.model_file.size_bytes))
        if self.data is not None:
            self.data._to_proto(p.data)
        return p

    @classmethod
    def from_proto(cls, p: spec_pb2.JobSpec) -> JobSpec:
        """The spec of a ``rwp.v1.JobSpec`` the server sent."""
        lr = p.lr_schedule
        lr_schedule: LrSchedule
        match lr.WhichOneof("kind"):
            case "constant":
                lr_schedule = ConstantLr()
            case "step":
                lr_schedule = StepLr(milestones=tuple(lr.step.milestones), gamma=lr.step.gamma)
            case "cosine_per_update":
                lr_schedule = CosineLrPerUpdate()
            case "cosine_per_epoch":
                lr_schedule = CosineLrPerEpoch()
            case _:
                raise DataLoss("the server sent a job spec without an lr_schedule")
        sigma_schedule: SigmaSchedule
        match p.sigma_schedule.WhichOneof("kind"):
            case "constant":
                sigma_schedule = ConstantSigma()
            case "cosine_increasing":
                sigma_schedule = CosineIncreasingSigma(inc=p.sigma_schedule.cosine_increasing.inc)
            case _:
                raise DataLoss("the server sent a job spec without a sigma_schedule")
        return cls(
            method=_from_wire("method", p.method, _METHOD_FROM_WIRE),
            model=_from_wire("model", p.model, _MODEL_FROM_WIRE),
            dataset=_from_wire("dataset", p.dataset, _DATASET_FROM_WIRE),
            data_dir=p.data_dir or None,
            seed=p.seed,
            epochs=p.epochs,
            max_updates=p.max_updates if p.HasField("max_updates") else None,
            batch_size=p.batch_size,
            clean_shards=p.clean_shards,
            perturbed_shards=p.perturbed_shards,
            independent_noise=p.independent_noise,
            lr=p.lr,
            momentum=p.momentum,
            nesterov=p.nesterov,
            weight_decay=p.weight_decay,
            lr_schedule=lr_schedule,
            warmup_updates=p.warmup_updates,
            sigma=p.sigma,
            sigma_schedule=sigma_schedule,
            lambda_=float(getattr(p, "lambda")),
            eta=p.eta,
            beta=p.beta,
            rho=p.rho,
            augment=p.augment,
            non_finite=_from_wire("non_finite", p.non_finite, _NON_FINITE_FROM_WIRE),
            gradient_encoding=_from_wire("gradient_encoding", p.gradient_encoding, _ENCODING_FROM_WIRE),
            model_file=(
                ModelFile(sha256=p.model_file.sha256, size_bytes=p.model_file.size_bytes)
                if p.HasField("model_file")
                else None
            ),
            validation_fraction=p.validation_fraction,
            data=DataSource._from_proto(p.data) if p.HasField("data") else None,
        )

    # -- job files -----------------------------------------------------------

    @classmethod
    def from_toml(cls, text: str, *, origin: str = "job file") -> tuple[str | None, JobSpec]:
        """Parses a job file as ``rwp submit JOBFILE.toml`` does: ``method`` is
        required, every other key is optional and defaults to the method's
        reference value, and an unknown key is refused by name. Returns the
        file's ``name`` (or ``None``) and the spec."""
        try:
            table = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise InvalidArgument(f"{origin}: {e}") from None
        return _from_table(table, origin)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> tuple[str | None, JobSpec]:
        """:meth:`from_toml` on the file at ``path``."""
        return cls.from_toml(_read_file(path, "job file"), origin=os.fspath(path))


def _read_file(path: str | os.PathLike[str], what: str) -> str:
    """The text of a job or sweep file, or InvalidArgument naming it."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as e:
        raise InvalidArgument(f"cannot read {what} {os.fspath(path)}: {e.strerror}") from None


# -- enum tables --------------------------------------------------------------

_METHOD_TO_WIRE: dict[Method, spec_pb2.Method.ValueType] = {
    Method.SGD: spec_pb2.METHOD_SGD,
    Method.SAM: spec_pb2.METHOD_SAM,
    Method.RWP: spec_pb2.METHOD_RWP,
    Method.ARWP: spec_pb2.METHOD_ARWP,
    Method.M_RWP: spec_pb2.METHOD_M_RWP,
    Method.M_ARWP: spec_pb2.METHOD_M_ARWP,
}
_MODEL_TO_WIRE: dict[Model, spec_pb2.Model.ValueType] = {
    Model.MLP: spec_pb2.MODEL_MLP,
    Model.SMALL_CNN: spec_pb2.MODEL_SMALL_CNN,
    Model.RESNET18: spec_pb2.MODEL_RESNET18,
    Model.RESNET50: spec_pb2.MODEL_RESNET50,
    Model.VGG16_BN: spec_pb2.MODEL_VGG16_BN,
    Model.WRN16_8: spec_pb2.MODEL_WRN16_8,
    Model.WRN28_10: spec_pb2.MODEL_WRN28_10,
    Model.TORCHSCRIPT: spec_pb2.MODEL_TORCHSCRIPT,
}
_DATASET_TO_WIRE: dict[Dataset, spec_pb2.Dataset.ValueType] = {
    Dataset.SYNTHETIC: spec_pb2.DATASET_SYNTHETIC,
    Dataset.MNIST: spec_pb2.DATASET_MNIST,
    Dataset.CIFAR10: spec_pb2.DATASET_CIFAR10,
    Dataset.CIFAR100: spec_pb2.DATASET_CIFAR100,
    Dataset.IMAGE_FOLDER: spec_pb2.DATASET_IMAGE_FOLDER,
    Dataset.TAR_SHARDS: spec_pb2.DATASET_TAR_SHARDS,
    Dataset.TENSORS: spec_pb2.DATASET_TENSORS,
}

_NON_FINITE_TO_WIRE: dict[NonFinitePolicy, spec_pb2.NonFinitePolicy.ValueType] = {
    NonFinitePolicy.FAIL: spec_pb2.NON_FINITE_POLICY_FAIL,
    NonFinitePolicy.SKIP: spec_pb2.NON_FINITE_POLICY_SKIP,
}
_ENCODING_TO_WIRE: dict[GradientEncoding, spec_pb2.GradientEncoding.ValueType] = {
    GradientEncoding.F32: spec_pb2.GRADIENT_ENCODING_F32,
    GradientEncoding.BF16: spec_pb2.GRADIENT_ENCODING_BF16,
}

_METHOD_FROM_WIRE = _invert(_METHOD_TO_WIRE)
_MODEL_FROM_WIRE = _invert(_MODEL_TO_WIRE)
_DATASET_FROM_WIRE = _invert(_DATASET_TO_WIRE)
# Unspecified means the default on the wire for these two.
_NON_FINITE_FROM_WIRE = {spec_pb2.NON_FINITE_POLICY_UNSPECIFIED: NonFinitePolicy.FAIL} | _invert(
    _NON_FINITE_TO_WIRE
)
_ENCODING_FROM_WIRE = {spec_pb2.GRADIENT_ENCODING_UNSPECIFIED: GradientEncoding.F32} | _invert(_ENCODING_TO_WIRE)


# -- field conversion -------------------------------------------------------


def _lr_schedule_to_wire(schedule: LrSchedule | None) -> spec_pb2.LrSchedule:
    p = spec_pb2.LrSchedule()
    match schedule:
        case ConstantLr():
            p.constant.SetInParent()
        case StepLr(milestones=milestones, gamma=gamma):
            for m in milestones:
                _integer("lr_schedule.milestones", m)
            try:
                p.step.milestones.extend(milestones)
            except (ValueError, TypeError) as e:
                raise InvalidArgument(f"lr_schedule.milestones = {list(milestones)!r}: {e}") from None
            p.step.gamma = _number("lr_schedule.gamma", gamma)
        case CosineLrPerUpdate():
            p.cosine_per_update.SetInParent()
        case CosineLrPerEpoch():
            p.cosine_per_epoch.SetInParent()
        case _:
            raise InvalidArgument(
                f"lr_schedule = {schedule!r}: must be ConstantLr, StepLr, CosineLrPerUpdate or CosineLrPerEpoch"
            )
    return p


def _sigma_schedule_to_wire(schedule: SigmaSchedule | None) -> spec_pb2.SigmaSchedule:
    p = spec_pb2.SigmaSchedule()
    match schedule:
        case ConstantSigma():
            p.constant.SetInParent()
        case CosineIncreasingSigma(inc=inc):
            p.cosine_increasing.inc = _number("sigma_schedule.inc", inc)
        case _:
            raise InvalidArgument(
                f"sigma_schedule = {schedule!r}: must be ConstantSigma or CosineIncreasingSigma"
            )
    return p


# -- job files --------------------------------------------------------------

# How a job file's value is read: (key, value) -> the spec's value.
_Reader = Callable[[str, object], object]


# The schedules a name alone makes (lr's "step" needs its parameters; σ's
# "cosine-increasing" takes inc 10, as `rwp submit` without --sigma-inc).
_LR_SCHEDULES_BY_NAME: dict[str, LrSchedule] = {
    "constant": ConstantLr(),
    "cosine-per-update": CosineLrPerUpdate(),
    "cosine-per-epoch": CosineLrPerEpoch(),
}
_SIGMA_SCHEDULES_BY_NAME: dict[str, SigmaSchedule] = {
    "constant": ConstantSigma(),
    "cosine-increasing": CosineIncreasingSigma(inc=10.0),
}


def _schedule_table(name: str, value: object) -> dict[str, object]:
    if not isinstance(value, dict) or not isinstance(value.get("kind"), str):
        raise InvalidArgument(f'{name} = {value!r}: must be a table with a "kind", e.g. {{ kind = "constant" }}')
    return value


def _read_lr_schedule(name: str, value: object) -> LrSchedule:
    table = _schedule_table(name, value)
    kind = table["kind"]
    allowed: set[str] = {"kind"}
    schedule: LrSchedule
    if kind in _LR_SCHEDULES_BY_NAME:
        schedule = _LR_SCHEDULES_BY_NAME[kind]
    elif kind == "step":
        allowed |= {"milestones", "gamma"}
        milestones = table.get("milestones")
        if not isinstance(milestones, list):
            raise InvalidArgument(f"{name}.milestones: must be a list of epochs for kind = \"step\"")
        if "gamma" not in table:
            raise InvalidArgument(f'{name}.gamma: required for kind = "step"')
        schedule = StepLr(
            milestones=tuple(_integer(f"{name}.milestones", m) for m in milestones),
            gamma=_number(f"{name}.gamma", table["gamma"]),
        )
    else:
        raise InvalidArgument(
            f"{name}.kind = {kind!r}: must be one of 'constant', 'step', 'cosine-per-update', 'cosine-per-epoch'"
        )
    _no_unknown_keys(name, table, allowed)
    return schedule


def _read_sigma_schedule(name: str, value: object) -> SigmaSchedule:
    table = _schedule_table(name, value)
    kind = table["kind"]
    if kind == "constant":
        _no_unknown_keys(name, table, {"kind"})
        return ConstantSigma()
    if kind == "cosine-increasing":
        _no_unknown_keys(name, table, {"kind", "inc"})
        if "inc" not in table:
            raise InvalidArgument(f'{name}.inc: required for kind = "cosine-increasing"')
        return CosineIncreasingSigma(inc=_number(f"{name}.inc", table["inc"]))
    raise InvalidArgument(f"{name}.kind = {kind!r}: must be one of 'constant', 'cosine-increasing'")


def _lr_schedule(name: str, value: object) -> LrSchedule:
    """An lr schedule from a schedule, its name, or a job file's table."""
    if isinstance(value, (ConstantLr, StepLr, CosineLrPerUpdate, CosineLrPerEpoch)):
        return value
    if isinstance(value, Mapping):
        return _read_lr_schedule(name, dict(value))
    if isinstance(value, str) and value in _LR_SCHEDULES_BY_NAME:
        return _LR_SCHEDULES_BY_NAME[value]
    if value == "step":
        raise InvalidArgument(
            f"{name} = 'step': a step schedule needs its milestones and gamma: "
            'StepLr(milestones=(60, 120), gamma=0.2) or {"kind": "step", "milestones": [60, 120], "gamma": 0.2}'
        )
    names = ", ".join(repr(n) for n in get_args(LrScheduleName))
    raise InvalidArgument(
        f"{name} = {value!r}: must be one of {names}, a ConstantLr, StepLr, CosineLrPerUpdate or "
        'CosineLrPerEpoch, or a job file\'s table such as {"kind": "step", "milestones": [60, 120], "gamma": 0.2}'
    )


def _sigma_schedule(name: str, value: object) -> SigmaSchedule:
    """A sigma schedule from a schedule, its name, or a job file's table."""
    if isinstance(value, (ConstantSigma, CosineIncreasingSigma)):
        return value
    if isinstance(value, Mapping):
        return _read_sigma_schedule(name, dict(value))
    if isinstance(value, str) and value in _SIGMA_SCHEDULES_BY_NAME:
        return _SIGMA_SCHEDULES_BY_NAME[value]
    names = ", ".join(repr(n) for n in get_args(SigmaScheduleName))
    raise InvalidArgument(
        f"{name} = {value!r}: must be one of {names}, a ConstantSigma or CosineIncreasingSigma, "
        'or a job file\'s table such as {"kind": "cosine-increasing", "inc": 5.0}'
    )


# Every key of a job file (but `name`): the spec field it sets and its reader.
_JOB_FILE_KEYS: dict[str, tuple[str, _Reader]] = {
    "method": ("method", lambda n, v: _enum(n, v, Method)),
    "model": ("model", lambda n, v: _enum(n, v, Model)),
    "dataset": ("dataset", lambda n, v: _enum(n, v, Dataset)),
    "data_dir": ("data_dir", _string),
    "seed": ("seed", _integer),
    "epochs": ("epochs", _integer),
    "max_updates": ("max_updates", _integer),
    "batch_size": ("batch_size", _integer),
    "clean_shards": ("clean_shards", _integer),
    "perturbed_shards": ("perturbed_shards", _integer),
    "independent_noise": ("independent_noise", _boolean),
    "lr": ("lr", _number),
    "momentum": ("momentum", _number),
    "nesterov": ("nesterov", _boolean),
    "weight_decay": ("weight_decay", _number),
    "lr_schedule": ("lr_schedule", _read_lr_schedule),
    "warmup_updates": ("warmup_updates", _integer),
    "sigma": ("sigma", _number),
    "sigma_schedule": ("sigma_schedule", _read_sigma_schedule),
    "lambda": ("lambda_", _number),
    "eta": ("eta", _number),
    "beta": ("beta", _number),
    "rho": ("rho", _number),
    "augment": ("augment", _boolean),
    "non_finite": ("non_finite", lambda n, v: _enum(n, v, NonFinitePolicy)),
    "gradient_encoding": ("gradient_encoding", lambda n, v: _enum(n, v, GradientEncoding)),
    "validation_fraction": ("validation_fraction", _number),
    "data": ("data", lambda n, v: _read_data(n, v)),
}

def _from_table(table: Mapping[str, object], origin: str) -> tuple[str | None, JobSpec]:
    name: str | None = None
    values: dict[str, Any] = {}
    for key, value in table.items():
        if key == "name":
            name = _string("name", value)
            continue
        if key not in _JOB_FILE_KEYS:
            raise InvalidArgument(f"{origin}: unknown key {key!r}")
        attribute, read = _JOB_FILE_KEYS[key]
        try:
            values[attribute] = read(key, value)
        except InvalidArgument as e:
            raise InvalidArgument(f"{origin}: {e.message}") from None
    if "method" not in values:
        raise InvalidArgument(f"{origin}: `method` is required")
    if values.get("data_dir") == "":
        raise InvalidArgument(f'{origin}: data_dir = "": must not be empty when set')
    # Tensors are used as stored: the reference's augmentation is for images.
    if values.get("dataset") is Dataset.TENSORS and "augment" not in values:
        values["augment"] = False
    return name, JobSpec(**values)


__all__ = [
    "BadSamples",
    "BadSamplesName",
    "DataSource",
    "DataSummary",
    "Transforms",
    "TransformsName",
    "ConstantLr",
    "ConstantSigma",
    "CosineIncreasingSigma",
    "CosineLrPerEpoch",
    "CosineLrPerUpdate",
    "Dataset",
    "DatasetName",
    "GradientEncoding",
    "GradientEncodingName",
    "JobSpec",
    "LrSchedule",
    "LrScheduleLike",
    "LrScheduleName",
    "Method",
    "MethodName",
    "Model",
    "ModelFile",
    "ModelName",
    "NonFinitePolicy",
    "NonFinitePolicyName",
    "SigmaSchedule",
    "SigmaScheduleLike",
    "SigmaScheduleName",
    "StepLr",
]
