"""Live transcription of an audio source, with a local model or through a server.

The partial result is rewritten in place on one terminal line; each final
result is printed on a line of its own. Any :class:`AudioSource` works, so a
:class:`~asrserve.clients.sources.FileSource` drives the same path as the
microphone.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import sys
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, TextIO, TypeVar

from asrserve.clients.sources import AudioSource, MicrophoneSource
from asrserve.clients.ws_client import Message, stream_to_server
from asrserve.core.segments import Event, Partial, Segment, StreamEvents

if TYPE_CHECKING:
    from asrserve.core.interfaces import AnyRecognizer

T = TypeVar("T")

_CLEAR_LINE = "\r\x1b[K"


class LiveDisplay:
    """Partials on one line rewritten in place (terminals only), finals on their own lines.

    ``partials=None`` shows partials only when ``out`` is a terminal.
    """

    def __init__(self, out: TextIO | None = None, partials: bool | None = None) -> None:
        self.out = out or sys.stdout
        self.partials = self.out.isatty() if partials is None else partials
        self._shown = ""

    def partial(self, text: str) -> None:
        if not self.partials or text == self._shown:
            return
        width = max(1, shutil.get_terminal_size().columns - 1)
        self.out.write(_CLEAR_LINE + text[-width:])  # a wrapped line could not be rewritten
        self.out.flush()
        self._shown = text

    def final(self, text: str) -> None:
        self.clear()
        self.out.write(text + "\n")
        self.out.flush()

    def clear(self) -> None:
        if self._shown:
            self.out.write(_CLEAR_LINE)
            self.out.flush()
            self._shown = ""

    def show(self, msg: Message, prefix: str = "") -> None:
        """Display a server ``partial`` or ``final`` message; others are ignored."""
        text = str(msg.get("text", "")).strip()
        if msg["type"] == "partial":
            self.partial(prefix + text if text else "")
        elif msg["type"] == "final":
            if text:
                self.final(prefix + text)
            else:
                self.clear()


async def transcribe_local(
    recognizer: AnyRecognizer, source: AudioSource, display: LiveDisplay
) -> list[str]:
    """Decode ``source`` with ``recognizer`` as it arrives; return the final texts.

    A segment ends at each endpoint (when the recognizer's endpointing is
    enabled) and at the end of the source.
    """
    stream = recognizer.create_stream()
    events = StreamEvents(recognizer, stream)
    finals: list[str] = []

    def show(event: Event) -> None:
        if isinstance(event, Partial):
            display.partial(event.result.text)
        elif isinstance(event, Segment) and event.text:
            finals.append(event.text)
            display.final(event.text)

    async for rate, samples in source:
        if not samples.size:
            continue
        stream.accept_waveform(rate, samples)
        for event in events.events():
            show(event)
    stream.input_finished()
    for event in events.events():
        show(event)
    display.clear()
    return finals


async def transcribe_remote(
    url: str, source: AudioSource, display: LiveDisplay, **options: Any
) -> list[str]:
    """Stream ``source`` to the server at ``url``; return the final texts.

    ``options`` go to :func:`~asrserve.clients.ws_client.stream_to_server`.
    """
    messages = await stream_to_server(url, source, on_message=display.show, **options)
    texts = (str(m.get("text", "")).strip() for m in messages if m["type"] == "final")
    return [t for t in texts if t]


async def stop_on_interrupt(source: MicrophoneSource, work: Awaitable[T]) -> T:
    """Await ``work``; the first Ctrl-C stops ``source`` (so the last words are
    still transcribed), a second one interrupts as usual."""
    loop = asyncio.get_running_loop()

    def interrupted() -> None:
        loop.remove_signal_handler(signal.SIGINT)
        source.stop()

    installed = False
    with contextlib.suppress(NotImplementedError, RuntimeError):  # Windows, or not main thread
        loop.add_signal_handler(signal.SIGINT, interrupted)
        installed = True
    try:
        return await work
    finally:
        if installed:
            loop.remove_signal_handler(signal.SIGINT)
