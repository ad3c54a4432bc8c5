"""Inference engines behind one small interface; they know nothing of speech."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from asrserve.backends.base import PROVIDERS, BackendOptions, Session, TensorInfo

if TYPE_CHECKING:
    from asrserve.backends.sessions import open_session

__all__ = ["PROVIDERS", "BackendOptions", "Session", "TensorInfo", "open_session"]


def __getattr__(name: str) -> Any:
    """``open_session`` on first use: it brings numpy and the engines' modules,
    which the interface's names (and the command line's parsers) do not need."""
    if name == "open_session":
        from asrserve.backends.sessions import open_session

        globals()[name] = open_session
        return open_session
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
