"""Voice activity detection with Silero VAD (ONNX), streaming.

:class:`SileroVad` is the shared model (one onnxruntime session);
:class:`VoiceActivityDetector` is one audio stream's detector: samples in,
closed speech :class:`SpeechSegment` s out, as soon as each one ends.

Silero at 16 kHz scores windows of 512 samples, each fed with the 64
samples before it as context (zeros before the start); its recurrent state
(2, batch, 128) carries from window to window. The segmenter turns the
window probabilities into segments:

- speech starts at a window with probability >= ``threshold``;
- it ends at the first window of a run below ``neg_threshold``
  (default ``threshold - 0.15``) that lasts ``min_silence_s``;
- segments shorter than ``min_speech_s`` are dropped;
- a closed segment is widened by ``pad_s`` on both sides (never into the
  previous segment);
- a segment reaching ``max_segment_s`` is cut at its least speech-like
  window in the second half (a pause, where there is one) and the rest goes
  on as a new segment.

Everything is in samples at 16 kHz from the start of the stream.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from asrserve.backends.base import BackendOptions
from asrserve.errors import ConfigError, ModelLoadError

FloatArray = npt.NDArray[np.float32]

SAMPLE_RATE = 16000
WINDOW = 512
CONTEXT = 64
STATE_SHAPE = (2, 128)
MODEL_FILE = "silero_vad.onnx"
ENV_MODEL = "ASRSERVE_VAD_MODEL"


@dataclass(frozen=True)
class VadConfig:
    """Segmentation options (seconds); ``model`` is the ``silero_vad.onnx``
    path (``None``: see :func:`find_vad_model`)."""

    threshold: float = 0.5
    neg_threshold: float | None = None
    min_silence_s: float = 0.3
    min_speech_s: float = 0.25
    pad_s: float = 0.1
    max_segment_s: float = 30.0
    model: str | None = None

    @property
    def low(self) -> float:
        return self.threshold - 0.15 if self.neg_threshold is None else self.neg_threshold

    def validate(self) -> VadConfig:
        if not 0.0 < self.threshold < 1.0:
            raise ConfigError(f"VAD threshold must be in (0, 1), got {self.threshold}")
        if not 0.0 <= self.low <= self.threshold:
            raise ConfigError(
                f"VAD neg_threshold must be in [0, threshold={self.threshold}], got {self.low}"
            )
        if self.min_silence_s < 0 or self.min_speech_s < 0 or self.pad_s < 0:
            raise ConfigError("VAD min_silence_s, min_speech_s and pad_s must be >= 0")
        if self.pad_s > self.min_silence_s:
            raise ConfigError(
                f"VAD pad_s ({self.pad_s}) must not exceed min_silence_s ({self.min_silence_s}): "
                "a segment closes before the padding after it has arrived otherwise"
            )
        if self.max_segment_s < 2 * WINDOW / SAMPLE_RATE + self.pad_s:
            raise ConfigError(f"VAD max_segment_s is too small: {self.max_segment_s}")
        return self


def find_vad_model(explicit: str | Path | None = None, model_dir: Path | None = None) -> Path:
    """``silero_vad.onnx``: ``explicit``, else in ``model_dir``, else
    ``$ASRSERVE_VAD_MODEL``, else ``silero-vad/`` of the models directory
    (``asrserve models pull silero-vad``), else of the repository's ``models/``."""
    if explicit is not None:
        candidates = [Path(explicit)]
    else:
        candidates = []
        if model_dir is not None:
            candidates.append(model_dir / MODEL_FILE)
        if env := os.environ.get(ENV_MODEL):
            candidates.append(Path(env))
        from asrserve.catalog import REPO_MODELS_DIR, default_models_dir

        # where `asrserve models pull silero-vad` puts it
        candidates.append(default_models_dir() / "silero-vad" / MODEL_FILE)
        candidates.append(REPO_MODELS_DIR / "silero-vad" / MODEL_FILE)
    for c in candidates:
        if c.is_file():
            return c
    tried = ", ".join(str(c) for c in candidates)
    raise ModelLoadError(
        f"Silero VAD model not found (tried {tried}); pass VadConfig(model=...) "
        f"or set {ENV_MODEL} to a silero_vad.onnx, or run 'asrserve models pull silero-vad'"
    )


