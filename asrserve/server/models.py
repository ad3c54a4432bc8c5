"""The models one server serves: configured by name, loaded on first use (off
the event loop, one at a time), unloaded when idle: the least recently used
one when loading another would pass ``max_loaded``, any one left idle longer
than ``ttl_s``. A model with open streams or uploads is never unloaded.

The pool knows nothing of streams or sockets: the server hands it ``start``
(a loaded recognizer → its :class:`ServedModel`, scheduler running) and
``stop`` (blocking: the scheduler's threads joined), and counts users with
:meth:`ModelPool.acquire` / :meth:`ModelPool.release`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from asrserve.core.interfaces import AnyRecognizer
from asrserve.errors import AsrServeError, ConfigError, ModelLoadError

log = logging.getLogger("asrserve.server")


class UnknownModelError(ConfigError):
    """A request named a model this server is not configured with."""


class ModelsBusyError(AsrServeError):
    """Every loaded model is in use and the budget allows no other."""


@dataclass(frozen=True)
class ModelEntry:
    """A configured model: its name, where it comes from (a directory or a
    catalog name, for listings) and how to load it (blocking)."""

    name: str
    source: str
    load: Callable[[], AnyRecognizer]


@dataclass
class ServedModel:
    """A loaded model as the server runs it: the recognizer and whatever the
    server built around it (its scheduler lanes, metrics, session defaults)."""

    name: str
    recognizer: AnyRecognizer
    parts: Any
    """The server's own per-model objects (opaque to the pool)."""
    users: int = 0
    last_used: float = field(default_factory=time.monotonic)


def model_summary(recognizer: AnyRecognizer) -> tuple[str, str]:
    """The family and precision of a loaded model, for the startup line.

    Precision is read from the names of the graph files the model holds
    (``*.int8.onnx``, an ``int8-dynamic/`` folder …): one word when all
    agree, else ``mixed (encoder int8, decoder fp32 …)``; ``unknown`` when
    the model names no files."""
    model = recognizer.model
    family = model.family or type(model).__name__
    precisions = {role: _precision_of(Path(g.path)) for role, g in model.graphs().items()}
    kinds = sorted(set(precisions.values()))
    if not kinds:
        return family, "unknown"
    if len(kinds) == 1:
        return family, kinds[0]
    return family, "mixed (" + ", ".join(f"{r} {p}" for r, p in precisions.items()) + ")"


def _precision_of(path: Path) -> str:
    names = [path.name.lower(), path.parent.name.lower()]
    for word in ("int8", "fp16"):
        if any(f".{word}." in n or n.startswith(word) or f"_{word}" in n for n in names):
            return word
    return "fp32"


def model_description(recognizer: AnyRecognizer) -> dict[str, Any]:
    """Family, precision and languages of a loaded model (for ``/v1/models``)."""
    family, precision = model_summary(recognizer)
    meta = getattr(recognizer.model, "meta", None)
    languages: list[str] | None = None
    if family == "whisper" and meta is not None:
        languages = sorted(meta.languages) if meta.is_multilingual else ["en"]
    return {"family": family, "precision": precision, "languages": languages}


