"""Per-row dynamic int8 rewrites: a batch gives every row what it gets alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from asrserve.backends import row_quant
from asrserve.backends.onnxruntime import OrtSession
from asrserve.backends.row_quant import per_row_graph, per_row_model
from tests.conftest import BUILTIN

ROLES = ("decoder", "joiner", "encoder")


def _session(model: str | onnx.ModelProto) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    data = model if isinstance(model, str) else model.SerializeToString()
    return ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])


def _batch_axis(shape: list[object]) -> int:
    return next(i for i, d in enumerate(shape) if not isinstance(d, int))


def _feeds(sess: ort.InferenceSession, n: int) -> dict[str, npt.NDArray[np.generic]]:
    """Rows of very different magnitudes, so per-batch scales would differ."""
    rng = np.random.default_rng(7)
    feeds: dict[str, npt.NDArray[np.generic]] = {}
    for i in sess.get_inputs():
        shape = [d if isinstance(d, int) else n for d in i.shape]
        if i.type == "tensor(int64)":
            feeds[i.name] = rng.integers(0, 200, shape).astype(np.int64)
            continue
        gain = np.ones([1] * len(shape), np.float32).repeat(n, _batch_axis(i.shape))
        gain *= np.geomspace(0.05, 20, n, dtype=np.float32).reshape(gain.shape)
        feeds[i.name] = (rng.standard_normal(shape) * gain).astype(np.float32)
    return feeds


@pytest.mark.parametrize("role", ROLES)
def test_each_row_of_a_batch_is_what_it_gets_alone(role: str, tiny_lstm_dir: Path) -> None:
    path = str(tiny_lstm_dir / f"{role}.int8.onnx")
    original = _session(path)
    rewritten = per_row_model(onnx.load(path))
    assert rewritten is not None
    rows = _session(rewritten)
    n = 5
    feeds = _feeds(original, n)
    batched = rows.run(None, feeds)
    shared = original.run(None, feeds)
    out_axes = [_batch_axis(o.shape) for o in original.get_outputs()]
    moved = False
    for r in range(n):
        one = {
            i.name: np.take(feeds[i.name], [r], axis=_batch_axis(i.shape))
            for i in original.get_inputs()
        }
        for axis, want, got, mixed in zip(
            out_axes, original.run(None, one), batched, shared, strict=True
        ):
            np.testing.assert_array_equal(np.take(got, [r], axis=axis), want)
            moved |= not np.array_equal(np.take(mixed, [r], axis=axis), want)
    assert moved, "the original graph's rows should depend on their batch"


def _quantized_matmul(consumer: str) -> onnx.ModelProto:
    """x (N, 4) -> DynamicQuantizeLinear -> MatMulInteger with a (4, 3) weight,
    or the quantized values into ``consumer`` instead."""
    w = numpy_helper.from_array(np.arange(12, dtype=np.int8).reshape(4, 3), "w")
    wz = numpy_helper.from_array(np.array(0, np.int8), "wz")
    nodes = [helper.make_node("DynamicQuantizeLinear", ["x"], ["xq", "xs", "xz"])]
    if consumer == "MatMulInteger":
        nodes.append(helper.make_node("MatMulInteger", ["xq", "w", "xz", "wz"], ["y"]))
        out = helper.make_tensor_value_info("y", TensorProto.INT32, ["N", 3])
    else:
        nodes.append(helper.make_node("Cast", ["xq"], ["y"], to=TensorProto.FLOAT))
        out = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [out],
        [w, wz],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_graphs_it_cannot_rewrite_safely_are_left_alone(tiny_lstm_dir: Path) -> None:
    assert per_row_model(_quantized_matmul("MatMulInteger")) is not None
    # quantized values read by something other than MatMulInteger
    assert per_row_model(_quantized_matmul("Cast")) is None
    # no dynamic quantization at all
    assert per_row_model(onnx.load(str(tiny_lstm_dir / "joiner.onnx"))) is None


def test_rewrites_are_cached_by_content(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASRSERVE_CACHE_DIR", str(tmp_path))
    joiner = BUILTIN / "joiner.int8.onnx"
    first = per_row_graph(joiner)
    assert isinstance(first, Path)
    assert first.parent == tmp_path / "graphs"

    def no_rewrite(model: onnx.ModelProto) -> None:
        raise AssertionError("a cached graph is not rewritten again")

    monkeypatch.setattr(row_quant, "per_row_model", no_rewrite)
    assert per_row_graph(joiner) == first
    session = OrtSession(joiner, per_row=True)
    assert not session.batch_dependent
    assert session.path == str(joiner)

    # a graph that cannot be rewritten is remembered as such, and loads as it is
    odd = tmp_path / "odd.onnx"
    onnx.save(_quantized_matmul("Cast"), str(odd))
    monkeypatch.setattr(row_quant, "per_row_model", lambda model: None)
    assert per_row_graph(odd) is None
    assert len(list((tmp_path / "graphs").glob("*.none"))) == 1
    assert OrtSession(odd, per_row=True).batch_dependent


def test_an_unwritable_cache_still_gives_the_rewrite(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    monkeypatch.setenv("ASRSERVE_CACHE_DIR", str(blocked))
    got = per_row_graph(BUILTIN / "joiner.int8.onnx")
    assert isinstance(got, bytes)
    assert onnx.load_from_string(got).graph.node


def test_each_group_is_what_its_rows_get_as_one_batch(tiny_lstm_dir: Path) -> None:
    path = str(tiny_lstm_dir / "joiner.int8.onnx")
    original = _session(path)
    grouped = per_row_model(onnx.load(path), grouped=True)
    assert grouped is not None
    groups = _session(grouped)
    flat = _feeds(original, 12)
    feeds = {k: v.reshape(3, 4, -1) for k, v in flat.items()}  # 3 groups of 4 rows
    (got,) = groups.run(None, feeds)
    assert got.shape[:2] == (3, 4)
    for g in range(3):
        (want,) = original.run(None, {k: v[g] for k, v in feeds.items()})
        np.testing.assert_array_equal(got[g], want)
    (shared,) = original.run(None, flat)
    assert not np.array_equal(shared.reshape(got.shape), got)
    # the decoder's ops (a fixed-rank transpose) cannot take the group axis
    assert per_row_graph(tiny_lstm_dir / "decoder.int8.onnx", grouped=True) is None
