"""The request head a child receives, built the same way for HTTP/1.1 and HTTP/2."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from asyncmpm.ipc.messages import RequestHead
from asyncmpm.protocol.events import Request
from asyncmpm.streams import TLSInfo

if TYPE_CHECKING:
    from asyncmpm.front.context import FrontContext

__all__ = ["Peer", "build_request_head"]


class Peer(Protocol):
    """The addresses of one client connection, as the scoreboard and the logs show them."""

    remote_addr: str
    remote_port: str
    local_addr: str
    local_port: str


def build_request_head(ctx: FrontContext, peer: Peer, request: Request,
                       tls: TLSInfo | None) -> RequestHead:
    host = b""
    for name, value in request.headers:
        if name == b"host":
            host = value
            break
    server_name, server_port = _split_host(host, peer.local_addr, peer.local_port)
    if ctx.config.server_name and not host:
        server_name = ctx.config.server_name.encode()
    if request.chunked:
        body = b"c"
    elif request.content_length:
        body = b"l"
    else:
        body = b""
    headers = request.headers
    if tls is not None:
        # mod_ssl's variables (StdEnvVars), carried as ":NAME" entries the child puts in
        # the environ as they are.
        headers = [*headers, (b":HTTPS", b"on"), (b":SSL_PROTOCOL", tls.version.encode()),
                   (b":SSL_CIPHER", tls.cipher.encode())]
        if tls.client_subject is not None:
            headers.append((b":SSL_CLIENT_S_DN", tls.client_subject.encode()))
    return RequestHead(
        method=request.method,
        path=request.path,
        query=request.query,
        # WSGI (and CGI) spell it HTTP/2; the access log shows HTTP/2.0 as httpd's does.
        protocol=b"HTTP/2" if request.http_version == "2.0"
        else b"HTTP/" + request.http_version.encode(),
        scheme=b"https" if tls is not None else b"http",
        remote_addr=peer.remote_addr.encode(),
        remote_port=peer.remote_port.encode(),
        server_name=server_name,
        server_port=server_port,
        body=body,
        content_length=b"%d" % request.content_length if request.content_length else b"",
        expect_continue=request.expect_continue,
        request_id=ctx.next_request_id(),
        stats=ctx.stats(),
        headers=headers,
    )


def _split_host(host: bytes, local_addr: str, local_port: str) -> tuple[bytes, bytes]:
    if not host:
        return local_addr.encode(), local_port.encode()
    if host.startswith(b"["):
        end = host.find(b"]")
        name = host[: end + 1]
        port = host[end + 2 :] if host[end + 1 : end + 2] == b":" else b""
    else:
        name, _, port = host.partition(b":")
    return name, port or local_port.encode()
