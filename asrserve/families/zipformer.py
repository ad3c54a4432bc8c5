"""icefall streaming Zipformer exports (sherpa-onnx ``zipformer`` and ``zipformer2``).

Both take ``x`` (N, T, 80) followed by cache tensors in a fixed order and
return ``encoder_out`` followed by the next caches in the same order.
"""

from __future__ import annotations

import numpy as np

from asrserve.backends.base import Session
from asrserve.errors import ModelLoadError
from asrserve.families.base import StateSpec, TransducerModel, meta_int, meta_ints


def _same_len(where: str, **lists: list[int]) -> int:
    lengths = {k: len(v) for k, v in lists.items()}
    if len(set(lengths.values())) != 1:
        raise ModelLoadError(f"{where}: per-stack metadata lists differ in length: {lengths}")
    return next(iter(lengths.values()))


class Zipformer2Transducer(TransducerModel):
    """Per layer: key (left, N, key_dim), nonlin_attn (1, N, left, 3*dim/4), val1, val2
    (left, N, value_dim), conv1, conv2 (N, dim, kernel/2); then embed_states
    (N, 128, 3, (((80-1)//2)-1)//2) and processed_lens (N,) int64."""

    family = "zipformer2"

    def __init__(self, encoder: Session, decoder: Session, joiner: Session) -> None:
        super().__init__(encoder, decoder, joiner)
        meta, where = encoder.metadata, encoder.path
        self.chunk_size = meta_int(meta, "T", where)
        self.chunk_shift = meta_int(meta, "decode_chunk_len", where)
        dims = meta_ints(meta, "encoder_dims", where)
        qdims = meta_ints(meta, "query_head_dims", where)
        vdims = meta_ints(meta, "value_head_dims", where)
        heads = meta_ints(meta, "num_heads", where)
        layers = meta_ints(meta, "num_encoder_layers", where)
        kernels = meta_ints(meta, "cnn_module_kernels", where)
        left = meta_ints(meta, "left_context_len", where)
        n = _same_len(
            where,
            encoder_dims=dims,
            query_head_dims=qdims,
            value_head_dims=vdims,
            num_heads=heads,
            num_encoder_layers=layers,
            cnn_module_kernels=kernels,
            left_context_len=left,
        )
        specs: list[StateSpec] = []
        k = 0
        for i in range(n):
            key_dim, value_dim = qdims[i] * heads[i], vdims[i] * heads[i]
            for _ in range(layers[i]):
                specs += [
                    StateSpec(f"cached_key_{k}", (left[i], 1, key_dim), 1),
                    StateSpec(f"cached_nonlin_attn_{k}", (1, 1, left[i], 3 * dims[i] // 4), 1),
                    StateSpec(f"cached_val1_{k}", (left[i], 1, value_dim), 1),
                    StateSpec(f"cached_val2_{k}", (left[i], 1, value_dim), 1),
                    StateSpec(f"cached_conv1_{k}", (1, dims[i], kernels[i] // 2), 0),
                    StateSpec(f"cached_conv2_{k}", (1, dims[i], kernels[i] // 2), 0),
                ]
                k += 1
        embed_dim = (((self.feature_dim - 1) // 2) - 1) // 2
        specs.append(StateSpec("embed_states", (1, 128, 3, embed_dim), 0))
        specs.append(StateSpec("processed_lens", (1,), 0, np.int64))
        self.state_specs = specs
        self._check_states()


class ZipformerTransducer(TransducerModel):
    """States grouped by kind over the stacks: cached_len (layers, N) int64,
    cached_avg (layers, N, dim), cached_key (layers, left, N, attn_dim),
    cached_val / cached_val2 (layers, left, N, attn_dim/2),
    cached_conv1 / cached_conv2 (layers, N, dim, kernel-1)."""

    family = "zipformer"

    def __init__(self, encoder: Session, decoder: Session, joiner: Session) -> None:
        super().__init__(encoder, decoder, joiner)
        meta, where = encoder.metadata, encoder.path
        self.chunk_size = meta_int(meta, "T", where)
        self.chunk_shift = meta_int(meta, "decode_chunk_len", where)
        dims = meta_ints(meta, "encoder_dims", where)
        attn = meta_ints(meta, "attention_dims", where)
        layers = meta_ints(meta, "num_encoder_layers", where)
        kernels = meta_ints(meta, "cnn_module_kernels", where)
        left = meta_ints(meta, "left_context_len", where)
        n = _same_len(
            where,
            encoder_dims=dims,
            attention_dims=attn,
            num_encoder_layers=layers,
            cnn_module_kernels=kernels,
            left_context_len=left,
        )
        r = range(n)
        self.state_specs = (
            [StateSpec(f"cached_len_{i}", (layers[i], 1), 1, np.int64) for i in r]
            + [StateSpec(f"cached_avg_{i}", (layers[i], 1, dims[i]), 1) for i in r]
            + [StateSpec(f"cached_key_{i}", (layers[i], left[i], 1, attn[i]), 2) for i in r]
            + [StateSpec(f"cached_val_{i}", (layers[i], left[i], 1, attn[i] // 2), 2) for i in r]
            + [StateSpec(f"cached_val2_{i}", (layers[i], left[i], 1, attn[i] // 2), 2) for i in r]
            + [
                StateSpec(f"cached_conv1_{i}", (layers[i], 1, dims[i], kernels[i] - 1), 1)
                for i in r
            ]
            + [
                StateSpec(f"cached_conv2_{i}", (layers[i], 1, dims[i], kernels[i] - 1), 1)
                for i in r
            ]
        )
        self._check_states()
