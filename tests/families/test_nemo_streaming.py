"""NeMo cache-aware streaming RNN-T (Nemotron ONNX layout) on the tiny random-weight fixture.

The reference decode loop below is written from the layout's description with plain
onnxruntime calls: log-mel of the audio plus the tail padding, 9 zero frames in front,
chunks of 65 frames every 56, caches fed back, and per encoder frame the decoder+joint
graph run until blank (at most 10 tokens), its LSTM states taken only on emission.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from websockets.asyncio.client import connect

import asrserve
from asrserve.config import DecodingConfig, ServerConfig
from asrserve.core.recognizer import Recognizer
from asrserve.errors import ModelLoadError
from asrserve.families import nemo_streaming
from asrserve.families.layouts import find_layout
from asrserve.features.nemo_mel import log_mel
from tests.conftest import BUILTIN, FIXTURE_MODELS, read_wav

MODEL = FIXTURE_MODELS / "nemotron-tiny"
WAVS = sorted((BUILTIN / "test_wavs").glob("*.wav"))
PRECISIONS = ("fp32", "fp16", "int8-dynamic", "int8-static")


def _config() -> dict[str, Any]:
    return json.loads((MODEL / "config.json").read_text())  # type: ignore[no-any-return]


def reference_decode(
    wav: Path, precision: str = "fp32", tail_s: float = 0.67
) -> tuple[list[int], list[np.ndarray]]:
    """Tokens and final encoder caches, from plain onnxruntime calls."""
    cfg = _config()
    enc_cfg, dec_cfg = cfg["encoder"], cfg["decoder"]
    enc = ort.InferenceSession(str(MODEL / precision / "encoder_model.onnx"))
    dec = ort.InferenceSession(str(MODEL / precision / "decoder_model.onnx"))
    x, _ = read_wav(wav)
    x = np.concatenate([x, np.zeros(round(tail_s * 16000), np.float32)])
    pre, chunk = enc_cfg["pre_encode_cache_frames"], enc_cfg["chunk_mel_frames"]
    mel = log_mel(x)  # (128, T), band-major
    mel = np.concatenate([np.zeros((mel.shape[0], pre), np.float32), mel], axis=1)
    caches = [
        np.zeros(enc_cfg["cache_last_channel_shape"], np.float32),
        np.zeros(enc_cfg["cache_last_time_shape"], np.float32),
        np.zeros((1,), np.int64),
    ]
    blank = dec_cfg["blank_id"]
    shape = (dec_cfg["prediction_layers"], 1, dec_cfg["prediction_hidden"])
    h, c = np.zeros(shape, np.float32), np.zeros(shape, np.float32)
    last, tokens = blank, []
    start = 0
    while start + pre + chunk < mel.shape[1]:
        out = enc.run(
            None,
            {
                "audio_signal": mel[None, :, start : start + pre + chunk],
                "length": np.array([pre + chunk], np.int64),
                "cache_last_channel": caches[0],
                "cache_last_time": caches[1],
                "cache_last_channel_len": caches[2],
            },
        )
        encoded, n = out[0], int(out[1][0])
        caches = list(out[2:])
        start += chunk
        for t in range(n):
            for _ in range(dec_cfg["max_symbols_per_frame"]):
                logits, _, h2, c2 = dec.run(
                    None,
                    {
                        "encoder_outputs": encoded[:, :, t : t + 1],
                        "targets": np.array([[last]], np.int32),
                        "target_length": np.array([1], np.int32),
                        "input_states_1": h,
                        "input_states_2": c,
                    },
                )
                y = int(logits.reshape(-1).argmax())
                if y == blank:
                    break
                tokens.append(y)
                last, h, c = y, h2, c2
    return tokens, caches


@pytest.fixture(scope="module")
def rec() -> Recognizer:
    return asrserve.load_model(MODEL, precision="fp32")


def _stream_tokens(rec: Recognizer, wav: Path, piece: int) -> tuple[list[int], list[Any]]:
    x, sr = read_wav(wav)
    s = rec.create_stream()
    for i in range(0, x.size, piece):
        s.accept_waveform(sr, x[i : i + piece])
        while rec.is_ready(s):
            rec.decode_stream(s)
    s.input_finished()
    while rec.is_ready(s):
        rec.decode_stream(s)
    return rec.token_ids(s), s.encoder_state


def test_probe_claims_the_layout() -> None:
    assert nemo_streaming.probe(MODEL)
    assert find_layout(MODEL).load is nemo_streaming.load_recognizer
    assert not nemo_streaming.probe(BUILTIN)


@pytest.mark.parametrize("wav", WAVS[:3], ids=lambda p: p.stem)
def test_tokens_equal_the_reference_loop(rec: Recognizer, wav: Path) -> None:
    want, caches = reference_decode(wav)
    assert len(want) > 3  # the fixture emits on speech
    got, state = _stream_tokens(rec, wav, 1 << 30)
    assert got == want
    for a, b in zip(state, caches, strict=True):
        np.testing.assert_array_equal(a, b)
    assert rec.get_result(rec.create_stream()).text == ""


def test_wrong_cache_handling_changes_the_output(rec: Recognizer) -> None:
    """The fixture's encoder really reads its caches: zeroing them each chunk differs."""
    wav = WAVS[0]
    want, _ = reference_decode(wav)
    s = rec.create_stream()
    x, sr = read_wav(wav)
    s.accept_waveform(sr, x)
    s.input_finished()
    while rec.is_ready(s):
        s.encoder_state = rec.model.init_state()
        rec.decode_streams([s])
    assert rec.token_ids(s) != want


