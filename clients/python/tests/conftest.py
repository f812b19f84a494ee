"""Fixtures: one server with two workers for the session (see _cluster.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from _cluster import Cluster
from rwp_client import Client


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One server with two workers for the whole session."""
    c = Cluster.start(tmp_path_factory.mktemp("cluster"), workers=2)
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture
def client(cluster: Cluster) -> Iterator[Client]:
    with Client(cluster.url) as c:
        yield c
