"""icefall ``lstm_transducer_stateless2`` streaming export (sherpa-onnx ``model_type=lstm``).

Encoder: ``x`` (N, T, 80), ``h`` (layers, N, d_model), ``c`` (layers, N, rnn_hidden)
→ ``encoder_out``, ``next_h``, ``next_c``. Chunk of ``T`` frames, shift ``decode_chunk_len``.
"""

from __future__ import annotations

import numpy as np

from asrserve.backends.base import Session
from asrserve.families.base import StateSpec, TransducerModel, meta_int


class LstmTransducer(TransducerModel):
    family = "lstm"

    def __init__(self, encoder: Session, decoder: Session, joiner: Session) -> None:
        super().__init__(encoder, decoder, joiner)
        meta, where = encoder.metadata, encoder.path
        self.chunk_size = meta_int(meta, "T", where)
        self.chunk_shift = meta_int(meta, "decode_chunk_len", where)
        layers = meta_int(meta, "num_encoder_layers", where)
        d_model = meta_int(meta, "d_model", where)
        hidden = meta_int(meta, "rnn_hidden_size", where)
        self.state_specs = [
            StateSpec("h", (layers, 1, d_model), 1, np.float32),
            StateSpec("c", (layers, 1, hidden), 1, np.float32),
        ]
        self._check_states()
