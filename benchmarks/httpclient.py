"""A minimal asyncio HTTP/1.1 client: enough for load, probes and slow clients, nothing more.

Each failure is raised as `RequestError` with wrk's error kinds (connect, read, write, timeout)
so the built-in generator and wrk report the same categories.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass

ErrorKind = str  # "connect" | "read" | "write" | "timeout"


class RequestError(Exception):
    def __init__(self, kind: ErrorKind, detail: str = "", *, unanswered: bool = False) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.unanswered = unanswered  # the connection closed before any byte of a response


@dataclass(frozen=True)
class Response:
    status: int
    body_bytes: int
    keep_alive: bool
    body: bytes


def build_request(method: str, path: str, host: str, *, body_size: int = 0,
                  keep_alive: bool = True) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", "User-Agent: asyncmpm-benchmarks"]
    if body_size or method == "POST":
        lines += ["Content-Type: application/octet-stream", f"Content-Length: {body_size}"]
    if not keep_alive:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def open_connection(host: str, port: int,
                          timeout: float) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    try:
        return await asyncio.wait_for(asyncio.open_connection(host, port, limit=1 << 20), timeout)
    except TimeoutError as exc:
        raise RequestError("connect", "timed out") from exc
    except OSError as exc:
        raise RequestError("connect", str(exc)) from exc


async def send(writer: asyncio.StreamWriter, data: bytes) -> None:
    try:
        writer.write(data)
        await writer.drain()
    except OSError as exc:
        raise RequestError("write", str(exc), unanswered=True) from exc


async def read_response(reader: asyncio.StreamReader, *, keep_body: bool = False) -> Response:
    """Read one response; the body is counted (and kept only when asked, e.g. for status pages)."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        raise RequestError("read", f"no response head: {exc}",
                           unanswered=not exc.partial) from exc
    except ConnectionResetError as exc:
        raise RequestError("read", f"no response head: {exc}", unanswered=True) from exc
    except (asyncio.LimitOverrunError, OSError) as exc:
        raise RequestError("read", f"no response head: {exc}") from exc
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        raise RequestError("read", f"bad status line {lines[0]!r}")
    status = int(parts[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name:
            headers[name.strip().lower()] = value.strip()
    keep_alive = headers.get("connection", "").lower() != "close" and parts[0] == "HTTP/1.1"
    kept = bytearray()
    size = 0
    try:
        if "content-length" in headers:
            remaining = int(headers["content-length"])
            while remaining:
                chunk = await reader.read(min(remaining, 1 << 18))
                if not chunk:
                    raise RequestError("read", "body cut short")
                size += len(chunk)
                remaining -= len(chunk)
                if keep_body:
                    kept += chunk
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                length = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                data = await reader.readexactly(length + 2)
                size += length
                if keep_body:
                    kept += data[:-2]
                if length == 0:
                    break
        elif status not in (204, 304):
            data = await reader.read()
            size = len(data)
            kept += data if keep_body else b""
            keep_alive = False
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, OSError) as exc:
        raise RequestError("read", str(exc)) from exc
    return Response(status, size, keep_alive, bytes(kept))


async def close(writer: asyncio.StreamWriter | None) -> None:
    if writer is None:
        return
    writer.close()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(writer.wait_closed(), 1)


async def fetch(host: str, port: int, path: str, *, timeout: float,
                keep_body: bool = False) -> tuple[Response, float]:
    """One GET on a fresh connection (what a new client sees); returns it and its latency in s."""
    start = time.perf_counter()
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await open_connection(host, port, timeout)
            await send(writer, build_request("GET", path, f"{host}:{port}", keep_alive=False))
            response = await read_response(reader, keep_body=keep_body)
    except TimeoutError as exc:
        raise RequestError("timeout", f"no answer in {timeout} s") from exc
    finally:
        await close(writer)
    return response, time.perf_counter() - start
