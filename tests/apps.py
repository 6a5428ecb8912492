"""WSGI applications the end-to-end tests serve (imported by spec in the children)."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from wsgiref.validate import validator

Environ = dict[str, Any]
StartResponse = Callable[..., Any]


def _text(start_response: StartResponse, body: bytes, status: str = "200 OK",
          ctype: str = "text/plain") -> list[bytes]:
    start_response(status, [("Content-Type", ctype), ("Content-Length", str(len(body)))])
    return [body]


def hello(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    return _text(start_response, b"Hello, world!\n")


def whoami(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    """Which process and thread served the request; ``?sleep=S`` holds the slot S seconds."""
    query = dict(p.partition("=")[::2] for p in environ["QUERY_STRING"].split("&") if p)
    if "sleep" in query:
        time.sleep(float(query["sleep"]))
    body = json.dumps({
        "pid": os.getpid(),
        "thread": threading.get_ident(),
        "multithread": environ["wsgi.multithread"],
        "multiprocess": environ["wsgi.multiprocess"],
    }).encode()
    return _text(start_response, body, ctype="application/json")


def environ_dump(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    keep = {k: v for k, v in environ.items() if isinstance(v, str | int | bool | tuple)}
    body = b""
    while chunk := environ["wsgi.input"].read(65536):
        body += chunk
    keep["body"] = body.decode("latin-1")
    return _text(start_response, json.dumps(keep).encode(), ctype="application/json")


def upload_digest(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    """Reads the body in pieces and answers its length and sha256 (large-upload tests)."""
    digest = hashlib.sha256()
    total = 0
    stream = environ["wsgi.input"]
    while True:
        chunk = stream.read(65536)
        if not chunk:
            break
        digest.update(chunk)
        total += len(chunk)
    return _text(start_response, f"{total} {digest.hexdigest()}".encode())


def download(environ: Environ, start_response: StartResponse) -> Iterator[bytes]:
    """``?mb=N`` streams N MiB of a known pattern from a generator (no Content-Length)."""
    mb = int(environ["QUERY_STRING"].partition("=")[2] or 1)
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    block = bytes(range(256)) * 4096  # 1 MiB
    for _ in range(mb):
        yield block


def stream_slowly(environ: Environ, start_response: StartResponse) -> Iterator[bytes]:
    """Yields 5 chunks 0.1 s apart: each must reach the client when produced."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    for i in range(5):
        yield f"chunk {i} at {time.monotonic():.3f}\n".encode()
        time.sleep(0.1)


def spin(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    """Burns ``?ms=N`` milliseconds of CPU (default 30): CPU accounting tests."""
    ms = float(environ["QUERY_STRING"].partition("=")[2] or 30)
    end = time.process_time() + ms / 1000
    while time.process_time() < end:
        pass
    return _text(start_response, b"spun\n")


def write_callable(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    write = start_response("200 OK", [("Content-Type", "text/plain")])
    write(b"written ")
    return [b"and returned\n"]


def raises(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    raise RuntimeError("boom from the application")


def raises_mid_stream(environ: Environ, start_response: StartResponse) -> Iterator[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    yield b"first part\n"
    raise RuntimeError("boom after the response started")


def crash(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    os._exit(3)


def segfault(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    import ctypes

    ctypes.string_at(0)
    return []


def hang(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    time.sleep(3600)
    return []


def exc_info_app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    try:
        raise ValueError("replaced")
    except ValueError:
        import sys

        start_response("500 Internal Server Error", [("Content-Type", "text/plain")],
                       sys.exc_info())
    return [b"replaced by exc_info\n"]


class Closing:
    """An iterable whose close() must be called (PEP 3333); records it in a file."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __iter__(self) -> Iterator[bytes]:
        yield b"closing body\n"

    def close(self) -> None:
        with open(self.marker, "a") as f:
            f.write("closed\n")


def closing(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return Closing(environ["QUERY_STRING"].partition("=")[2])


def file_wrapper(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    handle = open(__file__, "rb")  # noqa: SIM115 (the server closes it through the wrapper)
    wrapper: Iterable[bytes] = environ["wsgi.file_wrapper"](handle, 1024)
    return wrapper


def router(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    """One app for many tests: the first path segment picks the behaviour."""
    name = environ["PATH_INFO"].strip("/").split("/")[0] or "hello"
    handler = ROUTES.get(name)
    if handler is None:
        return _text(start_response, b"not found\n", "404 Not Found")
    return handler(environ, start_response)


ROUTES: dict[str, Callable[[Environ, StartResponse], Iterable[bytes]]] = {
    "hello": hello,
    "whoami": whoami,
    "environ": environ_dump,
    "upload": upload_digest,
    "download": download,
    "stream": stream_slowly,
    "write": write_callable,
    "spin": spin,
    "raise": raises,
    "raise-mid-stream": raises_mid_stream,
    "crash": crash,
    "segfault": segfault,
    "hang": hang,
    "exc-info": exc_info_app,
    "closing": closing,
    "file": file_wrapper,
}

# wsgiref.validate checks both sides of PEP 3333 on every request the tests make: our environ,
# wsgi.input, start_response and iterable handling, and the apps' own behaviour.
application = validator(router)
