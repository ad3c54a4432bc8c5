"""Token parity with sherpa-ncnn on ``ncnn-zipformer-tiny`` (SherpaMetaData type 2).

The fixture (``tests/fixtures/build_ncnn_zipformer.py``) is a random-weight
encoder with sherpa-ncnn's Zipformer interface that runs all four of its
custom layers; sherpa-ncnn runs them in C++, asrserve in
:mod:`asrserve.backends.ncnn_layers`. Decoder, joiner and tokens are the tiny
LSTM's ncnn ones.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import asrserve
from tests.conftest import FIXTURE_MODELS, read_wav
from tests.reference import (
    TAIL_PADDING_S,
    asrserve_decode,
    asrserve_decode_batched,
    sherpa_ncnn_mismatches,
    sherpa_ncnn_recognizer,
)

pytest.importorskip("ncnn")
ENCODER = FIXTURE_MODELS / "ncnn-zipformer-tiny"
METHODS = ["greedy", "modified_beam"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory, tiny_lstm_dir: Path) -> Path:
    """The committed encoder plus the shared tiny LSTM's ncnn decoder, joiner, tokens."""
    d = tmp_path_factory.mktemp("ncnn-zipformer-tiny")
    for f in ENCODER.glob("encoder*"):
        shutil.copyfile(f, d / f.name)
    shared = tiny_lstm_dir / "ncnn"
    for f in [*shared.glob("decoder*"), *shared.glob("joiner*"), shared / "tokens.txt"]:
        shutil.copyfile(f, d / f.name)
    return d


def _ours(model_dir: Path, method: str) -> asrserve.Recognizer:
    return asrserve.load_model(
        model_dir, decoding=asrserve.DecodingConfig(method=method), tail_padding_s=TAIL_PADDING_S
    )


def test_geometry_from_metadata(model_dir: Path) -> None:
    model = _ours(model_dir, "greedy").model
    assert type(model).__name__ == "NcnnZipformerTransducer"
    assert (model.chunk_size, model.chunk_shift) == (39, 32)
    assert [s.name for s in model.state_specs[:3]] == [
        "cached_len_0",
        "cached_len_1",
        "cached_avg_0",
    ]
    assert model.state_specs[4].shape == (1, 2, 32, 16)  # cached_key_0: (L, left, A)
    assert model.state_specs[11].shape == (1, 1, 192, 2)  # cached_conv1_1: (L, C, K - 1)


@pytest.mark.parametrize("piece_s", [0.1, None])
@pytest.mark.parametrize("method", METHODS)
def test_test_wavs_match_sherpa_ncnn(
    model_dir: Path, tiny_wavs: list[Path], method: str, piece_s: float | None
) -> None:
    pytest.importorskip("sherpa_ncnn")
    ref = sherpa_ncnn_recognizer(model_dir, method)
    ours = _ours(model_dir, method)
    mismatches = sherpa_ncnn_mismatches(ref, ours, tiny_wavs[:6], piece_s)
    assert not mismatches, mismatches


@pytest.mark.parametrize("method", METHODS)
def test_batched_streams_equal_single(model_dir: Path, tiny_wavs: list[Path], method: str) -> None:
    ours = _ours(model_dir, method)
    audio = [read_wav(w) for w in tiny_wavs[:4]]
    alone = [asrserve_decode(ours, x, sr, 1600) for x, sr in audio]
    together, batch_sizes = asrserve_decode_batched(ours, audio)
    assert max(batch_sizes) == len(audio)
    assert together == alone
