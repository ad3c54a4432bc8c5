"""One frame of modified beam search: which extensions survive, in which order."""

from __future__ import annotations

import numpy as np
import pytest

from asrserve.decoding.beam import _best_of, log_softmax, top_extensions


def _by_sorting(block: np.ndarray, k: int) -> list[tuple[float, int]]:
    """The contract spelled out: largest first, lower index first on ties."""
    order = sorted(range(block.size), key=lambda i: (-float(block[i]), i))
    return [(float(block[i]), i) for i in order[:k]]


@pytest.mark.parametrize("k", [1, 2, 4, 8, 9, 16])
def test_best_of_random_blocks_equal_a_full_sort(k: int) -> None:
    rng = np.random.default_rng(k)
    for _ in range(200):
        block = (rng.standard_normal(int(rng.integers(1, 600))) * 4).astype(np.float32)
        got = _best_of(block, k)
        want = _by_sorting(block, k)
        if k > 8:  # the partition path picks any of values tied at the k-th place
            assert [v for v, _ in got] == [v for v, _ in want]
        else:
            assert got == want


def test_best_of_ties_take_the_lower_index_first() -> None:
    block = np.array([1.0, 3.0, 2.0, 3.0, 3.0, 3.0, 0.5], np.float32)
    assert _best_of(block, 4) == [(3.0, 1), (3.0, 3), (3.0, 4), (3.0, 5)]
    assert _best_of(block, 2) == [(3.0, 1), (3.0, 3)]


def test_best_of_with_minus_infinity_left_falls_back_to_sorting() -> None:
    """-inf values (masked logits) must not make a pick twice."""
    block = np.array([-np.inf, 2.0, -np.inf, 1.0, -np.inf], np.float32)
    got = _best_of(block, 4)
    assert [i for _, i in got][:2] == [1, 3]
    assert len({i for _, i in got}) == 4
    assert [v for v, _ in got][2:] == [-np.inf, -np.inf]
    assert _best_of(np.full(3, -np.inf, np.float32), 2)[0][0] == -np.inf


def test_top_extensions_rows_tokens_and_scores() -> None:
    """Two streams (2 paths, 1 path): each stream's best (row, token, score)."""

    class P:
        def __init__(self, lp: float) -> None:
            self.ys: list[int] = []
            self.log_prob = lp

    rng = np.random.default_rng(0)
    logits = rng.standard_normal((3, 5)).astype(np.float32)
    paths = [[P(-1.0), P(-2.0)], [P(-0.5)]]
    got = top_extensions(logits, paths, 3)
    logp = log_softmax(logits).astype(np.float64)
    scores = (logp + np.array([[-1.0], [-2.0], [-0.5]])).astype(np.float32)
    for (start, n), ext in zip([(0, 2), (2, 1)], got, strict=True):
        block = scores[start : start + n].ravel()
        want = [(start + i // 5, i % 5, v) for v, i in _by_sorting(block, 3)]
        assert ext == want
