"""Shared part of the sherpa-ncnn families: decoder and joiner, per-item runs.

ncnn nets have no batch axis, so batched calls loop over rows. Every state
tensor gets a leading batch axis of size 1 (``StateSpec.batch_axis = 0``) so
the generic stacking of :class:`TransducerModel` works; ``run_encoder``
slices it off per stream.

sherpa-ncnn conventions (not sherpa-onnx's), set here as model attributes
the searches honour: the stateless decoder's context is 2 token ids (int32)
and starts as ``[blank, blank]``; ids 0 (blank) and 2 (``<unk>`` in icefall
vocabularies) emit nothing, whatever ``tokens.txt`` says; after an endpoint
the context restarts at ``[blank, blank]`` (only the first decoder output
still comes from the old tokens). The joiner takes one encoder frame
(``in0``) and decoder output(s) (``in1``); ncnn's kernels round 1-D and 2-D
inputs differently, so greedy search runs it per row on 1-D inputs and beam
search once per stream and frame on (1, D) x (P, D), as sherpa-ncnn does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar

import numpy as np
import numpy.typing as npt

from asrserve.backends.ncnn import NcnnSession
from asrserve.errors import ModelLoadError
from asrserve.families.base import FloatArray, State, TransducerModel, meta_int

NCNN_CONTEXT_SIZE = 2

NCNN_MODEL_TYPES = {"conv-emformer": 1, "zipformer": 2, "lstm": 3}
"""sherpa-ncnn's ``SherpaMetaData`` model types (parameter 0)."""


class NcnnTransducer(TransducerModel):
    """Base of the sherpa-ncnn families; subclasses set geometry, ``state_specs``
    and implement :meth:`run_encoder_one`."""

    ncnn_model_type: ClassVar[int] = 0
    initial_context_fill = 0
    ignored_token_ids: frozenset[int] | None = frozenset({0, 2})
    joiner_per_frame = True
    reset_keeps_context = False
    encoder: NcnnSession
    decoder: NcnnSession
    joiner: NcnnSession

    def __init__(
        self,
        encoder: NcnnSession,
        decoder: NcnnSession,
        joiner: NcnnSession,
        *,
        encoder_dim: int,
    ) -> None:
        self.encoder = encoder
        self.decoder = decoder
        self.joiner = joiner
        self.context_size = NCNN_CONTEXT_SIZE
        self.feature_dim = 80
        self.chunk_size = 0
        self.chunk_shift = 0
        self.state_specs = []
        for session, names in ((decoder, {"in0"}), (joiner, {"in0", "in1"})):
            have = {t.name for t in session.inputs}
            if have != names or "out0" not in {t.name for t in session.outputs}:
                raise ModelLoadError(
                    f"{session.path}: expected inputs {sorted(names)} and output out0, "
                    f"found inputs {sorted(have)}"
                )
        probe = self.run_decoder(np.zeros((1, NCNN_CONTEXT_SIZE), dtype=np.int64))
        logits = self.run_joiner(np.zeros((1, encoder_dim), np.float32), probe)
        self.vocab_size = int(logits.shape[1])

    def _numbered_blobs(self, n: int, implied_by: str) -> tuple[list[str], list[str]]:
        """``in0..in{n-1}`` and ``out0..out{n-1}``, checked against the encoder graph."""
        ins, outs = [f"in{i}" for i in range(n)], [f"out{i}" for i in range(n)]
        have_in = {t.name for t in self.encoder.inputs}
        have_out = {t.name for t in self.encoder.outputs}
        if have_in != set(ins) or have_out != set(outs):
            raise ModelLoadError(
                f"{self.encoder.path}: metadata implies {implied_by} ({n} inputs/outputs "
                f"named in0../out0..), the graph has {len(have_in)} inputs and "
                f"{len(have_out)} outputs"
            )
        return ins, outs

    def run_encoder(self, features: FloatArray, states: State) -> tuple[FloatArray, State]:
        """Per stream: ``features`` (N, chunk, 80), states with a leading batch axis."""
        runs = [
            self.run_encoder_one(features[i], [s[i] for s in states])
            for i in range(features.shape[0])
        ]
        if len(runs) == 1:  # the common streaming case: skip the stacking
            out, st = runs[0]
            return out[None], [s[None] for s in st]
        next_states = [np.stack([st[k] for _, st in runs]) for k in range(len(states))]
        return np.stack([out for out, _ in runs]), next_states

    def run_encoder_one(
        self, features: FloatArray, states: Sequence[npt.NDArray[np.generic]]
    ) -> tuple[FloatArray, State]:
        """One stream: (chunk, 80) and its states → encoder_out (T', D), next states."""
        raise NotImplementedError

    def run_decoder(self, context: npt.NDArray[np.int64]) -> FloatArray:
        """``context`` (N, 2) → decoder_out (N, D), one net run per row."""
        ids = context.astype(np.int32)
        return _rows([self.decoder.run({"in0": c}, _OUT0)[0] for c in ids])

    def run_joiner(self, encoder_out: FloatArray, decoder_out: FloatArray) -> FloatArray:
        """(N, encoder_dim) and (N, D) → logits (N, vocab), one net run per row."""
        return _rows(
            [
                self.joiner.run({"in0": e, "in1": d}, _OUT0)[0]
                for e, d in zip(encoder_out, decoder_out, strict=True)
            ]
        )

    def run_joiner_frame(self, encoder_frame: FloatArray, decoder_out: FloatArray) -> FloatArray:
        """sherpa-ncnn's beam-search call shape: ``in0`` (1, D) broadcast against
        ``in1`` (P, D) in one run (ncnn rounds 1-D and 2-D inputs differently)."""
        feeds = {"in0": encoder_frame[None, :], "in1": decoder_out}
        out = self.joiner.run(feeds, _OUT0)[0]
        return out.reshape(decoder_out.shape[0], -1)


_OUT0 = ("out0",)


def _rows(outputs: list[FloatArray]) -> FloatArray:
    """Per-row net outputs as one (N, D) array."""
    if len(outputs) == 1:
        return outputs[0].reshape(1, -1)
    return np.stack([o.reshape(-1) for o in outputs])


def check_model_type(meta: Mapping[str, str], where: str, expected: int, family: str) -> None:
    """Refuse an encoder whose SherpaMetaData model type (key 0) is not ``expected``."""
    model_type = meta_int(meta, "0", where)
    if model_type != expected:
        raise ModelLoadError(
            f"{where}: SherpaMetaData model type is {model_type}, {family} is {expected}"
        )
