"""OpenAI-compatible ``POST /v1/audio/transcriptions``.

The upload is decoded through the same streaming core as every other
transport (endpointing splits it into segments), in a worker thread; the
event loop only parses the multipart body. Errors use OpenAI's error body
``{"error": {"message", "type", "param", "code"}}``.

No upload can hold the server: the multipart form is read under caps on its
parts and fields; the container's header is checked (duration, sample rate,
channels) before any audio is decoded; the audio is decoded, resampled and
recognized one second at a time (memory does not grow with the file); uploads
run on ``upload_workers`` threads behind a queue of ``max_queued_uploads``
(beyond it: 429 and ``Retry-After``) and count as connections, server-wide
and per client address; and a decode stops within about a second of its
client going away.

With ``stream=true`` the answer is OpenAI's server-sent events: a
``transcript.text.delta`` as each segment ends (its text, after a space when
text came before: the deltas concatenate to the whole text), then one
``transcript.text.done``. Errors before the first event are the usual JSON
errors; after it, an ``error`` event ends the stream.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt
from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from asrserve.audio import check_upload_header, upload_blocks
from asrserve.config import DecodingConfig, EndpointConfig, ServerConfig
from asrserve.core.events import Result
from asrserve.core.interfaces import AnyRecognizer
from asrserve.core.segments import segments
from asrserve.core.stream import segment_end
from asrserve.errors import AsrServeError, AudioFormatError, AudioLimitError, ConfigError
from asrserve.server.auth import Quota
from asrserve.server.models import ModelPool, ModelsBusyError, UnknownModelError
from asrserve.subtitles import make_cues, to_srt, to_vtt, words_with_times

log = logging.getLogger("asrserve.server")

RESPONSE_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
STREAM_FORMATS = ("json", "text")
"""The response formats ``stream=true`` takes (OpenAI's streaming models take
these; the events are the same for both)."""
GRANULARITIES = ("segment", "word")
_CHUNK_S = 1.0
"""Seconds of audio per piece fed to the stream (and per block read from an upload)."""

MAX_PARTS = 32
"""Most parts a multipart form may have (OpenAI's form has under ten)."""
MAX_FIELD_BYTES = 64 * 1024
"""Largest text field (a prompt is the longest OpenAI's form has)."""
FIELDS = frozenset(
    {
        "file",
        "model",
        "language",
        "prompt",
        "response_format",
        "temperature",
        "timestamp_granularities[]",
        "timestamp_granularities",
        "include[]",
        "include",
        "chunking_strategy",
        "stream",
    }
)
"""The form fields of OpenAI's transcription API; any other is refused."""
RETRY_AFTER_S = 5
"""What ``Retry-After`` says when the upload queue or the server is full."""
_POLL_S = 0.2
"""How often a waiting handler checks that its client is still connected."""


def _request_key(name: str, kind: type) -> Any:
    """A typed key of a request's storage (aiohttp >= 3.13 warns on plain
    strings), or the plain name on older aiohttp."""
    maker = getattr(web, "RequestKey", None)
    return maker(name, kind) if maker is not None else name


MODEL_KEY = _request_key("model", str)
"""The served model's name, for /metrics."""
AUDIO_S_KEY = _request_key("audio_s", float)
"""Seconds of audio transcribed, for the access record and /metrics."""


def openai_error(
    status: int,
    message: str,
    *,
    param: str | None = None,
    code: str | None = None,
    retry_after: int | None = None,
) -> web.Response:
    kind = "invalid_request_error" if status < 500 else "server_error"
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    response = web.json_response(body, status=status)
    if retry_after is not None:
        response.headers["Retry-After"] = str(retry_after)
    return response


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


class UploadCancelled(Exception):  # noqa: N818 - the client left, not an error of ours
    """The decode stopped because its client went away."""


def transcribe_segments(
    recognizer: AnyRecognizer, samples: npt.NDArray[np.float32], rate: int
) -> Transcript:
    """Decode ``samples`` as one stream, a segment per endpoint (sherpa's rules)."""
    step = max(1, int(_CHUNK_S * rate))
    pieces = ((rate, samples[begin : begin + step]) for begin in range(0, samples.size, step))
    return transcribe_pieces(recognizer, pieces)


def transcribe_pieces(
    recognizer: AnyRecognizer,
    pieces: Iterable[tuple[int, npt.NDArray[np.float32]]],
    cancelled: threading.Event | None = None,
    on_segment: Callable[[Result], None] | None = None,
    decoding: DecodingConfig | None = None,
) -> Transcript:
    """:func:`transcribe_segments` for audio arriving in ``(sample_rate, samples)``
    pieces (one rate throughout; the stream resamples). Between pieces it
    raises :class:`UploadCancelled` once ``cancelled`` is set; ``on_segment``
    is called with each segment's result as it ends."""
    stream = recognizer.create_stream(decoding=decoding, endpoint=EndpointConfig(enabled=True))
    out = Transcript()
    received, input_rate = 0, 1  # samples of input audio, at its rate

    def counted() -> Iterator[tuple[int, npt.NDArray[np.float32]]]:
        nonlocal received, input_rate
        for rate, piece in pieces:
            if cancelled is not None and cancelled.is_set():
                raise UploadCancelled
            received, input_rate = received + piece.size, rate
            yield rate, piece

    for seg in segments(recognizer, stream, counted()):
        out.add(seg.result, seg.end)
        if on_segment is not None:
            on_segment(seg.result)
    if not out.segments:  # nothing heard: one empty segment over the audio
        out.add(Result(is_final=True), segment_end(stream, recognizer.frame_shift_s))
    out.duration = received / input_rate
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


class FormError(ValueError):
    """The multipart form is malformed or over a limit (HTTP 400); the message
    says which."""


async def read_upload(request: web.Request, limit: int) -> Upload:
    """The multipart form: ``file`` bytes (at most ``limit``) and text fields.

    The work per request is bounded: at most :data:`MAX_PARTS` parts, text
    fields of at most :data:`MAX_FIELD_BYTES`, only OpenAI's field names, one
    file; the first part over a limit ends the reading with :class:`FormError`,
    as does a part aiohttp cannot parse (garbage headers)."""
    if request.content_length is not None and request.content_length > limit + 65536:
        raise TooLarge
    if not request.content_type.startswith("multipart/"):
        raise FormError(f"Content-Type is {request.content_type or 'missing'!r}")
    try:
        return await _read_parts(request, limit)
    except FormError:
        raise
    except (HttpProcessingError, ValueError, AssertionError, LookupError) as exc:
        # aiohttp's complaints about a part's headers or the body's framing
        reason = getattr(exc, "message", None) or str(exc) or type(exc).__name__
        raise FormError(f"malformed multipart body: {' '.join(str(reason).split())[:200]}") from exc


async def _read_parts(request: web.Request, limit: int) -> Upload:
    reader = await request.multipart()
    upload = Upload()
    seen_file = False
    parts = 0
    while (part := await reader.next()) is not None:
        parts += 1
        if parts > MAX_PARTS:
            raise FormError(f"more than {MAX_PARTS} parts")
        if not isinstance(part, BodyPartReader):
            raise FormError("a nested multipart part")
        name = part.name
        if name not in FIELDS:
            known = ", ".join(sorted(FIELDS))
            raise FormError(f"unknown field {name!r}; the fields are {known}")
        encoding = part.headers.get("Content-Encoding", "identity").lower()
        if encoding != "identity":
            raise FormError(f"field {name!r} has Content-Encoding {encoding!r}; send it as is")
        if name == "file":
            if seen_file:
                raise FormError("more than one 'file'")
            seen_file = True
            upload.filename = part.filename or "upload"
            upload.audio = await _read_part(part, limit, TooLarge)
        else:
            value = await _read_part(
                part,
                MAX_FIELD_BYTES,
                FormError(f"field {name!r} is longer than {MAX_FIELD_BYTES} bytes"),
            )
            upload.fields.setdefault(name, []).append(value.decode("utf-8", "replace"))
    if not seen_file:
        raise FormError("missing 'file'")
    return upload


async def _read_part(part: BodyPartReader, limit: int, over: Exception | type[Exception]) -> bytes:
    """A part's raw bytes; ``over`` is raised past ``limit`` bytes."""
    chunks, size = [], 0
    while chunk := await part.read_chunk(1 << 16):
        size += len(chunk)
        if size > limit:
            raise over
        chunks.append(chunk)
    return b"".join(chunks)


class TranscriptionsRoute:
    """The route handler; ``executor`` (``config.upload_workers`` threads) runs
    the decoding.

    An upload counts as a connection from its request's start to its answer:
    against ``config.max_connections`` together with the open streams
    (``streams()``), and against ``per_ip``, the quota WebSocket streams take
    from too. ``refused(code)`` names a refusal in the metrics and access line.
    """

    def __init__(
        self,
        models: ModelPool,
        executor: concurrent.futures.Executor,
        config: ServerConfig,
        *,
        per_ip: Quota | None = None,
        streams: Callable[[], int] = lambda: 0,
        refused: Callable[[str], None] = lambda code: None,
    ) -> None:
        self.models = models
        self.executor = executor
        self.config = config
        self.max_upload_bytes = config.max_upload_bytes
        self.per_ip = per_ip or Quota(0)
        self.streams = streams
        self.refused = refused
        self.active = 0
        """Uploads holding a connection (reading, waiting or decoding)."""
        self.jobs = 0
        """Uploads admitted to decoding, running or queued (until their worker stops)."""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        c = self.config
        address = request.remote or "?"
        if self.streams() + self.active >= c.max_connections:
            self.refused("full")
            n = c.max_connections
            msg = f"server is full: {n} of {n} connections active"
            return openai_error(503, msg, code="server_full", retry_after=RETRY_AFTER_S)
        if self.per_ip.full(address):
            self.refused("limit")
            msg = f"too many connections from {address}: the limit is {self.per_ip.limit}"
            return openai_error(429, msg, code="rate_limit_exceeded", retry_after=RETRY_AFTER_S)
        self.active += 1
        self.per_ip.acquire(address)
        try:
            return await self._handle(request)
        finally:
            self.active -= 1
            self.per_ip.release(address)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        try:
            upload = await read_upload(request, self.max_upload_bytes)
        except TooLarge:
            mb = self.max_upload_bytes / 1e6
            return openai_error(413, f"file too large: the limit is {mb:g} MB", param="file")
        except FormError as exc:
            msg = f"expected multipart/form-data with a 'file' field ({exc})"
            return openai_error(400, msg, param="file")
        fields = upload.fields
        fmt = (fields.get("response_format") or ["json"])[0]
        if fmt not in RESPONSE_FORMATS:
            expected = ", ".join(RESPONSE_FORMATS)
            msg = f"unsupported response_format {fmt!r}; expected one of {expected}"
            return openai_error(400, msg, param="response_format")
        stream = (fields.get("stream") or ["false"])[0].strip().lower()
        if stream not in ("true", "1", "false", "0", ""):
            msg = f"stream must be true or false, not {stream!r}"
            return openai_error(400, msg, param="stream")
        streamed = stream in ("true", "1")
        if streamed and fmt not in STREAM_FORMATS:
            msg = (
                f"response_format {fmt!r} cannot be streamed; with stream=true use "
                f"{' or '.join(STREAM_FORMATS)}"
            )
            return openai_error(400, msg, param="response_format")
        granularities = fields.get("timestamp_granularities[]", []) + fields.get(
            "timestamp_granularities", []
        )
        bad = [g for g in granularities if g not in GRANULARITIES]
        if bad:
            msg = f"unsupported timestamp_granularities {bad}; expected segment or word"
            return openai_error(400, msg, param="timestamp_granularities")
        language = (fields.get("language") or [""])[0].strip().lower()
        model = (fields.get("model") or [""])[0]
        try:
            self.models.resolve(model)
        except UnknownModelError as exc:
            self.refused("model_not_found")
            return openai_error(404, str(exc), param="model", code="model_not_found")
        c = self.config
        if self.jobs >= c.upload_workers + c.max_queued_uploads:
            self.refused("queue_full")
            msg = (
                f"too many uploads: {self.jobs} being transcribed or waiting "
                f"(--upload-workers {c.upload_workers}, "
                f"--max-queued-uploads {c.max_queued_uploads}); retry later"
            )
            return openai_error(429, msg, code="rate_limit_exceeded", retry_after=RETRY_AFTER_S)
        self.jobs += 1
        try:  # loaded if it is not: other models go on serving meanwhile
            served = await self.models.acquire(model)
        except ModelsBusyError as exc:
            self.jobs -= 1
            self.refused("busy")
            return openai_error(503, str(exc), code="models_busy", retry_after=RETRY_AFTER_S)
        except AsrServeError as exc:  # its files: missing, truncated, foreign …
            self.jobs -= 1
            log.error("model %r failed to load: %s", model, exc)
            self.refused("model_load_failed")
            return openai_error(500, str(exc), param="model", code="model_load_failed")
        request[MODEL_KEY] = served.name
        recognizer = served.recognizer
        decoding = replace(recognizer.decoding, language=language)
        try:  # a language the model does not know is the request's fault
            recognizer.check_language(decoding.validate().language)
        except ConfigError as exc:
            self.jobs -= 1
            self.models.release(served)
            return openai_error(400, str(exc), param="language")
        events = _EventStream(request) if streamed else None
        try:
            transcript = await self._transcribe(request, upload, recognizer, events, decoding)
        except (AudioLimitError, AudioFormatError) as exc:
            status, code = 400, "invalid_audio"
            if isinstance(exc, AudioLimitError):
                status, code = (413 if exc.too_large else 400), exc.code
            if events is not None and events.started:
                self.refused(code)
                return await events.error(status, str(exc), param="file", code=code)
            return openai_error(status, str(exc), param="file", code=code)
        except UploadCancelled:
            self.refused("client_gone")
            if events is not None and events.started:
                return events.response
            return openai_error(499, "the client closed the connection", code="client_gone")
        except Exception:
            if events is None or not events.started:
                raise
            # the 200 and some text are out: say so in the stream, log the trace
            log.exception("streamed transcription of %r failed", upload.filename)
            self.refused("server_error")
            return await events.error(500, "internal error while transcribing", code=None)
        finally:
            self.jobs -= 1
            self.models.release(served)
        request[AUDIO_S_KEY] = transcript.duration
        if events is not None:
            return await events.done(transcript)
        if fmt == "text":
            return web.Response(text=transcript.text + "\n")
        if fmt in ("srt", "vtt"):
            ctype = "application/x-subrip" if fmt == "srt" else "text/vtt"
            return web.Response(text=_subtitles(transcript, fmt), content_type=ctype)
        if fmt == "verbose_json":
            return web.json_response(verbose_json(transcript, language or "en", granularities))
        return web.Response(
            text=json.dumps({"text": transcript.text}), content_type="application/json"
        )

    async def _transcribe(
        self,
        request: web.Request,
        upload: Upload,
        recognizer: AnyRecognizer,
        events: _EventStream | None = None,
        decoding: DecodingConfig | None = None,
    ) -> Transcript:
        """Check the header (off the event loop, not in the queue: a refusal is
        immediate), then decode on the upload pool while watching the client;
        with ``events``, each segment's text is sent as a delta as it ends."""
        loop = asyncio.get_running_loop()
        max_s = self.config.max_audio_s
        await loop.run_in_executor(None, check_upload_header, upload.audio, upload.filename, max_s)
        cancelled = threading.Event()
        deltas: deque[str] = deque()
        woken = asyncio.Event()

        def arrived(delta: str) -> None:  # on the loop
            deltas.append(delta)
            woken.set()

        texts = TextDeltas()

        def post(result: Result) -> None:  # in the worker
            delta = texts(result)
            if delta:
                loop.call_soon_threadsafe(arrived, delta)

        on_segment = post if events is not None else None
        job = self.executor.submit(
            self._decode, upload, recognizer, cancelled, on_segment, decoding
        )
        # its result reaches the loop after every delta the worker posted before it
        waiting = asyncio.wrap_future(job)
        waiting.add_done_callback(lambda _: woken.set())
        try:
            while True:
                while deltas and events is not None:
                    try:
                        await events.delta(deltas.popleft())
                    except ConnectionError:
                        await _stop(job, waiting, cancelled)
                        raise UploadCancelled from None
                if waiting.done():
                    break
                woken.clear()
                wake = asyncio.ensure_future(woken.wait())
                try:
                    await asyncio.wait({wake}, timeout=_POLL_S)
                finally:
                    wake.cancel()
                if not woken.is_set() and _client_gone(request):
                    await _stop(job, waiting, cancelled)
                    raise UploadCancelled
        except asyncio.CancelledError:
            cancelled.set()
            job.cancel()
            raise
        return waiting.result()

    def _decode(
        self,
        upload: Upload,
        recognizer: AnyRecognizer,
        cancelled: threading.Event,
        on_segment: Callable[[Result], None] | None = None,
        decoding: DecodingConfig | None = None,
    ) -> Transcript:
        pieces = upload_blocks(upload.audio, upload.filename, self.config.max_audio_s, _CHUNK_S)
        return transcribe_pieces(recognizer, pieces, cancelled, on_segment, decoding)


async def _stop(
    job: concurrent.futures.Future[Transcript],
    waiting: asyncio.Future[Transcript],
    cancelled: threading.Event,
) -> None:
    """Stop a decode whose client went away: one not started never runs; a
    running one stops at its next piece (with :class:`UploadCancelled`)."""
    cancelled.set()
    job.cancel()
    await asyncio.wait({waiting})
    if not waiting.cancelled():
        waiting.exception()  # retrieved: UploadCancelled, or the result it had reached


class TextDeltas:
    """Segments' texts as deltas whose concatenation is :attr:`Transcript.text`:
    each non-empty text, after a space when text came before."""

    def __init__(self) -> None:
        self._said = False

    def __call__(self, result: Result) -> str:
        if not result.text:
            return ""
        delta = f" {result.text}" if self._said else result.text
        self._said = True
        return delta


class _EventStream:
    """One streamed answer: OpenAI's server-sent events (``data: {json}`` and a
    blank line each). The 200 and its headers go out with the first event, so
    that an error before any is an ordinary JSON error response."""

    def __init__(self, request: web.Request) -> None:
        self.request = request
        self.response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",  # a proxy (nginx) must not hold the events
            }
        )

    @property
    def started(self) -> bool:
        return self.response.prepared

    async def send(self, event: dict[str, Any], name: str | None = None) -> None:
        """Raises :class:`ConnectionError` when the client is gone."""
        if not self.response.prepared:
            await self.response.prepare(self.request)
        head = f"event: {name}\n" if name else ""
        await self.response.write(f"{head}data: {json.dumps(event)}\n\n".encode())

    async def delta(self, text: str) -> None:
        await self.send({"type": "transcript.text.delta", "delta": text})

    async def done(self, transcript: Transcript) -> web.StreamResponse:
        tokens = sum(len(s.token_ids) for s in transcript.segments)
        # the schema's token usage: audio is not counted in tokens here
        usage = {"type": "tokens", "input_tokens": 0, "output_tokens": tokens}
        usage["total_tokens"] = tokens
        await self.send({"type": "transcript.text.done", "text": transcript.text, "usage": usage})
        await self.response.write_eof()
        return self.response

    async def error(
        self, status: int, message: str, *, param: str | None = None, code: str | None
    ) -> web.StreamResponse:
        """The stream's last event: an ``error`` (the body of :func:`openai_error`)."""
        kind = "invalid_request_error" if status < 500 else "server_error"
        body = {"message": message, "type": kind, "param": param, "code": code}
        with contextlib.suppress(ConnectionError):
            await self.send({"type": "error", "error": body}, name="error")
            await self.response.write_eof()
        return self.response


def _client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()
