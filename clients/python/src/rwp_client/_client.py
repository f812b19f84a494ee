"""The job service's client: submit, get, list, watch, wait, progress, cancel,
export, upload_model, and the sweeps' create_sweep, get_sweep, list_sweeps,
watch_sweep, wait_sweep, cancel_sweep."""

from __future__ import annotations

import builtins
import contextlib
import dataclasses
import hashlib
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Generator, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Final, Protocol, TextIO, TypeAlias, TypeVar

import grpc

from ._errors import DataLoss, InvalidArgument, RwpError, Unavailable, from_rpc_error, is_transient
from ._progress import ProgressDisplay, follow
from ._proto.rwp.v1 import jobs_pb2, jobs_pb2_grpc, spec_pb2
from ._convert import _enum
from ._spec import _DATASET_TO_WIRE, DataSource, Dataset, DatasetName, JobSpec, Model, ModelFile
from ._sweep import SweepSpec
from ._types import (
    DataReport,
    Export,
    Job,
    JobEvent,
    LogEntry,
    StepMetrics,
    StoredModel,
    Sweep,
    Worker,
    event_from_proto,
)

#: Bytes per ``ModelChunk`` of an upload.
CHUNK_BYTES: Final = 1 << 20
#: Largest message the client accepts (export chunks are far smaller).
_MAX_MESSAGE_BYTES: Final = 256 << 20

#: A PEM credential: its bytes, or the path of a file holding it.
Pem: TypeAlias = bytes | str | os.PathLike[str]


class ScriptModuleLike(Protocol):
    """What :meth:`Client.upload_model` needs of a ``torch.jit.ScriptModule``."""

    def save(self, f: str, /) -> None: ...


#: A TorchScript model: a file written by ``torch.jit.script(m).save(path)``,
#: a scripted module (needs torch), or a file already uploaded.
ModelSource: TypeAlias = str | os.PathLike[str] | ScriptModuleLike | ModelFile
#: A job, or its id.
JobRef: TypeAlias = Job | str
#: A sweep, or its id.
SweepRef: TypeAlias = Sweep | str

_T = TypeVar("_T")


def _job_id(job: JobRef) -> str:
    if isinstance(job, Job):
        return job.id
    if isinstance(job, str) and job:
        return job
    raise InvalidArgument(f"job = {job!r}: must be a Job or a non-empty job id")


def _sweep_id(sweep: SweepRef) -> str:
    if isinstance(sweep, Sweep):
        return sweep.id
    if isinstance(sweep, str) and sweep:
        return sweep
    raise InvalidArgument(f"sweep = {sweep!r}: must be a Sweep or a non-empty sweep id")


def _read_pem(what: str, pem: Pem | None) -> bytes | None:
    if pem is None or isinstance(pem, bytes):
        return pem
    try:
        return Path(pem).read_bytes()
    except OSError as e:
        raise InvalidArgument(f"{what}: cannot read {os.fspath(pem)}: {e.strerror}") from None


def _target(address: str) -> tuple[str, bool | None]:
    """``host:port`` and whether the address asks for TLS (None: unsaid)."""
    for scheme, tls in (("http://", False), ("https://", True)):
        if address.startswith(scheme):
            target = address[len(scheme) :].rstrip("/")
            break
    else:
        if "://" in address:
            raise InvalidArgument(f"address = {address!r}: use host:port, http://host:port or https://host:port")
        target, tls = address, None
    if not target or "/" in target:
        raise InvalidArgument(f"address = {address!r}: use host:port, http://host:port or https://host:port")
    return target, tls


