"""``--engine ray`` on a local Ray started here: the same lines as ``--engine local``."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from asrserve.bulk import LocalEngine, ModelSpec, SplitConfig, read_inputs, run_bulk
from tests.bulk.conftest import LongWav

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def local_ray() -> Iterator[Any]:
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    try:
        yield ray
    finally:
        ray.shutdown()


def lines(path: Path) -> dict[str, dict[str, Any]]:
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    out = {r["id"]: r for r in rows}
    assert len(out) == len(rows)
    return out


def test_ray_equals_local(
    local_ray: Any,
    wav_dir_with_corrupt: Path,
    long_wav: LongWav,
    vad_model: Path,
    tmp_path: Path,
) -> None:
    from asrserve.bulk.engines.ray_engine import RayEngine

    d = tmp_path / "in"
    shutil.copytree(wav_dir_with_corrupt, d)
    shutil.copy(long_wav.path, d / "long.wav")
    items = read_inputs(d)
    split = SplitConfig(
        mode="vad", min_duration_s=30, window_s=20, overlap_s=1.0, vad_model=str(vad_model)
    ).validate()
    spec = ModelSpec(isolate_batches=True)

    local_out, ray_out = tmp_path / "local.jsonl", tmp_path / "ray.jsonl"
    a = run_bulk(items, local_out, LocalEngine(spec, split, 2), split, progress=False)
    engine = RayEngine(spec, split, 2, batch_size=3)
    b = run_bulk(items, ray_out, engine, split, progress=False)
    assert engine.workers == 2
    assert (a.ok, a.failed) == (b.ok, b.failed) == (len(items) - 2, 2)
    assert a.audio_s == pytest.approx(b.audio_s)
    want, got = lines(local_out), lines(ray_out)
    assert set(want) == set(got) == {i.id for i in items}
    for rid, row in want.items():
        keys = ("text", "tokens", "timestamps", "duration", "error")
        assert {k: got[rid][k] for k in keys} == {k: row[k] for k in keys}, rid
    assert want["long.wav"]["text"]
    assert ray.is_initialized()  # a Ray it did not start is left running


def test_a_dying_actor_fails_only_its_input(local_ray: Any, wav_dir: Path, tmp_path: Path) -> None:
    from asrserve.bulk.engines import WORKER_DIED
    from asrserve.bulk.engines.ray_engine import RayEngine
    from tests.bulk.crashy import CrashyWorker

    d = tmp_path / "in"
    shutil.copytree(wav_dir, d)
    shutil.copy(next(wav_dir.glob("*.wav")), d / "crash.wav")
    items = read_inputs(d)
    split = SplitConfig(mode="none")
    engine = RayEngine(ModelSpec(), split, 2, batch_size=4, worker_cls=CrashyWorker)
    out = tmp_path / "r.jsonl"
    summary = run_bulk(items, out, engine, split, progress=False)
    rows = lines(out)
    assert rows["crash.wav"]["error"] == WORKER_DIED
    assert (summary.ok, summary.failed) == (len(items) - 1, 1)
