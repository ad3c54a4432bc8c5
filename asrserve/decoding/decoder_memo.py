"""Prediction-network outputs remembered by (token, state), for the NeMo
decoders whose state is an LSTM's: a hypothesis that stays on blank does not
re-run the decoder frame after frame (sherpa-onnx runs it only after an
emitted token). Thread-safe, least recently used first out."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]
Rows = Callable[[list[int]], tuple[FloatArray, Sequence[FloatArray]]]


class DecoderMemo:
    """``(token, state rows) → (decoder output, next state rows)``."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._memo: OrderedDict[bytes, tuple[FloatArray, list[FloatArray]]] = OrderedDict()
        self._lock = threading.Lock()

    def outputs(
        self, tokens: npt.NDArray[np.int64], states: Sequence[FloatArray], run: Rows
    ) -> tuple[FloatArray, list[FloatArray]]:
        """Decoder outputs (P, D) for ``tokens`` (P,) read from ``states``
        (each (layers, P, H)), and the next states; ``run(rows)`` decodes the
        rows not remembered (their outputs, and next states in ``states``' layout)."""
        keys = [
            int(tokens[i]).to_bytes(8, "little", signed=True)
            + b"".join(np.ascontiguousarray(s[:, i]).tobytes() for s in states)
            for i in range(tokens.shape[0])
        ]
        with self._lock:
            hits = [self._memo.get(k) for k in keys]
            for k, h in zip(keys, hits, strict=True):
                if h is not None:
                    self._memo.move_to_end(k)
        miss = [i for i, h in enumerate(hits) if h is None]
        if miss:
            dec, nxt = run(miss)
            with self._lock:
                for j, i in enumerate(miss):
                    entry = (dec[j], [s[:, j] for s in nxt])
                    hits[i] = entry
                    self._memo[keys[i]] = entry
                while len(self._memo) > self._size:
                    self._memo.popitem(last=False)
        found = [h for h in hits if h is not None]
        next_states = [np.stack([h[1][k] for h in found], axis=1) for k in range(len(states))]
        return np.stack([h[0] for h in found]), next_states
