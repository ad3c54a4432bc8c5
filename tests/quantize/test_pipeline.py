"""``quantize_model`` on the trained tiny LSTM: every ONNX mode writes a model that
asrserve and sherpa-onnx both decode, with a report, and the WER gate works."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import asrserve
from asrserve.errors import ConfigError, ModelLoadError
from asrserve.quantize.evaluation import read_eval_list
from asrserve.quantize.pipeline import REPORT_NAME, QuantizeOptions, format_report, quantize_model
from tests.conftest import read_wav
from tests.reference import asrserve_decode, sherpa_decode, sherpa_recognizer

MODES = ("fp16", "int8-dynamic", "int8-static", "int8-smoothquant")
SUFFIX = {"fp16": ".fp16.onnx"}


@pytest.fixture(scope="module", params=MODES)
def quantized(
    request: pytest.FixtureRequest,
    tiny_lstm_dir: Path,
    calib_wavs: list[Path],
    eval_list: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[str, Any]:
    mode = request.param
    out = tmp_path_factory.mktemp("q") / mode
    opts = QuantizeOptions(mode=mode, calib=calib_wavs, eval_list=eval_list, max_wer_increase=5.0)
    return mode, quantize_model(tiny_lstm_dir, out, opts)


def test_writes_model_and_report(quantized: tuple[str, Any]) -> None:
    mode, result = quantized
    assert result.accepted
    report = json.loads((result.model_dir / REPORT_NAME).read_text())
    assert report["mode"] == mode
    suffix = SUFFIX.get(mode, ".int8.onnx")
    assert report["files"]["encoder"] == f"encoder{suffix}"
    assert (result.model_dir / "tokens.txt").is_file()
    enc = report["sizes"]["encoder"]
    assert enc["converted"] < (0.55 if mode == "fp16" else 0.35) * enc["source"]
    # fp16 converts the decoder too; int8 modes leave it fp32, as upstream does
    dec = report["sizes"]["decoder"]
    assert (dec["converted"] < dec["source"]) == (mode == "fp16")
    for role in ("encoder", "joiner"):
        assert report["cosine"][role]["mean"] > 0.995, role
    ev = report["eval"]
    assert ev["files"] == 8
    assert ev["references"]
    assert ev["wer_increase"] <= 5.0
    assert ev["speed_ratio"] > 0
    if mode in ("int8-static", "int8-smoothquant"):
        assert report["calibration"]["files"] == 6
        # the front-end convolutions and their projection stay float
        assert "/embed/conv/conv.0/Conv" in report["excluded"]["encoder"]
    table = format_report(report)
    assert "WER on 8 files" in table


def test_sherpa_onnx_decodes_the_same_tokens(quantized: tuple[str, Any], eval_list: Path) -> None:
    """Both runtimes decode the output; tokens agree (int8: sherpa-onnx bundles
    another onnxruntime build, whose int8 kernels may round a near-tie apart)."""
    mode, result = quantized
    d = result.model_dir
    files = json.loads((d / REPORT_NAME).read_text())["files"]
    ref = sherpa_recognizer(d, files["encoder"], files["decoder"], files["joiner"], "greedy")
    ours = asrserve.load_model(d)
    items = read_eval_list(eval_list)
    same = 0
    for item in items:
        samples, rate = read_wav(item.audio)
        want, _ = sherpa_decode(ref, samples, rate, rate // 10)
        got, _ = asrserve_decode(ours, samples, rate, rate // 10)
        assert got, item.audio
        same += want == got
    assert same >= (len(items) if mode == "fp16" else len(items) - 1)


def test_gate_fails_when_forced(tiny_lstm_dir: Path, eval_list: Path, tmp_path: Path) -> None:
    out = tmp_path / "q"
    opts = QuantizeOptions(mode="int8-dynamic", eval_list=eval_list, max_wer_increase=-1.0)
    result = quantize_model(tiny_lstm_dir, out, opts)
    assert not result.accepted
    assert result.model_dir == out / "rejected"
    assert (out / "rejected" / "encoder.int8.onnx").is_file()
    assert not (out / "encoder.int8.onnx").exists()
    assert json.loads((out / "rejected" / REPORT_NAME).read_text())["gate"]["accepted"] is False
    assert "FAILED" in format_report(result.report)


def test_output_dirs_get_the_umask_mode(
    tiny_lstm_dir: Path, eval_list: Path, tmp_path: Path
) -> None:
    """The model folder (and ``rejected/``) is readable as the umask says, not
    0700 as a temporary folder would be (a container's user reads it)."""
    import os
    import stat

    old = os.umask(0o027)
    try:
        accepted = quantize_model(tiny_lstm_dir, tmp_path / "ok", QuantizeOptions(mode="fp16"))
        forced = QuantizeOptions(mode="fp16", eval_list=eval_list, max_wer_increase=-1.0)
        rejected = quantize_model(tiny_lstm_dir, tmp_path / "no", forced)
    finally:
        os.umask(old)
    assert accepted.model_dir == tmp_path / "ok"
    assert rejected.model_dir == tmp_path / "no" / "rejected"
    for d in (accepted.model_dir, rejected.model_dir, rejected.model_dir.parent):
        assert stat.S_IMODE(d.stat().st_mode) == 0o750, d


def test_refusals_name_the_problem(
    tiny_lstm_dir: Path, tmp_path: Path, calib_wavs: list[Path]
) -> None:
    with pytest.raises(ConfigError, match="needs calibration audio"):
        quantize_model(tiny_lstm_dir, tmp_path / "a", QuantizeOptions(mode="int8-static"))
    with pytest.raises(ConfigError, match="unknown mode"):
        quantize_model(tiny_lstm_dir, tmp_path / "b", QuantizeOptions(mode="int4"))
    with pytest.raises(ConfigError, match="needs audio"):
        quantize_model(
            tiny_lstm_dir, tmp_path / "c", QuantizeOptions(mode="fp16", max_wer_increase=1.0)
        )
    with pytest.raises(ConfigError, match="unsupported op types"):
        quantize_model(
            tiny_lstm_dir, tmp_path / "d", QuantizeOptions(mode="int8-dynamic", op_types=["LSTM"])
        )
    with pytest.raises(ConfigError, match="no such calibration audio"):
        quantize_model(
            tiny_lstm_dir,
            tmp_path / "e",
            QuantizeOptions(mode="int8-static", calib=[tmp_path / "missing.wav"]),
        )
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x").write_text("x")
    with pytest.raises(ConfigError, match="not empty"):
        quantize_model(tiny_lstm_dir, busy, QuantizeOptions(mode="fp16"))
    assert not (tmp_path / "a").exists()


def test_refuses_an_already_quantized_model(tmp_path: Path, tiny_lstm_dir: Path) -> None:
    d = tmp_path / "int8"
    d.mkdir()
    for name in ("encoder.int8.onnx", "decoder.onnx", "joiner.int8.onnx", "tokens.txt"):
        (d / name.replace(".int8", "")).write_bytes((tiny_lstm_dir / name).read_bytes())
    with pytest.raises(ModelLoadError, match="already quantized"):
        quantize_model(d, tmp_path / "out", QuantizeOptions(mode="int8-dynamic"))


def test_ncnn_model_gets_ncnn_int8(
    tiny_lstm_ncnn_dir: Path, calib_wavs: list[Path], eval_list: Path, tmp_path: Path
) -> None:
    """An ncnn directory goes through the ncnn int8 writer; the report measures it."""
    opts = QuantizeOptions(mode="int8-static", calib=calib_wavs, eval_list=eval_list)
    result = quantize_model(tiny_lstm_ncnn_dir, tmp_path / "q", opts)
    report = result.report
    assert report["backend"] == "ncnn"
    assert report["files"]["encoder"] == "encoder_jit_trace-pnnx.ncnn.int8.param"
    assert report["files"]["decoder"] == "decoder_jit_trace-pnnx.ncnn.param"
    assert report["ncnn_int8"]["encoder"]["quantized"]
    assert report["cosine"]["joiner"]["mean"] > 0.99
    assert report["eval"]["wer_increase"] < 5.0
    assert asrserve.load_model(result.model_dir).transcribe(read_eval_list(eval_list)[0].audio).text
