"""The scheduler without sockets: partials, finals, rounds, the shared pool and its threads."""

from __future__ import annotations

import itertools
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import asrserve
from asrserve.config import EndpointConfig
from asrserve.server import scheduler
from asrserve.server.metrics import Metrics
from asrserve.server.protocol import SessionConfig
from asrserve.server.scheduler import (
    SPLIT_S,
    Outcome,
    RoundCost,
    Scheduler,
    StreamSlot,
    fewer_malloc_arenas,
)
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


# --- the shared pool and its decode threads --------------------------------------------


def _pool(max_wait_s: float = 0.0) -> tuple[asrserve.Recognizer, Scheduler]:
    rec = asrserve.load_model(BUILTIN, endpoint=EndpointConfig(enabled=False))
    return rec, Scheduler(rec, max_batch_size=8, metrics=Metrics(), max_wait_s=max_wait_s)


def _slot(sched: Scheduler, sr: int = 16000) -> StreamSlot:
    slot = StreamSlot(SessionConfig(sample_rate=sr, endpoint=EndpointConfig(enabled=False)))
    sched.add(slot)
    return slot


def test_new_audio_waits_for_batch_mates_within_max_wait() -> None:
    _, sched = _pool(max_wait_s=0.04)
    first = _slot(sched)
    assert sched.wait_s(0.1) == 0.0  # the only stream: nobody to wait for
    _slot(sched)
    assert sched.wait_s(0.1) == pytest.approx(0.04)  # rounds not timed yet
    sched._chunk_s, sched._round_s = 0.04, 0.005
    assert sched.wait_s(0.1) == pytest.approx(0.04 - 3 * 0.005)  # 3 rounds to decode
    sched._round_s = 0.02
    assert sched.wait_s(0.1) == 0.0  # slow rounds: no waiting at all
    first.push(np.zeros(1600, np.float32))
    assert sched._next_due > 0  # queued, due once its wait is over
    first.stop()
    assert sched._next_due <= time.monotonic()  # input ended: due at once


