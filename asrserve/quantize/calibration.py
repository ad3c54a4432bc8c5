"""Streaming calibration: the inputs each graph sees while real audio is decoded.

The fp32 model decodes every calibration file through the normal streaming
path (one stream at a time, greedy search), so encoder feeds carry warm
caches and joiner feeds pair real encoder frames with the decoder outputs
of the tokens greedy search actually emitted. For Whisper the same path cuts
the audio into VAD segments: encoder feeds are the segments' log-mel windows,
decoder feeds the prompt and every greedy step (tokens, self-attention
caches, cross-attention keys and values, offset). A graph's session is
wrapped while decoding and keeps its feeds (a bounded, evenly spread sample
when there are more than ``max_feeds``).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from asrserve.config import DecodingConfig
from asrserve.core.interfaces import AnyRecognizer
from asrserve.errors import ConfigError

Feed = dict[str, npt.NDArray[np.generic]]
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")


def audio_files(paths: Iterable[str | Path]) -> list[Path]:
    """Files as given, directories expanded to their audio files (sorted)."""
    found: list[Path] = []
    for item in paths:
        p = Path(item)
        if p.is_dir():
            found += sorted(f for f in p.rglob("*") if f.suffix.lower() in AUDIO_SUFFIXES)
        elif p.is_file():
            found.append(p)
        else:
            raise ConfigError(f"{p}: no such calibration audio file or directory")
    return found


class _Reservoir:
    """Keeps a uniform sample of at most ``limit`` items of a stream (seeded)."""

    def __init__(self, limit: int, seed: int) -> None:
        self.limit = limit
        self.items: list[Feed] = []
        self.seen = 0
        self._rng = random.Random(seed)

    def add(self, item: Feed) -> None:
        self.seen += 1
        if len(self.items) < self.limit:
            self.items.append(item)
            return
        j = self._rng.randrange(self.seen)
        if j < self.limit:
            self.items[j] = item


class RecordingSession:
    """A session proxy that keeps every feed in a reservoir: copies, or (``copy=False``,
    for callers that never change an array after feeding it) the arrays themselves,
    so that feeds sharing an array (Whisper's cross-attention keys and values over
    a segment's steps) share its memory."""

    def __init__(self, inner: Any, store: _Reservoir, copy: bool = True) -> None:
        self._inner = inner
        self._store = store
        self._copy = copy

    def run(self, feeds: Mapping[str, npt.NDArray[np.generic]], *args: Any, **kw: Any) -> Any:
        keep = np.array if self._copy else np.asarray
        self._store.add({k: keep(v) for k, v in feeds.items()})
        return self._inner.run(feeds, *args, **kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


@dataclass
class CalibrationSet:
    """Recorded feeds per graph role, in the graph's own input names."""

    feeds: dict[str, list[Feed]] = field(default_factory=dict)
    """Role (``encoder``, ``decoder``, ``joiner``) → feeds."""
    seconds: float = 0.0
    files: int = 0

    def __len__(self) -> int:
        return sum(len(v) for v in self.feeds.values())


def record_feeds(
    recognizer: AnyRecognizer,
    audio: Sequence[Path],
    *,
    max_feeds: int | Mapping[str, int] = 512,
    progress: bool = False,
    seed: int = 0,
    copy: bool = True,
) -> CalibrationSet:
    """Decode ``audio`` with ``recognizer``'s fp32 model and keep what each graph
    (each role of ``model.graphs()``) saw: at most ``max_feeds`` feeds per graph
    (a mapping: per role); ``copy``: see :class:`RecordingSession`."""
    if not audio:
        raise ConfigError("calibration needs at least one audio file (--calib)")
    model = recognizer.model
    roles = list(model.graphs())
    limits = {r: max_feeds if isinstance(max_feeds, int) else max_feeds[r] for r in roles}
    stores = {r: _Reservoir(limits[r], seed + i) for i, r in enumerate(roles)}
    originals = {r: getattr(model, r) for r in roles}
    out = CalibrationSet()
    rate = recognizer.feature_config.sample_rate
    try:
        for r in roles:
            setattr(model, r, RecordingSession(originals[r], stores[r], copy))
        for path in _progress(audio, progress, "calibrating"):
            from asrserve.audio import load_audio

            samples = load_audio(path, rate)
            stream = recognizer.create_stream(decoding=DecodingConfig(method="greedy"))
            stream.accept_waveform(rate, samples)
            stream.input_finished()
            while recognizer.decode_streams([stream]):
                pass
            out.seconds += samples.size / rate
            out.files += 1
    finally:
        for r in roles:
            setattr(model, r, originals[r])
    for r in roles:
        out.feeds[r] = stores[r].items
    if not out.feeds["encoder"]:
        raise ConfigError(
            f"calibration audio ({out.seconds:.2f} s in {out.files} files) is too short "
            "for one encoder chunk"
        )
    return out


def _progress(items: Sequence[Path], show: bool, what: str) -> Iterator[Path]:
    if not show:
        yield from items
        return
    from tqdm import tqdm

    yield from tqdm(items, desc=what, unit="file", leave=False)
