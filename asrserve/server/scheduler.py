"""Cross-stream batching: one pool of streams, drained whole by decode threads.

The event loop hands audio and commands to a :class:`StreamSlot` (under the
slot's lock); the slot then tells its :class:`Scheduler` that it has work,
and when. Decode threads (``start(threads)``) wait on that shared pool: once
its earliest work is due, one thread takes **every** stream with work (the
whole pool, not a share of it), moves their audio into the core, decodes
rounds of one chunk per ready stream (``decode_streams`` calls of at most
``max_batch_size``) and hands the outcomes to ``deliver`` (which the server
turns into messages on its event loop: no JSON or framing here). Between
rounds the thread takes what arrived meanwhile (audio of the streams it holds,
and whatever was queued in the pool), so calls grow while nobody waits. A
stream is held by one thread at a time; the core's objects are touched by the
thread that holds it alone.

Pacing: while no decode thread is busy, new audio from a stream may wait for
other streams' audio to share its calls as long as waiting plus the rounds it
needs (at the recent round time) stays within ``max_wait_s``
(:meth:`Scheduler.wait_s`): cheap models wait, slow rounds start at once (the
latency of partials at light load). While a thread is busy its rounds take in
new work between them, so another thread starts on work only once it has
waited ``max_wait_s``: under load the threads run few, full calls side by
side instead of many small ones (CPU per stream, and so capacity). A stream
that is behind (chunks left after a step), has ended its input, asked for a
flush or was abandoned is due at once. When rounds are long (``SPLIT_S``) the
threads hold equal shares of the streams with work: a thread takes no more
than its share, and one holding more hands the excess back between rounds, so
that both run rounds of about the same length (a final waits for its stream's
input-end rounds, one after the other, on whichever thread holds it). A step
runs at most ``max_rounds`` rounds, then hands its streams back to the pool,
where the ones still behind are taken again with whatever else is ready.
"""

from __future__ import annotations

import ctypes
import logging
import math
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, TypeVar

import numpy as np
import numpy.typing as npt

from asrserve.core.events import Result
from asrserve.core.interfaces import AnyRecognizer
from asrserve.core.segments import Eof, Event, Partial, StreamEvents
from asrserve.core.stream import Stream
from asrserve.errors import AsrServeError
from asrserve.server.metrics import Metrics
from asrserve.server.protocol import SessionConfig

_T = TypeVar("_T")

log = logging.getLogger("asrserve.server")


@dataclass(frozen=True)
class Outcome:
    """Something a session must tell its client."""

    kind: Literal["partial", "final", "eof", "error"]
    result: Result | None = None
    end_time: float = 0.0
    last: bool = False  # a final that ends the stream
    duration: float = 0.0
    error: AsrServeError | None = None
    fatal: bool = False  # the stream is dropped after this error


Outcomes = list[tuple["StreamSlot", list[Outcome]]]
"""Per slot, what its session should hear, in order."""

Deliver = Callable[[Outcomes], None]
"""Takes a round's outcomes, and at the end of each step the rest (maybe none);
called on a decode thread, must not block."""

MAX_ROUNDS = 2
"""Rounds per step. Then the step's streams go back to the pool, so that those
still behind (at input end: 17 chunks of tail padding for a 40 ms-chunk LSTM)
are shared out again between the threads, with whatever else is ready."""

_NEVER = (math.inf, math.inf)

SPLIT_S = 0.015
"""Rounds estimated longer than this are split between the decode threads (see
``Scheduler._hold_queue`` and ``_shed``): 80M LSTM rounds of 16 streams (about
15-22 ms) are, rounds of the 4M demo model never are (each thread's fixed cost
per call is then a large share of the work)."""

DELIVER_S = 0.004
"""Rounds faster than this hand their outcomes over together (see ``_run``)."""

_FLUSH = "flush"
_STOP = "stop"


class StepResult(NamedTuple):
    outcomes: Outcomes
    ready: int  # streams left with work after the step (due again at once)


