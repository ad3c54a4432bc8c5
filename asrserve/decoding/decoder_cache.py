"""Memoised stateless-decoder outputs.

A stateless transducer decoder is a pure function of its last
``context_size`` tokens, so its output can be shared by every hypothesis
of every stream that ends in the same tokens. For graphs with per-tensor
dynamic activation quantization each context is computed alone, so a
cached row never depends on which other rows shared its batch.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]
Context = tuple[int, ...]


class DecoderCache:
    def __init__(
        self,
        run_decoder: Callable[[npt.NDArray[np.int64]], FloatArray],
        context_size: int,
        max_entries: int = 20000,
        batch_dependent: bool = False,
    ) -> None:
        self._run = run_decoder
        self.context_size = context_size
        self.max_entries = max_entries
        self.batch_dependent = batch_dependent
        self._cache: OrderedDict[Context, FloatArray] = OrderedDict()
        self.hits = 0
        self.misses = 0
        self._lock = threading.Lock()  # servers decode disjoint streams on several threads

    def context_of(self, ys: Sequence[int], carried: Context | None = None) -> Context:
        """The decoder input of a path: its last tokens, or ``carried`` (a
        context carried over an endpoint) while that is set."""
        return carried if carried is not None else tuple(ys[-self.context_size :])

    def run(self, *contexts: Context) -> FloatArray:
        """Run the decoder graph uncached on ``contexts`` as one batch."""
        return self._run(np.asarray(contexts, dtype=np.int64))

    def get(self, contexts: Sequence[Context]) -> FloatArray:
        """Decoder outputs (len(contexts), D), running the graph once for all misses."""
        with self._lock:
            return self._get(contexts)

    def _get(self, contexts: Sequence[Context]) -> FloatArray:
        rows = {c: self._cache[c] for c in contexts if c in self._cache}
        missing = [c for c in dict.fromkeys(contexts) if c not in rows]
        if missing:
            self.misses += len(missing)
            if self.batch_dependent:
                # one context per run keeps every cached row independent of its batch
                out = np.concatenate([self.run(ctx) for ctx in missing])
            else:
                out = self.run(*missing)
            for ctx, row in zip(missing, out, strict=True):
                rows[ctx] = self._cache[ctx] = row.copy()
            # evict after the answer is assembled: one call may need more
            # contexts than the cache holds
            while len(self._cache) > self.max_entries:
                self._cache.popitem(last=False)
        self.hits += len(contexts) - len(missing)
        return np.stack([rows[c] for c in contexts])
