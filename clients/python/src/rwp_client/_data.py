"""A job's own data (``JobSpec.data``): where its splits are, how they are
read, and what inspecting them found; their wire conversion and the
``[data]`` table of job files."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, TypeAlias

from ._convert import _Converted, _assign, _enum, _from_wire, _integer, _invert, _no_unknown_keys, _number, _string
from ._errors import InvalidArgument
from ._proto.rwp.v1 import spec_pb2


class Transforms(enum.Enum):
    """How images become model inputs (docs/data.md)."""

    IMAGENET = "imagenet"
    CIFAR = "cifar"
    RESIZE = "resize"


class BadSamples(enum.Enum):
    """What a sample that cannot be read or decoded does: fail the task, or be left out."""

    FAIL = "fail"
    SKIP = "skip"


#: What ``DataSource.transforms`` takes besides a :class:`Transforms`.
TransformsName: TypeAlias = Literal["imagenet", "cifar", "resize"]
#: What ``DataSource.bad_samples`` takes besides a :class:`BadSamples`.
BadSamplesName: TypeAlias = Literal["fail", "skip"]


@dataclass(frozen=True, kw_only=True)
class DataSummary:
    """What a worker found inspecting a job's own data when it was
    submitted; the job is planned from it. Set by the server."""

    classes: int
    #: Samples at ``train``, before ``validation_fraction`` holds any out.
    train: int
    validation: int
    test: int
    #: A model input's shape (``(3, image_size, image_size)`` for images).
    shape: tuple[int, ...]
    #: SHA-256 of the sample list: every worker checks its own against it.
    digest: str

    @classmethod
    def _from_proto(cls, s: spec_pb2.DataSummary) -> DataSummary:
        return cls(
            classes=s.classes, train=s.train, validation=s.validation, test=s.test, shape=tuple(s.shape), digest=s.digest
        )


@dataclass(frozen=True, kw_only=True)
class DataSource:
    """Where a job's own data is and how it is read (a job file's
    ``[data]`` table; docs/data.md). Locations are paths every worker can
    read, or object-store URLs; tar shards and tensor files may be named by
    one brace range (``"train-{0000..0127}.tar"``)."""

    train: str
    test: str
    #: Validation samples kept apart (instead of ``validation_fraction``).
    validation: str | None = None
    #: The side of the square images the model sees.
    image_size: int = 224
    transforms: _Converted[Transforms | TransformsName, Transforms] = _Converted(
        lambda n, v: _enum(n, v, Transforms), default=Transforms.IMAGENET
    )
    #: Per-channel mean and std; ImageNet's for images when unset.
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    bad_samples: _Converted[BadSamples | BadSamplesName, BadSamples] = _Converted(
        lambda n, v: _enum(n, v, BadSamples), default=BadSamples.FAIL
    )
    #: Filled in by the server; a spec submitted with one is refused.
    summary: DataSummary | None = None

    def _to_proto(self, p: spec_pb2.DataSource) -> None:
        p.train = _string("data.train", self.train)
        p.test = _string("data.test", self.test)
        if self.validation is not None:
            p.validation = _string("data.validation", self.validation)
        _assign(p, "image_size", _integer("data.image_size", self.image_size))
        p.transforms = _TRANSFORMS_TO_WIRE[_enum("data.transforms", self.transforms, Transforms)]
        p.bad_samples = _BAD_SAMPLES_TO_WIRE[_enum("data.bad_samples", self.bad_samples, BadSamples)]
        for name, values in (("mean", self.mean), ("std", self.std)):
            if values is not None:
                getattr(p, name).extend(_number(f"data.{name}", v) for v in values)
        if self.summary is not None:
            s = self.summary
            p.summary.classes = s.classes
            p.summary.train, p.summary.validation, p.summary.test = s.train, s.validation, s.test
            p.summary.shape.extend(s.shape)
            p.summary.digest = s.digest

    @classmethod
    def _from_proto(cls, p: spec_pb2.DataSource) -> DataSource:
        summary = None
        if p.HasField("summary"):
            summary = DataSummary._from_proto(p.summary)
        return cls(
            train=p.train,
            test=p.test,
            validation=p.validation if p.HasField("validation") else None,
            image_size=p.image_size or 224,
            transforms=_from_wire("data.transforms", p.transforms, _TRANSFORMS_FROM_WIRE),
            mean=tuple(p.mean) or None,
            std=tuple(p.std) or None,
            bad_samples=_from_wire("data.bad_samples", p.bad_samples, _BAD_SAMPLES_FROM_WIRE),
            summary=summary,
        )


_TRANSFORMS_TO_WIRE: dict[Transforms, spec_pb2.Transforms.ValueType] = {
    Transforms.IMAGENET: spec_pb2.TRANSFORMS_IMAGENET,
    Transforms.CIFAR: spec_pb2.TRANSFORMS_CIFAR,
    Transforms.RESIZE: spec_pb2.TRANSFORMS_RESIZE,
}
_BAD_SAMPLES_TO_WIRE: dict[BadSamples, spec_pb2.BadSamples.ValueType] = {
    BadSamples.FAIL: spec_pb2.BAD_SAMPLES_FAIL,
    BadSamples.SKIP: spec_pb2.BAD_SAMPLES_SKIP,
}
_TRANSFORMS_FROM_WIRE = {spec_pb2.TRANSFORMS_UNSPECIFIED: Transforms.IMAGENET} | _invert(_TRANSFORMS_TO_WIRE)
_BAD_SAMPLES_FROM_WIRE = {spec_pb2.BAD_SAMPLES_UNSPECIFIED: BadSamples.FAIL} | _invert(_BAD_SAMPLES_TO_WIRE)

# The keys of a job file's [data] table.
_DATA_KEYS = {"train", "test", "validation", "image_size", "transforms", "mean", "std", "bad_samples"}


def _read_data(name: str, value: object) -> DataSource:
    if not isinstance(value, Mapping):
        raise InvalidArgument(f"{name} must be a table ([data]) with train and test")
    _no_unknown_keys(name, value, _DATA_KEYS)
    for key in ("train", "test"):
        if key not in value:
            raise InvalidArgument(f"{name}.{key} is required")

    def numbers(key: str) -> tuple[float, ...] | None:
        values = value.get(key)
        if values is None:
            return None
        if not isinstance(values, list):
            raise InvalidArgument(f"{name}.{key} must be a list of numbers, one per channel")
        return tuple(_number(f"{name}.{key}", v) for v in values)

    return DataSource(
        train=_string(f"{name}.train", value["train"]),
        test=_string(f"{name}.test", value["test"]),
        validation=_string(f"{name}.validation", value["validation"]) if "validation" in value else None,
        image_size=_integer(f"{name}.image_size", value.get("image_size", 224)),
        transforms=_enum(f"{name}.transforms", value.get("transforms", "imagenet"), Transforms),
        mean=numbers("mean"),
        std=numbers("std"),
        bad_samples=_enum(f"{name}.bad_samples", value.get("bad_samples", "fail"), BadSamples),
    )
