"""Frozen option dataclasses with ``validate()``.

Every layer (Python API, CLI, server) builds these, so an unknown or
out-of-range option is refused in one place with one clear message.
"""

from __future__ import annotations

import ipaddress
import math
import struct
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from asrserve.errors import ConfigError

DecodingMethod = Literal["greedy", "modified_beam"]
_METHOD_ALIASES = {
    "greedy": "greedy",
    "greedy_search": "greedy",
    "beam": "modified_beam",
    "modified_beam": "modified_beam",
    "modified_beam_search": "modified_beam",
}


def normalize_method(name: str) -> DecodingMethod:
    """Map user spellings (``beam``, ``greedy_search`` ...) to a method name."""
    try:
        return _METHOD_ALIASES[name]  # type: ignore[return-value]
    except KeyError:
        known = ", ".join(sorted(_METHOD_ALIASES))
        raise ConfigError(f"unknown decoding method {name!r}; expected one of: {known}") from None


@dataclass(frozen=True)
class FeatureConfig:
    """Kaldi fbank options; the defaults are those icefall/sherpa models train with."""

    sample_rate: int = 16000
    num_bins: int = 80
    frame_length_ms: float = 25.0
    frame_shift_ms: float = 10.0
    low_freq: float = 20.0
    high_freq: float = -400.0
    dither: float = 0.0
    snip_edges: bool = False

    def validate(self) -> FeatureConfig:
        if self.sample_rate <= 0:
            raise ConfigError(f"feature sample_rate must be positive, got {self.sample_rate}")
        if self.num_bins <= 0:
            raise ConfigError(f"feature num_bins must be positive, got {self.num_bins}")
        if self.frame_shift_ms <= 0 or self.frame_length_ms <= 0:
            raise ConfigError("frame_shift_ms and frame_length_ms must be positive")
        return self


@dataclass(frozen=True)
class DecodingConfig:
    """Search options.

    ``max_symbols_per_frame=1`` reproduces sherpa-onnx's online greedy search;
    ``beam`` is the number of active paths of modified beam search.
    """

    method: DecodingMethod = "greedy"
    beam: int = 4
    max_symbols_per_frame: int = 1
    blank_penalty: float = 0.0
    hotwords: tuple[str, ...] = ()
    hotwords_score: float = 1.5
    temperature_scale: float = 2.0
    """Divides the joiner's logits for the per-token confidences (``ys_probs``)
    only, as sherpa-onnx's option of that name; decoding is unchanged."""
    language: str = ""
    """The spoken language's code (``en``, ``de`` …) for multilingual models
    (Whisper); ``""`` keeps the model's default (its ``--language``, else
    detection). Models of one language ignore it."""

    def validate(self) -> DecodingConfig:
        normalize_method(self.method)
        if self.beam < 1:
            raise ConfigError(f"beam must be >= 1, got {self.beam}")
        if self.max_symbols_per_frame < 1:
            raise ConfigError(
                f"max_symbols_per_frame must be >= 1, got {self.max_symbols_per_frame}"
            )
        if not (math.isfinite(self.temperature_scale) and 0 < self.temperature_scale <= MAX_SCORE):
            raise ConfigError(
                f"temperature_scale must be a number in (0, {MAX_SCORE:g}], "
                f"got {self.temperature_scale}"
            )
        if not 0 <= self.blank_penalty <= MAX_SCORE:
            raise ConfigError(
                f"blank_penalty must be a number in [0, {MAX_SCORE:g}], got {self.blank_penalty}"
            )
        check_score("hotwords_score", self.hotwords_score)
        if not isinstance(self.language, str) or len(self.language) > 16:
            raise ConfigError(f"language must be a short code like 'en', got {self.language!r}")
        return self


#: Bound of every log-domain score a user sets (blank penalty, hotword
#: scores): joiner logits differ by tens at most, so more only overflows.
MAX_SCORE = 100.0


def check_score(what: str, value: float) -> float:
    """``value`` if it is a finite score within ±:data:`MAX_SCORE`."""
    if not (math.isfinite(value) and abs(value) <= MAX_SCORE):
        raise ConfigError(
            f"{what} must be a number in [-{MAX_SCORE:g}, {MAX_SCORE:g}], got {value}"
        )
    return value


DEFAULT_MAX_STREAMS = 32
"""Streams decoded together offline (``transcribe``, every ``bulk`` worker) by
default. A memory-bound encoder (a large LSTM in int8) costs about the same per
run for 1 or 32 rows, so CPU per audio second keeps falling up to a few dozen
streams (80M LSTM int8, 31 files, 1 thread: 6.4 CPU-s at 8 streams, 5.3 at 16,
4.4 at 32); a stream holds a few pieces of audio and its states."""


