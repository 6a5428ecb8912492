"""Serve WSGI requests arriving on one slot channel (PEP 3333), with blocking sockets.

One :class:`SlotServer` per slot: the only thread of a prefork child, or one of the
``ThreadsPerChild`` threads of a worker child. It never sees HTTP: the front loop sends a
:class:`~asyncmpm.ipc.messages.RequestHead` and body frames, and gets back a response head,
data frames and END. Responses start only with the first non-empty body chunk (PEP 3333), a
list response goes out in one write, and a generator's chunks go out as they are produced.
"""

from __future__ import annotations

import array
import contextlib
import os
import re
import socket
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import IO, Any
from urllib.parse import unquote_to_bytes

import structlog

from asyncmpm.ipc.frames import HEADER, MAX_DATA, MAX_FRAME, FrameDecoder, FrameType, encode
from asyncmpm.ipc.messages import CPU_TIMES, RequestHead, ResponseHead

__all__ = [
    "BodyReader", "ChildChannel", "ClientGone", "FileWrapper", "FrameResponse", "ResponseWriter",
    "SlotServer", "WSGIApp",
]

ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]
StartResponse = Callable[..., Callable[[bytes], None]]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

_log = structlog.get_logger("asyncmpm.child")
# recv sizes of 128 KiB and more cost ~13 µs a call more (malloc goes to mmap and back).
_RECV = 64 * 1024
_FD = array.array("i")
_ANCILLARY = socket.CMSG_SPACE(4 * _FD.itemsize)  # room for 4 fds: never MSG_CTRUNC
_READ_CHUNK = 64 * 1024
_TOKEN = frozenset(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
# A final status an app may send (1xx are the server's business), then an optional reason of
# HTAB, SP, VCHAR and obs-text (RFC 9112 4). ``[0-9]``, not ``\d``: no Unicode digits.
_STATUS = re.compile(r"([2-5][0-9]{2})(?: ([\t\x20-\x7e\x80-\xff]*))?")
_CTL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # RFC 9110 5.5: no CTL but HTAB in a value
_DIGITS = re.compile(rb"[0-9]+")  # what int() accepts beyond this (-1, +3, 0_3, " 3") is not HTTP
_DATA = FrameType.DATA


class ClientGone(OSError):
    """The client went away before the request body was complete."""


class PeerGone(ConnectionError):
    """The peer a response goes to is gone: the front loop's channel, or (for a handed-off
    connection) the client. Not an app error: it ends what the caller says it ends."""


class ChannelClosed(PeerGone):
    """The front loop closed this slot's channel: the slot is finished.

    Distinct from a BrokenPipeError the app itself meets (say, on its database socket), which
    is the app's error like any other (500), not the end of the slot.
    """


class ChildChannel:
    """Blocking frame I/O over one end of a slot's socketpair.

    Every read is a ``recvmsg`` with room for passed descriptors: a HANDOFF frame carries a
    client socket, and a plain ``recv`` would let the kernel close it unseen.
    """

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(True)
        self.sock = sock
        self._decoder = FrameDecoder()
        self._frames: deque[tuple[int, bytes]] = deque()
        self.fds: deque[int] = deque()

    def _read(self, flags: int = 0) -> bytes:
        data, ancdata, msg_flags, _ = self.sock.recvmsg(_RECV, _ANCILLARY, flags)
        for level, kind, payload in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                usable = len(payload) - len(payload) % _FD.itemsize
                self.fds.extend(array.array("i", payload[:usable]))
        if msg_flags & socket.MSG_CTRUNC:
            _log.error("a passed descriptor was truncated by the kernel")
        return data

    def recv(self) -> tuple[int, bytes] | None:
        """The next frame, or None at EOF (the front loop is gone)."""
        while not self._frames:
            try:
                data = self._read()
            except ConnectionResetError:
                return None
            if not data:
                return None
            self._frames.extend(self._decoder.feed(data))
        return self._frames.popleft()

    def abort_requested(self) -> bool:
        """Non-blocking look for an ABORT frame (the client left mid-response)."""
        if not self._frames:
            try:
                data = self._read(socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                return False
            except OSError:
                return True
            if not data:
                return True
            self._frames.extend(self._decoder.feed(data))
        return any(kind == FrameType.ABORT for kind, _ in self._frames)

    def send(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise ChannelClosed(str(exc)) from exc

    def close_fds(self) -> None:
        """Close descriptors received but never used (a handoff we could not serve)."""
        while self.fds:
            with contextlib.suppress(OSError):
                os.close(self.fds.popleft())


class BodyReader:
    """``wsgi.input``'s reading API over a ``_fill`` that gets more body on demand, so a
    large upload streams whether it arrives in frames or straight from the client."""

    _buf: bytearray
    ended: bool

    def _fill(self) -> bool:
        raise NotImplementedError

    def drain(self) -> None:
        raise NotImplementedError

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            while self._fill():
                pass
            data = bytes(self._buf)
            self._buf.clear()
            return data
        while len(self._buf) < size and self._fill():
            pass
        data = bytes(self._buf[:size])
        del self._buf[:size]
        return data

    def readline(self, size: int | None = -1) -> bytes:
        while True:
            nl = self._buf.find(b"\n")
            if nl != -1:
                end = nl + 1
                break
            if size is not None and 0 <= size <= len(self._buf):
                end = size
                break
            if not self._fill():
                end = len(self._buf)
                break
        if size is not None and size >= 0:
            end = min(end, size)
        data = bytes(self._buf[:end])
        del self._buf[:end]
        return data

    def readlines(self, hint: int = -1) -> list[bytes]:
        lines: list[bytes] = []
        total = 0
        while True:
            line = self.readline()
            if not line:
                return lines
            lines.append(line)
            total += len(line)
            if 0 < hint <= total:
                return lines

    def __iter__(self) -> Iterator[bytes]:
        while True:
            line = self.readline()
            if not line:
                return
            yield line


class WSGIInput(BodyReader):
    """``wsgi.input`` of a proxied request: reads BODY frames on demand."""

    def __init__(self, channel: ChildChannel, has_body: bool, expect_continue: bool) -> None:
        self._channel = channel
        self._buf = bytearray()
        self.ended = not has_body
        self._expect = expect_continue
        self._gone = False

    def _fill(self) -> bool:
        """Get one more frame of body; False at the end of the body."""
        if self.ended:
            if self._gone:
                raise ClientGone("client closed the connection before the body was complete")
            return False
        if self._expect:
            self._expect = False
            self._channel.send(encode(FrameType.CONTINUE))
        while True:
            frame = self._channel.recv()
            if frame is None:
                self.ended = self._gone = True
                raise ClientGone("front loop went away")
            kind, payload = frame
            if kind == FrameType.BODY:
                self._buf += payload
                return True
            if kind == FrameType.BODY_END:
                self.ended = True
                if payload == b"!":
                    self._gone = True
                    raise ClientGone("client closed the connection before the body was complete")
                return False
            # ABORT or anything else mid-body means the request is dead.
            if kind == FrameType.ABORT:
                self.ended = self._gone = True
                raise ClientGone("client went away")

    def drain(self) -> None:
        """Discard what the app did not read, so the next request starts on a frame boundary."""
        self._expect = False  # never ask for a body nobody wants
        try:
            while not self.ended:
                self._buf.clear()
                self._fill()
        except ClientGone:
            pass
        self._buf.clear()


class FileWrapper:
    """``wsgi.file_wrapper``: iterate a file in blocks, and close it when done."""

    def __init__(self, filelike: IO[bytes], blksize: int = 64 * 1024) -> None:
        self.filelike = filelike
        self.blksize = blksize

    def __iter__(self) -> Iterator[bytes]:
        while True:
            block = self.filelike.read(self.blksize)
            if not block:
                return
            yield block

    def close(self) -> None:
        close = getattr(self.filelike, "close", None)
        if close is not None:
            close()


class ResponseWriter:
    """start_response/write state for one request; subclasses say how bytes leave.

    The WSGI rules (head only with the first non-empty chunk, Content-Length honoured, HEAD
    without a body) are here once, whether the reply goes back as frames to the front loop
    (:class:`FrameResponse`) or straight to the client (asyncmpm.child.connection).
    """

    __slots__ = ("declared", "head", "head_sent", "is_head", "sent")

    def __init__(self, is_head: bool) -> None:
        self.head: ResponseHead | None = None
        self.head_sent = False
        self.is_head = is_head
        self.sent = 0
        self.declared: int | None = None

    def start_response(
        self, status: str, headers: list[tuple[str, str]], exc_info: ExcInfo | None = None
    ) -> Callable[[bytes], None]:
        if exc_info is not None:
            try:
                if self.head_sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif self.head is not None:
            raise AssertionError("start_response called twice without exc_info")
        # Raised here, a bad head is an exception in the app (PEP 3333): it answers 500.
        head, declared = _check_head(status, headers)
        self.check_head(head)
        self.head = head
        self.declared = declared
        return self.write

    def head_bytes(self) -> bytes:
        if self.head_sent:
            return b""
        if self.head is None:
            raise AssertionError("the application did not call start_response")
        self.head_sent = True
        return self.encode_head(self.head)

    def data_bytes(self, data: bytes) -> bytes:
        """One chunk as it leaves (after the head, if this is the first non-empty one)."""
        if not isinstance(data, bytes | bytearray):
            raise TypeError(f"WSGI body chunks must be bytes, not {type(data).__name__}")
        if not data:
            return b""
        if self.declared is not None:
            room = self.declared - self.sent
            if room <= 0:
                return b""
            data = data[:room]
        size = len(data)
        self.sent += size
        if self.is_head:
            return b""
        # The head first: its framing (chunked or not) decides how this chunk is encoded.
        head = self.head_bytes()
        return head + self.encode_data(bytes(data))

    def write(self, data: bytes) -> None:
        out = self.data_bytes(data)
        if out or not self.head_sent:
            self.send(self.head_bytes() + out)

    # ------------------------------------------------------------ how bytes leave
    def check_head(self, head: ResponseHead) -> None:
        """Refuse (raise) a head this transport cannot carry."""

    def encode_head(self, head: ResponseHead) -> bytes:
        raise NotImplementedError

    def encode_data(self, data: bytes) -> bytes:
        raise NotImplementedError

    def send(self, data: bytes) -> None:
        raise NotImplementedError

    def aborted(self) -> bool:
        """The client is gone: stop producing (checked between chunks)."""
        return False

    def finish(self) -> None:
        """The response is complete."""
        raise NotImplementedError

    def fail(self) -> None:
        """The response broke after its head was sent: the connection must close."""
        raise NotImplementedError

    def internal_error(self) -> None:
        """The app failed before its head was sent: answer 500."""
        raise NotImplementedError


class FrameResponse(ResponseWriter):
    """A proxied request's reply: START/DATA/END frames to the front loop."""

    __slots__ = ("channel",)

    def __init__(self, channel: ChildChannel, is_head: bool) -> None:
        super().__init__(is_head)
        self.channel = channel

    def check_head(self, head: ResponseHead) -> None:
        if len(head.encode()) > MAX_FRAME:
            raise ValueError("response head too large for one frame")

    def encode_head(self, head: ResponseHead) -> bytes:
        return encode(FrameType.START, head.encode())

    def encode_data(self, data: bytes) -> bytes:
        """DATA frames of at most ``MAX_DATA`` bytes: no app chunk can exceed what the
        front's decoder accepts."""
        size = len(data)
        if size <= MAX_DATA:
            return HEADER.pack(size, _DATA) + data
        view = memoryview(data)
        parts: list[bytes | memoryview] = []
        for start in range(0, size, MAX_DATA):
            piece = view[start:start + MAX_DATA]
            parts.append(HEADER.pack(len(piece), _DATA))
            parts.append(piece)
        return b"".join(parts)

    def send(self, data: bytes) -> None:
        self.channel.send(data)

    def aborted(self) -> bool:
        return self.channel.abort_requested()

    def finish(self) -> None:
        self.channel.send(encode(FrameType.END, CPU_TIMES.pack(*os.times()[:4])))

    def fail(self) -> None:
        self.channel.send(encode(FrameType.FAILED))

    def internal_error(self) -> None:
        self.channel.send(_internal_error())


class SlotServer:
    """The request loop of one slot."""

    def __init__(
        self,
        channel: ChildChannel,
        app: WSGIApp,
        *,
        root_path: str,
        multithread: bool,
        slot: int,
        log: Any = None,
    ) -> None:
        self.channel = channel
        self.app = app
        self.root_path = root_path
        self.slot = slot
        self.tid = 0
        self.log = log or _log.bind(slot=slot)
        # Serves a HANDOFF payload (asyncmpm.child.connection); None: only proxied requests.
        self.on_handoff: Callable[[bytes], None] | None = None
        self.base_environ: dict[str, Any] = {
            "wsgi.version": (1, 0),
            "wsgi.multithread": multithread,
            "wsgi.multiprocess": True,
            "wsgi.run_once": False,
            "wsgi.errors": sys.stderr,
            "wsgi.file_wrapper": FileWrapper,
            "wsgi.input_terminated": True,
            "SCRIPT_NAME": root_path,
            "SERVER_SOFTWARE": "asyncmpm",
            "asyncmpm.slot": slot,
        }

    def serve(self) -> None:
        """Announce readiness, then serve until STOP or EOF."""
        self.tid = threading.get_native_id()
        ident = f"{os.getpid()},{self.tid}".encode()
        self.channel.send(encode(FrameType.READY, ident))
        while True:
            frame = self.channel.recv()
            if frame is None or frame[0] == FrameType.STOP:
                self.channel.close_fds()
                return
            kind, payload = frame
            if kind == FrameType.REQUEST:
                self.handle(RequestHead.decode(payload))
            elif kind == FrameType.HANDOFF and self.on_handoff is not None:
                self.on_handoff(payload)
            # Anything else here is a leftover of an aborted request: skip it.

    def environ(self, head: RequestHead, wsgi_input: BodyReader) -> dict[str, Any]:
        env = self.base_environ.copy()
        env.update(
            SERVER_NAME=head.server_name.decode("latin-1"),
            SERVER_PORT=head.server_port.decode("latin-1"),
            REMOTE_ADDR=head.remote_addr.decode("latin-1"),
            REMOTE_PORT=head.remote_port.decode("latin-1"),
        )
        env["wsgi.url_scheme"] = head.scheme.decode("latin-1")
        env["wsgi.input"] = wsgi_input
        env["asyncmpm.request_id"] = head.request_id.decode("latin-1")
        env["asyncmpm.stats"] = head.stats.decode("latin-1")
        fill_request(env, self.root_path, head.method, head.path, head.query, head.protocol,
                     head.headers)
        return env

    def handle(self, head: RequestHead) -> None:
        """A request proxied by the front loop: head and body in frames, reply in frames."""
        wsgi_input = WSGIInput(self.channel, bool(head.body), head.expect_continue)
        response = FrameResponse(self.channel, head.method == b"HEAD")
        self.run_app(self.environ(head, wsgi_input), response)
        wsgi_input.drain()

    def run_app(self, environ: dict[str, Any], response: ResponseWriter) -> None:
        """Call the app and send its response (PEP 3333); an app error is a 500, or a broken
        response if its head had gone out."""
        result: Iterable[bytes] | None = None
        try:
            result = self.app(environ, response.start_response)
            if isinstance(result, list | tuple):
                frames = [response.data_bytes(chunk) for chunk in result]
                response.send(b"".join([response.head_bytes(), *frames]))
            else:
                first = True
                for chunk in result:
                    out = response.data_bytes(chunk)
                    if out:
                        if not first and response.aborted():
                            break
                        response.send(response.head_bytes() + out)
                        first = False
            if not response.head_sent:
                response.send(response.head_bytes())
            if response.declared is not None and response.sent < response.declared:
                self.log.error(
                    "response shorter than its Content-Length",
                    declared=response.declared, sent=response.sent,
                )
                response.fail()
            else:
                response.finish()
        except PeerGone:
            raise  # whoever the response goes to is gone; the caller decides what that ends
        except BaseException as exc:
            # SystemExit and KeyboardInterrupt too (sys.exit() in a view): like mod_wsgi, log
            # it, answer 500 and keep serving. Re-raised, it would end a worker thread
            # silently (its client waiting Timeout for a 504) or a prefork child (a 502).
            if isinstance(exc, ClientGone):
                self.log.info("client went away while the app read its body")
            else:
                self.log.error(
                    "exception in WSGI application",
                    request=f"{environ['REQUEST_METHOD']} {environ['RAW_URI']}",
                    exc_info=True,
                )
            if response.head_sent:
                response.fail()
            else:
                response.internal_error()
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                try:
                    close()
                except BaseException:  # the app's code: SystemExit there is its bug too
                    self.log.error("exception in the close() of the WSGI iterable",
                                   exc_info=True)


# Header name -> environ key (None: dropped), computed once per distinct name.
_KEYS: dict[bytes, str | None] = {b"content-type": "CONTENT_TYPE",
                                  b"content-length": "CONTENT_LENGTH",
                                  b"transfer-encoding": None}  # framing is decoded already


def _key(name: bytes) -> str | None:
    if b"_" in name:
        return None  # Apache drops these: HTTP_X_A could otherwise be forged via X_A
    key = "HTTP_" + name.decode("latin-1").upper().replace("-", "_")
    if len(_KEYS) < 4096:
        _KEYS[name] = key
    return key


def fill_request(env: dict[str, Any], root: str, method: bytes, path: bytes, query: bytes,
                 protocol: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    """The per-request CGI variables of a WSGI environ (PEP 3333), the same whether the front
    or the slot parsed the request."""
    text = (unquote_to_bytes(path) if b"%" in path else path).decode("latin-1")
    if root and (text == root or text.startswith(root + "/")):
        text = text[len(root):]
    raw_uri = (path + b"?" + query if query else path).decode("latin-1")
    env["REQUEST_METHOD"] = method.decode("latin-1")
    env["PATH_INFO"] = text
    env["QUERY_STRING"] = query.decode("latin-1")
    env["RAW_URI"] = env["REQUEST_URI"] = raw_uri
    env["SERVER_PROTOCOL"] = protocol.decode("latin-1")
    keys = _KEYS
    for name, value in headers:
        if name[:1] == b":":  # set by the front loop (TLS variables), never by a client
            env[name[1:].decode("latin-1")] = value.decode("latin-1")
            continue
        key = keys[name] if name in keys else _key(name)
        if key is None:
            continue
        text = value.decode("latin-1")
        if key in env and key[:5] == "HTTP_":
            env[key] = env[key] + ("; " if key == "HTTP_COOKIE" else ",") + text
        else:
            env[key] = text


def _internal_error() -> bytes:
    body = (
        b'<!DOCTYPE HTML PUBLIC "-//IETF//DTD HTML 2.0//EN">\n<html><head>\n'
        b"<title>500 Internal Server Error</title>\n</head><body>\n"
        b"<h1>Internal Server Error</h1>\n<p>The server encountered an internal error and "
        b"was unable to complete your request.</p>\n</body></html>\n"
    )
    head = ResponseHead(500, b"Internal Server Error", [
        (b"Content-Type", b"text/html; charset=iso-8859-1"),
        (b"Content-Length", b"%d" % len(body)),
    ])
    return (encode(FrameType.START, head.encode()) + encode(FrameType.DATA, body)
            + encode(FrameType.END))


def _check_head(
    status: str, headers: list[tuple[str, str]]
) -> tuple[ResponseHead, int | None]:
    """Validate what the app passed to start_response; a bad head is the app's bug (500).

    Nothing the app chose may end the status line or a header line early (response
    splitting), a 1xx would be taken for the final answer, and the front frames the body by
    the declared Content-Length. Returns the head and that length.
    """
    if not isinstance(status, str):
        raise TypeError(f"status must be a str, not {type(status).__name__}")
    match = _STATUS.fullmatch(status)
    if match is None:
        raise ValueError(f"invalid status {status!r} (a final status, 200-599, and a reason "
                         "without control characters)")
    code, reason = match.group(1, 2)
    if not isinstance(headers, list):
        raise TypeError(f"headers must be a list, not {type(headers).__name__}")
    out: list[tuple[bytes, bytes]] = []
    declared: int | None = None
    names = _NAMES
    for item in headers:
        if type(item) is not tuple or len(item) != 2:
            raise TypeError(f"header {item!r} is not a (name, value) tuple")
        name, value = item
        if type(value) is not str:
            raise TypeError(f"header {item!r} must be a pair of str")
        known = names.get(name) if type(name) is str else None
        if known is None:
            known = _check_name(name)
        bname, is_length = known
        if _CTL.search(value):
            raise ValueError(f"header {name!r} has a control character in its value")
        bvalue = value.encode("latin-1")
        if is_length:
            if _DIGITS.fullmatch(bvalue) is None:
                raise ValueError(f"invalid Content-Length {value!r}")
            length = int(bvalue)
            if declared is not None and declared != length:
                raise ValueError("conflicting Content-Length headers")
            declared = length
        out.append((bname, bvalue))
    return ResponseHead(int(code), (reason or "").encode("latin-1"), out), declared


# Header names an app has used, checked once: name -> (bytes, is it Content-Length).
_NAMES: dict[str, tuple[bytes, bool]] = {}


def _check_name(name: object) -> tuple[bytes, bool]:
    if not isinstance(name, str):
        raise TypeError(f"header name {name!r} must be a str")
    bname = name.encode("latin-1")
    if not bname or not set(bname) <= _TOKEN:
        raise ValueError(f"invalid header name {name!r}")
    known = (bname, bname.lower() == b"content-length")
    if len(_NAMES) < 4096:
        _NAMES[name] = known
    return known
