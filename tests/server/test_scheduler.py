"""The scheduler without sockets: partials, finals and rounds."""

from __future__ import annotations

import itertools

import numpy as np

import asrserve
from asrserve.config import EndpointConfig
from asrserve.server.metrics import Metrics
from asrserve.server.protocol import SessionConfig
from asrserve.server.scheduler import Outcome, Scheduler, StreamSlot
from tests.conftest import BUILTIN, read_wav


def _run(audio: np.ndarray, sr: int) -> tuple[list[Outcome], Metrics]:
    rec = asrserve.load_model(BUILTIN, endpoint=EndpointConfig(enabled=False))
    metrics = Metrics()
    sched = Scheduler(rec, max_batch_size=8, metrics=metrics)
    slot = StreamSlot(SessionConfig(sample_rate=sr, endpoint=EndpointConfig(enabled=False)))
    sched.add(slot)
    out: list[Outcome] = []
    for i in range(0, audio.size, sr // 10):  # 100 ms pieces, one step each
        slot.push(audio[i : i + sr // 10])
        out += [o for _, outs in sched.step().outcomes for o in outs]
    slot.stop()
    while not slot.done:
        out += [o for _, outs in sched.step().outcomes for o in outs]
    return out, metrics


def test_partials_only_when_the_hypothesis_changes() -> None:
    x, sr = read_wav(sorted((BUILTIN / "test_wavs").glob("*.wav"))[0])
    audio = np.concatenate([x, np.zeros(sr, dtype=np.float32)])  # a silent second at the end
    out, metrics = _run(audio, sr)
    partials = [o.result.token_ids for o in out if o.kind == "partial" and o.result]
    assert partials
    assert all(a != b for a, b in itertools.pairwise(partials))
    assert len(partials) < metrics.batch_size.count  # not one per decoded chunk
    final = [o.result for o in out if o.kind == "final" and o.result]
    assert final[-1].token_ids == partials[-1]
    assert [o.kind for o in out[-2:]] == ["final", "eof"]
