"""Model families: one module each, behind :class:`TransducerModel`."""

# Importing registers the families.
from asrserve.families import lstm, zipformer  # noqa: F401
from asrserve.families.base import FAMILIES, StateSpec, TransducerModel
from asrserve.families.files import ModelFiles, find_model_files
from asrserve.families.loading import load_transducer

__all__ = [
    "FAMILIES",
    "ModelFiles",
    "StateSpec",
    "TransducerModel",
    "find_model_files",
    "load_transducer",
]