@pytest.mark.parametrize("piece", [160, 1234, 8960])
def test_any_pieces_give_the_same_tokens_and_caches(rec: Recognizer, piece: int) -> None:
    whole, whole_state = _stream_tokens(rec, WAVS[1], 1 << 30)
    got, state = _stream_tokens(rec, WAVS[1], piece)
    assert got == whole
    for a, b in zip(state, whole_state, strict=True):
        np.testing.assert_array_equal(a, b)


def test_batched_streams_equal_single(rec: Recognizer) -> None:
    single = {w: _stream_tokens(rec, w, 1 << 30)[0] for w in WAVS[:4]}
    streams = {}
    for w in WAVS[:4]:
        x, sr = read_wav(w)
        s = rec.create_stream()
        s.accept_waveform(sr, x)
        s.input_finished()
        streams[w] = s
    while rec.decode_streams(list(streams.values())):
        pass
    assert {w: rec.token_ids(s) for w, s in streams.items()} == single


def test_beam_search_decodes_and_batches(rec: Recognizer) -> None:
    beam = DecodingConfig(method="modified_beam", beam=4, max_symbols_per_frame=10)
    results = []
    for batched in (False, True):
        streams = []
        for w in WAVS[:3]:
            x, sr = read_wav(w)
            s = rec.create_stream(decoding=beam)
            s.accept_waveform(sr, x)
            s.input_finished()
            streams.append(s)
        if batched:
            while rec.decode_streams(streams):
                pass
        else:
            for s in streams:
                while rec.is_ready(s):
                    rec.decode_stream(s)
        results.append([rec.token_ids(s) for s in streams])
    assert results[0] == results[1]
    assert all(len(t) > 0 for t in results[0])
    hot = rec.create_stream(decoding=beam, hotwords=["▁the ▁a :2.0"])
    assert hot.search_state.context_graph is not None


@pytest.mark.parametrize("precision", [*PRECISIONS, "auto"])
def test_each_precision_loads_and_decodes(precision: str) -> None:
    r = asrserve.load_model(MODEL, precision=precision)
    got = r.transcribe(WAVS[0]).token_ids
    folder = "int8-dynamic" if precision == "auto" else precision
    assert got == reference_decode(WAVS[0], folder)[0]
    assert r.model.encoder.path.endswith(f"{folder}/encoder_model.onnx")  # type: ignore[attr-defined]


