"""Sans-I/O WebSocket session protocol: client frames in, commands out; core
results in, server frames out.

Two dialects share a port; the first frame decides:

- **sherpa**: binary float32 frames at the server's input rate, text ``Done``
  to finish; every result is sherpa-onnx's JSON, ``Done!`` after the last.
- **asrserve**: an optional text ``{"type": "start", ...}`` first, binary audio
  (f32le or s16le), ``flush`` and ``stop`` commands; typed JSON replies.

Nothing here touches a socket, a thread or the model.
"""

from __future__ import annotations

import enum
import json
import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

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
    known = {"method", "beam", "max_symbols_per_frame", "blank_penalty"}
    _refuse_unknown(obj, known, "decoding")
    values: dict[str, Any] = {}
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
    }
    _refuse_unknown(obj, known, "start")
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
    return SessionConfig(rate, fmt, decoding, tuple(hotwords), endpoint)


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


class Session:
    """One connection's protocol state.

    Feed client frames to :meth:`receive`; feed the core's results to
    :meth:`result` and :meth:`eof`. Each returns the commands to carry out,
    in order.
    """

    def __init__(self, defaults: SessionConfig, model_sample_rate: int = 16000) -> None:
        self.defaults = defaults
        self.model_sample_rate = model_sample_rate
        self.config = defaults
        self.dialect = Dialect.UNKNOWN
        self.state = State.AWAITING_FIRST
        self.segments = 0

    # --- client → server --------------------------------------------------
    def receive(self, frame: str | bytes) -> list[Command]:
        if self.state is State.CLOSED:
            return []
        if self.state is State.STOPPED:
            if self.dialect is Dialect.ASRSERVE:
                return [_error("bad_message", "input already ended; frame ignored")]
            return []
        if isinstance(frame, bytes):
            return self._receive_audio(frame)
        return self._receive_text(frame)

    def _begin(self, dialect: Dialect, config: SessionConfig) -> list[Command]:
        self.dialect = dialect
        self.config = config
        self.state = State.STREAMING
        out: list[Command] = [Start(config)]
        if dialect is Dialect.ASRSERVE:
            out.append(Send(json.dumps(self._ready())))
        return out

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

    def _receive_audio(self, data: bytes) -> list[Command]:
        out: list[Command] = []
        if self.state is State.AWAITING_FIRST:
            out += self._begin(Dialect.SHERPA, replace(self.defaults, format="f32le"))
        try:
            out.append(Audio(decode_audio(data, self.config.format)))
        except AudioFormatError as exc:
            out.append(
                _error("bad_audio", str(exc))
                if self.dialect is Dialect.ASRSERVE
                else Close(CLOSE_UNSUPPORTED, str(exc)[:120])
            )
        return out

    def _receive_text(self, text: str) -> list[Command]:
        if text == "Done" and self.dialect is not Dialect.ASRSERVE:
            out: list[Command] = []
            if self.state is State.AWAITING_FIRST:
                out += self._begin(Dialect.SHERPA, self.defaults)
            self.state = State.STOPPED
            return [*out, Stop()]
        try:
            obj = json.loads(text)
        except (ValueError, RecursionError):  # RecursionError: deeply nested JSON
            obj = None
        if not isinstance(obj, dict) or not isinstance(obj.get("type"), str):
            return self._reject("text frames must be JSON objects with a string 'type'")
        kind = obj["type"]
        if kind == "start":
            if self.state is not State.AWAITING_FIRST:
                return self._reject("'start' must be the first message")
            try:
                config = parse_start(obj, self.defaults)
            except ConfigError as exc:
                self.state = State.CLOSED
                return [
                    _error("bad_config", str(exc)),
                    Close(CLOSE_UNSUPPORTED, "bad start message"),
                ]
            return self._begin(Dialect.ASRSERVE, config)
        if kind in ("flush", "stop"):
            out = []
            if self.state is State.AWAITING_FIRST:
                out += self._begin(Dialect.ASRSERVE, self.defaults)
            if kind == "stop":
                self.state = State.STOPPED
                return [*out, Stop()]
            return [*out, Flush()]
        return self._reject(f"unknown message type {echo(kind)}; expected start, flush or stop")

    def _reject(self, message: str) -> list[Command]:
        if self.dialect is Dialect.SHERPA:
            self.state = State.CLOSED
            return [Close(CLOSE_UNSUPPORTED, message[:120])]
        if self.dialect is Dialect.UNKNOWN:
            self.dialect = Dialect.ASRSERVE
        return [_error("bad_message", message)]

    def refuse(self, code: str, message: str, close_code: int = CLOSE_UNSUPPORTED) -> list[Command]:
        """The server refuses the session its first message started (the
        transport checked what it asked for): an error (asrserve dialect),
        then the close."""
        self.state = State.CLOSED
        out: list[Command] = []
        if self.dialect is not Dialect.SHERPA:
            out.append(_error(code, message))
        return [*out, Close(close_code, message[:120])]

    def stop_input(self) -> None:
        """The server ended the input (a limit was reached)."""
        if self.state is State.STREAMING:
            self.state = State.STOPPED

    def error_message(self, code: str, message: str) -> SendError:
        return _error(code, message)

    # --- core → client ----------------------------------------------------
    def result(
        self, result: Result, end_time: float, *, final: bool, eof: bool = False
    ) -> list[Command]:
        """A result of the current segment (the scheduler offers partials only
        when the hypothesis changed)."""
        if self.dialect is Dialect.SHERPA:
            return [Send(json.dumps(sherpa_json(result, final or eof, eof)))]
        if eof and not result.text and self.segments:
            return []  # nothing after the last endpoint: no empty final
        if final:
            self.segments += 1
        return [Send(json.dumps(asrserve_json(result, end_time, final)))]

    def eof(self, duration: float) -> list[Command]:
        self.state = State.CLOSED
        if self.dialect is Dialect.SHERPA:
            return [Send("Done!")]
        return [
            Send(
                json.dumps(
                    {"type": "eof", "segments": self.segments, "duration": round(duration, 3)}
                )
            ),
            Close(CLOSE_NORMAL, "end of input"),
        ]

    def error(self, exc: AsrServeError) -> list[Command]:
        """An error the transport hit for this session (audio refused by the core …)."""
        code = (
            "bad_audio"
            if isinstance(exc, AudioFormatError)
            else ("bad_message" if isinstance(exc, ProtocolError) else "internal")
        )
        if self.dialect is Dialect.SHERPA:
            return [
                Close(CLOSE_UNSUPPORTED if code != "internal" else CLOSE_INTERNAL, str(exc)[:120])
            ]
        return [_error(code, str(exc))]


def sherpa_json(result: Result, is_final: bool, is_eof: bool) -> dict[str, Any]:
    """sherpa-onnx's ``OnlineRecognizerResult`` JSON."""
    return {
        "text": result.text,
        "tokens": result.tokens,
        "timestamps": [round(t, 2) for t in result.timestamps],
        "ys_probs": [],
        "lm_probs": [],
        "context_scores": [],
        "segment": result.segment,
        "words": [],
        "start_time": round(result.start_time, 2),
        "is_final": is_final,
        "is_eof": is_eof,
    }


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
