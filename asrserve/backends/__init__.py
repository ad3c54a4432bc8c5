"""Inference engines behind one small interface; they know nothing of speech."""

from asrserve.backends.base import BackendOptions, Session, TensorInfo

__all__ = ["BackendOptions", "Session", "TensorInfo"]
