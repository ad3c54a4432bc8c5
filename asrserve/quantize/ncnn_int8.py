"""ncnn int8 post-training quantization of sherpa-ncnn encoders and joiners.

The result has the layout upstream's ``ncnn2int8`` writes, so both stock
ncnn and sherpa-ncnn load it (file names ``….ncnn.int8.param/.bin``, as
:func:`asrserve.families.files.pick_ncnn` expects):

- ``InnerProduct`` and ``Convolution`` are quantized statically: ``8=2`` on
  the param line; in the ``.bin`` the weights as an int8-tagged array, then
  the fp32 bias (if any), one fp32 weight scale per output channel
  (``127 / absmax(row)``; ``31 / absmax`` for 3x3 stride-1 convolutions,
  whose int8 Winograd kernel needs 6-bit weights, as ``ncnn2table`` does)
  and the fp32 scale of the bottom blob. Bottom-blob scales come from
  KL-divergence calibration on the feeds recorded while real audio was
  decoded (:mod:`asrserve.quantize.calibration`): histograms of |x| over the
  calibration feeds (2048 bins up to the blob's absmax, zeros skipped), the
  clipping threshold whose 128-level quantized distribution is closest to
  the clipped one, ``scale = 127 / threshold`` (ncnn2table's method).
- ``LSTM`` and ``Gemm`` (constant weights ``B``) are quantized dynamically,
  as ``ncnn2int8`` does: int8 weights with per-gate-row scales (LSTM,
  ``8=2``) or one per-tensor scale (Gemm, ``18=2``); ncnn quantizes their
  inputs at run time, so they need no calibration.
- Everything else stays float, its weight bytes copied unchanged (fp16-,
  fp32- or otherwise tagged): ``Convolution1D``/``ConvolutionDepthWise1D``
  (ncnn has no int8 kernels for them), ``ConvolutionDepthWise`` (int8 exists
  but is not verified against both runtimes here, and depthwise layers hold
  few weights), ``Embed``, ``GRU``/``RNN``, ``MultiHeadAttention`` and norms,
  plus layers matched by ``exclude`` and layers whose bottom blob was zero on
  every calibration feed.

The ``.bin`` is read layer by layer exactly as ncnn's ``load_model`` reads
it (:func:`weight_arrays` lists each layer type's arrays), so any storage the
export used is carried through. The decoder, ``tokens.txt`` and ``bpe.model``
are copied unchanged (upstream never quantizes the decoder).
"""

from __future__ import annotations

import fnmatch
import re
import shutil
import struct
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from asrserve.backends.ncnn import (
    META_LAYER,
    NcnnSession,
    ParamLayer,
    metadata_of,
    parse_layer_params,
    parse_param_layers,
    read_param_lines,
)
from asrserve.errors import ConfigError, ModelLoadError
from asrserve.quantize.calibration import CalibrationSet, Feed

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]

TAG_FP32 = 0x00000000
TAG_FP16 = 0x01306B47
TAG_INT8 = 0x000D4B38
TAG_FP32_SCALED = 0x0002C056
"""The array tags ncnn's ``ModelBin::load(w, 0)`` knows; any other tag whose
bytes sum to non-zero starts a 256-entry fp32 codebook followed by one byte
index per value."""

HISTOGRAM_BINS = 2048
TARGET_BINS = 128
KL_EPS = 1e-4
INT8_MAX = 127
WINOGRAD_INT8_MAX = 31

STATIC_KINDS = ("InnerProduct", "Convolution")
DYNAMIC_KINDS = ("LSTM", "Gemm")
QUANTIZED_ROLES = ("encoder", "joiner")

_FLOAT_REASONS = {
    "Convolution1D": "ncnn has no int8 Convolution1D",
    "ConvolutionDepthWise1D": "ncnn has no int8 ConvolutionDepthWise1D",
    "ConvolutionDepthWise": "depthwise int8 not verified on both runtimes (few weights)",
    "Embed": "an embedding table: kept float",
    "MemoryData": "constant data, not a weight matrix",
    "LayerNorm": "normalization parameters stay float",
    "GroupNorm": "normalization parameters stay float",
    "InstanceNorm": "normalization parameters stay float",
    "RMSNorm": "normalization parameters stay float",
    "BatchNorm": "normalization parameters stay float",
}


class WeightArray(NamedTuple):
    """One array a layer's ``load_model`` reads: ``tagged`` = ``load(size, 0)``
    (tag + data, padded to 4 bytes), else ``load(size, 1)`` (raw fp32)."""

    name: str
    size: int
    tagged: bool


