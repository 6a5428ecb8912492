"""The one WSGI app every server runs, so each workload costs the same Python work everywhere.

Standard library only: Apache's mod_wsgi embeds Debian's own Python, which cannot see the
packages of the Python that runs the benchmarks.

    /hello                 13 bytes, the cheapest possible request
    /sleep?ms=N            blocks N ms in time.sleep (blocking I/O: holds a slot, not a core)
    /cpu?ms=N              burns N ms of this thread's CPU time (holds a core)
    /stream?bytes=N&chunk=K  streams N bytes in K-byte chunks from a generator
    /upload                reads the request body to the end and answers its length

`asgi_hello` is a raw ASGI hello for uvicorn: the ceiling a Python front loop can reach.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Any
from urllib.parse import parse_qs

HELLO = b"Hello, world!"
_CHUNK = 65536


def _arg(environ: dict[str, Any], name: str, default: int) -> int:
    values = parse_qs(environ.get("QUERY_STRING", "")).get(name)
    return int(values[0]) if values else default


def _burn_cpu(seconds: float) -> None:
    """Spin until this thread has used `seconds` of CPU (thread time: other threads don't count)."""
    end = time.thread_time() + seconds
    x = 0
    while time.thread_time() < end:
        for i in range(200):
            x += i * i


def _stream(total: int, chunk: int) -> Iterator[bytes]:
    block = b"x" * chunk
    sent = 0
    while sent + chunk <= total:
        yield block
        sent += chunk
    if total > sent:
        yield block[: total - sent]


def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    path = environ.get("PATH_INFO", "/")
    if path == "/sleep":
        time.sleep(_arg(environ, "ms", 50) / 1000)
        body = HELLO
    elif path == "/cpu":
        _burn_cpu(_arg(environ, "ms", 5) / 1000)
        body = HELLO
    elif path == "/stream":
        total = _arg(environ, "bytes", 10 * 1024 * 1024)
        chunk = _arg(environ, "chunk", _CHUNK)
        start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                  ("Content-Length", str(total))])
        return _stream(total, chunk)
    elif path == "/upload":
        stream = environ["wsgi.input"]
        remaining = int(environ.get("CONTENT_LENGTH") or 0)
        received = 0
        while remaining > 0:
            data = stream.read(min(_CHUNK, remaining))
            if not data:
                break
            received += len(data)
            remaining -= len(data)
        body = str(received).encode()
    else:
        body = HELLO
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


async def asgi_hello(scope: dict[str, Any], receive: Callable[[], Awaitable[dict[str, Any]]],
                     send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
    """Raw ASGI hello world (no framework): what uvicorn alone can do, a ceiling, not a peer."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"),
                            (b"content-length", str(len(HELLO)).encode())]})
    await send({"type": "http.response.body", "body": HELLO})
