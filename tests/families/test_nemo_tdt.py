"""Parakeet TDT (onnx-asr layout) with Silero VAD segmentation.

Parity: onnx-asr 0.12 loads the same fixture directory; a plain TDT loop
written here from the layout description; the fixture's ``nemo128.onnx``
against onnx-asr's NumPy preprocessor and asrserve's ``nemo_mel``.
End to end: long audio in bounded memory, the CLI, and the server on
loopback (one final per VAD segment).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
import pytest

import asrserve
from asrserve.backends.base import BackendOptions
from asrserve.config import EndpointConfig
from asrserve.errors import ConfigError, ModelLoadError
from asrserve.families import nemo_tdt
from asrserve.families.layouts import LoadOptions, find_layout
from asrserve.features.nemo_mel import NemoMelConfig, offline_features
from asrserve.vad import (
    CONTEXT,
    WINDOW,
    SileroVad,
    VadConfig,
    VoiceActivityDetector,
    speech_segments,
)
from tests.conftest import FIXTURE_MODELS, SHARED_MODELS, TINY_LSTM, read_wav

MODEL = FIXTURE_MODELS / "parakeet-tdt-tiny"
SILERO = SHARED_MODELS / "silero-vad" / "silero_vad.onnx"
JFK = SHARED_MODELS / "test-audio-jfk" / "jfk.wav"
WAVS = [*sorted((TINY_LSTM / "test_wavs").glob("*.wav"))[::3], JFK]
onnx_asr = pytest.importorskip("onnx_asr")

pytestmark = pytest.mark.skipif(
    not SILERO.is_file() or not JFK.is_file(), reason="shared Silero VAD / test audio not found"
)


def load(precision: str = "fp32", **kw: Any) -> nemo_tdt.TdtRecognizer:
    vad = kw.pop("vad", VadConfig(model=str(SILERO)))
    opts = LoadOptions(BackendOptions(), precision, endpoint=kw.pop("endpoint", None))
    return nemo_tdt.load_recognizer(MODEL, opts, vad=vad, **kw)


@pytest.fixture(scope="module")
def rec() -> nemo_tdt.TdtRecognizer:
    return load()


@pytest.fixture(scope="module")
def audio() -> dict[Path, npt.NDArray[np.float32]]:
    out = {}
    for w in WAVS:
        x, sr = read_wav(w)
        assert sr == 16000
        out[w] = x
    return out


def onnx_asr_tokens(model: Any, x: npt.NDArray[np.float32]) -> tuple[list[str], list[float]]:
    r = model.with_timestamps().recognize(x)
    keep = [i for i, t in enumerate(r.tokens) if t != "<unk>"]
    return [r.tokens[i] for i in keep], [round(r.timestamps[i], 3) for i in keep]


# --- the fixture ----------------------------------------------------------------------
def test_fixture_files_follow_the_onnx_asr_layout() -> None:
    names = sorted(p.name for p in MODEL.iterdir())
    assert names == [
        "config.json",
        "decoder_joint-model.int8.onnx",
        "decoder_joint-model.onnx",
        "encoder-model.fp16.onnx",
        "encoder-model.int8.onnx",
        "encoder-model.onnx",
        "nemo128.onnx",
        "vocab.txt",
    ]
    assert all((MODEL / n).stat().st_size < 5_000_000 for n in names)
    cfg = json.loads((MODEL / "config.json").read_text())
    assert cfg["model_type"] == "nemo-conformer-tdt"
    assert cfg["features_size"] == 128

    def io(name: str) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        s = ort.InferenceSession(str(MODEL / name))
        return [(i.name, i.type) for i in s.get_inputs()], [
            (o.name, o.type) for o in s.get_outputs()
        ]

    f, i64, i32 = "tensor(float)", "tensor(int64)", "tensor(int32)"
    for enc in ("encoder-model.onnx", "encoder-model.int8.onnx", "encoder-model.fp16.onnx"):
        assert io(enc) == (
            [("audio_signal", f), ("length", i64)],
            [("outputs", f), ("encoded_lengths", i64)],
        )
    for dec in ("decoder_joint-model.onnx", "decoder_joint-model.int8.onnx"):
        assert io(dec) == (
            [
                ("encoder_outputs", f),
                ("targets", i32),
                ("target_length", i32),
                ("input_states_1", f),
                ("input_states_2", f),
            ],
            [
                ("outputs", f),
                ("prednet_lengths", i32),
                ("output_states_1", f),
                ("output_states_2", f),
            ],
        )
    assert io("nemo128.onnx") == (
        [("waveforms", f), ("waveforms_lens", i64)],
        [("features", f), ("features_lens", i64)],
    )


def test_found_by_load_model(monkeypatch: pytest.MonkeyPatch) -> None:
    assert find_layout(MODEL).load is nemo_tdt.load_recognizer
    monkeypatch.setenv("ASRSERVE_VAD_MODEL", str(SILERO))
    r = asrserve.load_model(MODEL)  # auto precision on CPU: int8
    assert isinstance(r, nemo_tdt.TdtRecognizer)
    assert Path(r.model.encoder.path).name == "encoder-model.int8.onnx"
    assert Path(r.model.decoder_joint.path).name == "decoder_joint-model.int8.onnx"
    fp16 = asrserve.load_model(MODEL, precision="fp16")
    assert Path(fp16.model.encoder.path).name == "encoder-model.fp16.onnx"  # type: ignore[attr-defined]
    assert Path(fp16.model.decoder_joint.path).name == "decoder_joint-model.onnx"  # type: ignore[attr-defined]


# --- features -------------------------------------------------------------------------
def test_preprocessor_matches_onnx_asr_and_nemo_mel(
    audio: dict[Path, npt.NDArray[np.float32]],
) -> None:
    from onnx_asr.preprocessors.numpy_preprocessor import NemoPreprocessorNumpy

    graph = ort.InferenceSession(str(MODEL / "nemo128.onnx"))
    ref = NemoPreprocessorNumpy("nemo128")
    cfg = NemoMelConfig(normalize="per_feature")
    worst_ref = worst_mel = 0.0
    for x in audio.values():
        a, alen = graph.run(None, {"waveforms": x[None], "waveforms_lens": np.array([x.size])})
        b, blen = ref(x[None].copy(), np.array([x.size]))
        c, clen = offline_features(x, cfg)
        assert a.shape == b.shape == (1, 128, 1 + x.size // 160)
        assert alen[0] == blen[0] == clen == x.size // 160
        worst_ref = max(worst_ref, float(np.abs(a - b).max()))
        worst_mel = max(worst_mel, float(np.abs(a[0] - c).max()))
    assert worst_ref < 1e-3, worst_ref
    assert worst_mel < 1e-3, worst_mel


def test_nemo_mel_features_give_identical_tokens(
    rec: nemo_tdt.TdtRecognizer, audio: dict[Path, npt.NDArray[np.float32]]
) -> None:
    mel = load(features="nemo_mel")
    xs = list(audio.values())
    assert [r.token_ids for r in mel.recognize(xs)] == [r.token_ids for r in rec.recognize(xs)]


# --- decoding parity --------------------------------------------------------------------
@pytest.mark.parametrize(("precision", "quantization"), [("fp32", None), ("int8", "int8")])
def test_tokens_equal_onnx_asr(
    audio: dict[Path, npt.NDArray[np.float32]], precision: str, quantization: str | None
) -> None:
    mine = load(precision)
    theirs = onnx_asr.load_model("nemo-conformer-tdt", str(MODEL), quantization=quantization)
    for w, x in audio.items():
        (r,) = mine.recognize([x])
        tokens, stamps = onnx_asr_tokens(theirs, x)
        assert r.tokens == tokens, w.name
        assert r.timestamps == stamps, w.name
        assert r.text == "".join(tokens).strip(), w.name
        assert len(set(r.token_ids)) > 3, w.name


def reference_tdt(x: npt.NDArray[np.float32]) -> tuple[list[int], list[int]]:
    """The TDT loop from the layout description, one frame at a time."""
    pre = ort.InferenceSession(str(MODEL / "nemo128.onnx"))
    enc = ort.InferenceSession(str(MODEL / "encoder-model.onnx"))
    dec = ort.InferenceSession(str(MODEL / "decoder_joint-model.onnx"))
    vocab = (MODEL / "vocab.txt").read_text().splitlines()
    blank = len(vocab) - 1
    assert vocab[blank].split()[0] == "<blk>"
    feats, flen = pre.run(None, {"waveforms": x[None], "waveforms_lens": np.array([x.size])})
    out, olen = enc.run(None, {"audio_signal": feats, "length": flen})
    s1 = np.zeros((2, 1, 32), np.float32)
    s2 = np.zeros((2, 1, 32), np.float32)
    tokens: list[int] = []
    durations: list[int] = []
    t = emitted = 0
    while t < olen[0]:
        logits, _, n1, n2 = dec.run(
            None,
            {
                "encoder_outputs": out[:, :, t : t + 1],
                "targets": np.array([[tokens[-1] if tokens else blank]], np.int32),
                "target_length": np.array([1], np.int32),
                "input_states_1": s1,
                "input_states_2": s2,
            },
        )
        scores = logits[0, 0, 0]
        token = int(scores[: len(vocab)].argmax())
        duration = int(scores[len(vocab) :].argmax())  # durations 0..4
        if token != blank:
            tokens.append(token)
            durations.append(duration)
            s1, s2 = n1, n2
            emitted += 1
        if duration > 0:
            t += duration
            emitted = 0
        elif token == blank or emitted == 10:
            t += 1
            emitted = 0
    return tokens, durations


def test_tokens_equal_a_plain_tdt_loop(
    rec: nemo_tdt.TdtRecognizer, audio: dict[Path, npt.NDArray[np.float32]]
) -> None:
    all_durations: list[int] = []
    for w in [*list(audio)[:4], JFK]:
        tokens, durations = reference_tdt(audio[w])
        all_durations += durations
        raw = rec._recognize([audio[w]], [rec.decoding])[0][0]
        assert raw == tokens, w.name
    # the fixture exercises the duration head: staying, single steps and skips
    assert {0, 1, 2} <= set(all_durations)
    assert max(all_durations) >= 3


def test_batched_equals_one_by_one(
    audio: dict[Path, npt.NDArray[np.float32]],
) -> None:
    for precision in ("fp32", "int8", "fp16"):
        r = load(precision)
        xs = list(audio.values())
        assert [a.token_ids for a in r.recognize(xs)] == [
            r.recognize([x])[0].token_ids for x in xs
        ], precision


# --- VAD ------------------------------------------------------------------------------
def test_vad_probabilities_match_a_plain_silero_loop(
    audio: dict[Path, npt.NDArray[np.float32]],
) -> None:
    x = audio[JFK]
    sess = ort.InferenceSession(str(SILERO))
    state = np.zeros((2, 1, 128), np.float32)
    context = np.zeros(CONTEXT, np.float32)
    want = []
    for i in range(x.size // WINDOW):
        w = x[i * WINDOW : (i + 1) * WINDOW]
        p, state = sess.run(
            None,
            {
                "input": np.concatenate([context, w])[None],
                "state": state,
                "sr": np.array(16000, np.int64),
            },
        )
        want.append(float(p[0, 0]))
        context = w[-CONTEXT:]
    det = VoiceActivityDetector(SileroVad(SILERO))
    got = np.concatenate([det.score(x[i : i + 777]) for i in range(0, x.size, 777)])
    np.testing.assert_allclose(got, want, atol=1e-6)
    # SOURCE.md: sherpa-onnx finds (0.29-2.28) (3.26-4.42) (5.37-7.69) (8.16-10.57)
    segs = speech_segments(SileroVad(SILERO), x, VadConfig(min_silence_s=0.25, pad_s=0.0))
    assert len(segs) == 4
    sherpa = [(0.29, 2.28), (3.26, 4.42), (5.37, 7.69), (8.16, 10.57)]
    for (s, e, _), (ws, we) in zip(segs, sherpa, strict=True):
        assert abs(s / 16000 - ws) < 0.15
        assert abs(e / 16000 - we) < 0.15


def test_segments_decode_like_onnx_asr_on_the_segment_audio(
    rec: nemo_tdt.TdtRecognizer, audio: dict[Path, npt.NDArray[np.float32]]
) -> None:
    x = audio[JFK]
    segs = speech_segments(rec.vad, x, rec.vad_config)
    assert len(segs) >= 3
    theirs = onnx_asr.load_model("nemo-conformer-tdt", str(MODEL))
    results = [seg.result for seg in rec.transcribe_segments(x, 16000)]
    assert len(results) == len(segs)
    for r, (s, e, _) in zip(results, segs, strict=True):
        tokens, stamps = onnx_asr_tokens(theirs, x[s:e])
        assert r.tokens == tokens
        assert r.timestamps == [round(s / 16000 + t, 3) for t in stamps]
        assert r.start_time == round(s / 16000, 3)


def test_max_segment_length_cuts_at_a_pause(audio: dict[Path, npt.NDArray[np.float32]]) -> None:
    x = np.concatenate([audio[JFK]] * 3)
    cfg = VadConfig(min_silence_s=2.0, max_segment_s=6.0)
    segs = speech_segments(SileroVad(SILERO), x, cfg)
    assert any(s.cut for s in segs)
    probs = SileroVad(SILERO).probabilities(x)
    for s in segs:
        assert s.end - s.start <= 6.0 * 16000 + 2 * 1600
        if s.cut:  # the cut window is the quietest of the segment's second half
            w = s.end // WINDOW
            half = (s.start // WINDOW + w) // 2
            assert probs[w] <= np.sort(probs[half:w])[len(probs[half:w]) // 4] + 1e-6


# --- long audio ----------------------------------------------------------------------------
def _pad512(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    return np.pad(x, (0, -x.size % WINDOW))


def test_long_audio_in_bounded_memory_equals_clip_by_clip(
    rec: nemo_tdt.TdtRecognizer, audio: dict[Path, npt.NDArray[np.float32]]
) -> None:
    """2.5 minutes of clips with 3 s pauses, fed a second at a time."""
    pause = np.zeros(3 * WINDOW * 32, np.float32)  # ~3 s, clips stay window-aligned
    clips = [_pad512(audio[w]) for w in WAVS]
    parts: list[npt.NDArray[np.float32]] = [pause]
    while sum(p.size for p in parts) < 150 * 16000:
        for c in clips:
            parts += [c, pause]
    long = np.concatenate(parts)

    stream = rec.create_stream(endpoint=EndpointConfig(enabled=True))
    finals: list[asrserve.Result] = []
    peak = 0
    for i in range(0, long.size, 16000):
        stream.accept_waveform(16000, long[i : i + 16000])
        peak = max(peak, stream.buffered_samples)
        while rec.decode_streams([stream]):
            assert rec.is_endpoint(stream)
            finals.append(rec.get_result(stream, is_final=True))
            rec.reset(stream)
    stream.input_finished()
    while rec.is_ready(stream):
        rec.decode_stream(stream)
    assert not rec.get_result(stream).token_ids  # every segment was final already
    # never more than the longest clip plus VAD slack, not the 150 s of input
    assert peak < max(c.size for c in clips) + 3 * 16000, peak / 16000

    # the same as decoding the whole signal's VAD segments one by one
    segs = speech_segments(rec.vad, long, rec.vad_config)
    want = [r for r in rec.recognize([long[s:e] for s, e, _ in segs]) if r.token_ids]
    assert [f.tokens for f in finals] == [w.tokens for w in want]
    assert len(finals) >= len(parts) // 2

    # clip by clip: each clip alone (with its pauses) gets the transcript it
    # gets in the long run, wherever the VAD draws the same boundaries.
    # Silero's recurrent state carries the history, so a boundary can move by
    # one 32 ms window; the segmentation then differs and so may the tokens.
    same = 0
    offset = pause.size
    starts = np.array([s for s, _, _ in segs])
    for c in clips:
        alone_at = offset - pause.size
        mine = [i for i, s in enumerate(starts) if alone_at <= s < offset + c.size]
        alone = speech_segments(rec.vad, np.concatenate([pause, c, pause]), rec.vad_config)
        if [(s + alone_at, e + alone_at) for s, e, _ in alone] == [segs[i][:2] for i in mine]:
            same += 1
            got = [
                t for i in mine for t in rec.recognize([long[segs[i][0] : segs[i][1]]])[0].tokens
            ]
            assert got == rec.transcribe(np.concatenate([pause, c, pause]), 16000).tokens
        offset += c.size + pause.size
    assert same >= len(clips) // 2, same


# --- CLI, server, errors -----------------------------------------------------------------------
def test_cli_transcribe(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from asrserve.cli import main

    monkeypatch.setenv("ASRSERVE_VAD_MODEL", str(SILERO))
    assert (
        main(
            [
                "transcribe",
                "--model",
                str(MODEL),
                "--precision",
                "fp32",
                "--format",
                "json",
                str(JFK),
            ]
        )
        == 0
    )
    row = json.loads(capsys.readouterr().out)
    want = load().transcribe(JFK)
    assert row["text"] == want.text
    assert row["tokens"] == want.tokens
    assert row["timestamps"] == want.timestamps == sorted(want.timestamps)
    assert 0 < row["timestamps"][-1] < row["duration"]


def test_server_sends_one_final_per_vad_segment(
    audio: dict[Path, npt.NDArray[np.float32]],
) -> None:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    from asrserve.config import ServerConfig
    from asrserve.server.app import AsrServer

    rec = load(endpoint=EndpointConfig(enabled=True))
    pause = np.zeros(16000, np.float32)
    x = np.concatenate([audio[JFK], pause, audio[WAVS[0]], pause, audio[WAVS[1]]])
    want = [s.result for s in rec.transcribe_segments(x, 16000) if s.text]
    assert len(want) >= 4

    async def session(url: str) -> list[dict[str, Any]]:
        async with connect(url) as ws:
            await ws.send(json.dumps({"type": "start", "sample_rate": 16000, "format": "f32le"}))
            for i in range(0, x.size, 3200):
                await ws.send(x[i : i + 3200].astype("<f4").tobytes())
            await ws.send('{"type": "stop"}')
            out = []
            with contextlib.suppress(ConnectionClosed):
                async for m in ws:
                    out.append(json.loads(m))
            return out

    async def main() -> list[list[dict[str, Any]]]:
        async with asyncio.timeout(60):
            async with AsrServer(rec, ServerConfig(port=0, max_wait_ms=10)) as server:  # type: ignore[arg-type]
                url = f"ws://127.0.0.1:{server.port}"
                return await asyncio.gather(session(url), session(url))

    for msgs in asyncio.run(main()):
        assert msgs[-1]["type"] == "eof"
        finals = [m for m in msgs if m["type"] == "final" and m["text"]]
        assert [f["tokens"] for f in finals] == [r.tokens for r in want]
        assert [f["timestamps"] for f in finals] == [r.timestamps for r in want]


@pytest.fixture
def copy_dir(tmp_path: Path) -> Path:
    d = tmp_path / "m"
    shutil.copytree(MODEL, d)
    return d


def test_clear_errors_for_missing_or_foreign_files(copy_dir: Path) -> None:
    opts = LoadOptions(BackendOptions(), "fp32")
    vad = VadConfig(model=str(SILERO))
    (copy_dir / "encoder-model.onnx").unlink()
    with pytest.raises(ModelLoadError, match="no fp32 encoder-model file"):
        nemo_tdt.load_recognizer(copy_dir, LoadOptions(BackendOptions(), "fp32"), vad=vad)
    # an explicit precision falls back to fp32 only: int8 is there
    assert nemo_tdt.load_recognizer(copy_dir, LoadOptions(BackendOptions(), "int8"), vad=vad)
    shutil.copy(SILERO, copy_dir / "encoder-model.onnx")
    with pytest.raises(ModelLoadError, match="not an onnx-asr NeMo TDT graph"):
        nemo_tdt.load_recognizer(copy_dir, opts, vad=vad)
    shutil.copy(MODEL / "encoder-model.onnx", copy_dir / "encoder-model.onnx")
    (copy_dir / "encoder-model.onnx").write_bytes(b"truncated")
    with pytest.raises(ModelLoadError, match="not a loadable ONNX model"):
        nemo_tdt.load_recognizer(copy_dir, opts, vad=vad)
    shutil.copy(MODEL / "encoder-model.onnx", copy_dir / "encoder-model.onnx")
    (copy_dir / "vocab.txt").unlink()
    with pytest.raises(ModelLoadError, match=r"vocab\.txt not found"):
        nemo_tdt.load_recognizer(copy_dir, opts, vad=vad)
    shutil.copy(MODEL / "vocab.txt", copy_dir / "vocab.txt")
    with pytest.raises(ModelLoadError, match="Silero VAD model not found"):
        nemo_tdt.load_recognizer(copy_dir, opts, vad=VadConfig(model=str(copy_dir / "none")))
    (copy_dir / "config.json").write_text('{"model_type": "nemo-conformer-rnnt"}')
    assert nemo_tdt.probe(copy_dir)
    with pytest.raises(ModelLoadError, match="'nemo-conformer-rnnt' is not supported"):
        nemo_tdt.load_recognizer(copy_dir, opts, vad=vad)
    (copy_dir / "config.json").unlink()
    assert nemo_tdt.probe(copy_dir)  # the file names still say onnx-asr NeMo
    with pytest.raises(ModelLoadError, match=r"config\.json not found"):
        nemo_tdt.load_recognizer(copy_dir, opts, vad=vad)
    assert not nemo_tdt.probe(TINY_LSTM)


def test_unsupported_options_are_refused(rec: nemo_tdt.TdtRecognizer) -> None:
    from asrserve.config import DecodingConfig

    with pytest.raises(ConfigError, match="hotwords"):
        rec.create_stream(hotwords=["HELLO"])
    with pytest.raises(ConfigError, match="greedy"):
        rec.create_stream(decoding=DecodingConfig(method="modified_beam"))
    with pytest.raises(ConfigError, match="pad_s"):
        VadConfig(pad_s=0.5, min_silence_s=0.2).validate()


def test_server_flush_ends_the_open_vad_segment(
    audio: dict[Path, npt.NDArray[np.float32]],
) -> None:
    """A client's flush cuts the segment the VAD still holds open: its final
    comes before any more audio, with the tokens of the clip decoded alone."""
    from websockets.asyncio.client import connect

    from asrserve.config import ServerConfig
    from asrserve.server.app import AsrServer
    from asrserve.vad import VoiceActivityDetector

    rec = load(endpoint=EndpointConfig(enabled=True))
    clip = audio[JFK][: int(4.5 * 16000)]  # ends mid-speech: the VAD holds a segment open
    detector = VoiceActivityDetector(rec.vad, rec.vad_config)
    detector.accept_waveform(clip)
    assert detector.in_speech
    want = [s.result.tokens for s in rec.transcribe_segments(clip, 16000) if s.text]
    assert len(want) >= 2

    async def main() -> list[dict[str, Any]]:
        config = ServerConfig(port=0, max_wait_ms=10)
        server = AsrServer(rec, config)  # type: ignore[arg-type]
        async with asyncio.timeout(30), server, connect(f"ws://127.0.0.1:{server.port}") as ws:
            await ws.send(json.dumps({"type": "start", "sample_rate": 16000}))
            await ws.recv()
            await ws.send(clip.astype("<f4").tobytes())  # no silence after it
            await ws.send('{"type": "flush"}')
            finals: list[dict[str, Any]] = []
            # every segment's final arrives without a stop (the last one by the flush)
            while sum(len(f["tokens"]) for f in finals) < sum(len(t) for t in want):
                m = json.loads(await ws.recv())
                if m["type"] == "final":
                    finals.append(m)
            await ws.send('{"type": "stop"}')
            return finals

    finals = asyncio.run(main())
    assert [f["tokens"] for f in finals if f["text"]] == want