class StreamSlot:
    """A session's stream as the scheduler sees it.

    The event loop appends audio and commands in arrival order; the decode
    thread that holds the slot takes them. A flush holds back what came after
    it until every chunk before it is decoded and the segment is final.
    """

    def __init__(self, config: SessionConfig) -> None:
        self.config = config
        self.stream: Stream | None = None  # created by a decode thread
        self.events: StreamEvents | None = None  # the core's view of the stream
        self._lock = threading.Lock()
        self._pending: list[npt.NDArray[np.float32] | str] = []
        self._pending_samples = 0
        self.flushing = False  # decode thread: a flush waits for its chunks
        self.abandoned = False  # client gone: drop without answering
        self.done = False
        self.backlog_s = 0.0  # audio accepted but not yet decoded, set after each step
        # the pool's bookkeeping, under Scheduler._cond
        self._scheduler: Scheduler | None = None
        self._held = False  # a decode thread has it
        self._queued = False  # in the pool, waiting for a step
        self._wanted = _NEVER  # woken while held: (due, late) once handed back

    @property
    def has_pending(self) -> bool:
        return bool(self._pending)

    @property
    def pending_s(self) -> float:
        return self._pending_samples / self.config.sample_rate

    def push(self, samples: npt.NDArray[np.float32]) -> None:
        with self._lock:
            self._pending.append(samples)
            self._pending_samples += samples.size
        self._wake(urgent=False, audio_s=samples.size / self.config.sample_rate)

    def flush(self) -> None:
        with self._lock:
            self._pending.append(_FLUSH)
        self._wake(urgent=True)

    def stop(self) -> None:
        with self._lock:
            self._pending.append(_STOP)
        self._wake(urgent=True)

    def abandon(self) -> None:
        """The client is gone: its stream is dropped at the next step, unanswered."""
        self.abandoned = True
        self._wake(urgent=True)

    def _wake(self, urgent: bool, audio_s: float = 0.0) -> None:
        if self._scheduler is not None:
            self._scheduler.wake(self, urgent, audio_s)

    def take(self) -> list[npt.NDArray[np.float32] | str]:
        """Everything pending up to and including the first flush."""
        with self._lock:
            flushes = (i for i, x in enumerate(self._pending) if isinstance(x, str) and x == _FLUSH)
            n = next(flushes, len(self._pending) - 1) + 1
            items, self._pending = self._pending[:n], self._pending[n:]
            self._pending_samples -= sum(x.size for x in items if not isinstance(x, str))
            return items


