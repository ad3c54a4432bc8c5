"""Segments and per-token confidences at sherpa-onnx's endpoints, in the core.

Six clips back to back with 1.5 s pauses, fed in 0.1 s pieces to
sherpa-onnx's ``OnlineRecognizer`` and to asrserve's, with the default
endpoint rules and sherpa's loop (``while is_ready: decode_stream``, then
``is_endpoint`` / ``reset``): every segment's tokens and ``start_time`` must
be equal, and each token's ``ys_probs`` within 1e-4. Modified beam search is
where this used to differ: after an endpoint sherpa-onnx starts the new
segment with a fresh path beside the carried ones.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

import asrserve
from asrserve.config import EndpointConfig
from tests.conftest import read_wav
from tests.reference import sherpa_recognizer

PIECE = 1600
GAP_S = 1.5

Segment = tuple[list[str], float, list[float]]


def _audio(wavs: list[Path]) -> npt.NDArray[np.float32]:
    parts = []
    for w in wavs:
        x, sr = read_wav(w)
        assert sr == 16000
        parts += [x, np.zeros(int(GAP_S * sr), np.float32)]
    return np.concatenate(parts)


def _segments(rec: Any, stream: Any, x: npt.NDArray[np.float32], result: Any) -> list[Segment]:
    """sherpa-onnx's endpoint loop, for either recognizer."""
    out: list[Segment] = []

    def drain() -> None:
        while rec.is_ready(stream):
            rec.decode_stream(stream)
            if rec.is_endpoint(stream):
                out.append(result(stream))
                rec.reset(stream)

    for i in range(0, x.size, PIECE):
        stream.accept_waveform(16000, x[i : i + PIECE])
        drain()
    stream.input_finished()
    drain()
    out.append(result(stream))
    return out


@pytest.mark.parametrize("method", ["greedy", "modified_beam"])
def test_endpointed_segments_equal_sherpa_onnx(
    tiny_lstm_dir: Path, tiny_wavs: list[Path], method: str
) -> None:
    ref = sherpa_recognizer(
        tiny_lstm_dir,
        "encoder.onnx",
        "decoder.onnx",
        "joiner.onnx",
        method,
        enable_endpoint_detection=True,
    )
    ours = asrserve.load_model(
        tiny_lstm_dir,
        precision="fp32",
        decoding=asrserve.DecodingConfig(method=method),  # type: ignore[arg-type]
        endpoint=EndpointConfig(enabled=True),
        tail_padding_s=0.0,
    )

    def theirs_result(s: Any) -> Segment:
        r = ref.get_result_all(s)
        return list(r.tokens), round(r.start_time, 2), list(r.ys_probs)

    def ours_result(s: Any) -> Segment:
        r = ours.get_result(s)
        return r.tokens, round(r.start_time, 2), r.ys_probs

    for first in (12, 24):  # two six-clip recordings where beam search used to differ
        x = _audio(tiny_wavs[first : first + 6])
        want = _segments(ref, ref.create_stream(), x, theirs_result)
        got = _segments(ours, ours.create_stream(), x, ours_result)
        assert len([s for s in want if s[0]]) >= 4  # the endpoints did fire
        assert [s[:2] for s in got] == [s[:2] for s in want]
        for (_, _, p), (_, _, q) in zip(got, want, strict=True):
            np.testing.assert_allclose(p, q, atol=1e-4)
