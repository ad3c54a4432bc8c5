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
        assert set(r) == {"file", "text", "tokens", "timestamps", "duration", "segments"}
        (seg,) = r["segments"]  # endpointing is off by default: one segment
        assert (seg["text"], seg["tokens"], seg["timestamps"]) == (
            r["text"],
            r["tokens"],
            r["timestamps"],
        )
        assert 0 <= seg["start"] < seg["end"] <= r["duration"]
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


def test_version_and_module_entry(capsys: pytest.CaptureFixture[str]) -> None:
    import subprocess
    import sys

    import asrserve

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"asrserve {asrserve.__version__}"
    proc = subprocess.run(
        [sys.executable, "-m", "asrserve", "--version"], capture_output=True, text=True, check=True
    )
    assert proc.stdout.strip() == f"asrserve {asrserve.__version__}"


def test_demo_model_says_so_once(capsys: pytest.CaptureFixture[str], tiny_lstm_dir: Path) -> None:
    assert main(["transcribe", str(WAVS[0])]) == 0
    err = capsys.readouterr().err
    assert err.count("synthetic speech") == 1
    assert "asrserve models pull" in err
    assert main(["transcribe", "--model", str(BUILTIN), str(WAVS[0])]) == 0
    assert "synthetic speech" in capsys.readouterr().err
    # any other model: no notice
    assert main(["transcribe", "--model", str(tiny_lstm_dir), str(WAVS[0])]) == 0
    assert "synthetic speech" not in capsys.readouterr().err


def test_reference_shows_each_reference_and_the_wer(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    import asrserve
    from asrserve.scoring import word_errors

    trans = tmp_path / "trans.txt"
    trans.write_text(f"{WAVS[0].stem} EXIT THE POSTGRES SHELL\n# comment\n\n")
    hyp = asrserve.load_model().transcribe(WAVS[0]).text
    errors, words = word_errors("EXIT THE POSTGRES SHELL", hyp)
    # the demo model is dynamic int8: beside another file, a file's transcript equals
    # the Python API's (decoded alone) only with isolated batches
    files = [str(WAVS[0]), str(WAVS[1])]
    assert main(["transcribe", "--isolate-batches", "--reference", str(trans), *files]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"{WAVS[0]}\t{hyp}"
    assert lines[1] == "    reference: EXIT THE POSTGRES SHELL"
    assert lines[2].startswith(f"{WAVS[1]}\t")  # no reference for this one: none shown
    assert lines[3] == (
        f"WER {100.0 * errors / words:.1f} % ({errors} errors in {words} words, "
        "1 of 2 files had a reference)"
    )
    assert main(["transcribe", "--format", "json", "--reference", str(trans), str(WAVS[0])]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["reference"] == "EXIT THE POSTGRES SHELL"
    assert "WER " in err


def test_a_truncated_wav_is_transcribed_with_a_warning(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A WAV cut inside its data decodes as a shorter file: the transcript is
    printed, and stderr names the file and the seconds missing."""
    import asrserve

    raw = WAVS[0].read_bytes()
    cut = tmp_path / "cut.wav"
    cut.write_bytes(raw[: len(raw) - 16000])  # 0.5 s of 16 kHz PCM16
    assert main(["transcribe", str(cut)]) == 0
    out, err = capsys.readouterr()
    assert out == asrserve.load_model().transcribe(cut).text + "\n"
    (line,) = [ln for ln in err.splitlines() if "warning" in ln]
    assert line.startswith(f"asrserve: warning: {cut}: truncated")
    assert "0.500 s" in line
    assert main(["transcribe", str(WAVS[0])]) == 0
    assert "warning" not in capsys.readouterr().err
