"""Whisper's log-mel features (80 or 128 bins, 25 ms windows every 10 ms at 16 kHz).

Two framings of the same spectrogram (400-sample periodic Hann frames, a
400-point DFT, power, librosa's Slaney mel filters from 0 Hz to Nyquist):

``sherpa`` (sherpa-onnx's, through kaldi-native-fbank's ``OnlineWhisperFbank``)
    frames placed as Kaldi places them without snipping edges: frame ``i``
    starts at sample ``160 i - 120``, edges reflected; ``(len + 80) // 160``
    frames.
``openai`` (OpenAI's ``log_mel_spectrogram`` and faster-whisper's, in numpy)
    ``torch.stft(n_fft=400, hop=160, center=True)``: frame ``i`` starts at
    ``160 i - 200`` with reflect padding, the last frame dropped; ``len // 160``
    frames.

:func:`power_mel` gives mel *power* (T, n_mels); :func:`normalize` then takes
Whisper's ``log10(max(x, 1e-10))``, floors it at its maximum minus 8 and maps
``(x + 4) / 4``. How many frames are normalised together, and how the 30 s
window is padded, is the caller's (see :mod:`asrserve.families.whisper`).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]

SAMPLE_RATE = 16000
N_FFT = 400
HOP = 160
Framing = Literal["sherpa", "openai"]


def mel_filters(n_mels: int, sample_rate: int = SAMPLE_RATE, n_fft: int = N_FFT) -> FloatArray:
    """librosa's ``filters.mel(sr, n_fft, n_mels)`` (Slaney mel scale, Slaney
    area normalisation, 0 Hz to Nyquist): (n_mels, n_fft // 2 + 1), the
    filters OpenAI ships in ``mel_filters.npz``."""
    fft_freqs = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    mels = np.linspace(_hz_to_mel(0.0), _hz_to_mel(sample_rate / 2), n_mels + 2)
    hz = _mel_to_hz(mels)
    widths = np.diff(hz)
    ramps = hz[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (hz[2:] - hz[:-2]))[:, None]
    return weights.astype(np.float32)


_F_SP = 200.0 / 3  # Slaney: linear below 1 kHz, 200/3 Hz per mel
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOG_STEP = np.log(6.4) / 27.0


def _hz_to_mel(f: float) -> float:
    if f < _MIN_LOG_HZ:
        return f / _F_SP
    return float(_MIN_LOG_MEL + np.log(f / _MIN_LOG_HZ) / _LOG_STEP)


def _mel_to_hz(m: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    linear = _F_SP * m
    log = _MIN_LOG_HZ * np.exp(_LOG_STEP * (m - _MIN_LOG_MEL))
    out: npt.NDArray[np.float64] = np.where(m >= _MIN_LOG_MEL, log, linear)
    return out


def power_mel(samples: npt.ArrayLike, n_mels: int, framing: Framing = "sherpa") -> FloatArray:
    """Mel power (T, n_mels) of 16 kHz samples in [-1, 1] (T: see the module docstring)."""
    x = np.asarray(samples, dtype=np.float32).reshape(-1)
    if framing == "sherpa":
        return _knf_power_mel(x, n_mels)
    if framing == "openai":
        return _stft_power_mel(x, n_mels)
    raise ValueError(f"framing must be 'sherpa' or 'openai', got {framing!r}")


def _knf_power_mel(x: FloatArray, n_mels: int) -> FloatArray:
    import kaldi_native_fbank as knf

    opts = knf.WhisperFeatureOptions()
    opts.dim = n_mels
    fb = knf.OnlineWhisperFbank(opts)
    fb.accept_waveform(SAMPLE_RATE, x)
    fb.input_finished()
    n = int(fb.num_frames_ready)
    out = np.empty((n, n_mels), dtype=np.float32)
    for i in range(n):
        out[i] = fb.get_frame(i)
    return out


_WINDOW = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)).astype(np.float32)
_FILTERS: dict[int, FloatArray] = {}


def _stft_power_mel(x: FloatArray, n_mels: int) -> FloatArray:
    frames = x.size // HOP
    if frames == 0:
        return np.zeros((0, n_mels), np.float32)
    pad = N_FFT // 2
    if x.size > pad:
        padded = np.pad(x, (pad, pad), mode="reflect")
    else:  # too short to reflect (torch refuses it)
        padded = np.pad(x, (pad, pad), mode="constant")
    idx = np.arange(N_FFT)[None, :] + HOP * np.arange(frames)[:, None]
    spec = np.fft.rfft(padded[idx] * _WINDOW, axis=1)
    power = (spec.real**2 + spec.imag**2).astype(np.float32)
    filters = _FILTERS.get(n_mels)
    if filters is None:
        filters = _FILTERS[n_mels] = mel_filters(n_mels)
    out: FloatArray = power @ filters.T
    return out


def normalize(power: FloatArray) -> FloatArray:
    """Whisper's log scale: ``log10(max(x, 1e-10))`` floored at its maximum
    minus 8, then ``(x + 4) / 4`` (in float32, as sherpa-onnx computes it)."""
    log = np.log10(np.maximum(power, np.float32(1e-10)), dtype=np.float32)
    if log.size:
        log = np.maximum(log, log.max() - np.float32(8.0))
    out: FloatArray = ((log + np.float32(4.0)) / np.float32(4.0)).astype(np.float32)
    return out


def log_mel(samples: npt.ArrayLike, n_mels: int, framing: Framing = "sherpa") -> FloatArray:
    """Normalised log-mel (T, n_mels) of one clip (see the module docstring)."""
    return normalize(power_mel(samples, n_mels, framing))
