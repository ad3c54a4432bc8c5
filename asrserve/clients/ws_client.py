"""WebSocket client of the asrserve JSON dialect.

One session: an optional ``start`` text message, binary audio frames, then
``stop``; the server answers ``ready``, ``partial``/``final`` results,
possibly ``error``, and last ``eof`` before closing with 1000.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from asrserve.audio import FloatArray
from asrserve.clients.sources import AudioSource, FileSource
from asrserve.errors import AsrServeError, ConfigError

Message = dict[str, Any]
AudioFormat = Literal["s16le", "f32le"]

CLOSE_CODES = {
    1000: "normal closure",
    1001: "server shutting down",
    1003: "bad config",
    1008: "limit reached",
    1009: "message too big",
    1011: "internal server error",
}


class ServerError(AsrServeError):
    """The server could not be reached, refused the session or ended it abnormally.

    ``code`` is the protocol error code of the last ``error`` message, if any;
    ``close_code`` the WebSocket close code, if the connection was closed.
    """

    def __init__(
        self, message: str, *, code: str | None = None, close_code: int | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.close_code = close_code


def encode_audio(samples: FloatArray, fmt: AudioFormat) -> bytes:
    """Little-endian bytes of float samples: 16-bit PCM (clipped) or float32."""
    if fmt == "f32le":
        return samples.astype("<f4").tobytes()
    scaled = np.rint(samples * np.float32(32768.0))
    pcm: npt.NDArray[np.int16] = np.clip(scaled, -32768, 32767).astype("<i2")
    return pcm.tobytes()


def start_message(
    sample_rate: int | None,
    *,
    fmt: AudioFormat = "s16le",
    decoding: Mapping[str, Any] | None = None,
    hotwords: Sequence[str] | None = None,
    endpointing: Mapping[str, Any] | bool | None = None,
) -> Message:
    """The ``start`` message; options left as ``None`` are omitted (server defaults)."""
    if fmt not in ("s16le", "f32le"):
        raise ConfigError(f"unknown audio format {fmt!r}; expected 's16le' or 'f32le'")
    msg: Message = {"type": "start", "format": fmt}
    if sample_rate is not None:
        msg["sample_rate"] = sample_rate
    if decoding is not None:
        msg["decoding"] = dict(decoding)
    if hotwords:
        msg["hotwords"] = list(hotwords)
    if isinstance(endpointing, bool):
        msg["endpointing"] = {"enabled": endpointing}
    elif endpointing is not None:
        msg["endpointing"] = dict(endpointing)
    return msg


async def _connect(url: str, open_timeout: float) -> ClientConnection:
    try:
        return await connect(url, open_timeout=open_timeout, compression=None)
    except InvalidStatus as exc:
        status = exc.response.status_code
        body = (exc.response.body or b"").decode("utf-8", "replace").strip()
        what = "server is full" if status == 503 else "server refused the connection"
        raise ServerError(f"{what} (HTTP {status}): {body}") from exc
    except (OSError, asyncio.TimeoutError, WebSocketException) as exc:
        raise ServerError(f"cannot connect to {url}: {exc}") from exc


async def _send(ws: ClientConnection, source: AudioSource, start: Message) -> None:
    """Start (once the source's rate is known), the audio, then stop."""
    fmt: AudioFormat = start["format"]
    started = False
    async for rate, samples in source:
        if not started:
            await ws.send(json.dumps({**start, "sample_rate": rate}))
            started = True
        if samples.size:
            await ws.send(encode_audio(samples, fmt))
    if not started:
        await ws.send(json.dumps(start))
    await ws.send(json.dumps({"type": "stop"}))


def _closed(exc: ConnectionClosed, last_error: Message | None) -> ServerError:
    code = exc.rcvd.code if exc.rcvd is not None else None
    how = "without a close frame" if code is None else f"with {code} ({CLOSE_CODES.get(code, '')})"
    if exc.rcvd is not None and exc.rcvd.reason:
        how += f": {exc.rcvd.reason}"
    if last_error is not None:
        err = last_error.get("code")
        return ServerError(
            f"server error ({err}): {last_error.get('message', '')}; connection closed {how}",
            code=err,
            close_code=code,
        )
    return ServerError(f"server closed the connection before eof, {how}", close_code=code)


async def _receive(
    ws: ClientConnection, on_message: Callable[[Message], None] | None
) -> list[Message]:
    """Every server message up to and including ``eof``."""
    messages: list[Message] = []
    last_error: Message | None = None
    while True:
        try:
            raw = await ws.recv()
        except ConnectionClosed as exc:
            raise _closed(exc, last_error) from exc
        try:
            msg = json.loads(raw)
        except ValueError:
            msg = None
        if not isinstance(msg, dict) or "type" not in msg:
            raise ServerError(f"server sent something that is not a protocol message: {raw!r:.80}")
        messages.append(msg)
        if on_message is not None:
            on_message(msg)
        if msg["type"] == "error":
            last_error = msg
        elif msg["type"] == "eof":
            return messages


async def stream_to_server(
    url: str,
    source: AudioSource,
    *,
    decoding: Mapping[str, Any] | None = None,
    hotwords: Sequence[str] | None = None,
    endpointing: Mapping[str, Any] | bool | None = None,
    on_message: Callable[[Message], None] | None = None,
    format: AudioFormat = "s16le",
    open_timeout: float = 10.0,
) -> list[Message]:
    """Stream ``source`` to the server at ``url``; return its messages, ``eof`` last.

    ``on_message`` sees each message as it arrives. ``error`` messages the
    session survives are returned like the others; a connection that fails,
    is refused or closes before ``eof`` raises :class:`ServerError`.
    """
    start = start_message(
        None, fmt=format, decoding=decoding, hotwords=hotwords, endpointing=endpointing
    )
    async with await _connect(url, open_timeout) as ws:
        send = asyncio.ensure_future(_send(ws, source, start))
        recv = asyncio.ensure_future(_receive(ws, on_message))
        try:
            await asyncio.wait({send, recv}, return_when=asyncio.FIRST_EXCEPTION)
            failed = send.exception() if send.done() else None
            # A send that hit the closed connection: the receiver knows why it closed.
            if failed is not None and not isinstance(failed, ConnectionClosed):
                raise failed
            return await recv
        finally:
            for task in (send, recv):
                task.cancel()
            await asyncio.gather(send, recv, return_exceptions=True)


@dataclass
class FileResult:
    """The messages of one file's session, or why it failed."""

    path: str
    messages: list[Message] = field(default_factory=list)
    error: str | None = None

    @property
    def finals(self) -> list[Message]:
        return [m for m in self.messages if m["type"] == "final"]

    @property
    def text(self) -> str:
        return " ".join(t for m in self.finals if (t := str(m.get("text", "")).strip()))

    @property
    def duration(self) -> float | None:
        eof = [m for m in self.messages if m["type"] == "eof"]
        return eof[-1].get("duration") if eof else None

    def to_json(self) -> Message:
        return {
            "file": self.path,
            "text": self.text,
            "segments": self.finals,
            "duration": self.duration,
        }


async def transcribe_files(
    url: str,
    paths: Sequence[str | Path],
    *,
    realtime: bool = True,
    concurrency: int = 1,
    chunk_s: float = 0.1,
    on_message: Callable[[str, Message], None] | None = None,
    **options: Any,
) -> list[FileResult]:
    """One session per file, at most ``concurrency`` at a time; results in input order.

    ``options`` go to :func:`stream_to_server`; ``on_message(path, msg)``
    sees every message. A file that fails has ``error`` set, the others go on.
    """
    if concurrency < 1:
        raise ConfigError(f"concurrency must be >= 1, got {concurrency}")
    slots = asyncio.Semaphore(concurrency)

    async def one(path: str) -> FileResult:
        def forward(msg: Message) -> None:
            if on_message is not None:
                on_message(path, msg)

        async with slots:
            source = FileSource(path, chunk_s=chunk_s, realtime=realtime)
            try:
                messages = await stream_to_server(url, source, on_message=forward, **options)
            except AsrServeError as exc:
                return FileResult(path, error=str(exc))
            return FileResult(path, messages)

    return list(await asyncio.gather(*(one(str(p)) for p in paths)))
