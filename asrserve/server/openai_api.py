"""OpenAI-compatible ``POST /v1/audio/transcriptions``.

The upload is decoded through the same streaming core as every other
transport (endpointing splits it into segments), in a worker thread; the
event loop only parses the multipart body. Errors use OpenAI's error body
``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from aiohttp import BodyPartReader, web

from asrserve.audio import decode_audio_bytes, resample
from asrserve.config import EndpointConfig
from asrserve.core.events import Result
from asrserve.core.recognizer import Recognizer
from asrserve.core.stream import segment_end
from asrserve.errors import AudioFormatError
from asrserve.subtitles import make_cues, to_srt, to_vtt, words_with_times

RESPONSE_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
GRANULARITIES = ("segment", "word")
_CHUNK_S = 1.0


def openai_error(
    status: int, message: str, *, param: str | None = None, code: str | None = None
) -> web.Response:
    kind = "invalid_request_error" if status < 500 else "server_error"
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return web.json_response(body, status=status)


@dataclass
class Transcript:
    segments: list[Result] = field(default_factory=list)
    ends: list[float] = field(default_factory=list)
    """Where each segment ended (:func:`asrserve.core.stream.segment_end`, as
    the WebSocket's finals say)."""
    duration: float = 0.0

    def add(self, result: Result, end: float) -> None:
        self.segments.append(result)
        self.ends.append(end)

    @property
    def text(self) -> str:
        return " ".join(s.text for s in self.segments if s.text)


def transcribe_segments(
    recognizer: Recognizer, samples: npt.NDArray[np.float32], rate: int
) -> Transcript:
    """Decode ``samples`` as one stream, a segment per endpoint (sherpa's rules)."""
    stream = recognizer.create_stream(endpoint=EndpointConfig(enabled=True))
    out = Transcript(duration=samples.size / rate)
    step = max(1, int(_CHUNK_S * rate))

    def advance() -> None:
        while recognizer.decode_streams([stream]):
            if recognizer.is_endpoint(stream):
                result = recognizer.get_result(stream, is_final=True)
                if result.text:
                    out.add(result, segment_end(stream, recognizer.frame_shift_s))
                recognizer.reset(stream)

    for begin in range(0, samples.size, step):
        stream.accept_waveform(rate, samples[begin : begin + step])
        advance()
    stream.input_finished()
    advance()
    last = recognizer.get_result(stream, is_final=True)
    if last.text or not out.segments:
        out.add(last, segment_end(stream, recognizer.frame_shift_s))
    return out


def _segment_end(transcript: Transcript, i: int) -> float:
    return transcript.ends[i]


def _words(transcript: Transcript) -> list[dict[str, Any]]:
    words = []
    for i, seg in enumerate(transcript.segments):
        for w, start, end in words_with_times(seg, _segment_end(transcript, i)):
            words.append({"word": w, "start": round(start, 3), "end": round(end, 3)})
    return words


def verbose_json(
    transcript: Transcript, language: str, granularities: Sequence[str]
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "task": "transcribe",
        "language": language,
        "duration": round(transcript.duration, 3),
        "text": transcript.text,
    }
    if "segment" in granularities or not granularities:
        body["segments"] = [
            {
                "id": i,
                "seek": 0,
                "start": round(seg.start_time, 3),
                "end": round(_segment_end(transcript, i), 3),
                "text": seg.text,
                "tokens": seg.token_ids,
                # a transducer has no such scores; fields kept for client compatibility
                "temperature": 0.0,
                "avg_logprob": 0.0,
                "compression_ratio": 0.0,
                "no_speech_prob": 0.0,
            }
            for i, seg in enumerate(transcript.segments)
        ]
    if "word" in granularities:
        body["words"] = _words(transcript)
    return body


def _subtitles(transcript: Transcript, fmt: str) -> str:
    cues = []
    for i, seg in enumerate(transcript.segments):
        cues += make_cues(seg, _segment_end(transcript, i))
    return to_srt(cues) if fmt == "srt" else to_vtt(cues)


@dataclass
class Upload:
    audio: bytes = b""
    filename: str = "upload"
    fields: dict[str, list[str]] = field(default_factory=dict)


class TooLarge(Exception):  # noqa: N818 - an HTTP 413, not an error of ours
    pass


async def read_upload(request: web.Request, limit: int) -> Upload:
    """The multipart form: ``file`` bytes (at most ``limit``) and text fields."""
    if request.content_length is not None and request.content_length > limit + 65536:
        raise TooLarge
    if not request.content_type.startswith("multipart/"):
        raise ValueError(f"Content-Type is {request.content_type or 'missing'!r}")
    try:
        reader = await request.multipart()
    except (KeyError, AssertionError) as exc:  # aiohttp's complaints about the headers
        raise ValueError(f"not a multipart body ({exc!r})") from exc
    upload = Upload()
    seen_file = False
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader):
            continue
        if part.name == "file":
            seen_file = True
            upload.filename = part.filename or "upload"
            chunks, size = [], 0
            while chunk := await part.read_chunk(1 << 16):
                size += len(chunk)
                if size > limit:
                    raise TooLarge
                chunks.append(chunk)
            upload.audio = b"".join(chunks)
        elif part.name:
            value = (await part.read(decode=True)).decode("utf-8", "replace")
            upload.fields.setdefault(part.name, []).append(value)
    if not seen_file:
        raise ValueError("missing 'file'")
    return upload


