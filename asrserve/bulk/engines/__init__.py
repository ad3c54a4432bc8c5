"""Where tasks run: :class:`~asrserve.bulk.engines.local.LocalEngine` (a process
pool on this machine) or :class:`~asrserve.bulk.engines.ray_engine.RayEngine`
(actors on a Ray cluster). Both take an iterable of tasks and yield results as
they finish, in any order; the caller is the single writer of the results.

Both send tasks to their workers in calls of several tasks (:func:`task_calls`),
which a worker decodes as one rolling batch of streams."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from typing import Protocol

from asrserve.bulk.worker import PieceResult, Task
from asrserve.errors import AsrServeError

WORKER_DIED = "the worker died while decoding this input (crash or out of memory)"


class BulkError(AsrServeError):
    """The run cannot go on: the model does not load, or workers keep dying."""


class Engine(Protocol):
    name: str

    @property
    def workers(self) -> int: ...

    def run(self, tasks: Iterable[Task], expected: int | None = None) -> Iterator[PieceResult]:
        """Decode ``tasks`` (about ``expected`` of them, when known); yield one
        result per task as each finishes."""
        ...


def call_size(batch_size: int, workers: int, expected: int | None) -> int:
    """Tasks per worker call: ``batch_size``, or fewer when ``expected`` tasks
    would otherwise leave some of the ``workers`` without one."""
    if expected is None or expected <= 0:
        return batch_size
    return max(1, min(batch_size, math.ceil(expected / max(1, workers))))


def task_calls(tasks: Iterable[Task], size: int) -> Iterator[list[Task]]:
    """``tasks`` in calls of ``size`` (the last may be shorter), read lazily."""
    call: list[Task] = []
    for task in tasks:
        call.append(task)
        if len(call) >= size:
            yield call
            call = []
    if call:
        yield call
