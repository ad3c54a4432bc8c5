"""Where a segment ends, decided once for every transport.

A stream's audio is decoded chunk by chunk, and after **every** chunk the
endpoint rules are asked whether the segment is over; an endpoint closes it
(a :class:`Segment`) and the next one starts. Whether the audio arrived in
10 ms pieces or as a whole file, and whichever transport carried it (the
Python API, the CLI, the HTTP API, the microphone client, the server), the
same audio gives the same segments, because each of them calls
:func:`decode_ready` and :func:`finish` instead of deciding endpoints itself.

The functions work on any recognizer with the streaming methods
(:class:`Segmenting`): the transducer :class:`~asrserve.core.recognizer.Recognizer`
and the VAD-segmented offline one alike.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import replace
from typing import Any, Protocol, TypeVar

__all__ = [
    "Eof",
    "Event",
    "Partial",
    "Segment",
    "StreamEvents",
    "after_chunk",
    "close_segment",
    "decode_ready",
    "finish",
    "joined",
    "segments",
]

import numpy.typing as npt

from asrserve.core.events import Eof, Event, Partial, Result, Segment
from asrserve.core.interfaces import AudioStream
from asrserve.core.stream import segment_end

S = TypeVar("S", bound=AudioStream)
S_contra = TypeVar("S_contra", bound=AudioStream, contravariant=True)


class Segmenting(Protocol[S_contra]):
    """The recognizer methods segmentation needs."""

    @property
    def frame_shift_s(self) -> float: ...

    def decode_streams(self, streams: Iterable[S_contra]) -> int: ...

    def is_ready(self, stream: S_contra) -> bool: ...

    def token_ids(self, stream: S_contra) -> list[int]: ...

    def is_endpoint(self, stream: S_contra) -> bool: ...

    def get_result(self, stream: S_contra, is_final: bool = False) -> Result: ...

    def reset(self, stream: S_contra) -> None: ...


def close_segment(rec: Segmenting[S], stream: S, *, keep_empty: bool = False) -> Segment | None:
    """End the stream's current segment now (an endpoint, a flush, input end):
    its final result, or None when it heard nothing (``keep_empty``: the empty
    segment too, for a client that asked for a final); the next segment starts."""
    result = rec.get_result(stream, is_final=True)
    end = segment_end(stream, rec.frame_shift_s)
    rec.reset(stream)
    return Segment(result, end) if result.text or keep_empty else None


def after_chunk(rec: Segmenting[S], stream: S) -> Segment | None:
    """What one decoded chunk ended: the segment, when the stream is at an
    endpoint and heard something; ``None`` otherwise (an empty segment at an
    endpoint restarts silently)."""
    if not rec.is_endpoint(stream):
        return None
    return close_segment(rec, stream)


def decode_ready(rec: Segmenting[S], stream: S) -> list[Segment]:
    """Decode every chunk the stream has ready, one at a time, checking for an
    endpoint after each; the segments that ended, in order."""
    done: list[Segment] = []
    while rec.decode_streams([stream]):
        seg = after_chunk(rec, stream)
        if seg is not None:
            done.append(seg)
    return done


def finish(rec: Segmenting[S], stream: S) -> list[Segment]:
    """End the input: decode the rest (tail padding included) and close the
    last segment, if it heard anything."""
    stream.input_finished()
    done = decode_ready(rec, stream)
    last = close_segment(rec, stream)
    return [*done, last] if last is not None else done


def joined(parts: Iterable[Segment]) -> Result:
    """The whole audio's result from its segments: texts joined by spaces,
    tokens and (absolute) timestamps concatenated."""
    results = [s.result for s in parts]
    return Result(
        text=" ".join(r.text for r in results if r.text),
        tokens=[p for r in results for p in r.tokens],
        token_ids=[t for r in results for t in r.token_ids],
        timestamps=[t for r in results for t in r.timestamps],
        is_final=True,
    )


def segments(
    rec: Segmenting[S], stream: S, pieces: Iterable[tuple[int, npt.ArrayLike]]
) -> Iterator[Segment]:
    """Feed ``(sample_rate, samples)`` pieces to ``stream`` and yield each
    segment as soon as it ends: lazily, so a long file's first segments come
    before its end is read."""
    for rate, samples in pieces:
        stream.accept_waveform(rate, samples)
        yield from decode_ready(rec, stream)
    yield from finish(rec, stream)


class StreamEvents:
    """One stream's events, decided here for every transport. After every
    decoded chunk (:meth:`after_chunk`): the segment at an endpoint, a partial
    when the hypothesis changed, or, once the input has ended and its last
    chunk is decoded, the last segment and :class:`Eof`. A flush the client
    asked for is answered by :meth:`report` once its audio is decoded.

    ``every_chunk``: sherpa-onnx's server behaviour, one event per decoded
    chunk: a partial even when nothing changed, and the segment at an endpoint
    even when it heard nothing.

    Batching transports (the server's scheduler) decode chunks themselves and
    call :meth:`after_chunk` after each; single-stream ones iterate :meth:`events`.
    """

    def __init__(self, rec: Segmenting[S], stream: S, *, every_chunk: bool = False) -> None:
        self._rec: Segmenting[Any] = rec
        self._stream: Any = stream
        self._every_chunk = every_chunk
        self._shown: list[int] = []  # token ids of the last partial
        self._ended = False  # Eof reported

    def after_chunk(self) -> list[Event]:
        """The events of the chunk just decoded."""
        rec, stream = self._rec, self._stream
        seg: Segment | None = None
        if rec.is_endpoint(stream):
            seg = close_segment(rec, stream, keep_empty=self._every_chunk)
            self._shown = []
        if stream.is_finished and not rec.is_ready(stream):
            # the input's last chunk: its segment ends with the stream (an
            # endpoint at this very chunk is that segment, as sherpa-onnx has it)
            if seg is None:
                seg = close_segment(rec, stream, keep_empty=True)
            assert seg is not None
            self._ended = True
            return [replace(seg, last=True), Eof(stream.duration)]
        if seg is not None:
            return [seg]
        ids = rec.token_ids(stream)
        if ids == self._shown and not self._every_chunk:
            return []
        self._shown = ids
        return [Partial(rec.get_result(stream), segment_end(stream, rec.frame_shift_s))]

    def report(self, flush: bool = False) -> list[Event]:
        """What the client should hear now without a chunk decoded: the open
        segment once a flush's audio is decoded (``flush``; sent even when
        empty), or the end of a stream whose input ended with no chunk left."""
        rec, stream = self._rec, self._stream
        if self._ended or rec.is_ready(stream) or not (stream.is_finished or flush):
            return []
        self._shown = []
        seg = close_segment(rec, stream, keep_empty=True)
        assert seg is not None
        if stream.is_finished:
            self._ended = True
            return [replace(seg, last=True), Eof(stream.duration)]
        return [seg]

    def events(self) -> Iterator[Event]:
        """Decode what is ready, chunk by chunk, and report."""
        while self._rec.decode_streams([self._stream]):
            yield from self.after_chunk()
        yield from self.report()
