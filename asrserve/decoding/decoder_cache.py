"""Memoised stateless-decoder outputs.

A stateless transducer decoder is a pure function of its last
``context_size`` tokens, so its output can be shared by every hypothesis
of every stream that ends in the same tokens. For graphs with per-tensor
dynamic activation quantization each context is computed alone (or, given
the graph's per-row rewrite, all of them in one call that gives each the
same), so a cached row never depends on which other rows shared its batch; where a
search needs a batch's own rows (beam search as the references run it),
:meth:`DecoderCache.get_batch` remembers whole batches instead.

:meth:`get` can also remember its last few stacked answers whole (the same
contexts again cost one lookup: a beam's paths). Every cache drops the least
recently used entry first. Returned arrays are read-only (rows are shared);
callers copy before writing.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]
Context = tuple[int, ...]

_STACKED_ROWS = 16
"""Answers of up to this many rows are remembered whole (a few streams' beams)."""


class DecoderCache:
    def __init__(
        self,
        run_decoder: Callable[[npt.NDArray[np.int64]], FloatArray],
        context_size: int,
        max_entries: int = 20000,
        batch_dependent: bool = False,
        max_batches: int = 4096,
        max_stacked: int = 64,
        run_rows: Callable[[npt.NDArray[np.int64]], FloatArray] | None = None,
    ) -> None:
        """``run_rows``: for a ``batch_dependent`` decoder, a twin whose rows
        are each what the original gives that context alone (a per-row int8
        rewrite): :meth:`get` then runs all misses in one call."""
        self._run = run_decoder
        self._run_rows = run_rows
        self.context_size = context_size
        self.max_entries = max_entries
        self.max_batches = max_batches
        self.batch_dependent = batch_dependent
        self._cache: OrderedDict[Context, FloatArray] = OrderedDict()
        self._batches: OrderedDict[tuple[Context, ...], FloatArray] = OrderedDict()
        self._stacked: OrderedDict[tuple[Context, ...], FloatArray] = OrderedDict()
        self.max_stacked = max_stacked
        self.hits = 0
        self.misses = 0
        self._lock = threading.Lock()  # servers decode disjoint streams on several threads

    def clear(self) -> None:
        """Forget every remembered output (both caches)."""
        with self._lock:
            self._cache.clear()
            self._batches.clear()
            self._stacked.clear()

    def context_of(self, ys: Sequence[int], carried: Context | None = None) -> Context:
        """The decoder input of a path: its last tokens, or ``carried`` (a
        context carried over an endpoint) while that is set."""
        return carried if carried is not None else tuple(ys[-self.context_size :])

    def run(self, *contexts: Context) -> FloatArray:
        """Run the decoder graph uncached on ``contexts`` as one batch."""
        return self._run(np.asarray(contexts, dtype=np.int64))

    def get(self, contexts: Sequence[Context], *, whole: bool = False) -> FloatArray:
        """Decoder outputs (len(contexts), D), running the graph once for all
        misses. ``whole``: the stacked answer is remembered for the same
        contexts again (a beam's paths over blank frames)."""
        whole = whole and 1 < len(contexts) <= _STACKED_ROWS
        cache = self._cache
        with self._lock:
            if len(contexts) == 1:  # the common streaming case: one dict lookup
                row = cache.get(contexts[0])
                if row is not None:
                    cache.move_to_end(contexts[0])
                    self.hits += 1
                    return row[None]
            elif whole:
                key = tuple(contexts)
                stacked = self._stacked.get(key)
                if stacked is not None:
                    self._stacked.move_to_end(key)
                    self.hits += len(key)
                    return stacked
            rows: dict[Context, FloatArray] = {}
            for c in contexts:
                hit = cache.get(c)
                if hit is not None:
                    cache.move_to_end(c)
                    rows[c] = hit
        missing = [c for c in dict.fromkeys(contexts) if c not in rows]
        if missing:
            if self._run_rows is not None:
                out = self._run_rows(np.asarray(missing, dtype=np.int64))
            elif self.batch_dependent:
                # one context per run keeps every cached row independent of its batch
                out = np.concatenate([self.run(ctx) for ctx in missing])
            else:
                out = self.run(*missing)
            with self._lock:
                self.misses += len(missing)
                for ctx, computed in zip(missing, out, strict=True):
                    row = computed.copy()
                    row.flags.writeable = False
                    rows[ctx] = cache[ctx] = row
                # evict after the answer is assembled: one call may need more
                # contexts than the cache holds
                while len(cache) > self.max_entries:
                    cache.popitem(last=False)
        with self._lock:
            self.hits += len(contexts) - len(missing)
        if len(contexts) == 1:
            return rows[contexts[0]][None]
        out = np.stack([rows[c] for c in contexts])
        if not whole:
            return out
        out.flags.writeable = False
        with self._lock:
            self._stacked[tuple(contexts)] = out
            while len(self._stacked) > self.max_stacked:
                self._stacked.popitem(last=False)
        return out

    def get_batch(self, contexts: Sequence[Context]) -> FloatArray:
        """What ``run(*contexts)`` gives, remembered by the whole ordered batch:
        for graphs whose rows depend on their batch this is exactly the batch's
        output (a beam's paths rarely change between blank frames); other
        graphs share rows through :meth:`get`."""
        if not self.batch_dependent:
            return self.get(contexts, whole=True)
        key = tuple(contexts)
        with self._lock:
            out = self._batches.get(key)
            if out is not None:
                self._batches.move_to_end(key)
                self.hits += len(key)
                return out
        out = self.run(*key)
        out.flags.writeable = False
        with self._lock:
            self.misses += len(key)
            self._batches[key] = out
            while len(self._batches) > self.max_batches:
                self._batches.popitem(last=False)
        return out
