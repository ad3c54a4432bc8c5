"""The real server on loopback: transcripts, batching, limits, bad clients.

Every test runs its own server on an ephemeral port and is bounded by
``asyncio.timeout``; nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

import asrserve
from asrserve.config import EndpointConfig, EndpointRule, ServerConfig
from asrserve.server.app import AsrServer
from tests import prometheus
from tests.conftest import BUILTIN, read_wav

WAVS = sorted((BUILTIN / "test_wavs").glob("*.wav"))
TIMEOUT_S = 60


@pytest.fixture(scope="module")
def recognizer() -> asrserve.Recognizer:
    return asrserve.load_model(BUILTIN, endpoint=EndpointConfig(enabled=False))


@pytest.fixture(scope="module")
def offline(recognizer: asrserve.Recognizer) -> dict[Path, asrserve.Result]:
    return {w: recognizer.transcribe(w) for w in WAVS}


def serve(
    recognizer: asrserve.Recognizer,
    body: Callable[[AsrServer, str], Awaitable[None]],
    **config: Any,
) -> None:
    async def main() -> None:
        async with asyncio.timeout(TIMEOUT_S):
            cfg = ServerConfig(port=0, **config)
            async with AsrServer(recognizer, cfg) as server:
                await body(server, f"ws://127.0.0.1:{server.port}")

    asyncio.run(main())


def s16(x: npt.NDArray[np.float32]) -> bytes:
    return (np.clip(x, -1, 1) * 32767).astype("<i2").tobytes()


async def messages(ws: ClientConnection) -> list[dict[str, Any]]:
    """Everything the server sends until it closes (with any code)."""
    out = []
    with contextlib.suppress(ConnectionClosed):
        async for m in ws:
            out.append(json.loads(m))
    return out


async def asrserve_session(
    url: str, wav: Path, piece: int = 3200, start: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    x, sr = read_wav(wav)
    async with connect(url) as ws:
        await ws.send(
            json.dumps({"type": "start", "sample_rate": sr, "format": "s16le", **(start or {})})
        )
        data = s16(x)
        for i in range(0, len(data), piece):
            await ws.send(data[i : i + piece])
        await ws.send('{"type": "stop"}')
        return await messages(ws)


def finals(msgs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [m for m in msgs if m["type"] == "final"]


def metric(text: str, name: str) -> float:
    found = prometheus.value(text, name)
    assert found is not None, name
    return found


def http_get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_transcripts_equal_offline(
    recognizer: asrserve.Recognizer, offline: dict[Path, asrserve.Result]
) -> None:
    async def body(_: AsrServer, url: str) -> None:
        for wav in WAVS:
            msgs = await asrserve_session(url, wav)
            assert msgs[0]["type"] == "ready"
            assert msgs[-1]["type"] == "eof"
            (final,) = finals(msgs)
            want = offline[wav]
            assert final["tokens"] == want.tokens
            assert final["timestamps"] == want.timestamps
            assert final["text"] == want.text

    serve(recognizer, body, max_wait_ms=0)


def test_resamples_client_rate(recognizer: asrserve.Recognizer) -> None:
    from asrserve.audio import resample

    wav = WAVS[0]
    x, sr = read_wav(wav)
    x8 = resample(x, sr, 8000)

    async def body(_: AsrServer, url: str) -> None:
        async with connect(url) as ws:
            await ws.send('{"type": "start", "sample_rate": 8000, "format": "f32le"}')
            await ws.send(x8.astype("<f4").tobytes())
            await ws.send('{"type": "stop"}')
            msgs = await messages(ws)
        assert msgs[0]["sample_rate"] == 8000
        assert msgs[0]["model_sample_rate"] == 16000
        # the same tokens as the core resampling the same 8 kHz audio itself
        want = recognizer.transcribe(x8, 8000)
        assert [f["tokens"] for f in finals(msgs)] == [want.tokens]

    serve(recognizer, body)


@pytest.fixture(scope="module")
def exact(tiny_lstm_dir: Path) -> tuple[asrserve.Recognizer, dict[Path, asrserve.Result]]:
    """The demo model's fp32 files and their offline transcripts, for tests
    whose streams share encoder calls with others: the built-in int8 encoder
    scales its activations over the whole batch, so its results depend on
    which streams happen to share a call."""
    rec = asrserve.load_model(
        tiny_lstm_dir, precision="fp32", endpoint=EndpointConfig(enabled=False)
    )
    assert not rec.batch_dependent
    return rec, {w: rec.transcribe(w) for w in WAVS}


def test_32_concurrent_streams_are_batched(
    exact: tuple[asrserve.Recognizer, dict[Path, asrserve.Result]],
) -> None:
    """Batched streams give the offline transcripts."""
    recognizer, offline = exact
    files = [WAVS[i % len(WAVS)] for i in range(32)]

    async def body(server: AsrServer, url: str) -> None:
        results = await asyncio.gather(*(asrserve_session(url, w) for w in files))
        for wav, msgs in zip(files, results, strict=True):
            assert [f["tokens"] for f in finals(msgs)] == [offline[wav].tokens], wav.name
        hist = server.metrics.batch_size
        assert hist.count > 0
        assert sum(hist.counts[2:]) > 0, f"no batch larger than 2: {hist.counts}"
        status, text = await asyncio.to_thread(
            http_get, url.replace("ws://", "http://") + "/metrics"
        )
        assert status == 200
        assert metric(text, "asrserve_connections_total") == 32
        assert metric(text, 'asrserve_batch_size_bucket{le="1"}') < metric(
            text, "asrserve_batch_size_count"
        )

    serve(recognizer, body, max_wait_ms=20)


def test_bad_clients_do_not_disturb_others(
    exact: tuple[asrserve.Recognizer, dict[Path, asrserve.Result]],
) -> None:
    recognizer, offline = exact  # a bad client's audio may share the good one's calls
    good = WAVS[1]

    async def bad_frames(url: str) -> list[dict[str, Any]]:
        async with connect(url) as ws:
            await ws.send('{"type": "start", "format": "s16le"}')
            await ws.send(b"\x01\x02\x03")  # odd-length int16
            await ws.send("not json")
            await ws.send('{"type": "rewind"}')
            await ws.send('{"type": "stop"}')
            return await messages(ws)

    async def nan_audio(url: str) -> list[dict[str, Any]]:
        async with connect(url) as ws:
            await ws.send('{"type": "start"}')
            await ws.send(np.array([np.nan] * 8, dtype="<f4").tobytes())
            await ws.send('{"type": "stop"}')
            return await messages(ws)

    async def oversized(url: str) -> int | None:
        async with connect(url, max_size=None) as ws:
            await ws.send(b"\x00" * 70_000)
            try:
                await ws.recv()
            except ConnectionClosed as e:
                return e.rcvd.code if e.rcvd else None
        return None

    async def bad_start(url: str) -> tuple[list[dict[str, Any]], int | None]:
        async with connect(url) as ws:
            await ws.send('{"type": "start", "sample_rate": -5}')
            msgs = await messages(ws)
            return msgs, ws.close_code

    async def vanishing(url: str) -> None:
        x, sr = read_wav(WAVS[2])
        ws = await connect(url)
        await ws.send(json.dumps({"type": "start", "sample_rate": sr, "format": "s16le"}))
        await ws.send(s16(x[: sr // 2]))
        ws.transport.abort()  # no close handshake: the peer just disappears

    async def body(_: AsrServer, url: str) -> None:
        results = await asyncio.gather(
            asrserve_session(url, good, piece=1600),
            bad_frames(url),
            nan_audio(url),
            oversized(url),
            bad_start(url),
            vanishing(url),
        )
        msgs_good, msgs_bad, msgs_nan, code_big, (msgs_start, code_start), _ = results
        assert [f["tokens"] for f in finals(msgs_good)] == [offline[good].tokens]
        errors = [m for m in msgs_bad if m["type"] == "error"]
        assert [e["code"] for e in errors] == ["bad_audio", "bad_message", "bad_message"]
        assert "s16le" in errors[0]["message"]
        assert "rewind" in errors[2]["message"]
        assert msgs_bad[-1]["type"] == "eof"
        assert msgs_nan[1]["code"] == "bad_audio"
        assert msgs_nan[-1]["type"] == "eof"
        assert code_big == 1009
        assert msgs_start[0]["code"] == "bad_config"
        assert "sample_rate" in msgs_start[0]["message"]
        assert code_start == 1003
        # the server is still healthy afterwards
        msgs_again = await asrserve_session(url, good)
        assert [f["tokens"] for f in finals(msgs_again)] == [offline[good].tokens]

    serve(recognizer, body, max_message_bytes=65_536)


def test_too_many_connections_get_503(recognizer: asrserve.Recognizer) -> None:
    async def body(server: AsrServer, url: str) -> None:
        first = await connect(url)
        second = await connect(url)
        with pytest.raises(InvalidStatus) as info:
            await connect(url)
        assert info.value.response.status_code == 503
        assert b"server is full" in info.value.response.body
        assert server.metrics.rejected_total == 1
        await first.close()
        await second.close()

    serve(recognizer, body, max_connections=2)


def test_idle_timeout_ends_the_stream_with_1008(
    recognizer: asrserve.Recognizer, offline: dict[Path, asrserve.Result]
) -> None:
    wav = WAVS[0]
    x, sr = read_wav(wav)

    async def body(_: AsrServer, url: str) -> None:
        async with connect(url) as ws:
            await ws.send(json.dumps({"type": "start", "sample_rate": sr, "format": "s16le"}))
            await ws.send(s16(x))
            msgs = await messages(ws)  # no stop: the server gives up waiting
            assert ws.close_code == 1008
        kinds = [m["type"] for m in msgs]
        assert "error" in kinds
        assert kinds[-1] == "eof"
        err = msgs[kinds.index("error")]
        assert err["code"] == "limit"
        assert "no message for 0.5 s" in err["message"]
        # the audio already accepted is still decoded to the end
        assert finals(msgs)[-1]["tokens"] == offline[wav].tokens

    serve(recognizer, body, idle_timeout_s=0.5)


def test_backpressure_loses_no_audio(
    recognizer: asrserve.Recognizer, offline: dict[Path, asrserve.Result]
) -> None:
    async def body(_: AsrServer, url: str) -> None:
        for wav in WAVS[:2]:
            msgs = await asrserve_session(url, wav, piece=640)
            assert [f["tokens"] for f in finals(msgs)] == [offline[wav].tokens]

    serve(recognizer, body, max_backlog_s=0.2)


def test_flush_finalizes_a_segment(recognizer: asrserve.Recognizer) -> None:
    x, sr = read_wav(WAVS[0])

    async def body(_: AsrServer, url: str) -> None:
        async with connect(url) as ws:
            await ws.send(json.dumps({"type": "start", "sample_rate": sr, "format": "s16le"}))
            await ws.send(s16(x))
            await ws.send('{"type": "flush"}')
            await ws.send(s16(x))
            await ws.send('{"type": "stop"}')
            msgs = await messages(ws)
        fs = finals(msgs)
        assert len(fs) == 2
        assert fs[0]["segment"] == 0
        assert fs[1]["segment"] == 1
        assert fs[0]["text"]
        assert fs[1]["text"]
        assert fs[1]["start"] == pytest.approx(fs[0]["end"], abs=0.01)
        assert msgs[-1] == {
            "type": "eof",
            "segments": 2,
            "duration": pytest.approx(2 * x.size / sr, abs=0.01),
        }

    serve(recognizer, body)


def test_endpointing_splits_segments(recognizer: asrserve.Recognizer) -> None:
    x, sr = read_wav(WAVS[0])
    silence = np.zeros(sr * 2, dtype=np.float32)
    audio = np.concatenate([silence[: sr // 10], x, silence, x])  # 0.1 s lead: off the step grid

    async def body(_: AsrServer, url: str) -> None:
        async with connect(url) as ws:
            start = {
                "type": "start",
                "sample_rate": sr,
                "endpointing": {"enabled": True, "rule2_min_trailing_silence": 0.8},
            }
            await ws.send(json.dumps(start))
            await ws.send(audio.astype("<f4").tobytes())
            await ws.send('{"type": "stop"}')
            msgs = await messages(ws)
        fs = finals(msgs)
        assert [f["segment"] for f in fs] == [0, 1]
        assert fs[1]["start"] > x.size / sr
        # the same segments as the core checking for an endpoint after every chunk
        want = _core_segments(recognizer, audio, sr, endpoint)
        assert [(f["tokens"], f["timestamps"], f["start"]) for f in fs] == want

    endpoint = EndpointConfig(
        enabled=True,
        rule2=EndpointRule(
            must_contain_nonsilence=True, min_trailing_silence=0.8, min_utterance_length=0.0
        ),
    )
    serve(recognizer, body)


def _core_segments(
    rec: asrserve.Recognizer, audio: npt.NDArray[np.float32], sr: int, endpoint: EndpointConfig
) -> list[tuple[list[str], list[float], float]]:
    s = rec.create_stream(endpoint=endpoint)
    s.accept_waveform(sr, audio)
    s.input_finished()
    out = []
    while rec.is_ready(s):
        rec.decode_streams([s])
        if rec.is_endpoint(s):
            r = rec.get_result(s)
            rec.reset(s)
            if r.text:
                out.append((r.tokens, r.timestamps, r.start_time))
    r = rec.get_result(s)
    if r.text:
        out.append((r.tokens, r.timestamps, r.start_time))
    return out


def test_shutdown_sends_finals_then_1001(
    recognizer: asrserve.Recognizer, offline: dict[Path, asrserve.Result]
) -> None:
    wav = WAVS[0]
    x, sr = read_wav(wav)

    async def body(server: AsrServer, url: str) -> None:
        async with connect(url) as ws:
            await ws.send(json.dumps({"type": "start", "sample_rate": sr, "format": "s16le"}))
            await ws.send(s16(x))
            await asyncio.sleep(0.2)
            shutdown = asyncio.create_task(server.shutdown())
            msgs = await messages(ws)
            await shutdown
            assert ws.close_code == 1001
        assert finals(msgs)[-1]["tokens"] == offline[wav].tokens
        assert msgs[-1]["type"] == "eof"

    serve(recognizer, body)


def test_healthz_and_plain_http(recognizer: asrserve.Recognizer) -> None:
    async def body(_: AsrServer, url: str) -> None:
        base = url.replace("ws://", "http://")
        status, text = await asyncio.to_thread(http_get, base + "/healthz")
        assert (status, text) == (200, "ok\n")
        status, text = await asyncio.to_thread(http_get, base + "/")
        assert status == 200  # the browser page; WebSocket clients upgrade on the same path
        assert "<html" in text
        status, _ = await asyncio.to_thread(http_get, base + "/anything-else")
        assert status == 404  # no such page (WebSocket clients still upgrade on any path)

    serve(recognizer, body)


SHERPA_CLIENT = shutil.which(
    "sherpa-onnx-online-websocket-client",
    path=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
)


@pytest.mark.skipif(SHERPA_CLIENT is None, reason="sherpa-onnx-bin not installed")
def test_sherpa_onnx_client_binary(
    recognizer: asrserve.Recognizer, offline: dict[Path, asrserve.Result]
) -> None:
    wav = WAVS[0]

    async def body(_: AsrServer, url: str) -> None:
        port = url.rsplit(":", 1)[1]
        proc = await asyncio.create_subprocess_exec(
            str(SHERPA_CLIENT),
            "--server-ip=127.0.0.1",
            f"--server-port={port}",
            "--seconds-per-message=0.01",
            str(wav),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0, out.decode()
        results = [
            json.loads(line[line.index("{") :])
            for line in out.decode().splitlines()
            if "OnMessage" in line and "{" in line
        ]
        assert results[-1]["is_final"]
        assert results[-1]["is_eof"]
        assert results[-1]["tokens"] == offline[wav].tokens

    serve(recognizer, body)
