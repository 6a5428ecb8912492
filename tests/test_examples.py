"""The examples in examples/ run as users would run them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["embed_asyncio.py", "embed_trio.py"])
def test_embedding_example_runs(name: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, str(ROOT / "examples" / name)], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert any(line.startswith("serving on 127.0.0.1:") for line in lines)
    assert any(line.startswith("Hello from pid ") for line in lines)
    assert lines[-1] == "stopped"
