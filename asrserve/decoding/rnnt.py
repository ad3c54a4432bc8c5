"""Searches for RNN-T models whose prediction network carries state (NeMo's LSTM).

A stateless decoder is a function of the last few tokens (see
:mod:`asrserve.decoding.greedy`); here the prediction network is an LSTM
whose state is part of each hypothesis, and the model runs decoder and joint
as one step::

    step(encoder_frames (P, D), previous_tokens (P,), states [(L, P, H), ...])
        -> logits (P, V), next states [(L, P, H), ...]

The next states are those after reading ``previous_tokens``; a hypothesis
takes them only when it emits a token (NeMo's greedy search: on blank the
prediction network's state and input stay as they were). A fresh hypothesis
reads ``start_id`` with zero states (NeMo's SOS is the blank id, whose
embedding is the zero padding row).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import KW_ONLY, dataclass, field

import numpy as np
import numpy.typing as npt

from asrserve.decoding.beam import MergingPaths, top_extensions
from asrserve.decoding.hotwords import ContextGraph, ContextState
from asrserve.decoding.search import Best

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]
DecoderStates = list[FloatArray]
DecoderStep = Callable[[FloatArray, IntArray, DecoderStates], tuple[FloatArray, DecoderStates]]


@dataclass
class RnntHyp:
    """One hypothesis: emitted tokens, the token the prediction network reads
    next (``last``) and its state before reading it (one ``(L, 1, H)`` per tensor)."""

    ys: list[int]
    last: int
    states: DecoderStates
    log_prob: float = 0.0
    timestamps: list[int] = field(default_factory=list)
    num_trailing_blanks: int = 0
    context_state: ContextState | None = None


@dataclass
class RnntGreedyState:
    hyp: RnntHyp
    frame_offset: int = 0


@dataclass
class RnntBeamState(MergingPaths[RnntHyp]):
    def best(self) -> RnntHyp:
        # length-normalised; the start token counts, so an empty path divides by 1
        return max(self.hyps.values(), key=lambda h: h.log_prob / (len(h.ys) + 1))


@dataclass(eq=False)
class _RnntBase:
    """What both searches take: the decoder+joint ``step``, fresh decoder states,
    the blank id and, by keyword, ``start_id`` (the token a fresh hypothesis reads;
    blank by default), ``blank_penalty`` and ``state_batch_axis``. A subclass adds
    its own limit as the fourth positional field."""

    step: DecoderStep
    init_states: Callable[[], DecoderStates]
    blank_id: int
    _: KW_ONLY
    start_id: int | None = None
    blank_penalty: float = 0.0
    state_batch_axis: int = 1

    _start: int = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._start = self.blank_id if self.start_id is None else self.start_id

    def _fresh(self, context_state: ContextState | None = None) -> RnntHyp:
        return RnntHyp([], self._start, self.init_states(), context_state=context_state)

    def _run(self, enc: FloatArray, hyps: Sequence[RnntHyp]) -> tuple[FloatArray, DecoderStates]:
        """One batched step over ``hyps`` against encoder rows ``enc`` (P, D)."""
        tokens = np.asarray([h.last for h in hyps], dtype=np.int64)
        if len(hyps) == 1:
            states = list(hyps[0].states)
        else:
            states = [
                np.concatenate([h.states[k] for h in hyps], axis=self.state_batch_axis)
                for k in range(len(hyps[0].states))
            ]
        logits, nxt = self.step(np.ascontiguousarray(enc), tokens, states)
        logits = np.array(logits, dtype=np.float32, copy=True).reshape(len(hyps), -1)
        if self.blank_penalty > 0:
            logits[:, self.blank_id] -= self.blank_penalty
        return logits, nxt

    def _row(self, states: DecoderStates, i: int) -> DecoderStates:
        return [np.take(s, [i], axis=self.state_batch_axis) for s in states]


@dataclass(eq=False)
class RnntGreedySearch(_RnntBase):
    """Batched greedy search: per frame, every stream emits until blank or
    ``max_symbols_per_frame`` tokens."""

    supports_hotwords = False
    max_symbols_per_frame: int = 10

    def initial(self, context_graph: ContextGraph | None = None) -> RnntGreedyState:
        return RnntGreedyState(self._fresh())

    def decode(self, encoder_out: FloatArray, states: Sequence[RnntGreedyState]) -> None:
        """Advance every stream over ``encoder_out`` (N, T, D) in place."""
        n, num_frames, _ = encoder_out.shape
        for t in range(num_frames):
            rows = list(range(n))
            for _ in range(self.max_symbols_per_frame):
                hyps = [states[r].hyp for r in rows]
                logits, nxt = self._run(encoder_out[rows, t, :], hyps)
                best = logits.argmax(axis=1).tolist()
                emitted = []
                for i, (r, y) in enumerate(zip(rows, best, strict=True)):
                    h = states[r].hyp
                    if y == self.blank_id:
                        # every blank counts, also one ending a frame that emitted
                        # tokens (as sherpa-onnx counts for NeMo endpointing)
                        h.num_trailing_blanks += 1
                        continue
                    h.ys.append(int(y))
                    h.last = int(y)
                    h.states = self._row(nxt, i) if len(rows) > 1 else list(nxt)
                    h.timestamps.append(t + states[r].frame_offset)
                    h.num_trailing_blanks = 0
                    emitted.append(r)
                if not emitted:
                    break
                rows = emitted
        for s in states:
            s.frame_offset += num_frames

    def tokens(self, state: RnntGreedyState) -> Best:
        h = state.hyp
        return Best(list(h.ys), list(h.timestamps), h.num_trailing_blanks)

    def reset(self, state: RnntGreedyState) -> RnntGreedyState:
        """New segment: the prediction network restarts (as sherpa-onnx does for
        NeMo); timestamps count from the segment's start."""
        return RnntGreedyState(self._fresh())


