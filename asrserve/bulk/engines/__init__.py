"""Where tasks run: :class:`~asrserve.bulk.engines.local.LocalEngine` (a process
pool on this machine) or :class:`~asrserve.bulk.engines.ray_engine.RayEngine`
(actors on a Ray cluster). Both take an iterable of tasks and yield results as
they finish, in any order; the caller is the single writer of the results."""

from __future__ import annotations

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

    def run(self, tasks: Iterable[Task]) -> Iterator[PieceResult]:
        """Decode ``tasks``; yield one result per task as each finishes."""
        ...
