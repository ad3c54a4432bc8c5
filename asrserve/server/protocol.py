"""Sans-I/O WebSocket session protocol: client frames in, commands out; core
results in, server frames out.

Two dialects share a port; the first frame decides:

- **sherpa**: binary float32 frames at the server's input rate, text ``Done``
  to finish; every result is sherpa-onnx's JSON, ``Done!`` after the last.
- **asrserve**: an optional text ``{"type": "start", ...}`` first, binary audio
  (f32le or s16le), ``flush`` and ``stop`` commands; typed JSON replies.

Each dialect is one class (:class:`SherpaSession`, :class:`AsrserveSession`,
and :class:`~asrserve.server.realtime.RealtimeSession` on its own route) behind
one :class:`WireSession` protocol, which is all the transport knows;
:class:`Session` sniffs the shared port's first frame and hands off.

Nothing here touches a socket, a thread or the model.
"""

from __future__ import annotations

import enum
import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import numpy.typing as npt

from asrserve.config import DecodingConfig, EndpointConfig, normalize_method
from asrserve.core.events import Result
from asrserve.errors import AsrServeError, AudioFormatError, ConfigError, ProtocolError

# WebSocket close codes used by the server (RFC 6455 section 7.4.1).
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_UNSUPPORTED = 1003
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL = 1011
CLOSE_TRY_AGAIN = 1013

FORMATS = ("f32le", "s16le")
MAX_SAMPLE = 32768.0
"""float32 samples beyond this are not audio in any convention (clients send
[-1, 1]; some send the int16 range); far larger ones overflow the features."""
_MAX_RATE = 384_000
_MIN_RATE = 1000
# What a client's start message may ask for: more would let one session stall
# its whole decode lane (the search grows with the beam; hotwords are compiled
# on the decode thread), so larger values are refused as bad_config.
MAX_BEAM = 64
MAX_SYMBOLS_PER_FRAME = 16
MAX_HOTWORDS = 1000
MAX_HOTWORD_CHARS = 200


def session_cost(decoding: DecodingConfig, hotword_tokens: int) -> float:
    """What a session costs against the server's budget: the beam (greedy: 1),
    the search's work per frame, plus its hotwords' token pieces / 100 (graph
    memory and compile time). Beam 4 without hotwords costs 4; beam 64 with
    1,000 three-piece hotwords 94."""
    width = decoding.beam if normalize_method(decoding.method) == "modified_beam" else 1
    return width + hotword_tokens / 100.0


class Dialect(enum.Enum):
    UNKNOWN = "unknown"
    SHERPA = "sherpa"
    ASRSERVE = "asrserve"
    REALTIME = "realtime"  # OpenAI Realtime transcription events (server/realtime.py)


class State(enum.Enum):
    AWAITING_FIRST = "awaiting_first"
    STREAMING = "streaming"
    STOPPED = "stopped"  # input ended; finals still to come
    CLOSED = "closed"


@dataclass(frozen=True)
class SessionConfig:
    """What a session negotiated (or the server's defaults)."""

    sample_rate: int = 16000
    format: str = "f32le"
    decoding: DecodingConfig = field(default_factory=DecodingConfig)
    hotwords: tuple[str, ...] = ()
    endpoint: EndpointConfig = field(default_factory=lambda: EndpointConfig(enabled=True))
    every_chunk: bool = False
    """A result after every decoded chunk, changed or not, and a final at every
    endpoint, empty or not (sherpa-onnx's server does so)."""
    model: str = ""
    """The model asked for by name (``""``: the connection's, else the server's default)."""


# --- commands the protocol hands to the transport ------------------------
@dataclass(frozen=True)
class Start:
    config: SessionConfig


@dataclass(frozen=True)
class Audio:
    samples: npt.NDArray[np.float32]


@dataclass(frozen=True)
class Flush:
    pass


@dataclass(frozen=True)
class Stop:
    pass