class Scheduler:
    """Owns the recognizer's streams for the server: a pool of slots and the
    decode threads that drain it (see the module's docstring).

    :meth:`add` and :meth:`wake` are called by the event loop; :meth:`step`
    runs one step in the caller's thread (tests, or a server without threads).
    """

    def __init__(
        self,
        recognizer: AnyRecognizer,
        max_batch_size: int,
        metrics: Metrics,
        *,
        max_wait_s: float = 0.0,
        max_rounds: int = MAX_ROUNDS,
    ) -> None:
        self.recognizer = recognizer
        self.max_batch_size = max_batch_size
        self.metrics = metrics
        self.max_wait_s = max_wait_s
        self.max_rounds = max(1, max_rounds)
        self._cond = threading.Condition(threading.Lock())
        self._slots: dict[StreamSlot, None] = {}  # live slots, in arrival order
        self._queue: dict[StreamSlot, None] = {}  # slots with work, not held
        self._next_due = math.inf  # when _queue's earliest work is due, all threads idle
        self._next_late = math.inf  # when it is due while another thread runs a step
        self._threads: list[threading.Thread] = []
        self._idle = 0  # decode threads waiting for work
        self._busy = 0  # decode threads running a step
        self._holding = 0  # streams held by all threads together
        self._stopping = False
        self._round_s = 0.0  # recent wall time of one round (moving average)
        self._cost = RoundCost()  # a round's wall time against its rows
        self._chunk_s = 0.0  # audio one round advances a stream (known after the first)

    # --- the event loop's side ------------------------------------------------
    def add(self, slot: StreamSlot) -> None:
        """Take a new stream into the pool; its work (audio, commands) follows."""
        with self._cond:
            slot._scheduler = self
            self._slots[slot] = None
        if slot.has_pending or slot.abandoned:
            self.wake(slot, urgent=True)

    def wake(self, slot: StreamSlot, urgent: bool = False, audio_s: float = 0.0) -> None:
        """``slot`` has work: due now (``urgent``), or once its new audio
        (``audio_s`` seconds of it) has waited for batch mates: as long as
        ``max_wait_s`` allows after the rounds it needs (:meth:`wait_s`) when
        no decode thread is busy, and ``max_wait_s`` while one is (its rounds
        take in new work between them; another thread starting early would
        only split the calls)."""
        now = time.monotonic()
        if urgent:
            due = late = now
        else:
            due, late = now + self.wait_s(audio_s), now + self.max_wait_s
        with self._cond:
            if slot not in self._slots:
                return
            if slot._held:
                slot._wanted = (min(slot._wanted[0], due), min(slot._wanted[1], late))
                return
            slot._queued = True
            self._queue[slot] = None
            self._queue_at(due, late)

    def _queue_at(self, due: float, late: float) -> None:
        """Under ``_cond``: queued work is due at ``due`` / ``late``."""
        if due < self._next_due or late < self._next_late:
            self._next_due = min(self._next_due, due)
            self._next_late = min(self._next_late, late)
            self._cond.notify()

    def wait_s(self, audio_s: float) -> float:
        """How long new audio may wait for other streams' audio to share its
        encoder calls while no decode thread is busy: ``max_wait_s`` less the
        time its rounds will take (at the recent round time), so that waiting
        and decoding together stay within ``max_wait_s``; nothing when no
        other stream is open, or when rounds are slow."""
        wait = self.max_wait_s
        if wait <= 0 or len(self._slots) <= 1:
            return 0.0
        if self._chunk_s > 0:
            wait -= math.ceil(audio_s / self._chunk_s) * self._round_s
        return max(0.0, wait)

    @property
    def live_streams(self) -> int:
        """Streams in the pool (not finished or dropped yet)."""
        return len(self._slots)

    # --- decode threads --------------------------------------------------------
    def start(self, deliver: Deliver, threads: int) -> None:
        """Start ``threads`` decode threads handing outcomes to ``deliver``
        (first limiting glibc's malloc arenas: see :func:`fewer_malloc_arenas`)."""
        fewer_malloc_arenas()
        self._stopping = False
        for i in range(threads):
            t = threading.Thread(
                target=self._thread_main, args=(deliver,), name=f"asrserve-decode-{i}", daemon=True
            )
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        """Stop the decode threads (each ends its step first) and wait for them."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        for t in self._threads:
            t.join()
        self._threads = []

    def _thread_main(self, deliver: Deliver) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            left: list[StreamSlot] = []
            try:
                left = self._run(batch, deliver)
            except Exception:  # a bug: keep the thread, and the others' streams, going
                log.exception("scheduler step failed")
            finally:
                self._hand_back(batch, left)

    def _take(self) -> list[StreamSlot] | None:
        """Wait until the pool's earliest work is due (``late`` while another
        thread runs a step); then hold every slot with work, or this thread's
        share (:meth:`_hold_queue`). None once the scheduler stops."""
        with self._cond:
            while not self._stopping:
                now = time.monotonic()
                timeout = None
                if self._queue:
                    at = self._next_late if self._busy else self._next_due
                    if at <= now:
                        self._busy += 1
                        return self._hold_queue()
                    timeout = at - now
                self._idle += 1
                try:
                    self._cond.wait(timeout)
                finally:
                    self._idle -= 1
            return None

    def _hold_queue(self, holding: int = 0) -> list[StreamSlot]:
        """Hold the queued slots (under ``_cond``): all of them, or, when a
        round of them (with the ``holding`` streams this thread has already)
        would take longer than ``SPLIT_S`` and there are other decode
        threads, only what brings this thread to its equal share of every
        stream with work (held by any thread, or queued). The rest is left due
        at once for the others, so that long rounds run side by side, about
        equally long, instead of one thread's rounds growing while the
        other's shrink (the input-end rounds that final results wait for)."""
        batch = list(self._queue)
        share = self._share(len(batch) + holding)
        if share is not None and share - holding < len(batch):
            batch = batch[: max(0, share - holding)]
            for slot in batch:
                del self._queue[slot]
            self._next_due = self._next_late = time.monotonic()
            self._cond.notify(self._idle)
        else:
            self._queue.clear()
            self._next_due = self._next_late = math.inf
        for slot in batch:
            slot._held, slot._queued = True, False
        self._holding += len(batch)
        return batch

    def _share(self, rows: int) -> int | None:
        """Under ``_cond``: the streams one decode thread should hold when a
        round of ``rows`` would be long enough to split (None otherwise)."""
        threads = len(self._threads)
        if threads < 2 or rows < 2 or self._cost.estimate(rows) <= SPLIT_S:
            return None
        return math.ceil((self._holding + len(self._queue)) / threads)

    def _shed(self, batch: list[StreamSlot], live: list[StreamSlot]) -> list[StreamSlot]:
        """Between rounds: a thread holding more than its share (and one
        more) hands the excess back to the pool, due at once, for the other
        threads' next rounds. Returns the live slots it keeps."""
        with self._cond:
            share = self._share(len(live))
            if share is None or len(live) <= share + 1:
                return live
            movable = [s for s in live if s.stream is not None and not s.done and not s.flushing]
            if len(movable) <= 1:
                return live
            now = time.monotonic()
            given = movable[-min(len(live) - share, len(movable) - 1) :]
            for slot in given:
                slot._held, slot._queued = False, True
                slot._wanted = _NEVER
                self._queue[slot] = None
            self._holding -= len(given)
            self._next_due = self._next_late = now
            self._cond.notify(self._idle)
        gone = {id(s) for s in given}
        batch[:] = [s for s in batch if id(s) not in gone]
        return [s for s in live if id(s) not in gone]

    def _hand_back(
        self, batch: list[StreamSlot], left: list[StreamSlot], stepping: bool = True
    ) -> None:
        """Return a step's slots to the pool: those still behind are due now,
        those woken meanwhile when their wake said; finished ones leave.
        ``stepping``: a decode thread's step (it is no longer busy)."""
        now = time.monotonic()
        behind = {id(s) for s in left}
        with self._cond:
            if stepping:
                self._busy -= 1
            self._holding -= len(batch)
            for slot in batch:
                slot._held = False
                (due, late), slot._wanted = slot._wanted, _NEVER
                if slot.done or (slot.abandoned and slot.stream is None):
                    self._slots.pop(slot, None)
                    continue
                if id(slot) in behind:
                    # chunks left: at once when nobody is busy; while another
                    # thread is, in its next round (or after max_wait), unless
                    # the input has ended (a final waits) or a flush is on
                    s = slot.stream
                    urgent = slot.flushing or (s is not None and s.is_finished)
                    due, late = now, now if urgent else min(late, now + self.max_wait_s)
                if due < math.inf:
                    slot._queued = True
                    self._queue[slot] = None
                    self._next_due = min(self._next_due, due)
                    self._next_late = min(self._next_late, late)
            if self._queue:  # also: a thread no longer busy changes when work is due
                self._cond.notify()

    # --- one step ---------------------------------------------------------------
    def step(self) -> StepResult:
        """Run one step in this thread over every slot not held by a decode
        thread; returns the outcomes per slot and how many have work left."""
        with self._cond:
            batch = [s for s in self._slots if not s._held]
            for slot in batch:
                slot._held, slot._queued = True, False
            self._holding += len(batch)
            self._queue.clear()  # only slots not held are queued: all taken
            self._next_due = self._next_late = math.inf
        got: Outcomes = []
        left: list[StreamSlot] = []
        try:
            left = self._run(batch, got.extend)
        finally:
            self._hand_back(batch, left, stepping=False)
        merged: dict[int, tuple[StreamSlot, list[Outcome]]] = {}
        for slot, outs in got:
            merged.setdefault(id(slot), (slot, []))[1].extend(outs)
        return StepResult(list(merged.values()), len(left))

    def _admit(
        self,
        slots: list[StreamSlot],
        outcomes: dict[int, list[Outcome]],
        by_id: dict[int, StreamSlot],
    ) -> list[StreamSlot]:
        """Move each slot's pending input into its stream (creating it first);
        the slots that are still live."""
        live: list[StreamSlot] = []
        for slot in slots:
            by_id[id(slot)] = slot
            if slot.abandoned:
                self._drop(slot)
                continue
            if slot.done:
                continue
            try:
                self._feed(slot)
            except AsrServeError as exc:
                outcomes.setdefault(id(slot), []).append(
                    Outcome("error", error=exc, fatal=slot.stream is None)
                )
                if slot.stream is None:
                    slot.done = True
                    continue
            except Exception as exc:
                # A bug, not the client's doing: drop this stream only; the
                # others in this step go on.
                log.exception("feeding audio to a stream failed; dropping the stream")
                slot.done = True
                err = AsrServeError(f"internal error while taking audio: {exc}")
                outcomes.setdefault(id(slot), []).append(Outcome("error", error=err, fatal=True))
                continue
            live.append(slot)
        return live

    def _between_rounds(
        self,
        batch: list[StreamSlot],
        live: list[StreamSlot],
        outcomes: dict[int, list[Outcome]],
        by_id: dict[int, StreamSlot],
    ) -> list[StreamSlot]:
        """Audio that arrived for the held streams meanwhile, and every stream
        queued in the pool (due or not), join the next round: calls grow
        without anyone waiting. Returns the live slots."""
        fresh = [s for s in live if s.has_pending and not s.flushing and not s.abandoned]
        with self._cond:
            for slot in fresh:
                slot._wanted = _NEVER  # its wake is answered now
            more = self._hold_queue(len(live)) if self._queue else []
        if fresh or more:
            batch += more
            moved = {id(s) for s in fresh}
            kept = [s for s in live if id(s) not in moved]
            live = kept + self._admit(fresh + more, outcomes, by_id)
        return self._shed(batch, live)

    def _run(self, batch: list[StreamSlot], deliver: Deliver) -> list[StreamSlot]:
        """Feed, decode up to ``max_rounds`` rounds, report; the slots that
        still have work (behind, or input held back behind a flush). Slots
        taken from the pool between rounds are appended to ``batch``."""
        rec = self.recognizer
        outcomes: dict[int, list[Outcome]] = {}
        by_id: dict[int, StreamSlot] = {}
        live = self._admit(list(batch), outcomes, by_id)

        sent = time.perf_counter()

        def send(last: bool = False) -> None:
            # A round's outcomes go out before the next round starts, unless
            # the last went out less than DELIVER_S ago (fast rounds: each
            # hand-over wakes the event loop, which costs more than it saves).
            # The last call goes out even when empty: the step's end is news
            # too (backlogs changed; paused readers may go on).
            nonlocal sent
            now = time.perf_counter()
            if last or (outcomes and now - sent >= DELIVER_S):
                deliver([(by_id[k], v) for k, v in outcomes.items()])
                outcomes.clear()
                sent = now

        # Rounds: every stream with a ready chunk advances by one per encoder
        # call. After each chunk the core decides whether the stream's segment
        # ended (StreamEvents.after_chunk), exactly as for any transport, and
        # each round's outcomes go out before the next round starts. Every
        # per-stream call goes through _isolated: one stream's failure ends
        # that stream only, never the step.
        for r in range(self.max_rounds):
            if r:
                live = self._between_rounds(batch, live, outcomes, by_id)
            ready = [
                s
                for s in live
                if s.stream is not None
                and not s.done
                and self._isolated(s, outcomes, "checking for a chunk", rec.is_ready, s.stream)
            ]
            if not ready:
                break
            t0 = time.perf_counter()
            for i in range(0, len(ready), self.max_batch_size):
                self._decode(ready[i : i + self.max_batch_size], outcomes)
            for slot in ready:
                if slot.events is None or slot.done:
                    continue
                events = self._isolated(slot, outcomes, "ending a chunk", slot.events.after_chunk)
                if events:
                    outcomes.setdefault(id(slot), []).extend(self._outcomes(slot, events))
            took = time.perf_counter() - t0
            self._round_s += 0.2 * (took - self._round_s)
            self._cost.add(len(ready), took)
            send()
        flushed: set[int] = set()  # slots whose flush ended in this step
        for slot in live:
            s = slot.stream
            if (
                slot.events is not None
                and not slot.done
                and (slot.flushing or (s is not None and s.is_finished))
            ):
                events = self._isolated(
                    slot, outcomes, "building results", slot.events.report, slot.flushing
                )
                if events:
                    if slot.flushing:
                        flushed.add(id(slot))
                    slot.flushing = False  # the segment the flush asked for is out
                    outcomes.setdefault(id(slot), []).extend(self._outcomes(slot, events))
        left = [
            slot
            for slot in live
            if slot.stream is not None
            and not slot.done
            and self._isolated(slot, outcomes, "pacing", self._pace, slot, id(slot) in flushed)
        ]
        for slot in live:
            if slot.done:
                self._drop(slot)
        send(last=True)
        return left

    @staticmethod
    def _drop(slot: StreamSlot) -> None:
        """Let go of a finished or abandoned stream's core objects now."""
        slot.stream, slot.events = None, None
        slot.backlog_s = 0.0

    def _pace(self, slot: StreamSlot, flush_ended: bool) -> bool:
        """Update the slot's backlog; True when it has work for another step
        now: chunks left (it is behind), or a flush under way."""
        rec, s = self.recognizer, slot.stream
        assert s is not None
        slot.backlog_s = rec.backlog_s(s)
        # input held back behind a flush that just ended is taken now: its
        # wake came while the flush held it (the reader may even be paused by
        # backpressure on exactly that input). Audio that arrived during the
        # step is due when its own wake said.
        return rec.is_ready(s) or slot.flushing or (flush_ended and slot.has_pending)

    def _isolated(
        self,
        slot: StreamSlot,
        outcomes: dict[int, list[Outcome]],
        what: str,
        fn: Callable[..., _T],
        *args: Any,
    ) -> _T | None:
        """``fn(*args)`` for one stream; an exception ends that stream alone
        (an error to its client, logged) and returns None."""
        try:
            return fn(*args)
        except Exception as exc:
            log.exception("%s failed for one stream; ending that stream", what)
            slot.done = True
            err = AsrServeError(f"internal error while {what}: {exc}")
            outcomes.setdefault(id(slot), []).append(Outcome("error", error=err, fatal=True))
            return None

    def _feed(self, slot: StreamSlot) -> None:
        """Move the slot's pending audio and commands into its stream."""
        if slot.stream is None:
            c = slot.config
            slot.stream = self.recognizer.create_stream(
                hotwords=list(c.hotwords) or None, decoding=c.decoding, endpoint=c.endpoint
            )
            slot.events = StreamEvents(self.recognizer, slot.stream, every_chunk=c.every_chunk)
        if slot.flushing:
            return
        stream = slot.stream
        audio: list[npt.NDArray[np.float32]] = []
        for item in slot.take():
            if isinstance(item, str):
                if audio and not stream.is_finished:
                    stream.accept_waveform(slot.config.sample_rate, _joined(audio))
                audio = []
                if item == _FLUSH:
                    slot.flushing = True
                    if not stream.is_finished:
                        stream.cut_segment()
                else:
                    stream.input_finished()
            else:
                audio.append(item)
        if audio and not stream.is_finished:
            stream.accept_waveform(slot.config.sample_rate, _joined(audio))

    def _decode(self, batch: list[StreamSlot], outcomes: dict[int, list[Outcome]]) -> None:
        streams = [s.stream for s in batch if s.stream is not None]
        t0 = time.perf_counter()
        try:
            self.recognizer.decode_streams(streams)
        except Exception:
            # Keep the other streams going: retry one by one, drop the culprit.
            log.exception("batched decode failed; retrying streams one by one")
            for slot in batch:
                try:
                    self.recognizer.decode_streams([slot.stream] if slot.stream else [])
                except Exception as exc:
                    log.exception("decode failed for one stream")
                    slot.done = True
                    err = AsrServeError(f"internal decoder error: {exc}")
                    outcomes.setdefault(id(slot), []).append(
                        Outcome("error", error=err, fatal=True)
                    )
        elapsed = time.perf_counter() - t0
        audio_s = sum(self.recognizer.decoded_s(s) for s in streams)
        if streams:
            self._chunk_s = audio_s / len(streams)
        self.metrics.observe_batch(len(streams), elapsed, audio_s)

    @staticmethod
    def _outcomes(slot: StreamSlot, events: list[Event]) -> list[Outcome]:
        """The core's events as the outcomes the transports translate."""
        out: list[Outcome] = []
        for event in events:
            if isinstance(event, Partial):
                out.append(Outcome("partial", event.result, event.end))
            elif isinstance(event, Eof):
                slot.done = True
                out.append(Outcome("eof", duration=event.duration))
            else:
                out.append(Outcome("final", event.result, event.end, last=event.last))
        return out


