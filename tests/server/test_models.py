"""Several models in one server (``serve --model NAME=DIR`` repeated): chosen
per session and per request, loaded on first use, the least recently used
idle one unloaded past ``--max-loaded-models``, one that fails to load named
to its client while the others go on serving.

Models: the demo LSTM's fp32 files (the default), two zipformer fixtures
(random weights: their tokens are noise, but deterministic), all fp32, so a
stream's tokens do not depend on which streams share its encoder calls."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from websockets.asyncio.client import connect

import asrserve
from asrserve.cli import build_parser, served_models
from asrserve.config import EndpointConfig, ServerConfig
from asrserve.core.interfaces import AnyRecognizer
from asrserve.errors import ConfigError
from asrserve.server.app import AsrServer
from asrserve.server.models import ModelEntry, ModelPool
from tests import prometheus
from tests.conftest import FIXTURE_MODELS, read_wav
from tests.server.test_app import finals, messages

TIMEOUT_S = 90
NO_ENDPOINT = EndpointConfig(enabled=False)


def load(model_dir: Path) -> AnyRecognizer:
    return asrserve.load_model(model_dir, precision="fp32", endpoint=NO_ENDPOINT)


@pytest.fixture(scope="module")
def dirs(tiny_lstm_dir: Path) -> dict[str, Path]:
    return {
        "lstm": tiny_lstm_dir,
        "zip2": FIXTURE_MODELS / "zipformer2-tiny",
        "zip1": FIXTURE_MODELS / "zipformer1-tiny",
    }


@pytest.fixture(scope="module")
def wavs(tiny_wavs: list[Path]) -> list[Path]:
    return tiny_wavs[:4]


@pytest.fixture(scope="module")
def alone(dirs: dict[str, Path], wavs: list[Path]) -> dict[tuple[str, Path], list[str]]:
    """Each model's tokens for each clip, decoded alone."""
    out = {}
    for name, model_dir in dirs.items():
        rec = load(model_dir)
        for wav in wavs:
            out[name, wav] = rec.transcribe(wav).tokens
    return out


def pool(dirs: dict[str, Path], loads: list[str], **options: Any) -> ModelPool:
    def loader(name: str) -> Callable[[], AnyRecognizer]:
        def run() -> AnyRecognizer:
            loads.append(name)
            return load(dirs[name])

        return run

    entries = [ModelEntry(name, str(d), loader(name)) for name, d in dirs.items()]
    return ModelPool(entries, **options)


def serve(
    models: ModelPool, body: Callable[[AsrServer, str], Awaitable[Any]], **config: Any
) -> Any:
    async def main() -> Any:
        async with asyncio.timeout(TIMEOUT_S):
            default = models.entries[models.default].load()
            cfg = ServerConfig(port=0, **config)
            async with AsrServer(default, cfg, models=models) as server:
                return await body(server, f"ws://127.0.0.1:{server.port}")

    return asyncio.run(main())


def http(url: str, data: bytes | None = None, headers: dict[str, str] | None = None) -> Any:
    req = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


