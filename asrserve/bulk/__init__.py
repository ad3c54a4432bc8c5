"""Bulk transcription: many files → one JSONL line each, resumable and
failure-isolated, on a local process pool or a Ray cluster.

>>> from asrserve.bulk import LocalEngine, ModelSpec, SplitConfig, read_inputs, run_bulk
>>> items = read_inputs("recordings/")
>>> summary = run_bulk(items, "results.jsonl", LocalEngine(ModelSpec(), SplitConfig()))

``RayEngine`` is in :mod:`asrserve.bulk.engines.ray_engine` (Ray is optional).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from asrserve.bulk.engines import BulkError
    from asrserve.bulk.engines.local import LocalEngine
    from asrserve.bulk.manifest import Item, ManifestError, read_inputs
    from asrserve.bulk.runner import Summary, run_bulk
    from asrserve.bulk.sink import JsonlSink
    from asrserve.bulk.worker import ModelSpec
    from asrserve.config import SplitConfig

# imported on first use: the process pool's modules (and numpy) are not needed
# until a bulk run
_HOMES = {
    "BulkError": "asrserve.bulk.engines",
    "LocalEngine": "asrserve.bulk.engines.local",
    "Item": "asrserve.bulk.manifest",
    "ManifestError": "asrserve.bulk.manifest",
    "read_inputs": "asrserve.bulk.manifest",
    "Summary": "asrserve.bulk.runner",
    "run_bulk": "asrserve.bulk.runner",
    "JsonlSink": "asrserve.bulk.sink",
    "SplitConfig": "asrserve.config",
    "ModelSpec": "asrserve.bulk.worker",
}

__all__ = [
    "BulkError",
    "Item",
    "JsonlSink",
    "LocalEngine",
    "ManifestError",
    "ModelSpec",
    "SplitConfig",
    "Summary",
    "read_inputs",
    "run_bulk",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
