"""Apache's LogFormat language, compiled once into a list of small functions.

Supported: ``%h %a %l %u %t %{format}t %r %s %>s %b %B %O %D %T %{ms}T %{us}T %P %{pid}P
%{tid}P %{Header}i %{Header}o %v %V %p %U %q %m %H %X %%``. Values that come from the network
(%r, %U, %q, %{..}i, %{..}o) are escaped as ``ap_escape_logitem`` does, so a header cannot
break or forge a line. ``%O`` (bytes on the wire with headers) is logged as the body size.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from asyncmpm.errors import ConfigError

if TYPE_CHECKING:
    from asyncmpm.logs import AccessEntry

__all__ = ["NICKNAMES", "compile_format"]

NICKNAMES = {
    "common": '%h %l %u %t "%r" %>s %b',
    "combined": '%h %l %u %t "%r" %>s %b "%{Referer}i" "%{User-agent}i"',
    "vhost_combined": '%v:%p %h %l %u %t "%r" %>s %O "%{Referer}i" "%{User-Agent}i"',
    "referer": "%{Referer}i -> %U",
    "agent": "%{User-agent}i",
}
_DIRECTIVE = re.compile(r"%(?:\{([^}]*)\})?[<>]?([a-zA-Z%])")
Part = Callable[["AccessEntry"], str]


def _header(headers_attr: str, name: str, escape: Callable[[str], str]) -> Part:
    wanted = name.lower().encode("latin-1")

    def part(entry: AccessEntry) -> str:
        values = [v for k, v in getattr(entry, headers_attr) if k.lower() == wanted]
        return escape(b", ".join(values).decode("latin-1")) if values else "-"

    return part


def compile_format(fmt: str, clf_time: Callable[[float], str]) -> Callable[[AccessEntry], str]:
    """A function producing one log line (with its newline) for an entry."""
    from asyncmpm.logs import escape_logitem

    fmt = NICKNAMES.get(fmt, fmt)
    parts: list[str | Part] = []
    pos = 0
    for match in _DIRECTIVE.finditer(fmt):
        if match.start() > pos:
            parts.append(fmt[pos : match.start()])
        pos = match.end()
        param, letter = match.group(1), match.group(2)
        parts.append(_part(letter, param, clf_time, escape_logitem))
    if pos < len(fmt):
        parts.append(fmt[pos:])
    if "%" in "".join(p for p in parts if isinstance(p, str)):
        raise ConfigError("LogFormat", f"unrecognized directive in {fmt!r}")

    def line(entry: AccessEntry) -> str:
        return "".join(p if isinstance(p, str) else p(entry) for p in parts) + "\n"

    return line


def _part(letter: str, param: str | None, clf_time: Callable[[float], str],
          escape: Callable[[str], str]) -> Part:
    if letter == "%":
        return lambda e: "%"
    if letter in "ha":
        return lambda e: e.remote_addr
    if letter in "lu":
        return lambda e: "-"
    if letter == "t":
        if not param:
            return lambda e: clf_time(e.time)
        spec = param.removeprefix("begin:").removeprefix("end:")
        if spec in ("sec", "msec", "usec"):
            scale = {"sec": 1, "msec": 1000, "usec": 1_000_000}[spec]
            return lambda e: str(int(e.time * scale))
        return lambda e: time.strftime(spec, time.localtime(e.time))
    if letter == "r":
        return lambda e: escape(e.request_line)
    if letter == "s":
        return lambda e: str(e.status)
    if letter == "b":
        return lambda e: str(e.bytes_sent) if e.bytes_sent else "-"
    if letter in "BO":
        return lambda e: str(e.bytes_sent)
    if letter == "I":
        return lambda e: "-"
    if letter == "D":
        return lambda e: str(e.duration_us)
    if letter == "T":
        if param == "ms":
            return lambda e: str(e.duration_us // 1000)
        if param == "us":
            return lambda e: str(e.duration_us)
        return lambda e: str(e.duration_us // 1_000_000)
    if letter == "P":
        if param == "tid":
            return lambda e: str(e.tid)
        return lambda e: str(e.pid)
    if letter == "i":
        return _header("request_headers", param or "", escape)
    if letter == "o":
        return _header("response_headers", param or "", escape)
    if letter in "vV":
        return lambda e: e.server_name or "-"
    if letter == "p":
        return lambda e: str(e.local_port)
    if letter == "U":
        return lambda e: escape(e.path)
    if letter == "q":
        return lambda e: "?" + escape(e.query) if e.query else ""
    if letter == "m":
        return lambda e: e.method
    if letter == "H":
        return lambda e: e.protocol
    if letter == "X":
        return lambda e: "+"
    raise ConfigError("LogFormat", f"unrecognized LogFormat directive %{letter}")
