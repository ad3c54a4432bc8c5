"""Connections under aiohttp: each TCP (or TLS) connection from accept to close.

aiohttp has no limit on how long a client may take to send a request head,
nor on how many connections may sit idle before any request; a client that
opens sockets and sends nothing (or drips a header a byte at a time) holds a
file descriptor each until the process runs out. :class:`ConnectionGate`
wraps aiohttp's protocol for every connection and

- closes a connection that is not in a request (idle, or still sending its
  request head) for ``header_timeout_s``;
- keeps at most ``max_pending`` connections that are not admitted streams
  (WebSocket sessions past auth and the stream caps): past it, the oldest
  one that is not in a request is dropped (the new one if every other one is
  busy), so probes and new clients still get through;
- is told by the application when a request starts and ends
  (:meth:`ConnectionGate.begin`, :meth:`ConnectionGate.end`) and when a
  connection becomes a stream (:meth:`ConnectionGate.admit`).

:class:`Throttled` writes a repeated event (a dropped connection, an
``accept()`` that failed for want of file descriptors) as one line per
interval with a count; :func:`quiet_loop_errors` routes the event loop's
``accept()`` errors and connection resets through it instead of one
traceback each.

Used by :mod:`asrserve.server.app`; this module touches transports only.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

__all__ = ["ConnectionGate", "Throttled", "close_transport", "quiet_loop_errors"]

log = logging.getLogger("asrserve.server")

ACCEPT_ERROR = "socket.accept() out of system resource"
"""asyncio's message when ``accept()`` fails with EMFILE/ENFILE/ENOBUFS/ENOMEM."""


class Throttled:
    """One log line per ``every_s`` for an event that may repeat without end:
    the first occurrence is written at once, later ones are counted and
    written (with their count) when the interval is over."""

    def __init__(self, logger: logging.Logger, level: int, what: str, every_s: float = 10.0):
        self._log = logger
        self._level = level
        self._what = what
        self.every_s = every_s
        self.total = 0
        self._count = 0
        self._detail = ""
        self._next = 0.0
        self._handle: asyncio.TimerHandle | None = None

    def __call__(self, detail: str = "") -> None:
        self.total += 1
        self._count += 1
        self._detail = detail
        now = time.monotonic()
        if now >= self._next:
            self._flush()
        elif self._handle is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return
            self._handle = loop.call_later(self._next - now, self._flush)

    def _flush(self) -> None:
        self._handle = None
        if not self._count:
            return
        detail = f": {self._detail}" if self._detail else ""
        self._log.log(
            self._level,
            "%s%s (%d since the last such line; at most one per %g s)",
            self._what,
            detail,
            self._count,
            self.every_s,
        )
        self._count = 0
        self._next = time.monotonic() + self.every_s

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


def close_transport(transport: asyncio.BaseTransport) -> None:
    """Close a connection that owes nothing to its client now: plain TCP with
    a FIN; TLS by an abort (its closing handshake would wait on a client that
    may never answer)."""
    if transport.is_closing():
        return
    if transport.get_extra_info("sslcontext") is not None:
        transport.abort()  # type: ignore[attr-defined]
    else:
        transport.close()


class _Tracked(asyncio.Protocol):
    """aiohttp's protocol for one connection, seen by the gate."""

    def __init__(self, gate: ConnectionGate, inner: asyncio.Protocol) -> None:
        self.gate = gate
        self.inner = inner
        self.transport: asyncio.BaseTransport | None = None
        self.busy = 0  # requests in handling
        self.admitted = False  # a stream now: no longer pending
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.inner.connection_made(transport)
        self.gate._opened(self)

    def data_received(self, data: bytes) -> None:
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self.gate._lost(self)
        self.inner.connection_lost(exc)


