"""Loading a sherpa-style transducer directory: the family comes from the
encoder's metadata (ONNX ``model_type``, ncnn ``SherpaMetaData``)."""

from __future__ import annotations

from dataclasses import replace

from asrserve.backends.base import BackendOptions
from asrserve.backends.onnxruntime import OrtSession
from asrserve.errors import ModelLoadError
from asrserve.families.base import FAMILIES, TransducerModel
from asrserve.families.files import ModelFiles
from asrserve.families.ncnn_loader import load_ncnn_transducer


def load_transducer(files: ModelFiles, options: BackendOptions | None = None) -> TransducerModel:
    """Load the three graphs and pick the family from the encoder's ``model_type``
    (ncnn: from its ``SherpaMetaData``)."""
    if files.backend == "ncnn":
        return load_ncnn_transducer(files, options)
    encoder = OrtSession(files.encoder, options)
    model_type = encoder.metadata.get("model_type", "")
    if not model_type:
        raise ModelLoadError(
            f"{files.encoder}: no 'model_type' in the ONNX metadata; "
            "is this an icefall/sherpa-onnx streaming transducer export?"
        )
    cls = FAMILIES.get(model_type)
    if cls is None:
        known = ", ".join(sorted(FAMILIES))
        raise ModelLoadError(
            f"{files.encoder}: unsupported model_type {model_type!r} (known: {known})"
        )
    # The decoder and joiner run on a few rows per frame: a thread pool costs
    # more in wake-ups (and steals the core from Python) than it gains.
    small = replace(options or BackendOptions(), num_threads=1)
    decoder = OrtSession(files.decoder, small)
    joiner = OrtSession(files.joiner, small)
    return cls(encoder, decoder, joiner)
