"""Failures are typed (one hierarchy, mapped from the gRPC status) and carry the
server's message, which names the problem."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import grpc
import pytest

from _cluster import Cluster
from rwp_client import (
    Client,
    Dataset,
    InvalidArgument,
    JobSpec,
    JobState,
    Method,
    Model,
    NotFound,
    RwpError,
    Unavailable,
)

SPEC = JobSpec(method=Method.SGD, epochs=1, batch_size=64, max_updates=1)


@pytest.mark.parametrize(
    ("change", "field", "value"),
    [
        ({"lambda_": 1.5}, "lambda", "1.5"),
        ({"batch_size": 0}, "batch_size", "0"),
        ({"beta": 1.0}, "beta", "1"),
        ({"clean_shards": 3}, "clean_shards", "3"),
    ],
)
def test_an_out_of_range_value_is_invalid_argument_naming_the_field(
    client: Client, change: dict[str, Any], field: str, value: str
) -> None:
    spec = dataclasses.replace(SPEC, method=Method.M_RWP, **change)
    with pytest.raises(InvalidArgument) as raised:
        client.submit(spec)
    error = raised.value
    assert error.code is grpc.StatusCode.INVALID_ARGUMENT, "the server refused it, not the client"
    assert f"{field} = {value}" in error.message, error.message
    assert isinstance(error, ValueError) and isinstance(error, RwpError)


def test_data_the_workers_cannot_read_fails_the_job_naming_the_file(client: Client) -> None:
    # The server never reads a dataset (only the workers need data_dir), so
    # the submit is accepted; the workers cannot open the files and the job
    # fails with the missing file's name, never a path of theirs.
    spec = dataclasses.replace(SPEC, dataset=Dataset.CIFAR10, data_dir="/nonexistent/cifar")
    job = client.wait(client.submit(spec), timeout=120)
    assert job.state is JobState.FAILED, job
    assert job.error is not None and "cannot read data_batch_1.bin in data_dir" in job.error, job.error
    assert "/nonexistent" not in job.error


def test_values_the_wire_cannot_carry_are_refused_by_name_before_sending(client: Client) -> None:
    changes: list[tuple[dict[str, Any], str]] = [({"epochs": -1}, "epochs"), ({"seed": 2**64}, "seed"), ({"lr": "fast"}, "lr")]
    for change, field in changes:
        with pytest.raises(InvalidArgument, match=f"^{field} = ") as raised:
            client.submit(dataclasses.replace(SPEC, **change))
        assert raised.value.code is None, "refused by the client"
    with pytest.raises(InvalidArgument, match="data_dir"):
        client.submit(dataclasses.replace(SPEC, data_dir=""))
    with pytest.raises(InvalidArgument, match="Model.TORCHSCRIPT"):
        client.submit(SPEC, model="net.pt")
    with pytest.raises(InvalidArgument, match="model_file"):
        client.submit(dataclasses.replace(SPEC, model=Model.TORCHSCRIPT))


def test_an_unknown_job_is_not_found_for_every_call(client: Client) -> None:
    with pytest.raises(NotFound, match="job-missing") as raised:
        client.get("job-missing")
    assert raised.value.code is grpc.StatusCode.NOT_FOUND
    assert isinstance(raised.value, LookupError)
    with pytest.raises(NotFound):
        client.cancel("job-missing")
    with pytest.raises(NotFound):
        list(client.watch("job-missing"))
    with pytest.raises(NotFound):
        client.wait("job-missing")


def test_an_unreachable_server_is_unavailable_naming_the_address() -> None:
    started = time.monotonic()
    with Client("http://127.0.0.1:1", attempts=2, initial_backoff=0.05, timeout=5) as client:
        with pytest.raises(Unavailable, match="127.0.0.1:1") as raised:
            client.list()
    assert isinstance(raised.value, ConnectionError)
    assert time.monotonic() - started < 10


def test_bad_client_settings_are_refused_by_name(cluster: Cluster) -> None:
    with pytest.raises(InvalidArgument, match="address"):
        Client("ftp://example.org:21")
    with pytest.raises(InvalidArgument, match="tls_cert and tls_key"):
        Client("https://example.org:443", tls_cert=b"-----BEGIN CERTIFICATE-----")
    with pytest.raises(InvalidArgument, match="http://"):
        Client(cluster.url, tls_ca=b"-----BEGIN CERTIFICATE-----")
    with pytest.raises(InvalidArgument, match="tls_ca: cannot read /nonexistent/ca.pem"):
        Client("https://example.org:443", tls_ca="/nonexistent/ca.pem")
    with pytest.raises(InvalidArgument, match="token"):
        Client(cluster.url, token=" ")
    with Client(cluster.url) as client, pytest.raises(InvalidArgument, match="job"):
        client.get("")
