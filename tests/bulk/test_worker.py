"""A worker decodes the tasks of a call as one rolling batch: each task's
result is the one it gets alone (whole files, pieces of a split file, failures
in the middle), in the call's order."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import soundfile as sf

from asrserve.bulk.engines import call_size, task_calls
from asrserve.bulk.worker import ModelSpec, PieceResult, Task, Worker
from asrserve.config import SplitConfig
from tests.bulk.conftest import LongWav

NONE = SplitConfig(mode="none")


def same(a: PieceResult, b: PieceResult) -> bool:
    return replace(a, decode_s=0.0) == replace(b, decode_s=0.0)


def test_a_call_decodes_as_each_task_alone(
    tiny_lstm_dir: Path, wav_dir_with_corrupt: Path, long_wav: LongWav
) -> None:
    spec = ModelSpec(model=str(tiny_lstm_dir), precision="fp32", endpointing=True, max_streams=3)
    fixed = SplitConfig(mode="fixed", min_duration_s=30, window_s=20, overlap_s=1.0).validate()
    worker = Worker(spec, fixed)
    duration = sf.info(str(long_wav.path)).duration
    n = fixed.piece_count(duration)
    wavs = sorted(wav_dir_with_corrupt.glob("*.wav"))
    tasks = [Task(w.name, str(w)) for w in wavs[:3]]
    tasks += [Task("missing", str(wav_dir_with_corrupt / "missing.wav"))]
    tasks += [Task("long", str(long_wav.path), k, n, duration) for k in (0, n - 1)]
    tasks += [Task(w.name, str(w)) for w in wavs[3:]]
    alone = [worker.process(t) for t in tasks]
    together = worker.process_batch(tasks)
    assert [(r.item_id, r.piece) for r in together] == [(t.item_id, t.piece) for t in tasks]
    assert all(same(a, b) for a, b in zip(together, alone, strict=True))
    errors = {r.item_id: r.error for r in together if r.error is not None}
    assert set(errors) == {"missing", "corrupt.wav", "truncated.wav"}
    assert "no such audio file" in errors["missing"]
    assert all(r.decode_s > 0 for r in together if r.error is None)
    first, last = (r for r in together if r.item_id == "long")
    assert (first.start_s, last.end_s) == (0.0, duration)
    assert last.segments[0]["start"] >= round(last.start_s - fixed.overlap_s, 3)  # file time


def test_a_model_that_does_not_load_fails_every_task(tmp_path: Path) -> None:
    worker = Worker(ModelSpec(model=str(tmp_path)), NONE)
    results = worker.process_batch([Task("a", "a.wav"), Task("b", "b.wav")])
    assert [r.fatal for r in results] == [True, True]
    assert all("model did not load" in (r.error or "") for r in results)


def test_calls_keep_every_worker_busy() -> None:
    tasks = [Task(str(i), f"{i}.wav") for i in range(10)]
    assert call_size(16, 2, 10) == 5
    assert call_size(16, 2, 100) == 16
    assert call_size(16, 4, None) == 16
    assert call_size(4, 8, 3) == 1
    assert [len(c) for c in task_calls(tasks, 4)] == [4, 4, 2]
    assert [t for c in task_calls(tasks, 3) for t in c] == tasks
