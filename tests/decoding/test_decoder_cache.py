"""The decoder-output cache: shared rows, one graph run per miss set, bounded size."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

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


def test_least_recently_used_goes_first_and_rows_are_read_only() -> None:
    calls: list[int] = []
    cache = DecoderCache(_decoder(calls), 2, max_entries=2)
    cache.get([(1, 1)])
    cache.get([(2, 2)])
    cache.get([(1, 1)])  # a hit: (1, 1) is now the most recently used
    cache.get([(3, 3)])  # evicts (2, 2), not (1, 1)
    assert set(cache._cache) == {(1, 1), (3, 3)}
    row = cache.get([(1, 1)])
    assert not row.flags.writeable  # shared with every later hit
    assert calls == [1, 1, 1]


def test_batches_of_a_batch_dependent_graph_are_remembered_whole() -> None:
    """``get_batch`` gives exactly an uncached run of the batch (whose rows depend
    on each other), once per ordered batch of contexts."""
    calls: list[tuple[tuple[int, ...], ...]] = []

    def batch_dependent(context: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
        calls.append(tuple(tuple(int(v) for v in row) for row in context))
        return context.astype(np.float32) * float(context.max())

    cache = DecoderCache(batch_dependent, 2, batch_dependent=True)
    batch = [(1, 2), (3, 4)]
    want = cache.run(*batch)
    calls.clear()
    np.testing.assert_array_equal(cache.get_batch(batch), want)
    np.testing.assert_array_equal(cache.get_batch(batch), want)
    assert calls == [((1, 2), (3, 4))]
    # another order is another batch; a row alone is computed alone
    cache.get_batch(batch[::-1])
    np.testing.assert_array_equal(cache.get([(1, 2)]), [[2.0, 4.0]])
    assert len(calls) == 3
    cache.clear()
    cache.get_batch(batch)
    assert len(calls) == 4


def test_a_per_row_twin_runs_all_misses_of_a_batch_dependent_graph_at_once() -> None:
    """Without a twin each missing context runs alone; with one (rows that are
    what each context gets alone) all misses share one call."""
    runs: list[int] = []

    def alone_rows(context: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
        runs.append(len(context))
        return context.astype(np.float32)

    contexts = [(1, 2), (3, 4), (5, 6)]
    plain = DecoderCache(alone_rows, 2, batch_dependent=True)
    np.testing.assert_array_equal(plain.get(contexts), contexts)
    assert runs == [1, 1, 1]
    runs.clear()
    twin = DecoderCache(
        lambda c: pytest.fail("the twin runs the misses"),
        2,
        batch_dependent=True,
        run_rows=alone_rows,
    )
    np.testing.assert_array_equal(twin.get(contexts), contexts)
    np.testing.assert_array_equal(twin.get(contexts[1:]), contexts[1:])  # all hits
    assert runs == [3]


def test_a_repeated_set_of_contexts_is_answered_whole() -> None:
    """A beam's paths over blank frames ask for the same contexts again: the
    stacked answer comes back as it was (read-only), with no run; the memory
    of such answers is bounded."""
    calls: list[int] = []
    cache = DecoderCache(_decoder(calls), 2, max_stacked=2)
    assert cache.get([(1, 2), (3, 4)]).flags.writeable  # not asked to remember it whole
    assert not cache._stacked
    first = cache.get([(1, 2), (3, 4)], whole=True)
    again = cache.get([(1, 2), (3, 4)], whole=True)
    assert again is first
    assert not again.flags.writeable
    np.testing.assert_array_equal(again, [[10, 20], [30, 40]])
    assert calls == [2]
    assert (cache.hits, cache.misses) == (4, 2)
    cache.get([(3, 4), (1, 2)], whole=True)  # another order is another answer
    cache.get([(5, 6), (1, 2)], whole=True)
    assert len(cache._stacked) == 2
    assert ((1, 2), (3, 4)) not in cache._stacked
    cache.clear()
    assert not cache._stacked
