"""OpenAI Realtime transcription events over WebSocket (``/v1/realtime``).

A sans-I/O :class:`~asrserve.server.protocol.WireSession`: client frames in,
commands out; the core's results in, events out.

Two shapes of the API are spoken, OpenAI's beta and its GA one:

- **beta**: ``transcription_session.update`` with ``input_audio_format``
  (``pcm16``, ``g711_ulaw``, ``g711_alaw``), ``input_audio_transcription`` and
  ``turn_detection``; answered ``transcription_session.created`` / ``.updated``
  with a ``realtime.transcription_session`` object.
- **GA**: ``session.update`` with ``{"type": "transcription", "audio": {"input":
  {"format", "transcription", "turn_detection", "noise_reduction"}}, "include"}``
  (formats ``{"type": "audio/pcm", "rate": 24000}``, ``audio/pcmu``,
  ``audio/pcma``); answered ``session.created`` / ``.updated`` with a
  ``type: "transcription"`` session object, and ``completed`` carries ``usage``.

Which ``created`` is sent at connect (:func:`opening_shape`): beta where the
client sends ``OpenAI-Beta: realtime=v1`` or ``?intent=transcription`` (what
beta clients, and this server before GA, use), GA otherwise (the GA SDK's
``?model=...``). An update of the other shape switches the session to it: its
answer, and every shape-specific event after it, is in that shape.

Both shapes share the rest: ``input_audio_buffer.append`` (base64 audio in the
session's format: pcm16 24 kHz mono, or G.711 at 8 kHz, resampled by the core
as any input rate is), ``.commit``, ``.clear``; ``conversation.item.retrieve``
and ``.delete`` (the last :data:`MAX_ITEMS` items are kept). Server events:
``input_audio_buffer.speech_started`` (when the item's first token is decoded)
and ``.speech_stopped`` (at its endpoint, or at a commit while speech is on),
both only with turn detection on; ``input_audio_buffer.committed`` / ``.cleared``,
``conversation.item.input_audio_transcription.delta`` / ``.completed``,
``conversation.item.retrieved`` / ``.deleted`` and ``error``.

Turn detection maps to the core's endpoint rules: ``server_vad``'s
``silence_duration_ms`` is the trailing silence that ends an item (rule 2; rule
1, the silence that ends even a speechless segment, is raised to it if lower);
``semantic_vad``'s ``eagerness`` picks that silence from
:data:`SEMANTIC_SILENCE_S` (high 0.5 s, medium/auto 1 s, low 2 s); ``null``
turns endpointing off, so only ``input_audio_buffer.commit`` ends an item.

Where the model differs from OpenAI's: audio already appended is decoded as it
arrives, so ``clear`` discards the current item's transcript rather than un-sending
audio; a streaming hypothesis may revise earlier words, and a delta is sent only
while the text grows (``completed`` always carries the whole transcript);
turn detection and the audio format are fixed once audio has started; VAD
threshold, prefix padding and noise reduction are accepted but not applied
(the session object says what is in effect); items keep transcripts, not audio.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import json
import uuid
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, Literal

import numpy as np

from asrserve.audio_codecs import G711_RATE, g711_decode
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
MAX_ITEMS = 100
"""Transcribed items a session keeps for ``conversation.item.retrieve``."""
SEMANTIC_SILENCE_S = {"high": 0.5, "medium": 1.0, "auto": 1.0, "low": 2.0}
"""``semantic_vad`` eagerness → the trailing silence (s) that ends an item."""
_MAX_SILENCE_MS = 3_600_000
_TRANSCRIPTION = "conversation.item.input_audio_transcription"

Shape = Literal["beta", "ga"]

# format (beta spelling) → (GA format object, sample rate, G.711 law)
_FORMATS: dict[str, tuple[dict[str, Any], int, str | None]] = {
    "pcm16": ({"type": "audio/pcm", "rate": SAMPLE_RATE}, SAMPLE_RATE, None),
    "g711_ulaw": ({"type": "audio/pcmu"}, G711_RATE, "ulaw"),
    "g711_alaw": ({"type": "audio/pcma"}, G711_RATE, "alaw"),
}
_GA_FORMATS = {"audio/pcm": "pcm16", "audio/pcmu": "g711_ulaw", "audio/pcma": "g711_alaw"}


def opening_shape(query: Mapping[str, str], headers: Mapping[str, str]) -> Shape:
    """The shape of the ``created`` event for a connection: ``beta`` for an
    ``OpenAI-Beta: realtime=v1`` header or an ``intent`` query parameter,
    ``ga`` otherwise."""
    betas = {part.strip() for part in headers.get("OpenAI-Beta", "").split(",")}
    return "beta" if "realtime=v1" in betas or "intent" in query else "ga"


def _client_event_id(value: Any) -> str | None:
    """The client's ``event_id`` as an error quotes it: a string, cut to
    :data:`~asrserve.server.protocol.ECHO_CHARS` characters (``…`` where cut);
    anything else is not echoed (None)."""
    if not isinstance(value, str):
        return None
    return value if len(value) <= ECHO_CHARS else value[:ECHO_CHARS] + "…"


class _RefusedError(Exception):
    """An update refused: the error event's code, message and param."""

    def __init__(self, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.param = code, message, param


class RealtimeSession:
    """One ``/v1/realtime`` connection's protocol state."""

    dialect = Dialect.REALTIME
    dialect_name = Dialect.REALTIME.value

    def __init__(self, defaults: SessionConfig, model: str, shape: Shape = "beta") -> None:
        self.config = replace(defaults, sample_rate=SAMPLE_RATE, format="s16le")
        self.state = State.AWAITING_FIRST
        self.shape: Shape = shape
        self.model = model
        self.language = "en"
        self.prompt = ""
        self.format = "pcm16"
        self.segments = 0
        self._base_endpoint = defaults.endpoint
        self._semantic: str | None = None  # semantic_vad eagerness, if that is the mode
        self._id = f"sess_{uuid.uuid4().hex[:20]}"
        self._events = itertools.count(1)
        self._item_ids = itertools.count(1)
        self._items: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._item: str | None = None  # the item being transcribed
        self._previous: str | None = None
        self._sent = ""  # text of the item already sent as deltas
        self._committed = False  # committed event sent for the current item
        self._speaking = False  # speech_started sent for the current item
        self._discard = 0  # finals still to come that a clear dropped
        self._buffered = False  # audio appended since the last commit/clear
        self._audio_s = 0.0  # audio appended in the session

    # --- helpers -----------------------------------------------------------
    def _event(self, kind: str, **fields: Any) -> Send:
        return Send(json.dumps({"type": kind, "event_id": f"event_{next(self._events)}", **fields}))

    def _error(
        self, code: str, message: str, event_id: Any = None, param: str | None = None
    ) -> SendError:
        body = {
            "type": "error",
            "event_id": f"event_{next(self._events)}",
            "error": {
                "type": "invalid_request_error",
                "code": code,
                "message": clip(message),
                "param": param,
                "event_id": _client_event_id(event_id),
            },
        }
        return SendError(json.dumps(body), code)

    def _turn_object(self) -> dict[str, Any] | None:
        ep = self.config.endpoint
        if not ep.enabled:
            return None
        if self._semantic is not None:
            return {"type": "semantic_vad", "eagerness": self._semantic}
        return {
            "type": "server_vad",
            "silence_duration_ms": round(ep.rule2.min_trailing_silence * 1000),
            "prefix_padding_ms": 0,
            "threshold": None,
        }

    def _transcription_object(self) -> dict[str, Any]:
        return {"model": self.model, "language": self.language, "prompt": self.prompt}

    def _session_object(self) -> dict[str, Any]:
        if self.shape == "ga":
            return {
                "type": "transcription",
                "object": "realtime.transcription_session",
                "id": self._id,
                "audio": {
                    "input": {
                        "format": _FORMATS[self.format][0],
                        "transcription": self._transcription_object(),
                        "turn_detection": self._turn_object(),
                        "noise_reduction": None,
                    }
                },
                "include": None,
            }
        return {
            "id": self._id,
            "object": "realtime.transcription_session",
            "input_audio_format": self.format,
            "input_audio_transcription": self._transcription_object(),
            "turn_detection": self._turn_object(),
            "input_audio_noise_reduction": None,
            "include": None,
        }

    def _session_event(self, what: Literal["created", "updated"]) -> Send:
        kind = f"session.{what}" if self.shape == "ga" else f"transcription_session.{what}"
        return self._event(kind, session=self._session_object())

    def _item_id(self) -> str:
        if self._item is None:
            self._item = f"item_{next(self._item_ids)}"
        return self._item

    def _start(self) -> list[Command]:
        if self.state is not State.AWAITING_FIRST:
            return []
        self.state = State.STREAMING
        return [Start(self.config)]

    # --- the transport's side ------------------------------------------------
    def opening(self) -> list[Command]:
        """What the server says first."""
        return [self._session_event("created")]

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
            return self._update("beta", event.get("session"), client_id)
        if kind == "session.update":
            return self._update("ga", event.get("session"), client_id)
        if kind == "input_audio_buffer.append":
            return self._append(event.get("audio"), client_id)
        if kind == "input_audio_buffer.commit":
            return self._commit(client_id)
        if kind == "input_audio_buffer.clear":
            return self._clear()
        if kind in ("conversation.item.retrieve", "conversation.item.delete"):
            return self._item_event(kind, event.get("item_id"), client_id)
        return [self._error("unknown_event", f"unsupported event type {echo(kind)}", client_id)]

    # --- session.update / transcription_session.update -------------------------
    def _update(self, shape: Shape, session: Any, client_id: Any) -> list[Command]:
        if not isinstance(session, dict):
            return [self._error("invalid_event", "'session' must be an object", client_id)]
        try:
            if shape == "ga":
                fields = self._ga_fields(session)
            else:
                fields = {
                    k: session[k]
                    for k in ("input_audio_format", "turn_detection", "input_audio_transcription")
                    if k in session
                }
            fmt = self.format
            if "input_audio_format" in fields:
                fmt = self._format(shape, fields["input_audio_format"])
            endpoint, semantic = self.config.endpoint, self._semantic
            if "turn_detection" in fields:
                endpoint, semantic = self._turn_detection(fields["turn_detection"])
            if self.state is not State.AWAITING_FIRST:
                if endpoint != self.config.endpoint:
                    raise _RefusedError(
                        "session_locked", "turn_detection cannot change once audio has started"
                    )
                if fmt != self.format:
                    raise _RefusedError(
                        "session_locked", "the audio format cannot change once audio has started"
                    )
        except _RefusedError as r:
            return [self._error(r.code, r.message, client_id, r.param)]
        self.shape = shape
        self.format, self._semantic = fmt, semantic
        self.config = replace(self.config, endpoint=endpoint, sample_rate=_FORMATS[fmt][1])
        transcription = fields.get("input_audio_transcription")
        if isinstance(transcription, dict):
            if transcription.get("model"):  # chooses the model until audio starts
                self.model = str(transcription["model"])
                self.config = replace(self.config, model=self.model)
            if transcription.get("language"):
                self.language = str(transcription["language"]).strip().lower()
                decoding = replace(self.config.decoding, language=self.language)
                self.config = replace(self.config, decoding=decoding)
            self.prompt = str(transcription.get("prompt") or "")
        return [self._session_event("updated")]

    @staticmethod
    def _ga_fields(session: dict[str, Any]) -> dict[str, Any]:
        """A GA session's settings under their beta names."""
        kind = session.get("type", "transcription")
        if kind != "transcription":
            msg = (
                f"session.type {echo(kind)} is not supported: this server does "
                "'transcription' sessions only"
            )
            raise _RefusedError("unsupported_session_type", msg, "session.type")
        audio = session.get("audio")
        if audio is None:
            return {}
        if not isinstance(audio, dict):
            raise _RefusedError(
                "invalid_event", "'session.audio' must be an object", "session.audio"
            )
        given = audio.get("input")
        if given is None:
            return {}
        if not isinstance(given, dict):
            msg = "'session.audio.input' must be an object"
            raise _RefusedError("invalid_event", msg, "session.audio.input")
        names = {
            "format": "input_audio_format",
            "turn_detection": "turn_detection",
            "transcription": "input_audio_transcription",
        }
        return {names[k]: v for k, v in given.items() if k in names}

    @staticmethod
    def _format(shape: Shape, value: Any) -> str:
        """The format a client asked for, by its beta name."""
        if shape == "beta":
            if isinstance(value, str) and value in _FORMATS:
                return value
            msg = (
                f"input_audio_format {echo(value)} is not supported; use pcm16 (24 kHz mono), "
                "g711_ulaw or g711_alaw (8 kHz)"
            )
            raise _RefusedError("unsupported_format", msg, "session.input_audio_format")
        if isinstance(value, dict):
            kind = value.get("type")
            name = _GA_FORMATS.get(kind) if isinstance(kind, str) else None
            rate = value.get("rate", SAMPLE_RATE)
            if name is not None and (name != "pcm16" or rate == SAMPLE_RATE):
                return name
        msg = (
            f"audio.input.format {echo(value)} is not supported; use "
            "{'type': 'audio/pcm', 'rate': 24000}, {'type': 'audio/pcmu'} or "
            "{'type': 'audio/pcma'}"
        )
        raise _RefusedError("unsupported_format", msg, "session.audio.input.format")

    def _turn_detection(self, turn: Any) -> tuple[EndpointConfig, str | None]:
        """Endpoint rules and semantic eagerness for a ``turn_detection`` value."""
        if turn is None:
            return replace(self.config.endpoint, enabled=False), None
        kind = turn.get("type", "server_vad") if isinstance(turn, dict) else None
        if not isinstance(turn, dict) or kind not in ("server_vad", "semantic_vad"):
            msg = (
                "turn_detection must be null, {'type': 'server_vad', ...} "
                "or {'type': 'semantic_vad', ...}"
            )
            raise _RefusedError("unsupported_turn_detection", msg, "turn_detection")
        if kind == "semantic_vad":
            eagerness = turn.get("eagerness", "auto")
            if not isinstance(eagerness, str) or eagerness not in SEMANTIC_SILENCE_S:
                msg = (
                    f"turn_detection.eagerness {echo(eagerness)} is not one of "
                    "low, medium, high, auto"
                )
                raise _RefusedError("invalid_value", msg, "turn_detection.eagerness")
            return self._silence_endpoint(SEMANTIC_SILENCE_S[eagerness]), eagerness
        silence = turn.get("silence_duration_ms", 500)
        if (
            not isinstance(silence, int | float)
            or isinstance(silence, bool)
            or not 0 < silence <= _MAX_SILENCE_MS  # also refuses NaN
        ):
            msg = f"turn_detection.silence_duration_ms must be a number in (0, {_MAX_SILENCE_MS}]"
            raise _RefusedError("invalid_value", msg, "turn_detection.silence_duration_ms")
        return self._silence_endpoint(silence / 1000.0), None

    def _silence_endpoint(self, silence_s: float) -> EndpointConfig:
        """Endpointing on: ``silence_s`` of trailing silence after speech ends an
        item (rule 2); rule 1 (silence alone) never fires before it."""
        base = self._base_endpoint
        rule1 = base.rule1
        if rule1.min_trailing_silence < silence_s:
            rule1 = replace(rule1, min_trailing_silence=silence_s)
        return EndpointConfig(
            enabled=True, rule1=rule1, rule2=EndpointRule(True, silence_s, 0.0), rule3=base.rule3
        )

    # --- audio -------------------------------------------------------------------
    def _append(self, audio: Any, client_id: Any) -> list[Command]:
        if not isinstance(audio, str):
            return [self._error("invalid_event", "'audio' must be a base64 string", client_id)]
        try:
            raw = base64.b64decode(audio, validate=True)
        except (binascii.Error, ValueError):
            return [self._error("invalid_audio", "'audio' is not valid base64", client_id)]
        rate, law = _FORMATS[self.format][1:]
        if law is not None:
            samples = g711_decode(raw, law)
        elif len(raw) % 2:
            return [self._error("invalid_audio", "pcm16 audio has an even number of bytes")]
        else:
            samples = np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0
        self._buffered = self._buffered or samples.size > 0
        self._audio_s += samples.size / rate
        return [*self._start(), Audio(samples)]

    def _commit(self, client_id: Any) -> list[Command]:
        if not self._buffered:
            msg = "the input audio buffer is empty: nothing to commit"
            return [self._error("input_audio_buffer_commit_empty", msg, client_id)]
        self._buffered = False
        item = self._item_id()
        out: list[Command] = []
        if self._speaking:
            out.append(self._speech_stopped(item, self._audio_s))
        out += [self._committed_event(item), Flush()]
        return out

    def _clear(self) -> list[Command]:
        out: list[Command] = [self._event("input_audio_buffer.cleared")]
        if self.state is State.STREAMING and self._buffered:
            self._discard += 1
            out.insert(0, Flush())
        self._buffered = False
        return out

    # --- items ---------------------------------------------------------------
    def _committed_event(self, item: str) -> Send:
        """``committed`` for ``item``, which from now on can be retrieved."""
        self._committed = True
        self._items[item] = {
            "id": item,
            "object": "realtime.item",
            "type": "message",
            "status": "completed",
            "role": "user",
            "content": [{"type": "input_audio", "transcript": None}],
        }
        while len(self._items) > MAX_ITEMS:
            self._items.popitem(last=False)
        return self._event(
            "input_audio_buffer.committed", previous_item_id=self._previous, item_id=item
        )

    def _item_event(self, kind: str, item_id: Any, client_id: Any) -> list[Command]:
        if not isinstance(item_id, str):
            return [self._error("invalid_event", "'item_id' must be a string", client_id)]
        if item_id not in self._items:
            msg = (
                f"item {echo(item_id)} not found (this server keeps the last {MAX_ITEMS} "
                "transcribed items)"
            )
            return [self._error("item_not_found", msg, client_id, "item_id")]
        if kind == "conversation.item.delete":
            del self._items[item_id]
            return [self._event("conversation.item.deleted", item_id=item_id)]
        return [self._event("conversation.item.retrieved", item=self._items[item_id])]

    # --- the server's side ---------------------------------------------------------
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
        if not final and not eof:
            if not result.text:
                return []
            item = self._item_id()
            return [*self._speech_started(item, result), *self._delta(item, result.text)]
        if self._discard:
            self._discard -= 1
            self._reset_item()
            return []
        if not result.text and not self._committed and not self._speaking:
            return []
        item = self._item_id()
        out: list[Command] = []
        if not self._committed:
            if result.text:
                out += self._speech_started(item, result)
            if self._speaking:
                out.append(self._speech_stopped(item, end_time))
            out.append(self._committed_event(item))
        out += self._delta(item, result.text)
        completed: dict[str, Any] = {
            "item_id": item,
            "content_index": 0,
            "transcript": result.text,
        }
        if self.shape == "ga":
            seconds = max(end_time - result.start_time, 0.0)
            completed["usage"] = {"type": "duration", "seconds": round(seconds, 3)}
        out.append(self._event(f"{_TRANSCRIPTION}.completed", **completed))
        stored = self._items.get(item)
        if stored is not None:
            stored["content"][0]["transcript"] = result.text
        self.segments += 1
        self._previous = item
        self._reset_item()
        return out

    def _speech_started(self, item: str, result: Result) -> list[Command]:
        """``speech_started`` for the item's first token, with turn detection on."""
        if self._speaking or self._committed or self._discard or not self.config.endpoint.enabled:
            return []
        self._speaking = True
        start = result.timestamps[0] if result.timestamps else result.start_time
        return [
            self._event(
                "input_audio_buffer.speech_started",
                audio_start_ms=round(start * 1000),
                item_id=item,
            )
        ]

    def _speech_stopped(self, item: str, end_s: float) -> Send:
        return self._event(
            "input_audio_buffer.speech_stopped", audio_end_ms=round(end_s * 1000), item_id=item
        )

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
        self._speaking = False

    def eof(self, duration: float) -> list[Command]:
        del duration
        self.state = State.CLOSED
        return [Close(CLOSE_NORMAL, "end of input")]

    def error(self, exc: AsrServeError) -> list[Command]:
        return [self._error("server_error", str(exc))]
