"""WER, evaluation lists, and the ONNX node selection helpers."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest

from asrserve.errors import ConfigError, ModelLoadError
from asrserve.quantize.evaluation import read_eval_list
from asrserve.quantize.onnx_modes import excluded_nodes, front_end_nodes, load_fp32
from asrserve.scoring import wer, word_errors


def test_word_errors() -> None:
    assert word_errors("the cat sat", "the cat sat") == (0, 3)
    assert word_errors("the cat sat", "The bat sat down") == (2, 3)  # 1 sub + 1 ins
    assert word_errors("a b c", "") == (3, 3)
    assert wer(["a b", "c d"], ["a b", "c"]) == pytest.approx(25.0)


def test_eval_list_accepts_paths_and_ids(tmp_path: Path, tiny_wavs: list[Path]) -> None:
    (tmp_path / "utt1.wav").write_bytes(tiny_wavs[0].read_bytes())
    listing = tmp_path / "list.txt"
    listing.write_text(f"# comment\nutt1 HELLO WORLD\n\n{tiny_wavs[1]}\tSECOND ONE\n")
    items = read_eval_list(listing)
    assert [i.audio for i in items] == [tmp_path / "utt1.wav", tiny_wavs[1]]
    assert [i.text for i in items] == ["HELLO WORLD", "SECOND ONE"]
    listing.write_text("nowhere SOME TEXT\n")
    with pytest.raises(ConfigError, match=r"list.txt:1: no audio file for 'nowhere'"):
        read_eval_list(listing)
    listing.write_text("\n")
    with pytest.raises(ConfigError, match="empty"):
        read_eval_list(listing)


def test_front_end_is_the_leading_convolutions(tiny_lstm_dir: Path) -> None:
    enc = onnx.load(str(tiny_lstm_dir / "encoder.onnx"))
    assert front_end_nodes(enc) == [
        "/embed/conv/conv.0/Conv",
        "/embed/conv/conv.2/Conv",
        "/embed/conv/conv.4/Conv",
        "/embed/out/MatMul",
    ]
    assert front_end_nodes(onnx.load(str(tiny_lstm_dir / "joiner.onnx"))) == []
    chosen = excluded_nodes(enc, ["/ff/*"], front_end=False)
    assert chosen
    assert all(n.startswith("/ff/") for n in chosen)


def test_load_fp32_refuses_foreign_files(tmp_path: Path) -> None:
    bad = tmp_path / "encoder.onnx"
    bad.write_bytes(b"not a protobuf at all")
    with pytest.raises(ModelLoadError, match="not a readable ONNX model"):
        load_fp32(bad)


@pytest.mark.parametrize("method", ["minmax", "percentile", "entropy"])
def test_static_calibration_methods(
    method: str, tiny_lstm_dir: Path, calib_wavs: list[Path], tmp_path: Path
) -> None:
    import numpy as np
    import onnxruntime as ort

    import asrserve
    from asrserve.quantize.calibration import record_feeds
    from asrserve.quantize.onnx_modes import int8_static

    rec = asrserve.load_model(tiny_lstm_dir, precision="fp32")
    feeds = record_feeds(rec, calib_wavs[:2], max_feeds=64).feeds["joiner"]
    out = tmp_path / f"joiner.{method}.onnx"
    int8_static(tiny_lstm_dir / "joiner.onnx", out, feeds, method=method)
    ops = {n.op_type for n in onnx.load(str(out)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    ref = ort.InferenceSession(str(tiny_lstm_dir / "joiner.onnx"))
    got = ort.InferenceSession(str(out))
    for feed in feeds[:8]:
        a, b = ref.run(None, feed)[0].ravel(), got.run(None, feed)[0].ravel()
        assert a @ b / np.linalg.norm(a) / np.linalg.norm(b) > 0.999
    with pytest.raises(ConfigError, match="unknown calibration method"):
        int8_static(tiny_lstm_dir / "joiner.onnx", out, feeds, method="kl")
    with pytest.raises(ConfigError, match="calibration set is empty"):
        int8_static(tiny_lstm_dir / "joiner.onnx", out, [], method=method)
