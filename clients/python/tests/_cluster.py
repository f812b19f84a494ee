"""Real processes on loopback: an ``rwp-server`` on a free port with a temporary
data directory, and ``rwp-worker`` s on the CPU, started from the binaries in
``RWP_BIN_DIR`` (default ``<repo>/target/debug``) and stopped with SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
# The settings the Rust integration tests use (tests/common/cluster.rs): fast
# leases, frequent checkpoints, one libtorch thread, evaluation at the end.
SERVER_FLAGS = ("--lease-timeout-ms", "1500", "--checkpoint-every", "2", "--torch-threads", "1")


def bin_dir() -> Path:
    return Path(os.environ.get("RWP_BIN_DIR") or REPO / "target" / "debug").resolve()


def binary(name: str) -> Path:
    """The binary, waiting a little for one that is being rebuilt."""
    path = bin_dir() / name
    deadline = time.monotonic() + 60
    while not os.access(path, os.X_OK):
        if time.monotonic() > deadline:
            pytest.fail(f"{path} does not exist: build it (cargo build --workspace --bins) or set RWP_BIN_DIR")
        time.sleep(1)
    return path


class Proc:
    """A child process with its stderr in a log file; stopped with SIGTERM."""

    def __init__(self, name: str, args: Sequence[str | os.PathLike[str]], log: Path, **kwargs: object) -> None:
        self.name = name
        self.log = log
        env = {**os.environ, "RUST_LOG": "warn"}
        with log.open("ab") as stderr:
            self.popen = subprocess.Popen(
                [os.fspath(a) for a in args], stdin=subprocess.DEVNULL, stderr=stderr, env=env, **kwargs  # type: ignore[call-overload]
            )

    def stop(self, timeout: float = 20) -> int:
        """SIGTERM, then waits; SIGKILL if it does not exit in time (a test
        failure: the binaries drain and exit on SIGTERM)."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
                raise AssertionError(f"{self.name} did not exit within {timeout}s of SIGTERM") from None
        return self.popen.returncode


@dataclass
class Cluster:
    """A server and its workers; ``url`` is the server's ``http://`` address."""

    server: Proc
    workers: list[Proc]
    url: str
    data_dir: Path

    @classmethod
    def start(
        cls, root: Path, *, workers: int, server_flags: Sequence[str] = (), worker_token: Path | None = None
    ) -> Cluster:
        data_dir = root / "data"
        data_dir.mkdir(parents=True)
        server = Proc(
            "rwp-server",
            [binary("rwp-server"), "--listen", "127.0.0.1:0", "--data-dir", data_dir, *SERVER_FLAGS, *server_flags],
            root / "server.log",
            stdout=subprocess.PIPE,
        )
        assert server.popen.stdout is not None
        line = server.popen.stdout.readline().decode()
        server.popen.stdout.close()
        prefix = "rwp-server listening on "
        if not line.startswith(prefix):
            server.stop()
            raise AssertionError(f"rwp-server did not start: {line!r}; log:\n{server.log.read_text()}")
        url = f"http://{line[len(prefix):].strip()}"
        cluster = cls(server=server, workers=[], url=url, data_dir=data_dir)
        for i in range(workers):
            args: list[str | os.PathLike[str]] = [
                binary("rwp-worker"), "--server", url, "--device", "cpu", "--threads", "1", "--name", f"py-worker-{i}"
            ]
            if worker_token is not None:
                args += ["--token-file", worker_token]
            cluster.workers.append(
                Proc(f"rwp-worker {i}", args, root / f"worker-{i}.log", stdout=subprocess.DEVNULL)
            )
        return cluster

    def stop(self) -> None:
        """Workers first, then the server; every one must exit cleanly."""
        codes = {w.name: w.stop() for w in self.workers}
        codes[self.server.name] = self.server.stop()
        failed = {name: code for name, code in codes.items() if code != 0}
        assert not failed, f"processes exited with non-zero codes: {failed}"


def new_token(name: str, role: str) -> tuple[str, str]:
    """A fresh token from ``rwp-server token new``, and its tokens-file entry."""
    out = subprocess.run(
        [binary("rwp-server"), "token", "new", "--name", name, "--role", role],
        check=True, capture_output=True, text=True,
    ).stdout
    token, _, entry = out.partition("\n")
    assert token.startswith("rwp_") and "[[token]]" in entry, out
    return token.strip(), entry
