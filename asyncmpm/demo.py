"""The built-in demo app: shows which MPM, process and thread served the request."""

from __future__ import annotations

import html
import os
import threading
from collections.abc import Callable, Iterable
from typing import Any


def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    busy, idle, processes = (environ.get("asyncmpm.stats") or "?,?,?").split(",")
    mpm = "worker" if environ.get("wsgi.multithread") else "prefork"
    rows = [
        ("MPM", mpm),
        ("Process", str(os.getpid())),
        ("Thread", threading.current_thread().name),
        ("Slot", str(environ.get("asyncmpm.slot", "?"))),
        ("Busy workers", busy),
        ("Idle workers", idle),
        ("Child processes", processes),
        ("Request", f"{environ['REQUEST_METHOD']} {environ.get('RAW_URI', '/')}"),
    ]
    # Values are padded to fixed widths so every response has the same length: load tools
    # such as ab count a changed length as a failed request.
    table = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(v[:40]):<40}</td></tr>" for k, v in rows
    )
    body = (
        "<!DOCTYPE html><html><head><title>asyncmpm</title></head><body>"
        f"<h1>asyncmpm is serving</h1><table>{table}</table></body></html>\n"
    ).encode()
    start_response("200 OK", [("Content-Type", "text/html; charset=utf-8"),
                              ("Content-Length", str(len(body)))])
    return [body]
