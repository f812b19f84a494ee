"""Typed views of the job service's messages: jobs, metrics, watch events,
sweeps and their trials, data reports."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TypeAlias

from ._errors import DataLoss
from ._proto.rwp.v1 import jobs_pb2, spec_pb2
from ._spec import _DATASET_FROM_WIRE, Dataset, DataSummary, JobSpec
from ._sweep import ParamValue, SweepSpec, param_value_from_proto


class JobState(enum.Enum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    #: A due checkpoint could not be written; no work is handed out until a
    #: retry succeeds (``Job.error`` says why). Not terminal.
    PAUSED = "paused"
    #: Stopped early by its sweep's early-stopping rule (``Job.error`` says
    #: why); its metrics and weights are kept.
    STOPPED = "stopped"

    @property
    def terminal(self) -> bool:
        """Whether the job has ended (succeeded, failed, cancelled or stopped)."""
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, JobState.STOPPED)


_STATE_FROM_WIRE: dict[int, JobState] = {
    jobs_pb2.JOB_STATE_RUNNING: JobState.RUNNING,
    jobs_pb2.JOB_STATE_SUCCEEDED: JobState.SUCCEEDED,
    jobs_pb2.JOB_STATE_FAILED: JobState.FAILED,
    jobs_pb2.JOB_STATE_CANCELLED: JobState.CANCELLED,
    jobs_pb2.JOB_STATE_PAUSED: JobState.PAUSED,
    jobs_pb2.JOB_STATE_STOPPED: JobState.STOPPED,
}


@dataclass(frozen=True)
class StoredModel:
    """A model file uploaded to the server (:meth:`Client.list_models`)."""

    sha256: str
    size_bytes: int
    #: When its owner last uploaded it (Unix ms).
    uploaded_unix_ms: int
    #: The token that uploaded it; ``None`` on a server without authentication.
    owner: str | None

    @classmethod
    def from_proto(cls, m: jobs_pb2.StoredModel) -> StoredModel:
        return cls(
            sha256=m.sha256,
            size_bytes=m.size_bytes,
            uploaded_unix_ms=m.uploaded_unix_ms,
            owner=m.owner or None,
        )


@dataclass(frozen=True)
class LogEntry:
    """One entry of a job's event log (:meth:`Client.logs`)."""

    #: Its number in the job's log, from 1.
    seq: int
    time: datetime
    #: ``submitted``, ``resumed``, ``server-restarted``, ``leased``,
    #: ``lease-lapsed``, ``task-failed``, ``no-workers``, ``workers-back``,
    #: ``paused``, ``unpaused``, ``update-skipped``, ``sample-skipped``,
    #: ``evaluated``, ``succeeded``, ``failed``, ``cancelled`` or ``stopped``.
    kind: str
    #: The worker it involves (its name), if one.
    worker: str | None
    message: str

    @classmethod
    def from_proto(cls, e: jobs_pb2.JobLogEntry) -> LogEntry:
        return cls(
            seq=e.seq,
            time=_time(e.unix_ms),
            kind=e.kind,
            worker=e.worker or None,
            message=e.message,
        )


@dataclass(frozen=True)
class SplitReport:
    """One split of an inspected dataset."""

    #: ``data.train``, ``data.test`` or ``data.validation``.
    field: str
    location: str
    samples: int
    #: Image files, shards or tensor files read.
    files: int


@dataclass(frozen=True)
class UnreadableSample:
    """A sample that cannot be read or decoded, and why."""

    sample: str
    reason: str


