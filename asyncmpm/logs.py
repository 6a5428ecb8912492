"""Logging: the error log through structlog, and Apache's access log.

Configured once: the CLI and each child at boot call :func:`configure_logging`; every other
module only calls ``structlog.get_logger()``. A child calls :func:`bind_process` so each of
its lines carries ``pid`` and ``slot``.

The access log is written by the front loop, once per request, so :class:`AccessLog` formats
Apache's combined line by hand (the timestamp is cached per second) instead of going through
structlog's processor chain.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Literal, TextIO

import structlog

from asyncmpm.errors import ConfigError
from asyncmpm.logformat import compile_format

__all__ = [
    "LEVELS",
    "NOTICE",
    "AccessEntry",
    "AccessLog",
    "ErrorLog",
    "bind_process",
    "configure_logging",
    "escape_logitem",
    "parse_level",
]

NOTICE = 25
"""Apache's ``notice`` sits between stdlib INFO (20) and WARNING (30)."""

LEVELS: dict[str, int] = {
    "debug": 10,
    "info": 20,
    "notice": NOTICE,
    "warn": 30,
    "warning": 30,
    "error": 40,
    "crit": 50,
    "critical": 50,
    "alert": 50,
    "emerg": 50,
}
"""Apache ``LogLevel`` names (plus the stdlib spellings) -> stdlib numeric levels."""


def parse_level(level: str) -> int:
    """Map an Apache ``LogLevel`` name to a stdlib level; ``trace1``..``trace8`` are debug."""
    name = level.strip().lower()
    if name in LEVELS:
        return LEVELS[name]
    if len(name) == 6 and name.startswith("trace") and name[5] in "12345678":
        return LEVELS["debug"]
    raise ValueError(f"unknown log level {level!r}; expected one of {', '.join(LEVELS)}")


def configure_logging(
    *, fmt: Literal["console", "json"], level: str, stream: TextIO | None = None
) -> None:
    """Configure structlog for this process: the error log, to ``stream`` (stderr by default).

    ``console`` is human-readable (colours only on a TTY); ``json`` is one object per line.
    Every line has an ISO timestamp, the level, and whatever :func:`bind_process` bound.
    """
    if fmt not in ("console", "json"):
        raise ValueError(f"unknown log format {fmt!r}; expected 'console' or 'json'")
    min_level = parse_level(level)
    out = sys.stderr if stream is None else stream
    processors: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.StackInfoRenderer(),
        structlog.processors.TimeStamper(fmt="iso"),
    ]
    if fmt == "json":
        processors += [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
    else:
        processors.append(structlog.dev.ConsoleRenderer(colors=_isatty(out)))
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(_method_level(min_level)),
        context_class=dict,
        logger_factory=structlog.WriteLoggerFactory(file=out),
        cache_logger_on_first_use=True,
    )


def _method_level(level: int) -> int:
    """The lowest structlog method level that ``level`` lets through.

    structlog only builds filtering loggers for the stdlib levels, and has no ``notice()``
    method, so ``notice`` (25) filters like ``warning``: info() is dropped, warning() kept.
    """
    return min(known for known in (10, 20, 30, 40, 50) if known >= level)


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError, OSError):
        return False


def bind_process(**kw: object) -> None:
    """Bind ``kw`` (``pid``, ``slot``, ...) to every later log line of this context.

    It uses :mod:`structlog.contextvars`: a process forked from here inherits the bindings,
    but a new thread starts with an empty context (bind again there, or bind on the logger).
    """
    structlog.contextvars.bind_contextvars(**kw)


# ---------------------------------------------------------------------------------- escaping
# ap_escape_logitem (server/util.c): backslash, double quote, control characters and every
# byte outside printable ASCII are escaped, so a logged value cannot end the quoted field or
# the line, nor forge another one.
_SAFE = re.compile(r"[\x20\x21\x23-\x5b\x5d-\x7e]*")
_NAMED = {"\b": "\\b", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v", "\\": "\\\\",
          '"': '\\"'}


class _LogitemTable(dict[int, str]):
    """``str.translate`` table: every latin-1 character mapped; wider ones escaped as UTF-8."""

    def __missing__(self, key: int) -> str:
        return "".join(f"\\x{b:02x}" for b in chr(key).encode("utf-8", "surrogatepass"))


_TABLE = _LogitemTable()
for _code in range(256):
    _char = chr(_code)
    if _char in _NAMED:
        _TABLE[_code] = _NAMED[_char]
    elif 0x20 <= _code < 0x7F:
        _TABLE[_code] = _char
    else:
        _TABLE[_code] = f"\\x{_code:02x}"


def escape_logitem(value: str) -> str:
    """Escape ``value`` as Apache's ``ap_escape_logitem`` does.

    Characters up to U+00FF stand for the byte of the same value (the server decodes the
    wire as latin-1); wider characters are escaped byte by byte in UTF-8.
    """
    if _SAFE.fullmatch(value):
        return value
    return value.translate(_TABLE)


# ---------------------------------------------------------------------------------- access log
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_TIME_CACHE_SIZE = 16


