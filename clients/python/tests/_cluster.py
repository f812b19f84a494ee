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

    def __init__(self, name: str, args: Sequence[str | os.PathLike[str]], log: Path, *, stdout: int) -> None:
        self.name = name
        self.log = log
        env = {**os.environ, "RUST_LOG": "warn"}
        with log.open("ab") as stderr:
            self.popen = subprocess.Popen(
                [os.fspath(a) for a in args], stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr, env=env
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
        return int(self.popen.returncode)


def _start_server(root: Path, data_dir: Path, listen: str, flags: Sequence[str]) -> tuple[Proc, str]:
    """Starts rwp-server and returns it with the address it reports."""
    server = Proc(
        "rwp-server",
        [binary("rwp-server"), "--listen", listen, "--data-dir", data_dir, *SERVER_FLAGS, *flags],
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
    return server, line[len(prefix) :].strip()


@dataclass
class Cluster:
    """A server and its workers; ``url`` is the server's ``http://`` address."""

    root: Path
    server: Proc
    server_flags: Sequence[str]
    workers: list[Proc]
    url: str
    data_dir: Path

    @classmethod
    def start(
        cls, root: Path, *, workers: int, server_flags: Sequence[str] = (), worker_flags: Sequence[str] = ()
    ) -> Cluster:
        data_dir = root / "data"
        data_dir.mkdir(parents=True)
        server, address = _start_server(root, data_dir, "127.0.0.1:0", server_flags)
        url = f"http://{address}"
        cluster = cls(root=root, server=server, server_flags=server_flags, workers=[], url=url, data_dir=data_dir)
        for i in range(workers):
            args: list[str | os.PathLike[str]] = [
                binary("rwp-worker"), "--server", url, "--device", "cpu", "--threads", "1", "--name", f"py-worker-{i}",
                *worker_flags,
            ]
            cluster.workers.append(Proc(f"rwp-worker {i}", args, root / f"worker-{i}.log", stdout=subprocess.DEVNULL))
        return cluster

    def restart_server(self) -> None:
        """Stops the server (SIGTERM) and starts it again on the same port and
        data directory; it resumes its jobs from their checkpoints."""
        assert self.server.stop() == 0, "rwp-server exits cleanly on SIGTERM"
        address = self.url.removeprefix("http://")
        self.server, _ = _start_server(self.root, self.data_dir, address, self.server_flags)

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
