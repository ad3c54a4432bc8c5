"""What every recognizer is to the layers above the core.

The streaming transducer :class:`~asrserve.core.recognizer.Recognizer` and the
VAD-segmented offline :class:`~asrserve.families.nemo_tdt.TdtRecognizer` both
implement :class:`SpeechRecognizer` (checked by mypy where ``load_model``
hands them out), so the server, the CLI, the clients and bulk are typed
against this protocol and ask it questions through methods, never through
attribute probes or fakes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar, Protocol, TypeVar

import numpy.typing as npt

from asrserve.backends.base import Session
from asrserve.config import DecodingConfig, EndpointConfig
from asrserve.core.events import Result, Segment


class AudioStream(Protocol):
    """One stream of audio: what a transport feeds and asks."""

    @property
    def num_processed_frames(self) -> int: ...

    @property
    def duration(self) -> float: ...

    @property
    def is_finished(self) -> bool: ...

    def accept_waveform(self, sample_rate: int, samples: npt.ArrayLike) -> None: ...

    def input_finished(self) -> None: ...

    def cut_segment(self) -> None:
        """End the open segment now (a client's flush)."""
        ...


class ModelInfo(Protocol):
    """What the layers above may know of a model: its family and its graphs."""

    family: ClassVar[str]

    def graphs(self) -> dict[str, Session]: ...


class SampleRate(Protocol):
    @property
    def sample_rate(self) -> int: ...


S = TypeVar("S", bound=AudioStream)


class SpeechRecognizer(Protocol[S]):
    """A loaded model behind the streaming interface (``S``: its stream type)."""

    decoding: DecodingConfig
    endpoint: EndpointConfig
    isolate_batches: bool
    """Decode batch-dependent (int8) models stream by stream."""

    @property
    def model(self) -> ModelInfo: ...

    @property
    def feature_config(self) -> SampleRate: ...

    @property
    def frame_shift_s(self) -> float: ...

    @property
    def batch_dependent(self) -> bool: ...

    def create_stream(
        self,
        hotwords: Sequence[str] | None = None,
        decoding: DecodingConfig | None = None,
        endpoint: EndpointConfig | None = None,
    ) -> S: ...

    def check_hotwords(self, phrases: Sequence[str], default_score: float) -> int: ...

    def check_language(self, language: str) -> None:
        """Raise :class:`~asrserve.errors.ConfigError` for a spoken language
        (``DecodingConfig.language``) the model cannot be asked for."""
        ...

    def is_ready(self, stream: S) -> bool: ...

    def decode_streams(self, streams: Iterable[S]) -> int: ...

    def decode_stream(self, stream: S) -> None: ...

    def token_ids(self, stream: S) -> list[int]: ...

    def get_result(self, stream: S, is_final: bool = False) -> Result: ...

    def is_endpoint(self, stream: S) -> bool: ...

    def reset(self, stream: S) -> None: ...

    def backlog_s(self, stream: S) -> float: ...

    def decoded_s(self, stream: S) -> float: ...

    def transcribe(
        self,
        audio: str | Path | npt.ArrayLike,
        sample_rate: int | None = None,
        *,
        hotwords: Sequence[str] | None = None,
        chunk_seconds: float = 10.0,
        progress: Callable[[float, float], None] | None = None,
    ) -> Result: ...

    def transcribe_segments(
        self,
        audio: str | Path | npt.ArrayLike,
        sample_rate: int | None = None,
        *,
        chunk_seconds: float = 10.0,
        progress: Callable[[float, float], None] | None = None,
    ) -> Iterator[Segment]: ...


#: Any recognizer, whatever its streams: what the server and the CLI hold.
AnyRecognizer = SpeechRecognizer[Any]
