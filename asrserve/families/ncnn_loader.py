"""Finding and loading sherpa-ncnn model directories.

Files follow the upstream layout: ``encoder_jit_trace-pnnx.ncnn.param`` (+
``.bin``), ``decoder_…``, ``joiner_…``, and int8 encoder/joiner as
``….ncnn.int8.param``. The family comes from the encoder's ``SherpaMetaData``
model type, as sherpa-ncnn decides it.
"""

from __future__ import annotations

from asrserve.backends import BackendOptions, Session
from asrserve.backends.ncnn_layers import sherpa_custom_layers
from asrserve.backends.sessions import open_ncnn
from asrserve.errors import ConfigError, ModelLoadError
from asrserve.families.base import meta_int
from asrserve.families.conv_emformer import ConvEmformerTransducer
from asrserve.families.files import ModelFiles
from asrserve.families.ncnn_base import NCNN_MODEL_TYPES, NcnnTransducer
from asrserve.families.ncnn_lstm import NcnnLstmTransducer
from asrserve.families.ncnn_zipformer import NcnnZipformerTransducer

#: sherpa-ncnn families by the ``SherpaMetaData`` model type (parameter 0).
NCNN_FAMILIES: dict[int, type[NcnnTransducer]] = {
    cls.ncnn_model_type: cls
    for cls in (NcnnLstmTransducer, ConvEmformerTransducer, NcnnZipformerTransducer)
}


def _family(encoder: Session) -> type[NcnnTransducer]:
    if not encoder.metadata:
        types = "|".join(NCNN_MODEL_TYPES)
        raise ModelLoadError(
            f"{encoder.path}: no SherpaMetaData layer, so the model type is unknown; add it "
            f"with 'asrserve ncnn-meta {encoder.path} --model-type {types} ...' "
            "(see 'asrserve ncnn-meta --help')"
        )
    model_type = meta_int(encoder.metadata, "0", f"{encoder.path} SherpaMetaData")
    cls = NCNN_FAMILIES.get(model_type)
    if cls is None:
        known = ", ".join(f"{t} ({c.family})" for t, c in sorted(NCNN_FAMILIES.items()))
        raise ModelLoadError(
            f"{encoder.path}: unsupported SherpaMetaData model type {model_type} (known: {known})"
        )
    return cls


def load_ncnn_transducer(
    files: ModelFiles, options: BackendOptions | None = None
) -> NcnnTransducer:
    """Load the three nets. ``files.precision`` ``fp32`` turns ncnn's fp16
    storage and arithmetic off; otherwise ncnn's defaults hold (as in
    sherpa-ncnn), used where the CPU supports them."""
    opts = (options or BackendOptions()).validate()
    if opts.provider != "cpu":
        raise ConfigError(
            f"ncnn models run on the CPU; provider {opts.provider!r} is not supported"
        )
    fp16 = files.precision != "fp32"
    # sherpa-ncnn registers its custom layers (Zipformer's) on every encoder
    layers = sherpa_custom_layers()
    encoder = open_ncnn(files.encoder, opts, fp16=fp16, custom_layers=layers)
    cls = _family(encoder)
    decoder = open_ncnn(files.decoder, opts, small=True, fp16=fp16)
    joiner = open_ncnn(files.joiner, opts, small=True, fp16=fp16)
    # Registered families take exactly the three nets (only the base class
    # itself also wants encoder_dim, which each family reads from metadata).
    return cls(encoder, decoder, joiner)  # type: ignore[call-arg]
