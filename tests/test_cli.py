"""The command line: flags from the directive table, exit status 2 on bad values, and the real
`python -m asyncmpm` process started, queried with curl and stopped with SIGTERM."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from asyncmpm import MPM
from asyncmpm.config.argv import build_parser, describe_directives, parse_args
from asyncmpm.config.directives import DIRECTIVES

ROOT = Path(__file__).resolve().parents[1]
APPS = str(ROOT / "tests" / "apps.py")


def test_defaults_follow_the_mpm() -> None:
    prefork, _ = parse_args([]).limits()
    worker, _ = parse_args(["--mpm", "worker"]).limits()
    assert (prefork.start_servers, prefork.min_spare, prefork.max_spare,
            prefork.max_request_workers, prefork.server_limit) == (5, 5, 10, 256, 256)
    assert (worker.start_servers, worker.min_spare, worker.max_spare, worker.threads_per_child,
            worker.max_request_workers, worker.server_limit) == (3, 75, 250, 25, 400, 16)
    assert parse_args([]).mpm is MPM.PREFORK


@pytest.mark.parametrize("d", DIRECTIVES, ids=lambda d: d.name)
def test_every_directive_is_a_flag(d: object) -> None:
    from asyncmpm.config.directives import Directive

    assert isinstance(d, Directive)
    if d.kind == "bool":
        assert getattr(parse_args([f"--no-{d.flag[2:]}"]), d.field) is False
        return
    number = max(7, int(d.minimum or 0)) if d.kind == "int" else 2.5
    config = parse_args(["--mpm", "worker", d.flag, str(number)])
    assert getattr(config, d.field) == number


def test_help_names_every_directive_and_its_default() -> None:
    text = build_parser().format_help()
    for d in DIRECTIVES:
        assert d.flag in text
        assert d.name in text
    assert "StartServers: child processes created at startup [default: prefork 5, worker 3]" \
        in " ".join(text.split())


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["--max-request-workers", "abc"], "--max-request-workers"),
        (["--listen-backlog", "0"], "--listen-backlog"),
        (["--listen", "nowhere:port"], "--listen"),
        (["--status-allow", "10.0.0.0/33"], "--status-allow"),
        (["--timeout", "-1"], "--timeout"),
        (["--status-path", "server-status"], "--status-path"),
        (["--request-read-timeout", "head=1"], "--request-read-timeout"),
    ],
)
def test_bad_values_exit_2_naming_the_flag(
    argv: list[str], flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        parse_args(argv)
    assert exc.value.code == 2
    assert flag in capsys.readouterr().err


def test_keep_alive_timeout_accepts_ms() -> None:
    assert parse_args(["--keep-alive-timeout", "500ms"]).keep_alive_timeout == 0.5


@pytest.mark.parametrize(
    ("argv", "code", "clamped"),
    [
        (["--max-request-workers", "300"], "AH00180", ("max_request_workers", 256)),
        (["--mpm", "worker", "--max-request-workers", "150", "--threads-per-child", "40"],
         "AH00316", ("max_request_workers", 120)),
        (["--mpm", "worker", "--threads-per-child", "80"], "AH00310", ("threads_per_child", 64)),
        (["--start-servers", "0"], "AH00184", ("start_servers", 1)),
    ],
)
def test_startup_adjustments_warn_like_httpd(
    argv: list[str], code: str, clamped: tuple[str, int]
) -> None:
    limits, warnings = parse_args(argv).limits()
    assert any(w.startswith(code) for w in warnings), warnings
    assert getattr(limits, clamped[0]) == clamped[1]


def test_directive_docs_are_generated() -> None:
    doc = (ROOT / "docs" / "directives.md").read_text()
    assert describe_directives() in doc, "regenerate docs/directives.md (see its first line)"


# --------------------------------------------------------------------------- the real process
def start(*args: str) -> tuple[subprocess.Popen[str], int, list[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "asyncmpm", "--listen", "127.0.0.1:0", "--log-format", "json",
         *args],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if "resuming normal operations" in line:
            port = int(re.search(r"127\.0\.0\.1:(\d+)", line).group(1))  # type: ignore[union-attr]
            return proc, port, lines
    proc.kill()
    proc.wait()
    raise AssertionError("server did not start:\n" + "".join(lines))


@pytest.fixture
def curl() -> str:
    path = shutil.which("curl")
    if path is None:
        pytest.skip("curl is not installed")
    return path


@pytest.mark.parametrize("mpm", ["prefork", "worker"])
def test_python_m_asyncmpm_serves_and_stops_cleanly(mpm: str, curl: str) -> None:
    proc, port, lines = start("--mpm", mpm, "--start-servers", "2", APPS)
    try:
        tree = psutil.Process(proc.pid).children(recursive=True)
        assert len(tree) >= 3  # zygote + children
        out = subprocess.run([curl, "-sS", f"http://127.0.0.1:{port}/whoami"],
                             capture_output=True, text=True, timeout=30, check=True)
        who = json.loads(out.stdout)
        assert who["multithread"] is (mpm == "worker")
        assert who["pid"] in {p.pid for p in tree}
    finally:
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, rest
    # The JSON error log is one object per line.
    for line in (lines + rest.splitlines()):
        if line.strip():
            json.loads(line)
    assert not [p for p in tree if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


def test_demo_app_without_app_argument(curl: str) -> None:
    proc, port, _ = start("--start-servers", "1")
    try:
        out = subprocess.run([curl, "-sS", f"http://127.0.0.1:{port}/"], capture_output=True,
                             text=True, timeout=30, check=True)
        assert "asyncmpm is serving" in out.stdout
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
    assert proc.returncode == 0


@pytest.mark.parametrize("preload", [True, False], ids=["preload", "no-preload"])
def test_app_import_error_stops_the_server(tmp_path: Path, preload: bool) -> None:
    broken = tmp_path / "broken.py"
    broken.write_text("raise ImportError('this app cannot be imported')\n")
    args = [sys.executable, "-m", "asyncmpm", "--listen", "127.0.0.1:0", str(broken)]
    if not preload:
        args.insert(3, "--no-preload")
    result = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 1
    assert "this app cannot be imported" in result.stdout + result.stderr
