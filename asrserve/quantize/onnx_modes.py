"""ONNX precision conversions: fp16, int8 dynamic, int8 static (QDQ).

Each function reads one fp32 graph and writes one converted graph with the
same input and output names, shapes and dtypes, so the runtime feeds it
exactly as before. onnx and onnxruntime's quantization tools do the
rewriting; this module chooses what to convert and how.
"""

from __future__ import annotations

import contextlib
import fnmatch
import io
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from asrserve.errors import ConfigError, ModelLoadError

if TYPE_CHECKING:  # calibration brings numpy, which the command's parser does not need
    from asrserve.quantize.calibration import Feed

MODES = ("fp16", "int8-dynamic", "int8-static", "int8-smoothquant")
"""The precisions ``asrserve quantize --to`` writes."""
QUANTIZABLE_OPS = ("MatMul", "Gemm", "Conv")
DEFAULT_OP_TYPES = ("MatMul", "Gemm")
CALIBRATION_METHODS = ("minmax", "percentile", "entropy")
_QUANTIZED_OPS = {"QuantizeLinear", "DynamicQuantizeLinear", "MatMulInteger", "QLinearMatMul"}


def import_onnx() -> Any:
    try:
        import onnx
    except ImportError:
        raise ConfigError(
            "quantization needs the 'onnx' package: pip install 'asrserve[quantize]'"
        ) from None
    return onnx


def load_fp32(path: Path) -> Any:
    """The graph at ``path``, refused by name if it is not an fp32 model."""
    onnx = import_onnx()
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # protobuf decode errors have several types
        raise ModelLoadError(f"{path}: not a readable ONNX model ({exc})") from exc
    ops = {n.op_type for n in model.graph.node}
    if ops & _QUANTIZED_OPS:
        raise ModelLoadError(
            f"{path}: already quantized ({', '.join(sorted(ops & _QUANTIZED_OPS))})"
        )
    fp16 = onnx.TensorProto.FLOAT16
    if any(t.data_type == fp16 for t in model.graph.initializer):
        raise ModelLoadError(f"{path}: already fp16; quantize the fp32 model")
    return model


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence onnxruntime's quantizer: it prints progress and logs advice on
    the root logger."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(level)


def check_op_types(op_types: Sequence[str]) -> list[str]:
    bad = [o for o in op_types if o not in QUANTIZABLE_OPS]
    if bad or not op_types:
        raise ConfigError(
            f"unsupported op types to quantize {bad or '(none)'}; choose from "
            f"{', '.join(QUANTIZABLE_OPS)}"
        )
    return list(op_types)


def _weighted_nodes(model: Any, op_types: Sequence[str]) -> list[Any]:
    """Nodes of ``op_types`` whose weight (input 1) is a stored constant."""
    consts = {t.name for t in model.graph.initializer}
    consts |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    return [
        n
        for n in model.graph.node
        if n.op_type in op_types and len(n.input) > 1 and n.input[1] in consts
    ]


def front_end_nodes(model: Any) -> list[str]:
    """The convolutional subsampling front-end: every Conv before the first
    MatMul/Gemm (in graph order) and that first MatMul/Gemm, its output
    projection. Empty when the graph does not start with convolutions."""
    convs: list[str] = []
    for n in model.graph.node:
        if n.op_type == "Conv":
            convs.append(n.name)
        elif n.op_type in ("MatMul", "Gemm"):
            return [*convs, n.name] if convs else []
    return []


def excluded_nodes(
    model: Any, patterns: Sequence[str], *, front_end: bool, keep_float: Sequence[str] = ()
) -> list[str]:
    """Node names matching any fnmatch ``patterns``, plus the front-end if asked,
    plus the nodes named in ``keep_float`` (exact names)."""
    names = [n.name for n in model.graph.node]
    chosen = [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in patterns)]
    if front_end:
        chosen += [n for n in front_end_nodes(model) if n not in chosen]
    present = set(names)
    chosen += [n for n in keep_float if n in present and n not in chosen]
    return chosen


def _require_targets(
    model: Any, path: Path, op_types: Sequence[str], exclude: Sequence[str]
) -> None:
    targets = [n.name for n in _weighted_nodes(model, op_types) if n.name not in set(exclude)]
    if not targets:
        raise ConfigError(
            f"{path}: no {'/'.join(op_types)} node with constant weights is left to quantize "
            f"({len(exclude)} excluded)"
        )