class ModelPool:
    """Configured models by name; the first is the default."""

    def __init__(
        self, entries: Sequence[ModelEntry], *, max_loaded: int = 0, ttl_s: float = 0.0
    ) -> None:
        if not entries:
            raise ConfigError("no model configured")
        names = [e.name for e in entries]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ConfigError(f"model names must differ: {', '.join(dup)} given twice")
        if max_loaded < 0:
            raise ConfigError(f"max_loaded_models must be >= 0, got {max_loaded}")
        if ttl_s < 0:
            raise ConfigError(f"model_ttl_s must be >= 0, got {ttl_s}")
        self.entries = {e.name: e for e in entries}
        self.default = names[0]
        self.max_loaded = max_loaded
        """At most this many loaded at once; 0: no limit."""
        self.ttl_s = ttl_s
        """Unload a model idle this long; 0: never."""
        self.created = int(time.time())  # OpenAI's "created" of every model
        self.loads = 0
        """Models loaded since start (for tests and the log)."""
        self._loaded: dict[str, ServedModel] = {}
        self._loading = asyncio.Lock()
        self._known: dict[str, dict[str, Any]] = {}  # descriptions seen when loaded
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="asrserve-load")
        self._start: Callable[[str, AnyRecognizer], Any] | None = None
        self._stop: Callable[[ServedModel], None] = lambda _: None

    @property
    def names(self) -> list[str]:
        return list(self.entries)

    def bind(
        self, start: Callable[[str, AnyRecognizer], Any], stop: Callable[[ServedModel], None]
    ) -> None:
        """The server's side: ``start`` builds (and starts) a loaded model's
        parts; ``stop`` ends them (blocking, run off the event loop)."""
        self._start, self._stop = start, stop

    def add_loaded(self, name: str, recognizer: AnyRecognizer) -> ServedModel:
        """A model loaded before serving (the default, checked at start-up)."""
        assert self._start is not None
        served = ServedModel(name, recognizer, self._start(name, recognizer))
        self._known[name] = model_description(recognizer)
        self._loaded[name] = served
        return served

    def resolve(self, name: str | None) -> str:
        """The configured name ``name`` stands for: the default for ``""`` or
        None, and for any name when only one model is configured (clients
        send ``whisper-1`` and the like); else it must be configured."""
        if not name or len(self.entries) == 1:
            return self.default
        if name not in self.entries:
            shown = name if len(name) <= 64 else name[:64] + "…"
            known = ", ".join(repr(n) for n in self.entries)
            raise UnknownModelError(f"unknown model {shown!r}; this server serves {known}")
        return name

    def get(self, name: str) -> ServedModel | None:
        """The loaded model of that (resolved) name, if it is loaded."""
        return self._loaded.get(name)

    @property
    def loaded(self) -> list[ServedModel]:
        return list(self._loaded.values())

    async def acquire(self, name: str | None) -> ServedModel:
        """The model, loaded if it is not (other models go on serving while it
        loads); counted as used until :meth:`release`. Raises
        :class:`UnknownModelError`, :class:`ModelsBusyError` or the loader's
        error (a :class:`~asrserve.errors.ModelLoadError` naming the file)."""
        key = self.resolve(name)
        served = self._loaded.get(key)
        if served is None:
            async with self._loading:  # one load at a time: room is made for it alone
                served = self._loaded.get(key)
                if served is None:
                    served = await self._load(key)
        served.users += 1
        served.last_used = time.monotonic()
        return served

    def release(self, served: ServedModel) -> None:
        served.users = max(0, served.users - 1)
        served.last_used = time.monotonic()

    async def _load(self, name: str) -> ServedModel:
        await self._make_room(name)
        entry = self.entries[name]
        assert self._start is not None
        loop = asyncio.get_running_loop()
        t0 = time.monotonic()
        log.info("loading model %r from %s", name, entry.source)
        try:
            recognizer = await loop.run_in_executor(self._executor, entry.load)
        except AsrServeError:
            raise
        except Exception as exc:  # an engine's own error: name the model and the source
            raise ModelLoadError(
                f"model {name!r} ({entry.source}) failed to load: {type(exc).__name__}: {exc}"
            ) from exc
        parts = self._start(name, recognizer)
        served = ServedModel(name, recognizer, parts)
        self._known[name] = model_description(recognizer)
        self._loaded[name] = served
        self.loads += 1
        log.info("loaded model %r in %.2f s", name, time.monotonic() - t0)
        return served

    async def _make_room(self, name: str) -> None:
        """Unload least recently used idle models until ``name`` fits."""
        while self.max_loaded and len(self._loaded) >= self.max_loaded:
            idle = [m for m in self._loaded.values() if m.users == 0 and m.name != name]
            if not idle:
                n = self.max_loaded
                raise ModelsBusyError(
                    f"cannot load model {name!r}: {n} model{'s' * (n != 1)} loaded and in use "
                    f"(--max-loaded-models {n}); retry later"
                )
            await self._unload(min(idle, key=lambda m: m.last_used), "least recently used")

    async def _unload(self, served: ServedModel, why: str) -> None:
        if self._loaded.get(served.name) is not served or served.users:
            return
        del self._loaded[served.name]
        log.info("unloading model %r (%s)", served.name, why)
        await asyncio.to_thread(self._stop, served)

    async def sweep(self) -> None:
        """Unload models idle longer than ``ttl_s``."""
        if not self.ttl_s:
            return
        now = time.monotonic()
        for served in list(self._loaded.values()):
            if served.users == 0 and now - served.last_used >= self.ttl_s:
                await self._unload(served, f"idle for {self.ttl_s:g} s")

    async def close(self) -> None:
        """Stop every loaded model (users or not: the server is stopping)."""
        for served in list(self._loaded.values()):
            del self._loaded[served.name]
            await asyncio.to_thread(self._stop, served)
        self._executor.shutdown(wait=False, cancel_futures=True)

    def describe(self, name: str) -> dict[str, Any]:
        """One configured model as ``/v1/models`` lists it: OpenAI's fields,
        whether it is loaded, where it comes from, and its family, precision
        and languages once it has been loaded (null before)."""
        entry = self.entries[name]
        known = self._known.get(name, {})
        return {
            "id": name,
            "object": "model",
            "created": self.created,
            "owned_by": "asrserve",
            "loaded": name in self._loaded,
            "default": name == self.default,
            "source": entry.source,
            "family": known.get("family"),
            "precision": known.get("precision"),
            "languages": known.get("languages"),
        }
