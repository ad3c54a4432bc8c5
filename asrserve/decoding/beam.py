"""Batched modified beam search (at most one symbol per frame) with hotwords.

Follows the search of icefall / sherpa-onnx: per frame, every active path
of a stream is expanded by every token, the ``beam`` best (path, token)
pairs survive, and paths with equal token sequences are merged by
log-adding their probabilities. The best path is chosen with length
normalisation.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

import numpy as np
import numpy.typing as npt

from asrserve.decoding.decoder_cache import DecoderCache
from asrserve.decoding.greedy import initial_context
from asrserve.decoding.hotwords import ContextGraph, ContextState
from asrserve.decoding.search import Best

FloatArray = npt.NDArray[np.float32]


@dataclass(slots=True)
class BeamHyp:
    ys: list[int]
    log_prob: float
    timestamps: list[int] = field(default_factory=list)
    context_state: ContextState | None = None
    num_trailing_blanks: int = 0
    carried: tuple[int, ...] | None = None
    """Decoder context used instead of ``ys`` for one frame after an endpoint."""
    log_probs: list[float] = field(default_factory=list)
    """Each token's temperature-scaled log-probability (see :class:`Best`)."""


class _Path(Protocol):
    ys: list[int]
    log_prob: float


PathT = TypeVar("PathT", bound=_Path)


@dataclass
class MergingPaths(Generic[PathT]):
    """All active paths of one stream, keyed by token sequence: a path that
    reaches the same tokens as one already held is merged into it."""

    hyps: dict[tuple[int, ...], PathT]
    context_graph: ContextGraph | None = None
    frame_offset: int = 0

    def add(self, hyp: PathT, key: tuple[int, ...] | None = None) -> None:
        """Hold ``hyp`` (``key``: its tokens as a tuple, when the caller has them)."""
        if key is None:
            key = tuple(hyp.ys)
        old = self.hyps.get(key)
        if old is None:
            self.hyps[key] = hyp
        else:
            old.log_prob = float(np.logaddexp(old.log_prob, hyp.log_prob))


@dataclass
class BeamState(MergingPaths[BeamHyp]):
    """All active paths of one stream, keyed by token sequence."""

    def best(self) -> BeamHyp:
        return max(self.hyps.values(), key=lambda h: h.log_prob / len(h.ys))


def log_softmax(x: FloatArray) -> FloatArray:
    """Row-wise log-softmax in float32, summing left to right like the reference."""
    m = x.max(axis=1, keepdims=True)
    s = np.exp(x - m).cumsum(axis=1, dtype=np.float32)[:, -1:]
    out: FloatArray = x - (m + np.log(s))
    return out


def topk_desc(values: FloatArray, k: int) -> npt.NDArray[np.intp]:
    """Indices of the ``k`` largest values, largest first, lower index first on ties."""
    idx = np.arange(values.size) if k >= values.size else np.argpartition(-values, k - 1)[:k]
    order = np.lexsort((idx, -values[idx]))
    out: npt.NDArray[np.intp] = idx[order]
    return out


def top_extensions(
    logits: FloatArray, paths: Sequence[Sequence[_Path]], beam: int
) -> list[list[tuple[int, int, float]]]:
    """One frame of modified beam search. ``logits`` (P, V) has a row per path of
    ``paths`` (each stream's paths, flattened in order); for each stream, its
    ``beam`` best extensions by one token (blank included), best first, as
    (row of the path in ``logits``, token, the path's log-prob plus the token's)."""
    return _extensions(log_softmax(logits), paths, beam)


