"""The load-time self-check: one chunk of silence through every graph."""

from __future__ import annotations

from pathlib import Path

import pytest

import asrserve
from asrserve.core.selfcheck import check_model
from asrserve.errors import ModelLoadError


def test_a_model_whose_test_decode_fails_is_refused_naming_its_files(
    tiny_lstm_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rec = asrserve.load_model(tiny_lstm_dir, precision="fp32")
    check_model(rec)  # the real files pass
    calls = []

    def broken(*args: object) -> object:
        calls.append(args)
        raise RuntimeError("Got invalid dimensions for input: x")

    monkeypatch.setattr(rec.model, "run_encoder", broken)
    with pytest.raises(ModelLoadError, match=r"encoder\.onnx.*test decode failed.*RuntimeError"):
        check_model(rec)
    assert len(calls) == 1  # one chunk, stopped at the first failure
