"""Typing is part of the API: the installed package passes ``mypy --strict``
(py.typed, the generated protobuf stubs included), and so does code that uses
it the way these tests do."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def mypy_strict(*args: str, cwd: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--python-version", "3.11", "--cache-dir", str(cwd / "cache"), *args],
        cwd=cwd, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Success: no issues found" in result.stdout


def test_the_package_passes_mypy_strict(tmp_path: Path) -> None:
    # Run outside the source tree, so mypy checks the installed package.
    mypy_strict("-p", "rwp_client", cwd=tmp_path)


def test_the_tests_use_the_api_as_typed(tmp_path: Path) -> None:
    # All but the TorchScript tests, whose torch import would take mypy long.
    mypy_strict(*(str(p) for p in sorted(TESTS.glob("*.py")) if p.name != "test_torchscript.py"), cwd=tmp_path)
