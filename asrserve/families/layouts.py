"""Model directories that are not sherpa-style transducer exports.

NeMo exports (a Nemotron-style cache-aware streaming directory, a Parakeet
TDT offline directory, ...) are recognised by their files and loaded by
their own module, which returns an object with the :class:`Recognizer`
interface (``create_stream``, ``decode_streams``, ``get_result`` ...), so the
CLI and the server use them unchanged.

Each module named in :data:`LAYOUT_MODULES` provides::

    def probe(model_dir: Path) -> bool: ...
    def load_recognizer(model_dir: Path, options: LoadOptions) -> Recognizer-like
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from asrserve.backends.base import BackendOptions
from asrserve.config import DecodingConfig, EndpointConfig

LAYOUT_MODULES = (
    "asrserve.families.nemo_streaming",
    "asrserve.families.nemo_tdt",
    "asrserve.families.nemo_sherpa",
    "asrserve.families.nemo_offline",
)


@dataclass(frozen=True)
class LoadOptions:
    """What :func:`asrserve.load_model` was asked for."""

    backend: BackendOptions
    precision: str = "auto"
    decoding: DecodingConfig | None = None
    endpoint: EndpointConfig | None = None
    tail_padding_s: float | None = None


def find_layout(model_dir: Path) -> Any | None:
    """The module that claims ``model_dir``, if any does."""
    for name in LAYOUT_MODULES:
        if importlib.util.find_spec(name) is None:
            continue
        module = importlib.import_module(name)
        if module.probe(model_dir):
            return module
    return None
