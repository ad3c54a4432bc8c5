"""Model families: one module each, behind :class:`TransducerModel`; the
directory layouts they load from are listed in :mod:`asrserve.families.layouts`."""

from asrserve.families.base import StateSpec, TransducerModel
from asrserve.families.files import ModelFiles, find_model_files
from asrserve.families.loading import FAMILIES, load_transducer

__all__ = [
    "FAMILIES",
    "ModelFiles",
    "StateSpec",
    "TransducerModel",
    "find_model_files",
    "load_transducer",
]
