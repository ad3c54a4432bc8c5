"""NeMo log-mel features (``AudioToMelSpectrogramPreprocessor`` at inference).

Recipe, per NeMo's ``FilterbankFeatures`` with dither off::

    y[0] = x[0];  y[n] = x[n] - preemph * x[n-1]          pre-emphasis
    pad n_fft // 2 on both sides (zeros, or reflect)       torch.stft(center=True)
    frame t = padded[t*hop : t*hop + n_fft] * window       symmetric window of win_length,
                                                           centred in n_fft
    power = |rfft(frame)| ** mag_power                     (n_fft // 2 + 1,)
    mel = weights @ power                                  Slaney mel weights (n_mels, bins)
    log(mel + log_zero_guard)

A signal of ``N`` samples gives ``1 + N // hop`` frames, of which NeMo calls
the first ``N // hop`` valid (its ``get_seq_len``); offline per-feature
normalisation uses those and sets the rest to 0, as NeMo does.

:class:`NemoMel` is the streaming extractor. Frame ``t`` depends only on the
samples it covers and every frame is computed by the same per-frame
operations, so feeding audio in any pieces gives bit-identical frames to
feeding it whole, and to :func:`log_mel` on the whole signal.
Frames are returned frame-major ``(count, n_mels)`` by the streaming
extractor (what the core stacks); :func:`log_mel` and
:func:`offline_features` return NeMo's band-major ``(n_mels, n_frames)``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from asrserve.errors import ConfigError, ModelLoadError

FloatArray = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]

_WINDOWS = ("hann", "hamming", "blackman", "bartlett", "ones", "none")


@dataclass(frozen=True)
class NemoMelConfig:
    """Parameters of NeMo's mel preprocessor; defaults are Nemotron/Parakeet's."""

    sample_rate: int = 16000
    n_fft: int = 512
    hop_length: int = 160
    win_length: int = 400
    n_mels: int = 128
    window: str = "hann"
    preemph: float | None = 0.97
    mel_norm: str | None = "slaney"
    f_min: float = 0.0
    f_max: float | None = None  # None: sample_rate / 2
    mag_power: float = 2.0
    log: bool = True
    log_zero_guard: float = 2.0**-24
    pad_mode: str = "constant"  # torch.stft's padding at the signal ends: constant | reflect
    normalize: str | None = None  # None | "per_feature" (offline only)
    dither: float = 0.0  # NeMo dithers only in training; kept for the record, never applied

    # --- geometry the core asks every extractor for -------------------------------
    @property
    def frame_shift_ms(self) -> float:
        return 1000.0 * self.hop_length / self.sample_rate

    @property
    def num_bins(self) -> int:
        return self.n_mels

    def validate(self) -> NemoMelConfig:
        if self.sample_rate <= 0 or self.hop_length <= 0 or self.n_mels <= 0:
            raise ConfigError("NeMo mel: sample_rate, hop_length and n_mels must be positive")
        if not 0 < self.win_length <= self.n_fft:
            raise ConfigError(
                f"NeMo mel: win_length {self.win_length} must be in (0, n_fft={self.n_fft}]"
            )
        if self.window not in _WINDOWS:
            raise ConfigError(f"NeMo mel: unknown window {self.window!r}; known: {_WINDOWS}")
        if self.mel_norm not in (None, "slaney"):
            raise ConfigError(f"NeMo mel: mel_norm must be 'slaney' or None, not {self.mel_norm!r}")
        if self.pad_mode not in ("constant", "reflect"):
            raise ConfigError(
                f"NeMo mel: pad_mode must be constant or reflect, not {self.pad_mode!r}"
            )
        if self.normalize not in (None, "per_feature"):
            raise ConfigError(
                f"NeMo mel: normalize must be 'per_feature' or None, not {self.normalize!r}"
            )
        return self

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], where: str = "preprocessor") -> NemoMelConfig:
        """From a ``config.json`` preprocessor section or NeMo's own preprocessor
        config; both spellings are understood (``n_mels``/``features``,
        ``hop_length``/``window_stride`` in seconds, ``lowfreq`` ...).
        Unknown keys are ignored: exports carry descriptive extras."""

        def get(*keys: str) -> Any:
            for k in keys:
                if k in values and values[k] is not None:
                    return values[k]
            return None

        def num(*keys: str) -> float | None:
            v = get(*keys)
            if v is None:
                return None
            try:
                return float(v)
            except (TypeError, ValueError):
                raise ModelLoadError(f"{where}: {keys[0]}={v!r} is not a number") from None

        d = cls()
        rate = int(num("sample_rate") or d.sample_rate)
        hop = num("hop_length", "n_window_stride")
        if hop is None and (s := num("window_stride")) is not None:
            hop = round(s * rate)
        win = num("win_length", "n_window_size")
        if win is None and (s := num("window_size")) is not None:
            win = round(s * rate)
        n_fft = num("n_fft")
        if n_fft is None and win is not None:
            n_fft = 2 ** math.ceil(math.log2(win))  # NeMo's default
        norm = get("normalize")
        if isinstance(norm, str) and norm.lower() in ("", "na", "none", "null"):
            norm = None
        mel_norm = get("mel_norm")
        if isinstance(mel_norm, str) and mel_norm.lower() in ("", "none", "null"):
            mel_norm = None
        window = str(get("window") or d.window)
        preemph = get("preemph")
        cfg = replace(
            d,
            sample_rate=rate,
            n_fft=int(n_fft or d.n_fft),
            hop_length=int(hop or d.hop_length),
            win_length=int(win or d.win_length),
            n_mels=int(num("n_mels", "features", "nfilt", "feature_dim") or d.n_mels),
            window=window,
            preemph=d.preemph if preemph is None and "preemph" not in values else preemph,
            mel_norm=mel_norm if "mel_norm" in values else d.mel_norm,
            f_min=float(num("f_min", "lowfreq") or 0.0),
            f_max=num("f_max", "highfreq"),
            mag_power=float(num("mag_power") or d.mag_power),
            log=bool(get("log") if get("log") is not None else True),
            log_zero_guard=float(num("log_zero_guard_value", "log_zero_guard") or d.log_zero_guard),
            pad_mode=str(get("pad_mode") or d.pad_mode),
            normalize=norm,
            dither=float(num("dither") or 0.0),
        )
        if cfg.preemph is not None:
            cfg = replace(cfg, preemph=float(cfg.preemph))
        try:
            return cfg.validate()
        except ConfigError as exc:
            raise ModelLoadError(f"{where}: {exc}") from None


# --- mel weights ------------------------------------------------------------------
def _hz_to_mel(f: F64) -> F64:
    """Slaney's mel scale (librosa ``htk=False``): linear below 1 kHz, log above."""
    f_sp = 200.0 / 3
    min_log_hz, logstep = 1000.0, math.log(6.4) / 27.0
    mels = f / f_sp
    log_part = min_log_hz / f_sp + np.log(np.maximum(f, min_log_hz) / min_log_hz) / logstep
    return np.where(f >= min_log_hz, log_part, mels)


