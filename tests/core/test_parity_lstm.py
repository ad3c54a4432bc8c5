"""Token parity with sherpa-onnx on the trained tiny LSTM transducer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import asrserve
from asrserve.families.base import TransducerModel
from tests.conftest import read_wav
from tests.reference import (
    TAIL_PADDING_S,
    asrserve_decode,
    asrserve_decode_batched,
    feed_batched,
    sherpa_decode,
    sherpa_recognizer,
)

FILES = {
    "fp32": ("encoder.onnx", "decoder.onnx", "joiner.onnx"),
    "int8": ("encoder.int8.onnx", "decoder.int8.onnx", "joiner.int8.onnx"),
}


def _ours(model_dir: Path, precision: str, method: str) -> asrserve.Recognizer:
    return asrserve.load_model(
        model_dir,
        precision=precision,
        decoding=asrserve.DecodingConfig(method=method),  # type: ignore[arg-type]
        tail_padding_s=TAIL_PADDING_S,
    )


@pytest.mark.parametrize("precision", ["fp32", "int8"])
@pytest.mark.parametrize("method", ["greedy", "modified_beam"])
def test_all_test_wavs_match_sherpa(
    tiny_lstm_dir: Path, tiny_wavs: list[Path], precision: str, method: str
) -> None:
    ref = sherpa_recognizer(tiny_lstm_dir, *FILES[precision], method)
    ours = _ours(tiny_lstm_dir, precision, method)
    mismatches = []
    for wav in tiny_wavs:
        x, sr = read_wav(wav)
        want = sherpa_decode(ref, x, sr, 1600)
        got = asrserve_decode(ours, x, sr, 1600)
        assert want[0], f"reference produced nothing for {wav.name}"
        if got[0] != want[0]:
            mismatches.append((wav.name, "".join(want[0]), "".join(got[0])))
        else:
            np.testing.assert_allclose(got[1], want[1], atol=1e-3, err_msg=wav.name)
    if precision == "int8" and method == "modified_beam":
        # Dynamic-int8 kernels round differently between onnxruntime builds
        # (sherpa-onnx bundles its own); a beam can then diverge on a near
        # tie. Seen: 1 of 30 files. Greedy and every fp32 run match exactly.
        assert len(mismatches) <= 1, mismatches
    else:
        assert not mismatches, mismatches


@pytest.mark.parametrize("piece_s", [0.01, 0.1, 1.0, None])
@pytest.mark.parametrize("method", ["greedy", "modified_beam"])
def test_piece_size_does_not_change_tokens(
    tiny_lstm_dir: Path, tiny_wavs: list[Path], piece_s: float | None, method: str
) -> None:
    ref = sherpa_recognizer(tiny_lstm_dir, *FILES["fp32"], method)
    ours = _ours(tiny_lstm_dir, "fp32", method)
    for wav in tiny_wavs[:4]:
        x, sr = read_wav(wav)
        piece = x.size if piece_s is None else int(piece_s * sr)
        want = sherpa_decode(ref, x, sr, piece)
        assert asrserve_decode(ours, x, sr, piece) == asrserve_decode(ours, x, sr, 1600)
        assert asrserve_decode(ours, x, sr, piece)[0] == want[0]


@pytest.mark.parametrize("method", ["greedy", "modified_beam"])
def test_batched_streams_equal_single(
    tiny_lstm_dir: Path, tiny_wavs: list[Path], method: str
) -> None:
    ours = _ours(tiny_lstm_dir, "fp32", method)
    audio = [read_wav(w) for w in tiny_wavs[:8]]
    alone = [asrserve_decode(ours, x, sr, 1600) for x, sr in audio]
    together, batch_sizes = asrserve_decode_batched(ours, audio)
    assert max(batch_sizes) == len(audio)
    assert together == alone


def test_int8_batched_streams_agree(tiny_lstm_dir: Path, tiny_wavs: list[Path]) -> None:
    """Dynamic int8 scales activations per batch, so batching may move a
    near-tie token; require near-identical text, never gross changes."""
    ours = _ours(tiny_lstm_dir, "int8", "greedy")
    audio = [read_wav(w) for w in tiny_wavs[:8]]
    alone = [asrserve_decode(ours, x, sr, 1600)[0] for x, sr in audio]
    streams = [ours.create_stream() for _ in audio]
    for (x, sr), s in zip(audio, streams, strict=True):
        s.accept_waveform(sr, x)
        s.input_finished()
    while ours.decode_streams(streams):
        pass
    together = [ours.get_result(s).tokens for s in streams]
    same = sum(a == b for a, b in zip(alone, together, strict=True))
    assert same >= len(audio) - 2, (alone, together)


def _outcome(rec: asrserve.Recognizer, stream: asrserve.Stream) -> tuple[object, ...]:
    r = rec.get_result(stream)
    return r.tokens, r.timestamps, r.ys_probs  # confidences: any change in the logits


@pytest.mark.parametrize("method", ["greedy", "modified_beam"])
def test_isolated_int8_batches_equal_single(
    tiny_lstm_dir: Path, tiny_wavs: list[Path], method: str
) -> None:
    """Dynamic int8 with ``isolate_batches``: per-row (encoder, greedy's
    decoder and joiner) and per-stream (beam's joiner) rewrites give every
    stream of a batch exactly what it gets alone, in batched calls."""
    ours = _ours(tiny_lstm_dir, "int8", method)
    ours.isolate_batches = True
    assert not ours.batch_dependent
    model = ours.model
    assert isinstance(model, TransducerModel)
    assert model.joiner_rows is not None
    assert model.joiner_groups is not None
    audio = [read_wav(w) for w in tiny_wavs[:8]]
    alone = []
    for x, sr in audio:
        s = ours.create_stream()
        s.accept_waveform(sr, x)
        s.input_finished()
        while ours.decode_streams([s]):
            pass
        alone.append(_outcome(ours, s))
    streams = [ours.create_stream() for _ in audio]
    batch_sizes = feed_batched(ours, audio, streams)
    assert max(batch_sizes) == len(audio)
    assert [_outcome(ours, s) for s in streams] == alone