@dataclass(frozen=True, slots=True)
class AccessEntry:
    """One request, as the access log sees it. ``time`` is when the request arrived."""

    remote_addr: str
    time: float
    request_line: str
    status: int
    bytes_sent: int
    referer: str
    user_agent: str
    duration_us: int
    pid: int
    slot: int
    method: str = "-"
    path: str = "-"
    query: str = ""
    protocol: str = "-"
    server_name: str = ""
    local_port: int = 0
    tid: int = 0
    # As received and as sent (raw bytes, lower-case request names): decoded only by a
    # LogFormat that asks for a header, so the request path pays nothing for them.
    request_headers: Sequence[tuple[bytes, bytes]] = ()
    response_headers: Sequence[tuple[bytes, bytes]] = ()


_JSON_FIELDS = tuple(f.name for f in fields(AccessEntry)
                     if f.name not in ("request_headers", "response_headers"))


class AccessLog:
    """The access log: Apache's combined format, or one JSON object per line.

    ``path`` is a file (opened for appending, line-buffered) or ``"-"`` for stdout. Each
    line reaches the OS before :meth:`log` returns. :meth:`reopen` reopens the file after
    logrotate moved it; after :meth:`close`, :meth:`log` does nothing.
    """

    def __init__(self, path: str, fmt: Literal["combined", "json"] = "combined",
                 log_format: str | None = None) -> None:
        """``log_format`` is an Apache LogFormat string or nickname (``common``,
        ``combined``...); the default is the fast built-in combined format."""
        if fmt not in ("combined", "json"):
            raise ValueError(f"unknown access log format {fmt!r}; expected 'combined' or 'json'")
        self.path = path
        self.fmt = fmt
        self._custom = (
            compile_format(log_format, self._clf_cached)
            if log_format not in (None, "combined") and fmt != "json"
            else None
        )
        self._times: dict[int, str] = {}
        self._stream: TextIO | None = None
        self._owned = False
        self._open()

    def _open(self) -> None:
        if self.path == "-":
            self._stream, self._owned = sys.stdout, False
        else:
            self._stream = open(  # noqa: SIM115 - closed by close()/reopen()
                self.path, "a", buffering=1, encoding="utf-8", errors="backslashreplace"
            )
            self._owned = True

    def log(self, entry: AccessEntry) -> None:
        stream = self._stream
        if stream is None:
            return
        stream.write(self.format(entry))
        if not self._owned:
            stream.flush()

    def format(self, entry: AccessEntry) -> str:
        """The line (with its newline) that :meth:`log` writes for ``entry``."""
        if self.fmt == "json":
            # Header lists stay out: Cookie and Authorization have no place in a log.
            record = {name: getattr(entry, name) for name in _JSON_FIELDS}
            return json.dumps(record) + "\n"
        if self._custom is not None:
            return self._custom(entry)
        return self.format_combined(entry)

    def _clf_cached(self, when: float) -> str:
        second = int(when // 1)
        return self._times.get(second) or self._clf_time(second)

    def format_combined(self, entry: AccessEntry) -> str:
        """``%h %l %u %t "%r" %>s %b "%{Referer}i" "%{User-Agent}i"``."""
        stamp = self._clf_cached(entry.time)
        referer = escape_logitem(entry.referer) if entry.referer else "-"
        agent = escape_logitem(entry.user_agent) if entry.user_agent else "-"
        size = entry.bytes_sent or "-"
        host = escape_logitem(entry.remote_addr)
        request = escape_logitem(entry.request_line)
        return f'{host} - - {stamp} "{request}" {entry.status} {size} "{referer}" "{agent}"\n'

    def _clf_time(self, second: int) -> str:
        """``[10/Oct/2000:13:55:36 -0700]`` in local time, English month names as Apache."""
        tm = time.localtime(second)
        offset = tm.tm_gmtoff or 0
        sign = "-" if offset < 0 else "+"
        minutes = abs(offset) // 60
        stamp = (
            f"[{tm.tm_mday:02d}/{_MONTHS[tm.tm_mon - 1]}/{tm.tm_year:04d}:"
            f"{tm.tm_hour:02d}:{tm.tm_min:02d}:{tm.tm_sec:02d} "
            f"{sign}{minutes // 60:02d}{minutes % 60:02d}]"
        )
        if len(self._times) >= _TIME_CACHE_SIZE:
            self._times.clear()
        self._times[second] = stamp
        return stamp

    def reopen(self) -> None:
        """Close and reopen the file (after logrotate); the cached timestamps are kept."""
        if self._stream is not None and self._owned:
            self._stream.close()
        self._open()

    def close(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            if self._owned:
                stream.close()
            else:
                stream.flush()

    def __enter__(self) -> AccessLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ----------------------------------------------------------------------------------- error log
class ErrorLog:
    """httpd's ErrorLog: the file takes over file descriptor 2.

    Taking over the descriptor, not just the logger, means children inherit it and a
    traceback printed by Python itself (an app that crashes before logging is set up) lands in
    the file too. :meth:`reopen` makes logrotate work; :meth:`close` gives the process its
    original stderr back, so an embedding program is left as it was.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._saved: int | None = None
        self.reopen()  # a missing directory or a permission error surfaces here, at start

    def reopen(self) -> None:
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise ConfigError("ErrorLog", f"AH00091: could not open error log file "
                              f"{self.path}: {exc.strerror}") from None
        try:
            sys.stderr.flush()
            if self._saved is None:
                self._saved = os.dup(2)
            os.dup2(fd, 2)  # dup2 clears O_CLOEXEC on 2: children inherit the log
        finally:
            os.close(fd)

    def close(self) -> None:
        saved, self._saved = self._saved, None
        if saved is not None:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
