"""The decoder-output cache: shared rows, one graph run per miss set, bounded size."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from asrserve.decoding.decoder_cache import DecoderCache


def _decoder(calls: list[int]):  # type: ignore[no-untyped-def]
    def run(context: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
        calls.append(len(context))
        return context.astype(np.float32) * 10.0

    return run


def test_one_run_per_set_of_misses_and_hits_after() -> None:
    calls: list[int] = []
    cache = DecoderCache(_decoder(calls), 2)
    out = cache.get([(1, 2), (3, 4), (1, 2)])
    np.testing.assert_array_equal(out, [[10, 20], [30, 40], [10, 20]])
    assert calls == [2]  # (1, 2) once, (3, 4) once, in one run
    cache.get([(3, 4)])
    assert calls == [2]
    assert (cache.hits, cache.misses) == (2, 2)


def test_a_call_needing_more_contexts_than_the_cache_holds() -> None:
    """More distinct contexts in one call than ``max_entries`` (a huge beam):
    every row is still answered, and the cache stays bounded."""
    calls: list[int] = []
    cache = DecoderCache(_decoder(calls), 2, max_entries=4)
    cache.get([(0, 0), (0, 1)])
    contexts = [(i, i + 1) for i in range(10)] + [(0, 0)]
    out = cache.get(contexts)
    np.testing.assert_array_equal(out, np.array(contexts, np.float32) * 10.0)
    assert len(cache._cache) == 4