def test_a_thread_takes_every_waiting_stream_at_once() -> None:
    x, sr = read_wav(sorted((BUILTIN / "test_wavs").glob("*.wav"))[0])
    _, sched = _pool(max_wait_s=0.5)
    slots = [_slot(sched, sr) for _ in range(4)]
    for slot in slots:  # all queued before any is due
        slot.push(x[: sr // 2])
    got: list[tuple[StreamSlot, list[Outcome]]] = []
    sched.start(got.extend, threads=2)
    try:
        deadline = time.monotonic() + 10
        while sched.metrics.batch_size.count == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        sched.stop()
    hist = sched.metrics.batch_size
    assert hist.count >= 1
    assert hist.sum / hist.count > 3  # the first rounds carried all four


@pytest.mark.parametrize("shared", [False, True], ids=["whole", "equal-shares"])
def test_threads_give_every_stream_its_transcript(
    tiny_lstm_dir: Path, monkeypatch: pytest.MonkeyPatch, shared: bool
) -> None:
    """Streams fed in pieces to two decode threads end with the transcript of
    each file (fp32 files: their results do not depend on batch mates), also
    when every round counts as long, so that the threads hold equal shares
    and hand streams to each other between rounds."""
    rec = asrserve.load_model(
        tiny_lstm_dir, precision="fp32", endpoint=EndpointConfig(enabled=False)
    )
    wavs = sorted((BUILTIN / "test_wavs").glob("*.wav"))
    sched = Scheduler(rec, max_batch_size=4, metrics=Metrics(), max_wait_s=0.01)
    decoded_by: dict[int, set[int]] = {}
    if shared:
        monkeypatch.setattr(scheduler, "SPLIT_S", -1.0)
        decode = sched._decode

        def tracing(batch: list[StreamSlot], outcomes: dict[int, list[Outcome]]) -> None:
            for slot in batch:
                decoded_by.setdefault(id(slot), set()).add(threading.get_ident())
            decode(batch, outcomes)

        monkeypatch.setattr(sched, "_decode", tracing)
    cfg = SessionConfig(endpoint=EndpointConfig(enabled=False))
    files = [wavs[i % len(wavs)] for i in range(10)]
    slots = [StreamSlot(cfg) for _ in files]
    got: dict[int, list[Outcome]] = {id(s): [] for s in slots}
    lock = threading.Lock()

    def deliver(outcomes: list[tuple[StreamSlot, list[Outcome]]]) -> None:
        with lock:
            for slot, outs in outcomes:
                got[id(slot)] += outs

    for slot in slots:
        sched.add(slot)
    sched.start(deliver, threads=2)
    try:
        audio = [read_wav(w)[0] for w in files]
        for i in range(0, max(a.size for a in audio), 1600):
            for slot, a in zip(slots, audio, strict=True):
                if i < a.size:
                    slot.push(a[i : i + 1600])
            time.sleep(0.002)
        for slot in slots:
            slot.stop()
        deadline = time.monotonic() + 30
        while not all(s.done for s in slots) and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        sched.stop()
    for slot, wav in zip(slots, files, strict=True):
        outs = got[id(slot)]
        assert [o.kind for o in outs[-2:]] == ["final", "eof"], wav.name
        final = outs[-2].result
        assert final is not None
        assert final.token_ids == rec.transcribe(wav).token_ids, wav.name
        assert slot.stream is None  # its core objects were let go at its end
    assert sched.live_streams == 0
    if shared:  # streams did move between the threads
        assert any(len(threads) == 2 for threads in decoded_by.values())


def test_an_abandoned_stream_leaves_the_pool() -> None:
    x, sr = read_wav(sorted((BUILTIN / "test_wavs").glob("*.wav"))[0])
    _, sched = _pool()
    slot = _slot(sched, sr)
    slot.push(x[:sr])
    sched.step()
    assert slot.stream is not None
    slot.abandon()
    result = sched.step()
    assert result.outcomes == []  # nobody to answer
    assert slot.stream is None
    assert sched.live_streams == 0


def _long_rounds(sched: Scheduler) -> None:
    """Two decode threads (not started) and the 80M LSTM's round costs."""
    sched._threads = [threading.Thread(target=lambda: None) for _ in range(2)]
    sched._cost = RoundCost()
    for rows in (1, 4, 8, 16, 32):  # rounds as the 80M LSTM's: 6.5 ms + 0.95 ms a stream
        sched._cost.add(rows, 0.0065 + 0.00095 * rows)
    assert sched._cost.estimate(20) == pytest.approx(0.0255)
    assert sched._cost.estimate(8) < SPLIT_S  # a short round stays whole


def test_threads_share_a_long_round() -> None:
    _, sched = _pool()
    slots = [_slot(sched) for _ in range(20)]
    _long_rounds(sched)
    with sched._cond:
        for slot in slots:
            sched._queue[slot] = None
        sched._next_due = 0.0
        mine = sched._hold_queue()
        assert len(mine) == 10  # an equal share; the rest is left due for the other
        assert len(sched._queue) == 10
        assert sched._next_due <= time.monotonic()
        assert len(sched._hold_queue()) == 10  # the other thread's share: all that is left
        assert not sched._queue
        assert sched._holding == 20


def test_a_thread_holding_more_than_its_share_hands_the_rest_back() -> None:
    """Streams stay with the thread that last decoded them; when one thread's
    rounds grow (all ending streams with it) it gives the excess back to the
    pool, due at once, for the other thread's rounds."""
    x, sr = read_wav(sorted((BUILTIN / "test_wavs").glob("*.wav"))[0])
    _, sched = _pool()
    slots = [_slot(sched, sr) for _ in range(20)]
    for slot in slots:
        slot.push(x[:sr])
    sched.step()  # every slot gets its stream; none held now
    _long_rounds(sched)
    with sched._cond:
        sched._queue.clear()
        for slot in slots:
            sched._queue[slot] = None
        sched._threads.pop()  # one thread for now: it takes everything
        mine = sched._hold_queue()
        assert len(mine) == 20
        sched._threads.append(threading.Thread(target=lambda: None))
    batch = list(mine)
    kept = sched._shed(batch, list(mine))
    assert len(kept) == 10
    assert batch == kept
    with sched._cond:
        assert list(sched._queue) == mine[10:]  # due at once, for the other thread
        assert sched._next_due <= time.monotonic()
        assert sched._holding == 10
        assert not any(s._held for s in mine[10:])
    assert sched._shed(batch, kept) == kept  # at its share: nothing more to give


def test_malloc_arenas_left_alone_when_the_environment_says(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert not fewer_malloc_arenas()
