"""``asrserve bulk`` end to end: the command, its summary, a kill and a resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from asrserve.cli import main
from tests.bulk.conftest import demo_wavs
from tests.conftest import ROOT


def ids(path: Path) -> list[str]:
    return [json.loads(x)["id"] for x in path.read_text().splitlines()]


def test_cli_end_to_end_with_summary(
    wav_dir_with_corrupt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, summary = tmp_path / "r.jsonl", tmp_path / "summary.json"
    argv = ["bulk", str(wav_dir_with_corrupt), "--out", str(out), "--workers", "2"]
    argv += ["--no-progress", "--summary-json", str(summary)]
    assert main(argv) == 1  # two inputs failed
    text = capsys.readouterr().out
    assert "10 files: 8 decoded, 2 failed, 0 already done" in text
    assert "x real time (local, 2 workers)" in text
    s = json.loads(summary.read_text())
    assert s["ok"] == 8
    assert s["audio_s"] > 0
    assert s["speed_x_realtime"] > 1
    assert len(ids(out)) == 10

    assert main(argv) == 1  # the failed two are tried again, and fail again
    assert "10 files: 0 decoded, 2 failed, 8 already done" in capsys.readouterr().out
    assert sorted(ids(out)) == sorted(set(ids(out)))


def test_summary_counts_one_file_and_one_worker_in_the_singular(
    wav_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from asrserve.bulk.runner import Summary

    one = tmp_path / "one"
    one.mkdir()
    (one / "a.wav").write_bytes(next(wav_dir.glob("*.wav")).read_bytes())
    argv = ["bulk", str(one), "--out", str(tmp_path / "r.jsonl"), "--workers", "1"]
    assert main([*argv, "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "1 file: 1 decoded, 0 failed, 0 already done" in text
    assert "x real time (local, 1 worker)" in text
    text = Summary(inputs=0, engine="ray", workers=3).format()
    assert text.startswith("0 files: ")
    assert text.endswith("(ray, 3 workers)")


def test_cli_ray_engine(wav_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("ray")
    out = tmp_path / "r.jsonl"
    argv = ["bulk", str(wav_dir), "--out", str(out), "--engine", "ray", "--workers", "2"]
    assert main([*argv, "--no-progress", "--split", "none"]) == 0
    assert "8 files: 8 decoded, 0 failed" in capsys.readouterr().out
    assert len(ids(out)) == 8


def test_vad_split_without_a_model_is_a_usage_error(
    wav_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["bulk", str(wav_dir), "--out", str(tmp_path / "r.jsonl"), "--split", "vad"]
    assert main([*argv, "--vad-model", str(tmp_path / "none.onnx")]) == 2
    assert "Silero VAD model not found" in capsys.readouterr().err


def test_killed_run_resumes_without_duplicates(tmp_path: Path) -> None:
    """SIGKILL the whole process group mid-run, then rerun: only the missing ids
    are decoded, and every id ends up exactly once."""
    wavs = demo_wavs()
    manifest = tmp_path / "m.jsonl"
    rows = [{"audio": str(w), "id": f"{k}/{w.stem}"} for k in range(60) for w in wavs]
    rows = rows[:160]
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "r.jsonl"
    cmd = [sys.executable, "-m", "asrserve.cli", "bulk", str(manifest), "--out", str(out)]
    cmd += ["--workers", "1", "--no-progress", "--split", "none"]
    proc = subprocess.Popen(
        cmd, cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if out.is_file() and out.read_text().count("\n") >= 10:
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the run finished before it could be killed"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    before = out.read_text().count("\n")
    assert 10 <= before < len(rows)

    capture = tmp_path / "summary.json"
    argv = ["bulk", str(manifest), "--out", str(out), "--workers", "2", "--no-progress"]
    assert main([*argv, "--split", "none", "--summary-json", str(capture)]) == 0
    s = json.loads(capture.read_text())
    assert s["skipped"] == before
    assert s["ok"] == len(rows) - before
    got = ids(out)
    assert sorted(got) == sorted(r["id"] for r in rows)