class StoredArray(NamedTuple):
    """A weight array as found in a ``.bin``: its spec, tag and exact bytes."""

    spec: WeightArray
    tag: int | None
    raw: bytes


# ---------------------------------------------------------------------------
# .param / .bin structure


def _int(params: Mapping[str, str], key: int, default: int) -> int:
    value = params.get(str(key))
    if value is None:
        return default
    return int(float(value))


def weight_arrays(layer: ParamLayer) -> list[WeightArray]:
    """The arrays ``layer``'s ncnn ``load_model`` reads from the ``.bin``, in order.

    Raises ``KeyError`` for a layer type whose weights are unknown here."""
    p = parse_layer_params(layer.params)
    kind = layer.kind

    def get(key: int, default: int = 0) -> int:
        return _int(p, key, default)

    if kind in _NO_WEIGHTS:
        return []
    if kind in ("Convolution", "ConvolutionDepthWise"):
        if get(19):
            return []
        out, i8 = get(0), get(8)
        arrays = [WeightArray("weight", get(6), True)]
        if get(5):
            arrays.append(WeightArray("bias", out, False))
        if kind == "Convolution" and i8:
            arrays += [
                WeightArray("weight_scales", out, False),
                WeightArray("bottom_scale", 1, False),
            ]
        if kind == "ConvolutionDepthWise" and i8 in (1, 101):
            arrays += [
                WeightArray("weight_scales", get(7, 1), False),
                WeightArray("bottom_scale", 1, False),
            ]
        if kind == "ConvolutionDepthWise" and i8 in (2, 102):
            arrays += [
                WeightArray("weight_scales", 1, False),
                WeightArray("bottom_scale", 1, False),
            ]
        if i8 > 100:
            arrays.append(WeightArray("top_scale", 1, False))
        return arrays
    if kind in _CONV_LIKE:
        if get(28 if kind.startswith("Deconvolution") else 19):
            return []
        arrays = [WeightArray("weight", get(6), True)]
        if get(5):
            arrays.append(WeightArray("bias", get(0), False))
        return arrays
    if kind == "InnerProduct":
        arrays = [WeightArray("weight", get(2), True)]
        if get(1):
            arrays.append(WeightArray("bias", get(0), False))
        if get(8):
            arrays += [
                WeightArray("weight_scales", get(0), False),
                WeightArray("bottom_scale", 1, False),
            ]
        return arrays
    if kind == "Embed":
        arrays = [WeightArray("weight", get(3), True)]
        if get(2):
            arrays.append(WeightArray("bias", get(0), False))
        if get(18):
            arrays.append(WeightArray("weight_scale", 1, False))
        return arrays
    if kind == "Gemm":
        return _gemm_arrays(get)
    if kind in ("LSTM", "GRU", "RNN"):
        return _rnn_arrays(kind, get)
    if kind in ("LayerNorm", "GroupNorm", "InstanceNorm", "RMSNorm"):
        size_key, affine_key = {
            "LayerNorm": (0, 2),
            "GroupNorm": (1, 3),
            "InstanceNorm": (0, 2),
            "RMSNorm": (0, 2),
        }[kind]
        if not get(affine_key, 1):
            return []
        arrays = [WeightArray("gamma", get(size_key), False)]
        if kind != "RMSNorm":
            arrays.append(WeightArray("beta", get(size_key), False))
        return arrays
    if kind == "BatchNorm":
        return [WeightArray(n, get(0), False) for n in ("slope", "mean", "var", "bias")]
    if kind == "Bias":
        return [WeightArray("bias", get(0), False)]
    if kind == "Scale":
        if get(0) == -233:
            return []
        arrays = [WeightArray("scale", get(0), False)]
        if get(1):
            arrays.append(WeightArray("bias", get(0), False))
        return arrays
    if kind == "PReLU":
        return [WeightArray("slope", get(0), False)]
    if kind == "Normalize":
        return [WeightArray("scale", get(3), False)]
    if kind == "Padding":
        return [WeightArray("pad", get(6), False)] if get(6) else []
    if kind == "MemoryData":
        shape = [get(0), get(1), get(11), get(2)]
        count = int(np.prod([s for s in shape if s])) if any(shape) else 0
        return [WeightArray("data", count, get(21, 1) == 0)] if count else []
    if kind == "MultiHeadAttention":
        embed, size, kdim = get(0), get(2), get(3, get(0))
        vdim = get(4, embed)
        qdim = size // embed if embed else 0
        arrays = []
        for name, n_in, n_out in (("q", qdim, embed), ("k", kdim, embed), ("v", vdim, embed)):
            arrays += [WeightArray(f"{name}_weight", n_in * n_out, True)]
            arrays += [WeightArray(f"{name}_bias", n_out, False)]
        arrays += [
            WeightArray("out_weight", qdim * embed, True),
            WeightArray("out_bias", qdim, False),
        ]
        if get(18):
            arrays += [WeightArray(f"{n}_scales", embed, False) for n in "qkv"]
            arrays.append(WeightArray("out_scale", 1, False))
        return arrays
    if kind == "SimpleUpsample":  # sherpa-ncnn: load(num_channels, upsample, 0)
        return [WeightArray("bias", get(0) * get(1), True)]
    raise KeyError(kind)


