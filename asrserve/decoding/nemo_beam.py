"""Modified beam search for NeMo transducers with an LSTM prediction network,
following sherpa-onnx's streaming NeMo convention.

It differs from :class:`asrserve.decoding.rnnt.RnntBeamSearch` (one token per
frame, paths merged by log-adding, length-normalised best):

* a path may emit up to ``max_symbols_per_frame`` tokens on one frame; a token
  keeps the path on its frame, blank moves it to the next, and a path at the
  limit is moved on without a score;
* each round expands the paths that are furthest behind; paths already ahead
  are carried over as they are;
* candidates with the same tokens, frame and per-frame count are recombined by
  keeping the better one (Viterbi), then the ``beam`` best survive;
* the best path is the one with the highest raw score;
* the prediction network reads a path's last token only when the path is
  next expanded, and its output is kept with the path (blank reuses it);
* hotwords boost the ranking of tokens that continue a phrase by the graph's
  token score, while the path score gets the graph's own step score.

Decoder and joiner calls are batched over every expanded path of every stream.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from asrserve.decoding.beam import log_softmax, topk_desc
from asrserve.decoding.hotwords import ContextGraph, ContextState
from asrserve.decoding.search import Best

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]
DecoderStates = list[FloatArray]
DecoderRun = Callable[[IntArray, DecoderStates], tuple[FloatArray, DecoderStates]]
"""(P,) tokens, states [(L, P, H), ...] → decoder output (P, H), next states."""
JoinerRun = Callable[[FloatArray, FloatArray], FloatArray]
"""(P, D) encoder frames, (P, H) decoder outputs → logits (P, V)."""


@dataclass
class NemoHyp:
    ys: list[int]
    log_prob: float
    states: DecoderStates
    """Before reading ``ys[-1]`` while ``decoder_out`` is None, after it otherwise."""
    decoder_out: FloatArray | None = None
    timestamps: list[int] = field(default_factory=list)
    num_trailing_blanks: int = 0
    context_state: ContextState | None = None
    frame: int = 0
    """Frame within the chunk being decoded."""
    num_symbols: int = 0
    """Tokens emitted on ``frame``."""

    def copy(self) -> NemoHyp:
        return NemoHyp(
            list(self.ys),
            self.log_prob,
            self.states,
            self.decoder_out,
            list(self.timestamps),
            self.num_trailing_blanks,
            self.context_state,
            self.frame,
            self.num_symbols,
        )


@dataclass
class NemoBeamState:
    hyps: list[NemoHyp]
    context_graph: ContextGraph | None = None
    frame_offset: int = 0

    def best(self) -> NemoHyp:
        return max(self.hyps, key=lambda h: h.log_prob)


class NemoBeamSearch:
    supports_hotwords = True

    def __init__(
        self,
        run_decoder: DecoderRun,
        run_joiner: JoinerRun,
        init_states: Callable[[], DecoderStates],
        blank_id: int,
        beam: int = 4,
        *,
        max_symbols_per_frame: int = 10,
        blank_penalty: float = 0.0,
        state_batch_axis: int = 1,
    ) -> None:
        self.run_decoder = run_decoder
        self.run_joiner = run_joiner
        self.init_states = init_states
        self.blank_id = blank_id
        self.beam = beam
        self.max_symbols_per_frame = max_symbols_per_frame
        self.blank_penalty = blank_penalty
        self.axis = state_batch_axis

    def initial(self, context_graph: ContextGraph | None = None) -> NemoBeamState:
        root = context_graph.root if context_graph is not None else None
        hyp = NemoHyp([], 0.0, self.init_states(), context_state=root)
        return NemoBeamState([hyp], context_graph)

    def _read_last_tokens(self, hyps: Sequence[NemoHyp]) -> None:
        """Run the prediction network for paths whose last token is unread."""
        if not hyps:
            return
        tokens = np.asarray([h.ys[-1] if h.ys else self.blank_id for h in hyps], dtype=np.int64)
        states = [
            np.concatenate([h.states[k] for h in hyps], axis=self.axis)
            for k in range(len(hyps[0].states))
        ]
        out, nxt = self.run_decoder(tokens, states)
        for i, h in enumerate(hyps):
            h.decoder_out = out[i]
            h.states = [np.take(s, [i], axis=self.axis) for s in nxt]

    def decode(self, encoder_out: FloatArray, states: Sequence[NemoBeamState]) -> None:
        """Advance every stream over ``encoder_out`` (N, T, D) in place."""
        num_frames = encoder_out.shape[1]
        for s in states:
            for h in s.hyps:
                h.frame, h.num_symbols = 0, 0
        while True:
            active = []
            for n, s in enumerate(states):
                low = min(h.frame for h in s.hyps)
                if low < num_frames:
                    active.append((n, s, low))
            if not active:
                break
            expand: list[tuple[int, NemoHyp]] = []  # (stream row, path)
            for n, s, low in active:
                for h in s.hyps:
                    if h.frame == low and h.num_symbols < self.max_symbols_per_frame:
                        expand.append((n, h))
            self._read_last_tokens([h for _, h in expand if h.decoder_out is None])
            logp = np.zeros((0, 0), dtype=np.float32)
            if expand:
                enc = np.stack([encoder_out[n, h.frame] for n, h in expand])
                dec = np.stack([h.decoder_out for _, h in expand])  # type: ignore[misc]
                logits = np.array(self.run_joiner(enc, dec), dtype=np.float32, copy=True)
                if self.blank_penalty > 0:
                    logits[:, self.blank_id] -= self.blank_penalty
                logp = log_softmax(logits)
            row = 0
            for _n, s, low in active:
                candidates: list[NemoHyp] = []
                for h in s.hyps:
                    if h.frame > low:
                        candidates.append(h)
                    elif h.num_symbols >= self.max_symbols_per_frame:
                        moved = h.copy()
                        moved.frame += 1
                        moved.num_symbols = 0
                        moved.num_trailing_blanks += 1
                        candidates.append(moved)
                    else:
                        candidates.extend(self._extend(h, logp[row], s, low))
                        row += 1
                s.hyps = self._prune(candidates)
        for s in states:
            s.frame_offset += num_frames

    def _extend(self, h: NemoHyp, logp: FloatArray, s: NemoBeamState, frame: int) -> list[NemoHyp]:
        ranking = logp
        graph = s.context_graph
        if graph is not None and h.context_state is not None and h.context_state.next:
            ranking = logp.copy()
            for token, nxt in h.context_state.next.items():
                if 0 <= token < ranking.size:
                    ranking[token] += nxt.token_score
        out = []
        for token in topk_desc(ranking, self.beam).tolist():
            score = h.log_prob + float(logp[token])
            if token == self.blank_id:
                new = NemoHyp(
                    h.ys,
                    score,
                    h.states,
                    h.decoder_out,
                    h.timestamps,
                    h.num_trailing_blanks + 1,
                    h.context_state,
                    h.frame + 1,
                    0,
                )
            else:
                new = NemoHyp(
                    [*h.ys, token],
                    score,
                    h.states,
                    None,
                    [*h.timestamps, frame + s.frame_offset],
                    0,
                    h.context_state,
                    h.frame,
                    h.num_symbols + 1,
                )
                if graph is not None and h.context_state is not None:
                    bonus, new.context_state = graph.forward_one_step(h.context_state, token)
                    new.log_prob += bonus
            out.append(new)
        return out

    def _prune(self, candidates: list[NemoHyp]) -> list[NemoHyp]:
        merged: dict[tuple[tuple[int, ...], int, int], NemoHyp] = {}
        for c in candidates:
            key = (tuple(c.ys), c.frame, c.num_symbols)
            old = merged.get(key)
            if old is None or c.log_prob > old.log_prob:
                merged[key] = c
        ranked = sorted(merged.values(), key=lambda c: -c.log_prob)
        return ranked[: self.beam]

    def tokens(self, state: NemoBeamState) -> Best:
        best = state.best()
        return Best(list(best.ys), list(best.timestamps), best.num_trailing_blanks)

    def reset(self, state: NemoBeamState) -> NemoBeamState:
        return self.initial(state.context_graph)
