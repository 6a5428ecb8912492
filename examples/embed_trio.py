"""Embedding asyncmpm in a trio program.

``await nursery.start(server.serve)`` returns the bound addresses once the server is ready;
``server.stop()`` begins a graceful stop and the nursery waits for it.
Run: ``python examples/embed_trio.py``.
"""

from __future__ import annotations

from pathlib import Path

import trio

import asyncmpm

APP = f"{Path(__file__).with_name('hello_app.py')}:application"


async def fetch(host: str, port: int, path: str) -> str:
    stream = await trio.open_tcp_stream(host, port)
    async with stream:
        await stream.send_all(
            f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
        )
        data = b""
        while chunk := await stream.receive_some():
            data += chunk
    return data.decode().partition("\r\n\r\n")[2]


async def main() -> None:
    server = asyncmpm.Server(
        APP,
        asyncmpm.Config(
            backend=asyncmpm.Backend.TRIO,
            listen=(asyncmpm.ListenAddress("127.0.0.1", 0),),
            start_servers=2,
            min_spare_servers=1,
            max_spare_servers=4,
            max_request_workers=4,
        ),
    )
    async with trio.open_nursery() as nursery:
        addresses = await nursery.start(server.serve)
        host, port = addresses[0]
        print(f"serving on {host}:{port}")
        print((await fetch(host, port, "/")).strip())
        server.stop()
    print("stopped")


if __name__ == "__main__":
    trio.run(main)
