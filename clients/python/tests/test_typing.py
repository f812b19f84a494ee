"""Typing is part of the API: the installed package passes ``mypy --strict``
(py.typed, the generated protobuf stubs included), and so does code that uses
it the way these tests do."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def run_mypy_strict(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--python-version", "3.11", "--cache-dir", str(cwd / "cache"), *args],
        cwd=cwd, capture_output=True, text=True, timeout=300,
    )


def mypy_strict(*args: str, cwd: Path) -> None:
    result = run_mypy_strict(*args, cwd=cwd)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Success: no issues found" in result.stdout


def test_the_package_passes_mypy_strict(tmp_path: Path) -> None:
    # Run outside the source tree, so mypy checks the installed package.
    mypy_strict("-p", "rwp_client", cwd=tmp_path)


def test_the_tests_use_the_api_as_typed(tmp_path: Path) -> None:
    # All but the TorchScript tests, whose torch import would take mypy long.
    mypy_strict(*(str(p) for p in sorted(TESTS.glob("*.py")) if p.name != "test_torchscript.py"), cwd=tmp_path)


def test_enum_names_are_typed_and_the_fields_hold_members(tmp_path: Path) -> None:
    # A name is checked as a Literal (a misspelling is a type error); what the
    # spec holds is typed as the member, however it was given.
    (tmp_path / "names.py").write_text(textwrap.dedent("""\
        from typing import assert_type
        from rwp_client import JobSpec, LrSchedule, Method, Search, SearchMode

        spec = JobSpec(method="m-arwp", model="mlp", lr_schedule="constant", non_finite="skip")
        assert_type(spec.method, Method)
        assert_type(spec.lr_schedule, LrSchedule | None)
        assert_type(Search(params=(), mode="random").mode, SearchMode)
        JobSpec(method="m_arwp")
    """))
    result = run_mypy_strict("names.py", cwd=tmp_path)
    errors = [line for line in result.stdout.splitlines() if ": error:" in line]
    assert len(errors) == 1 and errors[0].startswith("names.py:8: error: Argument \"method\""), result.stdout
