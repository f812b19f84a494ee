"""The installed package type-checks under ``mypy --strict`` (py.typed), the
generated protobuf stubs included."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_the_package_passes_mypy_strict(tmp_path: Path) -> None:
    # Run outside the source tree, so mypy checks the installed package.
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--python-version", "3.11", "-p", "rwp_client"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Success: no issues found" in result.stdout
