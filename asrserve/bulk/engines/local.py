"""A process pool on this machine: one model load per worker process.

Processes are started with ``spawn`` (no inherited threads or onnxruntime
sessions). At most ``2 * workers`` tasks are in flight, so a manifest of any
length is read lazily. When a worker process dies (a crash in native code, the
OOM killer), the whole pool is lost: it is rebuilt, and the tasks that were in
flight become suspects, each run again alone (nothing else in flight). A suspect
that kills its worker when alone is the culprit and becomes an error line; the
others go on as usual.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import replace
from typing import Any

from asrserve.bulk.engines import WORKER_DIED, BulkError
from asrserve.bulk.split import SplitConfig
from asrserve.bulk.worker import (
    ModelSpec,
    PieceResult,
    Task,
    failed,
    init_process,
    process_in_pool,
)
from asrserve.errors import ConfigError

log = logging.getLogger("asrserve.bulk")


def default_workers() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class LocalEngine:
    """``workers`` processes (default: the cores this process may use), each
    running ``initializer(*initargs)`` once, then ``process(task)`` per task;
    ``max_restarts``: worker deaths in a row (no task finishing in between)
    before the run gives up."""

    name = "local"

    def __init__(
        self,
        spec: ModelSpec,
        split: SplitConfig,
        workers: int | None = None,
        *,
        max_restarts: int = 8,
        process: Callable[[Task], PieceResult] = process_in_pool,
        initializer: Callable[..., None] = init_process,
        initargs: tuple[Any, ...] | None = None,
    ) -> None:
        n = default_workers() if workers is None else workers
        if n < 1:
            raise ConfigError(f"workers must be >= 1, got {n}")
        self._workers = n
        self.max_restarts = max_restarts
        self._process = process
        self._initializer = initializer
        self._initargs = (spec, split) if initargs is None else initargs

    @property
    def workers(self) -> int:
        return self._workers

    def _pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            self._workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=self._initializer,
            initargs=self._initargs,
        )

    def run(self, tasks: Iterable[Task]) -> Iterator[PieceResult]:
        source = iter(tasks)
        suspects: deque[Task] = deque()
        in_flight: dict[Future[PieceResult], Task] = {}
        restarts = 0
        pool = self._pool()
        try:
            while True:
                if suspects:  # one alone, once the pool is idle
                    if not in_flight:
                        suspect = suspects.popleft()
                        in_flight[pool.submit(self._process, suspect)] = suspect
                else:
                    while len(in_flight) < 2 * self._workers:
                        nxt = next(source, None)
                        if nxt is None:
                            break
                        in_flight[pool.submit(self._process, nxt)] = nxt
                if not in_flight:
                    return
                done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                broken = False
                for fut in done:
                    if isinstance(fut.exception(), BrokenProcessPool):
                        broken = True  # handled below with the others in flight
                        continue
                    task = in_flight.pop(fut)
                    restarts = 0  # counts deaths in a row
                    try:
                        yield fut.result()
                    except Exception as exc:  # e.g. a result that did not unpickle
                        yield failed(task, f"{type(exc).__name__}: {exc}")
                if not broken:
                    continue
                restarts += 1
                log.warning("a worker process died; %d task(s) were in flight", len(in_flight))
                wait(in_flight)  # a broken pool fails every future it holds
                alone = len(in_flight) == 1
                for fut, task in in_flight.items():
                    if fut.exception() is None:
                        yield fut.result()  # finished before the death
                    elif alone and task.attempt > 0:
                        yield failed(task, WORKER_DIED)
                    else:
                        suspects.append(replace(task, attempt=task.attempt + 1))
                in_flight.clear()
                pool.shutdown(wait=True, cancel_futures=True)
                if restarts > self.max_restarts:
                    raise BulkError(f"worker processes died {restarts} times in a row; giving up")
                pool = self._pool()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
