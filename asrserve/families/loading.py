"""Loading a sherpa-style transducer directory: the family comes from the
encoder's metadata (ONNX ``model_type``, ncnn ``SherpaMetaData``)."""

from __future__ import annotations

from asrserve.backends import BackendOptions, open_session
from asrserve.errors import ModelLoadError
from asrserve.families.base import FAMILIES, TransducerModel
from asrserve.families.files import ModelFiles
from asrserve.families.ncnn_loader import load_ncnn_transducer


def load_transducer(files: ModelFiles, options: BackendOptions | None = None) -> TransducerModel:
    """Load the three graphs and pick the family from the encoder's ``model_type``
    (ncnn: from its ``SherpaMetaData``)."""
    if files.backend == "ncnn":
        return load_ncnn_transducer(files, options)
    encoder = open_session(files.encoder, options)
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
    decoder = open_session(files.decoder, options, small=True)
    joiner = open_session(files.joiner, options, small=True)
    return cls(encoder, decoder, joiner)
