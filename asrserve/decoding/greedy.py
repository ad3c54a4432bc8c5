"""Batched greedy transducer search.

With ``max_symbols_per_frame=1`` this is the online greedy search of
sherpa-onnx and sherpa-ncnn. The ids in ``skip_ids`` (blank and ``<unk>``)
emit nothing; the decoder context starts as ``[fill, ..., fill, 0]``
(sherpa-onnx: fill -1; sherpa-ncnn: 0).

After an endpoint, :meth:`GreedySearch.reset` either keeps the last tokens as
the new segment's context (``keep_context``, sherpa-onnx) or restarts from
the initial context while the first decoder output still comes from the old
tokens until something is emitted (sherpa-ncnn).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from asrserve.decoding.decoder_cache import DecoderCache
from asrserve.decoding.hotwords import ContextGraph
from asrserve.decoding.search import Best, token_log_probs

FloatArray = npt.NDArray[np.float32]


@dataclass
class GreedyHyp:
    """Per-stream search state; ``ys`` starts with ``context_size`` padding ids.
    ``carried``: decoder context used instead of ``ys`` until the next emission."""

    ys: list[int]
    timestamps: list[int] = field(default_factory=list)
    frame_offset: int = 0
    num_trailing_blanks: int = 0
    carried: tuple[int, ...] | None = None
    log_probs: list[float] = field(default_factory=list)


def initial_context(context_size: int, fill: int = -1) -> list[int]:
    return [fill] * (context_size - 1) + [0]


class GreedySearch:
    supports_hotwords = False

    def __init__(
        self,
        joiner: Callable[[FloatArray, FloatArray], FloatArray],
        decoder: DecoderCache,
        skip_ids: Collection[int],
        blank_penalty: float = 0.0,
        max_symbols_per_frame: int = 1,
        *,
        context_fill: int = -1,
        keep_context: bool = True,
        temperature: float = 2.0,
    ) -> None:
        self.joiner = joiner
        self.temperature = temperature
        self.decoder = decoder
        self.skip_ids = frozenset(skip_ids)
        self.blank_penalty = blank_penalty
        self.max_symbols_per_frame = max_symbols_per_frame
        self.context_fill = context_fill
        self.keep_context = keep_context

    def initial(self, context_graph: ContextGraph | None = None) -> GreedyHyp:
        """A fresh hypothesis; greedy search has no use for a context graph."""
        return GreedyHyp(ys=initial_context(self.decoder.context_size, self.context_fill))

    def decode(self, encoder_out: FloatArray, hyps: Sequence[GreedyHyp]) -> None:
        """Advance every hyp over ``encoder_out`` (N, T, D) in place."""
        n, num_frames, _ = encoder_out.shape
        ctx = self.decoder.context_of
        dec = self.decoder.get([ctx(h.ys, h.carried) for h in hyps])
        for t in range(num_frames):
            rows = np.arange(n)
            enc_t = encoder_out[:, t, :]
            for symbol in range(self.max_symbols_per_frame):
                logits = self.joiner(np.ascontiguousarray(enc_t[rows]), dec[rows])
                if self.blank_penalty > 0:
                    logits[:, 0] -= self.blank_penalty
                best = logits.argmax(axis=1)
                probs = token_log_probs(logits, best, self.temperature)
                emitted: list[int] = []
                for row, y, p in zip(rows.tolist(), best.tolist(), probs, strict=True):
                    h = hyps[row]
                    if y not in self.skip_ids:
                        h.ys.append(y)
                        h.log_probs.append(p)
                        h.carried = None
                        h.timestamps.append(t + h.frame_offset)
                        h.num_trailing_blanks = 0
                        emitted.append(row)
                    elif symbol == 0:
                        h.num_trailing_blanks += 1
                if not emitted:
                    break
                rows = np.asarray(emitted)
                dec[rows] = self.decoder.get([ctx(hyps[r].ys) for r in emitted])
        for h in hyps:
            h.frame_offset += num_frames

    def tokens(self, hyp: GreedyHyp) -> Best:
        ids = hyp.ys[self.decoder.context_size :]
        return Best(ids, list(hyp.timestamps), hyp.num_trailing_blanks, tuple(hyp.log_probs))

    def reset(self, hyp: GreedyHyp) -> GreedyHyp:
        """New segment after an endpoint; the old tokens stay the decoder's context."""
        if self.keep_context:
            return GreedyHyp(ys=hyp.ys[-self.decoder.context_size :])
        fresh = self.initial()
        carried = self.decoder.context_of(hyp.ys, hyp.carried)
        fresh.carried = None if carried == tuple(fresh.ys) else carried
        return fresh
