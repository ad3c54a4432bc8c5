"""Many inputs decoded as one rolling batch of streams.

Offline transcription of many files (``asrserve transcribe a.wav b.wav …``, a
bulk worker's tasks) decodes up to ``max_streams`` inputs at once, so one
encoder run per round advances every active stream a chunk and a memory-bound
encoder reads its weights once per round instead of once per file:

1. fill: while fewer than ``max_streams`` streams are active, the next input
   joins (inputs are pulled lazily);
2. feed: every active stream without a ready chunk takes its input's next
   ``(sample_rate, samples)`` piece (until it has one, or the input ends:
   ``input_finished``), so memory is a few pieces per stream, whatever an
   input's length;
3. decode: one ``decode_streams`` over the ready streams, then
   :func:`~asrserve.core.segments.after_chunk` for each (endpoints exactly as
   every transport has them);
4. a stream whose input ended with no chunk left closes its last segment
   (:func:`~asrserve.core.segments.close_segment`) and its :class:`Decoded`
   is yielded; its slot goes to the next input.

A stream sees the same chunks, endpoint checks and segment bounds as
:func:`asrserve.core.segments.segments` gives it alone, so the segments are the
same as decoding each input alone wherever a stream's encoder output does not
depend on its batch mates (fp32, fp16, static int8). Graphs with per-batch
dynamic int8 activation scales (``recognizer.batch_dependent``) give identical
results only with ``recognizer.isolate_batches`` set, which runs their encoder
stream by stream.

Synchronous and I/O-free: inputs are iterables of pieces the caller makes
(reading a file block by block, slicing an array); a piece iterator that raises
fails that input alone (its :class:`Decoded` carries the error) and the others
go on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any, Generic, TypeVar

import numpy as np
import numpy.typing as npt

from asrserve.config import DEFAULT_MAX_STREAMS
from asrserve.core.events import Segment
from asrserve.core.interfaces import AnyRecognizer, AudioStream
from asrserve.core.segments import Segmenting, after_chunk, close_segment

__all__ = [
    "Decoded",
    "Pieces",
    "array_pieces",
    "decode_rolling",
    "in_order",
    "stream_factory",
    "transcribe_many",
]

S = TypeVar("S", bound=AudioStream)
Pieces = Iterable[tuple[int, npt.ArrayLike]]
"""One input: ``(sample_rate, samples)`` pieces, float32 in [-1, 1] or int16."""


@dataclass(frozen=True)
class Decoded:
    """One input's outcome: ``index`` its position among the inputs, its
    ``segments`` (what :func:`~asrserve.core.segments.segments` gives alone),
    ``duration`` the seconds of audio its stream took (at the model's rate);
    ``error`` why it failed (then ``segments`` is empty). ``busy_s``: its share
    of the rounds it was active in (a round's ``clock`` time split evenly
    between the streams active in it; 0.0 without a clock)."""

    index: int
    segments: list[Segment] = field(default_factory=list)
    duration: float = 0.0
    error: Exception | None = None
    busy_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None


class _Slot(Generic[S]):
    """An active input: its stream, its pieces, its segments so far."""

    def __init__(self, index: int, stream: S, pieces: Iterator[tuple[int, npt.ArrayLike]]) -> None:
        self.index = index
        self.stream = stream
        self.pieces = pieces
        self.segments: list[Segment] = []
        self.busy_s = 0.0

    def failed(self, exc: Exception) -> Decoded:
        return Decoded(self.index, [], self.stream.duration, exc, self.busy_s)


def _feed(rec: Segmenting[S], slot: _Slot[S]) -> None:
    """Give the stream pieces until it has a chunk ready or its input ends."""
    stream = slot.stream
    while not stream.is_finished and not rec.is_ready(stream):
        piece = next(slot.pieces, None)
        if piece is None:
            stream.input_finished()
        else:
            stream.accept_waveform(*piece)


def decode_rolling(
    rec: Segmenting[S],
    inputs: Iterable[Pieces],
    new_stream: Callable[[], S],
    *,
    max_streams: int = DEFAULT_MAX_STREAMS,
    clock: Callable[[], float] | None = None,
) -> Iterator[Decoded]:
    """Decode ``inputs`` (each an iterable of pieces, pulled lazily) as a
    rolling batch of at most ``max_streams`` streams made by ``new_stream``;
    yield each input's :class:`Decoded` as it completes (``index`` says which:
    :func:`in_order` restores the inputs' order).

    An input whose pieces raise, or whose stream refuses them, fails alone. A
    ``decode_streams`` call that raises fails the inputs of that batch (the
    error is not one stream's to blame). ``clock`` (e.g. ``time.process_time``)
    measures each input's ``busy_s``."""
    if max_streams < 1:
        raise ValueError(f"max_streams must be >= 1, got {max_streams}")
    source = enumerate(inputs)
    active: list[_Slot[S]] = []
    exhausted = False
    while True:
        while not exhausted and len(active) < max_streams:
            nxt = next(source, None)
            if nxt is None:
                exhausted = True
                break
            index, pieces = nxt
            try:
                active.append(_Slot(index, new_stream(), iter(pieces)))
            except Exception as exc:  # an input that does not open
                yield Decoded(index, error=exc)
        if not active:
            return
        t0 = clock() if clock is not None else 0.0
        done: list[Decoded] = []
        for slot in active:
            try:
                _feed(rec, slot)
            except Exception as exc:  # this input's audio: unreadable, bad rate …
                done.append(slot.failed(exc))
        failed = {d.index for d in done}
        ready = [s for s in active if s.index not in failed and rec.is_ready(s.stream)]
        if ready:
            try:
                rec.decode_streams([s.stream for s in ready])
            except Exception as exc:
                done += [s.failed(exc) for s in ready]
                failed |= {s.index for s in ready}
            else:
                for s in ready:
                    seg = after_chunk(rec, s.stream)
                    if seg is not None:
                        s.segments.append(seg)
        if clock is not None:
            share = (clock() - t0) / len(active)
            for s in active:
                s.busy_s += share
        for s in active:
            if s.index in failed or not s.stream.is_finished or rec.is_ready(s.stream):
                continue
            last = close_segment(rec, s.stream)
            parts = [*s.segments, last] if last is not None else s.segments
            done.append(Decoded(s.index, parts, s.stream.duration, None, s.busy_s))
        if done:
            ended = {d.index for d in done}
            active = [s for s in active if s.index not in ended]
            yield from sorted(done, key=lambda d: d.index)


def in_order(results: Iterable[Decoded]) -> Iterator[Decoded]:
    """``results`` in their inputs' order (those that complete early are held
    until every earlier input has completed). Indices must be 0, 1, 2 …"""
    held: dict[int, Decoded] = {}
    nxt = 0
    for r in results:
        held[r.index] = r
        while nxt in held:
            yield held.pop(nxt)
            nxt += 1
    if held:
        raise ValueError(f"results missing before index {min(held)}")


def array_pieces(
    samples: npt.ArrayLike, sample_rate: int, piece_seconds: float = 1.0
) -> Iterator[tuple[int, npt.NDArray[Any]]]:
    """An array as pieces of ``piece_seconds`` (views, no copies)."""
    x = np.asarray(samples)
    step = max(1, int(piece_seconds * sample_rate))
    for begin in range(0, x.size, step):
        yield sample_rate, x[begin : begin + step]


def stream_factory(rec: AnyRecognizer) -> Callable[[], Any] | None:
    """What makes the stream ``rec.transcribe_segments`` decodes, for the
    recognizer kinds that batch: the transducer ``Recognizer`` (its default
    rules) and the VAD-segmented offline NeMo recognizer (endpointing always on:
    a segment per VAD segment). ``None`` for any other kind: decode its inputs
    one by one (:func:`transcribe_many` does)."""
    from asrserve.core.recognizer import Recognizer

    if isinstance(rec, Recognizer):
        return rec.create_stream
    from asrserve.families.nemo_tdt import TdtRecognizer

    if isinstance(rec, TdtRecognizer):
        vad = rec
        rules = replace(vad.endpoint, enabled=True)
        return lambda: vad.create_stream(endpoint=rules)
    return None


def _one_by_one(rec: AnyRecognizer, inputs: Iterable[Pieces]) -> Iterator[Decoded]:
    """Each input alone through ``rec.transcribe_segments`` (its audio joined
    first): the fallback for recognizer kinds :func:`stream_factory` does not know."""
    for index, pieces in enumerate(inputs):
        try:
            got = [(int(r), np.asarray(x)) for r, x in pieces]
            rates = {r for r, _ in got}
            if len(rates) > 1:
                raise ValueError(f"sample rate changes within an input: {sorted(rates)}")
            rate = got[0][0] if got else rec.feature_config.sample_rate
            audio = np.concatenate([x for _, x in got]) if got else np.zeros(0, np.float32)
            parts = list(rec.transcribe_segments(audio, rate))
            duration = audio.size / rate
        except Exception as exc:
            yield Decoded(index, error=exc)
            continue
        yield Decoded(index, parts, duration)


def transcribe_many(
    rec: AnyRecognizer,
    inputs: Iterable[Pieces],
    *,
    max_streams: int = DEFAULT_MAX_STREAMS,
    clock: Callable[[], float] | None = None,
) -> Iterator[Decoded]:
    """``rec.transcribe_segments`` of every input, as a rolling batch
    (:func:`decode_rolling`) for the recognizer kinds that batch, else one by
    one; results as they complete (see :func:`in_order`)."""
    factory = stream_factory(rec)
    if factory is None:
        yield from _one_by_one(rec, inputs)
        return
    yield from decode_rolling(rec, inputs, factory, max_streams=max_streams, clock=clock)