def to_fp16(src: Path, dst: Path, *, exclude: Sequence[str] = ()) -> list[str]:
    """Weights and arithmetic in fp16; inputs and outputs stay as they were
    (Cast nodes at the boundary). Nodes matching ``exclude`` stay fp32, as do
    op types onnxruntime's converter knows to lack fp16 kernels. Returns the
    excluded nodes."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    onnx = import_onnx()
    model = load_fp32(src)
    skip = excluded_nodes(model, exclude, front_end=False)
    converted = convert_float_to_float16(model, keep_io_types=True, node_block_list=skip or None)
    onnx.save(converted, str(dst))
    return skip


def int8_dynamic(
    src: Path | Any,
    dst: Path,
    *,
    op_types: Sequence[str] = DEFAULT_OP_TYPES,
    per_channel: bool = False,
    exclude: Sequence[str] = (),
    keep_float: Sequence[str] = (),
    name: str = "",
) -> list[str]:
    """int8 weights, activations quantized at run time (one scale per tensor
    and run). ``src``: a path or an already loaded fp32 model; ``exclude``:
    fnmatch patterns, ``keep_float``: exact node names. Returns excluded nodes."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = load_fp32(src) if isinstance(src, Path) else src
    ops = check_op_types(op_types)
    skip = excluded_nodes(model, exclude, front_end=False, keep_float=keep_float)
    _require_targets(model, Path(name or str(src)), ops, skip)
    with _quiet():
        quantize_dynamic(
            model,
            str(dst),
            op_types_to_quantize=ops,
            per_channel=per_channel,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=skip,
        )
    return skip


class _FeedReader:
    """onnxruntime's calibration data reader over recorded feeds (each read
    once; ``set_range`` serves onnxruntime's strided calibration)."""

    def __init__(self, feeds: Sequence[Feed], names: set[str], progress: Any = None) -> None:
        self._feeds = [{k: v for k, v in f.items() if k in names} for f in feeds]
        self._next, self._end = 0, len(self._feeds)
        self._progress = progress

    def __len__(self) -> int:
        return len(self._feeds)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._next, self._end = start_index, min(end_index, len(self._feeds))

    def get_next(self) -> Feed | None:
        if self._next >= self._end:
            return None
        item = self._feeds[self._next]
        self._next += 1
        if self._progress is not None:
            self._progress.update(1)
        return item

    def rewind(self) -> None:  # pragma: no cover - onnxruntime may call it
        raise ConfigError("calibration feeds can be read once")


def int8_static(
    src: Path | Any,
    dst: Path,
    feeds: Sequence[Feed],
    *,
    method: str = "minmax",
    op_types: Sequence[str] = DEFAULT_OP_TYPES,
    per_channel: bool = True,
    exclude: Sequence[str] = (),
    keep_float: Sequence[str] = (),
    exclude_front_end: bool = True,
    float_outputs: bool = False,
    progress: bool = False,
    name: str = "",
) -> list[str]:
    """QDQ int8: activation ranges from ``feeds`` (recorded while streaming),
    weights int8 (per output channel by default). ``src`` is a path or an
    already loaded fp32 model; ``exclude``: fnmatch patterns, ``keep_float``:
    exact node names; ``float_outputs``: the quantized ops' outputs stay float
    (only their inputs are quantized, as dynamic int8 does). Returns the nodes
    left in float."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if method not in CALIBRATION_METHODS:
        raise ConfigError(
            f"unknown calibration method {method!r}; "
            f"expected one of {', '.join(CALIBRATION_METHODS)}"
        )
    if not feeds:
        raise ConfigError(f"{name or src}: the calibration set is empty")
    model = load_fp32(src) if isinstance(src, Path) else src
    ops = check_op_types(op_types)
    skip = excluded_nodes(model, exclude, front_end=exclude_front_end, keep_float=keep_float)
    _require_targets(model, Path(name or str(src)), ops, skip)
    inputs = {i.name for i in model.graph.input}
    calib_method = {
        "minmax": CalibrationMethod.MinMax,
        "percentile": CalibrationMethod.Percentile,
        "entropy": CalibrationMethod.Entropy,
    }[method]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(feeds), desc=f"ranges {name}".strip(), unit="feed", leave=False)
    try:
        with _quiet():
            quantize_static(
                model,
                str(dst),
                _FeedReader(feeds, inputs, bar),
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=ops,
                per_channel=per_channel,
                # u8 activations x s8 weights: onnxruntime's fast CPU int8 kernels
                # (s8 x s8 with per-channel weights runs slower than fp32 on x86)
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                nodes_to_exclude=skip,
                calibrate_method=calib_method,
                extra_options={
                    "QDQOpTypePerChannelSupportToAxis": {"MatMul": 1},
                    # histograms feed by feed: bounded memory, and feeds of
                    # different shapes (Whisper's windows) are fine
                    **({"CalibStridedMinMax": 1} if method != "minmax" else {}),
                    **({"OpTypesToExcludeOutputQuantization": ops} if float_outputs else {}),
                },
            )
    finally:
        if bar is not None:
            bar.close()
    return skip
