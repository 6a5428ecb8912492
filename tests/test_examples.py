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


def test_tls_http2_example(tmp_path: Path) -> None:
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "server.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "server.key"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "tls_http2.py"), str(tmp_path / "server.pem"),
         str(tmp_path / "server.key"), str(tmp_path / "ca.pem")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert any(line.startswith("serving on https://127.0.0.1:") for line in lines)
    assert sum(line.startswith("HTTP/2 Hello from pid ") for line in lines) == 3
    assert lines[-1] == "stopped"
