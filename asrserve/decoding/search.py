"""The interface every search offers the recognizer.

A search owns per-stream state it alone understands; the recognizer creates
it with :meth:`Search.initial`, advances it with one batched
:meth:`Search.decode` per encoder chunk, reads the best hypothesis with
:meth:`Search.tokens` and starts a new segment with :meth:`Search.reset`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from asrserve.decoding.hotwords import ContextGraph

FloatArray = npt.NDArray[np.float32]


class Search(Protocol):
    supports_hotwords: bool
    """Whether :meth:`initial` honours a context graph (hotword boosting)."""

    def initial(self, context_graph: ContextGraph | None = None) -> Any: ...

    def decode(self, encoder_out: FloatArray, states: Sequence[Any]) -> None:
        """Advance each stream's state over ``encoder_out`` (N, T, D), in place."""
        ...

    def tokens(self, state: Any) -> tuple[list[int], list[int], int]:
        """(token ids, their output-frame timestamps, trailing blank frames)."""
        ...

    def reset(self, state: Any) -> Any:
        """The state of a new segment after an endpoint."""
        ...