class Client:
    """A connection to the job service of an ``rwp-server``.

    ``address`` is ``host:port``, ``http://host:port`` (plaintext) or
    ``https://host:port`` (TLS, trusting ``tls_ca`` or the public roots); a
    bare ``host:port`` speaks TLS when a CA or client certificate is given.
    ``tls_cert`` and ``tls_key`` are a client certificate for servers that
    require mutual TLS; ``tls_domain`` is the name to check the server's
    certificate against when it is not the host. PEM values are bytes or the
    path of a file. ``token`` is sent as ``authorization: Bearer <token>``
    with every call, for a server with a tokens file.

    ``timeout`` bounds each unary call (seconds; ``None``: no limit); streams
    (watch, export, upload) take their own. Idempotent calls (get, list,
    cancel, watch, export, upload_model, and their sweep counterparts) retry
    transient failures (unavailable, rate-limited) ``attempts`` times with
    exponential backoff; so do ``submit`` and ``create_sweep``, sending one
    fresh request id with every attempt: the server answers a retry with the
    job (or sweep) the first attempt created, so none starts twice.

    The connection is made on first use; one client may serve many threads.
    Use it as a context manager, or call :meth:`close`. Every failure is an
    :class:`~rwp_client.RwpError`.
    """

    def __init__(
        self,
        address: str,
        token: str | None = None,
        *,
        tls_ca: Pem | None = None,
        tls_cert: Pem | None = None,
        tls_key: Pem | None = None,
        tls_domain: str | None = None,
        timeout: float | None = 30.0,
        attempts: int = 4,
        initial_backoff: float = 0.2,
    ) -> None:
        target, scheme_tls = _target(address)
        if (tls_cert is None) != (tls_key is None):
            raise InvalidArgument("tls_cert and tls_key: a client certificate needs its key, and a key its certificate")
        wants_tls = tls_ca is not None or tls_cert is not None or tls_domain is not None
        if scheme_tls is False and wants_tls:
            raise InvalidArgument(f"TLS settings are given but {address} is an http:// (plaintext) address")
        if attempts < 1:
            raise InvalidArgument(f"attempts = {attempts}: must be at least 1")
        self._metadata: tuple[tuple[str, str], ...] = ()
        if token is not None:
            token = token.strip()
            if not token or not token.isascii() or not token.isprintable():
                raise InvalidArgument("token: must be non-empty printable ASCII (the text `rwp-server token new` printed)")
            self._metadata = (("authorization", f"Bearer {token}"),)
        options: list[tuple[str, str | int]] = [
            ("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", _MAX_MESSAGE_BYTES),
        ]
        if scheme_tls or (scheme_tls is None and wants_tls):
            credentials = grpc.ssl_channel_credentials(
                root_certificates=_read_pem("tls_ca", tls_ca),
                private_key=_read_pem("tls_key", tls_key),
                certificate_chain=_read_pem("tls_cert", tls_cert),
            )
            if tls_domain is not None:
                options.append(("grpc.ssl_target_name_override", tls_domain))
            self._channel = grpc.secure_channel(target, credentials, options=options)
        else:
            self._channel = grpc.insecure_channel(target, options=options)
        self.address = address
        self._stub = jobs_pb2_grpc.JobServiceStub(self._channel)
        self._timeout = timeout
        self._attempts = attempts
        self._initial_backoff = initial_backoff

    # -- lifecycle -----------------------------------------------------------

    def close(self) -> None:
        """Closes the connection; calls in flight are cancelled."""
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client({self.address!r}, token={'<redacted>' if self._metadata else None})"

    # -- calls -----------------------------------------------------------------

    def _call(self, rpc: str, call: Callable[[], _T], *, retry: bool) -> _T:
        """Runs ``call``, mapping a gRPC failure to the client's exception;
        with ``retry``, transient failures are retried with backoff."""
        delay = self._initial_backoff
        attempt = 1
        while True:
            try:
                return call()
            except grpc.RpcError as e:
                error = from_rpc_error(e, address=self.address, rpc=rpc)
            if not (retry and is_transient(error) and attempt < self._attempts):
                raise error
            time.sleep(delay)
            delay = min(delay * 2, 2.0)
            attempt += 1

    def submit(
        self,
        spec: JobSpec,
        *,
        name: str = "",
        model: ModelSource | None = None,
        labels: Mapping[str, str] | None = None,
        init_from: JobRef | None = None,
    ) -> Job:
        """Submits a job and returns it (running).

        For a ``Model.TORCHSCRIPT`` spec, ``model`` is the module: a file
        saved by ``torch.jit.script(module).save(path)``, the scripted module
        itself, or a :class:`ModelFile` from :meth:`upload_model`. It is
        uploaded first and named in the submitted spec's ``model_file``.
        ``labels`` tag the job (:meth:`list` filters by them);
        ``init_from`` starts it from another job's latest weights and
        BatchNorm statistics (same model, fresh optimizer) instead of the
        seed's. Retried with one request id, so the job starts once.
        """
        if not isinstance(spec, JobSpec):
            raise InvalidArgument(f"spec: must be a rwp_client.JobSpec, got {type(spec).__name__}")
        spec = self._with_model(spec, model, what="spec", call="submit(spec, model=path_or_script_module)")
        request = jobs_pb2.SubmitJobRequest(
            name=name,
            spec=spec.to_proto(),
            request_id=uuid.uuid4().hex,
            labels=dict(labels or {}),
            init_from_job=_job_id(init_from) if init_from is not None else "",
        )
        response = self._call(
            "SubmitJob",
            lambda: self._stub.SubmitJob(request, timeout=self._timeout, metadata=self._metadata),
            retry=True,
        )
        return Job.from_proto(response)

    def _with_model(self, spec: JobSpec, model: ModelSource | None, *, what: str, call: str) -> JobSpec:
        """``spec`` naming ``model`` (uploaded first unless it is a
        :class:`ModelFile` already); a ``Model.TORCHSCRIPT`` spec needs one,
        others must not get one. ``what`` names the spec in errors."""
        if model is not None:
            if spec.model is not Model.TORCHSCRIPT:
                raise InvalidArgument(
                    f"model: a model to upload needs {what}.model = Model.TORCHSCRIPT (the {what} has {spec.model})"
                )
            model_file = model if isinstance(model, ModelFile) else self.upload_model(model)
            return dataclasses.replace(spec, model_file=model_file)
        if spec.model is Model.TORCHSCRIPT and spec.model_file is None:
            raise InvalidArgument(f"model_file: a Model.TORCHSCRIPT {what} needs its module: {call}")
        return spec

    def inspect_data(
        self, data: DataSource, *, dataset: Dataset | DatasetName, decode: bool = False
    ) -> DataReport:
        """Inspects a job's own data without starting a job: a worker lists
        it as the job's workers would (their credentials, their mounts; the
        server never reads it) and reports its classes, samples and files
        per split, input shape and digest. With ``decode``, every image is
        read and decoded too and the unreadable ones listed (slow for a
        large dataset). The first problem raises :class:`InvalidArgument`
        naming the split, the file and the rule; no worker within the
        server's ``data_inspection_timeout_ms`` raises :class:`Unavailable`.
        """
        if not isinstance(data, DataSource):
            raise InvalidArgument(f"data: must be a rwp_client.DataSource, got {type(data).__name__}")
        kind = _enum("dataset", dataset, Dataset)
        request = jobs_pb2.InspectDataRequest(dataset=_DATASET_TO_WIRE[kind], decode=decode)
        data._to_proto(request.data)
        response = self._call(
            "InspectData",
            lambda: self._stub.InspectData(request, timeout=self._inspect_timeout(decode), metadata=self._metadata),
            retry=True,
        )
        return DataReport.from_proto(response)

    def _inspect_timeout(self, decode: bool) -> float | None:
        """Decoding every image of a large dataset takes longer than a call."""
        return None if decode else self._timeout

    def get(self, job: JobRef) -> Job:
        """The job's current record."""
        request = jobs_pb2.GetJobRequest(job_id=_job_id(job))
        response = self._call(
            "GetJob", lambda: self._stub.GetJob(request, timeout=self._timeout, metadata=self._metadata), retry=True
        )
        return Job.from_proto(response)

    def list(self, *, labels: Mapping[str, str] | None = None) -> list[Job]:
        """Every job the caller may see (its own; all for an admin token or on
        a server without authentication), oldest first; with ``labels``, only
        the jobs that carry all of them."""
        request = jobs_pb2.ListJobsRequest(labels=dict(labels or {}))
        response = self._call(
            "ListJobs",
            lambda: self._stub.ListJobs(request, timeout=self._timeout, metadata=self._metadata),
            retry=True,
        )
        return [Job.from_proto(j) for j in response.jobs]

    def cancel(self, job: JobRef) -> Job:
        """Cancels the job and returns it. Idempotent: an ended job is returned
        as it is. Its state so far stays exportable."""
        request = jobs_pb2.CancelJobRequest(job_id=_job_id(job))
        response = self._call(
            "CancelJob",
            lambda: self._stub.CancelJob(request, timeout=self._timeout, metadata=self._metadata),
            retry=True,
        )
        return Job.from_proto(response)

    def resume(self, job: JobRef, *, epochs: int | None = None, max_updates: int | None = None) -> Job:
        """Continues a job that ended (succeeded, cancelled, failed or
        stopped early) from its latest checkpoint and returns it (running).
        ``epochs`` trains it for that many epochs in all (the schedules span
        the new total); ``max_updates`` moves its update cap (0 lifts it).
        Not retried: a retry of a call that went through would find the job
        running."""
        request = jobs_pb2.ResumeJobRequest(job_id=_job_id(job), epochs=epochs, max_updates=max_updates)
        response = self._call(
            "ResumeJob",
            lambda: self._stub.ResumeJob(request, timeout=self._timeout, metadata=self._metadata),
            retry=False,
        )
        return Job.from_proto(response)

    def logs(self, job: JobRef, *, follow: bool = False, timeout: float | None = None) -> Iterator[LogEntry]:
        """The job's event log, oldest entry first (submitted, tasks leased
        and by whom, workers lost and tasks re-issued, pauses, evaluations,
        the end); with ``follow``, then the entries as they come, until the
        one that records the job's end. ``timeout`` bounds the whole call.
        """
        request = jobs_pb2.WatchJobLogRequest(job_id=_job_id(job), follow=follow)
        stream = self._call(
            "WatchJobLog",
            lambda: self._stub.WatchJobLog(request, timeout=timeout, metadata=self._metadata),
            retry=True,
        )
        try:
            for entry in stream:
                yield LogEntry.from_proto(entry)
        except grpc.RpcError as e:
            raise from_rpc_error(e, address=self.address, rpc="WatchJobLog") from None

    def workers(self) -> builtins.list[Worker]:
        """The workers the server knows: connected ones and those lost lately,
        each with the job and task it computes (for jobs the caller may see)."""
        request = jobs_pb2.ListWorkersRequest()
        response = self._call(
            "ListWorkers",
            lambda: self._stub.ListWorkers(request, timeout=self._timeout, metadata=self._metadata),
            retry=True,
        )
        return [Worker.from_proto(w) for w in response.workers]

    def delete(self, job: JobRef) -> None:
        """Deletes a job that ended, with its metrics, checkpoints and
        TensorBoard run (a running job: cancel it first). Not retried."""
        request = jobs_pb2.DeleteJobRequest(job_id=_job_id(job))
        self._call(
            "DeleteJob",
            lambda: self._stub.DeleteJob(request, timeout=self._timeout, metadata=self._metadata),
            retry=False,
        )

    def watch(
        self, job: JobRef, from_step: int = 0, *, timeout: float | None = None
    ) -> Generator[JobEvent, None, None]:
        """The job's events after its first ``from_step`` updates (0: all): every
        :class:`StepMetrics` in order, the :class:`Evaluation` s, and the
        :class:`Job` whenever its state changes; the iterator ends after the
        terminal state. A broken connection (a server restart, say) is
        resumed after the last step seen. ``timeout`` bounds the whole watch
        (:class:`DeadlineExceeded`). The call is made on the first ``next()``;
        closing the iterator cancels it.
        """
        job_id = _job_id(job)
        if from_step < 0:
            raise InvalidArgument(f"from_step = {from_step}: must be >= 0")
        deadline = None if timeout is None else time.monotonic() + timeout
        return self._watch(job_id, from_step, deadline)

    def _watch(self, job_id: str, from_step: int, deadline: float | None) -> Generator[JobEvent, None, None]:
        next_step = from_step
        reconnects = 0
        while True:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            request = jobs_pb2.WatchJobRequest(job_id=job_id, from_step=next_step)
            call = self._stub.WatchJob(request, timeout=remaining, metadata=self._metadata)
            try:
                for message in call:
                    event = event_from_proto(message)
                    if isinstance(event, StepMetrics):
                        next_step = event.step
                    yield event
                    reconnects = 0
                    if isinstance(event, Job) and event.done:
                        return
            except grpc.RpcError as e:
                error = from_rpc_error(e, address=self.address, rpc="WatchJob")
                resumable = is_transient(error) or error.code is grpc.StatusCode.DATA_LOSS
                if not resumable or reconnects + 1 >= self._attempts:
                    raise error from None
                reconnects += 1
                time.sleep(self._initial_backoff * reconnects)
                # A restarting server takes a moment: wait for it (up to the
                # client's timeout) rather than spend the attempts at once.
                self._wait_for_server("WatchJob", deadline)
                continue
            finally:
                call.cancel()
            raise DataLoss(f"the watch of {job_id} ended before the job did")

    def _wait_for_server(self, rpc: str, deadline: float | None) -> None:
        """Blocks until the channel is connected, for at most ``timeout``
        (and not past ``deadline``)."""
        limits = [t for t in (self._timeout, None if deadline is None else deadline - time.monotonic()) if t is not None]
        limit = max(0.0, min(limits)) if limits else None
        try:
            grpc.channel_ready_future(self._channel).result(timeout=limit)
        except grpc.FutureTimeoutError:
            raise Unavailable(
                f"cannot reach the server at {self.address} ({rpc}): not back within {limit:g}s",
                code=grpc.StatusCode.UNAVAILABLE,
            ) from None

    def wait(self, job: JobRef, *, timeout: float | None = None) -> Job:
        """Blocks until the job has ended and returns its final record
        (whatever the outcome: check :attr:`Job.succeeded`)."""
        current = self.get(job)
        if current.done:
            return current
        for event in self.watch(current.id, current.step, timeout=timeout):
            if isinstance(event, Job) and event.done:
                return event
        raise DataLoss(f"the watch of {current.id} ended without a terminal state")  # pragma: no cover

    def progress(
        self,
        job: JobRef,
        *,
        display: ProgressDisplay = "auto",
        out: TextIO | None = None,
        interval: float | None = None,
        timeout: float | None = None,
    ) -> Job:
        """Follows the job until it ends, showing a progress bar with the
        updates applied out of the total, the latest loss and test accuracy,
        and the job's state; returns its final record (whatever the outcome:
        check :attr:`Job.succeeded`), as :meth:`wait` does.

        ``display="auto"`` shows it as an updating HTML display in a Jupyter
        notebook (IPython, optional, is used only there), as one line redrawn
        in place when ``out`` is a terminal, and otherwise as a plain line now
        and then (logs, CI). ``"notebook"``, ``"terminal"`` or ``"lines"``
        picks one. ``out`` is the text stream of the last two (default:
        ``sys.stdout``). ``interval`` is the least time between two redraws
        in seconds (default: 0.2 in a notebook, 0.1 in a terminal, 10 for
        lines); evaluations, state changes and the end are always shown.
        ``timeout`` bounds the whole follow (:class:`DeadlineExceeded`).
        Interrupting it leaves the job running.
        """
        current = self.get(job)
        events = self.watch(current.id, current.step, timeout=timeout)
        try:
            return follow(
                current, events, display=display, out=sys.stdout if out is None else out, interval=interval
            )
        finally:
            events.close()

    def export(self, job: JobRef, path: str | os.PathLike[str], *, timeout: float | None = None) -> Export:
        """Writes the job's current state (weights, BN buffers, momentum, and
        ARWP's history ``F``) to ``path`` as a safetensors file. The file is
        written beside ``path`` and renamed into place, so ``path`` never holds
        a partial export."""
        request = jobs_pb2.ExportWeightsRequest(job_id=_job_id(job))
        destination = Path(path)

        def attempt() -> Export:
            deadline = None if timeout is None else time.monotonic() + timeout
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            fd, partial = tempfile.mkstemp(prefix=f".{destination.name}.", suffix=".partial", dir=destination.parent)
            try:
                with os.fdopen(fd, "wb") as out:
                    call = self._stub.ExportWeights(request, timeout=remaining, metadata=self._metadata)
                    try:
                        export = _receive_export(call, out.write)
                    finally:
                        call.cancel()
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(partial, destination)
                return export
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(partial)
                raise

        try:
            return self._call("ExportWeights", attempt, retry=True)
        except RwpError:
            raise  # some are OSErrors too (Unavailable, DeadlineExceeded)
        except OSError as e:
            raise RwpError(f"cannot write {destination}: {e.strerror or e}") from e

    def upload_model(self, model: str | os.PathLike[str] | ScriptModuleLike) -> ModelFile:
        """Stores a TorchScript module on the server for ``Model.TORCHSCRIPT``
        jobs: a file saved by ``torch.jit.script(module).save(path)``, or the
        scripted module itself. Streams it in 1 MiB chunks, the first carrying
        the size and SHA-256 (the server checks both, and that the file is a
        TorchScript module with parameters). Uploading the same file again is
        harmless. Returns what :attr:`JobSpec.model_file` takes."""
        with contextlib.ExitStack() as stack:
            path = _model_path(model, stack)
            try:
                size, sha256 = _file_digest(path)
            except OSError as e:
                raise InvalidArgument(f"model: cannot read {path}: {e.strerror or e}") from None
            response: spec_pb2.ModelFile = self._call(
                "UploadModel",
                lambda: self._stub.UploadModel(
                    _model_chunks(path, size, sha256), timeout=None, metadata=self._metadata
                ),
                retry=True,
            )
        if response.sha256 != sha256 or response.size_bytes != size:
            raise DataLoss(
                f"the server stored {response.sha256} ({response.size_bytes} bytes) for a file of "
                f"{size} bytes with SHA-256 {sha256}"
            )
        return ModelFile(sha256=response.sha256, size_bytes=response.size_bytes)

    def list_models(self) -> builtins.list[StoredModel]:
        """The model files the caller uploaded (every owner's for an admin, or
        on a server without authentication), by owner then digest."""
        request = jobs_pb2.ListModelsRequest()
        response = self._call(
            "ListModels",
            lambda: self._stub.ListModels(request, timeout=self._timeout, metadata=self._metadata),
            retry=True,
        )
        return [StoredModel.from_proto(m) for m in response.models]

    def delete_model(self, model: ModelFile | str) -> None:
        """Gives up the caller's ownership of an uploaded file (a
        :class:`ModelFile` or its SHA-256); :class:`NotFound` unless the caller
        uploaded it. The server removes the file once no owner is left and no
        running job names it. Not retried: a retry of a call that went through
        would be told the file is not found."""
        sha256 = model.sha256 if isinstance(model, ModelFile) else model
        request = jobs_pb2.DeleteModelRequest(sha256=sha256)
        self._call(
            "DeleteModel",
            lambda: self._stub.DeleteModel(request, timeout=self._timeout, metadata=self._metadata),
            retry=False,
        )

    # -- sweeps ----------------------------------------------------------------

    def create_sweep(self, spec: SweepSpec, *, name: str = "", model: ModelSource | None = None) -> Sweep:
        """Creates a sweep and returns it (running): the server generates and
        checks every trial first, and refuses a bad sweep naming the trial
        and field (:class:`InvalidArgument`).

        For a ``Model.TORCHSCRIPT`` base, ``model`` is the module, uploaded
        first as for :meth:`submit`. Retried with one request id, so the
        sweep is created once.
        """
        if not isinstance(spec, SweepSpec):
            raise InvalidArgument(f"spec: must be a rwp_client.SweepSpec, got {type(spec).__name__}")
        base = spec.base
        if not isinstance(base, JobSpec):
            raise InvalidArgument(f"base: must be a rwp_client.JobSpec, got {type(base).__name__}")
        base = self._with_model(base, model, what="base", call="create_sweep(spec, model=path_or_script_module)")
        spec = dataclasses.replace(spec, base=base)
        request = jobs_pb2.CreateSweepRequest(name=name, spec=spec.to_proto(), request_id=uuid.uuid4().hex)
        response = self._call(
            "CreateSweep",
            lambda: self._stub.CreateSweep(request, timeout=self._timeout, metadata=self._metadata),
            retry=True,
        )
        return Sweep.from_proto(response)

    def get_sweep(self, sweep: SweepRef) -> Sweep:
        """The sweep's current record, its trials' jobs included."""
        request = jobs_pb2.GetSweepRequest(sweep_id=_sweep_id(sweep))
        response = self._call(
            "GetSweep",
            lambda: self._stub.GetSweep(request, timeout=self._timeout, metadata=self._metadata),
            retry=True,
        )
        return Sweep.from_proto(response)

    def list_sweeps(self) -> builtins.list[Sweep]:
        """Every sweep the caller may see, oldest first."""
        request = jobs_pb2.ListSweepsRequest()
        response = self._call(
            "ListSweeps",
            lambda: self._stub.ListSweeps(request, timeout=self._timeout, metadata=self._metadata),
            retry=True,
        )
        return [Sweep.from_proto(s) for s in response.sweeps]

    def cancel_sweep(self, sweep: SweepRef) -> Sweep:
        """Cancels the sweep's running trials (waiting ones never start) and
        returns it. Idempotent: an ended sweep is returned as it is."""
        request = jobs_pb2.CancelSweepRequest(sweep_id=_sweep_id(sweep))
        response = self._call(
            "CancelSweep",
            lambda: self._stub.CancelSweep(request, timeout=self._timeout, metadata=self._metadata),
            retry=True,
        )
        return Sweep.from_proto(response)

    def watch_sweep(self, sweep: SweepRef, *, timeout: float | None = None) -> Generator[Sweep, None, None]:
        """The sweep now, then again whenever one of its trials progresses or
        changes state (each a whole :class:`Sweep`); the iterator ends after
        the terminal state. A broken connection is reopened (every message is
        the whole sweep, so nothing is lost). ``timeout`` bounds the whole
        watch (:class:`DeadlineExceeded`). The call is made on the first
        ``next()``; closing the iterator cancels it.
        """
        sweep_id = _sweep_id(sweep)
        deadline = None if timeout is None else time.monotonic() + timeout
        return self._watch_sweep(sweep_id, deadline)

    def _watch_sweep(self, sweep_id: str, deadline: float | None) -> Generator[Sweep, None, None]:
        reconnects = 0
        while True:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            request = jobs_pb2.WatchSweepRequest(sweep_id=sweep_id)
            call = self._stub.WatchSweep(request, timeout=remaining, metadata=self._metadata)
            try:
                for message in call:
                    snapshot = Sweep.from_proto(message)
                    yield snapshot
                    reconnects = 0
                    if snapshot.done:
                        return
            except grpc.RpcError as e:
                error = from_rpc_error(e, address=self.address, rpc="WatchSweep")
                resumable = is_transient(error) or error.code is grpc.StatusCode.DATA_LOSS
                if not resumable or reconnects + 1 >= self._attempts:
                    raise error from None
                reconnects += 1
                time.sleep(self._initial_backoff * reconnects)
                self._wait_for_server("WatchSweep", deadline)
                continue
            finally:
                call.cancel()
            raise DataLoss(f"the watch of {sweep_id} ended before the sweep did")

    def wait_sweep(self, sweep: SweepRef, *, timeout: float | None = None) -> Sweep:
        """Blocks until the sweep has ended and returns its final record
        (whatever the outcome: check :attr:`Sweep.succeeded`)."""
        current = self.get_sweep(sweep)
        if current.done:
            return current
        for snapshot in self.watch_sweep(current.id, timeout=timeout):
            if snapshot.done:
                return snapshot
        raise DataLoss(f"the watch of {current.id} ended without a terminal state")  # pragma: no cover


