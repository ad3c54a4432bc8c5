"""``POST /v1/audio/transcriptions`` with ``stream=true``: OpenAI's server-sent
events (``transcript.text.delta`` as segments end, one ``transcript.text.done``),
through the ``openai`` package and raw. Every test runs its own server on a
loopback port, bounded by ``asyncio.timeout`` (``serve``)."""

from __future__ import annotations

import asyncio
import io
import json
import time
from typing import Any

import aiohttp
import numpy as np
import numpy.typing as npt
import pytest
import soundfile as sf

import asrserve
from asrserve.server.app import AsrServer
from asrserve.server.openai_api import transcribe_segments
from tests import prometheus
from tests.conftest import read_wav
from tests.server.test_http import WAVS, multipart, recognizer, request, serve

__all__ = ["recognizer"]  # the module-scoped fixture of test_http

ROUTE = "/v1/audio/transcriptions"
RATE = 16000
Event = tuple[str | None, dict[str, Any]]


def talk(silence_after_s: float = 0.0) -> npt.NDArray[np.float32]:
    """The demo clips one after another with 2 s of silence between them, so
    that endpointing makes a segment of each; then ``silence_after_s`` of silence."""
    gap = np.zeros(2 * RATE, dtype=np.float32)
    parts = []
    for wav in WAVS:
        x, rate = read_wav(wav)
        assert rate == RATE
        parts += [x, gap]
    parts.append(np.zeros(round(silence_after_s * RATE), dtype=np.float32))
    return np.concatenate(parts)


def encoded(x: npt.NDArray[np.float32], fmt: str = "WAV") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, x, RATE, format=fmt, subtype="PCM_16")
    return buf.getvalue()


def parse_events(body: bytes) -> list[Event]:
    """The events of an SSE body, held to OpenAI's framing: each an optional
    ``event:`` line and one ``data: {json}`` line, then a blank line."""
    text = body.decode()
    assert text.endswith("\n\n"), text[-200:]
    events: list[Event] = []
    for block in text[:-2].split("\n\n"):
        lines = block.split("\n")
        name = None
        if lines[0].startswith("event: "):
            name = lines.pop(0)[len("event: ") :]
        assert len(lines) == 1, block
        assert lines[0].startswith("data: "), block
        events.append((name, json.loads(lines[0][len("data: ") :])))
    return events


def stream_form(data: bytes, **fields: str) -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field("model", "tiny-lstm")
    form.add_field("stream", "true")
    for k, v in fields.items():
        form.add_field(k, v)
    form.add_field("file", data, filename="talk.wav", content_type="application/octet-stream")
    return form


def metric(text: str, line: str) -> float:
    return prometheus.value(text, line) or 0.0


def test_the_openai_client_streams_deltas_then_done(recognizer: asrserve.Recognizer) -> None:
    openai = pytest.importorskip("openai")
    x = talk()
    data = encoded(x)
    want = transcribe_segments(recognizer, x, RATE)
    spoken = [s.text for s in want.segments if s.text]
    assert len(spoken) >= 2, "the clip should make several segments"

    async def body(server: AsrServer, base: str) -> None:
        def call() -> tuple[Any, list[Any], list[Any]]:
            client = openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0)
            file = ("talk.wav", data)
            plain = client.audio.transcriptions.create(model="tiny-lstm", file=file)
            events = list(
                client.audio.transcriptions.create(model="tiny-lstm", file=file, stream=True)
            )
            as_text = list(
                client.audio.transcriptions.create(
                    model="tiny-lstm", file=file, stream=True, response_format="text"
                )
            )
            return plain, events, as_text

        plain, events, as_text = await asyncio.to_thread(call)
        assert plain.text == want.text
        for got in (events, as_text):
            *deltas, done = got
            assert [e.type for e in deltas] == ["transcript.text.delta"] * len(spoken)
            assert done.type == "transcript.text.done"
            assert "".join(e.delta for e in deltas) == done.text == plain.text
            assert [e.delta.strip() for e in deltas] == spoken
            assert done.usage.type == "tokens"
            assert done.usage.output_tokens == sum(len(s.token_ids) for s in want.segments)
        _, _, out = await asyncio.to_thread(request, base + "/metrics")
        text = out.decode()
        route = f'route="{ROUTE}",status="200"'
        assert metric(text, f"asrserve_http_requests_total{{{route}}}") == 3
        assert metric(text, "asrserve_upload_audio_seconds_total") == pytest.approx(
            3 * x.size / RATE, abs=0.01
        )

    serve(recognizer, body)


def test_the_wire_format_and_deltas_while_decoding(recognizer: asrserve.Recognizer) -> None:
    """Raw: ``text/event-stream``, ``data: {json}`` blocks, no ``[DONE]``; the
    first delta comes long before the end of a long upload's decoding."""
    x = talk(silence_after_s=90.0)
    data = encoded(x, "FLAC")
    want = transcribe_segments(recognizer, x, RATE).text

    async def body(server: AsrServer, base: str) -> None:
        arrivals: list[float] = []
        raw = b""
        async with aiohttp.ClientSession() as session:
            t0 = time.monotonic()
            async with session.post(base + ROUTE, data=stream_form(data)) as r:
                assert r.status == 200
                assert r.headers["Content-Type"].startswith("text/event-stream")
                assert r.headers["Cache-Control"] == "no-cache"
                async for line in r.content:
                    raw += line
                    if line.startswith(b"data: "):
                        arrivals.append(time.monotonic() - t0)
        events = parse_events(raw)
        assert all(name is None for name, _ in events)
        *deltas, (_, done) = events
        assert len(deltas) == len(arrivals) - 1 >= 2
        for _, d in deltas:
            assert set(d) == {"type", "delta"}
            assert d["type"] == "transcript.text.delta"
        assert set(done) == {"type", "text", "usage"}
        assert done["type"] == "transcript.text.done"
        assert "".join(d["delta"] for _, d in deltas) == done["text"] == want
        assert set(done["usage"]) == {"type", "input_tokens", "output_tokens", "total_tokens"}
        # 90 s of silence follow the speech: its deltas come while that decodes
        assert arrivals[0] < 0.5 * arrivals[-1], arrivals

    serve(recognizer, body)


