"""The one place that opens a graph file on its engine: ``.onnx`` through
onnxruntime, ``.param`` (with its ``.bin``) through ncnn."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from asrserve.backends.base import BackendOptions, Session
from asrserve.errors import ModelLoadError

if TYPE_CHECKING:
    from asrserve.backends.ncnn import NcnnSession


def open_session(
    path: str | Path,
    options: BackendOptions | None = None,
    *,
    small: bool = False,
    per_row: bool = False,
    fp16: bool = True,
    custom_layers: Mapping[str, Callable[[], Any]] | None = None,
) -> Session:
    """Load ``path`` on the engine its suffix names.

    ``small``: a graph run on a few rows per call (decoders, joiners), which
    gets one thread: a pool's wake-ups cost more than they bring.
    ``per_row``: an onnxruntime graph with per-tensor dynamic int8
    quantization loads as its per-row rewrite where one can be made (see
    :func:`per_row_twin`).
    ``fp16``/``custom_layers`` are ncnn's (storage and arithmetic in fp16
    where the CPU has it; layer types the graph needs registered).
    """
    opts = (options or BackendOptions()).validate()
    if small:
        opts = opts.single_threaded()
    p = Path(path)
    if p.suffix == ".onnx":
        from asrserve.backends.onnxruntime import OrtSession

        return OrtSession(p, opts, per_row=per_row)
    if p.suffix == ".param":
        return open_ncnn(p, opts, fp16=fp16, custom_layers=custom_layers)
    raise ModelLoadError(f"{p}: not a model graph (expected an .onnx or ncnn .param file)")


def per_row_twin(session: Session, *, grouped: bool = False) -> Session | None:
    """For an onnxruntime graph with per-tensor dynamic int8 quantization, its
    per-row rewrite (:mod:`asrserve.backends.row_quant`): a batch of rows then
    gives each row what it gets alone (``grouped``: each group of rows what
    the group gets as one batch). ``None`` where ``session``'s rows never
    depend on each other anyway, or no rewrite can be made."""
    from asrserve.backends.onnxruntime import OrtSession

    if not session.batch_dependent or not isinstance(session, OrtSession):
        return None
    rows = OrtSession(session.path, session.options, per_row=True, grouped=grouped)
    return None if rows.batch_dependent else rows


def open_ncnn(
    param: str | Path,
    options: BackendOptions | None = None,
    *,
    small: bool = False,
    fp16: bool = True,
    custom_layers: Mapping[str, Callable[[], Any]] | None = None,
) -> NcnnSession:
    """An ncnn net (``.param`` with its ``.bin`` beside it), as the ncnn
    families need it; the options mean what they mean for :func:`open_session`."""
    from asrserve.backends.ncnn import NcnnSession

    opts = (options or BackendOptions()).validate()
    if small:
        opts = opts.single_threaded()
    return NcnnSession(param, None, opts, fp16=fp16, custom_layers=custom_layers)
