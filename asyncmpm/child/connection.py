"""Serve a client connection handed to this slot: HTTP/1.1 straight on the socket.

The front loop read and checked a request head, then passed the connection here (the event
MPM's handoff, with processes). The slot parses with the same sans-IO
:class:`~asyncmpm.protocol.http1.HTTP1Connection`, runs the app, writes the response to the
client itself, and goes on with the next request while one is already there (pipelined, or
sent by a fast client before we looked). When nothing is waiting it gives the connection back
(:class:`~asyncmpm.ipc.handoff.Handback`): an idle keep-alive connection never holds a slot.

The front keeps its own copy of the socket, so:

- a response ends the connection with ``shutdown(SHUT_WR)``, never ``close()`` alone (our
  close drops one reference; the front closes the last one when it hears we are done);
- an idle connection is given back without shutdown (shutdown acts on the shared socket);
- while a request runs, the slot's record in shared memory says whether the response has
  started, so if this process dies the front answers 502 (not started) or closes.

Deadlines are the slot's own here: mod_reqtimeout's body stage for request bodies (408),
``Timeout`` for every write to a client that stopped reading.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from asyncmpm.child.wsgi import BodyReader, ClientGone, PeerGone, ResponseWriter, fill_request
from asyncmpm.ipc.frames import FrameType, encode
from asyncmpm.ipc.handoff import Handback, Handoff, Served
from asyncmpm.ipc.messages import ResponseHead, split_host
from asyncmpm.ipc.slot_records import CLOSE
from asyncmpm.logs import AccessEntry, AccessLog
from asyncmpm.protocol.events import Body, EndBody, Event, Reject, Request
from asyncmpm.protocol.http1 import HTTP1Connection, HTTP1Limits

if TYPE_CHECKING:
    from asyncmpm.child.wsgi import SlotServer
    from asyncmpm.ipc.slot_records import SlotRecords

__all__ = ["DirectSettings", "HandedConnection", "HandoffServer"]

_RECV = 64 * 1024
_DISCARD_LIMIT = 1024 * 1024  # unread body we still read past to keep the connection
_RAW_CAP = 256 * 1024  # raw bytes kept to give a request back to the front


@dataclass(frozen=True, slots=True)
class DirectSettings:
    """What a slot needs to speak HTTP/1.1 itself (from the zygote's settings)."""

    limits: HTTP1Limits
    timeout: float
    body_timeout: float
    body_max: float
    body_min_rate: float
    server_name: bytes
    front_paths: frozenset[bytes] = frozenset()  # answered by the front: given back to it

    @classmethod
    def from_settings(cls, settings: dict[str, Any]) -> DirectSettings:
        d = settings["direct"]
        return cls(
            limits=HTTP1Limits(**{**d["http1"],
                                  "server_header": d["http1"]["server_header"].encode()}),
            timeout=d["timeout"],
            body_timeout=d["body_timeout"],
            body_max=d["body_max"],
            body_min_rate=d["body_min_rate"],
            server_name=d["server_name"].encode(),
            front_paths=frozenset(path.encode() for path in d["front_paths"]),
        )


class HandoffServer:
    """Serves the HANDOFF frames arriving on one slot's channel."""

    def __init__(self, server: SlotServer, settings: DirectSettings,
                 records: SlotRecords | None, index: int, access_log: AccessLog | None) -> None:
        self.server = server
        self.settings = settings
        self.records = records
        self.index = index
        self.access_log = access_log

    def wind_down(self) -> int:
        records = self.records
        return records.wind_down(self.index) if records is not None else 0

    def __call__(self, payload: bytes) -> None:
        channel = self.server.channel
        if not channel.fds:
            self.server.log.error("a handoff arrived without its connection")
            back = Handback(keep=False, keepalives=0)
        else:
            fd = channel.fds.popleft()
            handoff = Handoff.decode(payload)
            sock = socket.socket(handoff.family, socket.SOCK_STREAM, 0, fd)
            try:
                back = HandedConnection(self.server, sock, handoff, self.settings, self.records,
                                        self.index, self.access_log, self.wind_down).serve()
            finally:
                sock.close()  # our reference; the front holds the connection's last one
        channel.send(encode(FrameType.HANDBACK, back.encode()))


class _BodyBroken(ClientGone):
    """The request body cannot be read to its end: answer ``status`` instead of the app."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class ClientLost(PeerGone):
    """A write to the client failed, or did not finish within Timeout."""


class HandedConnection:
    """One handed-off connection, served until it goes quiet, breaks or must close."""

    def __init__(
        self,
        server: SlotServer,
        sock: socket.socket,
        handoff: Handoff,
        settings: DirectSettings,
        records: SlotRecords | None,
        index: int,
        access_log: AccessLog | None,
        wind_down: Callable[[], int],
    ) -> None:
        self.server = server
        self.sock = sock
        self.handoff = handoff
        self.settings = settings
        self.records = records
        self.index = index
        self.access_log = access_log
        self.wind_down = wind_down  # () -> 0, RETURN or CLOSE: what the front asked for
        self.proto = HTTP1Connection(settings.limits, keepalives=handoff.keepalives)
        self.events: deque[Event] = deque()
        self.eof = False
        self.served: list[Served] = []
        self.last_request = b""
        self.continue_sent = False
        self.broken = False  # nothing more may be written (peer gone or write failed)
        self.body_error: tuple[int, str] | None = None  # the current request's body broke
        # The bytes received from the start of the latest request head (raw[0] is byte
        # raw_base of what this slot read), so a request for the front can be given back.
        self.raw = bytearray()
        self.raw_base = 0
        self.leftover: bytes | None = None
        # What every request on this connection shares in its environ.
        self.base_environ = server.base_environ.copy()
        self.base_environ.update({
            "REMOTE_ADDR": handoff.remote_addr.decode("latin-1"),
            "REMOTE_PORT": handoff.remote_port.decode("latin-1"),
            "wsgi.url_scheme": "http",
            "asyncmpm.request_id": handoff.request_id.decode("latin-1"),
            "asyncmpm.stats": handoff.stats.decode("latin-1"),
        })

    # ---------------------------------------------------------------- the loop
    def serve(self) -> Handback:
        sock = self.sock
        sock.setblocking(False)  # one syscall per read or write; we wait with poll on EAGAIN
        self._feed(self.handoff.data)
        keep = False
        try:
            keep = self._loop()
        except OSError:  # ClientLost included
            keep = False
        finally:
            if self.records is not None:
                self.records.idle(self.index)
        leftover = b""
        if keep:
            leftover = self.leftover if self.leftover is not None else self.proto.take_unparsed()
        else:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_WR)
        return Handback(
            keep=keep,
            keepalives=self.proto.keepalives,
            leftover=leftover,
            served=tuple(self.served),
            cpu_times=_cpu_times(),
            last_request=self.last_request,
        )

    def _loop(self) -> bool:
        """Serve what is there; True if the connection is idle and may be kept."""
        while True:
            if not self.events:
                if self.eof or self.proto.dead:
                    return False
                if not self.proto.between_requests:
                    return True  # part of a next head: the front waits for the rest
                if not self._poll_more():
                    return not self.eof
                continue
            event = self.events.popleft()
            if isinstance(event, Request):
                if self._gives_back(event):
                    return True
                if not self._serve_request(event):
                    return False
                if self.wind_down():
                    # This child retires (give the connection back: another slot goes on with
                    # it) or the server stops (the response said Connection: close).
                    return self.proto.keep_alive
            elif isinstance(event, Reject):
                self._send(self.proto.error_response(event.status, event.reason))
                return False
            # Body/EndBody here belong to a request already answered: skipped.

    def _poll_more(self) -> bool:
        """Read what is already there, without waiting; False if nothing was."""
        try:
            data = self.sock.recv(_RECV)
        except (BlockingIOError, InterruptedError):
            return False
        self._feed(data)
        return True

    def _wait(self, events: int, seconds: float) -> bool:
        """Wait until the socket is ready for ``events``; False if ``seconds`` passed."""
        poller = select.poll()
        poller.register(self.sock, events)
        return bool(poller.poll(max(0.0, seconds) * 1000.0))

    def recv_within(self, deadline: float) -> bytes:
        """Read what comes before ``deadline`` (monotonic); TimeoutError after it."""
        sock = self.sock
        while True:
            try:
                return sock.recv(_RECV)
            except (BlockingIOError, InterruptedError):
                pass
            if not self._wait(select.POLLIN, deadline - time.monotonic()):
                raise TimeoutError

    def _feed(self, data: bytes) -> None:
        if not data:
            self.eof = True
        elif len(self.raw) + len(data) > _RAW_CAP:
            # Bodies are not kept: start again from here (a head already cut off cannot be
            # given back, and is served here).
            self.raw = bytearray(data)
            self.raw_base = self.proto.bytes_received
        else:
            self.raw += data
        self.events.extend(self.proto.receive_data(data))

    def _gives_back(self, request: Request) -> bool:
        """Whether this request belongs to the front (status or metrics page): then the
        connection goes back with the request's bytes, unanswered."""
        start = self.proto.head_starts.popleft() if self.proto.head_starts else -1
        if start < self.raw_base:
            return False
        del self.raw[: start - self.raw_base]
        self.raw_base = start
        if request.path not in self.settings.front_paths:
            return False
        self.leftover = bytes(self.raw)
        return True

    def _send(self, data: bytes) -> None:
        if self.broken or not data:
            return
        sock = self.sock
        view = memoryview(data)
        deadline = 0.0
        try:
            while view:
                try:
                    sent = sock.send(view, socket.MSG_NOSIGNAL)
                except (BlockingIOError, InterruptedError):
                    sent = 0
                if sent:
                    view = view[sent:]
                    deadline = 0.0  # Timeout counts from the last progress, as httpd's
                    continue
                if not deadline:
                    deadline = time.monotonic() + self.settings.timeout
                if not self._wait(select.POLLOUT, deadline - time.monotonic()):
                    raise ClientLost("the client did not read within Timeout")
        except ClientLost:
            self.broken = True
            raise
        except OSError as exc:
            self.broken = True
            raise ClientLost(str(exc)) from exc

    # ---------------------------------------------------------------- one request
    def _serve_request(self, request: Request) -> bool:
        """Serve one request; True if the connection may carry another."""
        t0 = time.time()
        line = request.request_line.encode("latin-1")
        self.last_request = line
        records = self.records
        if records is not None:
            records.request_started(self.index, t0, line)
        self.body_error = None
        self.continue_sent = False
        body = WireInput(self, request)
        response = WireResponse(self, body, request.method == b"HEAD")
        server = self.server
        try:
            server.run_app(self._environ(request, body), response)
        except PeerGone:
            self.broken = True
        status = response.status
        self.served.append(Served(status, response.sent_bytes, int((time.time() - t0) * 1e6)))
        if self.access_log is not None:
            self._log(request, status, response, t0)
        if records is not None:
            records.request_done(self.index, response.sent_bytes, _cpu_times())
        if self.broken or response.failed or not self.proto.keep_alive:
            return False
        return self._finish_body(body)

    def _environ(self, request: Request, body: WireInput) -> dict[str, Any]:
        env = self.base_environ.copy()
        host = b""
        for name, value in request.headers:
            if name == b"host":
                host = value
                break
        handoff = self.handoff
        if host or not self.settings.server_name:
            name, port = split_host(host, handoff.local_addr, handoff.local_port)
        else:
            name, port = self.settings.server_name, handoff.local_port
        env["SERVER_NAME"] = name.decode("latin-1")
        env["SERVER_PORT"] = port.decode("latin-1")
        env["wsgi.input"] = body
        if self.served:  # one id per request: the front's, then .2, .3... for the ones after
            env["asyncmpm.request_id"] = f"{env['asyncmpm.request_id']}.{len(self.served) + 1}"
        version = request.http_version
        fill_request(env, self.server.root_path, request.method, request.path, request.query,
                     b"HTTP/1.1" if version == "1.1" else b"HTTP/" + version.encode(),
                     request.headers)
        return env

    def _finish_body(self, body: WireInput) -> bool:
        """Read past an unread request body (bounded) so the connection can be kept."""
        if body.ended:
            return True
        if body.expect and not self.continue_sent:
            return False  # the client may never send it: close (RFC 9110 10.1.1)
        deadline = time.monotonic() + min(self.settings.timeout, 5.0)
        discarded = 0
        try:
            while not body.ended:
                body.buf_clear()
                if not body.next_chunk(deadline):
                    break
                discarded += body.pending
                if discarded > _DISCARD_LIMIT:
                    return False
        except ClientGone:
            return False
        return body.ended and not body.error

    def _log(self, request: Request, status: int, response: WireResponse, t0: float) -> None:
        assert self.access_log is not None
        referer = user_agent = ""
        for name, value in request.headers:
            if name == b"referer":
                referer = value.decode("latin-1")
            elif name == b"user-agent":
                user_agent = value.decode("latin-1")
        handoff = self.handoff
        self.access_log.log(AccessEntry(
            remote_addr=handoff.remote_addr.decode(),
            time=t0,
            request_line=request.request_line,
            status=status,
            bytes_sent=response.sent_bytes,
            referer=referer,
            user_agent=user_agent,
            duration_us=int((time.time() - t0) * 1e6),
            pid=os.getpid(),
            slot=self.server.slot,
            method=request.method.decode("latin-1"),
            path=request.path.decode("latin-1"),
            query=request.query.decode("latin-1"),
            protocol=f"HTTP/{request.http_version}",
            server_name=handoff.server_name.decode("latin-1"),
            local_port=int(handoff.local_port or 0),
            tid=self.server.tid,
            request_headers=request.headers,
            response_headers=response.head.headers if response.head is not None else (),
        ))


class WireInput(BodyReader):
    """``wsgi.input`` read straight from the client, under mod_reqtimeout's body stage."""

    def __init__(self, conn: HandedConnection, request: Request) -> None:
        self._conn = conn
        self._buf = bytearray()
        self.ended = not request.has_body
        self.expect = request.expect_continue
        self.error: tuple[int, str] | None = None
        self.pending = 0
        s = conn.settings
        now = time.monotonic()
        self._start = now
        self._received = 0
        self._limit = now + s.body_max if s.body_max else float("inf")
        if self.ended:
            self._drop_end()

    def _drop_end(self) -> None:
        events = self._conn.events
        if events and isinstance(events[0], EndBody):
            events.popleft()

    def buf_clear(self) -> None:
        self._buf.clear()

    def _deadline(self) -> float:
        s = self._conn.settings
        deadline = self._start + s.body_timeout
        if s.body_min_rate:
            deadline += self._received / s.body_min_rate
        return min(deadline, self._limit)

    def _fill(self) -> bool:
        if self.error is not None:
            raise _BodyBroken(*self.error)
        if self.ended:
            return False
        conn = self._conn
        if self.expect and not conn.continue_sent:
            conn.continue_sent = True
            conn._send(conn.proto.informational(100))
        return self.next_chunk(self._deadline())

    def next_chunk(self, deadline: float) -> bool:
        """Move one more piece of body into the buffer; False at its end."""
        conn = self._conn
        events = conn.events
        while True:
            while not events:
                if conn.eof:
                    self.ended = True
                    self.error = (400, "The client closed the connection mid-body.")
                    raise ClientGone("client closed the connection before the body was complete")
                wait = deadline - time.monotonic()
                if wait <= 0:
                    self._fail(408, "Timed out reading the request body.")
                try:
                    data = conn.recv_within(deadline)
                except TimeoutError:
                    self._fail(408, "Timed out reading the request body.")
                self._received += len(data)
                conn._feed(data)
            event = events.popleft()
            if isinstance(event, Body):
                self._buf += event.data
                self.pending = len(event.data)
                return True
            if isinstance(event, EndBody):
                self.ended = True
                return False
            if isinstance(event, Reject):
                self._fail(event.status, event.reason)
            events.appendleft(event)  # a next request: this body has ended
            self.ended = True
            return False

    def _fail(self, status: int, reason: str) -> None:
        self.ended = True
        self.error = (status, reason)
        self._conn.body_error = (status, reason)
        raise _BodyBroken(status, reason)

    def drain(self) -> None:  # pragma: no cover - the connection drains (bounded) instead
        self._buf.clear()


class WireResponse(ResponseWriter):
    """A response written to the client by this slot, framed by the shared HTTP/1.1 code."""

    __slots__ = ("body", "conn", "failed", "sent_bytes", "status")

    def __init__(self, conn: HandedConnection, body: WireInput, is_head: bool) -> None:
        super().__init__(is_head)
        self.conn = conn
        self.body = body
        self.status = 0
        self.sent_bytes = 0
        self.failed = False

    def encode_head(self, head: ResponseHead) -> bytes:
        conn = self.conn
        body_error = conn.body_error
        if body_error is not None:
            # The body broke (limit, timeout, framing): that answer replaces the app's.
            self.status = body_error[0]
            self.is_head = True  # the app's body is dropped
            return conn.proto.error_response(body_error[0], body_error[1])
        self.status = head.status
        if conn.records is not None:
            conn.records.response_started(conn.index)
        # A body the client holds back for a 100 we never sent: the connection cannot be
        # reused (RFC 9110 10.1.1).
        body = self.body
        force_close = body.expect and not conn.continue_sent and not body.ended
        return conn.proto.start_response(head.status, head.headers, head.reason,
                                         stopping=conn.wind_down() == CLOSE,
                                         force_close=force_close)

    def encode_data(self, data: bytes) -> bytes:
        self.sent_bytes += len(data)
        return self.conn.proto.body(data)

    def send(self, data: bytes) -> None:
        self.conn._send(data)

    def aborted(self) -> bool:
        return self.conn.broken

    def finish(self) -> None:
        self.conn._send(self.conn.proto.end_response())

    def fail(self) -> None:
        self.failed = True

    def internal_error(self) -> None:
        conn = self.conn
        body_error = conn.body_error
        status, reason = body_error or (500, "The server encountered an internal error and was "
                                        "unable to complete your request.")
        self.status = status
        if conn.records is not None:
            conn.records.response_started(conn.index)
        conn._send(conn.proto.error_response(status, reason, close=body_error is not None))


def _cpu_times() -> tuple[float, float, float, float]:
    t = os.times()
    return t[0], t[1], t[2], t[3]
