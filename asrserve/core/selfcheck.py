"""A loaded model's self-check: do its files belong together?

Each graph may load on its own and still come from another model (a swapped
encoder or joiner). Checked once at load by the CLI and the server, so the
failure is one line naming the files instead of every stream failing later.
"""

from __future__ import annotations

import numpy as np

from asrserve.core.recognizer import Recognizer
from asrserve.errors import ModelLoadError


def _width(info: object) -> int | None:
    shape = getattr(info, "shape", None)
    last = shape[-1] if shape else None
    return last if isinstance(last, int) and last > 0 else None


def check_model(recognizer: Recognizer) -> None:
    """Fail at startup, in one line, when the model's files load but do not fit
    together (a file swapped for another model's): compare the widths the
    graphs declare, then decode a second of silence. Without this the server
    would listen and fail every stream."""
    model = recognizer.model
    graphs = {role: getattr(model, role, None) for role in ("encoder", "decoder", "joiner")}
    paths = {role: getattr(g, "path", role) for role, g in graphs.items()}
    joiner_in = getattr(graphs["joiner"], "inputs", None) or ()
    for i, role in enumerate(("encoder", "decoder")):
        outputs = getattr(graphs[role], "outputs", None) or ()
        have = _width(outputs[0]) if outputs else None
        want = _width(joiner_in[i]) if len(joiner_in) > i else None
        if have is not None and want is not None and have != want:
            raise ModelLoadError(
                f"{paths[role]}: its output is {have} wide but {paths['joiner']} takes {want}; "
                "the files come from different models"
            )
    rate = recognizer.feature_config.sample_rate
    try:
        recognizer.transcribe(np.zeros(rate, dtype=np.float32), rate)
    except Exception as exc:
        reason = " ".join(str(exc).split())[:300]
        files = ", ".join(str(p) for p in paths.values())
        raise ModelLoadError(
            f"{files}: a test decode failed ({type(exc).__name__}: {reason}); "
            "do these files belong to one model?"
        ) from exc
