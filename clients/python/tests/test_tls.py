"""TLS and mutual TLS: a server whose certificate (signed by a throw-away CA,
made with openssl) names only ``rwp.test``, and that requires client
certificates from the same CA."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from _cluster import Cluster
from rwp_client import Client, Unavailable


def _openssl(directory: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)


def _certificate(directory: Path, name: str, subject: str, extensions: str) -> None:
    """``name.key`` and ``name.pem``, signed by ``ca``."""
    (directory / f"{name}.ext").write_text(extensions)
    _openssl(directory, "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={subject}")
    _openssl(directory, "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-CAcreateserial", "-days", "2", "-out", f"{name}.pem", "-extfile", f"{name}.ext")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("pki")
    _openssl(directory, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=rwp test CA",
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    _certificate(directory, "server", "rwp.test", "subjectAltName=DNS:rwp.test\nextendedKeyUsage=serverAuth\n")
    _certificate(directory, "client", "py-client", "extendedKeyUsage=clientAuth\n")
    return directory


@pytest.fixture(scope="module")
def address(pki: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``https://127.0.0.1:PORT`` of a server that requires client certificates."""
    flags = ["--tls-cert", str(pki / "server.pem"), "--tls-key", str(pki / "server.key"),
             "--tls-client-ca", str(pki / "ca.pem")]
    cluster = Cluster.start(tmp_path_factory.mktemp("tls"), workers=0, server_flags=flags)
    try:
        yield cluster.url.replace("http://", "https://")
    finally:
        cluster.stop()


def test_mutual_tls_with_the_servers_name(pki: Path, address: str) -> None:
    with Client(address, tls_ca=pki / "ca.pem", tls_cert=pki / "client.pem", tls_key=pki / "client.key",
                tls_domain="rwp.test") as client:
        assert client.list() == []
    # PEM bytes instead of paths; a bare host:port speaks TLS when given TLS settings.
    bare = address.removeprefix("https://")
    with Client(bare, tls_ca=(pki / "ca.pem").read_bytes(), tls_cert=(pki / "client.pem").read_bytes(),
                tls_key=(pki / "client.key").read_bytes(), tls_domain="rwp.test") as client:
        assert client.list() == []


@pytest.mark.parametrize(
    "refused",
    [
        pytest.param({"tls_domain": None}, id="certificate-not-for-the-address"),
        pytest.param({"tls_ca": None}, id="public-roots-do-not-know-the-ca"),
        pytest.param({"tls_cert": None, "tls_key": None}, id="no-client-certificate"),
        pytest.param({"plaintext": True}, id="plaintext"),
    ],
)
def test_a_failed_handshake_is_unavailable(pki: Path, address: str, refused: dict[str, object]) -> None:
    settings: dict[str, object] = {"tls_ca": pki / "ca.pem", "tls_cert": pki / "client.pem",
                                   "tls_key": pki / "client.key", "tls_domain": "rwp.test"}
    target = address
    if refused.pop("plaintext", False):
        settings = {}
        target = address.replace("https://", "http://")
    settings |= refused
    with Client(target, attempts=1, timeout=10, **settings) as client:  # type: ignore[arg-type]
        with pytest.raises(Unavailable, match="cannot reach the server"):
            client.list()