@dataclass(frozen=True)
class EndpointRule:
    """Endpoint when trailing silence and utterance length reach these seconds."""

    must_contain_nonsilence: bool
    min_trailing_silence: float
    min_utterance_length: float

    def activated(self, trailing_silence: float, utterance_length: float) -> bool:
        """Compared in float32, as sherpa-onnx and sherpa-ncnn compare (C++
        ``float``): there ``2.4 >= 2.4`` fails for 240 frames of 10 ms, because
        ``float(240) * 0.01f`` rounds below ``2.4f``; in float64 it would hold
        and the endpoint would come one frame early."""
        t, u = _f32(trailing_silence), _f32(utterance_length)
        contains_nonsilence = u > t
        return (
            (contains_nonsilence or not self.must_contain_nonsilence)
            and t >= _f32(self.min_trailing_silence)
            and u >= _f32(self.min_utterance_length)
        )


def _f32(x: float) -> float:
    """``x`` rounded to the nearest float32 (exact as a Python float)."""
    return float(struct.unpack("f", struct.pack("f", x))[0])


def frames_to_seconds_f32(frames: int, frame_shift_s: float) -> float:
    """``frames * frame_shift_s`` computed as sherpa-onnx computes it for its
    endpoint rules: both operands as float32, the product rounded to float32."""
    return _f32(_f32(float(frames)) * _f32(frame_shift_s))


@dataclass(frozen=True)
class EndpointConfig:
    """The three endpoint rules; defaults match sherpa-onnx."""

    enabled: bool = False
    rule1: EndpointRule = field(default_factory=lambda: EndpointRule(False, 2.4, 0.0))
    rule2: EndpointRule = field(default_factory=lambda: EndpointRule(True, 1.2, 0.0))
    rule3: EndpointRule = field(default_factory=lambda: EndpointRule(False, 0.0, 20.0))

    def validate(self) -> EndpointConfig:
        for rule in (self.rule1, self.rule2, self.rule3):
            for v in (rule.min_trailing_silence, rule.min_utterance_length):
                if not (math.isfinite(v) and v >= 0):
                    raise ConfigError(
                        f"endpoint rule thresholds must be finite and >= 0 seconds, got {v}"
                    )
        return self

    def is_endpoint(self, trailing_silence: float, utterance_length: float) -> bool:
        if not self.enabled:
            return False
        return any(
            r.activated(trailing_silence, utterance_length)
            for r in (self.rule1, self.rule2, self.rule3)
        )


def from_mapping(cls: type[Any], values: dict[str, Any], what: str) -> Any:
    """Build dataclass ``cls`` from a dict, refusing unknown keys by name."""
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(
            f"unknown {what} option(s): {', '.join(unknown)}; known: {', '.join(sorted(names))}"
        )
    return cls(**values)


