"""ruff and mypy --strict stay clean: checked by the same command CI runs."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "command",
    [[sys.executable, "-m", "ruff", "check", "."], [sys.executable, "-m", "mypy", "--strict"]],
    ids=["ruff", "mypy"],
)
def test_static_checks(command: list[str]) -> None:
    tool = command[2]
    if shutil.which(tool) is None and subprocess.run(
        [sys.executable, "-m", tool, "--version"], capture_output=True, check=False
    ).returncode:
        pytest.skip(f"{tool} is not installed (pip install -e '.[test]')")
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300,
                            check=False)
    assert result.returncode == 0, result.stdout + result.stderr
