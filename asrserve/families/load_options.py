"""What :func:`asrserve.load_model` was asked for, as every layout's loader takes it."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

from asrserve.backends.base import BackendOptions
from asrserve.config import DecodingConfig, EndpointConfig
from asrserve.errors import ConfigError

FAMILY_OPTIONS = ("language", "task", "timestamps")
"""Options only some families take (Whisper's ``language``, ``task``, ``timestamps``)."""


@dataclass(frozen=True)
class LoadOptions:
    """What :func:`asrserve.load_model` was asked for."""

    backend: BackendOptions
    precision: str = "auto"
    decoding: DecodingConfig | None = None
    endpoint: EndpointConfig | None = None
    tail_padding_s: float | None = None
    files: Mapping[str, str] | None = None
    """A catalog entry's file roles (``encoder_int8`` ...), when named by it."""
    language: str | None = None
    """Whisper: the spoken language's code (``en``, ``de`` …); ``None``: the
    family's default (detected per segment by multilingual models)."""
    task: str | None = None
    """Whisper: ``transcribe``, or ``translate`` into English; ``None``: transcribe."""
    timestamps: bool | None = None
    """Whisper: decode with its timestamp tokens (phrase bounds within a
    segment, token times from them); ``None``: without, as sherpa-onnx by default."""

    def family_options(self) -> dict[str, str | bool]:
        """The family-specific options that were given (not ``None``)."""
        given = {"language": self.language, "task": self.task, "timestamps": self.timestamps}
        return {k: v for k, v in given.items() if v is not None}

    def check_family_options(self, accepted: Collection[str], model: str) -> None:
        """Refuse family-specific options that ``model``'s family does not take."""
        refused = [k for k in self.family_options() if k not in accepted]
        if refused:
            names = " and ".join(f"{k} (--{k})" for k in refused)
            raise ConfigError(f"{names}: only Whisper models take this; {model} is not one")