class ConnectionGate:
    """The protocol factory the listener uses (``gate.protocol``), over
    aiohttp's (``factory``). ``dropped(code)`` is told of every connection the
    gate closes: ``header_timeout`` or ``too_many_pending``."""

    def __init__(
        self,
        factory: Callable[[], asyncio.Protocol],
        *,
        max_pending: int,
        header_timeout_s: float,
        dropped: Callable[[str], None] = lambda code: None,
    ) -> None:
        self._factory = factory
        self.max_pending = max_pending
        self.header_timeout_s = header_timeout_s
        self._dropped = dropped
        self._pending: dict[_Tracked, None] = {}  # oldest first
        self._by_transport: dict[asyncio.BaseTransport, _Tracked] = {}
        self.timed_out = Throttled(
            log,
            logging.INFO,
            f"closed connections that sent no complete request head within {header_timeout_s:g} s",
        )
        self.over_cap = Throttled(
            log,
            logging.INFO,
            f"dropped connections over the cap of {max_pending} pending connections "
            "(not yet streams)",
        )

    def protocol(self) -> asyncio.Protocol:
        return _Tracked(self, self._factory())

    @property
    def pending(self) -> int:
        """Open connections that are not admitted streams."""
        return len(self._pending)

    @property
    def open(self) -> int:
        """All open connections."""
        return len(self._by_transport)

    # --- told by the application ---------------------------------------------
    def begin(self, transport: asyncio.BaseTransport | None) -> None:
        """A request's head arrived on ``transport``; its handler runs."""
        c = self._by_transport.get(transport) if transport is not None else None
        if c is not None:
            c.busy += 1
            self._disarm(c)

    def end(self, transport: asyncio.BaseTransport | None) -> None:
        """The request's handler is done; the connection may wait for another."""
        c = self._by_transport.get(transport) if transport is not None else None
        if c is not None:
            c.busy = max(c.busy - 1, 0)
            if not c.busy and not c.admitted:
                self._arm(c)

    def admit(self, transport: asyncio.BaseTransport | None) -> None:
        """The connection is a stream now (auth and stream caps passed): it no
        longer counts as pending, and the stream's own timeouts apply."""
        c = self._by_transport.get(transport) if transport is not None else None
        if c is not None:
            c.admitted = True
            self._pending.pop(c, None)
            self._disarm(c)

    def close(self) -> None:
        for c in list(self._by_transport.values()):
            self._disarm(c)
        self.timed_out.cancel()
        self.over_cap.cancel()

    # --- connections --------------------------------------------------------------
    def _opened(self, c: _Tracked) -> None:
        assert c.transport is not None
        self._by_transport[c.transport] = c
        self._pending[c] = None
        if len(self._pending) > self.max_pending:
            victim = next((p for p in self._pending if not p.busy and p is not c), c)
            self._drop(victim, "too_many_pending")
            self.over_cap()
            if victim is c:
                return
        self._arm(c)

    def _lost(self, c: _Tracked) -> None:
        self._disarm(c)
        self._pending.pop(c, None)
        if c.transport is not None:
            self._by_transport.pop(c.transport, None)

    def _arm(self, c: _Tracked) -> None:
        self._disarm(c)
        loop = asyncio.get_running_loop()
        c.timer = loop.call_later(self.header_timeout_s, self._expire, c)

    @staticmethod
    def _disarm(c: _Tracked) -> None:
        if c.timer is not None:
            c.timer.cancel()
            c.timer = None

    def _expire(self, c: _Tracked) -> None:
        c.timer = None
        if c.busy or c.admitted:
            return
        self._drop(c, "header_timeout")
        self.timed_out()

    def _drop(self, c: _Tracked, code: str) -> None:
        self._disarm(c)
        self._pending.pop(c, None)
        if c.transport is not None:
            close_transport(c.transport)
        self._dropped(code)


LoopHandler = Callable[[asyncio.AbstractEventLoop, dict[str, Any]], object]


def quiet_loop_errors(
    loop: asyncio.AbstractEventLoop, accept_errors: Throttled
) -> Callable[[], None]:
    """Install an exception handler on ``loop``: ``accept()`` out of file
    descriptors (asyncio calls the handler up to its backlog times per wakeup)
    goes to ``accept_errors``; a connection reset or lost pipe is one DEBUG
    line; anything else goes to the handler that was there before. Returns
    the function that puts the previous handler back."""
    previous: LoopHandler | None = loop.get_exception_handler()

    def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if context.get("message") == ACCEPT_ERROR:
            accept_errors(str(exc) if exc is not None else "")
            return
        if isinstance(exc, ConnectionError):
            log.debug("connection error: %s: %s", context.get("message", "-"), exc)
            return
        if previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handle)

    def restore() -> None:
        loop.set_exception_handler(previous)

    return restore
