"""onnxruntime backend."""

from __future__ import annotations

import mmap
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from asrserve.backends.base import PROVIDERS, BackendOptions, TensorInfo
from asrserve.backends.row_quant import per_row_graph
from asrserve.errors import ModelLoadError

_PROVIDERS = {p: f"{'CoreML' if p == 'coreml' else p.upper()}ExecutionProvider" for p in PROVIDERS}


def _dims(shape: list[object]) -> tuple[int | None, ...]:
    return tuple(d if isinstance(d, int) else None for d in shape)


def _tensor_type(t: str) -> str:
    # "tensor(float)" -> "float"
    return t[len("tensor(") : -1] if t.startswith("tensor(") else t


def _has_dynamic_quantization(path: Path) -> bool:
    """Whether the graph quantizes activations with one scale per tensor.

    Then a row's output depends on the other rows of the batch, which
    matters for reproducing results exactly. The op type is stored as a
    plain string in the protobuf, so a byte search finds it.
    """
    with path.open("rb") as f:
        if path.stat().st_size == 0:
            return False
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            return data.find(b"DynamicQuantizeLinear") >= 0


class OrtSession:
    """A graph loaded into an ``onnxruntime.InferenceSession``."""

    def __init__(
        self,
        path: str | Path,
        options: BackendOptions | None = None,
        *,
        per_row: bool = False,
        grouped: bool = False,
    ) -> None:
        """``per_row``: run a graph with per-tensor dynamic int8 quantization as
        its per-row rewrite (:mod:`asrserve.backends.row_quant`), so that each
        row's output is the one it gets alone, when the graph allows it;
        ``grouped``: its per-group rewrite (inputs with a leading group axis)."""
        opts = (options or BackendOptions()).validate()
        self.options = opts
        p = Path(path)
        if not p.is_file():
            raise ModelLoadError(f"{p}: model file not found")
        so = ort.SessionOptions()
        so.intra_op_num_threads = opts.num_threads
        so.inter_op_num_threads = 1
        so.add_session_config_entry("session.intra_op.allow_spinning", "1" if opts.spin else "0")
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        provider = _PROVIDERS[opts.provider]
        if provider not in ort.get_available_providers():
            raise ModelLoadError(
                f"provider {opts.provider!r} is not available in this onnxruntime build "
                f"(available: {', '.join(ort.get_available_providers())})"
            )
        self.batch_dependent = _has_dynamic_quantization(p)
        graph: str | bytes = str(p)
        if per_row and self.batch_dependent:
            rewritten = per_row_graph(p, grouped=grouped)
            if rewritten is not None:
                graph = rewritten if isinstance(rewritten, bytes) else str(rewritten)
                self.batch_dependent = False
        try:
            self._sess = ort.InferenceSession(graph, sess_options=so, providers=[provider])
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
            raise ModelLoadError(f"{p}: not a loadable ONNX model ({exc})") from exc
        self.path = str(p)
        self.inputs: Sequence[TensorInfo] = [
            TensorInfo(i.name, _tensor_type(i.type), _dims(i.shape))
            for i in self._sess.get_inputs()
        ]
        self.outputs: Sequence[TensorInfo] = [
            TensorInfo(o.name, _tensor_type(o.type), _dims(o.shape))
            for o in self._sess.get_outputs()
        ]
        self._output_names = [o.name for o in self.outputs]
        meta = self._sess.get_modelmeta().custom_metadata_map
        self.metadata: Mapping[str, str] = dict(meta)
        # The binding's own run: InferenceSession.run adds ~5 us of Python checks
        # per call (input names, graph capture, EP fallback), which
        # :meth:`run` does only when a call fails.
        self._run_fast: Callable[..., list[npt.NDArray[np.generic]]] | None = getattr(
            getattr(self._sess, "_sess", None), "run", None
        )

    def run(
        self,
        feeds: Mapping[str, npt.NDArray[np.generic]],
        outputs: Sequence[str] | None = None,
    ) -> list[npt.NDArray[np.generic]]:
        names = self._output_names if outputs is None else list(outputs)
        feed = feeds if isinstance(feeds, dict) else dict(feeds)
        if self._run_fast is not None:
            try:
                return self._run_fast(names, feed, None)
            except Exception:  # the checked path below raises the real error
                pass
        return self._sess.run(names, feed)  # type: ignore[no-any-return]
