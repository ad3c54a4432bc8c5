"""What :func:`asrserve.load_model` was asked for, as every layout's loader takes it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from asrserve.backends.base import BackendOptions
from asrserve.config import DecodingConfig, EndpointConfig


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
