"""End to end over real sockets with real children: HTTP/1.1 and WSGI semantics, both MPMs."""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

import anyio
import httpx
import pytest

from asyncmpm import MPM
from asyncmpm.ipc.frames import FrameType, encode
from asyncmpm.protocol.events import Event
from asyncmpm.protocol.http1 import HTTP1Connection
from tests.conftest import base_url, serving

pytestmark = pytest.mark.anyio


async def raw_exchange(server: Any, data: bytes, *, read_until_close: bool = True,
                       timeout: float = 10) -> bytes:
    host, port = server.addresses[0]
    async with await anyio.connect_tcp(host, port) as stream:
        await stream.send(data)
        chunks = []
        with anyio.fail_after(timeout):
            while True:
                try:
                    chunk = await stream.receive()
                except anyio.EndOfStream:
                    break
                chunks.append(chunk)
                if not read_until_close:
                    break
    return b"".join(chunks)


async def test_hello_both_mpms(mpm: MPM) -> None:
    async with serving(mpm=mpm) as server, httpx.AsyncClient(base_url=base_url(server)) as c:
        r = await c.get("/hello")
        assert r.status_code == 200
        assert r.text == "Hello, world!\n"
        assert r.headers["server"].startswith("asyncmpm/")
        assert "date" in r.headers
        who = (await c.get("/whoami")).json()
        assert who["multithread"] is (mpm is MPM.WORKER)
        assert who["multiprocess"] is True


async def test_keep_alive_and_pipelining() -> None:
    async with serving() as server:
        req = b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\n"
        last = b"GET /hello HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        data = await raw_exchange(server, req * 3 + last)
        assert data.count(b"HTTP/1.1 200 OK") == 4
        assert data.count(b"Hello, world!") == 4
        assert data.endswith(b"Hello, world!\n")


async def test_head_has_no_body() -> None:
    async with serving() as server:
        data = await raw_exchange(server, b"HEAD /hello HTTP/1.1\r\nHost: t\r\n"
                                  b"Connection: close\r\n\r\n")
        head, _, body = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        assert b"Content-Length: 14" in head
        assert body == b""


async def test_chunked_request_and_response_stream() -> None:
    async with serving() as server:
        body = b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
        data = await raw_exchange(
            server, b"POST /environ HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
            b"Connection: close\r\n\r\n" + body)
        head, _, payload = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        env = json.loads(payload)
        assert env["body"] == "hello world"
        assert env["wsgi.input_terminated"] is True
        assert "HTTP_TRANSFER_ENCODING" not in env


