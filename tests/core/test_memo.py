"""What the recognizer keeps per stream between chunks: compact encoder states
of its own, and remembered results that equal results built from scratch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import asrserve
from asrserve.config import EndpointConfig, EndpointRule
from asrserve.core.events import Result
from tests.conftest import BUILTIN, read_wav


@pytest.fixture(scope="module")
def rec() -> asrserve.Recognizer:
    return asrserve.load_model(BUILTIN)


def _clips() -> list[np.ndarray]:
    return [read_wav(p)[0] for p in sorted((BUILTIN / "test_wavs").glob("*.wav"))[:3]]


def test_each_stream_owns_compact_states_after_a_batched_chunk(
    rec: asrserve.Recognizer,
) -> None:
    streams = [rec.create_stream() for _ in range(4)]
    for s, x in zip(streams, [*_clips(), _clips()[0]], strict=True):
        s.accept_waveform(16000, x)
    assert rec.decode_streams(streams) == 4
    single = [spec.zeros().nbytes for spec in rec.model.state_specs]  # type: ignore[attr-defined]
    for s in streams:
        assert [a.nbytes for a in s.encoder_state] == single
        # no view into the batch's arrays: nothing keeps the other rows alive
        assert all(a.base is None for a in s.encoder_state)


def _fresh(rec: asrserve.Recognizer, s: asrserve.Stream, is_final: bool = False) -> Result:
    """The result built with nothing remembered."""
    s.result_cache = None
    s.best_cache = None
    return rec.get_result(s, is_final)


@pytest.mark.parametrize("method", ["greedy", "modified_beam"])
def test_remembered_results_equal_results_built_from_scratch(
    rec: asrserve.Recognizer, method: str
) -> None:
    """Chunk by chunk over clips with endpoints (segments, resets): every result
    equals one built from scratch; with nothing decoded the same object returns."""
    rules = EndpointConfig(enabled=True, rule2=EndpointRule(True, 0.3, 0.0))
    s = rec.create_stream(decoding=asrserve.DecodingConfig(method=method), endpoint=rules)
    for x in _clips():
        s.accept_waveform(16000, np.concatenate([x, np.zeros(8000, np.float32)]))
    s.input_finished()
    segments = 0
    while rec.decode_streams([s]):
        got = rec.get_result(s)
        assert rec.get_result(s) is got  # nothing decoded: nothing rebuilt
        assert rec.token_ids(s) is not rec.token_ids(s)  # the caller's own list
        assert got == _fresh(rec, s)
        if rec.is_endpoint(s):
            assert rec.get_result(s, is_final=True) == _fresh(rec, s, True)
            segments += bool(got.token_ids)
            rec.reset(s)
            assert rec.get_result(s) == _fresh(rec, s)
    assert segments >= 2
    assert rec.get_result(s, is_final=True) == _fresh(rec, s, True)


def test_text_is_built_from_the_new_tokens_only(
    rec: asrserve.Recognizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = rec.create_stream()
    s.accept_waveform(16000, _clips()[0])
    s.input_finished()
    pieces: list[int] = []
    piece = rec.symbols.piece
    monkeypatch.setattr(rec.symbols, "piece", lambda t: pieces.append(t) or piece(t))
    while rec.decode_streams([s]):
        rec.get_result(s)
    result = rec.get_result(s)
    assert len(pieces) == len(result.token_ids) > 10  # each token's text made once


def test_a_stream_whose_decoding_changes_gets_its_search(
    rec: asrserve.Recognizer, tmp_path: Path
) -> None:
    s = rec.create_stream()
    s.decoding = asrserve.DecodingConfig(method="modified_beam")
    s.search_state = rec._search(s.decoding).initial()
    s.accept_waveform(16000, _clips()[0])
    s.input_finished()
    while rec.decode_streams([s]):
        pass
    assert rec.get_result(s).text
