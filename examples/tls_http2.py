"""Serving a WSGI app over TLS with HTTP/2, then fetching from it with httpx.

Browsers and httpx negotiate ``h2`` by ALPN; HTTP/1.1 clients get ``http/1.1`` on the same
port. Run: ``python examples/tls_http2.py CERT.pem [KEY.pem] [CA.pem]`` (a throwaway CA and
certificate: ``python -m trustme`` writes server.pem, server.key and client.pem here). The
command-line equivalent is ``python -m asyncmpm --certfile CERT.pem --keyfile KEY.pem APP``.
"""

from __future__ import annotations

import asyncio
import ssl
import sys
from pathlib import Path

import httpx

import asyncmpm

APP = f"{Path(__file__).with_name('hello_app.py')}:application"


async def main(certfile: str, keyfile: str | None, cafile: str | None) -> None:
    config = asyncmpm.Config(
        listen=(asyncmpm.ListenAddress.parse("https://127.0.0.1:0"),),
        certfile=certfile,
        keyfile=keyfile,
        start_servers=2,
        min_spare_servers=1,
        max_spare_servers=4,
        max_request_workers=8,
    )
    async with asyncmpm.Server(APP, config) as server:
        host, port = server.addresses[0]
        print(f"serving on https://{host}:{port}")
        verify: ssl.SSLContext | bool = (ssl.create_default_context(cafile=cafile)
                                         if cafile else False)
        async with httpx.AsyncClient(http2=True, verify=verify) as client:
            replies = await asyncio.gather(
                *(client.get(f"https://{host}:{port}/") for _ in range(3)))
        for reply in replies:
            print(reply.http_version, reply.text.strip())
    print("stopped")


if __name__ == "__main__":
    args = sys.argv[1:]
    if not args:
        sys.exit(__doc__)
    asyncio.run(main(args[0], args[1] if len(args) > 1 else None,
                     args[2] if len(args) > 2 else None))
