"""The transcribe and models subcommands, called in-process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from asrserve.cli import main
from tests.conftest import BUILTIN

WAVS = sorted((BUILTIN / "test_wavs").glob("*.wav"))


def test_json_one_object_per_input_in_order(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"not audio")
    files = [str(WAVS[1]), str(bad), str(WAVS[0])]
    rc = main(["transcribe", "--format", "json", *files])
    out, err = capsys.readouterr()
    assert rc == 1
    assert "broken.wav" in err
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["file"] for r in rows] == [files[0], files[2]]
    for r in rows:
        assert set(r) == {"file", "text", "tokens", "timestamps", "duration"}
        assert r["text"]
        assert len(r["tokens"]) == len(r["timestamps"])
        assert r["timestamps"] == sorted(r["timestamps"])
        assert 0 < r["timestamps"][-1] <= r["duration"]


def test_text_matches_python_api(capsys: pytest.CaptureFixture[str]) -> None:
    import asrserve

    want = asrserve.load_model().transcribe(WAVS[0]).text
    assert main(["transcribe", str(WAVS[0])]) == 0
    assert capsys.readouterr().out == want + "\n"


@pytest.mark.parametrize("fmt", ["srt", "vtt"])
def test_subtitles_to_output_dir(tmp_path: Path, fmt: str) -> None:
    assert main(["transcribe", "--format", fmt, "--output-dir", str(tmp_path), str(WAVS[0])]) == 0
    text = (tmp_path / f"{WAVS[0].stem}.{fmt}").read_text()
    if fmt == "vtt":
        assert text.startswith("WEBVTT\n\n00:00:00.")
    else:
        assert text.startswith("1\n00:00:00,")
    assert "-->" in text


def test_beam_with_hotword_runs(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["transcribe", "--decoding", "beam", "--hotword", "SHELL :2.0", str(WAVS[0])])
    assert rc == 0
    assert "SHELL" in capsys.readouterr().out


def test_bad_model_dir_is_a_clear_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["transcribe", "--model", str(tmp_path), str(WAVS[0])]) == 2
    assert "tokens.txt not found" in capsys.readouterr().err


def test_unknown_option_exits_2() -> None:
    with pytest.raises(SystemExit) as exc:
        main(["transcribe", "--no-such-option", str(WAVS[0])])
    assert exc.value.code == 2


def test_models_list(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    assert "sherpa-onnx-streaming-zipformer-en-2023-06-26" in out
    assert "asrserve-tiny-lstm-synth-en" in out


def test_output_dir_refuses_inputs_sharing_a_stem(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Two inputs that would write the same ``<stem>.<ext>`` are refused up
    front, before anything is transcribed: no result is overwritten."""
    import shutil

    import soundfile as sf

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first, second = tmp_path / "a" / "jfk.wav", tmp_path / "b" / "jfk.flac"
    shutil.copy(WAVS[0], first)
    x, sr = sf.read(str(WAVS[1]), dtype="float32")
    sf.write(str(second), x, sr)
    out_dir = tmp_path / "out"
    rc = main(["transcribe", "--output-dir", str(out_dir), str(first), str(second)])
    out, err = capsys.readouterr()
    assert rc == 2
    assert out == ""
    (line,) = err.strip().splitlines()
    assert str(first) in line
    assert str(second) in line
    assert "jfk.txt" in line
    assert not out_dir.exists() or not list(out_dir.iterdir())
    # the same file twice is one result, not a clash
    assert main(["transcribe", "--output-dir", str(out_dir), str(first), str(first)]) == 0
    assert [p.name for p in out_dir.iterdir()] == ["jfk.txt"]