@dataclass(frozen=True)
class Send:
    """A frame to send to the client (str: text frame)."""

    data: str
    awaits_close: bool = field(default=False, compare=False, kw_only=True)
    """The dialect's last frame, after which the client closes the connection
    (sherpa's ``Done!``): the transport gives it a few seconds to, then closes."""


@dataclass(frozen=True)
class SendError(Send):
    """An ``error`` message; ``code`` is kept for the server's metrics."""

    code: str = "internal"


@dataclass(frozen=True)
class Close:
    code: int
    reason: str


Command = Start | Audio | Flush | Stop | Send | Close


def decode_audio(data: bytes, fmt: str) -> npt.NDArray[np.float32]:
    """Binary frame → float32 samples; refuses what is not whole, finite audio."""
    width = 4 if fmt == "f32le" else 2
    if len(data) % width:
        raise AudioFormatError(
            f"binary frame of {len(data)} bytes is not a whole number of {fmt} samples "
            f"({width} bytes each); frame dropped"
        )
    if fmt == "s16le":
        return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0
    x = np.frombuffer(data, dtype="<f4").astype(np.float32)
    if not np.isfinite(x).all():
        raise AudioFormatError("binary frame holds NaN or infinite samples; frame dropped")
    if x.size and float(np.abs(x).max()) > MAX_SAMPLE:
        raise AudioFormatError(
            f"binary frame holds samples beyond ±{MAX_SAMPLE:g} (float32 audio is expected "
            "in [-1, 1]); frame dropped"
        )
    return x


def _endpoint_from(obj: Any, base: EndpointConfig) -> EndpointConfig:
    if not isinstance(obj, dict):
        raise ConfigError("'endpointing' must be an object")
    known = {
        "enabled",
        "rule1_min_trailing_silence",
        "rule2_min_trailing_silence",
        "rule3_min_utterance_length",
    }
    _refuse_unknown(obj, known, "endpointing")
    for k, v in obj.items():
        ok = isinstance(v, bool) if k == "enabled" else _is_number(v)
        if not ok:
            raise ConfigError(f"endpointing.{k} has the wrong type: {echo(v)}")
    r1, r2, r3 = base.rule1, base.rule2, base.rule3
    cfg = EndpointConfig(
        enabled=bool(obj.get("enabled", True)),
        rule1=replace(
            r1,
            min_trailing_silence=float(
                obj.get("rule1_min_trailing_silence", r1.min_trailing_silence)
            ),
        ),
        rule2=replace(
            r2,
            min_trailing_silence=float(
                obj.get("rule2_min_trailing_silence", r2.min_trailing_silence)
            ),
        ),
        rule3=replace(
            r3,
            min_utterance_length=float(
                obj.get("rule3_min_utterance_length", r3.min_utterance_length)
            ),
        ),
    )
    return cfg.validate()


