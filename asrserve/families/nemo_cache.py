"""What the two layouts of NeMo's cache-aware streaming encoder share
(:mod:`asrserve.families.nemo_sherpa`, :mod:`asrserve.families.nemo_streaming`):
the encoder's feeds and the check of its cache inputs against the stated shapes."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from asrserve.backends.base import TensorInfo
from asrserve.errors import ModelLoadError
from asrserve.families.base import FloatArray, State, StateSpec


def encoder_feeds(
    names: Sequence[str],
    features: FloatArray,
    window: int,
    length_dtype: type[np.generic],
    states: State,
) -> dict[str, npt.NDArray[np.generic]]:
    """Feeds by input name (audio_signal, length, then the caches, in role order):
    ``features`` (N, window, n_mels) band-major, every row's length the whole window."""
    n = features.shape[0]
    feeds: dict[str, npt.NDArray[np.generic]] = {
        names[0]: np.ascontiguousarray(features.transpose(0, 2, 1)),
        names[1]: np.full((n,), window, dtype=length_dtype),
    }
    feeds.update(zip(names[2:], states, strict=True))
    return feeds


def check_cache_dims(
    specs: Sequence[StateSpec], inputs: Sequence[TensorInfo], where: str, source: str
) -> None:
    """Refuse a cache input whose fixed dims past the batch axis differ from its
    spec's (the shape ``source`` states)."""
    for spec, info in zip(specs, inputs, strict=True):
        for axis, (dim, want) in enumerate(zip(info.shape, spec.shape, strict=False)):
            if axis and dim is not None and dim != want:
                raise ModelLoadError(
                    f"{where}: {info.name} dim {axis} is {dim}, {source} says {want}"
                )