@dataclass(frozen=True)
class DataReport:
    """What a worker found inspecting a job's own data
    (:meth:`Client.inspect_data`)."""

    kind: Dataset
    #: Class names, sorted: label ``i`` is ``class_names[i]``.
    class_names: list[str]
    splits: list[SplitReport]
    #: A model input's shape (images: as resized to ``image_size``).
    shape: tuple[int, ...]
    #: ``(height, width)`` of the first training image as stored, when decoded.
    first_image: tuple[int, int] | None
    #: Samples that cannot be read or decoded (checked only when decoded).
    unreadable: list[UnreadableSample]
    #: Whether every image was decoded (``False``: only listed).
    decoded: bool
    #: What a job on this data is planned from.
    summary: DataSummary

    @classmethod
    def from_proto(cls, r: spec_pb2.DataReport) -> DataReport:
        try:
            kind = _DATASET_FROM_WIRE[r.kind]
        except KeyError:
            raise DataLoss(f"the server sent a data report of an unknown kind ({r.kind})") from None
        if not r.HasField("summary") or len(r.first_image) not in (0, 2):
            raise DataLoss("the server sent a data report without its summary or with a malformed first image")
        first = tuple(r.first_image)
        return cls(
            kind=kind,
            class_names=list(r.class_names),
            splits=[SplitReport(s.field, s.location, s.samples, s.files) for s in r.splits],
            shape=tuple(r.shape),
            first_image=(first[0], first[1]) if first else None,
            unreadable=[UnreadableSample(u.sample, u.reason) for u in r.unreadable],
            decoded=r.decoded,
            summary=DataSummary._from_proto(r.summary),
        )


@dataclass(frozen=True)
class Worker:
    """A worker as the server sees it (:meth:`Client.workers`)."""

    id: str
    name: str
    device: str
    connected: bool
    registered: datetime
    last_seen: datetime
    #: The job and task it computes now (``None`` when idle, or when the
    #: caller may not see that job).
    job: str | None
    task: str | None
    #: Results it returned that were accepted.
    tasks_done: int

    @classmethod
    def from_proto(cls, w: jobs_pb2.WorkerStatus) -> Worker:
        return cls(
            id=w.id,
            name=w.name,
            device=w.device,
            connected=w.connected,
            registered=_time(w.registered_unix_ms),
            last_seen=_time(w.last_seen_unix_ms),
            job=w.job_id or None,
            task=w.task or None,
            tasks_done=w.tasks_done,
        )


@dataclass(frozen=True)
class StepMetrics:
    """One applied update (a watch yields every step, in order)."""

    #: The update's number, counting from 1 (as :attr:`Job.step` counts
    #: updates applied).
    step: int
    loss: float
    accuracy: float
    #: Mean loss at the perturbed weights, for methods that compute it.
    perturbed_loss: float | None
    lr: float
    sigma: float
    #: Seconds since the job started running, when the update was applied.
    wall_time_s: float
    #: Whether the update was skipped for non-finite gradients.
    skipped: bool

    @classmethod
    def from_proto(cls, m: jobs_pb2.StepMetrics) -> StepMetrics:
        return cls(
            step=m.step,
            loss=m.loss,
            accuracy=m.accuracy,
            perturbed_loss=m.perturbed_loss if m.HasField("perturbed_loss") else None,
            lr=m.lr,
            sigma=m.sigma,
            wall_time_s=m.wall_time_s,
            skipped=m.skipped,
        )


@dataclass(frozen=True)
class Evaluation:
    """An evaluation on the test split (and the validation split, when the
    job holds one out)."""

    #: Updates applied when evaluated.
    step: int
    epoch: int
    test_loss: float
    test_accuracy: float
    wall_time_s: float
    validation_loss: float | None = None
    validation_accuracy: float | None = None

    @classmethod
    def from_proto(cls, e: jobs_pb2.Evaluation) -> Evaluation:
        return cls(
            step=e.step,
            epoch=e.epoch,
            test_loss=e.test_loss,
            test_accuracy=e.test_accuracy,
            wall_time_s=e.wall_time_s,
            validation_loss=e.validation_loss if e.HasField("validation_loss") else None,
            validation_accuracy=e.validation_accuracy if e.HasField("validation_accuracy") else None,
        )


def _time(unix_ms: int) -> datetime:
    return datetime.fromtimestamp(unix_ms / 1000, tz=timezone.utc)