async def test_body_of_tiny_chunks_costs_the_front_per_read(
    mpm: MPM, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 20,000 one-byte chunks reach the app intact, and the front sends the child at most one
    # BODY frame per read from the client (it was one frame per chunk). The relay path (TLS
    # and HTTP/2 take it; --no-handoff makes plaintext take it too).
    reads = 0
    body_frames = 0
    receive_data = HTTP1Connection.receive_data

    def counting_receive(self: HTTP1Connection, data: bytes) -> list[Event]:
        nonlocal reads
        reads += bool(data)
        return receive_data(self, data)

    def counting_encode(kind: FrameType, payload: bytes = b"") -> bytes:
        nonlocal body_frames
        body_frames += kind is FrameType.BODY
        return encode(kind, payload)

    monkeypatch.setattr(HTTP1Connection, "receive_data", counting_receive)
    monkeypatch.setattr("asyncmpm.front.connection.encode", counting_encode)
    payload = bytes(range(256)) * 78 + bytes(range(32))
    wire = b"".join(b"1\r\n%c\r\n" % byte for byte in payload) + b"0\r\n\r\n"
    async with serving(mpm=mpm, handoff=False) as server:
        host, port = server.addresses[0]
        async with await anyio.connect_tcp(host, port) as stream:
            await stream.send(b"POST /upload HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
                              b"Transfer-Encoding: chunked\r\n\r\n")
            for i in range(0, len(wire), 10_000):  # several writes, so several reads
                await stream.send(wire[i:i + 10_000])
            answer = b""
            with anyio.fail_after(30):
                while True:
                    try:
                        answer += await stream.receive()
                    except anyio.EndOfStream:
                        break
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert answer.endswith(f"{len(payload)} {hashlib.sha256(payload).hexdigest()}".encode())
    assert 1 <= body_frames <= reads


async def test_streaming_response_arrives_as_produced() -> None:
    async with serving() as server:
        host, port = server.addresses[0]
        async with await anyio.connect_tcp(host, port) as stream:
            await stream.send(b"GET /stream HTTP/1.1\r\nHost: t\r\n\r\n")
            first = await stream.receive()
            t_first = time.monotonic()
            assert b"Transfer-Encoding: chunked" in first
            rest = b""
            with anyio.fail_after(10):
                while not rest.endswith(b"0\r\n\r\n"):
                    rest += await stream.receive()
            # The first chunk came ~0.4 s before the end: it was not buffered.
            assert time.monotonic() - t_first > 0.25
            assert (first + rest).count(b"chunk ") == 5


async def test_expect_100_continue() -> None:
    async with serving() as server:
        host, port = server.addresses[0]
        async with await anyio.connect_tcp(host, port) as stream:
            await stream.send(b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
                              b"Expect: 100-continue\r\n\r\n")
            with anyio.fail_after(10):
                interim = await stream.receive()
            assert interim.startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
            await stream.send(b"hello")
            with anyio.fail_after(10):
                final = interim[25:]
                while b"\r\n\r\n" not in final or not final.rstrip().endswith(b"24"):
                    final += await stream.receive()
                    if b" 5 " in final or (final.count(b"\r\n\r\n") and b"5 2cf24" in final):
                        break
            assert b"HTTP/1.1 200 OK" in final
            assert b"5 2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824" in final


@pytest.mark.parametrize(("route", "status"), [("raise", 500), ("nope", 404)])
async def test_app_errors_are_contained(route: str, status: int) -> None:
    async with serving() as server, httpx.AsyncClient(base_url=base_url(server)) as c:
        r = await c.get(f"/{route}")
        assert r.status_code == status
        # The child keeps serving after an exception.
        assert (await c.get("/hello")).status_code == 200


async def test_large_upload_and_download_stream(mpm: MPM) -> None:
    size = 32 * 1024 * 1024
    block = bytes(range(256)) * 4096

    async def body() -> Any:
        for _ in range(size // len(block)):
            yield block

    digest = hashlib.sha256(block * (size // len(block))).hexdigest()
    async with serving(mpm=mpm) as server, httpx.AsyncClient(
        base_url=base_url(server), timeout=60
    ) as c:
        r = await c.post("/upload", content=body())
        assert r.text == f"{size} {digest}"
        total = 0
        async with c.stream("GET", "/download?mb=32") as resp:
            async for chunk in resp.aiter_bytes():
                total += len(chunk)
        assert total == size


async def test_environ_addresses_and_root_path() -> None:
    async with serving(root_path="/app") as server, httpx.AsyncClient(
        base_url=base_url(server)
    ) as c:
        env = (await c.get("/app/environ/x%20y?q=1", headers={"X-Custom": "v"})).json()
        host, port = server.addresses[0]
        assert env["SCRIPT_NAME"] == "/app"
        assert env["PATH_INFO"] == "/environ/x y"
        assert env["RAW_URI"] == "/app/environ/x%20y?q=1"
        assert env["QUERY_STRING"] == "q=1"
        assert env["REMOTE_ADDR"] == "127.0.0.1"
        assert int(env["REMOTE_PORT"]) > 0
        assert (env["SERVER_NAME"], env["SERVER_PORT"]) == (host, str(port))
        assert env["SERVER_PROTOCOL"] == "HTTP/1.1"
        assert env["HTTP_X_CUSTOM"] == "v"
        assert env["wsgi.url_scheme"] == "http"


async def test_header_with_underscore_is_dropped_like_httpd() -> None:
    async with serving() as server:
        reply = await raw_exchange(server, b"GET /environ HTTP/1.1\r\nHost: t\r\nX_Forged: 1\r\n"
                                   b"X-Real: 2\r\nConnection: close\r\n\r\n")
        env = json.loads(reply.partition(b"\r\n\r\n")[2])
        assert env["HTTP_X_REAL"] == "2"
        assert "HTTP_X_FORGED" not in env


@pytest.mark.parametrize(
    ("path", "body"),
    [("/write", b"written and returned\n"), ("/exc-info", b"replaced by exc_info\n")],
)
async def test_write_callable_and_exc_info(path: str, body: bytes) -> None:
    async with serving() as server, httpx.AsyncClient(base_url=base_url(server)) as c:
        r = await c.get(path)
        assert r.content == body
        assert r.status_code == (500 if path == "/exc-info" else 200)


async def test_iterable_close_is_called_and_file_wrapper_streams(tmp_path: Any) -> None:
    marker = tmp_path / "closed"
    async with serving() as server, httpx.AsyncClient(base_url=base_url(server)) as c:
        r = await c.get(f"/closing?marker={marker}")
        assert r.text == "closing body\n"
        with anyio.fail_after(5):
            # Written by the child just after the response: another process, no event to await.
            while not marker.exists():  # noqa: ASYNC110
                await anyio.sleep(0.01)
        assert marker.read_text() == "closed\n"
        r = await c.get("/file")
        assert r.status_code == 200
        assert r.text.startswith('"""WSGI applications the end-to-end tests serve')


async def test_no_preload_imports_the_app_in_each_child(mpm: MPM) -> None:
    async with serving(mpm=mpm, preload=False) as server, httpx.AsyncClient(
        base_url=base_url(server)
    ) as c:
        assert (await c.get("/hello")).text == "Hello, world!\n"
