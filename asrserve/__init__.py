"""asrserve: streaming transducer speech recognition on CPUs.

>>> import asrserve
>>> rec = asrserve.load_model()          # the built-in demo model
>>> rec.transcribe("speech.wav").text
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from asrserve.errors import (
    AsrServeError,
    AudioFormatError,
    CatalogError,
    ConfigError,
    ModelLoadError,
    ProtocolError,
)

if TYPE_CHECKING:
    from asrserve.config import DecodingConfig, EndpointConfig, FeatureConfig
    from asrserve.core.events import Result
    from asrserve.core.interfaces import AnyRecognizer, SpeechRecognizer
    from asrserve.core.recognizer import Recognizer
    from asrserve.core.stream import Stream
    from asrserve.sherpa_compat import OnlineRecognizer

_LAZY = {
    "AnyRecognizer": "asrserve.core.interfaces",
    "BackendOptions": "asrserve.backends.base",
    "DecodingConfig": "asrserve.config",
    "EndpointConfig": "asrserve.config",
    "FeatureConfig": "asrserve.config",
    "Result": "asrserve.core.events",
    "SpeechRecognizer": "asrserve.core.interfaces",
    "Recognizer": "asrserve.core.recognizer",
    "Stream": "asrserve.core.stream",
    "OnlineRecognizer": "asrserve.sherpa_compat",
}
"""Public names imported on first use, so that ``import asrserve`` (and every
command line run, which imports it first) costs no numpy or onnxruntime import
until a model is loaded."""


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'asrserve' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = [
    "DEFAULT_MODEL",
    "AsrServeError",
    "AudioFormatError",
    "CatalogError",
    "ConfigError",
    "DecodingConfig",
    "EndpointConfig",
    "FeatureConfig",
    "ModelLoadError",
    "OnlineRecognizer",
    "ProtocolError",
    "Recognizer",
    "Result",
    "SpeechRecognizer",
    "Stream",
    "builtin_model_dir",
    "load_model",
]

__version__ = "0.1.0"

DEFAULT_MODEL = "asrserve-tiny-lstm-synth-en"


def builtin_model_dir() -> Path:
    """Directory of the demo model shipped inside the package
    (``$ASRSERVE_BUILTIN_MODEL`` overrides it)."""
    env = os.environ.get("ASRSERVE_BUILTIN_MODEL")
    if env:
        return Path(env)
    from asrserve import catalog

    return catalog.BUILTIN_MODELS_DIR / DEFAULT_MODEL


def resolve_model_dir(path_or_name: str | Path | None) -> Path:
    """A directory, a catalog name that was pulled, or ``None`` for the demo model."""
    if path_or_name is None or str(path_or_name) == DEFAULT_MODEL:
        d = builtin_model_dir()
        if not d.is_dir():
            raise ModelLoadError(f"built-in model not found at {d}")
        return d
    p = Path(path_or_name)
    if p.is_dir():
        return p
    if p.exists():
        raise ModelLoadError(f"{p}: expected a model directory, got a file")
    from asrserve.catalog import resolve_model

    return resolve_model(str(path_or_name))


def _catalog_layout(path_or_name: str | Path | None) -> dict[str, str] | None:
    """File roles of a catalog model, when it was named by its catalog name."""
    if path_or_name is None or Path(path_or_name).is_dir():
        return None
    from asrserve.catalog import load_catalog

    entry = load_catalog().get(str(path_or_name))
    return dict(entry.files) if entry is not None else None


def load_model(
    path_or_name: str | Path | None = None,
    *,
    provider: str = "cpu",
    num_threads: int = 1,
    precision: str = "auto",
    decoding: DecodingConfig | None = None,
    endpoint: EndpointConfig | None = None,
    tail_padding_s: float | None = None,
    spin: bool = True,
    language: str | None = None,
    task: str | None = None,
    timestamps: bool | None = None,
) -> AnyRecognizer:
    """Load a model directory (or catalog name): a :class:`Recognizer` for
    streaming transducers, the VAD-segmented offline recognizer for Parakeet TDT
    and sherpa-onnx's offline NeMo transducers; both are an
    :class:`~asrserve.core.interfaces.SpeechRecognizer`.

    ``spin=False`` keeps idle inference threads from busy-waiting (servers).
    ``language`` (a code: ``en``, ``de`` …), ``task`` (``transcribe`` or
    ``translate``) and ``timestamps`` (decode with timestamp tokens) are
    Whisper's; other families refuse them."""
    from asrserve.backends.base import BackendOptions

    model_dir = resolve_model_dir(path_or_name)
    backend = BackendOptions(num_threads=num_threads, provider=provider, spin=spin)
    from asrserve.families.layouts import LoadOptions, find_layout

    files = _catalog_layout(path_or_name)
    options = LoadOptions(
        backend, precision, decoding, endpoint, tail_padding_s, files, language, task, timestamps
    )
    layout = find_layout(model_dir)
    options.check_family_options(layout.options, f"{model_dir} (a {layout.name} model)")
    recognizer: AnyRecognizer = layout.load(model_dir, options)
    return recognizer
