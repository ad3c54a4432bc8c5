"""``--event-loop``: uvloop where installed, asyncio's own loop, or a clear error."""

from __future__ import annotations

import asyncio
import sys

import pytest

from asrserve.errors import ConfigError
from asrserve.server import event_loop


async def _kind() -> str:
    await asyncio.sleep(0)
    return event_loop.current()


def test_asyncio_runs_on_asyncio(test_event_loop: str) -> None:
    assert event_loop.resolve("asyncio") == "asyncio"
    if test_event_loop == "asyncio":  # (uvloop's policy would make asyncio.run use uvloop)
        assert event_loop.run(_kind(), "asyncio") == "asyncio"


def test_uvloop_where_installed() -> None:
    pytest.importorskip("uvloop")
    assert event_loop.resolve("auto") == event_loop.resolve("uvloop") == "uvloop"
    assert event_loop.run(_kind(), "uvloop") == "uvloop"
    assert event_loop.run(_kind()) == "uvloop"  # auto


def test_without_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import fails
    assert event_loop.resolve("auto") == "asyncio"
    with pytest.raises(ConfigError, match=r"uvloop.*--event-loop asyncio"):
        event_loop.resolve("uvloop")


def test_unknown_kind() -> None:
    with pytest.raises(ConfigError, match="event loop must be one of auto, uvloop, asyncio"):
        event_loop.resolve("trio")