async def asrserve_session(
    url: str, wav: Path, start: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """The asrserve dialect with float32 frames (the tokens of random-weight
    models change with int16 rounding)."""
    x, sr = read_wav(wav)
    async with connect(url) as ws:
        await ws.send(
            json.dumps({"type": "start", "sample_rate": sr, "format": "f32le", **(start or {})})
        )
        data = x.astype("<f4").tobytes()
        for i in range(0, len(data), 6400):
            await ws.send(data[i : i + 6400])
        await ws.send('{"type": "stop"}')
        return await messages(ws)


async def sherpa_session(url: str, wav: Path) -> list[dict[str, Any]]:
    """sherpa-onnx's dialect: float32 frames, ``Done``, JSON results, ``Done!``."""
    x, _ = read_wav(wav)
    out = []
    async with connect(url) as ws:
        data = x.astype("<f4").tobytes()
        for i in range(0, len(data), 6400):
            await ws.send(data[i : i + 6400])
        await ws.send("Done")
        async for m in ws:
            if m == "Done!":
                break
            out.append(json.loads(m))
    return out


def test_streams_over_two_models_equal_decoding_alone(
    dirs: dict[str, Path], wavs: list[Path], alone: dict[tuple[str, Path], list[str]]
) -> None:
    """16 concurrent streams, half on each model (asrserve dialect's
    ``model``, sherpa's ``/models/NAME`` and ``?model=``); each gets the
    tokens of its model alone; the second model loads once, on first use;
    ``/metrics`` counts each model's streams under its name."""
    loads: list[str] = []
    models = pool({k: dirs[k] for k in ("lstm", "zip2")}, loads)
    jobs = [(("lstm", "zip2")[i % 2], wavs[i % len(wavs)], i % 4) for i in range(16)]

    async def one(url: str, name: str, wav: Path, how: int) -> list[str]:
        if how == 0:  # asrserve dialect, model named in start
            msgs = await asrserve_session(url, wav, start={"model": name})
            return [t for f in finals(msgs) for t in f["tokens"]]
        if how == 1:  # sherpa dialect by path
            msgs = await sherpa_session(f"{url}/models/{name}", wav)
        elif how == 2:  # by query
            msgs = await sherpa_session(f"{url}/?model={name}", wav)
        else:  # asrserve dialect, model by path
            msgs = await asrserve_session(f"{url}/models/{name}", wav)
            return [t for f in finals(msgs) for t in f["tokens"]]
        return msgs[-1]["tokens"]  # type: ignore[no-any-return]

    async def body(server: AsrServer, url: str) -> tuple[list[list[str]], str]:
        got = await asyncio.gather(*(one(url, n, w, how) for n, w, how in jobs))
        _, text = await asyncio.to_thread(http, url.replace("ws://", "http://") + "/metrics")
        return got, text

    got, text = serve(models, body)
    for (name, wav, how), tokens in zip(jobs, got, strict=True):
        assert tokens == alone[name, wav], (name, wav.name, how)
    assert loads == ["lstm", "zip2"]  # the default at start, zip2 once
    for name in ("lstm", "zip2"):
        assert prometheus.value(text, "asrserve_connections_total", model=name) == 8
        assert prometheus.value(text, "asrserve_active_streams", model=name) == 0
        assert prometheus.value(text, "asrserve_batch_size_count", model=name)


def test_lru_eviction_listing_and_http_selection(
    dirs: dict[str, Path], wavs: list[Path], alone: dict[tuple[str, Path], list[str]]
) -> None:
    """Three models, at most two loaded: the third loads on first use (an
    upload naming it) and unloads the least recently used idle one; the
    listing says which are loaded; an unknown name is a 404 naming the
    known ones, over HTTP and before a WebSocket upgrade."""
    loads: list[str] = []
    models = pool(dirs, loads, max_loaded=2)
    wav = wavs[0]
    body_bytes = wav.read_bytes()

    def upload(base: str, model: str) -> tuple[int, str]:
        boundary = "xyzzy"
        parts = [
            f'--{boundary}\r\nContent-Disposition: form-data; name="model"\r\n\r\n{model}\r\n',
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n'
            "Content-Type: audio/wav\r\n\r\n",
        ]
        data = "".join(parts).encode() + body_bytes + f"\r\n--{boundary}--\r\n".encode()
        ctype = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
        return http(base + "/v1/audio/transcriptions", data, ctype)  # type: ignore[no-any-return]

    async def body(server: AsrServer, url: str) -> dict[str, Any]:
        base = url.replace("ws://", "http://")
        seen: dict[str, Any] = {}
        seen["before"] = json.loads((await asyncio.to_thread(http, base + "/v1/models"))[1])
        await asrserve_session(url, wav, start={"model": "zip2"})  # lstm, zip2 loaded
        seen["zip1"] = await asyncio.to_thread(upload, base, "zip1")  # evicts lstm (LRU)
        seen["after"] = json.loads((await asyncio.to_thread(http, base + "/v1/models"))[1])
        seen["one"] = await asyncio.to_thread(http, base + "/v1/models/zip1")
        seen["unknown_http"] = await asyncio.to_thread(upload, base, "nope")
        seen["unknown_get"] = await asyncio.to_thread(http, base + "/v1/models/nope")
        try:
            async with connect(f"{url}/models/nope"):
                seen["unknown_ws"] = "upgraded"
        except Exception as exc:  # InvalidStatus
            seen["unknown_ws"] = exc.response.status_code  # type: ignore[attr-defined]
        msgs = await asrserve_session(url, wav, start={"model": "nope"})
        seen["unknown_start"] = msgs
        msgs = await asrserve_session(url, wav)  # the default loads again
        seen["lstm_again"] = [t for f in finals(msgs) for t in f["tokens"]]
        return seen

    seen = serve(models, body)
    before = {m["id"]: m for m in seen["before"]["data"]}
    assert list(before) == ["lstm", "zip2", "zip1"]
    assert [before[n]["loaded"] for n in before] == [True, False, False]
    assert before["lstm"]["default"] is True
    assert before["lstm"]["family"] == "lstm"
    assert before["lstm"]["precision"] == "fp32"
    status, text = seen["zip1"]
    assert status == 200, text
    after = {m["id"]: m for m in seen["after"]["data"]}
    assert [after[n]["loaded"] for n in after] == [False, True, True]  # lstm evicted
    assert before["zip1"]["family"] is None  # known once loaded
    assert after["zip1"]["family"] == "zipformer"
    assert after["lstm"]["family"] == "lstm"  # remembered after unloading
    assert seen["one"][0] == 200
    assert json.loads(seen["one"][1])["id"] == "zip1"
    for key in ("unknown_http", "unknown_get"):
        status, text = seen[key]
        assert status == 404, (key, text)
        error = json.loads(text)["error"]
        assert error["code"] == "model_not_found"
        assert "'lstm', 'zip2', 'zip1'" in error["message"]
    assert seen["unknown_ws"] == 404
    (refusal,) = seen["unknown_start"]
    assert refusal["type"] == "error"
    assert refusal["code"] == "bad_config"
    assert "unknown model 'nope'" in refusal["message"]
    assert seen["lstm_again"] == alone["lstm", wav]
    assert loads == ["lstm", "zip2", "zip1", "lstm"]


def test_a_model_that_fails_to_load_is_named_and_others_serve(
    dirs: dict[str, Path],
    wavs: list[Path],
    tmp_path: Path,
    alone: dict[tuple[str, Path], list[str]],
) -> None:
    """A truncated encoder: the session asking for it is refused with the
    file's name (asrserve dialect: an error, then close 1011; HTTP: 500
    ``model_load_failed``); the server and the default model go on."""
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in dirs["zip2"].iterdir():
        data = f.read_bytes()
        (broken / f.name).write_bytes(data[: len(data) // 3] if f.name == "encoder.onnx" else data)
    loads: list[str] = []
    models = pool({"lstm": dirs["lstm"], "broken": broken}, loads)
    wav = wavs[1]

    async def body(server: AsrServer, url: str) -> dict[str, Any]:
        base = url.replace("ws://", "http://")
        seen: dict[str, Any] = {}
        seen["ws"] = await asrserve_session(url, wav, start={"model": "broken"})
        msgs = await asrserve_session(url, wav)
        seen["default"] = [t for f in finals(msgs) for t in f["tokens"]]
        seen["ready"] = await asyncio.to_thread(http, base + "/readyz")
        return seen

    seen = serve(models, body)
    (error,) = seen["ws"]
    assert error["type"] == "error"
    assert error["code"] == "model_load_failed"
    assert "encoder.onnx" in error["message"], error
    assert seen["default"] == alone["lstm", wav]
    assert seen["ready"] == (200, "ready\n")


def test_idle_models_unload_after_the_ttl(dirs: dict[str, Path], wavs: list[Path]) -> None:
    loads: list[str] = []
    models = pool({k: dirs[k] for k in ("lstm", "zip2")}, loads, ttl_s=1.0)

    async def body(server: AsrServer, url: str) -> list[bool]:
        await asrserve_session(url, wavs[0], start={"model": "zip2"})
        loaded = [models.get("zip2") is not None]
        await asyncio.sleep(2.6)  # ttl 1 s, checked every second
        return [*loaded, models.get("zip2") is not None, models.get("lstm") is not None]

    assert serve(models, body) == [True, False, False]  # the default too: it reloads on use


def test_one_model_takes_any_name(dirs: dict[str, Path], wavs: list[Path]) -> None:
    """With one model, every name is that model (OpenAI clients send
    ``whisper-1``); unknown names are refused only when there is a choice."""
    models = pool({"lstm": dirs["lstm"]}, [])
    assert models.resolve("whisper-1") == "lstm"
    assert models.resolve("") == "lstm"
    two = pool({k: dirs[k] for k in ("lstm", "zip2")}, [])
    with pytest.raises(
        ConfigError, match="unknown model 'whisper-1'; this server serves 'lstm', 'zip2'"
    ):
        two.resolve("whisper-1")
    with pytest.raises(ConfigError, match="given twice"):
        ModelPool([ModelEntry("a", "x", lambda: None), ModelEntry("a", "y", lambda: None)])  # type: ignore[arg-type, return-value]


def test_cli_models_are_named_and_lazy(dirs: dict[str, Path]) -> None:
    args = build_parser().parse_args(
        ["serve", "--model", f"en={dirs['lstm']}", "--model", str(dirs["zip2"]),
         "--max-loaded-models", "1", "--model-ttl-s", "30"]
    )  # fmt: skip
    models = served_models(args, NO_ENDPOINT)
    assert models.names == ["en", "zipformer2-tiny"]
    assert models.default == "en"
    assert (models.max_loaded, models.ttl_s) == (1, 30.0)
    assert models.entries["zipformer2-tiny"].source == str(dirs["zip2"])
    rec = models.entries["zipformer2-tiny"].load()
    assert rec.model.family  # loaded with serve's model options
    assert np.isfinite(rec.frame_shift_s)


def test_realtime_chooses_by_url_and_by_session(dirs: dict[str, Path], wavs: list[Path]) -> None:
    """OpenAI realtime: ``?model=`` on the URL, or the transcription model in
    ``session.update`` before audio starts; each session runs on that model."""
    import base64

    models = pool({k: dirs[k] for k in ("lstm", "zip2", "zip1")}, [])
    x, _ = read_wav(wavs[0])
    audio = base64.b64encode((np.clip(x, -1, 1) * 32767).astype("<i2").tobytes()).decode()

    async def session(url: str, update_model: str | None) -> list[str]:
        kinds = []
        async with connect(url) as ws:
            kinds.append(json.loads(await ws.recv())["type"])
            if update_model is not None:
                transcription = {"model": update_model}
                update = {"input_audio_format": "pcm16", "input_audio_transcription": transcription}
                await ws.send(
                    json.dumps({"type": "transcription_session.update", "session": update})
                )
                kinds.append(json.loads(await ws.recv())["type"])
            await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": audio}))
            await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
            async for m in ws:
                kind = json.loads(m)["type"]
                kinds.append(kind)
                if kind.endswith(".completed") or kind == "error":
                    break
        return kinds

    async def body(server: AsrServer, url: str) -> tuple[list[list[str]], str]:
        rt = f"{url}/v1/realtime?intent=transcription"
        got = [
            await session(rt + "&model=zip2", None),
            await session(rt, "zip1"),
            await session(rt + "&model=zip2", "nope"),
        ]
        _, text = await asyncio.to_thread(http, url.replace("ws://", "http://") + "/metrics")
        return got, text

    got, text = serve(models, body)
    completed = "conversation.item.input_audio_transcription.completed"
    assert got[0][-1] == completed, got[0]
    assert got[1][-1] == completed, got[1]
    assert got[2][-1] == "error", got[2]
    assert prometheus.value(text, "asrserve_connections_total", model="zip2") == 2
    assert prometheus.value(text, "asrserve_audio_seconds_total", model="zip1")  # decoded there
    assert models.get("zip1") is None  # the server stopped: every model unloaded
