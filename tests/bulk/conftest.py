"""Bulk fixtures: a folder of demo wavs (one of them corrupt) and a long file
made of the demo wavs with pauses between them."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.conftest import BUILTIN, SHARED_MODELS

SHARED_WAVS = SHARED_MODELS / "asrserve-tiny-lstm-synth-en" / "test_wavs"
VAD_MODEL = SHARED_MODELS / "silero-vad" / "silero_vad.onnx"


def demo_wavs() -> list[Path]:
    """The shared model's 30 demo wavs when present, else the built-in model's 3."""
    shared = sorted(SHARED_WAVS.glob("*.wav"))
    return shared or sorted((BUILTIN / "test_wavs").glob("*.wav"))


@pytest.fixture(scope="session")
def wav_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Eight demo wavs, two of them in a sub-folder."""
    d = tmp_path_factory.mktemp("wavs")
    (d / "sub").mkdir()
    for i, w in enumerate(demo_wavs()[:8]):
        shutil.copy(w, d / ("sub" if i >= 6 else ".") / w.name)
    return d


@pytest.fixture(scope="session")
def wav_dir_with_corrupt(tmp_path_factory: pytest.TempPathFactory, wav_dir: Path) -> Path:
    """``wav_dir`` plus a corrupt wav (a RIFF header and garbage) and a truncated one."""
    d = tmp_path_factory.mktemp("mixed")
    shutil.copytree(wav_dir, d, dirs_exist_ok=True)
    (d / "corrupt.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt garbage" + bytes(64))
    good = next(d.glob("*.wav")).read_bytes()
    (d / "truncated.wav").write_bytes(good[:30])
    return d


def make_long_wav(path: Path, wavs: list[Path], seed: int = 0) -> list[tuple[float, float]]:
    """Write the wavs one after the other with 0.5-1.2 s pauses (16 kHz PCM16);
    return the pauses, ``(start_s, end_s)``."""
    rng = np.random.default_rng(seed)
    parts: list[np.ndarray] = []
    pauses: list[tuple[float, float]] = []
    at = 0
    for w in wavs:
        x, sr = sf.read(str(w), dtype="float32")
        assert sr == 16000
        gap = int(sr * rng.uniform(0.5, 1.2))
        parts += [x, np.zeros(gap, np.float32)]
        at += x.size
        pauses.append((at / sr, (at + gap) / sr))
        at += gap
    sf.write(str(path), np.concatenate(parts), 16000, subtype="PCM_16")
    return pauses


@dataclass(frozen=True)
class LongWav:
    path: Path
    pauses: list[tuple[float, float]]


@pytest.fixture(scope="session")
def long_wav(tmp_path_factory: pytest.TempPathFactory) -> LongWav:
    """About 70 s of speech and pauses (the first 16 shared demo wavs; the
    built-in three repeated when the shared ones are missing)."""
    wavs = demo_wavs()
    wavs = wavs[:16] if len(wavs) >= 16 else wavs * 8
    path = tmp_path_factory.mktemp("long") / "long.wav"
    return LongWav(path, make_long_wav(path, wavs))


@pytest.fixture(scope="session")
def vad_model() -> Path:
    if not VAD_MODEL.is_file():
        pytest.skip(f"Silero VAD model not found at {VAD_MODEL}")
    return VAD_MODEL
