"""Whisper's load options ``language`` and ``task``: from the Python API, the
CLI (transcribe, bulk's worker spec) to the recognizer; refused by English-only
models where they cannot apply, and by every other family."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

import asrserve
from asrserve.bulk.worker import ModelSpec
from asrserve.cli import main
from asrserve.errors import ConfigError
from asrserve.families.whisper import WhisperRecognizer
from tests.conftest import BUILTIN, SHARED_MODELS
from tests.whisper_models import Clip

SILERO = SHARED_MODELS / "silero-vad" / "silero_vad.onnx"
WAV = next(iter(sorted((BUILTIN / "test_wavs").glob("*.wav"))))


def words(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9' ]", " ", text.lower().replace("-", " ")).split())


@pytest.fixture
def vad_env(monkeypatch: pytest.MonkeyPatch) -> None:
    if not SILERO.is_file():
        pytest.skip(f"shared Silero VAD not found at {SILERO}")
    monkeypatch.setenv("ASRSERVE_VAD_MODEL", str(SILERO))


def test_language_and_task_reach_the_recognizer(whisper_tiny_en: Path, vad_env: None) -> None:
    rec = asrserve.load_model(whisper_tiny_en, language="en", task="transcribe")
    assert isinstance(rec, WhisperRecognizer)
    assert (rec.language, rec.task) == ("en", "transcribe")
    default = asrserve.load_model(whisper_tiny_en)
    assert isinstance(default, WhisperRecognizer)
    assert (default.language, default.task) == ("", "transcribe")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"language": "de"}, "language 'de': this Whisper model is English-only"),
        ({"task": "translate"}, "task 'translate': this Whisper model is English-only"),
        ({"task": "summarize"}, "task must be one of transcribe, translate"),
    ],
)
def test_english_only_model_refuses(
    whisper_tiny_en: Path, vad_env: None, options: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        asrserve.load_model(whisper_tiny_en, **options)  # type: ignore[arg-type]


@pytest.mark.parametrize("option", ["language", "task", "timestamps"])
def test_other_families_refuse_them(option: str) -> None:
    value = {"language": "en", "task": "transcribe", "timestamps": True}[option]
    with pytest.raises(ConfigError, match=rf"{option} \(--{option}\): only Whisper models"):
        asrserve.load_model(BUILTIN, **{option: value})  # type: ignore[arg-type]


def test_cli_refuses_them_for_a_transducer(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["transcribe", "--model", str(BUILTIN), "--language", "en", str(WAV)]) == 2
    err = capsys.readouterr().err
    assert "language (--language): only Whisper models take this" in err
    assert "a transducer model" in err


def test_cli_passes_them_to_whisper(
    whisper_tiny_en: Path,
    jfk_clip: Clip,
    vad_env: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = ["transcribe", "--model", str(whisper_tiny_en), str(jfk_clip.path)]
    assert main([*args, "--language", "en", "--task", "transcribe"]) == 0
    assert words(capsys.readouterr().out).endswith(words(jfk_clip.text))
    assert main([*args, "--task", "translate"]) == 2
    assert "English-only" in capsys.readouterr().err


def test_bulk_worker_spec_carries_them(whisper_tiny_en: Path, vad_env: None) -> None:
    rec = ModelSpec(model=str(whisper_tiny_en), language="en").load()
    assert isinstance(rec, WhisperRecognizer)
    assert rec.language == "en"
    with pytest.raises(ConfigError, match="only Whisper models"):
        ModelSpec(model=str(BUILTIN), task="translate").load()


def test_multilingual_language_and_translate_set_the_prompt(
    whisper_base: Path, vad_env: None
) -> None:
    """base (opt-in): the prompt is [sot, <|de|>, <|translate|>, no_timestamps]."""
    rec = asrserve.load_model(whisper_base, language="de", task="translate")
    assert isinstance(rec, WhisperRecognizer)
    meta = rec.model.meta
    cross = rec.model.encode(rec.model.features(np.zeros(16000, np.float32))[0])
    assert rec.model.prompt(cross, rec.language, rec.task) == [
        meta.sot,
        meta.languages["de"],
        meta.translate,
        meta.no_timestamps,
    ]
    with pytest.raises(ConfigError, match="unknown language 'xx'"):
        asrserve.load_model(whisper_base, language="xx")


def test_per_stream_language_reaches_the_model(
    whisper_tiny_en: Path, jfk_clip: Clip, vad_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stream's ``DecodingConfig.language`` (the OpenAI ``language`` field,
    the asrserve dialect's ``decoding.language``) is the one the model is
    prompted with; one the model lacks is refused when the stream is made."""
    from dataclasses import replace

    import soundfile as sf

    rec = asrserve.load_model(whisper_tiny_en)
    assert isinstance(rec, WhisperRecognizer)
    asked: list[str] = []
    decode = rec.model.decode

    def spy(
        samples: np.ndarray, language: str = "", task: str = "transcribe", timestamps: bool = False
    ) -> list[int]:
        asked.append(language)
        return decode(samples, language, task, timestamps)

    monkeypatch.setattr(rec.model, "decode", spy)
    x, rate = sf.read(str(jfk_clip.path), dtype="float32")
    stream = rec.create_stream(decoding=replace(rec.decoding, language="en"))
    stream.accept_waveform(rate, x)
    stream.input_finished()
    while rec.is_ready(stream):
        rec.decode_stream(stream)
    assert asked, "the model was never asked"
    assert set(asked) == {"en"}, asked
    assert words(rec.get_result(stream).text).endswith(words(jfk_clip.text))
    with pytest.raises(ConfigError, match="language 'de': this Whisper model is English-only"):
        rec.create_stream(decoding=replace(rec.decoding, language="de"))
