"""A job's life after it ends, through the client: resumed for longer,
started from another job's weights, labelled, deleted."""

from __future__ import annotations

import dataclasses
import io
import time
from pathlib import Path

import pytest

from _cluster import Cluster

from rwp_client import Client, DeadlineExceeded, FailedPrecondition, JobSpec, JobState, Method, NotFound

CAPPED = JobSpec(method=Method.M_ARWP, epochs=1, batch_size=128, max_updates=3, seed=5)


def test_a_job_resumed_past_its_cap_goes_on_to_the_new_one(client: Client) -> None:
    job = client.submit(CAPPED, name="py-capped", labels={"suite": "python", "case": "resume"})
    assert client.wait(job).state is JobState.SUCCEEDED
    with pytest.raises(FailedPrecondition, match="has made all its 3 updates"):
        client.resume(job)
    resumed = client.resume(job, max_updates=6)
    assert (resumed.state, resumed.step, resumed.total_updates) == (JobState.RUNNING, 3, 6)
    assert resumed.spec.max_updates == 6
    ended = client.wait(resumed)
    assert (ended.state, ended.step) == (JobState.SUCCEEDED, 6)
    assert ended.labels == {"case": "resume", "suite": "python"}


def test_init_from_labels_filter_and_delete(client: Client) -> None:
    source = client.submit(CAPPED, name="py-source", labels={"suite": "python", "case": "init"})
    client.wait(source)
    tuned = client.submit(
        dataclasses.replace(CAPPED, seed=6), name="py-tuned", init_from=source, labels={"suite": "python"}
    )
    assert tuned.init_from == source.id
    assert client.wait(tuned).state is JobState.SUCCEEDED
    labelled = [j.id for j in client.list(labels={"suite": "python", "case": "init"})]
    assert labelled == [source.id]
    assert tuned.id in [j.id for j in client.list(labels={"suite": "python"})]

    client.delete(tuned)
    with pytest.raises(NotFound):
        client.get(tuned)
    assert tuned.id not in [j.id for j in client.list()]
    running = client.submit(dataclasses.replace(CAPPED, max_updates=None, epochs=50), name="py-long")
    with pytest.raises(FailedPrecondition, match="cancel it first"):
        client.delete(running)
    client.cancel(running)
    client.delete(running)


def test_logs_and_workers(client: Client) -> None:
    job = client.submit(CAPPED, name="py-logged")
    entries = list(client.logs(job, follow=True, timeout=120))
    assert [e.seq for e in entries] == list(range(1, len(entries) + 1))
    assert entries[0].kind == "submitted" and entries[-1].kind == "succeeded"
    leased = [e for e in entries if e.kind == "leased"]
    assert leased and all(e.worker for e in leased), "each lease names its worker"
    assert [e.seq for e in client.logs(job)] == [e.seq for e in entries], "the finished log is complete"

    workers = client.workers()
    assert len(workers) >= 2 and all(w.connected and w.device == "cpu" for w in workers), workers
    assert sum(w.tasks_done for w in workers) >= 3
    assert {e.worker for e in leased} <= {w.name for w in workers}



def test_a_job_without_workers_says_so_in_its_record(tmp_path: Path) -> None:
    # A server of its own, with no worker: the job waits and says why.
    alone = Cluster.start(tmp_path, workers=0)
    try:
        with Client(alone.url) as client:
            job = client.submit(CAPPED, name="py-alone")
            deadline = time.monotonic() + 30
            while client.get(job).waiting is None:
                assert time.monotonic() < deadline, "the job never said it waits"
                time.sleep(0.1)
            waiting = client.get(job).waiting
            assert waiting is not None and waiting.startswith("no worker is connected")
            assert any(e.kind == "no-workers" for e in client.logs(job))
            # The progress helper says so too (its first line; then it times out).
            out = io.StringIO()
            with pytest.raises(DeadlineExceeded):
                client.progress(job, display="lines", out=out, timeout=1.5)
            assert "waiting: no worker is connected" in out.getvalue(), out.getvalue()
    finally:
        alone.stop()