@dataclass(frozen=True)
class Job:
    """A job as the server reported it (a snapshot: :meth:`Client.get`
    fetches a fresh one)."""

    id: str
    name: str
    spec: JobSpec
    state: JobState
    #: Updates applied so far.
    step: int
    total_updates: int
    updates_per_epoch: int
    #: Why the job failed (or is paused), if it did.
    error: str | None
    created: datetime
    updated: datetime
    #: Updates skipped for non-finite gradients (``NonFinitePolicy.SKIP``).
    skipped_updates: int
    #: The latest update's metrics, if any.
    last_step: StepMetrics | None
    #: The latest test-split evaluation, if any.
    last_evaluation: Evaluation | None
    #: Name of the token that submitted the job; ``None`` on a server
    #: without authentication.
    owner: str | None
    #: The sweep the job is a trial of (see ``rwp sweep``) and its index
    #: there; ``None`` for a job submitted on its own.
    sweep_id: str | None = None
    sweep_trial: int | None = None
    #: Free-form labels given at submission (``submit(labels=...)``).
    labels: dict[str, str] = field(default_factory=dict)
    #: The job whose weights this one started from (``submit(init_from=...)``).
    init_from: str | None = None
    #: Why a running job makes no progress now, when something outside it
    #: holds it up ("no worker is connected ..."); the time is not counted
    #: as training time.
    waiting: str | None = None
    #: Times a sample of the job's own data was left out of a batch under
    #: ``BadSamples.SKIP`` (training and evaluation; a corrupt image read
    #: in three epochs counts three times).
    skipped_samples: int = 0
    #: The distinct samples left out, each with what is wrong with it (the
    #: first 100).
    skipped_sample_examples: list[str] = field(default_factory=list)

    @property
    def done(self) -> bool:
        """Whether the job has ended, however it ended."""
        return self.state.terminal

    @property
    def succeeded(self) -> bool:
        return self.state is JobState.SUCCEEDED

    @property
    def progress(self) -> float:
        """Fraction of the updates applied, in [0, 1]."""
        return self.step / self.total_updates if self.total_updates else 0.0

    @classmethod
    def from_proto(cls, j: jobs_pb2.Job) -> Job:
        if not j.HasField("spec"):
            raise DataLoss(f"the server sent job {j.id!r} without a spec")
        try:
            state = _STATE_FROM_WIRE[j.state]
        except KeyError:
            raise DataLoss(f"the server sent job {j.id!r} in an unknown state ({j.state})") from None
        return cls(
            id=j.id,
            name=j.name,
            spec=JobSpec.from_proto(j.spec),
            state=state,
            step=j.step,
            total_updates=j.total_updates,
            updates_per_epoch=j.updates_per_epoch,
            error=j.error or None,
            created=_time(j.created_unix_ms),
            updated=_time(j.updated_unix_ms),
            skipped_updates=j.skipped_updates,
            last_step=StepMetrics.from_proto(j.last_step) if j.HasField("last_step") else None,
            last_evaluation=Evaluation.from_proto(j.last_evaluation) if j.HasField("last_evaluation") else None,
            owner=j.owner or None,
            sweep_id=j.sweep_id or None,
            sweep_trial=j.sweep_trial if j.sweep_id else None,
            labels=dict(j.labels),
            init_from=j.init_from_job or None,
            waiting=j.waiting or None,
            skipped_samples=j.skipped_samples,
            skipped_sample_examples=list(j.skipped_sample_examples),
        )


#: What :meth:`Client.watch` yields: every applied update's metrics, the
#: evaluations, and the job's record when its state changes (the terminal
#: one last). Dispatch with ``match event: case StepMetrics(): ...``.
JobEvent: TypeAlias = StepMetrics | Evaluation | Job


def event_from_proto(e: jobs_pb2.JobEvent) -> JobEvent:
    match e.WhichOneof("event"):
        case "step":
            return StepMetrics.from_proto(e.step)
        case "evaluation":
            return Evaluation.from_proto(e.evaluation)
        case "job":
            return Job.from_proto(e.job)
        case _:
            raise DataLoss("the server sent an empty watch event")