class SileroVad:
    """The Silero VAD graph: ``input`` (B, 576), ``state`` (2, B, 128), ``sr``
    → ``output`` (B, 1) speech probability, ``stateN``."""

    def __init__(self, path: str | Path, options: BackendOptions | None = None) -> None:
        from asrserve.backends import open_session

        self.session = open_session(path, options)
        names_in = {t.name for t in self.session.inputs}
        names_out = [t.name for t in self.session.outputs]
        if names_in != {"input", "state", "sr"} or set(names_out) != {"output", "stateN"}:
            raise ModelLoadError(
                f"{path}: not a Silero VAD v5+ graph (inputs {sorted(names_in)}, "
                f"outputs {names_out}; expected input/state/sr -> output/stateN)"
            )
        self._out = names_out.index("output")
        self._state = names_out.index("stateN")
        self._sr = np.array(SAMPLE_RATE, dtype=np.int64)

    def run(self, windows: FloatArray, state: FloatArray) -> tuple[FloatArray, FloatArray]:
        """``windows`` (B, 576) → probabilities (B,), the next state."""
        outs = self.session.run({"input": windows, "state": state, "sr": self._sr})
        prob = np.asarray(outs[self._out], dtype=np.float32).reshape(-1)
        return prob, np.asarray(outs[self._state], dtype=np.float32)

    def probabilities(self, samples: FloatArray) -> FloatArray:
        """One probability per complete 512-sample window of a whole signal."""
        det = VoiceActivityDetector(self, VadConfig())
        return det.score(samples)


class SpeechSegment(NamedTuple):
    """Samples ``[start, end)`` from the start of the stream; ``cut``: the
    segment was cut at the maximum length, speech goes on after it."""

    start: int
    end: int
    cut: bool = False


