"""``asrserve quantize`` on the command line."""

from __future__ import annotations

from pathlib import Path

import pytest

from asrserve.cli import main


def test_gate_failure_exits_non_zero(
    tiny_lstm_dir: Path, eval_list: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "q"
    argv = ["quantize", str(tiny_lstm_dir), "--to", "int8-dynamic", "--out", str(out)]
    code = main([*argv, "--eval", str(eval_list), "--max-wer-increase", "-1", "--no-progress"])
    assert code == 3
    printed = capsys.readouterr().out
    assert "WER on 8 files" in printed
    assert "FAILED" in printed
    assert (out / "rejected" / "quantize-report.json").is_file()


def test_errors_are_named(
    tiny_lstm_dir: Path,
    tiny_lstm_ncnn_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(["quantize", str(tiny_lstm_ncnn_dir), "--to", "fp16", "--out", str(tmp_path / "a")])
    assert code == 2
    assert "ncnn quantization is --to int8-static" in capsys.readouterr().err
    code = main(["quantize", str(tmp_path / "nope"), "--to", "fp16", "--out", str(tmp_path / "b")])
    assert code == 2
    assert "model directory not found" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["quantize", str(tiny_lstm_dir), "--to", "int4", "--out", str(tmp_path / "c")])
