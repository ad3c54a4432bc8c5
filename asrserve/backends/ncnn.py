"""ncnn backend: a ``.param`` + ``.bin`` pair on the ``ncnn`` PyPI package.

ncnn graphs have no batch axis: :meth:`NcnnSession.run` runs one item.
sherpa-ncnn encoders carry a ``SherpaMetaData`` layer (no inputs, no
outputs) whose parameters describe the family; it is parsed from the param
text into :attr:`NcnnSession.metadata` and left out of the graph handed to
ncnn (it never runs), so the net loads in stock ncnn. Its keys are the layer's parameter ids as
strings (``"0"`` = model type); array parameters are comma-joined.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from asrserve.backends.base import BackendOptions, TensorInfo
from asrserve.errors import ModelLoadError

META_LAYER = "SherpaMetaData"
META_NAME = "sherpa_meta_data1"
PARAM_MAGIC = "7767517"
ARRAY_KEY_BASE = -23300
"""ncnn writes array parameter ``k`` as id ``-23300 - k`` followed by its length."""


class ParamLayer(NamedTuple):
    """One layer line of a text ``.param``."""

    kind: str
    name: str
    inputs: list[str]
    outputs: list[str]
    params: list[str]


def import_ncnn() -> Any:
    try:
        import ncnn
    except ImportError as exc:
        raise ModelLoadError(
            "ncnn models need the 'ncnn' package: pip install 'asrserve[ncnn]'"
        ) from exc
    return ncnn


def parse_layer_params(fields: Sequence[str]) -> dict[str, str]:
    """``0=3 1=4 -23303=3,1,2,3`` → ``{"0": "3", "1": "4", "3": "1,2,3"}``."""
    out: dict[str, str] = {}
    for f in fields:
        key, sep, value = f.partition("=")
        if not sep:
            raise ValueError(f"bad layer parameter {f!r}")
        k = int(key)
        if k <= ARRAY_KEY_BASE:
            _count, _, values = value.partition(",")
            out[str(ARRAY_KEY_BASE - k)] = values
        else:
            out[str(k)] = value
    return out


def read_param_lines(path: Path) -> list[str]:
    """The lines of a text ``.param`` after checking its magic number."""
    try:
        lines = path.read_text(encoding="utf-8").split("\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"{path}: not a readable ncnn .param text file ({exc})") from exc
    if not lines or lines[0].strip() != PARAM_MAGIC:
        raise ModelLoadError(f"{path}: not an ncnn .param file (first line is not {PARAM_MAGIC})")
    return lines


def read_param_layers(path: Path) -> list[ParamLayer]:
    """The layers of a text ``.param``, checked against the header's layer count."""
    return parse_param_layers(read_param_lines(path), path)


def parse_param_layers(lines: Sequence[str], path: Path) -> list[ParamLayer]:
    """The layers of ``.param`` ``lines`` (as read by :func:`read_param_lines`)."""
    try:
        n_layers = int(lines[1].split()[0])
    except (IndexError, ValueError):
        raise ModelLoadError(f"{path}: malformed layer/blob count line") from None
    layers = []
    for line in lines[2:]:
        parts = line.split()
        if not parts:
            continue
        try:
            n_in, n_out = int(parts[2]), int(parts[3])
        except (IndexError, ValueError):
            raise ModelLoadError(f"{path}: malformed layer line {line.strip()!r}") from None
        ins = parts[4 : 4 + n_in]
        outs = parts[4 + n_in : 4 + n_in + n_out]
        layers.append(ParamLayer(parts[0], parts[1], ins, outs, parts[4 + n_in + n_out :]))
    if len(layers) != n_layers:
        raise ModelLoadError(
            f"{path}: header says {n_layers} layers, found {len(layers)} (truncated file?)"
        )
    return layers


def metadata_of(path: Path, layers: Sequence[ParamLayer]) -> dict[str, str] | None:
    """The parameters of the ``SherpaMetaData`` layer, or ``None`` without one."""
    for layer in layers:
        if layer.kind == META_LAYER:
            try:
                return parse_layer_params(layer.params)
            except ValueError as exc:
                raise ModelLoadError(f"{path}: bad {META_LAYER} line ({exc})") from None
    return None


def with_meta_line(lines: Sequence[str], line: str | None) -> list[str]:
    """``.param`` lines (magic and count lines first) with every ``SherpaMetaData``
    layer removed and ``line`` (if given) as the first layer; the layer count
    updated (the metadata layer has no blobs)."""
    counts = lines[1].split()
    layers = [x for x in lines[2:] if x.strip() and x.split(maxsplit=1)[0] != META_LAYER]
    removed = sum(1 for x in lines[2:] if x.strip()) - len(layers)
    added = [line] if line is not None else []
    counts[0] = str(int(counts[0]) - removed + len(added))
    return [lines[0], " ".join(counts), *added, *layers]


