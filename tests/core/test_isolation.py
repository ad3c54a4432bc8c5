"""``Recognizer.isolate_batches``: with an encoder whose int8 activation scales
are computed per batch, one stream's audio changes another's numbers, unless
the recognizer runs its per-row rewrite (or, where none can be made, runs the
encoder stream by stream)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

import asrserve
from asrserve.backends import onnxruntime as ort_backend
from tests.conftest import BUILTIN, read_wav


def _decode(
    rec: asrserve.Recognizer, clips: list[npt.NDArray[np.float32]]
) -> list[asrserve.Stream]:
    streams = [rec.create_stream() for _ in clips]
    for s, x in zip(streams, clips, strict=True):
        s.accept_waveform(16000, x)
        s.input_finished()
    while rec.decode_streams(streams):
        pass
    return streams


@pytest.mark.parametrize("rewrite", [True, False], ids=["per-row-graph", "stream-by-stream"])
def test_isolated_streams_are_untouched_by_their_batch_mates(
    rewrite: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not rewrite:
        monkeypatch.setattr(ort_backend, "per_row_graph", lambda path, grouped=False: None)
    rec = asrserve.load_model(BUILTIN)
    assert rec.model.encoder.batch_dependent  # the demo encoder: dynamic int8
    x, sr = read_wav(sorted((BUILTIN / "test_wavs").glob("*.wav"))[0])
    assert sr == 16000
    loud = np.random.default_rng(0).uniform(-1, 1, x.size).astype(np.float32)
    alone = _decode(rec, [x])[0]

    mixed = _decode(rec, [x, loud])[0]
    # the dependence is real: a loud batch mate moves the numbers
    assert any(
        not np.array_equal(a, b)
        for a, b in zip(alone.encoder_state, mixed.encoder_state, strict=True)
    )

    rec.isolate_batches = True
    assert rec.batch_dependent is not rewrite  # the per-row encoder took over
    calls = []
    run = rec.model.run_encoder
    monkeypatch.setattr(rec.model, "run_encoder", lambda *a: calls.append(1) or run(*a))
    isolated = _decode(rec, [x, loud])[0]
    chunks = isolated.decoded_chunks
    assert len(calls) == (chunks if rewrite else 2 * chunks)
    for a, b in zip(alone.encoder_state, isolated.encoder_state, strict=True):
        np.testing.assert_array_equal(a, b)
    assert rec.token_ids(isolated) == rec.token_ids(alone)
    rec.isolate_batches = False
    assert rec.batch_dependent  # the shared-batch encoder is back


def test_the_server_option_sets_it() -> None:
    from asrserve.config import ServerConfig
    from asrserve.server.app import AsrServer

    rec = asrserve.load_model(BUILTIN)
    AsrServer(rec, ServerConfig(port=0))
    assert not rec.isolate_batches
    AsrServer(rec, ServerConfig(port=0, isolate_batches=True))
    assert rec.isolate_batches
