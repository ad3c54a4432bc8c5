"""A small ONNX graph builder over ``onnx.helper``: nodes with generated names,
numpy initializers, and the transformer pieces the converters share.

Everything here builds float32 graphs at one opset (:data:`OPSET`); ``onnx`` is
imported on first use (the ``quantize`` extra), never by the runtime.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from asrserve.errors import ConfigError

OPSET = 17
"""LayerNormalization needs 17; sherpa-onnx's Whisper exports use 17 too."""


def import_onnx() -> Any:
    try:
        import onnx
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ConfigError(
            "converting models needs the 'onnx' package: pip install 'asrserve[quantize]'"
        ) from exc
    return onnx


class Graph:
    """Nodes and initializers of one graph, added in order."""

    def __init__(self, prefix: str = "") -> None:
        self.onnx = import_onnx()
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self._count = 0
        self._prefix = prefix
        self._consts: dict[tuple[str, bytes, tuple[int, ...]], str] = {}

    def name(self, hint: str) -> str:
        self._count += 1
        return f"{self._prefix}{hint}_{self._count}"

    def op(self, op_type: str, *inputs: str, hint: str = "", **attrs: Any) -> str:
        """Add one node with one output; returns the output's name."""
        out = self.name(hint or op_type)
        self.nodes.append(
            self.onnx.helper.make_node(op_type, list(inputs), [out], name=out, **attrs)
        )
        return out

    def weight(self, name: str, value: npt.ArrayLike, dtype: npt.DTypeLike = np.float32) -> str:
        """An initializer named ``name`` (kept as given: weights keep readable names)."""
        arr = np.array(value, dtype=dtype, order="C")
        self.initializers.append(self.onnx.numpy_helper.from_array(arr, name))
        return name

    def const(self, value: npt.ArrayLike, dtype: npt.DTypeLike = np.int64) -> str:
        """A small constant initializer, shared between equal values."""
        arr = np.array(value, dtype=dtype, order="C")
        key = (arr.dtype.str, arr.tobytes(), arr.shape)
        if key not in self._consts:
            self._consts[key] = self.weight(self.name("const"), arr, dtype)
        return self._consts[key]

    # --- pieces -----------------------------------------------------------------------
    def linear(self, x: str, name: str, weight: npt.ArrayLike, bias: npt.ArrayLike | None) -> str:
        """``x @ weight.T + bias``; ``weight`` is (out, in) as PyTorch and CTranslate2
        store it, transposed once here."""
        w = self.weight(f"{name}.weight", np.asarray(weight, np.float32).T)
        y = self.op("MatMul", x, w, hint=f"{name}.matmul")
        if bias is None:
            return y
        return self.op("Add", y, self.weight(f"{name}.bias", bias), hint=f"{name}.add")

    def layer_norm(self, x: str, name: str, gamma: npt.ArrayLike, beta: npt.ArrayLike) -> str:
        return self.op(
            "LayerNormalization",
            x,
            self.weight(f"{name}.weight", gamma),
            self.weight(f"{name}.bias", beta),
            axis=-1,
            epsilon=1e-5,
            hint=name,
        )

    def gelu(self, x: str) -> str:
        """Exact GELU, ``x * 0.5 * (1 + erf(x / sqrt(2)))`` (onnxruntime fuses it)."""
        scaled = self.op("Div", x, self.const(math.sqrt(2.0), np.float32))
        erf = self.op("Erf", scaled)
        one = self.op("Add", erf, self.const(1.0, np.float32))
        return self.op("Mul", self.op("Mul", x, one), self.const(0.5, np.float32))

    def heads(self, x: str, n_head: int, d_head: int, perm: Sequence[int]) -> str:
        """(N, T, n_head * d_head) → (N, n_head, T, d_head) (``perm`` (0, 2, 1, 3)),
        or (N, n_head, d_head, T) (``perm`` (0, 2, 3, 1))."""
        split = self.op("Reshape", x, self.const([0, -1, n_head, d_head]))
        return self.op("Transpose", split, perm=list(perm))

    def merge_heads(self, x: str, d_model: int) -> str:
        """(N, n_head, T, d_head) → (N, T, d_model)."""
        t = self.op("Transpose", x, perm=[0, 2, 1, 3])
        return self.op("Reshape", t, self.const([0, -1, d_model]))

    def attention(self, q: str, k_t: str, v: str, mask: str | None, d_model: int) -> str:
        """Softmax attention of (N, h, Tq, dh) queries (already scaled) against
        (N, h, dh, Tk) keys and (N, h, Tk, dh) values; ``mask`` added to the
        scores (broadcast over (Tq, Tk))."""
        scores = self.op("MatMul", q, k_t)
        if mask is not None:
            scores = self.op("Add", scores, mask)
        probs = self.op("Softmax", scores, axis=-1)
        return self.merge_heads(self.op("MatMul", probs, v), d_model)

    def model(
        self,
        inputs: Sequence[Any],
        outputs: Sequence[Any],
        graph_name: str,
        metadata: dict[str, str] | None = None,
    ) -> Any:
        helper = self.onnx.helper
        graph = helper.make_graph(
            self.nodes, graph_name, list(inputs), list(outputs), self.initializers
        )
        model = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", OPSET)],
            producer_name="asrserve",
        )
        model.ir_version = 8  # onnxruntime >= 1.14 reads IR 8 at opset 17
        for key, value in (metadata or {}).items():
            prop = model.metadata_props.add()
            prop.key, prop.value = key, value
        return model


def tensor_info(name: str, elem: str, shape: Sequence[int | str | None]) -> Any:
    """A graph input/output: ``elem`` ``float`` or ``int64``; str dims are symbolic."""
    onnx = import_onnx()
    types = {"float": onnx.TensorProto.FLOAT, "int64": onnx.TensorProto.INT64}
    return onnx.helper.make_tensor_value_info(name, types[elem], list(shape))
