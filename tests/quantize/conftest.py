"""Quantization fixtures: a calibration/evaluation split of the trained tiny LSTM's
wavs, and the Whisper weights and clips (tests/whisper_models.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.whisper_models import jfk_clip, speech_clips, whisper_tiny_ct2, whisper_tiny_en

__all__ = [
    "calib_wavs",
    "eval_list",
    "jfk_clip",
    "speech_clips",
    "whisper_tiny_ct2",
    "whisper_tiny_en",
]


@pytest.fixture(scope="session")
def calib_wavs(tiny_wavs: list[Path]) -> list[Path]:
    """Six wavs that calibrate."""
    return tiny_wavs[:6]


@pytest.fixture(scope="session")
def eval_list(
    tiny_wavs: list[Path], tiny_lstm_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """Eight other wavs with their reference texts, as an ``AUDIO TEXT`` list."""
    texts = dict(
        line.split(" ", 1)
        for line in (tiny_lstm_dir / "test_wavs" / "trans.txt").read_text().splitlines()
        if line.strip()
    )
    lines = [f"{wav} {texts[wav.stem].strip()}" for wav in tiny_wavs[-8:]]
    path = tmp_path_factory.mktemp("eval") / "eval.txt"
    path.write_text("\n".join(lines) + "\n")
    return path
