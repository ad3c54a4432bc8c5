"""Stream input validation, sample formats and resampling."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soxr

import asrserve
from asrserve.errors import AudioFormatError, ConfigError
from tests.conftest import BUILTIN, read_wav


@pytest.fixture(scope="module")
def rec() -> asrserve.Recognizer:
    return asrserve.load_model()


@pytest.fixture(scope="module")
def clip() -> tuple[np.ndarray, int]:
    return read_wav(BUILTIN / "test_wavs" / "synth-0000.wav")


def _decode(rec: asrserve.Recognizer, rate: int, samples: np.ndarray) -> list[str]:
    s = rec.create_stream()
    for i in range(0, samples.size, 3000):
        s.accept_waveform(rate, samples[i : i + 3000])
        while rec.is_ready(s):
            rec.decode_stream(s)
    s.input_finished()
    while rec.is_ready(s):
        rec.decode_stream(s)
    return rec.get_result(s).tokens


def test_builtin_model_transcribes_its_clip(rec: asrserve.Recognizer) -> None:
    text = rec.transcribe(BUILTIN / "test_wavs" / "synth-0000.wav").text
    assert text.startswith("EXIT THE")


def test_int16_equals_scaled_float(rec: asrserve.Recognizer, clip: tuple[np.ndarray, int]) -> None:
    x, sr = clip
    pcm = np.round(x * 32768).clip(-32768, 32767).astype(np.int16)
    assert _decode(rec, sr, pcm) == _decode(rec, sr, pcm.astype(np.float32) / 32768)


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_other_sample_rates_are_resampled(
    rec: asrserve.Recognizer, clip: tuple[np.ndarray, int], rate: int
) -> None:
    x, sr = clip
    want = _decode(rec, sr, x)
    y = soxr.resample(x, sr, rate).astype(np.float32)
    got = _decode(rec, rate, y)
    # streaming resampling equals resampling the whole signal up front
    assert got == _decode(rec, sr, soxr.resample(y, rate, sr).astype(np.float32))
    if rate > sr:  # nothing of the band was lost on the way
        assert got == want


def test_duration_counts_model_rate_samples(rec: asrserve.Recognizer) -> None:
    s = rec.create_stream()
    s.accept_waveform(48000, np.zeros(48000, dtype=np.float32))
    s.input_finished()
    assert abs(s.duration - 1.0) < 0.01


@pytest.mark.parametrize(
    ("rate", "samples", "message"),
    [
        (16000, np.array([0.1, np.nan], dtype=np.float32), "NaN"),
        (16000, np.zeros(10, dtype=np.int32), "dtype"),
        (16000, np.zeros((2, 10), dtype=np.float32), "1-D"),
        (0, np.zeros(10, dtype=np.float32), "sample rate"),
        (-8000, np.zeros(10, dtype=np.float32), "sample rate"),
    ],
)
def test_bad_audio_is_refused_by_name(
    rec: asrserve.Recognizer, rate: int, samples: np.ndarray, message: str
) -> None:
    s = rec.create_stream()
    with pytest.raises(AudioFormatError, match=message):
        s.accept_waveform(rate, samples)
    # the stream is still usable afterwards
    s.accept_waveform(16000, np.zeros(1600, dtype=np.float32))


def test_rate_change_and_audio_after_finish_are_refused(rec: asrserve.Recognizer) -> None:
    s = rec.create_stream()
    s.accept_waveform(16000, np.zeros(160, dtype=np.float32))
    with pytest.raises(AudioFormatError, match="changed"):
        s.accept_waveform(8000, np.zeros(160, dtype=np.float32))
    s.input_finished()
    with pytest.raises(AudioFormatError, match="input_finished"):
        s.accept_waveform(16000, np.zeros(160, dtype=np.float32))


def test_transcribe_array_needs_rate(rec: asrserve.Recognizer) -> None:
    with pytest.raises(ConfigError, match="sample_rate"):
        rec.transcribe(np.zeros(100, dtype=np.float32))


def test_hotwords_need_beam_search(rec: asrserve.Recognizer) -> None:
    with pytest.raises(ConfigError, match="modified_beam"):
        rec.create_stream(hotwords=["EXIT"])


def test_unreadable_file(rec: asrserve.Recognizer, tmp_path: Path) -> None:
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF....WAVEfmt garbage")
    with pytest.raises(AudioFormatError, match=r"bad\.wav"):
        rec.transcribe(bad)
