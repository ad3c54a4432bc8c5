"""What runs in a worker process or Ray actor: load the model once, decode tasks.

A :class:`Task` is a whole file or one piece of a long one; the worker reads the
audio itself (a whole file block by block, a piece's span alone) and answers a
:class:`PieceResult`. The tasks of one call (:meth:`Worker.process_batch`) are
decoded as a rolling batch of ``ModelSpec.max_streams`` streams
(:func:`asrserve.core.rolling.transcribe_many`): one encoder run per round for
all of them, each task's segments those it gets alone (see that module for
dynamic int8 models and ``isolate_batches``). Every failure of one input
(missing, unreadable, corrupt, unsupported URI …) becomes the result's
``error``; only a model that does not load is ``fatal``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from asrserve.bulk.manifest import local_path
from asrserve.bulk.split import boundary, quietest_point, read_blocks, read_span
from asrserve.config import DEFAULT_MAX_STREAMS, DecodingConfig, SplitConfig
from asrserve.core.rolling import Decoded

BLOCK_S = 1.0
"""Seconds of a whole file read at a time."""


@dataclass(frozen=True)
class ModelSpec:
    """The arguments of :func:`asrserve.load_model`, sent to every worker."""

    model: str | None = None
    provider: str = "cpu"
    num_threads: int = 1
    precision: str = "auto"
    decoding: DecodingConfig | None = None
    endpointing: bool = False
    """Split transcripts into segments at pauses (as ``transcribe --endpointing``)."""
    max_streams: int = DEFAULT_MAX_STREAMS
    """Tasks a worker decodes together (a rolling batch of streams)."""
    isolate_batches: bool = False
    """Run a dynamic int8 encoder stream by stream (results independent of batch mates)."""
    language: str | None = None
    """Whisper's language (``None``: the model's default)."""
    task: str | None = None
    """Whisper's task (``None``: transcribe)."""
    timestamps: bool | None = None
    """Whisper: decode with timestamp tokens (``None``: without)."""

    def load(self) -> Any:
        import asrserve

        rec = asrserve.load_model(
            self.model,
            provider=self.provider,
            num_threads=self.num_threads,
            precision=self.precision,
            decoding=self.decoding,
            endpoint=asrserve.EndpointConfig(enabled=self.endpointing),
            language=self.language,
            task=self.task,
            timestamps=self.timestamps,
        )
        rec.isolate_batches = self.isolate_batches
        return rec


@dataclass(frozen=True)
class Task:
    """Piece ``piece`` of ``count`` of one input (``count == 1``: the whole file);
    ``duration_s``: the file's length from its header (split files only)."""

    item_id: str
    location: str
    piece: int = 0
    count: int = 1
    duration_s: float = 0.0
    attempt: int = 0


@dataclass
class PieceResult:
    """A decoded task: tokens with timestamps from the file's start; ``start_s``/
    ``end_s`` the span the piece owns; ``decode_s`` the worker's wall time."""

    item_id: str
    piece: int
    count: int
    tokens: list[str] = field(default_factory=list)
    timestamps: list[float] = field(default_factory=list)
    start_s: float = 0.0
    end_s: float = 0.0
    duration_s: float = 0.0
    decode_s: float = 0.0
    error: str | None = None
    fatal: bool = False
    warning: str | None = None  # decoded, but something is off (a truncated file)
    segments: list[dict[str, Any]] = field(default_factory=list)
    """The core's segments (:meth:`asrserve.core.segments.Segment.to_dict`), in
    seconds from the file's start."""


def failed(task: Task, message: str, fatal: bool = False) -> PieceResult:
    return PieceResult(task.item_id, task.piece, task.count, error=message, fatal=fatal)


@dataclass(frozen=True)
class _Span:
    """What a task decodes: ``[offset, offset + its audio)`` of the file, owning
    ``[start, end)``; ``duration`` the file's."""

    offset: float
    start: float
    end: float
    duration: float


