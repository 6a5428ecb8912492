"""WSGI applications the end-to-end tests serve (imported by spec in the children)."""

from __future__ import annotations

import hashlib
import json
import os
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from types import FrameType
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


# start_response arguments that must never reach the wire: each gets the client a 500 (the
# app's bug, PEP 3333). wsgiref.validate refuses some of them itself, so the tests serve them
# through ``unvalidated``. A head that got through would show X-Injected or a second response.
BAD_HEADS: dict[str, tuple[str, list[tuple[str, str]]]] = {
    "reason-crlf": ("200 OK\r\nX-Injected: 1\r\n\r\nHTTP/1.1 200 OK", []),
    "reason-lf": ("200 OK\nX-Injected: 1", []),
    "reason-cr": ("200 OK\rX-Injected: 1", []),
    "reason-nul": ("200 OK\x00X-Injected", []),
    "reason-del": ("200 O\x7fK X-Injected", []),
    "no-space": ("200OK X-Injected", []),
    "status-100": ("100 Continue X-Injected", []),
    "status-101": ("101 Switching Protocols X-Injected", []),
    "status-199": ("199 X-Injected", []),
    "status-600": ("600 X-Injected", []),
    "status-unicode": ("\u0662\u0660\u0660 X-Injected", []),
    "status-short": ("20 X-Injected", []),
    "value-crlf": ("200 OK", [("X-A", "a\r\nX-Injected: 1")]),
    "value-lf": ("200 OK", [("X-A", "a\nX-Injected: 1")]),
    "value-cr": ("200 OK", [("X-A", "a\rX-Injected: 1")]),
    "value-nul": ("200 OK", [("X-Injected", "a\x00b")]),
    "value-del": ("200 OK", [("X-Injected", "a\x7fb")]),
    "value-vt": ("200 OK", [("X-Injected", "a\x0bb")]),
    "value-esc": ("200 OK", [("X-Injected", "\x1b[31m")]),
    "cl-negative": ("200 OK", [("X-Injected", "1"), ("Content-Length", "-1")]),
    "cl-plus": ("200 OK", [("X-Injected", "1"), ("Content-Length", "+3")]),
    "cl-underscore": ("200 OK", [("X-Injected", "1"), ("Content-Length", "0_3")]),
    "cl-space": ("200 OK", [("X-Injected", "1"), ("Content-Length", " 3")]),
    "cl-unicode": ("200 OK", [("X-Injected", "1"), ("Content-Length", "\u0663")]),
    "cl-empty": ("200 OK", [("X-Injected", "1"), ("Content-Length", "")]),
    "cl-conflict": ("200 OK", [("X-Injected", "1"), ("Content-Length", "3"),
                               ("Content-Length", "4")]),
}


def bad_head(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    """``/bad-head/<case>``: start_response with ``BAD_HEADS[case]``."""
    status, headers = BAD_HEADS[environ["PATH_INFO"].split("/")[2]]
    start_response(status, [("Content-Type", "text/plain"), *headers])
    return [b"abc"]


def exits(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    """``/exit/<how>``: the app ends with sys.exit(), KeyboardInterrupt, or a BrokenPipeError
    of its own (not the slot's); ``?started=1`` after the response started."""
    how = environ["PATH_INFO"].split("/")[2]
    errors: dict[str, BaseException] = {
        "sys-exit": SystemExit(3),
        "keyboard-interrupt": KeyboardInterrupt(),
        "broken-pipe": BrokenPipeError("the app's own backend went away"),
        "connection-reset": ConnectionResetError("the app's own backend reset"),
    }
    if environ["QUERY_STRING"] != "started=1":
        raise errors[how]

    def body() -> Iterator[bytes]:
        yield b"started\n"
        raise errors[how]

    start_response("200 OK", [("Content-Type", "text/plain")])
    return body()


_PATTERN = bytes(range(256)) * 4096  # 1 MiB


def big_chunk(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    """``/big-chunk/<list|generator|write>?mb=N``: one N MiB chunk (more than a frame holds)."""
    how = environ["PATH_INFO"].split("/")[2]
    mb = int(environ["QUERY_STRING"].partition("=")[2] or 20)
    chunk = _PATTERN * mb
    headers = [("Content-Type", "application/octet-stream")]
    if how == "list":
        start_response("200 OK", [*headers, ("Content-Length", str(len(chunk)))])
        return [chunk]
    write = start_response("200 OK", headers)
    if how == "write":
        write(chunk)
        return []
    return iter([chunk])


def corrupt_frame(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    """Writes a frame the front's decoder refuses straight onto this slot's channel (found in
    the caller's frame: a test-only trick), then hangs as if nothing happened. With
    ``?started=1`` the response starts first, and the frame follows once the request body has
    ended: the client sends its end after it saw the start."""
    frame: FrameType | None = sys._getframe()
    while frame is not None and frame.f_code.co_name != "run_app":
        frame = frame.f_back
    assert frame is not None
    channel = frame.f_locals["self"].channel
    if environ["QUERY_STRING"] == "started=1":
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"started\n")
        while environ["wsgi.input"].read(65536):
            pass
    channel.send(struct.pack("!IB", 0xFFFFFFFF, 18))
    time.sleep(60)
    return [] if environ["QUERY_STRING"] else _text(start_response, b"too late\n")


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
    "bad-head": bad_head,
    "exit": exits,
    "big-chunk": big_chunk,
    "corrupt-frame": corrupt_frame,
}

# wsgiref.validate checks both sides of PEP 3333 on every request the tests make: our environ,
# wsgi.input, start_response and iterable handling, and the apps' own behaviour.
application = validator(router)
unvalidated = router  # for heads wsgiref.validate would refuse before the server sees them