def test_result_geometry(rec: Recognizer) -> None:
    assert rec.model.chunk_size == 65
    assert rec.model.chunk_shift == 56
    assert rec.model.subsampling_factor == 8  # measured: no config key
    assert rec.frame_shift_s == pytest.approx(0.01)
    assert rec.decoding.max_symbols_per_frame == 10
    # the CLI passes a DecodingConfig with the sherpa default of 1: config.json's limit wins
    cli = asrserve.load_model(MODEL, decoding=DecodingConfig(method="greedy"))
    assert cli.decoding.max_symbols_per_frame == 10
    res = rec.transcribe(WAVS[0])
    assert res.timestamps == sorted(res.timestamps)
    assert all(0 <= t <= 10 for t in res.timestamps)


def test_missing_precision_folder(tmp_path: Path) -> None:
    d = tmp_path / "m"
    shutil.copytree(MODEL, d, ignore=shutil.ignore_patterns("int8-*", "fp16"))
    with pytest.raises(ModelLoadError, match="no int8-static folder"):
        asrserve.load_model(d, precision="int8-static")
    r = asrserve.load_model(d)  # auto falls back to what is there
    assert "fp32" in r.model.encoder.path  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("drop", "match"),
    [
        (("encoder", "chunk_mel_frames"), "encoder.chunk_mel_frames"),
        (("decoder", "blank_id"), "decoder.blank_id"),
        (("encoder", "cache_last_time_shape"), "encoder.cache_last_time_shape"),
    ],
)
def test_missing_config_key(tmp_path: Path, drop: tuple[str, str], match: str) -> None:
    d = tmp_path / "m"
    shutil.copytree(MODEL, d, ignore=shutil.ignore_patterns("int8-*", "fp16"))
    cfg = _config()
    del cfg[drop[0]][drop[1]]
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelLoadError, match=match):
        asrserve.load_model(d)


def test_missing_config_json(tmp_path: Path) -> None:
    d = tmp_path / "m"
    shutil.copytree(MODEL, d, ignore=shutil.ignore_patterns("int8-*", "fp16"))
    (d / "config.json").unlink()
    with pytest.raises(ModelLoadError, match=r"config\.json not found"):
        asrserve.load_model(d)


def test_wrong_io_names_are_refused(tmp_path: Path) -> None:
    d = tmp_path / "m"
    shutil.copytree(MODEL, d, ignore=shutil.ignore_patterns("int8-*", "fp16"))
    cfg = _config()
    inputs = cfg["decoder"]["inputs"]
    cfg["decoder"]["inputs"] = {("tokens" if k == "targets" else k): v for k, v in inputs.items()}
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelLoadError, match="tokens"):
        asrserve.load_model(d)


def test_server_transcribes_a_fixture_file(rec: Recognizer) -> None:
    from asrserve.server.app import AsrServer

    x, sr = read_wav(WAVS[0])
    data = (np.clip(x, -1, 1) * 32767).astype("<i2").tobytes()
    # the server's audio arrives as int16: compare with the same quantised samples
    want = rec.transcribe(np.frombuffer(data, "<i2"), sr)

    async def main() -> list[dict[str, Any]]:
        async with (
            asyncio.timeout(60),
            AsrServer(rec, ServerConfig(port=0, max_wait_ms=0)) as server,
            connect(f"ws://127.0.0.1:{server.port}") as ws,
        ):
            start = {"type": "start", "sample_rate": sr, "format": "s16le"}
            await ws.send(json.dumps(start))
            for i in range(0, len(data), 3200):
                await ws.send(data[i : i + 3200])
            await ws.send('{"type": "stop"}')
            return [json.loads(m) async for m in ws]

    msgs = asyncio.run(main())
    finals = [m for m in msgs if m["type"] == "final"]
    assert len(finals) == 1
    assert finals[0]["text"] == want.text
    assert finals[0]["tokens"] == want.tokens
    assert want.text
