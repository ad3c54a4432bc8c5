"""Long files: split into pieces that decode on different workers, then stitch.

A file longer than ``min_duration_s`` (:class:`asrserve.config.SplitConfig`) is
cut into ``n = ceil(duration / window_s)`` pieces around the nominal boundaries
``k * duration / n``. Each piece is a task of its own; the worker of piece ``k``
finds both of its cuts by itself, from the audio, so no one reads a long file
whole:

- ``vad``: the cut is the middle of the longest run of non-speech windows (Silero
  probability below the detector's ``neg_threshold``) within ``search_s`` of the
  boundary, the one nearest the boundary on ties; with no such window, the least
  speech-like window. The two workers next to a boundary read the same
  ``±search_s`` span and run the same fresh detector over it, so they find the
  same cut.
- ``fixed``: the cut is the boundary itself.

A piece decodes ``[cut_k - overlap_s, cut_k+1 + overlap_s]`` (the overlap gives
the encoder some context on both sides) and owns the words whose first token's
timestamp falls in ``[cut_k, cut_k+1)``. :func:`stitch` joins the owned words in
order. The streaming encoder restarts from its initial state in each piece, so a
stitched transcript can differ from decoding the file whole near the cuts; the
measured difference is in the README ("Bulk transcription") and bounded by
tests/bulk/test_split.py.

:func:`read_span` reads a piece's span, :func:`read_blocks` a whole file block by
block (what ``asrserve transcribe`` and the workers feed their streams).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from asrserve.errors import AudioFormatError

FloatArray = npt.NDArray[np.float32]


def boundary(duration_s: float, count: int, k: int) -> float:
    """The nominal start of piece ``k`` of ``count`` (seconds)."""
    return duration_s * k / count


def read_span(path: Path, start_s: float, end_s: float, sample_rate: int) -> FloatArray:
    """Samples of ``[start_s, end_s)`` of a file, mono float32 at ``sample_rate``
    (seeks; only the span is decoded)."""
    import soundfile as sf

    from asrserve.audio import decode_error_reason, resample

    try:
        with sf.SoundFile(str(path)) as f:
            rate = int(f.samplerate)
            begin = max(0, round(start_s * rate))
            stop = min(f.frames, round(end_s * rate))
            f.seek(begin)
            data = f.read(max(0, stop - begin), dtype="float32", always_2d=True)
    except Exception as exc:  # libsndfile raises several types
        raise AudioFormatError(f"{path}: cannot decode audio ({decode_error_reason(exc)})") from exc
    mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    return resample(np.ascontiguousarray(mono, dtype=np.float32), rate, sample_rate)


def read_blocks(
    path: str | Path, block_s: float = 1.0, consumed: Callable[[float], None] | None = None
) -> Iterator[tuple[int, FloatArray]]:
    """A file's audio as ``(rate, mono float32)`` blocks of ``block_s`` seconds
    at its own rate, for a stream to resample (to the same samples as resampling
    the file whole): read block by block where libsndfile reads the file, else
    decoded whole by :func:`asrserve.audio.read_audio` (PyAV: aac, opus in webm …;
    its errors name the file). ``consumed(seconds)`` after each block."""
    import soundfile as sf

    from asrserve.audio import read_audio

    try:
        f = sf.SoundFile(str(path))
    except Exception:  # read_audio says why, or decodes it through PyAV
        samples, rate = read_audio(path)
        step = max(1, round(block_s * rate))
        blocks: Iterable[tuple[int, FloatArray]] = (
            (rate, samples[i : i + step]) for i in range(0, samples.size, step)
        )
    else:
        blocks = _sf_blocks(f, path, block_s)
    for rate, block in blocks:
        yield rate, block
        if consumed is not None:
            consumed(block.size / rate)


def _sf_blocks(f: Any, path: str | Path, block_s: float) -> Iterator[tuple[int, FloatArray]]:
    """Mono blocks of an open :class:`soundfile.SoundFile` (closed at the end),
    channels averaged as :func:`asrserve.audio.read_audio` does."""
    from asrserve.audio import decode_error_reason

    with f:
        rate, channels = int(f.samplerate), int(f.channels)
        size = max(1, round(block_s * rate))
        while True:
            try:
                data = f.read(size, dtype="float32", always_2d=True)
            except Exception as exc:  # libsndfile raises several types
                reason = decode_error_reason(exc)
                raise AudioFormatError(f"{path}: cannot decode audio ({reason})") from exc
            if not len(data):
                return
            mono = data.mean(axis=1) if channels > 1 else data[:, 0]
            yield rate, np.ascontiguousarray(mono, dtype=np.float32)


def quietest_point(probs: FloatArray, low: float, window: int, target: int) -> int:
    """Sample offset of the cut in a span scored in windows of ``window`` samples:
    the middle of the longest run of windows below ``low`` (nearest ``target`` on
    ties), else the middle of the lowest window (nearest ``target`` on ties)."""
    if probs.size == 0:
        return target
    runs: list[tuple[int, int]] = []  # [first, last] window of each low run
    start: int | None = None
    for i, is_low in enumerate((probs < low).tolist()):
        if is_low and start is None:
            start = i
        elif not is_low and start is not None:
            runs.append((start, i - 1))
            start = None
    if start is not None:
        runs.append((start, probs.size - 1))

    def middle(first: int, last: int) -> int:
        return (first + last + 1) * window // 2

    if runs:
        first, last = min(runs, key=lambda r: (-(r[1] - r[0]), abs(middle(*r) - target)))
        return middle(first, last)
    lowest = np.flatnonzero(probs == probs.min()).tolist()
    best = min(lowest, key=lambda i: abs(middle(i, i) - target))
    return middle(best, best)


@dataclass(frozen=True)
class PieceWords:
    """A decoded piece: tokens with absolute timestamps, and the span it owns."""

    start_s: float
    end_s: float
    tokens: Sequence[str]
    timestamps: Sequence[float]


def stitch(pieces: Sequence[PieceWords]) -> tuple[list[str], list[float]]:
    """Tokens and timestamps of the whole file from its pieces (in order): each
    piece keeps the words (a token starting with a space and the tokens after it)
    whose first token lies in its span; the first piece's span starts at -inf and
    the last one's ends at +inf."""
    tokens: list[str] = []
    stamps: list[float] = []
    last = len(pieces) - 1
    for k, piece in enumerate(pieces):
        lo = -math.inf if k == 0 else piece.start_s
        hi = math.inf if k == last else piece.end_s
        keep = False
        for i, (tok, t) in enumerate(zip(piece.tokens, piece.timestamps, strict=True)):
            if i == 0 or tok.startswith(" "):
                keep = lo <= t < hi
            if keep:
                tokens.append(tok)
                stamps.append(t)
    return tokens, stamps
