"""SmoothQuant's fp32 transform keeps the function; factors and folding."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import asrserve
from asrserve.errors import ConfigError
from asrserve.quantize.calibration import record_feeds
from asrserve.quantize.smoothquant import smooth_model, smoothing_factors


def _run(model: onnx.ModelProto, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feed)  # type: ignore[no-any-return]


@pytest.mark.parametrize("role", ["encoder", "decoder", "joiner"])
def test_trained_model_is_output_preserving(
    tiny_lstm_dir: Path, calib_wavs: list[Path], role: str
) -> None:
    rec = asrserve.load_model(tiny_lstm_dir, precision="fp32")
    feeds = record_feeds(rec, calib_wavs[:3], max_feeds=64).feeds[role]
    model = onnx.load(str(tiny_lstm_dir / f"{role}.onnx"))
    smoothed, summary = smooth_model(model, feeds, alpha=0.5)
    assert summary.groups >= 1
    for feed in feeds[::4]:
        for a, b in zip(_run(model, feed), _run(smoothed, feed), strict=True):
            scale = max(1.0, float(np.abs(a).max()))
            assert np.abs(a - b).max() <= 1e-5 * scale
    # the weights really moved: some MatMul/Gemm weight differs from the original
    before = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    after = {t.name: numpy_helper.to_array(t) for t in smoothed.graph.initializer}
    assert any(name not in before for name in after)
    assert after.keys() != before.keys()


def _affine_then_matmul() -> tuple[onnx.ModelProto, np.ndarray]:
    """x → Mul(gamma) → Add(beta) → MatMul(W) and MatMul(W2): a LayerNorm-style
    affine op whose output only the two MatMuls read (foldable)."""
    rng = np.random.default_rng(0)
    k, n = 8, 5
    gamma = rng.uniform(0.5, 2.0, k).astype(np.float32)
    beta = rng.normal(size=k).astype(np.float32)
    w = rng.normal(size=(k, n)).astype(np.float32)
    w2 = rng.normal(size=(k, n)).astype(np.float32)
    inits = [
        numpy_helper.from_array(gamma, "gamma"),
        numpy_helper.from_array(beta, "beta"),
        numpy_helper.from_array(w, "w"),
        numpy_helper.from_array(w2, "w2"),
    ]
    nodes = [
        helper.make_node("Mul", ["x", "gamma"], ["scaled"], name="mul"),
        helper.make_node("Add", ["scaled", "beta"], ["affine"], name="add"),
        helper.make_node("MatMul", ["affine", "w"], ["y"], name="mm"),
        helper.make_node("MatMul", ["affine", "w2"], ["y2"], name="mm2"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, k])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, n]),
            helper.make_tensor_value_info("y2", TensorProto.FLOAT, [None, n]),
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    x = rng.normal(size=(16, k)).astype(np.float32)
    x[:, 3] *= 40.0  # an outlier channel
    return model, x


def test_folds_into_a_constant_affine_producer() -> None:
    model, x = _affine_then_matmul()
    smoothed, summary = smooth_model(model, [{"x": x}], alpha=0.5)
    assert summary.groups == 1
    assert summary.folded == ["add"]
    assert summary.inserted == []
    assert [n.op_type for n in smoothed.graph.node] == ["Mul", "Add", "MatMul", "MatMul"]
    for a, b in zip(_run(model, {"x": x}), _run(smoothed, {"x": x}), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_inserts_a_mul_when_the_input_has_other_readers() -> None:
    model, x = _affine_then_matmul()
    model.graph.output.append(helper.make_tensor_value_info("affine", TensorProto.FLOAT, None))
    smoothed, summary = smooth_model(model, [{"x": x}])
    assert summary.folded == []
    assert summary.inserted == ["affine"]
    ref, got = _run(model, {"x": x}), _run(smoothed, {"x": x})
    for a, b in zip(ref, got, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_smoothing_factors() -> None:
    x = np.array([4.0, 0.0, 1.0], np.float32)
    w = np.array([1.0, 2.0, 0.0], np.float32)
    s = smoothing_factors(x, w, 0.5)
    np.testing.assert_allclose(s, [2.0, 1.0, 1.0])  # zero sides leave the channel alone
    np.testing.assert_allclose(smoothing_factors(x[:1], w[:1], 1.0), [4.0])
    with pytest.raises(ConfigError, match="alpha"):
        smoothing_factors(x, w, 1.5)
    with pytest.raises(ConfigError, match="calibration feeds"):
        smooth_model(_affine_then_matmul()[0], [])
