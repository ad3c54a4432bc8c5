"""The local process pool: parity with ``asrserve.load_model().transcribe``,
failure isolation and resuming."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

import asrserve
from asrserve.bulk import JsonlSink, LocalEngine, ModelSpec, SplitConfig, read_inputs, run_bulk
from asrserve.bulk.engines import WORKER_DIED
from asrserve.bulk.worker import init_process
from tests.bulk import crashy

NONE = SplitConfig(mode="none")
SPEC = ModelSpec(isolate_batches=True)
"""The demo model is dynamic int8: decoded beside others, a file's result equals
its Python API result (and a resumed run's) only with isolated batches."""


def read_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def by_id(path: Path) -> dict[str, dict[str, Any]]:
    rows = read_lines(path)
    out = {r["id"]: r for r in rows}
    assert len(out) == len(rows), "an id appears twice"
    return out


@pytest.fixture(scope="module")
def reference(wav_dir: Path) -> dict[str, Any]:
    """The Python API's result for every wav of ``wav_dir`` (by relative path)."""
    rec = asrserve.load_model()
    return {w.relative_to(wav_dir).as_posix(): rec.transcribe(w) for w in wav_dir.rglob("*.wav")}


def test_equals_python_api_per_file(
    wav_dir_with_corrupt: Path, reference: dict[str, Any], tmp_path: Path
) -> None:
    out = tmp_path / "r.jsonl"
    items = read_inputs(wav_dir_with_corrupt)
    summary = run_bulk(items, out, LocalEngine(SPEC, NONE, 2), NONE, progress=False)
    rows = by_id(out)
    assert set(rows) == {i.id for i in items}
    assert (summary.ok, summary.failed, summary.skipped) == (len(reference), 2, 0)
    for rid, want in reference.items():
        row = rows[rid]
        assert row["error"] is None
        assert (row["text"], row["tokens"], row["timestamps"]) == (
            want.text,
            want.tokens,
            want.timestamps,
        )
        assert row["duration"] > 0
        assert 0 < row["rtf"] < 1
        assert set(row) == {
            "id", "audio", "text", "tokens", "timestamps", "duration", "rtf", "error", "warning",
            "segments",
        }  # fmt: skip
        assert row["warning"] is None
        (seg,) = row["segments"]  # endpointing off: one segment, the whole transcript
        assert (seg["text"], seg["tokens"], seg["timestamps"]) == (
            row["text"],
            row["tokens"],
            row["timestamps"],
        )
    for bad in ("corrupt.wav", "truncated.wav"):
        assert "cannot decode audio" in rows[bad]["error"]
        assert rows[bad]["text"] == ""
    assert summary.audio_s == pytest.approx(sum(r["duration"] for r in rows.values() if r["rtf"]))


def test_resume_after_a_torn_file(wav_dir_with_corrupt: Path, tmp_path: Path) -> None:
    """Lines lost or torn by a kill, and error lines, are decoded again; the rest
    are kept as they were; no id ends up twice."""
    items = read_inputs(wav_dir_with_corrupt)
    full = tmp_path / "full.jsonl"
    run_bulk(items, full, LocalEngine(SPEC, NONE, 2), NONE, progress=False)
    want = by_id(full)
    lines = full.read_text().splitlines(keepends=True)
    ok_lines = [ln for ln in lines if json.loads(ln)["error"] is None]
    err_lines = [ln for ln in lines if json.loads(ln)["error"] is not None]
    kept = ok_lines[:3]
    partial = tmp_path / "partial.jsonl"
    # three whole lines, one error line, then half of a fourth line (the kill)
    partial.write_text("".join(kept) + err_lines[0] + ok_lines[3][: len(ok_lines[3]) // 2])

    summary = run_bulk(items, partial, LocalEngine(SPEC, NONE, 2), NONE, progress=False)
    assert summary.skipped == 3
    assert summary.ok + summary.failed == len(items) - 3
    got = by_id(partial)
    assert set(got) == set(want)
    for rid, row in want.items():
        assert {k: v for k, v in got[rid].items() if k != "rtf"} == {
            k: v for k, v in row.items() if k != "rtf"
        }
    assert partial.read_text().startswith("".join(kept))  # the finished lines stay first

    again = run_bulk(items, partial, LocalEngine(SPEC, NONE, 1), NONE, progress=False)
    assert (again.skipped, again.ok, again.failed) == (len(items) - 2, 0, 2)
    assert len(partial.read_text().splitlines()) == len(items)


def test_a_wav_cut_inside_its_data_is_decoded_with_a_warning(wav_dir: Path, tmp_path: Path) -> None:
    """libsndfile reads such a file as a shorter one: the line has its
    transcript, no error, and a warning naming the file and the seconds missing."""
    src = next(wav_dir.glob("*.wav"))
    d = tmp_path / "in"
    d.mkdir()
    shutil.copy(src, d / "whole.wav")
    raw = src.read_bytes()
    (d / "cut.wav").write_bytes(raw[: len(raw) - 16000])  # 0.5 s of 16 kHz PCM16
    out = tmp_path / "r.jsonl"
    items = read_inputs(d)
    summary = run_bulk(items, out, LocalEngine(SPEC, NONE, 1), NONE, progress=False)
    assert (summary.ok, summary.failed) == (2, 0)
    rows = by_id(out)
    assert rows["whole.wav"]["warning"] is None
    cut = rows["cut.wav"]
    assert cut["error"] is None
    assert cut["text"] == asrserve.load_model().transcribe(d / "cut.wav").text
    assert cut["text"]
    assert cut["warning"].startswith(f"{cut['audio']}: truncated")
    assert cut["audio"].endswith("cut.wav")
    assert "0.500 s" in cut["warning"]


def test_sink_compaction(tmp_path: Path) -> None:
    p = tmp_path / "r.jsonl"
    p.write_text(
        '{"id": "a", "error": null}\n'
        "not json\n"
        '{"id": "b", "error": "boom"}\n'
        '{"id": "c", "error": "boom"}\n'
        '{"id": "a", "error": null}\n'
        '{"id": "d", "err'
    )
    sink = JsonlSink(p)
    done = sink.open(retry_ids={"a", "b", "d"})
    sink.write({"id": "b", "error": None})
    sink.close()
    assert done == {"a"}
    assert sink.dropped_lines == 4  # not json, b's error, a again, the torn d
    assert [json.loads(x)["id"] for x in p.read_text().splitlines()] == ["a", "c", "b"]


def test_a_dying_worker_fails_only_its_input(wav_dir: Path, tmp_path: Path) -> None:
    d = tmp_path / "in"
    shutil.copytree(wav_dir, d)
    shutil.copy(next(wav_dir.glob("*.wav")), d / "crash.wav")
    items = read_inputs(d)
    engine = LocalEngine(
        ModelSpec(),
        NONE,
        2,
        process=crashy.process_or_die,
        initializer=init_process,
        initargs=(ModelSpec(), NONE),
    )
    out = tmp_path / "r.jsonl"
    summary = run_bulk(items, out, engine, NONE, progress=False)
    rows = by_id(out)
    assert rows["crash.wav"]["error"] == WORKER_DIED
    assert summary.failed == 1
    assert summary.ok == len(items) - 1
    assert all(r["text"] for k, r in rows.items() if k != "crash.wav")


def test_a_model_that_does_not_load_stops_the_run(wav_dir: Path, tmp_path: Path) -> None:
    from asrserve.bulk import BulkError

    with pytest.raises(BulkError, match="model did not load"):
        run_bulk(
            read_inputs(wav_dir),
            tmp_path / "r.jsonl",
            LocalEngine(ModelSpec(model=str(tmp_path)), NONE, 1),
            NONE,
            progress=False,
        )
