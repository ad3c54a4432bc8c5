"""icefall ``lstm_transducer_stateless2`` on ncnn (sherpa-ncnn ``LstmModel``, model type 3).

``SherpaMetaData``: 0 model type (3), 1 num_encoder_layers, 2 d_model,
3 rnn_hidden_size. Encoder: ``in0`` features (9, 80), ``in1`` the frame count
(float, as sherpa-ncnn feeds it; only used for ``out1``), ``in2`` h
(layers, d_model), ``in3`` c (layers, hidden) → ``out0`` encoder_out (1, d_model,
not projected: the joiner holds encoder_proj), ``out2`` next h, ``out3`` next c.
A chunk is 9 feature frames, advanced by 4 (sherpa-ncnn's ``Segment``/``Offset``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from asrserve.backends.ncnn import NcnnSession
from asrserve.errors import ModelLoadError
from asrserve.families.base import FloatArray, State, StateSpec, meta_int
from asrserve.families.ncnn_base import NCNN_MODEL_TYPES, NcnnTransducer

SEGMENT = 9
OFFSET = 4
_OUTPUTS = ("out0", "out2", "out3")


class NcnnLstmTransducer(NcnnTransducer):
    family = "ncnn-lstm"
    ncnn_model_type = NCNN_MODEL_TYPES["lstm"]

    def __init__(self, encoder: NcnnSession, decoder: NcnnSession, joiner: NcnnSession) -> None:
        meta, where = encoder.metadata, encoder.path
        layers = meta_int(meta, "1", where)
        d_model = meta_int(meta, "2", where)
        hidden = meta_int(meta, "3", where)
        if min(layers, d_model, hidden) < 1:
            raise ModelLoadError(f"{where}: implausible LSTM metadata {dict(meta)}")
        have = {t.name for t in encoder.inputs}, {t.name for t in encoder.outputs}
        if not ({"in0", "in1", "in2", "in3"} <= have[0] and set(_OUTPUTS) <= have[1]):
            raise ModelLoadError(
                f"{where}: an ncnn LSTM encoder has inputs in0..in3 and outputs out0, out2, "
                f"out3; found {sorted(have[0])} and {sorted(have[1])}"
            )
        super().__init__(encoder, decoder, joiner, encoder_dim=d_model)
        self.chunk_size = SEGMENT
        self.chunk_shift = OFFSET
        self.state_specs = [
            StateSpec("h", (1, layers, d_model), 0),
            StateSpec("c", (1, layers, hidden), 0),
        ]
        self._length = np.array([SEGMENT], dtype=np.float32)

    def run_encoder_one(
        self, features: FloatArray, states: Sequence[npt.NDArray[np.generic]]
    ) -> tuple[FloatArray, State]:
        h, c = states
        feeds = {"in0": features, "in1": self._length, "in2": h, "in3": c}
        out, next_h, next_c = self.encoder.run(feeds, _OUTPUTS)
        return out.reshape(-1, out.shape[-1]), [next_h, next_c]
