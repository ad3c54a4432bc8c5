"""sherpa-ncnn's custom ncnn layers (those its Zipformer encoders use), in Python.

sherpa-ncnn registers four layer types on every encoder it loads; stock
ncnn knows none of them, so a Zipformer ``.param`` does not load without
them. Each class here computes what sherpa-ncnn's C++ layer computes, in the
same float32 operation order where rounding could differ:

- ``PoolingModuleNoProj`` (3 in, 3 out): ``x`` (T, C), ``cached_len`` (1,),
  ``cached_avg`` (1, C) → the running mean of the rows of ``x`` continuing
  ``cached_len`` earlier rows whose mean is ``cached_avg``; the new count
  ``cached_len + T``; the last running mean (1, C).
- ``TensorAsStrided`` (params 0 sizes, 1 strides, 2 storage offset):
  ``torch.as_strided`` on a 3-D blob, per channel (sizes[0] is the channel
  count and strides[0] one channel's ``h * w``; the only case it supports).
- ``SimpleUpsample`` (params 0 upsample, 1 num_channels, 2 bias size; a
  (upsample, num_channels) bias in the ``.bin``): ``x`` (T, C) → (T * upsample,
  C), each row repeated ``upsample`` times plus the bias row.
- ``Stack`` (param 0 axis, only 0): stacks 1-D or 2-D blobs on a new first axis.

Shapes are numpy's (ncnn's ``c, h, w``). On a bad shape or parameter a layer
returns ncnn's ``-100``, as the C++ versions do, and ncnn reports the failure.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from asrserve.backends.ncnn import import_ncnn

F32 = npt.NDArray[np.float32]
ERROR = -100
"""What sherpa-ncnn's layers return on unsupported input."""


def pooling_module_no_proj(x: F32, cached_len: float, cached_avg: F32) -> tuple[F32, float, F32]:
    """(T, C), count, (C,) → running means (T, C), new count, last mean (C,).

    Row ``r`` is ``(n * avg + x[0] + ... + x[r]) * float32(1 / (n + r + 1))``
    with the sum accumulated in float32 row by row and the reciprocal taken in
    double precision, as the C++ layer does."""
    n = np.float32(cached_len)
    sums = x.astype(np.float32, copy=True)
    sums[0] = sums[0] + n * cached_avg.astype(np.float32)
    np.cumsum(sums, axis=0, out=sums)
    counts = n + np.arange(1, x.shape[0] + 1, dtype=np.float32)  # float32 n + r
    scale = (1.0 / counts.astype(np.float64)).astype(np.float32)
    out = sums * scale[:, None]
    return out, float(n + np.float32(x.shape[0])), out[-1].copy()


def as_strided_3d(x: F32, sizes: Sequence[int], strides: Sequence[int], offset: int) -> F32:
    """``x`` (c, h, w) viewed per channel with ``sizes``/``strides`` (3 each,
    in elements) from ``offset``; raises ``ValueError`` where the C++ layer
    refuses or would read outside the channel."""
    if x.ndim != 3 or len(sizes) != 3 or len(strides) != 3:
        raise ValueError("TensorAsStrided supports 3-D blobs only")
    c, h, w = x.shape
    if sizes[0] != c or strides[0] != h * w:
        raise ValueError("TensorAsStrided: sizes[0] must be c and strides[0] h * w")
    rows = np.arange(sizes[1])[:, None] * strides[1]
    cols = np.arange(sizes[2])[None, :] * strides[2]
    idx = offset + rows + cols
    if idx.size and (idx.min() < 0 or idx.max() >= h * w):
        raise ValueError("TensorAsStrided: the view reaches outside its channel")
    return np.ascontiguousarray(x.reshape(c, h * w)[:, idx], dtype=np.float32)


def simple_upsample(x: F32, bias: F32) -> F32:
    """(T, C) and bias (U, C) → (T * U, C): row ``t * U + u`` is ``x[t] + bias[u]``."""
    if x.ndim != 2 or x.shape[1] != bias.shape[1]:
        raise ValueError("SimpleUpsample: input must be (T, num_channels)")
    out = x[:, None, :] + bias[None, :, :]
    return out.reshape(-1, x.shape[1]).astype(np.float32, copy=False)


def stack0(blobs: Sequence[F32]) -> F32:
    """1-D or 2-D blobs of one shape stacked on a new first axis."""
    if not blobs or blobs[0].ndim not in (1, 2):
        raise ValueError("Stack supports 1-D and 2-D blobs only")
    return np.stack(blobs, axis=0).astype(np.float32, copy=False)


def _ints(mat: Any) -> list[int]:
    return [int(v) for v in np.array(mat).view(np.int32).reshape(-1)]


