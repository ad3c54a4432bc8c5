"""SmoothQuant: move activation outliers into the weights before int8.

For a MatMul/Gemm ``y = x @ W`` with constant ``W`` (K input channels), a
per-channel factor ``s_k = max|x_k|^alpha / max|W_k|^(1 - alpha)`` gives
``y = (x / s) @ (diag(s) W)``: the same function in exact arithmetic, with
activation ranges flattened so per-tensor activation scales lose less.
Nodes reading the same ``x`` share one ``s``. ``1/s`` is folded into the
op producing ``x`` when that op is an affine op with constant parameters
(``Mul``, ``Mul``→``Add``, ``MatMul``/``Gemm`` with constant weights, each
optionally followed by a constant ``Add``) and nothing else reads ``x``;
otherwise a ``Mul`` by ``1/s`` is inserted in front of the group.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from asrserve.errors import ConfigError
from asrserve.quantize.calibration import Feed
from asrserve.quantize.onnx_modes import import_onnx

FloatArray = npt.NDArray[np.float32]
_MIN_SCALE, _MAX_SCALE = 1e-5, 1e5


@dataclass
class SmoothSummary:
    """What :func:`smooth_model` did."""

    groups: int = 0
    folded: list[str] = field(default_factory=list)
    """Producers that absorbed ``1/s``."""
    inserted: list[str] = field(default_factory=list)
    """Inputs that got a ``Mul`` by ``1/s``."""


class _Graph:
    """Constants, producers and consumers of an ONNX graph, and edits to it."""

    def __init__(self, model: Any) -> None:
        self.onnx = import_onnx()
        from onnx import numpy_helper

        self.nh = numpy_helper
        self.model = model
        self.g = model.graph
        self.consts: dict[str, FloatArray] = {
            t.name: numpy_helper.to_array(t) for t in self.g.initializer
        }
        for n in self.g.node:
            if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
                self.consts[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
        self.producer = {o: n for n in self.g.node for o in n.output}
        self.consumers: dict[str, list[Any]] = defaultdict(list)
        for n in self.g.node:
            for i in n.input:
                self.consumers[i].append(n)
        self.outputs = {o.name for o in self.g.output}
        self._fresh = 0

    def new_const(self, value: npt.NDArray[Any], hint: str) -> str:
        self._fresh += 1
        name = f"{hint}_smooth{self._fresh}"
        self.g.initializer.append(self.nh.from_array(np.ascontiguousarray(value), name))
        self.consts[name] = value
        return name

    def set_input(self, node: Any, index: int, value: npt.NDArray[Any]) -> None:
        """Give ``node`` its own copy of a changed constant input."""
        node.input[index] = self.new_const(
            value.astype(self.consts[node.input[index]].dtype), node.name or node.op_type
        )

    def attr(self, node: Any, name: str, default: int) -> int:
        for a in node.attribute:
            if a.name == name:
                return int(a.i)
        return default

    def only_read_by(self, tensor: str, nodes: Sequence[Any]) -> bool:
        ids = {id(n) for n in nodes}
        return tensor not in self.outputs and all(id(c) in ids for c in self.consumers[tensor])

    def prune(self) -> None:
        """Drop initializers nothing reads any more."""
        used = {i for n in self.g.node for i in n.input} | self.outputs
        keep = [t for t in self.g.initializer if t.name in used]
        del self.g.initializer[:]
        self.g.initializer.extend(keep)


def _weight_in_rows(graph: _Graph, node: Any) -> FloatArray:
    """The node's weight as (K input channels, N outputs)."""
    w: FloatArray = graph.consts[node.input[1]].astype(np.float32)
    if node.op_type == "Gemm" and graph.attr(node, "transB", 0):
        w = w.T
    return w


def _scale_weight_rows(graph: _Graph, node: Any, s: FloatArray) -> None:
    w = graph.consts[node.input[1]]
    if node.op_type == "Gemm" and graph.attr(node, "transB", 0):
        graph.set_input(node, 1, w * s[None, :])
    else:
        graph.set_input(node, 1, w * s[:, None])


def smoothable_nodes(model: Any, exclude: Sequence[str] = ()) -> list[Any]:
    """MatMul/Gemm nodes with a constant 2-D weight, read row-wise."""
    graph = _Graph(model)
    skip = set(exclude)
    found = []
    for n in graph.g.node:
        if n.name in skip or n.op_type not in ("MatMul", "Gemm") or len(n.input) < 2:
            continue
        w = graph.consts.get(n.input[1])
        if w is None or w.ndim != 2 or (n.op_type == "Gemm" and graph.attr(n, "transA", 0)):
            continue
        found.append(n)
    return found


def channel_absmax(
    model: Any, tensors: Sequence[str], feeds: Sequence[Feed]
) -> dict[str, FloatArray]:
    """Per-last-axis max |value| of ``tensors`` over ``feeds`` (fp32 run)."""
    import onnxruntime as ort

    onnx = import_onnx()
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    have = {o.name for o in probe.graph.output}
    for t in tensors:
        if t not in have:
            probe.graph.output.append(onnx.ValueInfoProto(name=t))
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(probe.SerializeToString(), so, providers=["CPUExecutionProvider"])
    names = {i.name for i in sess.get_inputs()}
    out: dict[str, FloatArray] = {}
    for feed in feeds:
        values = sess.run(list(tensors), {k: v for k, v in feed.items() if k in names})
        for t, v in zip(tensors, values, strict=True):
            m = np.abs(v.reshape(-1, v.shape[-1])).max(axis=0).astype(np.float32)
            out[t] = m if t not in out else np.maximum(out[t], m)
    return out


