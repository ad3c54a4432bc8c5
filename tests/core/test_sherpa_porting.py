"""Code ported from sherpa-onnx's Python API behaves as it did there.

- ``create_stream(hotwords="A/B")``: sherpa-onnx's string of phrases, never
  read letter by letter;
- ``decode_stream`` decodes one chunk, so sherpa's loop
  ``while rec.is_ready(s): rec.decode_stream(s)`` with an endpoint check after
  each call finds the endpoints the core finds (before, it decoded every ready
  chunk and the loop saw the first endpoint of a 3 s piece at its end);
- ``str(rec.get_result(s))`` is the text;
- ``asrserve.OnlineRecognizer.from_transducer`` runs a sherpa-onnx example
  unchanged, with sherpa-onnx's text.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

import asrserve
from asrserve.config import EndpointConfig
from asrserve.decoding.hotwords import hotword_phrases
from asrserve.errors import ConfigError
from tests.conftest import BUILTIN, read_wav
from tests.reference import TAIL_PADDING_S, asrserve_decode

RATE = 16000
ENDPOINTING = EndpointConfig(enabled=True)  # sherpa-onnx's default rules
HOTWORDS = ["POSTGRES", "GIORGIO ARMANI", "SIMPLE AS HE PAINTS :3.0"]


def two_utterances(model_dir: Path) -> npt.NDArray[np.float32]:
    """synth-0000 + 1.3 s of silence + synth-0100 (as tests/core/test_segments.py)."""
    a, sr = read_wav(model_dir / "test_wavs" / "synth-0000.wav")
    b, _ = read_wav(model_dir / "test_wavs" / "synth-0100.wav")
    assert sr == RATE
    return np.concatenate([a, np.zeros(int(1.3 * RATE), np.float32), b])


# --- hotwords ---------------------------------------------------------------------
def test_hotword_string_is_split_into_phrases() -> None:
    assert hotword_phrases("MY OWN BEGINNING") == ["MY OWN BEGINNING"]
    assert hotword_phrases(" A B / C\n\nD :2.0\r\n/") == ["A B", "C", "D :2.0"]
    assert hotword_phrases("") == []
    assert hotword_phrases(("A B", "C")) == ["A B", "C"]


@pytest.mark.parametrize("bad", [b"A/B", bytearray(b"A"), ["A", b"B"], ["A", 3], 5, {"A"}])
def test_other_hotword_forms_are_refused(bad: Any) -> None:
    with pytest.raises(ConfigError, match="hotwords"):
        hotword_phrases(bad)
    rec = asrserve.load_model(BUILTIN, decoding=asrserve.DecodingConfig(method="modified_beam"))
    with pytest.raises(ConfigError, match="hotwords"):
        rec.create_stream(hotwords=bad)


def test_hotword_string_decodes_as_the_list(tiny_lstm_dir: Path) -> None:
    rec = asrserve.load_model(
        tiny_lstm_dir,
        precision="fp32",
        decoding=asrserve.DecodingConfig(method="modified_beam"),
        tail_padding_s=TAIL_PADDING_S,
    )
    as_string = "POSTGRES/ GIORGIO ARMANI\nSIMPLE AS HE PAINTS :3.0\n"
    pieces = rec.check_hotwords(HOTWORDS, 1.5)
    assert rec.check_hotwords(as_string, 1.5) == pieces
    # what reading the string letter by letter would have built: not the same
    try:
        letters = rec.check_hotwords(list(as_string), 1.5)
    except ConfigError:
        letters = -1
    assert letters != pieces
    changed = 0
    for name in ("synth-0000", "synth-0100", "synth-0160", "synth-0001", "synth-0101"):
        x, sr = read_wav(tiny_lstm_dir / "test_wavs" / f"{name}.wav")
        got = asrserve_decode(rec, x, sr, 1600, hotwords=as_string)  # type: ignore[arg-type]
        assert got == asrserve_decode(rec, x, sr, 1600, hotwords=HOTWORDS), name
        changed += got[0] != asrserve_decode(rec, x, sr, 1600)[0]
    assert changed >= 1  # the phrases boosted something


# --- decode_stream: one chunk per call ----------------------------------------------
def sherpa_loop(rec: Any, samples: npt.NDArray[np.float32], piece: int, tail: float) -> list[Any]:
    """sherpa-onnx's endpoint example: decode while ready, check for an endpoint
    after every decode_stream, keep each non-empty result (``get_result_all``
    on sherpa-onnx and the compatibility layer, ``get_result`` on a Recognizer)."""
    result = getattr(rec, "get_result_all", rec.get_result)
    s = rec.create_stream()
    out = []

    def decode() -> None:
        while rec.is_ready(s):
            rec.decode_stream(s)
            if rec.is_endpoint(s):
                r = result(s)
                if r.text.strip():
                    out.append(r)
                rec.reset(s)

    for i in range(0, samples.size, piece):
        s.accept_waveform(RATE, samples[i : i + piece])
        decode()
    if tail:
        s.accept_waveform(RATE, np.zeros(int(tail * RATE), np.float32))
    s.input_finished()
    decode()
    r = result(s)
    if r.text.strip():
        out.append(r)
    return out


def rows(results: list[Any]) -> list[tuple[str, float]]:
    return [(r.text.strip(), round(float(r.start_time), 3)) for r in results]


def test_decode_stream_decodes_one_chunk() -> None:
    rec = asrserve.load_model(BUILTIN)
    s = rec.create_stream()
    s.accept_waveform(RATE, np.zeros(3 * RATE, np.float32))
    done = s.num_processed_frames
    rec.decode_stream(s)
    assert s.num_processed_frames - done == rec.model.chunk_shift
    assert rec.is_ready(s)


@pytest.mark.parametrize("piece_s", [0.1, 1.0, 3.0, 100.0])
def test_sherpa_loop_gives_the_core_segments(piece_s: float) -> None:
    rec = asrserve.load_model(BUILTIN, endpoint=ENDPOINTING)
    audio = two_utterances(BUILTIN)
    want = [(seg.text, seg.start) for seg in rec.transcribe_segments(audio, RATE)]
    assert len(want) == 2, want
    assert want[1][1] > 0
    assert rows(sherpa_loop(rec, audio, int(piece_s * RATE), 0.0)) == want


def _sherpa(model_dir: Path, **kwargs: Any) -> Any:
    sherpa_onnx = pytest.importorskip("sherpa_onnx")
    return sherpa_onnx.OnlineRecognizer.from_transducer(
        tokens=str(model_dir / "tokens.txt"),
        encoder=str(model_dir / "encoder.onnx"),
        decoder=str(model_dir / "decoder.onnx"),
        joiner=str(model_dir / "joiner.onnx"),
        num_threads=1,
        **kwargs,
    )


def _ours(model_dir: Path, **kwargs: Any) -> asrserve.OnlineRecognizer:
    return asrserve.OnlineRecognizer.from_transducer(
        tokens=str(model_dir / "tokens.txt"),
        encoder=str(model_dir / "encoder.onnx"),
        decoder=str(model_dir / "decoder.onnx"),
        joiner=str(model_dir / "joiner.onnx"),
        num_threads=1,
        **kwargs,
    )


@pytest.mark.parametrize("piece_s", [0.1, 3.0])
def test_sherpa_loop_gives_sherpa_onnx_segments(tiny_lstm_dir: Path, piece_s: float) -> None:
    audio = two_utterances(tiny_lstm_dir)
    ref = _sherpa(tiny_lstm_dir, enable_endpoint_detection=True)
    want = rows(sherpa_loop(ref, audio, int(piece_s * RATE), TAIL_PADDING_S))
    assert len(want) == 2, want
    rec = asrserve.load_model(
        tiny_lstm_dir, precision="fp32", endpoint=ENDPOINTING, tail_padding_s=TAIL_PADDING_S
    )
    assert rows(sherpa_loop(rec, audio, int(piece_s * RATE), 0.0)) == want
    segs = rec.transcribe_segments(audio, RATE, chunk_seconds=piece_s)
    assert [(seg.text, seg.start) for seg in segs] == want
    ours = _ours(tiny_lstm_dir, enable_endpoint_detection=True)
    assert rows(sherpa_loop(ours, audio, int(piece_s * RATE), TAIL_PADDING_S)) == want


# --- get_result ---------------------------------------------------------------------
def test_result_prints_as_its_text() -> None:
    rec = asrserve.load_model(BUILTIN)
    r = rec.transcribe(BUILTIN / "test_wavs" / "synth-0000.wav")
    assert r.text
    assert str(r) == r.text
    assert f"{r}" == r.text


# --- OnlineRecognizer.from_transducer ------------------------------------------------
def sherpa_example(recognizer: Any, wavs: list[Path]) -> list[str]:
    """sherpa-onnx's decode-files example: streams decoded together while any is
    ready, each with 0.66 s of tail padding; the text of each."""
    streams = []
    for wav in wavs:
        samples, sample_rate = read_wav(wav)
        s = recognizer.create_stream()
        s.accept_waveform(sample_rate, samples)
        s.accept_waveform(sample_rate, np.zeros(int(0.66 * sample_rate), dtype=np.float32))
        s.input_finished()
        streams.append(s)
    while True:
        ready = [s for s in streams if recognizer.is_ready(s)]
        if not ready:
            break
        recognizer.decode_streams(ready)
    return [recognizer.get_result(s) for s in streams]


@pytest.mark.parametrize("method", ["greedy_search", "modified_beam_search"])
def test_sherpa_example_runs_unchanged(
    tiny_lstm_dir: Path, tiny_wavs: list[Path], method: str
) -> None:
    wavs = tiny_wavs[:8]
    want = sherpa_example(_sherpa(tiny_lstm_dir, decoding_method=method), wavs)
    assert all(want), want
    got = sherpa_example(_ours(tiny_lstm_dir, decoding_method=method), wavs)
    assert all(isinstance(t, str) for t in got)
    assert got == want


def test_from_transducer_names_what_it_does_not_support(tiny_lstm_dir: Path) -> None:
    with pytest.raises(ConfigError, match="does not support: dither, lm"):
        _ours(tiny_lstm_dir, lm="lm.onnx", dither=1.0, low_freq=20.0)
    _ours(tiny_lstm_dir, low_freq=20.0, dither=0.0)  # sherpa-onnx's defaults: accepted
    with pytest.raises(ConfigError, match="decoding_method"):
        _ours(tiny_lstm_dir, decoding_method="beam")
    with pytest.raises(asrserve.ModelLoadError, match="model_type"):
        _ours(tiny_lstm_dir, model_type="zipformer2")
    with pytest.raises(asrserve.ModelLoadError, match="encoder file not found"):
        asrserve.OnlineRecognizer.from_transducer(
            tokens=str(tiny_lstm_dir / "tokens.txt"),
            encoder="missing.onnx",
            decoder=str(tiny_lstm_dir / "decoder.onnx"),
            joiner=str(tiny_lstm_dir / "joiner.onnx"),
        )


def test_hotwords_file_and_stream_hotwords(tiny_lstm_dir: Path, tmp_path: Path) -> None:
    """Without a BPE model, phrases are tokens.txt pieces (sherpa-onnx's
    ``modeling_unit`` other than bpe); a stream's phrases add to the file's."""
    pieces = [line.split()[0] for line in (tiny_lstm_dir / "tokens.txt").read_text().splitlines()]
    words = [p for p in pieces if p.startswith("\u2581") and len(p) > 2][:3]
    assert len(words) == 3
    f = tmp_path / "hotwords.txt"
    f.write_text(f"{words[0]}\n\n{words[1]} :2.0\n")
    ours = _ours(tiny_lstm_dir, decoding_method="modified_beam_search", hotwords_file=str(f))
    assert ours.recognizer.check_hotwords([words[0], f"{words[1]} :2.0"], 1.5) == 2
    ours.create_stream(words[2])
    with pytest.raises(ConfigError, match=r"not in tokens\.txt"):
        ours.create_stream("NOT_A_PIECE")
    with pytest.raises(ConfigError, match="hotwords_file"):
        _ours(tiny_lstm_dir, hotwords_file=str(f))
