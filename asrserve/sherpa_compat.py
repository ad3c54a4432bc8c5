"""sherpa-onnx's ``OnlineRecognizer`` names over an asrserve :class:`Recognizer`,
for code ported from sherpa-onnx.

>>> rec = asrserve.OnlineRecognizer.from_transducer(
...     tokens="tokens.txt", encoder="encoder.onnx", decoder="decoder.onnx", joiner="joiner.onnx")
>>> s = rec.create_stream()
>>> s.accept_waveform(16000, samples)
>>> while rec.is_ready(s):
...     rec.decode_stream(s)
>>> rec.get_result(s)            # the text, as sherpa-onnx returns it

What differs from :class:`~asrserve.Recognizer`: explicit file paths instead
of a model directory, sherpa-onnx's keyword names, and ``get_result``
returning the text (``get_result_all`` gives asrserve's
:class:`~asrserve.Result`). Keyword arguments asrserve does not implement are
refused by name rather than ignored, unless they carry sherpa-onnx's default.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from asrserve.config import DecodingConfig, EndpointConfig, EndpointRule, FeatureConfig
from asrserve.core.events import Result
from asrserve.core.recognizer import Recognizer
from asrserve.core.stream import Stream
from asrserve.decoding.hotwords import hotword_phrases
from asrserve.errors import ConfigError, ModelLoadError

__all__ = ["OnlineRecognizer"]

_METHODS = {"greedy_search": "greedy", "modified_beam_search": "modified_beam"}

#: sherpa-onnx keyword arguments asrserve has no switch for, with the value
#: that means "as asrserve does anyway" (accepted; any other value is refused).
_NO_OP_DEFAULTS: dict[str, Any] = {
    "low_freq": 20.0,
    "high_freq": -400.0,
    "dither": 0.0,
    "normalize_samples": True,
    "snip_edges": False,
    "lm": "",
    "debug": False,
    "rule_fsts": "",
    "rule_fars": "",
    "reset_encoder": False,
    "modeling_unit": "cjkchar",  # hotwords: whitespace-separated tokens.txt pieces
    "bpe_vocab": "",
}


class OnlineRecognizer:
    """sherpa-onnx's streaming recognizer interface: ``create_stream``,
    ``is_ready``, ``decode_stream`` (one chunk per call), ``decode_streams``,
    ``get_result`` (text), ``is_endpoint``, ``reset``. The asrserve recognizer
    underneath is :attr:`recognizer`."""

    def __init__(self, recognizer: Recognizer, hotwords: list[str] | None = None) -> None:
        self.recognizer = recognizer
        self._hotwords = hotwords or []

    @classmethod
    def from_transducer(
        cls,
        tokens: str,
        encoder: str,
        decoder: str,
        joiner: str,
        num_threads: int = 2,
        sample_rate: float = 16000,
        feature_dim: int = 80,
        enable_endpoint_detection: bool = False,
        rule1_min_trailing_silence: float = 2.4,
        rule2_min_trailing_silence: float = 1.2,
        rule3_min_utterance_length: float = 20.0,
        decoding_method: str = "greedy_search",
        max_active_paths: int = 4,
        hotwords_score: float = 1.5,
        hotwords_file: str = "",
        blank_penalty: float = 0.0,
        temperature_scale: float = 2.0,
        provider: str = "cpu",
        model_type: str = "",
        **others: Any,
    ) -> OnlineRecognizer:
        """A recognizer over explicit model files, with sherpa-onnx's keyword
        names and defaults; an unsupported keyword raises :class:`ConfigError`
        naming it."""
        refused = sorted(
            k for k, v in others.items() if k not in _NO_OP_DEFAULTS or v != _NO_OP_DEFAULTS[k]
        )
        if refused:
            raise ConfigError(
                "asrserve.OnlineRecognizer.from_transducer does not support: " + ", ".join(refused)
            )
        method = _METHODS.get(decoding_method)
        if method is None:
            raise ConfigError(
                f"decoding_method {decoding_method!r}: expected one of {', '.join(_METHODS)}"
            )
        if hotwords_file and method != "modified_beam":
            raise ConfigError("hotwords_file needs decoding_method='modified_beam_search'")
        if sample_rate != int(sample_rate):
            raise ConfigError(f"sample_rate must be a whole number of Hz, got {sample_rate}")
        for role, path in (
            ("tokens", tokens),
            ("encoder", encoder),
            ("decoder", decoder),
            ("joiner", joiner),
        ):
            if not Path(path).is_file():
                raise ModelLoadError(f"{role} file not found: {path}")
        hotwords: list[str] = []
        if hotwords_file:
            try:
                hotwords = hotword_phrases(Path(hotwords_file).read_text(encoding="utf-8"))
            except OSError as e:
                raise ConfigError(f"hotwords_file {hotwords_file}: {e}") from None

        from asrserve.backends.base import BackendOptions
        from asrserve.decoding.tokens import SymbolTable
        from asrserve.families.files import ModelFiles
        from asrserve.families.loading import load_transducer

        files = ModelFiles(
            encoder=Path(encoder),
            decoder=Path(decoder),
            joiner=Path(joiner),
            tokens=Path(tokens),
        )
        backend = BackendOptions(num_threads=num_threads, provider=provider).validate()
        model = load_transducer(files, backend)
        if model_type and model_type != model.family:
            raise ModelLoadError(
                f"model_type {model_type!r} given, but {encoder} is a {model.family!r} model"
            )
        if feature_dim != model.feature_dim:
            raise ConfigError(f"feature_dim {feature_dim}: {encoder} takes {model.feature_dim}")
        endpoint = EndpointConfig(
            enabled=enable_endpoint_detection,
            rule1=EndpointRule(False, rule1_min_trailing_silence, 0.0),
            rule2=EndpointRule(True, rule2_min_trailing_silence, 0.0),
            rule3=EndpointRule(False, 0.0, rule3_min_utterance_length),
        )
        recognizer = Recognizer(
            model,
            SymbolTable.from_file(files.tokens),
            decoding=DecodingConfig(
                method=method,  # type: ignore[arg-type]
                beam=max_active_paths,
                hotwords_score=hotwords_score,
                blank_penalty=blank_penalty,
                temperature_scale=temperature_scale,
            ).validate(),
            endpoint=endpoint,
            features=FeatureConfig(sample_rate=int(sample_rate), num_bins=feature_dim),
            tail_padding_s=0.0,  # sherpa-onnx adds none: its users append their own
        )
        if hotwords:
            recognizer.check_hotwords(hotwords, hotwords_score)  # refuse unknown pieces now
        return cls(recognizer, hotwords)

    def create_stream(self, hotwords: str | None = None) -> Stream:
        """A new stream; ``hotwords``: phrases separated by ``/`` or newlines,
        added to those of ``hotwords_file`` (as sherpa-onnx does)."""
        phrases = self._hotwords + (hotword_phrases(hotwords) if hotwords is not None else [])
        return self.recognizer.create_stream(hotwords=phrases or None)

    def is_ready(self, s: Stream) -> bool:
        return self.recognizer.is_ready(s)

    def decode_stream(self, s: Stream) -> None:
        """Decode one chunk (call while :meth:`is_ready`)."""
        self.recognizer.decode_stream(s)

    def decode_streams(self, ss: Iterable[Stream]) -> None:
        """Decode one chunk of every ready stream, in one batch."""
        self.recognizer.decode_streams(ss)

    def get_result(self, s: Stream) -> str:
        """The current segment's text."""
        return self.recognizer.get_result(s).text

    def get_result_all(self, s: Stream) -> Result:
        """The current segment's :class:`~asrserve.Result` (tokens, timestamps, start time)."""
        return self.recognizer.get_result(s)

    def is_endpoint(self, s: Stream) -> bool:
        return self.recognizer.is_endpoint(s)

    def reset(self, s: Stream) -> None:
        self.recognizer.reset(s)
