"""Shared-memory slot records: what a slot is doing right now, readable without a message.

While a slot serves a handed-off connection the front loop sends nothing and hears nothing
until the HANDBACK; yet it must know, at any moment, whether that slot is in a request, since
when, and whether the response has started (a child that dies before its response started
gets the client a 502; after, the connection is simply closed; a request past ``Timeout`` is a
hung child). As httpd's children write their ``worker_score``, each slot writes its own record
in one shared mapping; the front only reads it. One writer per record, fixed offsets, no locks:
a reader may see a record mid-update, which costs at most a stale status line.

The mapping is a memfd created by the supervisor; each child gets the fd with its slot
channels and maps it.
"""

from __future__ import annotations

import mmap
import os
import struct

__all__ = ["CLOSE", "IDLE", "IN_REQUEST", "RESPONSE_STARTED", "RETURN", "SlotRecords"]

# wind-down byte (written by the front)
RETURN = 1
CLOSE = 2

# state byte
IDLE = 0  # between requests (or not serving a handed-off connection)
IN_REQUEST = 1  # a request head was read; no response byte has been written
RESPONSE_STARTED = 2  # some of the response reached the socket

# state, wind-down, request start, requests begun, line, requests done, body bytes sent, the
# process's CPU times (user, system, children's user and system) when the last request ended
_RECORD = struct.Struct("=BB6xdQ64sQQ4d")
_TAIL = struct.Struct("=dQ64s")  # request start, requests begun, line: at offset 8
_DONE = struct.Struct("=QQ4d")  # requests done, body bytes, CPU times: at offset 88


class SlotRecords:
    """A view on the shared mapping: one fixed-size record per flat slot index."""

    __slots__ = ("_map", "fd", "slots")

    def __init__(self, slots: int, fd: int | None = None) -> None:
        size = max(1, slots) * _RECORD.size
        if fd is None:
            fd = os.memfd_create("asyncmpm-slots", os.MFD_CLOEXEC)
            os.ftruncate(fd, size)
        self.fd = fd
        self.slots = slots
        self._map = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)

    # ---------------------------------------------------------------- writer (the slot)
    def request_started(self, index: int, now: float, line: bytes) -> None:
        off = index * _RECORD.size
        m = self._map
        count = _TAIL.unpack_from(m, off + 8)[1]
        _TAIL.pack_into(m, off + 8, now, count + 1, line[:64])
        m[off] = IN_REQUEST

    def request_done(self, index: int, body_bytes: int,
                     cpu: tuple[float, float, float, float]) -> None:
        off = index * _RECORD.size
        m = self._map
        done, sent = _DONE.unpack_from(m, off + 88)[:2]
        _DONE.pack_into(m, off + 88, done + 1, sent + body_bytes, *cpu)
        m[off] = IDLE

    def response_started(self, index: int) -> None:
        self._map[index * _RECORD.size] = RESPONSE_STARTED

    def idle(self, index: int) -> None:
        self._map[index * _RECORD.size] = IDLE

    def wind_down(self, index: int) -> int:
        """0, or what the front asked for: RETURN (give the connection back after the current
        request: this child retires) or CLOSE (close it after the current request: the
        server stops)."""
        return self._map[index * _RECORD.size + 1]

    # ---------------------------------------------------------------- reader (the front)
    def request_wind_down(self, index: int, how: int) -> None:
        """Ask the slot to end its streak after the current request (``RETURN`` or
        ``CLOSE``); the one byte the front writes. A stronger request is never weakened."""
        off = index * _RECORD.size + 1
        self._map[off] = max(self._map[off], how)

    def state(self, index: int) -> int:
        return int(self._map[index * _RECORD.size])

    def request_start(self, index: int) -> float:
        return float(_TAIL.unpack_from(self._map, index * _RECORD.size + 8)[0])

    def requests(self, index: int) -> int:
        return int(_TAIL.unpack_from(self._map, index * _RECORD.size + 8)[1])

    def done(self, index: int) -> tuple[int, int]:
        """(requests finished, body bytes sent) since the slot's child started."""
        done, sent = _DONE.unpack_from(self._map, index * _RECORD.size + 88)[:2]
        return int(done), int(sent)

    def cpu_times(self, index: int) -> tuple[float, float, float, float]:
        """Its process's CPU times when its last request ended (mod_status's CPU column)."""
        u, s, cu, cs = _DONE.unpack_from(self._map, index * _RECORD.size + 88)[2:]
        return u, s, cu, cs

    def request_line(self, index: int) -> bytes:
        return bytes(_TAIL.unpack_from(self._map, index * _RECORD.size + 8)[2]).rstrip(b"\x00")

    def close_all(self) -> None:
        """The server stops: every slot closes its connection after the current request."""
        for index in range(self.slots):
            self.request_wind_down(index, CLOSE)

    def time_left(self, index: int, timeout: float, now: float) -> float:
        """Seconds until the slot's current request passes ``timeout`` (``timeout`` itself
        when it is between requests); zero or less: it is hung."""
        if self.state(index) == IDLE:
            return timeout
        return self.request_start(index) + timeout - now

    def unanswered(self, index: int, baseline: int) -> bool:
        """Whether a request is owed an answer by a slot that failed: one is running with
        nothing of its response written, or the slot never got to the first request it was
        handed (its count is still ``baseline``, the count at the handoff)."""
        state = self.state(index)
        return state == IN_REQUEST or (state == IDLE and self.requests(index) == baseline)

    def reset(self, index: int) -> None:
        off = index * _RECORD.size
        self._map[off : off + _RECORD.size] = bytes(_RECORD.size)

    def close(self) -> None:
        self._map.close()
        os.close(self.fd)