def _receive_export(chunks: Iterator[jobs_pb2.ExportChunk], write: Callable[[bytes], object]) -> Export:
    """Checks each chunk's offset, size and step against what came before."""
    written = 0
    total: int | None = None
    step: int | None = None
    for chunk in chunks:
        if chunk.offset != written:
            raise DataLoss(f"export chunk at offset {chunk.offset} after {written} bytes")
        if total is None:
            total, step = chunk.total_bytes, chunk.step
        elif (chunk.total_bytes, chunk.step) != (total, step):
            raise DataLoss(
                f"export chunk announces {chunk.total_bytes} bytes of step {chunk.step}, "
                f"the first announced {total} bytes of step {step}"
            )
        write(chunk.data)
        written += len(chunk.data)
        if written > total:
            raise DataLoss(f"export longer than the {total} bytes announced")
    if total is None or step is None:
        raise DataLoss("the export stream ended without a chunk")
    if written != total:
        raise DataLoss(f"the export stream ended after {written} of {total} bytes")
    return Export(step=step, size_bytes=written)


def _model_path(model: str | os.PathLike[str] | ScriptModuleLike, stack: contextlib.ExitStack) -> Path:
    if isinstance(model, (str, os.PathLike)):
        return Path(model)
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(model, torch.jit.ScriptModule):
        directory = stack.enter_context(tempfile.TemporaryDirectory(prefix="rwp-model-"))
        path = Path(directory, "model.pt")
        model.save(str(path))
        return path
    if torch is not None and isinstance(model, torch.nn.Module):
        raise InvalidArgument("model: script the module first: torch.jit.script(module)")
    raise InvalidArgument(
        f"model: expected a TorchScript file path or a torch.jit.ScriptModule, got {type(model).__name__}"
    )


def _file_digest(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while block := f.read(CHUNK_BYTES):
            digest.update(block)
            size += len(block)
    return size, digest.hexdigest()


def _model_chunks(path: Path, size: int, sha256: str) -> Iterator[spec_pb2.ModelChunk]:
    """The file as ``ModelChunk`` s; the first names the whole file's size and
    SHA-256 (an empty file is one empty chunk, which the server refuses)."""
    with path.open("rb") as f:
        offset = 0
        while True:
            data = f.read(CHUNK_BYTES)
            if offset == 0:
                yield spec_pb2.ModelChunk(total_bytes=size, sha256=sha256, offset=0, data=data)
            elif data:
                yield spec_pb2.ModelChunk(offset=offset, data=data)
            offset += len(data)
            if not data or offset >= size:
                return


__all__ = ["CHUNK_BYTES", "Client", "JobRef", "ModelSource", "Pem", "ScriptModuleLike", "SweepRef"]
