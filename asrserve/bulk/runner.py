"""The driver of a bulk run: inputs → tasks → an engine → one JSONL line per input.

The driver is the only writer of the results file. It skips the ids the file
already holds without an error, turns long files into piece tasks, gathers the
pieces of each input as they come back (in any order), stitches them and writes
the input's line at once. A progress bar (tqdm, with ETA) counts inputs; the
:class:`Summary` at the end gives files, audio hours, wall time and speed.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from asrserve.bulk.engines import BulkError, Engine
from asrserve.bulk.manifest import Item, local_path
from asrserve.bulk.sink import JsonlSink
from asrserve.bulk.split import PieceWords, stitch
from asrserve.bulk.worker import PieceResult, Task
from asrserve.config import SplitConfig

log = logging.getLogger("asrserve.bulk")


@dataclass
class Summary:
    """What a run did: ``inputs`` in the input, ``skipped`` already done before,
    ``ok``/``failed`` this run; ``audio_s`` of the inputs decoded this run."""

    inputs: int = 0
    skipped: int = 0
    ok: int = 0
    failed: int = 0
    audio_s: float = 0.0
    decode_s: float = 0.0
    wall_s: float = 0.0
    engine: str = ""
    workers: int = 0

    @property
    def speed(self) -> float:
        """Audio seconds per wall second (x real time) of this run."""
        return self.audio_s / self.wall_s if self.wall_s > 0 else 0.0

    def format(self) -> str:
        return (
            f"{_count(self.inputs, 'file')}: {self.ok} decoded, {self.failed} failed, "
            f"{self.skipped} already done | {self.audio_s / 3600:.3f} h of audio "
            f"({self.audio_s:.1f} s) in {self.wall_s:.1f} s wall | "
            f"{self.speed:.1f}x real time ({self.engine}, {_count(self.workers, 'worker')})"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "inputs": self.inputs,
            "skipped": self.skipped,
            "ok": self.ok,
            "failed": self.failed,
            "audio_s": round(self.audio_s, 3),
            "audio_h": round(self.audio_s / 3600, 4),
            "wall_s": round(self.wall_s, 3),
            "speed_x_realtime": round(self.speed, 2),
            "engine": self.engine,
            "workers": self.workers,
        }


def _count(n: int, noun: str) -> str:
    """``1 file``, ``2 files``, ``0 files``."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def plan_tasks(items: Sequence[Item], split: SplitConfig) -> Iterator[Task]:
    """One task per input, or one per piece of an input longer than the split
    threshold (its length read from the header here; an input whose header does
    not read goes whole, and its worker reports the error)."""
    for it in items:
        if split.mode == "none":
            yield Task(it.id, it.location)
            continue
        try:
            import soundfile as sf

            info = sf.info(str(local_path(it.location)))
            duration = float(info.frames) / float(info.samplerate)
        except Exception:  # the worker reads it again and reports why
            yield Task(it.id, it.location)
            continue
        n = split.piece_count(duration)
        for k in range(n):
            yield Task(it.id, it.location, k, n, duration)


def assemble(item: Item, pieces: Sequence[PieceResult]) -> dict[str, Any]:
    """The result line of one input from all its pieces."""
    pieces = sorted(pieces, key=lambda p: p.piece)
    errors = [p.error for p in pieces if p.error is not None]
    if errors:
        return {
            "id": item.id,
            "audio": item.audio,
            "text": "",
            "tokens": [],
            "timestamps": [],
            "duration": None,
            "rtf": None,
            "error": errors[0],
            "warning": None,
            "segments": [],
        }
    if len(pieces) == 1:
        tokens, stamps = list(pieces[0].tokens), list(pieces[0].timestamps)
        segments = pieces[0].segments
    else:
        tokens, stamps = stitch(
            [PieceWords(p.start_s, p.end_s, p.tokens, p.timestamps) for p in pieces]
        )
        # a segment belongs to the piece whose span holds its start (pieces overlap)
        segments = [s for p in pieces for s in p.segments if p.start_s <= s["start"] < p.end_s]
    duration = pieces[0].duration_s
    decode = sum(p.decode_s for p in pieces)
    return {
        "id": item.id,
        "audio": item.audio,
        "text": "".join(tokens).strip(),
        "tokens": tokens,
        "timestamps": stamps,
        "duration": round(duration, 3),
        "rtf": round(decode / duration, 4) if duration > 0 else None,
        "error": None,
        "warning": next((p.warning for p in pieces if p.warning is not None), None),
        "segments": segments,
    }


def run_bulk(
    items: Sequence[Item],
    out: str | Path,
    engine: Engine,
    split: SplitConfig | None = None,
    *,
    progress: bool = True,
    progress_file: TextIO | None = None,
) -> Summary:
    """Decode every input of ``items`` not already done in ``out`` with
    ``engine``; append one line per input to ``out`` as each finishes."""
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    split = (split or SplitConfig()).validate()
    t0 = time.perf_counter()
    summary = Summary(inputs=len(items), engine=engine.name)
    by_id = {it.id: it for it in items}
    with JsonlSink(out) as sink:
        done = sink.open(retry_ids=by_id.keys())
        pending = [it for it in items if it.id not in done]
        summary.skipped = len(items) - len(pending)
        parts: dict[str, list[PieceResult]] = {}
        with (
            tqdm(
                total=len(pending),
                unit="file",
                desc="bulk",
                disable=None if progress else True,
                file=progress_file or sys.stderr,
                dynamic_ncols=True,
            ) as bar,
            logging_redirect_tqdm(),
        ):  # warnings above the bar, not through it
            for res in engine.run(plan_tasks(pending, split), expected=len(pending)):
                if res.fatal:
                    raise BulkError(res.error or "a worker failed")
                got = parts.setdefault(res.item_id, [])
                got.append(res)
                if len(got) < res.count:
                    continue
                del parts[res.item_id]
                record = assemble(by_id[res.item_id], got)
                sink.write(record)
                if record["warning"] is not None:
                    log.warning("%s: %s", res.item_id, record["warning"])
                if record["error"] is None:
                    summary.ok += 1
                    summary.audio_s += float(record["duration"])
                    summary.decode_s += sum(p.decode_s for p in got)
                else:
                    summary.failed += 1
                    log.warning("%s: %s", res.item_id, record["error"])
                summary.wall_s = time.perf_counter() - t0
                bar.set_postfix_str(
                    f"{summary.audio_s / 3600:.2f} h audio, {summary.speed:.0f}x RT, "
                    f"{summary.failed} failed",
                    refresh=False,
                )
                bar.update(1)
        if parts:  # an engine that lost results; never expected
            raise BulkError(f"{len(parts)} input(s) were not finished: {sorted(parts)[:5]}")
    summary.workers = engine.workers
    summary.wall_s = time.perf_counter() - t0
    return summary
