"""A loaded model's self-check: do its files belong together?

Each graph may load on its own and still come from another model (a swapped
encoder or joiner). Checked once at load by the CLI and the server, so the
failure is one line naming the files instead of every stream failing later.
"""

from __future__ import annotations

import numpy as np

from asrserve.backends.base import TensorInfo
from asrserve.core.interfaces import AnyRecognizer
from asrserve.errors import ModelLoadError


def _width(info: TensorInfo) -> int | None:
    last = info.shape[-1] if info.shape else None
    return last if isinstance(last, int) and last > 0 else None


def check_model(recognizer: AnyRecognizer) -> None:
    """Fail at startup, in one line, when the model's files load but do not fit
    together (a file swapped for another model's): compare the widths the
    graphs declare, then decode a chunk of silence. Without this the server
    would listen and fail every stream."""
    graphs = recognizer.model.graphs()
    paths = {role: g.path for role, g in graphs.items()}
    joiner = graphs.get("joiner")
    for i, role in enumerate(("encoder", "decoder")):
        graph = graphs.get(role)
        if joiner is None or graph is None or not graph.outputs or len(joiner.inputs) <= i:
            continue
        have, want = _width(graph.outputs[0]), _width(joiner.inputs[i])
        if have is not None and want is not None and have != want:
            raise ModelLoadError(
                f"{paths[role]}: its output is {have} wide but {paths['joiner']} takes {want}; "
                "the files come from different models"
            )
    rate = recognizer.feature_config.sample_rate
    try:
        # one chunk of silence runs every graph once (a whole second cost a
        # third of a CPU-second per process on an 80M-parameter model)
        stream = recognizer.create_stream()
        stream.accept_waveform(rate, np.zeros(rate // 10, dtype=np.float32))
        stream.input_finished()
        recognizer.decode_streams([stream])
    except Exception as exc:
        reason = " ".join(str(exc).split())[:300]
        files = ", ".join(str(p) for p in paths.values())
        raise ModelLoadError(
            f"{files}: a test decode failed ({type(exc).__name__}: {reason}); "
            "do these files belong to one model?"
        ) from exc
