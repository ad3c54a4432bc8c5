"""The interface every search offers the recognizer.

A search owns per-stream state it alone understands; the recognizer creates
it with :meth:`Search.initial`, advances it with one batched
:meth:`Search.decode` per encoder chunk, reads the best hypothesis with
:meth:`Search.tokens` and starts a new segment with :meth:`Search.reset`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple, Protocol

import numpy as np
import numpy.typing as npt

from asrserve.decoding.hotwords import ContextGraph

FloatArray = npt.NDArray[np.float32]


class Best(NamedTuple):
    """The best hypothesis of a stream's current segment."""

    ids: list[int]
    """Token ids, without the decoder's context padding."""
    frames: list[int]
    """Each token's output frame, from the segment's start."""
    trailing_blanks: int
    """Blank output frames since the last token."""
    log_probs: tuple[float, ...] = ()
    """Each token's log-probability (temperature-scaled log-softmax of the
    joiner's logits, as sherpa-onnx's ``ys_probs``); empty where the search
    does not compute them."""


class Search(Protocol):
    supports_hotwords: bool
    """Whether :meth:`initial` honours a context graph (hotword boosting)."""

    def initial(self, context_graph: ContextGraph | None = None) -> Any: ...

    def decode(self, encoder_out: FloatArray, states: Sequence[Any]) -> None:
        """Advance each stream's state over ``encoder_out`` (N, T, D), in place."""
        ...

    def tokens(self, state: Any) -> Best: ...

    def reset(self, state: Any) -> Any:
        """The state of a new segment after an endpoint."""
        ...


def token_log_probs(
    logits: FloatArray, tokens: npt.NDArray[np.int64], temperature: float
) -> list[float]:
    """``log_softmax(logits / temperature)[row, token]`` for each row, in float32
    as sherpa-onnx computes its per-token confidences."""
    scaled = logits / np.float32(temperature)
    m = scaled.max(axis=1, keepdims=True)
    lse = m[:, 0] + np.log(np.exp(scaled - m).sum(axis=1, dtype=np.float32))
    picked = scaled[np.arange(len(tokens)), tokens] - lse
    return [float(p) for p in picked]
