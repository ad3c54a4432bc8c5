"""Token parity with sherpa-ncnn on the tiny LSTM's ncnn export (fp16 weights).

Every file matches exactly, greedy and modified beam search: the ncnn
family mirrors sherpa-ncnn's context ([0, 0]), its blank-like ids (0 and 2),
its joiner call shapes (1-D rows in greedy, one (1, D) x (P, D) run per
stream in beam search) and its decoder context after an endpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

import asrserve
from asrserve.config import EndpointConfig, EndpointRule
from tests.conftest import read_wav
from tests.reference import (
    TAIL_PADDING_S,
    asrserve_decode,
    asrserve_decode_batched,
    sherpa_ncnn_mismatches,
    sherpa_ncnn_recognizer,
)

METHODS = ["greedy", "modified_beam"]


def _ours(model_dir: Path, method: str, **kwargs: Any) -> asrserve.Recognizer:
    return asrserve.load_model(
        model_dir,
        decoding=asrserve.DecodingConfig(method=method),
        tail_padding_s=TAIL_PADDING_S,
        **kwargs,
    )


@pytest.mark.parametrize("piece_s", [0.1, None])
@pytest.mark.parametrize("method", METHODS)
def test_all_test_wavs_match_sherpa_ncnn(
    tiny_lstm_ncnn_dir: Path, tiny_wavs: list[Path], method: str, piece_s: float | None
) -> None:
    ref = sherpa_ncnn_recognizer(tiny_lstm_ncnn_dir, method)
    ours = _ours(tiny_lstm_ncnn_dir, method)
    assert type(ours.model).__name__ == "NcnnLstmTransducer"
    mismatches = sherpa_ncnn_mismatches(ref, ours, tiny_wavs, piece_s)
    assert not mismatches, mismatches


@pytest.mark.parametrize("method", METHODS)
def test_batched_streams_equal_single(
    tiny_lstm_ncnn_dir: Path, tiny_wavs: list[Path], method: str
) -> None:
    ours = _ours(tiny_lstm_ncnn_dir, method)
    audio = [read_wav(w) for w in tiny_wavs[:8]]
    alone = [asrserve_decode(ours, x, sr, 1600) for x, sr in audio]
    together, batch_sizes = asrserve_decode_batched(ours, audio)
    assert max(batch_sizes) == len(audio)
    assert together == alone


def _segments_sherpa(rec: Any, x: npt.NDArray[np.float32], sr: int, piece: int) -> list[list[int]]:
    rec.stream = rec.recognizer.create_stream()  # the wrapper holds one stream
    out = []
    for i in range(0, x.size, piece):
        rec.accept_waveform(sr, x[i : i + piece])
        if rec.is_endpoint:
            out.append(list(rec.tokens))
            rec.reset()
    rec.accept_waveform(sr, np.zeros(int(TAIL_PADDING_S * sr), np.float32))
    rec.input_finished()
    return [*out, list(rec.tokens)]


def _segments_ours(
    rec: asrserve.Recognizer, x: npt.NDArray[np.float32], sr: int, piece: int
) -> list[list[int]]:
    s = rec.create_stream()
    out = []
    for i in range(0, x.size, piece):
        s.accept_waveform(sr, x[i : i + piece])
        while rec.decode_streams([s]):
            pass
        if rec.is_endpoint(s):
            out.append(rec.get_result(s).token_ids)
            rec.reset(s)
    s.input_finished()
    while rec.decode_streams([s]):
        pass
    return [*out, rec.get_result(s).token_ids]


@pytest.mark.parametrize("method", METHODS)
def test_endpoint_segments_match_sherpa_ncnn(
    tiny_lstm_ncnn_dir: Path, tiny_wavs: list[Path], method: str
) -> None:
    """Three utterances per stream, 1 s of silence apart: the same segments.
    sherpa-ncnn restarts the decoder context at [0, 0] after an endpoint
    (keeping only the first decoder output); going on from the old tokens,
    as sherpa-onnx does, changed 2 of 10 greedy and 8 of 10 beam streams."""
    # thresholds off the 40 ms grid, so float32 vs float64 rounding cannot flip a rule
    rule2 = 0.82
    ref = sherpa_ncnn_recognizer(
        tiny_lstm_ncnn_dir,
        method,
        enable_endpoint_detection=True,
        rule1_min_trailing_silence=5.02,
        rule2_min_trailing_silence=rule2,
        rule3_min_utterance_length=30.02,
    )
    endpoint = EndpointConfig(
        enabled=True,
        rule1=EndpointRule(False, 5.02, 0.0),
        rule2=EndpointRule(True, rule2, 0.0),
        rule3=EndpointRule(False, 0.0, 30.02),
    )
    ours = _ours(tiny_lstm_ncnn_dir, method, endpoint=endpoint)
    gap = np.zeros(16000, np.float32)
    num_segments = 0
    for g in range(0, len(tiny_wavs), 3):
        x = np.concatenate([p for w in tiny_wavs[g : g + 3] for p in (read_wav(w)[0], gap)])
        want = _segments_sherpa(ref, x, 16000, 1600)
        assert _segments_ours(ours, x, 16000, 1600) == want, tiny_wavs[g].name
        num_segments += len(want)
    assert num_segments >= len(tiny_wavs)  # the endpoints did fire
