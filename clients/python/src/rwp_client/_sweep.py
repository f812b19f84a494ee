"""Sweep specs: a base :class:`JobSpec`, a search space over its fields,
concurrency and early stopping (``rwp.v1.SweepSpec``), their wire conversion,
and sweep files (TOML, as ``rwp sweep submit`` reads them)."""

from __future__ import annotations

import enum
import os
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal, TypeAlias

from ._errors import DataLoss, InvalidArgument
from ._proto.rwp.v1 import jobs_pb2
from ._convert import _Converted, _enum, _from_wire, _integer, _invert, _no_unknown_keys, _number, _string
from ._spec import JobSpec, _from_table, _read_file

#: A value of a searched field: a number (integer fields take whole numbers),
#: a name (``"sgd"``, ``"mlp"``) or a flag. Numbers come back from the server
#: as floats.
ParamValue: TypeAlias = float | int | str | bool


class SearchMode(enum.Enum):
    """How the trials are generated; the values are the sweep-file names."""

    #: Every combination of every parameter's ``values`` (first parameter
    #: slowest).
    GRID = "grid"
    #: ``n_trials`` draws, each parameter from its distribution, from ``seed``.
    RANDOM = "random"


class Distribution(enum.Enum):
    """The distribution a random search draws a parameter from."""

    #: Uniform over ``values`` (the default when ``values`` are given).
    CHOICE = "choice"
    #: Uniform in ``[low, high]``.
    UNIFORM = "uniform"
    #: ``exp`` of a uniform in ``[ln low, ln high]`` (σ, learning rates).
    LOG_UNIFORM = "log-uniform"
    #: A uniform whole number in ``low..=high``.
    INT_UNIFORM = "int-uniform"


#: What ``Search.mode`` takes besides a :class:`SearchMode` (the sweep files' names).
SearchModeName: TypeAlias = Literal["grid", "random"]
#: What ``SearchParam.distribution`` takes besides a :class:`Distribution`.
DistributionName: TypeAlias = Literal["choice", "uniform", "log-uniform", "int-uniform"]


@dataclass(frozen=True, kw_only=True)
class SearchParam:
    """One searched field, by its job-file name (``sigma``, ``lr``,
    ``lambda``, ``method``, or a nested one such as ``lr_schedule.gamma``).

    Grid search: ``values`` are tried. Random search: a ``distribution``
    (a :class:`Distribution` or its sweep-file name, ``"log-uniform"``) over
    ``low``/``high``, or a choice among ``values``."""

    field: str
    values: tuple[ParamValue, ...] = ()
    distribution: _Converted[Distribution | DistributionName | None, Distribution | None] = _Converted(
        lambda n, v: None if v is None else _enum(n, v, Distribution), default=None
    )
    low: float | None = None
    high: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.values, tuple):
            if isinstance(self.values, (str, bytes)) or not isinstance(self.values, Iterable):
                raise InvalidArgument(f"{self.field}: values = {self.values!r}: must be a list of values")
            object.__setattr__(self, "values", tuple(self.values))

    @classmethod
    def grid(cls, field: str, values: Iterable[ParamValue]) -> SearchParam:
        """A grid parameter: every one of ``values`` is tried."""
        return cls(field=field, values=tuple(values))

    def to_proto(self) -> jobs_pb2.SearchParam:
        p = jobs_pb2.SearchParam(field=_string("search.param.field", self.field))
        for value in self.values:
            p.values.append(_param_value_to_wire(self.field, value))
        if self.distribution is not None:
            p.distribution = _DISTRIBUTION_TO_WIRE[
                _enum(f"{self.field}: distribution", self.distribution, Distribution)
            ]
        if self.low is not None:
            p.low = _number(f"{self.field}: low", self.low)
        if self.high is not None:
            p.high = _number(f"{self.field}: high", self.high)
        return p

    @classmethod
    def from_proto(cls, p: jobs_pb2.SearchParam) -> SearchParam:
        distribution = (
            None
            if p.distribution == jobs_pb2.DISTRIBUTION_UNSPECIFIED
            else _from_wire("distribution", p.distribution, _DISTRIBUTION_FROM_WIRE)
        )
        return cls(
            field=p.field,
            values=tuple(param_value_from_proto(v) for v in p.values),
            distribution=distribution,
            low=p.low if p.HasField("low") else None,
            high=p.high if p.HasField("high") else None,
        )


