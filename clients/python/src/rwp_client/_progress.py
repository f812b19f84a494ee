"""A job's progress as it runs, for :meth:`Client.progress`: an updating
display in a Jupyter notebook, a line redrawn in place in a terminal, plain
lines in a log.

IPython is optional: it is looked for only when a kernel may be running
(IPython already imported) or a notebook display is asked for."""

from __future__ import annotations

import dataclasses
import html
import importlib
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TextIO, TypeAlias

from ._errors import DataLoss, InvalidArgument
from ._types import Evaluation, Job, JobEvent, StepMetrics

#: Where :meth:`Client.progress` shows the job: ``"auto"`` picks
#: ``"notebook"`` in a running Jupyter kernel, else ``"terminal"`` (one line
#: redrawn with ``\r``) when the output is a TTY, else ``"lines"`` (a line
#: now and then, for logs).
ProgressDisplay: TypeAlias = Literal["auto", "notebook", "terminal", "lines"]

#: Least seconds between two redraws of each display when not told.
_DEFAULT_INTERVAL: dict[str, float] = {"notebook": 0.2, "terminal": 0.1, "lines": 10.0}
_BAR_WIDTH = 24


@dataclass(frozen=True)
class _Snapshot:
    """What the display shows."""

    job_id: str
    name: str
    state: str
    #: Updates applied.
    step: int
    total: int
    loss: float | None
    test_accuracy: float | None
    error: str | None
    #: Why the job makes no progress now (no worker connected), if so.
    waiting: str | None = None

    @classmethod
    def of(cls, job: Job) -> _Snapshot:
        return cls(
            job_id=job.id,
            name=job.name,
            state=job.state.value,
            step=job.step,
            total=job.total_updates,
            loss=job.last_step.loss if job.last_step is not None else None,
            test_accuracy=job.last_evaluation.test_accuracy if job.last_evaluation is not None else None,
            error=job.error,
            waiting=job.waiting,
        )

    def after(self, event: JobEvent) -> _Snapshot:
        match event:
            case StepMetrics(step=step, loss=loss):
                return dataclasses.replace(self, step=max(self.step, step), loss=loss, waiting=None)
            case Evaluation(test_accuracy=test_accuracy):
                return dataclasses.replace(self, test_accuracy=test_accuracy)
            case Job():
                job = _Snapshot.of(event)
                return dataclasses.replace(
                    job,
                    step=max(self.step, job.step),
                    loss=self.loss if job.loss is None else job.loss,
                    test_accuracy=self.test_accuracy if job.test_accuracy is None else job.test_accuracy,
                )

    @property
    def fraction(self) -> float:
        return min(1.0, self.step / self.total) if self.total else 0.0

    def _fields(self) -> list[str]:
        loss = "-" if self.loss is None else f"{self.loss:.4f}"
        accuracy = "-" if self.test_accuracy is None else f"{self.test_accuracy:.4f}"
        state = self.state + (f": {self.error}" if self.error else "")
        if self.waiting:
            state += f" (waiting: {self.waiting}; not counted as training time)"
        return [f"loss {loss}", f"test acc {accuracy}", state]

    def text(self) -> str:
        filled = round(self.fraction * _BAR_WIDTH)
        bar = "#" * filled + "-" * (_BAR_WIDTH - filled)
        width = len(str(self.total))
        label = f"{self.job_id} {self.name}" if self.name else self.job_id
        counts = f"{self.step:>{width}}/{self.total} {self.fraction:4.0%}"
        return "  ".join([label, f"[{bar}]", counts, *self._fields()])

    def html(self) -> str:
        label = f"<b>{html.escape(self.job_id)}</b>" + (f" {html.escape(self.name)}" if self.name else "")
        bar = f'<progress value="{self.step}" max="{max(self.total, 1)}" style="width: 16em"></progress>'
        counts = f"{self.step}/{self.total} ({self.fraction:.0%})"
        fields = " &middot; ".join(html.escape(f) for f in self._fields())
        return f'<div style="font-family: monospace">{label} {bar} {counts} &middot; {fields}</div>'