def _refuse_unknown(obj: dict[str, Any], known: set[str], what: str) -> None:
    unknown = sorted(set(obj) - known)
    if unknown:
        raise ConfigError(
            f"unknown {what} option(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _decoding_from(obj: Any, base: DecodingConfig) -> DecodingConfig:
    if not isinstance(obj, dict):
        raise ConfigError("'decoding' must be an object")
    known = {"method", "beam", "max_symbols_per_frame", "blank_penalty", "language"}
    _refuse_unknown(obj, known, "decoding")
    values: dict[str, Any] = {}
    if "language" in obj:
        if not isinstance(obj["language"], str):
            raise ConfigError("decoding.language must be a string")
        values["language"] = obj["language"].strip().lower()
    if "method" in obj:
        if not isinstance(obj["method"], str):
            raise ConfigError("decoding.method must be a string")
        values["method"] = normalize_method(obj["method"])
    for k, kind in (("beam", int), ("max_symbols_per_frame", int), ("blank_penalty", float)):
        if k in obj:
            v = obj[k]
            if not _is_number(v) or (kind is int and not isinstance(v, int)):
                raise ConfigError(f"decoding.{k} must be a {kind.__name__}, got {echo(v)}")
            values[k] = kind(v)
    for k, most in (("beam", MAX_BEAM), ("max_symbols_per_frame", MAX_SYMBOLS_PER_FRAME)):
        if values.get(k, 0) > most:
            raise ConfigError(f"decoding.{k} is at most {most} on this server, got {values[k]}")
    return replace(base, **values).validate()


def parse_start(obj: dict[str, Any], defaults: SessionConfig) -> SessionConfig:
    """The ``start`` message → a validated :class:`SessionConfig`."""
    known = {
        "type",
        "sample_rate",
        "format",
        "decoding",
        "hotwords",
        "hotwords_score",
        "endpointing",
        "model",
    }
    _refuse_unknown(obj, known, "start")
    model = obj.get("model", defaults.model)
    if not isinstance(model, str) or len(model) > 200:
        raise ConfigError(f"model must be a model's name, got {echo(model)}")
    rate = obj.get("sample_rate", defaults.sample_rate)
    if not isinstance(rate, int) or isinstance(rate, bool) or not _MIN_RATE <= rate <= _MAX_RATE:
        raise ConfigError(
            f"sample_rate must be an integer in [{_MIN_RATE}, {_MAX_RATE}], got {echo(rate)}"
        )
    fmt = obj.get("format", defaults.format)
    if fmt not in FORMATS:
        raise ConfigError(f"format must be one of {', '.join(FORMATS)}, got {echo(fmt)}")
    decoding = _decoding_from(obj.get("decoding", {}), defaults.decoding)
    if "hotwords_score" in obj:
        if not _is_number(obj["hotwords_score"]):
            raise ConfigError(f"hotwords_score must be a number, got {echo(obj['hotwords_score'])}")
        decoding = replace(decoding, hotwords_score=float(obj["hotwords_score"])).validate()
    hotwords = obj.get("hotwords", list(defaults.hotwords))
    if not isinstance(hotwords, list) or not all(isinstance(h, str) for h in hotwords):
        raise ConfigError("hotwords must be a list of strings")
    if len(hotwords) > MAX_HOTWORDS or any(len(h) > MAX_HOTWORD_CHARS for h in hotwords):
        raise ConfigError(
            f"at most {MAX_HOTWORDS} hotwords of at most {MAX_HOTWORD_CHARS} characters each"
        )
    if hotwords and decoding.method != "modified_beam":
        raise ConfigError("hotwords need decoding method 'modified_beam'")
    endpoint = defaults.endpoint
    if "endpointing" in obj:
        endpoint = _endpoint_from(obj["endpointing"], defaults.endpoint)
    return SessionConfig(rate, fmt, decoding, tuple(hotwords), endpoint, model=model)


ECHO_CHARS = 64
"""A client's value quoted back in an error is cut to this many characters."""
MAX_ERROR_CHARS = 1024
"""An error message is cut to this length: what a client sent is never echoed
back in full (a reply per frame must not outgrow the frame)."""


def echo(value: object, limit: int = ECHO_CHARS) -> str:
    """``repr`` of a client's value for an error message, cut to ``limit``
    characters (``…`` where cut)."""
    if isinstance(value, str) and len(value) > limit:
        return repr(value[:limit]) + "…"
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


def clip(message: str, limit: int = MAX_ERROR_CHARS) -> str:
    """``message`` cut to ``limit`` characters (``…`` where cut)."""
    return message if len(message) <= limit else message[: limit - 1] + "…"


def _error(code: str, message: str) -> SendError:
    body = {"type": "error", "code": code, "message": clip(message)}
    return SendError(json.dumps(body), code)


def _error_code(exc: AsrServeError) -> str:
    """The error code of an exception the transport hit for a session."""
    if isinstance(exc, AudioFormatError):
        return "bad_audio"
    return "bad_message" if isinstance(exc, ProtocolError) else "internal"


def _message(text: str) -> dict[str, Any] | None:
    """A text frame as a command message: a JSON object with a string
    ``type``, else None."""
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: deeply nested JSON
        return None
    if not isinstance(obj, dict) or not isinstance(obj.get("type"), str):
        return None
    return obj


_NOT_A_MESSAGE = "text frames must be JSON objects with a string 'type'"
_START_NOT_FIRST = "'start' must be the first message"


def _unknown_type(kind: object) -> str:
    return f"unknown message type {echo(kind)}; expected start, flush or stop"


class WireSession(Protocol):
    """What the transport asks of one connection's protocol session, whatever
    its wire dialect (:class:`Session` on the shared port, which hands off to
    :class:`SherpaSession` or :class:`AsrserveSession`;
    :class:`~asrserve.server.realtime.RealtimeSession` on ``/v1/realtime``).

    Sans-I/O: every method takes what happened and returns the commands to
    carry out, in order; nothing here touches a socket."""

    @property
    def dialect_name(self) -> str:
        """The wire dialect for the access line (``-`` while unknown)."""
        ...

    def opening(self) -> list[Command]:
        """What the server says first, before any client frame."""
        ...

    def receive(self, frame: str | bytes) -> list[Command]:
        """A client frame (str: text frame)."""
        ...

    def refuse(self, code: str, message: str, close_code: int = CLOSE_UNSUPPORTED) -> list[Command]:
        """The server refuses the session its first message started."""
        ...

    def stop_input(self) -> None:
        """The server ended the input (a limit, a revoked token)."""
        ...

    def server_error(self, code: str, message: str) -> list[SendError]:
        """An error the server raises on its own (a limit, a revoked token) as
        this dialect tells it: none where the dialect has no error message."""
        ...

    def result(
        self, result: Result, end_time: float, *, final: bool, eof: bool = False
    ) -> list[Command]:
        """A result of the current segment (the scheduler offers partials only
        when the hypothesis changed)."""
        ...

    def eof(self, duration: float) -> list[Command]:
        """The input is decoded to its end: the session's last word."""
        ...

    def error(self, exc: AsrServeError) -> list[Command]:
        """An error the transport hit for this session (audio refused by the core …)."""
        ...


class SherpaSession:
    """sherpa-onnx's dialect, once the first frame chose it: binary float32
    frames, text ``Done`` to finish; every result is sherpa-onnx's JSON and
    ``Done!`` follows the last, after which the client closes. There is no
    error message: what the server refuses it closes (1003)."""

    dialect = Dialect.SHERPA
    dialect_name = Dialect.SHERPA.value

    def __init__(self, config: SessionConfig) -> None:
        self.config = replace(config, every_chunk=True)
        self.state = State.AWAITING_FIRST
        self._json = SherpaJson()

    def begin(self) -> list[Command]:
        self.state = State.STREAMING
        return [Start(self.config)]

    def opening(self) -> list[Command]:
        return []

    def receive(self, frame: str | bytes) -> list[Command]:
        if self.state is not State.STREAMING:
            return []  # closed, or input ended: frames are ignored
        if isinstance(frame, bytes):
            try:
                return [Audio(decode_audio(frame, self.config.format))]
            except AudioFormatError as exc:
                return [Close(CLOSE_UNSUPPORTED, str(exc)[:120])]
        if frame == "Done":
            self.state = State.STOPPED
            return [Stop()]
        obj = _message(frame)
        if obj is None:
            return self._reject(_NOT_A_MESSAGE)
        kind = obj["type"]
        if kind == "start":
            return self._reject(_START_NOT_FIRST)
        if kind == "stop":
            self.state = State.STOPPED
            return [Stop()]
        if kind == "flush":
            return [Flush()]
        return self._reject(_unknown_type(kind))

    def _reject(self, message: str) -> list[Command]:
        self.state = State.CLOSED
        return [Close(CLOSE_UNSUPPORTED, message[:120])]

    def refuse(self, code: str, message: str, close_code: int = CLOSE_UNSUPPORTED) -> list[Command]:
        del code
        self.state = State.CLOSED
        return [Close(close_code, message[:120])]

    def stop_input(self) -> None:
        if self.state is State.STREAMING:
            self.state = State.STOPPED

    def server_error(self, code: str, message: str) -> list[SendError]:
        del code, message
        return []

    def result(
        self, result: Result, end_time: float, *, final: bool, eof: bool = False
    ) -> list[Command]:
        del end_time
        return [Send(self._json(result, final or eof, eof))]

    def eof(self, duration: float) -> list[Command]:
        del duration
        self.state = State.CLOSED
        return [Send("Done!", awaits_close=True)]

    def error(self, exc: AsrServeError) -> list[Command]:
        code = CLOSE_INTERNAL if _error_code(exc) == "internal" else CLOSE_UNSUPPORTED
        return [Close(code, str(exc)[:120])]


class AsrserveSession:
    """The asrserve JSON dialect, once the first frame chose it: binary audio
    in the negotiated format, ``flush`` and ``stop`` commands; typed JSON
    replies (``ready``, ``partial``, ``final``, ``eof``, ``error``). A bad
    frame is an error message and the session goes on."""

    dialect = Dialect.ASRSERVE
    dialect_name = Dialect.ASRSERVE.value

    def __init__(self, config: SessionConfig, model_sample_rate: int = 16000) -> None:
        self.config = config
        self.model_sample_rate = model_sample_rate
        self.state = State.AWAITING_FIRST
        self.segments = 0

    def begin(self) -> list[Command]:
        self.state = State.STREAMING
        return [Start(self.config), Send(json.dumps(self._ready()))]

    def _ready(self) -> dict[str, Any]:
        c = self.config
        ep = c.endpoint
        return {
            "type": "ready",
            "sample_rate": c.sample_rate,
            "model_sample_rate": self.model_sample_rate,
            "format": c.format,
            "decoding": {k: v for k, v in asdict(c.decoding).items() if k != "hotwords"},
            "hotwords": list(c.hotwords),
            "endpointing": {
                "enabled": ep.enabled,
                "rule1_min_trailing_silence": ep.rule1.min_trailing_silence,
                "rule2_min_trailing_silence": ep.rule2.min_trailing_silence,
                "rule3_min_utterance_length": ep.rule3.min_utterance_length,
            },
        }

    def opening(self) -> list[Command]:
        return []

    def receive(self, frame: str | bytes) -> list[Command]:
        if self.state is State.CLOSED:
            return []
        if self.state is State.STOPPED:
            return [_error("bad_message", "input already ended; frame ignored")]
        if isinstance(frame, bytes):
            try:
                return [Audio(decode_audio(frame, self.config.format))]
            except AudioFormatError as exc:
                return [_error("bad_audio", str(exc))]
        obj = _message(frame)
        if obj is None:
            return [_error("bad_message", _NOT_A_MESSAGE)]
        kind = obj["type"]
        if kind == "start":
            return [_error("bad_message", _START_NOT_FIRST)]
        if kind == "stop":
            self.state = State.STOPPED
            return [Stop()]
        if kind == "flush":
            return [Flush()]
        return [_error("bad_message", _unknown_type(kind))]

    def refuse(self, code: str, message: str, close_code: int = CLOSE_UNSUPPORTED) -> list[Command]:
        self.state = State.CLOSED
        return [_error(code, message), Close(close_code, message[:120])]

    def stop_input(self) -> None:
        if self.state is State.STREAMING:
            self.state = State.STOPPED

    def server_error(self, code: str, message: str) -> list[SendError]:
        return [_error(code, message)]

    def result(
        self, result: Result, end_time: float, *, final: bool, eof: bool = False
    ) -> list[Command]:
        if eof and not result.text and self.segments:
            return []  # nothing after the last endpoint: no empty final
        if final:
            self.segments += 1
        return [Send(json.dumps(asrserve_json(result, end_time, final)))]

    def eof(self, duration: float) -> list[Command]:
        self.state = State.CLOSED
        body = {"type": "eof", "segments": self.segments, "duration": round(duration, 3)}
        return [Send(json.dumps(body)), Close(CLOSE_NORMAL, "end of input")]

    def error(self, exc: AsrServeError) -> list[Command]:
        return [_error(_error_code(exc), str(exc))]


class Session:
    """The shared port's session: sniffs the first frame and hands off.

    A binary frame (or text ``Done``) first starts a :class:`SherpaSession`;
    ``start``, ``flush`` or ``stop`` first starts an :class:`AsrserveSession`;
    every later call is that session's. Until then a text frame that is no
    command is a JSON error (the client speaks JSON, so ``Done`` is no
    longer sherpa's), and a ``start`` the server cannot take is refused
    without any session (dialect unknown).

    Feed client frames to :meth:`receive`; feed the core's results to
    :meth:`result` and :meth:`eof`. Each returns the commands to carry out,
    in order.
    """

    def __init__(self, defaults: SessionConfig, model_sample_rate: int = 16000) -> None:
        self.defaults = defaults
        self.model_sample_rate = model_sample_rate
        self._chosen: SherpaSession | AsrserveSession | None = None
        self._dialect = Dialect.UNKNOWN  # ASRSERVE once a text frame was refused
        self._state = State.AWAITING_FIRST

    @property
    def dialect(self) -> Dialect:
        return self._chosen.dialect if self._chosen is not None else self._dialect

    @property
    def dialect_name(self) -> str:
        dialect = self.dialect
        return dialect.value if dialect is not Dialect.UNKNOWN else "-"

    @property
    def state(self) -> State:
        return self._chosen.state if self._chosen is not None else self._state

    @property
    def config(self) -> SessionConfig:
        return self._chosen.config if self._chosen is not None else self.defaults

    def opening(self) -> list[Command]:
        return []

    # --- client → server --------------------------------------------------
    def receive(self, frame: str | bytes) -> list[Command]:
        if self._chosen is not None:
            return self._chosen.receive(frame)
        if self._state is State.CLOSED:
            return []
        if isinstance(frame, bytes):
            sherpa = SherpaSession(replace(self.defaults, format="f32le"))
            return self._hand_off(sherpa, frame)
        if frame == "Done" and self._dialect is not Dialect.ASRSERVE:
            return self._hand_off(SherpaSession(self.defaults), frame)
        obj = _message(frame)
        if obj is None:
            return self._not_a_command(_NOT_A_MESSAGE)
        kind = obj["type"]
        if kind == "start":
            try:
                config = parse_start(obj, self.defaults)
            except ConfigError as exc:
                self._state = State.CLOSED
                return [
                    _error("bad_config", str(exc)),
                    Close(CLOSE_UNSUPPORTED, "bad start message"),
                ]
            return self._hand_off(AsrserveSession(config, self.model_sample_rate), None)
        if kind in ("flush", "stop"):
            asrserve = AsrserveSession(self.defaults, self.model_sample_rate)
            return self._hand_off(asrserve, frame)
        return self._not_a_command(_unknown_type(kind))

    def _hand_off(
        self, session: SherpaSession | AsrserveSession, frame: str | bytes | None
    ) -> list[Command]:
        """``session`` speaks for this connection from now on: it begins, then
        takes ``frame`` (the one that chose it), if any."""
        self._chosen = session
        out = session.begin()
        return out if frame is None else [*out, *session.receive(frame)]

    def _not_a_command(self, message: str) -> list[Command]:
        self._dialect = Dialect.ASRSERVE
        return [_error("bad_message", message)]

    def refuse(self, code: str, message: str, close_code: int = CLOSE_UNSUPPORTED) -> list[Command]:
        """The server refuses the session its first message started (the
        transport checked what it asked for): an error (asrserve dialect),
        then the close."""
        if self._chosen is not None:
            return self._chosen.refuse(code, message, close_code)
        self._state = State.CLOSED
        return [_error(code, message), Close(close_code, message[:120])]

    def stop_input(self) -> None:
        if self._chosen is not None:
            self._chosen.stop_input()

    def server_error(self, code: str, message: str) -> list[SendError]:
        if self._chosen is not None:
            return self._chosen.server_error(code, message)
        return [_error(code, message)]

    # --- core → client ----------------------------------------------------
    def result(
        self, result: Result, end_time: float, *, final: bool, eof: bool = False
    ) -> list[Command]:
        if self._chosen is not None:
            return self._chosen.result(result, end_time, final=final, eof=eof)
        return []  # no session started: no stream, no results

    def eof(self, duration: float) -> list[Command]:
        if self._chosen is not None:
            return self._chosen.eof(duration)
        self._state = State.CLOSED
        return [Close(CLOSE_NORMAL, "end of input")]

    def error(self, exc: AsrServeError) -> list[Command]:
        if self._chosen is not None:
            return self._chosen.error(exc)
        return [_error(_error_code(exc), str(exc))]


if TYPE_CHECKING:  # every dialect's class is a WireSession (mypy checks it here)

    def _is_wire_session(s: Session | SherpaSession | AsrserveSession) -> WireSession:
        return s


class SherpaJson:
    """sherpa-onnx's ``OnlineRecognizerResult`` JSON, byte for byte as its
    server writes it (``{ "text": ...}``, fixed decimals: 2 for times, 6 for
    ``ys_probs``; ``timestamps`` count from the segment's ``start_time``, the
    core's from the stream's start), for one stream's successive results: the
    lists of a result that extends the previous one (a partial after each
    chunk) are rendered only for the items added, so a segment's messages cost
    in proportion to their length, not to its square in Python."""

    def __init__(self) -> None:
        self._start = 0.0
        self._tokens = _Rendered(_quoted)
        self._timestamps = _Rendered(_since(0.0))
        self._ys_probs = _Rendered(lambda p: f"{p:.6f}")

    def __call__(self, result: Result, is_final: bool, is_eof: bool) -> str:
        start = result.start_time
        if start != self._start:  # timestamps count from the segment's start
            self._start = start
            self._timestamps = _Rendered(_since(start))
        return (
            f'{{ "text": {_quoted(result.text)}, "tokens": [{self._tokens(result.tokens)}], '
            f'"timestamps": [{self._timestamps(result.timestamps)}], '
            f'"ys_probs": [{self._ys_probs(result.ys_probs)}], '
            f'"lm_probs": [], "context_scores": [], "segment": {result.segment}, '
            f'"words": [], "num_trailing_blanks": {result.num_trailing_blanks}, '
            f'"start_time": {start:.2f}, "is_final": {"true" if is_final else "false"}, '
            f'"is_eof": {"true" if is_eof else "false"}}}'
        )


def _since(start: float) -> Callable[[float], str]:
    return lambda t: f"{max(t - start, 0.0):.2f}"


class _Rendered:
    """A list's items rendered and joined with ``", "``, kept for the next
    list: when that one starts with the same items only the rest is rendered."""

    def __init__(self, render: Callable[[Any], str]) -> None:
        self._render = render
        self._items: list[Any] = []
        self._text = ""

    def __call__(self, items: Sequence[Any]) -> str:
        n = len(self._items)
        if len(items) < n or items[:n] != self._items:
            n, self._items, self._text = 0, [], ""
        if len(items) > n:
            more = ", ".join(map(self._render, items[n:]))
            self._text = f"{self._text}, {more}" if n else more
            self._items = list(items)
        return self._text


_ESCAPES = {'"': '\\"', "\\": "\\\\", **{chr(c): f"\\u{c:04x}" for c in range(0x20)}}
_NEEDS_ESCAPE = re.compile(r'["\\\x00-\x1f]')


def _quoted(text: str) -> str:
    """A JSON string as sherpa-onnx writes it (``std::quoted``: only quotes and
    backslashes escaped, UTF-8 as is); control characters, which it would
    write raw, are escaped so the message stays JSON."""
    if _NEEDS_ESCAPE.search(text) is None:
        return f'"{text}"'
    return '"' + "".join(_ESCAPES.get(c, c) for c in text) + '"'


def asrserve_json(result: Result, end_time: float, final: bool) -> dict[str, Any]:
    return {
        "type": "final" if final else "partial",
        "segment": result.segment,
        "text": result.text,
        "tokens": result.tokens,
        "timestamps": result.timestamps,
        "start": result.start_time,
        "end": round(end_time, 3),
    }
