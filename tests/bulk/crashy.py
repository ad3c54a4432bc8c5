"""A worker entry point that kills its own process on inputs named ``crash*``
(a stand-in for a crash in native code or the OOM killer); importable by the
spawned worker processes of :class:`asrserve.bulk.LocalEngine`."""

from __future__ import annotations

import os
from pathlib import Path

from asrserve.bulk.worker import PieceResult, Task, Worker, process_in_pool


def process_or_die(task: Task) -> PieceResult:
    if Path(task.location).name.startswith("crash"):
        os._exit(9)
    return process_in_pool(task)


class CrashyWorker(Worker):
    """A Ray actor that dies on inputs named ``crash*``."""

    def process(self, task: Task) -> PieceResult:
        if Path(task.location).name.startswith("crash"):
            os._exit(9)
        return super().process(task)
