"""One audio stream: buffered features, encoder cache and search state."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import numpy.typing as npt

from asrserve.audio import StreamResampler, to_float32
from asrserve.config import DecodingConfig, EndpointConfig
from asrserve.errors import AudioFormatError

if TYPE_CHECKING:
    from asrserve.core.built_result import BuiltResult
    from asrserve.decoding.search import Best, Search
    from asrserve.families.base import State


class FeatureSettings(Protocol):
    """What the core reads of a feature configuration."""

    @property
    def sample_rate(self) -> int: ...

    @property
    def frame_shift_ms(self) -> float: ...

    @property
    def num_bins(self) -> int: ...


class FeatureExtractor(Protocol):
    """A streaming feature extractor (:class:`asrserve.features.KaldiFbank`,
    :class:`asrserve.features.nemo_mel.NemoMel` ...): samples in, frames
    ``(count, dim)`` out by absolute index."""

    @property
    def config(self) -> FeatureSettings: ...

    @property
    def finished(self) -> bool: ...

    @property
    def num_frames_ready(self) -> int: ...

    def accept_waveform(self, samples: npt.NDArray[np.float32]) -> None: ...

    def input_finished(self) -> None: ...

    def get_frames(self, start: int, count: int) -> npt.NDArray[np.float32]: ...

    def discard_before(self, frame: int) -> None: ...


class _SegmentClock(Protocol):
    """What :func:`segment_end` reads of a stream (:class:`Stream`, a TDT stream ...)."""

    @property
    def num_processed_frames(self) -> int: ...

    @property
    def duration(self) -> float: ...


def segment_end(stream: _SegmentClock, frame_shift_s: float) -> float:
    """Where the stream's current segment ends, in seconds from its start: the
    feature frames decoded so far, capped at the audio received. At input end
    the decoder runs over the tail padding too; that padding is not audio, so
    no segment ends past the last sample. Every transport takes segment bounds
    from here."""
    return min(stream.num_processed_frames * frame_shift_s, stream.duration)


class InputRate:
    """A stream's input sample rate: fixed by the first audio, checked on the
    rest, converted to the model's ``rate``."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._input_rate: int | None = None
        self._resampler: StreamResampler | None = None

    def convert(self, sample_rate: int, samples: npt.ArrayLike) -> npt.NDArray[np.float32]:
        """``samples`` (float32 in [-1, 1] or int16 at ``sample_rate``) as float32
        at the model's rate."""
        if not isinstance(sample_rate, int | np.integer) or sample_rate <= 0:
            raise AudioFormatError(f"sample rate must be a positive integer, got {sample_rate!r}")
        if self._input_rate is None:
            self._input_rate = int(sample_rate)
            if sample_rate != self.rate:
                self._resampler = StreamResampler(int(sample_rate), self.rate)
        elif sample_rate != self._input_rate:
            raise AudioFormatError(
                f"sample rate changed mid-stream from {self._input_rate} to {sample_rate}"
            )
        x = to_float32(samples)
        if self._resampler is not None:
            x = self._resampler.process(x)
        return x

    def flush(self) -> npt.NDArray[np.float32] | None:
        """At input end: the resampler's last samples (None when there is none)."""
        if self._resampler is None:
            return None
        return self._resampler.process(np.zeros(0, dtype=np.float32), last=True)


class Stream:
    """Created by :meth:`asrserve.Recognizer.create_stream`.

    Feed audio with :meth:`accept_waveform`, call :meth:`input_finished`
    at the end; the recognizer decodes whenever enough frames are buffered.
    """

    def __init__(
        self,
        features: FeatureExtractor,
        encoder_state: State,
        search_state: Any,
        decoding: DecodingConfig,
        tail_padding_s: float,
    ) -> None:
        self.features = features
        self.encoder_state = encoder_state
        self.search_state = search_state
        self.decoding = decoding
        self.tail_padding_s = tail_padding_s
        self.num_processed_frames = 0
        self.segment = 0
        self.segment_start_frame = 0
        self.num_samples = 0  # at the model rate, tail padding excluded
        self.endpoint: EndpointConfig | None = None  # None: the recognizer's rules
        self._input = InputRate(features.config.sample_rate)
        # The recognizer's per-stream memory (none of it is state: all can be rebuilt)
        self.decoded_chunks = 0
        """Chunks decoded so far (what tells the recognizer's remembered results apart)."""
        self.search_cache: tuple[DecodingConfig, Search] | None = None
        """The search for ``decoding`` (the config it was made for, the search)."""
        self.best_cache: tuple[tuple[int, int], Best] | None = None
        """The best hypothesis after chunk ``decoded_chunks`` of a search state."""
        self.result_cache: BuiltResult | None = None
        """The last result and what it was built from."""

    @property
    def sample_rate(self) -> int:
        return self.features.config.sample_rate

    @property
    def is_finished(self) -> bool:
        return self.features.finished

    @property
    def duration(self) -> float:
        """Seconds of audio accepted so far (at the model's rate)."""
        return self.num_samples / self.sample_rate

    def accept_waveform(self, sample_rate: int, samples: npt.ArrayLike) -> None:
        """Append audio: float32 in [-1, 1] or int16, at any (fixed) sample rate."""
        if self.features.finished:
            raise AudioFormatError("input_finished() was called; the stream takes no more audio")
        x = self._input.convert(sample_rate, samples)
        self.num_samples += x.size
        self.features.accept_waveform(x)

    def cut_segment(self) -> None:
        """A client's flush: nothing to do here (segments of a streaming
        transducer end at endpoints); streams that segment audio themselves
        (VAD) end the open segment."""

    def input_finished(self) -> None:
        """No more audio. Flushes the resampler and adds the tail padding
        that lets the encoder see the last real frames."""
        if self.features.finished:
            return
        rest = self._input.flush()
        if rest is not None:
            self.num_samples += rest.size
            self.features.accept_waveform(rest)
        pad = round(self.tail_padding_s * self.sample_rate)
        if pad:
            self.features.accept_waveform(np.zeros(pad, dtype=np.float32))
        self.features.input_finished()
