"""The same work on a Ray cluster: a pool of actors, each loading the model once.

Tasks go to the actors in calls of ``batch_size`` tasks (whole files or pieces of
split ones; fewer when there are too few tasks to keep every actor busy), each
decoded by its actor as one rolling batch of streams; every actor has at most
two calls in flight, and results come back to the driver as each call finishes,
where the single writer puts them in the results file. The
workers read the audio themselves: paths must be valid on the worker nodes (a
shared filesystem, or the same layout on every node).

``address``: ``None`` starts a local Ray for the run (and stops it at the end),
``"auto"`` joins the cluster this machine belongs to, ``"ray://host:10001"`` a
remote one. When Ray is already initialised (a notebook, a test) it is used as
it is and left running. An actor that dies is replaced; the tasks it had in
flight go again, each alone, and one that kills its actor again becomes an error
line. ``max_restarts`` deaths in a row (no call finishing in between) stop the run.

Ray is an optional dependency: ``pip install 'asrserve[ray]'``.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import replace
from typing import Any

from asrserve.bulk.engines import WORKER_DIED, BulkError, call_size, task_calls
from asrserve.bulk.worker import ModelSpec, PieceResult, Task, Worker, failed
from asrserve.config import SplitConfig
from asrserve.errors import ConfigError

log = logging.getLogger("asrserve.bulk")


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ConfigError(
            "--engine ray needs Ray: pip install 'asrserve[ray]' (or 'ray>=2.9')"
        ) from None
    return ray


class RayEngine:
    """``workers`` actors (default: the cluster's CPUs / ``spec.num_threads``), each
    an instance of ``worker_cls``, given calls of up to ``batch_size`` tasks
    (default: twice ``spec.max_streams``)."""

    name = "ray"

    def __init__(
        self,
        spec: ModelSpec,
        split: SplitConfig,
        workers: int | None = None,
        *,
        address: str | None = None,
        batch_size: int | None = None,
        max_restarts: int = 8,
        worker_cls: type[Worker] = Worker,
    ) -> None:
        if workers is not None and workers < 1:
            raise ConfigError(f"workers must be >= 1, got {workers}")
        size = 2 * spec.max_streams if batch_size is None else batch_size
        if size < 1:
            raise ConfigError(f"batch size must be >= 1, got {size}")
        self.spec = spec
        self.split = split
        self.address = address
        self.batch_size = size
        self.max_restarts = max_restarts
        self.worker_cls = worker_cls
        self._requested = workers
        self._workers = workers or 0

    @property
    def workers(self) -> int:
        return self._workers

    def run(self, tasks: Iterable[Task], expected: int | None = None) -> Iterator[PieceResult]:
        ray = import_ray()
        started = False
        if not ray.is_initialized():
            ray.init(
                address=self.address,
                include_dashboard=False,
                num_cpus=self._requested if self.address is None else None,
                logging_level=logging.WARNING,
            )
            started = True
        threads = max(1, self.spec.num_threads)
        cpus = int(ray.cluster_resources().get("CPU", 1))
        self._workers = self._requested or max(1, cpus // threads)
        if self._workers * threads > cpus:
            log.warning(
                "%d actors x %d threads > %d CPUs in the cluster: some actors wait",
                self._workers,
                threads,
                cpus,
            )
        actor_cls = ray.remote(num_cpus=threads)(self.worker_cls)
        actors: list[Any] = []
        try:
            actors = [actor_cls.remote(self.spec, self.split) for _ in range(self._workers)]
            calls = task_calls(tasks, call_size(self.batch_size, self._workers, expected))
            yield from self._dispatch(ray, actor_cls, actors, calls)
        finally:
            for a in actors:
                ray.kill(a)
            if started:
                ray.shutdown()

    def _dispatch(
        self, ray: Any, actor_cls: Any, actors: list[Any], batches: Iterator[list[Task]]
    ) -> Iterator[PieceResult]:
        busy = [0] * len(actors)  # calls in flight per actor; a suspect counts 2 (alone)
        in_flight: dict[Any, tuple[int, Any, list[Task], int]] = {}
        suspects: deque[list[Task]] = deque()
        restarts = 0
        exhausted = False
        while True:
            for i in sorted(range(len(actors)), key=lambda j: busy[j]):
                while busy[i] < 2:
                    if suspects and busy[i] == 0:
                        batch, weight = suspects.popleft(), 2
                    elif suspects or exhausted:
                        break
                    else:
                        nxt = next(batches, None)
                        exhausted = nxt is None
                        if nxt is None:
                            break
                        batch, weight = nxt, 1
                    ref = actors[i].process_batch.remote(batch)
                    in_flight[ref] = (i, actors[i], batch, weight)
                    busy[i] += weight
            if not in_flight:
                return
            ready, rest = ray.wait(list(in_flight), num_returns=1)
            if rest:  # and whatever else is done by now, without waiting
                more, _ = ray.wait(rest, num_returns=len(rest), timeout=0)
                ready += more
            for ref in ready:
                i, actor, batch, weight = in_flight.pop(ref)
                current = actors[i] is actor  # not a call of an actor replaced since
                if current:
                    busy[i] -= weight
                try:
                    results: list[PieceResult] = ray.get(ref)
                except ray.exceptions.RayActorError:
                    if current:
                        restarts += 1
                        if restarts > self.max_restarts:
                            msg = f"Ray actors died {restarts} times in a row; giving up"
                            raise BulkError(msg) from None
                        log.warning("a Ray actor died; replacing it")
                        ray.kill(actor)
                        actors[i] = actor_cls.remote(self.spec, self.split)
                        busy[i] = 0
                    if weight == 2:
                        yield failed(batch[0], WORKER_DIED)  # died again, alone: the culprit
                    else:  # suspects: each goes again, alone on its actor
                        suspects.extend([replace(t, attempt=t.attempt + 1)] for t in batch)
                    continue
                except ray.exceptions.RayError as exc:
                    for t in batch:
                        yield failed(t, f"{type(exc).__name__}: {exc}")
                    continue
                restarts = 0  # counts deaths in a row
                yield from results
