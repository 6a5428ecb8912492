"""The IPC codec, sans-IO: frames survive any split, heads round-trip, NUL is refused."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from asyncmpm.ipc.frames import FrameDecoder, FrameType, encode, pack_fields
from asyncmpm.ipc.messages import RequestHead, ResponseHead

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
