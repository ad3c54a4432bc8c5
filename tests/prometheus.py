"""Reading asrserve's ``/metrics`` text in tests: every sample carries a
``model`` label; a key names a series as it reads without it."""

from __future__ import annotations

import re


def value(text: str, key: str, model: str | None = None) -> float | None:
    """The sum of the samples of ``key`` (``name`` or ``name{a="b",...}``, the
    labels in the order the server writes them, ``model`` left out) over
    every model, or of ``model``'s alone; None when there is none."""
    name, _, labels = key.partition("{")
    labels = labels.rstrip("}")
    wanted = f'model="{re.escape(model)}"' if model is not None else r'model="[^"]*"'
    inner = (re.escape(labels) + "," if labels else "") + wanted
    found = re.findall(rf"^{re.escape(name)}\{{{inner}\}} (\S+)$", text, re.M)
    return sum(float(v) for v in found) if found else None
