"""Streaming feature extractors (no model knowledge)."""

from asrserve.features.kaldi_fbank import KaldiFbank

__all__ = ["KaldiFbank"]