def _mel_to_hz(m: F64) -> F64:
    f_sp = 200.0 / 3
    min_log_hz, logstep = 1000.0, math.log(6.4) / 27.0
    min_log_mel = min_log_hz / f_sp
    freqs = m * f_sp
    log_part = min_log_hz * np.exp(logstep * (m - min_log_mel))
    return np.where(m >= min_log_mel, log_part, freqs)


def mel_weights(config: NemoMelConfig) -> FloatArray:
    """Triangular Slaney-scale filters (n_mels, n_fft // 2 + 1), area-normalised
    when ``mel_norm == "slaney"`` (as ``librosa.filters.mel``, which NeMo uses)."""
    c = config
    f_max = c.sample_rate / 2.0 if c.f_max is None else c.f_max
    fft_freqs = np.linspace(0.0, c.sample_rate / 2.0, 1 + c.n_fft // 2)
    mel_pts = np.linspace(
        _hz_to_mel(np.asarray(c.f_min, dtype=np.float64)),
        _hz_to_mel(np.asarray(f_max, dtype=np.float64)),
        c.n_mels + 2,
    )
    hz_pts = _mel_to_hz(mel_pts)
    widths = np.diff(hz_pts)
    ramps = hz_pts[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    if c.mel_norm == "slaney":
        weights *= (2.0 / (hz_pts[2:] - hz_pts[:-2]))[:, None]
    return weights.astype(np.float32)


def load_mel_weights(path: str | Path, config: NemoMelConfig) -> FloatArray:
    """``filterbank.bin``: raw float32 of shape [1, n_mels, n_fft // 2 + 1]."""
    p = Path(path)
    raw = np.fromfile(p, dtype=np.float32)
    bins = config.n_fft // 2 + 1
    if raw.size != config.n_mels * bins:
        raise ModelLoadError(
            f"{p}: {raw.size} floats, expected 1 x {config.n_mels} x {bins} for "
            f"n_mels={config.n_mels}, n_fft={config.n_fft}"
        )
    return raw.reshape(config.n_mels, bins)


def window(config: NemoMelConfig) -> F64:
    """The symmetric window (torch ``periodic=False``) zero-padded to ``n_fft``, centred."""
    n = config.win_length
    k = np.arange(n, dtype=np.float64)
    name = config.window
    if name == "hann":
        w = 0.5 - 0.5 * np.cos(2 * np.pi * k / (n - 1))
    elif name == "hamming":
        w = 0.54 - 0.46 * np.cos(2 * np.pi * k / (n - 1))
    elif name == "blackman":
        w = 0.42 - 0.5 * np.cos(2 * np.pi * k / (n - 1)) + 0.08 * np.cos(4 * np.pi * k / (n - 1))
    elif name == "bartlett":
        w = 1.0 - np.abs(2 * k / (n - 1) - 1.0)
    else:
        w = np.ones(n)
    out = np.zeros(config.n_fft, dtype=np.float64)
    left = (config.n_fft - n) // 2
    out[left : left + n] = w.astype(np.float32)  # NeMo's window is a float32 tensor
    return out


# --- the streaming extractor ---------------------------------------------------------
class NemoMel:
    """Streaming NeMo log-mel; frames addressed by absolute index since the start.

    Frame ``t`` covers pre-emphasised samples ``[t*hop - n_fft/2, t*hop + n_fft/2)``
    and is ready once they have arrived; after :meth:`input_finished` the
    remaining ``1 + N // hop`` frames are completed with the end padding.
    """

    def __init__(
        self, config: NemoMelConfig | None = None, weights: npt.ArrayLike | None = None
    ) -> None:
        self.config = (config or NemoMelConfig()).validate()
        c = self.config
        w = mel_weights(c) if weights is None else np.asarray(weights, dtype=np.float32)
        w = w.reshape(-1, w.shape[-1])
        if w.shape != (c.n_mels, c.n_fft // 2 + 1):
            raise ConfigError(
                f"mel weights have shape {w.shape}, expected ({c.n_mels}, {c.n_fft // 2 + 1})"
            )
        self._weights = w.astype(np.float64)
        self._window = window(c)
        self._half = c.n_fft // 2
        self._samples = np.zeros(0, dtype=np.float64)  # pre-emphasised
        self._sample_offset = 0  # absolute index of _samples[0]
        self._num_samples = 0
        self._last: float | None = None  # last raw sample, for pre-emphasis
        self._head = np.zeros(0, dtype=np.float64)  # y[1 : half + 1], for reflect padding
        self._frames: list[FloatArray] = []
        self._frame_offset = 0  # absolute index of _frames[0]
        self._finished = False

    @property
    def dim(self) -> int:
        return self.config.n_mels

    @property
    def frame_shift_s(self) -> float:
        return self.config.hop_length / self.config.sample_rate

    @property
    def finished(self) -> bool:
        return self._finished

    @property
    def num_frames_ready(self) -> int:
        return self._frame_offset + len(self._frames)

    def accept_waveform(self, samples: npt.NDArray[np.float32]) -> None:
        """Samples are float32 in [-1, 1] at ``config.sample_rate``."""
        if self._finished:
            raise ConfigError("input_finished() was called; no more audio")
        x = np.asarray(samples, dtype=np.float64).reshape(-1)
        if not x.size:
            return
        a = self.config.preemph
        y = x
        if a:
            # y[0] = x[0] at the very start; later pieces continue from the last sample
            prev = np.concatenate([[x[0] / a if self._last is None else self._last], x[:-1]])
            y = x - a * prev
            if self._last is None:
                y[0] = x[0]
        self._last = float(x[-1])
        if self._head.size < self._half:
            self._head = np.concatenate([self._head, y])[: self._half + 1]
        self._samples = np.concatenate([self._samples, y])
        self._num_samples += y.size
        self._compute(final=False)

    def input_finished(self) -> None:
        if not self._finished:
            self._finished = True
            self._compute(final=True)

    def _total_frames(self) -> int:
        return 1 + self._num_samples // self.config.hop_length

    def _compute(self, *, final: bool) -> None:
        c, half = self.config, self._half
        if final:
            last = self._total_frames()
        else:
            # frame t needs samples up to t*hop + half (exclusive)
            last = max(0, (self._num_samples - half) // c.hop_length + 1)
            if c.pad_mode == "reflect" and self._num_samples <= half:
                last = 0
            last = min(last, self._total_frames())
        first = self.num_frames_ready
        if last <= first:
            return
        starts = np.arange(first, last) * c.hop_length - half  # absolute sample index
        idx = starts[:, None] + np.arange(c.n_fft)[None, :]
        frames = self._gather(idx)
        self._frames.extend(self._features(frames))

    def _gather(self, idx: npt.NDArray[np.int64]) -> F64:
        """Padded-signal values at absolute indices (negatives and >= N are padding)."""
        n = self._num_samples
        if self.config.pad_mode == "reflect":
            idx = np.where(idx < 0, -idx, idx)
            idx = np.where(idx >= n, 2 * (n - 1) - idx, idx)
            head = self._head
            out = np.zeros(idx.shape, dtype=np.float64)
            in_head = idx < min(head.size, self._sample_offset)
            out[in_head] = head[idx[in_head]]
            rest = ~in_head & (idx >= self._sample_offset) & (idx < n) & (idx >= 0)
            out[rest] = self._samples[idx[rest] - self._sample_offset]
            return out
        valid = (idx >= 0) & (idx < n)
        out = np.zeros(idx.shape, dtype=np.float64)
        out[valid] = self._samples[idx[valid] - self._sample_offset]
        return out

    def _features(self, frames: F64) -> list[FloatArray]:
        c = self.config
        spec = np.fft.rfft(frames * self._window, n=c.n_fft, axis=1)
        power = spec.real**2 + spec.imag**2
        if c.mag_power != 2.0:
            power = np.sqrt(power) ** c.mag_power
        out: list[FloatArray] = []
        for p in power:
            # one matrix-vector product per frame: a frame's value never depends on
            # how many frames were computed together (batched BLAS may round differently)
            mel = self._weights @ p
            if c.log:
                mel = np.log(mel + c.log_zero_guard)
            out.append(mel.astype(np.float32))
        return out

    def get_frames(self, start: int, count: int) -> FloatArray:
        """Frames ``[start, start + count)`` as a ``(count, n_mels)`` float32 array."""
        if start < self._frame_offset or start + count > self.num_frames_ready:
            raise IndexError(
                f"frames [{start}, {start + count}) outside available "
                f"[{self._frame_offset}, {self.num_frames_ready})"
            )
        i = start - self._frame_offset
        if count == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack(self._frames[i : i + count])

    def discard_before(self, frame: int) -> None:
        """Free frames with index < ``frame`` and the samples only they needed."""
        n = frame - self._frame_offset
        if n > 0:
            del self._frames[:n]
            self._frame_offset = frame
        keep_from = self.num_frames_ready * self.config.hop_length - self._half
        drop = keep_from - self._sample_offset
        if drop > 0:  # reflect padding at the start reads _head instead
            self._samples = self._samples[drop:]
            self._sample_offset += drop


# --- offline ------------------------------------------------------------------------
def log_mel(
    samples: npt.ArrayLike,
    config: NemoMelConfig | None = None,
    weights: npt.ArrayLike | None = None,
) -> FloatArray:
    """All ``1 + N // hop`` frames of a whole signal, band-major ``(n_mels, n_frames)``,
    unnormalised (bit-identical to :class:`NemoMel` fed the same samples)."""
    mel = NemoMel(config, weights)
    mel.accept_waveform(np.asarray(samples, dtype=np.float32))
    mel.input_finished()
    return np.ascontiguousarray(mel.get_frames(0, mel.num_frames_ready).T)


def num_valid_frames(num_samples: int, config: NemoMelConfig) -> int:
    """NeMo's feature length for ``num_samples`` (``N // hop`` with centre padding)."""
    return num_samples // config.hop_length


def normalize_per_feature(features: FloatArray, valid: int, eps: float = 1e-5) -> FloatArray:
    """NeMo's ``per_feature`` normalisation of ``(n_mels, T)``: mean and unbiased std
    per band over the first ``valid`` frames, ``(x - mean) / (std + eps)``; frames
    from ``valid`` on become 0 (NeMo's pad value)."""
    x = features.astype(np.float64)
    v = x[:, :valid]
    mean = v.mean(axis=1, keepdims=True) if valid else np.zeros((x.shape[0], 1))
    if valid > 1:
        std = np.sqrt(((v - mean) ** 2).sum(axis=1, keepdims=True) / (valid - 1))
    else:
        std = np.zeros_like(mean)  # NeMo divides by zero here; keep it finite
    out = (x - mean) / (std + eps)
    out[:, valid:] = 0.0
    result: FloatArray = out.astype(np.float32)
    return result


def offline_features(
    samples: npt.ArrayLike,
    config: NemoMelConfig | None = None,
    weights: npt.ArrayLike | None = None,
    *,
    normalize: str | bool | None = True,
) -> tuple[FloatArray, int]:
    """Whole-utterance features as NeMo's preprocessor returns them:
    ``(features (n_mels, 1 + N // hop), length N // hop)``.

    ``normalize``: ``True`` applies ``config.normalize``; ``"per_feature"`` or
    ``None``/``False`` override it. With normalisation the frames past
    ``length`` are 0, as in NeMo; without, they are left as computed.
    """
    cfg = (config or NemoMelConfig()).validate()
    x = np.asarray(samples, dtype=np.float32).reshape(-1)
    feats = log_mel(x, cfg, weights)
    valid = num_valid_frames(x.size, cfg)
    method = cfg.normalize if normalize is True else (normalize or None)
    if method == "per_feature":
        feats = normalize_per_feature(feats, valid)
    elif method is not None:
        raise ConfigError(f"NeMo mel: unknown normalize {method!r}")
    return feats, valid
