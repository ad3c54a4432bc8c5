"""Shared fixtures: where the reference model files live, and small helpers."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("ASRSERVE_SHARED", ROOT.parent / "shared"))
SHARED_MODELS = SHARED / "models"
TINY_LSTM = SHARED_MODELS / "asrserve-tiny-lstm-synth-en"
TINY_LSTM_NCNN = TINY_LSTM / "ncnn"
FIXTURE_MODELS = ROOT / "tests" / "fixtures" / "models"
BUILTIN = ROOT / "models" / "asrserve-tiny-lstm-synth-en"


def read_wav(path: Path) -> tuple[npt.NDArray[np.float32], int]:
    x, sr = sf.read(str(path), dtype="float32")
    return x, int(sr)


@pytest.fixture(scope="session")
def tiny_lstm_dir() -> Path:
    if not TINY_LSTM.is_dir():
        pytest.skip(f"shared model not found at {TINY_LSTM}")
    return TINY_LSTM


@pytest.fixture(scope="session")
def tiny_lstm_ncnn_dir(tiny_lstm_dir: Path) -> Path:
    if not TINY_LSTM_NCNN.is_dir():
        pytest.skip(f"shared ncnn model not found at {TINY_LSTM_NCNN}")
    return TINY_LSTM_NCNN


@pytest.fixture(scope="session")
def tiny_wavs(tiny_lstm_dir: Path) -> list[Path]:
    return sorted((tiny_lstm_dir / "test_wavs").glob("*.wav"))
