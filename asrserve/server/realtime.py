"""OpenAI Realtime transcription events over WebSocket (``/v1/realtime?intent=transcription``).

A sans-I/O :class:`~asrserve.server.protocol.WireSession`: client frames in,
commands out; the core's results in, events out.

Supported client events: ``transcription_session.update`` (``input_audio_format``
``pcm16`` only; ``input_audio_transcription`` model/language/prompt accepted and
echoed; ``turn_detection`` ``null`` or ``server_vad`` whose ``silence_duration_ms``
sets the endpointing silence), ``input_audio_buffer.append`` (base64 pcm16, 24 kHz
mono), ``input_audio_buffer.commit`` and ``input_audio_buffer.clear``.
Server events: ``transcription_session.created`` / ``.updated``,
``input_audio_buffer.committed`` / ``.cleared``,
``conversation.item.input_audio_transcription.delta`` / ``.completed`` and ``error``.

Where the model differs from OpenAI's: audio already appended is decoded as it
arrives, so ``clear`` discards the current item's transcript rather than un-sending
audio; a streaming hypothesis may revise earlier words, and a delta is sent only
while the text grows (``completed`` always carries the whole transcript);
``turn_detection`` and the audio format are fixed once audio has started.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import json
import uuid
from dataclasses import replace
from typing import Any

import numpy as np

from asrserve.config import EndpointConfig, EndpointRule
from asrserve.core.events import Result
from asrserve.errors import AsrServeError
from asrserve.server.protocol import (
    CLOSE_NORMAL,
    CLOSE_UNSUPPORTED,
    ECHO_CHARS,
    Audio,
    Close,
    Command,
    Dialect,
    Flush,
    Send,
    SendError,
    SessionConfig,
    Start,
    State,
    clip,
    echo,
)

SAMPLE_RATE = 24000
_MAX_SILENCE_MS = 3_600_000
_TRANSCRIPTION = "conversation.item.input_audio_transcription"


def _client_event_id(value: Any) -> str | None:
    """The client's ``event_id`` as an error quotes it: a string, cut to
    :data:`~asrserve.server.protocol.ECHO_CHARS` characters (``…`` where cut);
    anything else is not echoed (None)."""
    if not isinstance(value, str):
        return None
    return value if len(value) <= ECHO_CHARS else value[:ECHO_CHARS] + "…"


class RealtimeSession:
    """One ``/v1/realtime`` connection's protocol state."""

    dialect = Dialect.REALTIME
    dialect_name = Dialect.REALTIME.value

    def __init__(self, defaults: SessionConfig, model: str) -> None:
        self.config = replace(defaults, sample_rate=SAMPLE_RATE, format="s16le")
        self.state = State.AWAITING_FIRST
        self.model = model
        self.language = "en"
        self.prompt = ""
        self.segments = 0
        self._id = f"sess_{uuid.uuid4().hex[:20]}"
        self._events = itertools.count(1)
        self._items = itertools.count(1)
        self._item: str | None = None  # the item being transcribed
        self._previous: str | None = None
        self._sent = ""  # text of the item already sent as deltas
        self._committed = False  # committed event sent for the current item
        self._discard = 0  # finals still to come that a clear dropped
        self._buffered = False  # audio appended since the last commit/clear

    # --- helpers -----------------------------------------------------------
    def _event(self, kind: str, **fields: Any) -> Send:
        return Send(json.dumps({"type": kind, "event_id": f"event_{next(self._events)}", **fields}))

    def _error(self, code: str, message: str, event_id: Any = None) -> SendError:
        body = {
            "type": "error",
            "event_id": f"event_{next(self._events)}",
            "error": {
                "type": "invalid_request_error",
                "code": code,
                "message": clip(message),
                "param": None,
                "event_id": _client_event_id(event_id),
            },
        }
        return SendError(json.dumps(body), code)

    def _session_object(self) -> dict[str, Any]:
        ep = self.config.endpoint
        turn = (
            {
                "type": "server_vad",
                "silence_duration_ms": round(ep.rule2.min_trailing_silence * 1000),
                "prefix_padding_ms": 0,
                "threshold": None,
            }
            if ep.enabled
            else None
        )
        return {
            "id": self._id,
            "object": "realtime.transcription_session",
            "input_audio_format": "pcm16",
            "input_audio_transcription": {
                "model": self.model,
                "language": self.language,
                "prompt": self.prompt,
            },
            "turn_detection": turn,
            "input_audio_noise_reduction": None,
            "include": None,
        }

    def _item_id(self) -> str:
        if self._item is None:
            self._item = f"item_{next(self._items)}"
        return self._item

    def _start(self) -> list[Command]:
        if self.state is not State.AWAITING_FIRST:
            return []
        self.state = State.STREAMING
        return [Start(self.config)]

    # --- the transport's side ------------------------------------------------
    def opening(self) -> list[Command]:
        """What the server says first."""
        return [self._event("transcription_session.created", session=self._session_object())]

    def receive(self, frame: str | bytes) -> list[Command]:
        if self.state is State.CLOSED:
            return []
        if isinstance(frame, bytes):
            return [self._error("invalid_event", "binary frames are not events; send JSON")]
        try:
            event = json.loads(frame)
        except (ValueError, RecursionError):  # RecursionError: deeply nested JSON
            event = None
        if not isinstance(event, dict) or not isinstance(event.get("type"), str):
            return [self._error("invalid_event", "events are JSON objects with a string 'type'")]
        kind, client_id = event["type"], event.get("event_id")
        if kind == "transcription_session.update":
            return self._update(event.get("session"), client_id)
        if kind == "input_audio_buffer.append":
            return self._append(event.get("audio"), client_id)
        if kind == "input_audio_buffer.commit":
            return self._commit(client_id)
        if kind == "input_audio_buffer.clear":
            return self._clear()
        return [self._error("unknown_event", f"unsupported event type {echo(kind)}", client_id)]

    def _update(self, session: Any, client_id: Any) -> list[Command]:
        if not isinstance(session, dict):
            return [self._error("invalid_event", "'session' must be an object", client_id)]
        fmt = session.get("input_audio_format", "pcm16")
        if fmt != "pcm16":
            msg = f"input_audio_format {echo(fmt)} is not supported; use pcm16 (24 kHz mono)"
            return [self._error("unsupported_format", msg, client_id)]
        endpoint = self.config.endpoint
        if "turn_detection" in session:
            turn = session["turn_detection"]
            if turn is None:
                endpoint = replace(endpoint, enabled=False)
            elif isinstance(turn, dict) and turn.get("type", "server_vad") == "server_vad":
                silence = turn.get("silence_duration_ms", 500)
                if (
                    not isinstance(silence, int | float)
                    or isinstance(silence, bool)
                    or not 0 < silence <= _MAX_SILENCE_MS  # also refuses NaN
                ):
                    msg = (
                        "turn_detection.silence_duration_ms must be a number in "
                        f"(0, {_MAX_SILENCE_MS}]"
                    )
                    return [self._error("invalid_value", msg, client_id)]
                endpoint = EndpointConfig(
                    enabled=True,
                    rule1=endpoint.rule1,
                    rule2=EndpointRule(True, silence / 1000.0, 0.0),
                    rule3=endpoint.rule3,
                )
            else:
                msg = "turn_detection must be null or {'type': 'server_vad', ...}"
                return [self._error("unsupported_turn_detection", msg, client_id)]
        if endpoint != self.config.endpoint and self.state is not State.AWAITING_FIRST:
            msg = "turn_detection cannot change once audio has started"
            return [self._error("session_locked", msg, client_id)]
        self.config = replace(self.config, endpoint=endpoint)
        transcription = session.get("input_audio_transcription")
        if isinstance(transcription, dict):
            self.model = str(transcription.get("model") or self.model)
            self.language = str(transcription.get("language") or self.language)
            self.prompt = str(transcription.get("prompt") or "")
        return [self._event("transcription_session.updated", session=self._session_object())]

    def _append(self, audio: Any, client_id: Any) -> list[Command]:
        if not isinstance(audio, str):
            return [self._error("invalid_event", "'audio' must be a base64 string", client_id)]
        try:
            raw = base64.b64decode(audio, validate=True)
        except (binascii.Error, ValueError):
            return [self._error("invalid_audio", "'audio' is not valid base64", client_id)]
        if len(raw) % 2:
            return [self._error("invalid_audio", "pcm16 audio has an even number of bytes")]
        samples = np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0
        self._buffered = self._buffered or samples.size > 0
        return [*self._start(), Audio(samples)]

    def _commit(self, client_id: Any) -> list[Command]:
        if not self._buffered:
            msg = "the input audio buffer is empty: nothing to commit"
            return [self._error("input_audio_buffer_commit_empty", msg, client_id)]
        self._buffered = False
        item = self._item_id()
        self._committed = True
        committed = self._event(
            "input_audio_buffer.committed", previous_item_id=self._previous, item_id=item
        )
        return [committed, Flush()]

    def _clear(self) -> list[Command]:
        out: list[Command] = [self._event("input_audio_buffer.cleared")]
        if self.state is State.STREAMING and self._buffered:
            self._discard += 1
            out.insert(0, Flush())
        self._buffered = False
        return out

    def refuse(self, code: str, message: str, close_code: int = CLOSE_UNSUPPORTED) -> list[Command]:
        """The server refuses the session it was about to start."""
        self.state = State.CLOSED
        return [self._error(code, message), Close(close_code, message[:120])]

    def stop_input(self) -> None:
        if self.state is State.STREAMING:
            self.state = State.STOPPED

    def server_error(self, code: str, message: str) -> list[SendError]:
        return [self._error(code, message)]

    # --- the core's side ---------------------------------------------------------
    def result(
        self, result: Result, end_time: float, *, final: bool, eof: bool = False
    ) -> list[Command]:
        del end_time
        if not final and not eof:
            if not result.text:
                return []
            item = self._item_id()
            return self._delta(item, result.text)
        if self._discard:
            self._discard -= 1
            self._reset_item()
            return []
        if not result.text and not self._committed:
            return []
        item = self._item_id()
        out: list[Command] = []
        if not self._committed:
            out.append(
                self._event(
                    "input_audio_buffer.committed", previous_item_id=self._previous, item_id=item
                )
            )
        out += self._delta(item, result.text)
        out.append(
            self._event(
                f"{_TRANSCRIPTION}.completed",
                item_id=item,
                content_index=0,
                transcript=result.text,
            )
        )
        self.segments += 1
        self._previous = item
        self._reset_item()
        return out

    def _delta(self, item: str, text: str) -> list[Command]:
        if not text.startswith(self._sent) or text == self._sent:
            return []
        delta = text[len(self._sent) :]
        self._sent = text
        return [self._event(f"{_TRANSCRIPTION}.delta", item_id=item, content_index=0, delta=delta)]

    def _reset_item(self) -> None:
        self._item = None
        self._sent = ""
        self._committed = False

    def eof(self, duration: float) -> list[Command]:
        del duration
        self.state = State.CLOSED
        return [Close(CLOSE_NORMAL, "end of input")]

    def error(self, exc: AsrServeError) -> list[Command]:
        return [self._error("server_error", str(exc))]
