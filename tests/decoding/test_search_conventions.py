"""Per-model search conventions: skipped ids, initial context, context after an endpoint."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from asrserve.decoding.beam import ModifiedBeamSearch
from asrserve.decoding.decoder_cache import DecoderCache
from asrserve.decoding.greedy import GreedySearch

VOCAB = 8
FloatArray = npt.NDArray[np.float32]


class Fake:
    """A decoder that records its contexts and a joiner whose logits are the encoder frame."""

    def __init__(self) -> None:
        self.contexts: list[tuple[int, ...]] = []

    def decoder(self, context: npt.NDArray[np.int64]) -> FloatArray:
        self.contexts += [tuple(int(v) for v in row) for row in context]
        return np.zeros((len(context), 4), np.float32)

    @staticmethod
    def joiner(enc: FloatArray, _dec: FloatArray) -> FloatArray:
        return enc.copy()


def frames(*best: int) -> FloatArray:
    """Encoder output (1, T, VOCAB) whose frame t prefers token ``best[t]``."""
    out = np.zeros((1, len(best), VOCAB), np.float32)
    for t, b in enumerate(best):
        out[0, t, b] = 5.0
    return out


def greedy(fake: Fake, **kwargs: Any) -> GreedySearch:
    return GreedySearch(fake.joiner, DecoderCache(fake.decoder, 2), **kwargs)


def beam(fake: Fake, **kwargs: Any) -> ModifiedBeamSearch:
    def joiner_frame(frame: FloatArray, dec: FloatArray) -> FloatArray:
        return fake.joiner(np.repeat(frame[None, :], len(dec), axis=0), dec)

    return ModifiedBeamSearch(
        fake.joiner, DecoderCache(fake.decoder, 2), beam=2, joiner_frame=joiner_frame, **kwargs
    )


@pytest.mark.parametrize("make", [greedy, beam])
def test_skipped_ids_emit_nothing(make: Callable[..., Any]) -> None:
    search = make(Fake(), skip_ids={0, 2})
    state = search.initial()
    search.decode(frames(2, 5, 0, 2, 7), [state])
    assert search.tokens(state)[:2] == ([5, 7], [1, 4])
    search = make(Fake(), skip_ids={0})
    state = search.initial()
    search.decode(frames(2, 5), [state])
    assert search.tokens(state)[0] == [2, 5]


@pytest.mark.parametrize("fill", [-1, 0])
def test_initial_context_fill(fill: int) -> None:
    fake = Fake()
    search = greedy(fake, skip_ids={0}, context_fill=fill)
    search.decode(frames(0), [search.initial()])
    assert fake.contexts == [(fill, 0)]


def forget(search: GreedySearch | ModifiedBeamSearch, fake: Fake) -> None:
    """Empty the decoder cache and the record, so every context shows up next."""
    search.decoder._cache.clear()
    fake.contexts.clear()


def test_greedy_reset_keeping_or_restarting_the_context() -> None:
    fake = Fake()
    keep = greedy(fake, skip_ids={0}, context_fill=0)
    hyp = keep.initial()
    keep.decode(frames(3, 4), [hyp])
    forget(keep, fake)
    keep.decode(frames(0, 5), [keep.reset(hyp)])
    assert fake.contexts == [(3, 4), (4, 5)]  # the context went on (sherpa-onnx)

    fake = Fake()
    restart = greedy(fake, skip_ids={0}, context_fill=0, keep_context=False)
    hyp = restart.initial()
    restart.decode(frames(3, 4), [hyp])
    hyp = restart.reset(hyp)
    assert restart.tokens(hyp)[0] == []
    forget(restart, fake)
    restart.decode(frames(0, 5, 6), [hyp])
    # the old context served until the first emission, then [0, 5] (sherpa-ncnn)
    assert fake.contexts == [(3, 4), (0, 5), (5, 6)]
    assert restart.tokens(hyp)[0] == [5, 6]


def test_beam_reset_restarting_the_context() -> None:
    fake = Fake()
    search = beam(fake, skip_ids={0}, context_fill=0, keep_context=False)
    state = search.initial()
    search.decode(frames(3, 4), [state])
    state = search.reset(state)
    (hyp,) = state.hyps.values()
    assert (hyp.ys, hyp.carried) == ([0, 0], (3, 4))
    forget(search, fake)
    search.decode(frames(5, 0), [state])
    # frame 0: the carried context; frame 1: the paths [0, 0, 5] and [0, 0]
    assert fake.contexts == [(3, 4), (0, 5), (0, 0)]
    assert search.tokens(state)[0] == [5]
