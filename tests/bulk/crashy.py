"""A worker entry point that kills its own process on calls with inputs named ``crash*``
(a stand-in for a crash in native code or the OOM killer); importable by the
spawned worker processes of :class:`asrserve.bulk.LocalEngine`."""

from __future__ import annotations

import os
from pathlib import Path

from asrserve.bulk.worker import PieceResult, Task, Worker, process_in_pool


def _die_on_crash(tasks: list[Task]) -> None:
    if any(Path(t.location).name.startswith("crash") for t in tasks):
        os._exit(9)


def process_or_die(tasks: list[Task]) -> list[PieceResult]:
    _die_on_crash(tasks)
    return process_in_pool(tasks)


class CrashyWorker(Worker):
    """A Ray actor that dies on calls with inputs named ``crash*``."""

    def process_batch(self, tasks: list[Task]) -> list[PieceResult]:
        _die_on_crash(tasks)
        return super().process_batch(tasks)
