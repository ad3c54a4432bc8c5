"""The scheduler without sockets: partials, finals and rounds."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest

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


def test_one_failing_stream_ends_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """A stream whose results cannot be built (as with a token table shorter
    than the model's vocabulary: KeyError) gets an error; its batch mates go on."""
    x, sr = read_wav(sorted((BUILTIN / "test_wavs").glob("*.wav"))[0])
    rec = asrserve.load_model(BUILTIN, endpoint=EndpointConfig(enabled=False))
    sched = Scheduler(rec, max_batch_size=8, metrics=Metrics())
    cfg = SessionConfig(sample_rate=sr, endpoint=EndpointConfig(enabled=False))
    good, bad = StreamSlot(cfg), StreamSlot(cfg)
    sched.add(good)
    sched.add(bad)
    monkeypatch.setattr(rec, "token_ids", _failing_for(bad, rec.token_ids))
    monkeypatch.setattr(rec, "get_result", _failing_for(bad, rec.get_result))
    got: dict[int, list[Outcome]] = {id(good): [], id(bad): []}
    for i in range(0, x.size, sr // 10):
        good.push(x[i : i + sr // 10])
        bad.push(x[i : i + sr // 10])
        for slot, outs in sched.step().outcomes:
            got[id(slot)] += outs
    good.stop()
    bad.stop()
    for _ in range(100):
        if good.done:
            break
        for slot, outs in sched.step().outcomes:
            got[id(slot)] += outs
    (error,) = [o for o in got[id(bad)] if o.kind == "error"]
    assert error.fatal
    assert "240" in str(error.error)
    assert [o.kind for o in got[id(good)][-2:]] == ["final", "eof"]
    final = got[id(good)][-2].result
    assert final is not None
    assert final.token_ids == rec.transcribe(x, sr).token_ids


def _failing_for(slot: StreamSlot, fn: Any) -> Any:
    def wrapped(stream: asrserve.Stream, *args: Any, **kwargs: Any) -> Any:
        if stream is slot.stream:
            raise KeyError(240)
        return fn(stream, *args, **kwargs)

    return wrapped