def _extensions(
    logp: FloatArray, paths: Sequence[Sequence[_Path]], beam: int
) -> list[list[tuple[int, int, float]]]:
    """:func:`top_extensions` given the log-softmax of the logits."""
    vocab = logp.shape[1]
    base = np.fromiter(
        (h.log_prob for hs in paths for h in hs), dtype=np.float64, count=logp.shape[0]
    )
    scores = (logp.astype(np.float64) + base[:, None]).astype(np.float32)
    out = []
    start = 0
    for hyps in paths:
        block = scores[start : start + len(hyps)].ravel()
        out.append([(start + i // vocab, i % vocab, v) for v, i in _best_of(block, beam)])
        start += len(hyps)
    return out


_ARGMAX_BEAM = 8
"""Up to this many picks, repeated argmax beats a partition and a sort."""


def _best_of(block: FloatArray, k: int) -> list[tuple[float, int]]:
    """The ``k`` largest values of ``block`` as (value, index), largest first,
    lower index first on ties."""
    if k < block.size and k <= _ARGMAX_BEAM:
        rest = block.copy()
        picks = []
        for _ in range(k):
            i = int(rest.argmax())
            if rest[i] == -np.inf:  # -inf left, picks masked among them: sort instead
                break
            picks.append((float(block[i]), i))
            rest[i] = -np.inf
        else:
            return picks
    idx = np.arange(block.size) if k >= block.size else np.argpartition(-block, k - 1)[:k]
    ranked = sorted(zip((-block[idx]).tolist(), idx.tolist(), strict=True))
    return [(-v, i) for v, i in ranked]


class ModifiedBeamSearch:
    """``skip_ids`` emit nothing (blank, ``<unk>``); ``context_fill`` pads a
    fresh path's decoder context; ``keep_context``: see :meth:`reset`.
    ``per_stream``: run the decoder and joiner once per stream over all of its
    paths (``joiner_frame``: one encoder frame (D,) against P decoder rows),
    as the references do for one stream; ``group_joiner`` (S, P, D) x
    (S, P, D) -> (S, P, V), where given, gives every stream exactly that in
    one call for all streams."""

    supports_hotwords = True

    def __init__(
        self,
        joiner: Callable[[FloatArray, FloatArray], FloatArray],
        decoder: DecoderCache,
        skip_ids: Collection[int],
        beam: int = 4,
        blank_penalty: float = 0.0,
        *,
        per_stream: bool = False,
        joiner_frame: Callable[[FloatArray, FloatArray], FloatArray],
        group_joiner: Callable[[FloatArray, FloatArray], FloatArray] | None = None,
        context_fill: int = -1,
        keep_context: bool = True,
        temperature: float = 2.0,
    ) -> None:
        self.joiner = joiner
        self.temperature = temperature
        self.joiner_frame = joiner_frame
        self.group_joiner = group_joiner
        self.per_stream = per_stream
        self.decoder = decoder
        self.skip_ids = frozenset(skip_ids)
        self.beam = beam
        self.blank_penalty = blank_penalty
        self.context_fill = context_fill
        self.keep_context = keep_context

    def initial(self, context_graph: ContextGraph | None = None) -> BeamState:
        ys = initial_context(self.decoder.context_size, self.context_fill)
        root = context_graph.root if context_graph else None
        return BeamState({tuple(ys): BeamHyp(ys, 0.0, context_state=root)}, context_graph)

    def decode(self, encoder_out: FloatArray, states: Sequence[BeamState]) -> None:
        """Advance every stream's paths over ``encoder_out`` (N, T, D) in place."""
        num_frames = encoder_out.shape[1]
        per_stream = self.per_stream or self.decoder.batch_dependent
        skip = self.skip_ids
        for t in range(num_frames):
            items = [list(s.hyps.items()) for s in states]
            prev = [[h for _, h in its] for its in items]
            flat = prev[0] if len(prev) == 1 else [h for hs in prev for h in hs]
            keys = [k for its in items for k, _ in its]
            if per_stream:
                logits = self._logits_per_stream(encoder_out[:, t, :], prev)
            else:
                ctx = [self.decoder.context_of(h.ys, h.carried) for h in flat]
                dec = self.decoder.get(ctx, whole=True)
                enc = np.repeat(encoder_out[:, t, :], [len(hs) for hs in prev], axis=0)
                logits = self.joiner(enc, dec)
            scored = logits
            if self.blank_penalty > 0:
                scored = logits.copy()
                scored[:, 0] -= self.blank_penalty
            best = _extensions(log_softmax(scored), prev, self.beam)
            # confidences (from the raw logits, as sherpa-onnx) only for the
            # rows that emit a token: each row's log-softmax is its own
            emitting = sorted({row for ext in best for row, token, _ in ext if token not in skip})
            conf_row = {row: i for i, row in enumerate(emitting)}
            conf = logits[:0]  # looked up only for emitting rows
            if emitting:
                conf = log_softmax(logits[emitting] / np.float32(self.temperature))
            for state, extensions in zip(states, best, strict=True):
                state.hyps = {}
                graph = state.context_graph
                frame = t + state.frame_offset
                for row, token, score in extensions:
                    src = flat[row]
                    if token in skip:
                        hyp = BeamHyp(
                            src.ys,
                            score,
                            src.timestamps,
                            src.context_state,
                            src.num_trailing_blanks + 1,
                            None,
                            src.log_probs,
                        )
                        state.add(hyp, keys[row])
                        continue
                    hyp = BeamHyp(
                        [*src.ys, token],
                        score,
                        [*src.timestamps, frame],
                        src.context_state,
                        0,
                        None,
                        [*src.log_probs, float(conf[conf_row[row], token])],
                    )
                    if graph is not None and src.context_state is not None:
                        context_score, hyp.context_state = graph.forward_one_step(
                            src.context_state, token
                        )
                        hyp.log_prob = score + context_score
                    state.add(hyp, (*keys[row], token))
        for s in states:
            s.frame_offset += num_frames

    def _logits_per_stream(self, enc_t: FloatArray, prev: list[list[BeamHyp]]) -> FloatArray:
        """Joiner logits with the decoder and joiner run once per stream over
        all of its paths, as the references do for a single stream: for
        graphs whose rows depend on their batch (dynamic quantization) and
        engines whose kernels round differently by call shape (ncnn). The
        decoder's output for a stream's batch of contexts is remembered whole
        (:meth:`DecoderCache.get_batch`), so it equals an uncached run."""
        ctx = self.decoder.context_of
        decs = [self.decoder.get_batch([ctx(h.ys, h.carried) for h in hyps]) for hyps in prev]
        if self.group_joiner is not None and len(decs) > 1:
            # pad each stream's paths to the widest by repeating its first row:
            # a repeated row changes no group's value range, so no scale
            width = max(len(d) for d in decs)
            dec = np.stack(
                [
                    d if len(d) == width else np.concatenate([d, d[:1].repeat(width - len(d), 0)])
                    for d in decs
                ]
            )
            enc = np.repeat(enc_t[:, None, :], width, axis=1)
            logits = self.group_joiner(enc, dec)
            return np.concatenate([logits[i, : len(d)] for i, d in enumerate(decs)])
        out = [self.joiner_frame(enc_t[i], dec) for i, dec in enumerate(decs)]
        return out[0] if len(out) == 1 else np.concatenate(out)

    def tokens(self, state: BeamState) -> Best:
        best = state.best()
        ids = best.ys[self.decoder.context_size :]
        return Best(ids, list(best.timestamps), best.num_trailing_blanks, tuple(best.log_probs))

    def reset(self, state: BeamState) -> BeamState:
        """New segment after an endpoint. ``keep_context`` (sherpa-onnx): a
        fresh path (log-prob 0) beside every old path going on from its last
        tokens with its log-prob, so the fresh one usually leads. Otherwise (sherpa-ncnn) one fresh
        path whose first frame still sees the best path's last tokens."""
        cs = self.decoder.context_size
        if not self.keep_context:
            fresh = self.initial(state.context_graph)
            (hyp,) = fresh.hyps.values()
            best = state.best()
            carried = self.decoder.context_of(best.ys, best.carried)
            hyp.carried = None if carried == tuple(hyp.ys) else carried
            return fresh
        new = self.initial(state.context_graph)
        if len(state.best().ys) <= cs:
            return new
        root = state.context_graph.root if state.context_graph else None
        for h in state.hyps.values():
            new.add(BeamHyp(h.ys[-cs:], h.log_prob, context_state=root))
        return new
