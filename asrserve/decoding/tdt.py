"""Greedy search for token-and-duration transducers (TDT).

A TDT joint scores, for one encoder frame and the prediction network's
state, the next token (blank included) *and* how many encoder frames to
advance (one of ``durations``, e.g. ``0 1 2 3 4``). Greedy search per
sequence, frame index ``t`` starting at 0::

    token = argmax(token logits); step = durations[argmax(duration logits)]
    if token != blank: emit it, keep the joint's new state
    if step > 0:  t += step                         (skip frames)
    elif token == blank or max_symbols emitted at t:  t += 1
    (otherwise stay at t and let the joint emit again)

With no durations (``durations=()``) the joint scores tokens only and the
search is plain RNN-T greedy search: stay on a frame while it emits tokens,
move on after a blank or ``max_symbols`` tokens.

This module knows no model: the joint is anything with the
:class:`TdtJoint` interface. Sequences of a batch advance independently;
one joint call per step covers every sequence that is not done.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt

from asrserve.errors import ConfigError

FloatArray = npt.NDArray[np.float32]
JointState = tuple[FloatArray, ...]


class TdtJoint(Protocol):
    """Prediction network + joint in one call.

    The state is a tuple of arrays whose batch axis is ``state_batch_axis``.
    """

    state_batch_axis: int

    def init_state(self, batch: int) -> JointState:
        """The state before any token, for ``batch`` sequences."""
        ...

    def run(
        self, encoder_frames: FloatArray, targets: npt.NDArray[np.int64], state: JointState
    ) -> tuple[FloatArray, JointState]:
        """``encoder_frames`` (B, D), ``targets`` (B,) the last emitted token
        (blank at the start) → logits (B, vocab + len(durations)), new state."""
        ...


@dataclass
class TdtHypothesis:
    """One sequence's greedy result: tokens, the encoder frame each was
    emitted at, and the duration predicted with it."""

    tokens: list[int] = field(default_factory=list)
    frames: list[int] = field(default_factory=list)
    durations: list[int] = field(default_factory=list)


class TdtGreedySearch:
    """Batched greedy TDT search.

    ``vocab_size`` counts the blank; the joint's logits are
    ``vocab_size`` token scores followed by one score per duration (none:
    plain RNN-T, every step a duration of 0).
    """

    def __init__(
        self,
        joint: TdtJoint,
        vocab_size: int,
        blank_id: int,
        durations: Sequence[int] = (0, 1, 2, 3, 4),
        max_symbols_per_frame: int = 10,
        blank_penalty: float = 0.0,
    ) -> None:
        if not 0 <= blank_id < vocab_size:
            raise ConfigError(
                f"blank id {blank_id} is outside the vocabulary (0..{vocab_size - 1})"
            )
        if any(d < 0 for d in durations):
            raise ConfigError(f"TDT durations must be non-negative, got {list(durations)}")
        if max_symbols_per_frame < 1:
            raise ConfigError(f"max_symbols_per_frame must be >= 1, got {max_symbols_per_frame}")
        self.joint = joint
        self.vocab_size = vocab_size
        self.blank_id = blank_id
        self.durations = np.asarray(list(durations), dtype=np.int64)
        self.max_symbols = max_symbols_per_frame
        self.blank_penalty = blank_penalty

    def decode(
        self, encoder_out: FloatArray, lengths: Sequence[int] | npt.NDArray[np.int64]
    ) -> list[TdtHypothesis]:
        """``encoder_out`` (B, T, D), ``lengths`` (B,) valid frames per row."""
        batch = encoder_out.shape[0]
        lens = np.minimum(np.asarray(lengths, dtype=np.int64), encoder_out.shape[1])
        hyps = [TdtHypothesis() for _ in range(batch)]
        if batch == 0:
            return hyps
        axis = self.joint.state_batch_axis
        state = self.joint.init_state(batch)
        t = np.zeros(batch, dtype=np.int64)
        emitted = np.zeros(batch, dtype=np.int64)
        last = np.full(batch, self.blank_id, dtype=np.int64)
        v = self.vocab_size
        while True:
            rows = np.flatnonzero(t < lens)
            if rows.size == 0:
                return hyps
            everyone = rows.size == batch
            sub = state if everyone else tuple(np.take(s, rows, axis=axis) for s in state)
            logits, new = self.joint.run(encoder_out[rows, t[rows]], last[rows], sub)
            tok_logits = logits[:, :v]
            if self.blank_penalty:
                tok_logits = tok_logits.copy()
                tok_logits[:, self.blank_id] -= self.blank_penalty
            tokens = tok_logits.argmax(axis=1)
            if self.durations.size:
                steps = self.durations[logits[:, v:].argmax(axis=1)]
            else:
                steps = np.zeros(rows.size, dtype=np.int64)
            emit = tokens != self.blank_id
            if emit.any():
                keep = emit.nonzero()[0]
                state = tuple(
                    _put(s, n, rows[keep], keep, axis) for s, n in zip(state, new, strict=True)
                )
                for i in keep:
                    r = int(rows[i])
                    hyps[r].tokens.append(int(tokens[i]))
                    hyps[r].frames.append(int(t[r]))
                    hyps[r].durations.append(int(steps[i]))
                last[rows[keep]] = tokens[keep]
                emitted[rows[keep]] += 1
            advance = np.where(
                steps > 0,
                steps,
                ((~emit) | (emitted[rows] >= self.max_symbols)).astype(np.int64),
            )
            t[rows] += advance
            emitted[rows[advance > 0]] = 0


def _put(
    state: FloatArray,
    new: FloatArray,
    rows: npt.NDArray[np.intp],
    src: npt.NDArray[np.intp],
    axis: int,
) -> FloatArray:
    """``state`` with its ``rows`` (on ``axis``) replaced by ``new``'s ``src`` rows."""
    out: FloatArray = state.copy()
    index: list[slice | npt.NDArray[np.intp]] = [slice(None)] * state.ndim
    index[axis] = rows
    src_index: list[slice | npt.NDArray[np.intp]] = [slice(None)] * new.ndim
    src_index[axis] = src
    out[tuple(index)] = new[tuple(src_index)]
    return out
