"""Inference engines behind one small interface; they know nothing of speech."""

from asrserve.backends.base import PROVIDERS, BackendOptions, Session, TensorInfo
from asrserve.backends.sessions import open_session

__all__ = ["PROVIDERS", "BackendOptions", "Session", "TensorInfo", "open_session"]
