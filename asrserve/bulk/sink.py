"""The results file: one JSON object per line, written by a single writer.

Each line is flushed as soon as its input is finished, so a run that is killed
loses at most the line being written. :meth:`JsonlSink.open` makes such a file
whole again before appending: a torn last line (no newline) and lines that are
not JSON are dropped, and so are error lines of ids that this run retries; the
file keeps one line per id. The rewrite goes through a temporary file and
``os.replace``, so a kill during it leaves the old file.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Collection
from pathlib import Path
from typing import IO, Any

from asrserve.errors import ConfigError

log = logging.getLogger("asrserve.bulk")

FIELDS = (
    "id",
    "audio",
    "text",
    "tokens",
    "timestamps",
    "duration",
    "rtf",
    "error",
    "warning",
    "segments",
)


class JsonlSink:
    """Appends result lines to ``path``; :meth:`open` returns the ids already done."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._f: IO[str] | None = None
        self.dropped_lines = 0

    def open(self, retry_ids: Collection[str] = ()) -> set[str]:
        """Ids with a result and no error. Error lines of ``retry_ids`` (the ids
        this run will decode again), torn and non-JSON lines and repeated ids are
        removed from the file first."""
        done: set[str] = set()
        if self.path.is_file():
            done = self._compact(set(retry_ids))
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = self.path.open("a", encoding="utf-8")
        return done

    def write(self, record: dict[str, Any]) -> None:
        if self._f is None:
            raise ConfigError("JsonlSink.write before open()")
        self._f.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._f.flush()

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None

    def __enter__(self) -> JsonlSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _compact(self, retry_ids: set[str]) -> set[str]:
        raw = self.path.read_bytes()
        lines = raw.split(b"\n")
        torn = lines.pop()  # b"" when the file ends with a newline
        kept: list[bytes] = []
        done: set[str] = set()
        seen: set[str] = set()
        dropped = 1 if torn.strip() else 0
        for line in lines:
            rec = _parse(line)
            if rec is None:
                dropped += bool(line.strip())
                continue
            rid = str(rec["id"])
            failed = rec.get("error") is not None
            if rid in seen or (failed and rid in retry_ids):
                dropped += 1
                continue
            seen.add(rid)
            kept.append(line)
            if not failed:
                done.add(rid)
        self.dropped_lines = dropped
        if dropped:
            log.info("%s: %d line(s) dropped before resuming", self.path, dropped)
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp.write_bytes(b"".join(k + b"\n" for k in kept))
            os.replace(tmp, self.path)
        return done


def _parse(line: bytes) -> dict[str, Any] | None:
    try:
        rec = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    if not isinstance(rec, dict) or "id" not in rec:
        return None
    return rec