class RoundCost:
    """A round's wall time against its rows, ``fixed + per_row * rows``,
    fitted by least squares over the recent rounds (older ones weigh less).
    Decode threads add to it without a lock: it is an estimate."""

    def __init__(self, keep: float = 0.98) -> None:
        self._keep = keep
        self._sums = (0.0, 0.0, 0.0, 0.0, 0.0)  # weight, x, y, xx, xy

    def add(self, rows: int, seconds: float) -> None:
        k = self._keep
        w, x, y, xx, xy = self._sums
        self._sums = (k * w + 1, k * x + rows, k * y + seconds, k * xx + rows * rows,
                      k * xy + rows * seconds)  # fmt: skip

    def estimate(self, rows: int) -> float:
        """Seconds a round of ``rows`` streams takes (0 before any round)."""
        w, x, y, xx, xy = self._sums
        if w <= 0 or x <= 0:
            return 0.0
        mx, my = x / w, y / w
        var = xx / w - mx * mx
        if var < 1e-6:  # rounds of one size so far: take the time as per row
            return my * rows / mx
        per_row = max(0.0, (xy / w - mx * my) / var)
        return max(0.0, my - per_row * mx) + per_row * rows


MALLOC_ARENAS = 2


def fewer_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Let glibc's malloc keep at most ``arenas`` heaps (``M_ARENA_MAX``),
    unless ``MALLOC_ARENA_MAX`` is set in the environment.

    By default every thread that meets contention gets a heap of its own; the
    decode threads allocate and free each stream's encoder state on every
    chunk (tens of KiB, below the mmap threshold), so with one heap per thread
    the freed blocks of one heap cannot serve the other and RSS grows by about
    one more state per stream (80M LSTM: 286 -> 175 KiB per idle stream).
    True when the limit was set (glibc only)."""
    if not sys.platform.startswith("linux") or "MALLOC_ARENA_MAX" in os.environ:
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    m_arena_max = -8  # glibc's malloc.h
    return bool(mallopt(ctypes.c_int(m_arena_max), ctypes.c_int(arenas)))


def _joined(audio: list[npt.NDArray[np.float32]]) -> npt.NDArray[np.float32]:
    return audio[0] if len(audio) == 1 else np.concatenate(audio)
