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


LOGGING_APP = '''
import os

def application(environ, start_response):
    if environ["PATH_INFO"] == "/boom":
        raise RuntimeError("boom for the error log")
    start_response("200 OK", [("Content-Type", "text/plain"), ("X-Pid", str(os.getpid()))])
    return [b"ok"]
'''


def test_config_file_logs_follow_logrotate(tmp_path: Path) -> None:
    """ErrorLog/LogFormat/CustomLog/PidFile from an httpd.conf, relative to ServerRoot; a
    graceful restart after logrotate's rename writes to fresh files."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (tmp_path / "logs").mkdir()
    (tmp_path / "app.py").write_text(LOGGING_APP)
    conf = tmp_path / "httpd.conf"
    conf.write_text(
        f"ServerRoot {tmp_path}\n"
        f"Listen 127.0.0.1:{port}\n"
        "PidFile logs/httpd.pid\n"
        "StartServers 1\nMinSpareServers 1\nMaxSpareServers 2\n"
        "LogLevel info\n"
        "ErrorLog logs/error.log\n"
        'LogFormat "%h %>s %U %{X-Pid}o=%P" short\n'
        "CustomLog logs/access.log short\n"
        f"WSGIScriptAlias / {tmp_path / 'app.py'}\n"
    )
    logs = tmp_path / "logs"
    pid_file = logs / "httpd.pid"
    assert ctl("-k", "start", "--config", str(conf)).returncode == 0
    pid = int(pid_file.read_text())
    url = f"http://127.0.0.1:{port}"
    try:
        assert httpx.get(f"{url}/").status_code == 200
        assert httpx.get(f"{url}/boom").status_code == 500
        wait_until(lambda: "boom for the error log" in (logs / "error.log").read_text())
        error_log = (logs / "error.log").read_text()
        assert "resuming normal operations" in error_log
        assert "child started" in error_log
        # Each line is written just after its response: wait for both.
        wait_until(lambda: len((logs / "access.log").read_text().splitlines()) >= 2)
        lines = (logs / "access.log").read_text().splitlines()
        assert lines[0].startswith("127.0.0.1 200 / ")
        served_by, logged = lines[0].split()[-1].split("=")
        assert served_by == logged  # %P is the child that served it
        assert lines[1].startswith("127.0.0.1 500 /boom ")
        # logrotate: move the files away, then a graceful restart reopens them.
        for name in ("error.log", "access.log"):
            (logs / name).rename(logs / f"{name}.1")
        assert ctl("-k", "graceful", "--config", str(conf)).returncode == 0
        wait_until(lambda: (logs / "error.log").exists()
                   and "AH00171" in (logs / "error.log").read_text())
        wait_until(lambda: "gen=1" in (logs / "error.log").read_text()
                   or '"gen": 1' in (logs / "error.log").read_text())
        assert httpx.get(f"{url}/").status_code == 200
        assert ctl("-k", "stop", "--config", str(conf)).returncode == 0
        wait_until(lambda: not _alive(pid))
        assert (logs / "access.log").read_text().startswith("127.0.0.1 200 / ")
        assert "child stopped" in (logs / "error.log").read_text()
        assert "AH00171" not in (logs / "error.log.1").read_text()
        assert len((logs / "access.log.1").read_text().splitlines()) == 2
    finally:
        if _alive(pid):
            os.kill(pid, 9)


@pytest.mark.parametrize("mode", [[], ["-k", "start"]], ids=["foreground", "k-start"])
def test_error_log_that_cannot_be_opened(tmp_path: Path, mode: list[str]) -> None:
    target = tmp_path / "missing-dir" / "error.log"
    result = ctl(*mode, "--pid-file", str(tmp_path / "pid"), "--listen", "127.0.0.1:0",
                 "--error-log", str(target))
    assert result.returncode == 1
    assert f"AH00091: could not open error log file {target}" in result.stderr
    assert not (tmp_path / "pid").exists()
