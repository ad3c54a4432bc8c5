"""The server's asyncio event loop: uvloop where it is installed, else asyncio's own.

On a small box the event loop's own work (socket reads and writes, waking
tasks, timers) is a fair share of a server's CPU: with many streams, each
sends a frame every 100 ms and gets a result after every decoded chunk.
uvloop runs that machinery in C on libuv; the server's code is the same on
both. ``--event-loop`` picks one (``auto``: uvloop when importable). The
CLI takes :data:`KINDS` from here, so this module imports nothing heavy.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, Literal, TypeVar

from asrserve.errors import ConfigError

_T = TypeVar("_T")

Kind = Literal["auto", "uvloop", "asyncio"]
KINDS: tuple[Kind, ...] = ("auto", "uvloop", "asyncio")


def resolve(kind: str) -> Literal["uvloop", "asyncio"]:
    """The loop ``kind`` means here; ``uvloop`` asked for but missing is an error."""
    if kind not in KINDS:
        raise ConfigError(f"event loop must be one of {', '.join(KINDS)}, got {kind!r}")
    if kind == "asyncio":
        return "asyncio"
    try:
        import uvloop  # noqa: F401
    except ImportError as exc:
        if kind == "uvloop":
            raise ConfigError(
                f"event loop 'uvloop' asked for, but it cannot be imported ({exc}): "
                "pip install uvloop (Linux and macOS), or use --event-loop asyncio"
            ) from None
        return "asyncio"
    return "uvloop"


def run(main: Coroutine[Any, Any, _T], kind: str = "auto") -> _T:
    """``asyncio.run(main)`` on the loop ``kind`` resolves to."""
    if resolve(kind) == "asyncio":
        import asyncio

        return asyncio.run(main)
    import uvloop

    return uvloop.run(main)


def current() -> str:
    """The running loop's kind, for logs: ``uvloop`` or ``asyncio``."""
    import asyncio

    loop = asyncio.get_running_loop()
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"