class Worker:
    """One model (and, when splitting at pauses, one VAD) per process or actor."""

    def __init__(self, spec: ModelSpec, split: SplitConfig) -> None:
        self.split = split
        self.max_streams = max(1, spec.max_streams)
        self.load_error: str | None = None
        self.recognizer: Any = None
        try:
            self.recognizer = spec.load()
        except Exception as exc:
            self.load_error = f"model did not load: {_describe(exc)}"
        self._vad: Any = None

    def process(self, task: Task) -> PieceResult:
        return self.process_batch([task])[0]

    def process_batch(self, tasks: list[Task]) -> list[PieceResult]:
        """Decode ``tasks`` as one rolling batch; their results in their order."""
        if self.load_error is not None:
            return [failed(t, self.load_error, fatal=True) for t in tasks]
        from asrserve.core.rolling import transcribe_many

        spans: dict[int, _Span | None] = {}
        inputs = (self._pieces(i, t, spans) for i, t in enumerate(tasks))
        results: dict[int, PieceResult] = {}
        decoded = transcribe_many(
            self.recognizer, inputs, max_streams=self.max_streams, clock=time.perf_counter
        )
        try:
            for d in decoded:
                task = tasks[d.index]
                if d.error is not None:
                    results[d.index] = failed(task, _describe(d.error))
                    continue
                try:
                    results[d.index] = self._result(task, spans[d.index], d)
                except Exception as exc:  # one bad input never stops the run
                    results[d.index] = failed(task, _describe(exc))
        except Exception as exc:  # the batch itself: its unfinished tasks fail
            for i, t in enumerate(tasks):
                results.setdefault(i, failed(t, _describe(exc)))
        return [results[i] for i in range(len(tasks))]

    def _pieces(
        self, index: int, task: Task, spans: dict[int, _Span | None]
    ) -> Iterator[tuple[int, npt.NDArray[np.float32]]]:
        """The task's audio in pieces (read as its stream needs them); its
        :class:`_Span` goes to ``spans[index]`` (None: the whole file)."""
        path = local_path(task.location)
        if task.count == 1:
            spans[index] = None
            yield from read_blocks(path, BLOCK_S)
            return
        rate = int(self.recognizer.feature_config.sample_rate)
        d, k, n = task.duration_s, task.piece, task.count
        start = 0.0 if k == 0 else self._cut(path, d, n, k)
        end = d if k == n - 1 else self._cut(path, d, n, k + 1)
        a = max(0.0, start - self.split.overlap_s)
        b = min(d, end + self.split.overlap_s)
        spans[index] = _Span(a, start, end, d)
        samples = read_span(path, a, b, rate)
        step = max(1, round(BLOCK_S * rate))
        for i in range(0, samples.size, step):
            yield rate, samples[i : i + step]

    def _result(self, task: Task, span: _Span | None, decoded: Decoded) -> PieceResult:
        from asrserve.audio import truncated_seconds, truncation_warning

        if span is None:  # a whole file: as long as its stream's audio
            span = _Span(0.0, 0.0, decoded.duration, decoded.duration)
        parts = [_shifted(s.to_dict(), span.offset) for s in decoded.segments]
        result = _piece(task, parts, span.start, span.end, span.duration)
        result.decode_s = decoded.busy_s
        missing = truncated_seconds(local_path(task.location))
        if missing > 0:
            result.warning = truncation_warning(task.location, missing)
        return result

    def _cut(self, path: Any, duration: float, count: int, k: int) -> float:
        """Where piece ``k`` starts (seconds): see :mod:`asrserve.bulk.split`."""
        nominal = boundary(duration, count, k)
        if self.split.mode != "vad":
            return nominal
        from asrserve.vad import SAMPLE_RATE, WINDOW, SileroVad, VadConfig, VoiceActivityDetector

        if self._vad is None:
            self._vad = SileroVad(self.split.vad_model or "")
        search = min(self.split.search_s, 0.4 * duration / count)
        lo = max(0.0, nominal - search)
        span = read_span(path, lo, min(duration, nominal + search), SAMPLE_RATE)
        cfg = VadConfig(model=self.split.vad_model)
        probs = VoiceActivityDetector(self._vad, cfg).score(span)
        target = round((nominal - lo) * SAMPLE_RATE)
        at = quietest_point(np.asarray(probs), cfg.low, WINDOW, target)
        return round(lo + at / SAMPLE_RATE, 4)


def _shifted(segment: dict[str, Any], by: float) -> dict[str, Any]:
    """A piece's segment in seconds from the file's start."""
    if by == 0.0:
        return segment
    return {
        **segment,
        "start": round(segment["start"] + by, 3),
        "end": round(segment["end"] + by, 3),
        "timestamps": [round(t + by, 3) for t in segment["timestamps"]],
    }


def _piece(
    task: Task, parts: list[dict[str, Any]], start: float, end: float, duration: float
) -> PieceResult:
    tokens = [t for s in parts for t in s["tokens"]]
    stamps = [t for s in parts for t in s["timestamps"]]
    return PieceResult(
        task.item_id, task.piece, task.count, tokens, stamps, start, end, duration, segments=parts
    )


def _describe(exc: BaseException) -> str:
    from asrserve.errors import AsrServeError

    if isinstance(exc, AsrServeError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


# --- process-pool entry points (module level: picklable under spawn) -------------
_WORKER: Worker | None = None


def init_process(spec: ModelSpec, split: SplitConfig) -> None:
    """Pool initializer: one model per worker process."""
    global _WORKER  # noqa: PLW0603 - the process's one worker
    _WORKER = Worker(spec, split)


def process_in_pool(tasks: list[Task]) -> list[PieceResult]:
    """One call's tasks, decoded together by the process's worker."""
    if _WORKER is None:
        return [failed(t, "worker process was not initialised", fatal=True) for t in tasks]
    return _WORKER.process_batch(tasks)