@dataclass(eq=False)
class RnntBeamSearch(_RnntBase):
    """Modified beam search (at most one token per frame) with hotwords: per
    frame every path of a stream is extended by every token, the ``beam``
    best survive, paths with equal tokens are merged by log-adding."""

    supports_hotwords = True
    beam: int = 4

    def initial(self, context_graph: ContextGraph | None = None) -> RnntBeamState:
        root = context_graph.root if context_graph else None
        return RnntBeamState({(): self._fresh(root)}, context_graph)

    def decode(self, encoder_out: FloatArray, states: Sequence[RnntBeamState]) -> None:
        num_frames = encoder_out.shape[1]
        for t in range(num_frames):
            prev = [list(s.hyps.values()) for s in states]
            flat = [h for hs in prev for h in hs]
            counts = [len(hs) for hs in prev]
            enc = np.repeat(encoder_out[:, t, :], counts, axis=0)
            logits, nxt = self._run(enc, flat)
            best = top_extensions(logits, prev, self.beam)
            for state, extensions in zip(states, best, strict=True):
                graph = state.context_graph
                state.hyps = {}
                for row, token, score in extensions:
                    src = flat[row]
                    context_score = 0.0
                    if token == self.blank_id:
                        hyp = RnntHyp(
                            src.ys,
                            src.last,
                            src.states,
                            timestamps=src.timestamps,
                            num_trailing_blanks=src.num_trailing_blanks + 1,
                            context_state=src.context_state,
                        )
                    else:
                        hyp = RnntHyp(
                            [*src.ys, token],
                            token,
                            self._row(nxt, row),
                            timestamps=[*src.timestamps, t + state.frame_offset],
                            context_state=src.context_state,
                        )
                        if graph is not None and src.context_state is not None:
                            context_score, hyp.context_state = graph.forward_one_step(
                                src.context_state, token
                            )
                    hyp.log_prob = score + context_score
                    state.add(hyp)
        for s in states:
            s.frame_offset += num_frames

    def tokens(self, state: RnntBeamState) -> Best:
        best = state.best()
        return Best(list(best.ys), list(best.timestamps), best.num_trailing_blanks)

    def reset(self, state: RnntBeamState) -> RnntBeamState:
        return self.initial(state.context_graph)
