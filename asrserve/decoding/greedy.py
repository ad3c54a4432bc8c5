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
        self._emit_table = np.ones(0, dtype=bool)  # by token id: not skipped (grown on use)

    def initial(self, context_graph: ContextGraph | None = None) -> GreedyHyp:
        """A fresh hypothesis; greedy search has no use for a context graph."""
        return GreedyHyp(ys=initial_context(self.decoder.context_size, self.context_fill))

    def decode(self, encoder_out: FloatArray, hyps: Sequence[GreedyHyp]) -> None:
        """Advance every hyp over ``encoder_out`` (N, T, D) in place.

        Per frame one joiner run over the rows still emitting; only the rows
        that emit touch Python (their token, time, confidence and a decoder
        lookup), the others' trailing-blank count goes up."""
        if len(hyps) == 1:
            self._decode_one(encoder_out, hyps[0])
            return
        num_frames = encoder_out.shape[1]
        ctx = self.decoder.context_of
        dec = self.decoder.get([ctx(h.ys, h.carried) for h in hyps])
        for t in range(num_frames):
            enc_t = encoder_out[:, t, :]
            rows: npt.NDArray[np.intp] | None = None  # None: every row
            for symbol in range(self.max_symbols_per_frame):
                if rows is None:
                    logits = self.joiner(np.ascontiguousarray(enc_t), dec)
                else:
                    logits = self.joiner(enc_t[rows], dec[rows])
                if self.blank_penalty > 0:
                    logits[:, 0] -= self.blank_penalty
                best = logits.argmax(axis=1)
                hit = np.flatnonzero(self._emits(best, logits.shape[1]))
                if symbol == 0 and hit.size < len(best):  # rows is None: row r is hyps[r]
                    if hit.size:
                        blank = np.ones(len(best), dtype=bool)
                        blank[hit] = False
                        for r in np.flatnonzero(blank).tolist():
                            hyps[r].num_trailing_blanks += 1
                    else:
                        for h in hyps:
                            h.num_trailing_blanks += 1
                if hit.size == 0:
                    break
                # confidences of the emitted rows only (each row's value is its own)
                ys = best[hit]
                probs = token_log_probs(logits[hit], ys, self.temperature)
                emitted = hit if rows is None else rows[hit]
                for r, y, p in zip(emitted.tolist(), ys.tolist(), probs, strict=True):
                    h = hyps[r]
                    h.ys.append(y)
                    h.log_probs.append(p)
                    h.carried = None
                    h.timestamps.append(t + h.frame_offset)
                    h.num_trailing_blanks = 0
                rows = emitted
                fresh = self.decoder.get([ctx(hyps[r].ys) for r in emitted.tolist()])
                if len(emitted) == len(hyps):
                    dec = fresh
                else:  # a new array: rows from the cache are read-only
                    dec = dec.copy()
                    dec[emitted] = fresh
        for h in hyps:
            h.frame_offset += num_frames

    def _decode_one(self, encoder_out: FloatArray, h: GreedyHyp) -> None:
        """:meth:`decode` for one stream, with scalars instead of row arrays."""
        num_frames = encoder_out.shape[1]
        ctx = self.decoder.context_of
        dec = self.decoder.get([ctx(h.ys, h.carried)])
        for t in range(num_frames):
            enc_t = np.ascontiguousarray(encoder_out[:, t, :])
            for symbol in range(self.max_symbols_per_frame):
                logits = self.joiner(enc_t, dec)
                if self.blank_penalty > 0:
                    logits[:, 0] -= self.blank_penalty
                y = int(logits.argmax())
                if y in self.skip_ids:
                    if symbol == 0:
                        h.num_trailing_blanks += 1
                    break
                h.ys.append(y)
                h.log_probs.extend(token_log_probs(logits, np.array([y]), self.temperature))
                h.carried = None
                h.timestamps.append(t + h.frame_offset)
                h.num_trailing_blanks = 0
                dec = self.decoder.get([ctx(h.ys)])
        h.frame_offset += num_frames

    def _emits(self, best: npt.NDArray[np.intp], vocab: int) -> npt.NDArray[np.bool_]:
        """Which of the tokens ``best`` are emitted (not in ``skip_ids``)."""
        table = self._emit_table
        if table.size < vocab:
            table = np.ones(vocab, dtype=bool)
            table[[i for i in self.skip_ids if 0 <= i < vocab]] = False
            self._emit_table = table
        out: npt.NDArray[np.bool_] = table[best]
        return out

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
