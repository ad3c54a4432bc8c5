"""Per-row dynamic quantization: int8 graphs whose rows do not depend on their batch.

onnxruntime's dynamic int8 export (``DynamicQuantizeLinear`` feeding
``MatMulInteger``) quantizes a whole activation tensor with one scale and
zero point, so a stream's output moves with whatever other streams share its
batch. :func:`per_row_model` rewrites each such pair so that the scale and
zero point are taken per item of the batch axis, with the same arithmetic
``DynamicQuantizeLinear`` uses on a batch of one:

    scale = (max(x_max, 0) - min(x_min, 0)) / 255      (1 where that range is 0)
    zero  = round_half_even(clip(0 - min(x_min, 0) / scale, 0, 255))
    xq    = QuantizeLinear(x, scale, zero)              (per item, axis = batch)

``MatMulInteger`` takes only a scalar zero point for its first input, so it
runs without one and the zero point comes off in int32, exactly:
``sum_k (xq - z)(w - wz) = sum_k xq (w - wz) - z * sum_k (w - wz)``.
Row ``i`` of a batch then equals the original graph run on row ``i`` alone.

The batch axis of each quantized tensor is found by running the graph on
batches of 2 and 3; a graph where any quantized tensor has no single such
axis, or where the quantized values feed anything but ``MatMulInteger`` with
a constant 2-D weight, is left alone (``None``).
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from asrserve.cache import cache_home, sha256_file

if TYPE_CHECKING:
    import onnx

log = logging.getLogger(__name__)

_QUANT = "DynamicQuantizeLinear"


def _batch_axes(model: onnx.ModelProto, names: list[str]) -> dict[str, tuple[int, int] | None]:
    """Where each tensor in ``names`` keeps its batch, as (axis, rank): run
    the graph with batches of 2 and 3 (zeros; ones for integer inputs, which
    are tokens or lengths) and find the one axis that is 2 and 3 while every
    other axis stays put (``None`` when there is no such axis, e.g. a batch
    folded into time by a reshape)."""
    import onnx
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    have = {o.name for o in probe.graph.output}
    probe.graph.output.extend(onnx.ValueInfoProto(name=n) for n in names if n not in have)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    sess = ort.InferenceSession(probe.SerializeToString(), so, providers=["CPUExecutionProvider"])
    shapes: list[dict[str, tuple[int, ...]]] = []
    for n in (2, 3):
        feeds = {}
        for i in sess.get_inputs():
            free = [k for k, d in enumerate(i.shape) if not isinstance(d, int)]
            dtype = _NUMPY_TYPES.get(i.type)
            if dtype is None or not free:
                return dict.fromkeys(names)
            # the first free axis is the batch; other free axes (time) get 1
            dims = [
                d if isinstance(d, int) else (n if k == free[0] else 1)
                for k, d in enumerate(i.shape)
            ]
            feeds[i.name] = (np.zeros if dtype is np.float32 else np.ones)(dims, dtype=dtype)
        out = sess.run(names, feeds)
        shapes.append({k: tuple(v.shape) for k, v in zip(names, out, strict=True)})
    axes: dict[str, tuple[int, int] | None] = {}
    for k in names:
        two, three = shapes[0][k], shapes[1][k]
        moved = [i for i, (a, b) in enumerate(zip(two, three, strict=False)) if a != b]
        ok = len(two) == len(three) and len(moved) == 1
        found = ok and (two[moved[0]], three[moved[0]]) == (2, 3)
        axes[k] = (moved[0], len(two)) if found else None
    return axes


_NUMPY_TYPES: dict[str, Any] = {
    "tensor(float)": np.float32,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
}


def _add_group_axis(graph: onnx.GraphProto) -> None:
    """Give every graph input and output a new leading axis ``G``."""
    import onnx

    for vi in [*graph.input, *graph.output]:
        dims = vi.type.tensor_type.shape.dim
        old = []
        for d in dims:
            kept = onnx.TensorShapeProto.Dimension()
            kept.CopyFrom(d)
            old.append(kept)
        del dims[:]
        dims.add().dim_param = "G"
        dims.extend(old)
    del graph.value_info[:]  # shapes inferred for the old ranks


def _column_sums(
    mm: onnx.NodeProto, xq: str, xz: str, inits: dict[str, onnx.TensorProto]
) -> npt.NDArray[np.int32] | None:
    """``sum_k (w[k] - wz)`` of a ``MatMulInteger`` that takes the quantized
    ``xq`` with zero point ``xz`` against a constant 2-D weight with a scalar
    zero point; ``None`` for any other node."""
    from onnx import numpy_helper

    if mm.op_type != "MatMulInteger" or len(mm.input) < 3 or list(mm.input[:3:2]) != [xq, xz]:
        return None
    if mm.input[1] not in inits:
        return None
    w = numpy_helper.to_array(inits[mm.input[1]]).astype(np.int64)
    wz = 0
    if len(mm.input) > 3 and mm.input[3]:
        if mm.input[3] not in inits:
            return None
        zero = numpy_helper.to_array(inits[mm.input[3]])
        if zero.size != 1:
            return None
        wz = int(zero.reshape(-1)[0])
    if w.ndim != 2:
        return None
    sums: npt.NDArray[np.int32] = (w - wz).sum(axis=0).astype(np.int32)
    return sums


def per_row_model(model: onnx.ModelProto, *, grouped: bool = False) -> onnx.ModelProto | None:
    """A copy of ``model`` with per-row dynamic quantization, or ``None`` when
    the graph has none to rewrite or cannot be rewritten safely.

    ``grouped``: every input and output gets a new leading axis, and the
    scales are taken per item of that axis: feeding (G, N, ...) then gives
    each group what the original gives its (N, ...) rows as one batch (a
    stream's beam paths, as a reference runtime batches them). The graph's
    ops must take the extra axis (elementwise ops and matrix products do),
    else the probe fails and there is no rewrite."""
    import onnx
    from onnx import helper, numpy_helper

    model_copy = onnx.ModelProto()
    model_copy.CopyFrom(model)
    model = model_copy
    g = model.graph
    if grouped:
        _add_group_axis(g)
    quant = [n for n in g.node if n.op_type == _QUANT and n.domain in ("", "ai.onnx")]
    if not quant:
        return None
    if any(n.op_type in ("If", "Loop", "Scan") for n in g.node):
        return None  # subgraphs could consume the quantized values unseen
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < 13:  # per-axis QuantizeLinear
        return None
    batch_axes = _batch_axes(model, [n.input[0] for n in quant])
    inits = {i.name: i for i in g.initializer}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in g.node:
        for name in n.input:
            consumers.setdefault(name, []).append(n)
    graph_outputs = {o.name for o in g.output}

    new_nodes: dict[int, list[onnx.NodeProto]] = {}  # id(DQL node) -> replacement
    after: dict[int, list[onnx.NodeProto]] = {}  # id(MatMulInteger) -> zero-point fix
    new_inits: list[onnx.TensorProto] = []
    for dq in quant:
        x, (xq, xs, xz) = dq.input[0], dq.output
        where = batch_axes[x]
        if where is None or where[0] == where[1] - 1 or {xq, xs, xz} & graph_outputs:
            return None
        axis, rank = where
        matmuls = consumers.get(xq, [])
        if not matmuls or consumers.get(xz, []) != matmuls:
            return None
        colsums = [c for mm in matmuls if (c := _column_sums(mm, xq, xz, inits)) is not None]
        if len(colsums) != len(matmuls):
            return None
        p = f"{xq}/per_row"

        def name(s: str, p: str = p) -> str:
            return f"{p}/{s}"

        axes = [i for i in range(rank) if i != axis]
        new_inits += [
            numpy_helper.from_array(np.array(0.0, np.float32), name("zero")),
            numpy_helper.from_array(np.array(1.0, np.float32), name("one")),
            numpy_helper.from_array(np.array(255.0, np.float32), name("qmax")),
            numpy_helper.from_array(np.array([-1], np.int64), name("flat")),
        ]
        if opset >= 18:
            new_inits.append(numpy_helper.from_array(np.array(axes, np.int64), name("axes")))
            reduce_min = helper.make_node("ReduceMin", [x, name("axes")], [name("min")], keepdims=1)
            reduce_max = helper.make_node("ReduceMax", [x, name("axes")], [name("max")], keepdims=1)
        else:
            reduce_min = helper.make_node("ReduceMin", [x], [name("min")], axes=axes, keepdims=1)
            reduce_max = helper.make_node("ReduceMax", [x], [name("max")], axes=axes, keepdims=1)
        nodes = [
            reduce_min,
            reduce_max,
            helper.make_node("Min", [name("min"), name("zero")], [name("lo")]),
            helper.make_node("Max", [name("max"), name("zero")], [name("hi")]),
            helper.make_node("Sub", [name("hi"), name("lo")], [name("range")]),
            helper.make_node("Div", [name("range"), name("qmax")], [name("step")]),
            helper.make_node("Equal", [name("hi"), name("lo")], [name("flat_range")]),
            helper.make_node("Where", [name("flat_range"), name("one"), name("step")], [xs]),
            helper.make_node("Div", [name("lo"), xs], [name("lo_steps")]),
            helper.make_node("Sub", [name("zero"), name("lo_steps")], [name("zp_f")]),
            helper.make_node("Clip", [name("zp_f"), name("zero"), name("qmax")], [name("zp_c")]),
            helper.make_node("Round", [name("zp_c")], [name("zp_r")]),
            helper.make_node("Cast", [name("zp_r")], [name("zp_u8")], to=onnx.TensorProto.UINT8),
            helper.make_node("Reshape", [xs, name("flat")], [name("scale_1d")]),
            helper.make_node("Reshape", [name("zp_u8"), name("flat")], [name("zp_1d")]),
            helper.make_node(
                "QuantizeLinear", [x, name("scale_1d"), name("zp_1d")], [xq], axis=axis
            ),
            helper.make_node("Cast", [name("zp_u8")], [name("zp_i32")], to=onnx.TensorProto.INT32),
        ]
        new_nodes[id(dq)] = nodes
        for j, (mm, colsum) in enumerate(zip(matmuls, colsums, strict=True)):
            cs, raw, fix = name(f"colsum{j}"), name(f"raw{j}"), name(f"fix{j}")
            new_inits.append(numpy_helper.from_array(colsum, cs))
            out = mm.output[0]
            mm.input[2] = ""
            mm.output[0] = raw
            after[id(mm)] = [
                helper.make_node("Mul", [name("zp_i32"), cs], [fix]),
                helper.make_node("Sub", [raw, fix], [out]),
            ]

    rewritten: list[onnx.NodeProto] = []
    for n in g.node:
        rewritten += new_nodes.get(id(n), [n])
        rewritten += after.get(id(n), [])
    del g.node[:]
    g.node.extend(rewritten)
    g.initializer.extend(new_inits)
    return model


#: Bump when the rewrite changes, so graphs cached by an older one are redone.
REWRITE_VERSION = 1
_MAX_REWRITE_BYTES = 1 << 30  # protobuf's 2 GiB limit, with room for the copy


def cache_dir() -> Path:
    """Where rewritten graphs are kept: ``$ASRSERVE_CACHE_DIR/graphs``, else
    ``$XDG_CACHE_HOME/asrserve/graphs`` (``~/.cache/asrserve/graphs``)."""
    own = os.environ.get("ASRSERVE_CACHE_DIR")
    return Path(own).expanduser() / "graphs" if own else cache_home() / "graphs"


def per_row_graph(path: Path, *, grouped: bool = False) -> Path | bytes | None:
    """The per-row (or ``grouped``) rewrite of the graph file ``path``: a cached file, or the
    serialized graph when the cache cannot be written; ``None`` when the graph
    cannot be rewritten or the ``onnx`` package is missing (then callers keep
    the original, batch-dependent graph).

    The first load of a graph pays for importing ``onnx`` and the rewrite;
    later loads find the result (or the note that there is none) by the
    graph's content hash."""
    if path.stat().st_size > _MAX_REWRITE_BYTES:
        return None
    key = f"{sha256_file(path)[:40]}-v{REWRITE_VERSION}{'-grouped' if grouped else ''}"
    folder = cache_dir()
    cached, none = folder / f"{key}.onnx", folder / f"{key}.none"
    if cached.is_file():
        return cached
    if none.is_file():
        return None
    try:
        import onnx
    except ImportError:
        log.info("%s: per-row quantization needs the onnx package; batches stay shared", path)
        return None
    try:
        rewritten = per_row_model(onnx.load(str(path)), grouped=grouped)
    except Exception as exc:  # a graph onnx or the probe cannot handle: keep the original
        log.info("%s: no per-row rewrite (%s: %s)", path, type(exc).__name__, exc)
        rewritten = None
    data = None if rewritten is None else rewritten.SerializeToString()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        target = none if data is None else cached
        with tempfile.NamedTemporaryFile(dir=folder, delete=False, suffix=".tmp") as tmp:
            try:
                tmp.write(data or b"")
            except OSError:
                os.unlink(tmp.name)
                raise
        os.replace(tmp.name, target)
    except OSError as exc:
        log.info("%s: cannot cache the per-row graph in %s (%s)", path, folder, exc)
        return data
    return None if data is None else cached
