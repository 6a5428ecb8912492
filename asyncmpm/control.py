"""apachectl's ``-k`` and ``-t``: signal a running server found through its pid file."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

__all__ = ["SIGNALS", "configtest", "read_pid", "signal_server", "start_detached"]

SIGNALS = {
    "stop": signal.SIGTERM,
    "restart": signal.SIGHUP,
    "graceful": signal.SIGUSR1,
    "graceful-stop": signal.SIGWINCH,
}


def read_pid(pid_file: str) -> int | None:
    """The pid in the file if that process is alive, else None."""
    try:
        pid = int(Path(pid_file).read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid
    return pid


def signal_server(command: str, pid_file: str | None) -> int:
    """Send the signal for ``command``; returns the exit status to use."""
    if pid_file is None:
        print("asyncmpm: -k needs --pid-file to find the server", file=sys.stderr)
        return 1
    pid = read_pid(pid_file)
    if pid is None:
        why = "no pid file" if not Path(pid_file).exists() else "stale pid file"
        print(f"asyncmpm ({why} {pid_file}) not running", file=sys.stderr)
        return 1
    os.kill(pid, SIGNALS[command])
    return 0


def start_detached(argv: Sequence[str], pid_file: str | None, error_log: str | None = None,
                   timeout: float = 30.0) -> int:
    """``-k start``: run the same command line in the background, as apachectl does.

    Its output goes to the ErrorLog (or next to the pid file without one), so a failure before
    the server takes over stderr is still written down, and shown here.
    """
    if pid_file is None:
        print("asyncmpm: -k start needs --pid-file", file=sys.stderr)
        return 1
    running = read_pid(pid_file)
    if running is not None:
        print(f"asyncmpm (pid {running}) already running", file=sys.stderr)
        return 1
    args = list(argv)
    index = args.index("-k")
    del args[index : index + 2]
    with contextlib.suppress(FileNotFoundError):
        Path(pid_file).unlink()  # stale
    log_path = error_log or f"{pid_file}.log"
    try:
        log = open(log_path, "ab")  # noqa: SIM115 - closed below, once the child has it
    except OSError as exc:
        print(f"asyncmpm: AH00091: could not open error log file {log_path}: {exc.strerror}",
              file=sys.stderr)
        return 1
    with log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "asyncmpm", *args],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if read_pid(pid_file) == proc.pid:
            print(f"asyncmpm started (pid {proc.pid}); error log: {log_path}", file=sys.stderr)
            return 0
        if proc.poll() is not None:
            print(f"asyncmpm: the server exited with status {proc.returncode}; the end of "
                  f"{log_path}:", file=sys.stderr)
            with contextlib.suppress(OSError), open(log_path, errors="replace") as f:
                print("".join(f.readlines()[-10:]), end="", file=sys.stderr)
            return 1
        time.sleep(0.05)  # another process: poll its pid file
    print("asyncmpm: the server did not start in time", file=sys.stderr)
    return 1


def configtest(warnings: list[str]) -> int:
    for warning in warnings:
        print(warning, file=sys.stderr)
    print("Syntax OK", file=sys.stderr)
    return 0