class TranscriptionsRoute:
    """The route handler; ``executor`` runs the decoding."""

    def __init__(
        self, recognizer: Recognizer, executor: Executor, max_upload_bytes: int, model: str
    ) -> None:
        self.recognizer = recognizer
        self.executor = executor
        self.max_upload_bytes = max_upload_bytes
        self.model = model

    async def handle(self, request: web.Request) -> web.Response:
        try:
            upload = await read_upload(request, self.max_upload_bytes)
        except TooLarge:
            mb = self.max_upload_bytes / 1e6
            return openai_error(413, f"file too large: the limit is {mb:g} MB", param="file")
        except (ValueError, AssertionError) as exc:
            msg = f"expected multipart/form-data with a 'file' field ({exc})"
            return openai_error(400, msg, param="file")
        fields = upload.fields
        fmt = (fields.get("response_format") or ["json"])[0]
        if fmt not in RESPONSE_FORMATS:
            expected = ", ".join(RESPONSE_FORMATS)
            msg = f"unsupported response_format {fmt!r}; expected one of {expected}"
            return openai_error(400, msg, param="response_format")
        granularities = fields.get("timestamp_granularities[]", []) + fields.get(
            "timestamp_granularities", []
        )
        bad = [g for g in granularities if g not in GRANULARITIES]
        if bad:
            msg = f"unsupported timestamp_granularities {bad}; expected segment or word"
            return openai_error(400, msg, param="timestamp_granularities")
        language = (fields.get("language") or ["en"])[0]
        loop = asyncio.get_running_loop()
        try:
            transcript = await loop.run_in_executor(self.executor, self._decode, upload)
        except AudioFormatError as exc:
            return openai_error(400, str(exc), param="file", code="invalid_audio")
        if fmt == "text":
            return web.Response(text=transcript.text + "\n")
        if fmt in ("srt", "vtt"):
            ctype = "application/x-subrip" if fmt == "srt" else "text/vtt"
            return web.Response(text=_subtitles(transcript, fmt), content_type=ctype)
        if fmt == "verbose_json":
            return web.json_response(verbose_json(transcript, language, granularities))
        return web.Response(
            text=json.dumps({"text": transcript.text}), content_type="application/json"
        )

    def _decode(self, upload: Upload) -> Transcript:
        samples, rate = decode_audio_bytes(upload.audio, upload.filename)
        model_rate = self.recognizer.feature_config.sample_rate
        samples = resample(samples, rate, model_rate)
        return transcribe_segments(self.recognizer, samples, model_rate)