_Mats = dict[tuple[str, tuple[int, ...], np.dtype[Any]], tuple[Any, npt.NDArray[Any]]]
"""Input buffers by (name, shape, dtype): the ``ncnn.Mat`` and the array it wraps."""


class NcnnSession:
    """One ncnn net. ``inputs``/``outputs`` carry names only (ncnn has no shapes).

    ``fp16`` turns ncnn's fp16 storage, packing and arithmetic on (ncnn's
    and sherpa-ncnn's default; used only where the CPU supports it) or off.
    """

    def __init__(
        self,
        param: str | Path,
        bin_path: str | Path | None = None,
        options: BackendOptions | None = None,
        *,
        fp16: bool = True,
        light_mode: bool = True,
        custom_layers: Mapping[str, Callable[[], Any]] | None = None,
    ) -> None:
        opts = (options or BackendOptions()).validate()
        p = Path(param)
        b = Path(bin_path) if bin_path else p.with_suffix(".bin")
        for f in (p, b):
            if not f.is_file():
                raise ModelLoadError(f"{f}: model file not found")
        lines = read_param_lines(p)
        layers = parse_param_layers(lines, p)
        self.path = str(p)
        self.fp16 = fp16
        self.metadata: Mapping[str, str] = metadata_of(p, layers) or {}
        ncnn = import_ncnn()
        net = ncnn.Net()
        net.opt.num_threads = opts.num_threads
        net.opt.lightmode = light_mode
        net.opt.use_fp16_packed = fp16
        net.opt.use_fp16_storage = fp16
        net.opt.use_fp16_arithmetic = fp16
        net.opt.use_vulkan_compute = False
        self._creators = dict(custom_layers or {})
        used = {layer.kind for layer in layers}
        for kind, creator in self._creators.items():
            if kind in used:  # some ncnn builds allow only a few Python layers
                net.register_custom_layer(kind, creator, lambda _layer: None)
        # The metadata layer never runs: load the graph without it, so stock
        # ncnn needs no layer registered for it.
        if net.load_param_mem("\n".join(with_meta_line(lines, None))) != 0:
            unknown = self._unknown_layers(ncnn, layers)
            hint = f"; layer types ncnn does not know: {', '.join(unknown)}" if unknown else ""
            raise ModelLoadError(f"{p}: ncnn could not load the graph{hint}")
        if net.load_model(str(b)) != 0:
            raise ModelLoadError(f"{b}: ncnn could not load the weights (truncated or foreign?)")
        self._net = net
        self._mat = ncnn.Mat
        self.inputs: Sequence[TensorInfo] = [TensorInfo(n, "float", ()) for n in net.input_names()]
        self.outputs: Sequence[TensorInfo] = [
            TensorInfo(n, "float", ()) for n in net.output_names()
        ]
        self._output_names = tuple(o.name for o in self.outputs)
        self.batch_dependent = False
        self._inputs = threading.local()  # per thread: input Mats by (name, shape, dtype)

    def _unknown_layers(self, ncnn: Any, layers: Sequence[ParamLayer]) -> list[str]:
        kinds = {layer.kind for layer in layers} - set(self._creators) - {META_LAYER}
        return sorted(k for k in kinds if ncnn.layer_to_index(k) < 0)

    def run(
        self,
        feeds: Mapping[str, npt.NDArray[np.generic]],
        outputs: Sequence[str] | None = None,
    ) -> list[npt.NDArray[np.float32]]:
        """Run one item: arrays in (float32 or int32), the named outputs
        (all by default) out as float32 copies.

        Inputs are copied into buffers kept per thread, name and shape, each
        wrapped once by an ``ncnn.Mat`` (making a Mat costs more than the copy);
        a layer working in place on its input changes only that buffer, which
        the next call overwrites."""
        ex = self._net.create_extractor()
        mats: _Mats | None = getattr(self._inputs, "mats", None)
        if mats is None:
            mats = self._inputs.mats = {}
        for name, value in feeds.items():
            key = (name, value.shape, value.dtype)
            held = mats.get(key)
            if held is None:
                # an ncnn.Mat made from an array wraps the array's memory: keep both
                buf = np.empty(value.shape, dtype=value.dtype)
                held = mats[key] = (self._mat(buf), buf)
            held[1][...] = value
            ex.input(name, held[0])
        out = []
        for name in outputs or self._output_names:
            ret, mat = ex.extract(name)
            if ret != 0:
                raise ModelLoadError(f"{self.path}: ncnn failed to compute {name!r} ({ret})")
            out.append(np.array(mat, copy=True))
        return out