def _gemm_arrays(get: Callable[..., int]) -> list[WeightArray]:
    m, n, k = get(7), get(8), get(9)
    arrays = []
    if get(4):
        arrays.append(WeightArray("A", m * k, True))
    if get(5):
        arrays.append(WeightArray("B", n * k, True))
    broadcast = get(10)
    if get(6) and broadcast != -1:
        count = {0: 1, 1: m, 2: m, 3: m * n, 4: n}.get(broadcast)
        if count is None:
            raise KeyError(f"Gemm broadcast type {broadcast}")
        arrays.append(WeightArray("C", count, True))
    if get(18):
        if get(4):
            arrays.append(WeightArray("A_scales", m, False))
        if get(5):
            arrays.append(WeightArray("B_scale", 1, False))
    return arrays


def _rnn_arrays(kind: str, get: Callable[..., int]) -> list[WeightArray]:
    out, size, dirs = get(0), get(1), 2 if get(2) == 2 else 1
    hidden = get(3, out) if kind == "LSTM" else out
    gates = {"LSTM": 4, "GRU": 3, "RNN": 1}[kind]
    bias_rows = {"LSTM": 4, "GRU": 4, "RNN": 1}[kind]
    inputs = size // dirs // hidden // gates if hidden else 0
    arrays = [
        WeightArray("weight_xc", inputs * hidden * gates * dirs, True),
        WeightArray("bias_c", hidden * bias_rows * dirs, True),
        WeightArray("weight_hc", out * hidden * gates * dirs, True),
    ]
    if kind == "LSTM" and out != hidden:
        arrays.append(WeightArray("weight_hr", hidden * out * dirs, True))
    if get(8):
        arrays += [
            WeightArray("weight_xc_scales", hidden * gates * dirs, False),
            WeightArray("weight_hc_scales", hidden * gates * dirs, False),
        ]
    return arrays


_CONV_LIKE = frozenset(
    {
        "Convolution1D",
        "ConvolutionDepthWise1D",
        "Convolution3D",
        "ConvolutionDepthWise3D",
        "Deconvolution",
        "Deconvolution1D",
        "Deconvolution3D",
        "DeconvolutionDepthWise",
        "DeconvolutionDepthWise1D",
        "DeconvolutionDepthWise3D",
    }
)

_WEIGHTLESS = """AbsVal ArgMax BinaryOp BNLL Cast CELU Clip Concat CopyTo Crop CumulativeSum
    DeepCopy
    DetectionOutput Diag Dropout Einsum Eltwise ELU Erf Exp ExpandDims Flatten Fold GELU GLU
    GridSample HardSigmoid HardSwish Input Interp InverseSpectrogram Log LRN MatMul Mish MVN Noop
    Packing Permute PixelShuffle Pooling Pooling1D Pooling3D Power PriorBox Proposal PSROIPooling
    Reduction ReLU Reorg Reshape ROIAlign ROIPooling SELU Shrink ShuffleChannel Sigmoid Slice
    Softmax Softplus Spectrogram Split SPP Squeeze StatisticsPooling Swish TanH Threshold Tile
    UnaryOp Unfold YoloDetectionOutput Yolov3DetectionOutput SDPA
    PoolingModuleNoProj TensorAsStrided Stack"""
_NO_WEIGHTS = frozenset([*_WEIGHTLESS.split(), META_LAYER])
"""ncnn layer types that read nothing from the ``.bin`` (plus sherpa-ncnn's
weightless custom layers)."""


def _align4(n: int) -> int:
    return (n + 3) // 4 * 4


