"""apachectl-style control: -t, --pid-file, and -k start|stop|restart|graceful|graceful-stop."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]
APP = '''
import os
VERSION = "{version}"

def application(environ, start_response):
    body = f"{{VERSION}} {{os.getpid()}}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]
'''


def ctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "asyncmpm", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=False)


def wait_until(predicate: object, timeout: float = 30) -> None:
    """Poll another process's state (pid file, answers) with a deadline."""
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_configtest() -> None:
    ok = ctl("-t", "--mpm", "worker", "--max-request-workers", "150", "--threads-per-child", "40")
    assert ok.returncode == 0
    assert "Syntax OK" in ok.stderr
    assert "AH00316" in ok.stderr  # httpd's adjustment warning, as -t shows it
    bad = ctl("-t", "--max-request-workers", "lots")
    assert bad.returncode == 2
    assert "--max-request-workers" in bad.stderr


def test_k_without_a_running_server(tmp_path: Path) -> None:
    pid_file = tmp_path / "asyncmpm.pid"
    result = ctl("-k", "stop", "--pid-file", str(pid_file))
    assert result.returncode == 1
    assert "not running" in result.stderr
    # A bad option prevents the signal, as apachectl's config check does.
    assert ctl("-k", "stop", "--pid-file", str(pid_file), "--timeout", "x").returncode == 2


def test_k_start_graceful_stop(tmp_path: Path) -> None:
    pid_file = tmp_path / "asyncmpm.pid"
    app = tmp_path / "versioned.py"
    app.write_text(APP.format(version="v0"))
    port_file = tmp_path / "port"
    # Pick a free port for the detached server.
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    port_file.write_text(str(port))
    common = ["--pid-file", str(pid_file), "--listen", f"127.0.0.1:{port}",
              "--start-servers", "2", f"{app}:application"]
    started = ctl("-k", "start", *common)
    assert started.returncode == 0, started.stderr
    pid = int(pid_file.read_text())
    try:
        assert httpx.get(f"http://127.0.0.1:{port}/").text.startswith("v0 ")
        assert ctl("-k", "start", *common).returncode == 1  # already running
        app.write_text(APP.format(version="v1"))
        assert ctl("-k", "graceful", *common).returncode == 0
        wait_until(lambda: httpx.get(f"http://127.0.0.1:{port}/").text.startswith("v1 "))
        assert ctl("-k", "stop", *common).returncode == 0
        wait_until(lambda: not pid_file.exists())
        wait_until(lambda: not _alive(pid))
    finally:
        if _alive(pid):
            os.kill(pid, 9)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (our grandchild after start_new_session is reparented) counts as gone.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("command", ["graceful-stop", "restart"])
def test_k_restart_and_graceful_stop(tmp_path: Path, command: str) -> None:
    pid_file = tmp_path / "asyncmpm.pid"
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    common = ["--pid-file", str(pid_file), "--listen", f"127.0.0.1:{port}",
              "--start-servers", "1"]
    assert ctl("-k", "start", *common).returncode == 0
    pid = int(pid_file.read_text())
    try:
        assert ctl("-k", command, *common).returncode == 0
        if command == "restart":
            wait_until(lambda: b"asyncmpm is serving" in httpx.get(
                f"http://127.0.0.1:{port}/").content)
            assert _alive(pid)
            assert ctl("-k", "stop", *common).returncode == 0
        wait_until(lambda: not _alive(pid))
        assert not pid_file.exists()
    finally:
        if _alive(pid):
            os.kill(pid, 9)
