"""Cross-stream batching: one decode thread advances every ready stream.

The event loop only hands audio and commands to a :class:`StreamSlot`
(under its lock); :meth:`Scheduler.step`, run in the decode thread, moves
them into the core, makes one batched ``decode_streams`` call per
``max_batch_size`` ready streams and returns what each session should hear.
The core's objects are touched by the decode thread alone.
"""

from __future__ import annotations

import logging
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


_MAX_ROUNDS_PER_STEP = 8
_FLUSH = "flush"
_STOP = "stop"


class StepResult(NamedTuple):
    outcomes: list[tuple[StreamSlot, list[Outcome]]]
    ready: int  # streams still ready after the round cap: step again at once


class StreamSlot:
    """A session's stream as the scheduler sees it.

    The event loop appends audio and commands in arrival order; the decode
    thread takes them. A flush holds back what came after it until every
    chunk before it is decoded and the segment is final.
    """

    def __init__(self, config: SessionConfig) -> None:
        self.config = config
        self.stream: Stream | None = None  # created by the decode thread
        self._lock = threading.Lock()
        self._pending: list[npt.NDArray[np.float32] | str] = []
        self._pending_samples = 0
        self.flushing = False  # decode thread: a flush waits for its chunks
        self.abandoned = False  # client gone: drop without answering
        self.done = False
        self.backlog_s = 0.0  # audio accepted but not yet decoded, set by step()
        self.events: StreamEvents | None = None  # the core's view of the stream

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

    def flush(self) -> None:
        with self._lock:
            self._pending.append(_FLUSH)

    def stop(self) -> None:
        with self._lock:
            self._pending.append(_STOP)

    def take(self) -> list[npt.NDArray[np.float32] | str]:
        """Everything pending up to and including the first flush."""
        with self._lock:
            flushes = (i for i, x in enumerate(self._pending) if isinstance(x, str) and x == _FLUSH)
            n = next(flushes, len(self._pending) - 1) + 1
            items, self._pending = self._pending[:n], self._pending[n:]
            self._pending_samples -= sum(x.size for x in items if not isinstance(x, str))
            return items


class Scheduler:
    """Owns the recognizer and the list of live slots (decode thread only,
    apart from :meth:`add`)."""

    def __init__(self, recognizer: AnyRecognizer, max_batch_size: int, metrics: Metrics) -> None:
        self.recognizer = recognizer
        self.max_batch_size = max_batch_size
        self.metrics = metrics
        self._slots: list[StreamSlot] = []
        self._new: list[StreamSlot] = []
        self._lock = threading.Lock()

    def add(self, slot: StreamSlot) -> None:
        with self._lock:
            self._new.append(slot)

    def step(self) -> StepResult:
        """Take the slots' input, then decode in rounds (at most
        ``_MAX_ROUNDS_PER_STEP``, one chunk per ready stream each) and report.

        Returns the outcomes per slot and how many streams are still ready.
        """
        with self._lock:
            self._slots += self._new
            self._new = []
        rec = self.recognizer
        outcomes: dict[int, list[Outcome]] = {}
        live: list[StreamSlot] = []
        dropped: list[StreamSlot] = []  # failed now: their error is still reported
        for slot in self._slots:
            if slot.abandoned or slot.done:
                continue
            try:
                self._feed(slot)
            except AsrServeError as exc:
                outcomes.setdefault(id(slot), []).append(
                    Outcome("error", error=exc, fatal=slot.stream is None)
                )
                if slot.stream is None:
                    slot.done = True
                    dropped.append(slot)
                    continue
            except Exception as exc:
                # A bug, not the client's doing: drop this stream only; the
                # others in this step go on.
                log.exception("feeding audio to a stream failed; dropping the stream")
                slot.done = True
                err = AsrServeError(f"internal error while taking audio: {exc}")
                outcomes.setdefault(id(slot), []).append(Outcome("error", error=err, fatal=True))
                dropped.append(slot)
                continue
            live.append(slot)
        self._slots = live
        # Rounds: every stream with a ready chunk advances by one per encoder
        # call, until none is left (streams get audio in bursts of a few
        # chunks) or the round cap is reached, so a stream can catch up.
        # After each chunk the core decides whether the stream's segment
        # ended (core.segments.after_chunk), exactly as for any transport.
        # Every per-stream call below goes through _isolated: one stream's
        # failure ends that stream only, never the step of its lane.
        for _ in range(_MAX_ROUNDS_PER_STEP):
            ready = [
                s
                for s in live
                if s.stream is not None
                and not s.done
                and self._isolated(s, outcomes, "checking for a chunk", rec.is_ready, s.stream)
            ]
            if not ready:
                break
            for i in range(0, len(ready), self.max_batch_size):
                self._decode(ready[i : i + self.max_batch_size], outcomes)
            for slot in ready:
                if slot.events is None or slot.done:
                    continue
                events = self._isolated(slot, outcomes, "ending a chunk", slot.events.after_chunk)
                outcomes.setdefault(id(slot), []).extend(self._outcomes(slot, events or []))
        for slot in live:
            s = slot.stream
            if slot.events is not None and not slot.done and (
                slot.flushing or (s is not None and s.is_finished)
            ):
                events = self._isolated(
                    slot, outcomes, "building results", slot.events.report, slot.flushing
                )
                if events:
                    slot.flushing = False  # the segment the flush asked for is out
                outcomes.setdefault(id(slot), []).extend(self._outcomes(slot, events or []))
        ready_now = 0
        for slot in live:
            if slot.stream is not None and not slot.done:
                ready_now += bool(self._isolated(slot, outcomes, "pacing", self._pace, slot))
        by_id = {id(s): s for s in [*live, *dropped]}
        per_slot = [(by_id[k], v) for k, v in outcomes.items() if k in by_id]
        return StepResult(per_slot, ready_now)

    def _pace(self, slot: StreamSlot) -> bool:
        """Update the slot's backlog; True when it has work for another step."""
        rec, s = self.recognizer, slot.stream
        assert s is not None
        slot.backlog_s = rec.backlog_s(s)
        # input held back behind a flush that just ended must be taken
        # now: nothing else may wake the lane (the reader may be paused
        # by backpressure on exactly that input)
        return rec.is_ready(s) or slot.flushing or slot.has_pending

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
                    stream.accept_waveform(slot.config.sample_rate, np.concatenate(audio))
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
            stream.accept_waveform(slot.config.sample_rate, np.concatenate(audio))

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
