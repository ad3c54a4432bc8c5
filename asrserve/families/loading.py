"""Loading a sherpa-style transducer directory (icefall/sherpa-onnx ONNX
exports, sherpa-ncnn exports): the family comes from the encoder's metadata
(ONNX ``model_type``, ncnn ``SherpaMetaData``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from asrserve.backends import BackendOptions, open_session
from asrserve.errors import ModelLoadError
from asrserve.families.base import TransducerModel
from asrserve.families.files import ModelFiles, find_model_files
from asrserve.families.lstm import LstmTransducer
from asrserve.families.ncnn_loader import load_ncnn_transducer
from asrserve.families.zipformer import Zipformer2Transducer, ZipformerTransducer

if TYPE_CHECKING:
    from asrserve.core.recognizer import Recognizer
    from asrserve.families.load_options import LoadOptions

#: sherpa-onnx transducer families by the encoder's ``model_type``.
FAMILIES: dict[str, type[TransducerModel]] = {
    cls.family: cls for cls in (LstmTransducer, ZipformerTransducer, Zipformer2Transducer)
}


def probe(model_dir: Path) -> bool:
    """The layout every directory is tried as last: any directory (what is
    missing or foreign is named when :func:`load_recognizer` reads it)."""
    return True


def load_recognizer(model_dir: Path, options: LoadOptions) -> Recognizer:
    """The directory's encoder/decoder/joiner (``options.files``: a catalog
    entry's file roles first) behind a :class:`Recognizer`."""
    from asrserve.core.recognizer import Recognizer
    from asrserve.decoding.tokens import SymbolTable

    files = find_model_files(model_dir, options.precision, options.files)
    model = load_transducer(files, options.backend)
    return Recognizer(
        model,
        SymbolTable.from_file(files.tokens),
        decoding=options.decoding,
        endpoint=options.endpoint,
        bpe_model=files.bpe_model,
        tail_padding_s=options.tail_padding_s,
    )


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
