"""Model discovery and load errors name the problem."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import asrserve
from asrserve.errors import ModelLoadError
from asrserve.families import find_model_files
from tests.conftest import BUILTIN


def _copy_builtin(tmp_path: Path) -> Path:
    """The demo model as the wheel ships it (int8 graphs only, no fp32 ones)."""
    d = tmp_path / "m"
    d.mkdir()
    for name in (
        "encoder.int8.onnx",
        "decoder.onnx",
        "joiner.int8.onnx",
        "tokens.txt",
        "bpe.model",
    ):
        shutil.copy(BUILTIN / name, d / name)
    return d


def test_auto_precision_prefers_int8(tiny_lstm_dir: Path) -> None:
    files = find_model_files(tiny_lstm_dir)
    assert files.encoder.name == "encoder.int8.onnx"
    files = find_model_files(tiny_lstm_dir, "fp32")
    assert files.encoder.name == "encoder.onnx"
    # no fp16 files: each role falls back to fp32
    assert find_model_files(tiny_lstm_dir, "fp16").joiner.name == "joiner.onnx"


def test_truncated_encoder(tmp_path: Path) -> None:
    d = _copy_builtin(tmp_path)
    enc = d / "encoder.int8.onnx"
    enc.write_bytes(enc.read_bytes()[: enc.stat().st_size // 3])
    with pytest.raises(ModelLoadError, match=r"encoder\.int8\.onnx"):
        asrserve.load_model(d)


def test_foreign_graph_without_model_type(tmp_path: Path) -> None:
    d = _copy_builtin(tmp_path)
    shutil.copy(d / "joiner.int8.onnx", d / "encoder.int8.onnx")
    with pytest.raises(ModelLoadError, match="model_type"):
        asrserve.load_model(d)


def test_not_onnx_at_all(tmp_path: Path) -> None:
    d = _copy_builtin(tmp_path)
    (d / "decoder.onnx").write_text("hello")
    with pytest.raises(ModelLoadError, match=r"decoder\.onnx"):
        asrserve.load_model(d)


def test_missing_pieces(tmp_path: Path) -> None:
    d = _copy_builtin(tmp_path)
    (d / "joiner.int8.onnx").unlink()
    with pytest.raises(ModelLoadError, match="joiner"):
        asrserve.load_model(d)
    with pytest.raises(asrserve.AsrServeError, match="not found"):
        asrserve.load_model(tmp_path / "nothing-here")


def test_ambiguous_files(tmp_path: Path) -> None:
    d = _copy_builtin(tmp_path)
    shutil.copy(d / "decoder.onnx", d / "decoder-epoch-99.onnx")
    with pytest.raises(ModelLoadError, match="several"):
        asrserve.load_model(d)


def test_bad_tokens_file(tmp_path: Path) -> None:
    d = _copy_builtin(tmp_path)
    (d / "tokens.txt").write_text("<blk> 0\nthis line is wrong x\n")
    with pytest.raises(ModelLoadError, match=r"tokens\.txt:2"):
        asrserve.load_model(d)


def test_tokens_that_do_not_fit_the_model_are_refused_at_load(tmp_path: Path) -> None:
    """A short table used to load with a warning and fail (KeyError) only when the
    model emitted a token past its end; duplicate or missing ids likewise."""
    d = _copy_builtin(tmp_path)
    lines = (BUILTIN / "tokens.txt").read_text().splitlines()
    (d / "tokens.txt").write_text("\n".join(lines[:-10]) + "\n")
    with pytest.raises(ModelLoadError, match=f"{len(lines) - 10} entries.*{len(lines)}"):
        asrserve.load_model(d)
    duplicated = [*lines[:-1], lines[-1].rsplit(maxsplit=1)[0] + " 3"]
    (d / "tokens.txt").write_text("\n".join(duplicated) + "\n")
    with pytest.raises(ModelLoadError, match=f"tokens\\.txt:{len(lines)}: id 3 given twice"):
        asrserve.load_model(d)
    gap = [*lines[:-1], lines[-1].rsplit(maxsplit=1)[0] + f" {len(lines) + 5}"]
    (d / "tokens.txt").write_text("\n".join(gap) + "\n")
    with pytest.raises(ModelLoadError, match=f"missing {len(lines) - 1}"):
        asrserve.load_model(d)


def test_bad_options() -> None:
    with pytest.raises(asrserve.ConfigError, match="num_threads"):
        asrserve.load_model(num_threads=0)
    with pytest.raises(asrserve.ConfigError, match="beam"):
        asrserve.load_model(decoding=asrserve.DecodingConfig(method="modified_beam", beam=0))
    with pytest.raises(asrserve.ConfigError, match="unknown decoding method"):
        asrserve.load_model(decoding=asrserve.DecodingConfig(method="viterbi"))  # type: ignore[arg-type]


def test_catalog_layout_picks_named_files(tmp_path: Path) -> None:
    d = _copy_builtin(tmp_path)
    # two encoders, as in upstream archives with several chunk sizes
    shutil.copy(d / "encoder.int8.onnx", d / "encoder-chunk-16.int8.onnx")
    with pytest.raises(ModelLoadError, match="several"):
        find_model_files(d)
    layout = {"encoder_int8": "encoder-chunk-16.int8.onnx", "decoder": "decoder.onnx"}
    files = find_model_files(d, "auto", layout)
    assert files.encoder.name == "encoder-chunk-16.int8.onnx"
    assert files.decoder.name == "decoder.onnx"