class VoiceActivityDetector:
    """One stream's detector. Feed samples with :meth:`accept_waveform`; it
    returns the segments that closed. :meth:`input_finished` closes the last."""

    def __init__(self, vad: SileroVad, config: VadConfig | None = None) -> None:
        self.vad = vad
        self.config = (config or VadConfig()).validate()
        c = self.config
        self._min_silence = round(c.min_silence_s * SAMPLE_RATE)
        self._min_speech = round(c.min_speech_s * SAMPLE_RATE)
        self._pad = round(c.pad_s * SAMPLE_RATE)
        self._max = round(c.max_segment_s * SAMPLE_RATE)
        self._state = np.zeros((STATE_SHAPE[0], 1, STATE_SHAPE[1]), dtype=np.float32)
        self._context = np.zeros(CONTEXT, dtype=np.float32)
        self._pending = np.zeros(0, dtype=np.float32)  # < one window
        self.num_windows = 0
        self.num_samples = 0
        self.finished = False
        self._speech_start: int | None = None  # sample where the open segment began
        self._silence_start: int | None = None  # first sample of a low run inside speech
        self._probs: list[float] = []  # probabilities since _speech_start
        self._last_end = 0  # end of the last emitted segment (no padding into it)

    # --- probabilities ---------------------------------------------------------
    def score(self, samples: FloatArray) -> FloatArray:
        """Probabilities of the complete windows ``samples`` completes (state carried)."""
        x = np.concatenate([self._pending, np.asarray(samples, dtype=np.float32).reshape(-1)])
        n = x.size // WINDOW
        self._pending = x[n * WINDOW :]
        probs = np.empty(n, dtype=np.float32)
        for i in range(n):
            w = x[i * WINDOW : (i + 1) * WINDOW]
            feed = np.concatenate([self._context, w])[None, :]
            p, self._state = self.vad.run(feed, self._state)
            probs[i] = p[0]
            self._context = w[-CONTEXT:]
        return probs

    # --- segments -----------------------------------------------------------------
    @property
    def in_speech(self) -> bool:
        return self._speech_start is not None

    @property
    def keep_from(self) -> int:
        """The earliest sample a future segment can still contain."""
        if self._speech_start is not None:
            start = self._speech_start
        else:
            start = max(0, (self.num_windows - 1) * WINDOW)
        return max(self._last_end, start - self._pad)

    def accept_waveform(self, samples: FloatArray) -> list[SpeechSegment]:
        if self.finished:
            raise ConfigError("VAD: input_finished() was called; no more audio")
        x = np.asarray(samples, dtype=np.float32).reshape(-1)
        self.num_samples += x.size
        return list(self._segments(self.score(x)))

    def input_finished(self) -> list[SpeechSegment]:
        """Close the open segment at the end of the audio."""
        if self.finished:
            return []
        self.finished = True
        out: list[SpeechSegment] = []
        if self._speech_start is not None:
            end = self.num_samples if self._silence_start is None else self._silence_start
            seg = self._close(end, min(self.num_samples, end + self._pad))
            if seg is not None:
                out.append(seg)
        return out

    def cut_now(self) -> list[SpeechSegment]:
        """Close the open segment at the audio received so far (a client's
        flush); detection goes on with the audio that follows."""
        if self.finished or self._speech_start is None:
            return []
        end = self.num_samples if self._silence_start is None else self._silence_start
        seg = self._close(end, min(self.num_samples, end + self._pad))
        if seg is None:
            return []
        self._last_end = max(self._last_end, self.num_samples)
        return [seg]

    def _segments(self, probs: FloatArray) -> Iterator[SpeechSegment]:
        c = self.config
        for p in probs.tolist():
            i = self.num_windows
            self.num_windows += 1
            begin, end = i * WINDOW, (i + 1) * WINDOW
            if self._speech_start is None:
                if p >= c.threshold:
                    self._speech_start = begin
                    self._silence_start = None
                    self._probs = [p]
                continue
            self._probs.append(p)
            if p >= c.threshold:
                self._silence_start = None
            elif p < c.low and self._silence_start is None:
                self._silence_start = begin
            if self._silence_start is not None and end - self._silence_start >= self._min_silence:
                seg = self._close(self._silence_start, self._silence_start + self._pad)
                if seg is not None:
                    yield seg
                continue
            if end - self._speech_start >= self._max:
                yield self._cut(self._speech_start)

    def _close(self, end: int, padded_end: int) -> SpeechSegment | None:
        start = self._speech_start
        if start is None:
            return None
        self._speech_start = None
        self._silence_start = None
        self._probs = []
        if end - start < self._min_speech:
            return None
        seg = SpeechSegment(max(self._last_end, start - self._pad), padded_end)
        self._last_end = padded_end
        return seg

    def _cut(self, start: int) -> SpeechSegment:
        """Cut the open segment (begun at ``start``) at its least speech-like
        window in the second half (the latest such window on ties); speech
        continues from there."""
        first = start // WINDOW
        probs = np.asarray(self._probs)
        half = len(probs) // 2
        tail = probs[half:]
        j = half + (len(tail) - 1 - int(np.argmin(tail[::-1])))
        cut_window = first + j
        cut = cut_window * WINDOW
        if cut <= start:  # degenerate: cut at the maximum length
            cut = start + self._max
            cut_window = cut // WINDOW
        seg = SpeechSegment(max(self._last_end, start - self._pad), cut, cut=True)
        self._last_end = cut
        self._speech_start = cut
        self._probs = self._probs[cut_window - first :]
        if self._silence_start is not None and self._silence_start < cut:
            self._silence_start = cut
        return seg


def speech_segments(
    vad: SileroVad, samples: npt.ArrayLike, config: VadConfig | None = None
) -> list[SpeechSegment]:
    """All speech segments of a whole 16 kHz signal."""
    det = VoiceActivityDetector(vad, config)
    out = det.accept_waveform(np.asarray(samples, dtype=np.float32))
    return out + det.input_finished()
