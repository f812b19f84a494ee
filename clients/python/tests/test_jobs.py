"""Every call of the client against a real server and two workers."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from rwp_client import (
    Client,
    Evaluation,
    Job,
    JobSpec,
    JobState,
    Method,
    Model,
    NotFound,
    StepMetrics,
)

# batch 128 on the built-in dataset's 1,000 training images: 7 updates per
# epoch; capped at 5 updates to stay quick.
QUICK = JobSpec(method=Method.M_ARWP, epochs=1, batch_size=128, max_updates=5, seed=3)

# The small CNN's parameters and BatchNorm buffers as exported (rwp-core's
# model declaration order, shapes for 3x16x16 inputs and 10 classes).
SMALL_CNN_PARAMETERS = {
    "conv1.weight": (32, 3, 3, 3),
    "bn1.weight": (32,),
    "bn1.bias": (32,),
    "conv2.weight": (64, 32, 3, 3),
    "bn2.weight": (64,),
    "bn2.bias": (64,),
    "fc.weight": (10, 1024),
    "fc.bias": (10,),
}
SMALL_CNN_BUFFERS = {
    "bn1.running_mean": (32,),
    "bn1.running_var": (32,),
    "bn2.running_mean": (64,),
    "bn2.running_var": (64,),
}


def test_submit_watch_to_success_then_get_list_export(client: Client, tmp_path: Path) -> None:
    job = client.submit(QUICK, name="py-quick")
    assert job.name == "py-quick"
    assert (job.state, job.step, job.total_updates, job.updates_per_epoch) == (JobState.RUNNING, 0, 5, 7)
    assert job.spec == QUICK, "the server stores the spec as submitted"
    assert job.owner is None, "no owner on a server without tokens"

    events = list(client.watch(job))
    steps = [e.step for e in events if isinstance(e, StepMetrics)]
    assert steps == [1, 2, 3, 4, 5], "every step, numbered from 1, once, in order"
    assert all(isinstance(e, StepMetrics) and e.loss > 0 for e in events if isinstance(e, StepMetrics))
    last = events[-1]
    assert isinstance(last, Job), "the watch ends with the terminal state"
    assert (last.state, last.step, last.done, last.succeeded) == (JobState.SUCCEEDED, 5, True, True)
    evaluations = [e for e in events if isinstance(e, Evaluation)]
    assert [e.step for e in evaluations] == [5], "the final evaluation"
    assert 0.0 <= evaluations[0].test_accuracy <= 1.0

    # Replaying after the first 3 updates.
    tail = [e.step for e in client.watch(job.id, from_step=3) if isinstance(e, StepMetrics)]
    assert tail == [4, 5]

    got = client.get(job.id)
    assert (got.id, got.state, got.step) == (job.id, JobState.SUCCEEDED, 5)
    assert got.last_step is not None and got.last_step.step == 5
    assert got.last_evaluation == evaluations[0]
    assert got.progress == 1.0
    assert job.id in [j.id for j in client.list()]
    assert client.wait(job).succeeded, "wait returns at once for an ended job"

    # Export: every tensor of the small CNN and of m-ARWP's state, by name and shape.
    path = tmp_path / "weights.safetensors"
    export = client.export(job, path)
    assert export.step == 5
    assert export.size_bytes == path.stat().st_size
    assert os.listdir(tmp_path) == ["weights.safetensors"], "no partial file left behind"
    tensors = load_file(path)
    expected = {f"{kind}.{name}": shape for kind in ("weights", "momentum", "history")
                for name, shape in SMALL_CNN_PARAMETERS.items()}
    expected |= {f"buffers.{name}": shape for name, shape in SMALL_CNN_BUFFERS.items()}
    assert {name: t.shape for name, t in tensors.items()} == expected
    assert all(t.dtype == np.float32 and np.isfinite(t).all() for t in tensors.values())

    # Cancelling an ended job changes nothing.
    assert client.cancel(job).state is JobState.SUCCEEDED


def test_wait_follows_a_running_job_to_its_end(client: Client) -> None:
    job = client.submit(JobSpec(method=Method.SGD, model=Model.MLP, epochs=1, batch_size=250), name="py-wait")
    final = client.wait(job, timeout=120)
    assert final.succeeded, final.error
    assert final.step == final.total_updates == 4


def test_cancel_during_watch_ends_the_watch_cancelled(client: Client) -> None:
    job = client.submit(JobSpec(method=Method.SGD, epochs=100, batch_size=64), name="py-cancel")
    seen: list[int] = []
    last: Job | None = None
    for event in client.watch(job, timeout=120):
        if isinstance(event, StepMetrics):
            seen.append(event.step)
            if event.step == 2:
                assert client.cancel(job.id).state is JobState.CANCELLED
        elif isinstance(event, Job):
            last = event
    assert last is not None and last.state is JobState.CANCELLED and last.done and not last.succeeded
    assert seen == list(range(1, len(seen) + 1)), "steps in order up to the cancel"
    assert len(seen) < 20, f"the job stopped soon after the cancel ({len(seen)} steps)"
    assert client.get(job).state is JobState.CANCELLED


def test_closing_a_watch_early_leaves_the_job_running(client: Client) -> None:
    job = client.submit(JobSpec(method=Method.SGD, epochs=100, batch_size=64), name="py-partial-watch")
    try:
        events = client.watch(job)
        first = next(events)
        assert isinstance(first, (StepMetrics, Job))
        events.close()  # leaves the call; the job goes on
        assert client.get(job).state is JobState.RUNNING
    finally:
        client.cancel(job)


def test_export_of_an_unknown_job_writes_nothing(client: Client, tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="job-missing"):
        client.export("job-missing", tmp_path / "w.safetensors")
    assert os.listdir(tmp_path) == []


def test_a_validation_split_reports_validation_metrics_apart_from_test(client: Client) -> None:
    spec = JobSpec(method=Method.SGD, epochs=1, batch_size=100, max_updates=3, seed=4, validation_fraction=0.2)
    job = client.submit(spec, name="py-validation")
    assert job.spec.validation_fraction == 0.2
    evaluations = [e for e in client.watch(job) if isinstance(e, Evaluation)]
    assert evaluations, "the final evaluation"
    last = evaluations[-1]
    assert last.validation_accuracy is not None and 0.0 <= last.validation_accuracy <= 1.0
    assert last.validation_loss is not None and last.validation_loss > 0
    # Without a split there is nothing to report.
    plain = client.wait(client.submit(JobSpec(method=Method.SGD, epochs=1, batch_size=100, max_updates=2), name="py-plain"))
    assert plain.last_evaluation is not None and plain.last_evaluation.validation_accuracy is None