@dataclass(frozen=True)
class ServerConfig:
    """``asrserve serve`` settings; every limit answers clients by name."""

    host: str = "127.0.0.1"
    port: int = 6006
    sample_rate: int = 16000  # what clients send unless they say otherwise
    max_batch_size: int = 32
    max_wait_ms: float = 40.0  # the longest new audio waits for other streams to share calls
    decode_threads: int = 1  # threads draining the one pool of streams (server/scheduler.py)
    max_connections: int = 64
    max_message_bytes: int = 1 << 20
    max_backlog_s: float = 10.0  # undecoded audio per stream before reads pause
    idle_timeout_s: float = 30.0
    max_session_s: float = 3600.0
    shutdown_timeout_s: float = 10.0
    max_audio_s: float = 3600.0  # audio seconds one session may send
    max_upload_bytes: int = 25 * 1024 * 1024  # POST /v1/audio/transcriptions
    upload_workers: int = 2  # threads decoding uploads (each one upload at a time)
    max_queued_uploads: int = 8  # uploads waiting for a worker; more get 429
    max_connections_per_ip: int = 0  # 0: no per-address limit
    max_streams_per_token: int = 0  # 0: no per-token limit
    # proxies (CIDRs) whose X-Forwarded-For names the client; empty: the TCP peer is the client
    trusted_proxies: tuple[str, ...] = ()
    # a session's cost: beam (greedy: 1) + hotword token pieces / 100; 0: no limit
    max_session_cost: float = 100.0
    max_total_cost: float = 1024.0  # summed over open sessions (sessions at default cost: exempt)
    auth_token_file: str | None = None  # one token per line; None: no auth
    tls_cert: str | None = None
    tls_key: str | None = None
    allowed_origins: tuple[str, ...] = ()  # browser Origins allowed; empty: any
    max_pending_messages: int = 1024  # messages queued for a client that is not reading
    max_pending_bytes: int = 4 << 20  # bytes of them; past either the client is dropped
    header_timeout_s: float = 10.0  # idle or request head unfinished this long: closed
    body_timeout_s: float = 60.0  # a request body must arrive within this of its head
    max_pending_connections: int = 256  # connections not (yet) streams; oldest idle dropped
    isolate_batches: bool = False  # per-stream encoder runs for batch-dependent (int8) models
    max_loaded_models: int = 0  # models loaded at once; the idle least recently used goes; 0: all
    model_ttl_s: float = 0.0  # unload a model idle this long (the default too); 0: never

    def validate(self) -> ServerConfig:
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port must be in [0, 65535], got {self.port}")
        positive = (
            "max_pending_messages",
            "max_pending_bytes",
            "max_pending_connections",
            "sample_rate",
            "max_batch_size",
            "max_connections",
            "max_message_bytes",
            "decode_threads",
            "upload_workers",
        )
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("max_connections_per_ip", "max_streams_per_token", "max_loaded_models"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0 (0: no limit), got {getattr(self, name)}")
        if self.max_queued_uploads < 0:
            raise ConfigError(
                f"max_queued_uploads must be >= 0 (0: no queue), got {self.max_queued_uploads}"
            )
        if self.max_upload_bytes < 1:
            raise ConfigError(f"max_upload_bytes must be >= 1, got {self.max_upload_bytes}")
        for name in ("max_session_cost", "max_total_cost"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"{name} must be >= 0 (0: no limit), got {value}")
        for cidr in self.trusted_proxies:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                raise ConfigError(
                    f"trusted proxy {cidr!r} is not an IP address or CIDR (10.0.0.0/8, ::1)"
                ) from None
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("TLS needs both a certificate and a key (--tls-cert and --tls-key)")
        seconds = (
            "header_timeout_s",
            "body_timeout_s",
            "max_backlog_s",
            "idle_timeout_s",
            "max_session_s",
            "shutdown_timeout_s",
            "max_audio_s",
        )
        for name in seconds:
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be > 0 seconds, got {getattr(self, name)}")
        if self.max_wait_ms < 0:
            raise ConfigError(f"max_wait_ms must be >= 0, got {self.max_wait_ms}")
        if not (math.isfinite(self.model_ttl_s) and self.model_ttl_s >= 0):
            raise ConfigError(f"model_ttl_s must be >= 0 (0: never), got {self.model_ttl_s}")
        return self


SPLIT_MODES = ("auto", "none", "vad", "fixed")
"""``asrserve bulk --split``: how long files are cut into pieces."""


@dataclass(frozen=True)
class SplitConfig:
    """How long files are split (seconds). ``mode``: ``none``, ``vad``, ``fixed``,
    or ``auto`` (``vad`` when a Silero model is found, else ``fixed``; resolved by
    the command before work starts). ``vad_model``: ``silero_vad.onnx``."""

    mode: str = "none"
    min_duration_s: float = 120.0
    window_s: float = 60.0
    overlap_s: float = 1.0
    search_s: float = 5.0
    vad_model: str | None = None

    def validate(self) -> SplitConfig:
        if self.mode not in SPLIT_MODES:
            raise ConfigError(f"split mode must be one of {SPLIT_MODES}, got {self.mode!r}")
        if self.window_s < 5.0:
            raise ConfigError(f"split window must be >= 5 s, got {self.window_s}")
        if self.min_duration_s < self.window_s:
            raise ConfigError(
                f"split minimum duration ({self.min_duration_s} s) must be >= the window "
                f"({self.window_s} s)"
            )
        if not 0.0 <= self.overlap_s <= self.window_s / 4:
            raise ConfigError(f"split overlap must be in [0, window/4], got {self.overlap_s}")
        if not 0.0 <= self.search_s <= self.window_s / 4:
            raise ConfigError(f"VAD search span must be in [0, window/4], got {self.search_s}")
        if self.mode == "vad" and not self.vad_model:
            raise ConfigError("split mode 'vad' needs the path of silero_vad.onnx")
        return self

    def piece_count(self, duration_s: float) -> int:
        """How many pieces a file of ``duration_s`` seconds is decoded in."""
        if self.mode == "none" or duration_s <= self.min_duration_s:
            return 1
        return max(2, math.ceil(duration_s / self.window_s))
