"""sherpa-ncnn Conv-Emformer transducer (``SherpaMetaData`` model type 1).

The encoder's ``SherpaMetaData`` layer holds, by parameter id: 0 model type
(1), 1 num_layers, 2 memory_size (memory vectors, one per past chunk),
3 cnn_module_kernel, 4 left_context_length (encoder frames), 5 chunk_length
and 6 right_context_length (feature frames, before subsampling), 7 d_model
(also the encoder output size the joiner's ``in0`` takes).

Encoder blobs: ``in0`` features (segment, 80); then per layer ``l`` the
inputs ``in{4l+1}..in{4l+4}`` and outputs ``out{4l+1}..out{4l+4}``:

- memory (memory_size, d_model)
- left-context key (left_context_length, d_model)
- left-context value (left_context_length, d_model)
- conv cache (d_model, cnn_module_kernel - 1)

``out0`` is encoder_out (chunk_length / 4, d_model). Each state carries a
leading batch axis of size 1 here (see :mod:`asrserve.families.ncnn_base`).

Geometry as sherpa-ncnn computes it: a segment of
``chunk_length + right_context_length + 2 * 4 + 3`` feature frames (the
right context plus the subsampling convolutions' receptive field), advanced
by ``chunk_length`` frames after each run.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from asrserve.backends.ncnn import NcnnSession
from asrserve.errors import ModelLoadError
from asrserve.families.base import FloatArray, State, StateSpec, meta_int
from asrserve.families.ncnn_base import (
    NCNN_MODEL_TYPES,
    NcnnTransducer,
    check_model_type,
)

CONV_EMFORMER_MODEL_TYPE = NCNN_MODEL_TYPES["conv-emformer"]
_STATES_PER_LAYER = 4


class ConvEmformerTransducer(NcnnTransducer):
    """Conv-Emformer on ncnn; one encoder run per stream and segment."""

    family = "ncnn-conv-emformer"
    ncnn_model_type = CONV_EMFORMER_MODEL_TYPE

    def __init__(self, encoder: NcnnSession, decoder: NcnnSession, joiner: NcnnSession) -> None:
        meta, where = encoder.metadata, encoder.path
        check_model_type(meta, where, CONV_EMFORMER_MODEL_TYPE, "Conv-Emformer")
        num_layers = meta_int(meta, "1", where)
        memory_size = meta_int(meta, "2", where)
        kernel = meta_int(meta, "3", where)
        left_context = meta_int(meta, "4", where)
        chunk_length = meta_int(meta, "5", where)
        right_context = meta_int(meta, "6", where)
        d_model = meta_int(meta, "7", where)
        if min(num_layers, memory_size, kernel - 1, left_context, chunk_length, d_model) < 1:
            raise ModelLoadError(f"{where}: implausible Conv-Emformer metadata {dict(meta)}")
        super().__init__(encoder, decoder, joiner, encoder_dim=d_model)
        self.num_layers = num_layers
        self.d_model = d_model
        # sherpa-ncnn hard-codes subsampling factor 4: 2 * 4 + 3 extra frames.
        self.chunk_size = chunk_length + right_context + 2 * self.subsampling_factor + 3
        self.chunk_shift = chunk_length
        specs: list[StateSpec] = []
        for layer in range(num_layers):
            specs += [
                StateSpec(f"memory_{layer}", (1, memory_size, d_model), 0),
                StateSpec(f"left_key_{layer}", (1, left_context, d_model), 0),
                StateSpec(f"left_value_{layer}", (1, left_context, d_model), 0),
                StateSpec(f"conv_cache_{layer}", (1, d_model, kernel - 1), 0),
            ]
        self.state_specs = specs
        n = 1 + _STATES_PER_LAYER * num_layers
        self._in_names, self._out_names = self._numbered_blobs(n, f"{num_layers} layers")

    def run_encoder_one(
        self, features: FloatArray, states: Sequence[npt.NDArray[np.generic]]
    ) -> tuple[FloatArray, State]:
        """``features`` (chunk_size, 80) and the per-layer states, each without
        its batch axis → encoder_out (chunk_length / 4, d_model), next states
        (each with its batch axis dropped, as given)."""
        feeds: dict[str, npt.NDArray[np.generic]] = {
            self._in_names[0]: np.ascontiguousarray(features, dtype=np.float32)
        }
        for name, state in zip(self._in_names[1:], states, strict=True):
            feeds[name] = np.ascontiguousarray(state, dtype=np.float32)
        out = self.encoder.run(feeds, self._out_names)
        return out[0], list(out[1:])
