"""``asrserve transcribe`` decodes its files as one rolling batch (``--batch``)
and prints what it printed one file at a time: every format, in the files'
order, unreadable files reported in their place."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import asrserve
from asrserve.audio import load_audio
from asrserve.cli import _render, main
from asrserve.config import EndpointConfig
from tests.conftest import read_wav


@pytest.fixture(scope="module")
def files(tiny_wavs: list[Path], tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Short clips, a long one (clips with pauses), a broken file, an 8 kHz
    wav and a 44.1 kHz stereo flac (resampled by the streams, block by block)."""
    d = tmp_path_factory.mktemp("cli-rolling")
    clips = [read_wav(w)[0] for w in tiny_wavs[:6]]
    long = np.concatenate([x for c in clips[3:6] for x in (c, np.zeros(24000, np.float32))])
    sf.write(d / "long.wav", long, 16000, subtype="PCM_16")
    (d / "broken.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt garbage" + bytes(64))
    import soxr

    sf.write(d / "narrow.wav", soxr.resample(clips[1], 16000, 8000), 8000, subtype="PCM_16")
    wide = soxr.resample(clips[2], 16000, 44100)
    sf.write(d / "wide.flac", np.stack([wide, 0.5 * wide], axis=1), 44100)
    return [
        str(tiny_wavs[0]),
        str(d / "long.wav"),
        str(d / "broken.wav"),
        str(d / "narrow.wav"),
        str(tiny_wavs[1]),
        str(d / "wide.flac"),
    ]


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    rc = main(["transcribe", "--no-progress", *args])
    out, err = capsys.readouterr()
    return rc, out, err


def test_json_equals_each_file_alone(
    tiny_lstm_dir: Path, files: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    model = ["--model", str(tiny_lstm_dir), "--precision", "fp32", "--endpointing"]
    rc, out, err = run(capsys, *model, "--format", "json", "--batch", "3", *files)
    assert rc == 1
    assert err.count("asrserve: error:") == 1
    assert f"{files[2]}: cannot decode audio" in err
    rec = asrserve.load_model(tiny_lstm_dir, precision="fp32", endpoint=EndpointConfig(True))
    want = ""
    for f in files[:2] + files[3:]:  # as the command did before: each file whole, alone
        x = load_audio(f, 16000)
        want += _render("json", f, list(rec.transcribe_segments(x, 16000)), x.size / 16000)
    assert out == want
    rows = [json.loads(line) for line in out.splitlines()]
    assert len(rows[1]["segments"]) == 3  # the long file, at its pauses


def test_text_srt_and_references_as_one_by_one(
    tiny_lstm_dir: Path, files: list[str], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    trans = tmp_path / "trans.txt"
    trans.write_text("".join(f"{Path(f).stem} SOME WORDS\n" for f in files))
    model = ["--model", str(tiny_lstm_dir), "--precision", "fp32", "--reference", str(trans)]
    one = run(capsys, *model, "--batch", "1", *files)
    many = run(capsys, *model, *files)
    assert one == many
    assert many[0] == 1
    assert many[1].count("reference: SOME WORDS") == 5
    assert "WER " in many[1].splitlines()[-1]
    few = files[:3]
    for batch in ("1", "4"):
        out_dir = tmp_path / batch
        args = ["--model", str(tiny_lstm_dir), "--precision", "fp32", "--format", "srt"]
        args += ["--output-dir", str(out_dir)]
        assert run(capsys, *args, "--endpointing", "--batch", batch, *few)[0] == 1
    for f in few[:2]:
        name = f"{Path(f).stem}.srt"
        assert (tmp_path / "4" / name).read_text() == (tmp_path / "1" / name).read_text()
    assert (tmp_path / "4" / "long.srt").read_text().count(" --> ") >= 3


def test_isolate_batches_with_dynamic_int8(
    tiny_lstm_dir: Path, files: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    ok = [f for f in files if "broken" not in f]
    model = ["--model", str(tiny_lstm_dir), "--precision", "int8", "--format", "json"]
    one = run(capsys, *model, "--batch", "1", *ok)
    isolated = run(capsys, *model, "--isolate-batches", *ok)
    assert one[0] == isolated[0] == 0

    def rows(out: str) -> list[tuple[str, list[str], list[float]]]:
        return [
            (r["text"], r["tokens"], r["timestamps"]) for r in map(json.loads, out.splitlines())
        ]

    assert rows(isolated[1]) == rows(one[1])


def test_batch_must_be_positive(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["transcribe", "--batch", "0", "x.wav"])
    assert exc.value.code == 2
    assert "--batch: must be >= 1" in capsys.readouterr().err
