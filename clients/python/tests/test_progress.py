"""client.progress against real jobs: plain lines when the output is not a
terminal, one line redrawn with \\r when it is, an IPython display in a
kernel (here a stand-in; examples/quickstart.ipynb runs in a real one, see
test_notebook.py)."""

from __future__ import annotations

import io
import re
import sys
import threading
import types
from typing import Any

import pytest

from rwp_client import Client, InvalidArgument, Job, JobSpec, JobState, StepMetrics

# 5 updates of the small CNN on the built-in dataset (as test_jobs.QUICK).
QUICK = JobSpec(method="m-arwp", epochs=1, batch_size=128, max_updates=5, seed=3)
# "j-000001 py-progress  [####----]  3/5  60%  loss 2.3026  test acc -  running"
LINE = re.compile(
    r"^(?P<id>\S+) (?P<name>\S+)  \[(?P<bar>[#-]{24})\]  +(?P<step>\d+)/(?P<total>\d+) +(?P<percent>\d+)%"
    r"  loss (?P<loss>-|nan|inf|\d+\.\d{4})  test acc (?P<accuracy>-|\d\.\d{4})  (?P<state>\w+)$"
)


class TtyBuffer(io.StringIO):
    """What a terminal would have been written."""

    def isatty(self) -> bool:
        return True


def parse(line: str) -> re.Match[str]:
    match = LINE.match(line)
    assert match, f"not a progress line: {line!r}"
    return match


def test_a_log_gets_a_line_per_redraw_ending_with_the_outcome(client: Client) -> None:
    job = client.submit(QUICK, name="py-progress-lines")
    out = io.StringIO()
    final = client.progress(job, out=out, interval=0)
    assert isinstance(final, Job) and final.succeeded and final.step == 5, final
    text = out.getvalue()
    assert "\r" not in text and text.endswith("\n")
    lines = [parse(line) for line in text.splitlines()]
    assert all(m["id"] == job.id and m["name"] == "py-progress-lines" and m["total"] == "5" for m in lines)
    steps = [int(m["step"]) for m in lines]
    assert steps == sorted(steps), f"steps only go forward: {steps}"
    # interval=0: every update the watch saw has its own line.
    assert set(range(steps[0], 6)) <= set(steps), steps
    last = lines[-1]
    assert (last["step"], last["percent"], last["bar"], last["state"]) == ("5", "100", "#" * 24, "succeeded")
    assert final.last_evaluation is not None and last["accuracy"] == f"{final.last_evaluation.test_accuracy:.4f}"
    assert last["loss"] != "-", "the latest update's loss"
    assert len(lines) == len(set(text.splitlines())), "no line written twice"


def test_a_log_by_default_gets_few_lines(client: Client) -> None:
    # The default interval (10 s) is longer than this job: the first line, then
    # only the evaluation and the end, not every update.
    job = client.submit(QUICK, name="py-progress-quiet")
    out = io.StringIO()
    assert client.progress(job, out=out).succeeded
    lines = [parse(line) for line in out.getvalue().splitlines()]
    assert [m["step"] for m in lines[1:]] == ["5"] * (len(lines) - 1), out.getvalue()
    assert 2 <= len(lines) <= 4 and lines[-1]["state"] == "succeeded", out.getvalue()


def test_a_terminal_gets_one_line_redrawn_in_place(client: Client) -> None:
    job = client.submit(QUICK, name="py-progress-tty")
    out = TtyBuffer()
    assert client.progress(job, out=out, interval=0).succeeded
    text = out.getvalue()
    assert text.startswith("\r") and text.endswith("\n") and text.count("\n") == 1, repr(text)
    frames = text[1:-1].split("\r")
    assert len(frames) >= 2, "redrawn as the job went on"
    # What the terminal shows: each frame written over the one before.
    screen = ""
    for frame in frames:
        screen = frame + screen[len(frame):]
    last = parse(screen.rstrip())
    assert screen.rstrip() == frames[-1].rstrip(), "a shorter frame blanks what a longer one left"
    assert (last["step"], last["total"], last["state"]) == ("5", "5", "succeeded")


def test_a_cancelled_job_ends_the_progress_cancelled(client: Client) -> None:
    job = client.submit(JobSpec(method="sgd", epochs=100, batch_size=64), name="py-progress-cancel")
    cancelled = threading.Event()

    def cancel_after_two_updates() -> None:
        for event in client.watch(job, timeout=60):
            if isinstance(event, StepMetrics) and event.step >= 2:
                client.cancel(job)
                cancelled.set()
                return

    canceller = threading.Thread(target=cancel_after_two_updates)
    canceller.start()
    out = io.StringIO()
    try:
        final = client.progress(job, out=out, interval=0, timeout=120)
    finally:
        canceller.join(timeout=60)
    assert cancelled.is_set()
    assert final.state is JobState.CANCELLED and final.done
    assert parse(out.getvalue().splitlines()[-1])["state"] == "cancelled"


def test_an_ended_job_is_shown_once(client: Client) -> None:
    job = client.wait(client.submit(QUICK, name="py-progress-ended"), timeout=120)
    out = io.StringIO()
    assert client.progress(job.id, out=out) == job
    (line,) = out.getvalue().splitlines()
    assert parse(line)["state"] == "succeeded"


class FakeIPython:
    """IPython as a kernel has it: get_ipython() with a kernel, and
    IPython.display.display(obj, display_id=True) returning a handle."""

    def __init__(self) -> None:
        self.shown: list[Any] = []
        self.ipython = types.ModuleType("IPython")
        self.display = types.ModuleType("IPython.display")
        shell = types.SimpleNamespace(kernel=object())
        setattr(self.ipython, "get_ipython", lambda: shell)
        setattr(self.display, "display", self._display)

    def _display(self, obj: Any, *, display_id: bool) -> Any:
        assert display_id is True
        self.shown.append(obj)
        return types.SimpleNamespace(update=self.shown.append)


def test_in_a_kernel_it_updates_one_html_display(client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeIPython()
    monkeypatch.setitem(sys.modules, "IPython", fake.ipython)
    monkeypatch.setitem(sys.modules, "IPython.display", fake.display)
    job = client.submit(QUICK, name="a<b>")
    out = io.StringIO()
    assert client.progress(job, out=out, interval=0).succeeded
    assert out.getvalue() == "", "nothing printed beside the display"
    assert len(fake.shown) >= 2, "one display, then updates of it"
    html = fake.shown[-1]._repr_html_()
    assert '<progress value="5" max="5"' in html and "succeeded" in html
    assert "a&lt;b&gt;" in html and "a<b>" not in html, "the job's name is escaped"
    assert parse(repr(fake.shown[-1]))["state"] == "succeeded", "text where HTML is not shown"


def test_a_notebook_display_without_ipython_is_refused(client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    job = client.wait(client.submit(QUICK, name="py-progress-no-ipython"), timeout=120)
    monkeypatch.setitem(sys.modules, "IPython.display", None)  # import fails
    with pytest.raises(InvalidArgument, match="needs IPython"):
        client.progress(job, display="notebook")
    with pytest.raises(InvalidArgument, match="display = 'web'"):
        client.progress(job, display="web")  # type: ignore[arg-type]