@dataclass(frozen=True, kw_only=True)
class Search:
    """The search space and how it is explored (``mode``: a
    :class:`SearchMode` or its sweep-file name, ``"random"``)."""

    params: tuple[SearchParam, ...]
    mode: _Converted[SearchMode | SearchModeName, SearchMode] = _Converted(
        lambda n, v: _enum(n, v, SearchMode), default=SearchMode.GRID
    )
    #: Random search: how many trials.
    n_trials: int | None = None
    #: Random search: the seed of the draws (the same seed, the same trials).
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.params, tuple):
            object.__setattr__(self, "params", tuple(self.params))


@dataclass(frozen=True, kw_only=True)
class EarlyStopping:
    """Asynchronous successive halving on validation accuracy."""

    #: Epochs at which a trial is judged, strictly increasing.
    rungs: tuple[int, ...]
    #: η > 1: a trial reaching a rung goes on only if in the top 1/η there.
    reduction_factor: float = 3.0
    #: Stop at any rung a trial whose validation accuracy is below this.
    min_validation_accuracy: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.rungs, tuple):
            object.__setattr__(self, "rungs", tuple(self.rungs))


@dataclass(frozen=True)
class SweepSpec:
    """A sweep as submitted (``rwp.v1.SweepSpec``): what every trial starts
    from (``base``, whose ``validation_fraction`` must be > 0: trials are
    ranked on validation accuracy), the search, how many trials run at once,
    and optional early stopping.

    The server generates and checks every trial and names the first problem
    (:class:`~rwp_client.InvalidArgument`); the client converts types only.
    """

    base: JobSpec
    search: Search
    #: Trials running at once.
    concurrency: int = 1
    #: ``None``: every trial runs to the end.
    early_stopping: EarlyStopping | None = None

    # -- wire conversion ---------------------------------------------------

    def to_proto(self) -> jobs_pb2.SweepSpec:
        if not isinstance(self.base, JobSpec):
            raise InvalidArgument(f"base: must be a rwp_client.JobSpec, got {type(self.base).__name__}")
        if not isinstance(self.search, Search):
            raise InvalidArgument(f"search: must be a rwp_client.Search, got {type(self.search).__name__}")
        p = jobs_pb2.SweepSpec()
        p.base.CopyFrom(self.base.to_proto())
        search = self.search
        p.mode = _MODE_TO_WIRE[_enum("search.mode", search.mode, SearchMode)]
        if search.n_trials is not None:
            _set(p, "n_trials", _integer("search.n_trials", search.n_trials), "search.n_trials")
        _set(p, "search_seed", _integer("search.seed", search.seed), "search.seed")
        for param in search.params:
            if not isinstance(param, SearchParam):
                raise InvalidArgument(f"search.params: {param!r} is not a rwp_client.SearchParam")
            p.params.append(param.to_proto())
        _set(p, "concurrency", _integer("concurrency", self.concurrency), "concurrency")
        if self.early_stopping is not None:
            e = self.early_stopping
            for rung in e.rungs:
                _integer("early_stopping.rungs", rung)
            try:
                p.early_stopping.rungs.extend(e.rungs)
            except (ValueError, TypeError) as err:
                raise InvalidArgument(f"early_stopping.rungs = {list(e.rungs)!r}: {err}") from None
            p.early_stopping.reduction_factor = _number("early_stopping.reduction_factor", e.reduction_factor)
            if e.min_validation_accuracy is not None:
                p.early_stopping.min_validation_accuracy = _number(
                    "early_stopping.min_validation_accuracy", e.min_validation_accuracy
                )
        return p

    @classmethod
    def from_proto(cls, p: jobs_pb2.SweepSpec) -> SweepSpec:
        if not p.HasField("base"):
            raise DataLoss("the server sent a sweep spec without a base job spec")
        mode = SearchMode.GRID if p.mode == jobs_pb2.SEARCH_MODE_UNSPECIFIED else _from_wire(
            "search mode", p.mode, _MODE_FROM_WIRE
        )
        early_stopping = None
        if p.HasField("early_stopping"):
            e = p.early_stopping
            early_stopping = EarlyStopping(
                rungs=tuple(e.rungs),
                reduction_factor=e.reduction_factor,
                min_validation_accuracy=(
                    e.min_validation_accuracy if e.HasField("min_validation_accuracy") else None
                ),
            )
        return cls(
            base=JobSpec.from_proto(p.base),
            search=Search(
                params=tuple(SearchParam.from_proto(q) for q in p.params),
                mode=mode,
                n_trials=p.n_trials if p.HasField("n_trials") else None,
                seed=p.search_seed,
            ),
            concurrency=p.concurrency,
            early_stopping=early_stopping,
        )

    # -- sweep files ---------------------------------------------------------

    @classmethod
    def from_toml(cls, text: str, *, origin: str = "sweep file") -> tuple[str | None, SweepSpec]:
        """Parses a sweep file as ``rwp sweep submit SWEEP.toml`` does: the
        keys of a job file (the base of every trial; ``method`` required),
        ``concurrency`` (default 1), a ``[search]`` table with
        ``[[search.param]]`` entries, and an optional ``[early_stopping]``
        table. An unknown key is refused by name. Returns the file's ``name``
        (or ``None``) and the spec."""
        try:
            table = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise InvalidArgument(f"{origin}: {e}") from None
        try:
            return _sweep_from_table(table, origin)
        except InvalidArgument as e:
            if e.message.startswith(f"{origin}: "):
                raise
            raise InvalidArgument(f"{origin}: {e.message}") from None

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> tuple[str | None, SweepSpec]:
        """:meth:`from_toml` on the file at ``path``."""
        return cls.from_toml(_read_file(path, "sweep file"), origin=os.fspath(path))


