"""``asrserve ncnn-meta``: the SherpaMetaData line round-trips and is validated."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import asrserve
from asrserve.backends.ncnn import parse_layer_params
from asrserve.cli import main
from asrserve.errors import ConfigError, ModelLoadError
from asrserve.ncnn_meta import meta_line
from tests.conftest import read_wav
from tests.reference import asrserve_decode

ENCODER = "encoder_jit_trace-pnnx.ncnn.param"
LSTM_ARGS = ["--model-type", "lstm", "--num-layers", "4", "--d-model", "192"]
LSTM_ARGS += ["--rnn-hidden-size", "384"]
ZIPFORMER = {
    "decode-chunk-len": 32,
    "num-left-chunks": 4,
    "pad": 7,
    "num-encoder-layers": [2, 4, 3, 2, 4],
    "encoder-dims": [384] * 5,
    "attention-dims": [192] * 5,
    "zipformer-downsampling-factors": [1, 2, 4, 8, 2],
    "cnn-module-kernels": [31] * 5,
}


def _strip_meta(param: Path) -> None:
    lines = param.read_text().splitlines()
    assert lines[2].startswith("SherpaMetaData")
    n_layers, n_blobs = lines[1].split()
    param.write_text("\n".join([lines[0], f"{int(n_layers) - 1} {n_blobs}", *lines[3:]]) + "\n")


def test_round_trip_restores_the_model(
    tiny_lstm_ncnn_dir: Path, tiny_wavs: list[Path], tmp_path: Path
) -> None:
    d = tmp_path / "m"
    shutil.copytree(tiny_lstm_ncnn_dir, d)
    param = d / ENCODER
    original = param.read_text()
    _strip_meta(param)
    with pytest.raises(ModelLoadError, match="ncnn-meta"):
        asrserve.load_model(d)
    assert main(["ncnn-meta", str(param), *LSTM_ARGS]) == 0
    assert param.read_text() == original
    assert main(["ncnn-meta", str(param), *LSTM_ARGS]) == 0  # replaces, never duplicates
    assert param.read_text() == original
    ours, ref = asrserve.load_model(d), asrserve.load_model(tiny_lstm_ncnn_dir)
    for wav in tiny_wavs[:3]:
        x, sr = read_wav(wav)
        assert asrserve_decode(ours, x, sr, 1600) == asrserve_decode(ref, x, sr, 1600)


def test_output_elsewhere_and_replacing_another_family(
    tiny_lstm_ncnn_dir: Path, tmp_path: Path
) -> None:
    src, out = tiny_lstm_ncnn_dir / ENCODER, tmp_path / "enc.param"
    args = [
        f"--{k}={','.join(map(str, v)) if isinstance(v, list) else v}" for k, v in ZIPFORMER.items()
    ]
    assert (
        main(["ncnn-meta", str(src), "--model-type", "zipformer", *args, "--output", str(out)]) == 0
    )
    lines = out.read_text().splitlines()
    assert lines[1] == src.read_text().splitlines()[1]  # one metadata layer replaced by another
    assert sum(line.startswith("SherpaMetaData") for line in lines) == 1
    assert lines[2].split()[4:] == [
        "0=2", "1=32", "2=4", "3=7", "15=1", "-23316=5,2,4,3,2,4", "-23317=5,384,384,384,384,384",
        "-23318=5,192,192,192,192,192", "-23319=5,1,2,4,8,2", "-23320=5,31,31,31,31,31",
    ]  # fmt: skip
    meta = parse_layer_params(lines[2].split()[4:])
    assert meta["0"] == "2"
    assert meta["16"] == "2,4,3,2,4"


def test_conv_emformer_keys() -> None:
    names = ["num-layers", "memory-size", "cnn-module-kernel", "left-context-length"]
    names += ["chunk-length", "right-context-length", "d-model"]
    line = meta_line("conv-emformer", dict(zip(names, [12, 32, 31, 32, 32, 8, 512], strict=True)))
    assert line.split()[4:] == ["0=1", "1=12", "2=32", "3=31", "4=32", "5=32", "6=8", "7=512"]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"num-layers": 4, "d-model": 192}, "needs --rnn-hidden-size"),
        (
            {"num-layers": 4, "d-model": 192, "rnn-hidden-size": 384, "pad": 7},
            "--pad does not apply",
        ),
        ({"num-layers": 4, "d-model": 0, "rnn-hidden-size": 384}, "positive integer"),
    ],
)
def test_lstm_validation(values: dict[str, int], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        meta_line("lstm", values)


def test_per_stack_lists_must_agree() -> None:
    with pytest.raises(ConfigError, match="differ in length"):
        meta_line("zipformer", {**ZIPFORMER, "encoder-dims": [384] * 4})


def test_cli_errors_leave_the_file_alone(
    tiny_lstm_ncnn_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    param = tmp_path / ENCODER
    shutil.copy(tiny_lstm_ncnn_dir / ENCODER, param)
    before = param.read_text()
    assert main(["ncnn-meta", str(param), "--model-type", "lstm", "--num-layers", "4"]) == 2
    assert "needs --d-model, --rnn-hidden-size" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["ncnn-meta", str(param), *LSTM_ARGS[:-1], "-3"])
    junk = tmp_path / "junk.param"
    junk.write_text("hello\n")
    assert main(["ncnn-meta", str(junk), *LSTM_ARGS]) == 2
    assert "not an ncnn .param file" in capsys.readouterr().err
    assert param.read_text() == before
    assert junk.read_text() == "hello\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == [ENCODER, "junk.param"]  # no temp files
