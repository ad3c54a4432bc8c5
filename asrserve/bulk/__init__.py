"""Bulk transcription: many files → one JSONL line each, resumable and
failure-isolated, on a local process pool or a Ray cluster.

>>> from asrserve.bulk import LocalEngine, ModelSpec, SplitConfig, read_inputs, run_bulk
>>> items = read_inputs("recordings/")
>>> summary = run_bulk(items, "results.jsonl", LocalEngine(ModelSpec(), SplitConfig()))

``RayEngine`` is in :mod:`asrserve.bulk.engines.ray_engine` (Ray is optional).
"""

from __future__ import annotations

from asrserve.bulk.engines import BulkError
from asrserve.bulk.engines.local import LocalEngine
from asrserve.bulk.manifest import Item, ManifestError, read_inputs
from asrserve.bulk.runner import Summary, run_bulk
from asrserve.bulk.sink import JsonlSink
from asrserve.bulk.split import SplitConfig
from asrserve.bulk.worker import ModelSpec

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
