"""A watch survives a server restart: it resumes after the last step it
delivered, so every step arrives once, in order."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from _cluster import Cluster
from rwp_client import Client, Job, JobSpec, JobState, Method, StepMetrics


@pytest.fixture
def restartable(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = Cluster.start(
        tmp_path_factory.mktemp("restart"), workers=1, worker_flags=["--max-backoff-ms", "300"]
    )
    try:
        yield cluster
    finally:
        cluster.stop()


def test_a_watch_resumes_across_a_server_restart(restartable: Cluster) -> None:
    with Client(restartable.url, initial_backoff=0.1) as client:
        # 3 epochs of 15 updates (batch 64 on 1,000 images).
        job = client.submit(JobSpec(method=Method.SGD, epochs=3, batch_size=64, seed=7), name="py-restart")
        steps: list[int] = []
        last: Job | None = None
        restarted = False
        for event in client.watch(job, timeout=240):
            if isinstance(event, StepMetrics):
                steps.append(event.step)
                if event.step == 3 and not restarted:
                    restartable.restart_server()
                    restarted = True
            elif isinstance(event, Job):
                last = event
        assert restarted
        assert last is not None and last.state is JobState.SUCCEEDED, last
        assert steps == list(range(1, 46)), "every step once, in order, across the restart"
        assert client.get(job).step == 45
