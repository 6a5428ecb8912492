"""Embedding asyncmpm in an asyncio program.

The server runs inside your event loop; ``async with`` returns once it listens (children
ready), and leaving the block stops it gracefully. Run: ``python examples/embed_asyncio.py``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncmpm

APP = f"{Path(__file__).with_name('hello_app.py')}:application"


async def fetch(host: str, port: int, path: str) -> str:
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    data = await reader.read()
    writer.close()
    await writer.wait_closed()
    return data.decode().partition("\r\n\r\n")[2]


async def main() -> None:
    config = asyncmpm.Config(
        mpm=asyncmpm.MPM.WORKER,
        listen=(asyncmpm.ListenAddress("127.0.0.1", 0),),  # port 0: any free port
        start_servers=1,
        threads_per_child=4,
        max_request_workers=8,
        min_spare_threads=1,
        max_spare_threads=8,
    )
    async with asyncmpm.Server(APP, config) as server:
        host, port = server.addresses[0]
        print(f"serving on {host}:{port}")
        replies = await asyncio.gather(*(fetch(host, port, "/") for _ in range(3)))
        for reply in replies:
            print(reply.strip())
        print("busy/idle workers:", server.status().busy_workers, server.status().idle_workers)
    print("stopped")


if __name__ == "__main__":
    asyncio.run(main())
