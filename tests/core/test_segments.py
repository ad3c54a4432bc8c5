"""How audio is cut never changes a transcript: the core decides every
segment end (after each decoded chunk), and the Python API, the microphone
path, the HTTP API's segments and ``asrserve transcribe --format json``
all take theirs from it.

The reproduction: ``synth-0000.wav`` + 1.3 s of silence + ``synth-0100.wav``
with sherpa-onnx's default endpoint rules. Before, the mic path gave
``['EXIT THE PUSE GOS SHELL', 'FTER GUANY']`` in 0.1 s blocks and glued both
into one segment in 3 s blocks, while the HTTP path gave two segments.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import soundfile as sf

import asrserve
from asrserve.cli import main
from asrserve.clients.mic import LiveDisplay, transcribe_local
from asrserve.config import EndpointConfig
from asrserve.core.segments import Segment
from asrserve.server.openai_api import transcribe_segments
from tests.conftest import BUILTIN, FIXTURE_MODELS, SHARED_MODELS, TINY_LSTM_NCNN, read_wav

RATE = 16000
ENDPOINTING = EndpointConfig(enabled=True)  # sherpa-onnx's default rules
PIECES_S = (0.01, 0.1, 1.0, 3.0)

Row = tuple[str, float, float, tuple[str, ...]]


@pytest.fixture(scope="module")
def audio() -> npt.NDArray[np.float32]:
    a, sr = read_wav(BUILTIN / "test_wavs" / "synth-0000.wav")
    b, _ = read_wav(BUILTIN / "test_wavs" / "synth-0100.wav")
    assert sr == RATE
    return np.concatenate([a, np.zeros(int(1.3 * RATE), np.float32), b])


@pytest.fixture(scope="module")
def recognizer() -> asrserve.Recognizer:
    return asrserve.load_model(BUILTIN, endpoint=ENDPOINTING)


def rows(parts: list[Segment]) -> list[Row]:
    return [(s.text, s.start, round(s.end, 3), tuple(s.result.tokens)) for s in parts]


@pytest.fixture(scope="module")
def want(recognizer: asrserve.Recognizer, audio: npt.NDArray[np.float32]) -> list[Row]:
    got = rows(list(recognizer.transcribe_segments(audio, RATE, chunk_seconds=100.0)))
    assert len(got) == 2, got  # the pause is an endpoint
    return got


@pytest.mark.parametrize("piece_s", PIECES_S)
def test_python_api_in_pieces(
    recognizer: asrserve.Recognizer,
    audio: npt.NDArray[np.float32],
    want: list[Row],
    piece_s: float,
) -> None:
    assert rows(list(recognizer.transcribe_segments(audio, RATE, chunk_seconds=piece_s))) == want


class _Blocks:
    """An audio source in fixed blocks, as the microphone delivers them."""

    def __init__(self, samples: npt.NDArray[np.float32], block_s: float) -> None:
        self.samples, self.step = samples, max(1, int(block_s * RATE))

    async def __aiter__(self) -> AsyncIterator[tuple[int, npt.NDArray[np.float32]]]:
        for i in range(0, self.samples.size, self.step):
            yield RATE, self.samples[i : i + self.step]


@pytest.mark.parametrize("block_s", PIECES_S)
def test_mic_path_in_blocks(
    recognizer: asrserve.Recognizer,
    audio: npt.NDArray[np.float32],
    want: list[Row],
    block_s: float,
) -> None:
    source: Any = _Blocks(audio, block_s)
    finals = asyncio.run(transcribe_local(recognizer, source, LiveDisplay(partials=False)))
    assert finals == [text for text, *_ in want]


def test_http_api_segments(
    recognizer: asrserve.Recognizer, audio: npt.NDArray[np.float32], want: list[Row]
) -> None:
    t = transcribe_segments(recognizer, audio, RATE)
    got = [
        (r.text, r.start_time, round(end, 3), tuple(r.tokens))
        for r, end in zip(t.segments, t.ends, strict=True)
    ]
    assert got == want


def test_cli_and_bulk_segments(
    audio: npt.NDArray[np.float32],
    want: list[Row],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cli, bulk = cli_and_bulk_segments(audio, tmp_path, capsys, BUILTIN)
    assert cli == want
    assert bulk == want


def websocket_finals(
    recognizer: asrserve.SpeechRecognizer[Any], audio: npt.NDArray[np.float32]
) -> tuple[list[Row], list[tuple[str, tuple[str, ...]]]]:
    """The server's finals for ``audio`` in 100 ms float32 pieces: the asrserve
    dialect's (text, bounds, tokens), the sherpa dialect's (text, tokens) per
    segment (its last message of each segment number)."""
    from websockets.asyncio.client import connect

    from asrserve.config import ServerConfig
    from asrserve.server.app import AsrServer

    f32 = audio.astype("<f4").tobytes()
    piece = int(0.1 * RATE) * 4

    async def asrserve_dialect(url: str) -> list[dict[str, Any]]:
        async with connect(url) as ws:
            start = {"type": "start", "sample_rate": RATE, "endpointing": {"enabled": True}}
            await ws.send(json.dumps(start))
            for i in range(0, len(f32), piece):
                await ws.send(f32[i : i + piece])
            await ws.send('{"type": "stop"}')
            return [m for m in map(json.loads, [m async for m in ws]) if m["type"] == "final"]

    async def sherpa_dialect(url: str) -> list[dict[str, Any]]:
        async with connect(url) as ws:
            for i in range(0, len(f32), piece):
                await ws.send(f32[i : i + piece])
            await ws.send("Done")
            msgs = [json.loads(m) for m in [m async for m in ws] if m != "Done!"]
        by_segment = {m["segment"]: m for m in msgs}
        return [by_segment[k] for k in sorted(by_segment) if by_segment[k]["text"]]

    async def run() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        cfg = ServerConfig(port=0)  # sessions default to the recognizer's endpointing
        async with AsrServer(recognizer, cfg) as server:
            url = f"ws://127.0.0.1:{server.port}"
            return await asrserve_dialect(url), await sherpa_dialect(url)

    ours, sherpa = asyncio.run(asyncio.wait_for(run(), 60))
    finals = [(m["text"], m["start"], m["end"], tuple(m["tokens"])) for m in ours if m["text"]]
    return finals, [(m["text"], tuple(m["tokens"])) for m in sherpa]


def test_websocket_both_dialects(
    recognizer: asrserve.Recognizer, audio: npt.NDArray[np.float32], want: list[Row]
) -> None:
    ours, sherpa = websocket_finals(recognizer, audio)
    assert ours == want
    assert sherpa == [(t, k) for t, _, _, k in want]


def cli_and_bulk_segments(
    audio: npt.NDArray[np.float32],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    model: Path,
) -> tuple[list[Row], list[Row]]:
    """``asrserve transcribe --endpointing --format json`` and ``asrserve bulk
    --endpointing`` of ``audio`` as a wav: their segments."""
    folder = tmp_path / "in"
    folder.mkdir(exist_ok=True)
    wav = folder / "two.wav"
    sf.write(wav, audio, RATE)
    args = ["--model", str(model), "--endpointing"]
    capsys.readouterr()  # what came before (the mic path's display)
    assert main(["transcribe", *args, "--format", "json", str(wav)]) == 0
    cli = json.loads(capsys.readouterr().out)
    out = tmp_path / "r.jsonl"
    argv = ["bulk", str(folder), *args, "--out", str(out), "--workers", "1", "--no-progress"]
    assert main(argv) == 0
    capsys.readouterr()
    (line,) = [json.loads(x) for x in out.read_text().splitlines()]
    as_rows = [
        [(s["text"], s["start"], s["end"], tuple(s["tokens"])) for s in obj["segments"]]
        for obj in (cli, line)
    ]
    return as_rows[0], as_rows[1]


OTHER_MODELS = {
    "zipformer2-tiny": FIXTURE_MODELS / "zipformer2-tiny",
    "ncnn-lstm": TINY_LSTM_NCNN,
    "parakeet-tdt-tiny": FIXTURE_MODELS / "parakeet-tdt-tiny",
}


@pytest.mark.parametrize("name", list(OTHER_MODELS))
def test_other_families_cut_any_way(
    name: str,
    audio: npt.NDArray[np.float32],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The same for a Zipformer2 fixture, the ncnn backend and Parakeet TDT
    (VAD-segmented): the Python API in every piece size, the mic path, the
    HTTP API, the WebSocket server (both dialects), the CLI and bulk all give
    the whole-file segments."""
    path = OTHER_MODELS[name]
    if not path.is_dir():
        pytest.skip(f"{path} not found")
    monkeypatch.setenv("ASRSERVE_VAD_MODEL", str(SHARED_MODELS / "silero-vad" / "silero_vad.onnx"))
    rec = asrserve.load_model(path, endpoint=ENDPOINTING)
    want = rows(list(rec.transcribe_segments(audio, RATE, chunk_seconds=100.0)))
    assert want, f"{name}: no segment at all, the comparison would prove nothing"
    for piece_s in PIECES_S:
        got = rows(list(rec.transcribe_segments(audio, RATE, chunk_seconds=piece_s)))
        assert got == want, (name, "api", piece_s)
        source: Any = _Blocks(audio, piece_s)
        finals = asyncio.run(transcribe_local(rec, source, LiveDisplay(partials=False)))
        assert finals == [text for text, *_ in want], (name, "mic", piece_s)
    t = transcribe_segments(rec, audio, RATE)
    http = [
        (r.text, r.start_time, round(e, 3), tuple(r.tokens))
        for r, e in zip(t.segments, t.ends, strict=True)
    ]
    assert http == want, (name, "http")
    ours, sherpa = websocket_finals(rec, audio)
    assert ours == want, (name, "websocket")
    assert sherpa == [(t, k) for t, _, _, k in want], (name, "sherpa dialect")
    cli, bulk = cli_and_bulk_segments(audio, tmp_path, capsys, path)
    assert cli == want, (name, "cli")
    assert bulk == want, (name, "bulk")