def _set(top: Any, ncnn: Any, value: npt.NDArray[np.generic], opt: Any) -> None:
    top.clone_from(ncnn.Mat(np.ascontiguousarray(value, dtype=np.float32)), opt.blob_allocator)


def _layer_classes(ncnn: Any) -> dict[str, type]:
    class PoolingModuleNoProj(ncnn.Layer):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.one_blob_only = False
            self.support_inplace = False

        def forward(self, bottoms: Sequence[Any], tops: Sequence[Any], opt: Any) -> int:
            x = np.array(bottoms[0], dtype=np.float32)
            n = np.array(bottoms[1], dtype=np.float32).reshape(-1)
            avg = np.array(bottoms[2], dtype=np.float32).reshape(-1)
            if x.ndim != 2 or x.shape[0] < 1 or n.size < 1 or avg.size != x.shape[1]:
                return ERROR
            out, count, last = pooling_module_no_proj(x, float(n[0]), avg)
            _set(tops[0], ncnn, out, opt)
            new_len = np.zeros(n.size, np.float32)  # (cached_len.w,), count first
            new_len[0] = count
            _set(tops[1], ncnn, new_len, opt)
            _set(tops[2], ncnn, last.reshape(np.array(bottoms[2]).shape), opt)
            return 0

    class TensorAsStrided(ncnn.Layer):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.one_blob_only = True
            self.support_inplace = False
            self.sizes: list[int] = []
            self.strides: list[int] = []
            self.offset = 0

        def load_param(self, pd: Any) -> int:
            self.sizes = _ints(pd.get(0, ncnn.Mat()))
            self.strides = _ints(pd.get(1, ncnn.Mat()))
            self.offset = int(pd.get(2, 0))
            return 0 if len(self.sizes) == len(self.strides) else ERROR

        def forward(self, bottom: Any, top: Any, opt: Any) -> int:
            try:
                out = as_strided_3d(
                    np.array(bottom, dtype=np.float32), self.sizes, self.strides, self.offset
                )
            except ValueError:
                return ERROR
            _set(top, ncnn, out, opt)
            return 0

    class SimpleUpsample(ncnn.Layer):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.one_blob_only = True
            self.support_inplace = False
            self.upsample = 0
            self.num_channels = 0
            self.bias = np.zeros((0, 0), np.float32)

        def load_param(self, pd: Any) -> int:
            self.upsample = int(pd.get(0, 0))
            self.num_channels = int(pd.get(1, 0))
            size = int(pd.get(2, 0))
            return 0 if size == self.upsample * self.num_channels else ERROR

        def load_model(self, mb: Any) -> int:
            # = C++ load(w, h, 0); the binding's ModelBinFromDataReader has load(w, type) only
            bias = mb.load(self.num_channels * self.upsample, 0)
            if bias.empty():
                return ERROR
            self.bias = np.array(bias, dtype=np.float32).reshape(self.upsample, self.num_channels)
            return 0

        def forward(self, bottom: Any, top: Any, opt: Any) -> int:
            try:
                out = simple_upsample(np.array(bottom, dtype=np.float32), self.bias)
            except ValueError:
                return ERROR
            _set(top, ncnn, out, opt)
            return 0

    class Stack(ncnn.Layer):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.one_blob_only = False
            self.support_inplace = False

        def load_param(self, pd: Any) -> int:
            return 0 if int(pd.get(0, 0)) == 0 else ERROR

        def forward(self, bottoms: Sequence[Any], tops: Sequence[Any], opt: Any) -> int:
            try:
                out = stack0([np.array(b, dtype=np.float32) for b in bottoms])
            except ValueError:
                return ERROR
            _set(tops[0], ncnn, out, opt)
            return 0

    return {
        "PoolingModuleNoProj": PoolingModuleNoProj,
        "TensorAsStrided": TensorAsStrided,
        "SimpleUpsample": SimpleUpsample,
        "Stack": Stack,
    }


_CLASSES: dict[str, type] = {}
_KEEP: list[Any] = []
"""ncnn holds raw pointers to Python layers: keep them alive."""


def sherpa_custom_layers() -> dict[str, Callable[[], Any]]:
    """Creators by layer type, for :class:`~asrserve.backends.ncnn.NcnnSession`'s
    ``custom_layers`` (it registers only the types a graph uses)."""
    if not _CLASSES:
        _CLASSES.update(_layer_classes(import_ncnn()))

    def creator(cls: type) -> Callable[[], Any]:
        def create() -> Any:
            layer = cls()
            _KEEP.append(layer)
            return layer

        return create

    return {kind: creator(cls) for kind, cls in _CLASSES.items()}