# -- wire tables and values ----------------------------------------------------

_MODE_TO_WIRE: dict[SearchMode, jobs_pb2.SearchMode.ValueType] = {
    SearchMode.GRID: jobs_pb2.SEARCH_MODE_GRID,
    SearchMode.RANDOM: jobs_pb2.SEARCH_MODE_RANDOM,
}
_MODE_FROM_WIRE = _invert(_MODE_TO_WIRE)
_DISTRIBUTION_TO_WIRE: dict[Distribution, jobs_pb2.Distribution.ValueType] = {
    Distribution.CHOICE: jobs_pb2.DISTRIBUTION_CHOICE,
    Distribution.UNIFORM: jobs_pb2.DISTRIBUTION_UNIFORM,
    Distribution.LOG_UNIFORM: jobs_pb2.DISTRIBUTION_LOG_UNIFORM,
    Distribution.INT_UNIFORM: jobs_pb2.DISTRIBUTION_INT_UNIFORM,
}
_DISTRIBUTION_FROM_WIRE = _invert(_DISTRIBUTION_TO_WIRE)


def _set(message: jobs_pb2.SweepSpec, name: str, value: int, label: str) -> None:
    try:
        setattr(message, name, value)
    except (ValueError, TypeError) as e:
        raise InvalidArgument(f"{label} = {value!r}: {e}") from None


def _param_value_to_wire(field_name: str, value: object) -> jobs_pb2.ParamValue:
    if isinstance(value, bool):
        return jobs_pb2.ParamValue(flag=value)
    if isinstance(value, (int, float)):
        return jobs_pb2.ParamValue(number=float(value))
    if isinstance(value, str):
        return jobs_pb2.ParamValue(text=value)
    raise InvalidArgument(f"{field_name}: value {value!r} must be a number, a string or true/false")