class _ProgressView:
    """A snapshot as IPython displays it: HTML, and text where no HTML is shown."""

    def __init__(self, snapshot: _Snapshot) -> None:
        self._snapshot = snapshot

    def _repr_html_(self) -> str:
        return self._snapshot.html()

    def __repr__(self) -> str:
        return self._snapshot.text()


class _Display(Protocol):
    def show(self, snapshot: _Snapshot) -> None:
        """Draws ``snapshot``, replacing what the display showed."""

    def close(self) -> None:
        """Ends the display (after its final snapshot)."""


class _NotebookDisplay:
    def __init__(self, display_module: Any) -> None:
        self._display_module = display_module
        self._handle: Any = None

    def show(self, snapshot: _Snapshot) -> None:
        view = _ProgressView(snapshot)
        if self._handle is None:
            self._handle = self._display_module.display(view, display_id=True)
        else:
            self._handle.update(view)

    def close(self) -> None:
        pass


class _TerminalDisplay:
    """One line, redrawn in place: ``\\r``, the text, and spaces over what is
    left of a longer line before it."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._width = 0

    def show(self, snapshot: _Snapshot) -> None:
        text = snapshot.text()
        self._out.write("\r" + text + " " * (self._width - len(text)))
        self._out.flush()
        self._width = max(self._width, len(text))

    def close(self) -> None:
        if self._width:
            self._out.write("\n")
            self._out.flush()


class _LinesDisplay:
    """A line per snapshot shown (the same line is not written twice)."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._last = ""

    def show(self, snapshot: _Snapshot) -> None:
        text = snapshot.text()
        if text != self._last:
            self._out.write(text + "\n")
            self._out.flush()
            self._last = text

    def close(self) -> None:
        pass


def _kernel_running() -> bool:
    """Whether this process is a Jupyter kernel: IPython imported (a kernel
    imports it first) and its shell attached to a kernel."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    shell = ipython.get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def _is_tty(out: TextIO) -> bool:
    try:
        return out.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def _open_display(display: ProgressDisplay, out: TextIO) -> tuple[_Display, str]:
    """The display, and which one it is."""
    if display == "auto":
        display = "notebook" if _kernel_running() else "terminal" if _is_tty(out) else "lines"
    if display == "notebook":
        try:
            display_module = importlib.import_module("IPython.display")
        except ImportError:
            raise InvalidArgument(
                "display = 'notebook': needs IPython (run it in Jupyter, or pip install ipython)"
            ) from None
        return _NotebookDisplay(display_module), display
    if display == "terminal":
        return _TerminalDisplay(out), display
    if display == "lines":
        return _LinesDisplay(out), display
    raise InvalidArgument(f"display = {display!r}: must be one of 'auto', 'notebook', 'terminal', 'lines'")


def follow(
    job: Job,
    events: Iterable[JobEvent],
    *,
    display: ProgressDisplay,
    out: TextIO,
    interval: float | None,
) -> Job:
    """Shows ``job`` (its current record) and then each of ``events`` (its
    watch from there) until the terminal :class:`Job`, which it returns.
    Redraws at most every ``interval`` seconds, and always on a new
    evaluation, a state change and the end."""
    shown, kind = _open_display(display, out)
    every = _DEFAULT_INTERVAL[kind] if interval is None else interval
    if every < 0:
        raise InvalidArgument(f"interval = {interval}: must be at least 0 seconds")
    snapshot = _Snapshot.of(job)
    try:
        shown.show(snapshot)
        if job.done:
            return job
        drawn = time.monotonic()
        for event in events:
            snapshot = snapshot.after(event)
            now = time.monotonic()
            if not isinstance(event, StepMetrics) or now - drawn >= every:
                shown.show(snapshot)
                drawn = now
            if isinstance(event, Job) and event.done:
                return event
        raise DataLoss(f"the watch of {job.id} ended without a terminal state")
    finally:
        shown.close()


__all__ = ["ProgressDisplay", "follow"]