def _tagged_size(tag: int, count: int) -> int:
    """Bytes after the 4-byte tag of a ``load(count, 0)`` array with ``tag``."""
    if tag == TAG_FP16:
        return _align4(2 * count)
    if tag == TAG_INT8:
        return _align4(count)
    if tag in (TAG_FP32_SCALED, TAG_FP32):
        return 4 * count
    return 256 * 4 + _align4(count)  # codebook + one byte index per value


def read_bin(bin_path: Path, layers: Sequence[ParamLayer]) -> dict[str, list[StoredArray]]:
    """Every layer's weight arrays (by layer name), read sequentially as ncnn
    does; the file must be consumed exactly."""
    data = bin_path.read_bytes()
    pos = 0
    found: dict[str, list[StoredArray]] = {}
    for layer in layers:
        try:
            specs = weight_arrays(layer)
        except (KeyError, ValueError) as exc:
            raise ModelLoadError(
                f"{bin_path}: cannot read the weights of layer {layer.name} "
                f"(type {layer.kind}: {exc})"
            ) from None
        stored = []
        for spec in specs:
            start = pos
            tag: int | None = None
            if spec.tagged:
                if pos + 4 > len(data):
                    break
                tag = struct.unpack_from("<I", data, pos)[0]
                pos += 4 + _tagged_size(tag, spec.size)
            else:
                pos += 4 * spec.size
            if pos > len(data):
                break
            stored.append(StoredArray(spec, tag, data[start:pos]))
        if len(stored) != len(specs):
            raise ModelLoadError(
                f"{bin_path}: ends inside the weights of layer {layer.name} ({layer.kind}); "
                "the .bin does not belong to this .param"
            )
        if stored:
            found[layer.name] = stored
    if pos != len(data):
        raise ModelLoadError(
            f"{bin_path}: {len(data) - pos} bytes left after the last layer's weights; "
            "the .bin does not belong to this .param"
        )
    return found


def array_values(array: StoredArray) -> F32:
    """The float values of a stored array (int8 arrays as their raw integers)."""
    n = array.spec.size
    if array.tag is None:
        return np.frombuffer(array.raw, "<f4", n).astype(np.float32)
    body = array.raw[4:]
    if array.tag == TAG_FP16:
        return np.frombuffer(body, "<f2", n).astype(np.float32)
    if array.tag == TAG_INT8:
        return np.frombuffer(body, np.int8, n).astype(np.float32)
    if len(body) == 4 * n:
        return np.frombuffer(body, "<f4", n).astype(np.float32)
    table = np.frombuffer(body, "<f4", 256)
    return table[np.frombuffer(body, np.uint8, n, offset=1024)].astype(np.float32)


def _tagged_int8(values: npt.NDArray[np.int8]) -> bytes:
    raw = values.astype(np.int8).tobytes()
    return struct.pack("<I", TAG_INT8) + raw + b"\0" * (_align4(len(raw)) - len(raw))


def _raw_f32(values: npt.ArrayLike) -> bytes:
    return np.ascontiguousarray(values, dtype="<f4").tobytes()


def quantize_rows(
    weights: F32, rows: int, qmax: int = INT8_MAX
) -> tuple[npt.NDArray[np.int8], F32]:
    """Per-row symmetric int8: scales ``qmax / absmax(row)`` (1 for an all-zero
    row), values ``round(w * scale)`` half away from zero, clamped to ±127."""
    w = weights.reshape(rows, -1).astype(np.float32)
    absmax = np.abs(w).max(axis=1) if w.size else np.zeros(rows, np.float32)
    safe = np.where(absmax > 0, absmax, np.float32(1))
    scales = np.where(absmax > 0, np.float32(qmax) / safe, np.float32(1)).astype(np.float32)
    q = _round_int8(w * scales[:, None])
    return q.reshape(-1), scales


def _round_int8(v: F32) -> npt.NDArray[np.int8]:
    r = np.sign(v) * np.floor(np.abs(v) + np.float32(0.5))
    out: npt.NDArray[np.int8] = np.clip(r, -INT8_MAX, INT8_MAX).astype(np.int8)
    return out


# ---------------------------------------------------------------------------
# KL calibration


