"""Token parity with sherpa-onnx on the tiny Zipformer v1/v2 fixtures.

The fixtures (``tests/fixtures/models``) have random weights but exactly the
ONNX interface and metadata of icefall's streaming exports, so they exercise
every cache tensor and the chunk geometry read from metadata.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import asrserve
from asrserve.families.zipformer import Zipformer2Transducer, ZipformerTransducer
from tests.conftest import FIXTURE_MODELS, SHARED_MODELS, read_wav
from tests.reference import (
    TAIL_PADDING_S,
    asrserve_decode,
    asrserve_decode_batched,
    sherpa_decode,
    sherpa_recognizer,
)

FIXTURES = ["zipformer2-tiny", "zipformer1-tiny"]
JFK = SHARED_MODELS / "test-audio-jfk" / "jfk.wav"
TINY_WAVS = SHARED_MODELS / "asrserve-tiny-lstm-synth-en" / "test_wavs"


def _clips() -> list[Path]:
    clips = sorted(TINY_WAVS.glob("*.wav"))[:5] + ([JFK] if JFK.exists() else [])
    if not clips:
        pytest.skip("no shared test audio")
    return clips


def _ours(model_dir: Path, method: str) -> asrserve.Recognizer:
    return asrserve.load_model(
        model_dir,
        decoding=asrserve.DecodingConfig(method=method),  # type: ignore[arg-type]
        tail_padding_s=TAIL_PADDING_S,
    )


@pytest.mark.parametrize("fixture", FIXTURES)
def test_family_comes_from_metadata(fixture: str) -> None:
    rec = _ours(FIXTURE_MODELS / fixture, "greedy")
    want = Zipformer2Transducer if fixture == "zipformer2-tiny" else ZipformerTransducer
    assert type(rec.model) is want


@pytest.mark.parametrize("fixture", FIXTURES)
@pytest.mark.parametrize("method", ["greedy", "modified_beam"])
def test_tokens_match_sherpa(fixture: str, method: str) -> None:
    model_dir = FIXTURE_MODELS / fixture
    ref = sherpa_recognizer(model_dir, "encoder.onnx", "decoder.onnx", "joiner.onnx", method)
    ours = _ours(model_dir, method)
    for clip in _clips():
        x, sr = read_wav(clip)
        want = sherpa_decode(ref, x, sr, 1600)
        assert len(want[0]) > 5, f"reference decoded almost nothing for {clip.name}"
        got = asrserve_decode(ours, x, sr, 1600)
        assert got[0] == want[0], clip.name
        assert got[1] == pytest.approx(want[1], abs=1e-3), clip.name


@pytest.mark.parametrize("fixture", FIXTURES)
@pytest.mark.parametrize("piece_s", [0.01, 0.1, 1.0, None])
def test_piece_size_does_not_change_tokens(fixture: str, piece_s: float | None) -> None:
    model_dir = FIXTURE_MODELS / fixture
    ref = sherpa_recognizer(model_dir, "encoder.onnx", "decoder.onnx", "joiner.onnx", "greedy")
    ours = _ours(model_dir, "greedy")
    x, sr = read_wav(_clips()[-1])
    piece = x.size if piece_s is None else int(piece_s * sr)
    assert asrserve_decode(ours, x, sr, piece)[0] == sherpa_decode(ref, x, sr, piece)[0]


@pytest.mark.parametrize("fixture", FIXTURES)
@pytest.mark.parametrize("method", ["greedy", "modified_beam"])
def test_batched_streams_equal_single(fixture: str, method: str) -> None:
    ours = _ours(FIXTURE_MODELS / fixture, method)
    audio = [read_wav(c) for c in _clips()]
    alone = [asrserve_decode(ours, x, sr, 1600) for x, sr in audio]
    together, batch_sizes = asrserve_decode_batched(ours, audio)
    assert max(batch_sizes) == len(audio)
    for (tok_b, ts_b), (tok_a, ts_a) in zip(together, alone, strict=True):
        assert tok_b == tok_a
        assert ts_b == pytest.approx(ts_a, abs=1e-6)