def param_value_from_proto(v: jobs_pb2.ParamValue) -> ParamValue:
    match v.WhichOneof("value"):
        case "number":
            return v.number
        case "text":
            return v.text
        case "flag":
            return v.flag
        case _:
            raise DataLoss("the server sent an empty parameter value")


# -- sweep files ----------------------------------------------------------------

_SEARCH_KEYS = {"mode", "n_trials", "seed", "param"}
_PARAM_KEYS = {"field", "values", "distribution", "low", "high"}
_EARLY_STOPPING_KEYS = {"rungs", "reduction_factor", "min_validation_accuracy"}


def _table(name: str, value: object) -> Mapping[str, object]:
    if not isinstance(value, dict):
        raise InvalidArgument(f"{name}: must be a table")
    return value


def _list(name: str, value: object) -> list[object]:
    if not isinstance(value, list):
        raise InvalidArgument(f"{name} = {value!r}: must be a list")
    return value


def _read_param(i: int, value: object) -> SearchParam:
    name = f"search.param[{i}]"
    table = _table(name, value)
    _no_unknown_keys(name, table, _PARAM_KEYS)
    if "field" not in table:
        raise InvalidArgument(f"{name}: `field` is required")
    field_name = _string(f"{name}.field", table["field"])
    values: list[ParamValue] = []
    for v in _list(f"{field_name}: values", table.get("values", [])):
        if not isinstance(v, (bool, int, float, str)):
            raise InvalidArgument(f"{field_name}: value {v!r} must be a number, a string or true/false")
        values.append(v)
    return SearchParam(
        field=field_name,
        values=tuple(values),
        distribution=(
            _enum(f"{field_name}: distribution", table["distribution"], Distribution)
            if "distribution" in table
            else None
        ),
        low=_number(f"{field_name}: low", table["low"]) if "low" in table else None,
        high=_number(f"{field_name}: high", table["high"]) if "high" in table else None,
    )


def _read_search(value: object) -> Search:
    table = _table("[search]", value)
    _no_unknown_keys("[search]", table, _SEARCH_KEYS)
    if "param" not in table:
        raise InvalidArgument("[search]: at least one [[search.param]] is required")
    params = tuple(_read_param(i, p) for i, p in enumerate(_list("[search] param", table["param"])))
    return Search(
        params=params,
        mode=_enum("[search] mode", table.get("mode", "grid"), SearchMode),
        n_trials=_integer("[search] n_trials", table["n_trials"]) if "n_trials" in table else None,
        seed=_integer("[search] seed", table.get("seed", 0)),
    )


def _read_early_stopping(value: object) -> EarlyStopping:
    table = _table("[early_stopping]", value)
    _no_unknown_keys("[early_stopping]", table, _EARLY_STOPPING_KEYS)
    if "rungs" not in table:
        raise InvalidArgument("[early_stopping]: `rungs` is required")
    return EarlyStopping(
        rungs=tuple(_integer("[early_stopping] rungs", r) for r in _list("[early_stopping] rungs", table["rungs"])),
        reduction_factor=_number("[early_stopping] reduction_factor", table.get("reduction_factor", 3.0)),
        min_validation_accuracy=(
            _number("[early_stopping] min_validation_accuracy", table["min_validation_accuracy"])
            if "min_validation_accuracy" in table
            else None
        ),
    )


def _sweep_from_table(table: Mapping[str, object], origin: str) -> tuple[str | None, SweepSpec]:
    rest = dict(table)
    concurrency = _integer("concurrency", rest.pop("concurrency", 1))
    if "search" not in rest:
        raise InvalidArgument("a [search] table with at least one [[search.param]] is required")
    search = _read_search(rest.pop("search"))
    early_stopping = _read_early_stopping(rest.pop("early_stopping")) if "early_stopping" in rest else None
    name, base = _from_table(rest, origin)
    return name, SweepSpec(base=base, search=search, concurrency=concurrency, early_stopping=early_stopping)


__all__ = [
    "Distribution",
    "DistributionName",
    "EarlyStopping",
    "ParamValue",
    "Search",
    "SearchMode",
    "SearchModeName",
    "SearchParam",
    "SweepSpec",
]