def test_errors_before_the_first_event_are_json(recognizer: asrserve.Recognizer) -> None:
    wav = WAVS[0].read_bytes()
    long_talk = encoded(talk())

    async def body(server: AsrServer, base: str) -> None:
        fmt = "response_format"
        cases = [
            ({"stream": "true", fmt: "srt"}, wav, 400, fmt, None),
            ({"stream": "True", fmt: "verbose_json"}, wav, 400, fmt, None),
            ({"stream": "yes"}, wav, 400, "stream", None),
            ({"stream": "1"}, b"this is not audio", 400, "file", "invalid_audio"),
            ({"stream": "true"}, long_talk, 413, "file", "audio_too_long"),
        ]
        for fields, data, status, param, code in cases:
            payload, ctype = multipart(fields, data)
            got, headers, out = await asyncio.to_thread(
                request, base + ROUTE, payload, {"Content-Type": ctype}
            )
            assert got == status, (fields, out)
            assert headers["Content-Type"].startswith("application/json")
            error = json.loads(out)["error"]
            assert (error["param"], error["code"]) == (param, code), error
        # stream=false (or 0) is the plain answer
        for flag in ("false", "0"):
            payload, ctype = multipart({"stream": flag}, wav)
            got, headers, out = await asyncio.to_thread(
                request, base + ROUTE, payload, {"Content-Type": ctype}
            )
            assert got == 200
            assert set(json.loads(out)) == {"text"}

    serve(recognizer, body, max_audio_s=10.0)


def test_an_error_after_the_first_event_ends_the_stream(
    recognizer: asrserve.Recognizer,
) -> None:
    """An ADTS file cut short: the segments before the cut are sent, then an
    ``error`` event (the openai client raises it) and no ``done``."""
    openai = pytest.importorskip("openai")
    pytest.importorskip("av")
    from tests.test_audio_formats import encode

    aac = encode(talk(), RATE, "aac")
    cut = aac[: len(aac) * 8 // 10]

    async def body(server: AsrServer, base: str) -> None:
        async with (
            aiohttp.ClientSession() as session,
            session.post(base + ROUTE, data=stream_form(cut)) as r,
        ):
            assert r.status == 200
            events = parse_events(await r.read())
        *deltas, (name, last) = events
        assert deltas
        assert all(e["type"] == "transcript.text.delta" for _, e in deltas)
        assert name == "error"
        assert last["type"] == "error"
        error = last["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert error["code"] == "invalid_audio"
        assert "truncated" in error["message"]

        def call() -> list[str]:
            client = openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0)
            seen = []
            events = client.audio.transcriptions.create(
                model="tiny-lstm", file=("cut.aac", cut), stream=True
            )
            with pytest.raises(openai.APIError, match="truncated"):  # noqa: PT012
                for event in events:
                    seen.append(event.type)
            return seen

        seen = await asyncio.to_thread(call)
        assert seen == ["transcript.text.delta"] * len(deltas)
        _, _, out = await asyncio.to_thread(request, base + "/metrics")
        assert metric(out.decode(), 'asrserve_errors_total{code="invalid_audio"}') == 2

    serve(recognizer, body)


def test_a_client_leaving_mid_stream_stops_its_decode(recognizer: asrserve.Recognizer) -> None:
    """One upload worker, no queue: a streamed upload of 10 min whose client
    leaves after the first delta frees the worker within a second or so (the
    next upload is served, not refused with 429), and the server stays healthy."""
    x = talk(silence_after_s=600.0)
    data = encoded(x, "FLAC")
    wav = WAVS[0].read_bytes()

    async def body(server: AsrServer, base: str) -> None:
        async with aiohttp.ClientSession() as session:
            r = await session.post(base + ROUTE, data=stream_form(data))
            assert r.status == 200
            first = await r.content.readuntil(b"\n\n")
            assert first.startswith(b'data: {"type": "transcript.text.delta"')
            r.close()  # drop the connection mid-stream
        await asyncio.sleep(1.0)
        payload, ctype = multipart({}, wav)
        t0 = time.monotonic()
        status, _, out = await asyncio.to_thread(
            request, base + ROUTE, payload, {"Content-Type": ctype}
        )
        assert status == 200, out
        assert time.monotonic() - t0 < 3.0
        status, _, _ = await asyncio.to_thread(request, base + "/healthz")
        assert status == 200
        _, _, out = await asyncio.to_thread(request, base + "/metrics")
        text = out.decode()
        assert metric(text, 'asrserve_errors_total{code="client_gone"}') == 1
        assert metric(text, "asrserve_upload_audio_seconds_total") == pytest.approx(
            read_wav(WAVS[0])[0].size / RATE, abs=0.01
        )

    serve(recognizer, body, upload_workers=1, max_queued_uploads=0)
