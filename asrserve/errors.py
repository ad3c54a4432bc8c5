"""One exception hierarchy for everything asrserve raises on purpose.

Callers catch :class:`AsrServeError` to handle any expected failure; the
subclasses say which layer refused and why.
"""

from __future__ import annotations


class AsrServeError(Exception):
    """Base class of every error asrserve raises deliberately."""


class ModelLoadError(AsrServeError):
    """A model file or directory is missing, truncated, foreign or inconsistent."""


class AudioFormatError(AsrServeError):
    """Audio could not be decoded, or samples have the wrong type, rate or values."""


class ConfigError(AsrServeError):
    """An option has an unknown name or an out-of-range value."""


class ProtocolError(AsrServeError):
    """A client sent a message the wire protocol does not allow."""


class CatalogError(AsrServeError):
    """A catalog entry is unknown, or a download failed or did not verify."""


class AudioLimitError(AudioFormatError):
    """Audio that decodes but is refused by a limit (too long, a sample rate
    or channel count outside what is served), named by ``code``;
    ``too_large`` marks a size limit (HTTP 413) rather than a bad value (400)."""

    def __init__(self, message: str, code: str, *, too_large: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.too_large = too_large
