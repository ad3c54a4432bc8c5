"""The frame-mask check in front of aiohttp's WebSocket reader
(``asrserve/server/frames.py``): it follows frame boundaries however the bytes
are cut into reads, passes masked frames of every length class, and stops at
the first unmasked one."""

from __future__ import annotations

import random
from typing import Any

import pytest

from asrserve.server.frames import _MaskCheck


class _Reader:
    def __init__(self) -> None:
        self.fed = bytearray()

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        self.fed += data
        return False, b""

    def feed_eof(self) -> None:
        pass


class _Queue:
    def __init__(self) -> None:
        self.error: BaseException | None = None

    def set_exception(self, exc: BaseException) -> None:
        self.error = exc


def _frame(payload_len: int, masked: bool = True) -> bytes:
    b1 = 0x80 if masked else 0
    if payload_len < 126:
        head = bytes([0x82, b1 | payload_len])
    elif payload_len < 1 << 16:
        head = bytes([0x82, b1 | 126]) + payload_len.to_bytes(2, "big")
    else:
        head = bytes([0x82, b1 | 127]) + payload_len.to_bytes(8, "big")
    key = b"\x01\x02\x03\x04" if masked else b""
    # payload bytes that look like headers: the check must skip them, not read them
    return head + key + bytes([0x82, 0x05]) * (payload_len // 2) + b"\x00" * (payload_len % 2)


def _reads(data: bytes, rng: random.Random, max_read: int) -> list[bytes]:
    cuts = sorted({0, len(data), *(rng.randrange(len(data)) for _ in range(len(data) // 7))})
    out, start = [], 0
    for end in cuts[1:]:
        while end - start > max_read:
            out.append(data[start : start + max_read])
            start += max_read
        out.append(data[start:end])
        start = end
    return [r for r in out if r]


def _check(reads: list[bytes]) -> tuple[Any, _Reader, _Queue]:
    reader, queue = _Reader(), _Queue()
    check = _MaskCheck(reader, queue)
    for r in reads:
        eof, _ = check.feed_data(r)
        if eof:
            break
    return check, reader, queue


LENGTHS = [0, 1, 5, 125, 126, 127, 300, 6400, 65535, 65536, 70001]


@pytest.mark.parametrize("max_read", [1, 2, 3, 13, 14, 15, 64, 1 << 20])
def test_masked_frames_pass_however_the_reads_are_cut(max_read: int) -> None:
    rng = random.Random(max_read)
    data = b"".join(_frame(n) for n in LENGTHS + rng.sample(LENGTHS, len(LENGTHS)))
    check, reader, queue = _check(_reads(data, rng, max_read))
    assert queue.error is None
    assert bytes(reader.fed) == data  # everything passed on, in order
    assert check._skip == 0
    assert not check._head


@pytest.mark.parametrize("max_read", [1, 2, 5, 14, 1 << 20])
@pytest.mark.parametrize("bad_at", [0, 3, len(LENGTHS) - 1])
def test_the_first_unmasked_frame_stops_the_reader(max_read: int, bad_at: int) -> None:
    rng = random.Random(bad_at * 31 + max_read)
    frames = [_frame(n) for n in LENGTHS]
    frames[bad_at] = _frame(LENGTHS[bad_at], masked=False)
    data = b"".join(frames)
    _, reader, queue = _check(_reads(data, rng, max_read))
    assert queue.error is not None
    assert "masked" in str(queue.error)
    before = sum(len(f) for f in frames[:bad_at])
    # nothing from the read holding the unmasked frame's second byte on reaches aiohttp
    assert len(reader.fed) <= before + 1
    assert bytes(reader.fed) == data[: len(reader.fed)]
