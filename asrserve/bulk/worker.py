"""What runs in a worker process or Ray actor: load the model once, decode tasks.

A :class:`Task` is a whole file or one piece of a long one; the worker reads the
audio itself (only the piece's span), decodes it through
:meth:`asrserve.Recognizer.transcribe` and answers a :class:`PieceResult`.
Every failure of one input (missing, unreadable, corrupt, unsupported URI …)
becomes the result's ``error``; only a model that does not load is ``fatal``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from asrserve.bulk.manifest import local_path
from asrserve.bulk.split import SplitConfig, boundary, quietest_point, read_span
from asrserve.config import DecodingConfig


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

    def load(self) -> Any:
        import asrserve

        return asrserve.load_model(
            self.model,
            provider=self.provider,
            num_threads=self.num_threads,
            precision=self.precision,
            decoding=self.decoding,
            endpoint=asrserve.EndpointConfig(enabled=self.endpointing),
        )


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


class Worker:
    """One model (and, when splitting at pauses, one VAD) per process or actor."""

    def __init__(self, spec: ModelSpec, split: SplitConfig) -> None:
        self.split = split
        self.load_error: str | None = None
        self.recognizer: Any = None
        try:
            self.recognizer = spec.load()
        except Exception as exc:
            self.load_error = f"model did not load: {_describe(exc)}"
        self._vad: Any = None

    def process_batch(self, tasks: list[Task]) -> list[PieceResult]:
        return [self.process(t) for t in tasks]

    def process(self, task: Task) -> PieceResult:
        if self.load_error is not None:
            return failed(task, self.load_error, fatal=True)
        t0 = time.perf_counter()
        try:
            result = self._decode(task)
        except Exception as exc:  # one bad input never stops the run
            return failed(task, _describe(exc))
        result.decode_s = time.perf_counter() - t0
        return result

    def _decode(self, task: Task) -> PieceResult:
        result = self._transcribe(task)
        from asrserve.audio import truncated_seconds, truncation_warning

        missing = truncated_seconds(local_path(task.location))
        if missing > 0:
            result.warning = truncation_warning(task.location, missing)
        return result

    def _transcribe(self, task: Task) -> PieceResult:
        from asrserve.audio import load_audio

        rec = self.recognizer
        rate = int(rec.feature_config.sample_rate)
        path = local_path(task.location)
        if task.count == 1:
            samples = load_audio(path, rate)
            duration = samples.size / rate
            parts = [s.to_dict() for s in rec.transcribe_segments(samples, rate)]
            return _piece(task, parts, 0.0, duration, duration)
        d, k, n = task.duration_s, task.piece, task.count
        start = 0.0 if k == 0 else self._cut(path, d, n, k)
        end = d if k == n - 1 else self._cut(path, d, n, k + 1)
        a = max(0.0, start - self.split.overlap_s)
        b = min(d, end + self.split.overlap_s)
        parts = [
            _shifted(s.to_dict(), a)
            for s in rec.transcribe_segments(read_span(path, a, b, rate), rate)
        ]
        return _piece(task, parts, start, end, d)

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


def process_in_pool(task: Task) -> PieceResult:
    if _WORKER is None:
        return failed(task, "worker process was not initialised", fatal=True)
    return _WORKER.process(task)
