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
    extra: list[tuple[bytes, bytes]] = []
    if tls is not None:
        # mod_ssl's variables (StdEnvVars), carried as ":NAME" entries the child puts in
        # the environ as they are.
        extra = [(b":HTTPS", b"on"), (b":SSL_PROTOCOL", tls.version.encode()),
                 (b":SSL_CIPHER", tls.cipher.encode())]
        if tls.client_subject is not None:
            extra.append((b":SSL_CLIENT_S_DN", tls.client_subject.encode()))
    return RequestHead.from_request(
        request,
        scheme=b"https" if tls is not None else b"http",
        remote=(peer.remote_addr.encode(), peer.remote_port.encode()),
        local=(peer.local_addr.encode(), peer.local_port.encode()),
        configured_name=ctx.config.server_name.encode() if ctx.config.server_name else b"",
        request_id=ctx.next_request_id(),
        stats=ctx.stats(),
        extra_headers=extra,
    )
