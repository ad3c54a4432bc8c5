"""sherpa-ncnn's custom layers, run inside real ncnn graphs, against loop-by-loop
numpy transcriptions of the C++ ``forward`` methods (bit-exact where the C++
rounding order is reproducible, which is everywhere here)."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

ncnn = pytest.importorskip("ncnn")

from asrserve.backends.ncnn_layers import sherpa_custom_layers  # noqa: E402

F32 = npt.NDArray[np.float32]


def _net(param: str, weights: bytes = b"") -> Any:
    net = ncnn.Net()
    net.opt.use_vulkan_compute = False
    net.opt.num_threads = 1
    layers = sherpa_custom_layers()
    used = {line.split()[0] for line in param.strip().split("\n")[2:]}
    for kind, create in layers.items():
        if kind in used:
            net.register_custom_layer(kind, create, lambda _layer: None)
    assert net.load_param_mem(param) == 0
    net.load_model_mem(weights)  # returns None in the Python binding
    return net


def _run(net: Any, feeds: dict[str, F32], outs: list[str]) -> list[F32]:
    ex = net.create_extractor()
    for k, v in feeds.items():
        ex.input(k, ncnn.Mat(np.ascontiguousarray(v)))
    got = []
    for name in outs:
        ret, mat = ex.extract(name)
        assert ret == 0, (name, ret)
        got.append(np.array(mat, copy=True))
    return got


def _ref_pooling(x: F32, n: float, avg: F32) -> tuple[F32, F32, F32]:
    """poolingmodulenoproj.cc, statement by statement (float32 with double reciprocals)."""
    h, w = x.shape
    nf = np.float32(n)
    out = np.empty_like(x)
    for c in range(w):
        out[0, c] = x[0, c] + nf * avg[c]
    for r in range(1, h):
        scale = np.float32(1.0 / float(nf + np.float32(r)))
        for c in range(w):
            out[r, c] = out[r - 1, c] + x[r, c]
            out[r - 1, c] = out[r - 1, c] * scale
    scale = np.float32(1.0 / float(nf + np.float32(h)))
    out[h - 1] = out[h - 1] * scale
    return out, np.array([nf + np.float32(h)], np.float32), out[h - 1 :].copy()


@pytest.mark.parametrize(("t", "n"), [(1, 0.0), (5, 0.0), (16, 37.0), (3, 1000.0)])
def test_pooling_module_no_proj(t: int, n: float) -> None:
    rng = np.random.default_rng(t)
    c = 24
    param = "\n".join(
        [
            "7767517",
            "4 6",
            "Input in0 0 1 in0",
            "Input in1 0 1 in1",
            "Input in2 0 1 in2",
            "PoolingModuleNoProj pool 3 3 in0 in1 in2 out0 out1 out2",
        ]
    )
    net = _net(param)
    x = rng.standard_normal((t, c)).astype(np.float32)
    avg = rng.standard_normal((1, c)).astype(np.float32)
    length = np.array([n], np.float32)
    out, new_len, new_avg = _run(
        net, {"in0": x, "in1": length, "in2": avg}, ["out0", "out1", "out2"]
    )
    want = _ref_pooling(x, n, avg[0])
    assert out.shape == (t, c)
    assert new_len.shape == (1,)
    assert new_avg.shape == (1, c)
    np.testing.assert_array_equal(out, want[0])
    np.testing.assert_array_equal(new_len, want[1])
    np.testing.assert_array_equal(new_avg, want[2])


def _ref_as_strided(x: F32, sizes: list[int], strides: list[int], offset: int) -> F32:
    out = np.empty(sizes, np.float32)
    for q in range(sizes[0]):
        flat = x[q].reshape(-1)
        for y in range(sizes[1]):
            for i in range(sizes[2]):
                out[q, y, i] = flat[offset + y * strides[1] + i * strides[2]]
    return out


def _array(pid: int, values: list[int]) -> str:
    return f"{-23300 - pid}={len(values)}," + ",".join(str(v) for v in values)


@pytest.mark.parametrize(
    ("shape", "sizes", "strides", "offset"),
    [
        # zipformer's rel_shift: (heads, T, 2T-1) → (heads, T, T), stride (.., 2T-2, 1)
        ((4, 6, 11), [4, 6, 6], [66, 10, 1], 5),
        ((2, 3, 8), [2, 3, 4], [24, 8, 2], 1),
        ((3, 5, 5), [3, 5, 5], [25, 5, 1], 0),
    ],
)
def test_tensor_as_strided(
    shape: tuple[int, int, int], sizes: list[int], strides: list[int], offset: int
) -> None:
    rng = np.random.default_rng(len(sizes) + offset)
    param = "\n".join(
        [
            "7767517",
            "2 2",
            "Input in0 0 1 in0",
            f"TensorAsStrided s 1 1 in0 out0 {_array(0, sizes)} {_array(1, strides)} 2={offset}",
        ]
    )
    x = rng.standard_normal(shape).astype(np.float32)
    (out,) = _run(_net(param), {"in0": x}, ["out0"])
    np.testing.assert_array_equal(out, _ref_as_strided(x, sizes, strides, offset))


def test_tensor_as_strided_refuses_crossing_channels() -> None:
    param = "\n".join(
        [
            "7767517",
            "2 2",
            "Input in0 0 1 in0",
            f"TensorAsStrided s 1 1 in0 out0 {_array(0, [2, 3, 3])} {_array(1, [7, 3, 1])} 2=0",
        ]
    )
    ex = _net(param).create_extractor()
    ex.input("in0", ncnn.Mat(np.zeros((2, 3, 3), np.float32)))
    ret, _ = ex.extract("out0")
    assert ret != 0


@pytest.mark.parametrize(("t", "upsample", "c"), [(1, 2, 8), (7, 4, 16)])
def test_simple_upsample(t: int, upsample: int, c: int) -> None:
    rng = np.random.default_rng(t * upsample)
    bias = rng.standard_normal((upsample, c)).astype(np.float32)
    param = "\n".join(
        [
            "7767517",
            "2 2",
            "Input in0 0 1 in0",
            f"SimpleUpsample up 1 1 in0 out0 0={upsample} 1={c} 2={upsample * c}",
        ]
    )
    # ncnn weight blobs: a 4-byte zero tag, then raw float32
    net = _net(param, b"\0\0\0\0" + bias.tobytes())
    x = rng.standard_normal((t, c)).astype(np.float32)
    (out,) = _run(net, {"in0": x}, ["out0"])
    want = np.empty((t * upsample, c), np.float32)
    for q in range(t):
        for y in range(upsample):
            want[q * upsample + y] = x[q] + bias[y]
    np.testing.assert_array_equal(out, want)


@pytest.mark.parametrize("shape", [(5,), (3, 4)])
def test_stack(shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(len(shape))
    param = "\n".join(
        [
            "7767517",
            "4 4",
            "Input in0 0 1 in0",
            "Input in1 0 1 in1",
            "Input in2 0 1 in2",
            "Stack st 3 1 in0 in1 in2 out0 0=0",
        ]
    )
    xs = [rng.standard_normal(shape).astype(np.float32) for _ in range(3)]
    (out,) = _run(_net(param), {f"in{i}": x for i, x in enumerate(xs)}, ["out0"])
    np.testing.assert_array_equal(out, np.stack(xs))


def test_stack_refuses_other_axes() -> None:
    param = "\n".join(
        [
            "7767517",
            "3 3",
            "Input in0 0 1 in0",
            "Input in1 0 1 in1",
            "Stack st 2 1 in0 in1 out0 0=1",
        ]
    )
    net = ncnn.Net()
    for kind, create in sherpa_custom_layers().items():
        if kind == "Stack":
            net.register_custom_layer(kind, create, lambda _layer: None)
    assert net.load_param_mem(param) != 0