def smoothing_factors(x_max: FloatArray, w_max: FloatArray, alpha: float) -> FloatArray:
    """``s = x_max^alpha / w_max^(1-alpha)``; 1 where either side is zero."""
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"SmoothQuant alpha must be in [0, 1], got {alpha}")
    ok = (x_max > 0) & (w_max > 0)
    s = np.ones_like(x_max, dtype=np.float32)
    s[ok] = np.power(x_max[ok], alpha) / np.power(w_max[ok], 1.0 - alpha)
    return np.clip(s, _MIN_SCALE, _MAX_SCALE).astype(np.float32)


def _fold(graph: _Graph, tensor: str, inv: FloatArray) -> str | None:
    """Divide the producer of ``tensor`` by ``s`` (multiply by ``inv``) in place.

    Returns the producer's name when it could, ``None`` when it could not.
    """
    node = graph.producer.get(tensor)
    if node is None:
        return None

    def const_index(n: Any) -> int | None:
        idx = [i for i, name in enumerate(n.input) if name in graph.consts]
        return idx[0] if len(idx) == 1 and len(n.input) == 2 else None

    def scales_last_axis(c: npt.NDArray[Any]) -> bool:
        return c.ndim == 0 or c.shape[-1] in (1, inv.size)

    if node.op_type == "Mul":
        i = const_index(node)
        if i is None or not scales_last_axis(graph.consts[node.input[i]]):
            return None
        graph.set_input(node, i, graph.consts[node.input[i]] * inv)
        return str(node.name)
    if node.op_type == "Add":
        i = const_index(node)
        if i is None or not scales_last_axis(graph.consts[node.input[i]]):
            return None
        inner = node.input[1 - i]
        if not graph.only_read_by(inner, [node]) or _fold(graph, inner, inv) is None:
            return None
        graph.set_input(node, i, graph.consts[node.input[i]] * inv)
        return str(node.name)
    if node.op_type in ("MatMul", "Gemm") and node.input[1] in graph.consts:
        w = graph.consts[node.input[1]]
        if w.ndim != 2 or (node.op_type == "Gemm" and graph.attr(node, "transA", 0)):
            return None
        trans = node.op_type == "Gemm" and graph.attr(node, "transB", 0)
        graph.set_input(node, 1, w * (inv[:, None] if trans else inv[None, :]))
        if node.op_type == "Gemm" and len(node.input) > 2 and node.input[2] in graph.consts:
            graph.set_input(node, 2, graph.consts[node.input[2]] * inv)
        return str(node.name)
    return None


def _insert_mul(graph: _Graph, tensor: str, group: Sequence[Any], inv: FloatArray) -> None:
    scale = graph.new_const(inv, tensor.strip("/").replace("/", "_"))
    out = f"{tensor}_smoothed"
    mul = graph.onnx.helper.make_node("Mul", [tensor, scale], [out], name=f"{tensor}_smooth")
    position = min(list(graph.g.node).index(n) for n in group)
    graph.g.node.insert(position, mul)
    for n in group:
        for k, name in enumerate(n.input):
            if name == tensor:
                n.input[k] = out


def smooth_model(
    model: Any,
    feeds: Sequence[Feed],
    *,
    alpha: float = 0.5,
    exclude: Sequence[str] = (),
) -> tuple[Any, SmoothSummary]:
    """A smoothed copy of ``model`` (fp32, same function) and what was done."""
    if not feeds:
        raise ConfigError("SmoothQuant needs calibration feeds")
    onnx = import_onnx()
    smoothed = onnx.ModelProto()
    smoothed.CopyFrom(model)
    targets = smoothable_nodes(smoothed, exclude)
    groups: dict[str, list[Any]] = defaultdict(list)
    for n in targets:
        groups[n.input[0]].append(n)
    x_max = channel_absmax(smoothed, list(groups), feeds)
    graph = _Graph(smoothed)
    summary = SmoothSummary()
    for tensor, group in groups.items():
        w_max = np.max([np.abs(_weight_in_rows(graph, n)).max(axis=1) for n in group], axis=0)
        if w_max.shape != x_max[tensor].shape:
            continue  # weight rows do not line up with the activation's last axis
        s = smoothing_factors(x_max[tensor], w_max.astype(np.float32), alpha)
        for n in group:
            _scale_weight_rows(graph, n, s)
        inv = (1.0 / s).astype(np.float32)
        summary.groups += 1
        folded = _fold(graph, tensor, inv) if graph.only_read_by(tensor, group) else None
        if folded is not None:
            summary.folded.append(folded)
        else:
            _insert_mul(graph, tensor, group, inv)
            summary.inserted.append(tensor)
    graph.prune()
    return smoothed, summary
