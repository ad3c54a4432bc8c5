"""ncnn model directories: file choice by precision, and load errors that name the problem."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

import asrserve
from asrserve.cli import main
from asrserve.errors import ModelLoadError
from asrserve.families import find_model_files

ENCODER = "encoder_jit_trace-pnnx.ncnn"
DECODER = "decoder_jit_trace-pnnx.ncnn"
JOINER = "joiner_jit_trace-pnnx.ncnn"


@pytest.fixture
def ncnn_copy(tiny_lstm_ncnn_dir: Path, tmp_path: Path) -> Path:
    d = tmp_path / "ncnn"
    shutil.copytree(tiny_lstm_ncnn_dir, d)
    return d


def _edit_param(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def test_loads_as_ncnn_lstm(tiny_lstm_ncnn_dir: Path) -> None:
    files = find_model_files(tiny_lstm_ncnn_dir)
    assert files.backend == "ncnn"
    assert files.encoder.name == f"{ENCODER}.param"
    rec = asrserve.load_model(tiny_lstm_ncnn_dir)
    m = rec.model
    assert m.family == "ncnn-lstm"
    assert (m.chunk_size, m.chunk_shift, m.vocab_size, m.context_size) == (9, 4, 256, 2)
    assert [s.shape for s in m.init_state()] == [(1, 4, 192), (1, 4, 384)]


def test_precision_picks_files_and_fp16_switch(ncnn_copy: Path) -> None:
    for role in (ENCODER, DECODER, JOINER):
        for ext in ("param", "bin"):
            shutil.copy(ncnn_copy / f"{role}.{ext}", ncnn_copy / f"{role}.int8.{ext}")
    auto = find_model_files(ncnn_copy)
    assert auto.encoder.name == f"{ENCODER}.int8.param"
    assert auto.joiner.name == f"{JOINER}.int8.param"
    assert auto.decoder.name == f"{DECODER}.param"  # upstream never quantizes the decoder
    assert find_model_files(ncnn_copy, "int8").encoder == auto.encoder
    for precision in ("fp32", "fp16"):
        files = find_model_files(ncnn_copy, precision)
        assert files.encoder.name == f"{ENCODER}.param"
        assert files.precision == precision
    assert asrserve.load_model(ncnn_copy, precision="fp32").model.encoder.fp16 is False
    assert asrserve.load_model(ncnn_copy, precision="fp16").model.joiner.fp16 is True


def test_missing_bin(ncnn_copy: Path) -> None:
    (ncnn_copy / f"{JOINER}.bin").unlink()
    with pytest.raises(ModelLoadError, match=rf"{JOINER}\.bin: model file not found"):
        asrserve.load_model(ncnn_copy)


def test_truncated_bin(ncnn_copy: Path) -> None:
    enc = ncnn_copy / f"{ENCODER}.bin"
    enc.write_bytes(enc.read_bytes()[: enc.stat().st_size // 2])
    with pytest.raises(ModelLoadError, match=rf"{ENCODER}\.bin: .*truncated"):
        asrserve.load_model(ncnn_copy)


def test_truncated_param(ncnn_copy: Path) -> None:
    enc = ncnn_copy / f"{ENCODER}.param"
    enc.write_text("\n".join(enc.read_text().splitlines()[:40]))
    with pytest.raises(ModelLoadError, match=r"header says 96 layers, found 38"):
        asrserve.load_model(ncnn_copy)


def test_no_metadata_says_how_to_add_it(ncnn_copy: Path) -> None:
    enc = ncnn_copy / f"{ENCODER}.param"
    lines = enc.read_text().splitlines()
    enc.write_text("\n".join([lines[0], "95 124", *lines[3:]]) + "\n")
    with pytest.raises(ModelLoadError, match=r"no SherpaMetaData.*asrserve ncnn-meta"):
        asrserve.load_model(ncnn_copy)


def test_unknown_model_type(ncnn_copy: Path) -> None:
    _edit_param(ncnn_copy / f"{ENCODER}.param", "0 0 0=3 ", "0 0 0=9 ")
    with pytest.raises(ModelLoadError, match=r"model type 9 \(known: .*3 \(ncnn-lstm\)"):
        asrserve.load_model(ncnn_copy)


def test_bad_lstm_metadata(ncnn_copy: Path) -> None:
    _edit_param(ncnn_copy / f"{ENCODER}.param", " 3=384", " 3=0")
    with pytest.raises(ModelLoadError, match="implausible LSTM metadata"):
        asrserve.load_model(ncnn_copy)


def test_unknown_layer_is_named(ncnn_copy: Path) -> None:
    _edit_param(ncnn_copy / f"{DECODER}.param", "Embed ", "FancyEmbed ")
    with pytest.raises(ModelLoadError, match=rf"{DECODER}\.param: .*does not know: FancyEmbed"):
        asrserve.load_model(ncnn_copy)


def test_foreign_joiner(ncnn_copy: Path) -> None:
    for ext in ("param", "bin"):
        shutil.copy(ncnn_copy / f"{DECODER}.{ext}", ncnn_copy / f"{JOINER}.{ext}")
    with pytest.raises(ModelLoadError, match=r"joiner.*expected inputs \['in0', 'in1'\]"):
        asrserve.load_model(ncnn_copy)


def test_gpu_provider_refused(tiny_lstm_ncnn_dir: Path) -> None:
    with pytest.raises(asrserve.ConfigError, match="ncnn models run on the CPU"):
        asrserve.load_model(tiny_lstm_ncnn_dir, provider="cuda")


def test_cli_transcribe_ncnn_dir(
    tiny_lstm_ncnn_dir: Path, tiny_wavs: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    want = asrserve.load_model(tiny_lstm_ncnn_dir).transcribe(tiny_wavs[0]).text
    assert want
    assert main(["transcribe", "--model", str(tiny_lstm_ncnn_dir), str(tiny_wavs[0])]) == 0
    assert capsys.readouterr().out == want + "\n"


def test_serve_ncnn_model(tiny_lstm_ncnn_dir: Path, tiny_wavs: list[Path]) -> None:
    """The WebSocket server batches concurrent ncnn streams; finals equal offline results."""
    from tests.server.test_app import AsrServer, asrserve_session, finals, serve

    rec = asrserve.load_model(tiny_lstm_ncnn_dir)
    wavs = tiny_wavs[:4]
    offline = [rec.transcribe(w) for w in wavs]

    async def body(_: AsrServer, url: str) -> None:
        sessions = await asyncio.gather(*(asrserve_session(url, w) for w in wavs))
        for msgs, want in zip(sessions, offline, strict=True):
            (final,) = finals(msgs)
            assert (final["tokens"], final["timestamps"]) == (want.tokens, want.timestamps)

    serve(rec, body, max_wait_ms=5)
