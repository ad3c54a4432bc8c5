"""sherpa-ncnn Zipformer transducer (``SherpaMetaData`` model type 2).

icefall's ``pruned_transducer_stateless7_streaming`` exported for ncnn. The
encoder's ``SherpaMetaData`` layer holds, by parameter id: 0 model type (2),
1 decode_chunk_len, 2 num_left_chunks, 3 pad (feature frames), 15 version
(sherpa-ncnn >= 2.0 refuses < 1), and per encoder stack the arrays
16 num_encoder_layers, 17 encoder_dims, 18 attention_dims,
19 zipformer_downsampling_factors, 20 cnn_module_kernels.

Geometry as sherpa-ncnn's ``ZipformerModel``: a segment of
``decode_chunk_len + pad`` feature frames, advanced by ``decode_chunk_len``.
The encoder output (``decode_chunk_len / 4``, encoder_dims[-1]) feeds the
joiner's ``in0``.

Encoder blobs: ``in0`` features (segment, 80), then the 7 * S states (S
stacks) grouped by kind, then by stack, as ``in1..in{7S}``; ``out0`` is
encoder_out and ``out1..out{7S}`` the next states in the same order. With
``L`` layers, ``C`` encoder dim, ``A`` attention dim, ``K`` kernel and
``ds`` downsampling factor of a stack, and ``left = decode_chunk_len / 2 *
num_left_chunks / ds`` (numpy shapes; all float32, zeros at the start):

- cached_len (L,) (the encoder returns (L, 1): reshaped, as sherpa-ncnn does)
- cached_avg (L, C) (returned as (L, 1, C): reshaped)
- cached_key (L, left, A)
- cached_val, cached_val2 (L, left, A / 2)
- cached_conv1, cached_conv2 (L, C, K - 1)

The graph uses sherpa-ncnn's custom layers
(:mod:`asrserve.backends.ncnn_layers`), registered by the ncnn loader.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from asrserve.backends.ncnn import NcnnSession
from asrserve.errors import ModelLoadError
from asrserve.families.base import FloatArray, State, StateSpec, meta_int, meta_ints
from asrserve.families.ncnn_base import (
    NCNN_MODEL_TYPES,
    NcnnTransducer,
    check_model_type,
)

ZIPFORMER_MODEL_TYPE = NCNN_MODEL_TYPES["zipformer"]
STATE_KINDS = ("cached_len", "cached_avg", "cached_key", "cached_val", "cached_val2")
STATE_KINDS_CONV = ("cached_conv1", "cached_conv2")
_STATES_PER_STACK = len(STATE_KINDS) + len(STATE_KINDS_CONV)


class NcnnZipformerTransducer(NcnnTransducer):
    """Zipformer (v1, streaming) on ncnn; one encoder run per stream and segment."""

    family = "ncnn-zipformer"
    ncnn_model_type = ZIPFORMER_MODEL_TYPE

    def __init__(self, encoder: NcnnSession, decoder: NcnnSession, joiner: NcnnSession) -> None:
        meta, where = encoder.metadata, encoder.path
        check_model_type(meta, where, ZIPFORMER_MODEL_TYPE, "Zipformer")
        version = int(meta.get("15", "0") or 0)
        if version < 1:
            raise ModelLoadError(
                f"{where}: Zipformer metadata version {version} (parameter 15) is too old; "
                "sherpa-ncnn >= 2.0 needs 1: re-export the model with current icefall"
            )
        chunk = meta_int(meta, "1", where)
        left_chunks = meta_int(meta, "2", where)
        pad = meta_int(meta, "3", where)
        per_stack = [meta_ints(meta, str(k), where) for k in range(16, 21)]
        layers, dims, att_dims, factors, kernels = per_stack
        num_stacks = len(layers)
        if (
            num_stacks < 1
            or any(len(v) != num_stacks for v in per_stack)
            or min(chunk, left_chunks, pad + 1) < 1
            or min(v for vs in per_stack for v in vs) < 1
            or min(kernels) < 2
            or any(a % 2 for a in att_dims)
        ):
            raise ModelLoadError(f"{where}: implausible Zipformer metadata {dict(meta)}")
        super().__init__(encoder, decoder, joiner, encoder_dim=dims[-1])
        self.chunk_size = chunk + pad
        self.chunk_shift = chunk
        left = chunk // 2 * left_chunks
        shapes: dict[str, list[tuple[int, ...]]] = {
            k: [] for k in (*STATE_KINDS, *STATE_KINDS_CONV)
        }
        for n, c, a, ds, k in zip(layers, dims, att_dims, factors, kernels, strict=True):
            shapes["cached_len"].append((n,))
            shapes["cached_avg"].append((n, c))
            shapes["cached_key"].append((n, left // ds, a))
            shapes["cached_val"].append((n, left // ds, a // 2))
            shapes["cached_val2"].append((n, left // ds, a // 2))
            shapes["cached_conv1"].append((n, c, k - 1))
            shapes["cached_conv2"].append((n, c, k - 1))
        self.state_specs = [
            StateSpec(f"{kind}_{s}", (1, *shape), 0)
            for kind, per in shapes.items()
            for s, shape in enumerate(per)
        ]
        self._shapes = [spec.shape[1:] for spec in self.state_specs]
        n = 1 + _STATES_PER_STACK * num_stacks
        self._in_names, self._out_names = self._numbered_blobs(n, f"{num_stacks} encoder stacks")

    def run_encoder_one(
        self, features: FloatArray, states: Sequence[npt.NDArray[np.generic]]
    ) -> tuple[FloatArray, State]:
        """``features`` (chunk_size, 80) and the states, each without its batch
        axis → encoder_out (chunk / 4, D), next states (shaped as the inputs)."""
        feeds: dict[str, npt.NDArray[np.generic]] = {
            self._in_names[0]: np.ascontiguousarray(features, dtype=np.float32)
        }
        for name, state in zip(self._in_names[1:], states, strict=True):
            feeds[name] = np.ascontiguousarray(state, dtype=np.float32)
        out = self.encoder.run(feeds, self._out_names)
        next_states: State = []
        for name, value, shape in zip(self._out_names[1:], out[1:], self._shapes, strict=True):
            if value.size != int(np.prod(shape)):
                raise ModelLoadError(
                    f"{self.encoder.path}: {name} has shape {value.shape}, expected {shape}"
                )
            next_states.append(value.reshape(shape))
        return out[0].reshape(-1, out[0].shape[-1]), next_states
