"""A process pool on this machine: one model load per worker process.

Processes are started with ``spawn`` (no inherited threads or onnxruntime
sessions). Tasks go to them in calls of ``batch_size`` (each call decoded as one
rolling batch of streams); at most ``2 * workers`` calls are in flight, so a
manifest of any length is read lazily. When a worker process dies (a crash in
native code, the OOM killer), the whole pool is lost: it is rebuilt, and the
tasks that were in flight become suspects, each run again alone (a call of its
own, nothing else in flight). A suspect that kills its worker when alone is the
culprit and becomes an error line; the others go on as usual.
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

from asrserve.bulk.engines import WORKER_DIED, BulkError, call_size, task_calls
from asrserve.bulk.worker import (
    ModelSpec,
    PieceResult,
    Task,
    failed,
    init_process,
    process_in_pool,
)
from asrserve.config import SplitConfig
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
    running ``initializer(*initargs)`` once, then ``process(tasks)`` per call of
    up to ``batch_size`` tasks (default: twice ``spec.max_streams``, so a
    worker's batch stays full as its tasks end); ``max_restarts``: worker deaths
    in a row (no call finishing in between) before the run gives up."""

    name = "local"

    def __init__(
        self,
        spec: ModelSpec,
        split: SplitConfig,
        workers: int | None = None,
        *,
        batch_size: int | None = None,
        max_restarts: int = 8,
        process: Callable[[list[Task]], list[PieceResult]] = process_in_pool,
        initializer: Callable[..., None] = init_process,
        initargs: tuple[Any, ...] | None = None,
    ) -> None:
        n = default_workers() if workers is None else workers
        if n < 1:
            raise ConfigError(f"workers must be >= 1, got {n}")
        size = 2 * spec.max_streams if batch_size is None else batch_size
        if size < 1:
            raise ConfigError(f"batch size must be >= 1, got {size}")
        self._workers = n
        self.batch_size = size
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

    def run(self, tasks: Iterable[Task], expected: int | None = None) -> Iterator[PieceResult]:
        source = task_calls(tasks, call_size(self.batch_size, self._workers, expected))
        suspects: deque[Task] = deque()
        in_flight: dict[Future[list[PieceResult]], list[Task]] = {}
        restarts = 0
        pool = self._pool()
        try:
            while True:
                if suspects:  # one alone, once the pool is idle
                    if not in_flight:
                        suspect = [suspects.popleft()]
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
                    call = in_flight.pop(fut)
                    restarts = 0  # counts deaths in a row
                    try:
                        results = fut.result()
                    except Exception as exc:  # e.g. a result that did not unpickle
                        results = [failed(t, f"{type(exc).__name__}: {exc}") for t in call]
                    yield from results
                if not broken:
                    continue
                restarts += 1
                log.warning(
                    "a worker process died; %d task(s) were in flight",
                    sum(len(c) for c in in_flight.values()),
                )
                wait(in_flight)  # a broken pool fails every future it holds
                alone = len(in_flight) == 1 and len(next(iter(in_flight.values()))) == 1
                for fut, call in in_flight.items():
                    if fut.exception() is None:
                        yield from fut.result()  # finished before the death
                        continue
                    for task in call:
                        if alone and task.attempt > 0:
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