def kl_threshold(
    histogram: npt.ArrayLike,
    absmax: float,
    *,
    target_bins: int = TARGET_BINS,
    block: int = 64,
) -> float:
    """The clipping threshold of |x| ncnn2table's KL method picks.

    ``histogram`` counts |x| in ``len(histogram)`` equal bins over
    ``[0, absmax]``. For every candidate cut ``t`` (in bins, ``target_bins`` ..
    n-1) the histogram clipped at ``t`` (the tail folded into its last bin) is
    compared with its ``target_bins``-level version (mean density per level,
    spread back over the bins); the ``t`` of least KL divergence gives the
    threshold ``(t + 0.5) * absmax / n``."""
    h = np.asarray(histogram, dtype=np.float64)
    n = h.size
    total = h.sum()
    if absmax <= 0 or total <= 0 or n <= target_bins:
        return float(absmax)
    h = h / total
    cum = np.concatenate([[0.0], np.cumsum(h)])
    hpad = np.append(h, 0.0)
    tail = 1.0 - cum  # tail[t]: the mass at and beyond bin t
    best_t, best_kl = target_bins, np.inf
    levels = np.arange(target_bins + 1, dtype=np.float64)
    for t0 in range(target_bins, n, block):
        ts = np.arange(t0, min(t0 + block, n))
        top = int(ts[-1])  # columns past the largest cut are all outside
        rows = np.arange(ts.size)
        width = ts / target_bins  # bins per level
        # mass of the (unclipped) histogram in each level's span, as a density
        edges = levels[None, :] * width[:, None]
        lo = np.floor(edges).astype(np.int64)
        mass = cum[lo] + (edges - lo) * hpad[lo]
        density = np.diff(mass, axis=1) / width[:, None]
        # the levels spread back onto bins: the integral of the step function
        xs = np.arange(top + 1)
        level = np.minimum((target_bins * xs[None, :]) // ts[:, None], target_bins)
        dpad = np.concatenate([density, np.zeros((ts.size, 1))], axis=1)
        dcum = np.concatenate([np.zeros((ts.size, 1)), np.cumsum(density, axis=1)], axis=1)
        integral = width[:, None] * np.take_along_axis(dcum, level, axis=1) + (
            xs[None, :] - level * width[:, None]
        ) * np.take_along_axis(dpad, level, axis=1)
        expand = KL_EPS + np.diff(integral, axis=1)
        inside = xs[None, :-1] < ts[:, None]
        p = KL_EPS + np.where(inside, h[None, :top], 0.0)
        p[rows, ts - 1] += tail[ts]
        kl = np.where(inside, p * np.log(p / expand), 0.0).sum(axis=1)
        i = int(np.argmin(kl))
        if kl[i] < best_kl:
            best_kl, best_t = float(kl[i]), int(ts[i])
    return float((best_t + 0.5) * absmax / n)


@dataclass
class _BlobStats:
    absmax: float = 0.0
    histogram: npt.NDArray[np.int64] = field(
        default_factory=lambda: np.zeros(HISTOGRAM_BINS, np.int64)
    )

    def add(self, values: F32) -> None:
        a = np.abs(values[values != 0])
        if a.size == 0 or self.absmax <= 0:
            return
        idx = np.minimum(
            (a * np.float32(HISTOGRAM_BINS / self.absmax)).astype(np.int64), HISTOGRAM_BINS - 1
        )
        self.histogram += np.bincount(idx, minlength=HISTOGRAM_BINS)


CACHE_BYTES = 256 << 20
"""Activations kept from the absmax pass (else the nets run twice)."""


def blob_scales(
    session: NcnnSession,
    blobs: Sequence[str],
    feeds: Sequence[Feed],
    progress: Callable[[Sequence[Feed], str], Iterator[Feed]] | None = None,
) -> dict[str, float]:
    """KL scale ``127 / threshold`` of each blob over ``feeds`` (0 for a blob
    that was zero on every feed). ``session`` must compute in fp32."""
    names = list(dict.fromkeys(blobs))
    stats = {b: _BlobStats() for b in names}
    cached: list[list[F32]] = []
    size = 0
    walk = progress or (lambda items, _what: iter(items))
    for feed in walk(feeds, "absmax"):
        outs = session.run(feed, names)
        for b, v in zip(names, outs, strict=True):
            if v.size:
                stats[b].absmax = max(stats[b].absmax, float(np.abs(v).max()))
        size += sum(v.nbytes for v in outs)
        if size <= CACHE_BYTES:
            cached.append(outs)
    if size > CACHE_BYTES:
        cached = []
    source = cached or (session.run(f, names) for f in walk(feeds, "histograms"))
    for outs in source:
        for b, v in zip(names, outs, strict=True):
            stats[b].add(v)
    scales: dict[str, float] = {}
    seen: dict[tuple[float, bytes], float] = {}  # Split copies share their statistics
    for b, st in stats.items():
        if st.absmax <= 0 or not st.histogram.any():
            scales[b] = 0.0
            continue
        key = (st.absmax, st.histogram.tobytes())
        if key not in seen:
            seen[key] = INT8_MAX / kl_threshold(st.histogram, st.absmax)
        scales[b] = seen[key]
    return scales


# ---------------------------------------------------------------------------
# writing


@dataclass
class NetInt8Summary:
    """What happened to one net."""

    role: str
    param: Path
    bin: Path
    quantized: dict[str, str] = field(default_factory=dict)
    """Layer name → how (``static`` with the bottom scale, or ``dynamic``)."""
    kept_float: dict[str, str] = field(default_factory=dict)
    """Weight-bearing layer name → why it stayed float."""
    bottom_scales: dict[str, float] = field(default_factory=dict)
    fp_bytes: int = 0
    int8_bytes: int = 0


@dataclass
class NcnnInt8Summary:
    """The result of :func:`quantize_ncnn_int8`."""

    out_dir: Path
    nets: dict[str, NetInt8Summary]
    calibration_feeds: dict[str, int]
    calibration_seconds: float
    """Wall time spent computing activation scales."""
    copied: list[Path]

    @property
    def fp_bytes(self) -> int:
        return sum(n.fp_bytes for n in self.nets.values())

    @property
    def int8_bytes(self) -> int:
        return sum(n.int8_bytes for n in self.nets.values())

    def lines(self) -> list[str]:
        """A human-readable report."""
        out = []
        for net in self.nets.values():
            out.append(
                f"{net.role}: {len(net.quantized)} layers int8, {len(net.kept_float)} kept float; "
                f"{net.fp_bytes / 1e6:.2f} MB -> {net.int8_bytes / 1e6:.2f} MB ({net.bin.name})"
            )
            reasons: dict[str, list[str]] = {}
            for name, why in net.kept_float.items():
                reasons.setdefault(why, []).append(name)
            for why, names in reasons.items():
                shown = ", ".join(names[:4]) + (f", … ({len(names)})" if len(names) > 4 else "")
                out.append(f"  float: {shown}: {why}")
        return out


def _stem(param: Path) -> str:
    return param.name[: -len(".param")]


def _plan(
    layers: Sequence[ParamLayer], arrays: Mapping[str, list[StoredArray]], exclude: Sequence[str]
) -> tuple[dict[str, str], dict[str, str]]:
    """(layer → ``static``/``dynamic``, layer → reason kept float) for weight-bearing layers."""
    plan: dict[str, str] = {}
    kept: dict[str, str] = {}
    for layer in layers:
        if layer.name not in arrays:
            continue
        p = parse_layer_params(layer.params)
        pattern = next((x for x in exclude if fnmatch.fnmatchcase(layer.name, x)), None)
        if pattern is not None:
            kept[layer.name] = f"excluded ({pattern})"
        elif layer.kind in STATIC_KINDS:
            if _int(p, 8, 0):
                kept[layer.name] = "already int8"
            elif layer.kind == "Convolution" and _int(p, 19, 0):
                kept[layer.name] = "dynamic-weight convolution"
            else:
                plan[layer.name] = "static"
        elif layer.kind == "LSTM":
            if _int(p, 8, 0):
                kept[layer.name] = "already int8"
            else:
                plan[layer.name] = "dynamic"
        elif layer.kind == "Gemm":
            if _int(p, 18, 0):
                kept[layer.name] = "already int8"
            elif _int(p, 4, 0) or not _int(p, 5, 0):
                kept[layer.name] = "Gemm without constant B alone (int8 not verified)"
            elif not _int(p, 3, 0):
                kept[layer.name] = "Gemm with untransposed B (int8 not verified)"
            else:
                plan[layer.name] = "dynamic"
        else:
            kept[layer.name] = _FLOAT_REASONS.get(
                layer.kind, f"{layer.kind} has no int8 form verified on both runtimes"
            )
    return plan, kept


def _conv_qmax(params: Mapping[str, str]) -> int:
    kw = _int(params, 1, 0)
    kh, dw, sw = _int(params, 11, kw), _int(params, 2, 1), _int(params, 3, 1)
    dh, sh = _int(params, 12, dw), _int(params, 13, sw)
    if (kw, kh, dw, dh, sw, sh) == (3, 3, 1, 1, 1, 1):
        return WINOGRAD_INT8_MAX
    return INT8_MAX


def _layer_bytes(
    layer: ParamLayer, stored: list[StoredArray], how: str, bottom_scale: float
) -> bytes:
    """The int8 ``.bin`` bytes of one quantized layer."""
    p = parse_layer_params(layer.params)
    by_name = {a.spec.name: a for a in stored}
    if layer.kind in STATIC_KINDS:
        rows = _int(p, 0, 0)
        qmax = _conv_qmax(p) if layer.kind == "Convolution" else INT8_MAX
        q, scales = quantize_rows(array_values(by_name["weight"]), rows, qmax)
        parts = [_tagged_int8(q)]
        if "bias" in by_name:
            parts.append(by_name["bias"].raw)
        parts += [_raw_f32(scales), _raw_f32([bottom_scale])]
        return b"".join(parts)
    if layer.kind == "Gemm":
        b = array_values(by_name["B"])
        absmax = float(np.abs(b).max()) if b.size else 0.0
        scale = np.float32(INT8_MAX / absmax) if absmax > 0 else np.float32(1)
        parts = [_tagged_int8(_round_int8(b * scale))]
        if "C" in by_name:
            parts.append(by_name["C"].raw)
        parts.append(_raw_f32([scale]))
        return b"".join(parts)
    if layer.kind == "LSTM":
        hidden = _int(p, 3, _int(p, 0, 0))
        dirs = 2 if _int(p, 2, 0) == 2 else 1
        rows = 4 * hidden * dirs
        qx, sx = quantize_rows(array_values(by_name["weight_xc"]), rows)
        qh, sh = quantize_rows(array_values(by_name["weight_hc"]), rows)
        parts = [_tagged_int8(qx), by_name["bias_c"].raw, _tagged_int8(qh)]
        if "weight_hr" in by_name:
            parts.append(by_name["weight_hr"].raw)
        parts += [_raw_f32(sx), _raw_f32(sh)]
        return b"".join(parts)
    raise AssertionError(f"{layer.kind} {how}")  # pragma: no cover


def _int8_line(line: str, kind: str) -> str:
    """``line`` with int8_scale_term 2 (param 18 for Gemm, 8 otherwise), spacing kept."""
    key = "18" if kind == "Gemm" else "8"
    field_re = re.compile(rf"(?<=\s){key}=\S+")
    if field_re.search(line):
        return field_re.sub(f"{key}=2", line)
    return f"{line.rstrip()} {key}=2"


def _progress_fn(show: bool) -> Callable[[Sequence[Feed], str], Iterator[Feed]] | None:
    if not show:
        return None

    def walk(items: Sequence[Feed], what: str) -> Iterator[Feed]:
        from tqdm import tqdm

        yield from tqdm(items, desc=what, unit="feed", leave=False)

    return walk


def _check_feeds(role: str, session: NcnnSession, feeds: Sequence[Feed]) -> None:
    if not feeds:
        raise ConfigError(f"calibration recorded no {role} feeds; calibrate with more audio")
    want = {t.name for t in session.inputs}
    have = set(feeds[0])
    if have != want:
        raise ConfigError(
            f"{session.path}: calibration feeds have inputs {sorted(have)}, the net takes "
            f"{sorted(want)} (calibrated on another model?)"
        )


def _quantize_net(
    role: str,
    param: Path,
    out_dir: Path,
    feeds: Sequence[Feed],
    exclude: Sequence[str],
    progress: bool,
) -> tuple[NetInt8Summary, float]:
    from asrserve.backends.ncnn_layers import sherpa_custom_layers

    bin_path = param.with_suffix(".bin")
    if not bin_path.is_file():
        raise ModelLoadError(f"{bin_path}: model file not found")
    lines = read_param_lines(param)
    layers = parse_param_layers(lines, param)
    if role == "encoder" and metadata_of(param, layers) is None:
        raise ModelLoadError(
            f"{param}: no {META_LAYER} layer; sherpa-ncnn could not load the int8 model "
            "(add it with 'asrserve ncnn-meta')"
        )
    arrays = read_bin(bin_path, layers)
    plan, kept = _plan(layers, arrays, exclude)
    by_name = {layer.name: layer for layer in layers}
    static = [n for n, how in plan.items() if how == "static"]
    scales: dict[str, float] = {}
    seconds = 0.0
    if static:
        start = time.perf_counter()
        session = NcnnSession(
            param,
            bin_path,
            fp16=False,
            light_mode=False,
            custom_layers=sherpa_custom_layers() if role == "encoder" else None,
        )
        _check_feeds(role, session, feeds)
        bottoms = {n: by_name[n].inputs[0] for n in static}
        per_blob = blob_scales(session, list(bottoms.values()), feeds, _progress_fn(progress))
        for n, blob in bottoms.items():
            if per_blob[blob] > 0:
                scales[n] = per_blob[blob]
            else:
                del plan[n]
                kept[n] = f"bottom blob {blob} was zero on every calibration feed"
        seconds = time.perf_counter() - start
    stem = _stem(param)
    out_param = out_dir / f"{stem}.int8.param"
    out_bin = out_dir / f"{stem}.int8.bin"
    with out_bin.open("wb") as f:
        for layer in layers:
            stored = arrays.get(layer.name)
            if not stored:
                continue
            if layer.name in plan:
                f.write(_layer_bytes(layer, stored, plan[layer.name], scales.get(layer.name, 0.0)))
            else:
                f.write(b"".join(a.raw for a in stored))
    new_lines = list(lines)
    for i, line in enumerate(new_lines[2:], start=2):
        parts = line.split(maxsplit=2)
        if len(parts) >= 2 and parts[1] in plan:
            new_lines[i] = _int8_line(line, parts[0])
    out_param.write_text("\n".join(new_lines), encoding="utf-8")
    summary = NetInt8Summary(
        role,
        out_param,
        out_bin,
        quantized={n: plan[n] for n in by_name if n in plan},
        kept_float=kept,
        bottom_scales=scales,
        fp_bytes=bin_path.stat().st_size,
        int8_bytes=out_bin.stat().st_size,
    )
    return summary, seconds


def _fp_param(model_dir: Path, role: str) -> Path:
    found = sorted(
        p
        for p in model_dir.glob(f"{role}*.param")
        if not p.name.endswith((".int8.param", ".fp16.param"))
    )
    if len(found) != 1:
        what = "no" if not found else "several"
        raise ModelLoadError(
            f"{model_dir}: {what} float {role}*.param file(s); not a sherpa-ncnn model directory"
        )
    return found[0]


def quantize_ncnn_int8(
    model_dir: Path,
    out_dir: Path,
    calib: CalibrationSet,
    *,
    exclude: Sequence[str] = (),
    progress: bool = False,
) -> NcnnInt8Summary:
    """Write an int8 copy of the sherpa-ncnn model in ``model_dir`` to ``out_dir``.

    ``calib`` holds the feeds the fp32 model's nets got while decoding
    calibration audio (:func:`asrserve.quantize.calibration.record_feeds` on
    this model); ``exclude`` holds fnmatch patterns of layer names kept float.
    ``out_dir`` receives ``encoder_….int8.param/.bin``, ``joiner_….int8.param/.bin``,
    the decoder and ``tokens.txt`` (and ``bpe.model``) as they were."""
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    if not model_dir.is_dir():
        raise ModelLoadError(f"{model_dir}: model directory not found")
    if any(model_dir.glob("encoder*.onnx")):
        raise ConfigError(
            f"{model_dir}: an ONNX model; ncnn int8 quantization needs a sherpa-ncnn directory"
        )
    params = {role: _fp_param(model_dir, role) for role in ("encoder", "decoder", "joiner")}
    tokens = model_dir / "tokens.txt"
    if not tokens.is_file():
        raise ModelLoadError(f"{model_dir}: tokens.txt not found")
    if out_dir.resolve() == model_dir.resolve():
        raise ConfigError(f"{out_dir}: the output directory must differ from the model's")
    out_dir.mkdir(parents=True, exist_ok=True)
    nets = {}
    seconds = 0.0
    for role in QUANTIZED_ROLES:
        nets[role], took = _quantize_net(
            role, params[role], out_dir, calib.feeds.get(role, []), exclude, progress
        )
        seconds += took
    copied = []
    decoder = params["decoder"]
    for src in (decoder, decoder.with_suffix(".bin"), tokens, model_dir / "bpe.model"):
        if src.is_file():
            shutil.copyfile(src, out_dir / src.name)
            copied.append(out_dir / src.name)
    return NcnnInt8Summary(
        out_dir,
        nets,
        {r: len(calib.feeds.get(r, [])) for r in QUANTIZED_ROLES},
        seconds,
        copied,
    )
