"""asrserve.audio: a WAV file cut inside its audio data is told apart from a whole one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from asrserve.audio import read_audio, truncated_seconds


def write_wav(path: Path, seconds: float, rate: int = 16000, channels: int = 1) -> bytes:
    rng = np.random.default_rng(0)
    x = (0.1 * rng.standard_normal((round(seconds * rate), channels))).astype(np.float32)
    sf.write(str(path), x, rate, subtype="PCM_16")
    return path.read_bytes()


def test_whole_files_are_not_truncated(tmp_path: Path) -> None:
    write_wav(tmp_path / "a.wav", 1.0)
    assert truncated_seconds(tmp_path / "a.wav") == 0.0
    sf.write(str(tmp_path / "a.flac"), np.zeros(16000, np.float32), 16000)
    assert truncated_seconds(tmp_path / "a.flac") == 0.0
    assert truncated_seconds(tmp_path / "missing.wav") == 0.0


@pytest.mark.parametrize(("rate", "channels"), [(16000, 1), (44100, 2)])
def test_a_wav_cut_inside_its_data(tmp_path: Path, rate: int, channels: int) -> None:
    raw = write_wav(tmp_path / "whole.wav", 2.0, rate, channels)
    cut = tmp_path / "cut.wav"
    cut.write_bytes(raw[: len(raw) - rate * 2 * channels // 2])  # the last 0.5 s
    samples, got_rate = read_audio(cut)  # libsndfile reads it as a shorter file
    assert samples.size / got_rate == pytest.approx(1.5)
    assert truncated_seconds(cut) == pytest.approx(0.5)
    cut.write_bytes(raw[: len(raw) - 1001])  # inside a frame
    assert truncated_seconds(cut) == pytest.approx(2.0 - sf.info(str(cut)).frames / rate, abs=1e-9)


def test_placeholder_data_sizes_mean_unknown_length(tmp_path: Path) -> None:
    """Writers to a pipe cannot fill in the size: 0xFFFFFFFF is no truncation."""
    raw = bytearray(write_wav(tmp_path / "a.wav", 1.0))
    at = raw.index(b"data") + 4
    raw[at : at + 4] = b"\xff\xff\xff\xff"
    (tmp_path / "piped.wav").write_bytes(bytes(raw))
    assert truncated_seconds(tmp_path / "piped.wav") == 0.0
