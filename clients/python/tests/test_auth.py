"""A server with a tokens file: the bearer token on every call, owners, roles."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from _cluster import Cluster, new_token
from rwp_client import Client, JobSpec, JobState, Method, NotFound, PermissionDenied, Unauthenticated

ROLES = {"alice": "user", "bob": "user", "root": "admin", "runner": "worker"}


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, dict[str, str]]]:
    """A server with a tokens file and no workers (jobs stay running)."""
    root = tmp_path_factory.mktemp("secured")
    tokens: dict[str, str] = {}
    entries = []
    for name, role in ROLES.items():
        tokens[name], entry = new_token(name, role)
        entries.append(entry)
    tokens_file = root / "tokens.toml"
    tokens_file.write_text("\n".join(entries))
    cluster = Cluster.start(root, workers=0, server_flags=["--tokens-file", str(tokens_file)])
    try:
        yield cluster, tokens
    finally:
        cluster.stop()


SPEC = JobSpec(method=Method.SGD, epochs=1, batch_size=64)


def test_a_call_without_a_token_or_with_an_unknown_one_is_unauthenticated(
    secured: tuple[Cluster, dict[str, str]],
) -> None:
    cluster, _ = secured
    with Client(cluster.url) as anonymous, pytest.raises(Unauthenticated) as raised:
        anonymous.list()
    assert raised.value.code is grpc.StatusCode.UNAUTHENTICATED
    with Client(cluster.url, token="rwp_" + "0" * 64) as stranger, pytest.raises(Unauthenticated):
        stranger.submit(SPEC)


def test_jobs_belong_to_their_token(secured: tuple[Cluster, dict[str, str]]) -> None:
    cluster, tokens = secured
    with (
        Client(cluster.url, tokens["alice"]) as alice,
        Client(cluster.url, tokens["bob"]) as bob,
        Client(cluster.url, tokens["root"]) as admin,
    ):
        job = alice.submit(SPEC, name="alices")
        assert job.owner == "alice"
        assert alice.get(job.id).owner == "alice"
        assert job.id in [j.id for j in alice.list()]

        # Another user's job does not exist for bob; the admin sees it.
        assert job.id not in [j.id for j in bob.list()]
        with pytest.raises(NotFound):
            bob.get(job.id)
        with pytest.raises(NotFound):
            bob.cancel(job.id)
        assert job.id in [j.id for j in admin.list()]

        assert admin.cancel(job).state is JobState.CANCELLED
        assert alice.get(job).state is JobState.CANCELLED


def test_a_worker_token_may_not_use_the_job_api(secured: tuple[Cluster, dict[str, str]]) -> None:
    cluster, tokens = secured
    with Client(cluster.url, tokens["runner"]) as runner, pytest.raises(PermissionDenied):
        runner.list()
