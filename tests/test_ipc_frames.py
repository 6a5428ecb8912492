"""The IPC codec, sans-IO: frames survive any split, heads round-trip, NUL is refused."""

from __future__ import annotations

import itertools
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from asyncmpm.ipc.frames import FrameDecoder, FrameType, encode, pack_fields
from asyncmpm.ipc.handoff import Handback, Handoff, Served
from asyncmpm.ipc.messages import RequestHead, ResponseHead
from asyncmpm.ipc.slot_records import (
    CLOSE,
    IDLE,
    IN_REQUEST,
    RESPONSE_STARTED,
    RETURN,
    SlotRecords,
)

frames_st = st.lists(
    st.tuples(st.sampled_from(list(FrameType)), st.binary(max_size=300)), max_size=20
)


@given(frames=frames_st, cuts=st.lists(st.integers(min_value=0, max_value=10_000)))
def test_frames_survive_any_split(frames: list[tuple[FrameType, bytes]], cuts: list[int]) -> None:
    wire = b"".join(encode(kind, payload) for kind, payload in frames)
    points = sorted({c % (len(wire) + 1) for c in cuts} | {0, len(wire)})
    decoder = FrameDecoder()
    got: list[tuple[int, bytes]] = []
    for a, b in itertools.pairwise(points):
        got += decoder.feed(wire[a:b])
    assert got == [(int(k), p) for k, p in frames]
    assert decoder.pending == 0


token = st.binary(min_size=0, max_size=40).filter(lambda b: b"\x00" not in b)


@given(headers=st.lists(st.tuples(token, token), max_size=10), path=token, query=token)
def test_request_head_round_trips(headers: list[tuple[bytes, bytes]], path: bytes,
                                  query: bytes) -> None:
    head = RequestHead(b"GET", path, query, b"HTTP/1.1", b"http", b"127.0.0.1", b"5555",
                       b"example", b"80", b"c", b"", True, b"1-1", b"1,2,3", headers)
    assert RequestHead.decode(head.encode()) == head


def test_response_head_round_trips() -> None:
    head = ResponseHead(404, b"Not Found", [(b"Content-Type", b"text/plain")])
    assert ResponseHead.decode(head.encode()) == head


def test_nul_in_a_field_is_refused() -> None:
    with pytest.raises(ValueError, match="NUL"):
        pack_fields([b"a", b"b\x00c"])


def test_oversized_frame_is_refused() -> None:
    with pytest.raises(ValueError, match="exceeds"):
        FrameDecoder().feed(b"\xff\xff\xff\xff\x02")


@pytest.mark.parametrize("payload", [
    b"200\x00OK\r\nX-Injected: 1",  # response splitting through the reason
    b"200\x00OK\x00X-A\x00a\nX-Injected: 1",  # or a header value
    b"100\x00Continue",  # a 1xx is never a final answer
    b"600\x00Nope",
    b"20\x00Short",
    b"+20\x00Sign",
    b"200\x00OK\x00Content-Length\x00-1",
    b"200\x00OK\x00content-length\x00 3",
    b"200\x00OK\x00CONTENT-LENGTH\x00",
])
def test_response_head_the_child_should_never_send_is_refused(payload: bytes) -> None:
    # Defence in depth: the child validates the app's head; the front does not trust it.
    with pytest.raises(ValueError, match=r"response head|status|Content-Length"):
        ResponseHead.decode(payload)


# --- the handoff payloads and the shared slot records ---------------------------------------
_field = st.binary(max_size=40).filter(lambda b: b"\x00" not in b)


@given(_field, _field, _field, _field, _field, st.integers(0, 1000), _field,
       st.binary(max_size=300))
def test_handoff_round_trips(remote: bytes, rport: bytes, local: bytes, lport: bytes,
                             name: bytes, keepalives: int, rid: bytes, data: bytes) -> None:
    handoff = Handoff(2, remote, rport, local, lport, name, keepalives, rid, b"1,2,3", data)
    assert Handoff.decode(handoff.encode()) == handoff  # data may hold NULs and anything


@given(st.booleans(), st.integers(0, 10**6), st.binary(max_size=300),
       st.lists(st.tuples(st.integers(100, 599), st.integers(0, 2**40), st.integers(0, 2**40)),
                max_size=20),
       st.binary(max_size=64))
def test_handback_round_trips(keep: bool, keepalives: int, leftover: bytes,
                              served: list[tuple[int, int, int]], line: bytes) -> None:
    back = Handback(keep, keepalives, leftover, tuple(Served(*s) for s in served),
                    (1.5, 0.25, 0.0, 3.0), line.replace(b"\x00", b""))
    assert Handback.decode(back.encode()) == back


def test_handback_refuses_garbage() -> None:
    for payload in (b"", b"x", b"5\x00k", b"999\x00k\x001\x001\x000,0,0,0\x00"):
        with pytest.raises(ValueError):  # noqa: PT011
            Handback.decode(payload)


def test_slot_records_one_writer_one_reader() -> None:
    writer = SlotRecords(4)
    reader = SlotRecords(4, fd=os.dup(writer.fd))  # a second mapping, as a child has
    try:
        assert reader.state(2) == IDLE
        assert reader.done(2) == (0, 0)
        writer.request_started(2, 123.5, b"GET / HTTP/1.1")
        assert reader.state(2) == IN_REQUEST
        assert reader.request_start(2) == 123.5
        assert reader.request_line(2) == b"GET / HTTP/1.1"
        assert reader.unanswered(2, baseline=0)
        writer.response_started(2)
        assert reader.state(2) == RESPONSE_STARTED
        assert not reader.unanswered(2, baseline=0)
        writer.request_done(2, 42, (1.0, 2.0, 0.0, 0.0))
        assert reader.done(2) == (1, 42)
        assert reader.cpu_times(2) == (1.0, 2.0, 0.0, 0.0)
        assert not reader.unanswered(2, baseline=0)  # it finished a request: nothing owed
        assert reader.unanswered(2, baseline=1)  # handed again: the next one never started
        reader.request_wind_down(2, RETURN)
        reader.request_wind_down(2, CLOSE)
        reader.request_wind_down(2, RETURN)  # never weakened
        assert writer.wind_down(2) == CLOSE
        assert writer.wind_down(1) == 0
        writer.reset(2)
        assert reader.done(2) == (0, 0)
        assert reader.wind_down(2) == 0
    finally:
        writer.close()
        reader.close()