@dataclass(frozen=True)
class Export:
    """A job's state written by :meth:`Client.export`."""

    #: Updates applied to the exported state.
    step: int
    #: Size of the safetensors file written.
    size_bytes: int


class SweepState(enum.Enum):
    RUNNING = "running"
    #: Every trial ended (succeeded, stopped early, or failed).
    SUCCEEDED = "succeeded"
    #: Running trials were cancelled; waiting ones never started.
    CANCELLED = "cancelled"
    #: The sweep could not go on (a trial could not be started); see
    #: ``Sweep.error``.
    FAILED = "failed"

    @property
    def terminal(self) -> bool:
        """Whether the sweep has ended (succeeded, cancelled or failed)."""
        return self is not SweepState.RUNNING


_SWEEP_STATE_FROM_WIRE: dict[int, SweepState] = {
    jobs_pb2.SWEEP_STATE_RUNNING: SweepState.RUNNING,
    jobs_pb2.SWEEP_STATE_SUCCEEDED: SweepState.SUCCEEDED,
    jobs_pb2.SWEEP_STATE_CANCELLED: SweepState.CANCELLED,
    jobs_pb2.SWEEP_STATE_FAILED: SweepState.FAILED,
}


@dataclass(frozen=True)
class Trial:
    """One trial of a sweep: its searched values and, once started, its job
    (an ordinary job whose ``sweep_id`` and ``sweep_trial`` are set)."""

    index: int
    #: The searched fields (job-file names) and this trial's values, in the
    #: search's order. Numbers come as floats.
    params: dict[str, ParamValue]
    #: ``None`` while the trial waits for a slot.
    job: Job | None

    @property
    def validation_accuracy(self) -> float | None:
        """The validation accuracy of the job's latest evaluation, if any."""
        if self.job is None or self.job.last_evaluation is None:
            return None
        return self.job.last_evaluation.validation_accuracy

    @classmethod
    def from_proto(cls, t: jobs_pb2.Trial) -> Trial:
        return cls(
            index=t.index,
            params={p.field: param_value_from_proto(p.value) for p in t.params},
            job=Job.from_proto(t.job) if t.HasField("job") else None,
        )


@dataclass(frozen=True)
class Sweep:
    """A sweep as the server reported it (a snapshot: :meth:`Client.get_sweep`
    fetches a fresh one)."""

    id: str
    name: str
    spec: SweepSpec
    state: SweepState
    #: Why the sweep failed, if it did.
    error: str | None
    created: datetime
    updated: datetime
    #: Name of the token that created the sweep; ``None`` on a server
    #: without authentication.
    owner: str | None
    trials: list[Trial]
    #: Index of the trial with the highest validation accuracy so far (never
    #: chosen by test accuracy), if any trial has one.
    best_trial: int | None

    @property
    def done(self) -> bool:
        """Whether the sweep has ended, however it ended."""
        return self.state.terminal

    @property
    def succeeded(self) -> bool:
        return self.state is SweepState.SUCCEEDED

    @property
    def best(self) -> Trial | None:
        """The trial with the highest validation accuracy so far (the
        server's ``best_trial``), if any."""
        if self.best_trial is None:
            return None
        for trial in self.trials:
            if trial.index == self.best_trial:
                return trial
        return None

    @classmethod
    def from_proto(cls, s: jobs_pb2.Sweep) -> Sweep:
        if not s.HasField("spec"):
            raise DataLoss(f"the server sent sweep {s.id!r} without a spec")
        try:
            state = _SWEEP_STATE_FROM_WIRE[s.state]
        except KeyError:
            raise DataLoss(f"the server sent sweep {s.id!r} in an unknown state ({s.state})") from None
        return cls(
            id=s.id,
            name=s.name,
            spec=SweepSpec.from_proto(s.spec),
            state=state,
            error=s.error or None,
            created=_time(s.created_unix_ms),
            updated=_time(s.updated_unix_ms),
            owner=s.owner or None,
            trials=[Trial.from_proto(t) for t in s.trials],
            best_trial=s.best_trial if s.HasField("best_trial") else None,
        )
